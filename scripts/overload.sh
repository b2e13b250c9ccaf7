#!/usr/bin/env bash
# Overload run: open-loop load at twice the measured capacity. Admitted calls' p99 stays
# bounded, the excess is refused with RESOURCE_EXHAUSTED within milliseconds, memory stays flat.
# Usage: scripts/overload.sh [SECONDS] [MODEL]   (default 60 s on the tiny fixture model)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
model="${2:-../shared/fixtures/tiny-qwen3}"
bin="${SIFT_BIN:-}"
if [ -z "$bin" ]; then
  if [ -x .build/release/sift ]; then bin=.build/release/sift; else swift build --product sift >/dev/null; bin=.build/debug/sift; fi
fi
# A small queue (16k tokens, ~15 calls of 8 documents) keeps the admitted calls' wait short
# and makes the refusals start early.
exec python3 scripts/stress.py overload --sift "$bin" --model "$model" --duration "$seconds" \
  --server-arg=--max-queued-tokens --server-arg=16384 "${@:3}"
