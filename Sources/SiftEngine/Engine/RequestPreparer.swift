import Qwen3

/// Turns a call into the engine's work, along its data path: `check` makes the checks that
/// need no tokenizing (once, at admission), the estimates hold the call's room in the queue
/// before it is tokenized, and `prepare` tokenizes it, cuts long documents into windows,
/// counts every sequence and token against the limits, and builds the sequences the scheduler
/// computes.
struct RequestPreparer: @unchecked Sendable {
    let tokenizer: Tokenizer
    let options: EngineOptions
    /// Tokens of one pair may not exceed this (the model's position limit).
    let maxLengthLimit: Int
    /// Tokens of the prompt's fixed parts: the system prompt (every prefix starts with it) and the suffix.
    let fixedPromptTokens: (prefix: Int, suffix: Int)
    /// The engine's KV budget, in blocks of `kvBlockBytes`: a sequence must fit it.
    let kvBudgetBlocks: Int
    let kvBlockBytes: Int

    init(tokenizer: Tokenizer, options: EngineOptions, maxLengthLimit: Int, kvBudgetBlocks: Int, kvBlockBytes: Int) {
        self.tokenizer = tokenizer
        self.options = options
        self.maxLengthLimit = maxLengthLimit
        fixedPromptTokens = (tokenizer.encode(RerankPrompt.systemPrompt).count, tokenizer.encode(RerankPrompt.suffixText).count)
        self.kvBudgetBlocks = kvBudgetBlocks
        self.kvBlockBytes = kvBlockBytes
    }

    /// A call as the scheduler computes it: tokenized, cut into windows, counted.
    struct Prepared {
        var prefix: [Int32]
        /// What the scheduler computes: one per document, or one per window of a chunked one.
        var documents: [DocumentWork]
        var suffixTokens: Int
        /// For each work item: its document and window; and each document's window count and tokens.
        var owners: [(document: Int, window: Int)] = []
        var windowCounts: [Int] = []
        var documentTokens: [Int] = []
        var isChunked: Bool { owners.count != windowCounts.count }

        func usage(cached: Int) -> RerankResult.Usage {
            .init(prefixTokens: prefix.count, prefixTokensCached: cached,
                  documentTokens: documents.reduce(0) { $0 + $1.documentTokens }, suffixTokens: suffixTokens * documents.count,
                  truncatedDocuments: documents.filter(\.truncated).count, windows: documents.count)
        }
    }

    /// The checks that need no tokenizing (made once, at admission); returns the call's max length.
    func check(_ r: RerankRequest) throws -> Int {
        guard !r.query.isEmpty else { throw EngineError(.invalidArgument, "the query is empty") }
        guard r.documents.count <= options.maxDocuments else {
            throw EngineError(.invalidArgument, "\(r.documents.count) documents; at most \(options.maxDocuments) per request: split the request")
        }
        if let n = r.topN, n < 1 { throw EngineError(.invalidArgument, "top_n must be at least 1: leave it out for every document") }
        if let n = r.maxTokensPerDocument, n <= 0 { throw EngineError(.invalidArgument, "max_tokens_per_document must be positive: leave it out for no cut") }
        if let n = r.chunkOverlapTokens, n < 0 { throw EngineError(.invalidArgument, "chunk overlap must not be negative") }
        let maxLength = r.maxLength ?? options.defaultMaxLength
        guard maxLength > 0, maxLength <= maxLengthLimit else {
            throw EngineError(.invalidArgument, "max_length \(maxLength) must be in 1...\(maxLengthLimit)")
        }
        // A query that cannot fit is refused from its size, before anything is held for it.
        let fewest = fixedPromptTokens.prefix + fixedPromptTokens.suffix
            + tokenizer.fewestTokens(bytes: queryPartBytes(r))
        guard fewest <= maxLength else {
            throw EngineError(.invalidArgument, "the instruction and query are \(queryPartBytes(r)) bytes: at least \(fewest) tokens with the prompt, more than max_length \(maxLength); shorten the query or raise max_length")
        }
        return maxLength
    }

    /// Bytes of "<Instruct>: …\n<Query>: …\n<Document>:", counted without building it.
    private func queryPartBytes(_ r: RerankRequest) -> Int {
        let framing = RerankPrompt.queryPart(query: "", instruction: "").utf8.count
        return framing + (r.instruction ?? RerankPrompt.defaultInstruction).utf8.count + r.query.utf8.count
    }

    /// Tokenizes a checked call (`maxLength` from `check`) and builds its sequences.
    func prepare(_ r: RerankRequest, maxLength: Int) throws -> Prepared {
        let prompt = try RerankPrompt(tokenizer: tokenizer, query: r.query, instruction: r.instruction, maxLength: maxLength)
        let budget = min(prompt.documentBudget, r.maxTokensPerDocument ?? .max)
        let shared = options.prefixSharing ? prompt.prefix.count : 0
        let perSequence = (options.prefixSharing ? 0 : prompt.prefix.count) + prompt.suffix.count

        // Tokenize, counting every sequence and token the call asks for before building any; a
        // call over the limit stops being tokenized (and gives its queue room back) at once.
        var encoded: [[Int32]] = []
        encoded.reserveCapacity(r.documents.count)
        var cuts: [Windows] = []
        cuts.reserveCapacity(r.documents.count)
        var sequences = 0, tokens = shared, largest = 0
        for document in r.documents {
            let ids = tokenizer.encode(" " + document)
            let cut = r.chunkLongDocuments && ids.count > budget && budget > 0
                ? Windows(length: ids.count, window: budget, overlap: r.chunkOverlapTokens)
                : Windows(length: min(ids.count, budget), window: max(budget, 1), overlap: 0)
            encoded.append(ids)
            cuts.append(cut)
            sequences += cut.count
            tokens += cut.tokens + cut.count * perSequence
            largest = max(largest, min(ids.count, budget) + perSequence)
            if tokens > options.requestTokenLimit { throw Self.tooManyTokens(atLeast: tokens, limit: options.requestTokenLimit) }
            if Task.isCancelled { throw EngineError(.cancelled, "the request was cancelled") }
        }
        try checkSize(sequences: sequences, tokens: tokens, prefix: shared, largestSequence: largest)

        var prepared = Prepared(prefix: prompt.prefix, documents: [], suffixTokens: prompt.suffix.count)
        prepared.documents.reserveCapacity(sequences)
        func work(_ ids: ArraySlice<Int32>, truncated: Bool) -> DocumentWork {
            let tokens = options.prefixSharing ? Array(ids) + prompt.suffix : prompt.prefix + ids + prompt.suffix
            return DocumentWork(tokens: tokens, documentTokens: ids.count, truncated: truncated, prefixTokens: shared)
        }
        for (index, (ids, cut)) in zip(encoded, cuts).enumerated() {
            for (window, range) in cut.ranges.enumerated() {
                prepared.documents.append(work(ids[range], truncated: cut.count == 1 && range.count < ids.count))
                prepared.owners.append((index, window))
            }
            prepared.windowCounts.append(cut.count)
            prepared.documentTokens.append(r.chunkLongDocuments ? ids.count : min(ids.count, budget))
        }
        return prepared
    }

    /// Fewest tokens the call can queue, from its bytes (see `Tokenizer.fewestTokens`): a call
    /// over the limit even so is refused before it holds anything.
    func fewestTokens(_ r: RerankRequest, maxLength: Int) -> Int {
        let prefix = fixedPromptTokens.prefix + tokenizer.fewestTokens(bytes: queryPartBytes(r))
        let perSequence = (options.prefixSharing ? 0 : prefix) + fixedPromptTokens.suffix
        let window = max(1, min(r.maxTokensPerDocument ?? maxLength, maxLength - prefix - fixedPromptTokens.suffix))
        var tokens = options.prefixSharing ? prefix : 0
        for document in r.documents {
            let least = tokenizer.fewestTokens(bytes: document.utf8.count + 1)
            // Chunked, every token counts; otherwise a document is cut to its window.
            tokens += (r.chunkLongDocuments ? least : min(least, window)) + perSequence
        }
        return tokens
    }

    static func tooManyTokens(atLeast tokens: Int, limit: Int) -> EngineError {
        EngineError(.invalidArgument, "the call needs at least \(tokens) tokens; one call may queue at most \(limit) (--max-request-tokens): split it into calls of fewer or shorter documents, or lower max_length")
    }

    /// Tokens the call will queue for `documents`, estimated before tokenizing: a token covers
    /// at least one UTF-8 byte of its text, so this is an upper bound, unless normalization
    /// lengthens the text (rare; `submit` checks the exact count) or chunk windows are smaller
    /// than the longest possible. Capped at what one call may queue (an admissible call never
    /// needs more).
    func estimatedTokens(_ documents: [String], of r: RerankRequest, maxLength: Int) -> Int {
        // A prefix longer than max_length is refused once tokenized: it never queues more.
        let prefix = min(maxLength, fixedPromptTokens.prefix + queryPartBytes(r))
        let window = min(r.maxTokensPerDocument ?? maxLength, maxLength)
        let perSequence = (options.prefixSharing ? 0 : prefix) + fixedPromptTokens.suffix
        let cap = min(options.requestTokenLimit, options.maxQueuedTokens)
        var tokens = options.prefixSharing ? prefix : 0
        for document in documents {
            let length = document.utf8.count + 1
            let cut = r.chunkLongDocuments ? Windows(length: length, window: window, overlap: r.chunkOverlapTokens)
                                           : Windows(length: min(length, window), window: window, overlap: 0)
            tokens += cut.tokens + cut.count * perSequence
            if tokens >= cap { return cap }
        }
        return min(tokens, cap)
    }

    /// Refuses a call this engine could never run, before anything is built for it: more
    /// sequences or tokens than one call may queue, or a sequence whose KV exceeds the budget.
    private func checkSize(sequences: Int, tokens: Int, prefix: Int, largestSequence: Int) throws {
        guard sequences <= options.maxSequencesPerRequest else {
            throw EngineError(.invalidArgument, "the call makes \(sequences) sequences (documents and chunk windows); at most \(options.maxSequencesPerRequest) per call: send fewer documents, or lower chunk_overlap_tokens")
        }
        guard tokens <= options.requestTokenLimit else {
            throw EngineError(.invalidArgument, "the call needs \(tokens) tokens; one call may queue at most \(options.requestTokenLimit) (--max-request-tokens): split it into calls of fewer or shorter documents, or lower max_length")
        }
        let blocks = KVBlockPool.blocks(forPositions: prefix) + DocumentWork.blocks(tokens: largestSequence, prefixTokens: prefix)
        guard blocks <= kvBudgetBlocks else {
            let mib = { (b: Int) in (b * kvBlockBytes) >> 20 }
            throw EngineError(.invalidArgument, "the longest document needs \(mib(blocks)) MiB of KV memory with its prompt; the server's KV budget is \(mib(kvBudgetBlocks)) MiB (--kv-budget-mb): lower max_length or max_tokens_per_document")
        }
    }
}

/// How one document is cut into the sequences the model computes: one (cut to the window), or
/// overlapping windows. Counted before any window is built.
struct Windows {
    let length: Int
    let window: Int
    let stride: Int

    /// `overlap` nil: a quarter of the window, at most 256. It is lowered to half the window,
    /// so consecutive windows advance by at least half a window and a document of N tokens
    /// never makes more than about 2N/window windows.
    init(length: Int, window: Int, overlap: Int?) {
        self.length = length
        self.window = window
        let overlap = min(overlap ?? min(256, window / 4), window / 2)
        stride = max(1, window - overlap)
    }

    var count: Int { length <= window ? 1 : 1 + (length - window + stride - 1) / stride }

    /// Token ranges of the windows; the last one ends at the document's end.
    var ranges: [Range<Int>] {
        (0..<count).map { i in
            let start = i * stride
            return start..<min(length, start + window)
        }
    }

    /// Tokens over all windows (arithmetic: the windows are not built to count them).
    var tokens: Int { count == 1 ? min(length, window) : (count - 1) * window + (length - (count - 1) * stride) }
}

/// Folds the scores of a chunked document's windows into one score per document: the best
/// window's (ties: the earlier window), reported once every window is scored.
struct WindowMerger {
    private let owners: [(document: Int, window: Int)]
    private let windowCounts: [Int]
    private let documentTokens: [Int]
    private var remaining: [Int]
    private var best: [DocumentScore?]

    init(_ prepared: RequestPreparer.Prepared) {
        owners = prepared.owners
        windowCounts = prepared.windowCounts
        documentTokens = prepared.documentTokens
        remaining = prepared.windowCounts
        best = Array(repeating: nil, count: prepared.windowCounts.count)
    }

    /// Work-level scores in; the documents they completed out.
    mutating func add(_ scores: [DocumentScore]) -> [DocumentScore] {
        var done: [DocumentScore] = []
        for s in scores {
            let (document, window) = owners[s.index]
            if best[document] == nil || s.logit > best[document]!.logit
                || (s.logit == best[document]!.logit && window < best[document]!.window) {
                // A document that fit one window was one input, as in a call without chunking.
                best[document] = DocumentScore(index: document, logit: s.logit, probability: s.probability,
                                               tokens: documentTokens[document], truncated: s.truncated,
                                               inputTokens: windowCounts[document] == 1 ? s.inputTokens : 0,
                                               window: window, windows: windowCounts[document])
            }
            remaining[document] -= 1
            if remaining[document] == 0 { done.append(best[document]!) }
        }
        return done
    }
}
