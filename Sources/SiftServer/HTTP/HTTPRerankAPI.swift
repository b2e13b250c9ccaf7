import Foundation
import SiftProtocol

/// The JSON shapes of the Cohere (v1, v2) and Jina rerank APIs, which Elasticsearch's and
/// OpenSearch's rerank connectors speak. One request type reads both; one response type is a
/// superset of both (each client ignores the other's fields).
enum HTTPRerankAPI {
    /// A document: a string, or an object with "text" (Cohere v1, Jina).
    struct Document: Decodable {
        let text: String

        init(from decoder: any Decoder) throws {
            if let text = try? decoder.singleValueContainer().decode(String.self) {
                self.text = text
                return
            }
            struct Object: Decodable { let text: String }
            guard let object = try? Object(from: decoder) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                    debugDescription: "a document must be a string or an object with a \"text\" string"))
            }
            text = object.text
        }
    }

    struct Request: Decodable {
        /// A model name or alias the server serves (unknown: 404 naming them); echoed back.
        var model: String?
        var query: String
        var documents: [Document]
        var top_n: Int?
        var return_documents: Bool?
        /// Cohere v2.
        var max_tokens_per_doc: Int?
        /// Sift's own options.
        var instruction: String?
        var max_length: Int?
        var chunk_long_documents: Bool?
        var chunk_overlap_tokens: Int?
        var timeout_ms: Int?
        var priority: Int?
    }

    struct Response: Encodable {
        struct Result: Encodable {
            var index: Int
            var relevance_score: Float
            var logit: Float
            var document: DocumentText?
            var window: Int?
            var windows: Int?
        }
        struct DocumentText: Encodable { var text: String }
        struct Usage: Encodable {
            var total_tokens: Int
            var prompt_tokens: Int
            var prefix_tokens_cached: Int
            var cached_documents: Int
        }
        struct Meta: Encodable {
            struct APIVersion: Encodable { var version: String }
            struct BilledUnits: Encodable { var search_units: Int }
            struct Tokens: Encodable { var input_tokens: Int }
            var api_version: APIVersion
            var billed_units: BilledUnits
            var tokens: Tokens
        }
        var id: String
        var model: String
        var results: [Result]
        var usage: Usage
        var meta: Meta
    }

    /// An error in every shape clients read: Cohere's `message`, Jina's and FastAPI's `detail`,
    /// and the gRPC code name.
    struct ErrorBody: Encodable {
        var message: String
        var detail: String
        var code: String

        init(_ status: Wire.Status) {
            message = status.message
            detail = status.message
            code = status.code.name
        }
    }

    /// Decodes a JSON request body whose texts are listed under `listKey`, after counting them
    /// (8 million empty documents are refused from the count, not built); every failure is a
    /// status saying what is wrong. Shared by every JSON dialect.
    static func decodeBody<T: Decodable>(_ type: T.Type, from body: Data, listKey: String, maxDocuments: Int) throws -> T {
        if let n = JSONScan.arrayCount(in: body, key: listKey), n > maxDocuments {
            throw Wire.Status(.invalidArgument, "\(n) \(listKey); at most \(maxDocuments) per request: split the request")
        }
        do {
            return try JSONDecoder().decode(T.self, from: body)
        } catch let error as DecodingError {
            throw Wire.Status(.invalidArgument, "invalid request body: \(describe(error))")
        } catch {
            throw Wire.Status(.invalidArgument, "invalid request body: \(error.localizedDescription)")
        }
    }

    /// The call a JSON body asks for, or a status saying what is wrong with it. Fields left out
    /// stay nil (the server's defaults); a value given is passed on as given, 0 included, for the
    /// engine to judge as it judges an RPC call's.
    static func decode(_ body: Data, maxDocuments: Int = .max) throws -> Wire.RerankRequest {
        let request = try decodeBody(Request.self, from: body, listKey: "documents", maxDocuments: maxDocuments)
        func count(_ value: Int?, _ name: String) throws -> UInt32? {
            guard let value else { return nil }
            guard value >= 0, value <= Int(UInt32.max) else { throw Wire.Status(.invalidArgument, "\(name) must be in 0...\(UInt32.max)") }
            return UInt32(value)
        }
        var call = Wire.RerankRequest(query: request.query, instruction: request.instruction,
                                      documents: request.documents.map(\.text))
        call.topN = try count(request.top_n, "top_n")
        call.returnDocuments = request.return_documents ?? false
        call.maxTokensPerDocument = try count(request.max_tokens_per_doc, "max_tokens_per_doc")
        call.maxLength = try count(request.max_length, "max_length")
        call.timeoutMs = try count(request.timeout_ms, "timeout_ms")
        if call.timeoutMs == 0 {
            throw Wire.Status(.invalidArgument, "timeout_ms must be positive: leave it out for no deadline")
        }
        call.priority = Int32(clamping: request.priority ?? 0)
        call.chunkLongDocuments = request.chunk_long_documents ?? false
        call.chunkOverlapTokens = try count(request.chunk_overlap_tokens, "chunk_overlap_tokens")
        call.model = request.model ?? ""
        return call
    }

    static func encode(_ r: Wire.RerankResponse, model: String, apiVersion: String) -> Data {
        let total = Int(r.usage.inputTokens)
        let response = Response(
            id: UUID().uuidString.lowercased(),
            model: model,
            results: r.results.map {
                Response.Result(index: Int($0.index), relevance_score: $0.relevanceScore, logit: $0.logit,
                                document: $0.document.map { Response.DocumentText(text: $0) },
                                window: $0.windows > 1 ? Int($0.window) : nil, windows: $0.windows > 1 ? Int($0.windows) : nil)
            },
            usage: Response.Usage(total_tokens: total, prompt_tokens: Int(r.usage.prefixTokens),
                                  prefix_tokens_cached: Int(r.usage.prefixTokensCached), cached_documents: Int(r.usage.cachedDocuments)),
            meta: Response.Meta(api_version: .init(version: apiVersion), billed_units: .init(search_units: 1),
                                tokens: .init(input_tokens: total)))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return (try? encoder.encode(response)) ?? Data("{}".utf8)
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let p = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return p.isEmpty ? "body" : String(p.drop { $0 == "." })
        }
        switch error {
        case .keyNotFound(let key, _): return "missing field \"\(key.stringValue)\""
        case .typeMismatch(let type, let c): return "\(path(c)) must be \(type == String.self ? "a string" : "\(type)")"
        case .valueNotFound(_, let c): return "\(path(c)) must not be null"
        case .dataCorrupted(let c): return "\(path(c)): \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    /// HTTP status for a call's failure, the usual gRPC-to-HTTP mapping (RESOURCE_EXHAUSTED → 429 so
    /// HTTP clients back off; 413 for oversized bodies is decided before a call exists).
    static func httpStatus(_ code: Wire.Code) -> Int {
        switch code {
        case .ok: 200
        case .invalidArgument, .outOfRange, .failedPrecondition: 400
        case .unauthenticated: 401
        case .permissionDenied: 403
        case .notFound: 404
        case .resourceExhausted: 429
        case .cancelled: 499
        case .unimplemented: 501
        case .unavailable: 503
        case .deadlineExceeded: 504
        default: 500
        }
    }
}

/// Reads just enough JSON to count the elements of a top-level array, without building them.
enum JSONScan {
    /// A request body as the scanner and the decoder both read it: UTF-8 JSON (RFC 8259), a
    /// leading byte-order mark dropped. UTF-16 and UTF-32 bodies (which Foundation's decoder
    /// would read past the document count check) are refused.
    static func utf8Body(_ body: Data) throws(Wire.Status) -> Data {
        let head = Array(body.prefix(4))
        if head.starts(with: [0xEF, 0xBB, 0xBF]) { return body.dropFirst(3) }
        if head.starts(with: [0xFE, 0xFF]) || head.starts(with: [0xFF, 0xFE]) || head.contains(0) {
            throw Wire.Status(.invalidArgument, "the request body must be JSON in UTF-8 (RFC 8259), not UTF-16 or UTF-32")
        }
        return body
    }

    /// Elements of the array under `key` in the top-level object (the largest, if the key
    /// repeats); nil when the body is not an object of that shape (the decoder says why).
    static func arrayCount(in data: Data, key: String) -> Int? {
        data.withUnsafeBytes { raw in
            var scanner = Scanner(bytes: raw.bindMemory(to: UInt8.self))
            return scanner.topLevelArrayCount(key: Array(key.utf8))
        }
    }

    struct Scanner {
        let bytes: UnsafeBufferPointer<UInt8>
        var i = 0

        mutating func whitespace() {
            while i < bytes.count, [0x20, 0x09, 0x0a, 0x0d].contains(bytes[i]) { i += 1 }
        }

        mutating func expect(_ c: UInt8) -> Bool {
            whitespace()
            guard i < bytes.count, bytes[i] == c else { return false }
            i += 1
            return true
        }

        /// A string's decoded bytes (kept only up to `keep` bytes); nil if malformed.
        mutating func string(keep: Int) -> [UInt8]? {
            guard expect(0x22) else { return nil }
            var out: [UInt8] = []
            while i < bytes.count {
                let c = bytes[i]
                i += 1
                switch c {
                case 0x22: return out
                case 0x5c:
                    guard i < bytes.count else { return nil }
                    let e = bytes[i]
                    i += 1
                    var decoded: [UInt8] = []
                    switch e {
                    case 0x75:  // \uXXXX
                        guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<(i + 4)], as: UTF8.self), radix: 16) else { return nil }
                        i += 4
                        decoded = Array(String(Character(Unicode.Scalar(v) ?? "?")).utf8)
                    case 0x6e: decoded = [0x0a]
                    case 0x74: decoded = [0x09]
                    case 0x72: decoded = [0x0d]
                    case 0x62: decoded = [0x08]
                    case 0x66: decoded = [0x0c]
                    default: decoded = [e]
                    }
                    if out.count < keep { out += decoded }
                default:
                    if out.count < keep { out.append(c) }
                }
            }
            return nil
        }

        /// Skips one value of any kind; false if malformed.
        mutating func skipValue() -> Bool {
            whitespace()
            guard i < bytes.count else { return false }
            switch bytes[i] {
            case 0x22: return string(keep: 0) != nil
            case 0x7b, 0x5b:
                var depth = 0
                while i < bytes.count {
                    switch bytes[i] {
                    case 0x22:
                        guard string(keep: 0) != nil else { return false }
                        continue
                    case 0x7b, 0x5b: depth += 1
                    case 0x7d, 0x5d:
                        depth -= 1
                        if depth == 0 { i += 1; return true }
                    default: break
                    }
                    i += 1
                }
                return false
            default:
                let start = i
                while i < bytes.count, ![0x2c, 0x7d, 0x5d, 0x20, 0x09, 0x0a, 0x0d].contains(bytes[i]) { i += 1 }
                return i > start
            }
        }

        mutating func arrayCount() -> Int? {
            guard expect(0x5b) else { return nil }
            if expect(0x5d) { return 0 }
            var n = 0
            while true {
                guard skipValue() else { return nil }
                n += 1
                if expect(0x2c) { continue }
                return expect(0x5d) ? n : nil
            }
        }

        mutating func topLevelArrayCount(key: [UInt8]) -> Int? {
            guard expect(0x7b) else { return nil }
            var best: Int?
            if expect(0x7d) { return nil }
            while true {
                guard let name = string(keep: key.count + 1), expect(0x3a) else { return best }
                whitespace()
                if name == key, i < bytes.count, bytes[i] == 0x5b {
                    guard let n = arrayCount() else { return best }
                    best = max(best ?? 0, n)
                } else {
                    guard skipValue() else { return best }
                }
                if expect(0x2c) { continue }
                return best
            }
        }
    }
}
