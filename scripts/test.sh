#!/usr/bin/env bash
# Run every test of ferroswitch: formatting, lints, unit, property and
# integration tests, and the README demo in check mode.
# Usage (as root on Debian 12): ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

# One build from scratch (CI, a fresh machine): incremental state would only
# add ~9 GB of target/ and time. A developer's own setting wins.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# A full disk shows up as a linker "Bus error" deep in the build; say it first.
avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ "${avail_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "test: only $((avail_kb / 1024)) MiB free on $(df -P . | awk 'NR==2 {print $6}');" \
       "a cold build and the tests need about 8 GiB" >&2
fi

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
