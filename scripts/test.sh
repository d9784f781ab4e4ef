#!/usr/bin/env bash
# The whole test suite on a fresh machine: starts what the tests need (PostgreSQL), runs clippy
# and every test, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/deploybot/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cleanup() {
  local code=$?
  if declare -F pg_stop >/dev/null; then pg_stop; fi
  exit $code
}
trap cleanup EXIT INT TERM

# shellcheck source=scripts/pg.sh
source scripts/pg.sh

echo "== clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
