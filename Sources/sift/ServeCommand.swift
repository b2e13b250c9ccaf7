import ArgumentParser
import Foundation
import Logging
import Qwen3
import ServiceLifecycle
import SiftEngine
import SiftHub
import SiftProtocol
import SiftServer
import SiftBase
import UnixSignals

extension Logger.Level: @retroactive ExpressibleByArgument {}

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a Qwen3-Reranker: binary RPC (docs/PROTOCOL.md), optional HTTP/JSON API and Prometheus metrics.",
        discussion: """
            Listens at once; Health reports NOT_SERVING until the models are loaded. SIGTERM or SIGINT \
            drains: no new connections or calls, Health NOT_SERVING, calls in flight finish (up to \
            --drain-timeout), then exit 0; during a download or load they stop it at once. SIGHUP \
            reloads --api-key-file.

            One model answers every call, whatever model name it sends (the clients of other rerank \
            services send theirs). Several models: repeat --model NAME=SOURCE (the first is the \
            default, for calls that name none); calls choose one with the request's `model` field, by \
            name or --model-alias, and an unknown name is NOT_FOUND. Each model has its own scheduler, \
            KV memory (--kv-budget-mb is split evenly) and prefix cache; all share the --threads worker \
            threads, taking turns, and one score cache.
            """)

    @Option(help: ArgumentHelp("Model to serve: [NAME=]SOURCE, SOURCE a Hugging Face name (Qwen/Qwen3-Reranker-0.6B: from the HF cache, else downloaded), a model folder, or a .sift file; NAME defaults to the hub name or file name. Repeat to serve several; the first is the default.",
                               valueName: "[name=]source"))
    var model: [String] = []
    @Option(help: ArgumentHelp("Another name for a served model, e.g. rerank-v3.5=qwen3-0.6b for clients that send a name of their own; ALIAS '*' catches every name not served. Repeatable.",
                               valueName: "alias=name"))
    var modelAlias: [String] = []
    @Option(help: "Exact score cache in MiB, shared by the models (0: off): a document scored before with the same model, instruction, query and options is answered without compute, with the same bits.")
    var scoreCacheMb: Int = 128
    @Option(help: "Address to listen on.") var host: String = "127.0.0.1"
    @Option(help: "RPC port (0: any free port; the log says which).") var port: Int = 7700
    @Option(help: "Prometheus metrics port, serving /metrics and /health (off unless set).") var metricsPort: Int?
    @Option(help: "HTTP/JSON API port: POST /v1/rerank, /v2/rerank (Cohere and Jina shapes), GET /health (off unless set).")
    var httpPort: Int?
    @Option(help: "File of accepted API keys, one per line (# comments). Without it the port is open to anyone who reaches it.")
    var apiKeyFile: String?
    @Option(help: "TLS certificate chain (PEM) for the RPC and HTTP ports.") var tlsCert: String?
    @Option(help: "TLS private key (PEM).") var tlsKey: String?
    @Option(help: "CA (PEM) that client certificates must chain to: mutual TLS.") var tlsClientCa: String?
    @Option(help: "Precision of the linear layers: int8 (fast; a folder is quantized at load) or fp32 (reference).")
    var precision: Precision = .int8
    @Option(help: AttentionPrecision.help)
    var attention: AttentionPrecision?
    @Option(help: "Model worker threads, one per core unless set.") var threads: Int = WorkerPool.defaultThreadCount
    @Option(help: "Network I/O threads.") var ioThreads: Int = 1

    @Option(help: "Tokens computed per scheduler step, at most (the step budget of batch work).") var maxBatchTokens: Int = EngineOptions().maxBatchTokens
    @Option(help: "Calls of at most this many tokens (prompt and documents) are interactive unless they send priority < 0; priority > 0 makes any call interactive. Interactive calls run first, in steps of their own, even between the sublayers of a batch step already running. 0: only priority > 0.")
    var interactiveTokens: Int = EngineOptions().interactiveTokens
    @Option(help: "Seconds per priority level a waiting call gains; a batch call unserved this long runs with the interactive ones, and a batch step paused for interactive work resumes after this long.")
    var agingSeconds: Double = EngineOptions().agingSeconds
    @Option(help: "A long document enters the batch in chunks of this many tokens.") var prefillChunk: Int = EngineOptions().prefillChunk
    @Option(help: "Tokens queued over all calls before new calls get RESOURCE_EXHAUSTED.") var maxQueuedTokens: Int = EngineOptions().maxQueuedTokens
    @Option(help: "Tokens one call may queue; a larger call is refused (INVALID_ARGUMENT: split it). Default: half of --max-queued-tokens.")
    var maxRequestTokens: Int?
    @Option(help: "KV memory budget in MiB, prefix cache included; documents wait for room, never dropped. Default: three quarters of the memory available after the model (cgroup limit honoured).")
    var kvBudgetMb: Int?
    @Option(help: "Prefix KV cache budget in MiB (0: no caching across calls).") var prefixCacheMb: Int = EngineOptions().prefixCacheBytes >> 20
    @Option(help: "Documents per call.") var maxDocuments: Int = EngineOptions().maxDocuments
    @Option(help: "Default tokens per (query, document) pair.") var maxLength: Int = EngineOptions().defaultMaxLength

    @Option(help: "Largest frame in MiB.") var maxFrameMb: Int = Framing.defaultMaxFrameBytes >> 20
    @Option(help: "Calls in flight per connection.") var maxInFlight: Int = ServerOptions().maxInFlightPerConnection
    @Option(help: "Open connections over all ports; when full, the slowest sender or longest idle connection makes room.")
    var maxConnections: Int = ServerOptions().maxConnections
    @Option(help: "Seconds before an idle connection is closed.") var idleTimeout: Double = 300
    @Option(help: "Seconds a frame (or HTTP request) may take to arrive from its first byte.") var frameTimeout: Double = 30
    @Option(help: "MiB held for requests still arriving, over all connections.") var maxBufferedMb: Int = ServerOptions().maxBufferedBytes >> 20
    @Option(help: "MiB of answers held for one connection (unsent, or expected from its calls in flight); beyond it the connection is not read until its client takes its answers.")
    var maxUnsentMbPerConnection: Int = ServerOptions().maxUnsentBytesPerConnection >> 20
    @Option(help: "MiB of answers held for all connections together; beyond it no connection holding answers is read.")
    var maxUnsentMb: Int = ServerOptions().maxUnsentBytes >> 20
    @Option(help: "Seconds a connection held back by those bounds may take none of its answers before it is closed.")
    var sendTimeout: Double = 30
    @Option(help: "Seconds calls in flight get to finish on shutdown.") var drainTimeout: Double = 30
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: Logger.Level = .info

    func validate() throws {
        for (name, value) in [("--port", port), ("--metrics-port", metricsPort ?? 0), ("--http-port", httpPort ?? 0)] where !(0...65535).contains(value) {
            throw ValidationError("\(name) \(value) is not a port (0...65535)")
        }
        for (name, value) in [("--threads", threads), ("--io-threads", ioThreads), ("--max-batch-tokens", maxBatchTokens),
                              ("--prefill-chunk", prefillChunk), ("--max-documents", maxDocuments), ("--max-length", maxLength),
                              ("--max-frame-mb", maxFrameMb), ("--max-in-flight", maxInFlight), ("--max-connections", maxConnections)]
            where value < 1 {
            throw ValidationError("\(name) must be at least 1 (got \(value))")
        }
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        if tlsClientCa != nil && tlsCert == nil { throw ValidationError("--tls-client-ca needs --tls-cert and --tls-key") }
        if maxFrameMb > 1024 { throw ValidationError("--max-frame-mb must be at most 1024") }
        if idleTimeout <= 0 || drainTimeout < 0 { throw ValidationError("--idle-timeout must be positive and --drain-timeout not negative") }
        if !(frameTimeout > 0) { throw ValidationError("--frame-timeout must be positive") }
        if maxBufferedMb < 1 { throw ValidationError("--max-buffered-mb must be at least 1") }
        if maxUnsentMb < 1 || maxUnsentMbPerConnection < 1 { throw ValidationError("--max-unsent-mb and --max-unsent-mb-per-connection must be at least 1") }
        if !(sendTimeout > 0) { throw ValidationError("--send-timeout must be positive") }
        if let kvBudgetMb, kvBudgetMb < 1 { throw ValidationError("--kv-budget-mb must be at least 1") }
        if let maxRequestTokens, maxRequestTokens < 1 { throw ValidationError("--max-request-tokens must be at least 1") }
        if maxQueuedTokens < 1 { throw ValidationError("--max-queued-tokens must be at least 1") }
        if scoreCacheMb < 0 { throw ValidationError("--score-cache-mb must not be negative") }
        if interactiveTokens < 0 { throw ValidationError("--interactive-tokens must not be negative") }
        if !(agingSeconds > 0 && agingSeconds <= 86_400) { throw ValidationError("--aging-seconds must be positive (at most a day)") }
        _ = try ModelSpec.parse(models: model, aliases: modelAlias)
    }

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "sift")
        ProcessLimits.prepareForServing()

        var options = ServerOptions()
        options.host = host
        options.port = port
        options.metricsPort = metricsPort
        options.httpPort = httpPort
        options.maxFrameBytes = maxFrameMb << 20
        options.maxInFlightPerConnection = maxInFlight
        options.maxConnections = maxConnections
        options.idleTimeout = .milliseconds(Int(idleTimeout * 1000))
        options.frameTimeout = .milliseconds(Int(frameTimeout * 1000))
        options.maxBufferedBytes = maxBufferedMb << 20
        options.drainTimeout = .milliseconds(Int(drainTimeout * 1000))
        options.maxUnsentBytes = maxUnsentMb << 20
        options.maxUnsentBytesPerConnection = maxUnsentMbPerConnection << 20
        options.sendTimeout = .milliseconds(Int(sendTimeout * 1000))
        options.ioThreads = ioThreads
        if let tlsCert, let tlsKey {
            options.tls = TLSFiles(certificatePath: tlsCert, keyPath: tlsKey, clientCAPath: tlsClientCa)
        }
        if let apiKeyFile {
            do {
                options.apiKeys = try APIKeys(file: apiKeyFile)
            } catch {
                FileHandle.standardError.write(Data("sift: error: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }

        var engineOptions = EngineOptions()
        engineOptions.maxBatchTokens = maxBatchTokens
        engineOptions.prefillChunk = prefillChunk
        engineOptions.interactiveTokens = interactiveTokens
        engineOptions.agingSeconds = agingSeconds
        engineOptions.maxQueuedTokens = maxQueuedTokens
        engineOptions.maxRequestTokens = maxRequestTokens
        engineOptions.kvBudgetBytes = kvBudgetMb.map { $0 << 20 }
        engineOptions.prefixCacheBytes = prefixCacheMb << 20
        engineOptions.maxDocuments = maxDocuments
        engineOptions.defaultMaxLength = maxLength
        engineOptions.attention = attention

        let loader = ServedModelsLoader(specs: try ModelSpec.parse(models: model, aliases: modelAlias), precision: precision,
                                        threads: threads, engineOptions: engineOptions, scoreCacheBytes: scoreCacheMb << 20,
                                        logger: logger)
        let server = SiftServer(options: options, logger: logger) { try await loader.load() }
        let reloader = KeyReloader(server: server, file: apiKeyFile, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: reloader), .init(service: server)],
                                                      gracefulShutdownSignals: [.sigterm, .sigint],
                                                      logger: logger))
        do {
            try await group.run()
        } catch {
            FileHandle.standardError.write(Data("sift: error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// SIGHUP reloads `--api-key-file` (a file that no longer reads keeps the old keys, and says
/// why); without one, SIGHUP is logged and ignored. Either way the server never dies of it.
struct KeyReloader: Service {
    let server: SiftServer
    let file: String?
    let logger: Logger

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            guard let file else {
                logger.notice("SIGHUP: no --api-key-file to reload; ignored")
                continue
            }
            do {
                server.reloadAPIKeys(try APIKeys(file: file))
            } catch {
                logger.error("SIGHUP: API keys not reloaded, the old ones stay in force", metadata: ["error": "\(error)"])
            }
        }
    }
}
