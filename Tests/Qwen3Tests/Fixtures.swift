import Foundation

/// Locates `../shared` (the read-only ground truth next to the project) from this file's path.
/// `SIFT_SHARED` overrides it.
enum Fixtures {
    static let shared: URL = {
        if let env = ProcessInfo.processInfo.environment["SIFT_SHARED"] { return URL(fileURLWithPath: env) }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return root.deletingLastPathComponent().appendingPathComponent("shared")
    }()
    static var fixtures: URL { shared.appendingPathComponent("fixtures") }
    static var tokenizerDir: URL { fixtures.appendingPathComponent("qwen3-tokenizer") }
    static var tinyModel: URL { fixtures.appendingPathComponent("tiny-qwen3") }

    static func jsonLines(_ url: URL) throws -> [[String: Any]] {
        let text = try String(contentsOf: url, encoding: .utf8)
        return try text.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }
}
