#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts what the tests need (each
# scripts/services/NAME.sh defines NAME_start and NAME_stop), runs clippy and every test, and
# stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/deploybot/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

started=()
cleanup() {
  local code=$?
  for name in "${started[@]}"; do "${name}_stop" || true; done
  exit $code
}
trap cleanup EXIT INT TERM

for file in scripts/services/*.sh; do
  name=$(basename "$file" .sh)
  # shellcheck disable=SC1090
  source "$file"
  "${name}_start"
  started=("$name" "${started[@]}")
done

echo "== clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
