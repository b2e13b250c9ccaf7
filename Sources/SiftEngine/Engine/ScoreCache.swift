import Crypto
import Foundation
import SiftBase

/// Scores already computed, answered again without computing.
///
/// Exact, not approximate: Sift's scores are bit-identical whether a document is scored alone,
/// batched or with a cached prefix, so a score computed once is the score it would compute
/// again. An entry is keyed by SHA-256 of (the call's context: engine, instruction, query,
/// length and chunk options) and the document's bytes; a hit is verified by comparing the
/// stored document bytes and context digest, as the prefix cache compares its tokens. Bounded by
/// `budgetBytes` (document bytes plus a fixed overhead per entry), least recently used first
/// out. Thread-safe; one cache may serve several engines (their contexts never match).
public final class ScoreCache: Sendable {
    /// What a cached document answers: its score and what it counted when computed.
    public struct Entry: Sendable, Equatable {
        public var logit: Float
        public var tokens: Int
        public var truncated: Bool
        public var inputTokens: Int
        public var window: Int
        public var windows: Int
        /// Document tokens over all its windows (what `usage.documentTokens` counted for it).
        public var computedTokens: Int
    }

    /// The part of a key shared by every document of a call.
    public struct Context: Sendable, Equatable {
        let digest: SHA256Digest
    }

    /// Bytes an entry costs besides its document's (digests, score, list links, table slot).
    static let entryOverhead = 160

    public let budgetBytes: Int
    private let state: Locked<LRU>

    public init(budgetBytes: Int) {
        self.budgetBytes = max(0, budgetBytes)
        state = Locked(LRU())
    }

    /// The context of a call; every field that changes a score is in it.
    public static func context(engine: UUID, instruction: String, query: String, maxLength: Int,
                               maxTokensPerDocument: Int?, chunk: Bool, chunkOverlap: Int?, partition: UInt64 = 0) -> Context {
        var hasher = SHA256()
        withUnsafeBytes(of: engine.uuid) { hasher.update(bufferPointer: $0) }
        let numbers: [Int64] = [Int64(maxLength), Int64(maxTokensPerDocument ?? -1), chunk ? 1 : 0,
                                chunk ? Int64(chunkOverlap ?? -1) : 0, Int64(bitPattern: partition)]
        numbers.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        // Length-prefixed, so no two (instruction, query) pairs give the same bytes.
        for text in [instruction, query] {
            withUnsafeBytes(of: Int64(text.utf8.count)) { hasher.update(bufferPointer: $0) }
            update(&hasher, text)
        }
        return Context(digest: hasher.finalize())
    }

    /// The cached entry of `document` in `context`, if any (marks it recently used).
    public func lookup(_ context: Context, document: String) -> Entry? {
        guard budgetBytes > 0 else { return nil }
        let key = Self.key(context, document)
        return state.withLock { lru in
            guard let slot = lru.index[key] else { return nil }
            // Compared as bytes: Swift's String == treats canonically equivalent texts as equal,
            // but they tokenize differently.
            guard lru.nodes[slot].context == context.digest, lru.nodes[slot].document.elementsEqual(document.utf8) else { return nil }
            lru.touch(slot)
            return lru.nodes[slot].entry
        }
    }

    /// Stores a computed score, evicting the least recently used entries beyond the budget.
    /// A document bigger than the whole budget is not stored.
    public func insert(_ context: Context, document: String, _ entry: Entry) {
        let cost = document.utf8.count + Self.entryOverhead
        guard budgetBytes > 0, cost <= budgetBytes else { return }
        let key = Self.key(context, document)
        state.withLock { lru in
            if let slot = lru.index[key] {
                lru.touch(slot)
                return
            }
            while lru.bytes + cost > budgetBytes, lru.evictOldest() {}
            lru.add(Node(key: key, context: context.digest, document: Array(document.utf8), entry: entry, cost: cost))
        }
    }

    public var bytes: Int { state.withLock { $0.bytes } }
    public var count: Int { state.withLock { $0.index.count } }
    public var evictions: Int { state.withLock { $0.evictions } }

    private static func key(_ context: Context, _ document: String) -> SHA256Digest {
        var hasher = SHA256()
        context.digest.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        update(&hasher, document)
        return hasher.finalize()
    }

    /// Hashes a string's UTF-8 bytes in place (no copy for native strings).
    private static func update(_ hasher: inout SHA256, _ text: String) {
        var text = text
        text.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
    }

    fileprivate struct Node {
        var key: SHA256Digest
        var context: SHA256Digest
        var document: [UInt8]
        var entry: Entry
        var cost: Int
        var newer = -1
        var older = -1
    }

    /// Entries in a doubly linked list, most recent first, stored in an array with a free list.
    fileprivate struct LRU {
        var nodes: [Node] = []
        var index: [SHA256Digest: Int] = [:]
        var free: [Int] = []
        var newest = -1
        var oldest = -1
        var bytes = 0
        var evictions = 0

        mutating func add(_ node: Node) {
            let slot: Int
            if let reused = free.popLast() {
                nodes[reused] = node
                slot = reused
            } else {
                nodes.append(node)
                slot = nodes.count - 1
            }
            index[node.key] = slot
            bytes += node.cost
            linkNewest(slot)
        }

        mutating func touch(_ slot: Int) {
            guard slot != newest else { return }
            unlink(slot)
            linkNewest(slot)
        }

        /// Drops the least recently used entry; false when there is none.
        mutating func evictOldest() -> Bool {
            let slot = oldest
            guard slot >= 0 else { return false }
            unlink(slot)
            index.removeValue(forKey: nodes[slot].key)
            bytes -= nodes[slot].cost
            nodes[slot].document = []
            free.append(slot)
            evictions += 1
            return true
        }

        private mutating func linkNewest(_ slot: Int) {
            nodes[slot].older = newest
            nodes[slot].newer = -1
            if newest >= 0 { nodes[newest].newer = slot }
            newest = slot
            if oldest < 0 { oldest = slot }
        }

        private mutating func unlink(_ slot: Int) {
            let (newer, older) = (nodes[slot].newer, nodes[slot].older)
            if newer >= 0 { nodes[newer].older = older } else { newest = older }
            if older >= 0 { nodes[older].newer = newer } else { oldest = newer }
            nodes[slot].newer = -1
            nodes[slot].older = -1
        }
    }
}
