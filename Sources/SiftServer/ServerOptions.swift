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
    /// Open connections; a connection over it is told RESOURCE_EXHAUSTED and closed.
    public var maxConnections = 1024
    /// A connection with no call in flight and nothing read for this long is closed.
    public var idleTimeout: Duration = .seconds(300)
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
