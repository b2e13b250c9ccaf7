import Foundation
import NIOCore
import SiftClient
import SiftProtocol
@testable import SiftServer
import SiftTestSupport
import XCTest

/// Protobuf bytes written by hand, to send what no client library would.
enum RawProto {
    static func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        while v >= 0x80 { out.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
        return out + [UInt8(v)]
    }
    static func field(_ number: Int, _ bytes: [UInt8]) -> [UInt8] { varint(UInt64(number << 3 | 2)) + varint(UInt64(bytes.count)) + bytes }
    static func id(_ id: UInt64) -> [UInt8] { [0x08] + varint(id) }
    static func metadata(_ key: String, _ value: [UInt8]) -> [UInt8] { field(2, field(1, Array(key.utf8)) + field(2, value)) }
    /// A length-prefixed frame around `body`.
    static func frame(_ body: [UInt8]) -> [UInt8] {
        let n = UInt32(body.count)
        return [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + body
    }
    /// A rerank request with `documents` empty documents.
    static func rerank(documents: Int) -> [UInt8] {
        var request = field(1, Array("q".utf8))
        request.reserveCapacity(3 + 2 * documents)
        for _ in 0..<documents { request += [0x1a, 0x00] }
        return field(10, request)
    }
}

/// The kernel's record of this process's peak resident memory (Linux).
enum PeakMemory {
    /// Restarts the record from the current resident size; false where the kernel refuses.
    static func reset() -> Bool {
        guard let f = fopen("/proc/self/clear_refs", "w") else { return false }
        defer { fclose(f) }
        return fputs("5", f) >= 0 && fflush(f) == 0
    }

    /// Peak resident bytes (VmHWM) since the start or the last `reset`.
    static func highWater() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }.map { $0 * 1024 }
        }
        return nil
    }
}

extension RawSocket {
    func setReceiveTimeout(_ seconds: Double) {
        var timeout = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// True once the peer has closed (a read returns 0), within the receive timeout.
    func peerClosed() -> Bool {
        var byte: UInt8 = 0
        while true {
            let n = recv(fd, &byte, 1, 0)
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }
}

/// Clients that misbehave on purpose; each test reproduces an attack from the probe.
final class HostileClientTests: XCTestCase {
    static func status(_ frame: Wire.Frame?) -> Wire.Status? {
        if case .status(let s) = frame?.body { return s }
        return nil
    }

    /// One byte every 300 ms used to keep a frame open for as long as the sender liked (any
    /// byte reset the idle timer). The frame deadline cuts it off.
    func testSlowSenderIsCutOffByTheFrameDeadline() async throws {
        let server = try await TestServer.start { $0.frameTimeout = .seconds(1); $0.idleTimeout = .seconds(10) }
        let port = server.port!
        let elapsed = try await offPool { () -> Double in
            let s = try RawSocket(port: port)
            defer { s.close() }
            s.setReceiveTimeout(0.3)
            let frame = RawProto.frame(RawProto.id(5) + RawProto.rerank(documents: 10))
            let start = Date()
            try s.send(Array(frame.prefix(6)))  // length and request id, then a byte now and then
            for byte in frame.dropFirst(6) {
                try? s.send([byte])
                if let f = try? s.readFrame() {
                    let st = Self.status(f)
                    XCTAssertEqual(st?.code, .deadlineExceeded, "\(f)")
                    XCTAssertTrue(st?.message.contains("--frame-timeout") ?? false)
                    XCTAssertEqual(f.requestID, 5, "answered under the frame's id")
                    break
                }
            }
            s.setReceiveTimeout(2)
            XCTAssertTrue(s.peerClosed())
            return Date().timeIntervalSince(start)
        }
        XCTAssertLessThan(elapsed, 3)
        XCTAssertGreaterThan(elapsed, 0.9)
        await server.shutdown()
    }

    /// With every connection taken by slow senders, a client that behaves still gets in: the
    /// connection whose frame has been arriving longest is closed to make room.
    func testAFullServerMakesRoomByClosingTheSlowestSender() async throws {
        let server = try await TestServer.start { $0.maxConnections = 4; $0.frameTimeout = .seconds(60) }
        let port = server.port!
        var slow: [RawSocket] = []
        for _ in 0..<4 {
            let s = try RawSocket(port: port)
            try s.send(Array(RawProto.frame(RawProto.id(1) + RawProto.rerank(documents: 50)).prefix(20)))
            slow.append(s)
            try await Task.sleep(for: .milliseconds(30))
        }
        while server.openConnections < 4 { try await Task.sleep(for: .milliseconds(5)) }
        for _ in 0..<3 {
            let c = try await TestServer.connect(server)
            let r = try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: ["a document"]))
            XCTAssertEqual(r.results.count, 1)
            await c.close()
        }
        // The oldest slow senders went first, each told why.
        let first = slow[0]
        try await offPool {
            first.setReceiveTimeout(2)
            XCTAssertTrue(first.peerClosed(), "the slowest sender was closed")
        }
        XCTAssertLessThanOrEqual(server.openConnections, 4)
        for s in slow { s.close() }
        await server.shutdown()
    }

    /// 64 connections each holding most of a 4 MiB frame used to pin 64 × 4 MiB. Bytes held
    /// for unfinished frames come from one server-wide budget; past it frames are refused,
    /// and everything is given back when the connections go.
    func testBufferedBytesAreBoundedAcrossConnectionsAndGivenBack() async throws {
        let budget = 2 << 20
        let server = try await TestServer.start { $0.maxBufferedBytes = budget; $0.maxFrameBytes = 8 << 20 }
        let port = server.port!
        let sockets = try (0..<12).map { _ in try RawSocket(port: port) }
        let frame = RawProto.frame(RawProto.id(3) + RawProto.rerank(documents: 2_000_000))  // ~4 MB, never finished
        let refused = try await offPool { () -> Int in
            var refused = 0
            for s in sockets {
                try? s.send(Array(frame.prefix(1 << 20)))
                s.setReceiveTimeout(0.5)
                if let st = Self.status(try? s.readFrame()) {
                    XCTAssertEqual(st.code, .resourceExhausted)
                    XCTAssertTrue(st.message.contains("--max-buffered-mb"), st.message)
                    refused += 1
                }
            }
            return refused
        }
        XCTAssertGreaterThanOrEqual(refused, 9, "at most about 2 MiB of 1 MiB partial frames fit")
        XCTAssertLessThanOrEqual(server.bufferedRequestBytes, budget)
        for s in sockets { s.close() }
        for _ in 0..<200 where server.bufferedRequestBytes > 0 { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(server.bufferedRequestBytes, 0, "given back when the connections closed")
        // Still serving.
        let c = try await TestServer.connect(server)
        guard case .healthResponse = try await c.call(.healthRequest) else { return XCTFail("no health") }
        await server.shutdown()
    }

    /// With keys configured, a frame without a valid key used to be buffered whole (16 MiB per
    /// connection) before the key was checked. It is refused from its first bytes, the rest
    /// is dropped as it arrives, and the connection stays usable.
    func testAFrameWithoutAValidKeyIsRefusedFromItsFirstBytes() async throws {
        let key = "sift-test-key-0123456789"
        let server = try await TestServer.start { $0.apiKeys = APIKeys([key]); $0.maxFrameBytes = 8 << 20 }
        let port = server.port!
        try await offPool {
            let s = try RawSocket(port: port)
            defer { s.close() }
            s.setReceiveTimeout(5)
            for metadata in [[], RawProto.metadata("authorization", Array("Bearer wrong-key-0123456789".utf8))] {
                let frame = RawProto.frame(RawProto.id(9) + metadata + RawProto.rerank(documents: 2_000_000))
                try s.send(Array(frame.prefix(200_000)))
                let st = Self.status(try s.readFrame())
                XCTAssertEqual(st?.code, .unauthenticated)
                XCTAssertLessThanOrEqual(server.bufferedRequestBytes, 0, "nothing of it counted against the budget")
                try s.send(Array(frame.dropFirst(200_000)))
            }
            // The connection goes on: the dropped frames did not desynchronise it.
            try s.sendFrame(Wire.Frame(requestID: 10, body: .healthRequest))
            guard case .healthResponse = try s.readFrame()?.body else { throw Wire.Status(.internal, "no health") }
            try s.sendFrame(Wire.Frame(requestID: 11, metadata: [.init("authorization", "Bearer " + key)],
                                       body: .rerankRequest(Wire.RerankRequest(query: "q", documents: ["d"]))))
            guard case .rerankResponse = try s.readFrame()?.body else { throw Wire.Status(.internal, "keyed call refused") }
        }
        await server.shutdown()
    }

    /// A 16 MB frame of 8 million empty documents used to be decoded whole (~700 MB of
    /// transient memory) before the document limit was checked. It is counted from the bytes
    /// and refused, and so is its JSON twin on the HTTP port: the process's peak memory barely
    /// moves.
    func testDocumentsAreCountedBeforeTheRequestIsDecoded() async throws {
        let server = try await TestServer.start({ $0.httpPort = 0; $0.maxFrameBytes = 20 << 20 }, engine: { $0.maxDocuments = 1000 })
        let port = server.port!
        let frame = RawProto.frame(RawProto.id(4) + RawProto.rerank(documents: 8_000_000))
        let json = #"{"query":"q","documents":["# + Array(repeating: #""""#, count: 1_000_000).joined(separator: ",") + "]}"
        let measured = PeakMemory.reset()
        let start = PeakMemory.highWater()
        try await offPool {
            let s = try RawSocket(port: port)
            defer { s.close() }
            s.setReceiveTimeout(120)  // counting 8 million fields is slow under ThreadSanitizer
            try s.send(frame)
            let f = try s.readFrame()
            XCTAssertEqual(f?.requestID, 4)
            XCTAssertEqual(Self.status(f)?.code, .invalidArgument)
            XCTAssertTrue(Self.status(f)?.message.contains("8000000 documents; at most 1000") ?? false, "\(String(describing: f))")
        }
        let r = try await HTTPAPITests.post(server.httpPort!, "/v2/rerank", json)
        XCTAssertEqual(r.status, 400)
        XCTAssertTrue(r.body.contains("1000000 documents; at most 1000"), r.body)
        if measured, let start, let end = PeakMemory.highWater() {
            // The frame (16 MB) and the body (3 MB) are buffered once each; nothing per document.
            print("peak memory grew by \((end - start) >> 20) MiB")
            XCTAssertLessThan(end - start, 150 << 20, "peak memory grew by \((end - start) >> 20) MiB")
        }
        await server.shutdown()
    }

    /// Invalid metadata used to be answered under request id 0.
    func testMetadataErrorsAreAnsweredUnderTheFramesID() async throws {
        let server = try await TestServer.start()
        let port = server.port!
        try await offPool {
            let s = try RawSocket(port: port)
            defer { s.close() }
            try s.send(RawProto.frame(RawProto.id(77) + RawProto.metadata("x", [0xff, 0xfe]) + RawProto.rerank(documents: 1)))
            let f = try s.readFrame()
            XCTAssertEqual(f?.requestID, 77)
            XCTAssertEqual(Self.status(f)?.code, .invalidArgument)
            XCTAssertTrue(Self.status(f)?.message.contains("metadata") ?? false, "\(String(describing: f))")
            // Still usable.
            try s.sendFrame(Wire.Frame(requestID: 78, body: .healthRequest))
            XCTAssertEqual(try s.readFrame()?.requestID, 78)
        }
        await server.shutdown()
    }

    /// Found by fuzzing: a Status frame whose code does not fit an Int32 trapped the decoder,
    /// so one frame from a client killed the server (and one from a server, the client).
    func testAnOutOfRangeEnumValueIsNotACrash() async throws {
        let server = try await TestServer.start()
        let port = server.port!
        try await offPool {
            let s = try RawSocket(port: port)
            defer { s.close() }
            for (field, value) in [(20, UInt64(0xFFFF_FFFF)), (18, UInt64(0x8000_0000))] {  // status.code, health_response.status
                try s.send(RawProto.frame(RawProto.id(6) + RawProto.field(field, [0x08] + RawProto.varint(value))))
                let f = try s.readFrame()
                XCTAssertEqual(f?.requestID, 6)
                XCTAssertEqual(Self.status(f)?.code, .unimplemented, "\(String(describing: f))")
            }
        }
        let decoded = try Wire.Frame.decode(RawProto.id(1) + RawProto.field(20, [0x08] + RawProto.varint(0xFFFF_FFFF)))
        XCTAssertEqual(decoded.body, .status(Wire.Status(.unknown, "")))
        await server.shutdown()
    }

    /// HTTP sent to the RPC port used to read as a 1.2 GB frame ("split the request").
    func testHTTPOnTheRPCPortIsToldWhereToGo() async throws {
        let server = try await TestServer.start()
        let reply = try TestServer.httpGet(port: server.port!, path: "/v2/rerank")
        XCTAssertTrue(reply.hasPrefix("HTTP/1.1 400"), reply)
        XCTAssertTrue(reply.contains("--http-port"), reply)
        await server.shutdown()
    }
}
