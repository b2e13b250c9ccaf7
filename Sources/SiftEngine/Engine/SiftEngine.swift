import Foundation
import Qwen3
import Synchronization

/// The reranking service core: many concurrent `rerank` calls share one model through a
/// continuous-batching scheduler and a prefix KV cache. Usable from the server and directly
/// from Swift code.
///
///     let engine = SiftEngine(reranker: try Reranker.load(path: "model.sift"))
///     let result = try await engine.rerank(RerankRequest(query: q, documents: docs, topN: 5))
public final class SiftEngine: Sendable {
    public let reranker: Reranker
    public let options: EngineOptions
    private let scheduler: Scheduler
    private let nextID = Atomic<UInt64>(1)

    public init(reranker: Reranker, options: EngineOptions = EngineOptions()) {
        self.reranker = reranker
        self.options = options
        scheduler = Scheduler(model: reranker.model, options: options)
        scheduler.start()
    }

    deinit { scheduler.stop() }

    /// Stops the scheduler; requests still running fail with `unavailable`.
    public func shutdown() { scheduler.stop() }

    public var stats: EngineStats { scheduler.stats.withLock { $0 } }
    public var modelConfig: Qwen3Config { reranker.model.config }

    /// Tokens of one pair may not exceed this (the model's position limit).
    public var maxLengthLimit: Int { reranker.maxLengthLimit }

    /// Scores every document against the query. Throws `EngineError`: invalidArgument (the
    /// message says what to fix), resourceExhausted (queue full: retry later), deadlineExceeded,
    /// cancelled (the calling task was cancelled), unavailable (shutting down).
    public func rerank(_ request: RerankRequest) async throws -> RerankResult {
        let prepared = try prepare(request)
        if request.documents.isEmpty {
            return RerankResult(results: [], ranked: [], usage: prepared.usage(cached: 0),
                                timings: .init(queued: .zero, computing: .zero))
        }
        if Task.isCancelled { throw EngineError(.cancelled, "the request was cancelled") }
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let box = Mutex<ActiveRequest?>(nil)
        let scores: [DocumentScore] = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[DocumentScore], any Error>) in
                let active = ActiveRequest(id: id, request: request, prefix: prepared.prefix, documents: prepared.documents,
                                           sharing: options.prefixSharing, continuation: continuation)
                box.withLock { $0 = active }
                do {
                    try scheduler.submit(active)
                } catch {
                    active.complete(error: error as? EngineError ?? EngineError(.internal, "\(error)"))
                }
                if Task.isCancelled { active.cancelled.store(true, ordering: .relaxed); scheduler.poke() }
            }
        } onCancel: {
            box.withLock { $0?.cancelled.store(true, ordering: .relaxed) }
            scheduler.poke()
        }
        let active = box.withLock { $0! }
        let first = active.firstScheduled ?? active.arrival
        let end = active.finishedAt ?? ContinuousClock.now
        let ranked = scores.sorted { $0.logit != $1.logit ? $0.logit > $1.logit : $0.index < $1.index }
        return RerankResult(results: scores, ranked: Array(ranked.prefix(request.topN ?? ranked.count)),
                            usage: prepared.usage(cached: active.prefixTokensCached),
                            timings: .init(queued: first - active.arrival, computing: end - first))
    }

    /// Validated, tokenized form of a request.
    struct Prepared {
        var prefix: [Int32]
        var documents: [DocumentWork]
        var suffixTokens: Int

        func usage(cached: Int) -> RerankResult.Usage {
            .init(prefixTokens: prefix.count, prefixTokensCached: cached,
                  documentTokens: documents.reduce(0) { $0 + $1.documentTokens }, suffixTokens: suffixTokens * documents.count,
                  truncatedDocuments: documents.filter(\.truncated).count)
        }
    }

    func prepare(_ r: RerankRequest) throws -> Prepared {
        guard !r.query.isEmpty else { throw EngineError(.invalidArgument, "the query is empty") }
        guard r.documents.count <= options.maxDocuments else {
            throw EngineError(.invalidArgument, "\(r.documents.count) documents; at most \(options.maxDocuments) per request: split the request")
        }
        if let n = r.topN, n < 0 { throw EngineError(.invalidArgument, "top_n must not be negative") }
        if let n = r.maxTokensPerDocument, n <= 0 { throw EngineError(.invalidArgument, "max_tokens_per_document must be positive") }
        let maxLength = r.maxLength ?? options.defaultMaxLength
        guard maxLength > 0, maxLength <= maxLengthLimit else {
            throw EngineError(.invalidArgument, "max_length \(maxLength) must be in 1...\(maxLengthLimit)")
        }
        let tokenizer = reranker.tokenizer
        let prompt: RerankPrompt
        do {
            prompt = try RerankPrompt(tokenizer: tokenizer, query: r.query, instruction: r.instruction, maxLength: maxLength)
        } catch {
            throw EngineError(.invalidArgument, "\(error)")
        }
        let documents = r.documents.map { text -> DocumentWork in
            var (ids, truncated) = prompt.document(text, tokenizer: tokenizer)
            if let cap = r.maxTokensPerDocument, ids.count > cap {
                ids.removeLast(ids.count - cap)
                truncated = true
            }
            let tokens = options.prefixSharing ? ids + prompt.suffix : prompt.prefix + ids + prompt.suffix
            return DocumentWork(tokens: tokens, documentTokens: ids.count, truncated: truncated)
        }
        return Prepared(prefix: prompt.prefix, documents: documents, suffixTokens: prompt.suffix.count)
    }
}
