import AsyncHTTPClient
import Crypto
import Foundation
import SiftBase
import NIOCore
import NIOHTTP1

/// Resolves `--model`: a path is used as is; a Hugging Face name (`Qwen/Qwen3-Reranker-0.6B`)
/// is found in the Hugging Face cache users already have, or downloaded from the hub into
/// that same cache layout (resumable, size- and SHA-256-checked), as `huggingface_hub` does:
///
///     $HF_HUB_CACHE (or $HF_HOME/hub, or ~/.cache/huggingface/hub)/
///       models--Qwen--Qwen3-Reranker-0.6B/
///         refs/main                      the commit the revision points at
///         blobs/<sha256 or git oid>      file contents
///         snapshots/<commit>/<file>      symlinks into blobs
public struct HubModelResolver: Sendable {
    public var cacheDirectory: URL
    /// `HF_ENDPOINT`, default https://huggingface.co.
    public var endpoint: String
    /// `HF_TOKEN` (or the token file `huggingface-cli login` writes).
    public var token: String?
    public var revision = "main"
    /// `HF_HUB_OFFLINE=1`: never touch the network.
    public var offline: Bool
    /// Progress lines or a bar (on a terminal) go here.
    public var progress: @Sendable (String) -> Void

    public init(environment: [String: String] = ProcessInfo.processInfo.environment,
                progress: @escaping @Sendable (String) -> Void = { _ in }) {
        let home = environment["HOME"].map { URL(fileURLWithPath: $0) } ?? FileManager.default.homeDirectoryForCurrentUser
        let hfHome = environment["HF_HOME"].map { URL(fileURLWithPath: $0) }
            ?? home.appendingPathComponent(".cache/huggingface")
        cacheDirectory = environment["HF_HUB_CACHE"].map { URL(fileURLWithPath: $0) } ?? hfHome.appendingPathComponent("hub")
        endpoint = (environment["HF_ENDPOINT"] ?? "https://huggingface.co").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        let tokenFile = environment["HF_TOKEN_PATH"].map { URL(fileURLWithPath: $0) } ?? hfHome.appendingPathComponent("token")
        token = environment["HF_TOKEN"] ?? (try? String(contentsOf: tokenFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        if token?.isEmpty == true { token = nil }
        offline = ["1", "true", "yes"].contains((environment["HF_HUB_OFFLINE"] ?? "").lowercased())
        self.progress = progress
    }

    /// True for "org/name" (what is not an existing path).
    public static func isRepoName(_ spec: String) -> Bool {
        let parts = spec.split(separator: "/", omittingEmptySubsequences: false)
        return parts.count == 2 && parts.allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
            && !spec.hasPrefix(".") && !spec.hasSuffix(".sift")
    }

    /// A local folder or file holding the model.
    public func resolve(_ spec: String) async throws -> URL {
        if FileManager.default.fileExists(atPath: spec) || !Self.isRepoName(spec) {
            return URL(fileURLWithPath: spec)
        }
        let repo = spec
        let repoDir = cacheDirectory.appendingPathComponent("models--" + repo.replacingOccurrences(of: "/", with: "--"))
        if let cached = cachedSnapshot(repoDir) { return cached }
        if offline {
            throw HubError(notCached(repo, repoDir, reason: "HF_HUB_OFFLINE is set"))
        }
        return try await download(repo, into: repoDir)
    }

    // MARK: cache

    /// The snapshot `refs/<revision>` names, if every file the model needs is there. A ref that
    /// is not a commit id (a damaged or tampered cache) counts as not cached.
    func cachedSnapshot(_ repoDir: URL) -> URL? {
        guard HubNames.isRefName(revision) else { return nil }
        let ref = repoDir.appendingPathComponent("refs").appendingPathComponent(revision)
        guard let commit = try? String(contentsOf: ref, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
              HubNames.isCommit(commit) else { return nil }
        let snapshot = repoDir.appendingPathComponent("snapshots").appendingPathComponent(commit)
        return Self.isComplete(snapshot) ? snapshot : nil
    }

    static func isComplete(_ dir: URL) -> Bool {
        let fm = FileManager.default
        func has(_ name: String) -> Bool { fm.fileExists(atPath: dir.appendingPathComponent(name).path) }
        guard has("config.json"), has("tokenizer.json") || (has("vocab.json") && has("merges.txt")) else { return false }
        if has("model.safetensors") { return true }
        guard let data = try? Data(contentsOf: dir.appendingPathComponent("model.safetensors.index.json")),
              let index = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let map = index["weight_map"] as? [String: String] else { return false }
        return Set(map.values).allSatisfy { HubNames.isFileName($0) && has($0) }
    }

    func notCached(_ repo: String, _ repoDir: URL, reason: String) -> String {
        """
        model \(repo) is not in the Hugging Face cache (\(cacheDirectory.path)) and cannot be downloaded: \(reason). \
        On a machine that reaches the hub run `hf download \(repo)` (huggingface_hub's CLI; `huggingface-cli download` \
        in releases before 0.34) or `sift download \(repo)`, and copy \
        \(repoDir.path) here; or set HF_ENDPOINT to a mirror; or pass --model /path/to/a/model/folder
        """
    }

    // MARK: download

    struct Sibling: Decodable {
        struct LFS: Decodable { let sha256: String; let size: Int }
        let rfilename: String
        let size: Int?
        let blobId: String?
        let lfs: LFS?
    }

    struct ModelInfo: Decodable {
        let sha: String
        let siblings: [Sibling]
    }

    /// Files a reranker needs (the rest of the repository — README, images — is skipped).
    static func wanted(_ name: String) -> Bool {
        if name.contains("/") { return false }
        return name.hasSuffix(".safetensors") || [
            "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
            "merges.txt", "special_tokens_map.json", "added_tokens.json", "model.safetensors.index.json",
        ].contains(name)
    }

    /// One file to download, every name in it checked (`validatedFiles`).
    struct PlannedFile {
        let name: String
        /// The blob's file name: the LFS SHA-256, or the git object id.
        let blob: String
        let size: Int
        let sha256: String?
    }

    /// Largest file accepted from a listing (the 8B's biggest shard is ~5 GB).
    static let maxFileBytes = 64 << 30

    /// The files of a listing Sift downloads. Everything in the listing comes from the network,
    /// so each name becomes a path component only after it is checked to be of its expected form:
    /// the commit and blob ids hex of the right length, file names plain names.
    static func validatedFiles(_ info: ModelInfo, repo: String) throws -> [PlannedFile] {
        guard HubNames.isCommit(info.sha) else {
            throw HubError("the hub's listing for \(repo) names commit \"\(info.sha.prefix(80))\", which is not a commit id (40 hex digits): refusing it")
        }
        var files: [PlannedFile] = []
        for sibling in info.siblings where wanted(sibling.rfilename) {
            let name = sibling.rfilename
            guard HubNames.isFileName(name) else {
                throw HubError("the hub's listing for \(repo) has a file named \"\(name.prefix(80))\", which is not a plain file name: refusing it")
            }
            let blob: String
            let sha256: String?
            if let lfs = sibling.lfs {
                guard HubNames.isSHA256(lfs.sha256) else {
                    throw HubError("the hub's listing gives \(name) the LFS hash \"\(lfs.sha256.prefix(80))\", which is not a SHA-256 (64 hex digits): refusing it")
                }
                blob = lfs.sha256.lowercased()
                sha256 = blob
            } else if let id = sibling.blobId, HubNames.isObjectID(id) {
                blob = id.lowercased()
                sha256 = nil
            } else {
                throw HubError("the hub's listing gives \(name) no valid blob id (\"\((sibling.blobId ?? "none").prefix(80))\"): refusing it")
            }
            guard let size = sibling.lfs?.size ?? sibling.size, (0...maxFileBytes).contains(size) else {
                throw HubError("the hub's listing gives \(name) no size, or one outside 0...\(maxFileBytes) bytes: refusing an unbounded download")
            }
            files.append(PlannedFile(name: name, blob: blob, size: size, sha256: sha256))
        }
        guard files.contains(where: { $0.name == "config.json" }) else {
            throw HubError("\(repo) has no config.json: not a Transformers model")
        }
        return files
    }

    /// Bytes free on the file system holding `url` (nil if unknown).
    static func freeBytes(at url: URL) -> Int? {
        var info = statvfs()
        guard statvfs(url.path, &info) == 0 else { return nil }
        let (bytes, overflow) = Int(info.f_bavail).multipliedReportingOverflow(by: Int(info.f_frsize))
        return overflow ? nil : bytes
    }

    func download(_ repo: String, into repoDir: URL) async throws -> URL {
        guard HubNames.isRefName(revision) else {
            throw HubError("revision \"\(revision)\" is not a branch, tag or commit name")
        }
        // A stalled transfer (no bytes for a minute) fails instead of hanging; the next run resumes.
        // A refused connection fails at once (the next run resumes), not after 30 s of retries.
        var configuration = HTTPClient.Configuration(redirectConfiguration: .follow(max: 10, allowCycles: false),
                                                     timeout: .init(connect: .seconds(30), read: .seconds(60)))
        configuration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            let url = try await downloadWith(client, repo, repoDir)
            try await client.shutdown()
            return url
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private func request(_ url: String) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "User-Agent", value: "sift/\(SiftVersion.current) (+hf-hub)")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        return request
    }

    private func downloadWith(_ client: HTTPClient, _ repo: String, _ repoDir: URL) async throws -> URL {
        let infoURL = "\(endpoint)/api/models/\(repo)/revision/\(revision)?blobs=true"
        progress("\(repo) is not in the cache; asking \(endpoint) for it")
        // Without network the name of the hub does not resolve: say so at once, not after a
        // connection timeout.
        if let failure = await Self.unresolvable(endpoint) {
            throw HubError(notCached(repo, repoDir, reason: failure))
        }
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request(infoURL), timeout: .seconds(30))
        } catch {
            throw HubError(notCached(repo, repoDir, reason: "the hub at \(endpoint) cannot be reached (\(error))"))
        }
        switch response.status.code {
        case 200: break
        case 401, 403:
            throw HubError("the hub refused access to \(repo) (HTTP \(response.status.code)): it may be gated or private; set HF_TOKEN to a token that can read it")
        case 404:
            throw HubError("no model \(repo) (revision \(revision)) on the hub at \(endpoint): check the name")
        default:
            throw HubError("the hub at \(endpoint) answered HTTP \(response.status.code) for \(repo); retry later")
        }
        let body = try await response.body.collect(upTo: 16 << 20)
        let info: ModelInfo
        do {
            info = try JSONDecoder().decode(ModelInfo.self, from: Data(body.readableBytesView))
        } catch {
            throw HubError("the hub's answer for \(repo) is not the model listing expected: \(error)")
        }
        let files = try Self.validatedFiles(info, repo: repo)
        let fm = FileManager.default
        let blobs = repoDir.appendingPathComponent("blobs")
        let snapshot = repoDir.appendingPathComponent("snapshots").appendingPathComponent(info.sha)
        try fm.createDirectory(at: blobs, withIntermediateDirectories: true)
        try fm.createDirectory(at: snapshot, withIntermediateDirectories: true)
        let total = files.reduce(0) { $0 + $1.size }
        if let free = Self.freeBytes(at: blobs), total > free {
            throw HubError("\(repo) needs \(Self.megabytes(total)) and \(cacheDirectory.path) has \(Self.megabytes(free)) free: free space or set HF_HUB_CACHE to a larger disk")
        }
        progress("downloading \(repo) @ \(info.sha.prefix(10)) from \(endpoint): \(files.count) files, \(Self.megabytes(total)) into \(repoDir.path)")
        for file in files {
            let blob = blobs.appendingPathComponent(file.blob)
            if !(fm.fileExists(atPath: blob.path) && Self.size(of: blob) == file.size) {
                try await fetch(client, "\(endpoint)/\(repo)/resolve/\(info.sha)/\(file.name)", to: blob,
                                name: file.name, size: file.size, sha256: file.sha256)
            }
            let link = snapshot.appendingPathComponent(file.name)
            try? fm.removeItem(at: link)
            try fm.createSymbolicLink(atPath: link.path, withDestinationPath: "../../blobs/\(file.blob)")
        }
        let refs = repoDir.appendingPathComponent("refs")
        try fm.createDirectory(at: refs, withIntermediateDirectories: true)
        try Data(info.sha.utf8).write(to: refs.appendingPathComponent(revision))
        guard Self.isComplete(snapshot) else {
            throw HubError("\(repo) @ \(info.sha) lacks files a reranker needs (config.json, tokenizer, safetensors weights)")
        }
        progress("downloaded \(repo) to \(snapshot.path)")
        return snapshot
    }

    /// Downloads into `<blob>.incomplete`, resuming what an earlier attempt left, then checks
    /// size and SHA-256 before moving it into place.
    private func fetch(_ client: HTTPClient, _ url: String, to blob: URL, name: String, size: Int, sha256: String?) async throws {
        let partial = blob.appendingPathExtension("incomplete")
        let fm = FileManager.default
        if !fm.fileExists(atPath: partial.path) { fm.createFile(atPath: partial.path, contents: nil) }
        var have = Self.size(of: partial) ?? 0
        if have > size { try Data().write(to: partial); have = 0 }
        var request = request(url)
        if have > 0 { request.headers.add(name: "Range", value: "bytes=\(have)-") }
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: .hours(6))
        } catch {
            throw HubError("downloading \(name) failed: \(error); run again to resume (\(Self.megabytes(have)) kept)")
        }
        let handle = try FileHandle(forWritingTo: partial)
        defer { try? handle.close() }
        switch response.status.code {
        case 206:
            try handle.seekToEnd()
            if have > 0 { progress("resuming \(name) at \(Self.megabytes(have))") }
        case 200:
            try handle.truncate(atOffset: 0)
            have = 0
        case 416 where size == have:
            break  // already complete
        case 401, 403:
            throw HubError("the hub refused \(name) (HTTP \(response.status.code)): set HF_TOKEN to a token that can read the model")
        default:
            throw HubError("downloading \(name): the hub answered HTTP \(response.status.code); run again to retry")
        }
        var written = have
        var lastReport = ContinuousClock.now
        do {
            if response.status.code != 416 {
                for try await chunk in response.body {
                    try Task.checkCancellation()
                    // Never more than the listing promised: a hub that keeps sending is cut off.
                    guard written + chunk.readableBytes <= size else {
                        throw HubError("\(name): the hub sent more than the \(size) bytes it lists; refusing the file")
                    }
                    try handle.write(contentsOf: Data(chunk.readableBytesView))
                    written += chunk.readableBytes
                    if ContinuousClock.now - lastReport > .seconds(1) {
                        lastReport = ContinuousClock.now
                        progress(Self.bar(name, written, size))
                    }
                }
            }
        } catch let error as HubError {
            try? fm.removeItem(at: partial)
            throw error
        } catch {
            throw HubError("downloading \(name) was interrupted at \(Self.megabytes(written)): \(error); run again to resume")
        }
        try handle.synchronize()
        if written != size {
            throw HubError("\(name): got \(written) bytes, the hub lists \(size); run again to resume")
        }
        if let sha256 {
            let digest = try Self.sha256(of: partial)
            guard digest == sha256.lowercased() else {
                try? fm.removeItem(at: partial)
                throw HubError("\(name): SHA-256 \(digest) does not match the hub's \(sha256); the damaged file was removed, run again")
            }
        }
        try? fm.removeItem(at: blob)
        try fm.moveItem(at: partial, to: blob)
        progress(Self.bar(name, written, size))
    }

    /// Why `endpoint`'s host cannot be looked up (nil: it can, or it is an address). The lookup
    /// runs off the caller's thread and is given 10 s.
    static func unresolvable(_ endpoint: String) async -> String? {
        guard let host = URLComponents(string: endpoint)?.host, !host.isEmpty else { return "HF_ENDPOINT \(endpoint) is not a URL" }
        let result = Locked<String??>(nil)
        let lookup = Thread {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var info: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(host, nil, &hints, &info)
            if info != nil { freeaddrinfo(info) }
            result.withLock { $0 = rc == 0 ? .some(nil) : .some("the hub's host \(host) cannot be resolved (\(String(cString: gai_strerror(rc))); no network or DNS here)") }
        }
        lookup.start()
        for _ in 0..<200 {
            if let answer = result.withLock({ $0 }) { return answer }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return "the hub's host \(host) did not resolve within 10 s (no network or DNS here)"
    }

    static func sha256(of file: URL) throws -> String {
        let handle = try FileHandle(forReadingFrom: file)
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 8 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    static func size(of url: URL) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? NSNumber)?.intValue
    }

    static func megabytes(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }

    static func bar(_ name: String, _ done: Int, _ total: Int?) -> String {
        guard let total, total > 0 else { return "\(name): \(megabytes(done))" }
        let fraction = min(1, Double(done) / Double(total))
        let filled = Int(fraction * 30)
        return "\(name) [\(String(repeating: "#", count: filled))\(String(repeating: ".", count: 30 - filled))] \(Int(fraction * 100))% of \(megabytes(total))"
    }
}

/// The forms names from the hub must have before they touch the file system.
enum HubNames {
    static func isHex(_ s: String, count: Int) -> Bool {
        s.utf8.count == count && s.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) || (65...70).contains($0) }
    }

    /// A git commit id.
    static func isCommit(_ s: String) -> Bool { isHex(s, count: 40) }
    /// A git object id (SHA-1, or SHA-256 in repositories that use it).
    static func isObjectID(_ s: String) -> Bool { isHex(s, count: 40) || isHex(s, count: 64) }
    static func isSHA256(_ s: String) -> Bool { isHex(s, count: 64) }

    /// A file directly inside a folder: no separators, no `.`/`..`, no leading dot, no control
    /// characters, at most 255 bytes.
    static func isFileName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 255 && !s.hasPrefix(".")
            && !s.unicodeScalars.contains { $0 == "/" || $0 == "\\" || $0.value < 0x20 || $0.value == 0x7f }
    }

    /// A branch or tag name used as `refs/<name>`: a plain name of letters, digits, `-`, `_`, `.`.
    static func isRefName(_ s: String) -> Bool {
        isFileName(s) && s.utf8.allSatisfy { c in
            (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c) || c == 45 || c == 95 || c == 46
        }
    }
}

public struct HubError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
