import CSiftKernels
import Crypto
import Foundation
import Qwen3

/// Scores a fidelity plan on one model folder: the fp32 reference and each mode, pair by pair
/// (through an in-process engine, the one scoring path). The full benchmark takes hours on 2
/// cores, so its results are kept as they come, a query at a time: the reference's per model and
/// pair in `referenceCache` (checked against transformers at the start of every run), and with
/// `modeCache` each mode's too, keyed also by this build and kernel path (another build
/// recomputes them). A run that is stopped resumes where it was.
public enum FidelityRun {
    public static func score(directory: URL, model index: Int, plan: FidelityPlan, modes: [FidelityMode], threads: Int,
                             referenceCache: URL?, modeCache: URL? = nil,
                             progress: (String) -> Void) async throws -> [FidelityRecord] {
        let identity = try modelIdentity(directory)
        let keys = plan.groups.map { g in g.documents.map { pairKey(g.query, $0) } }
        let build = modeCache == nil ? "" : try buildIdentity()
        func store(_ mode: FidelityMode) -> LogitStore {
            if mode == .reference {
                return LogitStore(file: referenceCache?.appendingPathComponent("fidelity-reference-\(identity).json"))
            }
            return LogitStore(file: modeCache?.appendingPathComponent("fidelity-\(mode.description)-\(identity)-\(build).json"))
        }

        var logits: [String: [[Double]]] = [:]
        // One model in memory at a time: fp32 (the reference, fp32 modes), then each int8 scheme.
        for linear in FidelityMode.linearKinds {
            let mine = ([FidelityMode.reference] + modes.filter { $0 != .reference }).filter { $0.linear == linear }
            var stores = Dictionary(uniqueKeysWithValues: mine.map { ($0, store($0)) })
            guard mine.contains(where: { !stores[$0]!.has(keys) }) else {
                for mode in mine { logits[mode.description] = stores[mode]!.table(keys) }
                progress("model \(index): \(mine.map(\.description).joined(separator: ", ")): all \(plan.pairs) pairs kept from an earlier run")
                continue
            }
            let started = Date()
            let reranker = try RerankerModel.load(directory: directory, precision: linear == "fp32" ? .fp32 : .int8, threads: threads,
                                                  int8Group: linear == "int8row" ? 0 : Int8Linear.standardGroup)
            progress(String(format: "model %d: %@ loaded in %.1f s", index, linear, Date().timeIntervalSince(started)))
            let limit = reranker.maxLengthLimit
            for mode in mine {
                let name = mode == .reference ? "fp32 (reference)" : mode.description
                let t0 = Date()
                let engine = SiftEngine(reranker: reranker, options: .inProcess(attention: AttentionPrecision(rawValue: mode.attention) ?? .fp32))
                defer { engine.shutdown() }
                var computed = 0
                for (n, g) in plan.groups.enumerated() where !stores[mode]!.has([keys[n]]) {
                    let r = try await engine.score(query: g.query, documents: g.documents, maxLength: limit)
                    try stores[mode]!.record(zip(keys[n], r.map { Double($0.logit) }))
                    computed += g.documents.count
                    if g.bucket != .short {
                        progress(String(format: "model %d %@: group %d/%d (%@, %d documents, up to %d tokens) after %.0f s", index, name,
                                        n + 1, plan.groups.count, g.bucket.rawValue, g.documents.count, g.documentTokens.max() ?? 0,
                                        Date().timeIntervalSince(t0)))
                    }
                }
                progress(String(format: "model %d: %@ scored %d pairs in %.0f s (%d kept from an earlier run)", index, name,
                                computed, Date().timeIntervalSince(t0), plan.pairs - computed))
                logits[mode.description] = stores[mode]!.table(keys)
            }
        }
        let reference = logits.removeValue(forKey: FidelityMode.reference.description)!
        var records: [FidelityRecord] = []
        for (g, group) in plan.groups.enumerated() {
            for d in group.documents.indices {
                var byMode: [String: Double] = [:]
                for (name, table) in logits { byMode[name] = table[g][d] }
                records.append(FidelityRecord(model: index, group: g, bucket: group.bucket, reference: reference[g][d], logits: byMode))
            }
        }
        return records
    }

    /// One mode's logits by pair key, read at the start and written back after every query
    /// (atomically: a stopped run leaves the last whole file). The engine's logits are Floats; JSON
    /// keeps a Double to about 16 digits, enough for a Float to come back with the same bits.
    struct LogitStore {
        let file: URL?
        private var logits: [String: Double] = [:]

        init(file: URL?) {
            self.file = file
            if let file, let data = try? Data(contentsOf: file),
               let dict = try? JSONSerialization.jsonObject(with: data) as? [String: Double] { logits = dict }
        }

        func has(_ keys: [[String]]) -> Bool { keys.allSatisfy { $0.allSatisfy { logits[$0] != nil } } }
        func table(_ keys: [[String]]) -> [[Double]] { keys.map { $0.map { Double(Float(logits[$0]!)) } } }

        mutating func record<S: Sequence>(_ pairs: S) throws where S.Element == (String, Double) {
            for (key, value) in pairs { logits[key] = value }
            guard let file else { return }
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try JSONSerialization.data(withJSONObject: logits).write(to: file, options: .atomic)
        }
    }

    /// This executable and the kernel path it runs: mode logits from another build are not reused.
    static func buildIdentity() throws -> String {
        let exe = try MappedFile(path: "/proc/self/exe")
        return String(format: "%016llx-%@", sift_checksum64(exe.base, exe.size, 0), try KernelPath.selected().rawValue)
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
