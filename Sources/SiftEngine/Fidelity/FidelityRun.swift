import CSiftKernels
import Crypto
import Foundation
import Qwen3

/// Scores a fidelity plan on one model folder: the fp32 reference and each mode, pair by pair
/// (through an in-process engine, the one scoring path). The reference is the slow part; with a
/// cache folder its logits are kept per model and pair, and a later run reuses them.
public enum FidelityRun {
    public static func score(directory: URL, model index: Int, plan: FidelityPlan, modes: [FidelityMode], threads: Int,
                             referenceCache: URL?, progress: (String) -> Void) async throws -> [FidelityRecord] {
        let identity = try modelIdentity(directory)
        let cacheFile = referenceCache?.appendingPathComponent("fidelity-reference-\(identity).json")
        var cached: [String: Double] = [:]
        if let cacheFile, let data = try? Data(contentsOf: cacheFile),
           let dict = try? JSONSerialization.jsonObject(with: data) as? [String: Double] { cached = dict }
        let keys = plan.groups.map { g in g.documents.map { pairKey(g.query, $0) } }

        var logits: [String: [[Double]]] = [:]
        var reference = keys.map { $0.map { cached[$0] } }
        let missing = reference.joined().contains { $0 == nil }
        // One model in memory at a time: fp32 (the reference, fp32 modes), then each int8 scheme.
        for linear in FidelityMode.linearKinds {
            let mine = modes.filter { $0.linear == linear && $0 != .reference }
            guard !mine.isEmpty || (linear == "fp32" && missing) else { continue }
            let started = Date()
            let reranker = try RerankerModel.load(directory: directory, precision: linear == "fp32" ? .fp32 : .int8, threads: threads,
                                             int8Group: linear == "int8row" ? 0 : Int8Linear.standardGroup)
            progress(String(format: "model %d: %@ loaded in %.1f s", index, linear, Date().timeIntervalSince(started)))
            let limit = reranker.maxLengthLimit
            func run(_ attention: AttentionPrecision, _ name: String) async throws -> [[Double]] {
                let t0 = Date()
                let engine = SiftEngine(reranker: reranker, options: .inProcess(attention: attention))
                defer { engine.shutdown() }
                var scores: [[Double]] = []
                for (n, g) in plan.groups.enumerated() {
                    let r = try await engine.score(query: g.query, documents: g.documents, maxLength: limit)
                    if g.bucket != .short {
                        progress(String(format: "model %d %@: group %d/%d (%@, %d documents, up to %d tokens) after %.0f s", index, name,
                                        n + 1, plan.groups.count, g.bucket.rawValue, g.documents.count, g.documentTokens.max() ?? 0,
                                        Date().timeIntervalSince(t0)))
                    }
                    scores.append(r.map { Double($0.logit) })
                }
                progress(String(format: "model %d: %@ scored %d pairs in %.0f s", index, name, plan.pairs, Date().timeIntervalSince(t0)))
                return scores
            }
            if linear == "fp32" && missing {
                let fresh = try await run(.fp32, "fp32 (reference)")
                reference = fresh.map { $0.map(Optional.some) }
                if let cacheFile {
                    for (g, row) in fresh.enumerated() { for (d, v) in row.enumerated() { cached[keys[g][d]] = v } }
                    try FileManager.default.createDirectory(at: cacheFile.deletingLastPathComponent(), withIntermediateDirectories: true)
                    try JSONSerialization.data(withJSONObject: cached).write(to: cacheFile)
                }
            }
            for mode in mine {
                logits[mode.description] = try await run(AttentionPrecision(rawValue: mode.attention) ?? .fp32, mode.description)
            }
        }
        var records: [FidelityRecord] = []
        for (g, group) in plan.groups.enumerated() {
            for d in group.documents.indices {
                var byMode: [String: Double] = [:]
                for (name, table) in logits { byMode[name] = table[g][d] }
                records.append(FidelityRecord(model: index, group: g, bucket: group.bucket, reference: reference[g][d]!, logits: byMode))
            }
        }
        return records
    }

    static func pairKey(_ query: String, _ document: String) -> String {
        var hasher = SHA256()
        for text in [query, document] {
            withUnsafeBytes(of: Int64(text.utf8.count)) { hasher.update(bufferPointer: $0) }
            hasher.update(data: Data(text.utf8))
        }
        return hasher.finalize().prefix(12).map { String(format: "%02x", $0) }.joined()
    }

    /// A model's weights and config, as a short hex string (a checksum of every file).
    static func modelIdentity(_ directory: URL) throws -> String {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0 == "config.json" || $0.hasSuffix(".safetensors") }.sorted()
        var sum: UInt64 = 0
        for name in names {
            let file = try MappedFile(path: directory.appendingPathComponent(name).path)
            sum = sift_checksum64(file.base, file.size, sum)
        }
        return String(format: "%016llx", sum)
    }
}
