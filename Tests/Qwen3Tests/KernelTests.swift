import CSiftKernels
import Foundation
import Qwen3
import XCTest

/// The int8 GEMM and the attention kernel: every path this CPU can run gives the same bits,
/// for any thread count, and the results are close to an fp64 reference.
final class KernelTests: XCTestCase {
    /// Deterministic pseudo-random floats in [-scale, scale).
    func randomFloats(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var s = seed
        return (0..<n).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return (Float(s >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    func testInt8GemmIsBitIdenticalOnEveryPathAndThreadCount() throws {
        // N = 112 exercises 64-column panels and a 48-column tail; M = 13 the row remainders.
        // K = 96, 64: one group (shorter than 128); 192: a whole group and a short one; 1024: eight.
        // Group 0 is the per-row scheme kept as the fidelity baseline: it must hold the same contract.
        for group in [Int8Linear.standardGroup, 0] {
        for (n, k, m, outliers) in [(112, 96, 13, [3, 50]), (64, 64, 1, []), (256, 192, 7, [0, 1, 2, 191]), (64, 1024, 7, [5, 700])] {
            let w = Matrix(rows: n, cols: k)
            let wv = randomFloats(n * k, seed: 1, scale: 0.1)
            for i in 0..<(n * k) { w.data[i] = wv[i] }
            var x = randomFloats(m * k, seed: 2)
            for r in 0..<m { for c in outliers { x[r * k + c] *= 40 } }  // planted outlier channels
            var reference: [Float]?
            for path in KernelPath.supported {
                let layer = try Int8Linear(quantizing: w, outliers: outliers.map(Int32.init), path: path, group: group)
                for threads in [1, 2, 3] {
                    let pool = WorkerPool(threads: threads)
                    var y = [Float](repeating: .nan, count: m * n)
                    x.withUnsafeMutableBufferPointer { xb in
                        y.withUnsafeMutableBufferPointer { yb in
                            layer.apply(.rows(xb.baseAddress!), rows: m, out: yb.baseAddress!, pool: pool, scratch: LinearScratch())
                        }
                    }
                    if let reference {
                        XCTAssertEqual(y.map(\.bitPattern), reference.map(\.bitPattern), "\(n)×\(k), M=\(m), group \(group): \(path), \(threads) threads")
                    } else {
                        reference = y
                        // Close to the exact product (int8 error only).
                        var worst = 0.0, norm = 0.0
                        for r in 0..<m {
                            for o in 0..<n {
                                var exact = 0.0
                                for c in 0..<k { exact += Double(x[r * k + c]) * Double(wv[o * k + c]) }
                                worst = max(worst, abs(exact - Double(y[r * n + o])))
                                norm = max(norm, abs(exact))
                            }
                        }
                        XCTAssertLessThan(worst, 0.03 * norm + 1e-3, "int8 result too far from the exact product")
                    }
                }
            }
        }
        }
    }

    /// A computed input (RMSNorm rows, SiLU(gate)·up rows) gives the bits of the same rows
    /// computed first by the separate kernels and passed as given rows, for int8 and fp32 layers,
    /// on every path and thread count.
    func testComputedInputsMatchTheRowsTheyStandFor() throws {
        let n = 48, k = 64, m = 9
        let w = Matrix(rows: n, cols: k)
        for (i, v) in randomFloats(n * k, seed: 3, scale: 0.1).enumerated() { w.data[i] = v }
        let x = randomFloats(m * k, seed: 4, scale: 3)
        let gateUp = randomFloats(m * 2 * k, seed: 5, scale: 4)
        let norm = randomFloats(k, seed: 6).map { 1 + $0 / 2 }
        var normed = [Float](repeating: 0, count: m * k), activated = [Float](repeating: 0, count: m * k)
        sift_rmsnorm(x, norm, &normed, m, k, k, k, 1e-6)
        for r in 0..<m {
            gateUp.withUnsafeBufferPointer { g in
                activated.withUnsafeMutableBufferPointer { sift_silu_mul(SIFT_SIMD_PORTABLE, g.baseAddress! + r * 2 * k, g.baseAddress! + r * 2 * k + k, $0.baseAddress! + r * k, k) }
            }
        }
        for path in KernelPath.supported {
            let layers: [any LinearLayer] = [try Int8Linear(quantizing: w, outliers: [5, 40], path: path), Float32Linear(w)]
            for layer in layers {
                for threads in [1, 2] {
                    let pool = WorkerPool(threads: threads)
                    func run(_ input: LinearInput) -> [UInt32] {
                        var y = [Float](repeating: .nan, count: m * n)
                        y.withUnsafeMutableBufferPointer { layer.apply(input, rows: m, out: $0.baseAddress!, pool: pool, scratch: LinearScratch()) }
                        return y.map(\.bitPattern)
                    }
                    x.withUnsafeBufferPointer { xb in
                        normed.withUnsafeBufferPointer { nb in
                            XCTAssertEqual(run(.rmsNorm(xb.baseAddress!, weight: norm, eps: 1e-6)), run(.rows(nb.baseAddress!)),
                                           "RMSNorm input, \(type(of: layer)), \(path), \(threads) threads")
                        }
                    }
                    gateUp.withUnsafeBufferPointer { gb in
                        activated.withUnsafeBufferPointer { ab in
                            XCTAssertEqual(run(.siluMul(gb.baseAddress!, simd: path.simd)), run(.rows(ab.baseAddress!)),
                                           "SiLU·mul input, \(type(of: layer)), \(path), \(threads) threads")
                        }
                    }
                }
            }
        }
    }

    func testOutlierChannelsAreComputedExactly() throws {
        // With every input channel an outlier the layer is pure fp32.
        let n = 32, k = 16, m = 3
        let w = Matrix(rows: n, cols: k)
        let wv = randomFloats(n * k, seed: 5)
        for i in 0..<(n * k) { w.data[i] = wv[i] }
        var x = randomFloats(m * k, seed: 6)
        let layer = try Int8Linear(quantizing: w, outliers: (0..<Int32(k)).map { $0 }, path: .portable)
        var y = [Float](repeating: 0, count: m * n)
        x.withUnsafeMutableBufferPointer { xb in
            y.withUnsafeMutableBufferPointer { layer.apply(.rows(xb.baseAddress!), rows: m, out: $0.baseAddress!, pool: WorkerPool(threads: 1), scratch: LinearScratch()) }
        }
        for r in 0..<m {
            for o in 0..<n {
                var exact: Float = 0
                for c in 0..<k { exact = fmaf(x[r * k + c], wv[o * k + c], exact) }
                XCTAssertEqual(y[r * n + o], exact, accuracy: 1e-5)
            }
        }
    }

    /// Attention: SIMD and portable agree bit for bit; rows computed in one call or in chunks
    /// (as chunked prefill does, and with every kind of row-group remainder) agree bit for bit;
    /// stale slots past the last position are never read into a result; and both match a
    /// float64 reference. 300 positions: past the kernels' 128-key chunks and 256-row query tiles
    /// (SIFT_ATTENTION_Q_FLOATS at head_dim 128), with an odd block count.
    func testAttentionIsChunkInvariantAndMatchesReference() {
        let d = 128, kvHeads = 2, heads = 4, positions = 300
        let kvDim = kvHeads * d, qDim = heads * d
        let q = randomFloats(positions * qDim, seed: 11)
        let k = randomFloats(positions * kvDim, seed: 12)
        let v = randomFloats(positions * kvDim, seed: 13)
        // Paged KV: one block per 16 positions, keys transposed ([head][d][16]), then values ([head][16][d]).
        let block = Int(SIFT_KEY_BLOCK)
        let blockCount = (positions + block - 1) / block
        let blockFloats = 2 * block * kvDim
        let memory = UnsafeMutablePointer<Float>.allocate(capacity: blockCount * blockFloats)
        defer { memory.deallocate() }
        // Slots past the last position hold stale data: NaN here, which no result may see.
        memory.initialize(repeating: .nan, count: blockCount * blockFloats)
        for p in 0..<positions {
            let base = memory + (p / block) * blockFloats
            for i in 0..<kvDim {
                base[i * block + p % block] = k[p * kvDim + i]
                base[block * kvDim + ((i / d) * block + p % block) * d + i % d] = v[p * kvDim + i]
            }
        }
        let table: [UnsafePointer<Float>?] = (0..<blockCount).map { UnsafePointer(memory + $0 * blockFloats) }
        let scale = 1 / Float(d).squareRoot()
        func run(simd: sift_simd, splits: [Int]) -> [Float] {
            Self.attentionRows(q: q, positions: positions, heads: heads, d: d, splits: splits) { q, rows, first, head, out, scratch in
                sift_attention(simd, q, qDim, rows, first, table, 0, block * kvDim, head / (heads / kvHeads), d, scale, out, qDim, scratch)
            }
        }
        let whole = run(simd: SIFT_SIMD_PORTABLE, splits: [])
        for level in Self.levels {
            XCTAssertEqual(run(simd: level, splits: []).map(\.bitPattern), whole.map(\.bitPattern), "level \(level.rawValue) vs portable")
            XCTAssertEqual(run(simd: level, splits: [3, 20]).map(\.bitPattern), whole.map(\.bitPattern), "level \(level.rawValue), chunked")
            XCTAssertEqual(run(simd: level, splits: [1, 17, 30]).map(\.bitPattern), whole.map(\.bitPattern), "level \(level.rawValue), chunked")
            XCTAssertEqual(run(simd: level, splits: [127, 129]).map(\.bitPattern), whole.map(\.bitPattern), "level \(level.rawValue), chunked")
            XCTAssertEqual(run(simd: level, splits: [40, 297]).map(\.bitPattern), whole.map(\.bitPattern), "level \(level.rawValue), chunked")
            XCTAssertEqual(run(simd: level, splits: Array(stride(from: 5, to: positions, by: 5))).map(\.bitPattern), whole.map(\.bitPattern), "level \(level.rawValue), chunks of 5")
        }
        // float64 reference.
        for p in [0, 15, 16, 44, 76, 128, 149, 256, 299] {
            for head in 0..<heads {
                let expected = Self.referenceAttention(q: q, k: k, v: v, row: p, head: head, heads: heads, kvHeads: kvHeads, d: d, scale: scale)
                for (dd, value) in expected {
                    XCTAssertEqual(Double(whole[p * qDim + head * d + dd]), value, accuracy: 1e-5)
                }
            }
        }
    }

    /// bf16 attention: every level, with `vdpbf16ps` and with its FMA twin, gives the portable
    /// kernel's bits, whatever the chunking (a row never depends on the others); stale data past
    /// the last position (NaN) is never read; and it stays within bf16's error of a float64
    /// reference computed from the same rounded inputs.
    func testBF16AttentionTwinsAgreeAndStayCloseToTheReference() {
        let d = 128, kvHeads = 2, heads = 4, positions = 300
        let kvDim = kvHeads * d, qDim = heads * d
        let q = randomFloats(positions * qDim, seed: 21, scale: 2)
        let k = randomFloats(positions * kvDim, seed: 22, scale: 2)
        let v = randomFloats(positions * kvDim, seed: 23)
        let block = Int(SIFT_KEY_BLOCK)
        let blockCount = (positions + block - 1) / block
        let blockHalves = 2 * block * kvDim
        let memory = UnsafeMutablePointer<UInt16>.allocate(capacity: blockCount * blockHalves)
        defer { memory.deallocate() }
        memory.initialize(repeating: 0x7FC0, count: blockCount * blockHalves)  // bf16 NaN: stale
        for p in 0..<positions {
            let base = memory + (p / block) * blockHalves
            k.withUnsafeBufferPointer { kb in
                v.withUnsafeBufferPointer { vb in
                    sift_kv_store_bf16(kb.baseAddress! + p * kvDim, vb.baseAddress! + p * kvDim, kvDim, d, base, base + block * kvDim, p % block)
                }
            }
        }
        let table: [UnsafePointer<UInt16>?] = (0..<blockCount).map { UnsafePointer(memory + $0 * blockHalves) }
        let scale = 1 / Float(d).squareRoot()
        func run(simd: sift_simd, dot: Int32, splits: [Int]) -> [Float] {
            Self.attentionRows(q: q, positions: positions, heads: heads, d: d, splits: splits) { q, rows, first, head, out, scratch in
                sift_attention_bf16(simd, dot, q, qDim, rows, first, table, 0, block * kvDim, head / (heads / kvHeads), d, scale,
                                    out, qDim, scratch)
            }
        }
        let whole = run(simd: SIFT_SIMD_PORTABLE, dot: 0, splits: [])
        XCTAssertFalse(whole.contains { $0.isNaN }, "stale data was read")
        for level in Self.levels {
            for dot: Int32 in [0, 1] {
                let name = "level \(level.rawValue), dot \(dot)"
                XCTAssertEqual(run(simd: level, dot: dot, splits: []).map(\.bitPattern), whole.map(\.bitPattern), name)
                for splits in [[3, 20], [1, 17, 30], [127, 129], [40, 297], Array(stride(from: 5, to: positions, by: 5))] {
                    XCTAssertEqual(run(simd: level, dot: dot, splits: splits).map(\.bitPattern), whole.map(\.bitPattern), "\(name), chunks \(splits.prefix(3))")
                }
            }
        }
        // float64 reference on the bf16-rounded q, k and v.
        func rounded(_ x: Float) -> Double {
            var u = x.bitPattern
            u = u &+ 0x7FFF &+ ((u >> 16) & 1)
            return Double(Float(bitPattern: u & 0xFFFF_0000))
        }
        var worst = 0.0
        for p in [0, 15, 16, 44, 76, 128, 149, 256, 299] {
            for head in 0..<heads {
                let expected = Self.referenceAttention(q: q, k: k, v: v, row: p, head: head, heads: heads, kvHeads: kvHeads, d: d,
                                                       scale: scale, element: rounded)
                for (dd, value) in expected {
                    worst = max(worst, abs(Double(whole[p * qDim + head * d + dd]) - value))
                }
            }
        }
        // The probabilities are rounded to bf16 (relative error 2^-9) before PV.
        XCTAssertLessThan(worst, 4e-3)
    }

    /// int8 attention: every level (VNNI, AVX2's exact sequence, portable) gives the same bits,
    /// whatever the chunking of the rows; stale block memory (NaN scales past the sequence's
    /// end) is never read into a result; and the result stays close to exact attention.
    func testInt8AttentionTwinsAgreeAndStayCloseToTheReference() {
        let d = 128, kvHeads = 2, heads = 4, positions = 300
        let kvDim = kvHeads * d, qDim = heads * d
        let q = randomFloats(positions * qDim, seed: 31, scale: 2)
        let k = randomFloats(positions * kvDim, seed: 32, scale: 2)
        let v = randomFloats(positions * kvDim, seed: 33)
        let block = Int(SIFT_KEY_BLOCK)
        let blockCount = (positions + block - 1) / block
        let blockBytes = Self.int8BlockBytes(kvDim: kvDim, d: d)
        let memory = Self.storeInt8Blocks(k: k, v: v, positions: positions, kvDim: kvDim, d: d, simd: SIFT_SIMD_PORTABLE)
        defer { memory.deallocate() }
        for level in Self.levels {
            let stored = Self.storeInt8Blocks(k: k, v: v, positions: positions, kvDim: kvDim, d: d, simd: level)
            defer { stored.deallocate() }
            XCTAssertEqual(memcmp(stored, memory, blockCount * blockBytes), 0, "KV stored at level \(level.rawValue)")
        }
        let table: [UnsafePointer<Int8>?] = (0..<blockCount).map { UnsafePointer((memory + $0 * blockBytes).assumingMemoryBound(to: Int8.self)) }
        let scale = 1 / Float(d).squareRoot()
        func run(simd: sift_simd, splits: [Int]) -> [Float] {
            Self.attentionRows(q: q, positions: positions, heads: heads, d: d, splits: splits) { q, rows, first, head, out, scratch in
                sift_attention_i8(simd, q, qDim, rows, first, table, 0, block * kvDim, 2 * block * kvDim, head / (heads / kvHeads), d,
                                  scale, out, qDim, scratch)
            }
        }
        let whole = run(simd: SIFT_SIMD_PORTABLE, splits: [])
        XCTAssertFalse(whole.contains { $0.isNaN }, "stale data was read")
        for level in Self.levels {
            XCTAssertEqual(run(simd: level, splits: []).map(\.bitPattern), whole.map(\.bitPattern), "level \(level.rawValue)")
            for splits in [[3, 20], [1, 17, 30], [127, 129], [40, 297], Array(stride(from: 5, to: positions, by: 5))] {
                XCTAssertEqual(run(simd: level, splits: splits).map(\.bitPattern), whole.map(\.bitPattern), "level \(level.rawValue), chunks \(splits.prefix(3))")
            }
        }
        var worst = 0.0
        for p in [0, 15, 16, 44, 76, 128, 149, 256, 299] {
            for head in 0..<heads {
                let expected = Self.referenceAttention(q: q, k: k, v: v, row: p, head: head, heads: heads, kvHeads: kvHeads, d: d, scale: scale)
                for (dd, value) in expected {
                    worst = max(worst, abs(Double(whole[p * qDim + head * d + dd]) - value))
                }
            }
        }
        // Q, K and V to 8 bits (relative error 2^-8 of each row's largest), the probabilities
        // to 8 bits of their block's largest (measured: 0.0064).
        XCTAssertLessThan(worst, 1e-2)
        print("int8 attention: largest |error| against exact attention \(worst)")
    }

    /// Bytes of one int8 KV block of one layer: keys, values, then per KV head 16 key scales,
    /// key sums and value scales.
    static func int8BlockBytes(kvDim: Int, d: Int) -> Int {
        let block = Int(SIFT_KEY_BLOCK)
        return 2 * block * kvDim + kvDim / d * 3 * 4 * block
    }

    /// int8 KV blocks of `positions` keys and values (kvDim floats each) stored at one level, in
    /// blocks of 16 positions as the engine lays them out; unwritten bytes 0xFF (NaN scales: stale).
    static func storeInt8Blocks(k: [Float], v: [Float], positions: Int, kvDim: Int, d: Int, simd: sift_simd) -> UnsafeMutableRawPointer {
        let block = Int(SIFT_KEY_BLOCK), blockBytes = int8BlockBytes(kvDim: kvDim, d: d)
        let blockCount = (positions + block - 1) / block
        let memory = UnsafeMutableRawPointer.allocate(byteCount: blockCount * blockBytes, alignment: 64)
        memory.initializeMemory(as: UInt8.self, repeating: 0xFF, count: blockCount * blockBytes)
        for p in 0..<positions {
            let base = (memory + (p / block) * blockBytes).assumingMemoryBound(to: Int8.self)
            let scales = UnsafeMutableRawPointer(base + 2 * block * kvDim).assumingMemoryBound(to: Float.self)
            k.withUnsafeBufferPointer { kb in
                v.withUnsafeBufferPointer { vb in
                    sift_kv_store_i8(simd, kb.baseAddress! + p * kvDim, vb.baseAddress! + p * kvDim, kvDim, d, base, base + block * kvDim, scales, p % block)
                }
            }
        }
        return memory
    }

    /// The int8 KV store gives the same bytes at every level on rows a model should never
    /// produce too: all zeros, NaN, ±infinity, denormals (127 / max overflows), the float range's ends.
    func testInt8KVStoreTwinsAgreeOnHostileRows() {
        let d = 128, kvDim = 2 * d, positions = 24
        var k = randomFloats(positions * kvDim, seed: 41, scale: 3), v = randomFloats(positions * kvDim, seed: 42)
        let special: [Float] = [0, -0.0, .nan, .infinity, -.infinity, 1e-40, -1e-45, .greatestFiniteMagnitude,
                                -.greatestFiniteMagnitude, .leastNormalMagnitude]
        for p in 0..<positions {
            for i in 0..<kvDim where (i + p) % 7 == 0 {
                k[p * kvDim + i] = special[(i + p) % special.count]
                v[p * kvDim + i] = special[(i + 3 * p) % special.count]
            }
        }
        for i in 0..<kvDim { k[i] = 0; v[kvDim + i] = 1e-40 }   // a row of zeros, a row of denormals
        let bytes = 2 * Self.int8BlockBytes(kvDim: kvDim, d: d)   // 24 positions: two blocks
        let portable = Self.storeInt8Blocks(k: k, v: v, positions: positions, kvDim: kvDim, d: d, simd: SIFT_SIMD_PORTABLE)
        defer { portable.deallocate() }
        for level in Self.levels {
            let stored = Self.storeInt8Blocks(k: k, v: v, positions: positions, kvDim: kvDim, d: d, simd: level)
            defer { stored.deallocate() }
            XCTAssertEqual(memcmp(stored, portable, bytes), 0, "level \(level.rawValue)")
        }
    }

    /// One attention kernel over every head of `q` (positions × heads × d), the rows cut into calls
    /// at `splits`, as the model calls it: `kernel(q, rows, first position, head, out, scratch)`.
    static func attentionRows(q: [Float], positions: Int, heads: Int, d: Int, splits: [Int],
                              _ kernel: (UnsafePointer<Float>, Int, Int, Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> [Float] {
        let qDim = heads * d
        var out = [Float](repeating: 0, count: positions * qDim)
        var scratch = [Float](repeating: 0, count: sift_attention_scratch_floats(positions))
        for head in 0..<heads {
            var start = 0
            for end in splits + [positions] {
                q.withUnsafeBufferPointer { qb in
                    out.withUnsafeMutableBufferPointer { ob in
                        scratch.withUnsafeMutableBufferPointer { sb in
                            kernel(qb.baseAddress! + start * qDim + head * d, end - start, start, head, ob.baseAddress! + start * qDim + head * d,
                                   sb.baseAddress!)
                        }
                    }
                }
                start = end
            }
        }
        return out
    }

    /// The vector levels of the kernels around the GEMM, as the supported kernel paths use them.
    static var levels: [sift_simd] {
        var seen: [sift_simd] = []
        for path in KernelPath.supported where !seen.contains(where: { $0.rawValue == path.simd.rawValue }) { seen.append(path.simd) }
        return seen
    }

    /// Every SIMD twin of SiLU·mul (and so of exp) agrees with the portable code bit for bit, at
    /// lengths that leave every kind of remainder, and across the exp's clamped range.
    func testSiluTwinsAreBitIdentical() {
        for n in [1, 7, 8, 15, 16, 17, 31, 64, 100, 3072] {
            let gate = randomFloats(n, seed: UInt64(n), scale: 30), up = randomFloats(n, seed: UInt64(n) + 1, scale: 2)
            func silu(_ level: sift_simd) -> [UInt32] {
                var out = [Float](repeating: .nan, count: n)
                sift_silu_mul(level, gate, up, &out, n)
                return out.map(\.bitPattern)
            }
            let silu0 = silu(SIFT_SIMD_PORTABLE)
            for level in Self.levels {
                XCTAssertEqual(silu(level), silu0, "SiLU·mul, n = \(n), level \(level.rawValue)")
            }
            // SiLU itself is right (not only consistent).
            for i in 0..<n {
                let g = Double(gate[i]), expected = g / (1 + Foundation.exp(-g)) * Double(up[i])
                XCTAssertEqual(Double(Float(bitPattern: silu0[i])), expected, accuracy: 1e-5 * max(1, abs(expected)))
            }
        }
    }

    /// Activation quantization: every level gives the same bytes, scales and outlier values; the
    /// input is only read; each group of 128 channels has its own scale, outlier channels are
    /// excluded from it and quantized as zero.
    func testActivationQuantizationTwinsAreBitIdenticalAndReadOnly() {
        for (m, k, outliers) in [(3, 1024, [Int32(700), 5, 1023]), (2, 37, []), (4, 96, [0, 1, 2, 95, 40]), (1, 8, [3])] {
            var x = randomFloats(m * k, seed: UInt64(k), scale: 3)
            for r in 0..<m { for c in outliers { x[r * k + Int(c)] *= 1000 } }
            let original = x.map(\.bitPattern)
            let groups = (k + 127) / 128
            func quantize(_ level: sift_simd) -> (q: [UInt8], scales: [UInt32], xo: [UInt32]) {
                var q = [UInt8](repeating: 0, count: m * k), scales = [Float](repeating: .nan, count: m * groups)
                var xo = [Float](repeating: .nan, count: max(1, m * outliers.count))
                sift_q8_quantize_rows(level, x, m, k, 128, k, outliers, outliers.count, &q, &scales, &xo)
                return (q, scales.map(\.bitPattern), xo.map(\.bitPattern))
            }
            let reference = quantize(SIFT_SIMD_PORTABLE)
            for level in Self.levels {
                let got = quantize(level)
                XCTAssertEqual(got.q, reference.q, "bytes, \(m)×\(k), level \(level.rawValue)")
                XCTAssertEqual(got.scales, reference.scales, "scales, \(m)×\(k), level \(level.rawValue)")
                XCTAssertEqual(got.xo, reference.xo, "outlier values, \(m)×\(k), level \(level.rawValue)")
            }
            XCTAssertEqual(x.map(\.bitPattern), original, "the input was written")
            for r in 0..<m {
                for g in 0..<groups {
                    var amax: Float = 0
                    for c in (g * 128)..<min(k, g * 128 + 128) where !outliers.contains(Int32(c)) { amax = max(amax, abs(x[r * k + c])) }
                    XCTAssertEqual(Float(bitPattern: reference.scales[r * groups + g]), amax / 127, "row \(r) group \(g)")
                }
                for (j, c) in outliers.enumerated() {
                    XCTAssertEqual(reference.q[r * k + Int(c)], 128)
                    XCTAssertEqual(Float(bitPattern: reference.xo[r * outliers.count + j]), x[r * k + Int(c)])
                }
            }
        }
    }

    func testExpIsAccurate() {
        for x in stride(from: Float(-80), through: 80, by: 0.37) {
            let e = Double(sift_exp(x)), r = Foundation.exp(Double(x))
            XCTAssertEqual(e, r, accuracy: r * 3e-7, "exp(\(x))")
        }
    }

    func testKernelPathSelectionRejectsUnknownNames() {
        setenv("SIFT_KERNEL", "avx9000", 1)
        defer { unsetenv("SIFT_KERNEL") }
        XCTAssertThrowsError(try KernelPath.selected()) { XCTAssertTrue("\($0)".contains("avx9000")) }
    }

    /// Causal attention of one query row and head in float64, at every 17th dimension: the
    /// reference both attention kernels are checked against. `element` reads each q, k and v
    /// value (as it is, or rounded as the kernel stores it).
    static func referenceAttention(q: [Float], k: [Float], v: [Float], row p: Int, head: Int, heads: Int, kvHeads: Int, d: Int,
                                   scale: Float, element: (Float) -> Double = { Double($0) }) -> [(Int, Double)] {
        let (qDim, kvDim, g) = (heads * d, kvHeads * d, head / (heads / kvHeads))
        var s = (0...p).map { j in (0..<d).reduce(0.0) { $0 + element(q[p * qDim + head * d + $1]) * element(k[j * kvDim + g * d + $1]) } * Double(scale) }
        let mx = s.max()!
        s = s.map { exp($0 - mx) }
        let sum = s.reduce(0, +)
        return stride(from: 0, to: d, by: 17).map { dd in (dd, (0...p).reduce(0.0) { $0 + s[$1] / sum * element(v[$1 * kvDim + g * d + dd]) }) }
    }
}
