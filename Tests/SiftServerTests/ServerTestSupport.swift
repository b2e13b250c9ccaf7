import Foundation
import Logging
import NIOCore
import NIOPosix
import Qwen3
import SiftClient
import SiftEngine
import SiftProtocol
import SiftServer
import SiftTestSupport
import XCTest

/// A real server on 127.0.0.1 (any free port) around the tiny fixture model.
enum TestServer {
    static let tokenizer = try! Tokenizer.load(directory: Fixtures.tinyModel)
    static let reranker: RerankerModel = {
        let checkpoint = try! Qwen3Checkpoint(directory: Fixtures.tinyModel)
        let model = try! Qwen3Model(checkpoint: checkpoint, yesID: 9693, noID: 2152, precision: .int8, threads: 2,
                                    calibrationTokens: RerankerModel.calibrationTokens(tokenizer))
        return RerankerModel(tokenizer: tokenizer, model: model, yesID: 9693, noID: 2152)
    }()

    /// `aliases`: other names of the model (as `sift serve --model-alias`).
    static func start(_ configure: (inout ServerOptions) -> Void = { _ in },
                      engine configureEngine: (inout EngineOptions) -> Void = { _ in },
                      aliases: [String] = [], logger custom: Logger? = nil) async throws -> SiftServer {
        var options = ServerOptions()
        options.port = 0
        options.metricsPort = 0
        options.modelID = "tiny-qwen3"
        configure(&options)
        var engineOptions = EngineOptions()
        configureEngine(&engineOptions)
        var logger = Logger(label: "sift-test")
        logger.logLevel = ProcessInfo.processInfo.environment["SIFT_TEST_LOG"] != nil ? .debug : .critical
        let models = try ServedModels([.init(name: options.modelID, aliases: aliases,
                                             service: SiftEngine(reranker: reranker, options: engineOptions))])
        let server = SiftServer(models: models, options: options, logger: custom ?? logger)
        try await server.start()
        return server
    }

    static func connect(_ server: SiftServer) async throws -> SiftConnection {
        try await SiftConnection.connect(host: "127.0.0.1", port: server.port!)
    }

    /// GET http://127.0.0.1:port/path with a blocking socket (small, test-only).
    static func httpGet(port: Int, path: String) throws -> String {
        let socket = try RawSocket(port: port)
        defer { socket.close() }
        try socket.send(Array("GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
        return String(decoding: socket.readAll(), as: UTF8.self)
    }

    /// The value of a Prometheus sample line, e.g. `sift_engine_active_requests`.
    static func metric(_ text: String, _ name: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") || line.hasPrefix(name + "{") {
            if let v = line.split(separator: " ").last.flatMap({ Double($0) }) { return v }
        }
        return nil
    }

    static let documents = ["The capital of China is Beijing.", "Gravity is a force by which a planet draws objects toward its center.",
                            "", "Paris is the capital of France.", String(repeating: "A long document about many things. ", count: 40)]
    static func longDocuments(_ n: Int, words: Int = 300) -> [String] {
        (0..<n).map { i in (0..<words).map { "word\($0 % 50 + i)" }.joined(separator: " ") }
    }
}

/// A plain blocking TCP socket, to send bytes no client library would.
final class RawSocket: @unchecked Sendable {
    let fd: Int32

    /// `receiveBuffer`: the socket's receive buffer in bytes (set before connecting, so the
    /// window it advertises stays small: a peer that never reads fills it quickly).
    init(port: Int, receiveBuffer: Int? = nil) throws {
        fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer.map(Int32.init) {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw Wire.Status(.unavailable, "connect failed: \(errno)") }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Wire.Status(.unavailable, "send failed: \(errno)") }
            sent += n
        }
    }

    func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until the peer closes (or the 20 s timeout).
    func readAll() -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out += chunk[0..<n]
        }
        return out
    }

    /// Reads one frame (nil: the peer closed first).
    func readFrame() throws -> Wire.Frame? {
        func exactly(_ n: Int) -> [UInt8]? {
            var out: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: n)
            while out.count < n {
                let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, n - out.count, 0) }
                if got <= 0 { return nil }
                out += chunk[0..<got]
            }
            return out
        }
        guard let header = exactly(4) else { return nil }
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        guard let body = exactly(length) else { return nil }
        return try Wire.Frame.decode(body)
    }

    func sendFrame(_ frame: Wire.Frame) throws {
        var buffer = ByteBuffer()
        Framing.write(frame, to: &buffer)
        try send(Array(buffer.readableBytesView))
    }

    func close() { Glibc.close(fd) }
}

/// Runs blocking socket code on a Dispatch thread, not on the cooperative pool the server's
/// calls need.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
    }
}
