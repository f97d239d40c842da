#!/usr/bin/env python3
"""Puts several builds' kernel timelines side by side (session 45): the per-kernel tables
that tools/gpu/timeline.py writes (prefill_timeline.sh's tl-NAME-SHAPE.md, one per
variant), read back and printed as one table of each kernel's critical-path time, summed
over its launches and as the median launch, with each build's change against the first.

A whole-prefill A/B moves by ±0.1 ms on the 7B between rounds and machines; a kernel's
time in place moves by far less, so a change to one kernel reads here first (session 45:
the prefill attention 27.2 -> 22.6 µs a layer while the A/B's rounds overlapped).
Kernels are matched by the table's first column (module, shape and kernel names); a kernel
missing from a build shows "-".
Usage: timeline_compare.py A.md B.md [...] [--top N] (rows by the first build's sum).
"""
import argparse
import os
import re
import sys


def read(path):
    """The per-kernel table: {kernel: (launches, sum µs, median µs)}, from the table whose
    header names `critical-path µs (sum)`."""
    rows, cols = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cols is None:
                if "critical-path µs (sum)" in cells:
                    cols = (cells.index("launches"), cells.index("critical-path µs (sum)"), cells.index("(median)"))
                continue
            if not line.startswith("|"):
                break  # the table's end
            if set(cells[0]) <= set("-"):
                continue  # its separator row
            n, s, m = cols
            rows[cells[0]] = (int(cells[n]), float(cells[s]), float(cells[m]))
    if cols is None:
        sys.exit(f"{path}: no per-kernel table (timeline.py's `critical-path µs (sum)` header)")
    return rows


def name_of(path):
    """tl-NAME-SHAPE.md -> NAME (the variant), else the file's stem."""
    stem = os.path.basename(path).removesuffix(".md")
    m = re.match(r"tl-(.+?)-(llama|smollm|mistral|qwen)", stem)
    return m.group(1) if m else stem


def delta(v, base):
    return f"{v:.2f} ({v - base:+.2f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="+")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    if len(a.tables) < 2:
        sys.exit("give at least two tables")
    builds = [(name_of(p), read(p)) for p in a.tables]
    base = builds[0][1]
    kernels = sorted(set().union(*(r.keys() for _, r in builds)), key=lambda k: -base.get(k, (0, 0.0, 0.0))[1])
    print("| kernel | " + " | ".join(f"{n} sum µs" for n, _ in builds) + " | " + " | ".join(f"{n} median µs" for n, _ in builds) + " |")
    print("|---" * (1 + 2 * len(builds)) + "|")
    totals = [0.0] * len(builds)
    for k in kernels[: a.top]:
        sums, meds = [], []
        for i, (_, r) in enumerate(builds):
            if k not in r:
                sums.append("-")
                meds.append("-")
                continue
            _, s, m = r[k]
            totals[i] += s
            b = base.get(k)
            sums.append(f"{s:.1f}" if i == 0 or b is None else delta(s, b[1]))
            meds.append(f"{m:.2f}" if i == 0 or b is None else delta(m, b[2]))
        print(f"| {k} | " + " | ".join(sums) + " | " + " | ".join(meds) + " |")
    print("| (these rows) | " + " | ".join(f"{t:.1f}" if i == 0 else delta(t, totals[0]) for i, t in enumerate(totals)) + " |" + " |" * len(builds))


if __name__ == "__main__":
    main()
