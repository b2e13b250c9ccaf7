import Foundation
import SiftProtocol
@testable import SiftServer
import SiftTestSupport
import XCTest

/// The HTTP port under the same bounds as the RPC port: connection limit, idle and request
/// deadlines, body size; and every pipelined request answered in order.
final class HTTPLimitsTests: XCTestCase {
    static func request(_ path: String, _ body: String, keepAlive: Bool = true) -> String {
        "POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + (keepAlive ? "" : "Connection: close\r\n")
            + "Content-Length: \(body.utf8.count)\r\n\r\n" + body
    }

    /// Five requests pipelined on one connection used to get two answers and a close.
    func testPipelinedRequestsAreAllAnsweredInOrder() async throws {
        // Each answer echoes its request's model name, so the order shows; "*" takes every name.
        let server = try await TestServer.start({ $0.httpPort = 0 }, aliases: [ServedModels.catchAll])
        let port = server.httpPort!
        let queries = (0..<5).map { "query number \($0)" }
        let text = try await offPool { () -> String in
            let s = try RawSocket(port: port)
            defer { s.close() }
            var all = ""
            for (i, q) in queries.enumerated() {
                // Request i has i + 1 documents, so its answer has i + 1 results.
                let documents = (0...i).map { #""doc \#($0)""# }.joined(separator: ",")
                all += Self.request("/v2/rerank", #"{"query":"\#(q)","documents":[\#(documents)]}"#, keepAlive: i < 4)
            }
            try s.send(Array(all.utf8))
            return String(decoding: s.readAll(), as: UTF8.self)
        }
        let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0.prefix(3) }
        XCTAssertEqual(statuses, Array(repeating: "200", count: 5), text)
        // In order: answer i has request i's i + 1 results.
        let bodies = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0.components(separatedBy: "\r\n\r\n").last ?? "" }
        let counts = bodies.map { ((try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any])?["results"] as? [Any] }.map { $0?.count ?? -1 }
        XCTAssertEqual(counts, [1, 2, 3, 4, 5], text)
        await server.shutdown()
    }

    /// 700 idle HTTP sockets used to starve the RPC port of descriptors. All ports share one
    /// limit, and idle connections make room for new ones.
    func testIdleHTTPConnectionsCannotLockOutTheRPCPort() async throws {
        let server = try await TestServer.start { $0.httpPort = 0; $0.maxConnections = 8 }
        let sockets = try (0..<12).map { _ in try RawSocket(port: server.httpPort!) }
        for s in sockets { try s.send(Array("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".utf8)) }
        try await Task.sleep(for: .milliseconds(100))
        XCTAssertLessThanOrEqual(server.openConnections, 8)
        let c = try await TestServer.connect(server)
        guard case .healthResponse = try await c.call(.healthRequest) else { return XCTFail("no health") }
        for s in sockets { s.close() }
        await server.shutdown()
    }

    func testIdleHTTPConnectionsAreClosed() async throws {
        let server = try await TestServer.start { $0.httpPort = 0; $0.idleTimeout = .milliseconds(300) }
        let port = server.httpPort!
        let closed = try await offPool { () -> Bool in
            let s = try RawSocket(port: port)
            defer { s.close() }
            s.setReceiveTimeout(3)
            return s.peerClosed()
        }
        XCTAssertTrue(closed)
        await server.shutdown()
    }

    /// Headers trickled byte by byte, and a body that stops short of its Content-Length, used to
    /// be held open with no answer: 408 after the request deadline, then close.
    func testSlowHeadersAndStalledBodiesTimeOut() async throws {
        let server = try await TestServer.start { $0.httpPort = 0; $0.frameTimeout = .seconds(1); $0.idleTimeout = .seconds(30) }
        let port = server.httpPort!
        let partials = ["POST /v2/rerank HTTP/1.1\r\nHost: x\r\nX-Slow: ", String(Self.request("/v2/rerank", #"{"query":"q","documents":["d"]}"#).dropLast(10))]
        for partial in partials {
            let (reply, elapsed) = try await offPool { () -> (String, Double) in
                let s = try RawSocket(port: port)
                defer { s.close() }
                let start = Date()
                for chunk in partial.utf8.map({ [$0] }) {
                    try? s.send(chunk)
                    if Date().timeIntervalSince(start) > 0.2 { break }
                }
                s.setReceiveTimeout(5)
                return (String(decoding: s.readAll(), as: UTF8.self), Date().timeIntervalSince(start))
            }
            XCTAssertTrue(reply.hasPrefix("HTTP/1.1 408"), reply)
            XCTAssertTrue(reply.contains("--frame-timeout"), reply)
            XCTAssertLessThan(elapsed, 3)
        }
        await server.shutdown()
    }

    /// An endless chunked body used to be read (and dropped) forever: 413 at the limit, then close.
    func testAnEndlessChunkedBodyIsRefusedAtTheLimit() async throws {
        let server = try await TestServer.start { $0.httpPort = 0; $0.maxFrameBytes = 64 << 10 }
        let port = server.httpPort!
        let reply = try await offPool { () -> String in
            let s = try RawSocket(port: port)
            defer { s.close() }
            try s.send(Array("POST /v2/rerank HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".utf8))
            let chunk = Array("1000\r\n".utf8) + [UInt8](repeating: 0x20, count: 4096) + Array("\r\n".utf8)
            for _ in 0..<1000 { do { try s.send(chunk) } catch { break } }
            s.setReceiveTimeout(5)
            return String(decoding: s.readAll(), as: UTF8.self)
        }
        XCTAssertTrue(reply.hasPrefix("HTTP/1.1 413"), reply)
        XCTAssertEqual(server.bufferedRequestBytes, 0)
        await server.shutdown()
    }

    /// A wrong or missing key is answered from the headers, before the body is read.
    func testKeyIsCheckedBeforeTheBody() async throws {
        let server = try await TestServer.start { $0.httpPort = 0; $0.apiKeys = APIKeys(["sift-test-key-0123456789"]) }
        let port = server.httpPort!
        let reply = try await offPool { () -> String in
            let s = try RawSocket(port: port)
            defer { s.close() }
            // Announces 10 MB, sends none of it.
            try s.send(Array("POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n".utf8))
            s.setReceiveTimeout(5)
            return String(decoding: s.readAll(), as: UTF8.self)
        }
        XCTAssertTrue(reply.hasPrefix("HTTP/1.1 401"), reply)
        await server.shutdown()
    }

    /// A 404 used to echo the whole path (60 KB) back.
    func testNotFoundDoesNotEchoLongPaths() async throws {
        let server = try await TestServer.start { $0.httpPort = 0 }
        let r = try await HTTPAPITests.post(server.httpPort!, "/" + String(repeating: "a", count: 60_000), "{}")
        XCTAssertEqual(r.status, 404)
        XCTAssertLessThan(r.body.utf8.count, 600, r.body)  // the path cut to 100 characters (message and detail)
        await server.shutdown()
    }
}
