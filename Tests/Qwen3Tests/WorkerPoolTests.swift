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
}
