import Logging
import NIOCore
import SiftProtocol

/// A frame that arrived whole and passed the checks that need no decoding, with who its key
/// names (nil for the calls that need none).
struct ReceivedFrame {
    let body: ByteBuffer
    let envelope: Envelope
    let received: ContinuousClock.Instant
    let caller: Caller?
}

/// Bytes in, whole frames out, with every bound a hostile peer could push on:
/// - a frame's announced length over `maxFrameBytes` is refused before anything is buffered
///   (and HTTP or TLS sent to this port is told which port to use);
/// - a frame must arrive within `frameTimeout` of its first byte (slow senders are cut off,
///   however often they trickle a byte);
/// - bytes buffered beyond a small per-connection allowance come from the server-wide
///   `BufferBudget`;
/// - `screen` judges the envelope (key, document count) as soon as it is readable: a frame it
///   refuses is answered at once and the rest of its bytes are dropped as they arrive, never
///   buffered;
/// - while the connection's `OutboundGate` is shut (its peer is not taking its answers), whole
///   frames wait here and no call starts; reading from the socket has stopped meanwhile;
/// - memory is given back between frames.
/// Refusals are written here as encoded frames; whole frames go on to `ConnectionHandler`.
final class FrameReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ReceivedFrame
    typealias OutboundOut = ByteBuffer

    /// The envelope is expected before this many bytes of the frame (protocol rule for large frames).
    static let maxEnvelopeBytes = 64 << 10

    private let maxFrameBytes: Int
    private let frameTimeout: TimeAmount
    private let budget: BufferBudget
    private let registry: ConnectionRegistry
    private let metrics: ServerMetrics
    private let screen: (Envelope) -> Result<Caller?, Wire.Status>
    private var logger: Logger
    private let limiter: LogLimiter
    private let gate: OutboundGate

    /// Where the reader is in the byte stream: idle → receiving (first byte; the deadline starts)
    /// → idle when the frame is whole and passed on; → discarding → idle when it was refused and
    /// its rest has been dropped; → closed when the connection is refused for good or the input
    /// ended.
    private enum State {
        /// Between frames (whole frames may be held here while the outbound gate is shut).
        case idle
        /// A frame's first byte came at `since` (its deadline runs); `verdict` once its envelope
        /// was screened: who its key names.
        case receiving(since: ContinuousClock.Instant, verdict: Verdict)
        /// A refused frame: its `remaining` bytes are dropped as they arrive (its deadline runs).
        case discarding(since: ContinuousClock.Instant, remaining: Int)
        /// Refused for good, or the input ended and every frame held was delivered: nothing
        /// more is read.
        case closed

        enum Verdict {
            case pending, accepted(Caller?)
            var isPending: Bool { if case .pending = self { true } else { false } }
        }

        /// When the frame being received or dropped began.
        var since: ContinuousClock.Instant? {
            switch self {
            case .receiving(let since, _), .discarding(let since, _): since
            case .idle, .closed: nil
            }
        }
        var remainingToDrop: Int {
            if case .discarding(_, let remaining) = self { remaining } else { 0 }
        }
        var isClosed: Bool {
            if case .closed = self { true } else { false }
        }
    }

    private var state = State.idle
    private var buffer = ByteBuffer()
    private var held = 0               // bytes counted against the budget
    private var deadline: Scheduled<Void>?
    /// The peer shut its sending side (the reader closes once every whole frame held is delivered).
    private var inputClosed = false

    init(maxFrameBytes: Int, frameTimeout: Duration, budget: BufferBudget, registry: ConnectionRegistry,
         metrics: ServerMetrics, logger: Logger, limiter: LogLimiter, gate: OutboundGate,
         screen: @escaping (Envelope) -> Result<Caller?, Wire.Status>) {
        self.limiter = limiter
        self.gate = gate
        self.maxFrameBytes = maxFrameBytes
        self.frameTimeout = TimeAmount(frameTimeout)
        self.budget = budget
        self.registry = registry
        self.metrics = metrics
        self.logger = logger
        self.screen = screen
    }

    func handlerAdded(context: ChannelHandlerContext) {
        logger[metadataKey: "peer"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        hold(0)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        switch state {
        case .closed:
            return
        case .discarding(let since, let remaining):
            let drop = min(remaining, bytes.readableBytes)
            bytes.moveReaderIndex(forwardBy: drop)
            guard drop == remaining else {
                state = .discarding(since: since, remaining: remaining - drop)
                return
            }
            frameEnded(context)
            if bytes.readableBytes == 0 { return }
            frameBegan(context)
        case .idle:
            frameBegan(context)
        case .receiving:
            break
        }
        guard hold(buffer.readableBytes + bytes.readableBytes) else {
            return refuse(context, id: currentRequestID(), close: true, Wire.Status(.resourceExhausted,
                "the server is holding \(budget.bytes >> 20) MiB of requests still arriving (its limit, --max-buffered-mb): retry shortly or send smaller requests"))
        }
        buffer.writeBuffer(&bytes)
        deliverFrames(context)
    }

    /// Passes on every whole frame buffered, while the outbound gate is open.
    private func deliverFrames(_ context: ChannelHandlerContext) {
        while gate.isOpen, let next = nextFrame(context) {
            context.fireChannelRead(wrapInboundOut(next))
        }
        guard !state.isClosed, gate.isOpen else { return giveMemoryBack() }
        if inputClosed {
            // Nothing more will come: a partial frame is lost (as on a close), the calls sent go on.
            if buffer.readableBytes > 0 || state.remainingToDrop > 0 {
                limiter.log(logger, .info, "half-closed inside a frame", metadata: ["bytes": "\(buffer.readableBytes + state.remainingToDrop)"])
                buffer = ByteBuffer()
                frameEnded(context)
            }
            close()
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            return
        }
        // Even three bytes of a length prefix start the clock (not while frames wait for the gate).
        if case .idle = state, buffer.readableBytes > 0 { frameBegan(context) }
        giveMemoryBack()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is OutboundGate.Opened {
            deliverFrames(context)
            context.fireChannelReadComplete()
            context.fireUserInboundEventTriggered(event)
        } else if case ChannelEvent.inputClosed = event {
            inputClosed = true
            deliverFrames(context)
            context.fireChannelReadComplete()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// The next whole frame that passed screening; nil when more bytes are needed (or the
    /// connection is closed, or the current frame's rest is being dropped).
    private func nextFrame(_ context: ChannelHandlerContext) -> ReceivedFrame? {
        while let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) {
            switch state {
            case .closed, .discarding: return nil
            case .idle: frameBegan(context)
            case .receiving: break
            }
            guard Int(length) <= maxFrameBytes else {
                tooLarge(context, Int(length))
                return nil
            }
            let length = Int(length)
            let available = buffer.readableBytes - Framing.headerBytes
            let complete = available >= length
            let envelope: Envelope?
            do {
                envelope = try buffer.withUnsafeReadableBytes { raw in
                    try Envelope.read(UnsafeRawBufferPointer(rebasing: raw[Framing.headerBytes..<(Framing.headerBytes + min(available, length))]),
                                      complete: complete)
                }
            } catch {
                // Not screenable, so never decoded: refused whole or partial, under its id if known.
                refuse(context, id: (error as? ProtocolError)?.requestID ?? 0, discardingFrameOf: length, Wire.Status(.invalidArgument, "malformed frame: \(error)"))
                continue
            }
            // Screened once readable, again when whole (its metadata may have grown meanwhile).
            if let envelope, case .receiving(let since, let verdict) = state, complete || verdict.isPending {
                switch screen(envelope) {
                case .failure(let status):
                    refuse(context, id: envelope.requestID, discardingFrameOf: length, status)
                    continue
                case .success(let who):
                    state = .receiving(since: since, verdict: .accepted(who))
                }
            } else if !complete, envelope == nil, available >= Self.maxEnvelopeBytes {
                refuse(context, id: 0, discardingFrameOf: length, Wire.Status(.invalidArgument,
                    "the frame's request id and metadata take over \(Self.maxEnvelopeBytes >> 10) KiB: send the metadata (the key) before the body, and keep it small"))
                continue
            }
            guard complete, let envelope, case .receiving(let since, .accepted(let caller)) = state else { return nil }
            buffer.moveReaderIndex(forwardBy: Framing.headerBytes)
            let body = buffer.readSlice(length: length)!
            frameEnded(context)
            return ReceivedFrame(body: body, envelope: envelope, received: since, caller: caller)
        }
        return nil
    }

    /// Counts what the buffer holds against the budget; false when the budget cannot cover it.
    @discardableResult
    private func hold(_ bytes: Int) -> Bool {
        guard budget.adjust(from: held, to: bytes) else { return false }
        held = bytes
        return true
    }

    /// The request id of the frame being received, if its first bytes say it.
    private func currentRequestID() -> UInt64 {
        guard buffer.readableBytes > Framing.headerBytes else { return 0 }
        return buffer.withUnsafeReadableBytes { raw in
            (try? Envelope.read(UnsafeRawBufferPointer(rebasing: raw[Framing.headerBytes...]), complete: false))??.requestID ?? 0
        }
    }

    private func frameBegan(_ context: ChannelHandlerContext) {
        let now = ContinuousClock.now
        state = .receiving(since: now, verdict: .pending)
        registry.receiving(context.channel, since: now)
        let loop = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: frameTimeout) {
            let (reader, context) = loop.value
            reader.frameTimedOut(context)
        }
    }

    private func frameEnded(_ context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        state = .idle
        registry.receiving(context.channel, since: nil)
    }

    /// Nothing more is read; what is buffered is let go.
    private func close() {
        state = .closed
        deadline?.cancel()
        buffer = ByteBuffer()
        hold(0)
    }

    private func frameTimedOut(_ context: ChannelHandlerContext) {
        guard let start = state.since else { return }
        limiter.log(logger, .notice, "frame not complete in time; closing", metadata: [
            "seconds": "\(String(format: "%.1f", (ContinuousClock.now - start).seconds))", "buffered_bytes": "\(buffer.readableBytes)"])
        refuse(context, id: currentRequestID(), close: true, Wire.Status(.deadlineExceeded,
            "the frame did not arrive within \(frameTimeout.nanoseconds / 1_000_000_000) s of its first byte (--frame-timeout): connection closed"))
    }

    private func tooLarge(_ context: ChannelHandlerContext, _ length: Int) {
        let head = buffer.getBytes(at: buffer.readerIndex, length: min(8, buffer.readableBytes)) ?? []
        guard let protocolName = Self.foreignProtocol(head) else {
            limiter.log(logger, .notice, "frame over the size limit; closing", metadata: ["bytes": "\(length)", "limit": "\(maxFrameBytes)"])
            return refuse(context, id: 0, close: true, Wire.Status(.resourceExhausted, FrameTooLarge(length: length, limit: maxFrameBytes).description))
        }
        metrics.protocolErrors.increment()
        limiter.log(logger, .notice, "\(protocolName) on the RPC port; closing")
        close()
        guard protocolName == "HTTP" else {
            // A TLS ClientHello on a plain port: the client's handshake fails and says so.
            context.close(promise: nil)
            return
        }
        let text = "This is Sift's binary RPC port (length-prefixed protobuf frames, docs/PROTOCOL.md). " +
            "For the HTTP/JSON API use the port given to `sift serve --http-port`.\n"
        let response = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: \(text.utf8.count)\r\nConnection: close\r\n\r\n" + text
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: response))).whenComplete { _ in
            context.close(promise: nil)
        }
    }

    /// HTTP or TLS where frames were expected (their first bytes read as absurd lengths).
    static func foreignProtocol(_ head: [UInt8]) -> String? {
        let text = String(decoding: head.prefix(8), as: UTF8.self)
        for method in ["GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "PRI * "] where text.hasPrefix(method) {
            return "HTTP"
        }
        if head.count >= 3, head[0] == 0x16, head[1] == 0x03, head[2] <= 0x04 { return "TLS" }
        return nil
    }

    /// Answers the current frame with `status` under `id`; then either closes the connection,
    /// or drops the frame (what is buffered now, the rest as it arrives) and goes on.
    private func refuse(_ context: ChannelHandlerContext, id: UInt64, close: Bool = false, discardingFrameOf length: Int = 0,
                        _ status: Wire.Status) {
        metrics.protocolErrors.increment()
        metrics.record(method: "frame", code: status.code, duration: state.since.map { .now - $0 } ?? .zero)
        limiter.log(logger, .notice, "frame refused", metadata: ["request_id": "\(id)", "status": "\(status.code.name)", "error": "\(status.message)"])
        var out = context.channel.allocator.buffer(capacity: 64 + status.message.utf8.count)
        Framing.write(Wire.Frame(requestID: id, body: .status(status)), to: &out)
        if close {
            self.close()
            context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        let here = min(buffer.readableBytes - Framing.headerBytes, length)
        buffer.moveReaderIndex(forwardBy: Framing.headerBytes + here)
        if here == length {
            frameEnded(context)
        } else {
            state = .discarding(since: state.since ?? .now, remaining: length - here)
        }
        hold(buffer.readableBytes)
    }

    /// Returns the buffer's memory once it holds nothing (or much less than it can).
    private func giveMemoryBack() {
        if buffer.readableBytes == 0 {
            if buffer.capacity > 64 << 10 { buffer = ByteBuffer() } else { buffer.clear() }
        } else if buffer.readerIndex > buffer.capacity / 2 {
            buffer.discardReadBytes()
        }
        hold(buffer.readableBytes)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if buffer.readableBytes > 0 || state.remainingToDrop > 0 {
            metrics.protocolErrors.increment()
            limiter.log(logger, .info, "connection closed inside a frame", metadata: ["bytes": "\(buffer.readableBytes + state.remainingToDrop)"])
        }
        deadline?.cancel()
        hold(0)
        context.fireChannelInactive()
    }
}
