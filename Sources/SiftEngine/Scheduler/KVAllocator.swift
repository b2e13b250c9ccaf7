import Qwen3

/// An engine's KV memory: its block pool within the budget, and the prefix cache inside it
/// (scheduler thread only). The planner decides, from `freeBlocks`, which requests start and
/// which documents run; `allocation(for:)` turns that plan into data — who starts, how many
/// cache blocks are evicted, which documents get their blocks — and `apply` carries it out, so
/// live blocks never pass the budget.
final class KVAllocator {
    let pool: KVBlockPool
    /// Blocks the engine may hold at once.
    let budgetBlocks: Int
    let prefixCache: PrefixCache
    /// Documents share their request's prefix KV (`EngineOptions.prefixSharing`).
    let sharing: Bool

    init(config: Qwen3Config, precision: AttentionPrecision, budgetBytes: Int, prefixCacheBytes: Int, sharing: Bool) {
        pool = KVBlockPool(layerCount: config.layerCount, kvDim: config.kvDim, headDim: config.headDim, precision: precision,
                           keepFreeBytes: min(256 << 20, budgetBytes / 4), capacityBytes: budgetBytes)
        budgetBlocks = budgetBytes / pool.blockBytes
        // The prefix cache lives inside the KV budget.
        prefixCache = PrefixCache(budgetBytes: min(prefixCacheBytes, budgetBytes / 2), blockBytes: pool.blockBytes)
        self.sharing = sharing
    }

    var budgetBytes: Int { budgetBlocks * pool.blockBytes }

    /// Blocks held or reserved: everything live except what the prefix cache could evict, with
    /// each running request's documents counted at least at its slot.
    func committedBlocks(_ active: [ActiveRequest]) -> Int {
        var committed = pool.liveBlocks - prefixCache.unpinned
        for r in active {
            if let h = r.holdings { committed += r.reservedDocumentBlocks - h.inFlightBlocks }
        }
        return committed
    }

    func freeBlocks(_ active: [ActiveRequest]) -> Int { budgetBlocks - committedBlocks(active) }

    /// What starting `r` costs, for the planner: prefix tokens left to compute, and the blocks
    /// its start commits (prefix blocks to allocate or pin, plus its slot).
    func startCost(_ r: ActiveRequest) -> (prefixRemaining: Int, blocks: Int) {
        guard sharing else { return (0, r.slotBlocks) }
        // Cached blocks someone else pins cost nothing; unpinned ones become pinned.
        let (entries, covered) = prefixCache.peek(r.prefix, partition: r.cachePartition)
        return (r.prefix.count - covered,
                r.slotBlocks + KVBlockPool.blocks(forPositions: r.prefix.count) - entries.filter { $0.users > 0 }.count)
    }

    /// The memory a step's plan takes, decided before any is taken.
    struct Allocation {
        /// Requests the step starts (they take their reservation).
        var starting: [ActiveRequest] = []
        /// Unpinned prefix-cache blocks to evict first.
        var evictions = 0
        /// Documents that start in the step: each allocates all its blocks.
        var documents: [(request: ActiveRequest, index: Int)] = []
    }

    func allocation(for plan: [Planner.Item], _ byID: [UInt64: ActiveRequest]) -> Allocation {
        var a = Allocation()
        var needed = 0
        for item in plan {
            let r = byID[item.request]!
            if r.holdings == nil && !a.starting.contains(where: { $0 === r }) {
                a.starting.append(r)
                if sharing {
                    // Its prefix blocks the cache does not hold (those it holds are pinned, not allocated).
                    let cached = prefixCache.peek(r.prefix, partition: r.cachePartition).entries.count
                    needed += KVBlockPool.blocks(forPositions: r.prefix.count) - cached
                }
            }
            if case let .document(i) = item.target, r.documents[i].cache == nil {
                a.documents.append((r, i))
                needed += r.documents[i].blocks
            }
        }
        a.evictions = max(0, pool.liveBlocks + needed - budgetBlocks)
        return a
    }

    /// Carries out an allocation: starting requests pin their cached prefix blocks (so eviction
    /// cannot take them), then the evictions, then the new blocks. Returns, per starting
    /// request, the prefix tokens the cache covered (they need no compute).
    func apply(_ a: Allocation) -> [(request: ActiveRequest, cachedTokens: Int)] {
        var started: [(ActiveRequest, Int)] = []
        for r in a.starting {
            guard sharing else {
                r.start(KVHoldings(prefixKV: nil, prefixReady: true, pinned: []), cachedTokens: 0)
                started.append((r, 0))
                continue
            }
            let (entries, covered) = prefixCache.acquire(r.prefix, partition: r.cachePartition)
            let kv = KVCache(pool: pool, blocks: entries.map(\.block), count: covered)
            r.start(KVHoldings(prefixKV: kv, prefixReady: covered == r.prefix.count, pinned: entries), cachedTokens: covered)
            started.append((r, covered))
        }
        if a.evictions > 0 { prefixCache.evict(entries: a.evictions) }
        for r in a.starting { r.holdings!.prefixKV?.reserve(r.prefix.count) }
        for (r, i) in a.documents {
            let doc = r.documents[i], h = r.holdings!
            if let prefix = h.prefixKV {
                doc.cache = prefix.copy(reserving: doc.tokens.count)
            } else {
                let cache = KVCache(pool: pool)
                cache.reserve(doc.tokens.count)
                doc.cache = cache
            }
            h.inFlightBlocks += doc.blocks
        }
        return started
    }

    /// A finished prefix goes into the prefix cache; the request pins what it inserted.
    func prefixFinished(_ r: ActiveRequest) {
        let h = r.holdings!
        h.prefixReady = true
        h.pinned += prefixCache.insert(r.prefix, cache: h.prefixKV!, partition: r.cachePartition)
    }

    /// A scored document's own blocks are freed.
    func documentFinished(_ r: ActiveRequest, _ doc: DocumentWork) {
        doc.cache = nil
        r.holdings!.inFlightBlocks -= doc.blocks
    }

    /// Frees everything `r` holds (its pins, its prefix and documents' blocks).
    func free(_ r: ActiveRequest) {
        if let h = r.holdings { prefixCache.release(h.pinned) }
        for d in r.documents { d.cache = nil }
    }

    /// Live, peak and reserved bytes, and the prefix cache's figures, for the engine's stats.
    func record(into stats: inout EngineStats, active: [ActiveRequest]) {
        stats.kvBytes = pool.liveBytes
        stats.kvPeakBytes = pool.peakBlocks * pool.blockBytes
        stats.kvReservedBytes = committedBlocks(active) * pool.blockBytes
        stats.prefixCacheBytes = prefixCache.bytes
        stats.prefixLookupTokens = prefixCache.lookups
        stats.prefixHitTokens = prefixCache.hits
    }
}
