#!/usr/bin/env bash
# Builds the libFuzzer targets (Sources/SiftFuzz) with AddressSanitizer and runs each for a set
# time, starting from the seed corpora (written by `sift-fuzz seeds`) plus every regression
# input. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Targets: frames http safetensors sift hub tokenizer tokenizer-file (default: all). A crash stops the run,
# keeps the input under .build-fuzz/crashes/ and exits 1: add it to Tests/FuzzRegressions/TARGET/
# (the test command replays that folder) and fix the bug.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames http safetensors sift hub tokenizer tokenizer-file)

echo "== building sift-fuzz with libFuzzer and AddressSanitizer (.build-fuzz) =="
swift build --product sift-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DSIFT_FUZZ \
  -Xcc -fsanitize=fuzzer-no-link,address 2>&1 | grep -E "error|warning: unre|Compiling sift|Build complete" || true
fuzzer=".build-fuzz/debug/sift-fuzz"
[ -x "$fuzzer" ] || { echo "fuzz build failed" >&2; exit 1; }

# Seeds come from a normal build of the same target (it has a main).
swift build --product sift-fuzz >/dev/null
mkdir -p .build-fuzz/seeds .build-fuzz/crashes
.build/debug/sift-fuzz seeds .build-fuzz/seeds >/dev/null

status=0
for t in "${targets[@]}"; do
  corpus=".build-fuzz/corpus/$t"
  mkdir -p "$corpus"
  dirs=("$corpus" ".build-fuzz/seeds/$t")
  [ -d "Tests/FuzzRegressions/$t" ] && dirs+=("Tests/FuzzRegressions/$t")
  max_len=16384
  case "$t" in frames|http) max_len=65536 ;; esac
  log=".build-fuzz/$t.log"
  echo "== $t: ${seconds}s =="
  if SWIFT_BACKTRACE=enable=no SIFT_FUZZ_TARGET="$t" TMPDIR=/dev/shm "$fuzzer" -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=3072 \
      -timeout=20 -print_final_stats=1 -artifact_prefix=".build-fuzz/crashes/$t-" "${dirs[@]}" >"$log" 2>&1; then
    execs=$(grep -m1 "stat::number_of_executed_units" "$log" | awk '{print $2}')
    cov=$(grep -E "^#[0-9]+.*(DONE|pulse|NEW)" "$log" | tail -1 | grep -oE "cov: [0-9]+" || true)
    echo "$t: ${execs:-?} executions in ${seconds}s, ${cov:-cov ?}, no crash"
  else
    echo "$t: CRASH — see $log and .build-fuzz/crashes/" >&2
    grep -E "ERROR|Fatal error|SUMMARY|artifact" "$log" | head -5 >&2
    status=1
  fi
done
exit $status
