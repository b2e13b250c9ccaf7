#!/usr/bin/env bash
# Sets up and runs every test: Debian packages, test models, build, swift test; then the
# engine's concurrency tests again under ThreadSanitizer (own build folder).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/make-test-models.sh
# Debian 12's OpenBLAS falls back to slow generic kernels on CPUs it does not know; `sift`
# re-executes itself to fix that, the test runner cannot, so pick the core here (the CLI
# tests still compare scores under the generic and the fast core).
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512bw /proc/cpuinfo; then
  export OPENBLAS_CORETYPE=SkylakeX
fi
swift build --build-tests
swift test --skip-build
if [ "${SIFT_SKIP_TSAN:-0}" != 1 ]; then
  echo "== engine and planner tests under ThreadSanitizer =="
  swift test --scratch-path .build-tsan --sanitize=thread \
    --filter '\.(EngineTests|PlannerTests|PrefixCacheTests|KernelTests)/'
fi
