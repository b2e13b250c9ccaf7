import CSiftKernels

/// Keys and values of one sequence, per layer (RoPE already applied to keys). Grows on demand.
///
/// Values are rows of `kvDim` floats (all KV heads of a position side by side). Keys are stored
/// transposed in blocks of 16 positions, `[position / 16][kvHead][headDim][position % 16]`, so
/// the attention kernel scores 16 keys with one vector FMA per dimension. Capacity is always a
/// whole number of blocks.
public final class KVCache: @unchecked Sendable {
    public let layerCount: Int
    public let kvDim: Int
    public private(set) var count = 0
    public private(set) var capacity: Int
    private(set) var keys: [UnsafeMutablePointer<Float>]
    private(set) var values: [UnsafeMutablePointer<Float>]

    public init(layerCount: Int, kvDim: Int, capacity: Int = 256) {
        self.layerCount = layerCount
        self.kvDim = kvDim
        let rounded = Self.roundUp(max(capacity, 1))
        self.capacity = rounded
        keys = (0..<layerCount).map { _ in .allocate(capacity: rounded * kvDim) }
        values = (0..<layerCount).map { _ in .allocate(capacity: rounded * kvDim) }
    }

    static let block = Int(SIFT_KEY_BLOCK)
    static func roundUp(_ n: Int) -> Int { (n + block - 1) / block * block }

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }

    /// Bytes held (both K and V, all layers).
    public var bytes: Int { 2 * layerCount * capacity * kvDim * 4 }

    /// A copy holding the same positions, with room for `extra` more.
    public func copy(reserving extra: Int = 0) -> KVCache {
        let c = KVCache(layerCount: layerCount, kvDim: kvDim, capacity: count + extra)
        let keyFloats = Self.roundUp(count) * kvDim  // whole key blocks
        for l in 0..<layerCount {
            c.keys[l].update(from: keys[l], count: keyFloats)
            c.values[l].update(from: values[l], count: count * kvDim)
        }
        c.count = count
        return c
    }

    func reserve(_ needed: Int) {
        guard needed > capacity else { return }
        let newCapacity = Self.roundUp(max(needed, capacity * 2))
        for l in 0..<layerCount {
            let k = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity * kvDim)
            let v = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity * kvDim)
            k.update(from: keys[l], count: Self.roundUp(count) * kvDim)
            v.update(from: values[l], count: count * kvDim)
            keys[l].deallocate()
            values[l].deallocate()
            keys[l] = k
            values[l] = v
        }
        capacity = newCapacity
    }

    /// Writes the key row (kvDim floats, all KV heads) of `position` into the blocked layout.
    static func storeKey(_ row: UnsafePointer<Float>, position: Int, into keys: UnsafeMutablePointer<Float>,
                         kvHeads: Int, headDim: Int) {
        let base = keys + (position / block) * kvHeads * headDim * block + position % block
        for i in 0..<(kvHeads * headDim) { base[i * block] = row[i] }
    }

    /// Marks `n` more positions as filled (their rows were written by the forward pass).
    func commit(_ n: Int) { count += n }
}
