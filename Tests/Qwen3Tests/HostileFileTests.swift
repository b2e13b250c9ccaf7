import Foundation
import XCTest
@testable import Qwen3
import SiftTestSupport

/// Files that arrive from the hub or are written over: a hostile `tokenizer.json` is refused
/// with a message instead of crashing, hanging or allocating without bound, and a `.sift`
/// being written is never half there.
final class HostileFileTests: XCTestCase {
    /// The real Qwen3 tokenizer.json, with its first added token changed by `mutate`.
    static func tokenizerJSON(_ mutate: (inout [String: Any]) -> Void) throws -> Data {
        let url = Fixtures.tokenizerDir.appendingPathComponent("tokenizer.json")
        var root = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var added = root["added_tokens"] as! [[String: Any]]
        mutate(&added[0])
        root["added_tokens"] = added
        return try JSONSerialization.data(withJSONObject: root)
    }

    func load(_ mutate: (inout [String: Any]) -> Void) throws -> Result<Tokenizer, any Error> {
        let data = try Self.tokenizerJSON(mutate)
        return Result { try Tokenizer.load(tokenizerJSONData: data, file: "tokenizer.json") }
    }

    func assertRefused(_ mutate: (inout [String: Any]) -> Void, saying words: String, file: StaticString = #filePath, line: UInt = #line) throws {
        switch try load(mutate) {
        case .success: XCTFail("loaded", file: file, line: line)
        case .failure(let error): XCTAssertTrue("\(error)".contains(words), "\(error)", file: file, line: line)
        }
    }

    /// The probe's four files: an empty added token looped allocating (abort, 3.5 GB), a
    /// negative id trapped, 2^31−1 tried 16 GiB, 2^32+5 was taken as 5.
    func testHostileAddedTokensAreRefused() throws {
        try assertRefused({ $0["content"] = "" }, saying: "is empty")
        try assertRefused({ $0["id"] = -1 }, saying: "valid \"id\"")
        try assertRefused({ $0["id"] = 2_147_483_647 }, saying: "outside 0..<")
        try assertRefused({ $0["id"] = 4_294_967_301 }, saying: "valid \"id\"")
        try assertRefused({ $0["id"] = 151_700.5 }, saying: "valid \"id\"")
        try assertRefused({ $0["id"] = 100 }, saying: "reuses the id of another token")
        try assertRefused({ $0["content"] = String(repeating: "<", count: 5000) }, saying: "bytes long")
    }

    /// Sizes are checked before anything is built from them.
    func testOversizedTokenizerFilesAreRefusedBeforeReading() throws {
        let dir = try Fixtures.temporaryDirectory()
        let big = dir.appendingPathComponent("tokenizer.json")
        FileManager.default.createFile(atPath: big.path, contents: nil)
        let handle = try FileHandle(forWritingTo: big)
        try handle.truncate(atOffset: UInt64(Tokenizer.maxFileBytes + 1))
        try handle.close()
        XCTAssertThrowsError(try Tokenizer.load(tokenizerJSON: big)) { error in
            XCTAssertTrue("\(error)".contains("larger than a tokenizer file is"), "\(error)")
        }
    }

    /// Added tokens that do not start with '<' are matched too (only Qwen's all do).
    func testAddedTokensAreMatchedWhateverTheirFirstByte() throws {
        let tokenizer = try load { $0["content"] = "§SPECIAL§" }.get()
        let id = try XCTUnwrap(tokenizer.addedTokens.first { $0.content == Array("§SPECIAL§".utf8) }?.id)
        XCTAssertEqual(tokenizer.encode("a§SPECIAL§b").filter { $0 == id }.count, 1)
    }

    /// A write that fails or is interrupted leaves the destination as it was (the old file
    /// whole) and no temporary file behind.
    func testAnInterruptedWriteLeavesTheOldFileWhole() throws {
        let dir = try Fixtures.temporaryDirectory()
        let url = dir.appendingPathComponent("model.sift")
        try Data("old contents".utf8).write(to: url)
        struct Interrupted: Error {}
        XCTAssertThrowsError(try AtomicFile.write(to: url, size: 100) { out in
            try out.append(Data("half of the new".utf8))
            throw Interrupted()
        })
        XCTAssertEqual(try String(contentsOf: url, encoding: .utf8), "old contents")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["model.sift"])
        try AtomicFile.write(to: url, size: 3) { out in try out.append(Data("new".utf8)) }
        XCTAssertEqual(try String(contentsOf: url, encoding: .utf8), "new")
        // A killed writer's temporary file is removed by the next write.
        let stale = dir.appendingPathComponent(".model.sift.999999.partial")
        try Data("stale".utf8).write(to: stale)
        try AtomicFile.write(to: url, size: 3) { out in try out.append(Data("new".utf8)) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale.path))
    }

    /// A full disk names the file and says what to do (a raw NSError without the path before).
    func testAFullDiskIsAClearError() throws {
        // RLIMIT_FSIZE makes writes past the limit fail as a full disk would (EFBIG).
        var old = rlimit()
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &old)
        signal(SIGXFSZ, SIG_IGN)
        var small = rlimit(rlim_cur: 4096, rlim_max: old.rlim_max)
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &small)
        defer { setrlimit(Int32(RLIMIT_FSIZE.rawValue), &old) }
        let dir = try Fixtures.temporaryDirectory()
        let url = dir.appendingPathComponent("model.sift")
        XCTAssertThrowsError(try AtomicFile.write(to: url, size: 8192) { out in
            try out.append(Data(count: 8192))
        }) { error in
            XCTAssertTrue("\(error)".contains(url.path), "\(error)")
            XCTAssertTrue("\(error)".contains("4096 of 8192 bytes"), "\(error)")
            XCTAssertTrue("\(error)".contains("not replaced"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
    }
}
