/// What the server needs to know of a frame before paying for it: the request id, the
/// metadata (the API key), which message the body is, and how many documents or texts it
/// carries. Read straight off the protobuf bytes, without decoding the body or allocating per
/// document: a frame of 8 million empty documents is refused from its count, and a frame
/// without a valid key is refused from its first bytes, before the rest is even buffered.
///
/// Encoders write fields in field-number order (request_id, metadata, then the body), so the
/// envelope of a partly received frame is complete long before the frame is; the protocol
/// requires metadata before the body in frames over 64 KiB (docs/PROTOCOL.md).
public struct Envelope: Equatable, Sendable {
    public var requestID: UInt64 = 0
    public var metadata: [Wire.MetadataEntry] = []
    /// Field number of the body (`Body.Field`), nil while not yet seen.
    public var bodyField: Int?
    /// The whole frame was read: `documents`/`texts` are counted.
    public var isComplete = false
    /// Documents of a rerank request, texts of a tokenize request (complete frames only).
    public var items = 0

    public init() {}

    /// Body field numbers of `sift.v1.Frame` (Protos/sift.proto).
    public enum Field {
        public static let rerankRequest = 10
        public static let tokenizeRequest = 13
        public static let healthRequest = 17
        public static let cancelRequest = 19
    }

    /// A metadata value; keys compare without regard to case, as HTTP headers and gRPC's do.
    public func metadata(_ key: String) -> String? {
        metadata.first { $0.key.lowercased() == key.lowercased() }?.value
    }

    /// Reads the envelope of a frame's first `bytes.count` bytes (`complete`: all of them).
    /// Returns nil while what is there does not yet reach the body (or, for a complete frame,
    /// never does); throws when the bytes cannot be a frame.
    public static func read(_ bytes: UnsafeRawBufferPointer, complete: Bool) throws(ProtocolError) -> Envelope? {
        var reader = Reader(bytes)
        var envelope = Envelope()
        envelope.isComplete = complete
        // The bytes end inside a field: wait for more, or (complete) the frame is truncated.
        func partial() throws(ProtocolError) -> Envelope? {
            if complete { throw ProtocolError("the frame ends inside a field: not a valid sift.v1.Frame") }
            return nil
        }
        while !reader.atEnd {
            guard let (field, wireType) = try reader.tag() else { return try partial() }
            switch (field, wireType) {
            case (1, 0):
                guard let id = try reader.varint() else { return try partial() }
                envelope.requestID = id
            case (2, 2):
                guard let entry = try reader.lengthDelimited() else { return try partial() }
                envelope.metadata.append(try metadataEntry(entry, requestID: envelope.requestID))
            case (10...20, 2):
                // Protobuf keeps the last of several bodies (and merges repeats of one), so a
                // frame screened on its first could carry another past the screen: refused.
                guard envelope.bodyField == nil else {
                    var error = ProtocolError("the frame carries more than one body (fields \(envelope.bodyField!) and \(field)): send exactly one")
                    error.requestID = envelope.requestID
                    throw error
                }
                envelope.bodyField = field
                // A partial frame is judged on its first body; what follows it is read as it
                // arrives, so a second body is refused before the frame is buffered whole.
                guard let body = try reader.lengthDelimited() else { return complete ? try partial() : envelope }
                guard complete else { continue }
                if field == Field.rerankRequest { envelope.items = try count(field: 3, in: body) }
                if field == Field.tokenizeRequest { envelope.items = try count(field: 1, in: body) }
            default:
                guard try reader.skip(wireType) else { return try partial() }
            }
        }
        return complete || envelope.bodyField != nil ? envelope : nil
    }

    /// Occurrences of length-delimited `field` in a message.
    static func count(field: Int, in bytes: UnsafeRawBufferPointer) throws(ProtocolError) -> Int {
        var reader = Reader(bytes)
        var n = 0
        while !reader.atEnd {
            guard let (f, wireType) = try reader.tag(), try reader.skip(wireType) else {
                throw ProtocolError("the frame's body is truncated")
            }
            if f == field && wireType == 2 { n += 1 }
        }
        return n
    }

    static func metadataEntry(_ bytes: UnsafeRawBufferPointer, requestID: UInt64) throws(ProtocolError) -> Wire.MetadataEntry {
        var reader = Reader(bytes)
        var key = "", value = ""
        while !reader.atEnd {
            guard let (f, wireType) = try reader.tag() else { throw ProtocolError("a metadata entry is truncated") }
            if wireType == 2, f == 1 || f == 2 {
                guard let raw = try reader.lengthDelimited() else { throw ProtocolError("a metadata entry is truncated") }
                guard !raw.contains(0), let text = String(validating: raw, as: UTF8.self) else {
                    var error = ProtocolError("metadata \(f == 1 ? "key" : "value") is not valid UTF-8 text without NUL")
                    error.requestID = requestID
                    throw error
                }
                if f == 1 { key = text } else { value = text }
            } else {
                guard try reader.skip(wireType) else { throw ProtocolError("a metadata entry is truncated") }
            }
        }
        return Wire.MetadataEntry(key, value)
    }

    /// Protobuf wire-format reading. nil: the bytes end inside the item; throws: not protobuf.
    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        var atEnd: Bool { offset >= bytes.count }

        mutating func varint() throws(ProtocolError) -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while offset < bytes.count {
                let byte = bytes[offset]
                offset += 1
                guard shift < 64 else { throw ProtocolError("a varint is longer than 10 bytes") }
                value |= UInt64(byte & 0x7f) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }

        mutating func tag() throws(ProtocolError) -> (field: Int, wireType: Int)? {
            guard let key = try varint() else { return nil }
            let field = key >> 3
            guard field >= 1, field <= 536_870_911 else { throw ProtocolError("field number \(field) is not valid protobuf") }
            return (Int(field), Int(key & 7))
        }

        mutating func lengthDelimited() throws(ProtocolError) -> UnsafeRawBufferPointer? {
            guard let length = try varint() else { return nil }
            guard length <= UInt64(bytes.count - offset) else {
                if length > UInt64(Int32.max) { throw ProtocolError("a field claims \(length) bytes") }
                return nil
            }
            let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + Int(length))])
            offset += Int(length)
            return slice
        }

        /// Skips a field's value; false: the bytes end inside it.
        mutating func skip(_ wireType: Int) throws(ProtocolError) -> Bool {
            switch wireType {
            case 0: return try varint() != nil
            case 1, 5:
                let n = wireType == 1 ? 8 : 4
                guard bytes.count - offset >= n else { return false }
                offset += n
                return true
            case 2: return try lengthDelimited() != nil
            default: throw ProtocolError("wire type \(wireType) is not used by sift.v1 (groups are not supported)")
            }
        }
    }
}
