import SiftBase
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
        var request = request
        if prepared.isChunked, let onProgress = request.onProgress {
            // Report a document once all its windows are scored.
            let merger = Locked(WindowMerger(prepared))
            request.onProgress = { scores in
                let done = merger.withLock { $0.add(scores) }
                if !done.isEmpty { onProgress(done) }
            }
        }
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let box = Locked<ActiveRequest?>(nil)
        let workScores: [DocumentScore] = try await withTaskCancellationHandler {
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
        var scores = workScores
        if prepared.isChunked {
            var merger = WindowMerger(prepared)
            scores = merger.add(workScores).sorted { $0.index < $1.index }
        }
        let ranked = scores.sorted { (a: DocumentScore, b: DocumentScore) -> Bool in
            a.logit != b.logit ? a.logit > b.logit : a.index < b.index
        }
        return RerankResult(results: scores, ranked: Array(ranked.prefix(request.topN ?? ranked.count)),
                            usage: prepared.usage(cached: active.prefixTokensCached),
                            timings: .init(queued: first - active.arrival, computing: end - first))
    }

    /// Validated, tokenized form of a request.
    struct Prepared {
        var prefix: [Int32]
        /// What the scheduler computes: one per document, or one per window of a chunked one.
        var documents: [DocumentWork]
        var suffixTokens: Int
        /// For each work item: its document and window; and each document's window count and tokens.
        var owners: [(document: Int, window: Int)] = []
        var windowCounts: [Int] = []
        var documentTokens: [Int] = []
        var isChunked: Bool { owners.count != windowCounts.count }

        func usage(cached: Int) -> RerankResult.Usage {
            .init(prefixTokens: prefix.count, prefixTokensCached: cached,
                  documentTokens: documents.reduce(0) { $0 + $1.documentTokens }, suffixTokens: suffixTokens * documents.count,
                  truncatedDocuments: documents.filter(\.truncated).count, windows: documents.count)
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
        if let n = r.chunkOverlapTokens, n < 0 { throw EngineError(.invalidArgument, "chunk overlap must not be negative") }
        let budget = min(prompt.documentBudget, r.maxTokensPerDocument ?? .max)
        var prepared = Prepared(prefix: prompt.prefix, documents: [], suffixTokens: prompt.suffix.count)
        func work(_ ids: ArraySlice<Int32>, truncated: Bool) -> DocumentWork {
            let tokens = options.prefixSharing ? Array(ids) + prompt.suffix : prompt.prefix + ids + prompt.suffix
            return DocumentWork(tokens: tokens, documentTokens: ids.count, truncated: truncated)
        }
        for (index, text) in r.documents.enumerated() {
            let ids = tokenizer.encode(" " + text)
            if r.chunkLongDocuments && ids.count > budget && budget > 0 {
                let overlap = min(r.chunkOverlapTokens ?? min(256, budget / 4), budget - 1)
                var start = 0, window = 0
                while true {
                    let end = min(ids.count, start + budget)
                    prepared.documents.append(work(ids[start..<end], truncated: false))
                    prepared.owners.append((index, window))
                    window += 1
                    if end == ids.count { break }
                    start = end - overlap
                }
                prepared.windowCounts.append(window)
            } else {
                let kept = min(ids.count, budget)
                prepared.documents.append(work(ids[..<kept], truncated: kept < ids.count))
                prepared.owners.append((index, 0))
                prepared.windowCounts.append(1)
            }
            prepared.documentTokens.append(min(ids.count, r.chunkLongDocuments ? ids.count : budget))
        }
        return prepared
    }
}

/// Folds the scores of a chunked document's windows into one score per document: the best
/// window's (ties: the earlier window), reported once every window is scored.
struct WindowMerger {
    private let owners: [(document: Int, window: Int)]
    private let windowCounts: [Int]
    private let documentTokens: [Int]
    private var remaining: [Int]
    private var best: [DocumentScore?]

    init(_ prepared: SiftEngine.Prepared) {
        owners = prepared.owners
        windowCounts = prepared.windowCounts
        documentTokens = prepared.documentTokens
        remaining = prepared.windowCounts
        best = Array(repeating: nil, count: prepared.windowCounts.count)
    }

    /// Work-level scores in; the documents they completed out.
    mutating func add(_ scores: [DocumentScore]) -> [DocumentScore] {
        var done: [DocumentScore] = []
        for s in scores {
            let (document, window) = owners[s.index]
            if best[document] == nil || s.logit > best[document]!.logit
                || (s.logit == best[document]!.logit && window < best[document]!.window) {
                best[document] = DocumentScore(index: document, logit: s.logit, probability: s.probability,
                                               tokens: documentTokens[document], truncated: s.truncated,
                                               window: window, windows: windowCounts[document])
            }
            remaining[document] -= 1
            if remaining[document] == 0 { done.append(best[document]!) }
        }
        return done
    }
}
