#!/usr/bin/env python3
"""A numpy Qwen3 reranker forward pass with simulated int8 linear layers: which quantization
granularity would shrink Sift's int8 error (mean |dlogit| against transformers fp32 on the cases of
reference-scores-0.6b.json)? A model of Sift's scheme, not its code: symmetric round-to-nearest
int8 weights (one scale per output row, or per group of K) and activations (one scale per token,
or per group of K), outlier input channels in fp32 (picked from one calibration pass, over 2x the
median channel peak, at most `out`), optionally q/k/v rounded to bf16 after RoPE.

Usage: python3 bench/quantization/simulate.py HF_FOLDER REFERENCE_JSON VARIANTS [CASES]
VARIANTS: comma-separated; each "fp32", "base", or "+"-joined settings wg=G (weight group),
ag=G (activation group), out=N (outlier channels, default 16), bf16=qkv (letters rounded),
seed=S (another rounding realisation: every scale jittered by up to 1%).
Example: python3 bench/quantization/simulate.py .build-models/qwen3-0.6b-seed0 \
    ../shared/fixtures/reference-scores-0.6b.json base,wg=128+ag=128
numpy only; ~90 s per variant for the 42 cases of the 0.6B shape on 2 cores."""
import glob, json, struct, sys, time
import numpy as np

MODEL = sys.argv[1]
REF = sys.argv[2]
VARIANTS = sys.argv[3].split(",")
NCASES = int(sys.argv[4]) if len(sys.argv) > 4 else 42

cfg = json.load(open(f"{MODEL}/config.json"))
I, L = cfg["intermediate_size"], cfg["num_hidden_layers"]
NH, NKV, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
EPS, THETA = cfg["rms_norm_eps"], cfg["rope_theta"]


def load(folder):
    """Every tensor of the folder's *.safetensors (bf16 or f32) as float32."""
    out = {}
    for path in sorted(glob.glob(f"{folder}/*.safetensors")):
        raw = open(path, "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            if info["dtype"] == "BF16":
                buf = np.frombuffer(raw, dtype=np.uint16, count=(b - a) // 2, offset=8 + n + a)
                out[name] = (buf.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
            elif info["dtype"] == "F32":
                out[name] = np.frombuffer(raw, dtype=np.float32, count=(b - a) // 4, offset=8 + n + a).reshape(info["shape"])
            else:
                sys.exit(f"{path}: {name} is {info['dtype']}; this script reads BF16 and F32")
    return out


W = load(MODEL)
ref = json.load(open(REF))
YES, NO = ref["meta"]["token_yes_id"], ref["meta"]["token_no_id"]
emb = W["model.embed_tokens.weight"]
head = W.get("lm_head.weight", emb)  # tied in the 0.6B
# The fused projections (as Sift runs them), built once.
for l in range(L):
    p = f"model.layers.{l}."
    W[p + "qkv"] = np.concatenate([W[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])
    W[p + "gate_up"] = np.concatenate([W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"]])


def rms(x, w):
    v = (x.astype(np.float64) ** 2).mean(-1, keepdims=True)
    return (x / np.sqrt(v + EPS)).astype(np.float32) * w


def rope(x, pos):  # x: [T, heads, D]
    inv = 1.0 / (THETA ** (np.arange(0, D, 2, dtype=np.float64) / D))
    ang = np.outer(pos, inv)
    cos = np.concatenate([np.cos(ang)] * 2, -1).astype(np.float32)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1).astype(np.float32)[:, None, :]
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos + np.concatenate([-x2, x1], -1) * sin


def bf16(x):
    b = x.astype(np.float32).view(np.uint32)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return b.view(np.float32)


def qsym(x, axis_groups, rng=None, bits=127):
    """Symmetric round-to-nearest with one scale per group: x is [rows, K], groups of g along K.
    With `rng`, each scale grows by up to 1% at random: another rounding realisation of about the
    same error (which values round up or down changes)."""
    rows, k = x.shape
    g = axis_groups or k
    xg = x.reshape(rows, k // g, g)
    s = np.abs(xg).max(-1, keepdims=True) / bits
    if rng is not None:
        s = s * (1 + 0.01 * rng.random(s.shape, dtype=np.float32))
    s[s == 0] = 1
    return (np.round(xg / s) * s).reshape(rows, k)


class Scheme:
    def __init__(self, name):
        self.name = name
        parts = dict(p.split("=") for p in name.split("+") if "=" in p)
        self.fp32 = name == "fp32"
        self.wg = int(parts.get("wg", 0))      # weight group along K (0: whole row)
        self.ag = int(parts.get("ag", 0))      # activation group along K (0: whole token)
        self.nout = int(parts.get("out", 16))  # outlier channels
        self.bf16 = parts.get("bf16", "")      # q,k,v letters rounded after RoPE
        seed = parts.get("seed")                # a rounding realisation (scales jittered by <= 1%)
        self.rng = np.random.default_rng(int(seed)) if seed is not None else None
        self.outliers = {}
        self.wq = {}

    def linear(self, key, x, w):
        """x [T, K] @ w[N, K].T with the scheme; outlier channels in fp32."""
        if self.fp32:
            return x @ w.T
        out = self.outliers.get(key, [])
        if key not in self.wq:
            w2 = w.copy()
            w2[:, out] = 0
            self.wq[key] = qsym(w2, self.wg, self.rng)
        x2 = x.copy()
        x2[:, out] = 0
        y = qsym(x2, self.ag, self.rng) @ self.wq[key].T
        if len(out):
            y += x[:, out] @ w[:, out].T
        return y


def forward(ids, sch, observe=None):
    T = len(ids)
    x = emb[ids].astype(np.float32)
    pos = np.arange(T)
    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        if observe is not None:
            observe[(l, "qkv")] = np.abs(h).max(0)
        qkv = sch.linear((l, "qkv"), h, W[p + "qkv"])
        q = qkv[:, : NH * D].reshape(T, NH, D)
        k = qkv[:, NH * D: NH * D + NKV * D].reshape(T, NKV, D)
        v = qkv[:, NH * D + NKV * D:].reshape(T, NKV, D)
        q = rope(rms(q, W[p + "self_attn.q_norm.weight"]), pos)
        k = rope(rms(k, W[p + "self_attn.k_norm.weight"]), pos)
        if "q" in sch.bf16: q = bf16(q)
        if "k" in sch.bf16: k = bf16(k)
        if "v" in sch.bf16: v = bf16(v)
        k = np.repeat(k, NH // NKV, 1)
        v = np.repeat(v, NH // NKV, 1)
        s = np.matmul(q.transpose(1, 0, 2), k.transpose(1, 2, 0)) / np.float32(np.sqrt(D)) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = np.matmul(s, v.transpose(1, 0, 2)).transpose(1, 0, 2).reshape(T, NH * D)
        if observe is not None:
            observe[(l, "o")] = np.abs(a).max(0)
        x = x + sch.linear((l, "o"), a, W[p + "self_attn.o_proj.weight"])
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        if observe is not None:
            observe[(l, "gu")] = np.abs(h).max(0)
        gu = sch.linear((l, "gu"), h, W[p + "gate_up"])
        g, u = gu[:, :I], gu[:, I:]
        m = g / (1 + np.exp(-g)) * u
        if observe is not None:
            observe[(l, "down")] = np.abs(m).max(0)
        x = x + sch.linear((l, "down"), m, W[p + "mlp.down_proj.weight"])
    h = rms(x[-1:], W["model.norm.weight"])[0].astype(np.float64)
    return float(h @ head[YES] - h @ head[NO])


cases = ref["cases"][:NCASES]
# Outliers from one calibration pass (as Sift: one realistic input through the fp32 model; here
# the shortest case of at least 300 tokens, 387 in reference-scores-0.6b.json), channels over 2x
# the median peak, at most N, largest first.
calib = min((c["input_ids"] for c in ref["cases"] if len(c["input_ids"]) >= 300), key=len)
peaks = {}
forward(calib, Scheme("fp32"), observe=peaks)
for name in VARIANTS:
    sch = Scheme(name)
    for key, pk in peaks.items():
        med = np.median(pk)
        cand = [c for c in np.argsort(-pk) if pk[c] > 2 * med][: sch.nout]
        sch.outliers[key] = sorted(int(c) for c in cand)
    t = time.time()
    errs = [abs(forward(c["input_ids"], sch) - c["logit_diff"]) for c in cases]
    print(f"{name:28s} mean {np.mean(errs):.4f} max {np.max(errs):.4f}  ({len(cases)} cases, {time.time() - t:.0f} s)", flush=True)
