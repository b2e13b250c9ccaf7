import Foundation

/// The fields of a Hugging Face Qwen3 `config.json` that the forward pass needs.
public struct Qwen3Config: Codable, Sendable, Equatable {
    public var hiddenSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var intermediateSize: Int
    public var vocabSize: Int
    public var ropeTheta: Double
    public var rmsNormEps: Double
    public var tieWordEmbeddings: Bool
    public var maxPositionEmbeddings: Int

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case layerCount = "num_hidden_layers"
        case headCount = "num_attention_heads"
        case kvHeadCount = "num_key_value_heads"
        case headDim = "head_dim"
        case intermediateSize = "intermediate_size"
        case vocabSize = "vocab_size"
        case ropeTheta = "rope_theta"
        case rmsNormEps = "rms_norm_eps"
        case tieWordEmbeddings = "tie_word_embeddings"
        case maxPositionEmbeddings = "max_position_embeddings"
        case modelType = "model_type"
    }

    public init(hiddenSize: Int, layerCount: Int, headCount: Int, kvHeadCount: Int, headDim: Int,
                intermediateSize: Int, vocabSize: Int, ropeTheta: Double, rmsNormEps: Double,
                tieWordEmbeddings: Bool, maxPositionEmbeddings: Int) {
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDim = headDim
        self.intermediateSize = intermediateSize
        self.vocabSize = vocabSize
        self.ropeTheta = ropeTheta
        self.rmsNormEps = rmsNormEps
        self.tieWordEmbeddings = tieWordEmbeddings
        self.maxPositionEmbeddings = maxPositionEmbeddings
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let type = try c.decodeIfPresent(String.self, forKey: .modelType), type != "qwen3" {
            throw ConfigProblem("model_type is \"\(type)\"; Sift serves Qwen3 (model_type \"qwen3\") checkpoints")
        }
        func required<T: Decodable>(_ key: CodingKeys, _ type: T.Type) throws -> T {
            guard c.contains(key) else { throw ConfigProblem("missing field \"\(key.rawValue)\"") }
            do { return try c.decode(T.self, forKey: key) } catch {
                throw ConfigProblem("field \"\(key.rawValue)\" is not a \(T.self == Int.self ? "integer" : "number")")
            }
        }
        hiddenSize = try required(.hiddenSize, Int.self)
        layerCount = try required(.layerCount, Int.self)
        headCount = try required(.headCount, Int.self)
        kvHeadCount = try required(.kvHeadCount, Int.self)
        intermediateSize = try required(.intermediateSize, Int.self)
        vocabSize = try required(.vocabSize, Int.self)
        ropeTheta = try required(.ropeTheta, Double.self)
        rmsNormEps = try required(.rmsNormEps, Double.self)
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? (headCount > 0 ? hiddenSize / headCount : 0)
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 40960
        if let problem = validationProblem { throw ConfigProblem(problem) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode("qwen3", forKey: .modelType)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(layerCount, forKey: .layerCount)
        try c.encode(headCount, forKey: .headCount)
        try c.encode(kvHeadCount, forKey: .kvHeadCount)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
    }

    var validationProblem: String? {
        let positives: [(String, Int)] = [
            ("hidden_size", hiddenSize), ("num_hidden_layers", layerCount), ("num_attention_heads", headCount),
            ("num_key_value_heads", kvHeadCount), ("head_dim", headDim), ("intermediate_size", intermediateSize),
            ("vocab_size", vocabSize), ("max_position_embeddings", maxPositionEmbeddings),
        ]
        for (name, v) in positives where v <= 0 || v > 1 << 24 { return "\(name) = \(v) is out of range" }
        // Products of these size buffers and file sections: keep them far from overflowing.
        let widths: [(String, Int)] = [("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                                       ("num_attention_heads × head_dim", headCount * headDim),
                                       ("num_key_value_heads × head_dim", kvHeadCount * headDim)]
        for (name, v) in widths where v > 1 << 20 { return "\(name) = \(v) is out of range (at most \(1 << 20))" }
        if layerCount > 1024 { return "num_hidden_layers = \(layerCount) is out of range (at most 1024)" }
        if headCount % kvHeadCount != 0 { return "num_attention_heads (\(headCount)) is not a multiple of num_key_value_heads (\(kvHeadCount))" }
        if headDim % 2 != 0 { return "head_dim (\(headDim)) must be even for rotary embeddings" }
        if !(ropeTheta > 0) { return "rope_theta must be positive" }
        if !(rmsNormEps > 0) { return "rms_norm_eps must be positive" }
        return nil
    }

    public var qDim: Int { headCount * headDim }
    public var kvDim: Int { kvHeadCount * headDim }

    /// Loads and validates `config.json`.
    public static func load(_ url: URL) throws -> Qwen3Config {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw LoadError(file: url.path, "cannot read the file")
        }
        do {
            return try JSONDecoder().decode(Qwen3Config.self, from: data)
        } catch let p as ConfigProblem {
            throw LoadError(file: url.path, p.message)
        } catch {
            throw LoadError(file: url.path, "not a valid JSON config object")
        }
    }
}

struct ConfigProblem: Error {
    let message: String
    init(_ message: String) { self.message = message }
}
