import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SiftEngine
import SiftProtocol
import SiftBase

/// The HTTP/JSON API (`--http-port`): `POST /v1/rerank` and `/v2/rerank` in the Cohere and Jina
/// shapes, `POST /rerank` in those or Text Embeddings Inference's (a body with "texts"),
/// `GET /health`. Same engine, API keys (`Authorization: Bearer`), limits and statuses as
/// the binary protocol. Requests on one connection are answered one at a time and in order
/// (pipelined ones wait in NIO's pipelining handler); a client that disconnects cancels its call.
/// A request refused before its body is read (too large, no key, no room to buffer it) is
/// answered at once and the connection closed, since the rest of its body cannot be skipped.
/// A request that arrives while the connection's `OutboundGate` is shut (its client is not
/// reading its answers) waits until it opens. Bodies over 64 KiB are decoded off the event loop.
final class HTTPAPIHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// What a response needs of its request (captured at its head: a pipelined request may
    /// arrive while the previous response is being written).
    struct RequestInfo {
        var head: HTTPRequestHead
        var received: ContinuousClock.Instant
        /// Who the Authorization header names, checked as the head arrived (rerank calls only).
        var caller: Caller?
        var keepAlive: Bool { head.isKeepAlive }
    }

    private let state: ServerState
    private let metrics: ServerMetrics
    private let options: ServerOptions
    private let lifecycle: CallLifecycle
    private var logger: Logger
    /// Where the request being read is: idle → receiving (its head read, its body arriving into
    /// `body`) → idle once it is whole and routed, or → waitingForGate (whole, while the client
    /// is not taking its answers) → idle when the gate opens; or → refused (answered before its
    /// end; the rest is ignored and the connection closes).
    private enum Receiving {
        case idle
        case receiving(RequestInfo)
        case waitingForGate(RequestInfo, ByteBuffer)
        case refused
    }

    private var receiving = Receiving.idle
    private var body = ByteBuffer()
    private var held = 0
    private var call: Task<Void, Never>?
    private let gate: OutboundGate
    /// The connection is gone: a body still being decoded starts no call.
    private var closed = false

    /// Bodies larger than this are decoded off the event loop.
    static let inlineDecodeBytes = 64 << 10

    init(state: ServerState, metrics: ServerMetrics, options: ServerOptions, logger: Logger, gate: OutboundGate) {
        self.gate = gate
        self.state = state
        self.metrics = metrics
        self.options = options
        self.logger = logger
        lifecycle = CallLifecycle(state: state, metrics: metrics, options: options)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        logger[metadataKey: "peer"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
    }

    func handlerRemoved(context: ChannelHandlerContext) { release() }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        call?.cancel()
        release()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read, call == nil, case .idle = receiving {
            context.close(promise: nil)
        } else if event is OutboundGate.Opened {
            if case .waitingForGate(let info, let payload) = receiving {
                receiving = .idle
                route(context, info, payload)
            }
            context.fireUserInboundEventTriggered(event)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError {
            // NIO's error handler has answered 400 with Connection: close; keep the promise.
            state.logLimiter.log(logger, .notice, "unparsable HTTP request; closing", metadata: ["error": "\(error)"])
            metrics.protocolErrors.increment()
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.eventLoop.execute { bound.value.close(promise: nil) }
        } else {
            context.fireErrorCaught(error)
        }
    }


    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            var info = RequestInfo(head: head, received: .now)
            receiving = .receiving(info)
            body.clear()
            if head.method == .POST, Self.path(head.uri).hasSuffix("rerank") {
                if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > options.maxFrameBytes {
                    return refuseEarly(context, info, status: 413, Wire.Status(.resourceExhausted,
                        "request body of \(length) bytes is over the limit of \(options.maxFrameBytes) bytes: send fewer or shorter documents"))
                }
                do {
                    info.caller = try state.authorize(authorization: head.headers.first(name: "authorization"),
                                                      keyHint: "the header Authorization: Bearer <key>")
                    receiving = .receiving(info)
                } catch {
                    return refuseEarly(context, info, status: 401, error)
                }
            }
            if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
        case .body(var chunk):
            guard case .receiving(let info) = receiving else { return }
            let wanted = body.readableBytes + chunk.readableBytes
            guard wanted <= options.maxFrameBytes else {
                return refuseEarly(context, info, status: 413, Wire.Status(.resourceExhausted,
                    "request body over the limit of \(options.maxFrameBytes) bytes: send fewer or shorter documents"))
            }
            guard state.buffers.adjust(from: held, to: wanted) else {
                return refuseEarly(context, info, status: 503, Wire.Status(.resourceExhausted,
                    "the server is holding \(state.buffers.bytes >> 20) MiB of requests still arriving (its limit, --max-buffered-mb): retry shortly"))
            }
            held = wanted
            body.writeBuffer(&chunk)
        case .end:
            guard case .receiving(let info) = receiving else { return }
            context.triggerUserOutboundEvent(HTTPRequestGuard.RequestArrived(), promise: nil)
            let payload = body
            body = ByteBuffer()
            release()
            if gate.isOpen {
                receiving = .idle
                route(context, info, payload)
            } else {
                receiving = .waitingForGate(info, payload)
            }
        }
    }

    /// Drops the buffered body's claim on the server-wide budget.
    private func release() {
        _ = state.buffers.adjust(from: held, to: 0)
        held = 0
    }

    static func path(_ uri: String) -> String { String(uri.split(separator: "?", maxSplits: 1).first ?? "") }

    /// Answers a request before its end and closes the connection (its remaining bytes are not read).
    private func refuseEarly(_ context: ChannelHandlerContext, _ info: RequestInfo, status: Int, _ s: Wire.Status) {
        receiving = .refused
        body = ByteBuffer()
        release()
        var closing = info
        closing.head.headers.replaceOrAdd(name: "connection", value: "close")
        fail(context, closing, method: "http_rerank", status: status, s)
    }

    private func route(_ context: ChannelHandlerContext, _ info: RequestInfo, _ payload: ByteBuffer) {
        let path = Self.path(info.head.uri)
        switch (info.head.method, path) {
        case (.GET, "/health"), (.GET, "/v1/health"):
            let serving = state.isServing
            // Counted like the RPC port's Health, not logged (balancers probe it often).
            lifecycle.answered(method: "http_health", serving ? .ok : .unavailable, received: info.received, logger: logger, log: false)
            respond(context, info, status: serving ? 200 : 503, json: Data(#"{"status":"\#(serving ? "SERVING" : "NOT_SERVING")"}"#.utf8))
        case (.GET, "/info"):
            guard let models = state.currentModels else {
                return fail(context, info, method: "http_info", status: 503, Wire.Status(.unavailable, "the model is still loading: retry in a few seconds"))
            }
            lifecycle.answered(method: "http_info", .ok, received: info.received, logger: logger, log: false)
            respond(context, info, status: 200, json: TEIRerankAPI.info(models, options: options))
        case (.POST, "/v1/rerank"), (.POST, "/v2/rerank"), (.POST, "/rerank"):
            let body: Data
            do {
                body = try JSONScan.utf8Body(Data(payload.readableBytesView))
            } catch {
                return fail(context, info, method: "http_rerank", status: 400, error)
            }
            let dialect: Dialect = path == "/rerank" && TEIRerankAPI.matches(body) ? .tei : .cohere(apiVersion: path.hasPrefix("/v2") ? "2" : "1")
            rerank(context, info, body, dialect: dialect)
        case (_, "/v1/rerank"), (_, "/v2/rerank"), (_, "/rerank"), (_, "/health"), (_, "/info"):
            fail(context, info, method: "http", status: 405, Wire.Status(.unimplemented, "\(info.head.method) is not allowed here: POST /v1/rerank, /v2/rerank or /rerank, GET /health or /info"))
        default:
            let shown = path.count > 100 ? path.prefix(100) + "…" : Substring(path)
            fail(context, info, method: "http", status: 404, Wire.Status(.notFound, "no such endpoint \(shown): POST /v1/rerank, /v2/rerank or /rerank, GET /health or /info"))
        }
    }

    /// The JSON shape a rerank request came in, and its response goes out in.
    enum Dialect {
        case cohere(apiVersion: String)  // Cohere v1/v2 and Jina
        case tei                         // Text Embeddings Inference
    }

    private func rerank(_ context: ChannelHandlerContext, _ info: RequestInfo, _ body: Data, dialect: Dialect) {
        let method = "http_rerank"
        let tei = if case .tei = dialect { true } else { false }
        // Admitted once decoded (the body names the model); meanwhile the document limit in force.
        let maxDocuments = state.currentModels?.maxDocuments ?? EngineOptions().maxDocuments
        let decode: @Sendable () -> Result<(Wire.RerankRequest, TEIRerankAPI.Options), Wire.Status> = {
            Result {
                switch dialect {
                case .cohere: (try HTTPRerankAPI.decode(body, maxDocuments: maxDocuments), TEIRerankAPI.Options())
                case .tei: try TEIRerankAPI.decode(body, maxDocuments: maxDocuments)
                }
            }.mapError { $0 as? Wire.Status ?? Wire.Status(.invalidArgument, "\($0)") }
        }
        guard body.count > Self.inlineDecodeBytes else {
            return start(context, info, decode(), dialect: dialect)
        }
        // A large body is decoded off the event loop; the call goes on here after.
        let loop = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        call = Task {
            let decoded = decode()
            eventLoop.execute {
                let (handler, context) = loop.value
                handler.call = nil
                handler.start(context, info, decoded, dialect: dialect)
            }
        }
    }

    /// A decoded rerank request: admitted (draining, loading, its model resolved), then run in a Task.
    private func start(_ context: ChannelHandlerContext, _ info: RequestInfo,
                       _ decodedBody: Result<(Wire.RerankRequest, TEIRerankAPI.Options), Wire.Status>,
                       dialect: Dialect) {
        let method = "http_rerank"
        let tei = if case .tei = dialect { true } else { false }
        guard !closed else { return }
        let decoded: (Wire.RerankRequest, TEIRerankAPI.Options)
        switch decodedBody {
        case .success(let d): decoded = d
        case .failure(let status): return fail(context, info, method: method, status: 400, status, tei: tei)
        }
        let (request, teiOptions) = decoded
        let calls: Calls
        do throws(Wire.Status) {
            // The key was checked as the head arrived.
            guard let caller = info.caller else { throw Wire.Status(.internal, "a rerank call reached the server unscreened") }
            calls = try lifecycle.admit(caller, model: request.model)
        } catch {
            return fail(context, info, method: method, status: HTTPRerankAPI.httpStatus(error.code), error, tei: tei)
        }
        let model = calls.model
        let admitted: Calls.AdmittedRerank
        do {
            admitted = try calls.admitRerank(request, receivedAt: info.received, partial: nil)
        } catch {
            return fail(context, info, method: method, status: HTTPRerankAPI.httpStatus(error.code), error,
                        model: model.name, details: ["documents": "\(request.documents.count)"], tei: tei)
        }
        let loop = NIOLoopBound(self, eventLoop: context.eventLoop)
        let contextBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let channel = context.channel
        lifecycle.started(on: channel)
        // The answer is encoded in the call's Task (a large one would hold the event loop).
        let encode: @Sendable (Calls.RerankOutcome) -> Result<Data, Wire.Status> = { o in
            switch dialect {
            case .cohere(let apiVersion): .success(HTTPRerankAPI.encode(o.response, model: model.name, apiVersion: apiVersion))
            case .tei: Result { try TEIRerankAPI.encode(o.response, teiOptions) }.mapError { $0 as? Wire.Status ?? Wire.Status(.internal, "\($0)") }
            }
        }
        let finish: @Sendable (Result<(Data, Logger.Metadata), Wire.Status>) -> Void = { answer in
            eventLoop.execute {
                let handler = loop.value
                let context = contextBound.value
                handler.call = nil
                handler.lifecycle.ended(on: channel)
                switch answer {
                case .success(let (json, details)):
                    handler.log(info, method: method, code: .ok, model: model.name, details: details)
                    handler.respond(context, info, status: 200, json: json)
                case .failure(let status):
                    handler.fail(context, info, method: method, status: HTTPRerankAPI.httpStatus(status.code), status,
                                 model: model.name, details: ["documents": "\(request.documents.count)"], tei: tei)
                }
            }
        }
        call = Task {
            let outcome: Result<Calls.RerankOutcome, Wire.Status>
            do {
                outcome = .success(try await calls.rerank(admitted))
            } catch let status as Wire.Status {
                outcome = .failure(status)
            } catch {
                outcome = .failure(Wire.Status(.internal, "\(error)"))
            }
            finish(outcome.flatMap { o in encode(o).map { ($0, CallLifecycle.details(o)) } })
        }
    }

    /// Answers with an error in the request's dialect: `status` and Cohere's body, or (`tei`)
    /// TEI's own status and body for `s`.
    private func fail(_ context: ChannelHandlerContext, _ info: RequestInfo, method: String, status: Int, _ s: Wire.Status,
                      model: String? = nil, details: Logger.Metadata = [:], tei: Bool = false) {
        log(info, method: method, code: s.code, model: model, details: details, error: s.message)
        let (status, body) = tei ? TEIRerankAPI.error(s)
            : (status, (try? JSONEncoder().encode(HTTPRerankAPI.ErrorBody(s))) ?? Data())
        respond(context, info, status: status, json: body)
    }

    private func log(_ info: RequestInfo, method: String, code: Wire.Code, model: String? = nil, details: Logger.Metadata = [:],
                     error: String? = nil) {
        var details = details
        details["path"] = "\(Self.path(info.head.uri).prefix(100))"
        lifecycle.answered(method: method, code, error: error, model: model, received: info.received, details: details, logger: logger)
    }

    /// Writes one whole response. The end is written last: writing it may hand the next
    /// pipelined request to this handler at once.
    private func respond(_ context: ChannelHandlerContext, _ info: RequestInfo, status: Int, json: Data) {
        let keepAlive = info.keepAlive
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(json.count)")
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        } else if info.head.version.major == 1, info.head.version.minor == 0 {
            // HTTP/1.0 closes after each response unless the response says otherwise.
            headers.add(name: "Connection", value: "keep-alive")
        }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: info.head.version, status: HTTPResponseStatus(statusCode: status), headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: json)))), promise: nil)
        context.triggerUserOutboundEvent(HTTPRequestGuard.ResponseSent(), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
