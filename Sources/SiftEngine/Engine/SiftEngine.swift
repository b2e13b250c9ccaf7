import SiftBase
import Foundation
import Qwen3
import Synchronization

/// The reranking service core: many concurrent `rerank` calls share one model through a
/// continuous-batching scheduler and a prefix KV cache. Usable from the server and directly
/// from Swift code.
///
///     let engine = SiftEngine(reranker: try RerankerModel.load(path: "model.sift"))
///     let result = try await engine.rerank(RerankRequest(query: q, documents: docs, topN: 5))
public final class SiftEngine: Sendable {
    public let reranker: RerankerModel
    public let options: EngineOptions
    let scheduler: Scheduler
    private let nextID = Atomic<UInt64>(1)
    /// Scores computed before, answered without compute (nil: off).
    public let scoreCache: ScoreCache?
    /// Part of every score-cache key: no other engine's entry ever matches (even of the same
    /// model, which may have been loaded with other options).
    private let identity = UUID()
    private let scoreCacheLookups = Atomic<Int>(0)
    private let scoreCacheHits = Atomic<Int>(0)

    /// Checks, estimates and tokenizes calls (`RequestPreparer`).
    let preparer: RequestPreparer

    /// `scoreCache`: a cache shared with other engines (a server's models share one budget);
    /// nil: the engine's own of `options.scoreCacheBytes`, if any.
    public init(reranker: RerankerModel, options: EngineOptions = EngineOptions(), scoreCache: ScoreCache? = nil) {
        self.reranker = reranker
        self.options = options
        self.scoreCache = scoreCache ?? (options.scoreCacheBytes > 0 ? ScoreCache(budgetBytes: options.scoreCacheBytes) : nil)
        let budget = options.kvBudgetBytes ?? SystemMemory.defaultKVBudget(mappedModelBytes: reranker.model.mappedWeightBytes)
        scheduler = Scheduler(model: reranker.model, options: options, kvBudgetBytes: budget)
        preparer = RequestPreparer(tokenizer: reranker.tokenizer, options: options, maxLengthLimit: reranker.maxLengthLimit,
                                   kvBudgetBlocks: scheduler.kv.budgetBlocks, kvBlockBytes: scheduler.kv.pool.blockBytes)
        scheduler.start()
    }

    /// The KV budget in force (explicit, or the default picked from free memory).
    public var kvBudgetBytes: Int { scheduler.kv.budgetBytes }

    /// KV bytes of one position (all layers, keys and values).
    public var kvBytesPerToken: Int { scheduler.kv.pool.blockBytes / KVBlock.positions }

    deinit { scheduler.stop() }

    /// Stops the scheduler; requests still running fail with `unavailable`.
    public func shutdown() { scheduler.stop() }

    /// Why this engine cannot serve any more (its model file changed under it), or nil.
    public var fault: String? { scheduler.modelFileChange.map { Scheduler.modelFileChanged($0).message } }

    public var stats: EngineStats {
        var stats = scheduler.stats.withLock { $0 }
        stats.scoreCacheLookups = scoreCacheLookups.load(ordering: .relaxed)
        stats.scoreCacheHits = scoreCacheHits.load(ordering: .relaxed)
        return stats
    }

    /// Tokens of one pair may not exceed this (the model's position limit).
    public var maxLengthLimit: Int { reranker.maxLengthLimit }

    /// Scores every document of an admitted call against its query (`rerank(_: RerankRequest)`
    /// admits and scores). Throws `EngineError`: invalidArgument (the message says what to
    /// fix), resourceExhausted (queue full: retry later), deadlineExceeded, cancelled (the
    /// calling task was cancelled), unavailable (shutting down).
    ///
    /// Documents found in the score cache are answered at once (streamed first); only the
    /// others are computed, and their scores are cached for the next call.
    public func rerank(_ call: AdmittedRequest) async throws -> RerankResult {
        // A call admitted without room in this engine's queue (`AdmittedRequest(unqueued:)`) is admitted here.
        guard call.reservation != nil else { return try await rerank(admit(call.request)) }
        let (request, maxLength) = (call.request, call.maxLength)
        guard let cache = scoreCache, !request.documents.isEmpty else { return try await compute(call).result }
        let context = scoreCacheContext(request, maxLength: maxLength)
        var cached: [(index: Int, entry: ScoreCache.Entry)] = []
        var missing: [Int] = []
        for (index, document) in request.documents.enumerated() {
            if let entry = cache.lookup(context, document: document) { cached.append((index, entry)) } else { missing.append(index) }
        }
        scoreCacheLookups.add(request.documents.count, ordering: .relaxed)
        scoreCacheHits.add(cached.count, ordering: .relaxed)
        let hits = cached.map { c in
            DocumentScore(index: c.index, logit: c.entry.logit, probability: sigmoid(c.entry.logit), tokens: c.entry.tokens,
                          truncated: c.entry.truncated, inputTokens: c.entry.inputTokens, window: c.entry.window, windows: c.entry.windows)
        }
        if !hits.isEmpty { request.onProgress?(hits) }

        var computed = RerankResult(results: [], ranked: [], usage: .init(prefixTokens: 0, prefixTokensCached: 0, documentTokens: 0,
                                                                           suffixTokens: 0, truncatedDocuments: 0, windows: 0),
                                    timings: .init(queued: .zero, computing: .zero))
        if missing.isEmpty {
            // Nothing to compute; the prompt is tokenized only to report its size.
            let prompt = try RerankPrompt(tokenizer: reranker.tokenizer, query: request.query, instruction: request.instruction,
                                          maxLength: maxLength)
            computed.usage.prefixTokens = prompt.prefix.count
        } else {
            var rest = request
            rest.documents = missing.map { request.documents[$0] }
            rest.topN = nil
            if let onProgress = request.onProgress {
                let original = missing
                rest.onProgress = { scores in onProgress(scores.map { var s = $0; s.index = original[s.index]; return s }) }
            }
            let (result, computedTokens) = try await compute(AdmittedRequest(request: rest, maxLength: maxLength,
                                                                             reservation: call.reservation!))
            for score in result.results {
                cache.insert(context, document: rest.documents[score.index], ScoreCache.Entry(
                    logit: score.logit, tokens: score.tokens, truncated: score.truncated, inputTokens: score.inputTokens,
                    window: score.window, windows: score.windows, computedTokens: computedTokens[score.index]))
            }
            computed = result
            computed.results = result.results.map { var s = $0; s.index = missing[s.index]; return s }
        }
        var usage = computed.usage
        for c in cached {
            usage.documentTokens += c.entry.computedTokens
            usage.suffixTokens += preparer.fixedPromptTokens.suffix * c.entry.windows
            usage.truncatedDocuments += c.entry.truncated ? 1 : 0
            usage.windows += c.entry.windows
        }
        usage.cachedDocuments = cached.count
        let results = (computed.results + hits).sorted { $0.index < $1.index }
        return RerankResult(results: results, ranked: Self.ranked(results, topN: request.topN), usage: usage, timings: computed.timings)
    }

    /// The scores of `documents` against `query`, in input order (`rerank` with defaults; an
    /// engine made with `EngineOptions.inProcess` takes any number of documents).
    public func score(query: String, instruction: String? = nil, documents: [String], maxLength: Int? = nil) async throws -> [DocumentScore] {
        try await rerank(RerankRequest(query: query, instruction: instruction, documents: documents, maxLength: maxLength)).results
    }

    /// Admission, before any work and cheap enough for an event loop: checks what needs no
    /// tokenizing and holds the call's room in the queue bound, from an estimate of its tokens,
    /// until `rerank` queues it. A front door admits a call as it arrives: under overload the
    /// excess is refused at once, and the calls waiting for a thread to tokenize them count
    /// toward the bound instead of piling up in front of it. Throws `EngineError`
    /// (invalidArgument, resourceExhausted: retry later, unavailable).
    public func admit(_ request: RerankRequest) throws -> AdmittedRequest {
        if let change = scheduler.modelFileChange { throw Scheduler.modelFileChanged(change) }
        let maxLength = try preparer.check(request)
        let fewest = preparer.fewestTokens(request, maxLength: maxLength)
        if fewest > options.requestTokenLimit { throw RequestPreparer.tooManyTokens(atLeast: fewest, limit: options.requestTokenLimit) }
        let reservation: QueueReservation
        do {
            reservation = try scheduler.reserve(preparer.estimatedTokens(request.documents, of: request, maxLength: maxLength))
        } catch let error as EngineError where error.code == .resourceExhausted && scoreCache != nil {
            // The queue is full, but documents the score cache answers need no room in it (a
            // call it answers whole is admitted with none): hold room for the others only.
            let context = scoreCacheContext(request, maxLength: maxLength)
            let missing = request.documents.filter { scoreCache!.lookup(context, document: $0) == nil }
            reservation = try scheduler.reserve(missing.isEmpty ? 0 : preparer.estimatedTokens(missing, of: request, maxLength: maxLength))
        }
        return AdmittedRequest(request: request, maxLength: maxLength, reservation: reservation)
    }

    private func scoreCacheContext(_ request: RerankRequest, maxLength: Int) -> ScoreCache.Context {
        ScoreCache.context(engine: identity, instruction: request.instruction ?? RerankPrompt.defaultInstruction,
                           query: request.query, maxLength: maxLength, maxTokensPerDocument: request.maxTokensPerDocument,
                           chunk: request.chunkLongDocuments, chunkOverlap: request.chunkOverlapTokens,
                           partition: request.cachePartition)
    }

    /// Best first (by logit, ties by index), cut to `topN`.
    static func ranked(_ scores: [DocumentScore], topN: Int?) -> [DocumentScore] {
        let ranked = scores.sorted { (a: DocumentScore, b: DocumentScore) -> Bool in
            a.logit != b.logit ? a.logit > b.logit : a.index < b.index
        }
        return Array(ranked.prefix(topN ?? ranked.count))
    }

    /// Computes every document of an admitted call on the scheduler; also returns each
    /// document's computed tokens (over all its windows).
    private func compute(_ call: AdmittedRequest) async throws -> (result: RerankResult, computedTokens: [Int]) {
        var request = call.request
        let prepared = try preparer.prepare(request, maxLength: call.maxLength)
        if request.documents.isEmpty {
            return (RerankResult(results: [], ranked: [], usage: prepared.usage(cached: 0),
                                 timings: .init(queued: .zero, computing: .zero)), [])
        }
        if Task.isCancelled { throw EngineError(.cancelled, "the request was cancelled") }
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
                    try scheduler.submit(active, replacing: call.reservation!)
                } catch {
                    active.end()
                    active.resumeCaller(error: error as? EngineError ?? EngineError(.internal, "\(error)"))
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
        var computedTokens = [Int](repeating: 0, count: prepared.windowCounts.count)
        for (work, owner) in zip(prepared.documents, prepared.owners) { computedTokens[owner.document] += work.documentTokens }
        let result = RerankResult(results: scores, ranked: Self.ranked(scores, topN: request.topN),
                                  usage: prepared.usage(cached: active.prefixTokensCached),
                                  timings: .init(queued: first - active.arrival, computing: end - first))
        return (result, computedTokens)
    }
}
