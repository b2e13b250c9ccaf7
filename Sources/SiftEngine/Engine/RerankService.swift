import Qwen3

/// What a front door (the RPC and HTTP servers) needs of a reranker: scoring, tokenizing, a
/// description of the model and the engine's counters. `SiftEngine` is the real one; tests hand
/// the server fakes, so handlers can be tested without a model.
public protocol RerankService: Sendable {
    /// Admission as a call arrives, before any work (see `SiftEngine.admit`): the admitted
    /// call holds its room in the queue until `rerank` queues it. Throws `EngineError`.
    func admit(_ request: RerankRequest) throws -> AdmittedRequest
    /// Scores every document of an admitted call against its query. Throws `EngineError` (its
    /// code says how it failed, its message what to do).
    func rerank(_ call: AdmittedRequest) async throws -> RerankResult
    /// Token ids of each text (as a document would be tokenized, without the prompt).
    func tokenize(_ texts: [String]) -> [[Int32]]
    /// The model being served.
    var model: ModelDescription { get }
    /// Limits and defaults the front doors check before calling.
    var options: EngineOptions { get }
    /// Counters and gauges, read now.
    var stats: EngineStats { get }
    /// Stops taking work; calls still running fail with `unavailable`.
    func shutdown()
    /// Why the service cannot serve at all any more (e.g. its model file changed), or nil:
    /// Health reports NOT_SERVING while a model has one.
    var fault: String? { get }
}

extension RerankService {
    public var fault: String? { nil }

    /// Admits and scores a call.
    public func rerank(_ request: RerankRequest) async throws -> RerankResult {
        try await rerank(admit(request))
    }
}

/// The model behind a `RerankService`, as `ModelInfo` reports it.
public struct ModelDescription: Sendable, Equatable {
    /// "int8" or "fp32".
    public var precision: String
    public var hiddenSize: Int
    public var layers: Int
    public var attentionHeads: Int
    public var kvHeads: Int
    public var vocabSize: Int
    /// Tokens of one (query, document) pair may not exceed this (the model's position limit).
    public var maxLength: Int

    public init(precision: String, hiddenSize: Int, layers: Int, attentionHeads: Int, kvHeads: Int, vocabSize: Int, maxLength: Int) {
        self.precision = precision
        self.hiddenSize = hiddenSize
        self.layers = layers
        self.attentionHeads = attentionHeads
        self.kvHeads = kvHeads
        self.vocabSize = vocabSize
        self.maxLength = maxLength
    }
}

extension SiftEngine: RerankService {
    public func tokenize(_ texts: [String]) -> [[Int32]] {
        texts.map { reranker.tokenizer.encode($0) }
    }

    public var model: ModelDescription {
        let c = reranker.model.config
        return ModelDescription(precision: reranker.model.precision.rawValue, hiddenSize: c.hiddenSize, layers: c.layerCount,
                                attentionHeads: c.headCount, kvHeads: c.kvHeadCount, vocabSize: c.vocabSize,
                                maxLength: maxLengthLimit)
    }
}
