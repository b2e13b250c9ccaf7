import Glibc
import SiftProtocol

/// Server settings; `sift serve` exposes each as a flag of the same name.
public struct ServerOptions: Sendable {
    public var host = "127.0.0.1"
    /// 0: any free port (`SiftServer.port` tells which).
    public var port = 7700
    /// Prometheus `/metrics` on this port (nil: off; 0: any free port).
    public var metricsPort: Int?
    /// The HTTP/JSON API (Cohere/Jina shapes) on this port (nil: off; 0: any free port).
    public var httpPort: Int?
    /// Largest frame accepted; a bigger one gets RESOURCE_EXHAUSTED and the connection closes.
    public var maxFrameBytes = Framing.defaultMaxFrameBytes
    /// Calls in flight on one connection; beyond it RESOURCE_EXHAUSTED, connection kept.
    public var maxInFlightPerConnection = 64
    /// Open connections over all ports (RPC, HTTP, metrics). When full, a new connection
    /// closes the one whose request has been arriving longest, else the longest idle (never
    /// one with calls in flight); only if there is none is it refused. Lowered to fit the
    /// process's file-descriptor limit (`effectiveMaxConnections`).
    public var maxConnections = 1024
    /// A connection with no call in flight and nothing read for this long is closed.
    public var idleTimeout: Duration = .seconds(300)
    /// A frame (or an HTTP request's head and body) must arrive whole within this long of its
    /// first byte; a slower one is refused and its connection closed.
    public var frameTimeout: Duration = .seconds(30)
    /// Bytes held for requests still arriving, over all connections (each may hold 64 KiB
    /// without counting); beyond it such a request is refused with RESOURCE_EXHAUSTED.
    public var maxBufferedBytes = 256 << 20
    /// Answer bytes held for one connection: written and not yet taken by its peer, plus the
    /// expected answers of its calls in flight. Beyond it the connection is no longer read and
    /// starts no call until its peer takes its answers.
    public var maxUnsentBytesPerConnection = 8 << 20
    /// The same over all connections: beyond it, every connection holding answers stops being
    /// read until the total falls back.
    public var maxUnsentBytes = 256 << 20
    /// A connection held back by either bound whose peer takes none of its answers for this
    /// long is closed (its calls are cancelled).
    public var sendTimeout: Duration = .seconds(30)
    /// On SIGTERM/SIGINT: calls in flight get this long to finish before connections close.
    public var drainTimeout: Duration = .seconds(30)
    /// Accepted API keys; empty: no authentication.
    public var apiKeys = APIKeys([])
    /// Event-loop threads for network I/O (the model has its own threads).
    public var ioThreads = 1
    /// TLS on the RPC and HTTP ports (nil: plain TCP).
    public var tls: TLSFiles?
    /// Reported in ModelInfo and responses.
    public var modelID = "qwen3-reranker"

    public init() {}

    /// `maxConnections`, lowered so that connections never run the process out of file
    /// descriptors (64 are kept for the model, logs and the listeners themselves).
    public var effectiveMaxConnections: Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return maxConnections }
        return max(1, min(maxConnections, Int(limit.rlim_cur) - 64))
    }
}

/// PEM files for TLS. With `clientCAPath`, clients must present a certificate signed by it (mutual TLS).
public struct TLSFiles: Sendable {
    public var certificatePath: String
    public var keyPath: String
    public var clientCAPath: String?

    public init(certificatePath: String, keyPath: String, clientCAPath: String? = nil) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.clientCAPath = clientCAPath
    }
}
