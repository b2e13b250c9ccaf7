import Foundation

extension Tokenizer {
    /// Loads `tokenizer.json` from `directory`, or else `vocab.json` + `merges.txt` (+ the added
    /// tokens of `tokenizer_config.json`).
    public static func load(directory: URL) throws -> Tokenizer {
        let json = directory.appendingPathComponent("tokenizer.json")
        if FileManager.default.fileExists(atPath: json.path) {
            return try load(tokenizerJSON: json)
        }
        let vocab = directory.appendingPathComponent("vocab.json")
        let merges = directory.appendingPathComponent("merges.txt")
        guard FileManager.default.fileExists(atPath: vocab.path), FileManager.default.fileExists(atPath: merges.path) else {
            throw LoadError(file: directory.path, "no tokenizer: expected tokenizer.json, or vocab.json and merges.txt")
        }
        return try load(vocabJSON: vocab, mergesTXT: merges,
                        tokenizerConfig: directory.appendingPathComponent("tokenizer_config.json"))
    }

    /// Largest tokenizer file read (Qwen3's tokenizer.json is 11 MB).
    public static let maxFileBytes = 256 << 20

    /// Loads a Hugging Face `tokenizer.json` (byte-level BPE model).
    public static func load(tokenizerJSON url: URL) throws -> Tokenizer {
        try load(tokenizerJSONData: try read(url), file: url.path)
    }

    /// A tokenizer file's bytes, refused before reading when it is larger than a tokenizer is.
    private static func read(_ url: URL) throws -> Data {
        let size = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
        guard size <= maxFileBytes else {
            throw LoadError(file: url.path, "\(size) bytes: larger than a tokenizer file is (at most \(maxFileBytes >> 20) MiB)")
        }
        do {
            return try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw LoadError(file: url.path, "cannot read the file (\(error.localizedDescription))")
        }
    }

    /// A token id as the file gives it: an integer in 0...Int32.max, never truncated or rounded.
    static func tokenID(_ value: Any?) -> Int32? {
        guard let number = value as? NSNumber else { return nil }
        let d = number.doubleValue
        guard d.rounded() == d, d >= 0, d <= Double(Int32.max), number.int64Value == Int64(d) else { return nil }
        return Int32(d)
    }

    /// Parses the bytes of a `tokenizer.json`; `file` names it in errors.
    public static func load(tokenizerJSONData data: Data, file: String) throws -> Tokenizer {
        guard data.count <= maxFileBytes else {
            throw LoadError(file: file, "\(data.count) bytes: larger than a tokenizer file is (at most \(maxFileBytes >> 20) MiB)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data), let root = object as? [String: Any] else {
            throw LoadError(file: file, "not a JSON object")
        }
        guard let model = root["model"] as? [String: Any] else { throw LoadError(file: file, "missing \"model\"") }
        if let type = model["type"] as? String, type != "BPE" {
            throw LoadError(file: file, "model type \(type) is not supported (Sift needs a byte-level BPE tokenizer)")
        }
        guard let vocabObject = model["vocab"] as? [String: Any] else { throw LoadError(file: file, "missing \"model.vocab\"") }
        guard let mergesArray = model["merges"] as? [Any] else { throw LoadError(file: file, "missing \"model.merges\"") }
        let vocab = try parseVocab(vocabObject, file: file)
        guard mergesArray.count <= Tokenizer.maxMerges else {
            throw LoadError(file: file, "\(mergesArray.count) merges: more than a tokenizer holds (at most \(Tokenizer.maxMerges))")
        }
        var merges: [([UInt8], [UInt8])] = []
        merges.reserveCapacity(mergesArray.count)
        for (rank, item) in mergesArray.enumerated() {
            let pair: [String]
            if let s = item as? String {  // "a b"
                pair = s.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            } else if let list = item as? [String] {  // ["a", "b"]
                pair = list
            } else {
                throw LoadError(file: file, "merge \(rank) is neither \"a b\" nor [\"a\", \"b\"]")
            }
            merges.append(try parseMerge(pair, rank: rank, file: file))
        }
        var added: [([UInt8], Int32)] = []
        for item in root["added_tokens"] as? [[String: Any]] ?? [] {
            guard let content = item["content"] as? String, let id = tokenID(item["id"]) else {
                throw LoadError(file: file, "an added token lacks \"content\" or a valid \"id\" (an integer in 0...\(Int32.max)): \(String(describing: item["id"] ?? "none").prefix(40))")
            }
            added.append((Array(content.utf8), id))
        }
        return try Tokenizer(vocab: vocab, merges: merges, added: added, file: file)
    }

    /// Loads `vocab.json` + `merges.txt` (+ `added_tokens_decoder` of `tokenizer_config.json`).
    public static func load(vocabJSON: URL, mergesTXT: URL, tokenizerConfig: URL?) throws -> Tokenizer {
        let vocab = try parseVocab(try readJSONObject(vocabJSON), file: vocabJSON.path)
        guard let text = String(data: try read(mergesTXT), encoding: .utf8) else {
            throw LoadError(file: mergesTXT.path, "cannot read the file as UTF-8 text")
        }
        var merges: [([UInt8], [UInt8])] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("#version") { continue }
            let pair = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            merges.append(try parseMerge(pair, rank: merges.count, file: mergesTXT.path))
        }
        var added: [([UInt8], Int32)] = []
        if let config = tokenizerConfig, FileManager.default.fileExists(atPath: config.path) {
            let root = try readJSONObject(config)
            for (key, value) in root["added_tokens_decoder"] as? [String: Any] ?? [:] {
                guard let id = Int32(key), id >= 0, let content = (value as? [String: Any])?["content"] as? String else {
                    throw LoadError(file: config.path, "added_tokens_decoder entry \(key) is malformed")
                }
                added.append((Array(content.utf8), id))
            }
        }
        return try Tokenizer(vocab: vocab, merges: merges, added: added, file: vocabJSON.path)
    }

    private static func readJSONObject(_ url: URL) throws -> [String: Any] {
        let data = try read(url)
        guard let object = try? JSONSerialization.jsonObject(with: data), let dict = object as? [String: Any] else {
            throw LoadError(file: url.path, "not a JSON object")
        }
        return dict
    }

    private static func parseVocab(_ object: [String: Any], file: String) throws -> [([UInt8], Int32)] {
        guard object.count <= Tokenizer.maxVocabularyEntries else {
            throw LoadError(file: file, "\(object.count) vocabulary entries: more than a tokenizer holds (at most \(Tokenizer.maxVocabularyEntries))")
        }
        var vocab: [([UInt8], Int32)] = []
        vocab.reserveCapacity(object.count)
        for (token, value) in object {
            guard let id = tokenID(value) else {
                throw LoadError(file: file, "vocabulary entry \(token.prefix(40)) has no valid id (an integer in 0...\(Int32.max))")
            }
            guard let bytes = ByteLevel.bytes(of: token) else {
                throw LoadError(file: file, "vocabulary entry \(token) is not in the byte-level alphabet")
            }
            vocab.append((bytes, id))
        }
        return vocab
    }

    private static func parseMerge(_ pair: [String], rank: Int, file: String) throws -> ([UInt8], [UInt8]) {
        guard pair.count == 2, let a = ByteLevel.bytes(of: pair[0]), let b = ByteLevel.bytes(of: pair[1]) else {
            throw LoadError(file: file, "merge \(rank) is malformed")
        }
        return (a, b)
    }
}
