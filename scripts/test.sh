#!/usr/bin/env bash
# Runs every test of the workspace. Needs the Rust toolchain, cargo-nextest and Python 3; the
# Python client used by the emulator's compatibility test is installed into target/pyenv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/pyenv
if ! "$venv/bin/python" -c "import tailscale" 2>/dev/null; then
  mkdir -p target
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "tailscale==1.0.0"
fi
export TIDEGATE_PYTHON="$PWD/$venv/bin/python"

cargo nextest run --workspace --no-fail-fast "$@"
