import COpenBLAS
import CSiftKernels
import Foundation

/// Qwen3 decoder in fp32, reading like the maths:
///
///     h = x + o(attention(rope(qNorm(q(norm(x)))), rope(kNorm(k(norm(x)))), v(norm(x))))
///     x' = h + down(silu(gate(norm(h))) * up(norm(h)))
///
/// followed by the final norm and the two output rows "yes" and "no" (the LM head is never
/// computed). Linear layers run through OpenBLAS sgemm.
public final class Qwen3Model: @unchecked Sendable {
    public let config: Qwen3Config
    let layers: [Float32Layer]
    let finalNorm: [Float]
    let embedding: TensorView
    /// Rows of the output projection for the two answer tokens.
    public let yesRow: [Float]
    public let noRow: [Float]
    let invFreq: [Float]

    /// Converts the checked checkpoint to fp32. `yesID`/`noID` select the two output rows.
    public init(checkpoint: Qwen3Checkpoint, yesID: Int32, noID: Int32) throws {
        let config = checkpoint.config
        for id in [yesID, noID] where id < 0 || Int(id) >= config.vocabSize {
            throw LoadError(file: "config.json", "answer token id \(id) is outside the vocabulary (\(config.vocabSize))")
        }
        self.config = config
        embedding = checkpoint.embedding
        let h = config.hiddenSize
        var yes = [Float](repeating: 0, count: h), no = yes
        yes.withUnsafeMutableBufferPointer { checkpoint.lmHead.copyFloats(into: $0.baseAddress!, offset: Int(yesID) * h, count: h) }
        no.withUnsafeMutableBufferPointer { checkpoint.lmHead.copyFloats(into: $0.baseAddress!, offset: Int(noID) * h, count: h) }
        yesRow = yes
        noRow = no
        finalNorm = checkpoint.finalNorm.floats()
        layers = checkpoint.layers.map(Float32Layer.init)
        // As transformers computes it, in fp32: 1 / theta^(2i/d).
        let d = config.headDim
        invFreq = (0..<d / 2).map { i in 1 / powf(Float(config.ropeTheta), Float(2 * i) / Float(d)) }
    }

    public func makeCache(capacity: Int = 256) -> KVCache {
        KVCache(layerCount: config.layerCount, kvDim: config.kvDim, capacity: capacity)
    }

    /// Runs `tokens` at positions `cache.count...`, appending their keys and values to `cache`.
    /// With `wantHidden`, returns the final-normed hidden state of the last token; without it,
    /// the last layer stops after writing K/V (a prefix needs nothing more).
    @discardableResult
    public func forward(_ tokens: [Int32], cache: KVCache, wantHidden: Bool) throws -> [Float]? {
        let t = tokens.count
        guard t > 0 else { return nil }
        for id in tokens where id < 0 || Int(id) >= config.vocabSize {
            throw ModelError.tokenOutOfRange(id, vocabularySize: config.vocabSize)
        }
        let start = cache.count
        guard start + t <= config.maxPositionEmbeddings else {
            throw ModelError.tooLong(start + t, limit: config.maxPositionEmbeddings)
        }
        cache.reserve(start + t)
        let c = config
        let h = c.hiddenSize, d = c.headDim, qkvCols = c.qDim + 2 * c.kvDim, inter = c.intermediateSize
        let eps = Float(c.rmsNormEps)

        var ws = Workspace(tokens: t, context: start + t, config: c)
        defer { ws.free() }
        for (row, id) in tokens.enumerated() {
            embedding.copyFloats(into: ws.x + row * h, offset: Int(id) * h, count: h)
        }
        ws.fillRope(start: start, invFreq: invFreq, tokens: t)

        for (index, layer) in layers.enumerated() {
            let isLast = index == layers.count - 1
            // Attention block: normalise, project q/k/v in one GEMM.
            sift_rmsnorm(ws.x, layer.inputNorm, ws.xn, t, h, h, h, eps)
            gemm(ws.xn, rows: t, layer.qkv, out: ws.qkv)
            for row in 0..<t {
                let q = ws.qkv + row * qkvCols, k = q + c.qDim, v = k + c.kvDim
                sift_rmsnorm(q, layer.qNorm, q, c.headCount, d, d, d, eps)
                sift_rmsnorm(k, layer.kNorm, k, c.kvHeadCount, d, d, d, eps)
                let cosRow = ws.cos + row * (d / 2), sinRow = ws.sin + row * (d / 2)
                sift_rope(q, c.headCount, d, cosRow, sinRow)
                sift_rope(k, c.kvHeadCount, d, cosRow, sinRow)
                (cache.keys[index] + (start + row) * c.kvDim).update(from: k, count: c.kvDim)
                (cache.values[index] + (start + row) * c.kvDim).update(from: v, count: c.kvDim)
            }
            if isLast && !wantHidden { break }
            // In the last layer only the last token matters.
            let first = isLast ? t - 1 : 0
            let rows = t - first
            attention(layer: index, cache: cache, start: start, firstRow: first, rows: rows, ws: &ws)
            let x = ws.x + first * h
            gemm(ws.attn, rows: rows, layer.o, out: ws.xn)
            sift_add_inplace(x, ws.xn, rows * h)
            // MLP block.
            sift_rmsnorm(x, layer.postNorm, ws.xn, rows, h, h, h, eps)
            gemm(ws.xn, rows: rows, layer.gateUp, out: ws.gateUp)
            for row in 0..<rows {
                let g = ws.gateUp + row * 2 * inter
                sift_silu_mul(g, g + inter, ws.act + row * inter, inter)
            }
            gemm(ws.act, rows: rows, layer.down, out: ws.xn)
            sift_add_inplace(x, ws.xn, rows * h)
        }
        cache.commit(t)
        guard wantHidden else { return nil }
        var out = [Float](repeating: 0, count: h)
        out.withUnsafeMutableBufferPointer { sift_rmsnorm(ws.x + (t - 1) * h, finalNorm, $0.baseAddress!, 1, h, h, h, eps) }
        return out
    }

    /// logit("yes") − logit("no") of a final hidden state: two dot products accumulated in
    /// double, subtracted once (never from rounded logits).
    public func logitDifference(_ hidden: [Float]) -> Float {
        Float(sift_dot_f64(hidden, yesRow, hidden.count) - sift_dot_f64(hidden, noRow, hidden.count))
    }

    /// y[rows, w.rows] = x[rows, w.cols] · wᵀ
    private func gemm(_ x: UnsafePointer<Float>, rows: Int, _ w: Matrix, out: UnsafeMutablePointer<Float>) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(w.rows), Int32(w.cols),
                    1, x, Int32(w.cols), w.data, Int32(w.cols), 0, out, Int32(w.rows))
    }

    /// Causal grouped-query attention for query rows [firstRow, firstRow + rows) of this step,
    /// against every cached position up to each row's own. Processed in tiles of query rows so
    /// the score buffer stays small even for 32k-token contexts.
    private func attention(layer: Int, cache: KVCache, start: Int, firstRow: Int, rows: Int, ws: inout Workspace) {
        let c = config
        let d = c.headDim, qkvCols = c.qDim + 2 * c.kvDim
        let group = c.headCount / c.kvHeadCount
        let scale = 1 / sqrtf(Float(d))
        let keys = cache.keys[layer], values = cache.values[layer]
        var tileStart = 0
        while tileStart < rows {
            let tile = min(Workspace.attentionTile, rows - tileStart)
            let r0 = firstRow + tileStart
            let context = start + r0 + tile  // keys visible to the tile's last row
            for head in 0..<c.headCount {
                let g = head / group
                let q = ws.qkv + r0 * qkvCols + head * d
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tile), Int32(context), Int32(d),
                            scale, q, Int32(qkvCols), keys + g * d, Int32(c.kvDim), 0, ws.scores, Int32(context))
                for i in 0..<tile {
                    let row = ws.scores + i * context
                    let visible = start + r0 + i + 1
                    sift_softmax_row(row, visible)
                    if visible < context { (row + visible).update(repeating: 0, count: context - visible) }
                }
                let out = ws.attn + (tileStart) * c.qDim + head * d
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(tile), Int32(d), Int32(context),
                            1, ws.scores, Int32(context), values + g * d, Int32(c.kvDim), 0, out, Int32(c.qDim))
            }
            tileStart += tile
        }
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

/// Activation buffers of one forward call, allocated once per call (never per layer).
struct Workspace {
    static let attentionTile = 64
    let x, xn, qkv, attn, gateUp, act, scores, cos, sin: UnsafeMutablePointer<Float>

    init(tokens t: Int, context: Int, config c: Qwen3Config) {
        x = .allocate(capacity: t * c.hiddenSize)
        xn = .allocate(capacity: t * max(c.hiddenSize, c.qDim))
        qkv = .allocate(capacity: t * (c.qDim + 2 * c.kvDim))
        attn = .allocate(capacity: t * c.qDim)
        gateUp = .allocate(capacity: t * 2 * c.intermediateSize)
        act = .allocate(capacity: t * c.intermediateSize)
        scores = .allocate(capacity: Self.attentionTile * context)
        cos = .allocate(capacity: t * c.headDim / 2)
        sin = .allocate(capacity: t * c.headDim / 2)
    }

    /// cos/sin of every (position, frequency) of this step, as transformers computes them:
    /// angle = Float(position) · invFreq in fp32, then cos/sin of that fp32 angle.
    func fillRope(start: Int, invFreq: [Float], tokens: Int) {
        let half = invFreq.count
        for row in 0..<tokens {
            let position = Float(start + row)
            for i in 0..<half {
                let angle = position * invFreq[i]
                cos[row * half + i] = Float(Foundation.cos(Double(angle)))
                sin[row * half + i] = Float(Foundation.sin(Double(angle)))
            }
        }
    }

    func free() {
        for p in [x, xn, qkv, attn, gateUp, act, scores, cos, sin] { p.deallocate() }
    }
}
