#!/usr/bin/env bash
# The fidelity benchmark (docs/QUANTIZATION.md): three 0.6B-shaped models (make_model.py --seed 0,
# 1, 2 --outliers), ~1,000 pairs in three length buckets, every mode against the fp32 reference,
# and the gate of the default (int8+int8) against int8 with a scale per row and fp32 attention
# (int8row). It takes about four hours on 2 cores; every query's logits are kept in
# .build-models/fidelity-cache as they come, so a stopped run resumes — the modes' only with the
# same build: SIFT_BIN=a copy of the binary that started the run (then nothing is built).
# Usage: [SIFT_BIN=path] scripts/bench-fidelity.sh [sift bench fidelity flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/make-test-models.sh seeds >&2
if [ -z "${SIFT_BIN:-}" ]; then swift build -c release --product sift >&2; fi
m=.build-models/qwen3-0.6b-seed
exec "${SIFT_BIN:-.build/release/sift}" bench fidelity --models "${m}0,${m}1,${m}2" \
  --reference-scores ../shared/fixtures/reference-scores-0.6b.json "$@"
