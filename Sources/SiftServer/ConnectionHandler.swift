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
    /// The API keys accepted now (SIGHUP reloads them from `--api-key-file`).
    let keys: Locked<APIKeys>
    /// Every open connection, on all ports, under one limit.
    let registry: ConnectionRegistry
    /// Bytes held for requests still arriving, over all connections.
    let buffers: BufferBudget
    /// Answer bytes held for peers, over all connections.
    let unsent: UnsentBytes
    /// Where Tokenize calls run, under a bound on their text.
    let tokenizeLane: TokenizeLane
    /// Lines about hostile input pass at a bounded rate.
    let logLimiter = LogLimiter()
    /// So do the lines logged per call (a flood of cheap calls cannot flood the log).
    let callLogLimiter = LogLimiter(perSecond: 100)

    init(options: ServerOptions) {
        keys = Locked(options.apiKeys)
        registry = ConnectionRegistry(limit: options.effectiveMaxConnections)
        buffers = BufferBudget(limit: options.maxBufferedBytes)
        unsent = UnsentBytes(limit: options.maxUnsentBytes)
        tokenizeLane = TokenizeLane(limitBytes: 2 * options.maxFrameBytes)
    }

    /// A connection's outbound gate (see `OutboundGate`).
    func makeOutboundGate(options: ServerOptions, logger: Logger) -> OutboundGate {
        OutboundGate(limit: options.maxUnsentBytesPerConnection, server: unsent, timeout: options.sendTimeout,
                     logger: logger, limiter: logLimiter)
    }

    var currentModels: ServedModels? { models.withLock { $0 } }
    /// Serving: loaded, not draining, and no model's file changed under it.
    var isServing: Bool {
        guard !draining.load(ordering: .relaxed), let models = currentModels else { return false }
        return models.models.allSatisfy { $0.service.fault == nil }
    }

    /// The API key check, made once per call as its first bytes arrive (`keyHint` says how to
    /// send a key); the verdict travels with the call.
    func authorize(authorization: String?, keyHint: String) throws(Wire.Status) -> Caller {
        guard let caller = keys.withLock({ $0 }).caller(authorization: authorization) else {
            throw Wire.Status(.unauthenticated, authorization == nil
                ? "this server needs an API key: send \(keyHint)"
                : "API key not accepted (send \(keyHint))")
        }
        return caller
    }

    /// The checks every authorized call passes, on either front door, before it reaches the
    /// engine: shutdown, model still loading.
    func admit() throws(Wire.Status) -> ServedModels {
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
/// of order under their request ids), cancels them on Cancel frames or when the client closes.
/// A client that half-closes (shuts its sending side) still gets the answers of the calls it
/// sent; the connection closes once they are written. TCP shows a half-close and a close alike,
/// so while such calls run the server sends a Health frame under request id 0 every half
/// second (informational; clients ignore it): a client that had closed answers it with a
/// reset, and its calls are cancelled as on any disconnect.
/// Event-loop confined; calls run in Tasks and hop back to the loop to answer.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ReceivedFrame
    typealias OutboundOut = Wire.Frame

    /// Frames larger than this are decoded off the event loop, in their call's Task.
    static let inlineDecodeBytes = 64 << 10

    private let state: ServerState
    private let metrics: ServerMetrics
    private let options: ServerOptions
    private let lifecycle: CallLifecycle
    private let gate: OutboundGate
    private var logger: Logger
    private var context: ChannelHandlerContext?
    /// Calls in flight (being decoded or running), by request id.
    private var inFlight: [UInt64: Task<Void, Never>] = [:]
    /// The client shut its sending side: close once the calls in flight are answered.
    private var inputClosed = false
    /// The last frame written (a half-closed connection closes once it is sent).
    private var lastWrite: EventLoopFuture<Void>?
    /// Calls still being decoded, and those of them cancelled meanwhile (a Cancel frame).
    private var decoding: Set<UInt64> = []
    private var cancelledWhileDecoding: Set<UInt64> = []
    /// The connection is gone: nothing more starts.
    private var closed = false

    init(state: ServerState, metrics: ServerMetrics, options: ServerOptions, logger: Logger, gate: OutboundGate) {
        self.state = state
        self.metrics = metrics
        self.options = options
        self.logger = logger
        self.gate = gate
        lifecycle = CallLifecycle(state: state, metrics: metrics, options: options)
    }

    /// The checks `FrameReader` runs on a frame's envelope, before the frame is buffered whole
    /// (the key) or decoded (the document count); the caller its key names travels with the
    /// frame. Health and Cancel need no key (their caller is nil).
    static func screen(_ envelope: Envelope, state: ServerState, options: ServerOptions) -> Result<Caller?, Wire.Status> {
        guard let field = envelope.bodyField else { return .success(nil) }  // the decoder will say what is wrong
        var caller: Caller?
        if field != Envelope.Field.healthRequest && field != Envelope.Field.cancelRequest {
            do {
                caller = try state.authorize(authorization: envelope.metadata("authorization"), keyHint: "metadata authorization: Bearer <key>")
            } catch {
                return .failure(error)
            }
        }
        if envelope.isComplete, field == Envelope.Field.rerankRequest || field == Envelope.Field.tokenizeRequest,
           let limit = state.currentModels?.maxDocuments, envelope.items > limit {
            let what = field == Envelope.Field.rerankRequest ? "documents" : "texts"
            return .failure(Wire.Status(.invalidArgument, "\(envelope.items) \(what); at most \(limit) per request: split the request"))
        }
        return .success(caller)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        logger[metadataKey: "peer"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
    }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelInactive(context: ChannelHandlerContext) {
        // The client is gone: the work of its calls would be wasted, stop it.
        closed = true
        if !inFlight.isEmpty {
            logger.info("client disconnected; cancelling its calls in flight", metadata: ["calls": "\(inFlight.count)"])
        }
        for task in inFlight.values { task.cancel() }
        cancelledWhileDecoding.formUnion(decoding)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let incoming = unwrapInboundIn(data)
        let envelope = incoming.envelope
        if incoming.body.readableBytes > Self.inlineDecodeBytes, let field = envelope.bodyField,
           [Envelope.Field.rerankRequest, Envelope.Field.tokenizeRequest].contains(field) {
            return decodeOffLoop(incoming, method: field == Envelope.Field.rerankRequest ? "rerank" : "tokenize")
        }
        let frame: Wire.Frame
        do {
            frame = try Framing.decode(incoming.body)
        } catch {
            return malformed(error)
        }
        handle(frame, received: incoming.received, caller: incoming.caller)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read, inFlight.isEmpty {
            logger.debug("closing idle connection")
            context.close(promise: nil)
        } else if case ChannelEvent.inputClosed = event {
            // `FrameReader` passes this on once every whole frame it held was delivered.
            inputClosed = true
            probePeer()
            closeIfDone()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Framing errors are answered by FrameReader; what reaches here is the socket's or TLS's.
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    /// After a half-close, while calls run: is the peer still there? (See the type's comment.)
    private func probePeer() {
        guard inputClosed, !closed, !inFlight.isEmpty, let context else { return }
        send(Wire.Frame(requestID: 0, body: .healthResponse(Wire.Health(status: state.isServing ? .serving : .notServing))))
        let loop = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .milliseconds(500)) { loop.value.probePeer() }
    }

    /// After a half-close: once the last answer is written, the connection ends.
    private func closeIfDone() {
        guard inputClosed, inFlight.isEmpty, let context else { return }
        context.flush()
        guard let lastWrite else { return context.close(promise: nil) }
        // The write completes on this channel's loop: the context stays on it.
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        lastWrite.whenComplete { _ in bound.value.close(promise: nil) }
    }

    private func malformed(_ error: any Error) {
        // The framing is intact, so the connection stays usable.
        metrics.protocolErrors.increment()
        let id = (error as? ProtocolError)?.requestID ?? 0
        state.logLimiter.log(logger, .notice, "malformed frame", metadata: ["request_id": "\(id)", "error": LogText.quoted("\(error)")])
        send(Wire.Frame(requestID: id, body: .status(Wire.Status(.invalidArgument, "malformed frame: \(error)"))))
    }

    // MARK: - Calls

    /// Whether a call may start under `id`: non-zero, not in flight, under the in-flight limit.
    /// A refusal is sent here; a reused id is refused under request id 0, so the call already
    /// in flight under it still gets exactly one final frame.
    private func admitID(_ id: UInt64, method: String, received: ContinuousClock.Instant) -> Bool {
        guard id != 0 else {
            fail(0, method: method, received: received, Wire.Status(.invalidArgument, "request_id 0 is reserved: number calls from 1"))
            return false
        }
        guard inFlight[id] == nil else {
            fail(0, method: method, received: received,
                 Wire.Status(.invalidArgument, "request_id \(id) is already in flight on this connection: use a new id per call (the call in flight goes on)"))
            return false
        }
        guard inFlight.count < options.maxInFlightPerConnection else {
            fail(id, method: method, received: received, Wire.Status(.resourceExhausted,
                "\(inFlight.count) calls in flight on this connection (limit \(options.maxInFlightPerConnection)): wait for answers or open another connection"))
            return false
        }
        return true
    }

    /// A large call frame: its id is taken now, its bytes are decoded in a Task, and the call
    /// goes on on the event loop (as a small frame would) once decoded.
    private func decodeOffLoop(_ incoming: ReceivedFrame, method: String) {
        guard let context else { return }
        let id = incoming.envelope.requestID
        guard admitID(id, method: method, received: incoming.received) else { return }
        let loop = NIOLoopBound(self, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let body = incoming.body
        decoding.insert(id)
        // Its answer's room is held from now: frames decoded later must not slip past the gate.
        let held = Calls.expectedAnswerBytes(frameBytes: body.readableBytes, items: incoming.envelope.items,
                                             field: incoming.envelope.bodyField, maxFrameBytes: options.maxFrameBytes)
        gate.commit(held)
        inFlight[id] = Task {
            let decoded = Result { try Framing.decode(body) }
            let cancelled = Task.isCancelled
            eventLoop.execute {
                loop.value.decoded(id, decoded, cancelled: cancelled, received: incoming.received, caller: incoming.caller,
                                   method: method, held: held)
            }
        }
    }

    private func decoded(_ id: UInt64, _ decoded: Result<Wire.Frame, any Error>, cancelled: Bool,
                         received: ContinuousClock.Instant, caller: Caller?, method: String, held: Int) {
        inFlight.removeValue(forKey: id)
        decoding.remove(id)
        defer {
            // The call (if it started) now holds its exact answer's room instead.
            gate.release(held)
            context?.flush()
            closeIfDone()
        }
        if cancelled || cancelledWhileDecoding.remove(id) != nil || closed {
            // Counted under the model it named, as a call cancelled while running is.
            let name = if case .success(let f) = decoded { f.body.modelName } else { "" }
            let model = try? state.currentModels?.resolve(name).name
            return reply(id, method: method, received: received, .status(Wire.Status(.cancelled, "the call was cancelled")), model: model)
        }
        switch decoded {
        case .success(let frame): handle(frame, received: received, caller: caller)
        case .failure(let error): malformed(error)
        }
    }

    /// `caller`: who the frame's key names (`screen`'s verdict; nil for Health and Cancel).
    private func handle(_ frame: Wire.Frame, received: ContinuousClock.Instant, caller: Caller?) {
        let id = frame.requestID
        switch frame.body {
        case .healthRequest:
            // No key needed: load balancers probe it.
            let health = state.currentModels.map { models in
                Wire.Health(status: state.isServing ? .serving : .notServing, activeRequests: UInt32(clamping: models.activeRequests),
                            queuedTokens: UInt64(models.queuedTokens))
            } ?? Wire.Health(status: .notServing)
            reply(id, method: "health", received: received, .healthResponse(health), log: false)
            return
        case .cancelRequest(let target):
            if target == id, let task = inFlight[target] {
                // A Cancel under its target's own id: the target's CANCELLED is the one final frame.
                task.cancel()
                if decoding.contains(target) { cancelledWhileDecoding.insert(target) }
            } else if inFlight[id] != nil {
                _ = admitID(id, method: "cancel", received: received)
            } else if let task = inFlight[target] {
                task.cancel()
                if decoding.contains(target) { cancelledWhileDecoding.insert(target) }
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
        guard admitID(id, method: method, received: received) else { return }
        let calls: Calls
        do throws(Wire.Status) {
            // The frame reader checked the key (`screen`) before the frame was buffered.
            guard let caller else { throw Wire.Status(.internal, "a \(method) call reached the server unscreened") }
            calls = try lifecycle.admit(caller, model: frame.body.modelName)
        } catch {
            return fail(id, method: method, received: received, error)
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
            do { admitted = try calls.admitRerank(r, receivedAt: received, partial: partial) } catch {
                return reply(id, method: method, received: received, .status(error), details: ["documents": "\(r.documents.count)"],
                             model: calls.model.name)
            }
        }
        // The answer's room, held at the gate until the answer is written.
        let answerBytes = Calls.expectedAnswerBytes(body, maxFrameBytes: options.maxFrameBytes)
        gate.commit(answerBytes)
        lifecycle.started(on: channel)
        let finish: @Sendable (Answer) -> Void = { answer in
            eventLoop.execute { loop.value.finish(id, method: method, received: received, answer, answerBytes: answerBytes, channel: channel) }
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
        var answer = Answer(body: .status(Wire.Status(.internal, "unexpected call \(body.method)")), model: calls.model.name)
        do {
            switch body {
            case .rerankRequest(let r):
                answer.details["documents"] = "\(r.documents.count)"
                guard let admitted else { break }
                let outcome = try await calls.rerank(admitted)
                answer.body = .rerankResponse(outcome.response)
                answer.details = CallLifecycle.details(outcome)
            case .tokenizeRequest(let r):
                answer.details["texts"] = "\(r.texts.count)"
                answer.body = .tokenizeResponse(try await calls.tokenize(r))
            case .modelInfoRequest:
                answer.body = .modelInfoResponse(calls.modelInfo())
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

    private func finish(_ id: UInt64, method: String, received: ContinuousClock.Instant, _ answer: Answer, answerBytes: Int,
                        channel: any Channel) {
        inFlight.removeValue(forKey: id)
        lifecycle.ended(on: channel)
        reply(id, method: method, received: received, answer.body, details: answer.details, model: answer.model)
        context?.flush()
        // Written (now counted as unsent) or dropped with the connection: its room goes back.
        gate.release(answerBytes)
        closeIfDone()
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
        lastWrite = flush ? context.writeAndFlush(wrapOutboundOut(frame)) : context.write(wrapOutboundOut(frame))
    }
}

extension Wire.Body {
    /// The model a call names ("" for the default, and for calls that name none).
    var modelName: String {
        switch self {
        case .rerankRequest(let r): r.model
        case .tokenizeRequest(let r): r.model
        case .modelInfoRequest(let model): model
        default: ""
        }
    }
}
