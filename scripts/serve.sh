#!/usr/bin/env bash
# One command from a fresh Debian 12 machine with Swift to a running server:
#   bash scripts/serve.sh [MODEL] [sift serve flags...]
# MODEL: a hub name (found in the Hugging Face cache, else downloaded), a model folder or a .sift
# file. Default: $SIFT_MODEL, else Qwen/Qwen3-Reranker-0.6B. Without network or cache, try the
# tiny fixture model (random weights: for the protocol, not relevance): ../shared/fixtures/tiny-qwen3
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product sift
model=${1:-${SIFT_MODEL:-Qwen/Qwen3-Reranker-0.6B}}
[ $# -gt 0 ] && shift
port=7700
for ((i = 1; i <= $#; i++)); do [ "${!i}" = --port ] && { j=$((i + 1)); port=${!j}; }; done
cat >&2 <<MSG
Starting sift serve with $model (Ctrl-C drains and stops):
  binary RPC  127.0.0.1:$port          (docs/PROTOCOL.md)
  HTTP API    http://127.0.0.1:$((port + 380))/v2/rerank   (Cohere / Jina JSON)
  metrics     http://127.0.0.1:$((port + 1))/metrics
First requests, from another shell, once the log says "serving":
  echo '{"text": "Paris is the capital of France."}' | .build/release/sift rerank --server 127.0.0.1:$port --query "capital of France?"
  curl -s http://127.0.0.1:$((port + 380))/v2/rerank -d '{"query": "capital of France?", "documents": ["Paris is the capital of France.", "Bananas are yellow."]}'
MSG
exec .build/release/sift serve --model "$model" --metrics-port $((port + 1)) --http-port $((port + 380)) "$@"
