import Foundation
import SiftEngine
import SiftProtocol
import SiftServer
import SiftTestSupport
import XCTest

/// The HTTP/JSON API with real HTTP requests on 127.0.0.1.
final class HTTPAPITests: XCTestCase {
    struct HTTPResponse: Sendable {
        var status: Int
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:] }
        var body: String
    }

    static func post(_ port: Int, _ path: String, _ body: String, headers: [String: String] = [:], method: String = "POST") async throws -> HTTPResponse {
        try await offPool {
            let s = try RawSocket(port: port)
            defer { s.close() }
            var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n"
            for (k, v) in headers { request += "\(k): \(v)\r\n" }
            request += "Content-Length: \(body.utf8.count)\r\n\r\n" + body
            try s.send(Array(request.utf8))
            let text = String(decoding: s.readAll(), as: UTF8.self)
            // No answer (the receive timeout passed) reads as status 0, for the test to report.
            let head = text.split(separator: " ", maxSplits: 2)
            let status = head.count > 1 ? Int(head[1]) ?? 0 : 0
            let payload = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            return HTTPResponse(status: status, body: payload)
        }
    }

    // The request bodies of Cohere's and Jina's documentation.
    static let cohereBody = """
        {"model": "rerank-v3.5", "query": "What is the capital of the United States?", "top_n": 3,
         "documents": ["Carson City is the capital city of the American state of Nevada.",
           "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean. Its capital is Saipan.",
           "Washington, D.C. (also known as simply Washington or D.C., and officially as the District of Columbia) is the capital of the United States. It is a federal district.",
           "Capitalization or capitalisation in English grammar is the use of a capital letter at the start of a word. English usage varies from capitalization in other languages.",
           "Capital punishment has existed in the United States since beforethe United States was a country. As of 2017, capital punishment is legal in 30 of the 50 states."]}
        """
    static let jinaBody = """
        {"model": "jina-reranker-v2-base-multilingual", "query": "Organic skincare products for sensitive skin", "top_n": 3,
         "documents": ["Organic skincare for sensitive skin with aloe vera and chamomile: Imagine the soothing embrace of nature with our organic skincare range.",
           {"text": "New makeup trends focus on bold colors and innovative techniques: Step into the world of cutting-edge beauty."},
           "Bio-Hautpflege für empfindliche Haut mit Aloe Vera und Kamille: Erleben Sie die wohltuende Wirkung unserer Bio-Hautpflege.",
           "针对敏感肌专门设计的天然有机护肤产品：体验由芦荟和洋甘菊提取物带来的自然呵护。"],
         "return_documents": true}
        """

    func testCohereAndJinaRequestsGetTheirResponseShapes() async throws {
        // The names the SDKs' examples send, served as aliases (`--model-alias`).
        let server = try await TestServer.start({ $0.httpPort = 0 }, aliases: ["rerank-v3.5", "jina-reranker-v2-base-multilingual"])
        let port = server.httpPort!
        for (path, body) in [("/v2/rerank", Self.cohereBody), ("/v1/rerank", Self.jinaBody)] {
            let response = try await Self.post(port, path, body)
            XCTAssertEqual(response.status, 200, response.body)
            let json = response.json
            let results = json["results"] as? [[String: Any]] ?? []
            XCTAssertEqual(results.count, 3)
            // Same scores as the engine, best first.
            let parsed = try JSONSerialization.jsonObject(with: Data(body.utf8)) as! [String: Any]
            let docs = (parsed["documents"] as! [Any]).map { ($0 as? String) ?? (($0 as! [String: String])["text"]!) }
            let direct = try await server.engine!.rerank(RerankRequest(query: parsed["query"] as! String, documents: docs, topN: 3))
            XCTAssertEqual(results.map { $0["index"] as! Int }, direct.ranked.map(\.index))
            for (r, d) in zip(results, direct.ranked) {
                XCTAssertEqual((r["relevance_score"] as! NSNumber).floatValue, d.probability, accuracy: 1e-6)
            }
            XCTAssertNotNil(json["id"])
            XCTAssertEqual(json["model"] as? String, "tiny-qwen3")  // the model that answered, whatever name was sent
            XCTAssertGreaterThan((json["usage"] as? [String: Any])?["total_tokens"] as? Int ?? 0, 0)
            XCTAssertNotNil(((json["meta"] as? [String: Any])?["billed_units"] as? [String: Any])?["search_units"])
            if path == "/v1/rerank" {  // Jina asked for the documents back
                XCTAssertEqual((results[0]["document"] as? [String: String])?["text"], docs[results[0]["index"] as! Int])
            } else {
                XCTAssertNil(results[0]["document"])
            }
        }
        let health = try await Self.post(port, "/health", "", method: "GET")
        XCTAssertEqual(health.status, 200)
        XCTAssertEqual(health.json["status"] as? String, "SERVING")
        await server.shutdown()
    }

    /// Text Embeddings Inference's /rerank, with the request bodies of TEI's documentation: an
    /// array of {index, score, text?}, best first; raw_scores gives the logit; a text that does
    /// not fit is an error unless "truncate" is true; errors in TEI's {error, error_type} shape.
    func testTextEmbeddingsInferenceRerankRoute() async throws {
        let server = try await TestServer.start({ $0.httpPort = 0 }, engine: { $0.defaultMaxLength = 96 })
        let port = server.httpPort!
        let texts = ["Deep Learning is not...", "Deep learning is..."]
        let plain = try await Self.post(port, "/rerank", #"{"query":"What is Deep Learning?", "texts": ["Deep Learning is not...", "Deep learning is..."]}"#)
        XCTAssertEqual(plain.status, 200, plain.body)
        let results = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(plain.body.utf8)) as? [[String: Any]], plain.body)
        let direct = try await server.engine!.rerank(RerankRequest(query: "What is Deep Learning?", documents: texts))
        XCTAssertEqual(results.map { $0["index"] as! Int }, direct.ranked.map(\.index))
        for (r, d) in zip(results, direct.ranked) {
            XCTAssertEqual((r["score"] as! NSNumber).floatValue, d.probability)
            XCTAssertNil(r["text"])
        }
        let raw = try await Self.post(port, "/rerank", #"{"query":"What is Deep Learning?","texts":["Deep Learning is not...","Deep learning is..."],"raw_scores":true,"return_text":true,"truncate":false,"truncation_direction":"Right"}"#)
        XCTAssertEqual(raw.status, 200, raw.body)
        let rawResults = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(raw.body.utf8)) as? [[String: Any]], raw.body)
        for (r, d) in zip(rawResults, direct.ranked) {
            XCTAssertEqual((r["score"] as! NSNumber).floatValue, d.logit)
            XCTAssertEqual(r["text"] as? String, texts[d.index])
        }
        // Too long for max_length: refused unless truncate is true.
        let long = String(repeating: "deep learning ", count: 100)
        let refused = try await Self.post(port, "/rerank", #"{"query":"q","texts":["short","\#(long)"]}"#)
        XCTAssertEqual(refused.status, 413, refused.body)
        XCTAssertEqual(refused.json["error_type"] as? String, "Validation")
        XCTAssertTrue((refused.json["error"] as? String ?? "").contains("texts[1]"), refused.body)
        let cut = try await Self.post(port, "/rerank", #"{"query":"q","texts":["short","\#(long)"],"truncate":true}"#)
        XCTAssertEqual(cut.status, 200, cut.body)
        // What Sift does not do is said, in TEI's error shape.
        let left = try await Self.post(port, "/rerank", #"{"query":"q","texts":["a"],"truncate":true,"truncation_direction":"Left"}"#)
        XCTAssertEqual(left.status, 422, left.body)
        XCTAssertTrue((left.json["error"] as? String ?? "").contains("truncation_direction"), left.body)
        // /rerank without "texts" is still the Cohere shape.
        let cohere = try await Self.post(port, "/rerank", #"{"query":"q","documents":["a","b"]}"#)
        XCTAssertEqual(cohere.status, 200, cohere.body)
        XCTAssertNotNil(cohere.json["results"])
        await server.shutdown()
    }

    /// Calls through either front door are counted alike: documents, tokens, queue and compute time.
    func testHTTPCallsAreCountedInTheMetricsLikeRPCCalls() async throws {
        let server = try await TestServer.start({ $0.httpPort = 0 }, aliases: ["rerank-v3.5"])
        let (httpPort, metricsPort) = (server.httpPort!, server.metricsPort!)
        for _ in 0..<2 {
            let response = try await Self.post(httpPort, "/v2/rerank", Self.cohereBody)
            XCTAssertEqual(response.status, 200)
        }
        let c = try await TestServer.connect(server)
        _ = try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: ["one", "two"]))
        let text = try await offPool { try TestServer.httpGet(port: metricsPort, path: "/metrics") }
        XCTAssertEqual(TestServer.metric(text, "sift_documents_total"), 5 + 5 + 2, text)
        XCTAssertEqual(TestServer.metric(text, "sift_rerank_queue_seconds_count"), 3, text)
        XCTAssertEqual(TestServer.metric(text, "sift_rerank_compute_seconds_count"), 3, text)
        let documentTokens = text.split(separator: "\n").first { $0.hasPrefix(#"sift_tokens_total{kind="document",model="tiny-qwen3"}"#) }
        XCTAssertGreaterThan(documentTokens.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) } ?? 0, 20, text)
        await server.shutdown()
    }

    func testErrorsMapToHTTPStatuses() async throws {
        let server = try await TestServer.start({
            $0.httpPort = 0
            $0.maxFrameBytes = 4096
        }, engine: { $0.maxDocuments = 3 })
        let port = server.httpPort!
        var r = try await Self.post(port, "/v2/rerank", "{not json")
        XCTAssertEqual(r.status, 400)
        XCTAssertTrue((r.json["message"] as? String ?? "").contains("invalid request body"), r.body)
        XCTAssertEqual(r.json["code"] as? String, "INVALID_ARGUMENT")
        r = try await Self.post(port, "/v2/rerank", #"{"documents": ["a"]}"#)
        XCTAssertEqual(r.status, 400)
        XCTAssertTrue(r.body.contains("missing field \\\"query\\\""), r.body)
        r = try await Self.post(port, "/v2/rerank", #"{"query": "q", "documents": [1]}"#)
        XCTAssertEqual(r.status, 400)
        r = try await Self.post(port, "/v2/rerank", #"{"query": "q", "documents": ["a", "b", "c", "d"]}"#)
        XCTAssertEqual(r.status, 400)
        XCTAssertTrue(r.body.contains("at most 3"), r.body)
        r = try await Self.post(port, "/v2/rerank", #"{"query": "", "documents": ["a"]}"#)
        XCTAssertEqual(r.status, 400)
        r = try await Self.post(port, "/v2/rerank", #"{"query": "q", "documents": ["\#(String(repeating: "x", count: 5000))"]}"#)
        XCTAssertEqual(r.status, 413)
        r = try await Self.post(port, "/v2/rerank", #"{"query": "q", "documents": ["\#(TestServer.longDocuments(1, words: 300)[0])"], "timeout_ms": 1, "max_length": 4096}"#)
        XCTAssertTrue(r.status == 504 || r.status == 413, "\(r.status) \(r.body)")
        // An explicit 0 is judged as given (never read as "left out"), with what to send instead.
        for (field, words) in [(#""top_n": 0"#, "top_n must be at least 1"), (#""max_length": 0"#, "max_length 0 must be in"),
                               (#""max_tokens_per_doc": 0"#, "max_tokens_per_document must be positive"),
                               (#""timeout_ms": 0"#, "timeout_ms must be positive"), (#""top_n": -1"#, "top_n must be in")] {
            r = try await Self.post(port, "/v2/rerank", #"{"query": "q", "documents": ["a"], \#(field)}"#)
            XCTAssertEqual(r.status, 400, "\(field): \(r.body)")
            XCTAssertTrue(r.body.contains(words), "\(field): \(r.body)")
        }
        r = try await Self.post(port, "/v3/rerank", "{}")
        XCTAssertEqual(r.status, 404)
        r = try await Self.post(port, "/v2/rerank", "", method: "GET")
        XCTAssertEqual(r.status, 405)
        await server.shutdown()
    }

    func testDeadlineAndOverloadAndDrainStatuses() async throws {
        let server = try await TestServer.start({ $0.httpPort = 0 }, engine: { $0.maxQueuedTokens = 20_000; $0.maxRequestTokens = 15_000; $0.maxBatchTokens = 32 })
        let port = server.httpPort!
        func body(_ docs: [String], extra: String = "") throws -> String {
            let data = try JSONSerialization.data(withJSONObject: ["query": "q", "documents": docs])
            return String(decoding: data, as: UTF8.self).dropLast() + extra + "}"
        }
        var r = try await Self.post(port, "/v2/rerank", try body(TestServer.longDocuments(12), extra: #", "timeout_ms": 1"#))
        XCTAssertEqual(r.status, 504, r.body)
        XCTAssertEqual(r.json["code"] as? String, "DEADLINE_EXCEEDED")
        // Four calls of ~13k tokens at once against a 20k-token queue: however fast the engine,
        // it cannot compute the first one's tokens before the others arrive, so some are
        // refused with 429 and the rest answered.
        let busyBody = try body(TestServer.longDocuments(14, words: 300))
        let calls = (0..<4).map { _ in Task { try await HTTPAPITests.post(port, "/v2/rerank", busyBody) } }
        var statuses: [Int] = []
        for call in calls { statuses.append(try await call.value.status) }
        XCTAssertTrue(statuses.contains(429) && statuses.contains(200), "\(statuses)")
        XCTAssertEqual(statuses.filter { $0 != 200 && $0 != 429 }, [])
        // A call that could never fit is a 400 saying to split it.
        r = try await Self.post(port, "/v2/rerank", try body(TestServer.longDocuments(100, words: 300)))
        XCTAssertEqual(r.status, 400, r.body)
        XCTAssertTrue(r.body.contains("split"), r.body)
        await server.shutdown()
    }

    func testAPIKeyAsBearerHeader() async throws {
        let server = try await TestServer.start {
            $0.httpPort = 0
            $0.apiKeys = APIKeys(["http-test-key-0123456789"])
        }
        let port = server.httpPort!
        let body = #"{"query": "q", "documents": ["d"]}"#
        var r = try await Self.post(port, "/v2/rerank", body)
        XCTAssertEqual(r.status, 401)
        r = try await Self.post(port, "/v2/rerank", body, headers: ["Authorization": "Bearer nope-nope-nope-nope"])
        XCTAssertEqual(r.status, 401)
        r = try await Self.post(port, "/v2/rerank", body, headers: ["Authorization": "Bearer http-test-key-0123456789"])
        XCTAssertEqual(r.status, 200, r.body)
        await server.shutdown()
    }

    /// JSON carries U+0000 and nothing on the HTTP path goes through protobuf-c (whose strings end
    /// at NUL): a text holding one is scored whole, as the engine scores it.
    func testTextWithNULIsScoredWhole() async throws {
        let server = try await TestServer.start { $0.httpPort = 0 }
        let text = "before\u{0}after: the capital of France is Paris"
        let payload: [String: Any] = ["query": "capital of France?", "documents": [text, "before"]]
        let r = try await Self.post(server.httpPort!, "/v2/rerank", String(decoding: try JSONSerialization.data(withJSONObject: payload), as: UTF8.self))
        XCTAssertEqual(r.status, 200, r.body)
        let first = (r.json["results"] as! [[String: Any]]).first { $0["index"] as! Int == 0 }!
        let direct = try await server.engine!.rerank(RerankRequest(query: "capital of France?", documents: [text]))
        XCTAssertEqual((first["logit"] as! NSNumber).floatValue, direct.results[0].logit)
        let cut = try await server.engine!.rerank(RerankRequest(query: "capital of France?", documents: ["before"]))
        XCTAssertNotEqual(direct.results[0].logit, cut.results[0].logit)
        await server.shutdown()
    }

    func testChunkLongDocumentsScoresTheBestWindow() async throws {
        let server = try await TestServer.start { $0.httpPort = 0 }
        let port = server.httpPort!
        // The relevant sentence sits at the end of a long document: cut, it is lost; chunked, a window holds it.
        let filler = String(repeating: "Unrelated words about gardening and weather. ", count: 40)
        let long = filler + "The capital of China is Beijing."
        let payload: [String: Any] = ["query": "What is the capital of China?", "documents": [long, "short one"],
                                      "max_tokens_per_doc": 64, "chunk_long_documents": true, "chunk_overlap_tokens": 16]
        let r = try await Self.post(port, "/v2/rerank", String(decoding: try JSONSerialization.data(withJSONObject: payload), as: UTF8.self))
        XCTAssertEqual(r.status, 200, r.body)
        let results = r.json["results"] as! [[String: Any]]
        let first = results.first { $0["index"] as! Int == 0 }!
        let windows = first["windows"] as! Int
        XCTAssertGreaterThan(windows, 2)
        // Windows of 64 tokens stepping by 48 cover the whole document.
        let ids = TestServer.tokenizer.encode(" " + long)
        XCTAssertEqual(windows, 1 + (ids.count - 64 + 47) / 48)
        let direct = try await server.engine!.rerank(RerankRequest(query: "What is the capital of China?", documents: [long],
                                                                    maxTokensPerDocument: 64))
        XCTAssertEqual(direct.results[0].truncated, true)
        let chunked = try await server.engine!.rerank({
            var q = RerankRequest(query: "What is the capital of China?", documents: [long], maxTokensPerDocument: 64)
            q.chunkLongDocuments = true
            q.chunkOverlapTokens = 16
            return q
        }())
        XCTAssertEqual(chunked.results[0].windows, windows)
        XCTAssertEqual((first["logit"] as! NSNumber).floatValue, chunked.results[0].logit)
        XCTAssertEqual(first["window"] as? Int, chunked.results[0].window)
        // Window 0 is exactly the truncated document, so the best window is at least as good.
        XCTAssertGreaterThanOrEqual(chunked.results[0].logit, direct.results[0].logit)
        XCTAssertEqual(chunked.results[0].tokens, ids.count)
        // A document that fits is scored exactly as without chunking.
        let short = results.first { $0["index"] as! Int == 1 }!
        XCTAssertNil(short["windows"])
        let plain = try await server.engine!.rerank(RerankRequest(query: "What is the capital of China?", documents: ["short one"]))
        XCTAssertEqual((short["logit"] as! NSNumber).floatValue, plain.results[0].logit)
        // An explicit 0 over HTTP means no overlap (windows step by the whole 64), not the default.
        var noOverlap = payload
        noOverlap["chunk_overlap_tokens"] = 0
        let z = try await Self.post(port, "/v2/rerank", String(decoding: try JSONSerialization.data(withJSONObject: noOverlap), as: UTF8.self))
        XCTAssertEqual(z.status, 200, z.body)
        let zFirst = (z.json["results"] as! [[String: Any]]).first { $0["index"] as! Int == 0 }!
        XCTAssertEqual(zFirst["windows"] as? Int, (ids.count + 63) / 64)
        await server.shutdown()
    }
}
