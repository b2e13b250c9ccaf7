import Foundation
import Qwen3

/// One rerank call: a query and its documents.
public struct RerankRequest: Sendable {
    public var query: String
    /// Task instruction; nil = the model card's default (an empty string is used as is).
    public var instruction: String?
    public var documents: [String]
    /// Keep only the best `topN` in `RerankResult.ranked` (nil = all).
    public var topN: Int?
    /// Cut each document to at most this many tokens (besides the pair's max length).
    public var maxTokensPerDocument: Int?
    /// Tokens of one (query, document) pair; nil = the engine's default.
    public var maxLength: Int?
    /// Work not finished by then fails with `deadlineExceeded`.
    public var deadline: ContinuousClock.Instant?
    /// Higher is served first (ties: least served first, then oldest).
    public var priority: Int
    /// Called with each batch of newly finished documents (streaming): documents found in the
    /// score cache first, from the calling task; then computed ones, from the scheduler thread.
    public var onProgress: (@Sendable ([DocumentScore]) -> Void)?
    /// Instead of cutting a document longer than its budget, score overlapping windows of it
    /// (each with the shared prefix) and keep the best; `DocumentScore.window` says which won.
    public var chunkLongDocuments = false
    /// Tokens shared by consecutive windows (nil: a quarter of the window, at most 256).
    public var chunkOverlapTokens: Int?
    /// Whose caches the call may use: calls of different partitions never share prefix KV or
    /// scores, so cache hits (and their timing and usage counts) tell nothing across them. A
    /// server sets it per API key; 0 is the partition shared by every call that sets none.
    public var cachePartition: UInt64 = 0

    public init(query: String, instruction: String? = nil, documents: [String], topN: Int? = nil,
                maxTokensPerDocument: Int? = nil, maxLength: Int? = nil, deadline: ContinuousClock.Instant? = nil,
                priority: Int = 0, onProgress: (@Sendable ([DocumentScore]) -> Void)? = nil) {
        self.query = query
        self.instruction = instruction
        self.documents = documents
        self.topN = topN
        self.maxTokensPerDocument = maxTokensPerDocument
        self.maxLength = maxLength
        self.deadline = deadline
        self.priority = priority
        self.onProgress = onProgress
    }
}

/// A call past admission (`SiftEngine.admit`): checked once, its max length resolved, and
/// holding its room in the engine's queue bound until it is queued (or dropped).
public struct AdmittedRequest: Sendable {
    public let request: RerankRequest
    /// The call's max_length, or the engine's default.
    public let maxLength: Int
    let reservation: QueueReservation?

    init(request: RerankRequest, maxLength: Int, reservation: QueueReservation) {
        self.request = request
        self.maxLength = maxLength
        self.reservation = reservation
    }

    /// A call admitted by a service that holds no queue (a test's stand-in for an engine).
    public init(unqueued request: RerankRequest, maxLength: Int) {
        self.request = request
        self.maxLength = maxLength
        reservation = nil
    }
}

/// The score of one document.
public struct DocumentScore: Sendable, Equatable {
    /// Position in the request's `documents`.
    public var index: Int
    /// logit("yes") − logit("no"): the raw relevance score; sort by it.
    public var logit: Float
    /// sigmoid(logit), in 0...1. Already a probability: never apply sigmoid again.
    public var probability: Float
    /// Tokens of this document fed to the model (after truncation, without prefix and suffix;
    /// with chunking, the whole document's).
    public var tokens: Int
    public var truncated: Bool
    /// With chunking: the window that gave the score (0-based) and how many there were.
    public var window = 0
    public var windows = 1
    /// All tokens of the pair fed to the model: prompt, document, suffix (0 for a chunked
    /// document, which was several inputs).
    public var inputTokens = 0

    public init(index: Int, logit: Float, probability: Float, tokens: Int, truncated: Bool,
                inputTokens: Int = 0, window: Int = 0, windows: Int = 1) {
        self.index = index
        self.logit = logit
        self.probability = probability
        self.tokens = tokens
        self.truncated = truncated
        self.inputTokens = inputTokens
        self.window = window
        self.windows = windows
    }
}

public struct RerankResult: Sendable {
    /// Every document, in input order.
    public var results: [DocumentScore]
    /// Best first (by logit, ties by index), cut to `topN`.
    public var ranked: [DocumentScore]
    public var usage: Usage
    public var timings: Timings

    public init(results: [DocumentScore], ranked: [DocumentScore], usage: Usage, timings: Timings) {
        self.results = results
        self.ranked = ranked
        self.usage = usage
        self.timings = timings
    }

    public struct Usage: Sendable, Equatable {
        /// Tokens of the shared prefix (system prompt + instruction + query).
        public var prefixTokens: Int
        /// Of those, served from the prefix cache.
        public var prefixTokensCached: Int
        /// Σ document tokens (after truncation).
        public var documentTokens: Int
        /// Σ suffix tokens (the assistant turn after each document).
        public var suffixTokens: Int
        public var truncatedDocuments: Int
        /// Sequences scored: one per document, more when long documents were chunked.
        public var windows: Int
        /// Documents answered from the score cache (their tokens are counted above as when
        /// they were computed; nothing was computed for them now).
        public var cachedDocuments = 0

        public init(prefixTokens: Int, prefixTokensCached: Int, documentTokens: Int, suffixTokens: Int,
                    truncatedDocuments: Int, windows: Int) {
            self.prefixTokens = prefixTokens
            self.prefixTokensCached = prefixTokensCached
            self.documentTokens = documentTokens
            self.suffixTokens = suffixTokens
            self.truncatedDocuments = truncatedDocuments
            self.windows = windows
        }
    }

    public struct Timings: Sendable {
        /// From submission to the first scheduled step.
        public var queued: Duration
        /// From the first scheduled step to completion.
        public var computing: Duration

        public init(queued: Duration, computing: Duration) {
            self.queued = queued
            self.computing = computing
        }
    }
}

/// Why a rerank call failed. Codes follow gRPC's, so the server maps them one to one.
public struct EngineError: Error, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable {
        case invalidArgument, resourceExhausted, deadlineExceeded, cancelled, unavailable, `internal`
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// Engine settings. Each is documented where the server exposes it as a flag.
public struct EngineOptions: Sendable {
    /// Tokens computed per scheduler step (all sequences together). Bigger steps use the int8
    /// GEMMs better; smaller ones let new requests in sooner. Default from `sift bench engine`.
    public var maxBatchTokens = 1024
    /// A long document enters the batch in chunks of at most this many tokens, so short
    /// requests never wait behind a 32k-token one.
    public var prefillChunk = 512
    /// Tokens admitted but not yet computed, over all requests; beyond it `rerank` fails with
    /// `resourceExhausted` at once instead of queueing without bound.
    public var maxQueuedTokens = 262_144
    /// Tokens one call may queue (nil: half of `maxQueuedTokens`, so one call never fills the
    /// queue alone). A larger call is refused at once with `invalidArgument`: split it.
    public var maxRequestTokens: Int?
    public var requestTokenLimit: Int { maxRequestTokens ?? max(1, maxQueuedTokens / 2) }
    /// Sequences (documents, or chunk windows) one call may make.
    public var maxSequencesPerRequest = 16_384
    /// KV memory the engine may hold at once: running sequences and the prefix cache together
    /// (nil: three quarters of the memory available at start, after the model, honouring a cgroup limit).
    /// Documents wait for memory, they are never dropped; a call whose longest document alone
    /// cannot fit is refused.
    public var kvBudgetBytes: Int?
    /// Byte budget of the prefix KV cache (0 disables caching across requests); at most half
    /// the KV budget.
    public var prefixCacheBytes = 1 << 30
    /// Share the prefix KV among a request's documents (false: every document is computed with
    /// its own copy of the prompt, as servers without prefix sharing do; for comparisons).
    public var prefixSharing = true
    /// Byte budget of the exact score cache (0: off). A server shares one cache among its
    /// models instead (`SiftEngine(reranker:options:scoreCache:)`).
    public var scoreCacheBytes = 0
    /// How attention keeps and computes K/V (nil: the model's standard, `AttentionPrecision.standard`).
    public var attention: AttentionPrecision?
    /// Documents per request.
    public var maxDocuments = 1000
    /// Default tokens per (query, document) pair.
    public var defaultMaxLength = RerankPrompt.defaultMaxLength
    /// A waiting request gains one priority level per this many seconds, so none starves (a
    /// batch call unserved this long is served with the interactive ones, and a batch step
    /// paused for interactive work resumes after this long).
    public var agingSeconds = 10.0
    /// Calls of at most this many tokens (prompt and documents) are interactive unless they ask
    /// for priority < 0; priority > 0 makes any call interactive. Interactive work runs before
    /// batch work, in steps of its own, and between the sublayers of a batch step already running
    /// (`Planner`). 0: only priority > 0 (and near deadlines) make a call interactive.
    public var interactiveTokens = 2048

    public init() {}

    /// For scoring in-process for one caller (`sift score`, the benchmarks, tests): no bounds on
    /// a call but memory's (a server's bounds protect it from its clients; this caller is itself).
    public static func inProcess(attention: AttentionPrecision? = nil) -> EngineOptions {
        var options = EngineOptions()
        options.attention = attention
        options.maxDocuments = .max
        options.maxQueuedTokens = .max / 4
        options.maxRequestTokens = .max / 4
        options.maxSequencesPerRequest = .max
        return options
    }
}
