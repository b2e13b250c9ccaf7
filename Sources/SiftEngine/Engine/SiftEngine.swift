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

    /// Tokens of the prompt's fixed parts: the system prompt (every prefix starts with it) and the suffix.
    private let fixedPromptTokens: (prefix: Int, suffix: Int)

    public init(reranker: Reranker, options: EngineOptions = EngineOptions()) {
        self.reranker = reranker
        self.options = options
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
        if let n = r.chunkOverlapTokens, n < 0 { throw EngineError(.invalidArgument, "chunk overlap must not be negative") }
        let maxLength = r.maxLength ?? options.defaultMaxLength
        guard maxLength > 0, maxLength <= maxLengthLimit else {
            throw EngineError(.invalidArgument, "max_length \(maxLength) must be in 1...\(maxLengthLimit)")
        }
        // Under overload most calls are refused: say so before tokenizing anything, from a lower
        // bound of what the call adds (the fixed prompt parts; documents of one token).
        let least = (options.prefixSharing ? 1 : r.documents.count) * fixedPromptTokens.prefix
            + r.documents.count * (fixedPromptTokens.suffix + 1)
        try scheduler.checkRoom(forAtLeast: least)
        let tokenizer = reranker.tokenizer
        let prompt = try RerankPrompt(tokenizer: tokenizer, query: r.query, instruction: r.instruction, maxLength: maxLength)
        let budget = min(prompt.documentBudget, r.maxTokensPerDocument ?? .max)
        let shared = options.prefixSharing ? prompt.prefix.count : 0
        let perSequence = (options.prefixSharing ? 0 : prompt.prefix.count) + prompt.suffix.count

        // Tokenize, then count every sequence and token the call asks for before building any.
        let encoded = r.documents.map { tokenizer.encode(" " + $0) }
        var cuts: [Windows] = []
        cuts.reserveCapacity(encoded.count)
        var sequences = 0, tokens = shared, largest = 0
        for ids in encoded {
            let cut = r.chunkLongDocuments && ids.count > budget && budget > 0
                ? Windows(length: ids.count, window: budget, overlap: r.chunkOverlapTokens)
                : Windows(length: min(ids.count, budget), window: max(budget, 1), overlap: 0)
            cuts.append(cut)
            sequences += cut.count
            tokens += cut.tokens + cut.count * perSequence
            largest = max(largest, min(ids.count, budget) + perSequence)
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
