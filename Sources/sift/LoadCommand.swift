import ArgumentParser
import Foundation
import Histogram
import SiftClient
import SiftProtocol
import SiftBase

/// A load generator over the Swift client: closed loop (N callers, each waiting for its answer)
/// or open loop (calls start on a fixed schedule whatever the answers do, so latency under
/// overload is measured honestly, from when each call should have started).
struct LoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Load-test a server: closed or open loop, latency percentiles, throughput, errors by status.",
        discussion: """
            Workload presets (the engine benchmarks' W1–W4, through the server):
            w1: one call of 64 corpus passages (cut to 256 tokens).
            w2: 8 callers × 10 calls of 16 passages (256 tokens), a different query each.
            w3: one call of 4 documents of ~4000 tokens.
            w4: interactive calls (1 query × 4 passages cut to 96 tokens) alone, then a stream of w1 \
            calls alone for --duration seconds, then both for --duration seconds, the interactive calls \
            at --rate (default: a rate that keeps them to 15% of the machine); prints their p50/p99 idle \
            and under the stream, and the stream's docs/s without and with them.

            Without --workload: --documents passages per call, --concurrency callers (or --rate \
            calls/s), until --requests calls or --duration seconds. --zipf S draws each call's query \
            from a Zipf(S) law over the queries (the first most often) and gives each query a fixed \
            set of documents, as head queries recur in search traffic: the score cache's workload \
            (e.g. --workload w2 --zipf 1.1).

            Each run tags its queries (" (load run XXXX)"), and a query meets each passage at most \
            once (a query that has met every passage gets a new tag): no call is answered from \
            scores the server computed before, in this run or an earlier one (--reuse-scores lets \
            them be).
            """)

    @OptionGroup var connection: ServerConnectionOptions
    @Option(help: "Preset: w1, w2, w3 or w4 (overrides the shape flags).") var workload: String?
    @Option(help: BenchData.corpusHelp) var corpus: String?
    @Option(help: BenchData.queriesHelp) var queries: String?
    @Option(help: "Documents per call.") var documents: Int = 16
    @Option(help: "Cut each document to this many tokens (0: no cut).") var maxTokensPerDocument: Int = 256
    @Option(help: "Closed loop: callers, each sending its next call when the last is answered.") var concurrency: Int = 8
    @Option(help: "Open loop: calls started per second (overrides --concurrency).") var rate: Double?
    @Option(help: "Stop after this many calls.") var requests: Int?
    @Option(help: "Stop after this many seconds.") var duration: Double = 30
    @Option(help: "Per-call deadline in seconds (0: none).") var timeout: Double = 0
    @Option(help: "Use only the first N queries (repeats exercise the prefix cache; 0: all).") var distinctQueries: Int = 0
    @Option(help: "Query mix: Zipf law of this exponent over the queries, each with fixed documents (e.g. 1.1; default: queries in turn).")
    var zipf: Double?
    @Option(help: "Seed of the --zipf draws (the same seed sends the same calls).") var seed: UInt64 = 1
    @Flag(help: "Send the queries untagged, so calls may be answered from scores the server computed in earlier runs.")
    var reuseScores = false
    @Option(help: "Model to ask for, by name or alias (default: the server's default model).") var model: String?
    @Flag(help: "Print one JSON object instead of the table.") var json = false
    @Option(help: "Also write a self-contained HTML page: latency percentile curve, throughput and errors over time, the run's parameters.")
    var report: String?
    @Flag(help: "No live progress line (it is shown only when stderr is a terminal).") var quiet = false

    struct Shape {
        var documentsPerCall: Int
        var maxTokens: Int
        var concurrency: Int
        var requests: Int?
        var longDocuments = false
    }

    func run() async throws {
        try await reportingErrors { try await runLoad() }
    }

    func runLoad() async throws {
        var shape = Shape(documentsPerCall: documents, maxTokens: maxTokensPerDocument, concurrency: concurrency, requests: requests)
        switch workload?.lowercased() {
        case nil: break
        case "w1": shape = Shape(documentsPerCall: 64, maxTokens: 256, concurrency: 1, requests: 1)
        case "w2": shape = Shape(documentsPerCall: 16, maxTokens: 256, concurrency: 8, requests: 80)
        case "w3": shape = Shape(documentsPerCall: 4, maxTokens: 4000, concurrency: 1, requests: 1, longDocuments: true)
        case "w4": return try await runMixed()
        case let other?: throw CLIError("unknown workload \(other): w1, w2, w3 or w4")
        }
        guard shape.documentsPerCall >= 0, shape.concurrency >= 1 else { throw CLIError("--documents ≥ 0 and --concurrency ≥ 1") }
        if let rate, !(rate > 0) { throw CLIError("--rate must be positive") }
        if let zipf, !(zipf > 0 && zipf < 100) { throw CLIError("--zipf must be a positive exponent (e.g. 1.1)") }
        let texts = try BenchData.texts(corpus, "corpus.jsonl", flag: "--corpus")
        var qs = try BenchData.texts(queries, "queries.jsonl", flag: "--queries")
        if distinctQueries > 0 { qs = Array(qs.prefix(distinctQueries)) }
        guard !texts.isEmpty, !qs.isEmpty else { throw CLIError("the corpus and the queries must not be empty") }
        if let report { try OutputFile.check(report, flag: "--report") }
        let client = try connection.makeClient()
        var pool = texts
        if shape.longDocuments {
            pool = try await longDocuments(texts, client: client, tokens: 4000, count: shape.documentsPerCall)
        }
        let plan = Plan(texts: pool, queries: qs, shape: shape, long: shape.longDocuments,
                        timeout: timeout > 0 ? .milliseconds(Int(timeout * 1000)) : nil,
                        mix: zipf.map { QueryMix.zipf(exponent: $0, queries: qs.count, seed: seed) } ?? .inTurn, model: model,
                        runTag: reuseScores ? nil : String(format: "%04x", UInt16.random(in: 0...UInt16.max)))
        let limit = shape.requests ?? Int.max
        let stopAt = ContinuousClock.now + .milliseconds(Int(duration * 1000))
        let started = ContinuousClock.now
        let recorder = Recorder(started: started)
        let progress = !quiet && isatty(STDERR_FILENO) == 1
            ? Task { await LiveProgress.run(recorder, started: started) } : nil
        if let rate {
            // Open loop: call n starts at started + n/rate; its latency counts from then.
            try await withThrowingTaskGroup(of: Void.self) { group in
                var n = 0
                while n < limit {
                    let due = started + .nanoseconds(Int64(Double(n) / rate * 1e9))
                    if due > stopAt { break }
                    try await Task.sleep(until: due, clock: .continuous)
                    let i = n
                    group.addTask { await plan.send(i, client: client, scheduled: due, into: recorder) }
                    n += 1
                }
                try await group.waitForAll()
            }
        } else {
            let next = Counter()
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<shape.concurrency {
                    group.addTask {
                        while ContinuousClock.now < stopAt {
                            let i = await next.take()
                            if i >= limit { break }
                            await plan.send(i, client: client, scheduled: ContinuousClock.now, into: recorder)
                        }
                    }
                }
            }
        }
        let wall = ContinuousClock.now - started
        progress?.cancel()
        await progress?.value
        await client.close()
        var mode = rate.map { String(format: "open loop %.1f calls/s", $0) } ?? "closed loop, \(shape.concurrency) caller\(shape.concurrency == 1 ? "" : "s")"
        if let zipf { mode += String(format: ", Zipf(%g) queries", zipf) }
        if let tag = plan.runTag { mode += ", queries tagged (load run \(tag))" }
        let summary = await recorder.report(wall: wall, mode: mode, documentsPerCall: shape.documentsPerCall)
        print(json ? summary.json : summary.table)
        if let report {
            let parameters: KeyValuePairs<String, String> = [
                "servers": connection.server, "mode": mode, "workload": workload ?? "custom",
                "documents per call": "\(shape.documentsPerCall)",
                "max tokens per document": shape.maxTokens > 0 ? "\(shape.maxTokens)" : "no cut",
                "calls": shape.requests.map(String.init) ?? "until the duration", "duration limit": "\(duration) s",
                "per-call deadline": timeout > 0 ? "\(timeout) s" : "none",
                "distinct queries": distinctQueries > 0 ? "\(distinctQueries)" : "all \(qs.count)",
                "query mix": zipf.map { "Zipf(\($0)), fixed documents per query, seed \(seed)" } ?? "in turn",
                "scores from earlier runs": reuseScores ? "may answer calls (--reuse-scores)" : "never (queries tagged \"load run \(plan.runTag ?? "")\")",
                "model": model ?? "the server's default",
                "routing": "\(connection.routing)", "sift version": SiftVersion.current,
                "started": ISO8601DateFormatter().string(from: Date(timeIntervalSinceNow: -wall.seconds)),
            ]
            let page = await recorder.html(summary: summary, parameters: Array(parameters))
            do {
                try page.write(toFile: report, atomically: true, encoding: .utf8)
            } catch {
                throw CLIError("cannot write --report \(report): \(error.localizedDescription)")
            }
            FileHandle.standardError.write(Data("report written to \(report)\n".utf8))
        }
        if summary.ok == 0 { throw ExitCode(1) }
    }

    /// W4 through the server (`MixedWorkload`).
    func runMixed() async throws {
        if json || report != nil { throw CLIError("--workload w4 prints its own summary; --json and --report are not available with it") }
        if let rate, !(rate > 0) { throw CLIError("--rate must be positive") }
        guard duration > 0 else { throw CLIError("--duration must be positive") }
        let texts = try BenchData.texts(corpus, "corpus.jsonl", flag: "--corpus")
        let qs = try BenchData.texts(queries, "queries.jsonl", flag: "--queries")
        guard !texts.isEmpty, !qs.isEmpty else { throw CLIError("the corpus and the queries must not be empty") }
        let client = try connection.makeClient()
        let model = model
        let w4 = MixedWorkload(seconds: duration, rate: rate, interactive: { call in
            _ = try await client.rerank(query: call.query, documents: call.documents, model: model,
                                        maxTokensPerDocument: call.maxTokensPerDocument)
        }, batch: { call, scored in
            _ = try await client.rerank(query: call.query, documents: call.documents, model: model,
                                        maxTokensPerDocument: call.maxTokensPerDocument, onPartial: { scored($0.count) })
        }, calls: .init(texts: texts, queries: qs))
        let result = try await w4.run { if !quiet { FileHandle.standardError.write(Data(($0 + "\n").utf8)) } }
        await client.close()
        print(result.table)
    }

    /// Documents of about `tokens` tokens: consecutive passages joined, counted by the server.
    func longDocuments(_ texts: [String], client: SiftClient, tokens: Int, count: Int) async throws -> [String] {
        var out: [String] = []
        var cursor = 64
        for _ in 0..<count {
            var doc = ""
            while true {
                let n = try await client.tokenize([doc], model: model).first?.count ?? 0
                if n >= tokens { break }
                doc += texts[cursor % texts.count] + "\n\n"
                cursor += 1
            }
            out.append(doc)
        }
        return out
    }
}

/// Which query call n sends.
enum QueryMix: Sendable {
    /// Query n mod count, documents moving through the corpus.
    case inTurn
    /// Query k (0-based) with probability ∝ 1/(k+1)^s, drawn per call from a seeded hash of n
    /// (no shared state, the same for every run with the seed); each query has fixed documents.
    case zipf(cumulative: [Double], seed: UInt64)

    static func zipf(exponent s: Double, queries: Int, seed: UInt64) -> QueryMix {
        var sum = 0.0
        var cumulative: [Double] = []
        for k in 1...max(1, queries) {
            sum += 1 / pow(Double(k), s)
            cumulative.append(sum)
        }
        return .zipf(cumulative: cumulative.map { $0 / sum }, seed: seed)
    }

    /// Call n's query index.
    func query(_ n: Int, of count: Int) -> Int {
        switch self {
        case .inTurn:
            return n % count
        case .zipf(let cumulative, let seed):
            // splitmix64 of (seed, n): a uniform draw in [0, 1).
            var z = seed &+ UInt64(n) &* 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            let u = Double(z >> 11) / Double(1 << 53)
            var lo = 0, hi = cumulative.count - 1
            while lo < hi {
                let mid = (lo + hi) / 2
                if cumulative[mid] > u { hi = mid } else { lo = mid + 1 }
            }
            return lo
        }
    }
}

/// What call n sends.
struct Plan: Sendable {
    let texts: [String]
    let queries: [String]
    let shape: LoadCommand.Shape
    let long: Bool
    let timeout: Duration?
    var mix: QueryMix = .inTurn
    var model: String?

    /// Tag of this run's queries (nil: untagged, `--reuse-scores`).
    var runTag: String?

    /// Call n's query and documents. In turn, call n asks query n mod Q about the next passages
    /// of pass n / Q over the corpus, so a query meets each passage once; once a query has met
    /// them all, its text gets a new tag. So no (query, document) pair repeats in a run.
    func call(_ n: Int) -> (query: String, documents: [String]) {
        let q = mix.query(n, of: queries.count)
        if long { return (tagged(queries[q], cycle: 0), Array(texts.prefix(shape.documentsPerCall))) }
        if case .zipf = mix {
            // Each query keeps its own documents: repeats are this workload's point.
            let first = q * shape.documentsPerCall
            return (tagged(queries[q], cycle: 0), (0..<shape.documentsPerCall).map { texts[(first + $0) % texts.count] })
        }
        let first = n / queries.count * shape.documentsPerCall
        return (tagged(queries[q], cycle: first / max(1, texts.count)),
                (0..<shape.documentsPerCall).map { texts[(first + $0) % texts.count] })
    }

    private func tagged(_ query: String, cycle: Int) -> String {
        guard let runTag else { return query }
        return cycle == 0 ? "\(query) (load run \(runTag))" : "\(query) (load run \(runTag).\(cycle))"
    }

    func send(_ n: Int, client: SiftClient, scheduled: ContinuousClock.Instant, into recorder: Recorder) async {
        let (query, docs) = call(n)
        do {
            let r = try await client.rerank(query: query, documents: docs, model: model,
                                            maxTokensPerDocument: shape.maxTokens > 0 ? shape.maxTokens : nil, timeout: timeout)
            await recorder.ok(ContinuousClock.now - scheduled, documents: docs.count,
                              prefix: Int(r.usage.prefixTokens), cached: Int(r.usage.prefixTokensCached),
                              cachedDocuments: Int(r.usage.cachedDocuments))
        } catch let status as Wire.Status {
            await recorder.failed(status.code, after: ContinuousClock.now - scheduled)
        } catch {
            await recorder.failed(.unknown, after: ContinuousClock.now - scheduled)
        }
    }
}

extension LoadCommand.Shape: Sendable {}

actor Counter {
    private var n = 0
    func take() -> Int { defer { n += 1 }; return n }
}

actor Recorder {
    let started: ContinuousClock.Instant
    /// Per second of the run: calls answered, failed, documents scored, of those from the score cache.
    private(set) var timeline: [Second] = []
    struct Second {
        var ok = 0, failed = 0, documents = 0, cachedDocuments = 0
        mutating func add(_ other: Second) {
            ok += other.ok; failed += other.failed; documents += other.documents; cachedDocuments += other.cachedDocuments
        }
    }
    /// The first calls, one by one (the report lists them: a short run has few points to plot).
    private(set) var calls: [Call] = []
    struct Call { var start: Double, ms: Double, documents: Int, cachedDocuments: Int, status: String }
    static let callsListed = 50
    /// The run's length, once it is over.
    private(set) var runSeconds = 0.0
    private var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)  // µs, up to 1 h
    private(set) var okCount = 0
    private var documents = 0
    private var prefixTokens = 0
    private var cachedTokens = 0
    private var cachedDocuments = 0
    private var errors: [Wire.Code: Int] = [:]

    /// How long failed calls took to fail (refusals should be quick).
    private var failureHistogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)

    init(started: ContinuousClock.Instant) { self.started = started }

    private func tick(ok: Int = 0, failed: Int = 0, documents: Int = 0, cachedDocuments: Int = 0) {
        let second = max(0, Int((ContinuousClock.now - started).seconds))
        while timeline.count <= second { timeline.append(Second()) }
        timeline[second].ok += ok
        timeline[second].failed += failed
        timeline[second].documents += documents
        timeline[second].cachedDocuments += cachedDocuments
    }

    private func list(_ latency: Duration, documents: Int, cachedDocuments: Int, status: String) {
        guard calls.count < Self.callsListed else { return }
        let end = (ContinuousClock.now - started).seconds
        calls.append(Call(start: max(0, end - latency.seconds), ms: latency.seconds * 1000, documents: documents,
                          cachedDocuments: cachedDocuments, status: status))
    }

    /// What the live progress line shows.
    func snapshot() -> (ok: Int, failed: Int, documents: Int, p50: Double, p99: Double) {
        (okCount, errors.values.reduce(0, +), documents,
         Double(histogram.valueAtPercentile(50)) / 1000, Double(histogram.valueAtPercentile(99)) / 1000)
    }

    /// Latency of successful calls at a percentile, in ms.
    func latencyMs(at percentile: Double) -> Double { Double(histogram.valueAtPercentile(percentile)) / 1000 }

    /// (percentile, latency ms) points of the percentile distribution, HdrHistogram-style.
    func percentileCurve() -> [(percentile: Double, ms: Double)] {
        guard histogram.totalCount > 0 else { return [] }
        return histogram.percentiles(ticksPerHalfDistance: 5).map { ($0.percentile, Double($0.value) / 1000) }
    }

    static func microseconds(_ d: Duration) -> UInt64 {
        let (s, atto) = d.components
        return UInt64(max(0, s * 1_000_000 + atto / 1_000_000_000_000))
    }

    func ok(_ latency: Duration, documents: Int, prefix: Int, cached: Int, cachedDocuments: Int = 0) {
        self.cachedDocuments += cachedDocuments
        _ = histogram.record(Self.microseconds(latency))
        okCount += 1
        self.documents += documents
        tick(ok: 1, documents: documents, cachedDocuments: cachedDocuments)
        list(latency, documents: documents, cachedDocuments: cachedDocuments, status: "OK")
        prefixTokens += prefix
        cachedTokens += cached
    }

    func failed(_ code: Wire.Code, after latency: Duration) {
        errors[code, default: 0] += 1
        tick(failed: 1)
        list(latency, documents: 0, cachedDocuments: 0, status: code.name)
        _ = failureHistogram.record(Self.microseconds(latency))
    }

    struct Report {
        var ok: Int
        var table: String
        var json: String
        var cachedDocuments = 0
        var documents = 0
    }

    func report(wall: Duration, mode: String, documentsPerCall: Int) -> Report {
        let seconds = wall.seconds
        runSeconds = seconds
        let ms: (Double) -> Double = { Double(self.histogram.valueAtPercentile($0)) / 1000 }
        let fms: (Double) -> Double = { Double(self.failureHistogram.valueAtPercentile($0)) / 1000 }
        let failed = errors.values.reduce(0, +)
        let hitRatio = prefixTokens > 0 ? Double(cachedTokens) / Double(prefixTokens) : 0
        let scoreHitRatio = documents > 0 ? Double(cachedDocuments) / Double(documents) : 0
        let errorText = errors.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.name) \(Self.grouped($0.value))" }.joined(separator: ", ")
        let f1 = { (v: Double) in Self.grouped(v, decimals: 1) }
        var table = """
            \(mode), \(documentsPerCall) documents per call, \(f1(seconds)) s
            calls        \(Self.grouped(okCount)) ok, \(Self.grouped(failed)) failed\(errorText.isEmpty ? "" : " (\(errorText))")
            throughput   \(Self.grouped(Double(okCount) / seconds, decimals: 2)) calls/s, \(Self.grouped(Double(documents) / seconds, decimals: 2)) docs/s
            latency ms   p50 \(f1(ms(50)))  p90 \(f1(ms(90)))  p99 \(f1(ms(99)))  p99.9 \(f1(ms(99.9)))  max \(f1(Double(histogram.max) / 1000))
            prefix cache \(String(format: "%.1f", hitRatio * 100))% of prefix tokens served from cache
            score cache  \(String(format: "%.1f", scoreHitRatio * 100))% of documents answered from cache
            """
        if cachedDocuments > 0 {
            table += "\nnote         \(Self.grouped(cachedDocuments)) of \(Self.grouped(documents)) documents came from the server's score cache,"
                + "\n             not computed: the docs/s above count them"
        }
        if failed > 0 {
            table += "\nfailed in ms p50 \(f1(fms(50)))  p99 \(f1(fms(99)))  max \(f1(Double(failureHistogram.max) / 1000))"
        }
        let errorJSON = errors.map { "\"\($0.key.name)\":\($0.value)" }.joined(separator: ",")
        let json = """
            {"mode":\(Self.jsonString(mode)),"seconds":\(seconds),"ok":\(okCount),"failed":\(failed),"errors":{\(errorJSON)},\
            "calls_per_second":\(Double(okCount) / seconds),"docs_per_second":\(Double(documents) / seconds),\
            "latency_ms":{"p50":\(ms(50)),"p90":\(ms(90)),"p99":\(ms(99)),"p99.9":\(ms(99.9)),"max":\(Double(histogram.max) / 1000)},\
            "prefix_cache_hit_ratio":\(hitRatio),"score_cache_hit_ratio":\(scoreHitRatio),"cached_documents":\(cachedDocuments),\
            "failed_latency_ms":{"p50":\(fms(50)),"p99":\(fms(99)),"max":\(Double(failureHistogram.max) / 1000)}}
            """
        return Report(ok: okCount, table: table, json: json, cachedDocuments: cachedDocuments, documents: documents)
    }

    static func jsonString(_ s: String) -> String {
        String(decoding: (try? JSONEncoder().encode(s)) ?? Data("\"\"".utf8), as: UTF8.self)
    }

    /// 12,345 / 1,234.5: numbers a reader takes in at a glance.
    static func grouped(_ v: Int) -> String { grouped(Double(v), decimals: 0) }

    static func grouped(_ v: Double, decimals: Int) -> String {
        guard v.isFinite else { return "\(v)" }
        let text = String(format: "%.\(max(0, decimals))f", abs(v))
        let parts = text.split(separator: ".", maxSplits: 1)
        var digits = Array(parts[0])
        var grouped = ""
        while digits.count > 3 {
            grouped = "," + String(digits.suffix(3)) + grouped
            digits.removeLast(3)
        }
        grouped = String(digits) + grouped
        return (v < 0 ? "-" : "") + grouped + (parts.count > 1 ? "." + parts[1] : "")
    }
}
