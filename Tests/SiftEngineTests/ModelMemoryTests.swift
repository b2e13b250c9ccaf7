import Foundation
import Qwen3
import SiftEngine
import SiftTestSupport
import XCTest

/// `sift serve` with several models checks, before loading any, that they fit together.
final class ModelMemoryTests: XCTestCase {
    func testModelsThatDoNotFitTogetherAreRefusedWithEachOnesShare() throws {
        let models = [(name: "small", bytes: 800_000_000), (name: "large", bytes: 8_800_000_000)]
        XCTAssertThrowsError(try RerankerModel.checkTheyFit(models, available: 6_000_000_000, precision: .int8)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("the models need 9.6 GB together (small 0.8 GB, large 8.8 GB)"), text)
            XCTAssertTrue(text.contains("only 6.0 GB of memory is available"), text)
        }
        XCTAssertNoThrow(try RerankerModel.checkTheyFit(models, available: 20_000_000_000, precision: .int8))
        XCTAssertNoThrow(try RerankerModel.checkTheyFit(models, available: nil, precision: .int8))
    }

    func testTheEstimateReadsHeadersOnly() throws {
        let int8 = try RerankerModel.residentBytesEstimate(path: Fixtures.tinyModel.path, precision: .int8)
        let fp32 = try RerankerModel.residentBytesEstimate(path: Fixtures.tinyModel.path, precision: .fp32)
        XCTAssertGreaterThan(int8, 0)
        XCTAssertGreaterThan(fp32, int8)
        XCTAssertThrowsError(try RerankerModel.residentBytesEstimate(path: "/nonexistent-model", precision: .int8))
    }
}
