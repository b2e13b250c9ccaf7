import Foundation
import Qwen3
import SiftBase
import XCTest

/// The pool models share: callers take turns by pool time used, so a caller with short ops is
/// not held to one op per long op of another (which would give it a small share of the time).
final class WorkerPoolTests: XCTestCase {
    func testCallersWithShortOpsGetAnEqualShareOfTime() throws {
        let pool = WorkerPool(threads: 2)
        let shortOps = Locked(0), longOps = Locked(0), stop = Locked(false), held = Locked((short: 0.0, long: 0.0))
        let long = Thread {
            for _ in 0..<15 { pool.run { _ in usleep(8_000) }; longOps.withLock { $0 += 1 } }
            held.withLock { $0.long = pool.callerSeconds().held }
            stop.withLock { $0 = true }
        }
        let short = Thread {
            while !stop.withLock({ $0 }) { pool.run { _ in usleep(1_000) }; shortOps.withLock { $0 += 1 } }
            held.withLock { $0.short = pool.callerSeconds().held }
        }
        long.start()
        short.start()
        while !stop.withLock({ $0 }) || short.isExecuting { usleep(1_000) }
        // Equal time: about 8 short ops per long one; taking turns op by op would give 1. (3, not
        // 8: sleeps overshoot on a loaded machine — a busy 2-core run gave 59 to 15.)
        let (s, l) = (shortOps.withLock { $0 }, longOps.withLock { $0 })
        XCTAssertGreaterThanOrEqual(s, 3 * l, "short \(s), long \(l)")
        // Each caller's held time is its own turns: at least its ops' sleeps; none for a thread
        // that never ran on the pool.
        let seconds = held.withLock { $0 }
        XCTAssertGreaterThanOrEqual(seconds.long, 15 * 0.008)
        XCTAssertGreaterThanOrEqual(seconds.short, Double(s) * 0.001)
        XCTAssertEqual(pool.callerSeconds().held, 0)
        // Every run still ran on every worker index, one caller at a time.
        let seen = Locked([Int]())
        pool.run { i in seen.withLock { $0.append(i) } }
        XCTAssertEqual(seen.withLock { $0.sorted() }, [0, 1])
    }

    /// Runs back to back (workers spinning) and runs after pauses longer than the spin (workers
    /// asleep) both run every index exactly once and see the caller's writes.
    /// A caller that was idle while another ran alone does not bank that time: back, it takes
    /// turns with the other at once instead of holding the pool until it has "caught up".
    func testIdleTimeIsNotBanked() throws {
        let pool = WorkerPool(threads: 2)
        let order = Locked([Character]())
        // The first caller runs alone for a while (30 ops of 4 ms: it is owed nothing).
        let alone = Thread {
            for _ in 0..<42 { pool.run { _ in usleep(4_000) }; order.withLock { $0.append("A") } }
        }
        alone.start()
        usleep(60_000)
        // The second arrives while it still runs; both then ask for the pool op after op.
        let late = Thread { for _ in 0..<12 { pool.run { _ in usleep(4_000) }; order.withLock { $0.append("B") } } }
        late.start()
        while alone.isExecuting || late.isExecuting || order.withLock({ $0.count }) < 54 { usleep(2_000) }
        let seen = order.withLock { $0 }
        // Banked, B's 12 ops would all run before A's next; taking turns, A's interleave with them.
        let firstB = seen.firstIndex(of: "B")!
        let aAmongFirstBs = seen[firstB...].prefix(12).filter { $0 == "A" }.count
        XCTAssertGreaterThanOrEqual(aAmongFirstBs, 3, String(seen))
    }

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

    /// `run(units:)` runs every unit exactly once, on a valid worker index, with the workers
    /// awake or asleep, however many units there are, and with two callers sharing the pool.
    func testHandedOutUnitsRunExactlyOnce() {
        for threads in [1, 2, 4] {
            let pool = WorkerPool(threads: threads)
            for (round, units) in [0, 1, 3, 100, 7, 1000].enumerated() {
                if round == 3 { usleep(2_000) }  // past the spin: the workers sleep
                let runs = UnsafeMutablePointer<Int>.allocate(capacity: max(1, units))
                runs.initialize(repeating: 0, count: max(1, units))
                defer { runs.deallocate() }
                let badWorker = Locked(false)
                pool.run(units: units) { unit, worker in
                    runs[unit] += 1
                    if !(0..<threads).contains(worker) { badWorker.withLock { $0 = true } }
                }
                XCTAssertEqual((0..<units).filter { runs[$0] != 1 }, [], "\(threads) threads, \(units) units")
                XCTAssertFalse(badWorker.withLock { $0 })
            }
        }
        // Two callers at once: each one's units are its own (the counter is reset within a turn).
        let pool = WorkerPool(threads: 2)
        let totals = Locked([0, 0])
        let callers = (0..<2).map { caller in
            Thread {
                for _ in 0..<200 {
                    let count = Locked(0)
                    pool.run(units: 37) { _, _ in count.withLock { $0 += 1 } }
                    totals.withLock { $0[caller] += count.withLock { $0 } }
                }
            }
        }
        callers.forEach { $0.start() }
        while callers.contains(where: { !$0.isFinished }) { usleep(1_000) }
        XCTAssertEqual(totals.withLock { $0 }, [200 * 37, 200 * 37])
    }

    /// A worker held up (here: asleep in its first unit) leaves the remaining units to the others.
    func testAHeldUpWorkersUnitsGoToTheOthers() {
        let pool = WorkerPool(threads: 2)
        let byWorker = Locked([0, 0]), heldUp = Locked(false)
        pool.run(units: 100) { _, worker in
            if worker == 1, !heldUp.withLock({ $0 }) {
                heldUp.withLock { $0 = true }
                usleep(50_000)
            }
            byWorker.withLock { $0[worker] += 1 }
        }
        let counts = byWorker.withLock { $0 }
        XCTAssertEqual(counts[0] + counts[1], 100)
        XCTAssertGreaterThanOrEqual(counts[0], 90, "units by worker: \(counts)")
    }

    /// `units(of:granule:)`: slices of whole granules covering every item once.
    func testUnitSlicesCoverEveryItemInWholeGranules() {
        for threads in [1, 2, 3] {
            let pool = WorkerPool(threads: threads)
            for count in [16, 1024, 4096, 6144, 80] {
                let slices = pool.units(of: count, granule: 16)
                XCTAssertEqual(slices.size % 16, 0)
                XCTAssertGreaterThanOrEqual(slices.count * slices.size, count)
                XCTAssertLessThan((slices.count - 1) * slices.size, count, "no empty slice")
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
