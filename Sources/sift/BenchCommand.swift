import ArgumentParser
import Foundation
import Qwen3
import SiftEngine
import SiftBase

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks (run a release build: swift build -c release).",
        subcommands: [TokenizerBench.self, PrefillBench.self, ParityBench.self, FidelityBench.self, KernelBench.self, EngineBench.self, RPCBench.self])
}

/// Monotonic seconds.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Texts of a JSON-lines corpus (`{"text": ...}` per line).
func loadCorpus(_ path: String) throws -> [String] {
    try JSONLinesInput.readTexts(path)
}

/// The benchmark texts (`../shared/bench/corpus.jsonl`, `queries.jsonl`): the path given, else
/// `$SIFT_BENCH_DIR/NAME`, else `shared/bench/NAME` beside the folders holding the current
/// directory or the `sift` binary (so a checkout's build finds them from anywhere); else an error
/// naming the flag to set.
enum BenchData {
    static let corpusHelp = ArgumentHelp("JSON-lines corpus of documents (default: shared/bench/corpus.jsonl beside the checkout, or $SIFT_BENCH_DIR/corpus.jsonl).")
    static let queriesHelp = ArgumentHelp("JSON-lines queries (default: shared/bench/queries.jsonl beside the checkout, or $SIFT_BENCH_DIR/queries.jsonl).")

    static func path(_ given: String?, _ name: String, flag: String) throws -> String {
        if let given { return given }
        let fm = FileManager.default
        var candidates: [String] = []
        if let dir = ProcessInfo.processInfo.environment["SIFT_BENCH_DIR"] { candidates.append(dir + "/" + name) }
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        for start in [URL(fileURLWithPath: fm.currentDirectoryPath), executable.deletingLastPathComponent()] {
            var dir = start
            for _ in 0..<8 {
                candidates.append(dir.appendingPathComponent("shared/bench/\(name)").path)
                candidates.append(dir.deletingLastPathComponent().appendingPathComponent("shared/bench/\(name)").path)
                dir = dir.deletingLastPathComponent()
            }
        }
        if let found = candidates.first(where: { fm.fileExists(atPath: $0) }) { return found }
        throw CLIError("no \(name) found (looked for shared/bench/\(name) beside this checkout and in $SIFT_BENCH_DIR): pass \(flag) FILE (JSON lines, {\"text\": ...} each)")
    }

    /// The texts of `given`, or of the default file `name`.
    static func texts(_ given: String?, _ name: String, flag: String) throws -> [String] {
        try loadCorpus(try path(given, name, flag: flag))
    }
}

struct TokenizerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer", abstract: "Tokenizer throughput (MB/s of UTF-8 input, tokens/s), single thread.")

    @Option(help: "Folder with the tokenizer files.") var model: String = "../shared/fixtures/qwen3-tokenizer"
    @Option(help: BenchData.corpusHelp) var corpus: String?
    @Option(help: "Passes over the corpus.") var passes: Int = 3

    func run() throws {
        try reportingErrors {
            try ModelArgument.check(model, is: .folder, for: "bench tokenizer")
            let texts = try BenchData.texts(corpus, "corpus.jsonl", flag: "--corpus")
            let t0 = now()
            let tokenizer = try Tokenizer.load(directory: URL(fileURLWithPath: model))
            let loadTime = now() - t0
            let bytes = texts.reduce(0) { $0 + $1.utf8.count }
            var tokens = 0
            var best = Double.infinity
            for _ in 0..<max(1, passes) {
                let start = now()
                tokens = 0
                for t in texts { tokens += tokenizer.encode(t).count }
                best = min(best, now() - start)
            }
            // One long document (~32k tokens) as one piece of text.
            let long = texts.prefix(100).joined(separator: "\n\n")
            let ls = now()
            let longTokens = tokenizer.encode(long).count
            let longTime = now() - ls
            print(String(format: "tokenizer load: %.2f s", loadTime))
            print(String(format: "corpus: %d texts, %.2f MB, %d tokens; best of %d passes: %.3f s = %.1f MB/s, %.0f tokens/s",
                         texts.count, Double(bytes) / 1e6, tokens, passes, best, Double(bytes) / 1e6 / best, Double(tokens) / best))
            print(String(format: "one long document: %.2f MB, %d tokens in %.3f s = %.1f MB/s",
                         Double(long.utf8.count) / 1e6, longTokens, longTime, Double(long.utf8.count) / 1e6 / longTime))
        }
    }
}

struct PrefillBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prefill", abstract: "Prefill throughput of the model (tokens/s) on sequences of corpus text.")

    @Option(help: "Hugging Face Qwen3 folder (e.g. from make_model.py --preset 0.6b).") var model: String
    @Option(help: "Tokens per sequence.") var tokens: Int = 512
    @Option(help: "Sequences to run (after one warm-up).") var sequences: Int = 3
    @Option(help: "Worker threads, one per core unless set.") var threads: Int = WorkerPool.defaultThreadCount
    @Option(help: "Precision of the linear layers.") var precision: Precision = .int8
    @Option(help: AttentionPrecision.help)
    var attention: AttentionPrecision?
    @Option(help: BenchData.corpusHelp) var corpus: String?
    @Option(help: "Run each sequence in steps of this many tokens, as the engine's chunked prefill does (0: one step).") var chunk: Int = 0
    @Flag(inversion: .prefixedNo, help: "Run one sequence first, untimed.") var warmUp = true

    func validate() throws {
        guard tokens > 0, sequences > 0, threads > 0, chunk >= 0 else {
            throw ValidationError("--tokens, --sequences and --threads must be positive, --chunk at least 0")
        }
    }

    func run() throws {
        try reportingErrors {
            try ModelArgument.check(model, is: .folderOrSift, for: "bench prefill")
            let texts = try BenchData.texts(corpus, "corpus.jsonl", flag: "--corpus")
            let t0 = now()
            let reranker = try RerankerModel.load(path: model, precision: precision, threads: threads)
            let loadTime = now() - t0
            var ids: [Int32] = []
            for t in texts where ids.count < tokens * (sequences + 1) { ids += reranker.tokenizer.encode(t) }
            let m = reranker.model
            var timings: [Double] = []
            guard ids.count >= tokens * (sequences + 1) else {
                throw ValidationError("the corpus has \(ids.count) tokens, fewer than the \(tokens * (sequences + 1)) needed")
            }
            let step = chunk > 0 ? chunk : tokens
            var kvBytes = 0   // the largest sequence's KV, as its cache holds it
            for s in (warmUp ? 0 : 1)...sequences {
                let seq = ids[(s * tokens)..<((s + 1) * tokens)]
                let cache = m.makeCache(attention: attention ?? .standard(for: precision))
                let start = now()
                for from in stride(from: seq.startIndex, to: seq.endIndex, by: step) {
                    let to = min(from + step, seq.endIndex)
                    _ = try m.forward([Qwen3Model.BatchItem(tokens: seq[from..<to], cache: cache, wantHidden: to == seq.endIndex)])
                }
                if s > 0 { timings.append(now() - start) }
                kvBytes = max(kvBytes, cache.bytes)
            }
            let mean = timings.reduce(0, +) / Double(timings.count)
            let kv = attention ?? .standard(for: precision)
            print("model: \(model)  precision: \(precision.rawValue)  attention: \(kv.rawValue)  kernel: \(m.kernelPath.rawValue)  threads: \(threads)  OpenBLAS core: \(BLAS.coreName)")
            print(String(format: "load %.1f s; prefill %d-token sequences%@: %.1f tokens/s (mean of %d, %.2f s each); peak RSS %.2f GB (KV %.2f GB)",
                         loadTime, tokens, chunk > 0 ? " in steps of \(chunk)" : "", Double(tokens) / mean, timings.count, mean,
                         Double(SystemMemory.peakResidentBytes() ?? 0) / 1e9, Double(kvBytes) / 1e9))
            printLimit(m, attention: kv, seconds: mean)
        }
    }

    /// The time the sequence would take if every linear layer ran at the int8 peak (fp32: the
    /// FMA peak) and attention at the peak of its unit, both measured now: prefill's limit.
    func printLimit(_ m: Qwen3Model, attention kv: AttentionPrecision, seconds: Double) {
        let c = m.config, h = c.hiddenSize
        let perToken = (c.qDim + 2 * c.kvDim) * h + h * c.qDim + 3 * c.intermediateSize * h
        let linearOps = 2 * Double(perToken) * Double(c.layerCount) * Double(tokens)
        let attentionFLOPs = Peaks.attentionFLOPs(tokens: tokens, heads: c.headCount, d: c.headDim) * Double(c.layerCount)
        let peaks = Peaks(path: m.kernelPath, pool: WorkerPool(threads: threads))
        let linearPeak = precision == .int8 ? peaks.int8 : peaks.fma
        guard linearPeak > 0 else { return print("limit: none on the portable path (no peak to measure)") }
        let linearTime = linearOps / (linearPeak * 1e9), attentionTime = attentionFLOPs / (peaks.attention(kv) * 1e9)
        let limit = linearTime + attentionTime
        print(String(format: "limit: %.1f tokens/s = linear %.2f GOP at the %@ peak (%.0f GOPS) + attention %.2f GFLOP at the %@ peak (%.0f GFLOPS), measured now; prefill at %.1f%% of it (attention %.0f%% of the limit's time)",
                     Double(tokens) / limit, linearOps / 1e9, precision == .int8 ? "int8" : "fp32 FMA", linearPeak,
                     attentionFLOPs / 1e9, peaks.attentionUnit(kv), peaks.attention(kv),
                     100 * limit / seconds, 100 * attentionTime / limit))
    }
}

struct ParityBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parity", abstract: "|Δlogit| against a reference-scores file (fixtures format).")

    @Option(help: "Model folder.") var model: String
    @Option(help: "Reference scores JSON (../shared/fixtures/reference-scores*.json).") var reference: String
    @Option(help: "Precision of the linear layers.") var precision: Precision = .int8
    @Option(help: AttentionPrecision.help) var attention: AttentionPrecision?
    @Option(help: "Only the first N cases (0 = all).") var cases: Int = 0
    @Option(help: "Worker threads.") var threads: Int = WorkerPool.defaultThreadCount

    func run() async throws {
        try await reportingErrors {
            let reranker = try RerankerModel.load(path: model, precision: precision, threads: threads)
            let deltas = try await ReferenceCases.deltas(reference, reranker: reranker, attention: attention, first: cases)
            let mean = deltas.reduce(0, +) / Double(deltas.count)
            print(String(format: "%@, %@ attention, %@ on %d cases: mean |Δlogit| %.4f, max %.4f", precision.rawValue,
                         (attention ?? .standard(for: precision)).rawValue,
                         URL(fileURLWithPath: reference).lastPathComponent, deltas.count, mean, deltas.max() ?? 0))
        }
    }
}

/// The reference scores of transformers (fixtures format): each case's |Δlogit| on a reranker.
/// `bench parity` prints them; `bench fidelity` checks its fp32 reference with them first.
enum ReferenceCases {
    static func deltas(_ file: String, reranker: RerankerModel, attention: AttentionPrecision?, first: Int = 0) async throws -> [Double] {
        guard let data = FileManager.default.contents(atPath: file),
              let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              var list = root["cases"] as? [[String: Any]] else { throw CLIError("cannot read \(file)") }
        if first > 0 { list = Array(list.prefix(first)) }
        guard !list.isEmpty else { throw CLIError("\(file) has no cases") }
        let engine = SiftEngine(reranker: reranker, options: .inProcess(attention: attention))
        defer { engine.shutdown() }
        var deltas: [Double] = []
        for (n, c) in list.enumerated() {
            guard let query = c["query"] as? String, let document = c["document"] as? String,
                  let maxLength = c["max_length"] as? NSNumber, let expected = c["logit_diff"] as? NSNumber else {
                throw CLIError("case \(n) of \(file) lacks a string query/document or a numeric max_length/logit_diff")
            }
            let r = try await engine.score(query: query, instruction: c["instruction_given"] as? String,
                                           documents: [document], maxLength: maxLength.intValue)[0]
            deltas.append(abs(Double(r.logit) - expected.doubleValue))
        }
        return deltas
    }
}
