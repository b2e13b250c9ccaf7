import SiftBase
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import SiftEngine
import SiftProtocol

/// The Sift service: the binary RPC port (and optionally a metrics port) in front of a
/// `SiftEngine`. Run it in a `ServiceGroup`: on graceful shutdown (SIGTERM/SIGINT) it stops
/// accepting, reports NOT_SERVING, lets calls in flight finish for up to `drainTimeout`, then
/// closes every connection and returns.
public final class SiftServer: Service, Sendable {
    public let options: ServerOptions
    public let metrics = ServerMetrics()
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let state = ServerState()
    private let listeners = Locked<Listeners>(Listeners())
    private let loadEngine: (@Sendable () async throws -> SiftEngine)?

    private struct Listeners {
        var rpc: (any Channel)?
        var metrics: (any Channel)?
        var http: (any Channel)?
        var started = false
    }

    /// A server for an engine that is ready.
    public convenience init(engine: SiftEngine, options: ServerOptions, logger: Logger) {
        self.init(options: options, logger: logger, loadEngine: nil)
        state.engine.withLock { $0 = engine }
    }

    /// A server that listens at once (Health: NOT_SERVING, calls: UNAVAILABLE) and serves
    /// when `loadEngine` has loaded the model; a load failure ends `run` with its error.
    public init(options: ServerOptions, logger: Logger, loadEngine: (@Sendable () async throws -> SiftEngine)?) {
        self.options = options
        self.logger = logger
        self.loadEngine = loadEngine
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.ioThreads))
    }

    public var engine: SiftEngine? { state.currentEngine }

    /// The RPC port actually bound (after `start`).
    public var port: Int? { listeners.withLock { $0.rpc?.localAddress?.port } }
    public var metricsPort: Int? { listeners.withLock { $0.metrics?.localAddress?.port } }
    public var httpPort: Int? { listeners.withLock { $0.http?.localAddress?.port } }
    public var isServing: Bool { state.isServing }
    /// Calls accepted and not yet answered.
    public var callsInFlight: Int { state.inFlight.load(ordering: .relaxed) }

    /// Binds the ports. Idempotent.
    public func start() async throws {
        if listeners.withLock({ $0.started }) { return }
        let tls = try options.tls.map(Self.makeTLSContext)
        let rpc = try await bindRPC(tls: tls)
        var metricsChannel: (any Channel)?
        if let metricsPort = options.metricsPort {
            metricsChannel = try await bindMetrics(port: metricsPort)
        }
        var httpChannel: (any Channel)?
        if let httpPort = options.httpPort {
            httpChannel = try await bindHTTPAPI(port: httpPort, tls: tls)
        }
        listeners.withLock { $0 = Listeners(rpc: rpc, metrics: metricsChannel, http: httpChannel, started: true) }
        var metadata: Logger.Metadata = ["address": "\(options.host):\(rpc.localAddress?.port ?? 0)"]
        if let p = metricsChannel?.localAddress?.port { metadata["metrics"] = "http://\(options.host):\(p)/metrics" }
        if let p = httpChannel?.localAddress?.port { metadata["http"] = "http://\(options.host):\(p)/v2/rerank" }
        logger.notice(state.currentEngine == nil ? "listening (NOT_SERVING until the model is loaded)" : "serving", metadata: metadata)
        if let files = options.tls {
            logger.info("TLS on", metadata: ["certificate": "\(files.certificatePath)",
                                             "client_certificates": "\(files.clientCAPath == nil ? "not required" : "required")"])
        }
        if options.apiKeys.isEmpty {
            logger.warning("no API keys configured: anyone who can reach the port may call it (use --api-key-file)")
        } else {
            logger.info("API keys required", metadata: ["keys": "\(options.apiKeys.count)"])
        }
    }

    /// Loads the model with the server's loader (if it has one and no engine yet); SERVING after.
    public func loadEngineIfNeeded() async throws {
        guard state.currentEngine == nil, let loadEngine else { return }
        let engine = try await Task.detached { try await loadEngine() }.value
        state.engine.withLock { $0 = engine }
        logger.notice("model loaded; serving")
    }

    public func run() async throws {
        try await start()
        do {
            try await loadEngineIfNeeded()
        } catch {
            await shutdown()
            throw error
        }
        // Until SIGTERM/SIGINT (or the task is cancelled).
        try? await gracefulShutdown()
        await shutdown()
    }

    /// Drains and stops: NOT_SERVING, no new connections or calls, calls in flight get up to
    /// `drainTimeout`, then every connection closes.
    public func shutdown() async {
        if state.draining.exchange(true, ordering: .relaxed) { return }
        let (rpc, metricsChannel, httpChannel) = listeners.withLock { ($0.rpc, $0.metrics, $0.http) }
        logger.notice("draining", metadata: ["calls_in_flight": "\(state.inFlight.load(ordering: .relaxed))",
                                             "timeout_s": "\(options.drainTimeout.components.seconds)"])
        try? await rpc?.close()
        try? await httpChannel?.close()
        let deadline = ContinuousClock.now + options.drainTimeout
        while state.inFlight.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        let abandoned = state.inFlight.load(ordering: .relaxed)
        if abandoned > 0 {
            logger.error("drain timeout: cancelling calls still in flight", metadata: ["calls": "\(abandoned)"])
        }
        let open = state.channels.withLock { Array($0.values) }
        for channel in open { try? await channel.close() }
        try? await metricsChannel?.close()
        state.currentEngine?.shutdown()
        try? await group.shutdownGracefully()
        logger.notice("stopped")
    }

    /// The server's TLS context; errors name the file and what is wrong with it.
    static func makeTLSContext(_ files: TLSFiles) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(files.certificatePath)
        } catch {
            throw ServerError("cannot read the TLS certificate \(files.certificatePath) (PEM expected): \(error)")
        }
        do {
            key = try NIOSSLPrivateKey(file: files.keyPath, format: .pem)
        } catch {
            throw ServerError("cannot read the TLS private key \(files.keyPath) (PEM expected): \(error)")
        }
        var configuration: TLSConfiguration
        if let ca = files.clientCAPath {
            configuration = .makeServerConfigurationWithMTLS(certificateChain: chain.map { .certificate($0) },
                                                             privateKey: .privateKey(key), trustRoots: .file(ca))
        } else {
            configuration = .makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        }
        configuration.minimumTLSVersion = .tlsv12
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ServerError("TLS setup failed (does the key match the certificate? is the client CA a PEM file?): \(error)")
        }
    }

    private func bindRPC(tls: NIOSSLContext?) async throws -> any Channel {
        let (state, metrics, options, logger) = (self.state, self.metrics, self.options, self.logger)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let count = state.connections.add(1, ordering: .relaxed).newValue
                    metrics.connections.increment()
                    let id = ObjectIdentifier(channel)
                    state.channels.withLock { $0[id] = channel }
                    channel.closeFuture.whenComplete { _ in
                        state.connections.subtract(1, ordering: .relaxed)
                        metrics.connections.decrement()
                        state.channels.withLock { $0[id] = nil }
                    }
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls)) }
                    try pipeline.addHandler(MessageToByteHandler(FrameEncoder()))
                    if count > options.maxConnections {
                        logger.warning("connection limit reached; refusing", metadata: ["limit": "\(options.maxConnections)"])
                        let status = Wire.Status(.resourceExhausted, "server has \(options.maxConnections) connections open (its limit): retry later or use another replica")
                        channel.writeAndFlush(Wire.Frame(requestID: 0, body: .status(status))).whenComplete { _ in channel.close(promise: nil) }
                        return
                    }
                    try pipeline.addHandler(IdleStateHandler(readTimeout: TimeAmount(options.idleTimeout)))
                    try pipeline.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: options.maxFrameBytes)))
                    try pipeline.addHandler(ConnectionHandler(state: state, metrics: metrics, options: options, logger: logger))
                }
            }
        do {
            return try await bootstrap.bind(host: options.host, port: options.port).get()
        } catch {
            throw ServerError("cannot listen on \(options.host):\(options.port): \(error) (is another server using the port? pick one with --port)")
        }
    }

    private func bindHTTPAPI(port: Int, tls: NIOSSLContext?) async throws -> any Channel {
        let (state, metrics, options, logger) = (self.state, self.metrics, self.options, self.logger)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let id = ObjectIdentifier(channel)
                    state.channels.withLock { $0[id] = channel }
                    channel.closeFuture.whenComplete { _ in state.channels.withLock { $0[id] = nil } }
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(HTTPAPIHandler(state: state, metrics: metrics, options: options, logger: logger))
                }
            }
        do {
            return try await bootstrap.bind(host: options.host, port: port).get()
        } catch {
            throw ServerError("cannot listen for HTTP on \(options.host):\(port): \(error) (pick another --http-port)")
        }
    }

    private func bindMetrics(port: Int) async throws -> any Channel {
        let (metrics, state) = (self.metrics, self.state)
        let render: @Sendable () -> (serving: Bool, body: [UInt8]) = {
            let serving = state.isServing
            return (serving, metrics.render(engine: state.currentEngine?.stats ?? EngineStats(), serving: serving))
        }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(render: render))
                }
            }
        do {
            return try await bootstrap.bind(host: options.host, port: port).get()
        } catch {
            throw ServerError("cannot listen for metrics on \(options.host):\(port): \(error) (pick another --metrics-port)")
        }
    }
}

public struct ServerError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
