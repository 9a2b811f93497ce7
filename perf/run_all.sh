#!/bin/sh
# Run every perf bench pinned to CPU 1 (BENCH.md: the polling thread alone
# on CPU 1) and print the docs/perf.md tables. Takes ~3 minutes.
set -e
cd "$(dirname "$0")/.."
date -u
lscpu | grep -E "Model name|^CPU\(s\)"
for b in extract cache xlate pipeline; do
    taskset -c 1 cargo bench -q -p perf --bench "$b" 2>&1 | grep -E "subtables probed" || true
done
python3 perf/report.py target/criterion
taskset -c 1 cargo bench -q -p perf --bench cycles
