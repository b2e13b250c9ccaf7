#!/usr/bin/env bash
# W4 of issue 15 — interactive calls (1 query × 4 passages of ≤96 tokens) alone, then a stream of
# W1 calls (64 passages of 256 tokens, one after another) alone, then both — in-process
# (`sift bench engine --workloads w4`, which also times cancellations mid-step and, with
# --w4-without-classes, repeats the mixed phase with one class of work as before) and through
# `sift serve` (`sift load --workload w4`), in one run.
#   bash scripts/bench-interactive.sh [MODEL.sift]
# Knobs (environment): SECONDS_PER_PHASE (each batch-stream phase, 400), RATE (interactive calls
# per second; default: a rate that keeps them to 15% of the machine, from their idle latency),
# COMPARE=1 (add the one-class run in-process).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-.build-models/qwen3-0.6b.sift}
seconds=${SECONDS_PER_PHASE:-400}
swift build -c release --product sift >/dev/null
sift=.build/release/sift
if [ ! -e "$model" ] && [ "$model" = .build-models/qwen3-0.6b.sift ]; then
  bash scripts/make-test-models.sh
  $sift convert --model .build-models/qwen3-0.6b-seed0 --out "$model"
fi
. scripts/lib/sift-server.sh
log=$(mktemp)
trap 'kill -TERM ${server_pid:-0} 2>/dev/null || true; wait ${server_pid:-0} 2>/dev/null || true; rm -f "$log"' EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, flags: $(grep -m1 -o -w 'avx512_vnni\|avx_vnni\|avx2' /proc/cpuinfo | sort -u | xargs)"
rate=()
[ -n "${RATE:-}" ] && rate=(--rate "$RATE")
compare=()
[ "${COMPARE:-0}" = 1 ] && compare=(--w4-without-classes)
echo "== in-process: sift bench engine --workloads w4 =="
$sift bench engine --model "$model" --workloads w4 --w4-seconds "$seconds" ${RATE:+--interactive-rate "$RATE"} "${compare[@]}"
echo "== through the server: sift load --workload w4 =="
start_sift_server "$log" --model "$model" --score-cache-mb 0 --log-level notice  # compute, not the cache
$sift load --server 127.0.0.1:"$server_port" --workload w4 --duration "$seconds" "${rate[@]}"
