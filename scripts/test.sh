#!/usr/bin/env bash
# Runs every test of the workspace. Needs only the Rust toolchain and cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo nextest run --workspace --no-fail-fast "$@"
