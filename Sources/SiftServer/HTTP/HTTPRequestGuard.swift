import Logging
import NIOCore

/// Sits in front of the HTTP decoder and bounds how long one request may take to arrive: from
/// its first byte to its end (head and body) at most `timeout`, however slowly the bytes
/// trickle in. A request too slow is answered 408 and its connection closed. The handler
/// behind says when a request has arrived whole (`RequestArrived`) and when its response went
/// out (`ResponseSent`); bytes that come while a response is being computed (a pipelined
/// request) start the clock when that response is sent.
final class HTTPRequestGuard: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Outbound user events from the HTTP handler.
    struct RequestArrived {}
    struct ResponseSent {}

    private enum State {
        case idle
        case receiving(since: ContinuousClock.Instant)
        case responding(sawBytes: Bool)
    }

    private let timeout: TimeAmount
    private let registry: ConnectionRegistry
    private var logger: Logger
    private let limiter: LogLimiter
    private var state = State.idle
    private var deadline: Scheduled<Void>?

    init(timeout: Duration, registry: ConnectionRegistry, logger: Logger, limiter: LogLimiter) {
        self.limiter = limiter
        self.timeout = TimeAmount(timeout)
        self.registry = registry
        self.logger = logger
    }

    /// Answers a connection the server has no room for.
    static func refuse(_ channel: any Channel, _ message: String) {
        let body = message + "\n"
        let text = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" + body
        channel.writeAndFlush(channel.allocator.buffer(string: text)).whenComplete { _ in channel.close(promise: nil) }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        logger[metadataKey: "peer"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
    }

    func handlerRemoved(context: ChannelHandlerContext) { deadline?.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .idle: startClock(context)
        case .receiving: break
        case .responding: state = .responding(sawBytes: true)
        }
        context.fireChannelRead(data)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        switch event {
        case is RequestArrived:
            deadline?.cancel()
            state = .responding(sawBytes: false)
            registry.receiving(context.channel, since: nil)
            promise?.succeed(())
        case is ResponseSent:
            if case .responding(sawBytes: true) = state { startClock(context) } else { state = .idle }
            promise?.succeed(())
        default:
            context.triggerUserOutboundEvent(event, promise: promise)
        }
    }

    private func startClock(_ context: ChannelHandlerContext) {
        let now = ContinuousClock.now
        state = .receiving(since: now)
        registry.receiving(context.channel, since: now)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadline?.cancel()
        deadline = context.eventLoop.scheduleTask(in: timeout) {
            let (guardHandler, context) = bound.value
            guardHandler.timedOut(context)
        }
    }

    private func timedOut(_ context: ChannelHandlerContext) {
        guard case .receiving(let since) = state else { return }
        let seconds = timeout.nanoseconds / 1_000_000_000
        limiter.log(logger, .notice, "HTTP request not complete in time; closing",
                      metadata: ["seconds": "\(String(format: "%.1f", (ContinuousClock.now - since).seconds))"])
        let message = "the request did not arrive within \(seconds) s of its first byte (--frame-timeout)"
        let body = #"{"message":"\#(message)","detail":"\#(message)","code":"DEADLINE_EXCEEDED"}"#
        let text = "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        state = .responding(sawBytes: false)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text))).whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
