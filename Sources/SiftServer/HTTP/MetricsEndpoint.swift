import NIOCore
import NIOHTTP1

/// `GET /metrics` (Prometheus text format) and `GET /health` on the metrics port.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let render: @Sendable () -> (serving: Bool, body: [UInt8])
    private var path = ""
    private var method = HTTPMethod.GET
    private var keepAlive = false

    init(render: @escaping @Sendable () -> (serving: Bool, body: [UInt8])) { self.render = render }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
            method = head.method
            keepAlive = head.isKeepAlive
        case .body:
            break  // ignored, never buffered
        case .end:
            context.triggerUserOutboundEvent(HTTPRequestGuard.RequestArrived(), promise: nil)
            respond(context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func respond(_ context: ChannelHandlerContext) {
        let status: HTTPResponseStatus
        var body: [UInt8]
        var contentType = "text/plain; charset=utf-8"
        switch (method, path) {
        case (.GET, "/metrics"):
            status = .ok
            body = render().body
            contentType = "text/plain; version=0.0.4; charset=utf-8"
        case (.GET, "/health"):
            let serving = render().serving
            status = serving ? .ok : .serviceUnavailable
            body = Array((serving ? "SERVING\n" : "NOT_SERVING\n").utf8)
        default:
            status = .notFound
            body = Array("not found: GET /metrics or /health\n".utf8)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.count)")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let keepAlive = self.keepAlive
        context.triggerUserOutboundEvent(HTTPRequestGuard.ResponseSent(), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
