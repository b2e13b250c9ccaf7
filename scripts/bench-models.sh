#!/usr/bin/env bash
# Benchmarks of issue 13, through `sift serve` (release build), each figure side by side in one run.
#
#   scripts/bench-models.sh cache SMALL.sift
#       W2-shaped Zipf traffic (8 callers, 16 documents per call, a fixed document set per query,
#       Zipf(1.1) over the 50 queries) with the score cache off, then on; then the latency of a
#       fully cached call (one caller, the same call again and again).
#   scripts/bench-models.sh two-models SMALL.sift LARGE.sift
#       Each model alone on its own server, then both on one server: each alone, then both loaded
#       at once (two load generators), reporting docs/s and p99 of each.
#
# Knobs (environment): CALLS (cache: calls per run, 160), TOKENS (tokens per document, 64),
# DOCS (two-models: documents per call, 8), SECONDS_BOTH (two-models: length of the shared run, 180).
set -euo pipefail
cd "$(dirname "$0")/.."
sift=${SIFT_BIN:-.build/release/sift}
. scripts/lib/sift-server.sh
log=$(mktemp)
trap 'kill -TERM ${server_pid:-0} 2>/dev/null || true; wait ${server_pid:-0} 2>/dev/null || true; rm -f "$log"' EXIT
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, d))" "$1"; }
stop() { kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; }

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, flags: $(grep -m1 -o -w 'avx512_vnni\|avx_vnni\|avx2' /proc/cpuinfo | sort -u | xargs)"

cache_bench() {
  model=$1
  calls=${CALLS:-160} tokens=${TOKENS:-64}
  shape=(--documents 16 --max-tokens-per-document "$tokens" --concurrency 8 --requests "$calls" --duration 3600 --zipf 1.1 --quiet --json)
  for mb in 0 128; do
    start_sift_server "$log" --model "$model" --score-cache-mb "$mb"
    out=$("$sift" load --server "127.0.0.1:$server_port" "${shape[@]}")
    echo "score cache ${mb} MiB: $(echo "$out" | field '"%.2f docs/s, p50 %.0f ms, p99 %.0f ms, %d calls, %.1f%% of documents from the cache" % (docs_per_second, latency_ms["p50"], latency_ms["p99"], ok, 100 * score_cache_hit_ratio)')"
    echo "$out" > "/tmp/sift-cache-$mb.json"
    if [ "$mb" != 0 ]; then
      # The same call again and again: every call after the first is answered from the cache.
      out=$("$sift" load --server "127.0.0.1:$server_port" --documents 16 --max-tokens-per-document "$tokens" \
            --distinct-queries 1 --zipf 1.1 --concurrency 1 --requests 500 --duration 600 --quiet --json)
      echo "fully cached call (1 caller, 500 calls of 16 documents): $(echo "$out" | field '"p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, %.1f%% of documents from the cache" % (latency_ms["p50"], latency_ms["p90"], latency_ms["p99"], 100 * score_cache_hit_ratio)')"
    fi
    stop
  done
  python3 -c "import json; a=json.load(open('/tmp/sift-cache-0.json')); b=json.load(open('/tmp/sift-cache-128.json')); print('docs/s with the cache / without: %.2fx' % (b['docs_per_second'] / a['docs_per_second']))"
}

run() { "$sift" load --server "127.0.0.1:$server_port" "$@"; }
report() { echo "$1: $(echo "$2" | field '"%.2f docs/s, p50 %.0f ms, p99 %.0f ms, %d calls" % (docs_per_second, latency_ms["p50"], latency_ms["p99"], ok)')"; }

two_models_bench() {
  small=$1 large=$2
  docs=${DOCS:-8} tokens=${TOKENS:-128} both=${SECONDS_BOTH:-180}
  one=(--documents "$docs" --max-tokens-per-document "$tokens" --concurrency 1 --requests 3 --duration 3600 --quiet --json)
  # The score cache is off: these measure compute. Each load uses its own queries (W1-like calls).
  for model in "$small" "$large"; do
    start_sift_server "$log" --model "$model" --score-cache-mb 0
    report "alone, own server: $(basename "$model")" "$(run "${one[@]}")"
    stop
  done
  metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  start_sift_server "$log" --model "small=$small" --model "large=$large" --score-cache-mb 0 --metrics-port "$metrics_port"
  report "alone, shared server: small" "$(run "${one[@]}" --model small)"
  report "alone, shared server: large" "$(run "${one[@]}" --model large)"
  shared=(--documents "$docs" --max-tokens-per-document "$tokens" --concurrency 1 --duration "$both" --quiet --json)
  curl -s "http://127.0.0.1:$metrics_port/metrics" > /tmp/sift-metrics-before.txt
  run "${shared[@]}" --model small > /tmp/sift-both-small.json &
  small_pid=$!
  run "${shared[@]}" --model large > /tmp/sift-both-large.json
  wait "$small_pid"
  curl -s "http://127.0.0.1:$metrics_port/metrics" > /tmp/sift-metrics-after.txt
  report "both at once, $both s: small" "$(cat /tmp/sift-both-small.json)"
  report "both at once, $both s: large" "$(cat /tmp/sift-both-large.json)"
  # Each model's steps during the shared run: wall seconds, and seconds holding the cores.
  python3 - /tmp/sift-metrics-before.txt /tmp/sift-metrics-after.txt <<'PY'
import re, sys
def read(path):
    values = {}
    for line in open(path):
        m = re.match(r'(sift_engine_(?:step|core|core_wait)_seconds)\{model="([^"]+)"\} (\S+)', line)
        if m: values[(m.group(1), m.group(2))] = float(m.group(3))
    return values
before, after = read(sys.argv[1]), read(sys.argv[2])
delta = {k: after[k] - before.get(k, 0) for k in after}
cores = {m: delta.get(("sift_engine_core_seconds", m), 0) for m in ("small", "large")}
total = sum(cores.values()) or 1
for m in ("small", "large"):
    steps, waited = delta.get(("sift_engine_step_seconds", m), 0), delta.get(("sift_engine_core_wait_seconds", m), 0)
    print("both at once: %s held the cores %.1f s (%.0f%% of the models' core time); its steps took %.1f s: %.1f waiting for the cores, %.1f on its own thread"
          % (m, cores[m], 100 * cores[m] / total, steps, waited, steps - cores[m] - waited))
PY
  stop
}

case "${1:-}" in
cache) cache_bench "$2" ;;
two-models) two_models_bench "$2" "$3" ;;
*) echo "usage: $0 cache SMALL.sift | two-models SMALL.sift LARGE.sift" >&2; exit 64 ;;
esac
