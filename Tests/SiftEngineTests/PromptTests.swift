import Foundation
import Qwen3
import SiftEngine
import SiftTestSupport
import XCTest

final class PromptTests: XCTestCase {
    static let tokenizer = try! Tokenizer.load(directory: Fixtures.tokenizerDir)

    /// prefix + document + suffix equals the reference's full input ids (truncation included),
    /// and the prefix/document split tokenizes exactly like the whole text.
    func testThreePartsEqualTheReferenceInputOnEveryCase() throws {
        let tok = Self.tokenizer
        for c in try Fixtures.referenceCases() {
            let prompt = try RerankPrompt(tokenizer: tok, query: c.query, instruction: c.instructionGiven, maxLength: c.maxLength)
            let (doc, truncated) = prompt.document(c.document, tokenizer: tok)
            XCTAssertEqual(prompt.prefix + doc + prompt.suffix, c.inputIDs, c.id)
            XCTAssertEqual(truncated, c.truncated, c.id)
            // The split property itself, on the untruncated text.
            let instruction = c.instructionGiven ?? RerankPrompt.defaultInstruction
            let whole = tok.encode("<Instruct>: \(instruction)\n<Query>: \(c.query)\n<Document>: \(c.document)")
            let parts = tok.encode("<Instruct>: \(instruction)\n<Query>: \(c.query)\n<Document>:") + tok.encode(" " + c.document)
            XCTAssertEqual(parts, whole, c.id)
        }
    }

    func testQueryLongerThanMaxLengthIsAClearError() {
        XCTAssertThrowsError(try RerankPrompt(tokenizer: Self.tokenizer, query: String(repeating: "word ", count: 200),
                                              instruction: nil, maxLength: 64)) { error in
            XCTAssertTrue("\(error)".contains("max_length 64"), "\(error)")
        }
    }

    func testEmptyInstructionIsUsedAsIs() throws {
        let withEmpty = try RerankPrompt(tokenizer: Self.tokenizer, query: "q", instruction: "")
        let withDefault = try RerankPrompt(tokenizer: Self.tokenizer, query: "q", instruction: nil)
        XCTAssertLessThan(withEmpty.prefix.count, withDefault.prefix.count)
    }
}
