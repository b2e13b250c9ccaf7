import Foundation
import Qwen3
import SiftBase
@testable import SiftEngine
import SiftTestSupport
import XCTest

/// Calls that ask for more than the engine can give: refused at once and in words, never
/// built, never allowed to starve others or to take memory past the budget.
final class EngineLimitsTests: XCTestCase {
    static let reranker: RerankerModel = {
        let tok = EngineTests.tokenizer
        let model = try! Qwen3Model(checkpoint: try! Qwen3Checkpoint(directory: Fixtures.tinyModel), yesID: 9693, noID: 2152,
                                    precision: .int8, threads: 2, calibrationTokens: RerankerModel.calibrationTokens(tok))
        return RerankerModel(tokenizer: tok, model: model, yesID: 9693, noID: 2152)
    }()

    func makeEngine(_ configure: (inout EngineOptions) -> Void = { _ in }) -> SiftEngine {
        var options = EngineOptions()
        configure(&options)
        return SiftEngine(reranker: Self.reranker, options: options)
    }

    /// About one token per word (common English words).
    static func words(_ n: Int, _ seed: Int = 0) -> String {
        let vocabulary = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
                          "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an"]
        return (0..<n).map { vocabulary[($0 * 7 + seed) % vocabulary.count] }.joined(separator: " ")
    }

    func expectError(_ code: EngineError.Code, mentioning words: [String], _ body: () async throws -> Void,
                     line: UInt = #line) async {
        do {
            try await body()
            XCTFail("expected \(code)", line: line)
        } catch let e as EngineError {
            XCTAssertEqual(e.code, code, e.message, line: line)
            for w in words { XCTAssertTrue(e.message.contains(w), "'\(e.message)' should mention '\(w)'", line: line) }
        } catch {
            XCTFail("unexpected \(error)", line: line)
        }
    }

    // MARK: chunking

    /// An overlap as large as the window used to make a window per token (120k windows for a
    /// 600 KB document, ~3.6 GB): it is lowered to half the window.
    func testChunkOverlapIsLoweredToHalfTheWindow() async throws {
        let engine = makeEngine()
        let document = Self.words(600)
        let tokens = EngineTests.tokenizer.encode(" " + document).count
        var request = RerankRequest(query: "q", documents: [document], maxTokensPerDocument: 64)
        request.chunkLongDocuments = true
        for overlap in [1_000_000, 64, 63, 32] {
            request.chunkOverlapTokens = overlap
            let r = try await engine.rerank(request)
            let windows = r.results[0].windows
            XCTAssertEqual(windows, 1 + (tokens - 64 + 31) / 32, "overlap \(overlap)")
            XCTAssertEqual(r.usage.windows, windows)
        }
        request.chunkOverlapTokens = 16
        let r = try await engine.rerank(request)
        XCTAssertEqual(r.results[0].windows, 1 + (tokens - 64 + 47) / 48)
    }

    /// The probe's 600 KB frame: 120k tokens chunked with maximal overlap. Refused from counts,
    /// before any window exists, and the engine stays empty.
    func testAHugeChunkedCallIsRefusedBeforeAnythingIsBuilt() async throws {
        let engine = makeEngine()
        var request = RerankRequest(query: "q", documents: [Self.words(120_000)], maxLength: 256)
        request.chunkLongDocuments = true
        request.chunkOverlapTokens = 1_000_000
        await expectError(.invalidArgument, mentioning: ["tokens", "--max-request-tokens", "split"]) {
            _ = try await engine.rerank(request)
        }
        // Many tiny windows: the sequence count is bounded too.
        let small = makeEngine { $0.maxSequencesPerRequest = 100; $0.maxQueuedTokens = 10_000_000 }
        await expectError(.invalidArgument, mentioning: ["sequences", "at most 100"]) {
            _ = try await small.rerank(request)
        }
        XCTAssertEqual(engine.stats.queuedTokens, 0)
        XCTAssertEqual(engine.stats.activeRequests, 0)
        XCTAssertEqual(engine.stats.kvBytes, 0)
    }

    // MARK: the queue

    /// A call over its share of the queue is refused at once, even on an idle engine (it used
    /// to be admitted whenever the queue was empty, 4x over the limit, locking everyone out).
    func testACallOverItsShareOfTheQueueIsRefusedAtOnce() async throws {
        let engine = makeEngine { $0.maxQueuedTokens = 4000; $0.maxBatchTokens = 64; $0.prefillChunk = 32 }
        XCTAssertEqual(engine.options.requestTokenLimit, 2000)
        let started = ContinuousClock.now
        await expectError(.invalidArgument, mentioning: ["2000", "split"]) {
            _ = try await engine.rerank(RerankRequest(query: "q", documents: [Self.words(1500), Self.words(1500, 3)]))
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(1))
        XCTAssertEqual(engine.stats.queuedTokens, 0)
        // The largest call allowed leaves half the queue to others, which are admitted while it runs.
        let bigDocuments = [Self.words(800), Self.words(800, 5)]
        let documentTokens = bigDocuments.reduce(0) { $0 + EngineTests.tokenizer.encode(" " + $1).count }
        XCTAssertLessThan(documentTokens + 200, 2000, "the big call fits its share")
        XCTAssertGreaterThan(documentTokens, 1500)
        let big = Task { try await engine.rerank(RerankRequest(query: "q", documents: bigDocuments)) }
        while engine.stats.queuedTokens == 0 { try await Task.sleep(for: .milliseconds(1)) }
        for i in 0..<3 {
            let small = try await engine.rerank(RerankRequest(query: "other \(i)", documents: ["short", "documents"]))
            XCTAssertEqual(small.results.count, 2)
        }
        XCTAssertFalse(engine.stats.queuedTokens == 0, "the big call is still running")
        _ = try await big.value
    }

    // MARK: KV memory

    /// Many long documents in many calls under a small KV budget: every call is answered,
    /// with the same scores as without a budget, and live KV never passes the budget.
    func testPeakKVStaysUnderASmallBudgetAndEveryCallIsAnswered() async throws {
        let unlimited = makeEngine()
        let blockBytes = unlimited.kvBytesPerToken * KVBlock.positions
        let budget = 48 * blockBytes
        let engine = makeEngine { $0.kvBudgetBytes = budget; $0.maxBatchTokens = 96; $0.prefillChunk = 48 }
        XCTAssertEqual(engine.kvBudgetBytes, budget)
        let calls = (0..<6).map { c in (query: "query \(c)", documents: (0..<4).map { Self.words(150 + 40 * $0, c) }) }
        var expected: [[UInt32]] = []
        for call in calls {
            expected.append(try await unlimited.rerank(RerankRequest(query: call.query, documents: call.documents)).results.map(\.logit.bitPattern))
        }
        let results = try await withThrowingTaskGroup(of: (Int, [UInt32]).self) { group in
            for (i, call) in calls.enumerated() {
                group.addTask {
                    let r = try await engine.rerank(RerankRequest(query: call.query, documents: call.documents))
                    return (i, r.results.map(\.logit.bitPattern))
                }
            }
            var out = [[UInt32]](repeating: [], count: calls.count)
            for try await (i, logits) in group { out[i] = logits }
            return out
        }
        XCTAssertEqual(results, expected, "bit-identical under memory pressure")
        let stats = engine.stats
        XCTAssertLessThanOrEqual(stats.kvPeakBytes, budget)
        XCTAssertGreaterThan(stats.kvPeakBytes, budget / 2, "the budget was actually under pressure")
        XCTAssertEqual(stats.completed, calls.count)
        XCTAssertEqual(stats.activeRequests, 0)
        XCTAssertEqual(stats.kvReservedBytes, 0)
    }

    /// Without prefix sharing the same rules hold.
    func testKVBudgetWithoutPrefixSharing() async throws {
        let blockBytes = makeEngine().kvBytesPerToken * KVBlock.positions
        let engine = makeEngine { $0.kvBudgetBytes = 40 * blockBytes; $0.prefixSharing = false; $0.maxBatchTokens = 128 }
        let (docsA, docsB) = ((0..<5).map { Self.words(200, $0) }, (0..<5).map { Self.words(250, $0) })
        async let a = engine.rerank(RerankRequest(query: "a", documents: docsA))
        async let b = engine.rerank(RerankRequest(query: "b", documents: docsB))
        let (ra, rb) = try await (a, b)
        XCTAssertEqual(ra.results.count + rb.results.count, 10)
        XCTAssertLessThanOrEqual(engine.stats.kvPeakBytes, 40 * blockBytes)
    }

    /// A document that could never fit the budget is refused at once, naming the flag.
    func testADocumentLargerThanTheBudgetIsRefused() async throws {
        let blockBytes = makeEngine().kvBytesPerToken * KVBlock.positions
        let engine = makeEngine { $0.kvBudgetBytes = 20 * blockBytes }
        await expectError(.invalidArgument, mentioning: ["KV", "--kv-budget-mb", "max_length"]) {
            _ = try await engine.rerank(RerankRequest(query: "q", documents: ["short", Self.words(2000)]))
        }
        // Cut to fit, the same document is scored.
        let r = try await engine.rerank(RerankRequest(query: "q", documents: ["short", Self.words(2000)], maxTokensPerDocument: 100))
        XCTAssertTrue(r.results[1].truncated)
    }

    /// A stopped engine gives its KV memory back: its scheduler, pool and prefix cache go
    /// once the scheduler's loop has ended (the thread once held them for good).
    func testAStoppedEngineGivesBackItsKVMemory() async throws {
        weak var pool: KVBlockPool?
        do {
            let engine = makeEngine()
            _ = try await engine.rerank(RerankRequest(query: "q", documents: [Self.words(100), Self.words(120, 1)]))
            XCTAssertGreaterThan(engine.stats.prefixCacheBytes, 0, "the prefix cache holds blocks")
            pool = engine.scheduler.kv.pool
            engine.shutdown()
        }
        // The loop ends on its own thread: wait for it, up to 10 s.
        for _ in 0..<1000 where pool != nil { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertNil(pool, "the stopped engine's KV pool is still alive")
    }

    /// The default budget comes from available memory less the model's mapped weights.
    func testDefaultBudgetFollowsAvailableMemory() {
        XCTAssertEqual(SystemMemory.defaultKVBudget(mappedModelBytes: 2 << 30, available: 10 << 30), 6 << 30)
        XCTAssertEqual(SystemMemory.defaultKVBudget(mappedModelBytes: 12 << 30, available: 10 << 30), 64 << 20)
        XCTAssertNotNil(SystemMemory.available())
        XCTAssertGreaterThan(makeEngine().kvBudgetBytes, 0)
    }
}
