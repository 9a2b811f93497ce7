#!/usr/bin/env bash
# Run every test of ferroswitch: formatting, lints, unit, property and
# integration tests, and the README demo in check mode.
# Usage (as root on Debian 12): ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo build --bins
cargo test --workspace
echo "== demo (check mode)"
DEMO_CHECK=1 ./scripts/demo.sh >/dev/null
echo "demo: ok"
