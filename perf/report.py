#!/usr/bin/env python3
"""Summarise criterion results as docs/perf.md tables.

Reads target/criterion/<group>/.../new/{benchmark,sample}.json and prints, per
benchmark, the median and min-max of the per-element time over criterion's
samples (each sample's total time / its iterations / the bench's
Throughput::Elements), so batch benches read per packet.

usage: python3 perf/report.py [target/criterion] [group ...]
"""
import json
import os
import statistics
import sys


def fmt(ns):
    return f"{ns/1000:.2f} µs" if ns >= 1000 else f"{ns:.1f} ns"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    groups = set(sys.argv[2:])
    rows = []
    for dirpath, _dirs, files in os.walk(root):
        if not dirpath.endswith(os.sep + "new") or "sample.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            b = json.load(f)
        if groups and b["group_id"] not in groups:
            continue
        with open(os.path.join(dirpath, "sample.json")) as f:
            s = json.load(f)
        elems = (b.get("throughput") or {}).get("Elements", 1)
        per = [t / i / elems for t, i in zip(s["times"], s["iters"])]
        rows.append((b["full_id"], statistics.median(per), min(per), max(per)))
    rows.sort()
    print("| bench | median / element | min - max |")
    print("|---|---|---|")
    for name, med, lo, hi in rows:
        print(f"| `{name}` | {fmt(med)} | {fmt(lo)} - {fmt(hi)} |")


if __name__ == "__main__":
    main()
