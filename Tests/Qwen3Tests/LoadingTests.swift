import Foundation
import Qwen3
import SiftTestSupport
import XCTest

/// Bad model files give a clear error naming the file and the problem; nothing crashes.
final class LoadingTests: XCTestCase {
    var dir: URL!

    override func setUp() async throws { dir = try Fixtures.temporaryDirectory() }
    override func tearDown() async throws { try? FileManager.default.removeItem(at: dir) }

    private func expectLoadError(_ body: () throws -> Void, file: String, mentions words: [String],
                                 line: UInt = #line) {
        XCTAssertThrowsError(try body(), line: line) { error in
            guard let e = error as? LoadError else { return XCTFail("not a LoadError: \(error)", line: line) }
            XCTAssertTrue(e.file.hasSuffix(file), "file \(e.file) should end with \(file)", line: line)
            for w in words { XCTAssertTrue(e.problem.contains(w), "'\(e.problem)' should mention '\(w)'", line: line) }
        }
    }

    func testReadsAllDTypes() throws {
        let url = dir.appendingPathComponent("a.safetensors")
        let f32: [Float] = [1.5, -2, 0.25]
        let bf16: [UInt8] = [0xC0, 0x3F, 0x00, 0xC0]        // 1.5, -2 (little-endian bf16)
        let f16: [UInt8] = [0x00, 0x3E, 0x00, 0xC0, 0x01, 0x00] // 1.5, -2, smallest subnormal
        try SafeTensorsWriter.write([
            .init(name: "f32", dtype: "F32", shape: [3], data: SafeTensorsWriter.floats(f32)),
            .init(name: "bf16", dtype: "BF16", shape: [2], data: bf16),
            .init(name: "f16", dtype: "F16", shape: [1, 3], data: f16),
        ], to: url)
        let file = try SafeTensorsFile(path: url.path)
        XCTAssertEqual(file.tensors["f32"]!.floats(), f32)
        XCTAssertEqual(file.tensors["bf16"]!.floats(), [1.5, -2])
        XCTAssertEqual(file.tensors["f16"]!.floats(), [1.5, -2, Float(pow(2.0, -24.0))])
        XCTAssertEqual(file.tensors["f16"]!.shape, [1, 3])
    }

    func testTruncatedFile() throws {
        let url = dir.appendingPathComponent("t.safetensors")
        try SafeTensorsWriter.write([.init(name: "x", dtype: "F32", shape: [64], data: SafeTensorsWriter.floats(.init(repeating: 1, count: 64)))], to: url)
        let full = try Data(contentsOf: url)
        try full.prefix(full.count - 10).write(to: url)
        expectLoadError({ _ = try SafeTensorsFile(path: url.path) }, file: "t.safetensors", mentions: ["x", "outside"])
        try full.prefix(5).write(to: url)
        expectLoadError({ _ = try SafeTensorsFile(path: url.path) }, file: "t.safetensors", mentions: ["truncated"])
        try full.prefix(20).write(to: url)
        expectLoadError({ _ = try SafeTensorsFile(path: url.path) }, file: "t.safetensors", mentions: ["header length"])
    }

    func testOffsetsPastTheEnd() throws {
        let url = dir.appendingPathComponent("o.safetensors")
        try SafeTensorsWriter.write([.init(name: "x", dtype: "F32", shape: [2], data: SafeTensorsWriter.floats([1, 2]))],
                                    to: url, offsetsOverride: ["x": [0, 1 << 40]])
        expectLoadError({ _ = try SafeTensorsFile(path: url.path) }, file: "o.safetensors", mentions: ["x", "outside"])
    }

    func testShapeThatDoesNotMatchTheBytes() throws {
        let url = dir.appendingPathComponent("s.safetensors")
        try SafeTensorsWriter.write([.init(name: "x", dtype: "F32", shape: [3], data: SafeTensorsWriter.floats([1, 2]))], to: url)
        expectLoadError({ _ = try SafeTensorsFile(path: url.path) }, file: "s.safetensors", mentions: ["x", "[3]"])
    }

    func testUnsupportedDType() throws {
        let url = dir.appendingPathComponent("d.safetensors")
        try SafeTensorsWriter.write([.init(name: "x", dtype: "I64", shape: [1], data: [UInt8](repeating: 0, count: 8))], to: url)
        expectLoadError({ _ = try SafeTensorsFile(path: url.path) }, file: "d.safetensors", mentions: ["I64"])
    }

    func testNotASafetensorsFile() throws {
        let url = dir.appendingPathComponent("g.safetensors")
        try Data("this is not a model at all, just some text that is long enough".utf8).write(to: url)
        expectLoadError({ _ = try SafeTensorsFile(path: url.path) }, file: "g.safetensors", mentions: ["header"])
    }

    /// A header length of 2^63 or more, or numbers in the header that are no exact integers,
    /// are errors (they used to trap converting to Int).
    func testHugeHeaderLengthAndInexactNumbersAreErrors() throws {
        let url = dir.appendingPathComponent("h.safetensors")
        for length: UInt64 in [1 << 63, UInt64.max, (1 << 63) + 5, 1 << 40] {
            var bytes = withUnsafeBytes(of: length.littleEndian) { Array($0) }
            bytes += Array(#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.utf8) + [0, 0, 0, 0]
            try Data(bytes).write(to: url)
            expectLoadError({ _ = try SafeTensorsFile(path: url.path) }, file: "h.safetensors", mentions: ["header length"])
        }
        for header in [#"{"x":{"dtype":"F32","shape":[1e300],"data_offsets":[0,4]}}"#,
                       #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}}"#,
                       #"{"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#,
                       #"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#] {
            let json = Array(header.utf8)
            let bytes = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json + [0, 0, 0, 0]
            try Data(bytes).write(to: url)
            expectLoadError({ _ = try SafeTensorsFile(path: url.path) }, file: "h.safetensors", mentions: ["x"])
        }
    }

    // MARK: model folders

    /// A copy of the tiny fixture whose config and weights the test may break.
    private func tinyCopy() throws -> URL {
        let fm = FileManager.default
        for name in try fm.contentsOfDirectory(atPath: Fixtures.tinyModel.path) {
            try fm.copyItem(at: Fixtures.tinyModel.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
        return dir
    }

    func testMissingFolder() {
        let missing = dir.appendingPathComponent("nope")
        expectLoadError({ _ = try Qwen3Checkpoint(directory: missing) }, file: "nope", mentions: ["not found"])
    }

    func testConfigMissingAField() throws {
        let model = try tinyCopy()
        let url = model.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        config.removeValue(forKey: "num_key_value_heads")
        try JSONSerialization.data(withJSONObject: config).write(to: url)
        expectLoadError({ _ = try Qwen3Checkpoint(directory: model) }, file: "config.json", mentions: ["num_key_value_heads"])
    }

    func testConfigOfAnotherArchitecture() throws {
        let model = try tinyCopy()
        let url = model.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        config["model_type"] = "llama"
        try JSONSerialization.data(withJSONObject: config).write(to: url)
        expectLoadError({ _ = try Qwen3Checkpoint(directory: model) }, file: "config.json", mentions: ["llama"])
    }

    func testTensorWithTheWrongShape() throws {
        let model = try tinyCopy()
        let url = model.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        config["intermediate_size"] = 128  // the weights say 192
        try JSONSerialization.data(withJSONObject: config).write(to: url)
        expectLoadError({ _ = try Qwen3Checkpoint(directory: model) }, file: "model.safetensors", mentions: ["mlp", "shape"])
    }

    func testTruncatedModelFile() throws {
        let model = try tinyCopy()
        let url = model.appendingPathComponent("model.safetensors")
        let handle = try FileHandle(forWritingTo: url)
        try handle.truncate(atOffset: 1_000_000)
        try handle.close()
        expectLoadError({ _ = try Qwen3Checkpoint(directory: model) }, file: "model.safetensors", mentions: ["outside"])
    }

    func testShardedCheckpointLoadsLikeTheSingleFile() throws {
        // Split the tiny fixture into two shards with an index, as the 4B and 8B ship.
        let single = try SafeTensorsFile(path: Fixtures.tinyModel.appendingPathComponent("model.safetensors").path)
        let names = single.tensors.keys.sorted()
        var weightMap: [String: String] = [:]
        for (part, chunk) in [names.prefix(names.count / 2), names.suffix(from: names.count / 2)].enumerated() {
            let shard = "model-0000\(part + 1)-of-00002.safetensors"
            try SafeTensorsWriter.write(chunk.map { n in
                let t = single.tensors[n]!
                return .init(name: n, dtype: t.dtype.rawValue, shape: t.shape,
                             data: Array(UnsafeRawBufferPointer(start: t.data, count: t.count * t.dtype.byteSize)))
            }, to: dir.appendingPathComponent(shard))
            for n in chunk { weightMap[n] = shard }
        }
        try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": weightMap])
            .write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        try FileManager.default.copyItem(at: Fixtures.tinyModel.appendingPathComponent("config.json"),
                                         to: dir.appendingPathComponent("config.json"))
        let sharded = try Qwen3Checkpoint(directory: dir)
        XCTAssertEqual(sharded.checkpoint.files.count, 2)
        XCTAssertEqual(sharded.layers[1].down.floats(), try Qwen3Checkpoint(directory: Fixtures.tinyModel).layers[1].down.floats())

        // An index naming a tensor that its shard lacks.
        weightMap["model.extra.weight"] = "model-00001-of-00002.safetensors"
        try JSONSerialization.data(withJSONObject: ["weight_map": weightMap])
            .write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        expectLoadError({ _ = try Qwen3Checkpoint(directory: dir) }, file: "model-00001-of-00002.safetensors",
                        mentions: ["model.extra.weight"])
    }
}
