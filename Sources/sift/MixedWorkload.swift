import Foundation
import SiftBase

/// W4: interactive calls (one query × a few short documents) while batch work (W1-sized calls,
/// one after another) keeps the engine busy. The same phases in-process (`sift bench engine`)
/// and through a server (`sift load --workload w4`), in one run:
///
/// 1. idle: interactive calls one after another on an idle engine: their latency alone;
/// 2. batch alone: the batch stream for `seconds`: documents scored per second;
/// 3. mixed: the batch stream again, and interactive calls started at a fixed rate (open loop:
///    each call's latency counts from when it was due) for `seconds`.
///
/// Unless a rate is given, interactive calls come at a rate that keeps them to `share` of the
/// machine (from phase 1's mean latency), so the batch stream can keep most of it.
struct MixedWorkload {
    var idleCalls = 10
    var seconds = 240.0
    var rate: Double?
    var share = 0.15
    /// Sends a call; returns when it is answered.
    let interactive: @Sendable (Call) async throws -> Void
    /// Sends a call; reports documents as they are scored.
    let batch: @Sendable (Call, @escaping @Sendable (Int) -> Void) async throws -> Void
    /// What interactive and batch call n send.
    let calls: Calls

    struct Call: Sendable {
        var query: String
        var documents: [String]
        var maxTokensPerDocument: Int
    }

    struct Calls: Sendable {
        let texts: [String]
        let queries: [String]

        /// 1 query × 4 passages cut to 96 tokens; passages apart from the batch calls' first ones.
        func interactive(_ n: Int) -> Call {
            Call(query: queries[(n % queries.count + queries.count) % queries.count],
                 documents: (0..<4).map { texts[(4096 + 4 * max(n, 0) + $0) % texts.count] }, maxTokensPerDocument: 96)
        }

        /// W1-sized: 64 passages cut to 256 tokens.
        func batch(_ n: Int) -> Call {
            Call(query: queries[(n + 1) % queries.count], documents: (0..<64).map { texts[(64 * n + $0) % texts.count] },
                 maxTokensPerDocument: 256)
        }
    }

    struct Result {
        var idle: [Double] = []
        var mixed: [Double] = []
        var failedInteractive = 0
        var rate = 0.0
        var batchAlone = 0.0
        var batchMixed = 0.0

        var table: String {
            let p = { (v: [Double], q: Double) in String(format: "%.2f", percentile(v, q)) }
            return """
                W4 interactive calls: idle p50 \(p(idle, 50)) s, p99 \(p(idle, 99)) s (\(idle.count) calls); \
                under the batch stream p50 \(p(mixed, 50)) s, p99 \(p(mixed, 99)) s (\(mixed.count) calls at \(String(format: "%.3f", rate))/s\
                \(failedInteractive > 0 ? ", \(failedInteractive) failed" : "")): p99 \(String(format: "%.2f", percentile(mixed, 99) / max(percentile(idle, 99), 1e-9)))× idle
                W4 batch stream: alone \(String(format: "%.2f", batchAlone)) docs/s, with the interactive calls \(String(format: "%.2f", batchMixed)) docs/s \
                (\(String(format: "%.0f", 100 * batchMixed / max(batchAlone, 1e-9)))%)
                """
        }
    }

    func run(log: (String) -> Void = { _ in }) async throws -> Result {
        var result = Result()
        // Warm-up (first-touch of weights and buffers), not counted.
        try await interactive(calls.interactive(-1))
        for n in 0..<idleCalls {
            let t0 = now()
            try await interactive(calls.interactive(n))
            result.idle.append(now() - t0)
        }
        let mean = result.idle.reduce(0, +) / Double(max(1, result.idle.count))
        result.rate = rate ?? share / max(mean, 1e-3)
        log(String(format: "W4 idle: %d interactive calls, mean %.2f s; rate %.3f calls/s", result.idle.count, mean, result.rate))
        let alone = try await batchStream(withInteractive: false, firstCall: 0)
        result.batchAlone = alone.docsPerSecond
        log(String(format: "W4 batch alone: %.2f docs/s", result.batchAlone))
        // The stream goes on with calls not sent yet, so a score cache cannot answer them.
        let mixed = try await batchStream(withInteractive: true, rate: result.rate, firstCall: alone.nextCall)
        result.batchMixed = mixed.docsPerSecond
        result.mixed = mixed.latencies
        result.failedInteractive = mixed.failed
        return result
    }

    /// Runs the batch stream for `seconds` (and, if asked, interactive calls at `rate` meanwhile);
    /// documents are counted only while the window is open. The stream sends batch calls from
    /// `firstCall` on; `nextCall` is the first it did not send.
    private func batchStream(withInteractive: Bool, rate: Double = 0, firstCall: Int) async throws
        -> (docsPerSecond: Double, latencies: [Double], failed: Int, nextCall: Int) {
        let scored = Locked(0), open = Locked(true)
        let start = now()
        let stream = Task {
            var n = firstCall
            while !Task.isCancelled {
                do {
                    try await batch(calls.batch(n)) { k in open.withLock { if $0 { scored.withLock { $0 += k } } } }
                } catch where Task.isCancelled {
                    return n + 1  // call n was sent
                }
                n += 1
            }
            return n
        }
        var latencies: [Double] = [], failed = 0
        if withInteractive {
            (latencies, failed) = await withTaskGroup(of: Double?.self) { group in
                var n = 0
                while true {
                    let due = start + Double(n) / rate
                    if due > start + seconds { break }
                    let wait = due - now()
                    if wait > 0 { try? await Task.sleep(for: .milliseconds(Int(wait * 1000))) }
                    let i = n
                    group.addTask {
                        do {
                            try await interactive(calls.interactive(idleCalls + i))  // calls not sent before
                            return now() - due
                        } catch {
                            return nil
                        }
                    }
                    n += 1
                }
                var all: [Double] = [], failed = 0
                for await l in group { if let l { all.append(l) } else { failed += 1 } }
                return (all, failed)
            }
        }
        let left = start + seconds - now()
        if left > 0 { try await Task.sleep(for: .milliseconds(Int(left * 1000))) }
        let window = now() - start
        open.withLock { $0 = false }
        stream.cancel()
        let next = try await stream.value
        return (Double(scored.withLock { $0 }) / window, latencies, failed, next)
    }
}
