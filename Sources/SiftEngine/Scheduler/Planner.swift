/// Chooses the work of one scheduler step. Pure: it reads a summary of every active request and
/// returns a plan as data, so it is tested without a model (as vLLM's scheduler is).
///
/// One rule for everything: each sequence (a request's prefix, or one document) has tokens
/// computed and tokens total; a step gives a sequence up to `chunk` more of them, and the whole
/// step at most `budget`. Requests are visited in order of effective priority (priority plus
/// aging), then least served, then oldest; each pass over them gives every request at most one
/// sequence, and passes repeat until the budget is spent. So a short request submitted during a
/// long one gets its share at the very next step, and a request alone fills the whole step.
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
                    inFlightBlocks: Int = 0) {
            self.id = id
            self.priority = priority
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

    /// `freeBlocks`: KV blocks neither allocated nor reserved (evictable cache blocks count as free).
    public static func plan(_ requests: [RequestSummary], budget: Int, chunk: Int, freeBlocks: Int = .max) -> [Item] {
        var order = requests.sorted {
            if $0.priority != $1.priority { return $0.priority > $1.priority }
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
