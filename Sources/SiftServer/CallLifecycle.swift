import Foundation
import Logging
import NIOCore
import SiftEngine
import SiftProtocol

/// One call's life, the same on both front doors (RPC and HTTP): admission (API key, draining,
/// model still loading), counting while in flight (the drain waits for it, the connection
/// registry never closes a busy connection to make room, the gauge shows it), and once it is
/// answered — or refused — one count by method and status, one duration and one log line.
struct CallLifecycle: Sendable {
    let state: ServerState
    let metrics: ServerMetrics
    let options: ServerOptions

    /// The one step before an authorized call (`ServerState.authorize` checked its key as it
    /// arrived) reaches the engine: draining, loading, and the model it names (a name or alias;
    /// "" for the default; NOT_FOUND otherwise). Returns the calls it may then make, on that model.
    func admit(_ caller: Caller, model name: String) throws(Wire.Status) -> Calls {
        let models = try state.admit()
        return Calls(models: models, model: try models.resolve(name), options: options, metrics: metrics,
                     tokenizeLane: state.tokenizeLane, cachePartition: caller.cachePartition)
    }

    /// A call was admitted and its work starts.
    func started(on channel: any Channel) {
        state.inFlight.add(1, ordering: .relaxed)
        state.registry.callStarted(channel)
        metrics.inFlight.increment()
    }

    /// The call's work is over (answered, failed or cancelled).
    func ended(on channel: any Channel) {
        state.inFlight.subtract(1, ordering: .relaxed)
        state.registry.callEnded(channel)
        metrics.inFlight.decrement()
    }

    /// Counts an answer and logs it: `info` for success, `notice` with the message sent to the
    /// client for a failure, `error` for an internal one. `model`: the served model that
    /// answered (nil: none, e.g. Health, or a name the server does not serve). Call lines pass
    /// at a bounded rate (`ServerState.callLogLimiter`), their text escaped: no client can
    /// flood the log or forge a line in it.
    func answered(method: String, _ code: Wire.Code, error message: String? = nil, model: String? = nil,
                  received: ContinuousClock.Instant, details: Logger.Metadata = [:], logger: Logger, log: Bool = true) {
        let duration = ContinuousClock.now - received
        metrics.record(method: method, code: code, model: model ?? "", duration: duration)
        guard log else { return }
        var metadata = details
        metadata["method"] = "\(method)"
        if let model { metadata["model"] = "\(model)" }
        metadata["status"] = "\(code.name)"
        metadata["duration_ms"] = "\(String(format: "%.1f", duration.milliseconds))"
        if let message, code != .ok {
            metadata["error"] = "\(message)"
            state.callLogLimiter.log(logger, code == .internal ? .error : .notice, "call failed", metadata: metadata)
        } else {
            state.callLogLimiter.log(logger, .info, "call", metadata: metadata)
        }
    }

    /// What a finished rerank adds to its log line.
    static func details(_ outcome: Calls.RerankOutcome) -> Logger.Metadata {
        let u = outcome.response.usage
        return ["documents": "\(u.documents)", "cached_documents": "\(u.cachedDocuments)", "prefix_tokens": "\(u.prefixTokens)", "cached_tokens": "\(u.prefixTokensCached)",
                "document_tokens": "\(u.documentTokens)", "queued_ms": "\(Int(outcome.queued.milliseconds))",
                "compute_ms": "\(Int(outcome.computing.milliseconds))"]
    }
}
