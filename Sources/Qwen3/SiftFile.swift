import CSiftKernels
import Foundation

/// Sift's converted model file: one self-describing, memory-mappable file holding the config,
/// the tokenizer, and the int8 weights in the exact layout the kernels read, so serving starts
/// in seconds with no conversion.
///
///     0   magic "SIFTQ8\0\1"          32  data offset       (u64 LE)
///     8   format version (u32 LE)     40  data length       (u64 LE)
///     12  reserved (u32)              48  checksum of bytes [64, end) (sift_checksum64)
///     16  metadata offset (u64 LE)    56  reserved (u64)
///     24  metadata length (u64 LE)    64… metadata JSON, then 64-byte-aligned sections
///
/// The metadata names every section (offset, length), the config, the answer token ids and the
/// outlier channels of every projection. See docs/QUANTIZATION.md.
public enum SiftFile {
    public static let magic: [UInt8] = Array("SIFTQ8".utf8) + [0, 1]
    /// 2: scales and row sums per group of 128 inputs (version 1 had one per row: refused, with
    /// the advice to convert again).
    public static let formatVersion: UInt32 = 2
    static let headerSize = 64
    static let alignment = 64
    static let projections = ["qkv", "o", "gate_up", "down"]

    /// The metadata JSON: one type for the writer and the reader.
    struct Metadata: Codable {
        var format = "sift-q8"
        var version = Int(SiftFile.formatVersion)
        var config: Qwen3Config
        var yesID: Int32
        var noID: Int32
        var scheme = "int8 weights x u8 activations, a scale per output row / token and group of 128 inputs, fp32 outlier input channels"
        var embedding: Embedding
        /// Per layer, per projection (qkv, o, gate_up, down).
        var layers: [[String: Projection]]
        /// Section name → [offset, length] in bytes from the start of the file.
        var sections: [String: [Int]]

        struct Embedding: Codable {
            var dtype: String
            var shape: [Int]
        }

        struct Projection: Codable {
            var outputs: Int
            var inputs: Int
            /// Input channels kept in fp32.
            var outliers: [Int]
        }

        enum CodingKeys: String, CodingKey {
            case format, version, config, scheme, embedding, layers, sections
            case yesID = "yes_id", noID = "no_id"
        }

        func encoded() throws -> Data {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return try encoder.encode(self)
        }
    }

    // MARK: - Writing

    /// Writes `model` (int8) and the raw `tokenizer.json` bytes to `url`.
    /// `progress(done, total)` counts bytes.
    public static func write(model: Qwen3Model, tokenizerJSON: Data, yesID: Int32, noID: Int32, to url: URL,
                             progress: ((Int, Int) -> Void)? = nil) throws {
        guard model.precision == .int8 else { throw LoadError(file: url.path, "only int8 models are written to .sift files") }
        // Plan the sections.
        var sections: [(name: String, bytes: UnsafeRawBufferPointer)] = []
        func add(_ name: String, _ p: UnsafeRawPointer, _ count: Int) {
            sections.append((name, UnsafeRawBufferPointer(start: p, count: count)))
        }
        let keep = KeepAlive()
        func addFloats(_ name: String, _ a: [Float]) {
            let p = keep.copy(a)
            add(name, p, a.count * 4)
        }
        tokenizerJSON.withUnsafeBytes { raw in
            add("tokenizer.json", keep.copy(bytes: raw), raw.count)
        }
        let e = model.embedding
        add("embedding", e.data, e.count * e.dtype.byteSize)
        addFloats("final_norm", model.finalNorm)
        addFloats("yes_row", model.yesRow)
        addFloats("no_row", model.noRow)
        var layerMeta: [[String: Metadata.Projection]] = []
        for (l, layer) in model.layers.enumerated() {
            addFloats("\(l).input_norm", layer.inputNorm)
            addFloats("\(l).q_norm", layer.qNorm)
            addFloats("\(l).k_norm", layer.kNorm)
            addFloats("\(l).post_norm", layer.postNorm)
            var meta: [String: Metadata.Projection] = [:]
            for (name, linear) in zip(projections, layer.linears) {
                let q = linear as! Int8Linear
                guard q.group == Int(SIFT_Q8_GROUP) else {
                    throw LoadError(file: url.path, "only the group-of-\(SIFT_Q8_GROUP) int8 scheme is written to .sift files")
                }
                add("\(l).\(name).packed", q.packed, q.outputs * q.inputs)
                add("\(l).\(name).row_sums", q.rowSums, q.groups * q.outputs * 4)
                add("\(l).\(name).scales", q.scales, q.groups * q.outputs * 4)
                add("\(l).\(name).outlier_weights", q.outlierWeights, q.outlierChannels.count * q.outputs * 4)
                meta[name] = Metadata.Projection(outputs: q.outputs, inputs: q.inputs, outliers: q.outlierChannels.map(Int.init))
            }
            layerMeta.append(meta)
        }
        // Lay them out after the metadata (whose size depends on the offsets: iterate once).
        func metadata(_ offsets: [String: [Int]]) throws -> Data {
            try Metadata(config: model.config, yesID: yesID, noID: noID,
                         embedding: .init(dtype: e.dtype.rawValue, shape: e.shape), layers: layerMeta, sections: offsets).encoded()
        }
        var offsets: [String: [Int]] = Dictionary(uniqueKeysWithValues: sections.map { ($0.name, [0, $0.bytes.count]) })
        var meta = try metadata(offsets)
        var dataStart = 0
        for _ in 0..<3 {  // offsets change the metadata length by a few digits: settle it
            dataStart = align(headerSize + meta.count + 4096)
            var cursor = dataStart
            for s in sections {
                offsets[s.name] = [cursor, s.bytes.count]
                cursor = align(cursor + s.bytes.count)
            }
            meta = try metadata(offsets)
        }
        guard headerSize + meta.count <= dataStart else { throw LoadError(file: url.path, "internal: metadata does not fit") }
        let total = sections.reduce(dataStart) { align($0 + $1.bytes.count) }

        // Written beside `url` under a temporary name, made durable, then renamed over it: a
        // crash or a full disk never leaves `url` missing or half written (an old file stays
        // whole until the new one replaces it), and a server mapping the old file keeps it.
        var header = Data(magic)
        header.appendLE(formatVersion); header.appendLE(UInt32(0))
        header.appendLE(UInt64(headerSize)); header.appendLE(UInt64(meta.count))
        header.appendLE(UInt64(dataStart)); header.appendLE(UInt64(total - dataStart))
        header.appendLE(UInt64(0)); header.appendLE(UInt64(0))
        try AtomicFile.write(to: url, size: total) { out in
            try out.append(header)
            try out.append(meta)
            for s in sections {
                let start = offsets[s.name]![0]
                try out.pad(to: start)
                var done = 0
                while done < s.bytes.count {  // in pieces, for progress on multi-GB sections
                    let n = min(64 << 20, s.bytes.count - done)
                    try out.append(UnsafeRawBufferPointer(rebasing: s.bytes[done..<(done + n)]))
                    done += n
                    progress?(start + done, total)
                }
            }
            try out.pad(to: total)
            try out.sync()
            let mapped = try MappedFile(path: out.path)
            var sum = sift_checksum64(mapped.base + headerSize, mapped.size - headerSize, 0).littleEndian
            try withUnsafeBytes(of: &sum) { try out.write($0, at: 48) }
        }
        progress?(total, total)
    }

    static func align(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    // MARK: - Reading

    /// A verified, mapped .sift file.
    public struct Contents {
        public let file: MappedFile
        public let config: Qwen3Config
        public let yesID: Int32
        public let noID: Int32
        public let tokenizerJSON: Data
        let metadata: Metadata
        let sections: [String: (Int, Int)]

        func section(_ name: String, bytes: Int? = nil) throws -> UnsafeRawPointer {
            guard let (offset, length) = sections[name] else {
                throw LoadError(file: file.path, "missing section \(name)")
            }
            if let bytes, bytes != length {
                throw LoadError(file: file.path, "section \(name) has \(length) bytes, expected \(bytes)")
            }
            return file.base + offset
        }

        func floats(_ name: String, count: Int) throws -> [Float] {
            let p = try section(name, bytes: count * 4).assumingMemoryBound(to: Float.self)
            return Array(UnsafeBufferPointer(start: p, count: count))
        }
    }

    /// True when `path` starts with the .sift magic.
    public static func looksLikeSift(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        return (try? h.read(upToCount: 8)).map { Array($0) == magic } ?? false
    }

    /// Maps and verifies `path`: magic, version, bounds of every section, and the checksum.
    public static func open(_ path: String, verifyChecksum: Bool = true) throws -> Contents {
        let file = try MappedFile(path: path)
        guard file.size >= headerSize else { throw LoadError(file: path, "truncated: \(file.size) bytes, shorter than the .sift header") }
        guard Array(UnsafeRawBufferPointer(start: file.base, count: 8)) == magic else {
            throw LoadError(file: path, "not a .sift file (bad magic); convert a Hugging Face folder with `sift convert`")
        }
        func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: file.base.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        let version = UInt32(littleEndian: file.base.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        guard version == formatVersion else {
            let why = version < formatVersion ? " (written by an older sift: its int8 scheme had one scale per row)" : ""
            throw LoadError(file: path, ".sift format version \(version)\(why); this sift reads version \(formatVersion): run `sift convert --model FOLDER --out \(URL(fileURLWithPath: path).lastPathComponent)` again")
        }
        // Sizes are checked as UInt64 before any conversion: a corrupt header must not trap.
        let size = UInt64(file.size)
        let fields = [u64(16), u64(24), u64(32), u64(40)]
        guard fields.allSatisfy({ $0 <= size }) else {
            throw LoadError(file: path, "truncated or corrupt: header sizes do not match the file size \(file.size)")
        }
        let (metaOffset, metaLength, dataOffset, dataLength) = (Int(fields[0]), Int(fields[1]), Int(fields[2]), Int(fields[3]))
        guard metaOffset == headerSize, metaLength > 0, metaOffset + metaLength <= dataOffset,
              dataOffset <= file.size, dataLength == file.size - dataOffset else {
            throw LoadError(file: path, "truncated or corrupt: header sizes do not match the file size \(file.size)")
        }
        if verifyChecksum {
            let actual = sift_checksum64(file.base + headerSize, file.size - headerSize, 0)
            guard u64(48) == actual else { throw LoadError(file: path, "corrupt: checksum mismatch (the file was modified or damaged)") }
        }
        let meta: Metadata
        do {
            meta = try JSONDecoder().decode(Metadata.self, from: Data(bytes: file.base + metaOffset, count: metaLength))
        } catch let problem as ConfigProblem {
            throw LoadError(file: path, "invalid config in metadata: \(problem.message)")
        } catch {
            throw LoadError(file: path, "corrupt metadata")
        }
        let (config, yes, no) = (meta.config, meta.yesID, meta.noID)
        guard (0..<Int32(clamping: config.vocabSize)).contains(yes), (0..<Int32(clamping: config.vocabSize)).contains(no) else {
            throw LoadError(file: path, "corrupt metadata: answer token ids \(yes)/\(no) are outside the vocabulary")
        }
        var sections: [String: (Int, Int)] = [:]
        for (name, pair) in meta.sections {
            guard pair.count == 2, pair[0] >= dataOffset, pair[0] <= file.size, pair[1] >= 0, pair[1] <= file.size - pair[0] else {
                throw LoadError(file: path, "section \(name) points outside the file")
            }
            sections[name] = (pair[0], pair[1])
        }
        guard let (tOffset, tLength) = sections["tokenizer.json"] else { throw LoadError(file: path, "missing section tokenizer.json") }
        return Contents(file: file, config: config, yesID: yes, noID: no,
                        tokenizerJSON: Data(bytes: file.base + tOffset, count: tLength), metadata: meta, sections: sections)
    }
}

extension Qwen3Model {
    /// A model serving straight from a mapped .sift file (int8 weights are not copied).
    public convenience init(sift c: SiftFile.Contents, threads: Int = WorkerPool.defaultThreadCount,
                            kernelPath: KernelPath? = nil) throws {
        let cfg = c.config, h = cfg.hiddenSize, path = try kernelPath ?? KernelPath.selected()
        let shape = c.metadata.embedding.shape, layerMeta = c.metadata.layers
        guard let dtype = DType(rawValue: c.metadata.embedding.dtype), shape == [cfg.vocabSize, h], layerMeta.count == cfg.layerCount
        else { throw LoadError(file: c.file.path, "corrupt metadata (embedding or layers)") }
        let embedding = TensorView(name: "embedding", dtype: dtype, shape: shape,
                                   data: try c.section("embedding", bytes: shape[0] * shape[1] * dtype.byteSize), file: c.file)
        var layers: [DecoderLayer] = []
        for l in 0..<cfg.layerCount {
            var linears: [any LinearLayer] = []
            let expected = [(cfg.qDim + 2 * cfg.kvDim, h), (h, cfg.qDim), (2 * cfg.intermediateSize, h), (h, cfg.intermediateSize)]
            for (name, (n, k)) in zip(SiftFile.projections, expected) {
                guard let m = layerMeta[l][name], m.outliers.count <= 256, m.outliers.allSatisfy({ (0..<k).contains($0) })
                else { throw LoadError(file: c.file.path, "corrupt metadata for layer \(l) \(name)") }
                let outliers = m.outliers
                guard m.outputs == n, m.inputs == k, n % 16 == 0, k % 4 == 0 else {
                    throw LoadError(file: c.file.path, "layer \(l) \(name): shape in the file does not match the config (\(n)×\(k))")
                }
                let p = "\(l).\(name)"
                linears.append(Int8Linear(
                    inputs: k, outputs: n,
                    packed: try c.section(p + ".packed", bytes: n * k).assumingMemoryBound(to: Int8.self),
                    rowSums: try c.section(p + ".row_sums", bytes: sift_q8_groups(k, Int(SIFT_Q8_GROUP)) * n * 4).assumingMemoryBound(to: Int32.self),
                    scales: try c.section(p + ".scales", bytes: sift_q8_groups(k, Int(SIFT_Q8_GROUP)) * n * 4).assumingMemoryBound(to: Float.self),
                    outlierChannels: outliers.map { Int32($0) },
                    outlierWeights: try c.section(p + ".outlier_weights", bytes: outliers.count * n * 4).assumingMemoryBound(to: Float.self),
                    path: path, owner: c.file))
            }
            layers.append(DecoderLayer(
                inputNorm: try c.floats("\(l).input_norm", count: h), qkv: linears[0],
                qNorm: try c.floats("\(l).q_norm", count: cfg.headDim), kNorm: try c.floats("\(l).k_norm", count: cfg.headDim),
                o: linears[1], postNorm: try c.floats("\(l).post_norm", count: h), gateUp: linears[2], down: linears[3]))
        }
        try self.init(config: cfg, precision: .int8, threads: threads, kernelPath: path, embedding: embedding,
                      finalNorm: try c.floats("final_norm", count: h), yesRow: try c.floats("yes_row", count: h),
                      noRow: try c.floats("no_row", count: h), layers: layers)
    }
}

/// Owns copies of small arrays while a file is written.
private final class KeepAlive {
    private var buffers: [UnsafeMutableRawPointer] = []
    func copy(_ a: [Float]) -> UnsafeRawPointer {
        a.withUnsafeBytes { copy(bytes: $0) }
    }
    func copy(bytes: UnsafeRawBufferPointer) -> UnsafeRawPointer {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes.count), alignment: 64)
        if bytes.count > 0 { p.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        buffers.append(p)
        return UnsafeRawPointer(p)
    }
    deinit { buffers.forEach { $0.deallocate() } }
}

extension Data {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        var le = v.littleEndian
        Swift.withUnsafeBytes(of: &le) { append(contentsOf: $0) }
    }
}
