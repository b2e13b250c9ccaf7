#!/usr/bin/env bash
# Sets up and runs every test: Debian packages, test models, build, swift test.
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
