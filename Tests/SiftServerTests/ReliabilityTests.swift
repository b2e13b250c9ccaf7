import Foundation
import Logging
import NIOCore
import SiftBase
import SiftClient
import SiftEngine
import SiftProtocol
@testable import SiftServer
import SiftTestSupport
import XCTest

/// The defects of the second hostile probe (issue 24), each reproduced against a real server:
/// answers to clients that never read, calls that can never run, Tokenize floods, a second
/// body past the key screen, forged and flooded logs, protocol edges, cache side channels.
final class ReliabilityTests: XCTestCase {
    /// A rerank with `return_documents` of `n` ~1 KB documents (its answer ~n KB).
    static func bigAnswerRequest(_ n: Int = 40) -> Wire.RerankRequest {
        var request = Wire.RerankRequest(query: "which words?", documents: (0..<n).map { i in
            (0..<150).map { "w\(($0 + i) % 97)" }.joined(separator: " ")
        })
        request.returnDocuments = true
        return request
    }

    /// Polls `value` for `seconds`, returning the largest it saw.
    static func peak(of value: @escaping @Sendable () -> Int, for seconds: Double) async throws -> Int {
        var most = 0
        let end = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < end {
            most = max(most, value())
            try await Task.sleep(for: .milliseconds(5))
        }
        return most
    }

    // MARK: - H1: answers to clients that never read

    /// One connection re-sending a call answered from the score cache, never reading: the
    /// server held every answer (3.7 GiB in 25 s). Now it holds at most its per-connection bound
    /// (plus one answer), stops reading the connection, and closes it after the send timeout;
    /// other clients are served meanwhile.
    func testAnRPCClientThatNeverReadsIsHeldBackThenClosed() async throws {
        let limit = 256 << 10
        let server = try await TestServer.start({ $0.maxUnsentBytesPerConnection = limit; $0.sendTimeout = .seconds(2) },
                                                engine: { $0.scoreCacheBytes = 64 << 20 })
        let port = server.port!
        let request = Self.bigAnswerRequest()
        let c = try await TestServer.connect(server)
        let first = try await ServerTests.rerank(c, request)  // computed once; the rest come from the cache
        var frame = ByteBuffer()
        Framing.write(Wire.Frame(requestID: 1, body: .rerankRequest(request)), to: &frame)
        let answerBytes = first.results.reduce(0) { $0 + ($1.document?.utf8.count ?? 0) } + 4096

        let sender = Task.detached { () -> Int in
            let s = try RawSocket(port: port, receiveBuffer: 4096)
            defer { s.close() }
            var sent = 0
            for id in 1...2000 {
                var f = ByteBuffer()
                Framing.write(Wire.Frame(requestID: UInt64(id), body: .rerankRequest(request)), to: &f)
                do { try s.send(Array(f.readableBytesView)) } catch { break }  // the server closed it
                sent += 1
            }
            return sent
        }
        let most = try await Self.peak(of: { server.unsentBytes }, for: 1.5)
        XCTAssertLessThanOrEqual(most, limit + 2 * answerBytes, "answers held for a client that never reads")
        XCTAssertGreaterThan(most, limit / 2, "the client should have filled its bound")
        // Others are served while it is held back.
        let other = try await TestServer.connect(server)
        let served = try await ServerTests.rerank(other, Wire.RerankRequest(query: "q", documents: ["a", "b"]))
        XCTAssertEqual(served.results.count, 2)
        // Taking nothing for the send timeout, it is closed (its sender's writes fail).
        let sent = try await sender.value
        XCTAssertLessThan(sent, 2000, "the connection should have been closed")
        for _ in 0..<400 where server.unsentBytes > 0 { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(server.unsentBytes, 0, "a closed connection gives its held bytes back")
        let metrics = try await offPool { try TestServer.httpGet(port: server.metricsPort!, path: "/metrics") }
        XCTAssertNotNil(TestServer.metric(metrics, "sift_unsent_bytes"), metrics)
        await server.shutdown()
    }

    /// HTTP pipelining without reading grew the server's memory linearly (+370 MiB in 40 s).
    func testAnHTTPClientThatPipelinesWithoutReadingIsHeldBackThenClosed() async throws {
        let limit = 256 << 10
        let server = try await TestServer.start({ $0.httpPort = 0; $0.maxUnsentBytesPerConnection = limit; $0.sendTimeout = .seconds(2) },
                                                engine: { $0.scoreCacheBytes = 64 << 20 })
        let port = server.httpPort!
        let documents = Self.bigAnswerRequest().documents
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["query": "q", "documents": documents, "return_documents": true]), as: UTF8.self)
        let request = "POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        let warm = try await HTTPAPITests.post(port, "/v2/rerank", body)
        XCTAssertEqual(warm.status, 200)
        let sender = Task.detached { () -> Int in
            let s = try RawSocket(port: port, receiveBuffer: 4096)
            defer { s.close() }
            var sent = 0
            for _ in 0..<2000 {
                do { try s.send(Array(request.utf8)) } catch { break }
                sent += 1
            }
            return sent
        }
        let most = try await Self.peak(of: { server.unsentBytes }, for: 1.5)
        XCTAssertLessThanOrEqual(most, limit + 2 * body.utf8.count, "answers held for a client that never reads")
        XCTAssertGreaterThan(most, limit / 2)
        let sent = try await sender.value
        XCTAssertLessThan(sent, 2000, "the connection should have been closed")
        await server.shutdown()
    }

    // MARK: - H2: calls that can never run

    /// Two clients sending calls with a 15 MiB query held half the queue each while it was
    /// tokenized, and a third client's small calls failed RESOURCE_EXHAUSTED. Now such a call is
    /// refused from its size before it holds anything.
    func testCallsThatCanNeverRunHoldNothing() async throws {
        let server = try await TestServer.start(engine: { $0.maxQueuedTokens = 20_000 })
        let hugeQuery = String(repeating: "why ", count: (15 << 20) / 4)
        let hostile = (0..<2).map { _ in
            Task {
                let c = try await TestServer.connect(server)
                var codes: [Wire.Code] = []
                for _ in 0..<3 {
                    do {
                        _ = try await ServerTests.rerank(c, Wire.RerankRequest(query: hugeQuery, documents: ["a"]))
                        codes.append(.ok)
                    } catch let s as Wire.Status {
                        codes.append(s.code)
                    }
                }
                return codes
            }
        }
        let c = try await TestServer.connect(server)
        for i in 0..<20 {
            let r = try await ServerTests.rerank(c, Wire.RerankRequest(query: "small \(i)", documents: ["a", "b"]))
            XCTAssertEqual(r.results.count, 2)
        }
        for task in hostile {
            let codes = try await task.value
            XCTAssertEqual(codes, [.invalidArgument, .invalidArgument, .invalidArgument])
        }
        XCTAssertEqual(server.engine!.stats.queuedTokens, 0)
        await server.shutdown()
    }

    // MARK: - H3: Tokenize floods

    /// Six connections of Tokenize calls took 3.2 GiB and made a one-document rerank wait
    /// 20 s. Tokenize now runs on a lane of its own under a bound: the excess is refused at once
    /// and reranks go on.
    func testTokenizeFloodsAreBoundedAndReranksGoOn() async throws {
        let server = try await TestServer.start { $0.maxFrameBytes = 256 << 10 }
        let text = String(repeating: "tokenize me please ", count: (64 << 10) / 19)
        let flood = (0..<6).map { _ in
            Task {
                let c = try await TestServer.connect(server)
                return await withTaskGroup(of: Wire.Code.self) { group in
                    for _ in 0..<8 {
                        group.addTask {
                            do {
                                _ = try await c.call(.tokenizeRequest(Wire.TokenizeRequest(texts: [text], returnIDs: true)))
                                return .ok
                            } catch let s as Wire.Status { return s.code } catch { return .unknown }
                        }
                    }
                    var codes: [Wire.Code] = []
                    for await code in group { codes.append(code) }
                    return codes
                }
            }
        }
        let c = try await TestServer.connect(server)
        let one = try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: ["one document"]))
        XCTAssertEqual(one.results.count, 1)
        var codes: [Wire.Code] = []
        for task in flood { codes += try await task.value }
        XCTAssertTrue(codes.contains(.resourceExhausted), "\(codes)")
        XCTAssertTrue(codes.contains(.ok), "\(codes)")
        XCTAssertEqual(Set(codes), [.ok, .resourceExhausted])
        await server.shutdown()
    }

    /// An answer must fit a frame the client accepts: `return_documents` on a call whose texts
    /// fill a frame is refused before it runs.
    func testAnswersAreBoundedByTheFrameLimit() async throws {
        let server = try await TestServer.start { $0.maxFrameBytes = 1 << 20 }
        let c = try await TestServer.connect(server)
        // 1.03 MB of text fits the 1 MiB request; its answer adds each result's scores and counts.
        var request = Wire.RerankRequest(query: "q", documents: (0..<1000).map { _ in String(repeating: "x", count: 1030) })
        request.returnDocuments = true
        request.maxTokensPerDocument = 4
        do {
            _ = try await ServerTests.rerank(c, request)
            XCTFail("an answer over the frame limit was not refused")
        } catch let s as Wire.Status {
            XCTAssertEqual(s.code, .invalidArgument)
            XCTAssertTrue(s.message.contains("top_n"), s.message)
        }
        request.topN = 2
        let top = try await ServerTests.rerank(c, request)
        XCTAssertEqual(top.results.count, 2)
        await server.shutdown()
    }

    // MARK: - M1: one screen that cannot be bypassed

    /// `health_request{}` then `rerank_request{…}`: screened on the first body (no key needed),
    /// the frame was buffered whole and decoded as the second. Now a second body is refused as
    /// soon as it shows, before the rest of the frame is sent.
    func testASecondBodyIsRefusedBeforeTheFrameIsBuffered() async throws {
        let server = try await TestServer.start { $0.apiKeys = APIKeys(["sift-test-key-0123456789"]) }
        let port = server.port!
        let status = try await offPool { () -> Wire.Status? in
            let s = try RawSocket(port: port)
            defer { s.close() }
            s.setReceiveTimeout(5)
            let body = RawProto.id(3) + RawProto.field(17, []) + RawProto.rerank(documents: 400_000)
            let frame = RawProto.frame(body)
            try s.send(Array(frame.prefix(4096)))  // the rest is never sent
            return HostileClientTests.status(try s.readFrame())
        }
        XCTAssertEqual(status?.code, .invalidArgument, "\(String(describing: status))")
        XCTAssertTrue(status?.message.contains("more than one body") ?? false, "\(String(describing: status))")
        // Whole, the same frame is refused too (never answered as Health nor decoded as a rerank).
        let whole = try await offPool { () -> Wire.Status? in
            let s = try RawSocket(port: port)
            defer { s.close() }
            try s.send(RawProto.frame(RawProto.id(4) + RawProto.field(17, []) + RawProto.rerank(documents: 3)))
            return HostileClientTests.status(try s.readFrame())
        }
        XCTAssertEqual(whole?.code, .invalidArgument)
        XCTAssertEqual(server.engine!.stats.completed, 0)
        await server.shutdown()
    }

    /// A UTF-8 byte-order mark skipped the document count (5 million documents decoded on the
    /// event loop). It is now read past; UTF-16 bodies are refused.
    func testAByteOrderMarkDoesNotSkipTheDocumentCount() async throws {
        let server = try await TestServer.start { $0.httpPort = 0 }
        let port = server.httpPort!
        let bom = "\u{FEFF}"
        let many = bom + #"{"query":"q","documents":["# + Array(repeating: #""""#, count: 2000).joined(separator: ",") + "]}"
        var r = try await HTTPAPITests.post(port, "/v2/rerank", many)
        XCTAssertEqual(r.status, 400, r.body)
        XCTAssertTrue(r.body.contains("2000 documents; at most 1000"), r.body)
        r = try await HTTPAPITests.post(port, "/v2/rerank", bom + #"{"query":"q","documents":["a","b"]}"#)
        XCTAssertEqual(r.status, 200, r.body)
        let utf16 = try await offPool { () -> String in
            let s = try RawSocket(port: port)
            defer { s.close() }
            let body = Array(#"{"query":"q","documents":["a"]}"#.data(using: .utf16)!)
            try s.send(Array("POST /v2/rerank HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body)
            return String(decoding: s.readAll(), as: UTF8.self)
        }
        XCTAssertTrue(utf16.hasPrefix("HTTP/1.1 400"), utf16)
        XCTAssertTrue(utf16.contains("UTF-8"), utf16)
        await server.shutdown()
    }

    // MARK: - L1, L2: logs

    /// A newline in a model name was written raw into the log (a forged line); a flood of calls
    /// logged a line each (745 MB in 40 s).
    func testClientTextCannotForgeOrFloodTheLog() async throws {
        let lines = CapturedLog()
        let server = try await TestServer.start({ $0.httpPort = 0 }, logger: lines.logger)
        let c = try await TestServer.connect(server)
        // TEI's truncation_direction is echoed in the refusal, which is logged.
        let forgedBody = #"{"query":"q","texts":["a"],"truncation_direction":"Left\n2026-01-01T00:00:00+0000 critical sift: FORGED"}"#
        let refused = try await HTTPAPITests.post(server.httpPort!, "/rerank", forgedBody)
        XCTAssertEqual(refused.status, 422, refused.body)
        let forged = lines.text
        XCTAssertFalse(forged.contains("\n2026-01-01"), forged)
        XCTAssertTrue(forged.contains("Left\\n2026-01-01"), forged)

        lines.clear()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    for _ in 0..<100 { _ = try await c.call(.modelInfoRequest()) }
                }
            }
            try await group.waitForAll()
        }
        let logged = lines.count(of: "call")
        XCTAssertLessThanOrEqual(logged, 2 * LogLimiter(perSecond: 100).perSecond, "800 calls in about a second")
        try await Task.sleep(for: .milliseconds(1100))
        _ = try await c.call(.modelInfoRequest())
        XCTAssertTrue(lines.text.contains("suppressed_similar_lines"), lines.text.suffix(800).description)
        await server.shutdown()
    }

    // MARK: - L4, L7: protocol edges

    /// A 400 for an unparsable request said `Connection: close` but kept the socket 30 s.
    func testAnUnparsableHTTPRequestIsAnsweredAndClosedAtOnce() async throws {
        let server = try await TestServer.start { $0.httpPort = 0 }
        let port = server.httpPort!
        let (reply, closed) = try await offPool { () -> (String, Bool) in
            let s = try RawSocket(port: port)
            defer { s.close() }
            s.setReceiveTimeout(5)
            try s.send(Array("GET / HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n".utf8))
            var got: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = chunk.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress, $0.count, 0) }
                if n == 0 { return (String(decoding: got, as: UTF8.self), true) }
                if n < 0 { return (String(decoding: got, as: UTF8.self), false) }  // the 5 s timeout
                got += chunk[0..<n]
            }
        }
        XCTAssertTrue(reply.hasPrefix("HTTP/1.1 400"), reply)
        XCTAssertTrue(closed, "the connection stayed open after the 400")
        await server.shutdown()
    }

    /// HTTP/1.0 with keep-alive: the response must say so, or the client closes.
    func testHTTP10KeepAliveIsHonoured() async throws {
        let server = try await TestServer.start { $0.httpPort = 0 }
        let port = server.httpPort!
        let body = #"{"query":"q","documents":["a"]}"#
        let replies = try await offPool { () -> [String] in
            let s = try RawSocket(port: port)
            defer { s.close() }
            s.setReceiveTimeout(5)
            var replies: [String] = []
            for _ in 0..<2 {
                try s.send(Array("POST /v2/rerank HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8))
                var text = ""
                var chunk = [UInt8](repeating: 0, count: 4096)
                while !(text.contains("\r\n\r\n") && text.hasSuffix("}")) {
                    let n = chunk.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress, $0.count, 0) }
                    if n <= 0 { break }
                    text += String(decoding: chunk[0..<n], as: UTF8.self)
                }
                replies.append(text)
            }
            return replies
        }
        XCTAssertEqual(replies.count, 2)
        for reply in replies {
            XCTAssertTrue(reply.hasPrefix("HTTP/1.0 200"), reply)
            XCTAssertTrue(reply.lowercased().contains("connection: keep-alive"), reply)
        }
        await server.shutdown()
    }

    /// A reused request id got two final frames (the refusal and the first call's answer); now
    /// the refusal goes under id 0. A Cancel under its target's own id ends it with one frame.
    func testEveryCallGetsExactlyOneFinalFrame() async throws {
        let server = try await TestServer.start()
        let port = server.port!
        let frames = try await offPool { () -> [Wire.Frame] in
            let s = try RawSocket(port: port)
            defer { s.close() }
            s.setReceiveTimeout(10)
            let long = Wire.RerankRequest(query: "q", documents: TestServer.longDocuments(6))
            try s.sendFrame(Wire.Frame(requestID: 5, body: .rerankRequest(long)))
            try s.sendFrame(Wire.Frame(requestID: 5, body: .rerankRequest(long)))
            try s.sendFrame(Wire.Frame(requestID: 7, body: .rerankRequest(Wire.RerankRequest(query: "q", documents: TestServer.longDocuments(60)))))
            try s.sendFrame(Wire.Frame(requestID: 7, body: .cancelRequest(requestID: 7)))
            try s.sendFrame(Wire.Frame(requestID: 8, body: .healthRequest))
            var frames: [Wire.Frame] = []
            // Until both calls and the Health are answered, then a moment for any extra frame.
            while frames.filter({ [5, 7, 8].contains($0.requestID) }).count < 3, let f = try s.readFrame() { frames.append(f) }
            s.setReceiveTimeout(0.5)
            while let f = try? s.readFrame() { frames.append(f) }
            return frames
        }
        let byID = Dictionary(grouping: frames, by: \.requestID)
        XCTAssertEqual(byID[5]?.count, 1, "\(frames)")
        guard case .rerankResponse = byID[5]?.first?.body else { return XCTFail("call 5 not answered: \(frames)") }
        XCTAssertEqual(byID[7]?.count, 1, "\(frames)")
        XCTAssertEqual(HostileClientTests.status(byID[7]?.first)?.code, .cancelled)
        let refusal = HostileClientTests.status(byID[0]?.first)
        XCTAssertEqual(refusal?.code, .invalidArgument)
        XCTAssertTrue(refusal?.message.contains("request_id 5 is already in flight") ?? false, "\(String(describing: refusal))")
        await server.shutdown()
    }

    /// A client that sends its calls and shuts its sending side used to get nothing.
    func testAHalfClosedConnectionStillGetsItsAnswers() async throws {
        let server = try await TestServer.start()
        let port = server.port!
        let (answers, closed) = try await offPool { () -> ([Wire.Frame], Bool) in
            let s = try RawSocket(port: port)
            defer { s.close() }
            s.setReceiveTimeout(20)
            for id in 1...3 {
                try s.sendFrame(Wire.Frame(requestID: UInt64(id), body: .rerankRequest(Wire.RerankRequest(query: "q", documents: TestServer.longDocuments(8)))))
            }
            s.shutdownWrite()
            var answers: [Wire.Frame] = []
            while answers.count < 3, let f = try s.readFrame() {
                if f.requestID != 0 { answers.append(f) }  // id 0: the server's liveness probes
            }
            return (answers, s.peerClosed())
        }
        XCTAssertEqual(answers.map(\.requestID).sorted(), [1, 2, 3])
        for a in answers { guard case .rerankResponse = a.body else { return XCTFail("\(a)") } }
        XCTAssertTrue(closed, "the server closes once the answers are out")
        await server.shutdown()
    }

    // MARK: - L6: cache privacy

    /// With API keys, one key's calls learned from `usage.cached_documents` and cached prefix
    /// tokens what another key had sent. The caches are now partitioned per key.
    func testCachesArePartitionedPerAPIKey() async throws {
        let keys = ["tenant-a-key-0123456789", "tenant-b-key-0123456789"]
        let server = try await TestServer.start({ $0.apiKeys = APIKeys(keys) }, engine: { $0.scoreCacheBytes = 16 << 20 })
        let c = try await TestServer.connect(server)
        let request = Wire.RerankRequest(query: "a secret query of tenant a", documents: ["doc one", "doc two"])
        func call(_ key: String) async throws -> Wire.Usage {
            try await ServerTests.rerank(c, request, metadata: [Wire.MetadataEntry("authorization", "Bearer \(key)")]).usage
        }
        let a1 = try await call(keys[0]), a2 = try await call(keys[0]), b = try await call(keys[1])
        XCTAssertEqual(a1.cachedDocuments, 0)
        XCTAssertEqual(a2.cachedDocuments, 2, "the same key reuses its own cache")
        XCTAssertEqual(b.cachedDocuments, 0, "another key must not hit tenant a's scores")
        XCTAssertEqual(b.prefixTokensCached, 0, "another key must not hit tenant a's prefix")
        await server.shutdown()
    }
}

/// Log lines as a test sees them: message and metadata, one entry per line.
final class CapturedLog: @unchecked Sendable {
    private let lines = Locked<[String]>([])

    var logger: Logger {
        Logger(label: "captured") { _ in Handler(log: self) }
    }

    var text: String { lines.withLock { $0.joined(separator: "\n") } }
    func count(of message: String) -> Int { lines.withLock { $0.filter { $0.hasPrefix(message + " ") }.count } }
    func clear() { lines.withLock { $0.removeAll() } }

    struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
                 file: String, function: String, line: UInt) {
            let all = self.metadata.merging(metadata ?? [:]) { $1 }
            let text = "\(message) " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            log.lines.withLock { $0.append(text) }
        }
    }
}
