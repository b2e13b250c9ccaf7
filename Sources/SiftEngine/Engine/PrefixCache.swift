import Qwen3

/// KV blocks of recently used prompt prefixes, shared across requests.
///
/// A prefix (system prompt + instruction + query) is cut into blocks of 16 tokens. Full block i
/// is keyed by a chained hash of all tokens up to its end (parent key + its own tokens), so the
/// system + instruction part is shared between different queries and a repeated query reuses
/// every block. The prefix's last, partly filled block is cached too, keyed by the same chain
/// plus a tail marker, so a repeated query computes nothing. Entries in use by a request are
/// pinned (`users` > 0); the others are evicted least recently used first when the cache holds
/// more than `budgetBytes`. Every chain starts from its *partition*'s seed: requests of different
/// partitions (API keys, when a server has several) never share blocks, so no tenant can learn
/// from cache hits what another sent. Only the scheduler thread uses it.
public final class PrefixCache {
    public final class Entry {
        public let key: UInt64
        public let tokens: [Int32]        // this block's tokens (checked on lookup)
        public let block: KVBlock
        public fileprivate(set) var users = 0
        fileprivate var lastUse: UInt64 = 0

        init(key: UInt64, tokens: [Int32], block: KVBlock) {
            self.key = key
            self.tokens = tokens
            self.block = block
        }
    }

    public let budgetBytes: Int
    public let blockBytes: Int
    private var entries: [UInt64: Entry] = [:]
    private var clock: UInt64 = 0
    public private(set) var hits = 0       // tokens served from the cache
    public private(set) var lookups = 0    // tokens looked up
    public private(set) var evictions = 0

    public init(budgetBytes: Int, blockBytes: Int) {
        self.budgetBytes = budgetBytes
        self.blockBytes = blockBytes
    }

    public var count: Int { entries.count }
    public var bytes: Int { entries.count * blockBytes }
    /// Entries no request uses: their blocks are freed by evicting them.
    public private(set) var unpinned = 0

    static let seed: UInt64 = 0x5153_4946_545F_5631  // any fixed value

    /// The first parent of a partition's chains (partition 0: the one shared by all).
    static func seed(_ partition: UInt64) -> UInt64 {
        partition == 0 ? seed : key(parent: seed ^ partition, tokens: [], tail: true)
    }

    /// Key of the block after `parent` holding `tokens` (`tail`: a partly filled last block).
    static func key(parent: UInt64, tokens: ArraySlice<Int32>, tail: Bool) -> UInt64 {
        var h = parent ^ (tail ? 0x9E37_79B9_7F4A_7C15 : 0)
        for t in tokens {
            h = (h ^ UInt64(UInt32(bitPattern: t))) &* 0x0000_0100_0000_01B3
            h ^= h >> 29
        }
        h = (h ^ UInt64(tokens.count)) &* 0xBF58_476D_1CE4_E5B9
        return h ^ (h >> 31)
    }

    /// The cached blocks covering the longest cached start of `tokens`, pinned for the caller
    /// (release them with `release`). Covers whole blocks, plus the tail when every full
    /// block and the tail are cached.
    public func acquire(_ tokens: [Int32], partition: UInt64 = 0) -> (entries: [Entry], coveredTokens: Int) {
        clock += 1
        lookups += tokens.count
        let (found, covered) = peek(tokens, partition: partition)
        touch(found)
        for e in found { pin(e) }
        hits += covered
        return (found, covered)
    }

    /// What `acquire` would return, without pinning, touching or counting anything.
    public func peek(_ tokens: [Int32], partition: UInt64 = 0) -> (entries: [Entry], coveredTokens: Int) {
        let p = KVBlock.positions
        guard budgetBytes > 0 else { return ([], 0) }
        var found: [Entry] = []
        var parent = Self.seed(partition)
        var covered = 0
        while covered + p <= tokens.count {
            let slice = tokens[covered..<(covered + p)]
            let k = Self.key(parent: parent, tokens: slice, tail: false)
            guard let e = entries[k], e.tokens.elementsEqual(slice) else { break }
            found.append(e)
            parent = k
            covered += p
        }
        if covered == tokens.count - tokens.count % p, tokens.count % p != 0 {
            let slice = tokens[covered...]
            let k = Self.key(parent: parent, tokens: slice, tail: true)
            if let e = entries[k], e.tokens.elementsEqual(slice) {
                found.append(e)
                covered = tokens.count
            }
        }
        return (found, covered)
    }

    private func pin(_ e: Entry) {
        if e.users == 0 { unpinned -= 1 }
        e.users += 1
    }

    private func unpin(_ e: Entry) {
        e.users -= 1
        if e.users == 0 { unpinned += 1 }
    }

    /// Offers the blocks of a computed prefix (`cache` holds exactly `tokens`); blocks already
    /// cached are skipped. The new entries are pinned for the caller like `acquire`'s.
    public func insert(_ tokens: [Int32], cache: KVCache, partition: UInt64 = 0) -> [Entry] {
        guard budgetBytes > 0 else { return [] }
        let p = KVBlock.positions
        clock += 1
        var added: [Entry] = []
        var parent = Self.seed(partition)
        var start = 0
        while start < tokens.count {
            let end = min(start + p, tokens.count)
            let slice = tokens[start..<end]
            let tail = end - start < p
            let k = Self.key(parent: parent, tokens: slice, tail: tail)
            if entries[k] == nil {
                let e = Entry(key: k, tokens: Array(slice), block: cache.blocks[start / p])
                e.users = 1
                entries[k] = e
                added.append(e)
            }
            parent = k
            start = end
        }
        touch(added)
        evict()
        return added
    }

    /// Marks entries as just used, the last block of a prefix as the least recent: when a
    /// prefix goes, its tail goes first and the widely shared start (system prompt,
    /// instruction) stays.
    private func touch(_ list: [Entry]) {
        for e in list.reversed() {
            clock += 1
            e.lastUse = clock
        }
    }

    /// Unpins entries acquired or inserted by a finished request.
    public func release(_ list: [Entry]) {
        for e in list where entries[e.key] === e { unpin(e) }
        evict()
    }

    /// Drops unpinned entries, least recently used first, until within budget.
    private func evict() {
        guard bytes > budgetBytes else { return }
        evict(entries: (bytes - budgetBytes + blockBytes - 1) / blockBytes)
    }

    /// Drops up to `n` unpinned entries, least recently used first (to make room for KV the
    /// engine must allocate); returns how many went.
    @discardableResult
    public func evict(entries n: Int) -> Int {
        guard n > 0, unpinned > 0 else { return 0 }
        let victims = entries.values.filter { $0.users == 0 }.sorted { $0.lastUse < $1.lastUse }.prefix(n)
        for v in victims {
            entries[v.key] = nil
            unpinned -= 1
            evictions += 1
        }
        return victims.count
    }

    /// Whether `tokens`' block at `index` is cached (for tests and diagnostics).
    public func contains(_ entry: Entry) -> Bool { entries[entry.key] === entry }
}
