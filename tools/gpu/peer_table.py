#!/usr/bin/env python3
"""One table from the peer harness's raw results (tools/gpu/peer_bench.sh): per shape,
prefill-512 ms and decode tok/s of greta (greedy graph and eager; sampled as `greta
generate` draws, where the raw results hold it), llama.cpp, transformers eager and
transformers compiled as gpt-fast runs its model (static cache, torch.compile with CUDA
graphs: hf_bench.py --compile), each peer's ratio to greta's greedy graph (> 1: greta is
faster; every peer's decode is greedy), and greta's fraction of the limits (copy bandwidth for decode,
f16 matrix peak for prefill). Usage: peer_table.py RAW_DIR SHAPE..."""
import json
import statistics
import sys
from pathlib import Path

# Dense f16 tensor throughput with f32 accumulation, per card (vendor data sheets).
MATRIX_TFLOPS = {"H100": 989.0, "H200": 989.0}


def load(p):
    try:
        return json.loads(Path(p).read_text())
    except Exception:
        return None


def llama_cpp(p):
    """llama-bench's prefill ms and decode tok/s as the median of its repetitions, the statistic
    greta bench and hf_bench.py report, and llama-bench's own means (its printed `avg_ts`).
    Its first repetition of the 512-token prompt runs ~1.5x slower than the others in both runs
    whose samples were kept (2026-11-30: 15995 against 23969 / 23884 tok/s; session 41 alike),
    though its warm-up runs the same prompt, so the mean overstated llama.cpp's prefill time
    by 12-28 % (session 41)."""
    d = load(p)
    if not d:
        # No llama.cpp result (its build or run failed): its rows read n/a, the table stands.
        return None, None, (None, None)
    pp = next((x for x in d if x["n_prompt"] == 512 and x["n_gen"] == 0), None)
    tg = next((x for x in d if x["n_gen"] == 128 and x["n_prompt"] == 0), None)

    def median_ms(x):
        ns = x.get("samples_ns")
        return statistics.median(ns) / 1e6 if ns else x["n_prompt" if x["n_prompt"] else "n_gen"] / x["avg_ts"] * 1e3

    prefill = median_ms(pp) if pp else None
    decode = 128 / median_ms(tg) * 1e3 if tg else None
    means = (512 / pp["avg_ts"] * 1e3 if pp else None, tg["avg_ts"] if tg else None)
    return prefill, decode, means


def ratio(v):
    """A speed-up as '1.23x', or n/a where the peer gave no figure."""
    return f"{v:.2f}x" if v is not None else "n/a"


def f(v, fmt):
    return format(v, fmt) if v is not None else "n/a"


def main():
    raw, shapes = Path(sys.argv[1]), sys.argv[2:]
    gpu = (raw / "gpu.txt").read_text().strip() if (raw / "gpu.txt").exists() else "?"
    print(f"Card: {gpu}")
    rows = []
    for s in shapes:
        g = load(raw / f"greta-{s}.json")
        if not g:
            print(f"{s}: no greta result")
            continue
        ge = load(raw / f"greta-eager-{s}.json")
        gs = load(raw / f"greta-sampled-{s}.json")
        gf = load(raw / f"greta-f16in-{s}.json")
        hf = load(raw / f"hf-{s}.json")
        hfc = load(raw / f"hfc-{s}.json")
        lpp, ltg, lmeans = llama_cpp(raw / f"llama-{s}.json")
        rows.append((s, g, ge, gs, gf, hf, hfc, lpp, ltg, lmeans))
    if not rows:
        return
    g0 = rows[0][1]
    # The build the greta rows measured (bench --json's "build", since session 55).
    print(f"greta: {g0.get('build', 'build not reported (before session 55)')}")
    hf_name = next((r[5]["engine"] for r in rows if r[5]), "transformers")
    hfc_name = next((f"{r[6]['engine']}: {r[6]['method']}" for r in rows if r[6]), None)
    print(f"Copy bandwidth {g0['copy_gb_s']:.0f} GB/s (read+write, measured by greta bench in the same run); "
          f"peers: llama.cpp llama-bench (CUDA, -fa 1, -ngl 99), {hf_name}"
          + (f", {hfc_name}" if hfc_name else "") + ". "
          "greta's prefill inputs as hi + lo (each shape's own: --split-lo auto picks by shape): "
          + "; ".join(f"{r[0]}: {r[1].get('split_inputs') or 'not reported'}" for r in rows) + ".")
    print()
    print("| shape | engine | prefill-512 ms | greta speed-up | decode tok/s | greta speed-up |")
    print("|---|---|---|---|---|---|")
    for s, g, ge, gs, gf, hf, hfc, lpp, ltg, lmeans in rows:
        gp, gd = g["prefill_ms"], g["decode_tok_s"]
        print(f"| {s} | greta (graph) | {gp:.2f} | | {gd:.1f} | |")
        if ge:
            print(f"| {s} | greta (eager) | {ge['prefill_ms']:.2f} | | {ge['decode_tok_s']:.1f} | |")
        if gs:
            sm = gs["spec"].get("sampling") or {}
            print(f"| {s} | greta (graph, sampled: T {sm.get('temperature', '?'):.2g}, top-k {sm.get('top_k', '?')}, "
                  f"top-p {sm.get('top_p', '?'):.2g}) | {gs['prefill_ms']:.2f} | | {gs['decode_tok_s']:.1f} | |")
        if gf:
            print(f"| {s} | greta (graph, peers' numerics: `--split-inputs none`) | {gf['prefill_ms']:.2f} | | "
                  f"{gf['decode_tok_s']:.1f} | |")
        print(f"| {s} | llama.cpp | {f(lpp, '.2f')} | {ratio(lpp / gp if lpp else None)} | {f(ltg, '.1f')} | "
              f"{ratio(gd / ltg if ltg else None)} |")
        for name, r in (("transformers", hf), ("transformers + torch.compile", hfc)):
            if r is None and name != "transformers":
                continue
            hp, hd = (r["prefill_ms"], r["decode_tok_s"]) if r else (None, None)
            print(f"| {s} | {name} | {f(hp, '.2f')} | {ratio(hp / gp if hp else None)} | {f(hd, '.1f')} | "
                  f"{ratio(gd / hd if hd else None)} |")
    if all(lpp is None and ltg is None for *_, lpp, ltg, _ in rows) and (raw / "llama-state.txt").exists():
        # The llama.cpp rows' n/a, explained (peer_bench.sh writes why it had no llama-bench).
        print(f"\nllama.cpp rows n/a: {(raw / 'llama-state.txt').read_text().strip()}")
    for s, g, ge, gs, gf, hf, hfc, lpp, ltg, lmeans in rows:
        if lmeans[0] is not None or lmeans[1] is not None:
            print(f"\n{s}, llama.cpp: medians of llama-bench's repetitions, as every engine here; its own means "
                  f"(first repetition included) read prefill {f(lmeans[0], '.2f')} ms, decode {f(lmeans[1], '.1f')} tok/s")
        if hfc and hfc.get("agreement"):
            print(f"\n{s}, transformers + torch.compile: {hfc['agreement']} (compile and capture {hfc['warmup_s']:.0f} s)")
        # Like against like: the fastest peer's prefill against greta's under each numerics.
        peers = [(n, v) for n, v in (("llama.cpp", lpp), ("transformers", hf and hf["prefill_ms"]),
                                     ("transformers + torch.compile", hfc and hfc["prefill_ms"])) if v]
        if peers:
            name, best = min(peers, key=lambda x: x[1])
            line = f"\n{s}: the fastest peer's prefill ({name}, {best:.2f} ms) is {best / g['prefill_ms']:.2f}x greta's default"
            if gf:
                line += f" and {best / gf['prefill_ms']:.2f}x greta's under the peers' numerics"
            print(line + " (> 1: greta is faster).")
    print()
    print("Roofline fractions of greta's figures:")
    for s, g, *_ in rows:
        card = next((k for k in MATRIX_TFLOPS if k in g["device"]), None)
        # The model's FLOPs as greta bench counts them (each product, the causal attention and
        # the head's one row, once whatever the numerics); older results: 2 * params * tokens.
        flops = g.get("prefill_flops") or 2 * g["weight_bytes"] / 2 * g["spec"]["prompt_len"]
        pf = f"prefill {flops / (g['prefill_ms'] / 1e3) / 1e12:.0f} TFLOP/s"
        if card:
            pf += f" = {flops / (g['prefill_ms'] / 1e3) / 1e12 / MATRIX_TFLOPS[card]:.3f} of {MATRIX_TFLOPS[card]:.0f} (f16 dense)"
        lim = g["copy_gb_s"] * 1e9 / g["bytes_per_token"]
        print(f"- {s}: decode {g['achieved_gb_s']:.0f} GB/s = {g['fraction_of_copy']:.2f} of copy "
              f"(copy-bound limit {lim:.0f} tok/s); {pf}; memory: weights {g['weight_bytes'] / 1e9:.2f} GB + state "
              f"{g['state_bytes'] / 1e9:.3f} GB, device in use {(g.get('device_used_bytes') or 0) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
