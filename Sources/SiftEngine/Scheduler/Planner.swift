/// Chooses the work of one scheduler step. Pure: it reads a summary of every active request and
/// returns a plan as data, so it is tested without a model (as vLLM's scheduler is).
///
/// One rule for everything: each sequence (a request's prefix, or one document) has tokens
/// computed and tokens total; a step gives a sequence up to `chunk` more of them, and the whole
/// step at most `budget`. Requests are visited in order of effective priority (priority plus
/// aging), then earliest deadline, then least served, then oldest; each pass over them gives every request at most one
/// sequence, and passes repeat until the budget is spent. So a short request submitted during a
/// long one gets its share at the very next step, and a request alone fills the whole step.
///
/// Latency classes (`nextStep`): a call is *interactive* when it asked for priority > 0, or is
/// small (at most `Policy.interactiveTokens` tokens) and did not ask for priority < 0, or its
/// deadline is near (less than twice the time its remaining tokens take at the measured rate),
/// or it has waited unserved for a whole aging period (so batch work never starves).
/// While interactive work waits, steps hold only interactive work, so their size is what that
/// work needs and they finish as soon as it can; batch work fills the steps when none waits.
/// An interactive call that arrives during a batch step does not wait for it: the scheduler
/// runs `stepBetweenSublayers` between two sublayers (attention, MLP) of the batch step, which then resumes (after at
/// most `Policy.maxPauseSeconds`, however much interactive work keeps coming).
///
/// KV memory is reserved, never overcommitted, so every started sequence can finish:
/// - a sequence allocates all its KV blocks when it starts (`DocumentSummary.blocks`);
/// - a request *starts* (its first prefix chunk or document) only if `freeBlocks` covers its
///   `startBlocks`: its prefix plus one *slot* as large as its largest document. The slot stays
///   reserved until the request ends, so a started request always has room for its next
///   document and no set of half-done requests can wait on each other;
/// - more documents of a started request run side by side only with blocks beyond the slot;
/// - when the first request in order cannot start for lack of memory, no request behind it
///   starts either (those already started go on and free memory), so big requests are not
///   overtaken forever by small ones.
public enum Planner {
    public struct DocumentSummary: Equatable {
        public var index: Int
        /// Tokens still to compute.
        public var remaining: Int
        /// Started: its blocks are allocated.
        public var started: Bool
        /// Blocks it allocates when it starts.
        public var blocks: Int

        public init(index: Int, remaining: Int, started: Bool = false, blocks: Int = 0) {
            self.index = index
            self.remaining = remaining
            self.started = started
            self.blocks = blocks
        }
    }

    public struct RequestSummary {
        public var id: UInt64
        public var priority: Double        // effective (with aging)
        /// The priority the call asked for (its class: > 0 interactive, < 0 batch).
        public var statedPriority: Int
        /// All tokens of the call (its size, for its class).
        public var tokens: Int
        /// Seconds until its deadline (nil: none).
        public var secondsLeft: Double?
        public var servedTokens: Int
        public var arrival: UInt64         // submission order
        /// Prefix tokens still to compute (0 = ready). Documents wait for the prefix.
        public var prefixRemaining: Int
        /// Unfinished documents in the order they should run (started ones first).
        public var documents: [DocumentSummary]
        /// Holds its reservation (prefix + slot).
        public var started: Bool
        /// Not started: blocks its start commits (prefix blocks to allocate or pin, plus the slot).
        public var startBlocks: Int
        /// The slot: blocks of its largest document.
        public var slotBlocks: Int
        /// Blocks of its started, unfinished documents.
        public var inFlightBlocks: Int

        public init(id: UInt64, priority: Double, servedTokens: Int, arrival: UInt64, prefixRemaining: Int,
                    documents: [DocumentSummary], started: Bool = true, startBlocks: Int = 0, slotBlocks: Int = 0,
                    inFlightBlocks: Int = 0, statedPriority: Int = 0, tokens: Int? = nil, secondsLeft: Double? = nil) {
            self.id = id
            self.priority = priority
            self.statedPriority = statedPriority
            self.tokens = tokens ?? (prefixRemaining + documents.reduce(0) { $0 + $1.remaining })
            self.secondsLeft = secondsLeft
            self.servedTokens = servedTokens
            self.arrival = arrival
            self.prefixRemaining = prefixRemaining
            self.documents = documents
            self.started = started
            self.startBlocks = startBlocks
            self.slotBlocks = slotBlocks
            self.inFlightBlocks = inFlightBlocks
        }

        /// Blocks this request holds against the budget while started.
        var reservedDocumentBlocks: Int { max(slotBlocks, inFlightBlocks) }

        /// Tokens still to compute.
        public var remainingTokens: Int { prefixRemaining + documents.reduce(0) { $0 + $1.remaining } }
    }

    /// How steps are sized and classed.
    public struct Policy: Equatable, Sendable {
        /// Tokens of one step, at most.
        public var budget: Int
        /// Tokens of one sequence in one step, at most.
        public var chunk: Int
        /// A call of at most this many tokens (priority 0) is interactive.
        public var interactiveTokens: Int
        /// The measured compute rate in tokens per second (0: not measured yet, deadlines do not
        /// change a call's class).
        public var tokensPerSecond: Double
        /// A paused batch step resumes after this long, even while interactive work waits.
        public var maxPauseSeconds: Double

        public init(budget: Int, chunk: Int, interactiveTokens: Int = 0, tokensPerSecond: Double = 0,
                    maxPauseSeconds: Double = 10) {
            self.budget = budget
            self.chunk = chunk
            self.interactiveTokens = interactiveTokens
            self.tokensPerSecond = tokensPerSecond
            self.maxPauseSeconds = maxPauseSeconds
        }
    }

    /// The work of one step, and whether it serves interactive calls only.
    public struct Step: Equatable {
        public var items: [Item]
        public var interactive: Bool

        public init(items: [Item], interactive: Bool) {
            self.items = items
            self.interactive = interactive
        }
    }

    /// A call's class (see the type's comment).
    public static func isInteractive(_ r: RequestSummary, _ policy: Policy) -> Bool {
        if r.priority - Double(r.statedPriority) >= 1 { return true }  // aged a whole level
        if r.statedPriority != 0 { return r.statedPriority > 0 }
        if r.tokens <= policy.interactiveTokens { return true }
        if let left = r.secondsLeft, policy.tokensPerSecond > 0 {
            return 2 * Double(r.remainingTokens) / policy.tokensPerSecond >= left
        }
        return false
    }

    /// The next step: interactive work alone while there is some that can run, else everything.
    public static func nextStep(_ requests: [RequestSummary], policy: Policy, freeBlocks: Int = .max) -> Step {
        let interactive = requests.filter { isInteractive($0, policy) }
        if !interactive.isEmpty && interactive.count < requests.count {
            let items = plan(interactive, budget: policy.budget, chunk: policy.chunk, freeBlocks: freeBlocks)
            if !items.isEmpty { return Step(items: items, interactive: true) }
        }
        let items = plan(requests, budget: policy.budget, chunk: policy.chunk, freeBlocks: freeBlocks)
        return Step(items: items, interactive: !items.isEmpty && interactive.count == requests.count)
    }

    /// A step to run between two sublayers of `running` before it resumes: interactive work of the
    /// `waiting` calls (those with nothing in `running`), when `running` is a batch step paused
    /// for less than `maxPauseSeconds` so far. Nil: `running` goes on.
    public static func stepBetweenSublayers(of running: Step, pausedFor: Double = 0, waiting: [RequestSummary],
                                            policy: Policy, freeBlocks: Int = .max) -> Step? {
        guard !running.interactive, pausedFor < policy.maxPauseSeconds else { return nil }
        let interactive = waiting.filter { isInteractive($0, policy) }
        guard !interactive.isEmpty else { return nil }
        let items = plan(interactive, budget: policy.budget, chunk: policy.chunk, freeBlocks: freeBlocks)
        return items.isEmpty ? nil : Step(items: items, interactive: true)
    }

    public enum Target: Equatable {
        case prefix
        case document(Int)
    }

    public struct Item: Equatable {
        public var request: UInt64
        public var target: Target
        public var tokens: Int
        /// This chunk completes the sequence.
        public var final: Bool
    }

    /// Fills one step from `requests`, whatever their class. `freeBlocks`: KV blocks neither
    /// allocated nor reserved (evictable cache blocks count as free).
    public static func plan(_ requests: [RequestSummary], budget: Int, chunk: Int, freeBlocks: Int = .max) -> [Item] {
        var order = requests.sorted {
            if $0.priority != $1.priority { return $0.priority > $1.priority }
            if $0.secondsLeft != $1.secondsLeft { return ($0.secondsLeft ?? .infinity) < ($1.secondsLeft ?? .infinity) }
            if $0.servedTokens != $1.servedTokens { return $0.servedTokens < $1.servedTokens }
            return $0.arrival < $1.arrival
        }
        var left = budget
        var free = freeBlocks
        var items: [Item] = []
        var nextDocument = [Int](repeating: 0, count: order.count)
        var prefixPlanned = [Bool](repeating: false, count: order.count)
        /// Set once a request cannot start: nothing behind it starts in this step.
        var startsBlocked = false
        /// A started request whose next document does not fit is done for this step.
        var memoryBound = [Bool](repeating: false, count: order.count)
        var progress = true
        while left > 0 && progress {
            progress = false
            for n in order.indices where left > 0 && !memoryBound[n] {
                let r = order[n]
                let hasWork = r.prefixRemaining > 0 ? !prefixPlanned[n] : nextDocument[n] < r.documents.count
                guard hasWork else { continue }
                if !r.started {
                    guard !startsBlocked, r.startBlocks <= free else {
                        startsBlocked = true
                        memoryBound[n] = true
                        continue
                    }
                    free -= r.startBlocks
                    order[n].started = true
                }
                if r.prefixRemaining > 0 {
                    prefixPlanned[n] = true
                    let take = min(r.prefixRemaining, chunk, left)
                    items.append(Item(request: r.id, target: .prefix, tokens: take, final: take == r.prefixRemaining))
                    left -= take
                    progress = true
                    continue
                }
                let doc = r.documents[nextDocument[n]]
                if !doc.started {
                    // The slot is already paid for; blocks beyond it come from the free pool.
                    let before = order[n].reservedDocumentBlocks
                    let after = max(order[n].slotBlocks, order[n].inFlightBlocks + doc.blocks)
                    guard after - before <= free else {
                        memoryBound[n] = true
                        continue
                    }
                    free -= after - before
                    order[n].inFlightBlocks += doc.blocks
                }
                nextDocument[n] += 1
                let take = min(doc.remaining, chunk, left)
                items.append(Item(request: r.id, target: .document(doc.index), tokens: take, final: take == doc.remaining))
                left -= take
                progress = true
            }
        }
        return items
    }
}
