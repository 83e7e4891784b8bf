#!/usr/bin/env bash
# Runs every test of the workspace. Needs the Rust toolchain, cargo-nextest, Python 3 and the
# machine's PostgreSQL; the Python client used by the emulator's compatibility test is
# installed into target/pyenv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/pyenv
if ! "$venv/bin/python" -c "import tailscale, aiosmtpd" 2>/dev/null; then
  mkdir -p target
  python3 -m venv "$venv"
  # The PyPI `tailscale` client (the emulator's compatibility test) and aiosmtpd (a real SMTP
  # server for the e-mail tests).
  "$venv/bin/pip" install --quiet --disable-pip-version-check "tailscale==1.0.0" "aiosmtpd==1.4.6"
fi
export TIDEGATE_PYTHON="$PWD/$venv/bin/python"
# A real OpenID Provider (oidc-provider from npm) for the web UI's sign-in test.
if [ ! -d tests/oidc/node_modules/oidc-provider ]; then
  (cd tests/oidc && npm ci --no-audit --no-fund --silent)
fi
# axe-core (npm), injected by the browser suite into every page it checks.
if [ ! -f tests/browser/node_modules/axe-core/axe.min.js ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
# PostgreSQL for the store's conformance suite (the machine runs one with trust auth).
export TIDEGATE_TEST_POSTGRES_URL="${TIDEGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

cargo nextest run --workspace --no-fail-fast "$@"
