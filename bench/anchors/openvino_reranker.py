#!/usr/bin/env python3
"""OpenVINO anchor for Sift's benchmarks: the same Qwen3-Reranker, the same inputs, scored by
OpenVINO, so Sift's figures have a competitor measured in the same run.

The model is built with OpenVINO's own graph API straight from the Hugging Face folder
(config.json, *.safetensors, tokenizer.json): no PyTorch, no export step. It is the
sequence-classification form of the reranker: the last token's final hidden state times
lm_head[yes] - lm_head[no], i.e. exactly the logit Sift reports. Precisions:

  fp32         the graph as built (checks the graph: it must match the float32 reference)
  int8-static  NNCF post-training quantization (weights and activations int8; SmoothQuant and
               the transformer preset, as NNCF does for LLMs), calibrated on corpus pairs
  int8-weights NNCF weight compression (int8 weights, fp32 activations)

Each is compiled with the inference-precision hints asked for (bf16 and f32; on a CPU without
bf16 units OpenVINO computes bf16 in f32) and run on:

  fidelity  the 42 cases of reference-scores-0.6b.json (or any reference file): mean / max
            |logit - reference logit|
  W1        query 0 with the first 64 corpus passages cut to 256 tokens, in batches of
            --batch (right-padded; causal attention never looks at the padding)
  W3        query 1 with 4 documents of ~4,000 tokens (consecutive passages from the 65th,
            joined by blank lines), one at a time

  pairs     with --pairs: the pairs `sift bench fidelity --export-pairs` wrote (of one model:
            --pairs-model), each scored alone; the logits go to --pairs-out as JSON lines that
            `sift bench fidelity --external NAME=FILE` reads beside its own modes

W1 and W3 are the inputs of `sift bench engine` (Sources/sift/EngineBench.swift), token for token.
Prints one JSON object per configuration; `bench/anchors/run.sh` runs this and Sift side by side.
"""
import argparse
import glob
import json
import os
import struct
import sys
import time

import numpy as np

SYSTEM = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
          "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


# --- weights ---------------------------------------------------------------------------------

def load_safetensors(folder):
    """name -> float32 array, from every *.safetensors file of the folder (bf16/f16/f32)."""
    tensors = {}
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise SystemExit(f"no *.safetensors in {folder}")
    for path in files:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            raw = data[start:end]
            dtype = info["dtype"]
            if dtype == "BF16":
                array = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype == "F16":
                array = raw.view(np.float16).astype(np.float32)
            elif dtype == "F32":
                array = np.array(raw.view(np.float32))
            else:
                raise SystemExit(f"{path}: {name} has dtype {dtype}; expected BF16, F16 or F32")
            tensors[name] = array.reshape(info["shape"])
    return tensors


# --- graph -----------------------------------------------------------------------------------

def build_model(folder, yes_id, no_id, max_positions):
    import openvino as ov
    try:
        import openvino.opset13 as ops
    except ImportError:
        from openvino.runtime import opset13 as ops

    config = json.load(open(os.path.join(folder, "config.json")))
    w = load_safetensors(folder)
    hidden, heads, kv_heads = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim", hidden // heads)
    eps, theta = config["rms_norm_eps"], config.get("rope_theta", 10000.0)
    group = heads // kv_heads

    def const(array, dtype=np.float32):
        return ops.constant(np.require(np.asarray(array, dtype=dtype), requirements="C"))

    def rms_norm(x, weight):
        # x / sqrt(mean(x^2) + eps) * weight: the pattern OpenVINO fuses into one RMS op.
        variance = ops.reduce_mean(ops.power(x, const(2.0)), const([-1], np.int64), keep_dims=True)
        inverse = ops.divide(const(1.0), ops.sqrt(ops.add(variance, const(eps))))
        return ops.multiply(ops.multiply(x, inverse), const(weight))

    def linear(x, name):
        return ops.matmul(x, const(w[name]), transpose_a=False, transpose_b=True)

    ids = ops.parameter([-1, -1], ov.Type.i64, name="input_ids")
    last = ops.parameter([-1], ov.Type.i64, name="last_index")
    embed = w["model.embed_tokens.weight"]
    x = ops.gather(const(embed), ids, const(0, np.int64))

    # Rotary tables for positions 0..max_positions-1, sliced to the input's length.
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    angles = np.outer(np.arange(max_positions, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    length = ops.gather(ops.shape_of(ids), const([1], np.int64), const(0, np.int64))
    zero, one = const([0], np.int64), const([1], np.int64)
    cos = ops.slice(const(np.cos(angles)), zero, length, one, zero)
    sin = ops.slice(const(np.sin(angles)), zero, length, one, zero)

    def rope(t):
        first, second = ops.split(t, const(-1, np.int64), 2).outputs()
        rotated = ops.concat([ops.negative(second), first], -1)
        return ops.add(ops.multiply(t, cos), ops.multiply(rotated, sin))

    def heads_first(t, count, norm):
        t = ops.reshape(t, const([0, 0, count, head_dim], np.int64), special_zero=True)
        if norm is not None:
            t = rms_norm(t, norm)
        return ops.transpose(t, const([0, 2, 1, 3], np.int64))

    def repeat_kv(t):
        if group == 1:
            return t
        t = ops.unsqueeze(t, const([2], np.int64))
        t = ops.concat([t] * group, 2)
        return ops.reshape(t, const([0, heads, -1, head_dim], np.int64), special_zero=True)

    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"])
        q = rope(heads_first(linear(h, p + "self_attn.q_proj.weight"), heads, w[p + "self_attn.q_norm.weight"]))
        k = rope(heads_first(linear(h, p + "self_attn.k_proj.weight"), kv_heads, w[p + "self_attn.k_norm.weight"]))
        v = heads_first(linear(h, p + "self_attn.v_proj.weight"), kv_heads, None)
        attention = ops.scaled_dot_product_attention(q, repeat_kv(k), repeat_kv(v), causal=True)
        attention = ops.reshape(ops.transpose(attention, const([0, 2, 1, 3], np.int64)),
                                const([0, 0, heads * head_dim], np.int64), special_zero=True)
        x = ops.add(x, linear(attention, p + "self_attn.o_proj.weight"))
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"])
        gate = linear(h, p + "mlp.gate_proj.weight")
        up = linear(h, p + "mlp.up_proj.weight")
        x = ops.add(x, linear(ops.multiply(ops.swish(gate), up), p + "mlp.down_proj.weight"))

    # The last real token of each row, the final norm, and the yes-minus-no row of lm_head.
    x = ops.gather(x, last, const(1, np.int64), batch_dims=1)
    x = rms_norm(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings", False) else w["lm_head.weight"]
    score_row = (head[yes_id].astype(np.float64) - head[no_id].astype(np.float64)).astype(np.float32)
    logit = ops.matmul(x, const(score_row.reshape(hidden, 1)), False, False)
    logit = ops.reshape(logit, const([-1], np.int64), special_zero=False)
    return ov.Model([logit.output(0)], [ids, last], "qwen3_reranker_score")


# --- inputs ----------------------------------------------------------------------------------

class Prompts:
    def __init__(self, tokenizer_path):
        from tokenizers import Tokenizer
        self.tok = Tokenizer.from_file(tokenizer_path)
        self.system = self.encode(SYSTEM)
        self.suffix = self.encode(SUFFIX)
        self.yes, self.no = self.tok.token_to_id("yes"), self.tok.token_to_id("no")

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def pair(self, query, document, max_document_tokens, instruction=DEFAULT_INSTRUCTION):
        """Ids of one (query, document) pair, the document cut to max_document_tokens (as Sift's
        RerankPrompt: prefix + " " + doc + suffix, each part tokenized on its own)."""
        prefix = self.system + self.encode(f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>:")
        return prefix + self.encode(" " + document)[:max_document_tokens] + self.suffix


def read_jsonl(path, key="text"):
    with open(path) as f:
        return [json.loads(line)[key] for line in f if line.strip()]


def workloads(prompts, corpus, queries):
    w1 = [prompts.pair(queries[0], d, 256) for d in corpus[:64]]
    long_docs, cursor = [], 64
    for _ in range(4):
        doc = ""
        while len(prompts.encode(doc)) < 4000:
            doc += corpus[cursor % len(corpus)] + "\n\n"
            cursor += 1
        long_docs.append(doc)
    w3 = [prompts.pair(queries[1 % len(queries)], d, 4000) for d in long_docs]
    return w1, w3


def batches(sequences, size, pad):
    for start in range(0, len(sequences), size):
        group = sequences[start:start + size]
        width = max(len(s) for s in group)
        ids = np.full((len(group), width), pad, dtype=np.int64)
        for row, s in enumerate(group):
            ids[row, :len(s)] = s
        yield {"input_ids": ids, "last_index": np.array([len(s) - 1 for s in group], dtype=np.int64)}


def score(compiled, sequences, batch, pad):
    request = compiled.create_infer_request()
    out = []
    for inputs in batches(sequences, batch, pad):
        out.extend(request.infer(inputs)[0].tolist())
    return out


# --- main ------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face folder (config.json, *.safetensors, tokenizer.json)")
    ap.add_argument("--reference", help="reference-scores JSON (cases with input_ids and logit_diff)")
    ap.add_argument("--corpus", default="../shared/bench/corpus.jsonl")
    ap.add_argument("--queries", default="../shared/bench/queries.jsonl")
    ap.add_argument("--precisions", default="int8-static,int8-weights", help="fp32, int8-static, int8-weights")
    ap.add_argument("--hints", default="bf16,f32", help="INFERENCE_PRECISION_HINT values")
    ap.add_argument("--batch", default="4,8", help="W1 batch sizes")
    ap.add_argument("--workloads", default="fidelity,w1,w3")
    ap.add_argument("--calibration-pairs", type=int, default=64, help="NNCF: corpus pairs to calibrate on")
    ap.add_argument("--threads", type=int, default=0, help="INFERENCE_NUM_THREADS (0: OpenVINO's default)")
    ap.add_argument("--pairs", help="pairs from `sift bench fidelity --export-pairs` to score")
    ap.add_argument("--pairs-model", type=int, default=0, help="which model's pairs (--model must be that model)")
    ap.add_argument("--pairs-out", help="folder for the pairs' logits: PRECISION-HINT.jsonl")
    ap.add_argument("--pairs-max-tokens", type=int, default=8192 + 256,
                    help="skip longer pairs (the 16k-32k ones: run sift bench fidelity with --very-long '' beside them)")
    a = ap.parse_args()
    if a.pairs and not a.pairs_out:
        raise SystemExit("--pairs needs --pairs-out")

    import openvino as ov
    import nncf

    known = {"fp32", "int8-static", "int8-weights"}
    precisions = [p for p in a.precisions.split(",") if p]
    if set(precisions) - known:
        raise SystemExit(f"unknown precision(s) {sorted(set(precisions) - known)}; known: {sorted(known)}")
    which = set(a.workloads.split(","))
    prompts = Prompts(os.path.join(a.model, "tokenizer.json"))
    pad = prompts.tok.token_to_id("<|endoftext|>") or 0
    corpus, queries = read_jsonl(a.corpus), read_jsonl(a.queries)
    w1, w3 = workloads(prompts, corpus, queries)
    cases = json.load(open(a.reference))["cases"] if a.reference and "fidelity" in which else []
    pairs = []
    if a.pairs:
        with open(a.pairs) as f:
            for line in f:
                p = json.loads(line)
                if p["model"] == a.pairs_model:
                    # As Sift's fidelity run scores them: the whole document, no cut.
                    ids = prompts.pair(p["query"], p["text"], 1 << 30)
                    if len(ids) <= a.pairs_max_tokens:
                        pairs.append((p, ids))
        os.makedirs(a.pairs_out, exist_ok=True)
    longest = max([len(s) for s in w1 + w3] + [len(c["input_ids"]) for c in cases] + [len(ids) for _, ids in pairs])

    started = time.time()
    base = build_model(a.model, prompts.yes, prompts.no, max_positions=longest + 1)
    print(json.dumps({"built": a.model, "seconds": round(time.time() - started, 1), "openvino": ov.__version__,
                      "nncf": nncf.__version__}), flush=True)
    core = ov.Core()
    # Calibration pairs: queries 2.. against passages after W1's and W3's, cut to 256 tokens.
    calibration = [prompts.pair(queries[(2 + i) % len(queries)], corpus[(200 + i) % len(corpus)], 256)
                   for i in range(a.calibration_pairs)]

    hints = [h for h in a.hints.split(",") if h]
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "bf16" in hints and "BF16" not in capabilities:
        # OpenVINO would run it in f32 anyway: the same row twice.
        hints.remove("bf16")
        print(json.dumps({"skipped_hint": "bf16", "reason": f"this CPU has no bf16 units ({capabilities})"}), flush=True)

    for precision in precisions:
        started = time.time()
        if precision == "fp32":
            model = base
        elif precision == "int8-static":
            data = nncf.Dataset(list(batches(calibration, 1, pad)))
            model = nncf.quantize(base, data, subset_size=len(calibration), model_type=nncf.ModelType.TRANSFORMER)
        else:
            model = nncf.compress_weights(base, mode=nncf.CompressWeightsMode.INT8_ASYM)
        prepared = time.time() - started
        for hint in hints:
            config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
            if a.threads:
                config["INFERENCE_NUM_THREADS"] = a.threads
            compiled = core.compile_model(model, "CPU", config)
            row = {"engine": "openvino", "precision": precision, "hint": hint, "prepare_s": round(prepared, 1)}
            if cases:
                logits = [score(compiled, [c["input_ids"]], 1, pad)[0] for c in cases]
                errors = [abs(l - c["logit_diff"]) for l, c in zip(logits, cases)]
                row["fidelity"] = {"cases": len(cases), "mean_abs": round(float(np.mean(errors)), 6),
                                   "max_abs": round(float(np.max(errors)), 6)}
            if pairs:
                t = time.time()
                out = os.path.join(a.pairs_out, f"openvino-{precision}-{hint}.jsonl")
                with open(out, "w") as f:
                    for p, ids in pairs:
                        logit = score(compiled, [ids], 1, pad)[0]
                        f.write(json.dumps({"model": p["model"], "group": p["group"], "document": p["document"],
                                            "logit": logit}) + "\n")
                row["pairs"] = {"count": len(pairs), "file": out, "seconds": round(time.time() - t, 1)}
            if "w1" in which:
                score(compiled, w1[:8], 8, pad)  # warm-up
                best = None
                for size in [int(b) for b in a.batch.split(",") if b]:
                    t = time.time()
                    score(compiled, w1, size, pad)
                    wall = time.time() - t
                    tokens = sum(len(s) for s in w1)
                    result = {"batch": size, "seconds": round(wall, 2), "docs_per_s": round(64 / wall, 3),
                              "tokens": tokens, "tokens_per_s": round(tokens / wall, 1)}
                    row.setdefault("w1", []).append(result)
                    best = result if best is None or result["docs_per_s"] > best["docs_per_s"] else best
                row["w1_best"] = best
            if "w3" in which:
                t = time.time()
                score(compiled, w3, 1, pad)
                wall = time.time() - t
                tokens = sum(len(s) for s in w3)
                row["w3"] = {"seconds": round(wall, 1), "tokens": tokens, "tokens_per_s": round(tokens / wall, 1)}
            print(json.dumps(row), flush=True)
            del compiled


if __name__ == "__main__":
    sys.exit(main())
