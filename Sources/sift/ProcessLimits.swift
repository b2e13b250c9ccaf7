import Glibc

/// Process-wide settings for a long-running server.
enum ProcessLimits {
    static func prepareForServing() {
        // Room for the connection limit: raise the soft descriptor limit to the hard one.
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        // Buffers of 1 MiB and more (large frames, HTTP bodies) are mapped on their own and
        // returned to the system when freed. glibc's default threshold grows after the first
        // large free, after which such buffers stay in the heap and RSS never comes back.
        _ = glibcMallopt(mmapThreshold, 1 << 20)
    }

    /// glibc's `mallopt` and `M_MMAP_THRESHOLD` from <malloc.h>, which the Glibc module leaves out.
    private static let mmapThreshold: Int32 = -3
}

@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
