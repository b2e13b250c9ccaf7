import CSiftKernels
import Foundation

/// The model's one driver: a packed step over several sequences, run a sublayer at a time (each
/// layer's attention half, then its MLP half: `DecoderSublayers`, below), on the model's weights
/// and scratch (`Qwen3Model` holds those and nothing that runs). `Qwen3Model.forward` runs a pass
/// straight through; the scheduler drives one itself, so that it can act between sublayers: notice a cancelled
/// sequence and drop its rows (the rest go on unchanged), or run another, more urgent step to
/// completion before resuming this one.
///
/// A pass owns the rows it carries from sublayer to sublayer (`StepRows`); everything else a
/// sublayer touches is scratch it leaves behind, so passes interleave at sublayer boundaries.
/// Each row is computed exactly as in an uninterrupted pass: the same kernels see the same
/// inputs, only the row's position in the batch changes, and no kernel depends on it.
public final class ForwardPass {
    let model: Qwen3Model
    private var state: StepRows?
    private var layout: Layout
    /// The batch index of each span (spans of dropped items are gone).
    private var itemOfSpan: [Int] = []
    private let itemCount: Int
    private var rows: Int { layout.rows }
    /// Rows going on to the MLP half of the layer whose attention half ran last.
    private var mlpRows = 0
    public private(set) var sublayersDone = 0

    /// Checks the batch and lays its rows out (embeddings and rotary angles). Throws on a token
    /// outside the vocabulary or a sequence longer than the model's limit.
    public init(model: Qwen3Model, batch: [Qwen3Model.BatchItem]) throws {
        self.model = model
        itemCount = batch.count
        let config = model.config
        var rows = 0
        for item in batch {
            for id in item.tokens where id < 0 || Int(id) >= config.vocabSize {
                throw ModelError.tokenOutOfRange(id, vocabularySize: config.vocabSize)
            }
            let end = item.cache.count + item.tokens.count
            guard end <= config.maxPositionEmbeddings else {
                throw ModelError.tooLong(end, limit: config.maxPositionEmbeddings)
            }
            rows += item.tokens.count
        }
        let h = config.hiddenSize
        let state = model.takeStepRows()
        state.reserve(rows: rows)
        self.state = state
        var row = 0
        var spans: [Span] = []
        for (index, item) in batch.enumerated() {
            item.cache.reserve(item.cache.count + item.tokens.count)
            let span = Span(cache: item.cache, firstRow: row, start: item.cache.count, count: item.tokens.count,
                                       finish: item.wantHidden && !item.tokens.isEmpty)
            spans.append(span)
            itemOfSpan.append(index)
            for (offset, id) in item.tokens.enumerated() {
                model.embedding.copyFloats(into: state.x + row * h, offset: Int(id) * h, count: h)
                state.fillRope(row: row, position: span.start + offset, invFreq: model.invFreq)
                row += 1
            }
        }
        layout = Layout(spans: spans)
    }

    /// A sequence's rows within a step.
    struct Span {
        let cache: KVCache
        var firstRow: Int
        let start: Int   // position of the first row
        let count: Int
        let finish: Bool // its last row goes through the whole last layer
    }

    /// A rectangle of attention work: `rows` query rows of a span from its row `firstRow`,
    /// written to output rows from `outRow`.
    struct AttentionTask {
        let span: Int
        let firstRow: Int
        let rows: Int
        let outRow: Int
    }

    /// What every sublayer of a step needs to know about its rows, built once per step (and
    /// again when rows are dropped), so the layers themselves allocate nothing: the spans, the
    /// KV block table of each (their caches are reserved before the step, so blocks do not
    /// change during it), and the attention work of the layers (every row, in tiles of at most
    /// `attentionTile` rows, those that see the most keys first: handed out in this order, the
    /// longest go first and the shortest even out the end) and of the last layer (each
    /// finishing span's last row, packed to the top, in span order).
    struct Layout {
        let spans: [Span]
        let rows: Int
        /// Block base pointers, span after span; span n's start at `tableStart[n]`.
        let blockTable: [UnsafeRawPointer?]
        let tableStart: [Int]
        let attention: [AttentionTask]
        let lastAttention: [AttentionTask]

        init(spans: [Span]) {
            self.spans = spans
            var table: [UnsafeRawPointer?] = [], starts: [Int] = []
            var all: [AttentionTask] = [], last: [AttentionTask] = []
            var rows = 0
            for (n, span) in spans.enumerated() {
                starts.append(table.count)
                table.append(contentsOf: span.cache.blocks.lazy.map { UnsafeRawPointer($0.base) })
                rows += span.count
                guard span.count > 0 else { continue }
                for first in stride(from: 0, to: span.count, by: Qwen3Model.attentionTile) {
                    all.append(AttentionTask(span: n, firstRow: first, rows: min(Qwen3Model.attentionTile, span.count - first),
                                             outRow: span.firstRow + first))
                }
                if span.finish { last.append(AttentionTask(span: n, firstRow: span.count - 1, rows: 1, outRow: last.count)) }
            }
            // Keys a tile's last row sees: its cost, near enough (a tile's rows see about as many).
            func keys(_ task: AttentionTask) -> Int { spans[task.span].start + task.firstRow + task.rows }
            all.sort { keys($0) > keys($1) }
            (self.rows, blockTable, tableStart, attention, lastAttention) = (rows, table, starts, all, last)
        }
    }

    deinit { if let state { model.returnStepRows(state) } }

    /// Two per decoder layer: its attention half, then its MLP half.
    public var sublayerCount: Int { 2 * model.layers.count }
    public var isComplete: Bool { sublayersDone == sublayerCount || rows == 0 }
    /// Rows can be dropped before the next sublayer: anywhere but inside the last layer, whose
    /// attention half packs the finishing rows.
    public var canDrop: Bool { !isComplete && sublayersDone != sublayerCount - 1 }

    /// Runs the next sublayer.
    public func runSublayer() {
        precondition(!isComplete, "the pass is complete")
        let index = sublayersDone / 2
        let layer = model.layers[index]
        let sublayers = DecoderSublayers(model: model, state: state!, layout: layout)
        if sublayersDone % 2 == 0 {
            mlpRows = sublayers.attentionHalf(layer, index: index, last: index == model.layers.count - 1)
        } else if mlpRows > 0 {
            sublayers.mlpHalf(layer, rows: mlpRows)
        }
        sublayersDone += 1
    }

    /// Drops the rows of the batch items `dropped` (indices into the batch) before the next
    /// sublayer (`canDrop`): their K/V stop growing and they cost nothing more; their results are
    /// nil. The K/V they already wrote are not committed (the caller frees those caches).
    /// Returns the number of rows dropped.
    @discardableResult
    public func drop(_ dropped: Set<Int>) -> Int {
        precondition(canDrop, "rows can be dropped only between sublayers, and not inside the last layer")
        guard itemOfSpan.contains(where: { dropped.contains($0) }) else { return 0 }
        var keptSpans: [Span] = [], keptItems: [Int] = []
        var row = 0
        for (span, item) in zip(layout.spans, itemOfSpan) where !dropped.contains(item) {
            var moved = span
            moved.firstRow = row
            if span.firstRow != row {
                // Rows only move up, in order, so a source row is never overwritten before it moves.
                for r in 0..<span.count { state!.moveRow(span.firstRow + r, to: row + r) }
            }
            row += span.count
            keptSpans.append(moved)
            keptItems.append(item)
        }
        let before = rows
        layout = Layout(spans: keptSpans)
        itemOfSpan = keptItems
        return before - row
    }

    /// After the last sublayer: commits the K/V each remaining sequence appended and returns, by
    /// batch index, the final-normed hidden state of those that wanted it (nil for the others
    /// and for dropped items). The pass's rows go back to the model for the next step.
    public func finish() -> [[Float]?] {
        precondition(isComplete, "sublayers are left to run")
        let h = model.config.hiddenSize
        var outputs = [[Float]?](repeating: nil, count: itemCount)
        // After the last layer, finishing sequences' rows are packed at the top of x.
        var packed = 0
        for (span, item) in zip(layout.spans, itemOfSpan) {
            span.cache.commit(span.count)
            guard span.finish else { continue }
            var out = [Float](repeating: 0, count: h)
            out.withUnsafeMutableBufferPointer {
                sift_rmsnorm(state!.x + packed * h, model.finalNorm, $0.baseAddress!, 1, h, h, h, Float(model.config.rmsNormEps))
            }
            outputs[item] = out
            packed += 1
        }
        model.returnStepRows(state!)
        state = nil
        layout = Layout(spans: [])
        itemOfSpan = []
        return outputs
    }
}

/// The two halves of a decoder layer over a step's rows (`StepRows`, laid out by `Layout`):
/// what `ForwardPass` runs sublayer by sublayer, and calibration runs layer by layer as a model
/// loads (observing the projections' inputs through `ObservedLinear`, not through the hot path).
struct DecoderSublayers {
    let model: Qwen3Model
    let state: StepRows
    let layout: ForwardPass.Layout
    typealias AttentionTask = ForwardPass.AttentionTask

    /// One decoder layer: its attention half, then its MLP half.
    func run(_ layer: DecoderLayer, index: Int, last: Bool) {
        let rows = attentionHalf(layer, index: index, last: last)
        if rows > 0 { mlpHalf(layer, rows: rows) }
    }

    /// The attention half of a layer: x += o(attention(rope(qNorm(q(norm(x)))), …)). In the last
    /// layer, K/V are written for every row but only the last row of each finishing sequence goes
    /// on through attention output and MLP; those rows are packed at the top of x. Returns the
    /// rows that go on to the MLP half. Only x is left for the MLP half: a step can pause here.
    func attentionHalf(_ layer: DecoderLayer, index: Int, last: Bool) -> Int {
        let c = model.config, ws = model.workspace, pool = model.pool, x = state.x, t = layout.rows, spans = layout.spans
        ws.reserve(tokens: t)
        let h = c.hiddenSize, d = c.headDim, qkvCols = c.qDim + 2 * c.kvDim
        let eps = Float(c.rmsNormEps), simd = model.kernelPath.simd
        // Attention block: project norm(x) to q/k/v in one GEMM.
        project(layer.qkv, .rmsNorm(x, weight: layer.inputNorm, eps: eps), rows: t, out: ws.qkv)
        pool.run { i in
            for span in spans {
                let mine = pool.range(i, of: span.count)
                for r in mine {
                    let row = span.firstRow + r
                    let q = ws.qkv + row * qkvCols, k = q + c.qDim, v = k + c.kvDim
                    sift_rmsnorm(q, layer.qNorm, q, c.headCount, d, d, d, eps)
                    sift_rmsnorm(k, layer.kNorm, k, c.kvHeadCount, d, d, d, eps)
                    let cosRow = state.cos + row * (d / 2), sinRow = state.sin + row * (d / 2)
                    sift_rope(q, c.headCount, d, cosRow, sinRow)
                    sift_rope(k, c.kvHeadCount, d, cosRow, sinRow)
                    span.cache.store(layer: index, position: span.start + r, key: k, value: v, simd: simd)
                }
            }
        }
        // Which query rows continue: all of them, or in the last layer each finishing
        // sequence's last row (packed to the top).
        let tasks = last ? layout.lastAttention : layout.attention
        if tasks.isEmpty { return 0 }
        attention(layer: index, tasks: tasks)
        if last {
            // Pack the residual rows of finishing sequences to the top of x (in span order,
            // so a destination row never overwrites a source row not yet moved).
            for task in tasks {
                let from = spans[task.span].firstRow + task.firstRow
                if from != task.outRow { (x + task.outRow * h).update(from: x + from * h, count: h) }
            }
        }
        let rows = last ? tasks.count : t
        project(layer.o, .rows(ws.attn), rows: rows, out: ws.delta)
        pool.run { i in
            let r = pool.range(i, of: rows)
            guard !r.isEmpty else { return }
            sift_add_inplace(x + r.lowerBound * h, ws.delta + r.lowerBound * h, r.count * h)
        }
        return rows
    }

    /// The MLP half of a layer over the first `rows` rows: x += down(silu(gate(norm(x))) * up(norm(x))).
    func mlpHalf(_ layer: DecoderLayer, rows: Int) {
        let c = model.config, ws = model.workspace, pool = model.pool, x = state.x
        let h = c.hiddenSize
        let eps = Float(c.rmsNormEps)
        ws.reserve(tokens: rows)
        project(layer.gateUp, .rmsNorm(x, weight: layer.postNorm, eps: eps), rows: rows, out: ws.gateUp)
        project(layer.down, .siluMul(ws.gateUp, simd: model.kernelPath.simd), rows: rows, out: ws.delta)
        pool.run { i in
            let r = pool.range(i, of: rows)
            guard !r.isEmpty else { return }
            sift_add_inplace(x + r.lowerBound * h, ws.delta + r.lowerBound * h, r.count * h)
        }
    }

    /// out = input · Wᵀ (the layer computes its input rows as it reads them).
    private func project(_ linear: any LinearLayer, _ input: LinearInput, rows: Int, out: UnsafeMutablePointer<Float>) {
        linear.apply(input, rows: rows, out: out, pool: model.pool, scratch: model.linearScratch)
    }

    /// Causal grouped-query attention (sift_attention: a fixed order per row, so the result
    /// never depends on tiling, chunking or batching). Work items are (task, head) pairs, a
    /// task being at most `attentionTile` rows, handed to the workers as they come free.
    private func attention(layer: Int, tasks: [AttentionTask]) {
        let c = model.config, ws = model.workspace, pool = model.pool, spans = layout.spans
        let d = c.headDim, qkvCols = c.qDim + 2 * c.kvDim
        let group = c.headCount / c.kvHeadCount
        let scale = 1 / sqrtf(Float(d))
        let simd = model.kernelPath.simd
        let units = tasks.count * c.headCount
        layout.blockTable.withUnsafeBufferPointer { table in
            pool.run(units: units) { unit, worker in
                let task = tasks[unit / c.headCount], head = unit % c.headCount
                let span = spans[task.span]
                let blocks = UnsafeRawPointer(table.baseAddress! + layout.tableStart[task.span])
                let kv = span.cache.pool
                let kOff = kv.keyOffset(layer), vOff = kv.valueOffset(layer)
                let r0 = task.firstRow
                let q = ws.qkv + (span.firstRow + r0) * qkvCols + head * d, out = ws.attn + task.outRow * c.qDim + head * d
                switch kv.precision {
                case .fp32:
                    sift_attention(simd, q, qkvCols, task.rows, span.start + r0,
                                   blocks.assumingMemoryBound(to: UnsafePointer<Float>?.self), kOff, vOff, head / group, d, scale,
                                   out, c.qDim, ws.attentionScratch(worker))
                case .bf16:
                    sift_attention_bf16(simd, 1, q, qkvCols, task.rows, span.start + r0,
                                        blocks.assumingMemoryBound(to: UnsafePointer<UInt16>?.self), kOff, vOff, head / group, d, scale,
                                        out, c.qDim, ws.attentionScratch(worker))
                case .int8:
                    sift_attention_i8(simd, q, qkvCols, task.rows, span.start + r0,
                                      blocks.assumingMemoryBound(to: UnsafePointer<Int8>?.self), kOff, vOff, kv.scaleOffset(layer),
                                      head / group, d, scale, out, c.qDim, ws.attentionScratch(worker))
                }
            }
        }
    }
}
