#!/usr/bin/env python3
"""Per-stage time of a decode step from an nsys cuda_gpu_trace CSV of `greta bench`.

Usage: decode_breakdown.py TRACE.csv SHAPE BENCH.json
A decode step is the run of kernels from one single-row `embed_f16` launch to the next.
Kernels are named by their place in the step (the forward pass's launch order, see
crates/greta-model/src/llama/gpu.rs), so the three uses of gemv3_f16 per layer (Q/K/V, the
output projection, down) and the LM head are told apart. Bytes per stage come from the shape
(f16 weights, f16 KV cache at the step's position); GB/s is bytes / kernel time.
"""
import csv
import json
import statistics
import sys

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, head_dim, vocab
    "smollm2-135m": (576, 1536, 30, 9, 3, 64, 49152),
    "llama2-7b": (4096, 11008, 32, 32, 32, 128, 32000),
    "tiny": None,
}


def main():
    path, shape, bench_path = sys.argv[1:4]
    d, ff, n_layers, nh, nkv, hd, vocab = SHAPES[shape]
    bench = json.load(open(bench_path))
    copy = bench["copy_gb_s"]
    rows = list(csv.DictReader(open(path)))
    key = lambda r, *names: next(r[n] for n in names if n in r)
    kernels = []
    for r in rows:
        name = key(r, "Name", "Kernel Name")
        grid = key(r, "GrdX", "Grid X")
        if not grid:  # memcpy / memset rows
            continue
        kernels.append((name.split("(")[0].strip(), int(grid), float(key(r, "Duration (ns)", "Duration(ns)")), int(key(r, "Start (ns)", "Start(ns)"))))
    steps, cur = [], None
    for k in kernels:
        if k[0] == "embed_f16" and k[1] == 1:
            cur = [k]
            steps.append(cur)
        elif cur is not None:
            cur.append(k)
    expected = 2 + 9 * n_layers + 3
    steps = [s for s in steps if len(s) == expected]
    if not steps:
        sys.exit(f"no decode step of {expected} kernels found")
    steps = steps[-32:]  # the last steps of the run (warm)
    q_row, kv_row = nh * hd, nkv * hd
    w = lambda n, k: 2 * n * k
    per_layer_bytes = {
        "qkv_gemv": w(q_row + 2 * kv_row, d),
        "o_gemv": w(d, q_row),
        "gate_up_silu": w(2 * ff, d),
        "down_gemv": w(d, ff),
    }
    pos = bench["spec"]["prompt_len"] + bench["spec"]["gen"]  # about where the last steps are
    per_layer_bytes["attn_decode_split"] = 2 * 2 * kv_row * pos
    labels = []
    for i, (name, _, _, _) in enumerate(steps[0]):
        if i < 2:
            labels.append(name)
        elif i < 2 + 9 * n_layers:
            j = (i - 2) % 9
            labels.append(["qkv_gemv", "rope_qk_append", "attn_decode_split", "attn_decode_combine", "o_gemv",
                           "add_rmsnorm", "gate_up_silu", "down_gemv", "add_rmsnorm"][j])
        else:
            labels.append(["head_gemv", "argmax", "advance_pos"][i - 2 - 9 * n_layers])
    for s in steps:
        got = [k[0] for k in s]
        want_names = {"qkv_gemv": "gemv3_f16", "o_gemv": "gemv3_f16", "down_gemv": "gemv3_f16", "head_gemv": "gemv3_f16",
                      "gate_up_silu": "gemv_gate_up_silu_f16", "add_rmsnorm": "add_rmsnorm_f32", "argmax": "argmax_f32"}
        for lab, g in zip(labels, got):
            if lab in want_names and want_names[lab] != g:
                sys.exit(f"step layout differs from the forward pass: {lab} is {g}")
    totals = {}
    for s in steps:
        acc = {}
        for lab, k in zip(labels, s):
            acc[lab] = acc.get(lab, 0.0) + k[2]
        for lab, v in acc.items():
            totals.setdefault(lab, []).append(v)
    walls = [(s[-1][3] + s[-1][2] - s[0][3]) / 1e3 for s in steps]
    gpu_us = statistics.median([sum(k[2] for k in s) for s in steps]) / 1e3
    wall_us = statistics.median(walls)
    bytes_of = {lab: b * n_layers for lab, b in per_layer_bytes.items()}
    bytes_of["head_gemv"] = w(vocab, d)
    print(f"## {shape}: one decode step ({len(steps[0])} kernels), median of {len(steps)} steps, {bench['device']}")
    print(f"kernel time {gpu_us:.1f} us of {wall_us:.1f} us from first start to last end "
          f"({100 * gpu_us / wall_us:.0f} % busy); bench: {1e3 / bench['decode_tok_s']:.1f} us/token wall; copy {copy:.0f} GB/s")
    print("| stage | launches | us/step | share | bytes/step | GB/s | of copy |")
    print("|---|---|---|---|---|---|---|")
    order = sorted(totals, key=lambda l: -statistics.median(totals[l]))
    for lab in order:
        us = statistics.median(totals[lab]) / 1e3
        n = labels.count(lab)
        b = bytes_of.get(lab)
        bw = f"{b / us / 1e3:.0f} | {b / us / 1e3 / copy:.2f}" if b else "- | -"
        print(f"| {lab} | {n} | {us:.1f} | {100 * us / gpu_us:.1f} % | {b / 1e6 if b else 0:.1f} MB | {bw} |")


if __name__ == "__main__":
    main()
