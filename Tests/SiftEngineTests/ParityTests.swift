import Foundation
import Qwen3
import SiftEngine
import SiftTestSupport
import XCTest

/// Scores against Hugging Face transformers (float32) on the shared fixtures.
final class ParityTests: XCTestCase {
    func testFloat32MatchesTheReferenceOnTheTinyModel() async throws {
        let reranker = try RerankerModel.load(directory: Fixtures.tinyModel)
        XCTAssertEqual(reranker.yesID, 9693)
        XCTAssertEqual(reranker.noID, 2152)
        try await checkParity(reranker, cases: try Fixtures.referenceCases(), tolerance: 1e-3)
    }

    /// The real 0.6B shape (28 layers, GQA 16/8, head_dim 128). Needs the model that
    /// `make_model.py --preset 0.6b --seed 0 --outliers` writes; CI generates it.
    func testFloat32MatchesTheReferenceOnThe06BShape() async throws {
        guard let dir = Fixtures.model06B else {
            print("SKIPPED testFloat32MatchesTheReferenceOnThe06BShape: no 0.6B model; run scripts/make-test-models.sh or set SIFT_MODEL_06B")
            throw XCTSkip("0.6B model absent (scripts/make-test-models.sh makes it)")
        }
        let reranker = try RerankerModel.load(directory: dir)
        try await checkParity(reranker, cases: try Fixtures.referenceCases("reference-scores-0.6b.json"), tolerance: 1e-3)
    }

    private func checkParity(_ reranker: RerankerModel, cases: [Fixtures.ReferenceCase], tolerance: Double) async throws {
        var worst = 0.0
        for c in cases {
            let result = try await reranker.scored(query: c.query, instruction: c.instructionGiven, documents: [c.document],
                                            maxLength: c.maxLength)[0]
            XCTAssertEqual(result.inputTokens, c.inputIDs.count, c.id)
            XCTAssertEqual(result.truncated, c.truncated, c.id)
            let delta = abs(Double(result.logit) - c.logitDiff)
            worst = max(worst, delta)
            XCTAssertLessThanOrEqual(delta, tolerance, "\(c.id): logit \(result.logit), reference \(c.logitDiff)")
        }
        print("parity: \(cases.count) cases, max |Δlogit| = \(worst)")
    }

    /// Several documents in one call score as each alone (the prefix KV is shared): exactly on
    /// the int8 path (every kernel is Sift's own, row by row); on the fp32 reference path within
    /// 1e-5, OpenBLAS's sgemm summing a row differently as a call's row count changes.
    func testBatchOfDocumentsEqualsSingleCalls() async throws {
        let docs = ["The capital of China is Beijing.", "", "Gravity is a force.", String(repeating: "long text ", count: 300)]
        for precision in [Precision.int8, .fp32] {
            let reranker = try RerankerModel.load(directory: Fixtures.tinyModel, precision: precision)
            let together = try await reranker.scored(query: "What is the capital of China?", documents: docs)
            for (i, d) in docs.enumerated() {
                let alone = try await reranker.scored(query: "What is the capital of China?", documents: [d])[0]
                if precision == .int8 {
                    XCTAssertEqual(together[i].logit.bitPattern, alone.logit.bitPattern, "document \(i)")
                } else {
                    XCTAssertEqual(together[i].logit, alone.logit, accuracy: 1e-5, "document \(i)")
                }
                XCTAssertEqual(together[i].index, i)
            }
            let prompt = try RerankPrompt(tokenizer: reranker.tokenizer, query: "What is the capital of China?", instruction: nil)
            XCTAssertEqual(together[1].tokens, 1)  // " "
            XCTAssertEqual(together[1].inputTokens, prompt.prefix.count + 1 + prompt.suffix.count)
        }
    }

    func testEmptyDocumentIsScored() async throws {
        let reranker = try RerankerModel.load(directory: Fixtures.tinyModel)
        let r = try await reranker.scored(query: "q", instruction: nil, documents: [""])[0]
        XCTAssertTrue(r.logit.isFinite)
        XCTAssertEqual(r.probability, sigmoid(r.logit))
    }
}
