import SiftBase
import Foundation
import NIOCore
import SiftClient
import SiftEngine
import SiftProtocol
import SiftServer
import SiftTestSupport
import XCTest

/// The server over real TCP on 127.0.0.1, with the tiny fixture model.
final class ServerTests: XCTestCase {
    static func rerank(_ c: SiftConnection, _ request: Wire.RerankRequest, metadata: [Wire.MetadataEntry] = []) async throws -> Wire.RerankResponse {
        guard case .rerankResponse(let r) = try await c.call(.rerankRequest(request), metadata: metadata) else {
            throw Wire.Status(.internal, "not a rerank response")
        }
        return r
    }

    func expectStatus(_ code: Wire.Code, _ body: () async throws -> Void, file: StaticString = #filePath, line: UInt = #line) async -> Wire.Status? {
        do {
            try await body()
            XCTFail("expected \(code.name)", file: file, line: line)
        } catch let status as Wire.Status {
            XCTAssertEqual(status.code, code, "\(status)", file: file, line: line)
            return status
        } catch {
            XCTFail("unexpected \(error)", file: file, line: line)
        }
        return nil
    }

    // MARK: scores and calls

    func testScoresThroughTheWireEqualTheEngines() async throws {
        let server = try await TestServer.start()
        let c = try await TestServer.connect(server)
        let query = "What is the capital of China?"
        let direct = try await server.engine!.rerank(RerankRequest(query: query, documents: TestServer.documents))
        let wire = try await ServerTests.rerank(c, Wire.RerankRequest(query: query, documents: TestServer.documents, returnDocuments: true, inputOrder: true))
        XCTAssertEqual(wire.results.count, TestServer.documents.count)
        for (w, d) in zip(wire.results, direct.results) {
            XCTAssertEqual(Int(w.index), d.index)
            XCTAssertEqual(w.logit, d.logit)  // bit for bit
            XCTAssertEqual(w.relevanceScore, d.probability)
            XCTAssertEqual(Int(w.tokens), d.tokens)
            XCTAssertEqual(Int(w.inputTokens), d.inputTokens)
            XCTAssertEqual(w.document, TestServer.documents[d.index].isEmpty ? nil : TestServer.documents[d.index])
        }
        XCTAssertEqual(wire.modelID, "tiny-qwen3")
        XCTAssertEqual(wire.usage.documents, UInt32(TestServer.documents.count))
        XCTAssertEqual(wire.usage.inputTokens, wire.results.reduce(0) { $0 + UInt64($1.inputTokens) })
        XCTAssertGreaterThan(wire.usage.prefixTokens, 0)
        XCTAssertEqual(wire.usage.prefixTokensCached, wire.usage.prefixTokens, "second time: prefix from the cache")

        // Ranked, cut to top_n.
        let top = try await ServerTests.rerank(c, Wire.RerankRequest(query: query, documents: TestServer.documents, topN: 2))
        XCTAssertEqual(top.results.map { Int($0.index) }, Array(direct.ranked.prefix(2).map(\.index)))
        XCTAssertNil(top.results[0].document)
        await server.shutdown()
    }

    func testStreamedResultsCoverEveryDocumentBeforeTheFinalFrame() async throws {
        let server = try await TestServer.start()
        let c = try await TestServer.connect(server)
        let seen = Locked<[Int]>([])
        let docs = TestServer.longDocuments(12, words: 120)
        let answer = try await c.call(.rerankRequest(Wire.RerankRequest(query: "q", documents: docs, stream: true))) { partial in
            if case .rerankPartial(let results) = partial { seen.withLock { $0 += results.map { Int($0.index) } } }
        }
        guard case .rerankResponse(let final) = answer else { return XCTFail("no final response") }
        XCTAssertEqual(seen.withLock { $0.sorted() }, Array(0..<12))
        XCTAssertEqual(final.results.count, 12)
        await server.shutdown()
    }

    func testTokenizeModelInfoAndHealth() async throws {
        let server = try await TestServer.start()
        let c = try await TestServer.connect(server)
        guard case .tokenizeResponse(let texts) = try await c.call(.tokenizeRequest(Wire.TokenizeRequest(texts: ["Hello world", ""], returnIDs: true))) else {
            return XCTFail("no tokenize response")
        }
        XCTAssertEqual(texts[0].ids, TestServer.tokenizer.encode("Hello world").map { UInt32($0) })
        XCTAssertEqual(texts[0].count, UInt32(texts[0].ids.count))
        XCTAssertEqual(texts[1].count, 0)
        guard case .modelInfoResponse(let info) = try await c.call(.modelInfoRequest()) else { return XCTFail("no model info") }
        XCTAssertEqual(info.modelID, "tiny-qwen3")
        XCTAssertEqual(info.quantization, "int8")
        XCTAssertEqual(info.protocolVersion, Wire.protocolVersion)
        XCTAssertEqual(info.layers, UInt32(TestServer.reranker.model.config.layerCount))
        guard case .healthResponse(let health) = try await c.call(.healthRequest) else { return XCTFail("no health") }
        XCTAssertEqual(health.status, .serving)
        await server.shutdown()
    }

    func testManyConcurrentCallsOnOneAndOnManyConnections() async throws {
        let server = try await TestServer.start()
        let query = "Which city is a capital?"
        let expected = try await server.engine!.rerank(RerankRequest(query: query, documents: TestServer.documents)).results.map(\.logit)
        let shared = try await TestServer.connect(server)
        try await withThrowingTaskGroup(of: [Float].self) { group in
            for i in 0..<32 {
                group.addTask {
                    // Half share one connection, half open their own.
                    let c = i % 2 == 0 ? shared : try await TestServer.connect(server)
                    let r = try await ServerTests.rerank(c, Wire.RerankRequest(query: query, documents: TestServer.documents, inputOrder: true))
                    if i % 2 == 1 { await c.close() }
                    return r.results.map(\.logit)
                }
            }
            for try await logits in group { XCTAssertEqual(logits, expected) }
        }
        await server.shutdown()
    }

    // MARK: bad input

    func testBadRequestsGetInvalidArgumentAndTheConnectionLives() async throws {
        let server = try await TestServer.start(engine: { $0.maxDocuments = 4 })
        let c = try await TestServer.connect(server)
        var s = await expectStatus(.invalidArgument) { _ = try await ServerTests.rerank(c, Wire.RerankRequest(query: "", documents: ["d"])) }
        XCTAssertTrue(s?.message.contains("query is empty") ?? false)
        s = await expectStatus(.invalidArgument) { _ = try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: Array(repeating: "d", count: 5))) }
        XCTAssertTrue(s?.message.contains("at most 4") ?? false, "\(String(describing: s))")
        s = await expectStatus(.invalidArgument) { _ = try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: ["d"], maxLength: 1 << 30)) }
        XCTAssertTrue(s?.message.contains("max_length") ?? false)
        // Still usable.
        let ok = try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: ["d"]))
        XCTAssertEqual(ok.results.count, 1)
        await server.shutdown()
    }

    func testMalformedFramesAreAnsweredAndDoNotCrash() async throws {
        let server = try await TestServer.start()
        let port = server.port!
        try await offPool {
            let s = try RawSocket(port: port)
            defer { s.close() }
            // Garbage body in a well-formed frame: INVALID_ARGUMENT, connection kept.
            try s.send(Proto.framed([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]))
            var f = try s.readFrame()
            guard case .status(let st) = f?.body else { throw Wire.Status(.internal, "no status for garbage: \(String(describing: f))") }
            XCTAssertEqual(st.code, .invalidArgument)
            // Invalid UTF-8 in a document: answered under the request's id.
            try s.send(Proto.framed(Proto.rerank(id: 41, query: Array("q".utf8), documents: [[0xc3, 0x28]])))
            f = try s.readFrame()
            XCTAssertEqual(f?.requestID, 41)
            guard case .status(let utf) = f?.body else { throw Wire.Status(.internal, "no status for bad UTF-8") }
            XCTAssertEqual(utf.code, .invalidArgument)
            XCTAssertTrue(utf.message.contains("documents[0] is not valid UTF-8"), utf.message)
            // Unknown field numbers inside a request: ignored, the call succeeds.
            try s.send(Proto.framed(Proto.rerank(id: 42, query: Array("q".utf8), documents: [Array("d".utf8)],
                                                 extra: Proto.field(200, varint: 1))))
            f = try s.readFrame()
            XCTAssertEqual(f?.requestID, 42)
            guard case .rerankResponse = f?.body else { throw Wire.Status(.internal, "unknown field broke the call: \(String(describing: f))") }
            // An unknown message: UNIMPLEMENTED under its id.
            try s.send(Proto.framed(Proto.field(1, varint: 43) + Proto.field(99, bytes: [1])))
            f = try s.readFrame()
            guard case .status(let unknown) = f?.body, f?.requestID == 43 else { throw Wire.Status(.internal, "no status for unknown message") }
            XCTAssertEqual(unknown.code, .unimplemented)
            // A length that is wrong (3 bytes of a longer frame): the rest reads as garbage; the
            // server answers INVALID_ARGUMENT and the stream resynchronises on the next frame.
            let health = Wire.Frame(requestID: 44, body: .healthRequest).encoded()
            let short = Proto.framed(Array(health.prefix(3)))
            try s.send(short)
            f = try s.readFrame()
            guard case .status(let wrong) = f?.body else { throw Wire.Status(.internal, "no status for short frame") }
            XCTAssertEqual(wrong.code, .invalidArgument)
            try s.sendFrame(Wire.Frame(requestID: 45, body: .healthRequest))
            f = try s.readFrame()
            XCTAssertEqual(f?.requestID, 45)
        }
        // Truncated frame then hang-up; the server carries on.
        try await offPool {
            let s = try RawSocket(port: port)
            try s.send([0, 0, 0, 100, 1, 2, 3])
            s.close()
        }
        let c = try await TestServer.connect(server)
        guard case .healthResponse = try await c.call(.healthRequest) else { return XCTFail("server did not survive") }
        await server.shutdown()
    }

    func testOversizeFrameGetsResourceExhaustedThenClose() async throws {
        let server = try await TestServer.start { $0.maxFrameBytes = 1024 }
        let port = server.port!
        try await offPool {
            let s = try RawSocket(port: port)
            defer { s.close() }
            let big = Wire.Frame(requestID: 1, body: .rerankRequest(Wire.RerankRequest(query: "q", documents: [String(repeating: "x", count: 2000)])))
            try s.sendFrame(big)
            let f = try s.readFrame()
            guard case .status(let st) = f?.body else { throw Wire.Status(.internal, "no status") }
            XCTAssertEqual(st.code, .resourceExhausted)
            XCTAssertTrue(st.message.contains("over the limit of 1024 bytes"), st.message)
            XCTAssertNil(try s.readFrame(), "the connection must close")
        }
        await server.shutdown()
    }

    // MARK: auth

    func testAPIKeys() async throws {
        let key = "sift-test-key-0123456789"
        let server = try await TestServer.start { $0.apiKeys = APIKeys([key, "another-key-abcdefghij"]) }
        let c = try await TestServer.connect(server)
        let request = Wire.RerankRequest(query: "q", documents: ["d"])
        var s = await expectStatus(.unauthenticated) { _ = try await ServerTests.rerank(c, request) }
        XCTAssertTrue(s?.message.contains("authorization: Bearer") ?? false)
        s = await expectStatus(.unauthenticated) { _ = try await ServerTests.rerank(c, request, metadata: [.init("authorization", "Bearer wrong-key-0123456789")]) }
        XCTAssertTrue(s?.message.hasPrefix("API key not accepted") ?? false, s?.message ?? "")
        // The key is sent as "Bearer <key>"; a bare key is not accepted.
        _ = await expectStatus(.unauthenticated) { _ = try await ServerTests.rerank(c, request, metadata: [.init("authorization", key)]) }
        _ = await expectStatus(.unauthenticated) { _ = try await ServerTests.rerank(c, request, metadata: [.init("authorization", "Bearer " + key.dropLast())]) }
        let ok = try await ServerTests.rerank(c, request, metadata: [.init("Authorization", "Bearer " + key)])
        XCTAssertEqual(ok.results.count, 1)
        // Health needs no key (load balancers probe it).
        guard case .healthResponse = try await c.call(.healthRequest) else { return XCTFail("health refused") }
        await server.shutdown()
    }

    func testConstantTimeComparison() {
        let keys = APIKeys(["abcdefghijklmnop"])
        XCTAssertTrue(keys.accepts(authorization: "Bearer abcdefghijklmnop"))
        XCTAssertFalse(keys.accepts(authorization: "abcdefghijklmnop"), "a bare key lacks the Bearer scheme")
        XCTAssertTrue(keys.accepts(authorization: "bearer abcdefghijklmnop"), "the scheme is case-insensitive")
        XCTAssertFalse(keys.accepts(authorization: "Bearer abcdefghijklmno"))
        XCTAssertFalse(keys.accepts(authorization: "Bearer abcdefghijklmnopq"))
        XCTAssertFalse(keys.accepts(authorization: ""))
        XCTAssertFalse(keys.accepts(authorization: nil))
        XCTAssertTrue(APIKeys([]).accepts(authorization: nil))
    }

    // MARK: deadlines, cancellation, disconnects, overload

    func testDeadlineExpires() async throws {
        let server = try await TestServer.start()
        let c = try await TestServer.connect(server)
        let s = await expectStatus(.deadlineExceeded) {
            _ = try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: TestServer.longDocuments(64), timeoutMs: 1))
        }
        XCTAssertNotNil(s)
        await server.shutdown()
    }

    func testCancelFrameCancelsTheCall() async throws {
        let server = try await TestServer.start()
        let port = server.port!
        try await offPool {
            let s = try RawSocket(port: port)
            defer { s.close() }
            try s.sendFrame(Wire.Frame(requestID: 10, body: .rerankRequest(Wire.RerankRequest(query: "q", documents: TestServer.longDocuments(100)))))
            try s.sendFrame(Wire.Frame(requestID: 11, body: .cancelRequest(requestID: 10)))
            var answers: [UInt64: Wire.Body] = [:]
            while answers.count < 2, let f = try s.readFrame() { answers[f.requestID] = f.body }
            XCTAssertEqual(answers[11], .status(Wire.Status(.ok, "call 10 cancelled")))
            guard case .status(let st) = answers[10] else { throw Wire.Status(.internal, "call 10 was not ended: \(answers)") }
            XCTAssertEqual(st.code, .cancelled)
            try s.sendFrame(Wire.Frame(requestID: 12, body: .cancelRequest(requestID: 999)))
            XCTAssertEqual(try s.readFrame()?.body, .status(Wire.Status(.notFound, "no call 999 in flight on this connection")))
        }
        // The client library sends the Cancel frame when its task is cancelled.
        let c = try await TestServer.connect(server)
        let task = Task { try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: TestServer.longDocuments(100))) }
        try await Task.sleep(for: .milliseconds(200))
        task.cancel()
        do {
            _ = try await task.value
            XCTFail("not cancelled")
        } catch let status as Wire.Status {
            XCTAssertEqual(status.code, .cancelled)
        }
        XCTAssertEqual(server.engine!.stats.activeRequests, 0)
        await server.shutdown()
    }

    func testClientDisconnectFreesTheEngineAndShowsInMetrics() async throws {
        let server = try await TestServer.start()
        let (port, metricsPort) = (server.port!, server.metricsPort!)
        try await offPool {
            let s = try RawSocket(port: port)
            try s.sendFrame(Wire.Frame(requestID: 1, body: .rerankRequest(Wire.RerankRequest(query: "q", documents: TestServer.longDocuments(100)))))
            Thread.sleep(forTimeInterval: 0.3)
            s.close()
        }
        var text = ""
        for _ in 0..<200 {
            text = try await offPool { try TestServer.httpGet(port: metricsPort, path: "/metrics") }
            if TestServer.metric(text, "sift_engine_active_requests") == 0,
               text.contains(#"sift_requests_total{method="rerank",code="CANCELLED",model="tiny-qwen3"} 1"#) { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTAssertEqual(TestServer.metric(text, "sift_engine_active_requests"), 0, text)
        XCTAssertTrue(text.contains(#"sift_requests_total{method="rerank",code="CANCELLED",model="tiny-qwen3"} 1"#), text)
        XCTAssertEqual(TestServer.metric(text, "sift_inflight_requests"), 0)
        XCTAssertEqual(server.engine!.stats.queuedTokens, 0)
        await server.shutdown()
    }

    func testOverloadIsRefusedWhileCallsUnderTheLimitSucceed() async throws {
        let server = try await TestServer.start({ $0.maxInFlightPerConnection = 2 }, engine: { $0.maxQueuedTokens = 20_000; $0.maxRequestTokens = 15_000; $0.maxBatchTokens = 32 })
        let c = try await TestServer.connect(server)
        let got = await withTaskGroup(of: Wire.Code.self) { group in
            for _ in 0..<6 {
                group.addTask {
                    do {
                        _ = try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: TestServer.longDocuments(8, words: 150)))
                        return .ok
                    } catch {
                        return (error as? Wire.Status)?.code ?? .unknown
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        XCTAssertEqual(got.count, 6)
        XCTAssertGreaterThanOrEqual(got.filter { $0 == .ok }.count, 2, "\(got)")
        XCTAssertGreaterThanOrEqual(got.filter { $0 == .resourceExhausted }.count, 1, "\(got)")
        XCTAssertEqual(Set(got), [.ok, .resourceExhausted])
        // The engine's queue bound: calls that would take the queue over its token budget are
        // refused at once (two large calls sent together — the connection's in-flight limit —:
        // however fast the engine, it cannot compute the first before the second arrives)...
        let large = TestServer.longDocuments(14, words: 300)
        let outcomes = await withTaskGroup(of: Result<Int, Wire.Status>.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    do {
                        return .success(try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: large)).results.count)
                    } catch {
                        return .failure(error as? Wire.Status ?? Wire.Status(.unknown, "\(error)"))
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        let refused = outcomes.compactMap { if case .failure(let s) = $0 { s } else { nil } }
        XCTAssertFalse(refused.isEmpty, "\(outcomes)")
        XCTAssertTrue(refused.allSatisfy { $0.code == .resourceExhausted && $0.message.contains("retry later") }, "\(refused)")
        XCTAssertTrue(outcomes.contains { if case .success(14) = $0 { true } else { false } }, "\(outcomes)")
        // ...and small ones still pass.
        let small = try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: ["short"]))
        XCTAssertEqual(small.results.count, 1)
        await server.shutdown()
    }

    func testConnectionLimitAndIdleTimeout() async throws {
        let server = try await TestServer.start {
            $0.maxConnections = 2
            $0.idleTimeout = .milliseconds(300)
        }
        let port = server.port!
        let a = try await TestServer.connect(server)
        try await Task.sleep(for: .milliseconds(20))
        let b = try await TestServer.connect(server)
        // Full: a third connection makes room by closing the longest idle one (a).
        let third = try await TestServer.connect(server)
        for _ in 0..<100 where a.isOpen { try await Task.sleep(for: .milliseconds(5)) }
        XCTAssertFalse(a.isOpen, "the longest idle connection made room")
        guard case .healthResponse = try await third.call(.healthRequest) else { return XCTFail("no health") }
        // Full and every connection busy: a new one is refused.
        let calls = [b, third].map { c in
            Task { try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: TestServer.longDocuments(60))) }
        }
        while server.callsInFlight < 2 { try await Task.sleep(for: .milliseconds(2)) }
        try await offPool {
            let s = try RawSocket(port: port)
            defer { s.close() }
            guard case .status(let st) = try s.readFrame()?.body else { throw Wire.Status(.internal, "no refusal") }
            XCTAssertEqual(st.code, .resourceExhausted)
            XCTAssertTrue(st.message.contains("all busy"), st.message)
            XCTAssertNil(try s.readFrame())
        }
        for call in calls { _ = try await call.value }
        // Idle connections close after the timeout.
        for _ in 0..<100 where b.isOpen { try await Task.sleep(for: .milliseconds(20)) }
        XCTAssertFalse(b.isOpen)
        await server.shutdown()
    }

    func testDrainFinishesCallsInFlightAndRefusesNewOnes() async throws {
        let server = try await TestServer.start()
        let c = try await TestServer.connect(server)
        let inFlight = Task { try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: TestServer.longDocuments(16, words: 100))) }
        while server.callsInFlight == 0 { try await Task.sleep(for: .milliseconds(5)) }
        let drained = Task { await server.shutdown() }
        while server.isServing { try await Task.sleep(for: .milliseconds(5)) }
        guard case .healthResponse(let h) = try await c.call(.healthRequest) else { return XCTFail("no health") }
        XCTAssertEqual(h.status, .notServing)
        _ = await expectStatus(.unavailable) { _ = try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: ["d"])) }
        let r = try await inFlight.value
        XCTAssertEqual(r.results.count, 16)
        await drained.value
    }
}
