import Logging
import SiftBase

/// Keeps hostile input from flooding the log: lines about refused frames, dropped connections
/// and the like pass at most `perSecond` a second (server-wide); beyond that they are counted,
/// and the next line that passes says how many were left out.
final class LogLimiter: Sendable {
    let perSecond: Int
    private let state = Locked(State())

    private struct State {
        var second = ContinuousClock.now
        var passed = 0
        var suppressed = 0
    }

    init(perSecond: Int = 20) { self.perSecond = perSecond }

    /// Logs through `logger` unless this second's allowance is spent; metadata values are
    /// escaped (`LogText`).
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
        var metadata = LogText.escaped(metadata)
        if suppressed > 0 { metadata["suppressed_similar_lines"] = "\(suppressed)" }
        logger.log(level: level, message(), metadata: metadata)
    }
}

/// Text from clients made safe for a log line: control characters (a newline would start a
/// forged line) and Unicode line breaks written as escapes, and length bounded.
enum LogText {
    static let maxCharacters = 300

    static func escape(_ text: String) -> String {
        var out = ""
        var count = 0
        for scalar in text.unicodeScalars {
            if count >= maxCharacters {
                out += "…(\(text.utf8.count) bytes)"
                break
            }
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029:
                out += String(format: "\\u{%04X}", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
            count += 1
        }
        return out
    }

    /// `text` escaped, as a metadata value.
    static func quoted(_ text: String) -> Logger.MetadataValue { .string(escape(text)) }

    /// Every value escaped (nested values flattened to their text).
    static func escaped(_ metadata: Logger.Metadata) -> Logger.Metadata {
        metadata.mapValues { .string(escape("\($0)")) }
    }
}
