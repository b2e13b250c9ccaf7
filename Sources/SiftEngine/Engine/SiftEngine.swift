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
    let scheduler: Scheduler
    private let nextID = Atomic<UInt64>(1)
    /// Scores computed before, answered without compute (nil: off).
    public let scoreCache: ScoreCache?
    /// Part of every score-cache key: no other engine's entry ever matches (even of the same
    /// model, which may have been loaded with other options).
    private let identity = UUID()
    private let scoreCacheLookups = Atomic<Int>(0)
    private let scoreCacheHits = Atomic<Int>(0)

    /// Tokens of the prompt's fixed parts: the system prompt (every prefix starts with it) and the suffix.
    private let fixedPromptTokens: (prefix: Int, suffix: Int)

    /// `scoreCache`: a cache shared with other engines (a server's models share one budget);
    /// nil: the engine's own of `options.scoreCacheBytes`, if any.
    public init(reranker: Reranker, options: EngineOptions = EngineOptions(), scoreCache: ScoreCache? = nil) {
        self.reranker = reranker
        self.options = options
        self.scoreCache = scoreCache ?? (options.scoreCacheBytes > 0 ? ScoreCache(budgetBytes: options.scoreCacheBytes) : nil)
        fixedPromptTokens = (reranker.tokenizer.encode(RerankPrompt.systemPrompt).count,
                             reranker.tokenizer.encode(RerankPrompt.suffixText).count)
        let budget = options.kvBudgetBytes ?? SystemMemory.defaultKVBudget(mappedModelBytes: reranker.model.mappedWeightBytes)
        scheduler = Scheduler(model: reranker.model, options: options, kvBudgetBytes: budget)
        scheduler.start()
    }

    /// The KV budget in force (explicit, or the default picked from free memory).
    public var kvBudgetBytes: Int { scheduler.kvBudgetBlocks * scheduler.kvPool.blockBytes }

    /// KV bytes of one position (all layers, keys and values).
    public var kvBytesPerToken: Int { scheduler.kvPool.blockBytes / KVBlock.positions }

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

    /// Scores every document against the query. Throws `EngineError`: invalidArgument (the
    /// message says what to fix), resourceExhausted (queue full: retry later), deadlineExceeded,
    /// cancelled (the calling task was cancelled), unavailable (shutting down).
    ///
    /// Documents found in the score cache are answered at once (streamed first); only the
    /// others are computed, and their scores are cached for the next call.
    public func rerank(_ request: RerankRequest) async throws -> RerankResult {
        let request = request.admission == nil ? try admit(request) : request
        let maxLength = try validate(request)
        guard let cache = scoreCache, !request.documents.isEmpty else { return try await compute(request).result }
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
            let prompt = try RerankPrompt(tokenizer: reranker.tokenizer, query: request.query, instruction: request.instruction, maxLength: maxLength)
            computed.usage.prefixTokens = prompt.prefix.count
        } else {
            var rest = request
            rest.documents = missing.map { request.documents[$0] }
            rest.topN = nil
            if let onProgress = request.onProgress {
                let original = missing
                rest.onProgress = { scores in onProgress(scores.map { var s = $0; s.index = original[s.index]; return s }) }
            }
            let (result, computedTokens) = try await compute(rest)
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
            usage.suffixTokens += fixedPromptTokens.suffix * c.entry.windows
            usage.truncatedDocuments += c.entry.truncated ? 1 : 0
            usage.windows += c.entry.windows
        }
        usage.cachedDocuments = cached.count
        let results = (computed.results + hits).sorted { $0.index < $1.index }
        return RerankResult(results: results, ranked: Self.ranked(results, topN: request.topN), usage: usage, timings: computed.timings)
    }

    /// Admission, before any work and cheap enough for an event loop: checks what needs no
    /// tokenizing and holds the call's room in the queue bound, from an estimate of its tokens,
    /// until `rerank` queues it. A front door admits a call as it arrives: under overload the
    /// excess is refused at once, and the calls waiting for a thread to tokenize them count
    /// toward the bound instead of piling up in front of it. Throws `EngineError`
    /// (invalidArgument, resourceExhausted: retry later, unavailable).
    public func admit(_ request: RerankRequest) throws -> RerankRequest {
        if let change = scheduler.modelFileChange { throw Scheduler.modelFileChanged(change) }
        let maxLength = try validate(request)
        let fewest = fewestTokens(request, maxLength: maxLength)
        if fewest > options.requestTokenLimit { throw Self.tooManyTokens(atLeast: fewest, limit: options.requestTokenLimit) }
        var admitted = request
        do {
            admitted.admission = try scheduler.reserve(estimatedTokens(request.documents, of: request, maxLength: maxLength))
        } catch let error as EngineError where error.code == .resourceExhausted && scoreCache != nil {
            // The queue is full, but documents the score cache answers need no room in it (a
            // call it answers whole is admitted with none): hold room for the others only.
            let context = scoreCacheContext(request, maxLength: maxLength)
            let missing = request.documents.filter { scoreCache!.lookup(context, document: $0) == nil }
            admitted.admission = try scheduler.reserve(missing.isEmpty ? 0 : estimatedTokens(missing, of: request, maxLength: maxLength))
        }
        return admitted
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

    /// Computes every document of a validated request on the scheduler; also returns each
    /// document's computed tokens (over all its windows).
    private func compute(_ request: RerankRequest) async throws -> (result: RerankResult, computedTokens: [Int]) {
        let prepared = try prepare(request)
        if request.documents.isEmpty {
            return (RerankResult(results: [], ranked: [], usage: prepared.usage(cached: 0),
                                 timings: .init(queued: .zero, computing: .zero)), [])
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
                    try scheduler.submit(active, replacing: request.admission!)
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
        var computedTokens = [Int](repeating: 0, count: prepared.windowCounts.count)
        for (work, owner) in zip(prepared.documents, prepared.owners) { computedTokens[owner.document] += work.documentTokens }
        let result = RerankResult(results: scores, ranked: Self.ranked(scores, topN: request.topN),
                                  usage: prepared.usage(cached: active.prefixTokensCached),
                                  timings: .init(queued: first - active.arrival, computing: end - first))
        return (result, computedTokens)
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

    /// The checks that need no tokenizing; returns the call's max length.
    func validate(_ r: RerankRequest) throws -> Int {
        guard !r.query.isEmpty else { throw EngineError(.invalidArgument, "the query is empty") }
        guard r.documents.count <= options.maxDocuments else {
            throw EngineError(.invalidArgument, "\(r.documents.count) documents; at most \(options.maxDocuments) per request: split the request")
        }
        if let n = r.topN, n < 0 { throw EngineError(.invalidArgument, "top_n must not be negative") }
        if let n = r.maxTokensPerDocument, n <= 0 { throw EngineError(.invalidArgument, "max_tokens_per_document must be positive") }
        if let n = r.chunkOverlapTokens, n < 0 { throw EngineError(.invalidArgument, "chunk overlap must not be negative") }
        let maxLength = r.maxLength ?? options.defaultMaxLength
        guard maxLength > 0, maxLength <= maxLengthLimit else {
            throw EngineError(.invalidArgument, "max_length \(maxLength) must be in 1...\(maxLengthLimit)")
        }
        // A query that cannot fit is refused from its size, before anything is held for it.
        let fewest = fixedPromptTokens.prefix + fixedPromptTokens.suffix
            + reranker.tokenizer.fewestTokens(bytes: queryPartBytes(r))
        guard fewest <= maxLength else {
            throw EngineError(.invalidArgument, "the instruction and query are \(queryPartBytes(r)) bytes: at least \(fewest) tokens with the prompt, more than max_length \(maxLength); shorten the query or raise max_length")
        }
        return maxLength
    }

    /// Bytes of "<Instruct>: …\n<Query>: …\n<Document>:", counted without building it.
    private func queryPartBytes(_ r: RerankRequest) -> Int {
        let framing = RerankPrompt.queryPart(query: "", instruction: "").utf8.count
        return framing + (r.instruction ?? RerankPrompt.defaultInstruction).utf8.count + r.query.utf8.count
    }

    func prepare(_ r: RerankRequest) throws -> Prepared {
        let maxLength = try validate(r)
        let tokenizer = reranker.tokenizer
        let prompt = try RerankPrompt(tokenizer: tokenizer, query: r.query, instruction: r.instruction, maxLength: maxLength)
        let budget = min(prompt.documentBudget, r.maxTokensPerDocument ?? .max)
        let shared = options.prefixSharing ? prompt.prefix.count : 0
        let perSequence = (options.prefixSharing ? 0 : prompt.prefix.count) + prompt.suffix.count

        // Tokenize, counting every sequence and token the call asks for before building any; a
        // call over the limit stops being tokenized (and gives its queue room back) at once.
        var encoded: [[Int32]] = []
        encoded.reserveCapacity(r.documents.count)
        var cuts: [Windows] = []
        cuts.reserveCapacity(r.documents.count)
        var sequences = 0, tokens = shared, largest = 0
        for document in r.documents {
            let ids = tokenizer.encode(" " + document)
            let cut = r.chunkLongDocuments && ids.count > budget && budget > 0
                ? Windows(length: ids.count, window: budget, overlap: r.chunkOverlapTokens)
                : Windows(length: min(ids.count, budget), window: max(budget, 1), overlap: 0)
            encoded.append(ids)
            cuts.append(cut)
            sequences += cut.count
            tokens += cut.tokens + cut.count * perSequence
            largest = max(largest, min(ids.count, budget) + perSequence)
            if tokens > options.requestTokenLimit { throw Self.tooManyTokens(atLeast: tokens, limit: options.requestTokenLimit) }
            if Task.isCancelled { throw EngineError(.cancelled, "the request was cancelled") }
        }
        try checkSize(sequences: sequences, tokens: tokens, prefix: shared, largestSequence: largest)

        var prepared = Prepared(prefix: prompt.prefix, documents: [], suffixTokens: prompt.suffix.count)
        prepared.documents.reserveCapacity(sequences)
        func work(_ ids: ArraySlice<Int32>, truncated: Bool) -> DocumentWork {
            let tokens = options.prefixSharing ? Array(ids) + prompt.suffix : prompt.prefix + ids + prompt.suffix
            return DocumentWork(tokens: tokens, documentTokens: ids.count, truncated: truncated, prefixTokens: shared)
        }
        for (index, (ids, cut)) in zip(encoded, cuts).enumerated() {
            for (window, range) in cut.ranges.enumerated() {
                prepared.documents.append(work(ids[range], truncated: cut.count == 1 && range.count < ids.count))
                prepared.owners.append((index, window))
            }
            prepared.windowCounts.append(cut.count)
            prepared.documentTokens.append(r.chunkLongDocuments ? ids.count : min(ids.count, budget))
        }
        return prepared
    }

    /// Fewest tokens the call can queue, from its bytes (see `Tokenizer.fewestTokens`): a call
    /// over the limit even so is refused before it holds anything.
    func fewestTokens(_ r: RerankRequest, maxLength: Int) -> Int {
        let tokenizer = reranker.tokenizer
        let prefix = fixedPromptTokens.prefix + tokenizer.fewestTokens(bytes: queryPartBytes(r))
        let perSequence = (options.prefixSharing ? 0 : prefix) + fixedPromptTokens.suffix
        let window = max(1, min(r.maxTokensPerDocument ?? maxLength, maxLength - prefix - fixedPromptTokens.suffix))
        var tokens = options.prefixSharing ? prefix : 0
        for document in r.documents {
            let least = tokenizer.fewestTokens(bytes: document.utf8.count + 1)
            // Chunked, every token counts; otherwise a document is cut to its window.
            tokens += (r.chunkLongDocuments ? least : min(least, window)) + perSequence
        }
        return tokens
    }

    static func tooManyTokens(atLeast tokens: Int, limit: Int) -> EngineError {
        EngineError(.invalidArgument, "the call needs at least \(tokens) tokens; one call may queue at most \(limit) (--max-request-tokens): split it into calls of fewer or shorter documents, or lower max_length")
    }

    /// Tokens the call will queue for `documents`, estimated before tokenizing: a token covers
    /// at least one UTF-8 byte of its text, so this is an upper bound, unless normalization
    /// lengthens the text (rare; `submit` checks the exact count) or chunk windows are smaller
    /// than the longest possible. Capped at what one call may queue (an admissible call never
    /// needs more).
    func estimatedTokens(_ documents: [String], of r: RerankRequest, maxLength: Int) -> Int {
        // A prefix longer than max_length is refused once tokenized: it never queues more.
        let prefix = min(maxLength, fixedPromptTokens.prefix + queryPartBytes(r))
        let window = min(r.maxTokensPerDocument ?? maxLength, maxLength)
        let perSequence = (options.prefixSharing ? 0 : prefix) + fixedPromptTokens.suffix
        let cap = min(options.requestTokenLimit, options.maxQueuedTokens)
        var tokens = options.prefixSharing ? prefix : 0
        for document in documents {
            let length = document.utf8.count + 1
            let cut = r.chunkLongDocuments ? Windows(length: length, window: window, overlap: r.chunkOverlapTokens)
                                           : Windows(length: min(length, window), window: window, overlap: 0)
            tokens += cut.tokens + cut.count * perSequence
            if tokens >= cap { return cap }
        }
        return min(tokens, cap)
    }

    /// Refuses a call this engine could never run, before anything is built for it: more
    /// sequences or tokens than one call may queue, or a sequence whose KV exceeds the budget.
    private func checkSize(sequences: Int, tokens: Int, prefix: Int, largestSequence: Int) throws {
        guard sequences <= options.maxSequencesPerRequest else {
            throw EngineError(.invalidArgument, "the call makes \(sequences) sequences (documents and chunk windows); at most \(options.maxSequencesPerRequest) per call: send fewer documents, or lower chunk_overlap_tokens")
        }
        guard tokens <= options.requestTokenLimit else {
            throw EngineError(.invalidArgument, "the call needs \(tokens) tokens; one call may queue at most \(options.requestTokenLimit) (--max-request-tokens): split it into calls of fewer or shorter documents, or lower max_length")
        }
        let blocks = KVBlockPool.blocks(forPositions: prefix) + DocumentWork.blocks(tokens: largestSequence, prefixTokens: prefix)
        guard blocks <= scheduler.kvBudgetBlocks else {
            let mib = { (b: Int) in (b * self.scheduler.kvPool.blockBytes) >> 20 }
            throw EngineError(.invalidArgument, "the longest document needs \(mib(blocks)) MiB of KV memory with its prompt; the server's KV budget is \(mib(scheduler.kvBudgetBlocks)) MiB (--kv-budget-mb): lower max_length or max_tokens_per_document")
        }
    }
}

/// How one document is cut into the sequences the model computes: one (cut to the window), or
/// overlapping windows. Counted before any window is built.
struct Windows {
    let length: Int
    let window: Int
    let stride: Int

    /// `overlap` nil: a quarter of the window, at most 256. It is lowered to half the window,
    /// so consecutive windows advance by at least half a window and a document of N tokens
    /// never makes more than about 2N/window windows.
    init(length: Int, window: Int, overlap: Int?) {
        self.length = length
        self.window = window
        let overlap = min(overlap ?? min(256, window / 4), window / 2)
        stride = max(1, window - overlap)
    }

    var count: Int { length <= window ? 1 : 1 + (length - window + stride - 1) / stride }

    /// Token ranges of the windows; the last one ends at the document's end.
    var ranges: [Range<Int>] {
        (0..<count).map { i in
            let start = i * stride
            return start..<min(length, start + window)
        }
    }

    /// Tokens over all windows (arithmetic: the windows are not built to count them).
    var tokens: Int { count == 1 ? min(length, window) : (count - 1) * window + (length - (count - 1) * stride) }
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
                // A document that fit one window was one input, as in a call without chunking.
                best[document] = DocumentScore(index: document, logit: s.logit, probability: s.probability,
                                               tokens: documentTokens[document], truncated: s.truncated,
                                               inputTokens: windowCounts[document] == 1 ? s.inputTokens : 0,
                                               window: window, windows: windowCounts[document])
            }
            remaining[document] -= 1
            if remaining[document] == 0 { done.append(best[document]!) }
        }
        return done
    }
}
