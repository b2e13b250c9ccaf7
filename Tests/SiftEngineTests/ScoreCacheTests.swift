import Foundation
import Qwen3
import SiftBase
@testable import SiftEngine
import SiftTestSupport
import XCTest

/// The exact score cache: what it answers is what the engine would compute, bit for bit; it
/// stays within its budget; it never answers for another engine (another model).
final class ScoreCacheTests: XCTestCase {
    func makeEngine(cacheBytes: Int = 0, shared: ScoreCache? = nil) -> SiftEngine {
        var options = EngineOptions()
        options.scoreCacheBytes = cacheBytes
        return SiftEngine(reranker: EngineLimitsTests.reranker, options: options, scoreCache: shared)
    }

    static let docs = EngineTests.docs + ["Tokyo is the capital of Japan.", EngineLimitsTests.words(300, 3)]

    /// Every field a client sees, logits as bits.
    func assertSame(_ a: [DocumentScore], _ b: [DocumentScore], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        for (x, y) in zip(a, b) {
            XCTAssertEqual(x.logit.bitPattern, y.logit.bitPattern, "document \(x.index)", file: file, line: line)
            XCTAssertEqual(x, y, file: file, line: line)
        }
    }

    func testAFullQueueStillAdmitsWhatTheCacheAnswers() async throws {
        var options = EngineOptions()
        options.scoreCacheBytes = 1 << 20
        options.maxQueuedTokens = 3000
        options.maxRequestTokens = 3000
        let engine = SiftEngine(reranker: EngineLimitsTests.reranker, options: options)
        let seen = Array(Self.docs[0..<3])
        let first = try await engine.rerank(RerankRequest(query: "q", documents: seen))
        // Fill the queue with a call admitted but not yet run.
        let filler = try engine.admit(RerankRequest(query: "filler", documents: [EngineLimitsTests.words(2000, 1)]))
        XCTAssertEqual(engine.stats.queuedTokens, 3000)
        // A call the cache answers whole is admitted and answered; one that needs compute is refused.
        let again = try await engine.rerank(RerankRequest(query: "q", documents: seen))
        XCTAssertEqual(again.usage.cachedDocuments, seen.count)
        assertSame(again.results, first.results)
        XCTAssertThrowsError(try engine.admit(RerankRequest(query: "q", documents: seen + ["a new document"]))) { error in
            XCTAssertEqual((error as? EngineError)?.code, .resourceExhausted)
        }
        XCTAssertEqual(engine.stats.queuedTokens, 3000)
        withExtendedLifetime(filler) {}  // held to the end
    }

    func testACachedAnswerIsBitIdenticalToAFreshOne() async throws {
        let cached = makeEngine(cacheBytes: 1 << 20)
        let fresh = makeEngine()
        let docs = Self.docs
        for chunk in [false, true] {
            func request(_ documents: [String]) -> RerankRequest {
                var r = RerankRequest(query: "What is the capital of China?", documents: documents, topN: 3, maxLength: 160)
                r.chunkLongDocuments = chunk
                return r
            }
            // Warm the cache with some documents, then ask for a mix of seen and unseen ones, streamed.
            let first = try await cached.rerank(request(Array(docs[0..<4])))
            XCTAssertEqual(first.usage.cachedDocuments, 0)
            let mixed = [docs[2], docs[5], docs[0], docs[6], docs[3], docs[1]]
            let streamed = Locked<[Int]>([])
            var r = request(mixed)
            r.onProgress = { scores in streamed.withLock { $0 += scores.map(\.index) } }
            let answer = try await cached.rerank(r)
            let reference = try await fresh.rerank(request(mixed))
            assertSame(answer.results, reference.results)
            assertSame(answer.ranked, reference.ranked)
            XCTAssertEqual(answer.usage.cachedDocuments, 4)
            // Usage counts cached documents as when they were computed.
            var usage = answer.usage
            usage.cachedDocuments = 0
            usage.prefixTokensCached = reference.usage.prefixTokensCached
            XCTAssertEqual(usage, reference.usage)
            XCTAssertEqual(streamed.withLock { $0.sorted() }, Array(0..<mixed.count), "every document streamed once")
            // Asked again, everything comes from the cache and still matches.
            let again = try await cached.rerank(request(mixed))
            XCTAssertEqual(again.usage.cachedDocuments, mixed.count)
            assertSame(again.results, reference.results)
            XCTAssertEqual(again.timings.computing, .zero)
        }
        let stats = cached.stats
        XCTAssertGreaterThan(stats.scoreCacheHits, 0)
        XCTAssertGreaterThan(stats.scoreCacheLookups, stats.scoreCacheHits)
    }

    func testEveryOptionThatChangesAScoreIsPartOfTheKey() async throws {
        let engine = makeEngine(cacheBytes: 1 << 20)
        let doc = [Self.docs[6]]
        var base = RerankRequest(query: "q", documents: doc)
        _ = try await engine.rerank(base)
        // The default instruction spelt out is the same prompt: a hit.
        base.instruction = RerankPrompt.defaultInstruction
        let spelt = try await engine.rerank(base)
        XCTAssertEqual(spelt.usage.cachedDocuments, 1)
        var variants: [RerankRequest] = []
        for change in 0..<6 {
            var r = RerankRequest(query: "q", documents: doc)
            switch change {
            case 0: r.query = "q2"
            case 1: r.instruction = ""
            case 2: r.maxLength = 100
            case 3: r.maxTokensPerDocument = 8
            case 4: r.chunkLongDocuments = true; r.maxLength = 120
            default: r.chunkLongDocuments = true; r.maxLength = 120; r.chunkOverlapTokens = 3
            }
            variants.append(r)
        }
        for (i, r) in variants.enumerated() {
            let answer = try await engine.rerank(r)
            XCTAssertEqual(answer.usage.cachedDocuments, 0, "variant \(i) was answered from another's entry")
        }
        // Canonically equivalent texts tokenize differently: not the same document.
        _ = try await engine.rerank(RerankRequest(query: "q", documents: ["caf\u{E9}"]))
        let decomposed = try await engine.rerank(RerankRequest(query: "q", documents: ["cafe\u{301}"]))
        XCTAssertEqual(decomposed.usage.cachedDocuments, 0)
    }

    func testAnotherEngineNeverHitsEvenWithTheSameModelAndACacheShared() async throws {
        let shared = ScoreCache(budgetBytes: 1 << 20)
        let a = makeEngine(shared: shared), b = makeEngine(shared: shared)
        let request = RerankRequest(query: "q", documents: Array(Self.docs[0..<3]))
        _ = try await a.rerank(request)
        XCTAssertEqual(shared.count, 3)
        let fromB = try await b.rerank(request)
        XCTAssertEqual(fromB.usage.cachedDocuments, 0)
        XCTAssertEqual(shared.count, 6)
        let fromA = try await a.rerank(request)
        XCTAssertEqual(fromA.usage.cachedDocuments, 3)
    }

    func testTheCacheStaysWithinItsBudgetAndEvictsTheLeastRecentlyUsed() {
        let entry = ScoreCache.Entry(logit: 1, tokens: 3, truncated: false, inputTokens: 9, window: 0, windows: 1, computedTokens: 3)
        let context = ScoreCache.context(engine: UUID(), instruction: "i", query: "q", maxLength: 100, maxTokensPerDocument: nil,
                                         chunk: false, chunkOverlap: nil)
        let docs = (0..<50).map { "document number \($0) " + String(repeating: "x", count: $0 % 7 * 10) }
        let budget = 10 * (ScoreCache.entryOverhead + 60)
        let cache = ScoreCache(budgetBytes: budget)
        for (i, d) in docs.enumerated() {
            cache.insert(context, document: d, entry)
            XCTAssertLessThanOrEqual(cache.bytes, budget)
            // Document 0 is used after every insert: it is never the least recently used.
            if i > 0 { XCTAssertNotNil(cache.lookup(context, document: docs[0]), "evicted although just used (insert \(i))") }
        }
        XCTAssertGreaterThan(cache.evictions, 30)
        XCTAssertNotNil(cache.lookup(context, document: docs[49]))
        XCTAssertNil(cache.lookup(context, document: docs[1]))
        XCTAssertEqual(cache.bytes, (cache.count - 0) * ScoreCache.entryOverhead
                       + docs.filter { cache.lookup(context, document: $0) != nil }.reduce(0) { $0 + $1.utf8.count })
        // A document larger than the whole budget is not stored, and evicts nothing.
        let before = cache.count
        cache.insert(context, document: String(repeating: "y", count: budget), entry)
        XCTAssertEqual(cache.count, before)
        // An off cache stores nothing.
        let off = ScoreCache(budgetBytes: 0)
        off.insert(context, document: "a", entry)
        XCTAssertNil(off.lookup(context, document: "a"))
    }
}
