#!/usr/bin/env bash
# Prints the path of the project's own Python: a virtual environment in .build-venv/ (ignored by
# git), so nothing is ever installed into the system's Python (Debian 12 refuses that anyway:
# "externally-managed-environment"). Creates it on first use and installs into it the PyPI
# packages named as arguments that it lacks, e.g.: py=$(bash scripts/python-env.sh numpy pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.build-venv
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" >&2; then
    rm -rf "$venv"
    echo "python3 -m venv failed; on Debian: apt-get install python3-venv (scripts/install-deps.sh --test does)" >&2
    exit 1
  fi
fi
missing=()
for package in "$@"; do
  "$venv/bin/python" -c "import $package" 2>/dev/null || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}" >&2
fi
echo "$PWD/$venv/bin/python"
