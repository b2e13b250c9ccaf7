import CProtobufC
import Foundation
import SiftProto

/// Why bytes could not be read as a frame. Each message says what the sender got wrong.
public struct ProtocolError: Error, CustomStringConvertible, Equatable {
    public let message: String
    /// The frame's request id when the envelope was readable (the error then answers that call).
    public var requestID: UInt64 = 0
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension Wire.Frame {
    /// Parses one frame's protobuf bytes (without the length prefix). Text must be valid UTF-8
    /// without NUL bytes; anything else is a `ProtocolError`, never a crash.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> Wire.Frame {
        let base = bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!  // protobuf-c accepts (0, non-null)
        guard let frame = sift_wire_unpack_frame(bytes.count, base.assumingMemoryBound(to: UInt8.self)) else {
            throw ProtocolError("the frame's \(bytes.count) bytes are not a valid sift.v1.Frame protobuf message")
        }
        defer { sift_wire_free_frame(frame) }
        return try Decoder.frame(frame.pointee)
    }

    public static func decode(_ bytes: [UInt8]) throws -> Wire.Frame {
        try bytes.withUnsafeBytes { try decode($0) }
    }

    /// The frame's protobuf bytes (without the length prefix).
    public func encoded() -> [UInt8] {
        let arena = Arena()
        var frame = Encoder(arena: arena).frame(self)
        return withUnsafePointer(to: &frame.base) { message in
            let size = protobuf_c_message_get_packed_size(message)
            return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                count = protobuf_c_message_pack(message, buffer.baseAddress!)
            }
        }
    }
}

// MARK: - protobuf-c → Swift

private enum Decoder {
    static func string(_ p: UnsafeMutablePointer<CChar>?, _ field: @autoclosure () -> String) throws -> String {
        guard let p else { return "" }
        let length = sift_wire_string_length(p)
        let bytes = UnsafeRawBufferPointer(start: p, count: length).bindMemory(to: UInt8.self)
        if strlen(p) != length {
            throw ProtocolError("\(field()) contains a NUL byte (U+0000), which text may not hold")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ProtocolError("\(field()) is not valid UTF-8")
        }
        return text
    }

    static func strings(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ field: String) throws -> [String] {
        guard n > 0, let p else { return [] }
        return try (0..<n).map { try string(p[$0], "\(field)[\($0)]") }
    }

    static func messages<T, R>(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, _ convert: (T) throws -> R) rethrows -> [R] {
        guard n > 0, let p else { return [] }
        return try (0..<n).compactMap { i in try p[i].map { try convert($0.pointee) } }
    }

    static func frame(_ f: Sift__V1__Frame) throws -> Wire.Frame {
        do {
            let metadata = try messages(f.n_metadata, f.metadata) {
                Wire.MetadataEntry(try string($0.key, "metadata key"), try string($0.value, "metadata value"))
            }
            return Wire.Frame(requestID: f.request_id, metadata: metadata, body: try body(f))
        } catch var error as ProtocolError {
            error.requestID = f.request_id
            throw error
        }
    }

    /// A proto3 scalar without presence: 0 is "not given".
    static func given(_ value: UInt32) -> UInt32? { value == 0 ? nil : value }

    static func body(_ f: Sift__V1__Frame) throws -> Wire.Body {
        switch f.body_case {
        case SIFT__V1__FRAME__BODY_RERANK_REQUEST:
            guard let r = f.rerank_request?.pointee else { return .unknown }
            var request = Wire.RerankRequest(
                query: try string(r.query, "query"), instruction: r.instruction_presence_case == SIFT__V1__RERANK_REQUEST__INSTRUCTION_PRESENCE_INSTRUCTION
                    ? try string(r.instruction, "instruction") : nil,
                documents: try strings(r.n_documents, r.documents, "documents"), topN: given(r.top_n),
                returnDocuments: r.return_documents != 0, maxTokensPerDocument: given(r.max_tokens_per_document),
                maxLength: given(r.max_length), inputOrder: r.input_order != 0, timeoutMs: given(r.timeout_ms),
                priority: r.priority, stream: r.stream != 0)
            request.chunkLongDocuments = r.chunk_long_documents != 0
            request.chunkOverlapTokens = given(r.chunk_overlap_tokens)
            request.model = try string(r.model, "model")
            return .rerankRequest(request)
        case SIFT__V1__FRAME__BODY_RERANK_RESPONSE:
            guard let r = f.rerank_response?.pointee else { return .unknown }
            let u = r.usage?.pointee
            let t = r.timings?.pointee
            var usage = Wire.Usage(prefixTokens: u?.prefix_tokens ?? 0, prefixTokensCached: u?.prefix_tokens_cached ?? 0,
                                   documentTokens: u?.document_tokens ?? 0, truncatedDocuments: u?.truncated_documents ?? 0,
                                   documents: u?.documents ?? 0, inputTokens: u?.input_tokens ?? 0)
            usage.cachedDocuments = u?.cached_documents ?? 0
            return .rerankResponse(Wire.RerankResponse(
                results: try messages(r.n_results, r.results, result),
                usage: usage,
                timings: Wire.Timings(queuedMs: t?.queued_ms ?? 0, computeMs: t?.compute_ms ?? 0),
                modelID: try string(r.model_id, "model_id")))
        case SIFT__V1__FRAME__BODY_RERANK_PARTIAL:
            guard let r = f.rerank_partial?.pointee else { return .unknown }
            return .rerankPartial(try messages(r.n_results, r.results, result))
        case SIFT__V1__FRAME__BODY_TOKENIZE_REQUEST:
            guard let r = f.tokenize_request?.pointee else { return .unknown }
            return .tokenizeRequest(Wire.TokenizeRequest(texts: try strings(r.n_texts, r.texts, "texts"),
                                                         returnIDs: r.return_ids != 0, model: try string(r.model, "model")))
        case SIFT__V1__FRAME__BODY_TOKENIZE_RESPONSE:
            guard let r = f.tokenize_response?.pointee else { return .unknown }
            return .tokenizeResponse(messages(r.n_texts, r.texts) { t in
                Wire.TokenizedText(count: t.count, ids: t.n_ids > 0 ? Array(UnsafeBufferPointer(start: t.ids, count: t.n_ids)) : [])
            })
        case SIFT__V1__FRAME__BODY_MODEL_INFO_REQUEST:
            return .modelInfoRequest(model: try f.model_info_request.map { try string($0.pointee.model, "model") } ?? "")
        case SIFT__V1__FRAME__BODY_MODEL_INFO_RESPONSE:
            guard let r = f.model_info_response?.pointee else { return .unknown }
            var m = Wire.ModelInfo()
            m.modelID = try string(r.model_id, "model_id")
            m.quantization = try string(r.quantization, "quantization")
            m.hiddenSize = r.hidden_size
            m.layers = r.layers
            m.attentionHeads = r.attention_heads
            m.kvHeads = r.kv_heads
            m.vocabSize = r.vocab_size
            m.maxLength = r.max_length
            m.defaultMaxLength = r.default_max_length
            m.maxDocuments = r.max_documents
            m.maxFrameBytes = r.max_frame_bytes
            m.maxInFlightPerConnection = r.max_in_flight_per_connection
            m.serverVersion = try string(r.server_version, "server_version")
            m.protocolVersion = r.protocol_version
            m.defaultInstruction = try string(r.default_instruction, "default_instruction")
            m.models = try messages(r.n_models, r.models) { s in
                var served = Wire.ServedModel(name: try string(s.name, "models.name"))
                served.aliases = try strings(s.n_aliases, s.aliases, "models.aliases")
                served.quantization = try string(s.quantization, "models.quantization")
                served.hiddenSize = s.hidden_size
                served.layers = s.layers
                served.maxLength = s.max_length
                served.isDefault = s.is_default != 0
                return served
            }
            return .modelInfoResponse(m)
        case SIFT__V1__FRAME__BODY_HEALTH_REQUEST:
            return .healthRequest
        case SIFT__V1__FRAME__BODY_HEALTH_RESPONSE:
            guard let r = f.health_response?.pointee else { return .unknown }
            return .healthResponse(Wire.Health(status: Int32(exactly: r.status.rawValue).flatMap(Wire.Health.ServingStatus.init(rawValue:)) ?? .unknown,
                                               activeRequests: r.active_requests, queuedTokens: r.queued_tokens))
        case SIFT__V1__FRAME__BODY_CANCEL_REQUEST:
            guard let r = f.cancel_request?.pointee else { return .unknown }
            return .cancelRequest(requestID: r.request_id)
        case SIFT__V1__FRAME__BODY_STATUS:
            guard let r = f.status?.pointee else { return .unknown }
            return .status(Wire.Status(Int32(exactly: r.code.rawValue).flatMap(Wire.Code.init(rawValue:)) ?? .unknown, try string(r.message, "status message")))
        default:
            return .unknown
        }
    }

    static func result(_ r: Sift__V1__RerankResult) throws -> Wire.RerankResult {
        let document = try string(r.document, "result document")
        var result = Wire.RerankResult(index: r.index, relevanceScore: r.relevance_score, logit: r.logit, tokens: r.tokens,
                                       truncated: r.truncated != 0, document: document.isEmpty ? nil : document,
                                       inputTokens: r.input_tokens)
        result.window = r.window
        result.windows = r.windows
        return result
    }
}

// MARK: - Swift → protobuf-c

/// C memory for one encode; everything is freed with the arena.
private final class Arena {
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit { for b in blocks { free(b) } }

    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        blocks.append(p)
        return p
    }

    func new<T>(_ initialize: (UnsafeMutablePointer<T>) -> Void) -> UnsafeMutablePointer<T> {
        let p = malloc(MemoryLayout<T>.stride)!.bindMemory(to: T.self, capacity: 1)
        blocks.append(p)
        initialize(p)
        return p
    }

    func array<T>(_ items: [T]) -> UnsafeMutablePointer<T>? {
        guard !items.isEmpty else { return nil }
        let p = malloc(MemoryLayout<T>.stride * items.count)!.bindMemory(to: T.self, capacity: items.count)
        blocks.append(p)
        p.initialize(from: items, count: items.count)
        return p
    }
}

private struct Encoder {
    let arena: Arena

    func frame(_ f: Wire.Frame) -> Sift__V1__Frame {
        var c = Sift__V1__Frame()
        sift__v1__frame__init(&c)
        c.request_id = f.requestID
        let metadata: [UnsafeMutablePointer<Sift__V1__MetadataEntry>?] = f.metadata.map { m in
            arena.new { p in
                sift__v1__metadata_entry__init(p)
                p.pointee.key = arena.string(m.key)
                p.pointee.value = arena.string(m.value)
            }
        }
        c.n_metadata = metadata.count
        c.metadata = arena.array(metadata)
        switch f.body {
        case .rerankRequest(let r):
            c.body_case = SIFT__V1__FRAME__BODY_RERANK_REQUEST
            c.rerank_request = arena.new { p in
                sift__v1__rerank_request__init(p)
                p.pointee.query = arena.string(r.query)
                if let instruction = r.instruction {
                    p.pointee.instruction_presence_case = SIFT__V1__RERANK_REQUEST__INSTRUCTION_PRESENCE_INSTRUCTION
                    p.pointee.instruction = arena.string(instruction)
                }
                p.pointee.n_documents = r.documents.count
                p.pointee.documents = arena.array(r.documents.map { Optional(arena.string($0)) })
                p.pointee.top_n = r.topN ?? 0
                p.pointee.return_documents = r.returnDocuments ? 1 : 0
                p.pointee.max_tokens_per_document = r.maxTokensPerDocument ?? 0
                p.pointee.max_length = r.maxLength ?? 0
                p.pointee.input_order = r.inputOrder ? 1 : 0
                p.pointee.timeout_ms = r.timeoutMs ?? 0
                p.pointee.priority = r.priority
                p.pointee.stream = r.stream ? 1 : 0
                p.pointee.chunk_long_documents = r.chunkLongDocuments ? 1 : 0
                p.pointee.chunk_overlap_tokens = r.chunkOverlapTokens ?? 0
                p.pointee.model = arena.string(r.model)
            }
        case .rerankResponse(let r):
            c.body_case = SIFT__V1__FRAME__BODY_RERANK_RESPONSE
            c.rerank_response = arena.new { p in
                sift__v1__rerank_response__init(p)
                p.pointee.n_results = r.results.count
                p.pointee.results = arena.array(r.results.map { Optional(result($0)) })
                p.pointee.usage = arena.new { u in
                    sift__v1__usage__init(u)
                    u.pointee.prefix_tokens = r.usage.prefixTokens
                    u.pointee.prefix_tokens_cached = r.usage.prefixTokensCached
                    u.pointee.document_tokens = r.usage.documentTokens
                    u.pointee.truncated_documents = r.usage.truncatedDocuments
                    u.pointee.documents = r.usage.documents
                    u.pointee.input_tokens = r.usage.inputTokens
                    u.pointee.cached_documents = r.usage.cachedDocuments
                }
                p.pointee.timings = arena.new { t in
                    sift__v1__timings__init(t)
                    t.pointee.queued_ms = r.timings.queuedMs
                    t.pointee.compute_ms = r.timings.computeMs
                }
                p.pointee.model_id = arena.string(r.modelID)
            }
        case .rerankPartial(let results):
            c.body_case = SIFT__V1__FRAME__BODY_RERANK_PARTIAL
            c.rerank_partial = arena.new { p in
                sift__v1__rerank_partial__init(p)
                p.pointee.n_results = results.count
                p.pointee.results = arena.array(results.map { Optional(result($0)) })
            }
        case .tokenizeRequest(let r):
            c.body_case = SIFT__V1__FRAME__BODY_TOKENIZE_REQUEST
            c.tokenize_request = arena.new { p in
                sift__v1__tokenize_request__init(p)
                p.pointee.n_texts = r.texts.count
                p.pointee.texts = arena.array(r.texts.map { Optional(arena.string($0)) })
                p.pointee.return_ids = r.returnIDs ? 1 : 0
                p.pointee.model = arena.string(r.model)
            }
        case .tokenizeResponse(let texts):
            c.body_case = SIFT__V1__FRAME__BODY_TOKENIZE_RESPONSE
            c.tokenize_response = arena.new { p in
                sift__v1__tokenize_response__init(p)
                p.pointee.n_texts = texts.count
                p.pointee.texts = arena.array(texts.map { text in
                    Optional(arena.new { (t: UnsafeMutablePointer<Sift__V1__TokenizedText>) in
                        sift__v1__tokenized_text__init(t)
                        t.pointee.count = text.count
                        t.pointee.n_ids = text.ids.count
                        t.pointee.ids = arena.array(text.ids)
                    })
                })
            }
        case .modelInfoRequest(let model):
            c.body_case = SIFT__V1__FRAME__BODY_MODEL_INFO_REQUEST
            c.model_info_request = arena.new { p in
                sift__v1__model_info_request__init(p)
                p.pointee.model = arena.string(model)
            }
        case .modelInfoResponse(let m):
            c.body_case = SIFT__V1__FRAME__BODY_MODEL_INFO_RESPONSE
            c.model_info_response = arena.new { p in
                sift__v1__model_info_response__init(p)
                p.pointee.model_id = arena.string(m.modelID)
                p.pointee.quantization = arena.string(m.quantization)
                p.pointee.hidden_size = m.hiddenSize
                p.pointee.layers = m.layers
                p.pointee.attention_heads = m.attentionHeads
                p.pointee.kv_heads = m.kvHeads
                p.pointee.vocab_size = m.vocabSize
                p.pointee.max_length = m.maxLength
                p.pointee.default_max_length = m.defaultMaxLength
                p.pointee.max_documents = m.maxDocuments
                p.pointee.max_frame_bytes = m.maxFrameBytes
                p.pointee.max_in_flight_per_connection = m.maxInFlightPerConnection
                p.pointee.server_version = arena.string(m.serverVersion)
                p.pointee.protocol_version = m.protocolVersion
                p.pointee.default_instruction = arena.string(m.defaultInstruction)
                p.pointee.n_models = m.models.count
                p.pointee.models = arena.array(m.models.map { s in
                    Optional(arena.new { (q: UnsafeMutablePointer<Sift__V1__ServedModel>) in
                        sift__v1__served_model__init(q)
                        q.pointee.name = arena.string(s.name)
                        q.pointee.n_aliases = s.aliases.count
                        q.pointee.aliases = arena.array(s.aliases.map { Optional(arena.string($0)) })
                        q.pointee.quantization = arena.string(s.quantization)
                        q.pointee.hidden_size = s.hiddenSize
                        q.pointee.layers = s.layers
                        q.pointee.max_length = s.maxLength
                        q.pointee.is_default = s.isDefault ? 1 : 0
                    })
                })
            }
        case .healthRequest:
            c.body_case = SIFT__V1__FRAME__BODY_HEALTH_REQUEST
            c.health_request = arena.new { sift__v1__health_request__init($0) }
        case .healthResponse(let h):
            c.body_case = SIFT__V1__FRAME__BODY_HEALTH_RESPONSE
            c.health_response = arena.new { p in
                sift__v1__health_response__init(p)
                p.pointee.status = Sift__V1__HealthResponse__ServingStatus(rawValue: UInt32(h.status.rawValue))
                p.pointee.active_requests = h.activeRequests
                p.pointee.queued_tokens = h.queuedTokens
            }
        case .cancelRequest(let id):
            c.body_case = SIFT__V1__FRAME__BODY_CANCEL_REQUEST
            c.cancel_request = arena.new { p in
                sift__v1__cancel_request__init(p)
                p.pointee.request_id = id
            }
        case .status(let s):
            c.body_case = SIFT__V1__FRAME__BODY_STATUS
            c.status = arena.new { p in
                sift__v1__status__init(p)
                p.pointee.code = Sift__V1__Code(rawValue: UInt32(s.code.rawValue))
                p.pointee.message = arena.string(s.message)
            }
        case .unknown:
            break
        }
        return c
    }

    func result(_ r: Wire.RerankResult) -> UnsafeMutablePointer<Sift__V1__RerankResult> {
        arena.new { p in
            sift__v1__rerank_result__init(p)
            p.pointee.index = r.index
            p.pointee.relevance_score = r.relevanceScore
            p.pointee.logit = r.logit
            p.pointee.tokens = r.tokens
            p.pointee.truncated = r.truncated ? 1 : 0
            p.pointee.input_tokens = r.inputTokens
            p.pointee.window = r.window
            p.pointee.windows = r.windows
            if let d = r.document { p.pointee.document = arena.string(d) }
        }
    }
}
