import Foundation
import Qwen3
import SiftBase

/// A loaded Qwen3-Reranker model: tokenizer + weights + the "yes"/"no" answer tokens. It does not
/// score: `SiftEngine` is the one service (and the one scoring path) that runs it:
///
///     let engine = SiftEngine(reranker: try RerankerModel.load(path: "model.sift"), options: .inProcess())
///     let scores = try await engine.score(query: "capital of China?", documents: texts)
public final class RerankerModel: @unchecked Sendable {
    public let tokenizer: Tokenizer
    public let model: Qwen3Model
    public let yesID: Int32
    public let noID: Int32

    public init(tokenizer: Tokenizer, model: Qwen3Model, yesID: Int32, noID: Int32) {
        self.tokenizer = tokenizer
        self.model = model
        self.yesID = yesID
        self.noID = noID
    }

    /// Loads a model: a `.sift` file (int8, memory-mapped) or a Hugging Face folder (quantized
    /// at load when `precision` is int8).
    public static func load(path: String, precision: Precision = .int8,
                            threads: Int = WorkerPool.defaultThreadCount, kernelPath: KernelPath? = nil,
                            progress: ((Int, Int) -> Void)? = nil) throws -> RerankerModel {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue {
            guard precision == .int8 else {
                throw LoadError(file: path, "a .sift file holds int8 weights; use --precision int8 or the Hugging Face folder for fp32")
            }
            let contents = try SiftFile.open(path)
            let tokenizer = try Tokenizer.load(tokenizerJSONData: contents.tokenizerJSON, file: path + " (tokenizer.json)")
            let model = try Qwen3Model(sift: contents, threads: threads, kernelPath: kernelPath)
            try checkVocabulary(model.config, tokenizer, file: path)
            return RerankerModel(tokenizer: tokenizer, model: model, yesID: contents.yesID, noID: contents.noID)
        }
        return try load(directory: URL(fileURLWithPath: path), precision: precision, threads: threads,
                        kernelPath: kernelPath, progress: progress)
    }

    /// Memory a model at `path` will hold once loaded, read from its headers without loading
    /// it: a .sift file's size (mapped whole), or a folder's linear layers at `precision` plus
    /// its embedding table (kept mapped).
    public static func residentBytesEstimate(path: String, precision: Precision) throws -> Int {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue {
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
            return size ?? 0
        }
        let checkpoint = try Qwen3Checkpoint(directory: URL(fileURLWithPath: path))
        let linear = precision == .fp32 ? checkpoint.linearFloat32Bytes : checkpoint.linearFloat32Bytes / 4
        return linear + checkpoint.embedding.count * checkpoint.embedding.dtype.byteSize
    }

    /// Refuses models that cannot all be in memory at once, naming each one's share, before any
    /// is loaded (`available` nil: unknown, nothing refused).
    public static func checkTheyFit(_ models: [(name: String, bytes: Int)], available: Int?, precision: Precision) throws {
        let total = models.reduce(0) { $0 + $1.bytes }
        guard let available, total > available else { return }
        let each = models.map { String(format: "%@ %.1f GB", $0.name, Double($0.bytes) / 1e9) }.joined(separator: ", ")
        throw LoadError(file: models.map(\.name).joined(separator: ", "), String(
            format: "the models need %.1f GB together (%@) but only %.1f GB of memory is available: serve fewer or smaller models%@",
            Double(total) / 1e9, each, Double(available) / 1e9, precision == .fp32 ? ", or use --precision int8" : ""))
    }

    /// Loads a Hugging Face Qwen3-Reranker folder; int8 quantizes the linear layers at load
    /// (`int8Group` inputs per scale; 0: one scale per row, the baseline `sift bench fidelity` measures).
    public static func load(directory: URL, precision: Precision = .fp32,
                            threads: Int = WorkerPool.defaultThreadCount, kernelPath: KernelPath? = nil,
                            int8Group: Int = Int8Linear.standardGroup,
                            progress: ((Int, Int) -> Void)? = nil) throws -> RerankerModel {
        let tokenizer = try Tokenizer.load(directory: directory)
        let (yes, no) = try answerTokens(tokenizer, directory: directory)
        let checkpoint = try Qwen3Checkpoint(directory: directory)
        try checkVocabulary(checkpoint.config, tokenizer, file: directory.appendingPathComponent("config.json").path)
        // Refuse up front what cannot fit, rather than be killed by the OOM killer mid-load.
        let needed = precision == .fp32 ? checkpoint.linearFloat32Bytes : checkpoint.linearFloat32Bytes / 4
        if let available = SystemMemory.available(), needed > available {
            throw LoadError(file: directory.path, String(format: "%@ weights need %.1f GB but only %.1f GB of memory is available%@",
                                                         precision.rawValue, Double(needed) / 1e9, Double(available) / 1e9,
                                                         precision == .fp32 ? "; use --precision int8 (or sift convert)" : ""))
        }
        let model = try Qwen3Model(checkpoint: checkpoint, yesID: yes, noID: no, precision: precision, threads: threads,
                                   kernelPath: kernelPath, calibrationTokens: calibrationTokens(tokenizer),
                                   int8Group: int8Group, progress: progress)
        return RerankerModel(tokenizer: tokenizer, model: model, yesID: yes, noID: no)
    }

    /// Every token id the tokenizer can produce must have an embedding row.
    public static func checkVocabulary(_ config: Qwen3Config, _ tokenizer: Tokenizer, file: String) throws {
        guard config.vocabSize >= tokenizer.vocabularySize else {
            throw LoadError(file: file, "vocab_size \(config.vocabSize) is smaller than the tokenizer's \(tokenizer.vocabularySize) token ids")
        }
    }

    /// The text int8 calibration runs through the fp32 model: a real reranker input, so every
    /// projection sees the activations it will see in service.
    public static func calibrationTokens(_ tokenizer: Tokenizer) -> [Int32] {
        let document = """
            The Python open() function returns a file object. The mode argument selects reading ('r'), \
            writing ('w'), appending ('a') or exclusive creation ('x'); add 'b' for binary data. Text files \
            decode bytes with the given encoding, which defaults to the locale's. Always close files, or use \
            a with statement so that they are closed even when an exception is raised. Beijing, the capital \
            of China, has 21 million inhabitants; 3.14159 is close to pi. Ça va très bien, merci !
            """
        return tokenizer.encode(RerankPrompt.systemPrompt)
            + tokenizer.encode("<Instruct>: \(RerankPrompt.defaultInstruction)\n<Query>: How do I open a file in Python?\n<Document>: \(document)")
            + tokenizer.encode(RerankPrompt.suffixText)
    }

    /// The ids of "yes" and "no", looked up in the vocabulary.
    public static func answerTokens(_ tokenizer: Tokenizer, directory: URL) throws -> (Int32, Int32) {
        guard let yes = tokenizer.tokenID("yes"), let no = tokenizer.tokenID("no") else {
            throw LoadError(file: directory.path, "the tokenizer has no single \"yes\"/\"no\" tokens; not a Qwen3-Reranker tokenizer")
        }
        return (yes, no)
    }

    public var maxLengthLimit: Int { model.config.maxPositionEmbeddings }
}

/// 1 / (1 + e^-x), computed without overflow for large |x|.
public func sigmoid(_ x: Float) -> Float {
    x >= 0 ? 1 / (1 + expf(-x)) : expf(x) / (1 + expf(x))
}
