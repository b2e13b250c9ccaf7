import Foundation
import SiftProtocol
import SiftTestSupport

/// Seed corpora: well-formed inputs of every kind each parser reads (the shapes the tests use),
/// from which the fuzzer mutates.
enum Seeds {
    static func write(to root: URL) throws {
        let fm = FileManager.default
        func save(_ target: FuzzTarget, _ name: String, _ bytes: [UInt8]) throws {
            let dir = root.appendingPathComponent(target.rawValue)
            try fm.createDirectory(at: dir, withIntermediateDirectories: true)
            try Data(bytes).write(to: dir.appendingPathComponent(name))
        }

        // Frames: one of every message, with metadata.
        var rerank = Wire.RerankRequest(query: "What is the capital of China?", instruction: "Find facts",
                                        documents: ["The capital of China is Beijing.", "", "Gravity."], topN: 2, returnDocuments: true,
                                        maxTokensPerDocument: 100, maxLength: 512, timeoutMs: 1000, priority: 1, stream: true)
        rerank.chunkLongDocuments = true
        rerank.chunkOverlapTokens = 16
        let key = [Wire.MetadataEntry("authorization", "Bearer sift-test-key-0123456789")]
        let bodies: [(String, Wire.Body)] = [
            ("rerank", .rerankRequest(rerank)),
            ("tokenize", .tokenizeRequest(Wire.TokenizeRequest(texts: ["Hello world", "ünïcödé 你好"], returnIDs: true))),
            ("model-info", .modelInfoRequest()), ("health", .healthRequest), ("cancel", .cancelRequest(requestID: 7)),
            ("status", .status(Wire.Status(.resourceExhausted, "retry later"))),
            ("response", .rerankResponse(Wire.RerankResponse(
                results: [Wire.RerankResult(index: 1, relevanceScore: 0.9, logit: 2.2, tokens: 12, truncated: false, document: "d", inputTokens: 40)],
                usage: Wire.Usage(prefixTokens: 20, prefixTokensCached: 20, documentTokens: 12, truncatedDocuments: 0, documents: 1, inputTokens: 40),
                timings: Wire.Timings(queuedMs: 1, computeMs: 2), modelID: "m"))),
            ("partial", .rerankPartial([Wire.RerankResult(index: 0, relevanceScore: 0.5, logit: 0, tokens: 3, truncated: true, document: nil, inputTokens: 0)])),
            ("tokenized", .tokenizeResponse([Wire.TokenizedText(count: 2, ids: [9693, 2152])])),
        ]
        for (name, body) in bodies {
            try save(.frames, name, Wire.Frame(requestID: 42, metadata: key, body: body).encoded())
        }

        // HTTP: whole requests as clients send them.
        func post(_ path: String, _ json: String, extra: String = "") -> [UInt8] {
            Array("POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\(extra)Content-Length: \(json.utf8.count)\r\n\r\n\(json)".utf8)
        }
        let cohere = #"{"model":"rerank-v3.5","query":"capital?","top_n":2,"documents":["Carson City.","Washington, D.C."],"return_documents":true}"#
        let jina = #"{"model":"jina","query":"skincare","documents":["a",{"text":"b"}],"max_tokens_per_doc":64,"chunk_long_documents":true,"chunk_overlap_tokens":8,"instruction":"x","timeout_ms":100,"priority":2}"#
        try save(.http, "cohere", post("/v1/rerank", cohere))
        try save(.http, "jina", post("/v2/rerank", jina, extra: "Authorization: Bearer k\r\n"))
        let tei = #"{"query":"What is Deep Learning?","texts":["Deep Learning is not...","Deep learning is..."],"raw_scores":true,"return_text":true,"truncate":false,"truncation_direction":"Right"}"#
        try save(.http, "tei", post("/rerank", tei))
        try save(.http, "pipelined", post("/v2/rerank", cohere) + post("/rerank", jina) + Array("GET /health HTTP/1.1\r\n\r\n".utf8))
        try save(.http, "chunked", Array("POST /v2/rerank HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"q\":\r\n0\r\n\r\n".utf8))
        try save(.http, "json-only", Array(cohere.utf8))

        // Safetensors: a small valid file of each dtype.
        let tmp = root.appendingPathComponent("tmp.safetensors")
        try SafeTensorsWriter.write([
            .init(name: "f32", dtype: "F32", shape: [3], data: SafeTensorsWriter.floats([1.5, -2, 0.25])),
            .init(name: "bf16", dtype: "BF16", shape: [2], data: [0xC0, 0x3F, 0x00, 0xC0]),
            .init(name: "f16", dtype: "F16", shape: [1, 3], data: [0x00, 0x3E, 0x00, 0xC0, 0x01, 0x00]),
        ], to: tmp)
        try save(.safetensors, "three-dtypes", Array(try Data(contentsOf: tmp)))
        try fm.removeItem(at: tmp)

        // .sift: header and metadata of a small model (no weights: the parser is what is fuzzed).
        let config = #"{"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"intermediate_size":192,"vocab_size":151669,"rope_theta":1000000,"rms_norm_eps":1e-06,"model_type":"qwen3"}"#
        func metadata(_ dataStart: Int) -> [UInt8] {
            Array(#"{"format":"sift-q8","version":1,"config":\#(config),"yes_id":9693,"no_id":2152,"embedding":{"dtype":"BF16","shape":[151669,64]},"layers":[],"sections":{"tokenizer.json":[\#(dataStart),2]}}"#.utf8)
        }
        let dataStart = (64 + metadata(1000).count + 63) / 64 * 64
        let meta = metadata(dataStart)
        var sift: [UInt8] = Array("SIFTQ8".utf8) + [0, 1]
        func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        sift += le(1, 4) + le(0, 4) + le(64, 8) + le(UInt64(meta.count), 8) + le(UInt64(dataStart), 8) + le(2, 8) + le(0, 8) + le(0, 8)
        sift += meta
        sift += [UInt8](repeating: 0x20, count: dataStart - sift.count) + Array("{}".utf8)
        try save(.sift, "small", sift)

        // Hub listings.
        let sha = String(repeating: "ab", count: 20), blob = String(repeating: "cd", count: 20), lfs = String(repeating: "ef", count: 32)
        try save(.hub, "listing", Array(#"{"id":"Qwen/Qwen3-Reranker-0.6B","sha":"\#(sha)","siblings":[{"rfilename":"config.json","size":727,"blobId":"\#(blob)"},{"rfilename":"model.safetensors","size":1191588560,"blobId":"\#(blob)","lfs":{"sha256":"\#(lfs)","size":1191588560}},{"rfilename":"README.md","size":10,"blobId":"\#(blob)"}]}"#.utf8))

        // Tokenizer: the texts of the reference cases.
        let cases = (try? String(contentsOf: Fixtures.fixtures.appendingPathComponent("tokenizer-cases.jsonl"), encoding: .utf8)) ?? ""
        for (i, line) in cases.split(separator: "\n").prefix(64).enumerated() {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let text = object["text"] as? String, !text.isEmpty else { continue }
            try save(.tokenizer, "case-\(i)", Array(text.utf8))
        }
        // Tokenizer files: a small byte-level BPE one, and the hostile shapes the loader refuses.
        for (name, json) in tokenizerFiles() { try save(.tokenizerFile, name, Array(json.utf8)) }
        print("seed corpora written to \(root.path)")
    }

    /// A minimal valid byte-level tokenizer.json (256 byte tokens, two merges, two added
    /// tokens), and variants with each defect a hostile file could carry.
    static func tokenizerFiles() -> [(String, String)] {
        // GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest for U+0100 on.
        var alphabet: [String: Int] = [:]
        var shifted = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            let scalar = Unicode.Scalar(printable ? b : 256 + shifted)!
            if !printable { shifted += 1 }
            alphabet[String(Character(scalar))] = b
        }
        alphabet["Ġt"] = 256
        alphabet["Ġth"] = 257
        let vocab = String(decoding: try! JSONSerialization.data(withJSONObject: alphabet, options: [.sortedKeys]), as: UTF8.self)
        func file(added: String, vocabExtra: String = "") -> String {
            let entries = vocab.dropLast() + vocabExtra + "}"
            return #"{"model":{"type":"BPE","vocab":\#(entries),"merges":["Ġ t","Ġt h"]},"added_tokens":[\#(added)]}"#
        }
        let good = #"{"id":258,"content":"<|im_start|>"},{"id":259,"content":"<|im_end|>"}"#
        return [
            ("valid", file(added: good)),
            ("empty-added-token", file(added: #"{"id":258,"content":""}"#)),
            ("negative-id", file(added: #"{"id":-1,"content":"<x>"}"#)),
            ("id-2^31-1", file(added: #"{"id":2147483647,"content":"<x>"}"#)),
            ("id-2^32+5", file(added: #"{"id":4294967301,"content":"<x>"}"#)),
            ("fractional-id", file(added: #"{"id":258.5,"content":"<x>"}"#)),
            ("duplicate-id", file(added: good, vocabExtra: #","zz":3"#)),
        ]
    }
}
