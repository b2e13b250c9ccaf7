import Qwen3
import SiftEngine
import SiftProtocol
import SiftBase

/// What each call does, independent of the network: wire request in, wire response out,
/// failures as `Wire.Status` with a message for the caller. What a finished call computed
/// (documents, tokens, queue and compute time) is counted here, so both front doors count it.
struct Calls: Sendable {
    let models: ServedModels
    let options: ServerOptions
    let metrics: ServerMetrics
    static let serverVersion = SiftVersion.current

    /// What a finished rerank reports to logs and metrics.
    struct RerankOutcome: Sendable {
        var response: Wire.RerankResponse
        var queued: Duration
        var computing: Duration
    }

    /// A rerank call past admission: it holds its room in the model's queue.
    struct AdmittedRerank: Sendable {
        let wire: Wire.RerankRequest
        let model: ServedModels.Model
        let request: RerankRequest
    }

    /// Admits a rerank for `model` (resolved by the caller from `r.model`, so it can label what
    /// it counts) as it arrives, before it waits for a thread: under overload it is refused
    /// here, at once (see `RerankService.admit`).
    func admitRerank(_ r: Wire.RerankRequest, model: ServedModels.Model, receivedAt: ContinuousClock.Instant,
                     partial: (@Sendable ([Wire.RerankResult]) -> Void)?) throws(Wire.Status) -> AdmittedRerank {
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
        do {
            return AdmittedRerank(wire: r, model: model, request: try model.service.admit(request))
        } catch let error as EngineError {
            throw Self.status(error)
        } catch {
            throw Wire.Status(.internal, "\(error)")
        }
    }

    /// Scores an admitted call.
    func rerank(_ call: AdmittedRerank) async throws -> RerankOutcome {
        let (r, model) = (call.wire, call.model)
        let result: RerankResult
        do {
            result = try await model.service.rerank(call.request)
        } catch let error as EngineError {
            throw Self.status(error)
        }
        var chosen = result.ranked
        if r.inputOrder { chosen.sort { $0.index < $1.index } }
        let u = result.usage
        var response = Wire.RerankResponse(
            results: chosen.map { Self.result($0, document: r.returnDocuments ? r.documents[$0.index] : nil) },
            usage: Wire.Usage(prefixTokens: UInt32(u.prefixTokens), prefixTokensCached: UInt32(u.prefixTokensCached),
                              documentTokens: UInt64(u.documentTokens), truncatedDocuments: UInt32(u.truncatedDocuments),
                              documents: UInt32(r.documents.count),
                              inputTokens: UInt64(u.prefixTokens * u.windows + u.documentTokens + u.suffixTokens)),
            timings: Wire.Timings(queuedMs: result.timings.queued.milliseconds, computeMs: result.timings.computing.milliseconds),
            modelID: model.name)
        response.usage.cachedDocuments = UInt32(u.cachedDocuments)
        metrics.model(model.name).record(result, documents: r.documents.count)
        return RerankOutcome(response: response, queued: result.timings.queued, computing: result.timings.computing)
    }

    func tokenize(_ r: Wire.TokenizeRequest) throws -> [Wire.TokenizedText] {
        let engine = try models.resolve(r.model).service
        guard r.texts.count <= engine.options.maxDocuments else {
            throw Wire.Status(.invalidArgument, "\(r.texts.count) texts; at most \(engine.options.maxDocuments) per request: split the request")
        }
        return engine.tokenize(r.texts).map { ids in
            Wire.TokenizedText(count: UInt32(ids.count), ids: r.returnIDs ? ids.map { UInt32($0) } : [])
        }
    }

    /// The server's limits, the model named ("": the default), and every model served.
    func modelInfo(model name: String) throws(Wire.Status) -> Wire.ModelInfo {
        let served = try models.resolve(name)
        let engine = served.service
        let model = engine.model
        var m = Wire.ModelInfo()
        m.modelID = served.name
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
        m.models = models.models.enumerated().map { index, served in
            let d = served.service.model
            var s = Wire.ServedModel(name: served.name)
            s.aliases = served.aliases
            s.quantization = d.precision
            s.hiddenSize = UInt32(d.hiddenSize)
            s.layers = UInt32(d.layers)
            s.maxLength = UInt32(d.maxLength)
            s.isDefault = index == 0
            return s
        }
        return m
    }

    func health(serving: Bool) -> Wire.Health {
        Wire.Health(status: serving ? .serving : .notServing, activeRequests: UInt32(clamping: models.activeRequests),
                    queuedTokens: UInt64(models.queuedTokens))
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
