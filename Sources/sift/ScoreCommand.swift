import ArgumentParser
import Foundation
import Qwen3
import SiftEngine

extension Precision: ExpressibleByArgument {}
extension AttentionPrecision: ExpressibleByArgument {
    static let help = ArgumentHelp("Attention: int8 (K/V about a quarter of fp32's memory, int8 dot products; the default with int8), bf16 (K/V half, bf16 dot products) or fp32 (the reference; the default with fp32).")
}

struct ScoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score documents (JSON lines {\"text\": ...}) against a query, in-process.",
        discussion: """
            Prints {"results": [...]}, one result per document in input order, e.g. \
            {"index":0, "logit":-1.23, "score":0.22, "tokens":12, "input_tokens":57, "truncated":false}. "logit" is logit(yes) - logit(no); "score" is sigmoid(logit), already a \
            probability: do not apply sigmoid again. "tokens" counts the document as scored, \
            "input_tokens" the whole prompt, as the RPC and HTTP APIs do.
            """)

    @Option(help: "Model: a Hugging Face Qwen3-Reranker folder or a .sift file.") var model: String
    @Option(help: "The query.") var query: String
    @Option(help: "Task instruction (default: the model card's web-search instruction).") var instruction: String?
    @Option(help: "Maximum tokens per (query, document) pair; documents are cut from the end.")
    var maxLength: Int = RerankPrompt.defaultMaxLength
    @Option(help: "Precision of the linear layers: fp32 (reference) or int8 (fast). Default: fp32 for a folder, int8 for a .sift file.")
    var precision: Precision?
    @Option(help: AttentionPrecision.help)
    var attention: AttentionPrecision?
    @Option(help: "Worker threads, one per core unless set.") var threads: Int = WorkerPool.defaultThreadCount
    @Argument(help: "JSON-lines file of documents, or - for standard input.") var input: String = "-"

    func run() async throws {
        try await reportingErrors {
            try ModelArgument.check(model, is: .folderOrSift, for: "score")
            // The server's rule: a reranker needs a query.
            guard !query.isEmpty else { throw CLIError("--query is empty: give the query to rank the documents against") }
            let texts = try JSONLinesInput.readTexts(input)
            let reranker = try RerankerModel.load(path: model, precision: precision ?? (SiftFile.looksLikeSift(model) ? .int8 : .fp32),
                                             threads: threads)
            let engine = SiftEngine(reranker: reranker, options: .inProcess(attention: attention))
            defer { engine.shutdown() }
            let results = try await engine.score(query: query, instruction: instruction, documents: texts, maxLength: maxLength)
            print(JSONOut.results(results.map {
                ($0.index, $0.logit, $0.probability, $0.tokens, $0.inputTokens, $0.truncated, nil)
            }))
        }
    }
}

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Tokenize JSON lines {\"text\": ...}; prints JSON lines {\"ids\": [...]}.")

    @Option(help: "A model folder (tokenizer.json, or vocab.json + merges.txt) or a .sift file.") var model: String
    @Argument(help: "JSON-lines file, or - for standard input.") var input: String = "-"

    func run() throws {
        try reportingErrors {
            try ModelArgument.check(model, is: .folderOrSift, for: "tokenize")
            let texts = try JSONLinesInput.readTexts(input)
            let tokenizer = try ModelArgument.tokenizer(model)
            var out = ""
            for text in texts {
                out += "{\"ids\":[\(tokenizer.encode(text).map(String.init).joined(separator: ","))]}\n"
            }
            FileHandle.standardOutput.write(Data(out.utf8))
        }
    }
}

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Validate a model without loading its weights: a folder's config, tokenizer and every tensor's name, shape, dtype and bounds; a .sift file's header, sections, checksum and tokenizer.")

    @Option(help: "A Hugging Face Qwen3-Reranker folder or a .sift file.") var model: String

    func run() throws {
        try reportingErrors {
            try ModelArgument.check(model, is: .folderOrSift, for: "inspect")
            if SiftFile.looksLikeSift(model) { return try inspectSift() }
            let dir = URL(fileURLWithPath: model)
            let tokenizer = try Tokenizer.load(directory: dir)
            let (yes, no) = try RerankerModel.answerTokens(tokenizer, directory: dir)
            let ckpt = try Qwen3Checkpoint(directory: dir)
            let c = ckpt.config
            try RerankerModel.checkVocabulary(c, tokenizer, file: dir.appendingPathComponent("config.json").path)
            let params = ckpt.checkpoint.tensors.values.reduce(0) { $0 + $1.count }
            print("""
                model:      \(dir.path)
                files:      \(ckpt.checkpoint.files.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", "))
                shape:      \(Self.shape(c))
                parameters: \(params) (\(ckpt.checkpoint.tensors.count) tensors, all checked)
                fp32 linear weights: \(String(format: "%.2f", Double(ckpt.linearFloat32Bytes) / 1e9)) GB
                tokenizer:  \(tokenizer.vocabularySize) token ids, \(tokenizer.addedTokens.count) added tokens
                answer tokens: yes=\(yes) no=\(no)
                status:     OK
                """)
        }
    }

    /// A .sift file: everything `serve` checks when it maps it, without building the model.
    private func inspectSift() throws {
        let contents = try SiftFile.open(model)
        let tokenizer = try Tokenizer.load(tokenizerJSONData: contents.tokenizerJSON, file: model + " (tokenizer.json)")
        let c = contents.config
        try RerankerModel.checkVocabulary(c, tokenizer, file: model)
        print("""
            model:      \(model)
            format:     .sift version \(SiftFile.formatVersion), int8, \(String(format: "%.2f", Double(contents.file.size) / 1e9)) GB, checksum OK
            shape:      \(Self.shape(c))
            tokenizer:  \(tokenizer.vocabularySize) token ids, \(tokenizer.addedTokens.count) added tokens
            answer tokens: yes=\(contents.yesID) no=\(contents.noID)
            status:     OK
            """)
    }

    static func shape(_ c: Qwen3Config) -> String {
        "hidden \(c.hiddenSize), layers \(c.layerCount), heads \(c.headCount)/\(c.kvHeadCount) (head_dim \(c.headDim)), intermediate \(c.intermediateSize), vocab \(c.vocabSize), tied \(c.tieWordEmbeddings)"
    }
}
