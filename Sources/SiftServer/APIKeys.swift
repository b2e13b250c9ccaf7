import Crypto
import Foundation

/// The API keys a server accepts. A call presents one as metadata
/// `authorization: Bearer <key>`; keys are compared in constant time.
public struct APIKeys: Sendable {
    private let keys: [[UInt8]]

    public init(_ keys: [String]) { self.keys = keys.map { Array($0.utf8) } }

    /// One key per line; blank lines and lines starting with # are ignored.
    public init(file path: String) throws {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw APIKeysError("cannot read API key file \(path): \(error.localizedDescription)")
        }
        let keys = text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        guard !keys.isEmpty else { throw APIKeysError("API key file \(path) holds no key (one per line)") }
        if let short = keys.firstIndex(where: { $0.utf8.count < 16 }) {
            // Never echoed, not even in part: the log may be read by others than the key's owner.
            throw APIKeysError("API key file \(path): key \(short + 1) (of \(keys.count), not counting blank and # lines) is shorter than 16 characters")
        }
        self.init(keys)
    }

    public var isEmpty: Bool { keys.isEmpty }
    public var count: Int { keys.count }

    /// Who presents an `authorization` metadata value, or nil when no key matches. Every key is
    /// compared over its whole length whatever matches, so timing tells nothing about how much
    /// of a guess was right.
    public func caller(authorization: String?) -> Caller? {
        if keys.isEmpty { return Caller(cachePartition: 0) }
        // "Bearer <key>" (the scheme is case-insensitive, RFC 6750); a bare key is not accepted.
        guard let authorization, authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else { return nil }
        let presented = Array(authorization.dropFirst(7).utf8)
        var matched = false
        for key in keys {
            matched = Self.constantTimeEqual(presented, key) || matched
        }
        guard matched else { return nil }
        let digest = SHA256.hash(data: presented)
        return Caller(cachePartition: digest.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } | 1)
    }

    public func accepts(authorization: String?) -> Bool { caller(authorization: authorization) != nil }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        if a.count != b.count { difference |= 1 }
        let n = b.count
        for i in 0..<n {
            // Reads a at a fixed index either way, so a short guess costs the same as a long one.
            let x = a.isEmpty ? 0 : a[i % a.count]
            difference |= x ^ b[i]
        }
        return difference == 0
    }
}

/// A caller whose key was accepted (or any caller, on a server without keys).
public struct Caller: Sendable, Equatable {
    /// Its cache partition (see `RerankRequest.cachePartition`): one per key when keys are
    /// configured, so one tenant's cache hits tell nothing of another's calls; 0 (shared) without keys.
    public let cachePartition: UInt64
}

public struct APIKeysError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
