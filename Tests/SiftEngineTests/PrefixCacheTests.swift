import Qwen3
@testable import SiftEngine
import XCTest

final class PrefixCacheTests: XCTestCase {
    let pool = KVBlockPool(layerCount: 1, kvDim: 16, headDim: 16)

    /// A computed prefix: a cache holding `tokens` (K/V content is irrelevant here).
    func computed(_ tokens: [Int32]) -> KVCache {
        let c = KVCache(pool: pool)
        c.reserve(tokens.count)
        return KVCache(pool: pool, blocks: c.blocks, count: tokens.count)
    }

    func testRepeatedPrefixIsServedWholeIncludingTheTail() {
        let cache = PrefixCache(budgetBytes: 1 << 30, blockBytes: pool.blockBytes)
        let tokens = (0..<40).map { Int32($0) }  // 2 full blocks + 8-token tail
        XCTAssertEqual(cache.acquire(tokens).coveredTokens, 0)
        let inserted = cache.insert(tokens, cache: computed(tokens))
        XCTAssertEqual(inserted.count, 3)
        XCTAssertEqual(inserted.map(\.users), [1, 1, 1])
        let hit = cache.acquire(tokens)
        XCTAssertEqual(hit.coveredTokens, 40)
        XCTAssertEqual(hit.entries.map(\.key), inserted.map(\.key))
        XCTAssertEqual(hit.entries.map(\.users), [2, 2, 2])
        cache.release(hit.entries)
        cache.release(inserted)
        XCTAssertEqual(hit.entries.map(\.users), [0, 0, 0])
    }

    func testSharedStartIsReusedAcrossDifferentQueries() {
        let cache = PrefixCache(budgetBytes: 1 << 30, blockBytes: pool.blockBytes)
        let a = (0..<40).map { Int32($0) }
        var b = a
        b[35] = 999  // differs in the tail only
        b += [1, 2, 3]
        let first = cache.insert(a, cache: computed(a))
        let hit = cache.acquire(b)
        XCTAssertEqual(hit.coveredTokens, 32)  // both full blocks, not a's tail
        XCTAssertEqual(hit.entries.map(\.key), Array(first.prefix(2)).map(\.key))
        var c = a
        c[3] = 7  // differs in the first block: nothing shared
        XCTAssertEqual(cache.acquire(c).coveredTokens, 0)
    }

    func testEvictsLeastRecentlyUsedUnpinnedBlocksWithinBudget() {
        let cache = PrefixCache(budgetBytes: 3 * pool.blockBytes, blockBytes: pool.blockBytes)
        let a = (0..<32).map { Int32($0) }, b = (100..<132).map { Int32($0) }, c = (200..<232).map { Int32($0) }
        let ea = cache.insert(a, cache: computed(a))
        cache.release(ea)
        let eb = cache.insert(b, cache: computed(b))  // 4 blocks > budget of 3: a's tail block goes first
        XCTAssertEqual(cache.count, 3)
        XCTAssertTrue(cache.contains(ea[0]))
        XCTAssertFalse(cache.contains(ea[1]))
        // b and c are pinned by their requests: only a's remaining block can go.
        let ec = cache.insert(c, cache: computed(c))
        XCTAssertFalse(cache.contains(ea[0]))
        XCTAssertTrue(eb.allSatisfy(cache.contains) && ec.allSatisfy(cache.contains))
        XCTAssertEqual(cache.count, 4, "pinned blocks may exceed the budget until released")
        cache.release(eb)  // now b's blocks go, tail first, until within budget
        XCTAssertFalse(cache.contains(eb[1]))
        XCTAssertTrue(cache.contains(eb[0]))
        cache.release(ec)
        XCTAssertEqual(cache.evictions, 3)
        XCTAssertLessThanOrEqual(cache.bytes, 3 * pool.blockBytes)
    }

    func testZeroBudgetDisablesCaching() {
        let cache = PrefixCache(budgetBytes: 0, blockBytes: pool.blockBytes)
        let t = (0..<40).map { Int32($0) }
        XCTAssertEqual(cache.insert(t, cache: computed(t)).count, 0)
        XCTAssertEqual(cache.acquire(t).coveredTokens, 0)
    }
}
