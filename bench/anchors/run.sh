#!/usr/bin/env bash
# Sift beside OpenVINO on W1, W3 and fidelity, in one run (compare.py says what runs, in what order).
# Usage: bash bench/anchors/run.sh HF_MODEL_FOLDER [compare.py flags, e.g. --sift-model M.sift]
# OpenVINO, NNCF and tokenizers come from PyPI into .build-anchors/ (ignored by git; no PyTorch);
# Sift is the release build (built if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:?usage: bash bench/anchors/run.sh HF_MODEL_FOLDER [compare.py flags]}"
venv=.build-anchors
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r bench/anchors/requirements.txt
[ -x .build/release/sift ] || swift build -c release --product sift
exec "$venv/bin/python" bench/anchors/compare.py --model "$model" --python "$venv/bin/python" "${@:2}"
