#!/usr/bin/env bash
# int8 attention (the default with int8) beside bf16 and fp32 attention, alternated in one run on
# the 0.6B shape (docs/PERFORMANCE.md): the kernels against their units' peaks, prefill of 512
# tokens with the machine's limit, W1 and W3, and with --32k one 32k-token pair each (about 10
# minutes each on 2 cores). MODES="int8 bf16" measures only those.
# Usage: [MODES="int8 bf16 fp32"] scripts/bench-attention.sh [--32k]
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product sift >/dev/null
B=.build/release/sift
modes="${MODES:-int8 bf16 fp32}"
bash scripts/make-test-models.sh >&2
M=.build-models/qwen3-0.6b-seed0.sift
[ -f $M ] || $B convert --model .build-models/qwen3-0.6b-seed0 --out $M 2>/dev/null
$B bench kernels --tokens 512 --attention-contexts 512,4096,16384
for round in 1 2; do
  for a in $modes; do $B bench prefill --model $M --tokens 512 --sequences 3 --attention $a; done
done
for a in $modes; do $B bench engine --model $M --workloads w1,w3 --attention $a; done
if [ "${1:-}" = --32k ]; then
  for a in $modes; do $B bench prefill --model $M --tokens 32768 --chunk 512 --sequences 1 --no-warm-up --attention $a; done
fi
