import Logging
import SiftBase

/// Keeps hostile input from flooding the log: lines about refused frames, dropped connections
/// and the like pass at most `perSecond` a second (server-wide); beyond that they are counted,
/// and the next line that passes says how many were left out.
final class LogLimiter: Sendable {
    private let perSecond: Int
    private let state = Locked(State())

    private struct State {
        var second = ContinuousClock.now
        var passed = 0
        var suppressed = 0
    }

    init(perSecond: Int = 20) { self.perSecond = perSecond }

    /// Logs through `logger` unless this second's allowance is spent.
    func log(_ logger: Logger, _ level: Logger.Level, _ message: @autoclosure () -> Logger.Message,
             metadata: Logger.Metadata = [:]) {
        let suppressed: Int? = state.withLock { s in
            let now = ContinuousClock.now
            if now - s.second >= .seconds(1) {
                s.second = now
                s.passed = 0
            }
            guard s.passed < perSecond else {
                s.suppressed += 1
                return nil
            }
            s.passed += 1
            defer { s.suppressed = 0 }
            return s.suppressed
        }
        guard let suppressed else { return }
        var metadata = metadata
        if suppressed > 0 { metadata["suppressed_similar_lines"] = "\(suppressed)" }
        logger.log(level: level, message(), metadata: metadata)
    }
}
