import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SiftEngine
import SiftProtocol
import SiftBase

/// The HTTP/JSON API (`--http-port`): `POST /v1/rerank` and `/v2/rerank` in the Cohere and Jina
/// shapes, `GET /health`. Same engine, API keys (`Authorization: Bearer`), limits and statuses as
/// the binary protocol. One request at a time per connection (HTTP/1.1); a client that
/// disconnects cancels its call.
final class HTTPAPIHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: ServerState
    private let metrics: ServerMetrics
    private let options: ServerOptions
    private var logger: Logger
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()
    private var tooLarge = false
    private var call: Task<Void, Never>?
    private var received = ContinuousClock.now

    init(state: ServerState, metrics: ServerMetrics, options: ServerOptions, logger: Logger) {
        self.state = state
        self.metrics = metrics
        self.options = options
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        logger[metadataKey: "peer"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
    }

    func channelInactive(context: ChannelHandlerContext) {
        call?.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            received = ContinuousClock.now
            body.clear()
            tooLarge = false
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > options.maxFrameBytes {
                tooLarge = true
            } else if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
        case .body(var chunk):
            if tooLarge { return }
            if body.readableBytes + chunk.readableBytes > options.maxFrameBytes {
                tooLarge = true
                body.clear()
            } else {
                body.writeBuffer(&chunk)
            }
        case .end:
            guard let head else { return }
            route(context, head)
        }
    }

    private func route(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
        switch (head.method, path) {
        case (.GET, "/health"), (.GET, "/v1/health"):
            let serving = state.isServing
            respond(context, status: serving ? 200 : 503, json: Data(#"{"status":"\#(serving ? "SERVING" : "NOT_SERVING")"}"#.utf8))
        case (.POST, "/v1/rerank"), (.POST, "/v2/rerank"), (.POST, "/rerank"):
            rerank(context, head, apiVersion: path.hasPrefix("/v2") ? "2" : "1")
        case (_, "/v1/rerank"), (_, "/v2/rerank"), (_, "/rerank"), (_, "/health"):
            fail(context, method: "http", status: 405, Wire.Status(.unimplemented, "\(head.method) is not allowed here: POST /v1/rerank or /v2/rerank, GET /health"))
        default:
            fail(context, method: "http", status: 404, Wire.Status(.notFound, "no such endpoint \(path): POST /v1/rerank or /v2/rerank, GET /health"))
        }
    }

    private func rerank(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, apiVersion: String) {
        let method = "http_rerank"
        if tooLarge {
            return fail(context, method: method, status: 413, Wire.Status(.resourceExhausted,
                "request body over the limit of \(options.maxFrameBytes) bytes: send fewer or shorter documents"))
        }
        let engine: SiftEngine
        do {
            engine = try state.admit(authorization: head.headers.first(name: "authorization"), keys: options.apiKeys,
                                     keyHint: "the header Authorization: Bearer <key>")
        } catch {
            return fail(context, method: method, status: HTTPRerankAPI.httpStatus(error.code), error)
        }
        let request: Wire.RerankRequest
        let model: String?
        do {
            (request, model) = try HTTPRerankAPI.decode(Data(body.readableBytesView))
        } catch let status as Wire.Status {
            return fail(context, method: method, status: 400, status)
        } catch {
            return fail(context, method: method, status: 400, Wire.Status(.invalidArgument, "\(error)"))
        }
        let calls = Calls(engine: engine, options: options)
        let loop = NIOLoopBound(self, eventLoop: context.eventLoop)
        let contextBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let received = self.received
        state.inFlight.add(1, ordering: .relaxed)
        metrics.inFlight.increment()
        let finish: @Sendable (Result<Calls.RerankOutcome, Wire.Status>) -> Void = { outcome in
            eventLoop.execute {
                let handler = loop.value
                handler.call = nil
                handler.state.inFlight.subtract(1, ordering: .relaxed)
                handler.metrics.inFlight.decrement()
                switch outcome {
                case .success(let o):
                    handler.respond(contextBound.value, status: 200,
                                    json: HTTPRerankAPI.encode(o.response, model: model, apiVersion: apiVersion))
                    handler.log(method: method, code: .ok, documents: request.documents.count)
                case .failure(let status):
                    handler.fail(contextBound.value, method: method, status: HTTPRerankAPI.httpStatus(status.code), status,
                                 documents: request.documents.count)
                }
            }
        }
        call = Task {
            do {
                finish(.success(try await calls.rerank(request, receivedAt: received, partial: nil)))
            } catch let status as Wire.Status {
                finish(.failure(status))
            } catch {
                finish(.failure(Wire.Status(.internal, "\(error)")))
            }
        }
    }

    private func fail(_ context: ChannelHandlerContext, method: String, status: Int, _ s: Wire.Status, documents: Int? = nil) {
        let body = (try? JSONEncoder().encode(HTTPRerankAPI.ErrorBody(message: s.message, code: s.code.name))) ?? Data()
        respond(context, status: status, json: body)
        log(method: method, code: s.code, documents: documents, error: s.message)
    }

    private func log(method: String, code: Wire.Code, documents: Int?, error: String? = nil) {
        let duration = ContinuousClock.now - received
        metrics.record(method: method, code: code, duration: duration)
        var metadata: Logger.Metadata = ["method": "\(method)", "status": "\(code.name)",
                                         "duration_ms": "\(String(format: "%.1f", duration.milliseconds))"]
        if let documents { metadata["documents"] = "\(documents)" }
        if let error {
            metadata["error"] = "\(error)"
            logger.log(level: code == .internal ? .error : .notice, "http call failed", metadata: metadata)
        } else {
            logger.info("http call", metadata: metadata)
        }
    }

    private func respond(_ context: ChannelHandlerContext, status: Int, json: Data) {
        let keepAlive = head?.isKeepAlive ?? false
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(json.count)")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let version = head?.version ?? .http1_1
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: status), headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: json)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
        head = nil
        body.clear()
    }
}
