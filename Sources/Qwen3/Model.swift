import COpenBLAS
import CSiftKernels
import Foundation
import SiftBase

/// Numeric format of the linear layers.
public enum Precision: String, Sendable, CaseIterable {
    case fp32, int8
}

/// One Qwen3 decoder layer: norms in fp32, the four (fused) projections in fp32 or int8.
public final class DecoderLayer: @unchecked Sendable {
    public let inputNorm: [Float]    // (hidden)
    public let qkv: any LinearLayer  // (qDim + 2·kvDim) × hidden
    public let qNorm: [Float]        // (headDim)
    public let kNorm: [Float]        // (headDim)
    public let o: any LinearLayer    // hidden × qDim
    public let postNorm: [Float]     // (hidden)
    public let gateUp: any LinearLayer  // 2·intermediate × hidden
    public let down: any LinearLayer    // hidden × intermediate

    init(inputNorm: [Float], qkv: any LinearLayer, qNorm: [Float], kNorm: [Float], o: any LinearLayer,
         postNorm: [Float], gateUp: any LinearLayer, down: any LinearLayer) {
        self.inputNorm = inputNorm
        self.qkv = qkv
        self.qNorm = qNorm
        self.kNorm = kNorm
        self.o = o
        self.postNorm = postNorm
        self.gateUp = gateUp
        self.down = down
    }

    var linears: [any LinearLayer] { [qkv, o, gateUp, down] }
}

/// The input of each projection (calibration finds each one's outlier channels).
enum ProjectionInput: Int, CaseIterable {
    case qkv, o, gateUp, down
}

/// Qwen3 decoder, reading like the maths:
///
///     h  = x + o(attention(rope(qNorm(q(norm(x)))), rope(kNorm(k(norm(x)))), v(norm(x))))
///     x' = h + down(silu(gate(norm(h))) * up(norm(h)))
///
/// followed by the final norm and the two output rows "yes" and "no" (the LM head is never
/// computed). One thread drives a model at a time; the work of each step is spread over the
/// model's `WorkerPool`.
public final class Qwen3Model: @unchecked Sendable {
    public let config: Qwen3Config
    public let precision: Precision
    public let kernelPath: KernelPath
    private(set) var layers: [DecoderLayer]
    let finalNorm: [Float]
    let embedding: TensorView
    /// Rows of the output projection for the two answer tokens.
    public let yesRow: [Float]
    public let noRow: [Float]
    let invFreq: [Float]
    public let pool: WorkerPool
    let workspace: Workspace
    let linearScratch = LinearScratch()
    private let freeStepRows = Locked<[StepRows]>([])

    /// Assembles a model from prepared parts (used by the checkpoint and .sift loaders).
    init(config: Qwen3Config, precision: Precision, threads: Int, kernelPath: KernelPath?, embedding: TensorView,
         finalNorm: [Float], yesRow: [Float], noRow: [Float], layers: [DecoderLayer]) throws {
        self.config = config
        self.precision = precision
        self.kernelPath = try kernelPath ?? KernelPath.selected()
        // Sift parallelises every GEMM itself; OpenBLAS runs single-threaded inside its workers.
        BLAS.threads = 1
        pool = WorkerPool.shared(threads: threads)
        workspace = Workspace(config: config, threads: pool.threadCount)
        self.embedding = embedding
        self.finalNorm = finalNorm
        self.yesRow = yesRow
        self.noRow = noRow
        invFreq = Self.rotaryInverseFrequencies(config)
        self.layers = layers
    }

    /// As transformers computes them, in fp32: 1 / theta^(2i/d).
    static func rotaryInverseFrequencies(_ config: Qwen3Config) -> [Float] {
        let d = config.headDim
        return (0..<d / 2).map { i in 1 / powf(Float(config.ropeTheta), Float(2 * i) / Float(d)) }
    }

    /// Builds the model from a checked checkpoint. For int8, every layer is converted, calibrated
    /// on `calibrationTokens` in fp32 (to find its outlier input channels), quantized, and its
    /// fp32 copy dropped, so peak memory stays near the int8 size.
    public convenience init(checkpoint: Qwen3Checkpoint, yesID: Int32, noID: Int32, precision: Precision = .fp32,
                            threads: Int = WorkerPool.defaultThreadCount, kernelPath: KernelPath? = nil,
                            calibrationTokens: [Int32] = [], int8Group: Int = Int8Linear.standardGroup,
                            progress: ((Int, Int) -> Void)? = nil) throws {
        let config = checkpoint.config
        for id in [yesID, noID] where id < 0 || Int(id) >= config.vocabSize {
            throw LoadError(file: "config.json", "answer token id \(id) is outside the vocabulary (\(config.vocabSize))")
        }
        if precision == .int8 && calibrationTokens.isEmpty {
            throw LoadError(file: "model", "int8 quantization needs calibration tokens")
        }
        let h = config.hiddenSize
        var yes = [Float](repeating: 0, count: h), no = yes
        yes.withUnsafeMutableBufferPointer { checkpoint.lmHead.copyFloats(into: $0.baseAddress!, offset: Int(yesID) * h, count: h) }
        no.withUnsafeMutableBufferPointer { checkpoint.lmHead.copyFloats(into: $0.baseAddress!, offset: Int(noID) * h, count: h) }
        try self.init(config: config, precision: precision, threads: threads, kernelPath: kernelPath,
                      embedding: checkpoint.embedding,
                      finalNorm: checkpoint.finalNorm.floats(), yesRow: yes, noRow: no, layers: [])
        var built: [DecoderLayer] = []
        var calibration = precision == .int8
            ? Calibration(tokens: calibrationTokens, config: config, embedding: checkpoint.embedding) : nil
        for (index, source) in checkpoint.layers.enumerated() {
            let fp = Self.float32Layer(source)
            if calibration != nil {
                let outliers = calibration!.run(layer: fp, index: index, model: self)
                built.append(try Self.quantized(fp, outliers: outliers, path: self.kernelPath, group: int8Group))
            } else {
                built.append(fp)
            }
            progress?(index + 1, checkpoint.layers.count)
        }
        layers = built
    }

    static func float32Layer(_ l: Qwen3Checkpoint.Layer) -> DecoderLayer {
        DecoderLayer(inputNorm: l.inputNorm.floats(), qkv: Float32Linear(Matrix(stacking: [l.q, l.k, l.v])),
                     qNorm: l.qNorm.floats(), kNorm: l.kNorm.floats(), o: Float32Linear(Matrix(stacking: [l.o])),
                     postNorm: l.postNorm.floats(), gateUp: Float32Linear(Matrix(stacking: [l.gate, l.up])),
                     down: Float32Linear(Matrix(stacking: [l.down])))
    }

    static func quantized(_ fp: DecoderLayer, outliers: [[Int32]], path: KernelPath, group: Int) throws -> DecoderLayer {
        func q(_ l: any LinearLayer, _ site: ProjectionInput) throws -> any LinearLayer {
            try Int8Linear(quantizing: (l as! Float32Linear).weights, outliers: outliers[site.rawValue], path: path, group: group)
        }
        return DecoderLayer(inputNorm: fp.inputNorm, qkv: try q(fp.qkv, .qkv), qNorm: fp.qNorm, kNorm: fp.kNorm,
                            o: try q(fp.o, .o), postNorm: fp.postNorm, gateUp: try q(fp.gateUp, .gateUp),
                            down: try q(fp.down, .down))
    }

    /// A KV cache in a block pool of its own, in `attention`'s precision (fp32: the reference),
    /// for sequences run outside an engine (calibration, benchmarks, tests); copies share
    /// its pool, and the pool's memory goes with the last of them. The model holds no KV memory:
    /// an engine allocates from its own budgeted pool.
    public func makeCache(attention: AttentionPrecision = .fp32) -> KVCache {
        KVCache(pool: KVBlockPool(layerCount: config.layerCount, kvDim: config.kvDim, headDim: config.headDim, precision: attention))
    }

    /// Bytes of weights read from memory-mapped files (a `.sift` file, the embedding table):
    /// not resident at load, but they will be once the model runs.
    public var mappedWeightBytes: Int {
        let linears = layers.reduce(0) { sum, layer in
            sum + layer.linears.reduce(0) { $0 + (($1 as? Int8Linear)?.owner is MappedFile ? $1.weightBytes : 0) }
        }
        return embedding.count * embedding.dtype.byteSize + linears
    }

    /// The files the model reads weights from while it runs (memory-mapped).
    public var mappedFiles: [MappedFile] {
        var files: [ObjectIdentifier: MappedFile] = [ObjectIdentifier(embedding.file): embedding.file]
        for layer in layers {
            for case let owner as MappedFile in layer.linears.compactMap({ ($0 as? Int8Linear)?.owner }) {
                files[ObjectIdentifier(owner)] = owner
            }
        }
        return Array(files.values)
    }

    /// How a file the model runs on changed under it, if one did (see `MappedFile.change`).
    public func mappedFileChange() -> String? {
        for file in mappedFiles { if let change = file.change() { return change } }
        return nil
    }

    /// Query rows per attention kernel call: their queries and outputs (128 KB each at head_dim
    /// 128) stay in L2 beside the keys and values the kernel streams, which come from beyond L2
    /// once per 256 rows (at 64, 4k-token contexts kept the kernel waiting on memory).
    public static let attentionTile = 256

    /// One sequence's share of a step: `tokens` at positions `cache.count...`.
    public struct BatchItem {
        public var tokens: ArraySlice<Int32>
        public var cache: KVCache
        /// Return the final-normed hidden state of the last token (the sequence is complete).
        public var wantHidden: Bool

        public init(tokens: ArraySlice<Int32>, cache: KVCache, wantHidden: Bool) {
            self.tokens = tokens
            self.cache = cache
            self.wantHidden = wantHidden
        }
    }

    /// Runs one packed step over several sequences: the linear layers see all their tokens as
    /// one matrix; attention runs per (sequence, head) against each sequence's own blocks.
    /// Every row is computed exactly as it would be alone, so results never depend on the
    /// batch. Appends each sequence's K/V; returns the hidden state of those that want it.
    /// (`ForwardPass` runs the same step a sublayer at a time.)
    public func forward(_ batch: [BatchItem]) throws -> [[Float]?] {
        let pass = try ForwardPass(model: self, batch: batch)
        while !pass.isComplete { pass.runSublayer() }
        return pass.finish()
    }

    /// Single-sequence convenience over `forward(_:)`.
    @discardableResult
    public func forward(_ tokens: [Int32], cache: KVCache, wantHidden: Bool) throws -> [Float]? {
        try forward([BatchItem(tokens: tokens[...], cache: cache, wantHidden: wantHidden)])[0]
    }

    /// Row buffers of a step that live from one sublayer to the next, from a small free list (one
    /// per step in progress: two when a step runs between the sublayers of another).
    func takeStepRows() -> StepRows {
        freeStepRows.withLock { $0.popLast() } ?? StepRows(config: config)
    }

    func returnStepRows(_ rows: StepRows) {
        freeStepRows.withLock { $0.append(rows) }
    }

    /// logit("yes") − logit("no") of a final hidden state: two dot products accumulated in
    /// double, subtracted once (never from rounded logits).
    public func logitDifference(_ hidden: [Float]) -> Float {
        Float(sift_dot_f64(hidden, yesRow, hidden.count) - sift_dot_f64(hidden, noRow, hidden.count))
    }
}

public enum ModelError: Error, CustomStringConvertible, Equatable {
    case tokenOutOfRange(Int32, vocabularySize: Int)
    case tooLong(Int, limit: Int)

    public var description: String {
        switch self {
        case let .tokenOutOfRange(id, vocab): "token id \(id) is outside the vocabulary (0..<\(vocab))"
        case let .tooLong(n, limit): "sequence of \(n) positions exceeds the model's limit of \(limit)"
        }
    }
}

/// Scratch buffers of one layer (q/k/v, attention output, gate/up, the o and down projections'
/// output, each attention worker's running max and sum), shared by every step of a model: each sublayer
/// starts from a step's `StepRows` and leaves its result there, so nothing here outlives a
/// sublayer. Grown on demand and kept, so large buffers are not re-faulted on every step.
final class Workspace: @unchecked Sendable {
    let config: Qwen3Config
    let threads: Int
    private(set) var tokenCapacity = 0
    private(set) var delta, qkv, attn, gateUp: UnsafeMutablePointer<Float>
    private let attentionScratch: UnsafeMutablePointer<Float>

    init(config: Qwen3Config, threads: Int) {
        self.config = config
        self.threads = threads
        (delta, qkv, attn, gateUp) = (.allocate(capacity: 1), .allocate(capacity: 1), .allocate(capacity: 1), .allocate(capacity: 1))
        attentionScratch = .allocate(capacity: threads * Self.attentionScratchFloats)
    }

    deinit { for p in [delta, qkv, attn, gateUp, attentionScratch] { p.deallocate() } }

    func reserve(tokens t: Int) {
        let c = config
        guard t > tokenCapacity else { return }
        for p in [delta, qkv, attn, gateUp] { p.deallocate() }
        delta = .allocate(capacity: t * c.hiddenSize)
        qkv = .allocate(capacity: t * (c.qDim + 2 * c.kvDim))
        attn = .allocate(capacity: t * c.qDim)
        gateUp = .allocate(capacity: t * 2 * c.intermediateSize)
        tokenCapacity = t
    }

    /// The attention scratch of one worker (`sift_attention`: 2 × rows floats and the query copy).
    static let attentionScratchFloats = sift_attention_scratch_floats(Qwen3Model.attentionTile)
    func attentionScratch(_ worker: Int) -> UnsafeMutablePointer<Float> {
        attentionScratch + worker * Self.attentionScratchFloats
    }
}

/// What a step carries from one sublayer to the next: the residual stream of its rows and each
/// row's rotary cos/sin. Grown on demand and kept (see `Qwen3Model.takeStepRows`).
final class StepRows: @unchecked Sendable {
    let config: Qwen3Config
    private(set) var capacity = 0
    private(set) var x, cos, sin: UnsafeMutablePointer<Float>

    init(config: Qwen3Config) {
        self.config = config
        (x, cos, sin) = (.allocate(capacity: 1), .allocate(capacity: 1), .allocate(capacity: 1))
    }

    deinit { for p in [x, cos, sin] { p.deallocate() } }

    func reserve(rows t: Int) {
        guard t > capacity else { return }
        for p in [x, cos, sin] { p.deallocate() }
        x = .allocate(capacity: t * config.hiddenSize)
        cos = .allocate(capacity: t * config.headDim / 2)
        sin = .allocate(capacity: t * config.headDim / 2)
        capacity = t
    }

    /// Moves row `from` to row `to` (the residual and the angles).
    func moveRow(_ from: Int, to: Int) {
        let h = config.hiddenSize, half = config.headDim / 2
        (x + to * h).update(from: x + from * h, count: h)
        (cos + to * half).update(from: cos + from * half, count: half)
        (sin + to * half).update(from: sin + from * half, count: half)
    }

    /// cos/sin of one row's position, as transformers computes them: angle = Float(position) ·
    /// invFreq in fp32, then cos/sin of that fp32 angle.
    func fillRope(row: Int, position: Int, invFreq: [Float]) {
        let half = invFreq.count
        let p = Float(position)
        for i in 0..<half {
            let angle = p * invFreq[i]
            cos[row * half + i] = Float(Foundation.cos(Double(angle)))
            sin[row * half + i] = Float(Foundation.sin(Double(angle)))
        }
    }
}
