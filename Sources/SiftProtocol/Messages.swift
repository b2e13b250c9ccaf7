/// The messages of Protos/sift.proto as Swift values. `Wire.Frame.decode` / `encode` convert
/// them through the protobuf-c code generated from that file.
public enum Wire {
    /// Protocol version in ModelInfo; bumped only for changes old peers cannot ignore.
    public static let protocolVersion: UInt32 = 1

    public struct Frame: Sendable, Equatable {
        public var requestID: UInt64
        public var metadata: [MetadataEntry]
        public var body: Body

        public init(requestID: UInt64, metadata: [MetadataEntry] = [], body: Body) {
            self.requestID = requestID
            self.metadata = metadata
            self.body = body
        }

        /// The value of the first metadata entry with this key (keys are case-insensitive).
        public func metadata(_ key: String) -> String? {
            metadata.first { $0.key.lowercased() == key }?.value
        }
    }

    public struct MetadataEntry: Sendable, Equatable {
        public var key: String
        public var value: String
        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }

    public enum Body: Sendable, Equatable {
        case rerankRequest(RerankRequest)
        case rerankResponse(RerankResponse)
        case rerankPartial([RerankResult])
        case tokenizeRequest(TokenizeRequest)
        case tokenizeResponse([TokenizedText])
        /// `model`: which model the top-level fields describe ("": the default).
        case modelInfoRequest(model: String = "")
        case modelInfoResponse(ModelInfo)
        case healthRequest
        case healthResponse(Health)
        case cancelRequest(requestID: UInt64)
        case status(Status)
        /// No body this version knows (a newer peer's message, or none at all).
        case unknown

        /// The call's name in logs and metrics.
        public var method: String {
            switch self {
            case .rerankRequest, .rerankResponse, .rerankPartial: "rerank"
            case .tokenizeRequest, .tokenizeResponse: "tokenize"
            case .modelInfoRequest, .modelInfoResponse: "model_info"
            case .healthRequest, .healthResponse: "health"
            case .cancelRequest: "cancel"
            case .status: "status"
            case .unknown: "unknown"
            }
        }
    }

    /// gRPC's status codes, same numbers.
    public enum Code: Int32, Sendable, CaseIterable {
        case ok = 0, cancelled, unknown, invalidArgument, deadlineExceeded, notFound, alreadyExists,
             permissionDenied, resourceExhausted, failedPrecondition, aborted, outOfRange, unimplemented,
             `internal`, unavailable, dataLoss, unauthenticated

        /// As gRPC spells it: INVALID_ARGUMENT.
        public var name: String {
            String(describing: self).reduce(into: "") { out, c in
                if c.isUppercase { out += "_" }
                out += c.uppercased()
            }
        }
    }

    public struct Status: Sendable, Equatable, Error, CustomStringConvertible {
        public var code: Code
        public var message: String
        public init(_ code: Code, _ message: String) {
            self.code = code
            self.message = message
        }
        public var description: String { "\(code.name): \(message)" }
    }

    /// A rerank call as both front doors decode it: from protobuf (where proto3 has no presence
    /// and 0 stands for "not given") and from JSON (where a field is given or left out). nil is
    /// always "not given: the server's default", so an explicit 0 from JSON stays 0 and is judged
    /// by the engine like any other value.
    public struct RerankRequest: Sendable, Equatable {
        public var query: String
        /// nil: the model card's default instruction; any string, "" included, is used as given.
        public var instruction: String?
        public var documents: [String]
        /// nil: all.
        public var topN: UInt32?
        public var returnDocuments: Bool
        /// nil: no cut beyond maxLength.
        public var maxTokensPerDocument: UInt32?
        /// nil: the server's default.
        public var maxLength: UInt32?
        public var inputOrder: Bool
        /// nil: no deadline.
        public var timeoutMs: UInt32?
        public var priority: Int32
        public var stream: Bool
        public var chunkLongDocuments = false
        /// nil: the server's default overlap. An RPC call cannot ask for no overlap (0 is "not
        /// given" on the wire); HTTP's explicit 0 arrives as 0.
        public var chunkOverlapTokens: UInt32?
        /// A model name or alias; "": the server's default model.
        public var model = ""

        public init(query: String, instruction: String? = nil, documents: [String], topN: UInt32? = nil,
                    returnDocuments: Bool = false, maxTokensPerDocument: UInt32? = nil, maxLength: UInt32? = nil,
                    inputOrder: Bool = false, timeoutMs: UInt32? = nil, priority: Int32 = 0, stream: Bool = false) {
            self.query = query
            self.instruction = instruction
            self.documents = documents
            self.topN = topN
            self.returnDocuments = returnDocuments
            self.maxTokensPerDocument = maxTokensPerDocument
            self.maxLength = maxLength
            self.inputOrder = inputOrder
            self.timeoutMs = timeoutMs
            self.priority = priority
            self.stream = stream
        }
    }

    public struct RerankResult: Sendable, Equatable {
        public var index: UInt32
        /// sigmoid(logit), 0...1.
        public var relevanceScore: Float
        /// logit("yes") − logit("no").
        public var logit: Float
        /// Document tokens (after truncation).
        public var tokens: UInt32
        public var truncated: Bool
        /// Set when the request asked for return_documents.
        public var document: String?
        /// Prompt + document + suffix tokens of this pair.
        public var inputTokens: UInt32
        /// With chunking: the best window (0-based) and the number of windows.
        public var window: UInt32 = 0
        public var windows: UInt32 = 0

        public init(index: UInt32, relevanceScore: Float, logit: Float, tokens: UInt32, truncated: Bool, document: String? = nil,
                    inputTokens: UInt32 = 0) {
            self.inputTokens = inputTokens
            self.index = index
            self.relevanceScore = relevanceScore
            self.logit = logit
            self.tokens = tokens
            self.truncated = truncated
            self.document = document
        }
    }

    public struct Usage: Sendable, Equatable {
        public var prefixTokens: UInt32
        public var prefixTokensCached: UInt32
        public var documentTokens: UInt64
        public var truncatedDocuments: UInt32
        public var documents: UInt32
        /// Prompt + document + suffix tokens summed over every scored pair.
        public var inputTokens: UInt64
        /// Documents answered from the score cache.
        public var cachedDocuments: UInt32 = 0

        public init(prefixTokens: UInt32 = 0, prefixTokensCached: UInt32 = 0, documentTokens: UInt64 = 0,
                    truncatedDocuments: UInt32 = 0, documents: UInt32 = 0, inputTokens: UInt64 = 0) {
            self.inputTokens = inputTokens
            self.prefixTokens = prefixTokens
            self.prefixTokensCached = prefixTokensCached
            self.documentTokens = documentTokens
            self.truncatedDocuments = truncatedDocuments
            self.documents = documents
        }
    }

    public struct Timings: Sendable, Equatable {
        public var queuedMs: Double
        public var computeMs: Double
        public init(queuedMs: Double = 0, computeMs: Double = 0) {
            self.queuedMs = queuedMs
            self.computeMs = computeMs
        }
    }

    public struct RerankResponse: Sendable, Equatable {
        public var results: [RerankResult]
        public var usage: Usage
        public var timings: Timings
        public var modelID: String

        public init(results: [RerankResult], usage: Usage = Usage(), timings: Timings = Timings(), modelID: String = "") {
            self.results = results
            self.usage = usage
            self.timings = timings
            self.modelID = modelID
        }
    }

    public struct TokenizeRequest: Sendable, Equatable {
        public var texts: [String]
        public var returnIDs: Bool
        /// Whose tokenizer; "": the default model's.
        public var model: String
        public init(texts: [String], returnIDs: Bool = false, model: String = "") {
            self.texts = texts
            self.returnIDs = returnIDs
            self.model = model
        }
    }

    public struct TokenizedText: Sendable, Equatable {
        public var count: UInt32
        public var ids: [UInt32]
        public init(count: UInt32, ids: [UInt32] = []) {
            self.count = count
            self.ids = ids
        }
    }

    public struct ModelInfo: Sendable, Equatable {
        public var modelID = ""
        public var quantization = ""
        public var hiddenSize: UInt32 = 0
        public var layers: UInt32 = 0
        public var attentionHeads: UInt32 = 0
        public var kvHeads: UInt32 = 0
        public var vocabSize: UInt32 = 0
        public var maxLength: UInt32 = 0
        public var defaultMaxLength: UInt32 = 0
        public var maxDocuments: UInt32 = 0
        public var maxFrameBytes: UInt32 = 0
        public var maxInFlightPerConnection: UInt32 = 0
        public var serverVersion = ""
        public var protocolVersion: UInt32 = 0
        public var defaultInstruction = ""
        /// Every model served, the default first.
        public var models: [ServedModel] = []
        public init() {}
    }

    /// One model a server serves and the names that reach it.
    public struct ServedModel: Sendable, Equatable {
        public var name: String
        public var aliases: [String] = []
        public var quantization = ""
        public var hiddenSize: UInt32 = 0
        public var layers: UInt32 = 0
        public var maxLength: UInt32 = 0
        public var isDefault = false
        public init(name: String) { self.name = name }
    }

    public struct Health: Sendable, Equatable {
        public enum ServingStatus: Int32, Sendable {
            case unknown = 0, serving = 1, notServing = 2
        }
        public var status: ServingStatus
        public var activeRequests: UInt32
        public var queuedTokens: UInt64
        public init(status: ServingStatus, activeRequests: UInt32 = 0, queuedTokens: UInt64 = 0) {
            self.status = status
            self.activeRequests = activeRequests
            self.queuedTokens = queuedTokens
        }
    }
}
