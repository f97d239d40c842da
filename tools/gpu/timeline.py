#!/usr/bin/env python3
"""Reads a kernel timeline (`greta bench --timeline FILE`, with kernels built by `cargo
xtask build-kernels --timeline`: crates/greta-kernels/src/timeline.rs) and prints the
launches on the critical path.

Every block that waits for the kernel ahead (g_wait_previous) stamps when it reached the
wait (arrive) and when the wait let it go (release), in %globaltimer ns. All blocks of a
launch pass their wait after every block of the launch ahead has finished, so sorting by
release time puts launches in order; a launch ends where a block index repeats or the
kernel (module, grid, block) changes. For each launch:
  gap      its first release after the previous launch's first release: the previous
           kernel's time on the critical path (its work after its wait, its drain, and
           the release's latency);
  early    how long before its first release its first block arrived (resident ahead);
  late     blocks that arrived after the first release (not resident in time), and the
           last arrival after the first release.
Kernels that never wait (the first of a pass) do not appear. The stamps slow the run
(SmolLM2's decode ~10 %): compare timelines with each other, not with plain builds.
Launches are named by module and shape (blocks x threads), and by the kernels of that
module greta bench launched in that shape where FILE.kernels.csv (written beside the
timeline since session 27) is there.
Usage: timeline.py FILE.csv [--launches N]
"""
import argparse
import csv
import statistics
from collections import Counter, defaultdict


def read(path):
    with open(path, newline="") as f:
        return [dict(mod=r["module"], seq=int(r["seq"]), sm=int(r["sm"]), block=int(r["block"]),
                     grid=int(r["grid"]), threads=int(r["threads"]), arrive=int(r["arrive_ns"]),
                     release=int(r["release_ns"]), cycles=int(r["cycles"]))
                for r in csv.DictReader(f)]


# A module's kernels by name prefix (kernels/*.hip); the rest are ops.hip's.
PREFIX = {"gemm": ("gemm",), "gemv": ("gemv",), "attention": ("attn",), "fallback_gemm": ("gemm",),
          "fallback_attention": ("attn",)}


def kernel_names(path):
    """(blocks, threads) -> kernel names, from the FILE.kernels.csv greta bench writes beside
    the timeline (GpuKernels::launched_shapes); {} where there is none."""
    names = defaultdict(set)
    try:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                names[(int(r["blocks"]), int(r["threads"]))].add(r["kernel"])
    except FileNotFoundError:
        pass
    return names


def label(names, mod, grid, threads):
    """The launch's name: module and shape, and the kernels of that module launched so."""
    cands = names.get((grid, threads), set())
    others = {p for m, ps in PREFIX.items() if m != mod for p in ps}
    own = PREFIX.get(mod)
    fit = sorted(n for n in cands if (n.startswith(own) if own else not n.startswith(tuple(others))))
    return "%s %dx%d%s" % (mod, grid, threads, " = " + " / ".join(fit) if fit else "")


def launches(recs):
    recs.sort(key=lambda r: (r["release"], r["seq"]))
    out, cur, seen = [], [], set()
    for r in recs:
        key = (r["mod"], r["grid"], r["threads"])
        if cur and (key != cur[0]["key"] or r["block"] in seen):
            out.append(cur)
            cur, seen = [], set()
        r["key"] = key
        cur.append(r)
        seen.add(r["block"])
    if cur:
        out.append(cur)
    return out


def fa_balance(ls, names, heads, sms):
    """The prefill flash attention's work per SM, for each of its launches: block b of a
    (row tiles T, heads H) grid takes item k = b (b < sms) or T H - 1 - (b - sms) (the snake
    order of kernels/attention.hip, which assumes b and b + sms share an SM), and item k's
    row tile T - 1 - k / H sees (row tile + 1) row tiles of keys (a prompt from position 0).
    Prints the most any SM carried against the even share: where the blocks were placed as
    the order assumes, the two are about equal."""
    print()
    print("| launch | blocks | SMs | most key tiles on one SM | even share | ratio |")
    print("|---|---|---|---|---|---|")
    for i, l in enumerate(ls):
        mod, grid, threads = l[0]["key"]
        if "attn_prefill_fa" not in label(names, mod, grid, threads) or grid % heads:
            continue
        T = grid // heads
        load = Counter()
        for r in l:
            b = r["block"]
            k = b if b < sms else grid - 1 - (b - sms)
            load[r["sm"]] += T - k // heads
        share = sum(load.values()) / sms
        print("| %d | %d | %d | %d | %.1f | %.2f |" % (i, len(l), len(load), max(load.values()), share,
                                                    max(load.values()) / share))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--launches", type=int, default=0, help="print the last N launches")
    ap.add_argument("--fa-heads", type=int, default=0,
                    help="the model's query heads: also print each prefill flash attention launch's "
                         "work per SM under its block order (needs FILE.kernels.csv)")
    ap.add_argument("--after", action="store_true",
                    help="one row per kernel and the kernel launched before it (a 7B prefill's output "
                         "and down products share a kernel and grid; their predecessors tell them apart)")
    ap.add_argument("--sms", type=int, default=132, help="the GPU's multiprocessors (default 132)")
    ap.add_argument("--max-gap", type=float, default=50.0,
                    help="gaps above this many µs are the host's breaks, not a kernel's time (default 50; "
                         "a 7B prefill's GEMMs take 40-150 µs: prefill_timeline.sh passes 400)")
    a = ap.parse_args()
    recs = read(a.file)
    base = a.file[:-4] if a.file.endswith(".csv") else a.file
    names = kernel_names(base + ".kernels.csv")
    # Each module's ring keeps its last 2^20 stamps (2^18 before session 27), so a long run
    # loses the earliest stamps of the busiest module first: before the latest of the modules' first stamps
    # some launches are missing, and the gap across a missing launch would be charged to the
    # launch ahead of it (session 20's "attention outliers" were that). Keep what every
    # module still covers.
    t0 = max(min(r["release"] for r in recs if r["mod"] == m) for m in {r["mod"] for r in recs})
    kept = [r for r in recs if r["release"] >= t0]
    if len(kept) < len(recs):
        print(f"(left out: the {len(recs) - len(kept)} stamps before every module's ring covers the run)")
    ls = launches(kept)
    if a.fa_heads:
        fa_balance(ls, names, a.fa_heads, a.sms)
    rows = []
    for i, l in enumerate(ls):
        first = min(r["release"] for r in l)
        prev = min(r["release"] for r in ls[i - 1]) if i else None
        early = first - min(r["arrive"] for r in l)
        late = [r for r in l if r["arrive"] > first + 200]
        rows.append(dict(name=label(names, *l[0]["key"]), blocks=len(l), first=first,
                         gap=(first - prev) if prev is not None else None, early=early,
                         late=len(late), last=max(r["arrive"] for r in l) - first,
                         spread=max(r["release"] for r in l) - first,
                         sms=len({r["sm"] for r in l}),
                         per_sm=max(Counter(r["sm"] for r in l).values())))
    if a.launches:
        print("| # | kernel | blocks (SMs, most on one) | gap to previous µs | early µs | late blocks | last arrival µs | release spread µs |")
        print("|---|---|---|---|---|---|---|---|")
        for i, r in enumerate(rows[-a.launches:]):
            print("| %d | %s | %d (%d, %d) | %s | %.2f | %d | %.2f | %.2f |" % (
                len(rows) - a.launches + i, r["name"], r["blocks"], r["sms"], r["per_sm"],
                "%.2f" % (r["gap"] / 1e3) if r["gap"] is not None else "", r["early"] / 1e3,
                r["late"], r["last"] / 1e3, r["spread"] / 1e3))
    # The time each kernel holds the critical path: the gap after it (next launch's first
    # release minus its own), over every launch in the file but the last; big gaps (a step's
    # host-side break, above --max-gap) are left out.
    by = defaultdict(list)
    for i in range(len(rows) - 1):
        g = rows[i + 1]["gap"]
        if g is not None and g < a.max_gap * 1e3:
            name = rows[i]["name"]
            if a.after and i:
                name += " (after %s)" % rows[i - 1]["name"].split(" = ")[-1]
            by[name].append((g, rows[i]))
    print()
    print("| kernel | launches | critical-path µs (sum) | (median) | p10 | p90 | early µs (median) | launches with late blocks | last arrival µs (median) | SMs (median) | most blocks on one SM (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, v in sorted(by.items(), key=lambda kv: -sum(g for g, _ in kv[1])):
        gs = sorted(g for g, _ in v)
        p = lambda q: gs[min(len(gs) - 1, int(q * len(gs)))] / 1e3
        print("| %s | %d | %.1f | %.2f | %.2f | %.2f | %.2f | %d | %.2f | %d | %d |" % (
            name, len(v), sum(gs) / 1e3, statistics.median(gs) / 1e3, p(0.1), p(0.9),
            statistics.median(r["early"] for _, r in v) / 1e3,
            sum(1 for _, r in v if r["late"]), statistics.median(r["last"] for _, r in v) / 1e3,
            statistics.median(r["sms"] for _, r in v), statistics.median(r["per_sm"] for _, r in v)))


if __name__ == "__main__":
    main()
