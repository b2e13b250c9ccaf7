#!/usr/bin/env bash
# One command from a fresh Debian 12 machine with Swift to a running server:
#   bash scripts/serve.sh [MODEL] [sift serve flags...]
# MODEL: a Hugging Face Qwen3-Reranker folder or a .sift file (default: $SIFT_MODEL, else the tiny
# fixture model, whose weights are random: fine for trying the protocol, not for relevance).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product sift
model=${1:-${SIFT_MODEL:-../shared/fixtures/tiny-qwen3}}
[ $# -gt 0 ] && shift
port=7700
for ((i = 1; i <= $#; i++)); do [ "${!i}" = --port ] && { j=$((i + 1)); port=${!j}; }; done
cat >&2 <<MSG
Starting sift serve on 127.0.0.1:$port with $model (Ctrl-C drains and stops).
First request, from another shell:
  echo '{"text": "Paris is the capital of France."}' | .build/release/sift rerank --server 127.0.0.1:$port --query "capital of France?"
MSG
exec .build/release/sift serve --model "$model" --metrics-port $((port + 1)) "$@"
