import Foundation

/// The Qwen3 tokenizer: added tokens matched in the raw text, NFC, the Qwen split pattern,
/// byte-level BPE. Reproduces Hugging Face `tokenizers` id for id.
///
/// Immutable after loading and safe to share between threads; every call owns its scratch.
public final class Tokenizer: Sendable {
    /// Byte string of every token id (base vocabulary and added tokens).
    public let tokenBytes: [[UInt8]]
    /// Added tokens (`<|im_start|>` etc.), matched in text before normalisation.
    public let addedTokens: [(content: [UInt8], id: Int32)]
    let bpe: BPE

    public var vocabularySize: Int { tokenBytes.count }

    /// Most entries of each kind a tokenizer file may hold (Qwen3's has 151,643 / 151,387 / 26):
    /// sizes are checked before anything is allocated for them.
    public static let maxVocabularyEntries = 1 << 22
    public static let maxMerges = 1 << 22
    public static let maxAddedTokens = 1 << 16
    /// Longest token, in bytes (Qwen3's longest is 128).
    public static let maxTokenLength = 1024

    /// Longest byte string of any token: no token covers more text than this.
    public let maxTokenBytes: Int
    /// First bytes of the added tokens: only there can one start.
    private let addedTokenStarts: [Bool]

    /// Ids may skip a few numbers (reserved ids), no more: `tokenBytes` is sized by the highest.
    public static let maxIDGaps = 1 << 10

    /// Checks what a hostile file could hold before building anything from it: every id in
    /// 0..<(entries + `maxIDGaps`), so `tokenBytes` is about as large as the file's lists;
    /// tokens non-empty and bounded; no id given to two different tokens. (The model's check
    /// that every id has an embedding row is `RerankerModel`'s.)
    init(vocab: [([UInt8], Int32)], merges: [([UInt8], [UInt8])], added: [([UInt8], Int32)],
         file: String) throws {
        guard !vocab.isEmpty else { throw LoadError(file: file, "the vocabulary is empty") }
        guard vocab.count <= Self.maxVocabularyEntries, merges.count <= Self.maxMerges, added.count <= Self.maxAddedTokens else {
            throw LoadError(file: file, "\(vocab.count) vocabulary entries, \(merges.count) merges, \(added.count) added tokens: more than a tokenizer holds (at most \(Self.maxVocabularyEntries), \(Self.maxMerges), \(Self.maxAddedTokens))")
        }
        let idLimit = vocab.count + added.count + Self.maxIDGaps
        var tokenBytes = [[UInt8]?](repeating: nil, count: idLimit)
        var byID = [[UInt8]: Int32](minimumCapacity: vocab.count)
        for (bytes, id) in vocab {
            guard id >= 0, Int(id) < idLimit else {
                throw LoadError(file: file, "token id \(id) is outside 0..<\(idLimit) (ids are numbered from 0, with at most \(Self.maxIDGaps) unused)")
            }
            guard !bytes.isEmpty, bytes.count <= Self.maxTokenLength else {
                throw LoadError(file: file, "vocabulary entry \(id) is \(bytes.isEmpty ? "empty" : "\(bytes.count) bytes long (at most \(Self.maxTokenLength))")")
            }
            guard tokenBytes[Int(id)] == nil else { throw LoadError(file: file, "token id \(id) is given twice in the vocabulary") }
            tokenBytes[Int(id)] = bytes
            byID[bytes] = id
        }
        for (content, id) in added {
            guard id >= 0, Int(id) < idLimit else {
                throw LoadError(file: file, "added token id \(id) is outside 0..<\(idLimit) (ids are numbered from 0, with at most \(Self.maxIDGaps) unused)")
            }
            guard !content.isEmpty, content.count <= Self.maxTokenLength else {
                throw LoadError(file: file, "added token \(id) is \(content.isEmpty ? "empty" : "\(content.count) bytes long (at most \(Self.maxTokenLength))")")
            }
            if let existing = tokenBytes[Int(id)], existing != content {
                throw LoadError(file: file, "added token \(id) reuses the id of another token")
            }
            tokenBytes[Int(id)] = content
        }
        let count = (tokenBytes.lastIndex { $0 != nil } ?? -1) + 1
        var byteTokens = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            guard let id = byID[[UInt8(b)]] else {
                throw LoadError(file: file, "the vocabulary has no token for byte \(b); not a byte-level BPE vocabulary")
            }
            byteTokens[b] = id
        }
        var entries: [(left: Int32, right: Int32, merged: Int32)] = []
        entries.reserveCapacity(merges.count)
        for (rank, (a, b)) in merges.enumerated() {
            guard let l = byID[a], let r = byID[b], let m = byID[a + b] else {
                throw LoadError(file: file, "merge \(rank) (\(String(decoding: a, as: UTF8.self)) \(String(decoding: b, as: UTF8.self))) names a token that is not in the vocabulary")
            }
            entries.append((l, r, m))
        }
        // Unused ids decode to nothing.
        self.tokenBytes = tokenBytes[..<count].map { $0 ?? [] }
        maxTokenBytes = self.tokenBytes.reduce(0) { max($0, $1.count) }
        // Longest first, so that a token that is a prefix of another never shadows it.
        self.addedTokens = added.map { (content: $0.0, id: $0.1) }.sorted { $0.content.count > $1.content.count }
        var starts = [Bool](repeating: false, count: 256)
        for token in added { starts[Int(token.0[0])] = true }
        addedTokenStarts = starts
        self.bpe = BPE(byteTokens: byteTokens, merges: MergeTable(entries))
    }

    /// Fewest tokens `bytes` bytes of text can become: no token is longer than `maxTokenBytes`,
    /// and normalization (NFC) shrinks text at most threefold. Lets a caller refuse text that
    /// cannot fit a limit without tokenizing it.
    public func fewestTokens(bytes: Int) -> Int {
        let most = 3 * max(1, maxTokenBytes)
        return (bytes + most - 1) / most
    }

    /// Id of the token whose text is exactly `text` (e.g. "yes"), if there is one.
    public func tokenID(_ text: String) -> Int32? {
        let bytes = Array(text.utf8)
        return tokenBytes.firstIndex(of: bytes).map { Int32($0) }
    }

    // MARK: - Encoding

    /// Token ids of `text` (no special tokens added; added tokens inside the text are matched).
    public func encode(_ text: String) -> [Int32] {
        var scratch = EncodeScratch()
        var out: [Int32] = []
        out.reserveCapacity(text.utf8.count / 3 + 4)
        encode(text, into: &out, scratch: &scratch)
        return out
    }

    /// Appends the ids of `text` to `out`, reusing `scratch` between calls.
    public func encode(_ text: String, into out: inout [Int32], scratch: inout EncodeScratch) {
        var text = text
        text.withUTF8 { utf8 in
            var segmentStart = 0
            var i = 0
            let n = utf8.count
            while i < n {
                // Check only where an added token can start (Qwen's all start with '<').
                if addedTokenStarts[Int(utf8[i])], let (len, id) = matchAdded(utf8, at: i) {
                    encodeOrdinary(UnsafeBufferPointer(rebasing: utf8[segmentStart..<i]), into: &out, scratch: &scratch)
                    out.append(id)
                    i += len
                    segmentStart = i
                } else {
                    i += 1
                }
            }
            encodeOrdinary(UnsafeBufferPointer(rebasing: utf8[segmentStart..<n]), into: &out, scratch: &scratch)
        }
    }

    private func matchAdded(_ utf8: UnsafeBufferPointer<UInt8>, at i: Int) -> (Int, Int32)? {
        let rest = utf8.count - i
        for token in addedTokens where token.content.count <= rest {
            var equal = true
            for (k, b) in token.content.enumerated() where utf8[i + k] != b {
                equal = false
                break
            }
            if equal { return (token.content.count, token.id) }
        }
        return nil
    }

    /// Text between added tokens: NFC, split, BPE.
    private func encodeOrdinary(_ raw: UnsafeBufferPointer<UInt8>, into out: inout [Int32],
                                scratch: inout EncodeScratch) {
        if raw.isEmpty { return }
        // Scalars below U+0300 are never changed by NFC; their UTF-8 lead bytes are < 0xCC.
        if raw.contains(where: { $0 >= 0xCC }) {
            let normalized = String(decoding: raw, as: UTF8.self).precomposedStringWithCanonicalMapping
            var bytes = Array(normalized.utf8)
            bytes.withUnsafeMutableBufferPointer { encodeNormalized(UnsafeBufferPointer($0), into: &out, scratch: &scratch) }
        } else {
            encodeNormalized(raw, into: &out, scratch: &scratch)
        }
    }

    private func encodeNormalized(_ utf8: UnsafeBufferPointer<UInt8>, into out: inout [Int32],
                                  scratch: inout EncodeScratch) {
        scratch.decode(utf8)
        let count = scratch.count
        var bpeScratch = scratch.bpe
        scratch.scalars.withUnsafeBufferPointer { sc in
            scratch.classes.withUnsafeBufferPointer { cl in
                scratch.offsets.withUnsafeBufferPointer { offsets in
                    PreTokenizer.split(scalars: UnsafeBufferPointer(rebasing: sc[0..<count]),
                                       classes: UnsafeBufferPointer(rebasing: cl[0..<count])) { start, end in
                        let word = UnsafeBufferPointer(rebasing: utf8[offsets[start]..<offsets[end]])
                        bpe.encode(word: word, into: &out, scratch: &bpeScratch)
                    }
                }
            }
        }
        scratch.bpe = bpeScratch
    }

    // MARK: - Decoding

    /// Text of `ids` (invalid UTF-8 sequences become U+FFFD, as Hugging Face's decoder does).
    public func decode(_ ids: [Int32]) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && Int(id) < tokenBytes.count { bytes += tokenBytes[Int(id)] }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Buffers reused across `encode` calls: decoded scalars, their classes and byte offsets.
public struct EncodeScratch {
    var scalars: [UInt32] = []
    var classes: [UInt8] = []
    var offsets: [Int] = []
    var count = 0
    var bpe = BPEScratch()

    public init() {}

    /// Decodes valid UTF-8 (Swift strings always are) into scalars and classes.
    mutating func decode(_ utf8: UnsafeBufferPointer<UInt8>) {
        let n = utf8.count
        if scalars.count < n + 1 {
            scalars = [UInt32](repeating: 0, count: n + 1)
            classes = [UInt8](repeating: 0, count: n + 1)
            offsets = [Int](repeating: 0, count: n + 1)
        }
        var i = 0, k = 0
        while i < n {
            let b0 = UInt32(utf8[i])
            var s: UInt32
            var len: Int
            if b0 < 0x80 {
                s = b0; len = 1
            } else if b0 < 0xE0 {
                s = (b0 & 0x1F) << 6 | (UInt32(utf8[i + 1]) & 0x3F); len = 2
            } else if b0 < 0xF0 {
                s = (b0 & 0x0F) << 12 | (UInt32(utf8[i + 1]) & 0x3F) << 6 | (UInt32(utf8[i + 2]) & 0x3F); len = 3
            } else {
                s = (b0 & 0x07) << 18 | (UInt32(utf8[i + 1]) & 0x3F) << 12
                    | (UInt32(utf8[i + 2]) & 0x3F) << 6 | (UInt32(utf8[i + 3]) & 0x3F)
                len = 4
            }
            scalars[k] = s
            classes[k] = PreTokenizer.classify(s)
            offsets[k] = i
            i += len
            k += 1
        }
        offsets[k] = n
        count = k
    }
}
