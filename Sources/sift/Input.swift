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

/// Minimal JSON writing for CLI output (numbers as shortest round-trip decimals).
enum JSONOut {
    static func number(_ x: Float) -> String {
        x.isFinite ? "\(x)" : "null"
    }

    static func string(_ s: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }
}
