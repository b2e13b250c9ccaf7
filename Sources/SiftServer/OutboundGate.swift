import Logging
import NIOCore
import Synchronization

/// Answer bytes the server holds for its peers, over all connections: written and not yet
/// taken by the peer, plus what calls in flight are expected to answer. Bounded by
/// `--max-unsent-mb`; the `sift_unsent_bytes` gauge shows it.
final class UnsentBytes: Sendable {
    let limit: Int
    private let held = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    var bytes: Int { held.load(ordering: .relaxed) }
    var isOver: Bool { bytes > limit }

    func add(_ n: Int) { held.add(n, ordering: .relaxed) }
    func remove(_ n: Int) { held.subtract(n, ordering: .relaxed) }
}

/// Backpressure on the way out, for one connection. It sits next to the socket (after TLS)
/// and counts every byte written until the socket has taken it; the handlers behind it add
/// what their calls in flight are expected to answer (`commit`). While the connection holds
/// more than its bound — or the server as a whole holds more than its own and this connection
/// holds anything — the gate is *shut*: it stops reading from the socket and tells the
/// handlers behind it not to start calls (frames already read wait in `FrameReader`, an HTTP
/// request waits in its handler). So a peer that never reads its answers cannot make the
/// server buffer without bound: it stops being read. If the peer takes nothing while the gate
/// is shut for `timeout`, the connection is closed (its calls are cancelled).
///
/// Event-loop confined.
final class OutboundGate: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Fired inbound when a shut gate opens: the handlers behind it resume their work.
    struct Opened {}

    private let limit: Int
    private let server: UnsentBytes
    private let timeout: TimeAmount
    private var logger: Logger
    private let limiter: LogLimiter
    private let onStall: () -> Void

    private var context: ChannelHandlerContext?
    /// Written, not yet taken by the socket.
    private(set) var pending = 0
    /// Expected answers of calls in flight.
    private(set) var committed = 0
    private(set) var isShut = false
    /// A read the pipeline asked for while the gate was shut.
    private var readWithheld = false
    private var stallTimer: Scheduled<Void>?
    /// Bytes the socket took since the stall timer started.
    private var drainedSinceTimer = 0

    init(limit: Int, server: UnsentBytes, timeout: Duration, logger: Logger, limiter: LogLimiter,
         onStall: @escaping () -> Void = {}) {
        self.limit = limit
        self.server = server
        self.timeout = TimeAmount(timeout)
        self.logger = logger
        self.limiter = limiter
        self.onStall = onStall
    }

    /// Whether calls may start now.
    var isOpen: Bool { !isShut }

    // MARK: - What the handlers behind it hold

    /// A call started that is expected to answer about `bytes`.
    func commit(_ bytes: Int) {
        guard context != nil else { return }  // the connection is gone: nothing is held for it
        committed += bytes
        server.add(bytes)
        evaluate()
    }

    /// A call's expected answer was written (its bytes now count as pending) or dropped.
    func release(_ bytes: Int) {
        guard context != nil else { return }
        committed -= bytes
        server.remove(bytes)
        evaluate()
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        logger[metadataKey: "peer"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stallTimer?.cancel()
        // What is still counted leaves the server's total with the connection.
        server.remove(pending + committed)
        pending = 0
        committed = 0
        self.context = nil
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = unwrapOutboundIn(data).readableBytes
        guard bytes > 0 else { return context.write(data, promise: promise) }
        pending += bytes
        server.add(bytes)
        let done = promise ?? context.eventLoop.makePromise()
        done.futureResult.hop(to: context.eventLoop).whenComplete { [self] _ in
            // After handlerRemoved the counts were already given back.
            guard self.context != nil else { return }
            pending -= bytes
            server.remove(bytes)
            drainedSinceTimer += bytes
            evaluate()
        }
        context.write(data, promise: done)
        evaluate()
    }

    func read(context: ChannelHandlerContext) {
        if isShut {
            readWithheld = true
        } else {
            context.read()
        }
    }

    // MARK: - Shut and open

    private var overBound: Bool {
        let held = pending + committed
        return held > limit || (server.isOver && held > 0)
    }

    private func evaluate() {
        guard let context else { return }
        if !isShut, overBound {
            isShut = true
            startStallTimer(context)
        } else if isShut, !overBound {
            isShut = false
            stallTimer?.cancel()
            stallTimer = nil
            context.fireUserInboundEventTriggered(Opened())
            if readWithheld {
                readWithheld = false
                context.read()
            }
        }
    }

    private func startStallTimer(_ context: ChannelHandlerContext) {
        drainedSinceTimer = 0
        stallTimer?.cancel()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        stallTimer = context.eventLoop.scheduleTask(in: timeout) { bound.value.stallTimerFired() }
    }

    private func stallTimerFired() {
        guard let context, isShut else { return }
        // Shut only by calls still computing, or the peer is taking its answers: not stalled.
        guard pending > 0, drainedSinceTimer == 0 else { return startStallTimer(context) }
        limiter.log(logger, .notice, "peer took none of its answers in time; closing", metadata: [
            "unsent_bytes": "\(pending)", "seconds": "\(timeout.nanoseconds / 1_000_000_000)"])
        onStall()
        context.close(promise: nil)
    }
}
