import Foundation

/// Writes small safetensors files for tests, including deliberately broken ones.
public enum SafeTensorsWriter {
    public struct Entry {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var data: [UInt8]
        public init(name: String, dtype: String, shape: [Int], data: [UInt8]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.data = data
        }
    }

    /// `offsetsOverride` replaces the data_offsets of the named tensor.
    public static func write(_ entries: [Entry], to url: URL, offsetsOverride: [String: [Int]] = [:]) throws {
        var header: [String: Any] = ["__metadata__": ["format": "pt"]]
        var data: [UInt8] = []
        for e in entries {
            let begin = data.count
            data += e.data
            header[e.name] = ["dtype": e.dtype, "shape": e.shape, "data_offsets": offsetsOverride[e.name] ?? [begin, data.count]]
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(contentsOf: data)
        try out.write(to: url)
    }

    public static func floats(_ values: [Float]) -> [UInt8] {
        values.withUnsafeBytes { Array($0) }
    }
}
