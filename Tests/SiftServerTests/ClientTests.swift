import Foundation
import Logging
import SiftClient
import SiftEngine
import SiftProtocol
import SiftServer
import SiftBase
import SiftTestSupport
import XCTest

/// SiftClient against real servers: routing, failover, retries, deadlines, cancellation.
final class ClientTests: XCTestCase {
    func client(_ servers: [SiftServer], _ configure: (inout SiftClient.Options) -> Void = { _ in }) throws -> SiftClient {
        var options = SiftClient.Options()
        options.initialBackoff = .milliseconds(10)
        configure(&options)
        return try SiftClient(endpoints: servers.map { Endpoint(host: "127.0.0.1", port: $0.port!) }, options: options)
    }

    func testRerankMatchesTheEngineAndTopN() async throws {
        let server = try await TestServer.start()
        let c = try client([server])
        let direct = try await server.engine!.rerank(RerankRequest(query: "capital?", documents: TestServer.documents))
        let r = try await c.rerank(query: "capital?", documents: TestServer.documents, topN: 3, returnDocuments: true)
        XCTAssertEqual(r.results.map { Int($0.index) }, direct.ranked.prefix(3).map(\.index))
        XCTAssertEqual(r.results.map(\.logit), direct.ranked.prefix(3).map(\.logit))
        XCTAssertEqual(r.results[0].document, TestServer.documents[Int(r.results[0].index)])
        let counts = try await c.tokenize(["one two", "three"])
        XCTAssertEqual(counts.map(\.count), ["one two", "three"].map { UInt32(TestServer.tokenizer.encode($0).count) })
        let info = try await c.modelInfo()
        XCTAssertEqual(info.modelID, "tiny-qwen3")
        await c.close()
        await server.shutdown()
    }

    func testAffinityKeepsAQueryOnOneReplicaAndFailsOver() async throws {
        let servers = [try await TestServer.start(), try await TestServer.start(), try await TestServer.start()]
        let c = try client(servers)
        let queries = (0..<12).map { "query number \($0)?" }
        for q in queries {
            for _ in 0..<3 { _ = try await c.rerank(query: q, documents: ["a document"]) }
        }
        let completed = servers.map { $0.engine!.stats.completed }
        XCTAssertEqual(completed.reduce(0, +), 36)
        XCTAssertTrue(completed.allSatisfy { $0 % 3 == 0 }, "every query's 3 calls went to one server: \(completed)")
        XCTAssertGreaterThanOrEqual(completed.filter { $0 > 0 }.count, 2, "queries spread over replicas: \(completed)")
        // Repeated queries hit the prefix cache (the second and third call of each).
        let hits = servers.reduce(0) { $0 + $1.engine!.stats.prefixHitTokens }
        XCTAssertGreaterThan(hits, 0)

        // Stop the busiest replica: its queries move on, nothing fails.
        let busiest = completed.indices.max { completed[$0] < completed[$1] }!
        await servers[busiest].shutdown()
        for q in queries { _ = try await c.rerank(query: q, documents: ["a document"]) }
        let after = servers.enumerated().filter { $0.offset != busiest }.map { $0.element.engine!.stats.completed }
        XCTAssertEqual(after.reduce(0, +), completed.reduce(0, +) - completed[busiest] + 12)
        await c.close()
        for (i, s) in servers.enumerated() where i != busiest { await s.shutdown() }
    }

    func testRoundRobinSpreadsCalls() async throws {
        let servers = [try await TestServer.start(), try await TestServer.start()]
        let c = try client(servers) { $0.routing = .roundRobin }
        for _ in 0..<6 { _ = try await c.rerank(query: "same query", documents: ["d"]) }
        XCTAssertEqual(servers.map { $0.engine!.stats.completed }, [3, 3])
        await c.close()
        for s in servers { await s.shutdown() }
    }

    func testRetriesWhileTheModelLoadsThenServes() async throws {
        var options = ServerOptions()
        options.port = 0
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = SiftServer(options: options, logger: logger) {
            try await Task.sleep(for: .milliseconds(400))
            return ServedModels.single(SiftEngine(reranker: TestServer.reranker), name: "tiny")
        }
        try await server.start()
        let c = try client([server]) { $0.maxAttempts = 20 }
        guard case .notServing = try await c.health().status else { return XCTFail("serving before the model loaded") }
        let loading = Task { try await server.loadModelsIfNeeded() }
        let r = try await c.rerank(query: "q", documents: ["d"])  // UNAVAILABLE at first, retried
        XCTAssertEqual(r.results.count, 1)
        try await loading.value
        let health = try await c.health()
        XCTAssertEqual(health.status, .serving)
        await c.close()
        await server.shutdown()
    }

    func testGivesUpWithUnavailableWhenNothingListens() async throws {
        let c = try SiftClient(endpoints: [Endpoint(host: "127.0.0.1", port: 1)], options: {
            var o = SiftClient.Options()
            o.maxAttempts = 3
            o.initialBackoff = .milliseconds(5)
            return o
        }())
        do {
            _ = try await c.rerank(query: "q", documents: ["d"])
            XCTFail("no server, yet an answer")
        } catch let s as Wire.Status {
            XCTAssertEqual(s.code, .unavailable)
            XCTAssertTrue(s.message.contains("gave up after 3 attempts"), s.message)
        }
    }

    func testReconnectsAfterTheServerRestarts() async throws {
        let first = try await TestServer.start()
        let port = first.port!
        let c = try SiftClient(endpoints: [Endpoint(host: "127.0.0.1", port: port)])
        _ = try await c.rerank(query: "q", documents: ["d"])
        await first.shutdown()
        let second = try await TestServer.start { $0.port = port }
        let r = try await c.rerank(query: "q", documents: ["d"])
        XCTAssertEqual(r.results.count, 1)
        await c.close()
        await second.shutdown()
    }

    func testDeadlineCancellationAndAPIKey() async throws {
        let server = try await TestServer.start { $0.apiKeys = APIKeys(["0123456789abcdef-key"]) }
        let anonymous = try client([server])
        do {
            _ = try await anonymous.rerank(query: "q", documents: ["d"])
            XCTFail("no key, yet an answer")
        } catch let s as Wire.Status {
            XCTAssertEqual(s.code, .unauthenticated)
        }
        let c = try client([server]) { $0.apiKey = "0123456789abcdef-key" }
        do {
            _ = try await c.rerank(query: "q", documents: TestServer.longDocuments(100), timeout: .milliseconds(5))
            XCTFail("deadline not enforced")
        } catch let s as Wire.Status {
            XCTAssertEqual(s.code, .deadlineExceeded)
        }
        let task = Task { try await c.rerank(query: "q", documents: TestServer.longDocuments(100)) }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        do {
            _ = try await task.value
            XCTFail("not cancelled")
        } catch let s as Wire.Status {
            XCTAssertEqual(s.code, .cancelled)
        }
        let streamed = Locked<[UInt32]>([])
        let r = try await c.rerank(query: "q", documents: TestServer.documents) { partial in
            streamed.withLock { $0 += partial.map(\.index) }
        }
        XCTAssertEqual(streamed.withLock { $0 }.sorted(), r.results.map(\.index).sorted())
        await c.close()
        await anonymous.close()
        await server.shutdown()
    }
}
