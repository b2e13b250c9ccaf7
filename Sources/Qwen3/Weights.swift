import CSiftKernels
import Foundation

/// A row-major fp32 matrix owned by Sift (rows = output features, cols = input features).
public final class Matrix: @unchecked Sendable {
    public let rows: Int
    public let cols: Int
    public let data: UnsafeMutablePointer<Float>

    public init(rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        data = .allocate(capacity: rows * cols)
    }

    /// Stacks tensors (each [r_i, cols]) vertically, converting to fp32.
    convenience init(stacking parts: [TensorView]) {
        let cols = parts[0].shape[1]
        self.init(rows: parts.reduce(0) { $0 + $1.shape[0] }, cols: cols)
        var offset = 0
        for p in parts {
            p.copyFloats(into: data + offset)
            offset += p.count
        }
    }

    deinit { data.deallocate() }
}

/// The checked tensors of a Qwen3 checkpoint, still in their file dtype (mmapped).
/// Opening validates every name, shape and dtype; nothing is converted yet, so even the 8B
/// (16 GB of bf16) opens and validates in well under a second.
public struct Qwen3Checkpoint: Sendable {
    public let config: Qwen3Config
    public let checkpoint: Checkpoint
    public let embedding: TensorView
    public let lmHead: TensorView  // == embedding when tied
    public let finalNorm: TensorView
    public let layers: [Layer]

    public struct Layer: Sendable {
        public let inputNorm, q, k, v, qNorm, kNorm, o, postNorm, gate, up, down: TensorView
    }

    public init(directory: URL) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: directory.path, isDirectory: &isDir), isDir.boolValue else {
            throw LoadError(file: directory.path, "model folder not found (expected a Hugging Face folder with config.json and *.safetensors)")
        }
        let config = try Qwen3Config.load(directory.appendingPathComponent("config.json"))
        let checkpoint = try Checkpoint(directory: directory)
        var used = Set<String>()
        let where_ = checkpoint.files.count == 1 ? checkpoint.files[0] : directory.path
        func tensor(_ name: String, _ shape: [Int]) throws -> TensorView {
            guard let t = checkpoint.tensors[name] else {
                throw LoadError(file: where_, "missing tensor \(name) (shape \(shape))")
            }
            guard t.shape == shape else {
                throw LoadError(file: where_, "tensor \(name) has shape \(t.shape), config.json implies \(shape)")
            }
            used.insert(name)
            return t
        }
        let h = config.hiddenSize, d = config.headDim, i = config.intermediateSize
        embedding = try tensor("model.embed_tokens.weight", [config.vocabSize, h])
        finalNorm = try tensor("model.norm.weight", [h])
        if config.tieWordEmbeddings {
            lmHead = embedding
            // Some exports also store the tied head; it is the same matrix, so ignore it.
            if checkpoint.tensors["lm_head.weight"] != nil { used.insert("lm_head.weight") }
        } else {
            lmHead = try tensor("lm_head.weight", [config.vocabSize, h])
        }
        layers = try (0..<config.layerCount).map { l in
            let p = "model.layers.\(l)."
            return Layer(
                inputNorm: try tensor(p + "input_layernorm.weight", [h]),
                q: try tensor(p + "self_attn.q_proj.weight", [config.qDim, h]),
                k: try tensor(p + "self_attn.k_proj.weight", [config.kvDim, h]),
                v: try tensor(p + "self_attn.v_proj.weight", [config.kvDim, h]),
                qNorm: try tensor(p + "self_attn.q_norm.weight", [d]),
                kNorm: try tensor(p + "self_attn.k_norm.weight", [d]),
                o: try tensor(p + "self_attn.o_proj.weight", [h, config.qDim]),
                postNorm: try tensor(p + "post_attention_layernorm.weight", [h]),
                gate: try tensor(p + "mlp.gate_proj.weight", [i, h]),
                up: try tensor(p + "mlp.up_proj.weight", [i, h]),
                down: try tensor(p + "mlp.down_proj.weight", [h, i]))
        }
        let extra = checkpoint.tensors.keys.filter { !used.contains($0) && !$0.hasSuffix("rotary_emb.inv_freq") }.sorted()
        if let first = extra.first {
            throw LoadError(file: where_, "unexpected tensor \(first)\(extra.count > 1 ? " and \(extra.count - 1) more" : ""); not a Qwen3ForCausalLM checkpoint?")
        }
        self.config = config
        self.checkpoint = checkpoint
    }

    /// Bytes the linear layers would take in fp32.
    public var linearFloat32Bytes: Int {
        layers.reduce(0) { acc, l in acc + 4 * [l.q, l.k, l.v, l.o, l.gate, l.up, l.down].reduce(0) { $0 + $1.count } }
    }
}

