import Foundation
import Qwen3
@testable import SiftEngine
import SiftTestSupport
import XCTest

/// The full fidelity benchmark takes hours: a run that is stopped must resume where it was, with
/// the same logits as a run that never stopped.
final class FidelityRunTests: XCTestCase {
    func testAStoppedRunResumesWithTheSameLogits() async throws {
        let dir = Fixtures.tinyModel
        let bench = Fixtures.shared.appendingPathComponent("bench")
        let corpus = try Fixtures.jsonLines(bench.appendingPathComponent("corpus.jsonl")).compactMap { $0["text"] as? String }
        let queries = try Fixtures.jsonLines(bench.appendingPathComponent("queries.jsonl")).compactMap { $0["text"] as? String }
        var shape = FidelityPlan.Shape()
        (shape.shortQueries, shape.shortDocuments, shape.longQueries, shape.longDocuments, shape.veryLong) = (3, 2, 0, 0, [])
        let plan = FidelityPlan.make(corpus: corpus, queries: queries, tokenizer: try Tokenizer.load(directory: dir), shape: shape, salt: 0)
        XCTAssertEqual(plan.pairs, 6)
        let cache = try Fixtures.temporaryDirectory()
        let modes = [FidelityMode("int8+int8")!, FidelityMode("int8row")!]

        func run() async throws -> (records: [FidelityRecord], log: [String]) {
            var log: [String] = []
            let records = try await FidelityRun.score(directory: dir, model: 0, plan: plan, modes: modes, threads: 2,
                                                      referenceCache: cache, modeCache: cache, progress: { log.append($0) })
            return (records, log)
        }
        func logits(_ records: [FidelityRecord]) -> [[Double]] {
            records.map { r in [r.reference] + modes.map { r.logits[$0.description]! } }
        }

        let first = try await run()
        XCTAssertEqual(first.records.count, 6)
        XCTAssertEqual(first.log.filter { $0.contains("scored 6 pairs") }.count, 3, first.log.joined(separator: "\n"))

        // Whole: nothing is scored again, not even a model loaded.
        let second = try await run()
        XCTAssertEqual(logits(second.records), logits(first.records))
        XCTAssertFalse(second.log.contains { $0.contains("loaded") }, second.log.joined(separator: "\n"))

        // Stopped after one query of int8row: only that mode's other queries are scored.
        let file = try FileManager.default.contentsOfDirectory(at: cache, includingPropertiesForKeys: nil)
            .first { $0.lastPathComponent.hasPrefix("fidelity-int8row-") }!
        let stored = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Double])
        let keep = Set(plan.groups[0].documents.map { FidelityRun.pairKey(plan.groups[0].query, $0) })
        try JSONSerialization.data(withJSONObject: stored.filter { keep.contains($0.key) }).write(to: file)
        let third = try await run()
        XCTAssertEqual(logits(third.records), logits(first.records))
        XCTAssertTrue(third.log.contains { $0.contains("int8row scored 4 pairs") && $0.contains("2 kept") }, third.log.joined(separator: "\n"))
        XCTAssertFalse(third.log.contains { $0.contains("reference") }, third.log.joined(separator: "\n"))
    }
}
