import SiftBase
import CSiftKernels
import Foundation

/// How attention keeps and computes K and V: `fp32` (the reference), `bf16` (half the memory;
/// K, V, Q and the probabilities rounded to bf16, dot products on `vdpbf16ps` where the CPU has
/// it and on its FMA twin elsewhere; attention_bf16.c) or `int8` (about a quarter of the memory;
/// K and V with a scale per token and head, Q and the probabilities quantized per row, dot
/// products on `vpdpbusd` where the CPU has AVX-512 VNNI and on AVX2's exact twin elsewhere;
/// attention_i8.c). Each gives the same bits on every CPU.
public enum AttentionPrecision: String, Sendable, CaseIterable {
    case fp32, bf16, int8

    /// Bytes of one stored K or V element.
    public var elementBytes: Int {
        switch self {
        case .fp32: 4
        case .bf16: 2
        case .int8: 1
        }
    }

    /// Bytes one block adds per KV head and layer besides its elements: int8's key scales, key
    /// sums and value scales (4 bytes each per position).
    public var scaleBytesPerHead: Int { self == .int8 ? 3 * 4 * KVBlock.positions : 0 }

    /// The attention a model runs unless told otherwise: fp32 with fp32 linear layers (the
    /// reference path), int8 with int8 ones: it passes the fidelity gate (docs/QUANTIZATION.md),
    /// is the fastest kernel on every path measured (VNNI: 1.7× bf16 at 4k context on a Zen 4;
    /// AVX2: above bf16, within 7% of fp32) and keeps a quarter of fp32's KV. The same on every
    /// CPU, so a fleet of mixed CPUs gives the same scores.
    public static func standard(for precision: Precision) -> AttentionPrecision {
        precision == .fp32 ? .fp32 : .int8
    }
}

/// KV memory is paged in blocks of 16 positions. One block holds those positions for every
/// layer: per layer, the keys (fp32: transposed, `[kvHead][headDim][16]`, so the attention
/// kernel scores 16 keys per vector FMA; bf16: `[kvHead][headDim/2][16]` pairs of dimensions;
/// int8: `[kvHead][headDim/4][16]` quads) followed by the values (fp32: `[kvHead][16][headDim]`,
/// one head's rows contiguous; bf16: `[kvHead][8][headDim]` pairs of positions; int8:
/// `[kvHead][4][headDim]` quads) and, for int8, each head's scales, as the kernels read them.
///
/// Blocks are shared, never copied: every document of a request attends to the same prefix
/// blocks, and the prefix cache keeps popular blocks alive across requests. A block is only
/// written while its positions are being computed; once full it is immutable.
public final class KVBlock: @unchecked Sendable {
    public static let positions = Int(SIFT_KEY_BLOCK)
    let base: UnsafeMutableRawPointer
    /// Strong: a block may outlive its engine's last other reference to the pool (the prefix
    /// cache's blocks are released while the scheduler is torn down), and gives its memory back.
    let pool: KVBlockPool

    init(base: UnsafeMutableRawPointer, pool: KVBlockPool) {
        self.base = base
        self.pool = pool
    }

    deinit { pool.recycle(base) }
}

/// Allocates KV blocks of one model and recycles their memory (large allocations would
/// otherwise be faulted in afresh each time). Thread-safe; tracks live bytes for metrics.
///
/// Each block is its own anonymous mapping, so a block the pool lets go of is returned to the
/// system at once, whatever malloc's thresholds: once glibc has raised its mmap threshold
/// (after a large free), blocks from malloc would be freed into its heap and stay resident
/// (`sift serve` lowers the threshold; benchmarks, tests and embedders do not).
public final class KVBlockPool: @unchecked Sendable {
    public let layerCount: Int
    public let kvDim: Int
    public let headDim: Int
    /// How its blocks hold K and V (and so which attention kernel reads them).
    public let precision: AttentionPrecision
    /// Elements of one layer in a block: keys, values, then (int8) the scales.
    let layerStride: Int
    public var blockBytes: Int { layerStride * layerCount * precision.elementBytes }
    private let state = Locked(State())
    private let keepFree: Int
    private let capacity: Int

    struct State {
        var free: [UInt] = []  // addresses (pointers are not Sendable)
        var live = 0
        var peak = 0
    }

    /// `keepFreeBytes`: freed block memory kept for reuse instead of returned to the system;
    /// `capacityBytes`: live plus kept blocks never exceed it (the owner's KV budget), so kept
    /// memory is part of the budget, not on top of it.
    public init(layerCount: Int, kvDim: Int, headDim: Int, precision: AttentionPrecision = .fp32,
                keepFreeBytes: Int = 256 << 20, capacityBytes: Int = .max) {
        self.layerCount = layerCount
        self.kvDim = kvDim
        self.headDim = headDim
        self.precision = precision
        layerStride = 2 * KVBlock.positions * kvDim + precision.scaleBytesPerHead * (kvDim / headDim)
        let blockBytes = max(1, layerStride * layerCount * precision.elementBytes)
        keepFree = max(0, keepFreeBytes / blockBytes)
        capacity = capacityBytes / blockBytes
    }

    deinit { state.withLock { $0.free.forEach { unmap(UnsafeMutableRawPointer(bitPattern: $0)!) } } }

    public func allocate() -> KVBlock {
        let reused: UInt? = state.withLock { s in
            s.live += 1
            s.peak = max(s.peak, s.live)
            return s.free.popLast()
        }
        let base = reused.flatMap { UnsafeMutableRawPointer(bitPattern: $0) } ?? map()
        return KVBlock(base: base, pool: self)
    }

    /// A fresh zero-filled block. Callers stay inside the KV budget, which was sized from free
    /// memory, so running out here means the system lost memory under us, as `allocate` would.
    private func map() -> UnsafeMutableRawPointer {
        guard let p = mmap(nil, blockBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            fatalError("KV block of \(blockBytes) bytes: mmap failed (errno \(errno)); the system is out of memory")
        }
        return p
    }

    private func unmap(_ p: UnsafeMutableRawPointer) { munmap(p, blockBytes) }

    func recycle(_ p: UnsafeMutableRawPointer) {
        let address = UInt(bitPattern: p)
        let kept = state.withLock { s -> Bool in
            s.live -= 1
            if s.free.count < keepFree && s.live + s.free.count < capacity { s.free.append(address); return true }
            return false
        }
        if !kept { unmap(p) }
    }

    /// Blocks currently referenced by a sequence or a cache.
    public var liveBlocks: Int { state.withLock { $0.live } }
    public var liveBytes: Int { liveBlocks * blockBytes }
    /// Most blocks live at once since the pool was made (or `resetPeak`).
    public var peakBlocks: Int { state.withLock { $0.peak } }
    public func resetPeak() { state.withLock { $0.peak = $0.live } }

    /// Blocks covering `positions` positions.
    public static func blocks(forPositions positions: Int) -> Int {
        (positions + KVBlock.positions - 1) / KVBlock.positions
    }

    /// Offsets (in elements) of layer `l`'s keys, values and (int8) scales inside a block.
    func keyOffset(_ l: Int) -> Int { l * layerStride }
    func valueOffset(_ l: Int) -> Int { l * layerStride + KVBlock.positions * kvDim }
    func scaleOffset(_ l: Int) -> Int { l * layerStride + 2 * KVBlock.positions * kvDim }
}

/// The KV of one sequence: a table of blocks covering positions 0..<count.
public final class KVCache: @unchecked Sendable {
    public let pool: KVBlockPool
    public private(set) var blocks: [KVBlock]
    public private(set) var count: Int

    public init(pool: KVBlockPool, blocks: [KVBlock] = [], count: Int = 0) {
        precondition(count <= blocks.count * KVBlock.positions)
        self.pool = pool
        self.blocks = blocks
        self.count = count
    }

    /// Bytes of the blocks this sequence references (shared blocks included).
    public var bytes: Int { blocks.count * pool.blockBytes }

    /// A sequence continuing from the same positions: full blocks are shared; a partly filled
    /// last block is duplicated, because the new sequence will write its free positions.
    public func copy(reserving extra: Int = 0) -> KVCache {
        let full = count / KVBlock.positions
        var table = Array(blocks.prefix(full))
        if count % KVBlock.positions != 0 {
            let tail = pool.allocate()
            tail.base.copyMemory(from: blocks[full].base, byteCount: pool.blockBytes)
            table.append(tail)
        }
        let c = KVCache(pool: pool, blocks: table, count: count)
        c.reserve(count + extra)
        return c
    }

    /// Makes sure blocks exist for positions 0..<positions.
    public func reserve(_ positions: Int) {
        while blocks.count * KVBlock.positions < positions { blocks.append(pool.allocate()) }
    }

    /// Marks `n` more positions as filled (their K/V were written by the forward pass).
    func commit(_ n: Int) {
        precondition(count + n <= blocks.count * KVBlock.positions)
        count += n
    }

    /// Writes the key and value rows (kvDim floats each, all KV heads) of `position`, layer `l`
    /// (int8: quantized at the vector width `simd`; every width gives the same bits).
    func store(layer l: Int, position: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>, simd: sift_simd) {
        let raw = blocks[position / KVBlock.positions].base, slot = position % KVBlock.positions
        let d = pool.headDim
        switch pool.precision {
        case .fp32:
            let block = raw.assumingMemoryBound(to: Float.self)
            let k = block + pool.keyOffset(l) + slot
            for i in 0..<pool.kvDim { k[i * KVBlock.positions] = key[i] }
            let values = block + pool.valueOffset(l)
            for head in 0..<(pool.kvDim / d) {
                (values + (head * KVBlock.positions + slot) * d).update(from: value + head * d, count: d)
            }
        case .bf16:
            let block = raw.assumingMemoryBound(to: UInt16.self)
            sift_kv_store_bf16(key, value, pool.kvDim, d, block + pool.keyOffset(l), block + pool.valueOffset(l), slot)
        case .int8:
            let block = raw.assumingMemoryBound(to: Int8.self)
            let scales = UnsafeMutableRawPointer(block + pool.scaleOffset(l)).assumingMemoryBound(to: Float.self)
            sift_kv_store_i8(simd, key, value, pool.kvDim, d, block + pool.keyOffset(l), block + pool.valueOffset(l), scales, slot)
        }
    }
}
