import CSiftKernels
import Foundation
import Qwen3
import SiftEngine
import SiftTestSupport
import XCTest

/// The int8 path: parity gates against transformers, bit-identity across kernel paths and
/// thread counts, and the .sift file.
final class Int8Tests: XCTestCase {
    func deltas(_ reranker: RerankerModel, _ cases: [Fixtures.ReferenceCase]) async throws -> [Double] {
        var deltas: [Double] = []
        for c in cases {
            let r = try await reranker.scored(query: c.query, instruction: c.instructionGiven, documents: [c.document], maxLength: c.maxLength)[0]
            deltas.append(abs(Double(r.logit) - c.logitDiff))
        }
        return deltas
    }

    /// At least as faithful as llama.cpp's Q8_0 scheme on the tiny fixture (mean 0.053, max 0.347).
    func testParityGateOnTheTinyModel() async throws {
        let reranker = try RerankerModel.load(directory: Fixtures.tinyModel, precision: .int8)
        let d = try await deltas(reranker, try Fixtures.referenceCases())
        let mean = d.reduce(0, +) / Double(d.count)
        print("int8 tiny: mean |Δlogit| \(mean), max \(d.max()!)")
        XCTAssertLessThanOrEqual(mean, 0.053)
        XCTAssertLessThanOrEqual(d.max()!, 0.35)
    }

    /// The real 0.6B shape, first 10 cases: mean |Δlogit| ≤ 0.045 (Q8_0: 0.041).
    func testParityGateOnThe06BShape() async throws {
        guard let dir = Fixtures.model06B else {
            print("SKIPPED testParityGateOnThe06BShape: no 0.6B model; run scripts/make-test-models.sh or set SIFT_MODEL_06B")
            throw XCTSkip("0.6B model absent (scripts/make-test-models.sh makes it)")
        }
        let reranker = try RerankerModel.load(directory: dir, precision: .int8)
        let d = try await deltas(reranker, Array(try Fixtures.referenceCases("reference-scores-0.6b.json").prefix(10)))
        let mean = d.reduce(0, +) / Double(d.count)
        print("int8 0.6B (10 cases): mean |Δlogit| \(mean), max \(d.max()!)")
        XCTAssertLessThanOrEqual(mean, 0.045)
    }

    func testLogitsAreBitIdenticalAcrossKernelPathsAndThreadCounts() async throws {
        let cases = Array(try Fixtures.referenceCases().prefix(4))
        var reference: [Float]?
        for path in KernelPath.supported {
            for threads in [1, 2, 3] {
                let reranker = try RerankerModel.load(directory: Fixtures.tinyModel, precision: .int8, threads: threads, kernelPath: path)
                var logits: [Float] = []
                for c in cases {
                    logits.append(try await reranker.scored(query: c.query, instruction: c.instructionGiven, documents: [c.document])[0].logit)
                }
                if let reference {
                    XCTAssertEqual(logits.map(\.bitPattern), reference.map(\.bitPattern), "\(path), \(threads) threads")
                } else {
                    reference = logits
                }
            }
        }
    }

    /// The tiny fixture quantized at load, and written as `dir/tiny.sift`.
    func writeTinySift(in dir: URL) throws -> (direct: RerankerModel, file: URL) {
        let file = dir.appendingPathComponent("tiny.sift")
        let direct = try RerankerModel.load(directory: Fixtures.tinyModel, precision: .int8)
        let json = try Data(contentsOf: Fixtures.tinyModel.appendingPathComponent("tokenizer.json"))
        try SiftFile.write(model: direct.model, tokenizerJSON: json, yesID: direct.yesID, noID: direct.noID, to: file)
        return (direct, file)
    }

    func testSiftFileServesTheSameScores() async throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (direct, file) = try writeTinySift(in: dir)
        let mapped = try RerankerModel.load(path: file.path)
        let docs = ["The capital of China is Beijing.", "", "Gravity is a force."]
        let a = try await direct.scored(query: "capital of China?", documents: docs)
        let b = try await mapped.scored(query: "capital of China?", documents: docs)
        XCTAssertEqual(a.map(\.logit), b.map(\.logit))
        XCTAssertEqual(mapped.model.config, direct.model.config)
    }

    func testCorruptTruncatedAndForeignSiftFilesAreRefused() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (_, file) = try writeTinySift(in: dir)
        let good = try Data(contentsOf: file)

        func expect(_ data: Data, _ words: String, line: UInt = #line) throws {
            try data.write(to: file)
            XCTAssertThrowsError(try RerankerModel.load(path: file.path), line: line) { error in
                XCTAssertTrue("\(error)".contains(words), "\(error)", line: line)
                XCTAssertTrue("\(error)".contains(file.path), "\(error)", line: line)
            }
        }
        var flipped = good
        flipped[good.count - 1000] ^= 0x40
        try expect(flipped, "checksum")
        try expect(good.prefix(good.count / 2), "truncated")
        try expect(good.prefix(40), "truncated")
        try expect(Data("definitely not a model file, but long enough to have a header ......".utf8), "not a .sift file")
        var version = good
        version[8] = 9
        try expect(version, "format version 9")
        // A file of the per-row scheme (version 1) says what to run.
        version[8] = 1
        try expect(version, "run `sift convert --model FOLDER")
        // Header fields with the top bit set (and offsets past the end) are errors, not traps.
        for field in [16, 24, 32, 40, 48] {
            var huge = good
            for b in 0..<8 { huge[field + b] = 0xFF }
            try huge.write(to: file)
            XCTAssertThrowsError(try RerankerModel.load(path: file.path), "field at \(field)")
        }
        // Metadata that passes the checksum but not the one Codable type writer and reader share.
        func withMetadata(_ replace: String, by replacement: String) -> Data {
            var data = good
            let range = good.range(of: Data(replace.utf8))!
            XCTAssertEqual(replace.utf8.count, replacement.utf8.count)
            data.replaceSubrange(range, with: Data(replacement.utf8))
            let sum = data.withUnsafeBytes { sift_checksum64($0.baseAddress! + 64, $0.count - 64, 0).littleEndian }
            withUnsafeBytes(of: sum) { data.replaceSubrange(48..<56, with: $0) }
            return data
        }
        try expect(withMetadata("\"yes_id\":9693", by: "\"yes_id\":\"96\""), "corrupt metadata")
        try expect(withMetadata("\"yes_id\":9693", by: "\"yes_id\":-969"), "outside the vocabulary")
        try expect(withMetadata("\"outputs\":", by: "\"outputz\":"), "corrupt metadata")
        // A Hugging Face safetensors file given where a .sift is expected.
        try expect(try Data(contentsOf: Fixtures.tinyModel.appendingPathComponent("model.safetensors")), "not a .sift file")
    }
}
