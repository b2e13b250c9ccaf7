import CSiftKernels
import Foundation
import SiftBase

/// Finds each projection's outlier input channels: a few channels whose activations are far
/// larger than the rest (real LLMs have them; make_model.py --outliers plants them). Quantizing
/// them per token with the others would set every token's scale and crush the small channels, so
/// they are computed in fp32 beside the int8 GEMM (docs/QUANTIZATION.md).
///
/// The calibration text runs through the fp32 model one layer at a time, as each layer is
/// loaded; the channel statistics of each projection's input pick its outliers. The choice is
/// static (fixed at load), so scores never depend on what else is in a batch.
struct Calibration {
    /// A channel is an outlier when its max |activation| exceeds this multiple of the median
    /// channel's. Measured (docs/QUANTIZATION.md): 8× and 4× left the tiny fixture outside the
    /// Q8_0 parity gate (mean 0.090 and 0.049, max 0.54 and 0.23); 2× gives 0.038 / 0.19.
    static let threshold: Float = 2
    /// At most this many outlier channels per projection input.
    static let maxOutliers = 16

    let tokens: Int
    let config: Qwen3Config
    /// Hidden states of the calibration tokens entering the next layer, and their rotary angles.
    let rows: StepRows
    /// K/V of the calibration sequence (each layer writes its own slice).
    var cache: KVCache?

    init(tokens ids: [Int32], config: Qwen3Config, embedding: TensorView) {
        let h = config.hiddenSize
        tokens = ids.count
        self.config = config
        rows = StepRows(config: config)
        rows.reserve(rows: ids.count)
        let invFreq = Qwen3Model.rotaryInverseFrequencies(config)
        for (row, id) in ids.enumerated() {
            embedding.copyFloats(into: rows.x + row * h, offset: Int(id) * h, count: h)
            rows.fillRope(row: row, position: row, invFreq: invFreq)
        }
    }

    /// Runs the fp32 `layer` (number `index`) on the calibration states, advances them, and
    /// returns the outlier channels (ascending) of each projection input, by `ProjectionInput`.
    mutating func run(layer: DecoderLayer, index: Int, model: Qwen3Model) -> [[Int32]] {
        let t = tokens
        let found = Locked([[Int32]](repeating: [], count: ProjectionInput.allCases.count))
        func observed(_ linear: any LinearLayer, _ site: ProjectionInput) -> any LinearLayer {
            ObservedLinear(linear) { x, rows, cols in
                let channels = Self.outlierChannels(x, rows: rows, cols: cols)
                found.withLock { $0[site.rawValue] = channels }
            }
        }
        let watched = DecoderLayer(inputNorm: layer.inputNorm, qkv: observed(layer.qkv, .qkv), qNorm: layer.qNorm,
                                   kNorm: layer.kNorm, o: observed(layer.o, .o), postNorm: layer.postNorm,
                                   gateUp: observed(layer.gateUp, .gateUp), down: observed(layer.down, .down))
        if cache == nil { cache = model.makeCache() }
        cache!.reserve(t)
        let span = ForwardPass.Span(cache: cache!, firstRow: 0, start: 0, count: t, finish: false)
        DecoderSublayers(model: model, state: rows, layout: ForwardPass.Layout(spans: [span])).run(watched, index: index, last: false)
        return found.withLock { $0 }
    }

    static func outlierChannels(_ x: UnsafePointer<Float>, rows: Int, cols: Int) -> [Int32] {
        var peak = [Float](repeating: 0, count: cols)
        for r in 0..<rows {
            for j in 0..<cols { peak[j] = max(peak[j], abs(x[r * cols + j])) }
        }
        let median = peak.sorted()[cols / 2]
        let candidates = (0..<cols).filter { peak[$0] > threshold * median }
            .sorted { peak[$0] > peak[$1] }
            .prefix(maxOutliers)
        return candidates.sorted().map { Int32($0) }
    }
}

/// A linear layer whose fp32 input rows are shown to `observe` before it runs: how calibration
/// sees what each projection reads, without a parameter on the serving path.
final class ObservedLinear: LinearLayer, @unchecked Sendable {
    let base: any LinearLayer
    let observe: (UnsafePointer<Float>, _ rows: Int, _ cols: Int) -> Void

    init(_ base: any LinearLayer, observe: @escaping (UnsafePointer<Float>, Int, Int) -> Void) {
        self.base = base
        self.observe = observe
    }

    var inputs: Int { base.inputs }
    var outputs: Int { base.outputs }
    var weightBytes: Int { base.weightBytes }

    func apply(_ input: LinearInput, rows: Int, out: UnsafeMutablePointer<Float>, pool: WorkerPool, scratch: LinearScratch) {
        // A computed input (norm(x), silu(gate)·up) is written out for the observer first.
        var written: UnsafeMutablePointer<Float>?
        defer { written?.deallocate() }
        let x = input.allRows(rows, cols: inputs, pool: pool) {
            written = .allocate(capacity: rows * inputs)
            return written!
        }
        observe(x, rows, inputs)
        base.apply(.rows(x), rows: rows, out: out, pool: pool, scratch: scratch)
    }
}
