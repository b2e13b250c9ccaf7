import CSiftKernels
import Foundation

/// A read-only memory mapping of a whole file. Pages are loaded lazily by the kernel.
///
/// A mapped file must not change while it is mapped: a page past a truncated end raises
/// SIGBUS, and one rewritten in place changes the weights silently. Replacing a model file by
/// renaming a new one over it is safe (the mapping keeps the old file); copying onto it is not.
/// `change()` tells when that happened, from the file still open, so callers can refuse work
/// instead of touching it.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let size: Int
    private let fd: Int32
    private let modified: timespec

    public init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LoadError(file: path, "cannot open (\(String(cString: strerror(errno))))") }
        var keepOpen = false
        defer { if !keepOpen { close(fd) } }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw LoadError(file: path, "cannot stat (\(String(cString: strerror(errno))))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw LoadError(file: path, "not a regular file") }
        let size = Int(st.st_size)
        guard size > 0 else { throw LoadError(file: path, "the file is empty") }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw LoadError(file: path, "cannot map the file (\(String(cString: strerror(errno))))")
        }
        keepOpen = true
        self.fd = fd
        self.path = path
        self.base = UnsafeRawPointer(p)
        self.size = size
        self.modified = st.st_mtim
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), size)
        close(fd)
    }

    /// How the mapped file changed since it was mapped (nil: it did not): truncated, or
    /// written to. One `fstat`, cheap enough to call before every step.
    public func change() -> String? {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        if Int(st.st_size) < size { return "\(path) was truncated (\(st.st_size) of its \(size) bytes left)" }
        if st.st_mtim.tv_sec != modified.tv_sec || st.st_mtim.tv_nsec != modified.tv_nsec {
            return "\(path) was written to"
        }
        return nil
    }
}

/// Element types Sift reads from checkpoints.
public enum DType: String, Sendable {
    case bf16 = "BF16"
    case f16 = "F16"
    case f32 = "F32"

    public var byteSize: Int { self == .f32 ? 4 : 2 }
}

/// One tensor inside a mapped safetensors file. Its bounds were checked against the file.
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let data: UnsafeRawPointer
    public let file: MappedFile

    public var count: Int { shape.reduce(1, *) }

    /// Converts `count` elements starting at element `offset` to fp32.
    public func copyFloats(into dst: UnsafeMutablePointer<Float>, offset: Int = 0, count: Int? = nil) {
        let n = count ?? self.count - offset
        precondition(offset >= 0 && offset + n <= self.count)
        switch dtype {
        case .f32:
            dst.update(from: (data + offset * 4).assumingMemoryBound(to: Float.self), count: n)
        case .bf16:
            sift_bf16_to_f32((data + offset * 2).assumingMemoryBound(to: UInt16.self), dst, n)
        case .f16:
            sift_f16_to_f32((data + offset * 2).assumingMemoryBound(to: UInt16.self), dst, n)
        }
    }

    public func floats() -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buf, initialized in
            copyFloats(into: buf.baseAddress!)
            initialized = count
        }
    }
}

/// One `.safetensors` file: an 8-byte little-endian header length, a JSON header, then data.
/// Every offset, shape and dtype is checked against the file size before any data is read.
public struct SafeTensorsFile: Sendable {
    public let file: MappedFile
    public let tensors: [String: TensorView]

    /// Header larger than this is refused (real headers are well under 1 MiB).
    static let maxHeaderBytes = 100 << 20

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        guard file.size >= 8 else { throw LoadError(file: path, "truncated: \(file.size) bytes, shorter than the 8-byte header length") }
        // Compared as UInt64 before any conversion: a length of 2^63 or more must not trap.
        let rawLength = UInt64(littleEndian: file.base.loadUnaligned(as: UInt64.self))
        guard rawLength <= UInt64(Self.maxHeaderBytes), rawLength <= UInt64(file.size - 8) else {
            throw LoadError(file: path, "truncated or not a safetensors file: header length \(rawLength) exceeds the file size \(file.size) (or the \(Self.maxHeaderBytes >> 20) MiB header limit)")
        }
        let headerLength = Int(rawLength)
        let headerData = Data(bytes: file.base + 8, count: headerLength)
        guard let header = (try? JSONSerialization.jsonObject(with: headerData)) as? [String: Any] else {
            throw LoadError(file: path, "the safetensors header is not a JSON object")
        }
        let dataStart = 8 + headerLength
        let dataSize = file.size - dataStart
        var tensors: [String: TensorView] = [:]
        for (name, value) in header where name != "__metadata__" {
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shapeRaw = entry["shape"] as? [NSNumber],
                  let offsetsRaw = entry["data_offsets"] as? [NSNumber], offsetsRaw.count == 2
            else { throw LoadError(file: path, "tensor \(name): header entry lacks dtype, shape or data_offsets") }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw LoadError(file: path, "tensor \(name): dtype \(dtypeName) is not supported (BF16, F16 or F32)")
            }
            // Exact integers only: 1e300 or 2^64 in a header is an error, not a wrapped value.
            let shape = shapeRaw.compactMap { Int(exactly: $0) }
            guard shape.count == shapeRaw.count, shape.allSatisfy({ $0 >= 0 }) else {
                throw LoadError(file: path, "tensor \(name): shape \(shapeRaw) is not a list of non-negative integers")
            }
            let (elements, overflow) = shape.reduce((1, false)) { acc, d in
                let (m, o) = acc.0.multipliedReportingOverflow(by: d)
                return (m, acc.1 || o)
            }
            guard let begin = Int(exactly: offsetsRaw[0]), let end = Int(exactly: offsetsRaw[1]) else {
                throw LoadError(file: path, "tensor \(name): data_offsets \(offsetsRaw) are not integers")
            }
            let (bytes, bytesOverflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, !bytesOverflow, begin >= 0, begin <= end, end <= dataSize else {
                throw LoadError(file: path, "tensor \(name): data_offsets [\(begin), \(end)] point outside the data section (\(dataSize) bytes); the file is truncated or corrupt")
            }
            guard end - begin == bytes else {
                throw LoadError(file: path, "tensor \(name): shape \(shape) of \(dtypeName) needs \(bytes) bytes but data_offsets span \(end - begin)")
            }
            tensors[name] = TensorView(name: name, dtype: dtype, shape: shape, data: file.base + dataStart + begin, file: file)
        }
        self.file = file
        self.tensors = tensors
    }
}

/// All tensors of a checkpoint folder: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json` (as the 4B and 8B ship).
public struct Checkpoint: Sendable {
    public let tensors: [String: TensorView]
    public let files: [String]

    public init(directory: URL) throws {
        let fm = FileManager.default
        let single = directory.appendingPathComponent("model.safetensors")
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        if fm.fileExists(atPath: index.path) {
            guard let data = fm.contents(atPath: index.path),
                  let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                  let weightMap = root["weight_map"] as? [String: String]
            else { throw LoadError(file: index.path, "not a safetensors index (expected a JSON object with \"weight_map\")") }
            var shards: [String: SafeTensorsFile] = [:]
            for shardName in Set(weightMap.values).sorted() {
                guard !shardName.contains("/") else { throw LoadError(file: index.path, "shard name \(shardName) must be a file in the same folder") }
                shards[shardName] = try SafeTensorsFile(path: directory.appendingPathComponent(shardName).path)
            }
            var tensors: [String: TensorView] = [:]
            for (name, shardName) in weightMap {
                guard let t = shards[shardName]!.tensors[name] else {
                    throw LoadError(file: directory.appendingPathComponent(shardName).path, "tensor \(name) is listed in the index but missing from this shard")
                }
                tensors[name] = t
            }
            self.tensors = tensors
            self.files = shards.keys.sorted().map { directory.appendingPathComponent($0).path }
        } else if fm.fileExists(atPath: single.path) {
            let file = try SafeTensorsFile(path: single.path)
            self.tensors = file.tensors
            self.files = [single.path]
        } else {
            throw LoadError(file: directory.path, "no weights: expected model.safetensors or model.safetensors.index.json")
        }
    }
}
