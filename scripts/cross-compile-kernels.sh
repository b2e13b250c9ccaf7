#!/usr/bin/env bash
# Compiles the C kernels for aarch64 (Debian's libc6-dev-arm64-cross for the headers, the Swift
# toolchain's clang), with the flags the package uses and warnings as errors: x86 SIMD code is
# compiled only on x86, so on other CPUs the kernels build with their portable twins.
set -euo pipefail
cd "$(dirname "$0")/.."
clang="${CLANG:-$(command -v clang || echo "$(dirname "$(command -v swift)")/clang")}"
sysroot=/usr/aarch64-linux-gnu
[ -d "$sysroot/include" ] || { echo "cross-compile-kernels: $sysroot/include missing: apt-get install libc6-dev-arm64-cross" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for f in Sources/CSiftKernels/*.c; do
  "$clang" --target=aarch64-linux-gnu --sysroot="$sysroot" -O3 -fno-math-errno -Wall -Werror \
    -ISources/CSiftKernels/include -c "$f" -o "$out/$(basename "$f").o"
done
echo "cross-compile-kernels: $(ls "$out" | wc -l) kernel files compiled for aarch64"
