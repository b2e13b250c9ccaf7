/// Keys and values of one sequence, per layer: rows of `kvDim` floats (all KV heads of a
/// position side by side, RoPE already applied to keys). Grows on demand.
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
        self.capacity = max(capacity, 1)
        keys = (0..<layerCount).map { _ in .allocate(capacity: max(capacity, 1) * kvDim) }
        values = (0..<layerCount).map { _ in .allocate(capacity: max(capacity, 1) * kvDim) }
    }

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }

    /// Bytes held (both K and V, all layers).
    public var bytes: Int { 2 * layerCount * capacity * kvDim * 4 }

    /// A copy holding the same positions, with room for `extra` more.
    public func copy(reserving extra: Int = 0) -> KVCache {
        let c = KVCache(layerCount: layerCount, kvDim: kvDim, capacity: count + extra)
        for l in 0..<layerCount {
            c.keys[l].update(from: keys[l], count: count * kvDim)
            c.values[l].update(from: values[l], count: count * kvDim)
        }
        c.count = count
        return c
    }

    func reserve(_ needed: Int) {
        guard needed > capacity else { return }
        let newCapacity = max(needed, capacity * 2)
        for l in 0..<layerCount {
            let k = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity * kvDim)
            let v = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity * kvDim)
            k.update(from: keys[l], count: count * kvDim)
            v.update(from: values[l], count: count * kvDim)
            keys[l].deallocate()
            values[l].deallocate()
            keys[l] = k
            values[l] = v
        }
        capacity = newCapacity
    }

    /// Marks `n` more positions as filled (their rows were written by the forward pass).
    func commit(_ n: Int) { count += n }
}
