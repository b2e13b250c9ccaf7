import Foundation
import Synchronization

/// Locates `../shared` (the read-only ground truth next to the project) from this file's path.
/// `SIFT_SHARED` overrides it.
public enum Fixtures {
    public static let shared: URL = {
        if let env = ProcessInfo.processInfo.environment["SIFT_SHARED"] { return URL(fileURLWithPath: env) }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    }()
    /// The package's root folder.
    public static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    public static var fixtures: URL { shared.appendingPathComponent("fixtures") }
    public static var tokenizerDir: URL { fixtures.appendingPathComponent("qwen3-tokenizer") }
    public static var tinyModel: URL { fixtures.appendingPathComponent("tiny-qwen3") }

    public static func jsonLines(_ url: URL) throws -> [[String: Any]] {
        let text = try String(contentsOf: url, encoding: .utf8)
        return try text.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }
}

extension Fixtures {
    /// The reference cases of reference-scores.json (or -0.6b.json).
    public struct ReferenceCase: Sendable {
        public let id: String
        public let query: String
        public let instructionGiven: String?
        public let document: String
        public let maxLength: Int
        public let inputIDs: [Int32]
        public let logitDiff: Double
        public let truncated: Bool
    }

    public static func referenceCases(_ name: String = "reference-scores.json") throws -> [ReferenceCase] {
        let data = try Data(contentsOf: fixtures.appendingPathComponent(name))
        let root = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        return (root["cases"] as! [[String: Any]]).map { c in
            ReferenceCase(id: c["id"] as! String, query: c["query"] as! String,
                          instructionGiven: c["instruction_given"] as? String,
                          document: c["document"] as! String, maxLength: (c["max_length"] as! NSNumber).intValue,
                          inputIDs: (c["input_ids"] as! [NSNumber]).map { $0.int32Value },
                          logitDiff: (c["logit_diff"] as! NSNumber).doubleValue,
                          truncated: c["truncated"] as! Bool)
        }
    }

    /// The 0.6B-shaped model of reference-scores-0.6b.json, made by
    /// `make_model.py --preset 0.6b --seed 0 --outliers`: `SIFT_MODEL_06B`, else .build-models/qwen3-0.6b-seed0.
    public static var model06B: URL? {
        let url = ProcessInfo.processInfo.environment["SIFT_MODEL_06B"].map { URL(fileURLWithPath: $0) }
            ?? packageRoot.appendingPathComponent(".build-models/qwen3-0.6b-seed0")
        return FileManager.default.fileExists(atPath: url.appendingPathComponent("model.safetensors").path) ? url : nil
    }

    /// A fresh temporary folder, removed when the process exits (test runs left hundreds behind).
    public static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sift-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        temporaryDirectories.withLock { made in
            if made.isEmpty { atexit { Fixtures.removeTemporaryDirectories() } }
            made.append(url)
        }
        return url
    }

    private static let temporaryDirectories = Mutex<[URL]>([])

    private static func removeTemporaryDirectories() {
        for url in temporaryDirectories.withLock({ $0 }) { try? FileManager.default.removeItem(at: url) }
    }
}
