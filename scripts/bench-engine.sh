#!/usr/bin/env bash
# Issue-4 benchmark: the engine workloads W1–W3 on the 0.6B shape, and a sweep of
# --max-batch-tokens for W1 (how the default was chosen). Release build; ~30 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product sift >/dev/null
B=.build/release/sift
bash scripts/make-test-models.sh
M=.build-models/qwen3-0.6b-seed0.sift
[ -f $M ] || $B convert --model .build-models/qwen3-0.6b-seed0 --out $M 2>/dev/null
for t in 256 512 1024 2048; do $B bench engine --model $M --workloads w1 --max-batch-tokens $t | grep -E "^W1"; done
$B bench engine --model $M
