import Foundation
import SiftTestSupport
import XCTest

/// Every input a fuzzer ever crashed on (Tests/FuzzRegressions/TARGET/) and every seed goes
/// through its target again, in the normal build of `sift-fuzz`, on every test run.
final class FuzzRegressionTests: XCTestCase {
    static let fuzz = CLITests.sift.deletingLastPathComponent().appendingPathComponent("sift-fuzz")

    func testRegressionInputsAndSeedsReplayWithoutACrash() throws {
        let seeds = try Fixtures.temporaryDirectory()
        XCTAssertEqual(try CLITests.run(["seeds", seeds.path], executable: Self.fuzz).status, 0)
        let regressions = Fixtures.packageRoot.appendingPathComponent("Tests/FuzzRegressions")
        for target in ["frames", "http", "safetensors", "sift", "hub", "tokenizer", "tokenizer-file"] {
            var inputs = [seeds.appendingPathComponent(target).path]
            let dir = regressions.appendingPathComponent(target)
            if FileManager.default.fileExists(atPath: dir.path) { inputs.append(dir.path) }
            let r = try CLITests.run([target] + inputs, executable: Self.fuzz)
            XCTAssertEqual(r.status, 0, "\(target): \(r.stderr.suffix(2000))")
            XCTAssertTrue(r.stdout.contains("no crash"), r.stdout)
        }
    }
}
