import Foundation
import SiftProtocol

/// Hugging Face Text Embeddings Inference's `POST /rerank` shape, so TEI users switch by changing
/// a URL: `{"query", "texts", "raw_scores", "return_text", "truncate", "truncation_direction"}` →
/// `[{"index", "score", "text"?}]`, best first; errors as `{"error", "error_type"}`.
enum TEIRerankAPI {
    struct Request: Decodable {
        var query: String
        var texts: [String]
        var raw_scores: Bool?
        var return_text: Bool?
        var truncate: Bool?
        var truncation_direction: String?
        /// Sift's own: a model name or alias (TEI serves one model; absent = the default).
        var model: String?
    }

    /// What the response needs of the request.
    struct Options: Sendable {
        var rawScores = false
        var truncate = false
    }

    struct Result: Encodable {
        var index: Int
        var score: Float
        var text: String?
    }

    struct ErrorBody: Encodable {
        var error: String
        var error_type: String
    }

    /// A body is in this shape when it lists "texts" (Cohere's and Jina's list "documents").
    static func matches(_ body: Data) -> Bool { JSONScan.arrayCount(in: body, key: "texts") != nil }

    static func decode(_ body: Data, maxDocuments: Int = .max) throws -> (Wire.RerankRequest, Options) {
        let request = try HTTPRerankAPI.decodeBody(Request.self, from: body, listKey: "texts", maxDocuments: maxDocuments)
        if let direction = request.truncation_direction, direction.lowercased() != "right" {
            throw Wire.Status(.invalidArgument, "truncation_direction \"\(direction)\" is not supported: documents are cut at their end, as the Qwen3-Reranker recipe does; send \"Right\" or leave it out")
        }
        var wire = Wire.RerankRequest(query: request.query, documents: request.texts)
        wire.returnDocuments = request.return_text ?? false
        wire.model = request.model ?? ""
        return (wire, Options(rawScores: request.raw_scores ?? false, truncate: request.truncate ?? false))
    }

    /// The response body; a `Wire.Status` when a text was cut and the client did not allow it
    /// (TEI's default: `truncate` false).
    static func encode(_ r: Wire.RerankResponse, _ options: Options) throws -> Data {
        if !options.truncate, let cut = r.results.first(where: \.truncated) {
            throw Wire.Status(.outOfRange, "texts[\(cut.index)] does not fit the model's input (max_length) with the query: send \"truncate\": true to cut it at its end")
        }
        let results = r.results.map {
            Result(index: Int($0.index), score: options.rawScores ? $0.logit : $0.relevanceScore, text: $0.document)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return (try? encoder.encode(results)) ?? Data("[]".utf8)
    }

    /// HTTP status and TEI's error type for a failure.
    static func error(_ s: Wire.Status) -> (status: Int, body: Data) {
        let (status, type): (Int, String) = switch s.code {
        case .outOfRange: (413, "Validation")
        case .invalidArgument: (422, "Validation")
        case .resourceExhausted: (429, "Overloaded")
        case .unavailable: (503, "Unhealthy")
        default: (HTTPRerankAPI.httpStatus(s.code), s.code.name)
        }
        return (status, (try? JSONEncoder().encode(ErrorBody(error: s.message, error_type: type))) ?? Data())
    }

    /// `GET /info` in TEI's shape (`huggingface_hub`'s `get_endpoint_info()` reads it): the
    /// default model, as a reranker, with the server's limits.
    struct Info: Encodable {
        struct ModelType: Encodable {
            struct Labels: Encodable {
                var id2label = ["0": "yes"]
                var label2id = ["yes": 0]
            }
            var reranker = Labels()
        }
        var model_id: String
        var model_sha: String?
        var model_dtype: String
        var model_type = ModelType()
        var max_concurrent_requests: Int
        var max_input_length: Int
        var max_batch_tokens: Int
        var max_batch_requests: Int?
        var max_client_batch_size: Int
        var auto_truncate = false
        var tokenization_workers = 1
        var version: String
        var sha: String?
        var docker_label: String?
    }

    static func info(_ models: ServedModels, options: ServerOptions) -> Data {
        let model = models.defaultModel
        let info = Info(model_id: model.name, model_dtype: model.service.model.precision == "fp32" ? "float32" : "int8",
                        max_concurrent_requests: options.maxConnections * options.maxInFlightPerConnection,
                        max_input_length: model.service.model.maxLength, max_batch_tokens: model.service.options.maxBatchTokens,
                        max_client_batch_size: model.service.options.maxDocuments, version: Calls.serverVersion)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(info)) ?? Data("{}".utf8)
    }
}
