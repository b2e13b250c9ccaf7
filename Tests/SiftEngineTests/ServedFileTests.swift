import Foundation
import Qwen3
@testable import SiftEngine
import SiftTestSupport
import XCTest

/// The engine around what can go wrong with its inputs and its model file: calls that can
/// never run are refused from their size, and a served `.sift` changed under the engine is an
/// error, never a SIGBUS or silently different weights.
final class ServedFileTests: XCTestCase {
    /// A call whose query cannot fit `max_length` whatever its tokens is refused before it
    /// holds any room in the queue (the probe's 15 MiB queries held half of it each).
    func testACallThatCanNeverRunHoldsNothing() throws {
        let engine = SiftEngine(reranker: EngineLimitsTests.reranker, options: { var o = EngineOptions(); o.maxRequestTokens = 10_000; return o }())
        defer { engine.shutdown() }
        let huge = String(repeating: "why ", count: (15 << 20) / 4)
        XCTAssertThrowsError(try engine.admit(RerankRequest(query: huge, documents: ["a"]))) { error in
            let e = error as! EngineError
            XCTAssertEqual(e.code, .invalidArgument)
            XCTAssertTrue(e.message.contains("more than max_length"), e.message)
        }
        // Documents whose bytes alone pass what one call may queue: refused the same way.
        let many = (0..<1000).map { _ in String(repeating: "x", count: 20_000) }
        XCTAssertThrowsError(try engine.admit(RerankRequest(query: "q", documents: many, maxTokensPerDocument: 8000))) { error in
            XCTAssertTrue((error as! EngineError).message.contains("at least"), "\(error)")
        }
        XCTAssertEqual(engine.stats.queuedTokens, 0)
    }

    /// A call admitted on an estimate stops being tokenized once it passes the limit (it no
    /// longer holds its room while all of it is tokenized).
    func testTokenizingStopsOnceACallPassesTheLimit() async throws {
        let engine = SiftEngine(reranker: EngineLimitsTests.reranker, options: { var o = EngineOptions(); o.maxRequestTokens = 2000; return o }())
        defer { engine.shutdown() }
        // ~500 tokens each: the fourth document passes 2,000.
        let documents = (0..<200).map { EngineLimitsTests.words(500, $0) }
        do {
            _ = try await engine.rerank(RerankRequest(query: "q", documents: documents))
            XCTFail("not refused")
        } catch let e as EngineError {
            XCTAssertEqual(e.code, .invalidArgument)
            XCTAssertTrue(e.message.contains("at most 2000"), e.message)
        }
        XCTAssertEqual(engine.stats.queuedTokens, 0)
    }

    static func writeSift(to url: URL) throws -> RerankerModel {
        let direct = try RerankerModel.load(directory: Fixtures.tinyModel, precision: .int8)
        let json = try Data(contentsOf: Fixtures.tinyModel.appendingPathComponent("tokenizer.json"))
        try SiftFile.write(model: direct.model, tokenizerJSON: json, yesID: direct.yesID, noID: direct.noID, to: url)
        return direct
    }

    /// Copying a new model onto the served file truncates it first: the next call touching the
    /// mapped weights died of SIGBUS. Now the change is seen first and every call fails with a
    /// message saying what to do.
    func testAServedFileChangedInPlaceIsAnErrorNotACrash() async throws {
        let dir = try Fixtures.temporaryDirectory()
        let file = dir.appendingPathComponent("served.sift")
        _ = try Self.writeSift(to: file)
        let engine = SiftEngine(reranker: try RerankerModel.load(path: file.path))
        defer { engine.shutdown() }
        let before = try await engine.rerank(RerankRequest(query: "q", documents: ["a document"]))
        XCTAssertNil(engine.fault)
        XCTAssertEqual(truncate(file.path, 4096), 0)  // what `cp new.sift served.sift` does first
        do {
            _ = try await engine.rerank(RerankRequest(query: "q", documents: ["another document"]))
            XCTFail("a call ran on a truncated model file")
        } catch let e as EngineError {
            XCTAssertEqual(e.code, .unavailable)
            XCTAssertTrue(e.message.contains("truncated") && e.message.contains("renaming"), e.message)
        }
        XCTAssertNotNil(engine.fault)
        XCTAssertEqual(before.results.count, 1)
    }

    /// Replacing the served file by renaming a new one over it (the documented way) is safe:
    /// the engine keeps the file it mapped and answers the same scores.
    func testAServedFileReplacedByRenameKeepsServing() async throws {
        let dir = try Fixtures.temporaryDirectory()
        let file = dir.appendingPathComponent("served.sift")
        _ = try Self.writeSift(to: file)
        let engine = SiftEngine(reranker: try RerankerModel.load(path: file.path))
        defer { engine.shutdown() }
        let request = RerankRequest(query: "which is the capital?", documents: ["Paris is the capital of France.", "Bananas."])
        let before = try await engine.rerank(request)
        // A new file, written beside it and renamed over it (as `sift convert --out` does).
        _ = try Self.writeSift(to: file)
        let after = try await engine.rerank(request)
        XCTAssertEqual(before.results.map(\.logit), after.results.map(\.logit))
        XCTAssertNil(engine.fault)
    }
}
