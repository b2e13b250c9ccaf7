import SiftBase
import CoreMetrics
import Metrics
import Prometheus
import SiftEngine
import SiftProtocol

/// The server's metrics, through swift-metrics into a Prometheus registry of its own (so
/// several servers in one process, as in tests, keep separate counts). `render()` gives the
/// text exposition for `/metrics`.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let requestCounters = Locked<[String: CoreMetrics.Counter]>([:])
    private let durations = Locked<[String: Metrics.Timer]>([:])

    let queueTime: Metrics.Timer
    let computeTime: Metrics.Timer
    let documents: CoreMetrics.Counter
    let prefixTokens: CoreMetrics.Counter
    let prefixTokensCached: CoreMetrics.Counter
    let documentTokens: CoreMetrics.Counter
    let inFlight: Meter
    let connections: Meter
    let protocolErrors: CoreMetrics.Counter
    private let engineQueuedTokens: CoreMetrics.Gauge
    private let engineActiveRequests: CoreMetrics.Gauge
    private let kvBytes: CoreMetrics.Gauge
    private let kvReservedBytes: CoreMetrics.Gauge
    private let kvPeakBytes: CoreMetrics.Gauge
    private let kvBudgetBytes: CoreMetrics.Gauge
    private let prefixCacheBytes: CoreMetrics.Gauge
    private let prefixCacheHitRatio: CoreMetrics.Gauge
    private let batchFillRatio: CoreMetrics.Gauge
    private let engineSteps: CoreMetrics.Gauge
    private let serving: CoreMetrics.Gauge
    private let bufferedRequestBytes: CoreMetrics.Gauge

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        // Rerank calls run from milliseconds (cached, short) to minutes (thousands of long documents).
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(2500), .seconds(5), .seconds(10), .seconds(25), .seconds(50), .seconds(100), .seconds(250),
        ]
        self.factory = factory
        queueTime = Metrics.Timer(label: "sift_rerank_queue_seconds", factory: factory)
        computeTime = Metrics.Timer(label: "sift_rerank_compute_seconds", factory: factory)
        documents = CoreMetrics.Counter(label: "sift_documents_total", factory: factory)
        prefixTokens = CoreMetrics.Counter(label: "sift_tokens_total", dimensions: [("kind", "prefix")], factory: factory)
        prefixTokensCached = CoreMetrics.Counter(label: "sift_tokens_total", dimensions: [("kind", "prefix_cached")], factory: factory)
        documentTokens = CoreMetrics.Counter(label: "sift_tokens_total", dimensions: [("kind", "document")], factory: factory)
        inFlight = Meter(label: "sift_inflight_requests", factory: factory)
        connections = Meter(label: "sift_connections", factory: factory)
        protocolErrors = CoreMetrics.Counter(label: "sift_protocol_errors_total", factory: factory)
        engineQueuedTokens = CoreMetrics.Gauge(label: "sift_engine_queued_tokens", factory: factory)
        engineActiveRequests = CoreMetrics.Gauge(label: "sift_engine_active_requests", factory: factory)
        kvBytes = CoreMetrics.Gauge(label: "sift_kv_bytes", factory: factory)
        kvReservedBytes = CoreMetrics.Gauge(label: "sift_kv_reserved_bytes", factory: factory)
        kvPeakBytes = CoreMetrics.Gauge(label: "sift_kv_peak_bytes", factory: factory)
        kvBudgetBytes = CoreMetrics.Gauge(label: "sift_kv_budget_bytes", factory: factory)
        prefixCacheBytes = CoreMetrics.Gauge(label: "sift_prefix_cache_bytes", factory: factory)
        prefixCacheHitRatio = CoreMetrics.Gauge(label: "sift_prefix_cache_hit_ratio", factory: factory)
        batchFillRatio = CoreMetrics.Gauge(label: "sift_batch_fill_ratio", factory: factory)
        engineSteps = CoreMetrics.Gauge(label: "sift_engine_steps", factory: factory)
        serving = CoreMetrics.Gauge(label: "sift_serving", factory: factory)
        bufferedRequestBytes = CoreMetrics.Gauge(label: "sift_buffered_request_bytes", factory: factory)
    }

    /// One finished call: counted by method and status code, its duration recorded by method.
    func record(method: String, code: Wire.Code, duration: Duration) {
        let key = method + "/" + code.name
        let counter = requestCounters.withLock { counters in
            if let c = counters[key] { return c }
            let c = CoreMetrics.Counter(label: "sift_requests_total", dimensions: [("method", method), ("code", code.name)], factory: factory)
            counters[key] = c
            return c
        }
        counter.increment()
        let timer = durations.withLock { timers in
            if let t = timers[method] { return t }
            let t = Metrics.Timer(label: "sift_request_seconds", dimensions: [("method", method)], factory: factory)
            timers[method] = t
            return t
        }
        timer.recordNanoseconds(duration.nanoseconds)
    }

    /// The Prometheus text exposition, with the engine's gauges read now.
    public func render(engine: EngineStats, serving isServing: Bool, bufferedRequestBytes buffered: Int = 0) -> [UInt8] {
        bufferedRequestBytes.record(buffered)
        engineQueuedTokens.record(engine.queuedTokens)
        engineActiveRequests.record(engine.activeRequests)
        kvBytes.record(engine.kvBytes)
        kvReservedBytes.record(engine.kvReservedBytes)
        kvPeakBytes.record(engine.kvPeakBytes)
        kvBudgetBytes.record(engine.kvBudgetBytes)
        prefixCacheBytes.record(engine.prefixCacheBytes)
        prefixCacheHitRatio.record(engine.prefixLookupTokens > 0 ? Double(engine.prefixHitTokens) / Double(engine.prefixLookupTokens) : 0)
        batchFillRatio.record(engine.stepCapacity > 0 ? Double(engine.stepTokens) / Double(engine.stepCapacity) : 0)
        engineSteps.record(engine.steps)
        serving.record(isServing ? 1 : 0)
        return registry.emitToBuffer()
    }
}
