import Foundation
import Qwen3
import SiftBase
import XCTest

/// The pool models share: callers take turns by pool time used, so a caller with short ops is
/// not held to one op per long op of another (which would give it a small share of the time).
final class WorkerPoolTests: XCTestCase {
    func testCallersWithShortOpsGetAnEqualShareOfTime() throws {
        let pool = WorkerPool(threads: 2)
        let shortOps = Locked(0), longOps = Locked(0), stop = Locked(false)
        let long = Thread {
            for _ in 0..<15 { pool.run { _ in usleep(8_000) }; longOps.withLock { $0 += 1 } }
            stop.withLock { $0 = true }
        }
        let short = Thread {
            while !stop.withLock({ $0 }) { pool.run { _ in usleep(1_000) }; shortOps.withLock { $0 += 1 } }
        }
        long.start()
        short.start()
        while !stop.withLock({ $0 }) || short.isExecuting { usleep(1_000) }
        // Equal time: about 8 short ops per long one; taking turns op by op would give 1.
        let (s, l) = (shortOps.withLock { $0 }, longOps.withLock { $0 })
        XCTAssertGreaterThanOrEqual(s, 4 * l, "short \(s), long \(l)")
        // Every run still ran on every worker index, one caller at a time.
        let seen = Locked([Int]())
        pool.run { i in seen.withLock { $0.append(i) } }
        XCTAssertEqual(seen.withLock { $0.sorted() }, [0, 1])
    }

    /// Runs back to back (workers spinning) and runs after pauses longer than the spin (workers
    /// asleep) both run every index exactly once and see the caller's writes.
    func testEveryRunReachesEveryWorkerAwakeOrAsleep() {
        for threads in [1, 2, 4] {
            let pool = WorkerPool(threads: threads)
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: threads)
            counts.initialize(repeating: 0, count: threads)
            defer { counts.deallocate() }
            var expected = 0
            for round in 0..<400 {
                if round % 50 == 49 { usleep(2_000) }  // past the spin: the workers sleep
                let value = round
                pool.run { i in counts[i] += value }
                expected += round
                // Each index wrote its own slot; the caller sees every write once run returns.
                for i in 0..<threads { XCTAssertEqual(counts[i], expected, "\(threads) threads, round \(round), index \(i)") }
            }
        }
    }

    /// Releasing a pool joins its threads (none is left behind, none is still running).
    func testReleasingAPoolJoinsItsThreads() throws {
        // This test's pools' workers, by thread name (other threads of the test process — Swift
        // concurrency's, an earlier test's pools — may come and go meanwhile).
        func threadCount() throws -> Int {
            try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").filter { task in
                let name = try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)
                return name?.hasPrefix("join-test-") == true
            }.count
        }
        // A joined thread can stay listed for a moment (the kernel wakes the joiner before it has
        // removed the thread); one never joined (asleep in the pool) stays for good.
        func settledCount(_ expected: Int) throws -> Int {
            var count = try threadCount()
            for _ in 0..<200 where count != expected {
                usleep(5_000)
                count = try threadCount()
            }
            return count
        }
        let before = try threadCount()
        do {
            let pool = WorkerPool(threads: 4, name: "join-test")
            pool.run { _ in }
            XCTAssertEqual(try threadCount(), before + 3)
        }
        XCTAssertEqual(try settledCount(before), before, "the pool's threads outlived it")
        // Also when the pool is released while its workers sleep.
        do {
            let pool = WorkerPool(threads: 3, name: "join-test")
            pool.run { _ in }
            usleep(5_000)
        }
        XCTAssertEqual(try settledCount(before), before)
    }
}
