import Foundation

/// A fixed set of threads that run one data-parallel step at a time: `run { i in ... }` calls the
/// body once for every worker index 0..<threadCount (index 0 on the calling thread) and returns
/// when all are done. Work is split by the caller so that every output element is computed by
/// exactly one index with the same code: results never depend on the thread count.
public final class WorkerPool: @unchecked Sendable {
    public let threadCount: Int
    private var mutex = pthread_mutex_t()
    private var wake = pthread_cond_t()
    private var finished = pthread_cond_t()
    private var generation = 0
    private var pending = 0
    private var stopping = false
    private var task: ((Int) -> Void)?

    public init(threads: Int) {
        threadCount = max(1, threads)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
        pthread_cond_init(&finished, nil)
        for index in 1..<max(1, threads) {
            let thread = Thread { [unowned self] in self.workerLoop(index) }
            thread.name = "sift-worker-\(index)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Default size: one thread per core.
    public static var defaultThreadCount: Int { ProcessInfo.processInfo.activeProcessorCount }

    deinit {
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
    }

    /// Runs `body(i)` for i in 0..<threadCount in parallel. Not reentrant.
    public func run(_ body: (Int) -> Void) {
        if threadCount == 1 { body(0); return }
        withoutActuallyEscaping(body) { body in
            pthread_mutex_lock(&mutex)
            task = body
            pending = threadCount - 1
            generation &+= 1
            pthread_cond_broadcast(&wake)
            pthread_mutex_unlock(&mutex)
            body(0)
            pthread_mutex_lock(&mutex)
            while pending > 0 { pthread_cond_wait(&finished, &mutex) }
            task = nil
            pthread_mutex_unlock(&mutex)
        }
    }

    /// Splits `count` items into `threadCount` contiguous ranges of whole `granule`s.
    public func range(_ index: Int, of count: Int, granule: Int = 1) -> Range<Int> {
        let units = (count + granule - 1) / granule
        let lo = units * index / threadCount, hi = units * (index + 1) / threadCount
        return min(count, lo * granule)..<min(count, hi * granule)
    }

    private func workerLoop(_ index: Int) {
        var seen = 0
        pthread_mutex_lock(&mutex)
        while true {
            while generation == seen && !stopping { pthread_cond_wait(&wake, &mutex) }
            if stopping { break }
            seen = generation
            let body = task!
            pthread_mutex_unlock(&mutex)
            body(index)
            pthread_mutex_lock(&mutex)
            pending -= 1
            if pending == 0 { pthread_cond_signal(&finished) }
        }
        pthread_mutex_unlock(&mutex)
    }
}
