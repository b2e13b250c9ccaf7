#!/usr/bin/env bash
# The drop-in test: third-party rerank clients from PyPI (pinned in Clients/third-party/
# requirements.txt, in a venv of their own, .build-venv-clients) unchanged against
# `sift serve --model DIR` with default flags, compared with `sift score --precision int8`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.build-venv-clients
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r Clients/third-party/requirements.txt
SIFT_BIN="${SIFT_BIN:-$PWD/.build/debug/sift}" "$venv/bin/python" -m pytest -q -p no:cacheprovider Clients/third-party
