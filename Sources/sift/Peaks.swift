import CSiftKernels
import Qwen3

/// The machine's peaks, measured now on every worker with register-only loops of the
/// instructions the kernels use (the machines are shared and noisy: best of 3). The speed
/// benchmarks report against them, measured in the same run.
struct Peaks {
    /// int8 ops/s of the GEMM's dot instructions on `path` (0 on the portable path).
    let int8: Double
    /// fp32 FLOPS of FMAs at the path's vector width.
    let fma: Double
    /// FLOPS of vdpbf16ps (0 where the CPU has none).
    let bf16: Double
    let path: KernelPath

    init(path: KernelPath, pool: WorkerPool, iterations: Int = 20_000_000) {
        func best(_ loop: () -> Void, ops: Int) -> Double {
            var top = 0.0
            for _ in 0..<3 {
                let start = now()
                pool.run { _ in loop() }
                top = max(top, Double(ops * pool.threadCount) / (now() - start) / 1e9)
            }
            return top
        }
        self.path = path
        int8 = path == .portable ? 0
            : best({ _ = sift_int8_peak_loop(path.cValue, iterations) }, ops: sift_int8_peak_ops(path.cValue, iterations))
        fma = best({ _ = sift_fma_peak_loop(path.simd, iterations) }, ops: sift_fma_peak_flops(path.simd, iterations))
        let bf16Ops = sift_bf16_peak_flops(iterations)
        bf16 = bf16Ops == 0 ? 0 : best({ _ = sift_bf16_peak_loop(iterations) }, ops: bf16Ops)
    }

    /// The peak of the unit attention runs on: vdpbf16ps for bf16 on the AVX-512 path of a CPU
    /// with it; the int8 dot instructions for int8 (vpdpbusd, or AVX2's sequence); FMAs
    /// otherwise (the bf16 twins widen to fp32 and use FMAs).
    func attention(_ precision: AttentionPrecision) -> Double {
        switch precision {
        case .int8 where int8 > 0: int8
        case .bf16 where attentionOnBF16Unit(precision): bf16
        default: fma
        }
    }

    func attentionOnBF16Unit(_ precision: AttentionPrecision) -> Bool {
        precision == .bf16 && bf16 > 0 && path.simd == SIFT_SIMD_AVX512
    }

    /// The unit attention of `precision` runs on, as `attention` counts it.
    func attentionUnit(_ precision: AttentionPrecision) -> String {
        switch precision {
        case .int8 where int8 > 0: "int8 dot"
        case .bf16 where attentionOnBF16Unit(precision): "bf16 dot"
        default: "fp32 FMA"
        }
    }

    /// Causal attention FLOPs of one layer's `heads` heads of `d` over a sequence of `tokens`
    /// whose first `cached` positions are already in the cache: each new row i sees i + 1
    /// keys, each visible (query, key) pair costing d multiply-adds in QKᵀ and d in PV.
    static func attentionFLOPs(tokens: Int, cached: Int = 0, heads: Int, d: Int) -> Double {
        let seen = Double(tokens) * Double(tokens + 1) / 2 - Double(cached) * Double(cached + 1) / 2
        return seen * Double(heads) * Double(d) * 4
    }
}
