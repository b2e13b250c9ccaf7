/// Chooses the work of one scheduler step. Pure: it reads a summary of every active request and
/// returns a plan as data, so it is tested without a model (as vLLM's scheduler is).
///
/// One rule for everything: each sequence (a request's prefix, or one document) has tokens
/// computed and tokens total; a step gives a sequence up to `chunk` more of them, and the whole
/// step at most `budget`. Requests are visited in order of effective priority (priority plus
/// aging), then least served, then oldest; each pass over them gives every request at most one
/// sequence, and passes repeat until the budget is spent. So a short request submitted during a
/// long one gets its share at the very next step, and a request alone fills the whole step.
public enum Planner {
    public struct RequestSummary {
        public var id: UInt64
        public var priority: Double        // effective (with aging)
        public var servedTokens: Int
        public var arrival: UInt64         // submission order
        /// Prefix tokens still to compute (0 = ready). Documents wait for the prefix.
        public var prefixRemaining: Int
        /// Remaining tokens of each unfinished document, in the order they should run
        /// (documents already started first).
        public var documents: [(index: Int, remaining: Int)]

        public init(id: UInt64, priority: Double, servedTokens: Int, arrival: UInt64, prefixRemaining: Int,
                    documents: [(index: Int, remaining: Int)]) {
            self.id = id
            self.priority = priority
            self.servedTokens = servedTokens
            self.arrival = arrival
            self.prefixRemaining = prefixRemaining
            self.documents = documents
        }
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

    public static func plan(_ requests: [RequestSummary], budget: Int, chunk: Int) -> [Item] {
        let order = requests.sorted {
            if $0.priority != $1.priority { return $0.priority > $1.priority }
            if $0.servedTokens != $1.servedTokens { return $0.servedTokens < $1.servedTokens }
            return $0.arrival < $1.arrival
        }
        var left = budget
        var items: [Item] = []
        var nextDocument = [Int](repeating: 0, count: order.count)
        var prefixPlanned = [Bool](repeating: false, count: order.count)
        var progress = true
        while left > 0 && progress {
            progress = false
            for (n, r) in order.enumerated() where left > 0 {
                if r.prefixRemaining > 0 {
                    guard !prefixPlanned[n] else { continue }
                    prefixPlanned[n] = true
                    let take = min(r.prefixRemaining, chunk, left)
                    items.append(Item(request: r.id, target: .prefix, tokens: take, final: take == r.prefixRemaining))
                    left -= take
                    progress = true
                    continue
                }
                guard nextDocument[n] < r.documents.count else { continue }
                let doc = r.documents[nextDocument[n]]
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
