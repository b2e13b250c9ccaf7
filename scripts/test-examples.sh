#!/usr/bin/env bash
# Builds Examples/RerankExample the way another project uses Sift: as a *versioned* dependency (a
# tagged clone of the committed HEAD — SwiftPM refuses unsafe build flags there), then runs both
# programs: score-locally must print exactly the logits of `sift score --precision int8` (the
# kernels give the same results however they are compiled), rerank-client must rank on a real
# server as the scores say. Build folder: .build-examples (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
sift=${SIFT_BIN:-$root/.build/debug/sift}
tiny=${SIFT_TINY_MODEL:-$root/../shared/fixtures/tiny-qwen3}
work=$root/.build-examples/work
rm -rf "$work"
mkdir -p "$work"
git clone --quiet "$root" "$work/sift"
git -C "$work/sift" tag 0.0.0-example
cp -R Examples/RerankExample "$work/example"
rm -rf "$work/example/.build"
sed -i "s|.package(name: \"Sift\", path: \"../..\")|.package(url: \"$work/sift\", exact: \"0.0.0-example\")|" "$work/example/Package.swift"
grep -q 'exact: "0.0.0-example"' "$work/example/Package.swift" || { echo "could not point the example at the tagged clone"; exit 1; }
# The tag names a new commit each run: forget the clone SwiftPM cached under the same tag (and
# the programs built from it), so the example is built against this commit or not at all.
rm -rf "$root/.build-examples/build/checkouts/sift" "$root"/.build-examples/build/repositories/sift-* \
  "$root/.build-examples/build/workspace-state.json"
bin=$root/.build-examples/build/debug
rm -f "$bin/score-locally" "$bin/rerank-client"
swift build --package-path "$work/example" --scratch-path "$root/.build-examples/build" 2>&1 |
  grep -E "error|warning: .*(unsafe|RerankExample)|Build complete" || true
[ -x "$bin/score-locally" ] && [ -x "$bin/rerank-client" ] || { echo "the example did not build"; exit 1; }

query="What is the capital of China?"
docs=("The capital of China is Beijing." "Gravity pulls things down." "Paris is the capital of France.")
local_logits=$("$bin/score-locally" "$tiny" "$query" "${docs[@]}" | cut -f2)
want=$(printf '{"text": "%s"}\n' "${docs[@]}" | "$sift" score --model "$tiny" --precision int8 --query "$query" - |
  python3 -c 'import json,sys; [print(repr(float(r["logit"]))) for r in json.load(sys.stdin)["results"]]')
got=$(printf '%s\n' $local_logits | python3 -c 'import sys; [print(repr(float(l))) for l in sys.stdin if l.strip()]')
[ "$got" = "$want" ] || { echo "score-locally differs from sift score:"; echo "$got"; echo "--"; echo "$want"; exit 1; }

. scripts/lib/sift-server.sh
log=$(mktemp)
trap 'kill -TERM $server_pid 2>/dev/null || true; wait $server_pid 2>/dev/null || true; rm -f "$log"' EXIT
start_sift_server "$log" --model "$tiny" --threads 2
ranked=$("$bin/rerank-client" "127.0.0.1:$server_port" "$query" "${docs[@]}" | cut -f1 | tr '\n' ' ')
expected=$(paste <(seq 0 $((${#docs[@]} - 1))) <(printf '%s\n' $local_logits) | sort -k2,2gr -k1,1n | cut -f1 | tr '\n' ' ')
[ "$ranked" = "$expected" ] || { echo "rerank-client ranked $ranked, the scores say $expected"; exit 1; }
echo "examples: built as a versioned dependency; score-locally equals sift score, rerank-client ranks as the scores say"
