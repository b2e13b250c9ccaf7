import ArgumentParser
import CSiftKernels
import Foundation
import Qwen3

struct KernelBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "int8 GEMM throughput per 0.6B projection shape vs the machine's measured int8 peak.")

    @Option(help: "Worker threads.") var threads: Int = WorkerPool.defaultThreadCount
    @Option(help: "Token counts (M) to measure, comma-separated.") var tokens: String = "16,64,256,512,2048"
    @Option(help: "Outlier channels per layer (fp32 beside the int8 GEMM).") var outliers: Int = 16

    func run() throws {
        try reportingErrors {
            let path = try KernelPath.selected()
            let pool = WorkerPool(threads: threads)
            // Peak: a register-only loop of the path's dot instructions on every worker.
            // The machines are shared and noisy: every figure is the best of several runs.
            var peak = 0.0
            if path != .portable {
                let iters = 20_000_000
                for _ in 0..<3 {
                    let start = now()
                    pool.run { _ in _ = sift_int8_peak_loop(path.cValue, iters) }
                    peak = max(peak, Double(sift_int8_peak_ops(path.cValue, iters) * threads) / (now() - start) / 1e9)
                }
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
                    layer.apply(x, rows: m, out: y, pool: pool, scratch: scratch)
                    var best = Double.infinity
                    for _ in 0..<max(10, 2_000_000_000 / (m * n * k)) {
                        let start = now()
                        layer.apply(x, rows: m, out: y, pool: pool, scratch: scratch)
                        best = min(best, now() - start)
                    }
                    let gops = Double(2 * m * n * k) / best / 1e9
                    print(String(format: "%-8@ %5d %5d %6d %7.0f   %5.1f%%", name, n, k, m, gops, peak > 0 ? 100 * gops / peak : 0))
                }
            }
        }
    }
}
