import Foundation

/// How much memory this process may still use: the machine's available memory, or what is
/// left under the cgroup (container) limit when that is lower.
public enum SystemMemory {
    /// Bytes still available, or nil when it cannot be read.
    public static func available() -> Int? {
        let machine = meminfo("MemAvailable")
        let group = cgroupHeadroom()
        switch (machine, group) {
        case let (m?, g?): return min(m, g)
        case let (m?, nil): return m
        case let (nil, g?): return g
        default: return nil
        }
    }

    /// The default KV budget: three quarters of what is available once the model's
    /// memory-mapped weights (not yet resident, but they will be) are set aside — the last
    /// quarter is headroom for activations, request buffers and the rest; at least 64 MiB.
    /// (The 8B's 32k-token pair, ~9 GB of KV, fits on a 24 GiB machine this way.)
    public static func defaultKVBudget(mappedModelBytes: Int, available: Int? = available()) -> Int {
        guard let available else { return 4 << 30 }
        return max(64 << 20, (available - mappedModelBytes) / 4 * 3)
    }

    /// This process's resident set size in bytes (VmRSS), or nil when it cannot be read.
    public static func residentBytes() -> Int? { kibField("VmRSS", of: "/proc/self/status") }

    /// The most this process has had resident so far (VmHWM), or nil when it cannot be read.
    public static func peakResidentBytes() -> Int? { kibField("VmHWM", of: "/proc/self/status") }

    /// A field of /proc/meminfo in bytes.
    static func meminfo(_ field: String) -> Int? { kibField(field, of: "/proc/meminfo") }

    /// A "Name:   123 kB" line of a /proc file, in bytes.
    static func kibField(_ field: String, of path: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if parts.count >= 2, let kib = Int(parts[1]) { return kib * 1024 }
        }
        return nil
    }

    /// Limit minus usage of this process's memory cgroup (v2, or v1), nil when unlimited.
    static func cgroupHeadroom() -> Int? {
        func number(_ path: String) -> Int? {
            (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        // v2: "0::/some/path" in /proc/self/cgroup.
        if let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("0::") }) {
            let dir = "/sys/fs/cgroup" + line.dropFirst(3)
            if let limit = number(dir + "/memory.max"), let used = number(dir + "/memory.current") { return max(0, limit - used) }
        }
        // v1 (limits of "unlimited" are a huge number, not a useful bound).
        if let limit = number("/sys/fs/cgroup/memory/memory.limit_in_bytes"), limit < 1 << 50,
           let used = number("/sys/fs/cgroup/memory/memory.usage_in_bytes") {
            return max(0, limit - used)
        }
        return nil
    }
}
