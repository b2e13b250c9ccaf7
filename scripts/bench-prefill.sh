#!/usr/bin/env bash
# Issue-3 benchmark table: prefill tokens/s of the 0.6B, 4B and 8B shapes, fp32 and int8, on 1
# and 2 threads, with peak RSS; plus the kernel GOPS table. Release build; models from
# make_model.py (random weights cost exactly what real ones do). Takes ~15 minutes.
#   bash scripts/bench-prefill.sh [presets...]     (default: 0.6b 4b 8b)
set -euo pipefail
cd "$(dirname "$0")/.."
presets=("${@:-0.6b 4b 8b}")
[ $# -eq 0 ] && presets=(0.6b 4b 8b)
swift build -c release --product sift >/dev/null
B=.build/release/sift
bash scripts/make-test-models.sh $(printf '%s\n' "${presets[@]}" | grep -v '^0.6b$' || true)
$B bench kernels --tokens 16,64,256,512,2048
for p in "${presets[@]}"; do
  dir=.build-models/qwen3-$p; [ "$p" = 0.6b ] && dir=.build-models/qwen3-0.6b-seed0
  [ -f "$dir.sift" ] || $B convert --model "$dir" --out "$dir.sift" 2>/dev/null
  for t in 1 2; do $B bench prefill --model "$dir.sift" --threads $t --sequences 2; done
  if [ "$p" != 8b ]; then   # 8B fp32 weights (32 GB) do not fit in 24 GiB
    for t in 1 2; do $B bench prefill --model "$dir" --precision fp32 --threads $t --sequences 2; done
  fi
done
