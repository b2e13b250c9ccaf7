import SiftBase
import Prometheus
import SiftEngine
import SiftProtocol

/// The server's metrics, in a Prometheus registry of its own (so several servers in one process,
/// as in tests, keep separate counts). Made through the registry rather than swift-metrics'
/// factory because only the registry carries the `# HELP` text operators read. `render()` gives
/// the text exposition for `/metrics`.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let requestCounters = Locked<[String: Prometheus.Counter]>([:])
    private let durations = Locked<[String: DurationHistogram]>([:])
    private let perModel = Locked<[String: ModelMetrics]>([:])

    let inFlight: Prometheus.Gauge
    let connections: Prometheus.Gauge
    let protocolErrors: Prometheus.Counter
    private let serving: Prometheus.Gauge
    private let bufferedRequestBytes: Prometheus.Gauge
    private let unsentBytes: Prometheus.Gauge
    private let residentBytes: Prometheus.Gauge
    private let availableBytes: Prometheus.Gauge
    private let scoreCacheBytes: Prometheus.Gauge
    private let scoreCacheEntries: Prometheus.Gauge
    private let scoreCacheBudgetBytes: Prometheus.Gauge

    /// Rerank calls run from milliseconds (cached, short) to minutes (thousands of long documents).
    static let durationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5), .seconds(10), .seconds(25), .seconds(50), .seconds(100), .seconds(250),
    ]
    /// A whole metric name with its help text (the registry joins non-empty name parts).
    static func name(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
    static let requestsHelp = "Calls answered, through the RPC or the HTTP port, by method, status code and model (empty for calls no model answered)."
    static let requestSecondsHelp = "Time from a call's arrival to its answer, by method and model."

    public init() {
        let r = registry
        func gauge(_ name: String, _ help: String) -> Prometheus.Gauge { r.makeGauge(descriptor: Self.name(name, help)) }
        inFlight = gauge("sift_inflight_requests", "Calls accepted and not yet answered, both ports.")
        connections = gauge("sift_connections", "Open RPC connections.")
        protocolErrors = r.makeCounter(descriptor: Self.name("sift_protocol_errors_total", "Connections or frames refused as malformed, oversized, too slow or unauthenticated."))
        serving = gauge("sift_serving", "Whether the server accepts calls: 1 when serving; 0 while the models load or the server drains.")
        bufferedRequestBytes = gauge("sift_buffered_request_bytes", "Bytes of unfinished request frames held across connections (bounded by --max-buffered-mb).")
        unsentBytes = gauge("sift_unsent_bytes", "Answer bytes held for peers across connections: written and not yet taken by the peer, plus the expected answers of calls in flight (bounded by --max-unsent-mb).")
        residentBytes = gauge("sift_resident_memory_bytes", "This process's resident memory (VmRSS).")
        availableBytes = gauge("sift_memory_available_bytes", "Memory still available to this process: the machine's MemAvailable, or the cgroup limit's headroom when lower.")
        scoreCacheBytes = gauge("sift_score_cache_bytes", "Bytes held by the exact score cache, all models (bounded by --score-cache-mb).")
        scoreCacheEntries = gauge("sift_score_cache_entries", "Documents in the exact score cache, all models.")
        scoreCacheBudgetBytes = gauge("sift_score_cache_budget_bytes", "The score cache's budget (--score-cache-mb; 0: off).")
    }

    /// The metrics of one model, labelled `model=NAME` (made on first use). Only names of
    /// served models reach here, so a client cannot grow the label set.
    func model(_ name: String) -> ModelMetrics {
        perModel.withLock { all in
            if let m = all[name] { return m }
            let m = ModelMetrics(registry: registry, model: name)
            all[name] = m
            return m
        }
    }

    /// One finished call: counted by method, status code and model, its duration recorded by
    /// method and model.
    func record(method: String, code: Wire.Code, model: String = "", duration: Duration) {
        let key = method + "/" + code.name + "/" + model
        let counter = requestCounters.withLock { counters in
            if let c = counters[key] { return c }
            let c = registry.makeCounter(descriptor: Self.name("sift_requests_total", Self.requestsHelp),
                                         labels: [("method", method), ("code", code.name), ("model", model)])
            counters[key] = c
            return c
        }
        counter.increment()
        let timer = durations.withLock { timers in
            if let t = timers[method + "/" + model] { return t }
            let t = registry.makeDurationHistogram(descriptor: Self.name("sift_request_seconds", Self.requestSecondsHelp),
                                                   labels: [("method", method), ("model", model)], buckets: Self.durationBuckets)
            timers[method + "/" + model] = t
            return t
        }
        timer.record(duration)
    }

    /// The Prometheus text exposition, with every model's engine gauges read now.
    public func render(models: ServedModels?, serving isServing: Bool, bufferedRequestBytes buffered: Int = 0,
                       unsentBytes unsent: Int = 0) -> [UInt8] {
        bufferedRequestBytes.set(Double(buffered))
        unsentBytes.set(Double(unsent))
        residentBytes.set(Double(SystemMemory.residentBytes() ?? 0))
        availableBytes.set(Double(SystemMemory.available() ?? 0))
        serving.set(isServing ? 1.0 : 0.0)
        scoreCacheBytes.set(Double(models?.scoreCache?.bytes ?? 0))
        scoreCacheEntries.set(Double(models?.scoreCache?.count ?? 0))
        scoreCacheBudgetBytes.set(Double(models?.scoreCache?.budgetBytes ?? 0))
        for served in models?.models ?? [] {
            model(served.name).update(served.service.stats)
        }
        return registry.emitToBuffer()
    }
}

/// What is counted per model: its rerank calls' documents, tokens and times, and its engine's gauges.
final class ModelMetrics: Sendable {
    let queueTime: DurationHistogram
    let computeTime: DurationHistogram
    let documents: Prometheus.Counter
    let cachedDocuments: Prometheus.Counter
    let prefixTokens: Prometheus.Counter
    let prefixTokensCached: Prometheus.Counter
    let documentTokens: Prometheus.Counter
    private let engineQueuedTokens: Prometheus.Gauge
    private let engineMaxQueuedTokens: Prometheus.Gauge
    private let engineActiveRequests: Prometheus.Gauge
    private let kvBytes: Prometheus.Gauge
    private let kvReservedBytes: Prometheus.Gauge
    private let kvPeakBytes: Prometheus.Gauge
    private let kvBudgetBytes: Prometheus.Gauge
    private let prefixCacheBytes: Prometheus.Gauge
    private let prefixCacheHitRatio: Prometheus.Gauge
    private let scoreCacheHitRatio: Prometheus.Gauge
    private let batchFillRatio: Prometheus.Gauge
    private let engineSteps: Prometheus.Gauge
    private let interactiveSteps: Prometheus.Gauge
    private let stepsBetweenSublayers: Prometheus.Gauge
    private let droppedTokens: Prometheus.Gauge
    private let computeSeconds: Prometheus.Gauge
    private let coreSeconds: Prometheus.Gauge
    private let coreWaitSeconds: Prometheus.Gauge

    init(registry r: PrometheusCollectorRegistry, model: String) {
        let label = [("model", model)]
        func gauge(_ name: String, _ help: String) -> Prometheus.Gauge {
            r.makeGauge(descriptor: ServerMetrics.name(name, help), labels: label)
        }
        func counter(_ name: String, _ labels: [(String, String)], _ help: String) -> Prometheus.Counter {
            r.makeCounter(descriptor: ServerMetrics.name(name, help), labels: labels + label)
        }
        func histogram(_ name: String, _ help: String) -> DurationHistogram {
            r.makeDurationHistogram(descriptor: ServerMetrics.name(name, help), labels: label, buckets: ServerMetrics.durationBuckets)
        }
        let tokensHelp = "Tokens of answered rerank calls: kind=prefix (instruction and query), prefix_cached (of those, found in the prefix cache), document."
        queueTime = histogram("sift_rerank_queue_seconds", "Time a rerank call waited for admission and its first step.")
        computeTime = histogram("sift_rerank_compute_seconds", "Time from a rerank call's first step to its last document's score.")
        documents = counter("sift_documents_total", [], "Documents scored, cached ones included.")
        cachedDocuments = counter("sift_cached_documents_total", [], "Documents answered from the exact score cache (no compute).")
        prefixTokens = counter("sift_tokens_total", [("kind", "prefix")], tokensHelp)
        prefixTokensCached = counter("sift_tokens_total", [("kind", "prefix_cached")], tokensHelp)
        documentTokens = counter("sift_tokens_total", [("kind", "document")], tokensHelp)
        engineQueuedTokens = gauge("sift_engine_queued_tokens", "Tokens admitted to the engine and not yet computed (admission refuses beyond --max-queued-tokens).")
        engineMaxQueuedTokens = gauge("sift_engine_max_queued_tokens", "The queue's limit in tokens (--max-queued-tokens).")
        engineActiveRequests = gauge("sift_engine_active_requests", "Rerank calls inside the engine.")
        kvBytes = gauge("sift_kv_bytes", "KV cache bytes in use, prefix cache included.")
        kvReservedBytes = gauge("sift_kv_reserved_bytes", "KV cache bytes reserved by the planner for calls in progress.")
        kvPeakBytes = gauge("sift_kv_peak_bytes", "Highest KV cache bytes in use since start.")
        kvBudgetBytes = gauge("sift_kv_budget_bytes", "The KV cache budget (--kv-budget-mb, split among the models).")
        prefixCacheBytes = gauge("sift_prefix_cache_bytes", "KV bytes held by cached instruction/query prefixes.")
        prefixCacheHitRatio = gauge("sift_prefix_cache_hit_ratio", "Share of prefix tokens found in the prefix cache since start.")
        scoreCacheHitRatio = gauge("sift_score_cache_hit_ratio", "Share of documents answered from the exact score cache since start.")
        batchFillRatio = gauge("sift_batch_fill_ratio", "Tokens computed per engine step over the step's capacity, since start.")
        engineSteps = gauge("sift_engine_steps", "Engine steps run since start.")
        interactiveSteps = gauge("sift_engine_interactive_steps", "Engine steps that served interactive calls only (--interactive-tokens, priority > 0), since start.")
        stepsBetweenSublayers = gauge("sift_engine_steps_between_sublayers", "Interactive steps run between two sublayers of a batch step, since start.")
        droppedTokens = gauge("sift_engine_dropped_tokens", "Tokens of cancelled or expired calls that left a step before its last layer, since start.")
        computeSeconds = gauge("sift_engine_step_seconds", "Seconds the engine's steps took (wall time), since start.")
        coreSeconds = gauge("sift_engine_core_seconds", "Seconds the engine's steps held the compute threads, since start; with several models, each one's share of the cores.")
        coreWaitSeconds = gauge("sift_engine_core_wait_seconds", "Seconds the engine's steps waited for the compute threads while another model held them, since start.")
    }

    /// One answered rerank call.
    func record(_ result: RerankResult, documents count: Int) {
        let u = result.usage
        queueTime.recordNanoseconds(result.timings.queued.nanoseconds)
        computeTime.recordNanoseconds(result.timings.computing.nanoseconds)
        documents.increment(by: Int64(count))
        cachedDocuments.increment(by: Int64(u.cachedDocuments))
        prefixTokens.increment(by: Int64(u.prefixTokens))
        prefixTokensCached.increment(by: Int64(u.prefixTokensCached))
        documentTokens.increment(by: Int64(u.documentTokens))
    }

    func update(_ engine: EngineStats) {
        engineQueuedTokens.set(Double(engine.queuedTokens))
        engineMaxQueuedTokens.set(Double(engine.maxQueuedTokens))
        engineActiveRequests.set(Double(engine.activeRequests))
        kvBytes.set(Double(engine.kvBytes))
        kvReservedBytes.set(Double(engine.kvReservedBytes))
        kvPeakBytes.set(Double(engine.kvPeakBytes))
        kvBudgetBytes.set(Double(engine.kvBudgetBytes))
        prefixCacheBytes.set(Double(engine.prefixCacheBytes))
        prefixCacheHitRatio.set(engine.prefixLookupTokens > 0 ? Double(engine.prefixHitTokens) / Double(engine.prefixLookupTokens) : 0)
        scoreCacheHitRatio.set(engine.scoreCacheLookups > 0 ? Double(engine.scoreCacheHits) / Double(engine.scoreCacheLookups) : 0)
        batchFillRatio.set(engine.stepCapacity > 0 ? Double(engine.stepTokens) / Double(engine.stepCapacity) : 0)
        engineSteps.set(Double(engine.steps))
        interactiveSteps.set(Double(engine.interactiveSteps))
        stepsBetweenSublayers.set(Double(engine.stepsBetweenSublayers))
        droppedTokens.set(Double(engine.droppedTokens))
        computeSeconds.set(engine.computeSeconds)
        coreSeconds.set(engine.coreSeconds)
        coreWaitSeconds.set(engine.coreWaitSeconds)
    }
}
