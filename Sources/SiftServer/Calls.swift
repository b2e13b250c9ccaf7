import Qwen3
import SiftEngine
import SiftProtocol
import SiftBase

/// What each call does, independent of the network: wire request in, wire response out,
/// failures as `Wire.Status` with a message for the caller. What a finished call computed
/// (documents, tokens, queue and compute time) is counted here, so both front doors count it.
struct Calls: Sendable {
    let models: ServedModels
    /// The model the call named (resolved once, by `CallLifecycle.admit`).
    let model: ServedModels.Model
    let options: ServerOptions
    let metrics: ServerMetrics
    let tokenizeLane: TokenizeLane
    /// The caller's cache partition (per API key; see `APIKeys.cachePartition`).
    var cachePartition: UInt64 = 0
    static let serverVersion = SiftVersion.current

    /// Bytes a result adds to an answer besides its document text (index, scores, counts, tags).
    static let resultBytes = 48
    /// Bytes of an answer besides its results (usage, timings, model id, framing).
    static let answerBytes = 512

    /// About how many bytes the answer to `body` will take, known before it runs (an upper
    /// bound, never more than a frame): what the connection's outbound gate holds for the call.
    static func expectedAnswerBytes(_ body: Wire.Body, maxFrameBytes: Int) -> Int {
        let bytes = switch body {
        case .rerankRequest(let r):
            r.documents.count * resultBytes + (r.returnDocuments ? returnedDocumentBytes(r) : 0)
        case .tokenizeRequest(let t):
            // At most one id per byte of normalized text (NFC: 3 per byte at most), 3 bytes each.
            t.texts.count * 16 + (t.returnIDs ? t.texts.reduce(0) { $0 + 9 * $1.utf8.count } : 0)
        default:
            2048
        }
        return answerBytes + min(bytes, maxFrameBytes)
    }

    /// The same bound from a frame not yet decoded: its size and item count.
    static func expectedAnswerBytes(frameBytes: Int, items: Int, field: Int?, maxFrameBytes: Int) -> Int {
        let bytes = switch field {
        case Envelope.Field.rerankRequest: items * resultBytes + frameBytes
        case Envelope.Field.tokenizeRequest: items * 16 + 9 * frameBytes
        default: 2048
        }
        return answerBytes + min(bytes, maxFrameBytes)
    }

    /// Document text a rerank's answer can carry: every document, or the `top_n` largest.
    static func returnedDocumentBytes(_ r: Wire.RerankRequest) -> Int {
        let sizes = r.documents.map(\.utf8.count)
        guard let n = r.topN.map(Int.init), n < sizes.count else { return sizes.reduce(0, +) }
        return sizes.sorted(by: >).prefix(n).reduce(0, +)
    }

    /// What a finished rerank reports to logs and metrics.
    struct RerankOutcome: Sendable {
        var response: Wire.RerankResponse
        var queued: Duration
        var computing: Duration
    }

    /// A rerank call past admission: it holds its room in the queue of the call's model.
    struct AdmittedRerank: Sendable {
        let wire: Wire.RerankRequest
        let request: AdmittedRequest
    }

    /// Admits a rerank on the call's model as it arrives, before it waits for a thread: under
    /// overload it is refused here, at once (see `RerankService.admit`).
    func admitRerank(_ r: Wire.RerankRequest, receivedAt: ContinuousClock.Instant,
                     partial: (@Sendable ([Wire.RerankResult]) -> Void)?) throws(Wire.Status) -> AdmittedRerank {
        // Field for field: "not given" is nil on both sides, and the engine judges every value.
        var request = RerankRequest(query: r.query, instruction: r.instruction, documents: r.documents,
                                    topN: r.topN.map(Int.init), maxTokensPerDocument: r.maxTokensPerDocument.map(Int.init),
                                    maxLength: r.maxLength.map(Int.init),
                                    deadline: r.timeoutMs.map { receivedAt + .milliseconds(Int($0)) },
                                    priority: Int(r.priority))
        request.chunkLongDocuments = r.chunkLongDocuments
        request.chunkOverlapTokens = r.chunkOverlapTokens.map(Int.init)
        request.cachePartition = cachePartition
        if r.returnDocuments {
            // The answer must fit a frame the client accepts (the same limit both ways).
            let bytes = Self.answerBytes + r.documents.count * Self.resultBytes + Self.returnedDocumentBytes(r)
            guard bytes <= options.maxFrameBytes else {
                throw Wire.Status(.invalidArgument, "with return_documents the answer would take about \(bytes) bytes, over the frame limit of \(options.maxFrameBytes): set top_n, or return_documents false and keep the texts on your side")
            }
        }
        if let partial {
            request.onProgress = { scores in partial(scores.map { Self.result($0, document: nil) }) }
        }
        do {
            return AdmittedRerank(wire: r, request: try model.service.admit(request))
        } catch let error as EngineError {
            throw Self.status(error)
        } catch {
            throw Wire.Status(.internal, "\(error)")
        }
    }

    /// Scores an admitted call.
    func rerank(_ call: AdmittedRerank) async throws -> RerankOutcome {
        let r = call.wire
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

    /// Tokenizes on the server's tokenize lane (bounded, off the cooperative pool).
    func tokenize(_ r: Wire.TokenizeRequest) async throws -> [Wire.TokenizedText] {
        let engine = model.service
        guard r.texts.count <= engine.options.maxDocuments else {
            throw Wire.Status(.invalidArgument, "\(r.texts.count) texts; at most \(engine.options.maxDocuments) per request: split the request")
        }
        let bytes = r.texts.reduce(0) { $0 + $1.utf8.count }
        let limit = options.maxFrameBytes
        return try await tokenizeLane.run(bytes: bytes) {
            let ids = engine.tokenize(r.texts)
            if r.returnIDs {
                // Packed varints: the answer must fit a frame the client accepts.
                let answer = ids.reduce(Self.answerBytes) { total, text in
                    text.reduce(total + 16) { $0 + ($1 < 128 ? 1 : $1 < 16_384 ? 2 : $1 < 2_097_152 ? 3 : 5) }
                }
                guard answer <= limit else {
                    throw Wire.Status(.invalidArgument, "the ids would take \(answer) bytes, over the frame limit of \(limit): send fewer or shorter texts, or return_ids false for counts only")
                }
            }
            return ids.map { Wire.TokenizedText(count: UInt32($0.count), ids: r.returnIDs ? $0.map { UInt32($0) } : []) }
        }
    }

    /// The server's limits, the model named ("": the default), and every model served.
    func modelInfo() -> Wire.ModelInfo {
        let served = self.model
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
