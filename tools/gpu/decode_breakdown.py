#!/usr/bin/env python3
"""Per-kernel time of one prefill and one decode step of `greta bench`, from Nsight Compute.

Usage: decode_breakdown.py NCU_RAW.csv SHAPE BENCH.json
NCU_RAW.csv: `ncu --csv --page raw --metrics gpu__time_duration.sum,dram__bytes_read.sum,...`
over the run's first prefill and decode steps (tools/gpu/profile_decode.sh). BENCH.json: the
same shape's `greta bench --json` (wall time per token, copy bandwidth).
A decode step is the run of kernels from one single-row `embed_f16` to the next; its kernels
are named by their place in the step (the launch order of crates/greta-model/src/llama/gpu/stages.rs),
so the uses of gemv3_f16 (Q/K/V, output projection, down, LM head) are told apart.
"""
import csv
import json
import statistics
import sys

SHAPES = {"smollm2-135m": 30, "llama2-7b": 32}
# Decode: the norms in the prologues of Q/K/V and gate/up, RoPE and the KV append inside the
# decode attention (session 9), the residual adds in the epilogues of the output and down
# projections; the final norm is a launch of its own.
LAYER = ["qkv_norm_gemv", "rope_attn_decode", "o_gemv_add", "gate_up_silu_norm", "down_gemv_add"]


def read(path):
    lines = open(path).read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
    rows = list(csv.DictReader(lines[start:]))
    out = []
    for r in rows:
        if not r.get("Kernel Name") or not r["ID"].strip().isdigit():
            continue  # the units row
        grid = int(r["Grid Size"].strip("()").split(",")[0])
        num = lambda k: float(r[k].replace(",", "")) if r.get(k) else 0.0
        ns = num("gpu__time_duration.sum")
        unit = next((u for u in rows if not u["ID"].strip().isdigit()), {})
        scale = {"usecond": 1e3, "msecond": 1e6, "nsecond": 1.0}.get(unit.get("gpu__time_duration.sum", "nsecond"), 1.0)
        bscale = {"Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "byte": 1.0}
        rd = num("dram__bytes_read.sum") * bscale.get(unit.get("dram__bytes_read.sum", "byte"), 1.0)
        wr = num("dram__bytes_write.sum") * bscale.get(unit.get("dram__bytes_write.sum", "byte"), 1.0)
        out.append((r["Kernel Name"].split("(")[0].strip(), grid, ns * scale / 1e3, rd + wr))
    return out


def table(title, groups, total_us, copy):
    print(title)
    print("| kernel | launches | us | share | DRAM MB | GB/s | of copy |")
    print("|---|---|---|---|---|---|---|")
    for lab, (n, us, b) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"| {lab} | {n} | {us:.1f} | {100 * us / total_us:.1f} % | {b / 1e6:.1f} | {b / us / 1e3:.0f} | "
              f"{b / us / 1e3 / copy:.2f} |")
    print()


def main():
    path, shape, bench_path = sys.argv[1:4]
    n_layers = SHAPES[shape]
    bench = json.load(open(bench_path))
    copy = bench["copy_gb_s"]
    ks = read(path)
    # Passes: each starts at an embed_f16; prefill has one row per token, decode one.
    passes, cur = [], None
    for k in ks:
        if k[0] == "embed_f16":
            cur = [k]
            passes.append(cur)
        elif cur is not None:
            cur.append(k)
    prefill = [p for p in passes if p[0][1] > 1]
    # Whole decode steps: those another pass follows (the profile's last one may be cut).
    decode = [p for i, p in enumerate(passes[:-1]) if p[0][1] == 1]
    if prefill:
        p = prefill[0]
        groups = {}
        for name, _, us, b in p:
            g = groups.setdefault(name, [0, 0.0, 0.0])
            g[0] += 1
            g[1] += us
            g[2] += b
        tot = sum(k[2] for k in p)
        table(f"## {shape}: {bench['spec']['prompt_len']}-token prefill, {len(p)} kernels, {tot:.0f} us of kernel time "
              f"(bench: {bench['prefill_ms'] * 1e3:.0f} us wall), {bench['device']}", groups, tot, copy)
    if not decode:
        sys.exit(f"no whole decode step found ({len(passes)} passes)")
    # A step: the embedding, the layers (len(LAYER) launches each, the same kernels in every
    # layer), then the final norm, the LM head and the pick (GpuLlama::pick_on_device).
    body = len(LAYER) * n_layers
    groups = {}
    for s in decode:
        layer_names = [k[0] for k in s[1:1 + body]]
        if len(s) < 1 + body or any(layer_names[i] != layer_names[i % len(LAYER)] for i in range(body)):
            sys.exit(f"a decode step of {len(s)} launches is not embed + {n_layers} layers of {len(LAYER)} "
                     f"({', '.join(LAYER)}) + tail: update LAYER")
        labels = ["embed"] + [f"{lab} ({name})" for lab, name in zip(LAYER * n_layers, layer_names)]
        labels += [f"tail: {k[0]}" for k in s[1 + body:]]
        for lab, (name, _, us, b) in zip(labels, s):
            g = groups.setdefault(lab, [0, 0.0, 0.0])
            g[0] += 1
            g[1] += us
            g[2] += b
    n = len(decode)
    groups = {k: [v[0] // n, v[1] / n, v[2] / n] for k, v in groups.items()}
    tot = sum(v[1] for v in groups.values())
    wall = 1e6 / bench["decode_tok_s"]
    gaps = (f"so {wall - tot:.0f} us ({100 * (wall - tot) / wall:.0f} %) are launch gaps and the token read-back"
            if wall > tot else
            "less than the kernels' sum: ncu times each kernel alone with cold caches, so small kernels read "
            "slower than in the graph and the gaps cannot be read from this")
    table(f"## {shape}: one decode step ({len(decode[0])} kernels, mean of {n}), {tot:.0f} us of kernel time; bench: "
          f"{wall:.0f} us per token wall, {gaps}; copy bandwidth {copy:.0f} GB/s", groups, tot, copy)

if __name__ == "__main__":
    main()
