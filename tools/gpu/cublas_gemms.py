#!/usr/bin/env python3
"""The 7B prefill's products on cuBLAS (through torch), for a bound that greta did not write.

Times each of Llama-2-7B's layer products at 512 rows (fused Q/K/V, output, fused gate/up,
down) as torch.matmul of f16 operands (cuBLAS, f32 accumulation), and as FP8 e4m3 x e4m3
products (torch._scaled_mm, the rate of greta's FP8 low halves), with CUDA events over
many repetitions after a warm-up, and prints each one's time and TFLOP/s and the sum over
32 layers: what the prefill's products alone take on this card with the vendor's GEMMs.

    usage: python3 tools/gpu/cublas_gemms.py [ROWS] [--json FILE] [--once]

--once runs each product once, untimed (f16, then FP8), for a profiler to capture cuBLAS's
kernels (tools/gpu/gemm_profile.sh).
"""
import json
import sys

import torch

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 512
LAYERS = 32
# (name, n, k): one layer of Llama-2-7B (hidden 4096, intermediate 11008).
SHAPES = [("qkv", 3 * 4096, 4096), ("o", 4096, 4096), ("gate_up", 2 * 11008, 4096), ("down", 4096, 11008)]


ONCE = "--once" in sys.argv


def time_ms(f, reps=50):
    if ONCE:
        f()
        torch.cuda.synchronize()
        return float("nan")
    for _ in range(5):
        f()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        f()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main():
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    rows = []
    for name, n, k in SHAPES:
        x = torch.randn(ROWS, k, device=dev, dtype=torch.float16)
        w = torch.randn(n, k, device=dev, dtype=torch.float16) * 0.02
        f16 = time_ms(lambda: torch.matmul(x, w.t()))
        fp8 = None
        try:
            x8, w8 = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
            one = torch.ones((), device=dev)
            fp8 = time_ms(lambda: torch._scaled_mm(x8, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.float16))
        except Exception as e:  # an FP8 path torch lacks here is said, not hidden
            print(f"FP8 {name}: not timed ({type(e).__name__}: {e})", file=sys.stderr)
        flop = 2 * ROWS * n * k
        rows.append({"product": name, "n": n, "k": k, "f16_ms": f16, "f16_tflops": flop / f16 / 1e9,
                     "fp8_ms": fp8, "fp8_tflops": flop / fp8 / 1e9 if fp8 else None})
    print(f"cuBLAS via torch {torch.__version__} on {torch.cuda.get_device_name()}, {ROWS} rows:")
    print("| product | n x k | f16 ms | f16 TFLOP/s | FP8 ms | FP8 TFLOP/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        fp8 = f"{r['fp8_ms'] * 1e3:.1f} µs | {r['fp8_tflops']:.0f}" if r["fp8_ms"] else "- | -"
        print(f"| {r['product']} | {r['n']} x {r['k']} | {r['f16_ms'] * 1e3:.1f} µs | {r['f16_tflops']:.0f} | {fp8} |")
    f16_sum = LAYERS * sum(r["f16_ms"] for r in rows)
    print(f"sum over {LAYERS} layers, f16 products only (no low halves): {f16_sum:.2f} ms")
    if all(r["fp8_ms"] for r in rows):
        split = LAYERS * sum(r["f16_ms"] + (r["fp8_ms"] if r["product"] != "gate_up" else 0) for r in rows)
        print(f"the same plus FP8 products for qkv, o and down (greta's default split): {split:.2f} ms")
    if "--json" in sys.argv:
        json.dump({"rows": ROWS, "device": torch.cuda.get_device_name(), "products": rows},
                  open(sys.argv[sys.argv.index("--json") + 1], "w"), indent=1)


if __name__ == "__main__":
    main()
