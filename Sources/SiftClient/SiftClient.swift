import SiftBase
import NIOCore
import NIOPosix
import NIOSSL
import SiftProtocol
import Synchronization

/// A Sift server address.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// "host:port" (IPv6 as "[::1]:7700").
    public init(_ text: String) throws {
        let s = Substring(text)
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (1...65535).contains(port) else {
            throw Wire.Status(.invalidArgument, "endpoint \"\(text)\" is not host:port")
        }
        var host = s[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { throw Wire.Status(.invalidArgument, "endpoint \"\(text)\" has no host") }
        self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// How calls are spread over several endpoints.
public enum Routing: String, Sendable, CaseIterable {
    /// Consistent hashing of instruction + query: calls for the same query go to the same
    /// replica, whose prefix cache then already holds it. Falls over to the next replica on the ring.
    case affinity
    /// Each call to the next endpoint in turn.
    case roundRobin = "round-robin"
}

/// The Swift client for Sift servers: typed async calls, one multiplexed connection per
/// endpoint (opened on first use, reopened after failures), retries with exponential backoff on
/// UNAVAILABLE, per-call deadlines, cancellation (cancel the task), API key, affinity routing.
///
///     let client = try SiftClient(endpoints: ["127.0.0.1:7700"])
///     let response = try await client.rerank(query: "capital of France?", documents: docs, topN: 3)
public final class SiftClient: Sendable {
    public struct Options: Sendable {
        public var apiKey: String?
        public var routing: Routing = .affinity
        /// Attempts per call on UNAVAILABLE (connection refused or lost, server loading or draining).
        public var maxAttempts = 5
        public var initialBackoff: Duration = .milliseconds(50)
        public var maxBackoff: Duration = .seconds(2)
        public var connectTimeout: Duration = .seconds(5)
        public var maxFrameBytes = Framing.defaultMaxFrameBytes
        /// TLS (nil: plain TCP). E.g. `.makeClientConfiguration()` with `trustRoots = .file(ca)`,
        /// and `certificateChain`/`privateKey` for mutual TLS.
        public var tls: TLSConfiguration?
        public init() {}
    }

    public let endpoints: [Endpoint]
    public let options: Options
    private let connections: [EndpointConnection]
    private let ring: HashRing
    private let nextRoundRobin = Atomic<Int>(0)
    private let group: any EventLoopGroup

    public init(endpoints: [Endpoint], options: Options = Options(),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws {
        guard !endpoints.isEmpty else { throw Wire.Status(.invalidArgument, "no endpoints given") }
        self.endpoints = endpoints
        self.options = options
        self.group = group
        let tls: NIOSSLContext?
        do {
            tls = try options.tls.map { try NIOSSLContext(configuration: $0) }
        } catch {
            throw Wire.Status(.invalidArgument, "TLS configuration rejected: \(error)")
        }
        connections = endpoints.map { EndpointConnection(endpoint: $0, options: options, tls: tls, group: group) }
        ring = HashRing(count: endpoints.count)
    }

    public convenience init(endpoints: [String], options: Options = Options()) throws {
        try self.init(endpoints: endpoints.map { try Endpoint($0) }, options: options)
    }

    // MARK: calls

    /// Scores `documents` against `query`. Results are sorted best first (or in input order),
    /// cut to `topN`. `model`: a name or alias the server serves (nil: its default model).
    /// Throws `Wire.Status` (its code says what happened; NOT_FOUND: no such model).
    public func rerank(query: String, documents: [String], model: String? = nil, instruction: String? = nil, topN: Int? = nil,
                       returnDocuments: Bool = false, maxTokensPerDocument: Int? = nil, maxLength: Int? = nil,
                       inputOrder: Bool = false, timeout: Duration? = nil, priority: Int = 0,
                       chunkLongDocuments: Bool = false, chunkOverlapTokens: Int? = nil,
                       onPartial: (@Sendable ([Wire.RerankResult]) -> Void)? = nil) async throws -> Wire.RerankResponse {
        var request = Wire.RerankRequest(
            query: query, instruction: instruction, documents: documents, topN: topN.map { UInt32(clamping: $0) },
            returnDocuments: returnDocuments, maxTokensPerDocument: maxTokensPerDocument.map { UInt32(clamping: $0) },
            maxLength: maxLength.map { UInt32(clamping: $0) }, inputOrder: inputOrder, priority: Int32(clamping: priority),
            stream: onPartial != nil)
        request.chunkLongDocuments = chunkLongDocuments
        request.chunkOverlapTokens = chunkOverlapTokens.map { UInt32(clamping: $0) }
        request.model = model ?? ""
        var partial: (@Sendable (Wire.Body) -> Void)?
        if let onPartial {
            partial = { body in
                if case .rerankPartial(let results) = body { onPartial(results) }
            }
        }
        let answer = try await call(.rerankRequest(request), affinityKey: (model ?? "") + "\u{1}" + (instruction.map { "i" + $0 } ?? "-") + "\u{1}" + query,
                                    timeout: timeout, onPartial: partial)
        guard case .rerankResponse(let response) = answer else { throw unexpected(answer) }
        return response
    }

    /// Token counts (and ids) of texts, as the server's model (`model`, nil: the default) counts them.
    public func tokenize(_ texts: [String], returnIDs: Bool = false, model: String? = nil, timeout: Duration? = nil) async throws -> [Wire.TokenizedText] {
        let request = Wire.TokenizeRequest(texts: texts, returnIDs: returnIDs, model: model ?? "")
        let answer = try await call(.tokenizeRequest(request), affinityKey: nil, timeout: timeout)
        guard case .tokenizeResponse(let texts) = answer else { throw unexpected(answer) }
        return texts
    }

    /// The server's limits, the model `model` (nil: the default), and in `models` every model served.
    public func modelInfo(model: String? = nil) async throws -> Wire.ModelInfo {
        let answer = try await call(.modelInfoRequest(model: model ?? ""), affinityKey: nil, timeout: nil)
        guard case .modelInfoResponse(let info) = answer else { throw unexpected(answer) }
        return info
    }

    /// Health of one endpoint (no retries: a probe).
    public func health(of endpoint: Int = 0) async throws -> Wire.Health {
        let connection = try await connections[endpoint].connection()
        guard case .healthResponse(let h) = try await connection.call(.healthRequest) else { throw Wire.Status(.internal, "no health answer") }
        return h
    }

    public func close() async {
        for c in connections { await c.close() }
    }

    // MARK: routing and retries

    /// The endpoints to try for a call, first choice first.
    func order(affinityKey: String?) -> [Int] {
        if options.routing == .affinity, let key = affinityKey { return ring.walk(key) }
        let n = endpoints.count
        let first = nextRoundRobin.add(1, ordering: .relaxed).oldValue % n
        return (0..<n).map { (first + $0) % n }
    }

    private func call(_ body: Wire.Body, affinityKey: String?, timeout: Duration?,
                      onPartial: (@Sendable (Wire.Body) -> Void)? = nil) async throws -> Wire.Body {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        let order = order(affinityKey: affinityKey)
        var metadata: [Wire.MetadataEntry] = []
        if let key = options.apiKey { metadata.append(.init("authorization", "Bearer " + key)) }
        var backoff = options.initialBackoff
        var lastError = Wire.Status(.unavailable, "no attempt made")
        // Once partial results were delivered, a retry would deliver them again: fail instead.
        let delivered = Locked(false)
        var tracked: (@Sendable (Wire.Body) -> Void)?
        if let onPartial {
            tracked = { body in
                delivered.withLock { $0 = true }
                onPartial(body)
            }
        }
        for attempt in 0..<max(1, options.maxAttempts) {
            // Each attempt starts at the preferred endpoint's successor after a failure there.
            let endpoint = order[attempt % order.count]
            var body = body
            if let deadline {
                let left = deadline - ContinuousClock.now
                guard left > .zero else { throw Wire.Status(.deadlineExceeded, "deadline passed after \(attempt) attempts: \(lastError)") }
                if case .rerankRequest(var r) = body {
                    r.timeoutMs = UInt32(clamping: max(1, Int(left.milliseconds.rounded(.up))))
                    body = .rerankRequest(r)
                }
            }
            do {
                let connection = try await connections[endpoint].connection()
                return try await connection.call(body, metadata: metadata, onPartial: tracked)
            } catch let status as Wire.Status where status.code == .unavailable {
                lastError = status
                connections[endpoint].failed()
                if delivered.withLock({ $0 }) { throw status }
                if Task.isCancelled { throw Wire.Status(.cancelled, "the call was cancelled") }
                // Full jitter keeps a fleet of clients from retrying in step.
                let sleep = Duration.nanoseconds(Int64.random(in: 0...max(1, backoff.nanoseconds)))
                try? await Task.sleep(for: sleep)
                backoff = min(backoff * 2, options.maxBackoff)
            }
        }
        throw Wire.Status(.unavailable, "gave up after \(options.maxAttempts) attempts: \(lastError.message)")
    }

    private func unexpected(_ body: Wire.Body) -> Wire.Status {
        Wire.Status(.internal, "the server answered with \(body.method) instead")
    }
}

/// The connection to one endpoint: opened on first use, reopened after it fails.
final class EndpointConnection: Sendable {
    let endpoint: Endpoint
    private let options: SiftClient.Options
    private let tls: NIOSSLContext?
    private let group: any EventLoopGroup
    private let current = Locked<Task<SiftConnection, any Error>?>(nil)

    init(endpoint: Endpoint, options: SiftClient.Options, tls: NIOSSLContext?, group: any EventLoopGroup) {
        self.endpoint = endpoint
        self.options = options
        self.tls = tls
        self.group = group
    }

    func connection() async throws -> SiftConnection {
        let task = current.withLock { task -> Task<SiftConnection, any Error> in
            if let task { return task }
            let (endpoint, options, tls, group) = (endpoint, options, tls, group)
            let new = Task {
                try await SiftConnection.connect(host: endpoint.host, port: endpoint.port, maxFrameBytes: options.maxFrameBytes,
                                                 connectTimeout: options.connectTimeout, tls: tls, group: group)
            }
            task = new
            return new
        }
        do {
            let connection = try await task.value
            if connection.isOpen { return connection }
            failed()
            throw Wire.Status(.unavailable, "connection to \(endpoint) closed")
        } catch {
            failed()
            throw error
        }
    }

    /// Forget the connection so the next call opens a new one.
    func failed() {
        current.withLock { $0 = nil }
    }

    func close() async {
        let task = current.withLock { t -> Task<SiftConnection, any Error>? in defer { t = nil }; return t }
        if let connection = try? await task?.value { await connection.close() }
    }
}

/// Consistent hashing: each endpoint owns many points on a 64-bit ring; a key goes to the
/// first point after its hash. Adding or losing a replica moves only that replica's keys.
struct HashRing: Sendable {
    private let points: [(hash: UInt64, endpoint: Int)]
    private let count: Int

    init(count: Int, pointsPerEndpoint: Int = 64) {
        self.count = count
        points = (0..<count).flatMap { e in (0..<pointsPerEndpoint).map { (Self.hash("endpoint-\(e)-\($0)"), e) } }
            .sorted { $0.hash < $1.hash }
    }

    /// Every endpoint once, in ring order from the key's point.
    func walk(_ key: String) -> [Int] {
        let h = Self.hash(key)
        var lo = 0, hi = points.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if points[mid].hash < h { lo = mid + 1 } else { hi = mid }
        }
        var order: [Int] = []
        var i = lo
        while order.count < count {
            let e = points[i % points.count].endpoint
            if !order.contains(e) { order.append(e) }
            i += 1
        }
        return order
    }

    /// FNV-1a, 64-bit, with a final avalanche (stable across processes, unlike Hasher).
    static func hash(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        h ^= h >> 33; h &*= 0xff51_afd7_ed55_8ccd; h ^= h >> 33
        return h
    }
}
