import CSiftKernels
import Foundation
import Synchronization

/// A fixed set of threads that run one data-parallel step at a time: `run { i in ... }` calls the
/// body once for every worker index 0..<threadCount (index 0 on the calling thread) and returns
/// when all are done. Work is split by the caller so that every output element is computed by
/// exactly one index with the same code: results never depend on the thread count.
///
/// Dispatch costs no system call while the workers are busy: a worker that finishes spins on
/// the task counter for a short while (`spinNanoseconds`: the gap between two ops of a step is
/// microseconds) before it sleeps on a condition variable, and the caller wakes sleepers only
/// if there are any. The pool's threads are joined when it is released.
///
/// Several models in one process share one pool (`shared(threads:)`), so together they never
/// run more threads than there are cores. Their `run` calls take turns op by op, and the next
/// turn goes to the waiting caller (thread: each engine has one) that has had the least pool
/// time: models busy at once get equal shares of the cores' time, whatever the size of their
/// ops (per token, a 4B multiplies by ~8x the weights a 0.6B does: 3.6 G vs 0.44 G), and none starves.
/// Time a caller spent idle is not credited to it: back from idle, it starts level with the
/// least served of the callers that were busy meanwhile (without that, a model idle while
/// another ran alone held the cores on its return until it had "caught up": a 4B busy alone for
/// two minutes before a 0.6B came back was then left 21% of its rate, the 0.6B 81%).
public final class WorkerPool: @unchecked Sendable {
    public let threadCount: Int
    private let crew: Crew
    private var threads: [pthread_t] = []
    private var turnMutex = pthread_mutex_t()
    private var turnChanged = pthread_cond_t()
    private var turns = Turns()

    /// How long an idle worker, or the caller waiting for the workers, spins before sleeping.
    static let spinNanoseconds: UInt64 = 100_000

    /// `name`: the workers' thread names are "name-1", "name-2", … (seen in `top -H`, debuggers).
    public init(threads: Int, name: String = "sift-worker") {
        threadCount = max(1, threads)
        crew = Crew(workers: threadCount - 1)
        pthread_mutex_init(&turnMutex, nil)
        pthread_cond_init(&turnChanged, nil)
        for index in 1..<threadCount {
            let start = Unmanaged.passRetained(WorkerStart(crew: crew, name: "\(name)-\(index)", index: index)).toOpaque()
            var attributes = pthread_attr_t()
            pthread_attr_init(&attributes)
            pthread_attr_setstacksize(&attributes, 1 << 20)
            var thread = pthread_t()
            let rc = pthread_create(&thread, &attributes, { context in
                let start = Unmanaged<WorkerStart>.fromOpaque(context!).takeRetainedValue()
                Thread.current.name = start.name
                start.crew.workerLoop(start.index)
                return nil
            }, start)
            pthread_attr_destroy(&attributes)
            precondition(rc == 0, "cannot start a worker thread (pthread_create: \(rc))")
            self.threads.append(thread)
        }
    }

    deinit {
        crew.stop()
        for thread in threads { pthread_join(thread, nil) }
        pthread_mutex_destroy(&turnMutex)
        pthread_cond_destroy(&turnChanged)
    }

    /// Default size: one thread per core.
    public static var defaultThreadCount: Int { ProcessInfo.processInfo.activeProcessorCount }

    private static let sharedPools = NSLock()
    nonisolated(unsafe) private static var pools: [Int: WorkerPool] = [:]

    /// The process's pool of `threads` threads, made on first use: every model asking for the
    /// same count runs on the same threads.
    public static func shared(threads: Int) -> WorkerPool {
        let threads = max(1, threads)
        sharedPools.lock()
        defer { sharedPools.unlock() }
        if let pool = pools[threads] { return pool }
        let pool = WorkerPool(threads: threads)
        pools[threads] = pool
        return pool
    }

    /// Runs `body(i)` for i in 0..<threadCount in parallel, when this caller's turn comes (see
    /// the type's comment). Not reentrant: `body` must not call `run`.
    public func run(_ body: (Int) -> Void) {
        inTurn { onEveryWorker(body) }
    }

    /// Runs `body(unit, worker)` once for every unit in 0..<units, the units handed out one at a
    /// time to whichever worker is free (the caller is worker 0). A unit's result must not
    /// depend on the thread that computes it; then only the timing changes with the order. On a
    /// shared machine a thread can lose its core for milliseconds (hypervisor steal, another
    /// process): with fixed shares the other threads wait at the end of the op, with handed-out
    /// units they take over the remaining work.
    public func run(units: Int, _ body: (_ unit: Int, _ worker: Int) -> Void) {
        guard units > 0 else { return }
        inTurn {
            if threadCount == 1 || units == 1 {
                for unit in 0..<units { body(unit, 0) }
                return
            }
            // Reset within the turn (other callers' turns use the same counter); publishing the
            // task orders it before the workers' first take.
            nextUnit.store(0, ordering: .relaxed)
            onEveryWorker { worker in
                while true {
                    let unit = nextUnit.add(1, ordering: .relaxed).oldValue
                    if unit >= units { return }
                    body(unit, worker)
                }
            }
        }
    }

    /// Runs `work` as this caller's turn (see the type's comment).
    private func inTurn(_ work: () -> Void) {
        let started = takeTurn()
        defer { endTurn(started: started) }
        work()
    }

    /// `body(i)` on every worker i (the caller is 0); returns when all are done.
    private func onEveryWorker(_ body: (Int) -> Void) {
        if threadCount == 1 { body(0); return }
        withoutActuallyEscaping(body) { body in crew.run(body) }
    }

    /// The next unit of the running `run(units:)`.
    private let nextUnit = Atomic<Int>(0)

    /// Units for `count` items in granules of `granule`, about `perThread` units per thread
    /// (fewer, coarser units when there are few granules), and the items of each.
    public func units(of count: Int, granule: Int = 1, perThread: Int = 8) -> (count: Int, size: Int) {
        let granules = (count + granule - 1) / granule
        let per = max(1, granules / max(1, threadCount * perThread))
        let size = per * granule
        return ((count + size - 1) / size, size)
    }

    /// Who runs next (guarded by `turnMutex`).
    private struct Turns {
        var busy = false
        /// The thread granted the next turn, until it takes it.
        var grantee: pthread_t?
        /// A thread that just ran and has had less time than every waiter keeps the pool for
        /// its next op, if that comes within `reservation` (it does, op after op of a step).
        var reservedFor: pthread_t?
        var reservedUntil: UInt64 = 0
        /// Threads waiting for a turn, in arrival order.
        var waiting: [pthread_t] = []
        /// Each caller thread's pool time, as the turn order counts it (raised when it comes back
        /// from idle, see `takeTurn`), and as it was (`held`: what it really ran).
        var used: [pthread_t: UInt64] = [:]
        var held: [pthread_t: UInt64] = [:]
        /// Each caller thread's time waiting for a turn.
        var waited: [pthread_t: UInt64] = [:]
        /// When each caller last asked for or ended a turn, and who holds the pool now.
        var lastSeen: [pthread_t: UInt64] = [:]
        var holder: pthread_t?

        /// The waiting thread that has had least time (the earliest on ties).
        var leastUsedWaiter: Int {
            var best = 0
            for i in waiting.indices.dropFirst() where used[waiting[i], default: 0] < used[waiting[best], default: 0] { best = i }
            return best
        }
    }

    static let reservation: UInt64 = 200_000
    /// A caller that has not asked for a turn for this long is idle (see `takeTurn`): longer
    /// than the gaps between a busy engine's ops and steps, short against a call.
    static let idleAfter: UInt64 = 20_000_000

    static func nanoseconds() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }

    /// Waits for this thread's turn; returns when it started.
    private func takeTurn() -> UInt64 {
        let me = pthread_self()
        let entered = Self.nanoseconds()
        pthread_mutex_lock(&turnMutex)
        // A caller back from idle starts no lower than the least used of the callers active
        // meanwhile: it cannot bank time it did not ask for (a model idle while another ran
        // alone would otherwise hold the pool until it had "caught up").
        if entered &- (turns.lastSeen[me] ?? 0) > Self.idleAfter {
            var active = Set(turns.lastSeen.filter { entered &- $0.value <= Self.idleAfter }.keys).union(turns.waiting)
            for caller in [turns.holder, turns.grantee, turns.reservedFor].compactMap({ $0 }) { active.insert(caller) }
            active.remove(me)
            if let least = active.map({ turns.used[$0] ?? 0 }).min() { turns.used[me] = max(turns.used[me] ?? 0, least) }
        }
        turns.lastSeen[me] = entered
        if turns.reservedFor == me {
            turns.reservedFor = nil
        } else if !turns.busy && turns.waiting.isEmpty && turns.reservedFor == nil {
            // Free: take it.
        } else {
            turns.waiting.append(me)
            while true {
                if turns.grantee == me { turns.grantee = nil; break }
                let lapsed = turns.reservedFor != nil && Self.nanoseconds() >= turns.reservedUntil
                if lapsed { turns.reservedFor = nil }
                if !turns.busy && turns.grantee == nil && turns.reservedFor == nil && turns.waiting[turns.leastUsedWaiter] == me {
                    turns.waiting.remove(at: turns.leastUsedWaiter)
                    break
                }
                if turns.reservedFor != nil {
                    // Wake when the reservation lapses, if its holder has not come back by then.
                    var deadline = timespec()
                    clock_gettime(CLOCK_REALTIME, &deadline)
                    let ns = Int(deadline.tv_nsec) + Int(Self.reservation)
                    deadline.tv_sec += ns / 1_000_000_000
                    deadline.tv_nsec = ns % 1_000_000_000
                    pthread_cond_timedwait(&turnChanged, &turnMutex, &deadline)
                } else {
                    pthread_cond_wait(&turnChanged, &turnMutex)
                }
            }
        }
        turns.busy = true
        turns.holder = me
        let now = Self.nanoseconds()
        turns.waited[me, default: 0] &+= now &- entered
        pthread_mutex_unlock(&turnMutex)
        return now
    }

    /// Counts the turn's time; the pool goes to whichever of this thread (if it comes back at
    /// once) and the waiting threads has had least.
    private func endTurn(started: UInt64) {
        let now = Self.nanoseconds()
        let me = pthread_self()
        pthread_mutex_lock(&turnMutex)
        turns.used[me, default: 0] &+= now &- started
        turns.held[me, default: 0] &+= now &- started
        turns.lastSeen[me] = now
        turns.holder = nil
        turns.busy = false
        if !turns.waiting.isEmpty {
            let index = turns.leastUsedWaiter
            let next = turns.waiting[index]
            let mine = turns.used[me, default: 0], theirs = turns.used[next, default: 0]
            if mine < theirs {
                turns.reservedFor = me
                turns.reservedUntil = now &+ Self.reservation
            } else {
                turns.waiting.remove(at: index)
                turns.grantee = next
                turns.busy = true
            }
            pthread_cond_broadcast(&turnChanged)
        }
        pthread_mutex_unlock(&turnMutex)
    }

    /// Seconds the calling thread has held the pool (its turns) and waited for it, since it
    /// first ran on it: an engine's share of the cores, and its wait for another's turns.
    public func callerSeconds() -> (held: Double, waited: Double) {
        let me = pthread_self()
        pthread_mutex_lock(&turnMutex)
        defer { pthread_mutex_unlock(&turnMutex) }
        return (Double(turns.held[me] ?? 0) / 1e9, Double(turns.waited[me] ?? 0) / 1e9)
    }

    /// Splits `count` items into `threadCount` contiguous ranges of whole `granule`s.
    public func range(_ index: Int, of count: Int, granule: Int = 1) -> Range<Int> {
        let units = (count + granule - 1) / granule
        let lo = units * index / threadCount, hi = units * (index + 1) / threadCount
        return min(count, lo * granule)..<min(count, hi * granule)
    }
}

/// What a worker thread is started with (it never holds the pool itself, so the pool can be
/// released, and its threads joined, while they wait).
private final class WorkerStart {
    let crew: Crew
    let name: String
    let index: Int
    init(crew: Crew, name: String, index: Int) { (self.crew, self.name, self.index) = (crew, name, index) }
}

/// The workers' side of a pool: a task published by bumping `generation`, finished when
/// `pending` reaches zero. Sleeping and waking use a mutex and condition variables only when a
/// spinning wait ran out: `sleepers` and `callerSleeping` say whether anyone needs a signal.
/// Each side announces it is going to sleep and then re-checks (sequentially consistent), while
/// the other side publishes and then checks the announcement, so no wake-up is lost.
private final class Crew: @unchecked Sendable {
    let workers: Int
    private let generation = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let sleepers = Atomic<Int>(0)
    private let callerSleeping = Atomic<Bool>(false)
    private var mutex = pthread_mutex_t()
    private var wake = pthread_cond_t()
    private var finished = pthread_cond_t()
    /// Written by the caller before `generation` is bumped, read by workers after they see it.
    private var task: ((Int) -> Void)?

    init(workers: Int) {
        self.workers = workers
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
        pthread_cond_init(&finished, nil)
    }

    deinit {
        pthread_mutex_destroy(&mutex)
        pthread_cond_destroy(&wake)
        pthread_cond_destroy(&finished)
    }

    /// Runs `body` on every worker and on the calling thread (index 0); returns when all are done.
    func run(_ body: @escaping (Int) -> Void) {
        task = body
        pending.store(workers, ordering: .sequentiallyConsistent)
        generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 { signal(&wake, broadcast: true) }
        body(0)
        if !spin(until: { pending.load(ordering: .acquiring) == 0 }) {
            callerSleeping.store(true, ordering: .sequentiallyConsistent)
            pthread_mutex_lock(&mutex)
            while pending.load(ordering: .sequentiallyConsistent) > 0 { pthread_cond_wait(&finished, &mutex) }
            pthread_mutex_unlock(&mutex)
            callerSleeping.store(false, ordering: .relaxed)
        }
        task = nil
    }

    func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        signal(&wake, broadcast: true)
    }

    func workerLoop(_ index: Int) {
        var seen = 0
        while true {
            if !spin(until: { generation.load(ordering: .acquiring) != seen || stopping.load(ordering: .acquiring) }) {
                sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
                pthread_mutex_lock(&mutex)
                while generation.load(ordering: .sequentiallyConsistent) == seen && !stopping.load(ordering: .sequentiallyConsistent) {
                    pthread_cond_wait(&wake, &mutex)
                }
                pthread_mutex_unlock(&mutex)
                sleepers.wrappingSubtract(1, ordering: .relaxed)
            }
            if stopping.load(ordering: .acquiring) { return }
            seen = generation.load(ordering: .acquiring)
            task!(index)
            if pending.subtract(1, ordering: .sequentiallyConsistent).newValue == 0,
               callerSleeping.load(ordering: .sequentiallyConsistent) {
                signal(&finished, broadcast: false)
            }
        }
    }

    /// Spins (with the CPU's pause hint) until `done` or for `WorkerPool.spinNanoseconds`.
    private func spin(until done: () -> Bool) -> Bool {
        var deadline: UInt64 = 0
        var round = 0
        while !done() {
            round += 1
            if round & 63 == 0 {
                let now = WorkerPool.nanoseconds()
                if deadline == 0 { deadline = now + WorkerPool.spinNanoseconds } else if now >= deadline { return false }
            }
            sift_cpu_relax()
        }
        return true
    }

    /// Signals under the mutex, so a thread between its check and its wait cannot miss it.
    private func signal(_ condition: inout pthread_cond_t, broadcast: Bool) {
        pthread_mutex_lock(&mutex)
        if broadcast { pthread_cond_broadcast(&condition) } else { pthread_cond_signal(&condition) }
        pthread_mutex_unlock(&mutex)
    }
}
