import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SiftClient
import SiftProtocol
import SiftTestSupport
import XCTest

/// `sift serve` as a real process: start-up, signals, exit status.
final class ServeTests: XCTestCase {
    /// A running `sift serve` whose log goes to a file, read to learn the port.
    final class ServerProcess {
        let process = Process()
        let log: URL

        init(_ args: [String]) throws {
            log = try Fixtures.temporaryDirectory().appendingPathComponent("serve.log")
            FileManager.default.createFile(atPath: log.path, contents: nil)
            process.executableURL = CLITests.sift
            process.arguments = ["serve", "--port", "0"] + args
            process.standardError = try FileHandle(forWritingTo: log)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
        }

        var text: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        /// Waits for a line containing `marker`; returns the log.
        func wait(for marker: String, seconds: Double = 60) throws -> String {
            let end = Date().addingTimeInterval(seconds)
            while Date() < end {
                if text.contains(marker) { return text }
                if !process.isRunning { break }
                Thread.sleep(forTimeInterval: 0.05)
            }
            throw CLIError("no \"\(marker)\" in the server log:\n\(text)")
        }

        var port: Int {
            get throws {
                let log = try wait(for: "address=")
                let address = log.components(separatedBy: "address=127.0.0.1:")[1]
                return Int(address.prefix { $0.isNumber })!
            }
        }
    }

    struct CLIError: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    func testSIGTERMDrainsWithoutLosingAcceptedCalls() async throws {
        let server = try ServerProcess(["--model", Fixtures.tinyModel.path, "--threads", "2", "--drain-timeout", "60"])
        defer { if server.process.isRunning { server.process.terminate() } }
        let port = try server.port
        _ = try server.wait(for: "model loaded; serving")
        let c = try await SiftConnection.connect(host: "127.0.0.1", port: port)
        let documents = (0..<24).map { i in (0..<120).map { "term\($0 % 40 + i)" }.joined(separator: " ") }
        let calls = (0..<6).map { _ in
            Task { try await c.call(.rerankRequest(Wire.RerankRequest(query: "which terms?", documents: documents))) }
        }
        // Frames are read in order: once Health is answered, every call above was accepted.
        while true {
            guard case .healthResponse(let h) = try await c.call(.healthRequest) else { return XCTFail("no health") }
            if h.activeRequests > 0 { break }
        }
        kill(server.process.processIdentifier, SIGTERM)
        for call in calls {
            guard case .rerankResponse(let r) = try await call.value else { return XCTFail("a call was lost") }
            XCTAssertEqual(r.results.count, documents.count)
        }
        server.process.waitUntilExit()
        XCTAssertEqual(server.process.terminationStatus, 0, server.text)
        XCTAssertTrue(server.text.contains("draining"), server.text)
        XCTAssertTrue(server.text.contains("stopped"), server.text)
    }

    func testRerankPrintsWhatScorePrints() throws {
        let server = try ServerProcess(["--model", Fixtures.tinyModel.path, "--threads", "2"])
        defer { server.process.terminate() }
        let port = try server.port
        _ = try server.wait(for: "model loaded; serving")
        let docs = ["The capital of China is Beijing.", "", "Gravity pulls things down.", String(repeating: "many words ", count: 50)]
        let input = Data(docs.map { "{\"text\": \"\($0)\"}" }.joined(separator: "\n").utf8)
        let query = "What is the capital of China?"
        let remote = try CLITests.run(["rerank", "--server", "127.0.0.1:\(port)", "--query", query, "--max-length", "100", "-"], stdin: input)
        let local = try CLITests.run(["score", "--model", Fixtures.tinyModel.path, "--precision", "int8", "--query", query,
                                      "--max-length", "100", "-"], stdin: input)
        XCTAssertEqual(remote.status, 0, remote.stderr)
        XCTAssertEqual(remote.stdout, local.stdout)
        XCTAssertTrue(remote.stdout.contains("\"truncated\":true"), remote.stdout)
        // Nothing listening: one line, exit 1.
        let refused = try CLITests.run(["rerank", "--server", "127.0.0.1:1", "--query", "q", "-"], stdin: input)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("cannot connect to 127.0.0.1:1"), refused.stderr)
    }

    /// Same input, same answer at every door: the reference cases (the default instruction, given
    /// ones and an explicitly empty one) through `sift score --precision int8`, `sift rerank`
    /// over RPC, and the HTTP API give identical logits; and fp32 `sift score` gives the
    /// reference's, so each door read the instruction as the reference did.
    func testEveryDoorScoresTheSameCasesIdentically() async throws {
        let server = try ServerProcess(["--model", Fixtures.tinyModel.path, "--threads", "2", "--http-port", "0"])
        defer { server.process.terminate() }
        let port = try server.port
        let log = try server.wait(for: "model loaded; serving")
        let httpPort = Int(log.components(separatedBy: "http=http://127.0.0.1:")[1].prefix { $0.isNumber })!
        // One group per (query, instruction, max_length), as one call.
        let cases = try Fixtures.referenceCases()
        var groups: [String: [Fixtures.ReferenceCase]] = [:]
        for c in cases { groups["\(c.query)\u{1}\(c.instructionGiven.map { "i" + $0 } ?? "-")\u{1}\(c.maxLength)", default: []].append(c) }
        XCTAssertTrue(cases.contains { $0.instructionGiven == "" }, "the fixture has an explicitly empty instruction")
        for group in groups.values {
            let first = group[0]
            let input = Data(group.map { "{\"text\": \(Self.json($0.document))}" }.joined(separator: "\n").utf8)
            var flags = ["--query", first.query, "--max-length", "\(first.maxLength)"]
            if let instruction = first.instructionGiven { flags += ["--instruction", instruction] }
            let local = try CLITests.run(["score", "--model", Fixtures.tinyModel.path, "--precision", "int8"] + flags + ["-"], stdin: input)
            let remote = try CLITests.run(["rerank", "--server", "127.0.0.1:\(port)"] + flags + ["-"], stdin: input)
            XCTAssertEqual(local.status, 0, local.stderr)
            XCTAssertEqual(remote.status, 0, remote.stderr)
            var body: [String: Any] = ["query": first.query, "documents": group.map(\.document), "max_length": first.maxLength]
            if let instruction = first.instructionGiven { body["instruction"] = instruction }
            let http = try Self.post(port: httpPort, "/v2/rerank", try JSONSerialization.data(withJSONObject: body))
            let scoreLogits = Self.logits(local.stdout), rerankLogits = Self.logits(remote.stdout)
            var httpLogits = [Float](repeating: .nan, count: group.count)
            for r in (http["results"] as? [[String: Any]]) ?? [] {
                httpLogits[(r["index"] as! NSNumber).intValue] = (r["logit"] as! NSNumber).floatValue
            }
            let what = "query \(first.query.debugDescription), instruction \(first.instructionGiven.debugDescription)"
            XCTAssertEqual(scoreLogits.count, group.count, what)
            XCTAssertEqual(rerankLogits, scoreLogits, "sift rerank vs sift score: \(what)")
            XCTAssertEqual(httpLogits, scoreLogits, "HTTP vs sift score: \(what)")
            // Given instructions ("" included): fp32 matches the reference (ParityTests covers the rest).
            if first.instructionGiven != nil {
                let fp32 = try CLITests.run(["score", "--model", Fixtures.tinyModel.path, "--precision", "fp32"] + flags + ["-"], stdin: input)
                XCTAssertEqual(Self.logits(fp32.stdout).count, group.count, fp32.stderr)
                for (got, c) in zip(Self.logits(fp32.stdout), group) {
                    XCTAssertEqual(Double(got), c.logitDiff, accuracy: 1e-3, "fp32 vs the reference: \(c.id)")
                }
            }
        }
    }

    static func logits(_ stdout: String) -> [Float] {
        let root = (try? JSONSerialization.jsonObject(with: Data(stdout.utf8))) as? [String: Any]
        return ((root?["results"] as? [[String: Any]]) ?? []).map { ($0["logit"] as! NSNumber).floatValue }
    }

    static func json(_ s: String) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: s, options: .fragmentsAllowed), as: UTF8.self)
    }

    /// POST a JSON body to 127.0.0.1 and parse the JSON answer (URLSession, no keep-alive needed).
    static func post(port: Int, _ path: String, _ body: Data) throws -> [String: Any] {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = "POST"
        request.httpBody = body
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var answer: Data?
        URLSession.shared.dataTask(with: request) { data, _, _ in answer = data; done.signal() }.resume()
        done.wait()
        return (answer.flatMap { try? JSONSerialization.jsonObject(with: $0) } as? [String: Any]) ?? [:]
    }

    /// `sift load` on a terminal redraws a progress line; `--report` writes a self-contained page
    /// with the percentile curve, the timeline and the parameters; a bad report path fails first.
    func testLoadShowsProgressOnATerminalAndWritesAReport() throws {
        let server = try ServerProcess(["--model", Fixtures.tinyModel.path, "--threads", "2"])
        defer { server.process.terminate() }
        let port = try server.port
        _ = try server.wait(for: "model loaded; serving")
        let dir = try Fixtures.temporaryDirectory()
        let page = dir.appendingPathComponent("load.html")
        let corpus = Fixtures.shared.appendingPathComponent("bench/corpus.jsonl").path
        let queries = Fixtures.shared.appendingPathComponent("bench/queries.jsonl").path
        let load = [CLITests.sift.path, "load", "--server", "127.0.0.1:\(port)", "--corpus", corpus, "--queries", queries,
                    "--documents", "2", "--max-tokens-per-document", "32", "--concurrency", "2", "--duration", "2.5",
                    "--report", page.path]
        // script(1) gives the command a terminal, as an operator's shell would.
        let tty = try CLITests.run(["-qfec", load.map { "'\($0)'" }.joined(separator: " "), "/dev/null"],
                                   executable: URL(fileURLWithPath: "/usr/bin/script"))
        XCTAssertEqual(tty.status, 0, tty.stdout + tty.stderr)
        XCTAssertTrue(tty.stdout.contains("\r\u{1B}[K"), tty.stdout)
        XCTAssertTrue(tty.stdout.contains("calls ok, 0 failed"), tty.stdout)
        XCTAssertTrue(tty.stdout.contains("docs/s  p50"), tty.stdout)
        let html = try String(contentsOf: page, encoding: .utf8)
        XCTAssertEqual(html.components(separatedBy: "<svg").count - 1, 3, "percentile curve, calls/s, docs/s (no failure: no chart of them)")
        for text in ["Latency by percentile", "Calls answered per second", "Documents scored per second", "No call failed",
                     "documents per call", "127.0.0.1:\(port)", "<th>p99</th>", "load run "] {
            XCTAssertTrue(html.contains(text), text)
        }
        XCTAssertFalse(html.contains("<script"), "no scripts")
        XCTAssertFalse(html.contains("src=") || html.contains("<link"), "nothing fetched")
        // Without a terminal: no progress line on stderr.
        let plain = try CLITests.run(Array(load.dropFirst()) + ["--json"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertFalse(plain.stderr.contains("calls ok"), plain.stderr)
        // A report folder that does not exist is refused before any load.
        let bad = try CLITests.run(["load", "--server", "127.0.0.1:\(port)", "--corpus", corpus, "--queries", queries,
                                    "--report", "/nonexistent/folder/x.html"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("/nonexistent/folder does not exist"), bad.stderr)
    }

    /// `sift load`'s numbers are honest: a second run is not answered from the first run's scores
    /// (unless asked), and when documents do come from the score cache the summary and the report
    /// say so; a one-call run's report shows its call; the benchmark texts are found from any
    /// folder.
    func testLoadTellsTheTruthAboutTheScoreCache() throws {
        let server = try ServerProcess(["--model", Fixtures.tinyModel.path, "--threads", "2"])
        defer { server.process.terminate() }
        let port = try server.port
        _ = try server.wait(for: "model loaded; serving")
        let dir = try Fixtures.temporaryDirectory()
        func load(_ extra: [String]) throws -> [String: Any] {
            // From another folder, without --corpus or --queries: found beside the checkout.
            let p = Process()
            p.executableURL = CLITests.sift
            p.arguments = ["load", "--server", "127.0.0.1:\(port)", "--documents", "4", "--max-tokens-per-document", "16",
                           "--requests", "10", "--concurrency", "2", "--json"] + extra
            p.currentDirectoryURL = URL(fileURLWithPath: "/")
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0)
            return try JSONSerialization.jsonObject(with: data) as! [String: Any]
        }
        let first = try load([]), second = try load([])
        XCTAssertEqual(first["cached_documents"] as? Int, 0)
        XCTAssertEqual(second["cached_documents"] as? Int, 0, "a second run was answered from the first one's scores")
        _ = try load(["--reuse-scores"])
        let report = dir.appendingPathComponent("cached.html")
        let reused = try load(["--reuse-scores", "--report", report.path])
        XCTAssertEqual(reused["cached_documents"] as? Int, 40)
        let html = try String(contentsOf: report, encoding: .utf8)
        XCTAssertTrue(html.contains("class=\"warn\"") && html.contains("40 of 40 documents"), html)
        // One call: listed, with its latency, not an empty chart.
        let one = dir.appendingPathComponent("one.html")
        _ = try load(["--requests", "1", "--report", one.path])
        let page = try String(contentsOf: one, encoding: .utf8)
        XCTAssertTrue(page.contains("<h2>Calls</h2>") && page.contains("<td>OK</td>"), page)
        XCTAssertTrue(page.contains("1 successful call"), page)
    }

    /// Two models behind one port: each call goes to the model it names (or the default), an
    /// unknown name is NOT_FOUND naming the models, a repeated call is answered from the score
    /// cache with the same bits, and a cached score never answers for the other model.
    func testSeveralModelsAreRoutedByNameAndRepeatedCallsComeFromTheScoreCache() async throws {
        let tiny = Fixtures.tinyModel.path
        let server = try ServerProcess(["--model", "small=\(tiny)", "--model", "large=\(tiny)", "--model-alias", "rerank-v3.5=large",
                                        "--threads", "2", "--metrics-port", "0", "--score-cache-mb", "1"])
        defer { server.process.terminate() }
        let port = try server.port
        let log = try server.wait(for: "models loaded; serving")
        XCTAssertTrue(log.contains("small (default), large (also: rerank-v3.5)"), log)
        let metricsPort = Int(log.components(separatedBy: "metrics=http://127.0.0.1:")[1].prefix { $0.isNumber })!
        let c = try await SiftConnection.connect(host: "127.0.0.1", port: port)
        var id: UInt64 = 0
        func rerank(_ model: String) async throws -> Wire.Body {
            var request = Wire.RerankRequest(query: "What is the capital of China?",
                                             documents: ["The capital of China is Beijing.", "Gravity pulls.", "Paris is in France."])
            request.model = model
            id += 1
            return try await c.call(.rerankRequest(request))
        }
        guard case .rerankResponse(let first) = try await rerank("rerank-v3.5") else { return XCTFail("no answer") }
        XCTAssertEqual(first.modelID, "large")
        XCTAssertEqual(first.usage.cachedDocuments, 0)
        guard case .rerankResponse(let again) = try await rerank("large") else { return XCTFail("no answer") }
        XCTAssertEqual(again.usage.cachedDocuments, 3)
        XCTAssertEqual(again.results.map(\.logit.bitPattern), first.results.map(\.logit.bitPattern))
        XCTAssertEqual(again.usage.documentTokens, first.usage.documentTokens)
        guard case .rerankResponse(let other) = try await rerank("") else { return XCTFail("no answer") }
        XCTAssertEqual(other.modelID, "small")
        XCTAssertEqual(other.usage.cachedDocuments, 0, "a score cached for one model answered for another")
        do {
            _ = try await rerank("rerank-english-v3.0")
            XCTFail("an unknown model name was served")
        } catch let missing as Wire.Status {
            XCTAssertEqual(missing.code, .notFound)
            XCTAssertTrue(missing.message.contains("small (default), large"), missing.message)
        }
        guard case .modelInfoResponse(let info) = try await c.call(.modelInfoRequest()) else { return XCTFail("no model info") }
        XCTAssertEqual(info.models.map(\.name), ["small", "large"])
        // The client command names a model too.
        let input = Data(#"{"text": "Beijing."}"#.utf8)
        let cli = try CLITests.run(["rerank", "--server", "127.0.0.1:\(port)", "--model", "large", "--query", "q", "-"], stdin: input)
        XCTAssertEqual(cli.status, 0, cli.stderr)
        let refused = try CLITests.run(["rerank", "--server", "127.0.0.1:\(port)", "--model", "nope", "--query", "q", "-"], stdin: input)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("NOT_FOUND"), refused.stderr)
        let metrics = try String(contentsOf: URL(string: "http://127.0.0.1:\(metricsPort)/metrics")!, encoding: .utf8)
        for expected in [#"sift_documents_total{model="large"} 7"#, #"sift_documents_total{model="small"} 3"#,
                         #"sift_cached_documents_total{model="large"} 3"#, #"sift_score_cache_budget_bytes 1048576"#,
                         #"sift_requests_total{method="rerank",code="NOT_FOUND",model=""} 2"#] {
            XCTAssertTrue(metrics.contains(expected), "\(expected) missing:\n\(metrics)")
        }
        XCTAssertTrue(metrics.contains(#"sift_engine_steps{model="small"}"#), metrics)
        XCTAssertTrue(server.text.contains("model=large"), server.text)
    }

    func testBadFlagsAndModelsFailWithOneLine() throws {
        var r = try CLITests.run(["serve", "--model", "/nonexistent", "--port", "0"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("sift: error:"), r.stderr)
        r = try CLITests.run(["serve", "--model", Fixtures.tinyModel.path, "--port", "70000"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--port 70000 is not a port"), r.stderr)
        let keys = try Fixtures.temporaryDirectory().appendingPathComponent("keys")
        try "# no keys\n".write(to: keys, atomically: true, encoding: .utf8)
        r = try CLITests.run(["serve", "--model", Fixtures.tinyModel.path, "--port", "0", "--api-key-file", keys.path])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("holds no key"), r.stderr)
        let tiny = Fixtures.tinyModel.path
        r = try CLITests.run(["serve", "--model", "a=\(tiny)", "--model-alias", "rerank-v3.5=b", "--port", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("no model is named b; the models are a"), r.stderr)
        r = try CLITests.run(["serve", "--model", "a=\(tiny)", "--model", "A=\(tiny)", "--port", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("is given to both"), r.stderr)
        r = try CLITests.run(["serve", "--model", tiny, "--port", "0", "--interactive-tokens=-1"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--interactive-tokens must not be negative"), r.stderr)
        r = try CLITests.run(["serve", "--model", tiny, "--port", "0", "--aging-seconds", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--aging-seconds must be positive"), r.stderr)
    }

    /// SIGHUP killed the server at once (exit 129). It now reloads the key file: the new key
    /// works, the old one no longer does; a key file that no longer reads keeps the old keys.
    func testSIGHUPReloadsTheKeysAndNeverKills() async throws {
        let keys = try Fixtures.temporaryDirectory().appendingPathComponent("keys")
        try "old-key-0123456789abcdef\n".write(to: keys, atomically: true, encoding: .utf8)
        let server = try ServerProcess(["--model", Fixtures.tinyModel.path, "--threads", "2", "--api-key-file", keys.path])
        defer { if server.process.isRunning { server.process.terminate() } }
        let port = try server.port
        _ = try server.wait(for: "model loaded; serving")
        func status(_ key: String) async throws -> Wire.Code {
            let c = try await SiftConnection.connect(host: "127.0.0.1", port: port)
            defer { Task { await c.close() } }
            do {
                _ = try await c.call(.modelInfoRequest(), metadata: [Wire.MetadataEntry("authorization", "Bearer \(key)")])
                return .ok
            } catch let s as Wire.Status { return s.code }
        }
        let oldBefore = try await status("old-key-0123456789abcdef")
        XCTAssertEqual(oldBefore, .ok)
        try "new-key-0123456789abcdef\n".write(to: keys, atomically: true, encoding: .utf8)
        kill(server.process.processIdentifier, SIGHUP)
        _ = try server.wait(for: "API keys reloaded")
        let newKey = try await status("new-key-0123456789abcdef"), oldKey = try await status("old-key-0123456789abcdef")
        XCTAssertEqual(newKey, .ok)
        XCTAssertEqual(oldKey, .unauthenticated)
        // A broken file: the keys in force stay, the log says why, and the key is not echoed.
        try "zq7x\n".write(to: keys, atomically: true, encoding: .utf8)
        kill(server.process.processIdentifier, SIGHUP)
        let log = try server.wait(for: "API keys not reloaded")
        XCTAssertFalse(log.contains("zq7"), log)
        let stillNew = try await status("new-key-0123456789abcdef")
        XCTAssertEqual(stillNew, .ok)
        XCTAssertTrue(server.process.isRunning)
        kill(server.process.processIdentifier, SIGTERM)
        server.process.waitUntilExit()
        XCTAssertEqual(server.process.terminationStatus, 0, server.text)
    }
}
