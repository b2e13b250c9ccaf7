import Foundation
import XCTest
@testable import Qwen3
import SiftTestSupport

final class TokenizerTests: XCTestCase {
    static let tokenizer: Tokenizer = try! Tokenizer.load(directory: Fixtures.tokenizerDir)

    /// Every case of tokenizer-cases.jsonl (made by Hugging Face `tokenizers`), id for id.
    func testReproducesEveryReferenceCase() throws {
        let cases = try Fixtures.jsonLines(Fixtures.fixtures.appendingPathComponent("tokenizer-cases.jsonl"))
        XCTAssertGreaterThan(cases.count, 300)
        var failures = 0
        for (line, c) in cases.enumerated() {
            let text = c["text"] as! String
            let expected = (c["ids"] as! [NSNumber]).map { $0.int32Value }
            let got = Self.tokenizer.encode(text)
            if got != expected {
                failures += 1
                let first = zip(got, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                    ?? min(got.count, expected.count)
                let lo = max(0, first - 3)
                XCTFail("""
                    line \(line + 1): \(text.debugDescription.prefix(120))
                      first difference at token \(first)
                      expected \(expected[lo..<min(expected.count, first + 4)])
                      got      \(got[lo..<min(got.count, first + 4)])
                    """)
                if failures > 10 { break }
            }
            XCTAssertEqual(Self.tokenizer.decode(expected), c["decoded"] as! String, "decode, line \(line + 1)")
        }
    }

    func testFallbackVocabAndMergesGiveTheSameIds() throws {
        let dir = Fixtures.tokenizerDir
        let fallback = try Tokenizer.load(vocabJSON: dir.appendingPathComponent("vocab.json"),
                                          mergesTXT: dir.appendingPathComponent("merges.txt"),
                                          tokenizerConfig: dir.appendingPathComponent("tokenizer_config.json"))
        XCTAssertEqual(fallback.vocabularySize, Self.tokenizer.vocabularySize)
        let text = "<|im_start|>system\nHello, wörld! 12345 — naïve café \u{212B} <think>\n\n</think>\n\n"
        XCTAssertEqual(fallback.encode(text), Self.tokenizer.encode(text))
    }

    func testYesAndNoAreSingleTokens() {
        XCTAssertEqual(Self.tokenizer.tokenID("yes"), 9693)
        XCTAssertEqual(Self.tokenizer.tokenID("no"), 2152)
        XCTAssertNil(Self.tokenizer.tokenID("definitely-not-a-token-xyz"))
    }

    func testLongRunsAreLinearAndExact() {
        // A 20k-letter word is one pre-token: BPE must not go quadratic or lose bytes.
        let word = String(repeating: "ab", count: 10_000)
        let ids = Self.tokenizer.encode(word)
        XCTAssertEqual(Self.tokenizer.decode(ids), word)
    }

    func testMissingTokenizerFilesNameTheDirectory() {
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("sift-empty-\(UUID())")
        try! FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        XCTAssertThrowsError(try Tokenizer.load(directory: empty)) { error in
            XCTAssertTrue("\(error)".contains(empty.path), "\(error)")
        }
    }
}
