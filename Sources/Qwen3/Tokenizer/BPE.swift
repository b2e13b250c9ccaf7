/// Byte-level BPE over integer token ids and merge ranks.
///
/// A word starts as one token per byte; the lowest-ranked adjacent pair is merged (leftmost
/// first on ties) until no pair has a merge, exactly like Hugging Face `tokenizers`'
/// priority-queue implementation. Everything is integers: no strings, no per-merge sets.
struct BPE: Sendable {
    /// Token id of each single byte.
    let byteTokens: [Int32]
    private let merges: MergeTable

    init(byteTokens: [Int32], merges: MergeTable) {
        self.byteTokens = byteTokens
        self.merges = merges
    }

    /// Appends the ids of `word` to `out`. `scratch` is reused between calls.
    func encode(word: UnsafeBufferPointer<UInt8>, into out: inout [Int32], scratch: inout BPEScratch) {
        let n = word.count
        if n == 0 { return }
        if n == 1 { out.append(byteTokens[Int(word[0])]); return }
        scratch.reset(count: n)
        for k in 0..<n { scratch.sym[k] = byteTokens[Int(word[k])] }
        if n == 2 {
            if let m = merges.lookup(scratch.sym[0], scratch.sym[1]) {
                out.append(m.merged)
            } else {
                out.append(scratch.sym[0]); out.append(scratch.sym[1])
            }
            return
        }
        for k in 0..<(n - 1) {
            if let m = merges.lookup(scratch.sym[k], scratch.sym[k + 1]) {
                scratch.heap.push(rank: m.rank, pos: UInt32(k))
            }
        }
        while let (rank, p) = scratch.heap.pop() {
            let pos = Int(p)
            guard scratch.alive[pos] else { continue }
            let nxt = Int(scratch.next[pos])
            guard nxt < n else { continue }
            // Skip stale entries: the pair at `pos` must still be the one that was queued.
            guard let m = merges.lookup(scratch.sym[pos], scratch.sym[nxt]), m.rank == rank else { continue }
            scratch.sym[pos] = m.merged
            scratch.alive[nxt] = false
            let after = Int(scratch.next[nxt])
            scratch.next[pos] = Int32(after)
            if after < n { scratch.prev[after] = Int32(pos) }
            let before = Int(scratch.prev[pos])
            if before >= 0, let mm = merges.lookup(scratch.sym[before], scratch.sym[pos]) {
                scratch.heap.push(rank: mm.rank, pos: UInt32(before))
            }
            if after < n, let mm = merges.lookup(scratch.sym[pos], scratch.sym[after]) {
                scratch.heap.push(rank: mm.rank, pos: UInt32(pos))
            }
        }
        var k = 0
        while k < n {
            out.append(scratch.sym[k])
            k = Int(scratch.next[k])
        }
    }
}

/// Reusable buffers for `BPE.encode` (a linked list of symbols and a min-heap of merges).
struct BPEScratch {
    var sym: [Int32] = []
    var prev: [Int32] = []
    var next: [Int32] = []
    var alive: [Bool] = []
    var heap = MergeHeap()

    mutating func reset(count n: Int) {
        if sym.count < n {
            sym = [Int32](repeating: 0, count: n)
            prev = [Int32](repeating: 0, count: n)
            next = [Int32](repeating: 0, count: n)
            alive = [Bool](repeating: true, count: n)
        }
        for k in 0..<n {
            prev[k] = Int32(k - 1)
            next[k] = Int32(k + 1)
            alive[k] = true
        }
        heap.removeAll()
    }
}

/// Min-heap of (rank, position) packed in one UInt64 so that comparison is one integer compare.
struct MergeHeap {
    private var items: [UInt64] = []

    mutating func removeAll() { items.removeAll(keepingCapacity: true) }

    mutating func push(rank: UInt32, pos: UInt32) {
        items.append(UInt64(rank) << 32 | UInt64(pos))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent] <= items[i] { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> (UInt32, UInt32)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            let n = items.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n, items[l] < items[m] { m = l }
                if r < n, items[r] < items[m] { m = r }
                if m == i { break }
                items.swapAt(m, i)
                i = m
            }
        }
        return (UInt32(top >> 32), UInt32(truncatingIfNeeded: top))
    }
}

/// Open-addressing hash table: (left id, right id) -> (rank, merged id).
struct MergeTable: Sendable {
    private let keys: [UInt64]
    private let values: [UInt64]
    private let mask: Int
    private static let empty = UInt64.max

    init(_ entries: [(left: Int32, right: Int32, merged: Int32)]) {
        var capacity = 1
        while capacity < entries.count * 2 { capacity <<= 1 }
        var keys = [UInt64](repeating: Self.empty, count: capacity)
        var values = [UInt64](repeating: 0, count: capacity)
        let mask = capacity - 1
        for (rank, e) in entries.enumerated() {
            let key = UInt64(UInt32(bitPattern: e.left)) << 32 | UInt64(UInt32(bitPattern: e.right))
            var slot = Self.hash(key) & mask
            while keys[slot] != Self.empty && keys[slot] != key { slot = (slot + 1) & mask }
            if keys[slot] == key { continue }  // duplicate merge: the first (lowest rank) wins
            keys[slot] = key
            values[slot] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: e.merged))
        }
        self.keys = keys
        self.values = values
        self.mask = mask
    }

    @inline(__always)
    private static func hash(_ k: UInt64) -> Int {
        Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> 29)
    }

    @inline(__always)
    func lookup(_ a: Int32, _ b: Int32) -> (rank: UInt32, merged: Int32)? {
        let key = UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
        var slot = Self.hash(key) & mask
        return keys.withUnsafeBufferPointer { k in
            while true {
                let found = k[slot]
                if found == key {
                    let v = values[slot]
                    return (UInt32(v >> 32), Int32(bitPattern: UInt32(truncatingIfNeeded: v)))
                }
                if found == Self.empty { return nil }
                slot = (slot + 1) & mask
            }
        }
    }
}
