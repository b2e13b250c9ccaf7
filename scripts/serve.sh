#!/usr/bin/env bash
# One command from a fresh Debian 12 machine with Swift to a running server:
#   bash scripts/serve.sh [MODEL] [sift serve flags...]
# MODEL: a hub name (found in the Hugging Face cache, else downloaded), a model folder or a .sift
# file. Default: $SIFT_MODEL, else Qwen/Qwen3-Reranker-0.6B. Without network or cache, try the
# tiny fixture model (random weights: for the protocol, not relevance): ../shared/fixtures/tiny-qwen3
# Ports: RPC --port (7700), HTTP --http-port (8080), metrics --metrics-port (RPC port + 1), on
# --host (127.0.0.1); flags given here are used, and the lines printed say what is served.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product sift
model=${1:-${SIFT_MODEL:-Qwen/Qwen3-Reranker-0.6B}}
[ $# -gt 0 ] && shift
host=127.0.0.1 port=7700 http_port="" metrics_port=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  arg=${args[$i]} value=${args[$((i + 1))]:-}
  case "$arg" in
    --host=*) host=${arg#*=} ;; --host) host=$value ;;
    --port=*) port=${arg#*=} ;; --port) port=$value ;;
    --http-port=*) http_port=${arg#*=} ;; --http-port) http_port=$value ;;
    --metrics-port=*) metrics_port=${arg#*=} ;; --metrics-port) metrics_port=$value ;;
  esac
done
extra=()
[ -n "$http_port" ] || { http_port=8080; extra+=(--http-port "$http_port"); }
[ -n "$metrics_port" ] || { metrics_port=$((port + 1)); extra+=(--metrics-port "$metrics_port"); }
# A wildcard address is reached through loopback from this machine.
case "$host" in 0.0.0.0|::|"[::]") reach=127.0.0.1 ;; *) reach=$host ;; esac
cat >&2 <<MSG
Starting sift serve with $model on $host (Ctrl-C drains and stops):
  binary RPC  $host:$port          (docs/PROTOCOL.md)
  HTTP API    http://$host:$http_port/v2/rerank   (Cohere / Jina JSON; /rerank and /info: TEI's)
  metrics     http://$host:$metrics_port/metrics
First requests, from another shell, once the log says "serving":
  echo '{"text": "Paris is the capital of France."}' | .build/release/sift rerank --server $reach:$port --query "capital of France?"
  curl -s http://$reach:$http_port/v2/rerank -d '{"query": "capital of France?", "documents": ["Paris is the capital of France.", "Bananas are yellow."]}'
MSG
exec .build/release/sift serve --model "$model" "${extra[@]}" "$@"
