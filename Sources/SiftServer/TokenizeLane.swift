import Dispatch
import SiftBase
import SiftProtocol

/// Where Tokenize calls run: one at a time, on a thread of their own, under a bound on the
/// text waiting or being tokenized. A flood of Tokenize calls can neither take the threads
/// rerank calls need (they tokenize on Swift's cooperative pool) nor hold more memory than the
/// bound: the excess is refused at once with RESOURCE_EXHAUSTED. A single call larger than the
/// bound runs when the lane is empty (the frame limit bounds it).
final class TokenizeLane: Sendable {
    let limitBytes: Int
    private let queue = DispatchQueue(label: "sift-tokenize", qos: .utility)
    private let held = Locked(0)

    init(limitBytes: Int) { self.limitBytes = limitBytes }

    /// Text bytes waiting or being tokenized.
    var bytes: Int { held.withLock { $0 } }

    /// Runs `work` for a call of `bytes` bytes of text, or refuses it when the lane is full.
    /// A call cancelled while it waits is dropped without running.
    func run<T: Sendable>(bytes: Int, _ work: @escaping @Sendable () throws -> T) async throws -> T {
        let admitted = held.withLock { held in
            guard held == 0 || held + bytes <= limitBytes else { return false }
            held += bytes
            return true
        }
        guard admitted else {
            throw Wire.Status(.resourceExhausted, "the server is tokenizing \(self.bytes >> 10) KiB of text for other calls (its limit is \(limitBytes >> 20) MiB): retry shortly, or send fewer texts per call")
        }
        defer { held.withLock { $0 -= bytes } }
        let cancelled = Locked(false)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                queue.async {
                    guard !cancelled.withLock({ $0 }) else {
                        return continuation.resume(throwing: Wire.Status(.cancelled, "the call was cancelled"))
                    }
                    continuation.resume(with: Result { try work() })
                }
            }
        } onCancel: {
            cancelled.withLock { $0 = true }
        }
    }
}
