import Logging
@testable import SiftServer
import SiftBase
import XCTest

/// Hostile input cannot flood the log: past the allowance lines are counted, not written.
final class LogLimiterTests: XCTestCase {
    struct Capture: LogHandler {
        let lines: Locked<[(String, Logger.Metadata)]>
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
                 file: String, function: String, line: UInt) {
            lines.withLock { $0.append(("\(message)", metadata ?? [:])) }
        }
    }

    func testLinesPastTheAllowanceAreCountedAndReported() throws {
        let lines = Locked<[(String, Logger.Metadata)]>([])
        let logger = Logger(label: "t") { _ in Capture(lines: lines) }
        let limiter = LogLimiter(perSecond: 5)
        for i in 0..<50 { limiter.log(logger, .notice, "refused \(i)") }
        XCTAssertEqual(lines.withLock { $0.count }, 5)
        Thread.sleep(forTimeInterval: 1.05)
        limiter.log(logger, .notice, "next")
        let last = try XCTUnwrap(lines.withLock { $0.last })
        XCTAssertEqual(last.0, "next")
        XCTAssertEqual(last.1["suppressed_similar_lines"], "45")
    }
}
