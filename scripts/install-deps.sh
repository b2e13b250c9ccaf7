#!/usr/bin/env bash
# Installs the Debian packages Sift builds against (run as root, or with sudo available).
# --test: also what the tests use (haproxy for the scale-out test, openssl and curl for TLS,
# python3-venv for the tests' own Python environment, prometheus for promtool, aarch64 headers
# for the kernels' cross-compile).
set -euo pipefail
packages=(libopenblas-dev libprotobuf-c-dev protobuf-c-compiler pkg-config)
[ "${1:-}" = --test ] && packages+=(haproxy openssl curl python3-venv prometheus libc6-dev-arm64-cross)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y "${missing[@]}"
fi
