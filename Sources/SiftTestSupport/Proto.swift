/// Hand-made protobuf bytes, to send what a well-behaved encoder never would.
public enum Proto {
    public static func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        while v >= 0x80 { out.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
        out.append(UInt8(v))
        return out
    }
    public static func field(_ number: UInt64, varint v: UInt64) -> [UInt8] { varint(number << 3) + varint(v) }
    public static func field(_ number: UInt64, bytes: [UInt8]) -> [UInt8] { varint(number << 3 | 2) + varint(UInt64(bytes.count)) + bytes }
    public static func framed(_ body: [UInt8]) -> [UInt8] {
        let n = UInt32(body.count)
        return [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + body
    }
    /// A Frame with a rerank_request whose documents are raw byte strings.
    public static func rerank(id: UInt64, query: [UInt8], documents: [[UInt8]], extra: [UInt8] = []) -> [UInt8] {
        let request = field(1, bytes: query) + documents.flatMap { field(3, bytes: $0) } + extra
        return field(1, varint: id) + field(10, bytes: request)
    }
}

