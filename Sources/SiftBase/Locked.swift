import Foundation

/// A value behind a lock. Used instead of `Synchronization.Mutex`: on Linux that Mutex locks
/// with raw futex calls ThreadSanitizer cannot see, so the CI's TSan run reported races that
/// are not there; this one sits on a pthread mutex (NSLock), which TSan understands.
public final class Locked<Value> {
    private var value: Value
    private let lock = NSLock()

    public init(_ value: Value) { self.value = value }

    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

extension Locked: @unchecked Sendable where Value: Sendable {}
