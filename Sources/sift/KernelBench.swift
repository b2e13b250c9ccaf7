import ArgumentParser
import CSiftKernels
import Foundation
import Qwen3

struct KernelBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "int8 GEMM throughput per 0.6B projection shape vs the machine's measured int8 peak; causal attention (fp32, bf16 and int8) vs the peak of the unit it runs on.")

    @Option(help: "Worker threads.") var threads: Int = WorkerPool.defaultThreadCount
    @Option(help: "Token counts (M) to measure, comma-separated.") var tokens: String = "16,64,256,512,2048"
    @Option(help: "Outlier channels per layer (fp32 beside the int8 GEMM).") var outliers: Int = 16
    @Option(help: "Context lengths for causal attention (0.6B heads), comma-separated; empty: none.") var attentionContexts: String = "512,4096"

    func validate() throws {
        guard threads > 0, outliers >= 0, outliers <= 256 else { throw ValidationError("--threads must be positive, --outliers in 0...256") }
        for field in attentionContexts.split(separator: ",") {
            guard let n = Int(field), (1...131_072).contains(n) else {
                throw ValidationError("--attention-contexts: '\(field)' is not a context length in 1...131072")
            }
        }
    }

    func run() throws {
        try reportingErrors {
            let path = try KernelPath.selected()
            let pool = WorkerPool(threads: threads)
            let peaks = Peaks(path: path, pool: pool)
            let peak = peaks.int8
            if path != .portable {
                print(String(format: "kernel %@, %d threads: int8 peak (register-only loop of its dot instructions, best of 3) %.0f GOPS", path.rawValue, threads, peak))
            }
            let shapes: [(String, Int, Int)] = [("qkv", 4096, 1024), ("o", 1024, 2048), ("gate_up", 6144, 1024), ("down", 1024, 3072)]
            let ms = tokens.split(separator: ",").compactMap { Int($0) }
            print("shape      N     K      M    GOPS   % of peak   (best of ≥10 runs, quantization and outliers included)")
            let scratch = LinearScratch()
            for (name, n, k) in shapes {
                let w = Matrix(rows: n, cols: k)
                var seed: UInt64 = 1
                for i in 0..<(n * k) {
                    seed = seed &* 6364136223846793005 &+ 1442695040888963407
                    w.data[i] = Float(Int64(bitPattern: seed >> 11) % 2000) / 100_000
                }
                let layer = try Int8Linear(quantizing: w, outliers: (0..<Int32(outliers)).map { $0 * 7 }, path: path)
                for m in ms {
                    let x = UnsafeMutablePointer<Float>.allocate(capacity: m * k)
                    let y = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
                    defer { x.deallocate(); y.deallocate() }
                    for i in 0..<(m * k) { x[i] = Float(i % 97) / 50 - 1 }
                    layer.apply(.rows(x), rows: m, out: y, pool: pool, scratch: scratch)
                    var best = Double.infinity
                    for _ in 0..<max(10, 2_000_000_000 / (m * n * k)) {
                        let start = now()
                        layer.apply(.rows(x), rows: m, out: y, pool: pool, scratch: scratch)
                        best = min(best, now() - start)
                    }
                    let gops = Double(2 * m * n * k) / best / 1e9
                    print(String(format: "%-8@ %5d %5d %6d %7.0f   %5.1f%%", name, n, k, m, gops, peak > 0 ? 100 * gops / peak : 0))
                }
            }
            try attention(path: path, pool: pool, peaks: peaks)
        }
    }

    /// Causal attention of one 0.6B layer (16 query heads, 8 KV heads of 128) over a whole
    /// sequence, as a prefill step runs it (heads over the workers, rows in tiles), against
    /// the fp32 FMA peak of a register-only loop at the path's vector width.
    func attention(path: KernelPath, pool: WorkerPool, peaks: Peaks) throws {
        let contexts = attentionContexts.split(separator: ",").compactMap { Int($0) }  // checked by validate()
        guard !contexts.isEmpty else { return }
        let threads = pool.threadCount
        let (fmaPeak, bf16Peak) = (peaks.fma, peaks.bf16)
        print(String(format: "fp32 FMA peak (register-only loop, best of 3): %.0f GFLOPS", fmaPeak))
        if bf16Peak > 0 { print(String(format: "bf16 dot peak (vdpbf16ps, register-only loop, best of 3): %.0f GFLOPS", bf16Peak)) }
        if peaks.int8 > 0 { print(String(format: "int8 dot peak (%@, register-only loop, best of 3): %.0f GOPS", path.rawValue, peaks.int8)) }
        print("attention  context   kind   GFLOPS   % of its unit's peak   (QKᵀ and PV, causal; softmax included; best of 3)")
        let heads = 16, kvHeads = 8, d = 128, kvDim = kvHeads * d, qDim = heads * d
        let block = Int(SIFT_KEY_BLOCK), tile = Qwen3Model.attentionTile
        for n in contexts {
            for kind in AttentionPrecision.allCases {
                let blocks = (n + block - 1) / block, blockElements = 2 * block * kvDim
                // int8 blocks end with each head's 16 key scales, key sums and value scales.
                let scaleBytes = kvHeads * kind.scaleBytesPerHead
                let blockBytes = blockElements * kind.elementBytes + scaleBytes
                let kv = UnsafeMutableRawPointer.allocate(byteCount: blocks * blockBytes, alignment: 64)
                let q = UnsafeMutablePointer<Float>.allocate(capacity: n * qDim)
                let out = UnsafeMutablePointer<Float>.allocate(capacity: n * qDim)
                let scratchFloats = sift_attention_scratch_floats(tile)
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: threads * scratchFloats)
                defer { kv.deallocate(); q.deallocate(); out.deallocate(); scratch.deallocate() }
                switch kind {
                case .fp32:
                    let f = kv.assumingMemoryBound(to: Float.self)
                    for i in 0..<(blocks * blockElements) { f[i] = Float(i % 89) / 89 - 0.5 }
                case .bf16:
                    let h = kv.assumingMemoryBound(to: UInt16.self)
                    for i in 0..<(blocks * blockElements) { h[i] = UInt16(truncatingIfNeeded: (Float(i % 89) / 89 - 0.5).bitPattern >> 16) }
                case .int8:
                    for b in 0..<blocks {
                        let base = kv + b * blockBytes
                        let bytes = base.assumingMemoryBound(to: Int8.self)
                        for i in 0..<blockElements { bytes[i] = Int8(i % 89 - 44) }
                        let scales = (base + blockElements).assumingMemoryBound(to: Float.self)
                        for i in 0..<(scaleBytes / 4) { scales[i] = 0.01 }
                    }
                }
                for i in 0..<(n * qDim) { q[i] = Float(i % 83) / 83 - 0.5 }
                let table: [UnsafeRawPointer?] = (0..<blocks).map { UnsafeRawPointer(kv + $0 * blockBytes) }
                let scale = 1 / Float(d).squareRoot()
                var best = Double.infinity
                for _ in 0..<3 {
                    let start = now()
                    table.withUnsafeBufferPointer { t in
                        let blocksPointer = UnsafeRawPointer(t.baseAddress!)
                        // As the model hands it out: (row tile, head) units, the tiles that see most keys first.
                        let tiles = (n + tile - 1) / tile
                        pool.run(units: tiles * heads) { unit, worker in
                            let r0 = (tiles - 1 - unit / heads) * tile, head = unit % heads
                            let rows = min(tile, n - r0), g = head / (heads / kvHeads)
                            switch kind {
                            case .fp32:
                                sift_attention(path.simd, q + r0 * qDim + head * d, qDim, rows, r0,
                                               blocksPointer.assumingMemoryBound(to: UnsafePointer<Float>?.self),
                                               0, block * kvDim, g, d, scale, out + r0 * qDim + head * d, qDim, scratch + worker * scratchFloats)
                            case .bf16:
                                sift_attention_bf16(path.simd, 1, q + r0 * qDim + head * d, qDim, rows, r0,
                                                    blocksPointer.assumingMemoryBound(to: UnsafePointer<UInt16>?.self),
                                                    0, block * kvDim, g, d, scale, out + r0 * qDim + head * d, qDim, scratch + worker * scratchFloats)
                            case .int8:
                                sift_attention_i8(path.simd, q + r0 * qDim + head * d, qDim, rows, r0,
                                                  blocksPointer.assumingMemoryBound(to: UnsafePointer<Int8>?.self),
                                                  0, block * kvDim, blockElements, g, d, scale, out + r0 * qDim + head * d, qDim,
                                                  scratch + worker * scratchFloats)
                            }
                        }
                    }
                    best = min(best, now() - start)
                }
                let flops = Peaks.attentionFLOPs(tokens: n, heads: heads, d: d)
                let peak = peaks.attention(kind)
                print(String(format: "attention  %7d   %@  %7.0f   %5.1f%%", n, kind.rawValue, flops / best / 1e9, 100 * flops / best / 1e9 / peak))
            }
        }
    }
}
