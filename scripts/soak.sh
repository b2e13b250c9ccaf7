#!/usr/bin/env bash
# Soak and fault run: hostile clients (garbage, oversized frames, slow senders, mid-call
# disconnects, unauthenticated frames, HTTP garbage) and open-loop load at 65% of the capacity
# measured with them running, sampling RSS, open fds, /metrics gauges and CPU use. Fails on a
# failed well-behaved call, growth after warm-up, a gauge not back to 0, or the server dying.
# Details: scripts/stress.py.
# Usage: scripts/soak.sh [SECONDS] [MODEL]   (default 120 s on the tiny fixture model)
# SIFT_BIN picks the binary (default: release build if present, else debug).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
model="${2:-../shared/fixtures/tiny-qwen3}"
bin="${SIFT_BIN:-}"
if [ -z "$bin" ]; then
  if [ -x .build/release/sift ]; then bin=.build/release/sift; else swift build --product sift >/dev/null; bin=.build/debug/sift; fi
fi
exec python3 scripts/stress.py soak --sift "$bin" --model "$model" --duration "$seconds" "${@:3}"
