import ArgumentParser
import Foundation
import Qwen3
import SiftEngine
import SiftBase

/// W1–W4 of the engine issues, in-process.
struct EngineBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "Engine workloads W1 (one request, 64 docs), W2 (8 concurrent submitters), W3 (4 long docs, alone and under W2), W4 (interactive calls under a batch stream).",
        discussion: """
            W4: interactive calls (1 query × 4 passages cut to 96 tokens) alone, then a stream of \
            W1-sized batch calls alone for --w4-seconds, then both for --w4-seconds, the interactive \
            calls at --interactive-rate (default: a rate that keeps them to 15% of the machine). It \
            prints the interactive p50/p99 idle and under the stream, and the stream's docs/s without \
            and with them. --w4-without-classes repeats W4 on an engine with --interactive-tokens 0 \
            (one class of work: no interactive steps, nothing run between sublayers), the scheduling \
            before latency classes.
            """)

    @Option(help: "Model: .sift file or Hugging Face folder (quantized at load).") var model: String
    @Option(help: BenchData.corpusHelp) var corpus: String?
    @Option(help: BenchData.queriesHelp) var queries: String?
    @Option(help: "Workloads to run, comma-separated.") var workloads: String = "w1,w2,w3"
    @Option(help: "W2: concurrent submitters.") var submitters: Int = 8
    @Option(help: "W2: requests per submitter.") var requestsPerSubmitter: Int = 10
    @Option(help: "Worker threads.") var threads: Int = WorkerPool.defaultThreadCount
    @Option(help: "Tokens per scheduler step.") var maxBatchTokens: Int = EngineOptions().maxBatchTokens
    @Option(help: "Chunk of a long document per step.") var prefillChunk: Int = EngineOptions().prefillChunk
    @Option(help: AttentionPrecision.help) var attention: AttentionPrecision?
    @Option(help: "Calls of at most this many tokens are interactive (0: only priority > 0).")
    var interactiveTokens: Int = EngineOptions().interactiveTokens
    @Option(help: "W4: seconds of each batch-stream phase.") var w4Seconds: Double = 240
    @Option(help: "W4: interactive calls started per second (default: 15% of the machine).") var interactiveRate: Double?
    @Option(help: "W4: interactive calls on the idle engine.") var idleCalls: Int = 10
    @Flag(help: "W4: run it again with one class of work (--interactive-tokens 0), the scheduling before.") var w4WithoutClasses = false

    func run() async throws {
        do {
            try await runBench()
        } catch {
            FileHandle.standardError.write(Data("sift: error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    func makeEngine(_ reranker: RerankerModel, sharing: Bool = true, interactiveTokens: Int? = nil) -> SiftEngine {
        var o = EngineOptions()
        o.interactiveTokens = interactiveTokens ?? self.interactiveTokens
        o.maxBatchTokens = maxBatchTokens
        o.prefillChunk = prefillChunk
        o.prefixSharing = sharing
        o.attention = attention
        o.maxQueuedTokens = 4_000_000
        return SiftEngine(reranker: reranker, options: o)
    }

    func runBench() async throws {
        let texts = try BenchData.texts(corpus, "corpus.jsonl", flag: "--corpus")
        let qs = try BenchData.texts(queries, "queries.jsonl", flag: "--queries")
        guard texts.count >= 64, !qs.isEmpty else { throw CLIError("need at least 64 documents and one query") }
        let reranker = try RerankerModel.load(path: model, precision: .int8, threads: threads)
        let which = Set(workloads.lowercased().split(separator: ","))
        print("model \(model), \(threads) threads, max-batch-tokens \(maxBatchTokens), prefill-chunk \(prefillChunk), kernel \(reranker.model.kernelPath.rawValue), attention \((attention ?? .standard(for: .int8)).rawValue)")
        let docs256 = Array(texts.prefix(64))
        // Long documents: consecutive passages joined to ~4000 tokens, cut there.
        var longDocs: [String] = []
        var cursor = 64
        for _ in 0..<4 {
            var doc = ""
            while reranker.tokenizer.encode(doc).count < 4000 { doc += texts[cursor % texts.count] + "\n\n"; cursor += 1 }
            longDocs.append(doc)
        }

        if which.contains("w1") {
            for sharing in [true, false] {
                let engine = makeEngine(reranker, sharing: sharing)
                let start = now()
                let r = try await engine.rerank(RerankRequest(query: qs[0], documents: docs256, maxTokensPerDocument: 256))
                let wall = now() - start
                let tokens = (sharing ? r.usage.prefixTokens : r.usage.prefixTokens * 64) + r.usage.documentTokens + r.usage.suffixTokens
                print(String(format: "W1 prefix sharing %@: 64 docs in %.1f s = %.2f docs/s; %d prefill tokens = %.0f tokens/s; KV live at most %.2f GB",
                             sharing ? "on " : "off", wall, 64 / wall, tokens, Double(tokens) / wall, Double(engine.stats.kvPeakBytes) / 1e9))
                engine.shutdown()
            }
        }
        var w2AloneP50 = 0.0
        if which.contains("w2") {
            let engine = makeEngine(reranker)
            let (lat, wall, n) = try await w2(engine, texts: texts, queries: qs)
            w2AloneP50 = percentile(lat, 50)
            print(String(format: "W2 %d×%d requests of 16 docs: %.2f docs/s, p50 %.1f s, p99 %.1f s, max %.1f s (wall %.1f s)",
                         submitters, requestsPerSubmitter, Double(n * 16) / wall, w2AloneP50, percentile(lat, 99), lat.max() ?? 0, wall))
            engine.shutdown()
        }
        if which.contains("w3") {
            let engine = makeEngine(reranker)
            let start = now()
            let r = try await engine.rerank(RerankRequest(query: qs[1 % qs.count], documents: longDocs, maxTokensPerDocument: 4000))
            let wall = now() - start
            print(String(format: "W3 4 docs of ~4000 tokens: %.1f s = %.2f docs/s (%d document tokens, %.0f tokens/s)",
                         wall, 4 / wall, r.usage.documentTokens, Double(r.usage.documentTokens) / wall))
            if which.contains("w2") {
                let long = Task { try await engine.rerank(RerankRequest(query: qs[2 % qs.count], documents: longDocs + longDocs,
                                                                        maxTokensPerDocument: 4000)) }
                let (lat, wall2, n) = try await w2(engine, texts: texts, queries: qs)
                let w3Time = try await long.value.timings
                print(String(format: "W2 during W3: %.2f docs/s, p50 %.1f s (%.2f× W2 alone), p99 %.1f s; W3 (8 long docs) took %.1f s",
                             Double(n * 16) / wall2, percentile(lat, 50), percentile(lat, 50) / max(w2AloneP50, 1e-9),
                             percentile(lat, 99), (w3Time.queued + w3Time.computing).seconds))
            }
            engine.shutdown()
        }
        if which.contains("w4") {
            var rate = interactiveRate
            for classes in w4WithoutClasses ? [true, false] : [true] {
                let engine = makeEngine(reranker, interactiveTokens: classes ? nil : 0)
                let w4 = MixedWorkload(idleCalls: idleCalls, seconds: w4Seconds, rate: rate, interactive: { call in
                    _ = try await engine.rerank(RerankRequest(query: call.query, documents: call.documents,
                                                              maxTokensPerDocument: call.maxTokensPerDocument))
                }, batch: { call, scored in
                    _ = try await engine.rerank(RerankRequest(query: call.query, documents: call.documents,
                                                              maxTokensPerDocument: call.maxTokensPerDocument,
                                                              onProgress: { scored($0.count) }))
                }, calls: .init(texts: texts, queries: qs))
                print("W4 \(classes ? "with latency classes (interactive-tokens \(interactiveTokens))" : "one class of work (interactive-tokens 0)"):")
                let r = try await w4.run { print("  " + $0) }
                rate = r.rate
                print(r.table.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
                let s = engine.stats
                print("  steps \(s.steps), interactive \(s.interactiveSteps), run between the sublayers of a batch step \(s.stepsBetweenSublayers)")
                engine.shutdown()
            }
            // Cancellation: W1 calls cancelled at points spread over their steps; the time until the
            // engine has dropped each (its caller resumes only then).
            let engine = makeEngine(reranker)
            var waits: [Double] = []
            for i in 0..<5 {
                let docs = (0..<64).map { texts[(64 * (i + 40) + $0) % texts.count] }
                let call = Task { try await engine.rerank(RerankRequest(query: qs[(i + 20) % qs.count], documents: docs, maxTokensPerDocument: 256)) }
                try await Task.sleep(for: .milliseconds(2000 + 1377 * i))
                let t0 = now()
                call.cancel()
                _ = try? await call.value
                waits.append(now() - t0)
            }
            print(String(format: "W4 cancellation: a W1 call cancelled mid-step stopped computing after p50 %.0f ms, max %.0f ms (%d cancels, %d tokens left steps early)",
                         percentile(waits, 50) * 1000, (waits.max() ?? 0) * 1000, waits.count, engine.stats.droppedTokens))
            engine.shutdown()
        }
        print(String(format: "peak RSS %.2f GB", Double(SystemMemory.peakResidentBytes() ?? 0) / 1e9))
    }

    /// `submitters` tasks, each sending `requestsPerSubmitter` requests of 16 docs one after another.
    func w2(_ engine: SiftEngine, texts: [String], queries: [String]) async throws -> ([Double], Double, Int) {
        let start = now()
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for s in 0..<submitters {
                group.addTask {
                    var out: [Double] = []
                    for i in 0..<requestsPerSubmitter {
                        let n = s * requestsPerSubmitter + i
                        let docs = (0..<16).map { texts[(n * 16 + $0) % texts.count] }
                        let t0 = now()
                        _ = try await engine.rerank(RerankRequest(query: queries[n % queries.count], documents: docs,
                                                                  maxTokensPerDocument: 256))
                        out.append(now() - t0)
                    }
                    return out
                }
            }
            var all: [Double] = []
            for try await l in group { all += l }
            return all
        }
        return (latencies, now() - start, latencies.count)
    }
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    let rank = Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

