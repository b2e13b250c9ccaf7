import Foundation
import Qwen3
import SiftEngine
import SiftTestSupport
import XCTest

/// The fidelity gate of docs/QUANTIZATION.md on a CI-sized set: the default int8 path
/// (`FidelityMode.standard`: a scale per 128 inputs, int8 attention) against the int8 path Sift
/// served before (a scale per row, fp32 attention), paired on the same pairs of the 0.6B-shaped
/// model. The full benchmark
/// (`scripts/bench-fidelity.sh`: three models, ~1,000 pairs up to 32k tokens) is what the
/// closing notes quote; this keeps a regression from landing unseen.
final class FidelityGateTests: XCTestCase {
    func testDefaultInt8PathPassesThePairedGateAgainstThePerRowBaseline() async throws {
        guard let dir = Fixtures.model06B else {
            print("SKIPPED testDefaultInt8PathPassesThePairedGateAgainstThePerRowBaseline: no 0.6B model; run scripts/make-test-models.sh")
            throw XCTSkip("0.6B model absent (scripts/make-test-models.sh makes it)")
        }
        let bench = Fixtures.shared.appendingPathComponent("bench")
        let corpus = try Fixtures.jsonLines(bench.appendingPathComponent("corpus.jsonl")).compactMap { $0["text"] as? String }
        let queries = try Fixtures.jsonLines(bench.appendingPathComponent("queries.jsonl")).compactMap { $0["text"] as? String }
        var shape = FidelityPlan.Shape()
        (shape.shortQueries, shape.shortDocuments) = (5, 12)   // 60 pairs: the short bucket is gated on its own
        (shape.longQueries, shape.longDocuments) = (1, 1)
        let plan = FidelityPlan.make(corpus: corpus, queries: queries, tokenizer: try Tokenizer.load(directory: dir),
                                     shape: shape, salt: 0)
        XCTAssertEqual(plan.groups.filter { $0.bucket == .short }.reduce(0) { $0 + $1.documents.count }, 60)
        XCTAssertTrue(plan.groups.contains { $0.bucket == .long }, "the plan has no 2k–8k pairs")

        let (candidate, baseline) = (FidelityMode.standard, FidelityMode.perRowBaseline)
        let records = try await FidelityRun.score(
            directory: dir, model: 0, plan: plan, modes: [candidate, baseline], threads: WorkerPool.defaultThreadCount,
            referenceCache: Fixtures.packageRoot.appendingPathComponent(".build-models/fidelity-cache"), progress: { print($0) })
        XCTAssertEqual(records.count, plan.pairs)
        print(FidelityReport.table(records, modes: [candidate.description, baseline.description]))
        let gate = FidelityReport.gate(records, candidate: candidate.description, baseline: baseline.description)
        for line in gate.lines { print("gate: " + line) }
        XCTAssertTrue(gate.passed, gate.lines.filter { $0.hasPrefix("FAIL") }.joined(separator: "\n"))
    }
}
