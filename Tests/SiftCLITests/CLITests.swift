import Foundation
import Qwen3
import SiftBase
import SiftTestSupport
import XCTest

/// Runs the real `sift` executable (built next to this test bundle).
final class CLITests: XCTestCase {
    static let sift: URL = {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [dir, dir.deletingLastPathComponent()].map { $0.appendingPathComponent("sift") }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]
    }()

    struct Result { var status: Int32; var stdout: String; var stderr: String }

    func run(_ args: [String], stdin: Data = Data(), env: [String: String] = [:]) throws -> Result {
        try Self.run(args, stdin: stdin, env: env)
    }

    static func run(_ args: [String], stdin: Data = Data(), env: [String: String] = [:], executable: URL = sift) throws -> Result {
        let p = Process()
        p.executableURL = executable
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        let inPipe = Pipe(), outPipe = Pipe(), errPipe = Pipe()
        p.standardInput = inPipe
        p.standardOutput = outPipe
        p.standardError = errPipe
        try p.run()
        inPipe.fileHandleForWriting.write(stdin)
        try inPipe.fileHandleForWriting.close()
        let out = outPipe.fileHandleForReading.readDataToEndOfFile()
        let err = errPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
                      stderr: String(decoding: err, as: UTF8.self))
    }

    let tiny = Fixtures.tinyModel.path

    func testScorePrintsReferenceScoresInInputOrder() throws {
        let cases = Array(try Fixtures.referenceCases().filter { $0.instructionGiven == nil && $0.maxLength == 8192 }
            .filter { $0.query == "What is the capital of China?" })
        XCTAssertGreaterThan(cases.count, 1)
        let input = cases.map { "{\"text\": \(jsonString($0.document))}" }.joined(separator: "\n")
        let r = try run(["score", "--model", tiny, "--query", cases[0].query], stdin: Data(input.utf8))
        XCTAssertEqual(r.status, 0, r.stderr)
        let results = try parseResults(r.stdout)
        XCTAssertEqual(results.map { $0["index"] as! Int }, Array(0..<cases.count))
        for (c, res) in zip(cases, results) {
            XCTAssertEqual((res["logit"] as! NSNumber).doubleValue, c.logitDiff, accuracy: 1e-3, c.id)
            XCTAssertEqual(res["input_tokens"] as! Int, c.inputIDs.count)
            let logit = (res["logit"] as! NSNumber).doubleValue
            XCTAssertEqual((res["score"] as! NSNumber).doubleValue, 1 / (1 + exp(-logit)), accuracy: 1e-6)
        }
    }

    /// OpenBLAS is forced to its generic kernels, then to SkylakeX-class ones where the CPU
    /// has them: the scores must agree (and `sift` re-executes itself onto the fast core).
    func testScoresAgreeAcrossOpenBLASCores() throws {
        let input = Data("{\"text\": \"Beijing is the capital.\"}\n{\"text\": \"Bananas are yellow.\"}\n".utf8)
        let generic = try run(["score", "--model", tiny, "--query", "capital of China?"], stdin: input,
                              env: ["OPENBLAS_CORETYPE": "Prescott"])
        let auto = try run(["score", "--model", tiny, "--query", "capital of China?"], stdin: input)
        XCTAssertEqual(generic.status, 0, generic.stderr)
        XCTAssertEqual(auto.status, 0, auto.stderr)
        for (a, b) in zip(try parseResults(generic.stdout), try parseResults(auto.stdout)) {
            XCTAssertEqual((a["logit"] as! NSNumber).doubleValue, (b["logit"] as! NSNumber).doubleValue, accuracy: 1e-4)
        }
    }

    func testEmptyDocumentIsScoredAndLongOneIsTruncated() throws {
        let long = String(repeating: "word ", count: 500)
        let r = try run(["score", "--model", tiny, "--query", "q", "--max-length", "100"],
                        stdin: Data("{\"text\": \"\"}\n{\"text\": \"\(long)\"}\n".utf8))
        XCTAssertEqual(r.status, 0, r.stderr)
        let results = try parseResults(r.stdout)
        XCTAssertEqual(results[0]["truncated"] as! Bool, false)
        XCTAssertEqual(results[1]["truncated"] as! Bool, true)
        XCTAssertEqual(results[1]["input_tokens"] as! Int, 100)
        // "tokens" is the document's share; the prompt around it is the same for both.
        let prompt = results.map { ($0["input_tokens"] as! Int) - ($0["tokens"] as! Int) }
        XCTAssertEqual(prompt[0], prompt[1])
        XCTAssertLessThan(results[0]["tokens"] as! Int, results[1]["tokens"] as! Int)
    }

    func testInvalidUTF8InInputIsAOneLineError() throws {
        var bad = Data("{\"text\": \"ok\"}\n{\"text\": \"".utf8)
        bad.append(contentsOf: [0xFF, 0xFE])
        bad.append(contentsOf: Array("\"}\n".utf8))
        let r = try run(["score", "--model", tiny, "--query", "q"], stdin: bad)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("stdin:2: invalid UTF-8"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
    }

    func testMalformedJSONLines() throws {
        for (input, message) in [("not json", "not a JSON object"), ("{\"txt\": \"x\"}", "missing string field \"text\"")] {
            let r = try run(["tokenize", "--model", tiny], stdin: Data(input.utf8))
            XCTAssertEqual(r.status, 1)
            XCTAssertTrue(r.stderr.contains(message), r.stderr)
        }
    }

    func testMissingModelFolderIsNamed() throws {
        let r = try run(["score", "--model", "/nonexistent/model", "--query", "q"], stdin: Data("{\"text\": \"x\"}".utf8))
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("/nonexistent/model"), r.stderr)
    }

    /// What `--model` names is checked before any work, and the error names the real cause.
    func testModelArgumentErrorsNameTheRealCause() throws {
        let dir = try Fixtures.temporaryDirectory()
        let sift = dir.appendingPathComponent("model.sift")
        try Data(SiftFile.magic + [UInt8](repeating: 0, count: 64)).write(to: sift)
        let text = dir.appendingPathComponent("notes.txt")
        try Data("not a model".utf8).write(to: text)
        let doc = Data("{\"text\": \"x\"}".utf8)
        let cases: [([String], [String])] = [
            (["score", "--model", "/nonexistent/model", "--query", "q"], ["/nonexistent/model", "no such file or folder"]),
            (["score", "--model", "Qwen/Qwen3-Reranker-0.6B", "--query", "q"], ["not a Hugging Face name", "sift download Qwen/Qwen3-Reranker-0.6B"]),
            (["convert", "--model", sift.path, "--out", dir.path + "/y.sift"], ["is a .sift file", "Hugging Face folder"]),
            // A damaged .sift is named by inspect and tokenize, which take .sift files.
            (["inspect", "--model", sift.path], [sift.path]),
            (["tokenize", "--model", sift.path], [sift.path]),
            (["score", "--model", text.path, "--query", "q"], ["not a .sift file"]),
            // The output folder is checked before minutes of quantizing.
            (["convert", "--model", tiny, "--out", dir.path + "/missing/x.sift"], ["missing", "does not exist"]),
            (["convert", "--model", tiny, "--out", dir.path], ["is a folder"]),
        ]
        for (args, phrases) in cases {
            let r = try run(args, stdin: doc)
            XCTAssertEqual(r.status, 1, "\(args): \(r.stderr)")
            for phrase in phrases { XCTAssertTrue(r.stderr.contains(phrase), "\(args): \(r.stderr)") }
            XCTAssertFalse(r.stderr.contains("quantizing"), "\(args): failed only after starting work")
        }
    }

    /// The same rule as the RPC and HTTP APIs: a reranker needs a query.
    func testEmptyQueryIsRefusedAsOverTheWire() throws {
        let r = try run(["score", "--model", tiny, "--query", ""], stdin: Data("{\"text\": \"x\"}".utf8))
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("--query is empty"), r.stderr)
    }

    /// README's command synopsis lists exactly the flags `--help` does, command by command.
    func testReadmeSynopsisMatchesHelp() throws {
        let readme = try String(contentsOf: Fixtures.packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let start = try XCTUnwrap(readme.range(of: "```\nsift serve"))
        let block = readme[start.lowerBound...].dropFirst(4).prefix { $0 != "`" }
        var listed: [String: Set<String>] = [:]
        var command = ""
        for line in block.split(separator: "\n") {
            if line.hasPrefix("sift ") { command = String(line.split(separator: " ")[1]) }
            for flag in line.matches(of: /--[a-z0-9-]+/) { listed[command, default: []].insert(String(flag.output)) }
        }
        for command in ["serve", "rerank", "download", "load", "score", "tokenize", "convert", "inspect"] {
            let help = try run([command, "--help"], env: ["COLUMNS": "200"]).stdout
            var flags = Set(help.matches(of: /(?m)^  (?:-[a-z], )?(--[a-z0-9-]+)/).map { String($0.output.1) })
            flags.subtract(["--help", "--version"])
            XCTAssertEqual(listed[command] ?? [], flags, "README's synopsis of sift \(command) differs from --help")
        }
    }

    /// Help text wraps at the terminal's width: no paragraph is broken into a short line and a
    /// continuation (hand-wrapped text wrapped again).
    func testHelpWrapsCleanly() throws {
        for command in ["serve", "rerank", "download", "load", "score", "tokenize", "convert", "inspect",
                        "bench engine", "bench prefill", "bench kernels", "bench parity", "bench fidelity"] {
            let help = try run(command.split(separator: " ").map(String.init) + ["--help"], env: ["COLUMNS": "80"]).stdout
            let lines = help.split(separator: "\n", omittingEmptySubsequences: false)
            for (a, b) in zip(lines, lines.dropFirst()) where !a.hasPrefix(" ") && !b.hasPrefix(" ") && !a.isEmpty {
                let continues = b.first.map { $0.isLowercase || $0 == "-" || $0 == "(" } ?? false
                XCTAssertFalse(a.count < 55 && continues && !a.hasSuffix(":") && !a.hasSuffix("."),
                               "sift \(command) --help breaks a paragraph after \"\(a)\"")
            }
            XCTAssertTrue(lines.allSatisfy { $0.count <= 80 || $0.hasPrefix("USAGE:") }, "sift \(command) --help: a line over 80 columns")
            XCTAssertFalse(help.contains("\\\n"), "sift \(command) --help shows a line-continuation backslash")
        }
    }

    /// One version everywhere: `sift --version`, the Python and C clients' packages, the
    /// example's dependency line, the hub user agent (which reads `SiftVersion`).
    func testOneVersionStringEverywhere() throws {
        let root = Fixtures.packageRoot
        let version = SiftVersion.current
        for (file, pattern) in [("Clients/python/pyproject.toml", "version = \"\(version)\""),
                                ("Clients/python/sift_client/__init__.py", "__version__ = \"\(version)\""),
                                ("Clients/c/Makefile", "VERSION := \(version)"),
                                ("Examples/RerankExample/Package.swift", "from: \"\(version)\"")] {
            let text = try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
            XCTAssertTrue(text.contains(pattern), "\(file) does not say \(pattern)")
        }
    }

    func testVersionIsPrinted() throws {
        let r = try run(["--version"])
        XCTAssertEqual(r.status, 0)
        XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), SiftVersion.current)
    }

    /// A safetensors header length of 2^63 or more: exit 1 with a message, not a trap.
    func testHugeSafetensorsHeaderLengthExitsWithAMessage() throws {
        let dir = try Fixtures.temporaryDirectory()
        for name in try FileManager.default.contentsOfDirectory(atPath: tiny) where name != "model.safetensors" {
            try FileManager.default.copyItem(atPath: tiny + "/" + name, toPath: dir.appendingPathComponent(name).path)
        }
        let bytes = withUnsafeBytes(of: (UInt64(1) << 63).littleEndian) { Array($0) } + Array("{}".utf8)
        try Data(bytes).write(to: dir.appendingPathComponent("model.safetensors"))
        for args in [["inspect", "--model", dir.path], ["score", "--model", dir.path, "--query", "q"]] {
            let r = try run(args, stdin: Data("{\"text\": \"x\"}".utf8))
            XCTAssertEqual(r.status, 1, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("header length"), r.stderr)
        }
    }

    func testUnknownOptionIsRejected() throws {
        let r = try run(["score", "--model", tiny, "--query", "q", "--precision", "fp8"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("fp8"), r.stderr)
        // A misspelt option is named (with the option meant), even when a required one is then missing.
        let misspelt = try run(["serve", "--modle", tiny])
        XCTAssertEqual(misspelt.status, 64, misspelt.stderr)
        XCTAssertTrue(misspelt.stderr.contains("Unknown option '--modle'. Did you mean '--model'?"), misspelt.stderr)
        let unknown = try run(["bench", "prefill", "--model", tiny, "--bogus-flag"])
        XCTAssertEqual(unknown.status, 64, unknown.stderr)
        XCTAssertTrue(unknown.stderr.contains("Unknown option '--bogus-flag'. See 'sift bench prefill --help'."), unknown.stderr)
        // A fidelity mode that is not one, or the reference named as a mode: said before any scoring.
        for (modes, said) in [("int8+fp8", "int8+fp8 is not one of"), ("fp32,int8", "fp32 is the reference")] {
            let r = try run(["bench", "fidelity", "--models", tiny, "--modes", modes])
            XCTAssertNotEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stderr.contains(said), r.stderr)
        }
        // Not an option after "--".
        let positional = try run(["score", "--model", tiny, "--query", "q", "--", "--not-an-option"])
        XCTAssertFalse(positional.stderr.contains("Unknown option"), positional.stderr)
    }

    func testTokenizeMatchesTheReferenceTokenizer() throws {
        let cases = try Fixtures.jsonLines(Fixtures.fixtures.appendingPathComponent("tokenizer-cases.jsonl")).prefix(60)
        let input = cases.map { "{\"text\": \(jsonString($0["text"] as! String))}" }.joined(separator: "\n")
        let r = try run(["tokenize", "--model", tiny], stdin: Data(input.utf8))
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, cases.count)
        for (line, c) in zip(lines, cases) {
            let ids = (try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any])["ids"] as! [Int]
            XCTAssertEqual(ids, (c["ids"] as! [NSNumber]).map(\.intValue))
        }
    }

    func testInspectValidatesTheModel() throws {
        let r = try run(["inspect", "--model", tiny])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("status:     OK"), r.stdout)
    }

    /// A `.sift` file is a whole model for `inspect` and `tokenize`, as for `serve` and `score`.
    func testInspectAndTokenizeTakeASiftFile() throws {
        let sift = try Fixtures.temporaryDirectory().appendingPathComponent("tiny.sift")
        XCTAssertEqual(try run(["convert", "--model", tiny, "--out", sift.path]).status, 0)
        let inspected = try run(["inspect", "--model", sift.path])
        XCTAssertEqual(inspected.status, 0, inspected.stderr)
        XCTAssertTrue(inspected.stdout.contains("checksum OK") && inspected.stdout.contains("status:     OK"), inspected.stdout)
        let texts = Data("{\"text\": \"Héllo wörld, 你好 <|im_start|>\"}\n{\"text\": \"x\"}\n".utf8)
        let fromFolder = try run(["tokenize", "--model", tiny], stdin: texts)
        let fromSift = try run(["tokenize", "--model", sift.path], stdin: texts)
        XCTAssertEqual(fromSift.status, 0, fromSift.stderr)
        XCTAssertEqual(fromSift.stdout, fromFolder.stdout)
    }

    /// `inspect` said OK for a tokenizer.json that crashed the loader (an empty added token):
    /// it now checks what loading checks.
    func testInspectChecksTheTokenizerAsLoadingDoes() throws {
        let dir = try Fixtures.temporaryDirectory()
        for name in try FileManager.default.contentsOfDirectory(atPath: tiny) {
            try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent(name), withDestinationURL: Fixtures.tinyModel.appendingPathComponent(name))
        }
        var root = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.tinyModel.appendingPathComponent("tokenizer.json"))) as! [String: Any]
        var added = root["added_tokens"] as! [[String: Any]]
        added[0]["content"] = ""
        root["added_tokens"] = added
        try FileManager.default.removeItem(at: dir.appendingPathComponent("tokenizer.json"))
        try JSONSerialization.data(withJSONObject: root).write(to: dir.appendingPathComponent("tokenizer.json"))
        for command in [["inspect", "--model", dir.path], ["score", "--model", dir.path, "--query", "q"]] {
            let r = try run(command, stdin: Data(#"{"text":"d"}"#.utf8))
            XCTAssertEqual(r.status, 1, "\(command): \(r.stdout)")
            XCTAssertTrue(r.stderr.contains("added token") && r.stderr.contains("is empty"), r.stderr)
        }
    }

    /// `convert` replaced `--out` by remove-then-move: killed at the wrong moment it left no
    /// model. Killed anywhere now, the old file stays whole; the next run cleans up after it.
    func testAKilledConvertLeavesTheOldFileWhole() throws {
        let dir = try Fixtures.temporaryDirectory()
        let out = dir.appendingPathComponent("model.sift")
        XCTAssertEqual(try run(["convert", "--model", tiny, "--out", out.path]).status, 0)
        let old = try Data(contentsOf: out)
        for delay in [0.2, 0.6, 1.0, 1.5] {
            let p = Process()
            p.executableURL = Self.sift
            p.arguments = ["convert", "--model", tiny, "--out", out.path]
            p.standardError = FileHandle.nullDevice
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            Thread.sleep(forTimeInterval: delay)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let now = try Data(contentsOf: out)
            XCTAssertTrue(now == old || (try? SiftFile.open(out.path)) != nil, "after a kill at \(delay) s the model is damaged")
        }
        XCTAssertEqual(try run(["convert", "--model", tiny, "--out", out.path]).status, 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["model.sift"], "a killed run's partial file stayed")
    }

    private func parseResults(_ stdout: String) throws -> [[String: Any]] {
        let root = try JSONSerialization.jsonObject(with: Data(stdout.utf8)) as! [String: Any]
        return root["results"] as! [[String: Any]]
    }

    private func jsonString(_ s: String) -> String {
        let d = try! JSONSerialization.data(withJSONObject: [s])
        return String(decoding: d.dropFirst().dropLast(), as: UTF8.self)
    }
}
