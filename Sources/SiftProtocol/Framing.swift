import NIOCore

/// Length-prefixed framing: a `UInt32` big-endian byte count, then that many bytes of a
/// `sift.v1.Frame`. Shared by the server, the Swift client and the fuzz test.
public enum Framing {
    /// Default largest frame, both directions (a 1000-document request of 8 KB texts fits).
    public static let defaultMaxFrameBytes = 16 << 20
    public static let headerBytes = 4

    public enum Next: Equatable {
        /// A whole frame's body, consumed from the buffer.
        case frame(ByteBuffer)
        /// More bytes are needed.
        case needMoreData
    }

    /// Takes one frame off the front of `buffer`, or throws if its announced size is over
    /// `maxFrameBytes` (nothing is buffered for it: the peer cannot make us allocate).
    public static func next(from buffer: inout ByteBuffer, maxFrameBytes: Int) throws -> Next {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            return .needMoreData
        }
        guard Int(length) <= maxFrameBytes else { throw FrameTooLarge(length: Int(length), limit: maxFrameBytes) }
        guard buffer.readableBytes >= headerBytes + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: headerBytes)
        return .frame(buffer.readSlice(length: Int(length))!)
    }

    /// Appends `frame` with its length prefix.
    public static func write(_ frame: Wire.Frame, to buffer: inout ByteBuffer) {
        let bytes = frame.encoded()
        buffer.reserveCapacity(minimumWritableBytes: headerBytes + bytes.count)
        buffer.writeInteger(UInt32(bytes.count), endianness: .big)
        buffer.writeBytes(bytes)
    }

    public static func decode(_ body: ByteBuffer) throws -> Wire.Frame {
        try body.withUnsafeReadableBytes { try Wire.Frame.decode($0) }
    }
}

public struct FrameTooLarge: Error, CustomStringConvertible, Equatable {
    public let length: Int
    public let limit: Int
    public init(length: Int, limit: Int) {
        self.length = length
        self.limit = limit
    }
    public var description: String {
        "frame of \(length) bytes is over the limit of \(limit) bytes: split the request (fewer or shorter documents)"
    }
}

/// NIO inbound decoder: bytes → frame bodies (`ByteBuffer`, still protobuf), so that a frame
/// that fails to parse can still be answered under its connection.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer
    public let maxFrameBytes: Int

    public init(maxFrameBytes: Int = Framing.defaultMaxFrameBytes) { self.maxFrameBytes = maxFrameBytes }

    public mutating func decode(buffer: inout ByteBuffer) throws -> ByteBuffer? {
        switch try Framing.next(from: &buffer, maxFrameBytes: maxFrameBytes) {
        case .frame(let body): return body
        case .needMoreData: return nil
        }
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> ByteBuffer? {
        if let frame = try decode(buffer: &buffer) { return frame }
        if buffer.readableBytes > 0 {
            let partial = buffer.readableBytes
            buffer.moveReaderIndex(forwardBy: partial)
            throw TruncatedFrame(bytes: partial)
        }
        return nil
    }
}

/// The connection ended inside a frame.
public struct TruncatedFrame: Error, CustomStringConvertible {
    public let bytes: Int
    public var description: String { "connection closed inside a frame (\(bytes) bytes of it received)" }
}

/// NIO outbound encoder: `Wire.Frame` → length-prefixed bytes.
public final class FrameEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = Wire.Frame
    public init() {}
    public func encode(data: Wire.Frame, out: inout ByteBuffer) throws {
        Framing.write(data, to: &out)
    }
}
