import SiftBase
import Foundation
import Qwen3
import SiftEngine
import SiftTestSupport
import XCTest

final class EngineTests: XCTestCase {
    var docs: [String] { Self.docs }
    static let tokenizer = try! Tokenizer.load(directory: Fixtures.tinyModel)

    func makeEngine(precision: Precision = .int8, _ configure: (inout EngineOptions) -> Void = { _ in }) throws -> SiftEngine {
        let checkpoint = try Qwen3Checkpoint(directory: Fixtures.tinyModel)
        let tok = Self.tokenizer
        let model = try Qwen3Model(checkpoint: checkpoint, yesID: 9693, noID: 2152, precision: precision, threads: 2,
                                   calibrationTokens: RerankerModel.calibrationTokens(tok))
        var options = EngineOptions()
        configure(&options)
        return SiftEngine(reranker: RerankerModel(tokenizer: tok, model: model, yesID: 9693, noID: 2152), options: options)
    }

    static let docs = ["The capital of China is Beijing.", "Gravity is a force by which a planet draws objects toward its center.",
                "", "Paris is the capital of France.", String(repeating: "A long document about many things. ", count: 40)]

    // MARK: parity and invariance

    func testParityThroughTheEngine() async throws {
        let fp32 = try makeEngine(precision: .fp32)
        let int8 = try makeEngine()
        let cases = try Fixtures.referenceCases()
        // One request per (query, instruction, max_length) group, all in flight at once.
        let groups = Dictionary(grouping: cases) { "\($0.query)|\($0.instructionGiven ?? "<nil>")|\($0.maxLength)" }
        for (engine, tolerance) in [(fp32, 1e-3), (int8, 0.35)] {
            var deltas: [Double] = []
            try await withThrowingTaskGroup(of: [(Double, Double)].self) { group in
                for (_, list) in groups {
                    group.addTask {
                        let r = try await engine.rerank(RerankRequest(query: list[0].query, instruction: list[0].instructionGiven,
                                                                      documents: list.map(\.document), maxLength: list[0].maxLength))
                        return zip(list, r.results).map { (Double($1.logit), $0.logitDiff) }
                    }
                }
                for try await pairs in group { deltas += pairs.map { abs($0.0 - $0.1) } }
            }
            XCTAssertEqual(deltas.count, cases.count)
            XCTAssertLessThanOrEqual(deltas.max()!, tolerance)
            if engine === int8 { XCTAssertLessThanOrEqual(deltas.reduce(0, +) / Double(deltas.count), 0.053) }
        }
    }

    func testScoresAreBitIdenticalHoweverTheyAreBatched() async throws {
        try await checkBitIdenticalHoweverBatched(attention: nil)
    }

    /// The same with bf16 attention (bf16 KV blocks, shared and cached as the default int8 ones are).
    func testBF16AttentionScoresAreBitIdenticalHoweverTheyAreBatched() async throws {
        try await checkBitIdenticalHoweverBatched(attention: .bf16)
    }

    func checkBitIdenticalHoweverBatched(attention: AttentionPrecision?) async throws {
        let makeEngine = { (configure: (inout EngineOptions) -> Void) in
            try self.makeEngine { $0.attention = attention; configure(&$0) }
        }
        let engine = try makeEngine { _ in }
        let query = "What is the capital of China?"
        // Together in one request (prefix computed fresh).
        let together = try await engine.rerank(RerankRequest(query: query, documents: docs))
        XCTAssertEqual(together.usage.prefixTokensCached, 0)
        // Each alone (prefix now from the cache).
        for (i, d) in docs.enumerated() {
            let alone = try await engine.rerank(RerankRequest(query: query, documents: [d]))
            XCTAssertEqual(alone.usage.prefixTokensCached, alone.usage.prefixTokens, "prefix should come from the cache")
            XCTAssertEqual(alone.results[0].logit.bitPattern, together.results[i].logit.bitPattern, "document \(i) alone")
        }
        // Mixed with other requests in the same steps.
        let docs = Self.docs
        async let other1 = engine.rerank(RerankRequest(query: "Who wrote Hamlet?", documents: Array(docs.reversed())))
        async let mixed = engine.rerank(RerankRequest(query: query, documents: docs))
        async let other2 = engine.rerank(RerankRequest(query: "gravity", instruction: "Find physics passages", documents: docs))
        let (m, _, _) = try await (mixed, other1, other2)
        XCTAssertEqual(m.results.map(\.logit.bitPattern), together.results.map(\.logit.bitPattern))
        // Other chunk and batch sizes: bit-identical (per-token scales, exact integer sums, a fixed
        // order per row).
        let chunky = try makeEngine { $0.prefillChunk = 5; $0.maxBatchTokens = 37 }
        let c = try await chunky.rerank(RerankRequest(query: query, documents: docs))
        XCTAssertEqual(c.results.map(\.logit.bitPattern), together.results.map(\.logit.bitPattern))
        // Without prefix sharing (each document computes the whole prompt): the same bits.
        let unshared = try makeEngine { $0.prefixSharing = false }
        let u = try await unshared.rerank(RerankRequest(query: query, documents: docs))
        XCTAssertEqual(u.results.map(\.logit.bitPattern), together.results.map(\.logit.bitPattern))
        // As a batch call or an interactive one (other steps, other step sizes): the same bits.
        for priority in [-1, 1] {
            let p = try await chunky.rerank(RerankRequest(query: query, documents: docs, priority: priority))
            XCTAssertEqual(p.results.map(\.logit.bitPattern), together.results.map(\.logit.bitPattern), "priority \(priority)")
        }
    }

    func testResultShapeUsageAndTopN() async throws {
        let engine = try makeEngine()
        let r = try await engine.rerank(RerankRequest(query: "capital of China", documents: docs, topN: 2, maxTokensPerDocument: 10))
        XCTAssertEqual(r.results.map(\.index), Array(0..<docs.count))
        XCTAssertEqual(r.ranked.count, 2)
        XCTAssertGreaterThanOrEqual(r.ranked[0].logit, r.ranked[1].logit)
        XCTAssertEqual(r.ranked[0].logit, r.results.map(\.logit).max())
        XCTAssertTrue(r.results[4].truncated)
        XCTAssertEqual(r.results[4].tokens, 10)
        // The same vocabulary for a document alone: tokens = the document's, inputTokens = the pair's.
        let direct = try await engine.score(query: "capital of China", documents: [docs[0]])[0]
        XCTAssertEqual(r.results[0].tokens, direct.tokens)
        XCTAssertEqual(r.results[0].inputTokens, direct.inputTokens)
        XCTAssertGreaterThan(direct.inputTokens, direct.tokens)
        XCTAssertEqual(r.usage.truncatedDocuments, r.results.filter(\.truncated).count)
        XCTAssertEqual(r.usage.documentTokens, r.results.reduce(0) { $0 + $1.tokens })
        for s in r.results { XCTAssertEqual(s.probability, 1 / (1 + exp(-s.logit)), accuracy: 1e-6) }
        let empty = try await engine.rerank(RerankRequest(query: "q", documents: []))
        XCTAssertTrue(empty.results.isEmpty)
    }

    func testInvalidArgumentsAreRejectedWithAClearMessage() async throws {
        let engine = try makeEngine { $0.maxDocuments = 3 }
        let bad: [(RerankRequest, String)] = [
            (RerankRequest(query: "", documents: ["x"]), "query is empty"),
            (RerankRequest(query: "q", documents: ["a", "b", "c", "d"]), "at most 3"),
            (RerankRequest(query: "q", documents: ["x"], maxLength: 0), "max_length"),
            (RerankRequest(query: "q", documents: ["x"], topN: -1), "top_n"),
            (RerankRequest(query: "q", documents: ["x"], topN: 0), "top_n must be at least 1"),
            (RerankRequest(query: "q", documents: ["x"], maxTokensPerDocument: 0), "max_tokens_per_document"),
            (RerankRequest(query: String(repeating: "long query ", count: 100), documents: ["x"], maxLength: 64), "max_length 64"),
        ]
        for (request, words) in bad {
            do {
                _ = try await engine.rerank(request)
                XCTFail("expected an error mentioning \(words)")
            } catch let e as EngineError {
                XCTAssertEqual(e.code, .invalidArgument)
                XCTAssertTrue(e.message.contains(words), e.message)
            }
        }
    }

    // MARK: scheduling

    func testAShortRequestSubmittedDuringALongOneFinishesFirst() async throws {
        let engine = try makeEngine { $0.maxBatchTokens = 64; $0.prefillChunk = 32 }
        let long = Array(repeating: String(repeating: "word ", count: 1500), count: 4)
        let order = Locked<[String]>([])
        let longTask = Task {
            _ = try await engine.rerank(RerankRequest(query: "long", documents: long))
            order.withLock { $0.append("long") }
        }
        while engine.stats.steps < 3 { try await Task.sleep(for: .milliseconds(2)) }
        _ = try await engine.rerank(RerankRequest(query: "short", documents: ["a short document", "another"]))
        order.withLock { $0.append("short") }
        try await longTask.value
        XCTAssertEqual(order.withLock { $0 }, ["short", "long"])
    }

    /// An interactive call that arrives while a batch step runs is served between the step's
    /// layers; both calls' scores stay bit-identical to those computed alone.
    func testAnInteractiveCallRunsBetweenTheLayersOfABatchStep() async throws {
        let engine = try makeEngine { $0.maxBatchTokens = 2048; $0.prefillChunk = 2048 }
        let batchDocs = (0..<6).map { "document \($0): " + String(repeating: "word ", count: 1500) }
        let smallDocs = ["a short document", "another short one"]
        let batch = Task { try await engine.rerank(RerankRequest(query: "batch query", documents: batchDocs)) }
        var small: [RerankResult] = []
        // Small calls, one after another, while the batch call runs: most arrive mid-step.
        while engine.stats.steps < 1 { try await Task.sleep(for: .milliseconds(1)) }
        while engine.stats.stepsBetweenSublayers == 0 && small.count < 20 {
            small.append(try await engine.rerank(RerankRequest(query: "small query \(small.count)", documents: smallDocs)))
        }
        let batchResult = try await batch.value
        let stats = engine.stats
        XCTAssertGreaterThan(stats.stepsBetweenSublayers, 0, "no small call was served between sublayers")
        XCTAssertGreaterThan(stats.interactiveSteps, 0)
        // The same calls alone, on a fresh engine.
        let fresh = try makeEngine()
        let alone = try await fresh.rerank(RerankRequest(query: "batch query", documents: batchDocs))
        XCTAssertEqual(batchResult.results.map(\.logit), alone.results.map(\.logit))
        for (n, r) in small.enumerated() {
            let again = try await fresh.rerank(RerankRequest(query: "small query \(n)", documents: smallDocs))
            XCTAssertEqual(r.results.map(\.logit), again.results.map(\.logit))
        }
    }

    /// A call cancelled in the middle of a step stops computing at the next sublayer: its rows leave
    /// the step, its memory is returned before the caller hears of it.
    func testACallCancelledMidStepLeavesTheStepAtTheNextSublayer() async throws {
        let engine = try makeEngine { $0.maxBatchTokens = 8192; $0.prefillChunk = 8192 }
        let task = Task { try await engine.rerank(RerankRequest(query: "q", documents: [String(repeating: "word ", count: 6000)])) }
        while engine.stats.steps < 2 { try await Task.sleep(for: .milliseconds(1)) }  // prefix, then the document
        try await cancelAndExpectCancelled(task)
        let s = engine.stats
        XCTAssertGreaterThan(s.droppedTokens, 0, "the document's rows should have left the step")
        XCTAssertEqual(s.activeRequests, 0)
        XCTAssertEqual(s.kvBytes, s.prefixCacheBytes, "only the prefix cache may still hold KV blocks")
    }

    /// Cancels `task`, which must then end with `cancelled`.
    func cancelAndExpectCancelled(_ task: Task<RerankResult, any Error>) async throws {
        task.cancel()
        do {
            _ = try await task.value
            XCTFail("expected cancellation")
        } catch let e as EngineError {
            XCTAssertEqual(e.code, .cancelled)
        }
    }

    func testCancellationStopsTheWorkAndReturnsTheMemory() async throws {
        let engine = try makeEngine { $0.maxBatchTokens = 32; $0.prefillChunk = 16 }
        let task = Task { try await engine.rerank(RerankRequest(query: "q", documents: Array(repeating: String(repeating: "word ", count: 2000), count: 3))) }
        while engine.stats.steps < 3 { try await Task.sleep(for: .milliseconds(2)) }
        try await cancelAndExpectCancelled(task)
        let steps = engine.stats.steps
        try await Task.sleep(for: .milliseconds(100))
        let s = engine.stats
        XCTAssertEqual(s.steps, steps, "no work after cancellation")
        XCTAssertEqual(s.activeRequests, 0)
        XCTAssertEqual(s.queuedTokens, 0)
        XCTAssertEqual(s.kvBytes, s.prefixCacheBytes, "only the prefix cache may still hold KV blocks")
    }

    func testDeadlineExpires() async throws {
        let engine = try makeEngine { $0.maxBatchTokens = 32; $0.prefillChunk = 16 }
        // ~48k tokens in 16-token chunks: far more than 50 ms of work on any machine (one
        // document of 3,000 tokens once finished in time on a fast one).
        do {
            _ = try await engine.rerank(RerankRequest(query: "q", documents: Array(repeating: String(repeating: "word ", count: 3000), count: 16),
                                                      deadline: .now + .milliseconds(50)))
            XCTFail("expected deadlineExceeded")
        } catch let e as EngineError {
            XCTAssertEqual(e.code, .deadlineExceeded)
        }
        XCTAssertEqual(engine.stats.kvBytes, engine.stats.prefixCacheBytes)
    }

    func testQueueOverflowFailsFastWhileSmallRequestsStillRun() async throws {
        let engine = try makeEngine { $0.maxQueuedTokens = 3000; $0.maxRequestTokens = 3000; $0.maxBatchTokens = 64; $0.prefillChunk = 32 }
        let big = Task { try await engine.rerank(RerankRequest(query: "q", documents: [String(repeating: "word ", count: 2500)])) }
        // Queued (its exact count), no longer only admitted (an estimate from its bytes).
        while engine.stats.activeRequests == 0 { try await Task.sleep(for: .milliseconds(1)) }
        do {
            _ = try await engine.rerank(RerankRequest(query: "q2", documents: [String(repeating: "word ", count: 1500)]))
            XCTFail("expected resourceExhausted")
        } catch let e as EngineError {
            XCTAssertEqual(e.code, .resourceExhausted)
            XCTAssertTrue(e.message.contains("3000"), e.message)
        }
        let small = try await engine.rerank(RerankRequest(query: "q3", documents: ["short"]))
        XCTAssertEqual(small.results.count, 1)
        _ = try await big.value
    }

    /// A call admitted elsewhere (without room in this engine's queue) is admitted here, not trusted.
    func testACallAdmittedWithoutRoomIsAdmittedAgain() async throws {
        let engine = try makeEngine()
        let unqueued = AdmittedRequest(unqueued: RerankRequest(query: "capital of China", documents: docs), maxLength: 512)
        let result = try await engine.rerank(unqueued)
        let admitted = try await engine.rerank(RerankRequest(query: "capital of China", documents: docs))
        XCTAssertEqual(result.results.map(\.logit), admitted.results.map(\.logit))
        let empty = AdmittedRequest(unqueued: RerankRequest(query: "", documents: ["d"]), maxLength: 512)
        do {
            _ = try await engine.rerank(empty)
            XCTFail("an empty query was scored")
        } catch let error as EngineError {
            XCTAssertEqual(error.code, .invalidArgument)
        }
        XCTAssertEqual(engine.stats.queuedTokens, 0)
    }

    func testAdmissionHoldsTheCallsRoomUntilItIsQueuedOrDropped() async throws {
        let engine = try makeEngine { $0.maxQueuedTokens = 3000; $0.maxRequestTokens = 3000 }
        let document = String(repeating: "word ", count: 400)  // 2,000 bytes, ~400 tokens
        let held = try engine.admit(RerankRequest(query: "q", documents: [document]))
        // Before tokenizing, the room held is an upper bound from the bytes.
        XCTAssertGreaterThan(engine.stats.queuedTokens, 2000)
        XCTAssertThrowsError(try engine.admit(RerankRequest(query: "q2", documents: [document]))) { error in
            XCTAssertEqual((error as? EngineError)?.code, .resourceExhausted)
        }
        // Queued, the call counts its exact tokens; done, nothing.
        let result = try await engine.rerank(held)
        XCTAssertEqual(result.results.count, 1)
        XCTAssertLessThan(result.results[0].tokens, 1000)
        XCTAssertEqual(engine.stats.queuedTokens, 0)
        // Admitted and dropped without running: the room comes back.
        do {
            let dropped = try engine.admit(RerankRequest(query: "q3", documents: [document]))
            XCTAssertGreaterThan(engine.stats.queuedTokens, 2000)
            withExtendedLifetime(dropped) {}
        }
        XCTAssertEqual(engine.stats.queuedTokens, 0)
    }

    func testPrefixCacheStaysWithinATinyBudget() async throws {
        let blockBytes = try makeEngine().kvBytesPerToken * KVBlock.positions
        let engine = try makeEngine { $0.prefixCacheBytes = 3 * blockBytes }
        for q in ["alpha", "beta", "gamma", "delta", "epsilon"] {
            _ = try await engine.rerank(RerankRequest(query: "query about \(q)", documents: ["doc"]))
            XCTAssertLessThanOrEqual(engine.stats.prefixCacheBytes, 3 * blockBytes)
        }
        XCTAssertEqual(engine.stats.kvBytes, engine.stats.prefixCacheBytes)
    }

    func testManyConcurrentTasks() async throws {
        let engine = try makeEngine { $0.maxBatchTokens = 96 }
        let queries = (0..<6).map { "query number \($0)" }
        var expected: [String: [Float]] = [:]
        for q in queries { expected[q] = try await engine.rerank(RerankRequest(query: q, documents: docs)).results.map(\.logit) }
        try await withThrowingTaskGroup(of: (String, [Float]).self) { group in
            for round in 0..<4 {
                for q in queries {
                    group.addTask {
                        let r = try await engine.rerank(RerankRequest(query: q, documents: EngineTests.docs, priority: round))
                        return (q, r.results.map(\.logit))
                    }
                }
            }
            for try await (q, logits) in group { XCTAssertEqual(logits, expected[q]) }
        }
        XCTAssertEqual(engine.stats.activeRequests, 0)
        XCTAssertEqual(engine.stats.completed, queries.count * 5)
    }
}
