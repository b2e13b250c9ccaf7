import Foundation
import Qwen3
import SiftBase

/// A way to run the model: linear layers and attention precisions. `fp32` (fp32 + fp32) is the
/// reference every other mode is compared with.
public struct FidelityMode: Hashable, Sendable, CustomStringConvertible {
    public var linear: String
    public var attention: String

    public init(linear: String, attention: String) {
        self.linear = linear
        self.attention = attention
    }

    public static let reference = FidelityMode(linear: "fp32", attention: "fp32")

    /// Linear layers "fp32", "int8" (a scale per 128 inputs) or "int8row" (a scale per row: Sift
    /// before 0.8), then "+bf16" or "+int8" for bf16 or int8 attention (fp32 attention without
    /// it): "int8row" is the int8 Sift served before this round, `standard` what it serves now.
    /// Or an outside engine's name (its logits are read from a file).
    public static let linearKinds = ["fp32", "int8", "int8row"]

    /// What Sift serves by default with int8 linear layers: the mode the gate judges.
    public static let standard = FidelityMode(linear: "int8", attention: AttentionPrecision.standard(for: .int8).rawValue)
    /// The int8 path Sift served before this round (a scale per row, fp32 attention): the gate's baseline.
    public static let perRowBaseline = FidelityMode(linear: "int8row", attention: "fp32")

    public init?(_ text: String) {
        let parts = text.split(separator: "+").map(String.init)
        guard (1...2).contains(parts.count), Self.linearKinds.contains(parts[0]),
              parts.count == 1 || AttentionPrecision(rawValue: parts[1]) != nil else { return nil }
        self.init(linear: parts[0], attention: parts.count == 2 ? parts[1] : "fp32")
    }

    public var description: String { attention == "fp32" ? linear : "\(linear)+\(attention)" }
}

/// One scored pair: which model (seed) and group (query) it belongs to, its bucket, the
/// reference logit and each mode's (by mode name: Sift's modes and outside engines').
public struct FidelityRecord: Sendable {
    public var model: Int
    public var group: Int
    public var bucket: FidelityBucket
    public var reference: Double
    public var logits: [String: Double]

    public init(model: Int, group: Int, bucket: FidelityBucket, reference: Double, logits: [String: Double]) {
        (self.model, self.group, self.bucket, self.reference, self.logits) = (model, group, bucket, reference, logits)
    }
}

/// The numbers the fidelity benchmark reports and the gate that decides a faster path
/// (docs/QUANTIZATION.md): mean |Δlogit| against the fp32 reference with a bootstrap interval,
/// its p99 and max, per length bucket; per query, Kendall τ of the ranking and whether the top
/// document stays on top; order flips of documents more than 0.1 apart.
public enum FidelityReport {
    /// A mean with its bootstrap 95% interval (percentile method, fixed seed: reproducible).
    public struct Estimate: Sendable, CustomStringConvertible {
        public var mean: Double
        public var low: Double
        public var high: Double
        public var description: String { String(format: "%.4f [%.4f, %.4f]", mean, low, high) }
    }

    public static func bootstrap(_ values: [Double], resamples: Int = 2000, seed: UInt64 = 1) -> Estimate {
        guard !values.isEmpty else { return Estimate(mean: .nan, low: .nan, high: .nan) }
        let mean = values.reduce(0, +) / Double(values.count)
        var rng = SplitMix64(seed: seed)
        var means: [Double] = []
        means.reserveCapacity(resamples)
        for _ in 0..<resamples {
            var sum = 0.0
            for _ in 0..<values.count { sum += values[Int(rng.next() % UInt64(values.count))] }
            means.append(sum / Double(values.count))
        }
        means.sort()
        return Estimate(mean: mean, low: means[Int(0.025 * Double(resamples))], high: means[min(resamples - 1, Int(0.975 * Double(resamples)))])
    }

    /// Kendall's τ-b between two scorings of the same documents.
    public static func kendallTau(_ x: [Double], _ y: [Double]) -> Double {
        var concordant = 0.0, discordant = 0.0, tiesX = 0.0, tiesY = 0.0
        for i in 0..<x.count {
            for j in (i + 1)..<x.count {
                let dx = x[i] - x[j], dy = y[i] - y[j]
                if dx == 0 && dy == 0 { continue }
                if dx == 0 { tiesX += 1; continue }
                if dy == 0 { tiesY += 1; continue }
                if (dx > 0) == (dy > 0) { concordant += 1 } else { discordant += 1 }
            }
        }
        let denominator = ((concordant + discordant + tiesX) * (concordant + discordant + tiesY)).squareRoot()
        return denominator > 0 ? (concordant - discordant) / denominator : 1
    }

    public static func percentile(_ values: [Double], _ p: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let rank = max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1)
        return sorted[min(sorted.count - 1, rank)]
    }

    /// What one mode gives on some records (a bucket, or all).
    public struct Summary: Sendable {
        public var pairs: Int
        public var error: Estimate
        public var p99: Double
        public var max: Double
        /// Over queries with several documents.
        public var queries: Int
        public var tau: Estimate
        public var top1: Estimate
        public var flips: Int
        public var comparablePairs: Int
    }

    /// Records grouped by (model, group), in order.
    static func groups(_ records: [FidelityRecord]) -> [[FidelityRecord]] {
        var order: [[Int]] = []
        var index: [[Int]: Int] = [:]
        var out: [[FidelityRecord]] = []
        for r in records {
            let key = [r.model, r.group]
            if let i = index[key] { out[i].append(r) } else { index[key] = out.count; order.append(key); out.append([r]) }
        }
        return out
    }

    static func tau(_ group: [FidelityRecord], _ mode: String) -> Double {
        kendallTau(group.map(\.reference), group.map { $0.logits[mode]! })
    }

    static func top1(_ group: [FidelityRecord], _ mode: String) -> Double {
        let best = group.indices.max { group[$0].reference < group[$1].reference }!
        let chosen = group.indices.max { group[$0].logits[mode]! < group[$1].logits[mode]! }!
        return best == chosen ? 1 : 0
    }

    public static func summary(_ records: [FidelityRecord], mode: String) -> Summary {
        let errors = records.map { abs($0.logits[mode]! - $0.reference) }
        let ranked = groups(records).filter { $0.count >= 2 }
        var flips = 0, comparable = 0
        for g in ranked {
            for i in 0..<g.count {
                for j in (i + 1)..<g.count where abs(g[i].reference - g[j].reference) > 0.1 {
                    comparable += 1
                    if (g[i].reference > g[j].reference) != (g[i].logits[mode]! > g[j].logits[mode]!) { flips += 1 }
                }
            }
        }
        return Summary(pairs: records.count, error: bootstrap(errors), p99: percentile(errors, 99), max: errors.max() ?? .nan,
                       queries: ranked.count, tau: bootstrap(ranked.map { tau($0, mode) }, seed: 2),
                       top1: bootstrap(ranked.map { top1($0, mode) }, seed: 3), flips: flips, comparablePairs: comparable)
    }

    /// The gate (docs/QUANTIZATION.md), paired against `baseline` on the same pairs: the 95%
    /// interval of the mean of |Δ_candidate| − |Δ_baseline| lies below +`margin` over all pairs
    /// and in every bucket of at least 50; in the 16k–32k bucket no pair is worse by more than
    /// `veryLongWorst`; Kendall τ and top-1 agreement are not lower beyond their intervals.
    public struct Gate: Sendable {
        public var passed: Bool
        public var lines: [String]
    }

    public static func gate(_ records: [FidelityRecord], candidate: String, baseline: String,
                            margin: Double = 0.002, veryLongWorst: Double = 0.05) -> Gate {
        var lines: [String] = [], passed = true
        func check(_ ok: Bool, _ text: String) {
            lines.append((ok ? "pass  " : "FAIL  ") + text)
            if !ok { passed = false }
        }
        func paired(_ rs: [FidelityRecord]) -> Estimate {
            bootstrap(rs.map { abs($0.logits[candidate]! - $0.reference) - abs($0.logits[baseline]! - $0.reference) }, seed: 4)
        }
        let all = paired(records)
        check(all.high < margin, "all \(records.count) pairs: mean |Δ \(candidate)| − |Δ \(baseline)| = \(all) < +\(margin)")
        for bucket in FidelityBucket.allCases {
            let rs = records.filter { $0.bucket == bucket }
            guard rs.count >= 50 else { continue }
            let e = paired(rs)
            check(e.high < margin, "\(bucket.rawValue) (\(rs.count) pairs): \(e) < +\(margin)")
        }
        let veryLong = records.filter { $0.bucket == .veryLong }
        if !veryLong.isEmpty {
            let worst = veryLong.map { abs($0.logits[candidate]! - $0.reference) - abs($0.logits[baseline]! - $0.reference) }.max()!
            check(worst <= veryLongWorst, String(format: "16k-32k (%d pairs): worst pair %+.4f ≤ +%.2f", veryLong.count, worst, veryLongWorst))
        }
        let ranked = groups(records).filter { $0.count >= 2 }
        if !ranked.isEmpty {
            let tauDiff = bootstrap(ranked.map { tau($0, candidate) - tau($0, baseline) }, seed: 5)
            check(tauDiff.high >= 0, "Kendall τ over \(ranked.count) queries: \(candidate) − \(baseline) = \(tauDiff), not below 0")
            let topDiff = bootstrap(ranked.map { top1($0, candidate) - top1($0, baseline) }, seed: 6)
            check(topDiff.high >= 0, "top-1 agreement over \(ranked.count) queries: \(candidate) − \(baseline) = \(topDiff), not below 0")
        }
        return Gate(passed: passed, lines: lines)
    }

    /// The table of every mode, per bucket and over all pairs.
    public static func table(_ records: [FidelityRecord], modes: [String]) -> String {
        var out = "mode         bucket     pairs  mean |Δlogit| [95% CI]      p99     max     queries  Kendall τ [95% CI]       top-1   flips (>0.1 apart)\n"
        for mode in modes {
            for bucket in FidelityBucket.allCases.map(Optional.some) + [nil] {
                let rs = bucket.map { b in records.filter { $0.bucket == b } } ?? records
                guard !rs.isEmpty else { continue }
                let s = summary(rs, mode: mode)
                let tau = s.queries > 0 ? String(format: "%.4f [%.4f, %.4f]", s.tau.mean, s.tau.low, s.tau.high) : "—"
                let top = s.queries > 0 ? String(format: "%5.1f%%", 100 * s.top1.mean) : "  —"
                func pad(_ t: String, _ n: Int) -> String { t.count >= n ? t : t + String(repeating: " ", count: n - t.count) }
                out += pad(mode, 12) + " " + pad(bucket?.rawValue ?? "all", 9)
                    + String(format: " %6d  %.4f [%.4f, %.4f]  %.4f  %.4f  %7d  ", s.pairs, s.error.mean, s.error.low, s.error.high, s.p99, s.max, s.queries)
                    + pad(tau, 24) + " " + top + "   \(s.flips) of \(s.comparablePairs)\n"
            }
        }
        return out
    }
}
