import Qwen3

/// The Qwen3-Reranker prompt (model card recipe), tokenized in three parts so the shared part
/// can be computed once per request:
///
///     prefix   = system prompt + "<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"
///     document = " " + doc                      (cut from the end to fit max_length)
///     suffix   = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
///
/// Tokenizing "...<Document>:" apart from " " + doc gives the same ids as tokenizing the whole
/// text (a test checks it on every fixture case), so prefix + document + suffix is exactly the
/// reference input.
public struct RerankPrompt: Sendable {
    public static let systemPrompt = "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n"
    public static let suffixText = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    public static let defaultInstruction = "Given a web search query, retrieve relevant passages that answer the query"
    public static let defaultMaxLength = 8192

    /// Everything up to and including "<Document>:".
    public let prefix: [Int32]
    public let suffix: [Int32]
    /// Tokens of one pair may not exceed this (prefix + document + suffix).
    public let maxLength: Int

    /// Document tokens that fit after the prefix and before the suffix.
    public var documentBudget: Int { maxLength - prefix.count - suffix.count }

    /// Tokenizes the shared parts. `instruction` nil means the default; an empty string is used
    /// as is (as the reference does).
    public init(tokenizer: Tokenizer, query: String, instruction: String?, maxLength: Int = defaultMaxLength) throws {
        let instruction = instruction ?? Self.defaultInstruction
        prefix = tokenizer.encode(Self.systemPrompt) + tokenizer.encode(Self.queryPart(query: query, instruction: instruction))
        suffix = tokenizer.encode(Self.suffixText)
        self.maxLength = maxLength
        guard documentBudget >= 0 else {
            throw EngineError(.invalidArgument, "the prompt, instruction and query take \(prefix.count + suffix.count) tokens, more than max_length \(maxLength); shorten the query or raise max_length")
        }
    }

    static func queryPart(query: String, instruction: String) -> String {
        "<Instruct>: \(instruction)\n<Query>: \(query)\n<Document>:"
    }

    /// Document tokens (" " + doc), cut from the end to fit; `truncated` tells whether they were.
    public func document(_ text: String, tokenizer: Tokenizer) -> (tokens: [Int32], truncated: Bool) {
        var ids = tokenizer.encode(" " + text)
        let budget = documentBudget
        if ids.count > budget {
            ids.removeLast(ids.count - budget)
            return (ids, true)
        }
        return (ids, false)
    }
}
