import Qwen3
import SiftEngine
import SiftProtocol
import SiftBase

/// What each call does, independent of the network: wire request in, wire response out,
/// failures as `Wire.Status` with a message for the caller. What a finished call computed
/// (documents, tokens, queue and compute time) is counted here, so both front doors count it.
struct Calls: Sendable {
    let engine: any RerankService
    let options: ServerOptions
    let metrics: ServerMetrics
    static let serverVersion = SiftVersion.current

    /// What a finished rerank reports to logs and metrics.
    struct RerankOutcome: Sendable {
        var response: Wire.RerankResponse
        var queued: Duration
        var computing: Duration
    }

    func rerank(_ r: Wire.RerankRequest, receivedAt: ContinuousClock.Instant,
                partial: (@Sendable ([Wire.RerankResult]) -> Void)?) async throws -> RerankOutcome {
        var request = RerankRequest(query: r.query, instruction: r.instruction,
                                    documents: r.documents)
        request.topN = r.topN == 0 ? nil : Int(r.topN)
        request.maxTokensPerDocument = r.maxTokensPerDocument == 0 ? nil : Int(r.maxTokensPerDocument)
        request.maxLength = r.maxLength == 0 ? nil : Int(r.maxLength)
        request.deadline = r.timeoutMs == 0 ? nil : receivedAt + .milliseconds(Int(r.timeoutMs))
        request.priority = Int(r.priority)
        request.chunkLongDocuments = r.chunkLongDocuments
        request.chunkOverlapTokens = r.chunkOverlapTokens == 0 ? nil : Int(r.chunkOverlapTokens)
        if let partial {
            request.onProgress = { scores in partial(scores.map { Self.result($0, document: nil) }) }
        }
        let result: RerankResult
        do {
            result = try await engine.rerank(request)
        } catch let error as EngineError {
            throw Self.status(error)
        }
        var chosen = result.ranked
        if r.inputOrder { chosen.sort { $0.index < $1.index } }
        let u = result.usage
        let response = Wire.RerankResponse(
            results: chosen.map { Self.result($0, document: r.returnDocuments ? r.documents[$0.index] : nil) },
            usage: Wire.Usage(prefixTokens: UInt32(u.prefixTokens), prefixTokensCached: UInt32(u.prefixTokensCached),
                              documentTokens: UInt64(u.documentTokens), truncatedDocuments: UInt32(u.truncatedDocuments),
                              documents: UInt32(r.documents.count),
                              inputTokens: UInt64(u.prefixTokens * u.windows + u.documentTokens + u.suffixTokens)),
            timings: Wire.Timings(queuedMs: result.timings.queued.milliseconds, computeMs: result.timings.computing.milliseconds),
            modelID: options.modelID)
        metrics.queueTime.recordNanoseconds(result.timings.queued.nanoseconds)
        metrics.computeTime.recordNanoseconds(result.timings.computing.nanoseconds)
        metrics.documents.increment(by: Int64(r.documents.count))
        metrics.prefixTokens.increment(by: Int64(u.prefixTokens))
        metrics.prefixTokensCached.increment(by: Int64(u.prefixTokensCached))
        metrics.documentTokens.increment(by: Int64(u.documentTokens))
        return RerankOutcome(response: response, queued: result.timings.queued, computing: result.timings.computing)
    }

    func tokenize(_ r: Wire.TokenizeRequest) throws -> [Wire.TokenizedText] {
        guard r.texts.count <= engine.options.maxDocuments else {
            throw Wire.Status(.invalidArgument, "\(r.texts.count) texts; at most \(engine.options.maxDocuments) per request: split the request")
        }
        return engine.tokenize(r.texts).map { ids in
            Wire.TokenizedText(count: UInt32(ids.count), ids: r.returnIDs ? ids.map { UInt32($0) } : [])
        }
    }

    func modelInfo() -> Wire.ModelInfo {
        let model = engine.model
        var m = Wire.ModelInfo()
        m.modelID = options.modelID
        m.quantization = model.precision
        m.hiddenSize = UInt32(model.hiddenSize)
        m.layers = UInt32(model.layers)
        m.attentionHeads = UInt32(model.attentionHeads)
        m.kvHeads = UInt32(model.kvHeads)
        m.vocabSize = UInt32(model.vocabSize)
        m.maxLength = UInt32(model.maxLength)
        m.defaultMaxLength = UInt32(engine.options.defaultMaxLength)
        m.maxDocuments = UInt32(engine.options.maxDocuments)
        m.maxFrameBytes = UInt32(options.maxFrameBytes)
        m.maxInFlightPerConnection = UInt32(options.maxInFlightPerConnection)
        m.serverVersion = Self.serverVersion
        m.protocolVersion = Wire.protocolVersion
        m.defaultInstruction = RerankPrompt.defaultInstruction
        return m
    }

    func health(serving: Bool) -> Wire.Health {
        let stats = engine.stats
        return Wire.Health(status: serving ? .serving : .notServing, activeRequests: UInt32(stats.activeRequests),
                           queuedTokens: UInt64(stats.queuedTokens))
    }

    static func result(_ s: DocumentScore, document: String?) -> Wire.RerankResult {
        var result = Wire.RerankResult(index: UInt32(s.index), relevanceScore: s.probability, logit: s.logit, tokens: UInt32(s.tokens),
                                       truncated: s.truncated, document: document, inputTokens: UInt32(s.inputTokens))
        result.window = UInt32(s.window)
        result.windows = UInt32(s.windows)
        return result
    }

    static func status(_ e: EngineError) -> Wire.Status {
        let code: Wire.Code = switch e.code {
        case .invalidArgument: .invalidArgument
        case .resourceExhausted: .resourceExhausted
        case .deadlineExceeded: .deadlineExceeded
        case .cancelled: .cancelled
        case .unavailable: .unavailable
        case .internal: .internal
        }
        return Wire.Status(code, e.message)
    }
}
