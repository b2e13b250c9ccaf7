import CSiftKernels

/// One packed step of `Qwen3Model.forward`, run a sublayer at a time (each layer's attention half,
/// then its MLP half), so that whoever drives it can act between sublayers: notice a cancelled
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
    private var layout: Qwen3Model.StepLayout
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
        var spans: [Qwen3Model.Span] = []
        for (index, item) in batch.enumerated() {
            item.cache.reserve(item.cache.count + item.tokens.count)
            let span = Qwen3Model.Span(cache: item.cache, firstRow: row, start: item.cache.count, count: item.tokens.count,
                                       finish: item.wantHidden && !item.tokens.isEmpty)
            spans.append(span)
            itemOfSpan.append(index)
            for (offset, id) in item.tokens.enumerated() {
                model.embedding.copyFloats(into: state.x + row * h, offset: Int(id) * h, count: h)
                state.fillRope(row: row, position: span.start + offset, invFreq: model.invFreq)
                row += 1
            }
        }
        layout = Qwen3Model.StepLayout(spans: spans)
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
        if sublayersDone % 2 == 0 {
            mlpRows = model.attentionHalf(layer, index: index, state: state!, layout: layout,
                                          last: index == model.layers.count - 1, observer: nil)
        } else if mlpRows > 0 {
            model.mlpHalf(layer, state: state!, rows: mlpRows, observer: nil)
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
        var keptSpans: [Qwen3Model.Span] = [], keptItems: [Int] = []
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
        layout = Qwen3Model.StepLayout(spans: keptSpans)
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
        layout = Qwen3Model.StepLayout(spans: [])
        itemOfSpan = []
        return outputs
    }
}
