#!/usr/bin/env bash
# Sets up and runs every test: Debian packages, the source checks, test models, build, swift test, promtool checks of
# deploy/, the Python and C clients and third-party rerank clients from PyPI against a real server, the example package built as a
# versioned dependency, the haproxy scale-out test, brief fuzzing, soak and overload
# runs; then the engine's and the server's concurrency tests again under ThreadSanitizer (own
# build folder).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
# Source checks first (seconds): the committed protobuf-c code is what Protos/sift.proto
# generates, and the kernels build for aarch64 too (x86 SIMD only on x86, warnings as errors).
bash scripts/generate-protos.sh --check
bash scripts/cross-compile-kernels.sh
bash scripts/make-test-models.sh
# Debian 12's OpenBLAS falls back to slow generic kernels on CPUs it does not know; `sift`
# re-executes itself to fix that, the test runner cannot, so pick the core here (the CLI
# tests still compare scores under the generic and the fast core).
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512bw /proc/cpuinfo; then
  export OPENBLAS_CORETYPE=SkylakeX
fi
swift build --build-tests
swift test --skip-build
echo "== deploy/: alert rules checked and unit-tested with promtool, dashboard JSON parsed =="
promtool check rules deploy/prometheus/sift-alerts.yml
(cd deploy/prometheus && promtool test rules sift-alerts.test.yml)
python3 -m json.tool deploy/grafana/sift-dashboard.json >/dev/null
echo "== Python client: wheel built, installed into the project's venv, tested against a real server =="
py=$(bash scripts/python-env.sh pytest)
rm -rf .build-venv/wheels
"$py" -m pip wheel --quiet --disable-pip-version-check --no-deps -w .build-venv/wheels ./Clients/python
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall .build-venv/wheels/sift_client-*.whl
"$py" -m pytest -q -p no:cacheprovider Clients/python/tests
echo "== third-party clients (cohere, langchain-cohere, langchain-community's JinaRerank, rerankers, huggingface_hub) unchanged against sift serve =="
bash scripts/test-third-party.sh
echo "== C client against a real server =="
bash Clients/c/test.sh
echo "== Examples/: Sift as a versioned dependency of another package (SiftClient, SiftEngine) =="
bash scripts/test-examples.sh
echo "== scale-out: 3 replicas behind haproxy, one stopped mid-run; affinity vs round robin =="
bash scripts/test-scaleout.sh
echo "== fuzzing: every parser of outside bytes briefly (libFuzzer + AddressSanitizer, own build folder) =="
bash scripts/fuzz.sh "${SIFT_FUZZ_SECONDS:-20}"
echo "== soak: hostile clients, and load at 65% of the capacity left beside them; RSS, fds and gauges checked =="
SIFT_BIN=.build/debug/sift bash scripts/soak.sh "${SIFT_SOAK_SECONDS:-120}"
echo "== overload: twice the capacity; the excess refused quickly, admitted calls bounded =="
# A debug build refuses in tens of milliseconds, not the release build's few: a looser bound here.
SIFT_BIN=.build/debug/sift bash scripts/overload.sh 30 ../shared/fixtures/tiny-qwen3 --max-refusal-ms 500
if [ "${SIFT_SKIP_TSAN:-0}" != 1 ]; then
  echo "== engine, server and client concurrency tests under ThreadSanitizer =="
  swift test --scratch-path .build-tsan --sanitize=thread \
    --filter '\.(EngineTests|EngineLimitsTests|PlannerTests|PrefixCacheTests|ScoreCacheTests|KernelTests|WorkerPoolTests|ServerTests|ClientTests|HTTPAPITests|HostileClientTests|HTTPLimitsTests|HandlerTests)/'
fi
