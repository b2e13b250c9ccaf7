import COpenBLAS
import CSiftKernels
import Foundation

/// Which kernels run: the int8 GEMM and, at the path's vector width, everything around it
/// (activation quantization, SiLU·mul, attention with its softmax). Chosen from CPUID; `SIFT_KERNEL`
/// forces one. Every path gives the same bits.
public enum KernelPath: String, Sendable, CaseIterable {
    case avx512vnni, avxvnni, avx2, portable

    /// The vector width of the kernels around the GEMM on this path.
    public var simd: sift_simd {
        switch self {
        case .avx512vnni: SIFT_SIMD_AVX512
        case .avxvnni, .avx2: SIFT_SIMD_AVX2
        case .portable: SIFT_SIMD_PORTABLE
        }
    }

    public var cValue: sift_path {
        switch self {
        case .avx512vnni: SIFT_PATH_AVX512VNNI
        case .avxvnni: SIFT_PATH_AVXVNNI
        case .avx2: SIFT_PATH_AVX2
        case .portable: SIFT_PATH_PORTABLE
        }
    }

    /// Paths this CPU can run, best first.
    public static var supported: [KernelPath] {
        let f = sift_cpu_features()
        var paths: [KernelPath] = []
        if f & UInt32(SIFT_CPU_AVX512VNNI) != 0 { paths.append(.avx512vnni) }
        if f & UInt32(SIFT_CPU_AVXVNNI) != 0 { paths.append(.avxvnni) }
        if f & UInt32(SIFT_CPU_AVX2) != 0 { paths.append(.avx2) }
        return paths + [.portable]
    }

    /// The path to use: `SIFT_KERNEL` if set (and runnable), else the best one.
    public static func selected() throws -> KernelPath {
        guard let forced = ProcessInfo.processInfo.environment["SIFT_KERNEL"], !forced.isEmpty else {
            return supported[0]
        }
        guard let path = KernelPath(rawValue: forced) else {
            throw KernelPathError("SIFT_KERNEL=\(forced) is not one of \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard supported.contains(path) else {
            throw KernelPathError("SIFT_KERNEL=\(forced): this CPU cannot run it (it can run \(supported.map(\.rawValue).joined(separator: ", ")))")
        }
        return path
    }
}

public struct KernelPathError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// A layer's input rows: given, or computed from a sublayer's result row by row as the layer
/// reads them — RMSNorm of the residual stream (before q/k/v and gate/up), SiLU(gate)·up
/// (before down). An int8 layer quantizes each computed row while it is in L1, so the fp32
/// input never goes through memory; the rows are the bits the separate kernels would write.
public enum LinearInput {
    case rows(UnsafePointer<Float>)
    /// rmsNorm(x[r]) · weight, x rows `inputs` long.
    case rmsNorm(UnsafePointer<Float>, weight: [Float], eps: Float)
    /// silu(gate) · up, from rows of 2 · `inputs`: gate then up.
    case siluMul(UnsafePointer<Float>, simd: sift_simd)

    /// Row `r` (`cols` values): the given row, or the row computed into `out`.
    func row(_ r: Int, cols: Int, computingInto out: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        switch self {
        case let .rows(x): return x + r * cols
        case let .rmsNorm(x, weight, eps): sift_rmsnorm(x + r * cols, weight, out, 1, cols, cols, cols, eps)
        case let .siluMul(gateUp, simd): sift_silu_mul(simd, gateUp + r * 2 * cols, gateUp + r * 2 * cols + cols, out, cols)
        }
        return UnsafePointer(out)
    }

    /// All `rows` rows (rows × cols): the given ones, or computed over the pool into `buffer()`
    /// (asked for only then).
    func allRows(_ rows: Int, cols: Int, pool: WorkerPool, buffer: () -> UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        if case let .rows(x) = self { return x }
        let out = buffer()
        pool.run { i in
            for r in pool.range(i, of: rows) { _ = row(r, cols: cols, computingInto: out + r * cols) }
        }
        return UnsafePointer(out)
    }
}

/// y[rows, outputs] = x[rows, inputs] · Wᵀ, split by output columns over a worker pool.
public protocol LinearLayer: AnyObject, Sendable {
    var inputs: Int { get }
    var outputs: Int { get }
    /// Bytes of weights held.
    var weightBytes: Int { get }
    func apply(_ input: LinearInput, rows: Int, out: UnsafeMutablePointer<Float>,
               pool: WorkerPool, scratch: LinearScratch)
}

/// Input buffers shared by all layers of a forward pass (grown on demand): quantized rows with
/// their scales and outlier values, a row per worker for computed int8 inputs, and the fp32 rows
/// a computed input is written to for an fp32 layer.
public final class LinearScratch: @unchecked Sendable {
    var xq: UnsafeMutablePointer<UInt8> = .allocate(capacity: 1)
    var xqCapacity = 1
    var scales: UnsafeMutablePointer<Float> = .allocate(capacity: 1)
    var scalesCapacity = 1
    var outlierValues: UnsafeMutablePointer<Float> = .allocate(capacity: 1)
    var outlierCapacity = 1
    var floats: UnsafeMutablePointer<Float> = .allocate(capacity: 1)
    var floatsCapacity = 1

    public init() {}

    /// At least `count` floats: one row per worker, or an fp32 layer's whole input.
    func reserveFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > floatsCapacity {
            floats.deallocate()
            floatsCapacity = count
            floats = .allocate(capacity: count)
        }
        return floats
    }

    func reserve(rows: Int, cols: Int, outliers: Int, groups: Int) {
        if rows * cols > xqCapacity {
            xq.deallocate()
            xqCapacity = rows * cols
            xq = .allocate(capacity: xqCapacity)
        }
        if rows * groups > scalesCapacity {
            scales.deallocate()
            scalesCapacity = rows * groups
            scales = .allocate(capacity: scalesCapacity)
        }
        if rows * outliers > outlierCapacity {
            outlierValues.deallocate()
            outlierCapacity = rows * outliers
            outlierValues = .allocate(capacity: outlierCapacity)
        }
    }

    deinit {
        xq.deallocate()
        scales.deallocate()
        outlierValues.deallocate()
        floats.deallocate()
    }
}

/// fp32 weights through OpenBLAS sgemm (single-threaded BLAS, one call per worker's columns).
public final class Float32Linear: LinearLayer, @unchecked Sendable {
    public let weights: Matrix
    public var inputs: Int { weights.cols }
    public var outputs: Int { weights.rows }
    public var weightBytes: Int { weights.rows * weights.cols * 4 }

    public init(_ weights: Matrix) { self.weights = weights }

    public func apply(_ input: LinearInput, rows: Int, out: UnsafeMutablePointer<Float>,
                      pool: WorkerPool, scratch: LinearScratch) {
        let n = outputs, k = inputs
        let x = input.allRows(rows, cols: k, pool: pool) { scratch.reserveFloats(rows * k) }
        pool.run { i in
            let cols = pool.range(i, of: n, granule: 16)
            guard !cols.isEmpty else { return }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(cols.count), Int32(k),
                        1, x, Int32(k), weights.data + cols.lowerBound * k, Int32(k), 0,
                        out + cols.lowerBound, Int32(n))
        }
    }
}

/// int8 weights × u8 activations, each with a scale per group of 128 inputs (per output row /
/// per token), with a few static outlier input channels computed in fp32 beside the integer
/// GEMM (see docs/QUANTIZATION.md).
public final class Int8Linear: LinearLayer, @unchecked Sendable {
    public let inputs: Int
    public let outputs: Int
    let packed: UnsafePointer<Int8>      // (outputs/16, inputs/4, 16, 4)
    let rowSums: UnsafePointer<Int32>    // (groups, outputs) Σ_{k in group} q[n, k]
    let scales: UnsafePointer<Float>     // (groups, outputs)
    let outlierChannels: [Int32]         // input channels computed in fp32
    let outlierWeights: UnsafePointer<Float>  // (outlierChannels.count, outputs)
    let path: KernelPath
    /// Inputs per scale group: `SIFT_Q8_GROUP`, or 0 for one group per row (the scheme of Sift
    /// before 0.8, kept as a measured baseline for `sift bench fidelity`).
    public let group: Int
    /// Keeps the memory behind the pointers alive (owned buffers or a mapped file).
    let owner: AnyObject

    /// Sift's scheme: a scale per 128 inputs.
    public static let standardGroup = Int(SIFT_Q8_GROUP)

    /// Scale groups of the inputs.
    public var groups: Int { sift_q8_groups(inputs, group) }

    public var weightBytes: Int { outputs * inputs + groups * outputs * 8 + outlierChannels.count * outputs * 4 }

    init(inputs: Int, outputs: Int, packed: UnsafePointer<Int8>, rowSums: UnsafePointer<Int32>,
         scales: UnsafePointer<Float>, outlierChannels: [Int32], outlierWeights: UnsafePointer<Float>,
         path: KernelPath, group: Int = standardGroup, owner: AnyObject) {
        self.inputs = inputs
        self.outputs = outputs
        self.packed = packed
        self.rowSums = rowSums
        self.scales = scales
        self.outlierChannels = outlierChannels
        self.outlierWeights = outlierWeights
        self.path = path
        self.group = group
        self.owner = owner
    }

    /// Quantizes fp32 weights (outputs × inputs). Columns listed in `outliers` are kept in fp32
    /// and zeroed in the int8 matrix, so they neither contribute twice nor inflate row scales.
    public convenience init(quantizing w: Matrix, outliers: [Int32], path: KernelPath,
                            group: Int = standardGroup) throws {
        let n = w.rows, k = w.cols
        guard n % 16 == 0, k % 4 == 0 else {
            throw LoadError(file: "weights", "int8 layers need outputs % 16 == 0 and inputs % 4 == 0 (got \(n) × \(k))")
        }
        guard group >= 0, group % 4 == 0 else {
            throw LoadError(file: "weights", "int8 scale groups must be a multiple of 4 inputs (got \(group))")
        }
        guard outliers.count <= 256, outliers.allSatisfy({ (0..<Int32(k)).contains($0) }), Set(outliers).count == outliers.count else {
            throw LoadError(file: "weights", "outlier channels must be at most 256 distinct inputs in 0..<\(k)")
        }
        let storage = Int8Storage(outputs: n, inputs: k, outliers: outliers.count, groups: sift_q8_groups(k, group))
        let masked = UnsafeMutablePointer<Float>.allocate(capacity: n * k)
        defer { masked.deallocate() }
        masked.update(from: w.data, count: n * k)
        for (j, c) in outliers.enumerated() {
            for row in 0..<n {
                storage.outlierWeights[j * n + row] = masked[row * k + Int(c)]
                masked[row * k + Int(c)] = 0
            }
        }
        let q = UnsafeMutablePointer<Int8>.allocate(capacity: n * k)
        defer { q.deallocate() }
        sift_q8_quantize_weights(masked, n, k, group, q, storage.scales, storage.rowSums)
        sift_q8_pack(q, n, k, storage.packed)
        self.init(inputs: k, outputs: n, packed: storage.packed, rowSums: storage.rowSums, scales: storage.scales,
                  outlierChannels: outliers, outlierWeights: storage.outlierWeights, path: path, group: group, owner: storage)
    }

    public func apply(_ input: LinearInput, rows: Int, out: UnsafeMutablePointer<Float>,
                      pool: WorkerPool, scratch: LinearScratch) {
        let n = outputs, k = inputs, group = self.group, groups = self.groups
        let no = outlierChannels.count
        scratch.reserve(rows: rows, cols: k, outliers: no, groups: groups)
        let xq = scratch.xq, xs = scratch.scales, xo = scratch.outlierValues
        let rowBuffers = scratch.reserveFloats(pool.threadCount * k)
        outlierChannels.withUnsafeBufferPointer { outl in
            pool.run { i in
                let r = pool.range(i, of: rows)
                guard !r.isEmpty else { return }
                if case let .rows(x) = input {
                    sift_q8_quantize_rows(path.simd, x + r.lowerBound * k, r.count, k, group, k, outl.baseAddress, no,
                                          xq + r.lowerBound * k, xs + r.lowerBound * groups, xo + r.lowerBound * no)
                    return
                }
                for t in r {
                    let row = input.row(t, cols: k, computingInto: rowBuffers + i * k)
                    sift_q8_quantize_rows(path.simd, row, 1, k, group, k, outl.baseAddress, no, xq + t * k, xs + t * groups, xo + t * no)
                }
            }
        }
        // Column slices of whole 16-wide tiles, handed out as threads come free.
        let slices = pool.units(of: n, granule: 16)
        pool.run(units: slices.count) { slice, _ in
            let c0 = slice * slices.size, c1 = min(n, c0 + slices.size)
            sift_q8_gemm(path.cValue, xq, rows, k, group, xs, xo, no, packed, rowSums, scales, outlierWeights, n,
                         c0, c1, out, n)
        }
    }
}

/// Owned memory of one quantized layer.
final class Int8Storage: @unchecked Sendable {
    let packed: UnsafeMutablePointer<Int8>
    let rowSums: UnsafeMutablePointer<Int32>
    let scales: UnsafeMutablePointer<Float>
    let outlierWeights: UnsafeMutablePointer<Float>

    init(outputs n: Int, inputs k: Int, outliers: Int, groups: Int) {
        packed = .allocate(capacity: n * k)
        rowSums = .allocate(capacity: n * groups)
        scales = .allocate(capacity: n * groups)
        outlierWeights = .allocate(capacity: max(1, outliers * n))
    }

    deinit {
        packed.deallocate()
        rowSums.deallocate()
        scales.deallocate()
        outlierWeights.deallocate()
    }
}
