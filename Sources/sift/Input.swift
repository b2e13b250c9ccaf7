import Foundation

/// Documents as JSON lines `{"text": "..."}` from a file or standard input ("-").
enum JSONLinesInput {
    static func readTexts(_ path: String) throws -> [String] {
        let data: Data
        if path == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let d = FileManager.default.contents(atPath: path) else {
                throw CLIError("cannot read \(path)")
            }
            data = d
        }
        let name = path == "-" ? "stdin" : path
        var texts: [String] = []
        var lineNumber = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            guard String(validating: line, as: UTF8.self) != nil else {
                throw CLIError("\(name):\(lineNumber): invalid UTF-8")
            }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                throw CLIError("\(name):\(lineNumber): not a JSON object (expected {\"text\": \"...\"})")
            }
            guard let text = object["text"] as? String else {
                throw CLIError("\(name):\(lineNumber): missing string field \"text\"")
            }
            texts.append(text)
        }
        return texts
    }
}

/// A file a command will write (`--out`, `--report`), checked before the work that produces it,
/// not after minutes of it.
enum OutputFile {
    static func check(_ path: String, flag: String) throws {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw CLIError("\(flag) \(path) is a folder; give the path of the file to write")
        }
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard fm.fileExists(atPath: parent, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CLIError("\(flag) \(path): the folder \(parent) does not exist; create it first")
        }
        guard fm.isWritableFile(atPath: parent) else {
            throw CLIError("\(flag) \(path): the folder \(parent) is not writable")
        }
    }
}

/// Minimal JSON writing for CLI output (numbers as shortest round-trip decimals).
enum JSONOut {
    static func number(_ x: Float) -> String {
        x.isFinite ? "\(x)" : "null"
    }

    /// `score`'s and `rerank`'s output: one object per document, in input order (the same
    /// writer, so that the two print the same bytes for the same scores).
    static func results(_ items: [(index: Int, logit: Float, score: Float, tokens: Int, inputTokens: Int, truncated: Bool,
                                   window: (Int, of: Int)?)]) -> String {
        let objects = items.map { r in
            let window = r.window.map { ",\"window\":\($0.0),\"windows\":\($0.of)" } ?? ""
            return "{\"index\":\(r.index),\"logit\":\(number(r.logit)),\"score\":\(number(r.score)),\"tokens\":\(r.tokens),\"input_tokens\":\(r.inputTokens),\"truncated\":\(r.truncated)\(window)}"
        }
        return "{\"results\":[\(objects.joined(separator: ","))]}"
    }

    static func string(_ s: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }
}
