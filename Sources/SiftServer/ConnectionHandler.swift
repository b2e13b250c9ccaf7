import SiftBase
import Foundation
import Logging
import NIOCore
import SiftEngine
import SiftProtocol
import Synchronization

/// State shared by all connections of one server.
final class ServerState: Sendable {
    /// Set when shutdown begins: Health says NOT_SERVING, new calls get UNAVAILABLE.
    let draining = Atomic<Bool>(false)
    /// Calls accepted and not yet answered, over all connections.
    let inFlight = Atomic<Int>(0)
    /// Nil while the models load.
    let models = Locked<ServedModels?>(nil)
    /// Every open connection, on all ports, under one limit.
    let registry: ConnectionRegistry
    /// Bytes held for requests still arriving, over all connections.
    let buffers: BufferBudget
    /// Lines about hostile input pass at a bounded rate.
    let logLimiter = LogLimiter()

    init(options: ServerOptions) {
        registry = ConnectionRegistry(limit: options.effectiveMaxConnections)
        buffers = BufferBudget(limit: options.maxBufferedBytes)
    }

    var currentModels: ServedModels? { models.withLock { $0 } }
    var isServing: Bool { !draining.load(ordering: .relaxed) && currentModels != nil }

    /// The API key check (`keyHint` says how to send one).
    func authorize(authorization: String?, keys: APIKeys, keyHint: String) throws(Wire.Status) {
        guard keys.accepts(authorization: authorization) else {
            throw Wire.Status(.unauthenticated, authorization == nil
                ? "this server needs an API key: send \(keyHint)"
                : "API key not accepted (send \(keyHint))")
        }
    }

    /// The checks every call passes, on either front door, before it reaches the engine: the
    /// API key, shutdown, model still loading.
    func admit(authorization: String?, keys: APIKeys, keyHint: String) throws(Wire.Status) -> ServedModels {
        try authorize(authorization: authorization, keys: keys, keyHint: keyHint)
        guard !draining.load(ordering: .relaxed) else {
            throw Wire.Status(.unavailable, "server is shutting down: retry on another replica")
        }
        guard let models = currentModels else {
            throw Wire.Status(.unavailable, "the model is still loading: retry in a few seconds")
        }
        return models
    }
}

/// One client connection: decodes frames, checks them, runs calls concurrently (answered out
/// of order under their request ids), cancels them on Cancel frames or disconnect.
/// Event-loop confined; calls run in Tasks and hop back to the loop to answer.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ReceivedFrame
    typealias OutboundOut = Wire.Frame

    private let state: ServerState
    private let metrics: ServerMetrics
    private let options: ServerOptions
    private let lifecycle: CallLifecycle
    private var logger: Logger
    private var context: ChannelHandlerContext?
    private var inFlight: [UInt64: Task<Void, Never>] = [:]

    init(state: ServerState, metrics: ServerMetrics, options: ServerOptions, logger: Logger) {
        self.state = state
        self.metrics = metrics
        self.options = options
        self.logger = logger
        lifecycle = CallLifecycle(state: state, metrics: metrics, options: options)
    }

    /// The checks `FrameReader` runs on a frame's envelope, before the frame is buffered whole
    /// (the key) or decoded (the document count). Health and Cancel need no key.
    static func screen(_ envelope: Envelope, state: ServerState, options: ServerOptions) -> Wire.Status? {
        guard let field = envelope.bodyField else { return nil }  // the decoder will say what is wrong
        if field != Envelope.Field.healthRequest && field != Envelope.Field.cancelRequest {
            do {
                try state.authorize(authorization: envelope.metadata("authorization"), keys: options.apiKeys,
                                    keyHint: "metadata authorization: Bearer <key>")
            } catch {
                return error
            }
        }
        if envelope.isComplete, field == Envelope.Field.rerankRequest || field == Envelope.Field.tokenizeRequest,
           let limit = state.currentModels?.maxDocuments, envelope.items > limit {
            let what = field == Envelope.Field.rerankRequest ? "documents" : "texts"
            return Wire.Status(.invalidArgument, "\(envelope.items) \(what); at most \(limit) per request: split the request")
        }
        return nil
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        logger[metadataKey: "peer"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
    }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelInactive(context: ChannelHandlerContext) {
        // The client is gone (a half-close counts: as with gRPC, closing the connection ends
        // its calls): their work would be wasted, stop it.
        if !inFlight.isEmpty {
            logger.info("client disconnected; cancelling its calls in flight", metadata: ["calls": "\(inFlight.count)"])
        }
        for task in inFlight.values { task.cancel() }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let incoming = unwrapInboundIn(data)
        let received = incoming.received
        let frame: Wire.Frame
        do {
            frame = try Framing.decode(incoming.body)
        } catch {
            // The framing is intact, so the connection stays usable.
            metrics.protocolErrors.increment()
            let id = (error as? ProtocolError)?.requestID ?? 0
            state.logLimiter.log(logger, .notice, "malformed frame", metadata: ["request_id": "\(id)", "error": "\(error)"])
            send(Wire.Frame(requestID: id, body: .status(Wire.Status(.invalidArgument, "malformed frame: \(error)"))))
            return
        }
        handle(frame, received: received)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read, inFlight.isEmpty {
            logger.debug("closing idle connection")
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Framing errors are answered by FrameReader; what reaches here is the socket's or TLS's.
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: - Calls

    private func handle(_ frame: Wire.Frame, received: ContinuousClock.Instant) {
        let id = frame.requestID
        switch frame.body {
        case .healthRequest:
            // No key needed: load balancers probe it.
            let health = state.currentModels.map { Calls(models: $0, options: options, metrics: metrics).health(serving: state.isServing) }
                ?? Wire.Health(status: .notServing)
            reply(id, method: "health", received: received, .healthResponse(health), log: false)
            return
        case .cancelRequest(let target):
            if let task = inFlight[target] {
                task.cancel()
                reply(id, method: "cancel", received: received, .status(Wire.Status(.ok, "call \(target) cancelled")))
            } else {
                reply(id, method: "cancel", received: received,
                      .status(Wire.Status(.notFound, "no call \(target) in flight on this connection")))
            }
            return
        case .rerankRequest, .tokenizeRequest, .modelInfoRequest:
            break
        case .unknown, .rerankResponse, .rerankPartial, .tokenizeResponse, .modelInfoResponse, .healthResponse, .status:
            fail(id, method: frame.body.method, received: received, Wire.Status(.unimplemented,
                "not a request this server handles (it speaks sift.v1, protocol version \(Wire.protocolVersion)): send rerank_request, tokenize_request, model_info_request, health_request or cancel_request"))
            return
        }
        let method = frame.body.method
        guard id != 0 else {
            return fail(0, method: method, received: received, Wire.Status(.invalidArgument, "request_id 0 is reserved: number calls from 1"))
        }
        guard inFlight[id] == nil else {
            return fail(id, method: method, received: received,
                        Wire.Status(.invalidArgument, "request_id \(id) is already in flight on this connection: use a new id per call"))
        }
        let calls: Calls
        do {
            calls = try lifecycle.admit(authorization: frame.metadata("authorization"), keyHint: "metadata authorization: Bearer <key>")
        } catch {
            return fail(id, method: method, received: received, error)
        }
        guard inFlight.count < options.maxInFlightPerConnection else {
            return fail(id, method: method, received: received, Wire.Status(.resourceExhausted,
                "\(inFlight.count) calls in flight on this connection (limit \(options.maxInFlightPerConnection)): wait for answers or open another connection"))
        }
        start(id, frame.body, calls: calls, received: received)
    }

    /// Runs a call in a Task; its answer comes back through the event loop.
    private func start(_ id: UInt64, _ body: Wire.Body, calls: Calls, received: ContinuousClock.Instant) {
        guard let context else { return }
        let loop = NIOLoopBound(self, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let method = body.method
        let channel = context.channel
        let streams = if case .rerankRequest(let r) = body { r.stream } else { false }
        let sendPartial: @Sendable ([Wire.RerankResult]) -> Void = { results in
            eventLoop.execute { loop.value.send(Wire.Frame(requestID: id, body: .rerankPartial(results))) }
        }
        let partial = streams ? sendPartial : nil
        var admitted: Calls.AdmittedRerank?
        if case .rerankRequest(let r) = body {
            // Admitted as it arrives, before it waits for a thread (see `RerankService.admit`).
            let details: Logger.Metadata = ["documents": "\(r.documents.count)"]
            let model: ServedModels.Model
            do { model = try calls.models.resolve(r.model) } catch {
                return reply(id, method: method, received: received, .status(error), details: details)
            }
            do { admitted = try calls.admitRerank(r, model: model, receivedAt: received, partial: partial) } catch {
                return reply(id, method: method, received: received, .status(error), details: details, model: model.name)
            }
        }
        lifecycle.started(on: channel)
        let finish: @Sendable (Answer) -> Void = { answer in
            eventLoop.execute { loop.value.finish(id, method: method, received: received, answer, channel: channel) }
        }
        let task = Task {
            finish(await ConnectionHandler.perform(body, admitted: admitted, calls: calls))
        }
        inFlight[id] = task
    }

    /// A call's final frame, what to log about it and the model that answered it.
    struct Answer: Sendable {
        var body: Wire.Body
        var details: Logger.Metadata = [:]
        var model: String?
    }

    /// The work of one call, off the event loop.
    private static func perform(_ body: Wire.Body, admitted: Calls.AdmittedRerank?, calls: Calls) async -> Answer {
        var answer = Answer(body: .status(Wire.Status(.internal, "unexpected call \(body.method)")))
        do {
            switch body {
            case .rerankRequest(let r):
                answer.details["documents"] = "\(r.documents.count)"
                guard let admitted else { break }
                answer.model = admitted.model.name
                let outcome = try await calls.rerank(admitted)
                answer.body = .rerankResponse(outcome.response)
                answer.details = CallLifecycle.details(outcome)
            case .tokenizeRequest(let r):
                answer.details["texts"] = "\(r.texts.count)"
                answer.body = .tokenizeResponse(try calls.tokenize(r))
            case .modelInfoRequest(let model):
                answer.body = .modelInfoResponse(try calls.modelInfo(model: model))
            default:
                break
            }
        } catch let status as Wire.Status {
            answer.body = .status(status)
        } catch {
            answer.body = .status(Wire.Status(.internal, "\(error)"))
        }
        return answer
    }

    private func finish(_ id: UInt64, method: String, received: ContinuousClock.Instant, _ answer: Answer, channel: any Channel) {
        inFlight.removeValue(forKey: id)
        lifecycle.ended(on: channel)
        reply(id, method: method, received: received, answer.body, details: answer.details, model: answer.model)
        context?.flush()
    }

    private func fail(_ id: UInt64, method: String, received: ContinuousClock.Instant, _ status: Wire.Status) {
        reply(id, method: method, received: received, .status(status))
    }

    /// Sends a call's final frame, logs it and counts it.
    private func reply(_ id: UInt64, method: String, received: ContinuousClock.Instant, _ answer: Wire.Body,
                       details: Logger.Metadata = [:], model: String? = nil, log: Bool = true) {
        send(Wire.Frame(requestID: id, body: answer), flush: false)
        var details = details
        details["request_id"] = "\(id)"
        if case .status(let s) = answer {
            lifecycle.answered(method: method, s.code, error: s.message, model: model, received: received, details: details, logger: logger, log: log)
        } else {
            lifecycle.answered(method: method, .ok, model: model, received: received, details: details, logger: logger, log: log)
        }
    }

    func send(_ frame: Wire.Frame, flush: Bool = true) {
        guard let context else { return }
        if flush {
            context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        } else {
            context.write(wrapOutboundOut(frame), promise: nil)
        }
    }
}
