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
    private let state: ServerState
    private let listeners = Locked<Listeners>(Listeners())
    private let loadModels: (@Sendable () async throws -> ServedModels)?

    private struct Listeners {
        var rpc: (any Channel)?
        var metrics: (any Channel)?
        var http: (any Channel)?
        var started = false
    }

    /// A server for one engine that is ready (a `SiftEngine`, or a fake in tests), served
    /// under `options.modelID`.
    public convenience init(engine: any RerankService, options: ServerOptions, logger: Logger) {
        self.init(models: .single(engine, name: options.modelID), options: options, logger: logger)
    }

    /// A server for models that are ready.
    public convenience init(models: ServedModels, options: ServerOptions, logger: Logger) {
        self.init(options: options, logger: logger, loadModels: nil)
        state.models.withLock { $0 = models }
    }

    /// A server that listens at once (Health: NOT_SERVING, calls: UNAVAILABLE) and serves
    /// when `loadModels` has loaded every model; a load failure ends `run` with its error.
    public init(options: ServerOptions, logger: Logger, loadModels: (@Sendable () async throws -> ServedModels)?) {
        self.options = options
        self.logger = logger
        self.loadModels = loadModels
        state = ServerState(options: options)
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.ioThreads))
    }

    /// The default model's engine (nil while loading).
    public var engine: (any RerankService)? { state.currentModels?.defaultModel.service }
    public var models: ServedModels? { state.currentModels }

    /// The RPC port actually bound (after `start`).
    public var port: Int? { listeners.withLock { $0.rpc?.localAddress?.port } }
    public var metricsPort: Int? { listeners.withLock { $0.metrics?.localAddress?.port } }
    public var httpPort: Int? { listeners.withLock { $0.http?.localAddress?.port } }
    public var isServing: Bool { state.isServing }
    /// Calls accepted and not yet answered.
    public var callsInFlight: Int { state.inFlight.load(ordering: .relaxed) }
    /// Open connections on all ports.
    public var openConnections: Int { state.registry.count }
    /// Bytes held for requests still arriving.
    public var bufferedRequestBytes: Int { state.buffers.bytes }
    /// Answer bytes held for peers: written and not yet taken, or expected from calls in flight.
    public var unsentBytes: Int { state.unsent.bytes }

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
        logger.notice(state.currentModels == nil ? "listening (NOT_SERVING until the model is loaded)" : "serving", metadata: metadata)
        if let files = options.tls {
            logger.info("TLS on", metadata: ["certificate": "\(files.certificatePath)",
                                             "client_certificates": "\(files.clientCAPath == nil ? "not required" : "required")"])
        }
        logger.info("limits", metadata: ["connections": "\(state.registry.limit)", "frame_timeout_s": "\(options.frameTimeout.components.seconds)",
                                         "buffered_mb": "\(options.maxBufferedBytes >> 20)",
                                         "unsent_mb": "\(options.maxUnsentBytes >> 20)", "unsent_mb_per_connection": "\(options.maxUnsentBytesPerConnection >> 20)",
                                         "send_timeout_s": "\(options.sendTimeout.components.seconds)", "idle_timeout_s": "\(options.idleTimeout.components.seconds)"])
        if state.registry.limit < options.maxConnections {
            logger.warning("connection limit lowered to fit the file-descriptor limit (raise `ulimit -n` to allow more)",
                           metadata: ["asked": "\(options.maxConnections)", "allowed": "\(state.registry.limit)"])
        }
        if options.apiKeys.isEmpty {
            logger.warning("no API keys configured: anyone who can reach the port may call it (use --api-key-file)")
        } else {
            logger.info("API keys required", metadata: ["keys": "\(options.apiKeys.count)"])
        }
    }

    /// Replaces the accepted API keys (SIGHUP with `--api-key-file`); calls in flight go on.
    public func reloadAPIKeys(_ keys: APIKeys) {
        state.keys.withLock { $0 = keys }
        logger.notice("API keys reloaded", metadata: ["keys": "\(keys.count)"])
    }

    /// Loads the models with the server's loader (if it has one and none yet); SERVING after.
    /// Cancelled (a shutdown while downloading or loading), it throws `CancellationError` at
    /// once: a download stops (its partial file kept for the next run), a load is abandoned.
    public func loadModelsIfNeeded() async throws {
        guard state.currentModels == nil, let loadModels else { return }
        let models = try await Task.detached { try await loadModels() }.valueUnlessCancelled
        state.models.withLock { $0 = models }
        logger.notice(models.models.count == 1 ? "model loaded; serving" : "models loaded; serving",
                      metadata: ["models": "\(models.listing)"])
    }

    public func run() async throws {
        try await start()
        do {
            // SIGTERM/SIGINT while downloading or loading stops that at once.
            try await cancelWhenGracefulShutdown { try await self.loadModelsIfNeeded() }
        } catch where Task.isShuttingDownGracefully || error is CancellationError {
            logger.notice("shutdown requested while the models were loading; stopping")
            await shutdown()
            return
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
        for channel in state.registry.channels { try? await channel.close() }
        try? await metricsChannel?.close()
        state.currentModels?.shutdown()
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

    /// Binds one port. Every listener gets the same treatment: the shared connection limit
    /// (making room by closing the worst-behaved connection), TLS when configured, the idle
    /// timeout; `pipeline` adds the port's own handlers.
    private func bind(_ kind: ConnectionRegistry.Port, port: Int, tls: NIOSSLContext?, flag: String,
                      refuse: @escaping @Sendable (any Channel, String) -> Void,
                      pipeline: @escaping @Sendable (any Channel) throws -> Void) async throws -> any Channel {
        let (state, metrics, options, logger) = (self.state, self.metrics, self.options, self.logger)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // An RPC client that shuts its sending side still gets its answers (see ConnectionHandler).
            // On HTTP an end of input means the client is gone, as HTTP servers take it.
            .childChannelOption(.allowRemoteHalfClosure, value: kind == .rpc)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls)) }
                    switch state.registry.open(channel, port: kind) {
                    case .refused:
                        state.logLimiter.log(logger, .warning, "connection limit reached and every connection has calls in flight; refusing",
                                       metadata: ["limit": "\(state.registry.limit)", "port": "\(kind.rawValue)"])
                        refuse(channel, "the server has \(state.registry.limit) connections open, all busy (its limit): retry later or use another replica")
                        return
                    case .acceptedByClosing(let victim, let reason):
                        state.logLimiter.log(logger, .notice, "connection limit reached; closing another connection to make room",
                                      metadata: ["limit": "\(state.registry.limit)", "reason": "\(reason)"])
                        victim.close(promise: nil)
                    case .accepted:
                        break
                    }
                    metrics.connections.increment()
                    channel.closeFuture.whenComplete { _ in
                        state.registry.close(channel)
                        metrics.connections.decrement()
                    }
                    try sync.addHandler(IdleStateHandler(readTimeout: TimeAmount(options.idleTimeout)))
                    try pipeline(channel)
                }
            }
        do {
            return try await bootstrap.bind(host: options.host, port: port).get()
        } catch {
            throw ServerError("cannot listen on \(options.host):\(port): \(error) (is another server using the port? pick one with \(flag))")
        }
    }

    private func bindRPC(tls: NIOSSLContext?) async throws -> any Channel {
        let (state, metrics, options, logger) = (self.state, self.metrics, self.options, self.logger)
        return try await bind(.rpc, port: options.port, tls: tls, flag: "--port", refuse: { channel, message in
            var out = channel.allocator.buffer(capacity: 256)
            Framing.write(Wire.Frame(requestID: 0, body: .status(Wire.Status(.resourceExhausted, message))), to: &out)
            channel.writeAndFlush(out).whenComplete { _ in channel.close(promise: nil) }
        }) { channel in
            try Self.addRPCHandlers(to: channel, state: state, metrics: metrics, options: options, logger: logger)
        }
    }

    /// The RPC port's handlers after the connection limit, TLS and idle timeout (also used by
    /// the handler tests, on a test channel).
    static func addRPCHandlers(to channel: any Channel, state: ServerState, metrics: ServerMetrics, options: ServerOptions,
                               logger: Logger) throws {
        let sync = channel.pipeline.syncOperations
        let gate = state.makeOutboundGate(options: options, logger: logger)
        try sync.addHandler(gate)
        try sync.addHandler(FrameReader(maxFrameBytes: options.maxFrameBytes, frameTimeout: options.frameTimeout,
                                        budget: state.buffers, registry: state.registry, metrics: metrics, logger: logger,
                                        limiter: state.logLimiter, gate: gate) {
            ConnectionHandler.screen($0, state: state, options: options)
        })
        try sync.addHandler(MessageToByteHandler(FrameEncoder()))
        try sync.addHandler(ConnectionHandler(state: state, metrics: metrics, options: options, logger: logger, gate: gate))
    }

    private func bindHTTPAPI(port: Int, tls: NIOSSLContext?) async throws -> any Channel {
        let (state, metrics, options, logger) = (self.state, self.metrics, self.options, self.logger)
        return try await bind(.http, port: port, tls: tls, flag: "--http-port", refuse: HTTPRequestGuard.refuse) { channel in
            try Self.addHTTPAPIHandlers(to: channel, state: state, metrics: metrics, options: options, logger: logger)
        }
    }

    /// The HTTP API port's handlers after the connection limit, TLS and idle timeout.
    static func addHTTPAPIHandlers(to channel: any Channel, state: ServerState, metrics: ServerMetrics, options: ServerOptions,
                                   logger: Logger) throws {
        let sync = channel.pipeline.syncOperations
        let gate = state.makeOutboundGate(options: options, logger: logger)
        try sync.addHandler(gate)
        try sync.addHandler(HTTPRequestGuard(timeout: options.frameTimeout, registry: state.registry, logger: logger, limiter: state.logLimiter))
        try sync.configureHTTPServerPipeline(withErrorHandling: true)
        try sync.addHandler(HTTPAPIHandler(state: state, metrics: metrics, options: options, logger: logger, gate: gate))
    }

    private func bindMetrics(port: Int) async throws -> any Channel {
        let (metrics, state, options, logger) = (self.metrics, self.state, self.options, self.logger)
        let render: @Sendable () -> (serving: Bool, body: [UInt8]) = {
            let serving = state.isServing
            return (serving, metrics.render(models: state.currentModels, serving: serving,
                                            bufferedRequestBytes: state.buffers.bytes, unsentBytes: state.unsent.bytes))
        }
        return try await bind(.metrics, port: port, tls: nil, flag: "--metrics-port", refuse: HTTPRequestGuard.refuse) { channel in
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(state.makeOutboundGate(options: options, logger: logger))
            try sync.addHandler(HTTPRequestGuard(timeout: options.frameTimeout, registry: state.registry, logger: logger, limiter: state.logLimiter))
            try sync.configureHTTPServerPipeline(withErrorHandling: true)
            try sync.addHandler(MetricsHTTPHandler(render: render))
        }
    }
}

public struct ServerError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
