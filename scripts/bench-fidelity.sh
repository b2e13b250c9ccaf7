#!/usr/bin/env bash
# The fidelity benchmark (docs/QUANTIZATION.md): three 0.6B-shaped models (make_model.py --seed 0,
# 1, 2 --outliers), ~1,000 pairs in three length buckets, every mode against the fp32 reference,
# and the gate of the default (int8+bf16) against int8 with fp32 attention. The fp32 reference
# (the slow part: about an hour on 2 cores) is cached in .build-models/fidelity-cache.
# Usage: scripts/bench-fidelity.sh [sift bench fidelity flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/make-test-models.sh seeds >&2
swift build -c release --product sift >&2
m=.build-models/qwen3-0.6b-seed
exec .build/release/sift bench fidelity --models "${m}0,${m}1,${m}2" \
  --reference-scores ../shared/fixtures/reference-scores-0.6b.json "$@"
