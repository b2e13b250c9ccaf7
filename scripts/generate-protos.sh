#!/usr/bin/env bash
# Regenerates the committed protobuf-c code from Protos/sift.proto (Debian: protobuf-c-compiler).
# --check: fail if the committed code differs from what protoc-c generates (CI runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
protoc-c --c_out="$out" -IProtos Protos/sift.proto
# The header lives in the target's public include folder; the source includes it by name.
if [ "${1:-}" = --check ]; then
  if ! cmp -s "$out/sift.pb-c.c" Sources/SiftProto/sift.pb-c.c || ! cmp -s "$out/sift.pb-c.h" Sources/SiftProto/include/sift.pb-c.h; then
    echo "Sources/SiftProto is stale: run scripts/generate-protos.sh and commit the result" >&2
    exit 1
  fi
  echo "generated protobuf-c code is up to date"
else
  cp "$out/sift.pb-c.c" Sources/SiftProto/sift.pb-c.c
  cp "$out/sift.pb-c.h" Sources/SiftProto/include/sift.pb-c.h
  echo "wrote Sources/SiftProto/sift.pb-c.{c,h}"
fi
