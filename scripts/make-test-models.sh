#!/usr/bin/env bash
# Writes the models the tests and benchmarks use into .build-models/ (ignored by git):
#   qwen3-0.6b-seed0  make_model.py --preset 0.6b --seed 0 --outliers  (reference-scores-0.6b.json)
# Extra presets: scripts/make-test-models.sh 4b 8b; `seeds` adds qwen3-0.6b-seed1 and -seed2 (the
# fidelity benchmark's other models).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${SIFT_SHARED:-../shared}"
mkdir -p .build-models
# make_model.py needs numpy: the project's own Python environment has it.
python3() { "$(bash scripts/python-env.sh numpy)" "$@"; }
if [ ! -f .build-models/qwen3-0.6b-seed0/model.safetensors ]; then
  python3 "$shared/tools/make_model.py" --preset 0.6b --seed 0 --outliers .build-models/qwen3-0.6b-seed0.tmp
  mv .build-models/qwen3-0.6b-seed0.tmp .build-models/qwen3-0.6b-seed0
fi
for preset in "$@"; do
  if [ "$preset" = seeds ]; then
    for seed in 1 2; do
      out=".build-models/qwen3-0.6b-seed$seed"
      [ -f "$out/model.safetensors" ] && continue
      python3 "$shared/tools/make_model.py" --preset 0.6b --seed "$seed" --outliers "$out.tmp"
      mv "$out.tmp" "$out"
    done
    continue
  fi
  out=".build-models/qwen3-$preset"
  [ -f "$out/config.json" ] && [ -n "$(ls "$out"/*.safetensors 2>/dev/null)" ] && continue
  python3 "$shared/tools/make_model.py" --preset "$preset" --seed 0 "$out.tmp"
  mv "$out.tmp" "$out"
done
