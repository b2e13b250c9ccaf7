import Foundation

/// A file written whole or not at all: bytes go to a temporary file in the same folder, which
/// is synced and renamed over the destination (then the folder is synced). Interrupted at any
/// point — killed, out of disk — the destination is untouched (missing if it was, the old
/// file if there was one) and the temporary file is removed. Errors name the destination, the
/// bytes written and the system's reason.
public struct AtomicFile {
    public let path: String
    private let destination: String
    private let fd: Int32
    private let size: Int
    public private(set) var written = 0

    /// The temporary file being written, for a signal handler to remove (`removeOnSignals`).
    nonisolated(unsafe) private static var current: UnsafeMutablePointer<CChar>?

    /// SIGINT and SIGTERM remove the temporary file being written before the process ends
    /// (for command-line tools; a killed process leaves it, and the next write removes it).
    public static func removeOnSignals() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig) { sig in
                if let path = AtomicFile.current { unlink(path) }
                signal(sig, SIG_DFL)
                raise(sig)
            }
        }
    }

    /// Writes `url` through `body` (expected to write `size` bytes, for messages).
    public static func write(to url: URL, size: Int, _ body: (inout AtomicFile) throws -> Void) throws {
        let folder = url.deletingLastPathComponent().path
        removeStale(beside: url)
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(getpid()).partial").path
        current = strdup(temporary)
        defer { free(current); current = nil }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw LoadError(file: url.path, "cannot create a file in \(folder) (\(String(cString: strerror(errno))))")
        }
        var file = AtomicFile(path: temporary, destination: url.path, fd: fd, size: size)
        do {
            try body(&file)
            try file.sync()
            close(fd)
            guard rename(temporary, url.path) == 0 else { throw file.failure("cannot rename \(temporary) over it") }
            let dir = open(folder, O_RDONLY | O_CLOEXEC)
            if dir >= 0 { fsync(dir); close(dir) }
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
    }

    /// Temporary files of earlier writes of `url` whose process is gone (killed mid-write).
    private static func removeStale(beside url: URL) {
        let folder = url.deletingLastPathComponent()
        let prefix = ".\(url.lastPathComponent)."
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
            where name.hasPrefix(prefix) && name.hasSuffix(".partial") {
            let pid = Int32(name.dropFirst(prefix.count).dropLast(".partial".count)) ?? 0
            if pid > 0, kill(pid, 0) != 0, errno == ESRCH {
                unlink(folder.appendingPathComponent(name).path)
            }
        }
    }

    private init(path: String, destination: String, fd: Int32, size: Int) {
        self.path = path
        self.destination = destination
        self.fd = fd
        self.size = size
    }

    private func failure(_ what: String, after bytes: Int? = nil) -> LoadError {
        let reason = errno == ENOSPC ? "no space left on the device: free space or write it elsewhere"
            : String(cString: strerror(errno))
        return LoadError(file: destination, "\(what) after \(bytes ?? written) of \(size) bytes (\(reason)); the file was not replaced")
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) throws {
        try write(bytes, at: written)
        written += bytes.count
    }

    public mutating func append(_ data: Data) throws {
        try data.withUnsafeBytes { try append($0) }
    }

    /// Zeros up to `offset`.
    public mutating func pad(to offset: Int) throws {
        while written < offset {
            let zeros = [UInt8](repeating: 0, count: min(1 << 20, offset - written))
            try zeros.withUnsafeBytes { try append($0) }
        }
    }

    /// Writes at `offset` without moving the end.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw failure("cannot write", after: offset + done) }
            done += n
        }
    }

    public func sync() throws {
        guard fsync(fd) == 0 else { throw failure("cannot sync") }
    }
}
