import ArgumentParser
import Foundation
import Qwen3
import SiftEngine

/// `sift bench fidelity`: how faithful each way of running the model is, on enough pairs to
/// tell differences of 0.003 in mean |Δlogit|, and the gate that decides a faster path
/// (docs/QUANTIZATION.md).
struct FidelityBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fidelity",
        abstract: "Fidelity of each mode against the fp32 reference on pairs of three length buckets, over several models, and the gate for a faster path.",
        discussion: """
            Each model folder (e.g. make_model.py --preset 0.6b --seed S --outliers; \
            scripts/bench-fidelity.sh makes three and runs this) gets its own pairs, drawn from the \
            benchmark texts: --short-queries × --short-documents of 64–512 tokens, --long-queries × \
            --long-documents of 2k–8k, and the --very-long lengths, spread over the models. Every pair \
            is scored by the fp32 reference and by each mode, a query at a time, and kept in \
            --reference-cache: a stopped run resumes where it was (mode logits only with the same build). Printed: \
            per mode and bucket, mean |Δlogit| with its bootstrap 95% interval, p99, max, Kendall τ of \
            each query's ranking, top-1 agreement and order flips of documents more than 0.1 apart; \
            then the gate of --candidate against --baseline on the same pairs. Exit status 1 when the \
            gate fails.
            """)

    @Option(help: "Model folders (comma-separated), one per seed.") var models: String
    @Option(help: "Modes besides the fp32 reference: int8row (a scale per row, fp32 attention: Sift before 0.8), int8 (a scale per 128 inputs), int8+bf16 (bf16 attention), int8+int8 (int8 attention: Sift now), fp32+bf16.") var modes: String = "int8row,int8+bf16,int8+int8"
    @Option(help: "The mode the gate judges (default: what Sift serves).") var candidate: String = FidelityMode.standard.description
    @Option(help: "The mode it is judged against.") var baseline: String = FidelityMode.perRowBaseline.description
    @Option(help: "Short bucket: queries per model.") var shortQueries: Int = 16
    @Option(help: "Short bucket: documents per query.") var shortDocuments: Int = 20
    @Option(help: "Long bucket: queries per model.") var longQueries: Int = 3
    @Option(help: "Long bucket: documents per query.") var longDocuments: Int = 6
    @Option(help: "Very long documents (tokens, comma-separated), dealt to the models in turn; empty: none.")
    var veryLong: String = "16384,24576,32768"
    @Option(help: "Folder for the logits of every query as it is scored: the reference's, reused by later runs, and each mode's, reused by runs of the same build (a stopped run resumes).") var referenceCache: String = ".build-models/fidelity-cache"
    @Option(help: "Reference scores of the first model (fixtures format): its fp32 path is checked against them first.")
    var referenceScores: String?
    @Option(help: "Write every pair (model, group, document, query, text) as JSON lines, for outside engines.") var exportPairs: String?
    @Option(help: "An outside engine's logits, NAME=FILE (JSON lines {model, group, document, logit}); repeatable.")
    var external: [String] = []
    @Option(help: "Write every pair's logits as JSON lines.") var records: String?
    @Option(help: BenchData.corpusHelp) var corpus: String?
    @Option(help: BenchData.queriesHelp) var queries: String?
    @Option(help: "Worker threads, one per core unless set.") var threads: Int = WorkerPool.defaultThreadCount

    func run() async throws {
        try await reportingErrors {
            let folders = models.split(separator: ",").map { String($0) }
            for f in folders { try ModelArgument.check(f, is: .folder, for: "bench fidelity") }
            let parsed = try modes.split(separator: ",").map { text -> FidelityMode in
                guard let m = FidelityMode(String(text)) else { throw CLIError("--modes: \(text) is not one of \(FidelityMode.linearKinds.joined(separator: ", ")), each with or without +bf16 or +int8") }
                guard m != .reference else { throw CLIError("--modes: fp32 is the reference every mode is compared with; name the others") }
                return m
            }
            let names = parsed.map(\.description)
            let externals = try external.map { item -> (String, String) in
                let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { throw CLIError("--external \(item): expected NAME=FILE") }
                return (parts[0], parts[1])
            }
            // Checked now, not after hours of scoring.
            for (_, file) in externals where !FileManager.default.isReadableFile(atPath: file) {
                throw CLIError("cannot read --external \(file)")
            }
            for mode in [candidate, baseline] where !(names + externals.map(\.0)).contains(mode) {
                throw CLIError("--candidate and --baseline must be among the modes (\(names.joined(separator: ", ")))")
            }
            let texts = try BenchData.texts(corpus, "corpus.jsonl", flag: "--corpus")
            let qs = try BenchData.texts(queries, "queries.jsonl", flag: "--queries")
            let lengths = veryLong.split(separator: ",").compactMap { Int($0) }
            let log: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }

            if let referenceScores { try await checkReference(folders[0], referenceScores, log: log) }
            // Every model's pairs first, written out at once for outside engines (which can run
            // beside this one), then scored.
            var plans: [FidelityPlan] = []
            var exported = ""
            for (index, folder) in folders.enumerated() {
                let tokenizer = try Tokenizer.load(directory: URL(fileURLWithPath: folder))
                var shape = FidelityPlan.Shape()
                (shape.shortQueries, shape.shortDocuments) = (shortQueries, shortDocuments)
                (shape.longQueries, shape.longDocuments) = (longQueries, longDocuments)
                shape.veryLong = lengths.enumerated().filter { $0.offset % folders.count == index }.map(\.element)
                let plan = FidelityPlan.make(corpus: texts, queries: qs, tokenizer: tokenizer, shape: shape, salt: index)
                log("model \(index) (\(folder)): \(plan.pairs) pairs in \(plan.groups.count) queries")
                plans.append(plan)
                for (g, group) in plan.groups.enumerated() where exportPairs != nil {
                    for (d, doc) in group.documents.enumerated() {
                        let line: [String: Any] = ["model": index, "group": g, "document": d, "query": group.query, "text": doc]
                        exported += String(decoding: try JSONSerialization.data(withJSONObject: line), as: UTF8.self) + "\n"
                    }
                }
            }
            if let exportPairs {
                try exported.write(toFile: exportPairs, atomically: true, encoding: .utf8)
                log("pairs written to \(exportPairs)")
            }
            var all: [FidelityRecord] = []
            for (index, folder) in folders.enumerated() {
                all += try await FidelityRun.score(directory: URL(fileURLWithPath: folder), model: index, plan: plans[index], modes: parsed,
                                             threads: threads, referenceCache: URL(fileURLWithPath: referenceCache),
                                                   modeCache: URL(fileURLWithPath: referenceCache), progress: log)
            }
            for (name, file) in externals { try merge(name, file, into: &all) }
            if let records { try writeRecords(all, to: records) }
            let modeNames = names + externals.map(\.0)
            print("Fidelity against the fp32 reference: \(all.count) pairs over \(folders.count) models (kernel path \(try KernelPath.selected().rawValue))")
            print(FidelityReport.table(all, modes: modeNames))
            let gate = FidelityReport.gate(all, candidate: candidate, baseline: baseline)
            print("Gate: \(candidate) against \(baseline) (docs/QUANTIZATION.md)")
            for line in gate.lines { print("  " + line) }
            print(gate.passed ? "gate passed" : "gate FAILED")
            if !gate.passed { throw ExitCode(1) }
        }
    }

    /// The fp32 path of the first model against the reference scores of transformers.
    func checkReference(_ folder: String, _ file: String, log: (String) -> Void) async throws {
        let reranker = try RerankerModel.load(directory: URL(fileURLWithPath: folder), precision: .fp32, threads: threads)
        let deltas = try await ReferenceCases.deltas(file, reranker: reranker, attention: .fp32)
        let line = String(format: "reference check: fp32 path of %@ against %@ on %d cases: mean |Δlogit| %.5f, max %.5f",
                          folder, URL(fileURLWithPath: file).lastPathComponent, deltas.count,
                          deltas.reduce(0, +) / Double(max(1, deltas.count)), deltas.max() ?? 0)
        print(line)
        log(line)
        guard (deltas.max() ?? 0) < 0.01 else { throw CLIError("the fp32 reference does not match \(file): \(line)") }
    }

    func merge(_ name: String, _ file: String, into all: inout [FidelityRecord]) throws {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw CLIError("cannot read --external \(file)") }
        var byKey: [[Int]: Double] = [:]
        for line in text.split(separator: "\n") {
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let m = o["model"] as? Int, let g = o["group"] as? Int, let d = o["document"] as? Int,
                  let logit = (o["logit"] as? NSNumber)?.doubleValue else { throw CLIError("\(file): a line is not {model, group, document, logit}") }
            byKey[[m, g, d]] = logit
        }
        var documentIndex: [[Int]: Int] = [:]
        for i in all.indices {
            let key = [all[i].model, all[i].group]
            let d = documentIndex[key, default: 0]
            documentIndex[key] = d + 1
            guard let logit = byKey[key + [d]] else { throw CLIError("\(file) lacks model \(key[0]) group \(key[1]) document \(d)") }
            all[i].logits[name] = logit
        }
    }

    func writeRecords(_ all: [FidelityRecord], to path: String) throws {
        var out = ""
        for r in all {
            var line: [String: Any] = ["model": r.model, "group": r.group, "bucket": r.bucket.rawValue, "reference": r.reference]
            for (k, v) in r.logits { line[k] = v }
            out += String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self) + "\n"
        }
        try out.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
