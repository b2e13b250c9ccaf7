import SiftBase
import NIOCore
import NIOPosix
import NIOSSL
import SiftProtocol
import Synchronization

/// One TCP connection to a Sift server, multiplexed: any number of calls in flight, each
/// answered under its own request id. Thread-safe. `SiftClient` adds reconnects, several
/// endpoints and typed calls on top.
public final class SiftConnection: Sendable {
    private let channel: any Channel
    private let pending: PendingCalls
    private let nextID = Atomic<UInt64>(1)

    private init(channel: any Channel, pending: PendingCalls) {
        self.channel = channel
        self.pending = pending
    }

    /// Opens a connection. Fails with `Wire.Status(.unavailable, …)` if nothing listens.
    public static func connect(host: String, port: Int, maxFrameBytes: Int = Framing.defaultMaxFrameBytes,
                               connectTimeout: Duration = .seconds(5), tls: NIOSSLContext? = nil,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> SiftConnection {
        // SNI takes a name, not an address; for an address the certificate is checked against it.
        let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        let serverHostname = isAddress ? nil : host
        let pending = PendingCalls()
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(TimeAmount(connectTimeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverHostname)) }
                    try pipeline.addHandler(MessageToByteHandler(FrameEncoder()))
                    try pipeline.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: maxFrameBytes)))
                    try pipeline.addHandler(ResponseHandler(pending: pending))
                }
            }
        do {
            let channel = try await bootstrap.connect(host: host, port: port).get()
            return SiftConnection(channel: channel, pending: pending)
        } catch {
            throw Wire.Status(.unavailable, "cannot connect to \(host):\(port): \(error)")
        }
    }

    /// False once the connection has closed (calls then fail with UNAVAILABLE).
    public var isOpen: Bool { channel.isActive && !pending.isClosed }

    /// Sends a request and returns the call's final frame body. A `status` answer is thrown as
    /// `Wire.Status`. Partial frames (streamed rerank results) go to `onPartial` as they arrive.
    /// Cancelling the calling task sends a Cancel frame; the call then ends with CANCELLED.
    public func call(_ body: Wire.Body, metadata: [Wire.MetadataEntry] = [],
                     onPartial: (@Sendable (Wire.Body) -> Void)? = nil) async throws -> Wire.Body {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let frame = Wire.Frame(requestID: id, metadata: metadata, body: body)
        let answer: Wire.Body = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                guard pending.add(id, continuation: continuation, onPartial: onPartial) else {
                    continuation.resume(throwing: Wire.Status(.unavailable, "connection closed"))
                    return
                }
                channel.writeAndFlush(frame).whenFailure { [pending] error in
                    pending.fail(id, Wire.Status(.unavailable, "could not send the request: \(error)"))
                }
                // Cancelled before the request went out: onCancel's Cancel frame may have
                // overtaken it, so send one after it too.
                if Task.isCancelled { sendCancel(id) }
            }
        } onCancel: {
            sendCancel(id)
        }
        if case .status(let status) = answer { throw status }
        return answer
    }

    private func sendCancel(_ id: UInt64) {
        channel.writeAndFlush(Wire.Frame(requestID: nextID.add(1, ordering: .relaxed).oldValue,
                                         body: .cancelRequest(requestID: id)), promise: nil)
    }

    public func close() async {
        try? await channel.close()
    }
}

/// Calls waiting for their answer, by request id.
final class PendingCalls: Sendable {
    struct Call {
        var continuation: CheckedContinuation<Wire.Body, any Error>
        var onPartial: (@Sendable (Wire.Body) -> Void)?
    }

    private struct State {
        var calls: [UInt64: Call] = [:]
        var closed = false
    }

    private let state = Locked(State())

    var isClosed: Bool { state.withLock { $0.closed } }

    func add(_ id: UInt64, continuation: CheckedContinuation<Wire.Body, any Error>, onPartial: (@Sendable (Wire.Body) -> Void)?) -> Bool {
        state.withLock { s in
            if s.closed { return false }
            s.calls[id] = Call(continuation: continuation, onPartial: onPartial)
            return true
        }
    }

    func deliver(_ frame: Wire.Frame) {
        if case .rerankPartial = frame.body {
            let onPartial = state.withLock { $0.calls[frame.requestID]?.onPartial }
            onPartial?(frame.body)
            return
        }
        // A frame for no call of ours (id 0: a connection-level error, or a call already
        // answered) is dropped: the connection's close, if it comes, fails the calls.
        let call = state.withLock { $0.calls.removeValue(forKey: frame.requestID) }
        call?.continuation.resume(returning: frame.body)
    }

    func fail(_ id: UInt64, _ error: Wire.Status) {
        state.withLock { $0.calls.removeValue(forKey: id) }?.continuation.resume(throwing: error)
    }

    func closeAll(_ error: Wire.Status) {
        let calls = state.withLock { s in
            s.closed = true
            defer { s.calls = [:] }
            return Array(s.calls.values)
        }
        for call in calls { call.continuation.resume(throwing: error) }
    }
}

final class ResponseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let pending: PendingCalls

    init(pending: PendingCalls) { self.pending = pending }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            pending.deliver(try Framing.decode(unwrapInboundIn(data)))
        } catch {
            pending.closeAll(Wire.Status(.internal, "the server sent a frame this client cannot read: \(error)"))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pending.closeAll(Wire.Status(.unavailable, "connection to the server closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        pending.closeAll(Wire.Status(.unavailable, "connection error: \(error)"))
        context.close(promise: nil)
    }
}
