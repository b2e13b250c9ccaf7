import SiftBase
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Qwen3
import SiftEngine
@testable import SiftHub
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
        /// Serve this listing instead of the real one (a hostile hub).
        var listing: String?
        /// Serve this file with this many extra bytes after what the listing says.
        var oversend: (name: String, bytes: Int)?
        /// Send half of this file, then nothing more (the connection stays open).
        var stall: String?
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

    /// The git object id of a file, as the hub lists it for files outside LFS.
    static func gitBlobID(_ bytes: [UInt8]) -> String {
        Insecure.SHA1.hash(data: Array("blob \(bytes.count)\0".utf8) + bytes).map { String(format: "%02x", $0) }.joined()
    }

    func listing() -> [UInt8] {
        if let custom = behaviour.withLock({ $0.listing }) { return Array(custom.utf8) }
        let siblings = files.keys.sorted().map { name -> String in
            let bytes = files[name]!
            if name.hasSuffix(".safetensors") {
                let sha = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
                return #"{"rfilename":"\#(name)","size":\#(bytes.count),"blobId":"\#(Self.gitBlobID(bytes))","lfs":{"sha256":"\#(sha)","size":\#(bytes.count)}}"#
            }
            return #"{"rfilename":"\#(name)","size":\#(bytes.count),"blobId":"\#(Self.gitBlobID(bytes))"}"#
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
              cutAt: Int? = nil, stalls: Bool = false) {
        var headers = HTTPHeaders(extra)
        headers.add(name: "Content-Length", value: "\(body.count)")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if let cutAt {
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body.prefix(cutAt)))))).whenComplete { _ in
                context.close(promise: nil)
            }
            return
        }
        if stalls {
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body.prefix(body.count / 2))))), promise: nil)
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
        if let extra = behaviour.oversend, extra.name == name { bytes += [UInt8](repeating: 0x20, count: extra.bytes) }
        if let range = head.headers.first(name: "range"), range.hasPrefix("bytes="),
           let start = Int(range.dropFirst(6).split(separator: "-").first ?? "") {
            hub.rangeRequests.add(1, ordering: .relaxed)
            guard start < bytes.count else { return send(context, HTTPResponseStatus(statusCode: 416), []) }
            return send(context, .partialContent, Array(bytes[start...]),
                        headers: [("Content-Range", "bytes \(start)-\(bytes.count - 1)/\(bytes.count)")])
        }
        hub.downloads.add(1, ordering: .relaxed)
        if behaviour.stall == name { return send(context, .ok, bytes, stalls: true) }
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
        let fromHub = try RerankerModel.load(path: dir.path, precision: .fp32, threads: 2)
        let fromFolder = try RerankerModel.load(path: Fixtures.tinyModel.path, precision: .fp32, threads: 2)
        let docs = ["The capital of China is Beijing.", "Gravity."]
        let (hubEngine, folderEngine) = (SiftEngine(reranker: fromHub, options: .inProcess()), SiftEngine(reranker: fromFolder, options: .inProcess()))
        let fromHubScores = try await hubEngine.score(query: "capital?", documents: docs)
        let fromFolderScores = try await folderEngine.score(query: "capital?", documents: docs)
        XCTAssertEqual(fromHubScores, fromFolderScores)
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

    /// SIGTERM while `serve` downloads a model was ignored (still downloading 60 s later). It
    /// now stops the download at once, keeps the partial file for the next run, and exits 0.
    func testSIGTERMStopsADownloadPromptlyAndKeepsThePartialFile() async throws {
        let hub = try FakeHub(.init(stall: "model.safetensors"))
        try await hub.start()
        let home = try Fixtures.temporaryDirectory()
        let sift = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let executable = [sift, sift.deletingLastPathComponent()].map { $0.appendingPathComponent("sift") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }!
        let log = home.appendingPathComponent("serve.log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let p = Process()
        p.executableURL = executable
        p.arguments = ["serve", "--model", hub.repo, "--port", "0"]
        p.environment = ProcessInfo.processInfo.environment.merging(
            ["HF_ENDPOINT": hub.endpoint, "HF_HOME": home.path, "HF_HUB_OFFLINE": "0"]) { $1 }
        p.standardError = try FileHandle(forWritingTo: log)
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        func partials() -> [URL] {
            let blobs = home.appendingPathComponent("hub/models--Qwen--Tiny-Reranker/blobs")
            return ((try? FileManager.default.contentsOfDirectory(at: blobs, includingPropertiesForKeys: nil)) ?? [])
                .filter { $0.pathExtension == "incomplete" && (try? Data(contentsOf: $0).count) ?? 0 > 0 }
        }
        for _ in 0..<600 where partials().isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        XCTAssertFalse(partials().isEmpty, (try? String(contentsOf: log, encoding: .utf8)) ?? "")
        let signalled = ContinuousClock.now
        kill(p.processIdentifier, SIGTERM)
        while p.isRunning && ContinuousClock.now - signalled < .seconds(20) { try await Task.sleep(for: .milliseconds(50)) }
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        XCTAssertFalse(p.isRunning, "still downloading after SIGTERM:\n\(text)")
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, text)
        XCTAssertTrue(text.contains("shutdown requested while the models were loading"), text)
        XCTAssertFalse(partials().isEmpty, "the partial download was not kept for the next run")
        await hub.stop()
    }

    /// Without network a download was silent for 30 s before its (good) message; a hub whose
    /// name does not resolve is now refused at once, saying what was tried.
    func testAnUnresolvableHubFailsAtOnceSayingWhatItTried() async throws {
        let home = try Fixtures.temporaryDirectory()
        let lines = Locked<[String]>([])
        let resolver = HubModelResolver(environment: ["HF_HOME": home.path, "HF_ENDPOINT": "https://hub.sift-test.invalid"],
                                        progress: { line in lines.withLock { $0.append(line) } })
        do {
            _ = try await resolver.resolve("Qwen/Qwen3-Reranker-0.6B")
            XCTFail("resolved")
        } catch {
            XCTAssertTrue("\(error)".contains("hub.sift-test.invalid cannot be resolved"), "\(error)")
            XCTAssertTrue("\(error)".contains("hf download Qwen/Qwen3-Reranker-0.6B"), "\(error)")
        }
        XCTAssertTrue(lines.withLock { $0 }.contains { $0.contains("asking https://hub.sift-test.invalid") }, "\(lines.withLock { $0 })")
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
                XCTAssertTrue(message.contains("hf download Qwen/Qwen3-Reranker-0.6B"), message)
                XCTAssertTrue(message.contains("--model /path/to/a/model/folder"), message)
            }
        }
        // Paths are paths.
        let path = try await resolver(nil, home: empty).resolve(Fixtures.tinyModel.path)
        XCTAssertEqual(path.path, Fixtures.tinyModel.path)
    }

    // MARK: a hostile hub

    /// Every file below `root`, with its contents (to prove nothing outside the cache changed).
    func snapshotTree(_ root: URL) throws -> [String: Data] {
        var out: [String: Data] = [:]
        let fm = FileManager.default
        guard let walker = fm.enumerator(at: root, includingPropertiesForKeys: nil, options: []) else { return out }
        for case let url as URL in walker {
            if let target = try? fm.destinationOfSymbolicLink(atPath: url.path) {
                out[url.path] = Data(("link:" + target).utf8)
            } else if let data = fm.contents(atPath: url.path) {
                out[url.path] = data
            }
        }
        return out
    }

    func testHostileListingNamesNeverTouchFilesOutsideTheCache() async throws {
        let hub = try FakeHub()
        try await hub.start()
        let sandbox = try Fixtures.temporaryDirectory()
        let home = sandbox.appendingPathComponent("hf")
        // A victim outside the cache, and a real model folder beside it.
        let victim = sandbox.appendingPathComponent("victim.txt")
        try Data("precious".utf8).write(to: victim)
        let folder = sandbox.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: folder.appendingPathComponent("config.json"))
        try Data("{}".utf8).write(to: folder.appendingPathComponent("tokenizer.json"))
        let config = hub.files["config.json"]!
        let good = FakeHub.gitBlobID(config)
        let commit = hub.commit
        func listing(sha: String = commit, file: String = "config.json", blob: String? = nil, size: String? = nil, lfs: String = "") -> String {
            let blobField = #","blobId":"\#(blob ?? good)""#
            let sizeField = size.map { #","size":\#($0)"# } ?? ""
            return #"{"sha":"\#(sha)","siblings":[{"rfilename":"\#(file)"\#(sizeField)\#(blobField)\#(lfs)}]}"#
        }
        let size = "\(config.count)"
        let hostile: [(String, String)] = [
            (listing(blob: "../../victim.txt", size: size), "blob id"),
            (listing(blob: "../../../../../../../../../../\(victim.path)", size: size), "blob id"),
            (listing(sha: "../../model", size: size), "not a commit id"),
            (listing(sha: "0123", size: size), "not a commit id"),
            (listing(size: size, lfs: #","lfs":{"sha256":"../../victim.txt","size":\#(size)}"#), "not a SHA-256"),
            (listing(file: "config.json", size: nil), "no size"),
            (listing(size: "-5"), "no size"),
            (listing(size: "99999999999999"), "no size"),
            (#"{"sha":"\#(commit)","siblings":[{"rfilename":"..","size":1,"blobId":"\#(good)"}]}"#, "no config.json"),
            (#"{"sha":"\#(commit)","siblings":[{"rfilename":"../config.json","size":1,"blobId":"\#(good)"}]}"#, "no config.json"),
            (#"{"sha":"\#(commit)","siblings":[{"rfilename":".config.json","size":1,"blobId":"\#(good)"}]}"#, "no config.json"),
            (#"{"sha":"\#(commit)","siblings":[{"rfilename":"config.json","size":\#(size),"blobId":"\#(good)"},{"rfilename":"..model.safetensors","size":1,"blobId":"\#(good)"}]}"#, "not a plain file name"),
            ("[1,2,3]", "not the model listing"),
        ]
        let before = try snapshotTree(sandbox)
        for (body, expected) in hostile {
            hub.behaviour.withLock { $0.listing = body }
            do {
                _ = try await resolver(hub, home: home).resolve(hub.repo)
                XCTFail("hostile listing accepted: \(body)")
            } catch {
                XCTAssertTrue("\(error)".contains(expected), "\(body) → \(error)")
            }
            // Outside the cache, nothing changed; inside it, no ref names a traversal.
            let after = try snapshotTree(sandbox).filter { !$0.key.hasPrefix(home.path + "/") }
            XCTAssertEqual(after, before, "files outside the cache changed after \(body)")
            let ref = home.appendingPathComponent("hub/models--Qwen--Tiny-Reranker/refs/main")
            XCTAssertFalse(FileManager.default.fileExists(atPath: ref.path), "a ref was written for \(body)")
        }
        // A tampered ref in the cache is not followed either.
        let repoDir = home.appendingPathComponent("hub/models--Qwen--Tiny-Reranker")
        try FileManager.default.createDirectory(at: repoDir.appendingPathComponent("refs"), withIntermediateDirectories: true)
        try Data("../../../model".utf8).write(to: repoDir.appendingPathComponent("refs/main"))
        XCTAssertNil(resolver(nil, home: home).cachedSnapshot(repoDir))
        // The honest listing still works afterwards.
        hub.behaviour.withLock { $0.listing = nil }
        let dir = try await resolver(hub, home: home).resolve(hub.repo)
        XCTAssertTrue(dir.path.hasPrefix(home.path + "/"))
        XCTAssertEqual(try String(contentsOf: victim, encoding: .utf8), "precious")
        await hub.stop()
    }

    func testDownloadStopsAtTheListedSize() async throws {
        let hub = try FakeHub(.init(oversend: ("config.json", 8 << 20)))
        try await hub.start()
        let home = try Fixtures.temporaryDirectory()
        do {
            _ = try await resolver(hub, home: home).resolve(hub.repo)
            XCTFail("a file longer than listed was accepted")
        } catch {
            XCTAssertTrue("\(error)".contains("more than the"), "\(error)")
        }
        // Nothing over the listed size stays on disk.
        let blobs = home.appendingPathComponent("hub/models--Qwen--Tiny-Reranker/blobs")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: blobs.path)) ?? [] {
            let size = try FileManager.default.attributesOfItem(atPath: blobs.appendingPathComponent(name).path)[.size] as! Int
            XCTAssertLessThanOrEqual(size, hub.files.values.map(\.count).max()!, name)
        }
        hub.behaviour.withLock { $0.oversend = nil }
        _ = try await resolver(hub, home: home).resolve(hub.repo)
        await hub.stop()
    }
}
