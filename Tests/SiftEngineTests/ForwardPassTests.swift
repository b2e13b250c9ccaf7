import Qwen3
import SiftEngine
import SiftTestSupport
import XCTest

/// A step run a sublayer (half a layer: attention or MLP) at a time gives exactly what an uninterrupted step gives,
/// whatever runs between its sublayers and whichever of its sequences leave it midway.
final class ForwardPassTests: XCTestCase {
    static let tokenizer = try! Tokenizer.load(directory: Fixtures.tinyModel)
    static let model: Qwen3Model = {
        let checkpoint = try! Qwen3Checkpoint(directory: Fixtures.tinyModel)
        return try! Qwen3Model(checkpoint: checkpoint, yesID: 9693, noID: 2152, precision: .int8, threads: 2,
                               calibrationTokens: RerankerModel.calibrationTokens(tokenizer))
    }()

    let texts = ["The capital of China is Beijing.", "Gravity draws objects toward a planet's center.",
                 String(repeating: "A longer passage about many different things. ", count: 12)]

    func sequences(_ texts: [String]) -> [[Int32]] { texts.map { Self.tokenizer.encode($0) } }

    /// Hidden states of each sequence run alone, from an empty cache.
    func alone(_ tokens: [[Int32]]) throws -> [[Float]] {
        try tokens.map { try Self.model.forward($0, cache: Self.model.makeCache(), wantHidden: true)! }
    }

    func batch(_ tokens: [[Int32]]) -> [Qwen3Model.BatchItem] {
        tokens.map { Qwen3Model.BatchItem(tokens: $0[...], cache: Self.model.makeCache(), wantHidden: true) }
    }

    func testStepsRunBetweenTheSublayersOfAnotherChangeNeitherResult() throws {
        let outer = sequences(texts), inner = sequences(["What is gravity?", "Beijing"])
        let expectedOuter = try alone(outer), expectedInner = try alone(inner)
        let pass = try ForwardPass(model: Self.model, batch: batch(outer))
        XCTAssertEqual(pass.sublayerCount, 2 * Self.model.config.layerCount)
        while !pass.isComplete {
            pass.runSublayer()
            // Between every two sublayers, even inside the last layer (nothing is dropped there).
            if !pass.isComplete { XCTAssertEqual(try Self.model.forward(batch(inner)), expectedInner) }
        }
        XCTAssertEqual(pass.finish(), expectedOuter)
    }

    func testDroppedSequencesLeaveTheOthersBitIdentical() throws {
        let tokens = sequences(texts + ["Paris is the capital of France."])
        let expected = try alone(tokens)
        let sublayers = 2 * Self.model.config.layerCount
        for dropAfter in 1..<(sublayers - 1) {
            let items = batch(tokens)
            let pass = try ForwardPass(model: Self.model, batch: items)
            while !pass.isComplete {
                pass.runSublayer()
                XCTAssertEqual(pass.canDrop, pass.sublayersDone < sublayers - 1)
                if pass.sublayersDone == dropAfter { XCTAssertEqual(pass.drop([0, 2]), tokens[0].count + tokens[2].count) }
            }
            let out = pass.finish()
            XCTAssertNil(out[0])
            XCTAssertNil(out[2])
            XCTAssertEqual(out[1], expected[1], "after sublayer \(dropAfter)")
            XCTAssertEqual(out[3], expected[3], "after sublayer \(dropAfter)")
            // The survivors' K/V were committed; the dropped ones' were not.
            XCTAssertEqual(items[1].cache.count, tokens[1].count)
            XCTAssertEqual(items[0].cache.count, 0)
        }
    }

    func testDroppingEverySequenceEndsTheStep() throws {
        let pass = try ForwardPass(model: Self.model, batch: batch(sequences(texts)))
        pass.runSublayer()
        pass.drop([0, 1, 2])
        XCTAssertTrue(pass.isComplete)
        XCTAssertEqual(pass.finish(), [nil, nil, nil])
    }
}
