import SiftBase
import Foundation
import Qwen3
import Synchronization

/// The thread that owns the model and its KV memory. It admits submitted requests, plans each
/// step (`Planner`, pure), takes the step's memory (`KVAllocator`), runs it on the model as one
/// packed batch a sublayer at a time, and applies the results: finished documents are scored,
/// finished requests resumed, cancelled or expired ones dropped with their memory, and computed
/// tokens given back to the queue bound (`QueueBudget`). Between two sublayers it admits new
/// calls, drops the rows of calls cancelled or expired meanwhile, and runs interactive steps
/// before a batch step resumes. Swift concurrency's threads only enqueue and await; they never
/// compute.
final class Scheduler: @unchecked Sendable {
    let model: Qwen3Model
    let options: EngineOptions
    let kv: KVAllocator
    let queue: QueueBudget
    let stats: Locked<EngineStats>

    private let condition = NSCondition()
    // Guarded by `condition`:
    private var inbox: [ActiveRequest] = []
    private var stopping = false
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
        kv = KVAllocator(config: model.config, precision: options.attention ?? .standard(for: model.precision),
                         budgetBytes: kvBudgetBytes, prefixCacheBytes: options.prefixCacheBytes, sharing: options.prefixSharing)
        var initial = EngineStats()
        initial.kvBudgetBytes = kv.budgetBytes
        initial.prefixCacheBudgetBytes = kv.prefixCache.budgetBytes
        initial.maxQueuedTokens = options.maxQueuedTokens
        let stats = Locked(initial)
        self.stats = stats
        queue = QueueBudget(limit: options.maxQueuedTokens) { queued in stats.withLock { $0.queuedTokens = queued } }
    }

    /// The thread holds the scheduler until `stop` ends its loop, and nothing holds the thread:
    /// kept in a property it made a cycle, and a stopped engine never gave back its KV.
    func start() {
        let t = Thread { [self] in self.loop() }
        t.name = "sift-scheduler"
        t.stackSize = 8 << 20
        t.start()
    }

    /// Holds room for about `tokens` in the queue bound (see `QueueBudget`), or throws.
    func reserve(_ tokens: Int) throws -> QueueReservation {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { throw EngineError(.unavailable, "the engine is shutting down") }
        return try queue.reserve(tokens)
    }

    /// Queues a request in place of its reservation, or throws `resourceExhausted` when its
    /// exact count passes the queue bound (the estimate was low), or `unavailable`.
    func submit(_ r: ActiveRequest, replacing reservation: QueueReservation) throws {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { throw EngineError(.unavailable, "the engine is shutting down") }
        try queue.exchange(reservation, for: r.totalTokens)
        inbox.append(r)
        stats.withLock { $0.activeRequests += 1 }
        condition.signal()
    }

    static func modelFileChanged(_ change: String) -> EngineError {
        EngineError(.unavailable, "the model file changed while being served (\(change)): restart the server. Replace a served model file by renaming a new file over it (mv), never by copying onto it")
    }

    /// The first change to a file the model runs on, if any (see `MappedFile.change`).
    var modelFileChange: String? { modelFiles.lazy.compactMap { $0.change() }.first }

    /// Wakes the loop so a cancellation is noticed before the next step.
    func poke() {
        condition.lock()
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

    /// What the planner needs to know of a request.
    private func summary(_ r: ActiveRequest, now: ContinuousClock.Instant) -> Planner.RequestSummary {
        // Aging: one priority level per `agingSeconds` since the request was last served.
        let waited = now - (r.lastServed ?? r.arrival)
        let aging = waited.seconds / max(options.agingSeconds, 0.001)
        var prefixRemaining = 0, startBlocks = 0
        if let h = r.holdings {
            prefixRemaining = h.prefixReady ? 0 : r.prefix.count - h.prefixKV!.count
        } else {
            (prefixRemaining, startBlocks) = kv.startCost(r)
        }
        return Planner.RequestSummary(
            id: r.id, priority: Double(r.priority) + aging, servedTokens: r.servedTokens, arrival: r.id,
            prefixRemaining: prefixRemaining, documents: r.pendingDocuments(), started: r.holdings != nil,
            startBlocks: startBlocks, slotBlocks: r.slotBlocks, inFlightBlocks: r.holdings?.inFlightBlocks ?? 0,
            statedPriority: r.priority, tokens: r.totalTokens, secondsLeft: r.deadline.map { ($0 - now).seconds })
    }

    private var policy: Planner.Policy {
        Planner.Policy(budget: options.maxBatchTokens, chunk: options.prefillChunk, interactiveTokens: options.interactiveTokens,
                       tokensPerSecond: tokensPerSecond, maxPauseSeconds: options.agingSeconds)
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

    /// Plans the next step and runs it. A batch step pauses between two sublayers when calls
    /// arrived, for the interactive steps the planner then asks for (`runStepsBetweenSublayers`):
    /// those run to completion inside the pause, never paused themselves, so at most two steps
    /// are ever in progress.
    private func step() {
        // Weights read from a file changed under the model would crash it (SIGBUS) or give
        // wrong scores: every call fails instead, saying what to do.
        if let change = modelFileChange {
            for r in active { finish(r, error: Self.modelFileChanged(change)) }
            active.removeAll()
            return
        }
        let step = Planner.nextStep(active.map { summary($0, now: ContinuousClock.now) }, policy: policy,
                                    freeBlocks: kv.freeBlocks(active))
        if step.items.isEmpty {
            // Everything waits for memory that only a finishing request can free; none is
            // running, so none will: a bug, not a state to sleep in.
            for r in active { finish(r, error: EngineError(.internal, "no KV memory to run this request (budget \(kv.budgetBlocks) blocks); raise --kv-budget-mb")) }
            active.removeAll()
            return
        }
        guard let running = begin(step, betweenSublayers: false) else { return }
        var pausedSeconds = 0.0
        while !running.pass.isComplete {
            running.pass.runSublayer()
            guard running.pass.canDrop else { continue }
            let arrived = admitArrivals()
            expire()
            if arrived && !step.interactive {
                pausedSeconds += runStepsBetweenSublayers(of: step, pausedFor: pausedSeconds)
            }
        }
        end(running, pausedSeconds: pausedSeconds)
    }

    /// Runs the steps the planner wants between two sublayers of the paused batch `step`, each
    /// to completion; returns the seconds this pause took.
    private func runStepsBetweenSublayers(of step: Planner.Step, pausedFor earlier: Double) -> Double {
        let pauseStart = ContinuousClock.now
        let busy = Set(step.items.map(\.request))  // (a paused step's calls wait for it)
        while let urgent = Planner.stepBetweenSublayers(
            of: step, pausedFor: earlier + (ContinuousClock.now - pauseStart).seconds,
            waiting: active.filter { !busy.contains($0.id) }.map { summary($0, now: ContinuousClock.now) },
            policy: policy, freeBlocks: kv.freeBlocks(active)) {
            if let running = begin(urgent, betweenSublayers: true) {
                while !running.pass.isComplete {
                    running.pass.runSublayer()
                    if running.pass.canDrop { admitArrivals(); expire() }
                }
                end(running, pausedSeconds: 0)
            }
            admitArrivals()
            expire()
        }
        return (ContinuousClock.now - pauseStart).seconds
    }

    /// A step in progress.
    private struct RunningStep {
        let step: Planner.Step
        let pass: ForwardPass
        let byID: [UInt64: ActiveRequest]
        let started: ContinuousClock.Instant
    }

    /// Takes the step's memory and lays out its pass, or fails its requests (nil) when the
    /// model refuses the batch.
    private func begin(_ step: Planner.Step, betweenSublayers: Bool) -> RunningStep? {
        let plan = step.items
        let byID = Dictionary(uniqueKeysWithValues: active.map { ($0.id, $0) })
        let now = ContinuousClock.now
        for (r, cachedTokens) in kv.apply(kv.allocation(for: plan, byID)) {
            queue.giveBack(r.unqueue(cachedTokens))  // answered by the prefix cache
        }
        let pass: ForwardPass
        do {
            pass = try ForwardPass(model: model, batch: makeBatch(plan, byID, now: now))
        } catch {
            let failed = Set(plan.map(\.request))
            for id in failed { finish(byID[id]!, error: EngineError(.internal, "model step failed: \(error)")) }
            active.removeAll { failed.contains($0.id) }
            return nil
        }
        // Counted when it starts: work begun after a cancellation would show here.
        stats.withLock {
            $0.steps += 1
            if step.interactive { $0.interactiveSteps += 1 }
            if betweenSublayers { $0.stepsBetweenSublayers += 1 }
        }
        passes.append((pass, plan))
        return RunningStep(step: step, pass: pass, byID: byID, started: now)
    }

    /// Finishes a step's pass, updates the measured rate and applies its results.
    private func end(_ running: RunningStep, pausedSeconds: Double) {
        let outputs = running.pass.finish()
        passes.removeLast()
        let plan = running.step.items
        let seconds = (ContinuousClock.now - running.started).seconds - pausedSeconds
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
            ($0.coreSeconds, $0.coreWaitSeconds) = model.pool.callerSeconds()
        }
        apply(plan, outputs, running.byID, now: running.started)
    }

    /// Scores finished documents, resumes finished requests. Items of requests that ended while
    /// the step ran (cancelled, expired) are skipped: those requests hold nothing any more.
    private func apply(_ plan: [Planner.Item], _ outputs: [[Float]?], _ byID: [UInt64: ActiveRequest],
                       now: ContinuousClock.Instant) {
        var finishedRequests: [ActiveRequest] = []
        var newlyScored: [UInt64: [DocumentScore]] = [:]
        for (item, output) in zip(plan, outputs) {
            let r = byID[item.request]!
            guard !r.hasEnded else { continue }
            r.servedTokens += item.tokens
            r.lastServed = now
            queue.giveBack(r.unqueue(item.tokens))
            switch item.target {
            case .prefix:
                if item.final { kv.prefixFinished(r) }
            case let .document(i):
                let doc = r.documents[i]
                doc.computed += item.tokens
                if item.final, let hidden = output {
                    let logit = model.logitDifference(hidden)
                    let score = DocumentScore(index: i, logit: logit, probability: sigmoid(logit),
                                              tokens: doc.documentTokens, truncated: doc.truncated,
                                              inputTokens: r.sharedPrefixTokens + doc.tokens.count)
                    kv.documentFinished(r, doc)
                    r.record(score)
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
        stats.withLock { kv.record(into: &$0, active: active) }
    }

    /// The model's view of a plan: which tokens of which sequence, against which KV.
    private func makeBatch(_ plan: [Planner.Item], _ byID: [UInt64: ActiveRequest],
                           now: ContinuousClock.Instant) -> [Qwen3Model.BatchItem] {
        plan.map { item in
            let r = byID[item.request]!
            if r.firstScheduled == nil { r.firstScheduled = now }
            switch item.target {
            case .prefix:
                let prefix = r.holdings!.prefixKV!
                return .init(tokens: r.prefix[prefix.count..<(prefix.count + item.tokens)], cache: prefix, wantHidden: false)
            case let .document(i):
                let doc = r.documents[i]  // its KV was allocated with the step
                return .init(tokens: doc.tokens[doc.computed..<(doc.computed + item.tokens)], cache: doc.cache!,
                             wantHidden: item.final)
            }
        }
    }

    /// Frees everything the request holds, gives its queue tokens back and resumes its caller.
    private func finish(_ r: ActiveRequest, error: EngineError?) {
        queue.giveBack(r.unqueue(r.queuedTokens))
        kv.free(r)
        r.end()
        stats.withLock {
            $0.activeRequests -= 1
            if let error { $0.failed[error.code, default: 0] += 1 } else { $0.completed += 1 }
        }
        updateMemoryStats()
        r.resumeCaller(error: error)
    }
}
