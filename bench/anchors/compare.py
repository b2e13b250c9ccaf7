#!/usr/bin/env python3
"""Sift beside OpenVINO in one run: W1, W3 and fidelity of each, one table, the ratios.

Runs `sift bench engine --workloads w1,w3`, W1 through a server (`sift serve` + `sift load
--workload w1`) and `sift bench parity` (Sift int8), then openvino_reranker.py (OpenVINO static
int8 and int8 weights, each hint and W1 batch size), then Sift's workloads again, so the
machine's drift during the run shows in Sift's two rows. With --fidelity-pairs (a file of
`sift bench fidelity --export-pairs`), OpenVINO also scores the first model's pairs up to 8k
tokens and `sift bench fidelity` puts every OpenVINO configuration beside Sift's modes on them.
Called by run.sh, which sets up OpenVINO; see docs/PERFORMANCE.md for the figures it produced.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(args):
    print("$ " + " ".join(args), file=sys.stderr, flush=True)
    out = subprocess.run(args, capture_output=True, text=True)
    sys.stderr.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({out.returncode})")
    return out.stdout


def sift_workloads(sift, model, threads, extra):
    text = run([sift, "bench", "engine", "--model", model, "--workloads", "w1,w3", "--threads", str(threads)] + extra)
    row = {}
    for sharing, docs, tokens in re.findall(r"W1 prefix sharing (on|off)\s*: 64 docs in [\d.]+ s = ([\d.]+) docs/s; \d+ prefill tokens = ([\d.]+) tokens/s", text):
        row[f"w1_{sharing}"] = (float(docs), float(tokens))
    m = re.search(r"W3 4 docs of ~4000 tokens: ([\d.]+) s", text)
    if m:
        row["w3"] = float(m.group(1))
    if "w1_on" not in row or "w3" not in row:
        raise SystemExit("could not read W1/W3 from `sift bench engine`:\n" + text)
    row["w1_served"] = sift_served_w1(sift, model, threads, extra)
    return row


def sift_served_w1(sift, model, threads, extra):
    """W1 as a client sees it: one call of 64 passages to `sift serve` on 127.0.0.1, score cache
    off (it would answer a repeated call without computing)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryFile(mode="w+") as log:
        args = [sift, "serve", "--model", model, "--port", str(port), "--threads", str(threads), "--score-cache-mb", "0"] + extra
        print("$ " + " ".join(args), file=sys.stderr, flush=True)
        server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 300
            while True:
                log.seek(0)
                text = log.read()
                if "loaded; serving" in text:   # the server's log line once the model is in
                    break
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("`sift serve` did not start serving:\n" + text)
                time.sleep(0.5)
            out = run([sift, "load", "--server", f"127.0.0.1:{port}", "--workload", "w1"])
        finally:
            server.terminate()
            server.wait(timeout=60)
    m = re.search(r"1 ok, 0 failed.*?throughput\s+[\d.]+ calls/s, ([\d.]+) docs/s", out, re.S)
    if not m:
        raise SystemExit("could not read `sift load --workload w1`:\n" + out)
    return float(m.group(1))


def sift_fidelity(sift, folder, reference, threads, extra):
    text = run([sift, "bench", "parity", "--model", folder, "--reference", reference, "--threads", str(threads)] + extra)
    m = re.search(r"mean \|Δlogit\| ([\d.]+), max ([\d.]+)", text)
    if not m:
        raise SystemExit("could not read `sift bench parity`:\n" + text)
    return float(m.group(1)), float(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face folder (OpenVINO and Sift's fidelity read it)")
    ap.add_argument("--sift-model", help="what Sift's workloads load (default: --model; a .sift file loads faster)")
    ap.add_argument("--reference", default="../shared/fixtures/reference-scores-0.6b.json")
    ap.add_argument("--sift", default=".build/release/sift")
    ap.add_argument("--python", default=sys.executable, help="the Python with openvino, nncf and tokenizers")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--attention", help="Sift's attention (bf16, int8, fp32; default: Sift's own default)")
    ap.add_argument("--openvino-arg", action="append", default=[], help="extra openvino_reranker.py flag (repeatable)")
    ap.add_argument("--fidelity-pairs", help="pairs of `sift bench fidelity --export-pairs` (its first model must be --model)")
    ap.add_argument("--fidelity-arg", action="append", default=[],
                    help="a `sift bench fidelity` flag the pairs were drawn with, e.g. --fidelity-arg=--short-queries=8 (repeatable)")
    a = ap.parse_args()

    if not os.access(a.sift, os.X_OK):
        raise SystemExit(f"{a.sift} is not an executable; build it: swift build -c release --product sift")
    sift_model = a.sift_model or a.model
    extra = ["--attention", a.attention] if a.attention else []
    sift_name = "Sift int8" + (f" + {a.attention} attention" if a.attention else "")
    first = sift_workloads(a.sift, sift_model, a.threads, extra)
    fidelity = sift_fidelity(a.sift, a.model, a.reference, a.threads, extra)
    pairs_dir = tempfile.mkdtemp(prefix="sift-anchor-pairs-") if a.fidelity_pairs else None
    pair_args = ["--pairs", a.fidelity_pairs, "--pairs-out", pairs_dir] if pairs_dir else []
    ov_out = run([a.python, os.path.join(HERE, "openvino_reranker.py"), "--model", a.model, "--reference", a.reference,
                  "--threads", str(a.threads)] + pair_args + a.openvino_arg)
    openvino = [json.loads(line) for line in ov_out.splitlines() if line.startswith("{")]
    second = sift_workloads(a.sift, sift_model, a.threads, extra)
    versions = next((r for r in openvino if "built" in r), {})
    rows = [r for r in openvino if r.get("engine") == "openvino"]

    print(f"\nCPU: {cpu_name()}; {a.threads} threads; OpenVINO {versions.get('openvino', '?')}, NNCF {versions.get('nncf', '?')}")
    print("| engine | W1 docs/s | W1 tokens/s | W3 (4 × ~4k tokens) | mean / max \\|Δlogit\\| (42 cases) |")
    print("|---|---|---|---|---|")
    for name, r in [(f"{sift_name}, prefix sharing (first)", first), (f"{sift_name}, prefix sharing (last)", second)]:
        print(f"| {name} | {r['w1_on'][0]:.2f} | {r['w1_on'][1]:.0f} | {r['w3']:.1f} s | {fidelity[0]:.4f} / {fidelity[1]:.4f} |")
    print(f"| {sift_name}, `sift serve` + `sift load --workload w1` (first / last) | {first['w1_served']:.2f} / {second['w1_served']:.2f} | | | |")
    if "w1_off" in first:
        print(f"| {sift_name}, no sharing (first) | {first['w1_off'][0]:.2f} | {first['w1_off'][1]:.0f} | | |")
    for r in rows:
        best = r.get("w1_best") or {}
        fid = r.get("fidelity") or {}
        print(f"| OpenVINO {r['precision']}, {r['hint']} hint, batch {best.get('batch', '-')} | {best.get('docs_per_s', 0):.2f} "
              f"| {best.get('tokens_per_s', 0):.0f} | {r.get('w3', {}).get('seconds', float('nan')):.1f} s "
              f"| {fid.get('mean_abs', float('nan')):.4f} / {fid.get('max_abs', float('nan')):.4f} |")
    static = [r for r in rows if r["precision"] == "int8-static" and r.get("w1_best")]
    if static:
        best = max(static, key=lambda r: r["w1_best"]["docs_per_s"])
        fastest_w3 = min((r for r in static if "w3" in r), key=lambda r: r["w3"]["seconds"], default=None)
        sift_w1 = min(first["w1_on"][0], second["w1_on"][0])
        sift_w3 = max(first["w3"], second["w3"])
        served_w1 = min(first["w1_served"], second["w1_served"])
        print(f"\nSift W1 (the slower of its two runs) / OpenVINO static int8's best: {sift_w1 / best['w1_best']['docs_per_s']:.2f}x")
        print(f"Sift W1 through sift serve + sift load (the slower run) / OpenVINO static int8's best: {served_w1 / best['w1_best']['docs_per_s']:.2f}x")
        if fastest_w3:
            print(f"Sift W3 time (the slower run) / OpenVINO static int8's fastest: {sift_w3 / fastest_w3['w3']['seconds']:.2f}x")
    if pairs_dir:
        externals = []
        for r in rows:
            if "pairs" in r:
                externals += ["--external", f"ov-{r['precision']}-{r['hint']}={r['pairs']['file']}"]
        # The first model's pairs up to 8k tokens (the same draw as the full run's), every
        # Sift mode and OpenVINO configuration against the fp32 reference (cached by the full run).
        text = run([a.sift, "bench", "fidelity", "--models", a.model, "--very-long", "", "--threads", str(a.threads),
                    "--modes", "int8row,int8+bf16,int8+int8"] + a.fidelity_arg + externals)
        print("\nFidelity on the same pairs (sift bench fidelity, first model, up to 8k tokens):\n" + text)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        name = re.search(r"model name\s*:\s*(.*)", info).group(1)
        flags = re.search(r"flags\s*:\s*(.*)", info).group(1).split()
        isa = [f for f in ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8"] if f in flags]
        family = re.search(r"cpu family\s*:\s*(\d+)", info).group(1)
        model = re.search(r"model\s*:\s*(\d+)", info).group(1)
        return f"{name} (family {family} model {model}; {' '.join(isa)})"
    except (OSError, AttributeError):
        return "unknown"


if __name__ == "__main__":
    main()
