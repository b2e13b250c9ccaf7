import Foundation
import Logging
import NIOCore
import NIOEmbedded
import SiftBase
import SiftEngine
import SiftProtocol
@testable import SiftServer
import XCTest

/// A `RerankService` without a model: a document's logit is its length in characters times
/// `scale` (so two fakes give different answers), so every answer can be checked; the query
/// "block" waits until cancelled, "busy" fails as a full queue, "full" is refused at admission.
final class FakeService: RerankService, Sendable {
    let scale: Float
    init(scale: Float = 1) { self.scale = scale }
    let requests = Locked<[RerankRequest]>([])
    let cancelled = Locked(0)
    let options = EngineOptions()
    let stats = EngineStats()
    let model = ModelDescription(precision: "int8", hiddenSize: 8, layers: 2, attentionHeads: 2, kvHeads: 1, vocabSize: 100, maxLength: 512)

    /// "full" is refused at admission, as a full queue is.
    func admit(_ request: RerankRequest) throws -> AdmittedRequest {
        if request.query == "full" { throw EngineError(.resourceExhausted, "fake queue full on arrival: retry later") }
        return AdmittedRequest(unqueued: request, maxLength: request.maxLength ?? options.defaultMaxLength)
    }

    func rerank(_ call: AdmittedRequest) async throws -> RerankResult {
        let request = call.request
        requests.withLock { $0.append(request) }
        switch request.query {
        case "block":
            do { try await Task.sleep(for: .seconds(120)) } catch { cancelled.withLock { $0 += 1 } }
            throw EngineError(.cancelled, "the request was cancelled")
        case "busy":
            throw EngineError(.resourceExhausted, "fake queue full: retry later")
        default:
            let scores = request.documents.enumerated().map { i, d in
                let logit = Float(d.count) * scale
                return DocumentScore(index: i, logit: logit, probability: 1 / (1 + exp(-logit)), tokens: d.count, truncated: false)
            }
            let ranked = scores.sorted { ($0.logit, -$0.index) > ($1.logit, -$1.index) }.prefix(request.topN ?? scores.count)
            return RerankResult(results: scores, ranked: Array(ranked),
                                usage: .init(prefixTokens: 7, prefixTokensCached: 0, documentTokens: scores.reduce(0) { $0 + $1.tokens },
                                             suffixTokens: 3 * scores.count, truncatedDocuments: 0, windows: scores.count),
                                timings: .init(queued: .milliseconds(1), computing: .milliseconds(2)))
        }
    }

    func tokenize(_ texts: [String]) -> [[Int32]] { texts.map { $0.utf8.map { Int32($0) } } }
    func shutdown() {}
}

/// The RPC and HTTP handlers on test channels with a fake service: the call lifecycle (answer,
/// in-flight accounting, metrics, cancellation) without sockets or a model.
final class HandlerTests: XCTestCase {
    struct Fixture {
        let channel = NIOAsyncTestingChannel()
        let service = FakeService()
        /// The second model of `twoModels` fixtures ("large", alias "rerank-v3.5"): logits ×10.
        let large = FakeService(scale: 10)
        let state: ServerState
        let metrics = ServerMetrics()

        init(http: Bool, twoModels: Bool = false, _ configure: (inout ServerOptions) -> Void = { _ in }) async throws {
            var options = ServerOptions()
            options.modelID = "fake"
            configure(&options)
            state = ServerState(options: options)
            let models = twoModels
                ? try ServedModels([.init(name: "fake", service: service), .init(name: "large", aliases: ["rerank-v3.5"], service: large)])
                : ServedModels.single(service, name: options.modelID)
            state.models.withLock { $0 = models }
            let (channel, state, metrics) = (self.channel, self.state, self.metrics)
            let logger = Logger(label: "handler-test", factory: { _ in SwiftLogNoOpLogHandler() })
            try await channel.eventLoop.submit {
                if http {
                    try SiftServer.addHTTPAPIHandlers(to: channel, state: state, metrics: metrics, options: options, logger: logger)
                } else {
                    try SiftServer.addRPCHandlers(to: channel, state: state, metrics: metrics, options: options, logger: logger)
                }
            }.get()
        }

        func send(_ frame: Wire.Frame) async throws {
            var buffer = ByteBuffer()
            Framing.write(frame, to: &buffer)
            try await channel.writeInbound(buffer)
        }

        /// The next frame the handler writes.
        func receive() async throws -> Wire.Frame {
            var bytes = ByteBuffer()
            while true {
                var more = try await channel.waitForOutboundWrite(as: ByteBuffer.self)
                bytes.writeBuffer(&more)
                if case .frame(let body) = try Framing.next(from: &bytes, maxFrameBytes: 1 << 24) {
                    return try Framing.decode(body)
                }
            }
        }

        /// The whole HTTP response the handler writes: status and body.
        func receiveHTTP() async throws -> (status: Int, body: String) {
            var text = ""
            while true {
                var part = try await channel.waitForOutboundWrite(as: ByteBuffer.self)
                text += part.readString(length: part.readableBytes) ?? ""
                if let split = text.range(of: "\r\n\r\n"),
                   let length = text[..<split.lowerBound].split(separator: "\r\n")
                       .first(where: { $0.lowercased().hasPrefix("content-length:") })
                       .flatMap({ Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }),
                   text.utf8.count - text[..<split.upperBound].utf8.count >= length {
                    let status = Int(text.split(separator: " ")[1]) ?? 0
                    return (status, String(text[split.upperBound...]))
                }
            }
        }

        func settled() async throws {
            for _ in 0..<200 where state.inFlight.load(ordering: .relaxed) != 0 { try await Task.sleep(for: .milliseconds(5)) }
        }

        func metricsText() -> String { String(decoding: metrics.render(models: state.currentModels, serving: true), as: UTF8.self) }
    }

    func testARerankCallIsAnsweredCountedAndLeavesNothingInFlight() async throws {
        let f = try await Fixture(http: false)
        var request = Wire.RerankRequest(query: "q", instruction: "", documents: ["aaa", "a", "aaaaa"], topN: 2)
        request.returnDocuments = true
        try await f.send(Wire.Frame(requestID: 7, body: .rerankRequest(request)))
        let answer = try await f.receive()
        XCTAssertEqual(answer.requestID, 7)
        guard case .rerankResponse(let r) = answer.body else { return XCTFail("\(answer)") }
        XCTAssertEqual(r.results.map(\.index), [2, 0])
        XCTAssertEqual(r.results.map(\.logit), [5, 3])
        XCTAssertEqual(r.results.map(\.document), ["aaaaa", "aaa"])
        XCTAssertEqual(r.usage.documents, 3)
        XCTAssertEqual(r.modelID, "fake")
        // The engine saw the wire request as sent: "" is an instruction, not the default.
        XCTAssertEqual(f.service.requests.withLock { $0.first?.instruction }, "")
        try await f.settled()
        XCTAssertEqual(f.state.inFlight.load(ordering: .relaxed), 0)
        let text = f.metricsText()
        XCTAssertTrue(text.contains(#"sift_requests_total{method="rerank",code="OK",model="fake"} 1"#), text)
        XCTAssertTrue(text.contains(#"sift_documents_total{model="fake"} 3"#), text)
        XCTAssertTrue(text.contains("sift_inflight_requests 0"), text)
    }

    func testEngineErrorsAndProtocolMistakesBecomeStatuses() async throws {
        let f = try await Fixture(http: false)
        try await f.send(Wire.Frame(requestID: 1, body: .rerankRequest(Wire.RerankRequest(query: "busy", documents: ["d"]))))
        var answer = try await f.receive()
        XCTAssertEqual(answer.requestID, 1)
        guard case .status(let busy) = answer.body else { return XCTFail("\(answer)") }
        XCTAssertEqual(busy.code, .resourceExhausted)
        XCTAssertTrue(busy.message.contains("fake queue full"), busy.message)
        // Refused on arrival: answered without running the call.
        try await f.send(Wire.Frame(requestID: 4, body: .rerankRequest(Wire.RerankRequest(query: "full", documents: ["d"]))))
        answer = try await f.receive()
        guard case .status(let full) = answer.body else { return XCTFail("\(answer)") }
        XCTAssertEqual(answer.requestID, 4)
        XCTAssertEqual(full.code, .resourceExhausted)
        XCTAssertTrue(full.message.contains("on arrival"), full.message)
        XCTAssertFalse(f.service.requests.withLock { $0.contains { $0.query == "full" } }, "the refused call never ran")
        try await f.send(Wire.Frame(requestID: 0, body: .modelInfoRequest()))
        answer = try await f.receive()
        guard case .status(let reserved) = answer.body else { return XCTFail("\(answer)") }
        XCTAssertEqual(reserved.code, .invalidArgument)
        try await f.send(Wire.Frame(requestID: 2, body: .modelInfoRequest()))
        answer = try await f.receive()
        guard case .modelInfoResponse(let info) = answer.body else { return XCTFail("\(answer)") }
        XCTAssertEqual(info.quantization, "int8")
        XCTAssertEqual(info.maxLength, 512)
        try await f.send(Wire.Frame(requestID: 3, body: .tokenizeRequest(Wire.TokenizeRequest(texts: ["abc"], returnIDs: true))))
        answer = try await f.receive()
        guard case .tokenizeResponse(let texts) = answer.body else { return XCTFail("\(answer)") }
        XCTAssertEqual(texts.first?.ids, [97, 98, 99])
        let text = f.metricsText()
        XCTAssertTrue(text.contains(#"sift_requests_total{method="rerank",code="RESOURCE_EXHAUSTED",model="fake"} 2"#), text)
        XCTAssertTrue(text.contains(#"sift_requests_total{method="model_info",code="INVALID_ARGUMENT",model=""} 1"#), text)
    }

    func testCancelFrameAndDisconnectStopTheWork() async throws {
        let f = try await Fixture(http: false)
        try await f.send(Wire.Frame(requestID: 5, body: .rerankRequest(Wire.RerankRequest(query: "block", documents: ["d"]))))
        while f.service.requests.withLock({ $0.count }) == 0 { try await Task.sleep(for: .milliseconds(5)) }
        XCTAssertEqual(f.state.inFlight.load(ordering: .relaxed), 1)
        try await f.send(Wire.Frame(requestID: 6, body: .cancelRequest(requestID: 5)))
        var answers: [UInt64: Wire.Body] = [:]
        for _ in 0..<2 {
            let frame = try await f.receive()
            answers[frame.requestID] = frame.body
        }
        guard case .status(let cancelled) = answers[5] else { return XCTFail("\(answers)") }
        XCTAssertEqual(cancelled.code, .cancelled)
        guard case .status(let ack) = answers[6] else { return XCTFail("\(answers)") }
        XCTAssertEqual(ack.code, .ok)
        XCTAssertEqual(f.service.cancelled.withLock { $0 }, 1)
        // A call still running when the client goes away is cancelled too.
        try await f.send(Wire.Frame(requestID: 8, body: .rerankRequest(Wire.RerankRequest(query: "block", documents: ["d"]))))
        while f.service.requests.withLock({ $0.count }) < 2 { try await Task.sleep(for: .milliseconds(5)) }
        try await f.channel.close()
        for _ in 0..<400 where f.service.cancelled.withLock({ $0 }) < 2 { try await Task.sleep(for: .milliseconds(5)) }
        XCTAssertEqual(f.service.cancelled.withLock { $0 }, 2)
        try await f.settled()
        XCTAssertEqual(f.state.inFlight.load(ordering: .relaxed), 0)
    }

    func testHTTPCallsGoThroughTheSameLifecycle() async throws {
        let f = try await Fixture(http: true)
        let body = #"{"query":"q","documents":["aa","aaaa"],"instruction":""}"#
        try await f.channel.writeInbound(ByteBuffer(string: "POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"))
        let ok = try await f.receiveHTTP()
        XCTAssertEqual(ok.status, 200, ok.body)
        let json = try JSONSerialization.jsonObject(with: Data(ok.body.utf8)) as! [String: Any]
        let results = json["results"] as! [[String: Any]]
        XCTAssertEqual(results.map { $0["index"] as! Int }, [1, 0])
        XCTAssertEqual(f.service.requests.withLock { $0.first?.instruction }, "")
        let tei = #"{"query":"busy","texts":["a"]}"#
        try await f.channel.writeInbound(ByteBuffer(string: "POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Length: \(tei.utf8.count)\r\n\r\n\(tei)"))
        let refused = try await f.receiveHTTP()
        XCTAssertEqual(refused.status, 429, refused.body)
        let full = #"{"query":"full","documents":["a"]}"#
        try await f.channel.writeInbound(ByteBuffer(string: "POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: \(full.utf8.count)\r\n\r\n\(full)"))
        let refusedOnArrival = try await f.receiveHTTP()
        XCTAssertEqual(refusedOnArrival.status, 429, refusedOnArrival.body)
        XCTAssertTrue(refusedOnArrival.body.contains("on arrival"), refusedOnArrival.body)
        try await f.settled()
        let text = f.metricsText()
        XCTAssertTrue(text.contains(#"sift_requests_total{method="http_rerank",code="OK",model="fake"} 1"#), text)
        XCTAssertTrue(text.contains(#"sift_requests_total{method="http_rerank",code="RESOURCE_EXHAUSTED",model="fake"} 2"#), text)
        XCTAssertTrue(text.contains(#"sift_documents_total{model="fake"} 2"#), text)
        XCTAssertEqual(f.state.inFlight.load(ordering: .relaxed), 0)
    }

    func testTheModelFieldRoutesEachCallAndAnUnknownNameIsNotFound() async throws {
        let f = try await Fixture(http: false, twoModels: true)
        func rerank(_ id: UInt64, model: String) async throws -> Wire.Body {
            var request = Wire.RerankRequest(query: "q", documents: ["aa", "a"])
            request.model = model
            try await f.send(Wire.Frame(requestID: id, body: .rerankRequest(request)))
            return try await f.receive().body
        }
        // No name: the default; a name or an alias, in any case: that model.
        for (id, name, served, logit) in [(1, "", "fake", 2), (2, "large", "large", 20), (3, "RERANK-v3.5", "large", 20)] as [(UInt64, String, String, Float)] {
            guard case .rerankResponse(let r) = try await rerank(id, model: name) else { return XCTFail("no answer for \(name)") }
            XCTAssertEqual(r.modelID, served)
            XCTAssertEqual(r.results.first?.logit, logit)
        }
        guard case .status(let missing) = try await rerank(4, model: "rerank-english-v3.0") else { return XCTFail("not refused") }
        XCTAssertEqual(missing.code, .notFound)
        XCTAssertTrue(missing.message.contains("fake (default), large (also: rerank-v3.5)"), missing.message)
        XCTAssertEqual(f.service.requests.withLock { $0.count }, 1)
        XCTAssertEqual(f.large.requests.withLock { $0.count }, 2)
        // Model info describes the model asked for and lists them all.
        try await f.send(Wire.Frame(requestID: 5, body: .modelInfoRequest(model: "rerank-v3.5")))
        guard case .modelInfoResponse(let info) = try await f.receive().body else { return XCTFail("no model info") }
        XCTAssertEqual(info.modelID, "large")
        XCTAssertEqual(info.models.map(\.name), ["fake", "large"])
        XCTAssertEqual(info.models.map(\.isDefault), [true, false])
        XCTAssertEqual(info.models[1].aliases, ["rerank-v3.5"])
        var tokenize = Wire.TokenizeRequest(texts: ["a"], model: "nope")
        try await f.send(Wire.Frame(requestID: 6, body: .tokenizeRequest(tokenize)))
        guard case .status(let noTokenizer) = try await f.receive().body else { return XCTFail("tokenize not refused") }
        XCTAssertEqual(noTokenizer.code, .notFound)
        tokenize.model = "large"
        try await f.send(Wire.Frame(requestID: 7, body: .tokenizeRequest(tokenize)))
        guard case .tokenizeResponse = try await f.receive().body else { return XCTFail("tokenize refused") }
        try await f.settled()
        // Counted per model; an unknown name is no label of its own.
        let text = f.metricsText()
        XCTAssertTrue(text.contains(#"sift_requests_total{method="rerank",code="OK",model="large"} 2"#), text)
        XCTAssertTrue(text.contains(#"sift_requests_total{method="rerank",code="OK",model="fake"} 1"#), text)
        XCTAssertTrue(text.contains(#"sift_requests_total{method="rerank",code="NOT_FOUND",model=""} 1"#), text)
        XCTAssertTrue(text.contains(#"sift_documents_total{model="large"} 4"#), text)
        // Every call is counted under the model it named (resolved once, as it was admitted).
        XCTAssertTrue(text.contains(#"sift_requests_total{method="tokenize",code="OK",model="large"} 1"#), text)
        XCTAssertTrue(text.contains(#"sift_requests_total{method="model_info",code="OK",model="large"} 1"#), text)
        XCTAssertTrue(text.contains(#"sift_requests_total{method="tokenize",code="NOT_FOUND",model=""} 1"#), text)
        XCTAssertFalse(text.contains("rerank-english"), text)
    }

    func testHTTPRoutesByTheModelFieldAndAnswers404ForAnUnknownOne() async throws {
        let f = try await Fixture(http: true, twoModels: true)
        func post(_ path: String, _ body: String) async throws -> (status: Int, body: String) {
            try await f.channel.writeInbound(ByteBuffer(string: "POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"))
            return try await f.receiveHTTP()
        }
        let cohere = try await post("/v2/rerank", #"{"model":"rerank-v3.5","query":"q","documents":["aa","a"]}"#)
        XCTAssertEqual(cohere.status, 200, cohere.body)
        let json = try JSONSerialization.jsonObject(with: Data(cohere.body.utf8)) as! [String: Any]
        XCTAssertEqual(json["model"] as? String, "large")  // the model that answered (the client sent an alias)
        XCTAssertEqual((json["results"] as! [[String: Any]]).first?["relevance_score"] as? Double, 1)
        XCTAssertEqual(f.large.requests.withLock { $0.count }, 1)
        let unknown = try await post("/v1/rerank", #"{"model":"rerank-english-v3.0","query":"q","documents":["a"]}"#)
        XCTAssertEqual(unknown.status, 404, unknown.body)
        XCTAssertTrue(unknown.body.contains("fake (default), large (also: rerank-v3.5)"), unknown.body)
        XCTAssertTrue(unknown.body.contains("--model-alias '*=fake'"), unknown.body)
        let errorBody = try JSONSerialization.jsonObject(with: Data(unknown.body.utf8)) as! [String: Any]
        XCTAssertEqual(errorBody["detail"] as? String, errorBody["message"] as? String)
        let tei = try await post("/rerank", #"{"query":"q","texts":["a"],"model":"nope"}"#)
        XCTAssertEqual(tei.status, 404, tei.body)
        let teiDefault = try await post("/rerank", #"{"query":"q","texts":["a"],"raw_scores":true}"#)
        XCTAssertEqual(teiDefault.status, 200, teiDefault.body)
        XCTAssertEqual(f.service.requests.withLock { $0.count }, 1)
    }

    /// The clients people already use each send their vendor's model name and cannot leave it
    /// out: a server of one model answers them all (and says which model answered).
    func testOneModelAnswersEveryName() async throws {
        let f = try await Fixture(http: false)
        for (id, name) in [(1, "rerank-v3.5"), (2, "jina-reranker-v1-base-en"), (3, "")] as [(UInt64, String)] {
            var request = Wire.RerankRequest(query: "q", documents: ["aa", "a"])
            request.model = name
            try await f.send(Wire.Frame(requestID: id, body: .rerankRequest(request)))
            guard case .rerankResponse(let r) = try await f.receive().body else { return XCTFail("\(name) not answered") }
            XCTAssertEqual(r.modelID, "fake")
        }
    }

    /// The frame deadline on the test channel's virtual clock: half a frame is answered
    /// DEADLINE_EXCEEDED and the connection closed exactly when --frame-timeout has passed since
    /// its first byte, not before (no wall-clock wait).
    func testAFrameNotCompleteInTimeIsRefusedOnTheVirtualClock() async throws {
        let f = try await Fixture(http: false) { $0.frameTimeout = .seconds(30) }
        var whole = ByteBuffer()
        Framing.write(Wire.Frame(requestID: 7, body: .rerankRequest(Wire.RerankRequest(query: "q", documents: ["a", "b"]))), to: &whole)
        try await f.channel.writeInbound(whole.getSlice(at: 0, length: whole.readableBytes - 3)!)
        try await f.channel.testingEventLoop.advanceTime(by: .seconds(29))
        let early = try await f.channel.readOutbound(as: ByteBuffer.self)
        XCTAssertNil(early, "answered before the deadline")
        try await f.channel.testingEventLoop.advanceTime(by: .seconds(2))
        let answer = try await f.receive()
        XCTAssertEqual(answer.requestID, 7)
        guard case .status(let status) = answer.body else { return XCTFail("\(answer.body)") }
        XCTAssertEqual(status.code, .deadlineExceeded)
        XCTAssertTrue(status.message.contains("--frame-timeout"), status.message)
        try await f.channel.closeFuture.get()
    }

    /// The same deadline on the HTTP port (HTTPRequestGuard), on the virtual clock: 408, closed.
    func testAnHTTPRequestNotCompleteInTimeIsRefusedOnTheVirtualClock() async throws {
        let f = try await Fixture(http: true) { $0.frameTimeout = .seconds(30) }
        let head = "POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"query\": \"q\""
        try await f.channel.writeInbound(ByteBuffer(string: head))
        try await f.channel.testingEventLoop.advanceTime(by: .seconds(29))
        let early = try await f.channel.readOutbound(as: ByteBuffer.self)
        XCTAssertNil(early, "answered before the deadline")
        try await f.channel.testingEventLoop.advanceTime(by: .seconds(2))
        let (status, body) = try await f.receiveHTTP()
        XCTAssertEqual(status, 408)
        XCTAssertTrue(body.contains("DEADLINE_EXCEEDED"), body)
        try await f.channel.closeFuture.get()
    }

    func testACatchAllAliasTakesEveryUnservedName() throws {
        let models = try ServedModels([.init(name: "a", service: FakeService()), .init(name: "b", aliases: ["*"], service: FakeService())])
        XCTAssertEqual(try models.resolve("anything").name, "b")
        XCTAssertEqual(try models.resolve("A").name, "a")
        XCTAssertEqual(try models.resolve("").name, "a")
        XCTAssertThrowsError(try ServedModels([.init(name: "a", service: FakeService()), .init(name: "b", aliases: ["A"], service: FakeService())]))
    }
}
