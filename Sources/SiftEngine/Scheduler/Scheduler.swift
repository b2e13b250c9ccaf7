import SiftBase
import Foundation
import Qwen3
import Synchronization

/// The thread that owns the model and its KV memory. It admits requests, plans each step
/// (`Planner`), runs it on the model as one packed batch a sublayer at a time, and applies the
/// results: finished documents are scored, finished requests resumed, cancelled or expired ones
/// dropped with their memory. Between two sublayers it admits new calls, drops the rows of calls
/// cancelled or expired meanwhile, and lets interactive work run before a batch step resumes.
/// Swift concurrency's threads only enqueue and await; they never compute.
final class Scheduler: @unchecked Sendable {
    let model: Qwen3Model
    let options: EngineOptions
    /// This engine's KV memory: every block of its sequences and its prefix cache.
    let kvPool: KVBlockPool
    /// Blocks the engine may hold at once (`EngineOptions.kvBudgetBytes`).
    let kvBudgetBlocks: Int
    let prefixCache: PrefixCache
    let stats = Locked(EngineStats())

    private let condition = NSCondition()
    // Guarded by `condition`:
    private var inbox: [ActiveRequest] = []
    private var queuedTokens = 0
    private var stopping = false
    private var wakeups = 0
    // Scheduler thread only:
    private var active: [ActiveRequest] = []
    /// The steps in progress: the one running and the batch step paused under it, if any.
    private var passes: [(pass: ForwardPass, plan: [Planner.Item])] = []
    /// Measured compute rate (tokens per second of step time), for deadline-driven classes.
    private var tokensPerSecond = 0.0
    /// The files the model's weights are mapped from (checked before every step).
    let modelFiles: [MappedFile]

    /// `kvBudgetBytes`: the resolved KV budget (the engine picks a default from free memory).
    init(model: Qwen3Model, options: EngineOptions, kvBudgetBytes: Int) {
        self.model = model
        self.options = options
        modelFiles = model.mappedFiles
        let c = model.config
        kvPool = KVBlockPool(layerCount: c.layerCount, kvDim: c.kvDim, headDim: c.headDim,
                             precision: options.attention ?? .standard(for: model.precision),
                             keepFreeBytes: min(256 << 20, kvBudgetBytes / 4), capacityBytes: kvBudgetBytes)
        kvBudgetBlocks = kvBudgetBytes / kvPool.blockBytes
        // The prefix cache lives inside the KV budget.
        prefixCache = PrefixCache(budgetBytes: min(options.prefixCacheBytes, kvBudgetBytes / 2), blockBytes: kvPool.blockBytes)
        stats.withLock {
            $0.kvBudgetBytes = kvBudgetBlocks * kvPool.blockBytes
            $0.prefixCacheBudgetBytes = prefixCache.budgetBytes
            $0.maxQueuedTokens = options.maxQueuedTokens
        }
    }

    /// The thread holds the scheduler until `stop` ends its loop, and nothing holds the thread:
    /// kept in a property it made a cycle, and a stopped engine never gave back its KV.
    func start() {
        let t = Thread { [self] in self.loop() }
        t.name = "sift-scheduler"
        t.stackSize = 8 << 20
        t.start()
    }

    /// Holds `tokens` (an estimate of what the call will queue, made before tokenizing) or
    /// throws the queue-full refusal. Under overload a call is thus refused before any
    /// tokenizing, and calls being tokenized count toward the bound: they cannot pile up in
    /// front of it (a backlog only the in-flight limit would bound).
    func reserve(_ tokens: Int) throws -> QueueReservation {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { throw EngineError(.unavailable, "the engine is shutting down") }
        guard queuedTokens + tokens <= options.maxQueuedTokens else { throw queueFull(queued: queuedTokens, adding: tokens, estimated: true) }
        queuedTokens += tokens
        let q = queuedTokens
        stats.withLock { $0.queuedTokens = q }
        return QueueReservation(scheduler: self, tokens: tokens)
    }

    /// Admits a request in place of its reservation, or throws `resourceExhausted` when its
    /// exact count passes the queue bound (the estimate was low), or `unavailable`.
    func submit(_ r: ActiveRequest, replacing reservation: QueueReservation) throws {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { throw EngineError(.unavailable, "the engine is shutting down") }
        let others = queuedTokens - reservation.tokens
        guard others + r.totalTokens <= options.maxQueuedTokens else {
            throw queueFull(queued: others, adding: r.totalTokens, estimated: false)
        }
        queuedTokens = others + r.totalTokens
        reservation.tokens = 0
        inbox.append(r)
        let q = queuedTokens
        stats.withLock { $0.queuedTokens = q; $0.activeRequests += 1 }
        condition.signal()
    }

    fileprivate func returnReserved(_ reservation: QueueReservation) {
        condition.lock()
        let n = reservation.tokens
        reservation.tokens = 0
        condition.unlock()
        returnTokens(n)
    }

    private func queueFull(queued: Int, adding tokens: Int, estimated: Bool) -> EngineError {
        EngineError(.resourceExhausted, "the queue holds \(queued) tokens; this request adds \(estimated ? "about " : "")\(tokens) and the limit is \(options.maxQueuedTokens): retry later or send fewer documents")
    }

    static func modelFileChanged(_ change: String) -> EngineError {
        EngineError(.unavailable, "the model file changed while being served (\(change)): restart the server. Replace a served model file by renaming a new file over it (mv), never by copying onto it")
    }

    /// The first change to a file the model runs on, if any (see `MappedFile.change`).
    var modelFileChange: String? { modelFiles.lazy.compactMap { $0.change() }.first }

    /// Wakes the loop so a cancellation is noticed before the next step.
    func poke() {
        condition.lock()
        wakeups += 1
        condition.signal()
        condition.unlock()
    }

    func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while inbox.isEmpty && active.isEmpty && !stopping { condition.wait() }
            let stop = stopping
            condition.unlock()
            admitArrivals()
            if stop {
                for r in active { finish(r, error: EngineError(.unavailable, "the engine shut down before this request finished")) }
                active.removeAll()
                return
            }
            expire()
            if active.isEmpty { continue }
            step()
        }
    }

    /// Moves submitted requests into `active`; says whether there were any.
    @discardableResult
    private func admitArrivals() -> Bool {
        condition.lock()
        let arrived = inbox
        inbox.removeAll()
        condition.unlock()
        active += arrived
        return !arrived.isEmpty
    }

    /// Takes the request's reservation: pins its cached prefix blocks and sets up its prefix
    /// sequence (the blocks to compute are allocated by `allocate`). The planner checked that
    /// the budget covers it.
    private func start(_ r: ActiveRequest) {
        r.started = true
        guard options.prefixSharing else { r.prefixReady = true; return }
        let (entries, covered) = prefixCache.acquire(r.prefix, partition: r.cachePartition)
        r.pinned = entries
        r.prefixTokensCached = covered
        r.prefixKV = KVCache(pool: kvPool, blocks: entries.map(\.block), count: covered)
        r.prefixReady = covered == r.prefix.count
        r.release(tokens: covered, from: self)
    }

    /// Blocks held or reserved: everything live except what the prefix cache could evict, with
    /// each started request's documents counted at least at its slot.
    private func committedBlocks() -> Int {
        var committed = kvPool.liveBlocks - prefixCache.unpinned
        for r in active where r.started { committed += r.reservedDocumentBlocks - r.inFlightBlocks }
        return committed
    }

    /// What the planner needs to know of a request.
    private func summary(_ r: ActiveRequest, now: ContinuousClock.Instant) -> Planner.RequestSummary {
        // Aging: one priority level per `agingSeconds` since the request was last served.
        let waited = now - (r.lastServed ?? r.arrival)
        let aging = waited.seconds / max(options.agingSeconds, 0.001)
        var prefixRemaining = 0
        var startBlocks = 0
        if r.started {
            prefixRemaining = r.prefixReady ? 0 : r.prefix.count - r.prefixKV!.count
        } else {
            startBlocks = r.slotBlocks
            if options.prefixSharing {
                // Cached blocks someone else pins cost nothing; unpinned ones become pinned.
                let (entries, covered) = prefixCache.peek(r.prefix, partition: r.cachePartition)
                prefixRemaining = r.prefix.count - covered
                startBlocks += KVBlockPool.blocks(forPositions: r.prefix.count) - entries.filter { $0.users > 0 }.count
            }
        }
        return Planner.RequestSummary(
            id: r.id, priority: Double(r.priority) + aging, servedTokens: r.servedTokens, arrival: r.id,
            prefixRemaining: prefixRemaining, documents: r.pendingDocuments(), started: r.started,
            startBlocks: startBlocks, slotBlocks: r.slotBlocks, inFlightBlocks: r.inFlightBlocks,
            statedPriority: r.priority, tokens: r.totalTokens, secondsLeft: r.deadline.map { ($0 - now).seconds })
    }

    private var policy: Planner.Policy {
        Planner.Policy(budget: options.maxBatchTokens, chunk: options.prefillChunk, interactiveTokens: options.interactiveTokens,
                       tokensPerSecond: tokensPerSecond, maxPauseSeconds: options.agingSeconds)
    }

    /// Starts what the plan begins and allocates its KV, evicting unpinned prefix-cache blocks
    /// first so that live blocks never pass the budget.
    private func allocate(_ plan: [Planner.Item], _ byID: [UInt64: ActiveRequest]) {
        var starting: [ActiveRequest] = []
        var newDocuments: [(ActiveRequest, DocumentWork)] = []
        for item in plan {
            let r = byID[item.request]!
            if !r.started {
                start(r)
                starting.append(r)
            }
            if case let .document(i) = item.target, r.documents[i].cache == nil {
                newDocuments.append((r, r.documents[i]))
            }
        }
        var needed = newDocuments.reduce(0) { $0 + $1.1.blocks }
        for r in starting where options.prefixSharing {
            needed += KVBlockPool.blocks(forPositions: r.prefix.count) - r.prefixKV!.blocks.count
        }
        let over = kvPool.liveBlocks + needed - kvBudgetBlocks
        if over > 0 { prefixCache.evict(entries: over) }
        for r in starting where options.prefixSharing { r.prefixKV!.reserve(r.prefix.count) }
        for (r, doc) in newDocuments {
            if options.prefixSharing {
                doc.cache = r.prefixKV!.copy(reserving: doc.tokens.count)
            } else {
                let cache = KVCache(pool: kvPool)
                cache.reserve(doc.tokens.count)
                doc.cache = cache
            }
            r.inFlightBlocks += doc.blocks
        }
    }

    /// Drops cancelled and expired requests, their rows in the steps in progress (so they cost
    /// nothing more) and their memory, then resumes their callers.
    private func expire() {
        let now = ContinuousClock.now
        var ended: [(ActiveRequest, EngineError)] = []
        active.removeAll { r in
            if r.cancelled.load(ordering: .relaxed) {
                ended.append((r, EngineError(.cancelled, "the request was cancelled")))
                return true
            }
            if let d = r.deadline, now >= d {
                ended.append((r, EngineError(.deadlineExceeded, "the deadline passed after \(r.finishedDocuments) of \(r.documents.count) documents; allow more time or send fewer or shorter documents")))
                return true
            }
            return false
        }
        guard !ended.isEmpty else { return }
        let endedIDs = Set(ended.map { $0.0.id })
        var dropped = 0
        for (pass, plan) in passes {
            let items = plan.indices.filter { endedIDs.contains(plan[$0].request) }
            if !items.isEmpty { dropped += pass.drop(Set(items)) }
        }
        if dropped > 0 { stats.withLock { $0.droppedTokens += dropped } }
        for (r, error) in ended { finish(r, error: error) }
    }

    private func step() {
        // Weights read from a file changed under the model would crash it (SIGBUS) or give
        // wrong scores: every call fails instead, saying what to do.
        if let change = modelFiles.lazy.compactMap({ $0.change() }).first {
            for r in active { finish(r, error: Self.modelFileChanged(change)) }
            active.removeAll()
            return
        }
        let now = ContinuousClock.now
        let step = Planner.nextStep(active.map { summary($0, now: now) }, policy: policy,
                                    freeBlocks: kvBudgetBlocks - committedBlocks())
        if step.items.isEmpty {
            // Everything waits for memory that only a finishing request can free; none is
            // running, so none will: a bug, not a state to sleep in.
            for r in active { finish(r, error: EngineError(.internal, "no KV memory to run this request (budget \(kvBudgetBlocks) blocks); raise --kv-budget-mb")) }
            active.removeAll()
            return
        }
        run(step, nested: false)
    }

    /// Runs a step on the model a sublayer at a time and applies its results. Between sublayers:
    /// arrivals are admitted, the rows of calls cancelled or expired meanwhile leave the step, and
    /// (in a batch step, not itself run between sublayers) interactive steps run to completion first.
    private func run(_ step: Planner.Step, nested: Bool) {
        let plan = step.items
        let byID = Dictionary(uniqueKeysWithValues: active.map { ($0.id, $0) })
        let now = ContinuousClock.now
        allocate(plan, byID)
        let pass: ForwardPass
        do {
            pass = try ForwardPass(model: model, batch: makeBatch(plan, byID, now: now))
        } catch {
            let failed = Set(plan.map(\.request))
            for id in failed { finish(byID[id]!, error: EngineError(.internal, "model step failed: \(error)")) }
            active.removeAll { failed.contains($0.id) }
            return
        }
        // Counted when it starts: work begun after a cancellation would show here.
        stats.withLock {
            $0.steps += 1
            if step.interactive { $0.interactiveSteps += 1 }
            if nested { $0.stepsBetweenSublayers += 1 }
        }
        passes.append((pass, plan))
        var pausedSeconds = 0.0
        while !pass.isComplete {
            pass.runSublayer()
            guard pass.canDrop else { continue }
            let arrived = admitArrivals()
            expire()
            guard !nested, !step.interactive, arrived else { continue }
            let pauseStart = ContinuousClock.now
            let busy = Set(plan.map(\.request))  // (a paused step's calls wait for it)
            while let urgent = Planner.stepBetweenSublayers(
                of: step, pausedFor: pausedSeconds + (ContinuousClock.now - pauseStart).seconds,
                waiting: active.filter { !busy.contains($0.id) }.map { summary($0, now: ContinuousClock.now) },
                policy: policy, freeBlocks: kvBudgetBlocks - committedBlocks()) {
                run(urgent, nested: true)
                admitArrivals()
                expire()
            }
            pausedSeconds += (ContinuousClock.now - pauseStart).seconds
        }
        let outputs = pass.finish()
        passes.removeLast()
        let seconds = (ContinuousClock.now - now).seconds - pausedSeconds
        let stepTokens = plan.reduce(0) { $0 + $1.tokens }
        if seconds > 0 {
            // A moving average, so the rate follows the machine's load without jumping.
            let rate = Double(stepTokens) / seconds
            tokensPerSecond = tokensPerSecond == 0 ? rate : 0.8 * tokensPerSecond + 0.2 * rate
        }
        stats.withLock {
            $0.stepTokens += stepTokens
            $0.stepCapacity += options.maxBatchTokens
            $0.computeSeconds += seconds
        }
        apply(plan, outputs, byID, now: now)
    }

    /// Scores finished documents, resumes finished requests. Items of requests that ended while
    /// the step ran (cancelled, expired) are skipped: those requests hold nothing any more.
    private func apply(_ plan: [Planner.Item], _ outputs: [[Float]?], _ byID: [UInt64: ActiveRequest],
                       now: ContinuousClock.Instant) {
        var finishedRequests: [ActiveRequest] = []
        var newlyScored: [UInt64: [DocumentScore]] = [:]
        for (item, output) in zip(plan, outputs) {
            let r = byID[item.request]!
            guard r.finishedAt == nil else { continue }
            r.servedTokens += item.tokens
            r.lastServed = now
            r.release(tokens: item.tokens, from: self)
            switch item.target {
            case .prefix:
                if item.final {
                    r.prefixReady = true
                    r.pinned += prefixCache.insert(r.prefix, cache: r.prefixKV!, partition: r.cachePartition)
                }
            case let .document(i):
                let doc = r.documents[i]
                doc.computed += item.tokens
                if item.final, let hidden = output {
                    let logit = model.logitDifference(hidden)
                    let score = DocumentScore(index: i, logit: logit, probability: sigmoid(logit),
                                              tokens: doc.documentTokens, truncated: doc.truncated,
                                              inputTokens: r.sharedPrefixTokens + doc.tokens.count)
                    r.scores[i] = score
                    doc.cache = nil  // its own KV is freed now
                    r.inFlightBlocks -= doc.blocks
                    r.finishedDocuments += 1
                    newlyScored[r.id, default: []].append(score)
                    if r.finishedDocuments == r.documents.count { finishedRequests.append(r) }
                }
            }
        }
        for (id, scores) in newlyScored { byID[id]!.onProgress?(scores.sorted { $0.index < $1.index }) }
        for r in finishedRequests { finish(r, error: nil) }
        if !finishedRequests.isEmpty {
            let done = Set(finishedRequests.map(\.id))
            active.removeAll { done.contains($0.id) }
        }
        updateMemoryStats()
    }

    private func updateMemoryStats() {
        let (live, peak, blockBytes) = (kvPool.liveBytes, kvPool.peakBlocks * kvPool.blockBytes, kvPool.blockBytes)
        let reserved = committedBlocks() * blockBytes
        stats.withLock {
            $0.kvBytes = live
            $0.kvPeakBytes = peak
            $0.kvReservedBytes = reserved
            $0.prefixCacheBytes = prefixCache.bytes
            $0.prefixLookupTokens = prefixCache.lookups
            $0.prefixHitTokens = prefixCache.hits
        }
    }

    /// The model's view of a plan: which tokens of which sequence, against which KV.
    private func makeBatch(_ plan: [Planner.Item], _ byID: [UInt64: ActiveRequest],
                           now: ContinuousClock.Instant) -> [Qwen3Model.BatchItem] {
        plan.map { item in
            let r = byID[item.request]!
            if r.firstScheduled == nil { r.firstScheduled = now }
            switch item.target {
            case .prefix:
                let kv = r.prefixKV!
                return .init(tokens: r.prefix[kv.count..<(kv.count + item.tokens)], cache: kv, wantHidden: false)
            case let .document(i):
                let doc = r.documents[i]  // its KV was allocated by `allocate`
                return .init(tokens: doc.tokens[doc.computed..<(doc.computed + item.tokens)], cache: doc.cache!,
                             wantHidden: item.final)
            }
        }
    }

    /// Resumes the caller and frees everything the request holds.
    private func finish(_ r: ActiveRequest, error: EngineError?) {
        r.release(tokens: r.remainingTokens, from: self)
        prefixCache.release(r.pinned)
        r.pinned = []
        r.prefixKV = nil
        for d in r.documents { d.cache = nil }
        r.inFlightBlocks = 0
        r.started = false  // holds nothing now
        stats.withLock {
            $0.activeRequests -= 1
            if let error { $0.failed[error.code, default: 0] += 1 } else { $0.completed += 1 }
        }
        updateMemoryStats()
        r.complete(error: error)
    }

    /// Returns admitted-but-uncomputed tokens to the queue budget.
    fileprivate func returnTokens(_ n: Int) {
        guard n > 0 else { return }
        condition.lock()
        queuedTokens -= n
        let q = queuedTokens
        condition.unlock()
        stats.withLock { $0.queuedTokens = q }
    }
}

/// Room in an engine's queue bound held for a call from its admission until it is queued
/// (`Scheduler.reserve`), or given back when the last copy of its request is dropped.
public final class QueueReservation: @unchecked Sendable {
    private let scheduler: Scheduler
    /// Guarded by the scheduler's lock; 0 once the call is queued.
    fileprivate var tokens: Int
    fileprivate init(scheduler: Scheduler, tokens: Int) { (self.scheduler, self.tokens) = (scheduler, tokens) }
    deinit { scheduler.returnReserved(self) }
}

/// Live counters of the engine, for metrics and tests.
public struct EngineStats: Sendable {
    public var queuedTokens = 0
    /// Admission refuses calls that would take `queuedTokens` beyond this.
    public var maxQueuedTokens = 0
    public var activeRequests = 0
    public var completed = 0
    public var failed: [EngineError.Code: Int] = [:]
    public var steps = 0
    /// Steps that served interactive calls only, and those run between two sublayers of a batch step.
    public var interactiveSteps = 0
    public var stepsBetweenSublayers = 0
    /// Tokens of cancelled or expired calls that left a step before its end.
    public var droppedTokens = 0
    /// Tokens computed in all steps, and the steps' token capacity (fill = ratio).
    public var stepTokens = 0
    public var stepCapacity = 0
    public var computeSeconds = 0.0
    /// KV memory referenced by sequences and the cache.
    public var kvBytes = 0
    /// Most KV memory live at once so far.
    public var kvPeakBytes = 0
    /// KV held or reserved by running requests (what the budget is checked against).
    public var kvReservedBytes = 0
    /// The engine's KV budget, and the prefix cache's share of it.
    public var kvBudgetBytes = 0
    public var prefixCacheBudgetBytes = 0
    public var prefixCacheBytes = 0
    public var prefixLookupTokens = 0
    public var prefixHitTokens = 0
    /// Documents looked up in the score cache, and found.
    public var scoreCacheLookups = 0
    public var scoreCacheHits = 0

    public init() {}
}

/// A request inside the engine (scheduler thread only, except `cancelled`).
final class ActiveRequest: @unchecked Sendable {
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
    private(set) var remainingTokens: Int
    private let continuation: CheckedContinuation<[DocumentScore], any Error>

    var prefixKV: KVCache?
    /// Holds its KV reservation (prefix + slot); see `Planner`.
    var started = false
    /// Blocks of its largest document: the slot reserved while it runs.
    let slotBlocks: Int
    /// Blocks of its started, unfinished documents.
    var inFlightBlocks = 0
    var reservedDocumentBlocks: Int { max(slotBlocks, inFlightBlocks) }
    var prefixReady = false
    var prefixTokensCached = 0
    var pinned: [PrefixCache.Entry] = []
    var servedTokens = 0
    var finishedDocuments = 0
    var scores: [DocumentScore?]
    var firstScheduled: ContinuousClock.Instant?
    var lastServed: ContinuousClock.Instant?
    var finishedAt: ContinuousClock.Instant?

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
        remainingTokens = totalTokens
        slotBlocks = documents.map(\.blocks).max() ?? 0
    }

    var finishedScores: [DocumentScore] { scores.compactMap { $0 } }

    /// Unfinished documents, those already started first (so in-flight KV is freed soonest).
    func pendingDocuments() -> [Planner.DocumentSummary] {
        var started: [Planner.DocumentSummary] = [], fresh: [Planner.DocumentSummary] = []
        for (i, d) in documents.enumerated() where d.computed < d.tokens.count {
            let s = Planner.DocumentSummary(index: i, remaining: d.tokens.count - d.computed, started: d.cache != nil, blocks: d.blocks)
            if s.started { started.append(s) } else { fresh.append(s) }
        }
        return started + fresh
    }

    func release(tokens n: Int, from scheduler: Scheduler) {
        let n = min(n, remainingTokens)
        remainingTokens -= n
        scheduler.returnTokens(n)
    }

    func complete(error: EngineError?) {
        finishedAt = ContinuousClock.now
        if let error { continuation.resume(throwing: error) } else { continuation.resume(returning: finishedScores) }
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

