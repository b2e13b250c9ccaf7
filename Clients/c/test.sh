#!/usr/bin/env bash
# Builds the C client and checks it against a real `sift serve` (tiny fixture model):
# logits printed by test_client must equal `sift score --precision int8`. (The JSON carries the
# shortest text that round-trips the float; it is read back as that float before printing, as the
# C client prints the float itself: a double read from the text can round differently.)
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
sift=${SIFT_BIN:-$root/.build/debug/sift}
tiny=${SIFT_TINY_MODEL:-$root/../shared/fixtures/tiny-qwen3}
make -s
. "$root/scripts/lib/sift-server.sh"
log=$(mktemp)
trap 'kill -TERM $server_pid 2>/dev/null || true; wait $server_pid 2>/dev/null || true; rm -f "$log"' EXIT
# --interactive-tokens 0: only a priority > 0 makes a call interactive, which the metrics count.
start_sift_server "$log" --model "$tiny" --model-alias "c-model=$(basename "$tiny")" --threads 2 \
  --interactive-tokens 0 --metrics-port 0
port=$server_port
metrics=$(grep -o 'metrics=http://[^ ]*' "$log" | head -1 | cut -d= -f2)
interactive_steps() {
  python3 -c 'import sys, urllib.request
for line in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines():
    if line.startswith("sift_engine_interactive_steps"): print(int(float(line.split()[-1])))' "$metrics"
}
got=$(build/test_client 127.0.0.1 "$port")
want=$(printf '%s\n' '{"text":"The capital of China is Beijing."}' '{"text":"Gravity pulls things down."}' '{"text":""}' |
  "$sift" score --model "$tiny" --precision int8 --query "What is the capital of China?" - |
  python3 -c 'import json,struct,sys; f32=lambda x: struct.unpack("f", struct.pack("f", x))[0]; [print("%d\t%.7g" % (r["index"], f32(r["logit"]))) for r in json.load(sys.stdin)["results"]]')
if [ "$got" != "$want" ]; then
  echo "C client logits differ from sift score:"; echo "$got"; echo "--"; echo "$want"; exit 1
fi
# sift_set_priority reaches the server: priority -1 leaves the call batch work, 5 makes it interactive.
before=$(interactive_steps)
build/test_client 127.0.0.1 "$port" -1
[ "$(interactive_steps)" = "$before" ] || { echo "a call sent with priority -1 was run as interactive"; exit 1; }
build/test_client 127.0.0.1 "$port" 5
[ "$(interactive_steps)" -gt "$before" ] || { echo "a call sent with priority 5 was not run as interactive (sift_set_priority lost?)"; exit 1; }
docs='Paris is in France.\nBananas are yellow.\n'
static_out=$(printf "$docs" | build/sift-rerank "127.0.0.1:$port" "capital of France?")
# Installed as another project would use it: make install PREFIX=…, then pkg-config, against the
# shared library (and the static one with --static).
prefix=$(mktemp -d)
trap 'kill -TERM $server_pid 2>/dev/null || true; wait $server_pid 2>/dev/null || true; rm -rf "$log" "$prefix"' EXIT
make -s install PREFIX="$prefix"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE sift_rerank.c $(pkg-config --cflags --libs sift-client) -Wl,-rpath,"$prefix/lib" -o "$prefix/shared-example"
# (ldd's output is read whole first: with pipefail, `ldd | grep -q` fails whenever grep exits on its
# match before ldd has written everything, and ldd dies of SIGPIPE.)
linked=$(ldd "$prefix/shared-example")
grep -q "libsiftclient.so.0 => $prefix/lib" <<<"$linked" || { echo "not linked to the installed shared library:"; echo "$linked"; exit 1; }
# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE sift_rerank.c $(pkg-config --static --cflags --libs sift-client | sed 's/-lsiftclient/-l:libsiftclient.a/') -o "$prefix/static-example"
for example in shared-example static-example; do
  out=$(printf "$docs" | "$prefix/$example" "127.0.0.1:$port" "capital of France?")
  [ "$out" = "$static_out" ] || { echo "$example printed something else:"; echo "$out"; echo "--"; echo "$static_out"; exit 1; }
done
# This README's program and link lines, as written (the port is the test server's).
readme_program="$prefix/app.c"
awk '/^```c$/ {on=1; next} /^```$/ {on=0} on' README.md | sed "s/7700/$port/" > "$readme_program"
while read -r line; do
  case "$line" in cc\ app.c*) ;; *) continue ;; esac
  (cd "$prefix" && eval "${line/-o app/-Wl,-rpath,$prefix/lib -o app}") || { echo "README link line failed: $line"; exit 1; }
  out=$(SIFT_API_KEY= "$prefix/app")
  [ "$(wc -l <<<"$out")" = 1 ] || { echo "the README's program printed: $out"; exit 1; }
done < <(awk '/^```sh$/ {on=1; next} /^```$/ {on=0} on' README.md)
echo "C client: scores match sift score; priority reaches the server; installed with make install, the shared and static libraries work through pkg-config"
