import SiftBase
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Qwen3
import SiftEngine
import SiftHub
import SiftTestSupport
import Synchronization
import XCTest

/// A stand-in for the Hugging Face hub on 127.0.0.1, serving the tiny fixture model in the
/// hub's URL layout (`/api/models/{repo}/revision/{rev}`, `/{repo}/resolve/{commit}/{file}`).
final class FakeHub: @unchecked Sendable {
    struct Behaviour {
        /// The first download of this file stops halfway (the connection drops).
        var interruptFirst: String?
        /// Serve this file with one byte changed (same size).
        var corrupt: String?
        var requiredToken: String?
    }

    let repo = "Qwen/Tiny-Reranker"
    let commit = "0123456789abcdef0123456789abcdef01234567"
    let files: [String: [UInt8]]
    let behaviour: Locked<Behaviour>
    let rangeRequests = Atomic<Int>(0)
    let downloads = Atomic<Int>(0)
    private var channel: (any Channel)?

    init(_ behaviour: Behaviour = Behaviour()) throws {
        var files: [String: [UInt8]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: Fixtures.tinyModel.path) {
            files[name] = Array(try Data(contentsOf: Fixtures.tinyModel.appendingPathComponent(name)))
        }
        files["README.md"] = Array("# not needed by a reranker\n".utf8)
        self.files = files
        self.behaviour = Locked(behaviour)
    }

    var port: Int { channel!.localAddress!.port! }
    var endpoint: String { "http://127.0.0.1:\(port)" }

    func start() async throws {
        let hub = self
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FakeHubHandler(hub: hub))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func stop() async { try? await channel?.close() }

    func listing() -> [UInt8] {
        let siblings = files.keys.sorted().map { name -> String in
            let bytes = files[name]!
            if name.hasSuffix(".safetensors") {
                let sha = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
                return #"{"rfilename":"\#(name)","size":\#(bytes.count),"blobId":"lfs-\#(name)","lfs":{"sha256":"\#(sha)","size":\#(bytes.count)}}"#
            }
            return #"{"rfilename":"\#(name)","size":\#(bytes.count),"blobId":"git-\#(name)"}"#
        }
        return Array(#"{"id":"\#(repo)","sha":"\#(commit)","siblings":[\#(siblings.joined(separator: ","))]}"#.utf8)
    }
}

final class FakeHubHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let hub: FakeHub
    var head: HTTPRequestHead?

    init(hub: FakeHub) { self.hub = hub }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end: if let head { respond(context, head) }
        }
    }

    func send(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: [UInt8], headers extra: [(String, String)] = [],
              cutAt: Int? = nil) {
        var headers = HTTPHeaders(extra)
        headers.add(name: "Content-Length", value: "\(body.count)")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if let cutAt {
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body.prefix(cutAt)))))).whenComplete { _ in
                context.close(promise: nil)
            }
            return
        }
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func respond(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let behaviour = hub.behaviour.withLock { $0 }
        if let token = behaviour.requiredToken, head.headers.first(name: "authorization") != "Bearer \(token)" {
            return send(context, .unauthorized, Array("unauthorized".utf8))
        }
        let path = String(head.uri.split(separator: "?").first ?? "")
        if path == "/api/models/\(hub.repo)/revision/main" {
            return send(context, .ok, hub.listing(), headers: [("Content-Type", "application/json")])
        }
        let prefix = "/\(hub.repo)/resolve/\(hub.commit)/"
        guard path.hasPrefix(prefix), var bytes = hub.files[String(path.dropFirst(prefix.count))] else {
            return send(context, .notFound, Array("not found".utf8))
        }
        let name = String(path.dropFirst(prefix.count))
        if behaviour.corrupt == name { bytes[bytes.count / 2] ^= 0xff }
        if let range = head.headers.first(name: "range"), range.hasPrefix("bytes="),
           let start = Int(range.dropFirst(6).split(separator: "-").first ?? "") {
            hub.rangeRequests.add(1, ordering: .relaxed)
            guard start < bytes.count else { return send(context, HTTPResponseStatus(statusCode: 416), []) }
            return send(context, .partialContent, Array(bytes[start...]),
                        headers: [("Content-Range", "bytes \(start)-\(bytes.count - 1)/\(bytes.count)")])
        }
        hub.downloads.add(1, ordering: .relaxed)
        if behaviour.interruptFirst == name {
            hub.behaviour.withLock { $0.interruptFirst = nil }
            return send(context, .ok, bytes, cutAt: bytes.count / 2)
        }
        send(context, .ok, bytes)
    }
}

final class HubTests: XCTestCase {
    func resolver(_ hub: FakeHub?, home: URL, extra: [String: String] = [:]) -> HubModelResolver {
        var env = ["HF_HOME": home.path, "HOME": home.path]
        if let hub { env["HF_ENDPOINT"] = hub.endpoint } else { env["HF_ENDPOINT"] = "http://127.0.0.1:1" }
        env.merge(extra) { $1 }
        return HubModelResolver(environment: env)
    }

    func testDownloadsIntoTheCacheLayoutAndScoresLikeTheFolder() async throws {
        let hub = try FakeHub()
        try await hub.start()
        let home = try Fixtures.temporaryDirectory()
        let dir = try await resolver(hub, home: home).resolve(hub.repo)
        let repoDir = home.appendingPathComponent("hub/models--Qwen--Tiny-Reranker")
        XCTAssertEqual(dir.path, repoDir.appendingPathComponent("snapshots/\(hub.commit)").path)
        XCTAssertEqual(try String(contentsOf: repoDir.appendingPathComponent("refs/main"), encoding: .utf8), hub.commit)
        // Snapshot entries are symlinks into blobs/; the safetensors blob is named by its SHA-256.
        let link = try FileManager.default.destinationOfSymbolicLink(atPath: dir.appendingPathComponent("model.safetensors").path)
        XCTAssertTrue(link.hasPrefix("../../blobs/") && link.count == "../../blobs/".count + 64, link)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("README.md").path))
        // Loads and scores exactly as the fixture folder does.
        let fromHub = try Reranker.load(path: dir.path, precision: .fp32, threads: 2)
        let fromFolder = try Reranker.load(path: Fixtures.tinyModel.path, precision: .fp32, threads: 2)
        let docs = ["The capital of China is Beijing.", "Gravity."]
        XCTAssertEqual(try fromHub.score(query: "capital?", instruction: nil, documents: docs),
                       try fromFolder.score(query: "capital?", instruction: nil, documents: docs))
        // Cached: found again with the hub gone.
        await hub.stop()
        let again = try await resolver(nil, home: home).resolve(hub.repo)
        XCTAssertEqual(again.path, dir.path)
    }

    func testInterruptedDownloadResumes() async throws {
        let hub = try FakeHub(.init(interruptFirst: "model.safetensors"))
        try await hub.start()
        let home = try Fixtures.temporaryDirectory()
        do {
            _ = try await resolver(hub, home: home).resolve(hub.repo)
            XCTFail("the interrupted download should fail")
        } catch {
            XCTAssertTrue("\(error)".contains("run again to resume"), "\(error)")
        }
        let dir = try await resolver(hub, home: home).resolve(hub.repo)
        XCTAssertEqual(hub.rangeRequests.load(ordering: .relaxed), 1, "the second attempt asked only for the rest")
        let bytes = try Data(contentsOf: dir.appendingPathComponent("model.safetensors"))
        XCTAssertEqual(Array(bytes), hub.files["model.safetensors"])
        await hub.stop()
    }

    func testCorruptDownloadIsRefused() async throws {
        let hub = try FakeHub(.init(corrupt: "model.safetensors"))
        try await hub.start()
        let home = try Fixtures.temporaryDirectory()
        do {
            _ = try await resolver(hub, home: home).resolve(hub.repo)
            XCTFail("a corrupt file was accepted")
        } catch {
            XCTAssertTrue("\(error)".contains("does not match the hub's"), "\(error)")
        }
        hub.behaviour.withLock { $0.corrupt = nil }
        let dir = try await resolver(hub, home: home).resolve(hub.repo)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors").path))
        await hub.stop()
    }

    func testTokenAndClearMessages() async throws {
        let hub = try FakeHub(.init(requiredToken: "hf_secret"))
        try await hub.start()
        let home = try Fixtures.temporaryDirectory()
        do {
            _ = try await resolver(hub, home: home).resolve(hub.repo)
            XCTFail("no token, yet downloaded")
        } catch {
            XCTAssertTrue("\(error)".contains("HF_TOKEN"), "\(error)")
        }
        _ = try await resolver(hub, home: home, extra: ["HF_TOKEN": "hf_secret"]).resolve(hub.repo)
        do {
            _ = try await resolver(hub, home: home, extra: ["HF_TOKEN": "hf_secret"]).resolve("Qwen/No-Such-Model")
            XCTFail("unknown model resolved")
        } catch {
            XCTAssertTrue("\(error)".contains("no model Qwen/No-Such-Model"), "\(error)")
        }
        await hub.stop()
        // Offline, not cached: what to download and how.
        let empty = try Fixtures.temporaryDirectory()
        for extra in [[:], ["HF_HUB_OFFLINE": "1"]] {
            do {
                _ = try await resolver(nil, home: empty, extra: extra).resolve("Qwen/Qwen3-Reranker-0.6B")
                XCTFail("resolved without cache or hub")
            } catch {
                let message = "\(error)"
                XCTAssertTrue(message.contains("huggingface-cli download Qwen/Qwen3-Reranker-0.6B"), message)
                XCTAssertTrue(message.contains("--model /path/to/a/model/folder"), message)
            }
        }
        // Paths are paths.
        let path = try await resolver(nil, home: empty).resolve(Fixtures.tinyModel.path)
        XCTAssertEqual(path.path, Fixtures.tinyModel.path)
    }
}
