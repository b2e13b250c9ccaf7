#!/usr/bin/env bash
# W1–W3 through the server (sift serve + sift load over loopback), next to the same workloads
# run in-process (sift bench engine), in one run so the two are comparable.
#   bash scripts/bench-e2e.sh [MODEL]      (default: the 0.6B-shape test model, converted)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-.build-models/qwen3-0.6b-seed0.sift}
swift build -c release --product sift >/dev/null
sift=.build/release/sift
if [ ! -e "$model" ] && [ "$model" = .build-models/qwen3-0.6b-seed0.sift ]; then
  bash scripts/make-test-models.sh
  $sift convert --model .build-models/qwen3-0.6b-seed0 --out "$model"
fi
port=7790
echo "== in-process (sift bench engine) =="
# Run separately: together, w2+w3 add the long "W2 during W3" run (~15 min).
$sift bench engine --model "$model" --workloads w1,w2
$sift bench engine --model "$model" --workloads w3
for w in w1 w2 w3; do
  log=$(mktemp)
  $sift serve --model "$model" --port $port --score-cache-mb 0 --log-level warning 2>"$log" &  # compute, not the cache
  pid=$!
  for _ in $(seq 1 600); do
    $sift rerank --server 127.0.0.1:$port --query q </dev/null >/dev/null 2>&1 && break
    sleep 0.2
  done
  echo "== through the server: sift load --workload $w =="
  $sift load --server 127.0.0.1:$port --workload $w --duration 3600
  kill -TERM $pid; wait $pid || true
  rm -f "$log"
done
