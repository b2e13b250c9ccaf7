/// Waiting for work that cannot stop itself (a model load) without being held by it.
extension Task where Failure == any Error {
    /// The task's value, or — if the caller is cancelled first — `CancellationError` at once.
    /// The task is cancelled too and left to end on its own (work that checks for cancellation
    /// stops; work that cannot is abandoned, e.g. when the process is about to exit).
    public var valueUnlessCancelled: Success {
        get async throws {
            let waiter = Locked(Waiter<Success>.waiting)
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Success, any Error>) in
                    let cancelled = waiter.withLock { state -> Bool in
                        if case .cancelled = state { return true }
                        state = .continuation(continuation)
                        return false
                    }
                    if cancelled { return continuation.resume(throwing: Swift.CancellationError()) }
                    Task<Void, Never> {
                        let result = await self.result
                        waiter.withLock { $0.take() }?.resume(with: result)
                    }
                }
            } onCancel: {
                self.cancel()
                waiter.withLock { $0.cancel() }?.resume(throwing: Swift.CancellationError())
            }
        }
    }
}

/// Who resumes the caller of `valueUnlessCancelled`: the task's end or the cancellation, once.
private enum Waiter<Value: Sendable>: @unchecked Sendable {
    case waiting
    case continuation(CheckedContinuation<Value, any Error>)
    case cancelled
    case done

    /// The continuation, for the task's result (nil if already resumed).
    mutating func take() -> CheckedContinuation<Value, any Error>? {
        guard case .continuation(let c) = self else { return nil }
        self = .done
        return c
    }

    /// The continuation, for a cancellation; before it exists, marks the wait cancelled.
    mutating func cancel() -> CheckedContinuation<Value, any Error>? {
        switch self {
        case .waiting:
            self = .cancelled
            return nil
        case .continuation(let c):
            self = .done
            return c
        case .cancelled, .done:
            return nil
        }
    }
}
