import Foundation
import NIOCore
import SiftBase

/// Every open connection of a server, on all its ports, under one limit. When the limit is
/// reached a new connection does not simply bounce: the connection that behaves worst makes
/// room for it — the one whose request has been arriving longest (a slow or stalled sender),
/// else the one idle longest. Connections with calls in flight are never closed for room.
/// So slow senders cannot lock out clients that behave.
final class ConnectionRegistry: Sendable {
    enum Port: String, Sendable { case rpc, http, metrics }

    struct Entry {
        let channel: any Channel
        let port: Port
        /// Since when a request (frame or HTTP request) has been arriving; nil between requests.
        var receivingSince: ContinuousClock.Instant?
        var lastActivity: ContinuousClock.Instant
        var calls = 0
    }

    /// What `open` decided.
    enum Admission {
        case accepted
        /// Accepted after closing this connection (the caller closes it, with a word if it can).
        case acceptedByClosing(any Channel, reason: String)
        case refused
    }

    let limit: Int
    private let entries = Locked<[ObjectIdentifier: Entry]>([:])

    init(limit: Int) { self.limit = limit }

    var count: Int { entries.withLock { $0.count } }
    func count(_ port: Port) -> Int { entries.withLock { $0.values.filter { $0.port == port }.count } }
    var channels: [any Channel] { entries.withLock { $0.values.map(\.channel) } }

    func open(_ channel: any Channel, port: Port) -> Admission {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            var admission = Admission.accepted
            if entries.count >= limit {
                guard let (id, victim) = Self.victim(entries) else { return .refused }
                entries[id] = nil
                let reason = victim.receivingSince.map {
                    "its request had been arriving for \(String(format: "%.1f", (now - $0).seconds)) s"
                } ?? "it had been idle for \(String(format: "%.1f", (now - victim.lastActivity).seconds)) s"
                admission = .acceptedByClosing(victim.channel, reason: reason)
            }
            entries[ObjectIdentifier(channel)] = Entry(channel: channel, port: port, lastActivity: now)
            return admission
        }
    }

    func close(_ channel: any Channel) {
        _ = entries.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// A request began arriving on `channel` (nil: it is complete, or none is arriving).
    func receiving(_ channel: any Channel, since: ContinuousClock.Instant?) {
        entries.withLock {
            $0[ObjectIdentifier(channel)]?.receivingSince = since
            $0[ObjectIdentifier(channel)]?.lastActivity = .now
        }
    }

    func callStarted(_ channel: any Channel) {
        entries.withLock { $0[ObjectIdentifier(channel)]?.calls += 1 }
    }

    func callEnded(_ channel: any Channel) {
        entries.withLock {
            $0[ObjectIdentifier(channel)]?.calls -= 1
            $0[ObjectIdentifier(channel)]?.lastActivity = .now
        }
    }

    /// The connection to close for room: the oldest arriving request, else the longest idle;
    /// never one with calls in flight.
    private static func victim(_ entries: [ObjectIdentifier: Entry]) -> (ObjectIdentifier, Entry)? {
        let candidates = entries.filter { $0.value.calls == 0 }
        if let slow = candidates.filter({ $0.value.receivingSince != nil }).min(by: { $0.value.receivingSince! < $1.value.receivingSince! }) {
            return (slow.key, slow.value)
        }
        return candidates.min { $0.value.lastActivity < $1.value.lastActivity }.map { ($0.key, $0.value) }
    }
}

/// Bytes held for requests still arriving, over all connections (RPC frames and HTTP bodies).
/// Each connection may hold a small amount freely; beyond it, it must reserve from the
/// server-wide budget, so many connections each sending most of a large frame cannot pin
/// memory without bound.
final class BufferBudget: Sendable {
    /// Held by one connection without asking.
    static let freePerConnection = 64 << 10
    let limit: Int
    private let used = Locked(0)

    init(limit: Int) { self.limit = limit }

    var bytes: Int { used.withLock { $0 } }

    /// Moves a connection's holding from `old` to `new` bytes; false (and nothing changed) when
    /// the budget cannot cover it.
    func adjust(from old: Int, to new: Int) -> Bool {
        let delta = max(0, new - Self.freePerConnection) - max(0, old - Self.freePerConnection)
        if delta == 0 { return true }
        return used.withLock { used in
            guard delta < 0 || used + delta <= limit else { return false }
            used += delta
            return true
        }
    }
}
