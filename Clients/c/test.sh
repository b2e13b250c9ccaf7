#!/usr/bin/env bash
# Builds the C client and checks it against a real `sift serve` (tiny fixture model):
# logits printed by test_client must equal `sift score --precision int8`.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
sift=${SIFT_BIN:-$root/.build/debug/sift}
tiny=${SIFT_TINY_MODEL:-$root/../shared/fixtures/tiny-qwen3}
make -s
log=$(mktemp)
"$sift" serve --model "$tiny" --port 0 --threads 2 2>"$log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 600); do grep -q "model loaded; serving" "$log" && break; sleep 0.1; done
port=$(grep -o 'address=127.0.0.1:[0-9]*' "$log" | head -1 | cut -d: -f2)
[ -n "$port" ] || { cat "$log"; exit 1; }
got=$(build/test_client 127.0.0.1 "$port")
want=$(printf '%s\n' '{"text":"The capital of China is Beijing."}' '{"text":"Gravity pulls things down."}' '{"text":""}' |
  "$sift" score --model "$tiny" --precision int8 --query "What is the capital of China?" - |
  python3 -c 'import json,sys; [print("%d\t%.7g" % (r["index"], r["logit"])) for r in json.load(sys.stdin)["results"]]')
if [ "$got" != "$want" ]; then
  echo "C client logits differ from sift score:"; echo "$got"; echo "--"; echo "$want"; exit 1
fi
printf 'Paris is in France.\nBananas are yellow.\n' | build/sift-rerank "127.0.0.1:$port" "capital of France?" >/dev/null
echo "C client: scores match sift score; example CLI works"
