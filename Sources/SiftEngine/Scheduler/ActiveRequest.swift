import Qwen3
import Synchronization

/// A request inside the engine (scheduler thread only, except `cancelled`).
final class ActiveRequest: @unchecked Sendable {
    /// Where a request is in the engine, and what it holds there.
    enum Phase {
        /// Submitted: it holds queue tokens, no KV memory.
        case waiting
        /// Started: it holds its KV reservation (prefix + slot, see `Planner`) in `KVHoldings`.
        case running(KVHoldings)
        /// Its caller was resumed; it holds nothing.
        case ended
    }

    let id: UInt64
    let arrival = ContinuousClock.now
    let deadline: ContinuousClock.Instant?
    let priority: Int
    let prefix: [Int32]
    /// Its prefix-cache partition (`RerankRequest.cachePartition`).
    let cachePartition: UInt64
    /// Prefix positions its documents share (0 without prefix sharing: each has its own copy).
    let sharedPrefixTokens: Int
    let documents: [DocumentWork]
    let onProgress: (@Sendable ([DocumentScore]) -> Void)?
    let cancelled = Atomic<Bool>(false)
    let totalTokens: Int
    /// Blocks of its largest document: the slot reserved while it runs.
    let slotBlocks: Int
    private let continuation: CheckedContinuation<[DocumentScore], any Error>

    private(set) var phase = Phase.waiting
    /// Its tokens still counted in the queue bound (given back as they are computed).
    private(set) var queuedTokens: Int
    /// Prefix tokens the prefix cache had when it started (reported in its usage).
    private(set) var prefixTokensCached = 0
    var servedTokens = 0
    var finishedDocuments = 0
    private(set) var scores: [DocumentScore?]
    var firstScheduled: ContinuousClock.Instant?
    var lastServed: ContinuousClock.Instant?
    private(set) var finishedAt: ContinuousClock.Instant?

    init(id: UInt64, request: RerankRequest, prefix: [Int32], documents: [DocumentWork], sharing: Bool,
         continuation: CheckedContinuation<[DocumentScore], any Error>) {
        self.id = id
        deadline = request.deadline
        priority = request.priority
        self.prefix = prefix
        cachePartition = request.cachePartition
        self.documents = documents
        onProgress = request.onProgress
        self.continuation = continuation
        scores = Array(repeating: nil, count: documents.count)
        sharedPrefixTokens = sharing ? prefix.count : 0
        totalTokens = sharedPrefixTokens + documents.reduce(0) { $0 + $1.tokens.count }
        queuedTokens = totalTokens
        slotBlocks = documents.map(\.blocks).max() ?? 0
    }

    /// What it holds while running, nil otherwise.
    var holdings: KVHoldings? {
        if case let .running(h) = phase { return h }
        return nil
    }

    var hasEnded: Bool {
        if case .ended = phase { return true }
        return false
    }

    /// Takes its KV reservation; `cachedTokens` of its prefix came from the prefix cache.
    func start(_ holdings: KVHoldings, cachedTokens: Int) {
        phase = .running(holdings)
        prefixTokensCached = cachedTokens
    }

    /// Blocks it holds or has reserved: at least its slot while it runs.
    var reservedDocumentBlocks: Int { holdings.map { max(slotBlocks, $0.inFlightBlocks) } ?? 0 }

    /// Takes `n` of its tokens out of the queue count (computed, cached, or never to be
    /// computed); returns how many that was, for the queue budget.
    func unqueue(_ n: Int) -> Int {
        let n = min(n, queuedTokens)
        queuedTokens -= n
        return n
    }

    func record(_ score: DocumentScore) {
        scores[score.index] = score
        finishedDocuments += 1
    }

    /// Unfinished documents, those already started first (so in-flight KV is freed soonest).
    func pendingDocuments() -> [Planner.DocumentSummary] {
        var started: [Planner.DocumentSummary] = [], fresh: [Planner.DocumentSummary] = []
        for (i, d) in documents.enumerated() where d.computed < d.tokens.count {
            let s = Planner.DocumentSummary(index: i, remaining: d.tokens.count - d.computed, started: d.cache != nil, blocks: d.blocks)
            if s.started { started.append(s) } else { fresh.append(s) }
        }
        return started + fresh
    }

    /// Marks it ended: it holds nothing any more (`KVAllocator.free`) and gets no more work.
    func end() {
        phase = .ended
        finishedAt = ContinuousClock.now
    }

    /// Resumes the caller with its scores, or `error` (once, after `end`).
    func resumeCaller(error: EngineError?) {
        if let error { continuation.resume(throwing: error) } else { continuation.resume(returning: scores.compactMap { $0 }) }
    }
}

/// The KV memory a running request holds: its prefix sequence (with prefix sharing) and the
/// prefix-cache entries it pins, and the blocks of its documents being computed.
final class KVHoldings {
    /// Its prefix's KV (nil without prefix sharing: every document holds its own prompt).
    let prefixKV: KVCache?
    var prefixReady: Bool
    var pinned: [PrefixCache.Entry]
    /// Blocks of its started, unfinished documents.
    var inFlightBlocks = 0

    init(prefixKV: KVCache?, prefixReady: Bool, pinned: [PrefixCache.Entry]) {
        self.prefixKV = prefixKV
        self.prefixReady = prefixReady
        self.pinned = pinned
    }
}

/// One document of a request: its tokens (document + suffix, or the whole prompt when the
/// prefix is not shared) and its own KV while it is being computed.
final class DocumentWork {
    let tokens: [Int32]
    let documentTokens: Int
    let truncated: Bool
    /// KV blocks it allocates when it starts (all of them at once; see `Planner`).
    let blocks: Int
    var computed = 0
    var cache: KVCache?

    /// `prefixTokens`: positions before it that it shares (0 when the prefix is not shared).
    init(tokens: [Int32], documentTokens: Int, truncated: Bool, prefixTokens: Int) {
        self.tokens = tokens
        self.documentTokens = documentTokens
        self.truncated = truncated
        blocks = Self.blocks(tokens: tokens.count, prefixTokens: prefixTokens)
    }

    /// Its own blocks: those covering its positions, less the prefix's full blocks it shares
    /// (a partly filled prefix block is copied, so it counts).
    static func blocks(tokens: Int, prefixTokens: Int) -> Int {
        KVBlockPool.blocks(forPositions: prefixTokens + tokens) - prefixTokens / KVBlock.positions
    }
}
