import SiftBase

/// The engine's queue bound: tokens of calls admitted but not yet computed. A call holds an
/// estimate of its tokens from admission (`reserve`, before tokenizing), exchanges it for its
/// exact count when it is queued (`exchange`), and the scheduler gives tokens back as they are
/// computed, answered from the prefix cache, or dropped with their call (`giveBack`). So under
/// overload a call is refused before any tokenizing, and calls being tokenized count toward the
/// bound: they cannot pile up in front of it.
final class QueueBudget: Sendable {
    let limit: Int
    private let queued = Locked(0)
    /// Called with the new count after every change (for the engine's stats).
    private let onChange: @Sendable (Int) -> Void

    init(limit: Int, onChange: @escaping @Sendable (Int) -> Void) {
        self.limit = limit
        self.onChange = onChange
    }

    /// Holds `tokens` or throws the queue-full refusal.
    func reserve(_ tokens: Int) throws -> QueueReservation {
        try take(tokens, inPlaceOf: 0, estimated: true)
        return QueueReservation(budget: self, tokens: tokens)
    }

    /// Takes `reservation`'s place with the call's exact count, or throws the queue-full refusal
    /// (the estimate was low) and leaves the reservation as it was.
    func exchange(_ reservation: QueueReservation, for tokens: Int) throws {
        try reservation.held.withLock { held in
            try take(tokens, inPlaceOf: held, estimated: false)
            held = 0
        }
    }

    func giveBack(_ tokens: Int) {
        guard tokens > 0 else { return }
        onChange(queued.withLock { $0 -= tokens; return $0 })
    }

    private func take(_ tokens: Int, inPlaceOf held: Int, estimated: Bool) throws {
        let now = try queued.withLock { queued in
            let others = queued - held
            guard others + tokens <= limit else {
                throw EngineError(.resourceExhausted, "the queue holds \(others) tokens; this request adds \(estimated ? "about " : "")\(tokens) and the limit is \(limit): retry later or send fewer documents")
            }
            queued = others + tokens
            return queued
        }
        onChange(now)
    }
}

/// Room in an engine's queue bound held for a call from its admission until it is queued
/// (`QueueBudget.exchange`). A call dropped before then (refused, cancelled, its connection
/// gone) gives the room back when its last copy goes: the reservation travels inside the
/// `RerankRequest`, a value that can be copied and dropped anywhere.
public final class QueueReservation: Sendable {
    private let budget: QueueBudget
    /// 0 once the call is queued.
    fileprivate let held: Locked<Int>

    fileprivate init(budget: QueueBudget, tokens: Int) {
        self.budget = budget
        held = Locked(tokens)
    }

    deinit { budget.giveBack(held.withLock { $0 }) }
}
