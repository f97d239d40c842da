#!/usr/bin/env python3
"""Which kernels cuBLAS runs for the 7B prefill's products at each prompt length (session 53).

For ROWS in argv (default 384 512 520 576 800) and each of Llama-2-7B's layer products (fused
Q/K/V, output, fused gate/up, down), runs torch.matmul of f16 operands under torch.profiler
and prints each CUDA kernel's name, grid, block and time: the tile shapes and the split or
stream-K scheme cuBLAS chooses where the rows are not a multiple of its tile (greta's
persistent GEMM pays whole waves there: docs/performance.md, session 53).

    usage: python3 tools/gpu/cublas_kernels.py [ROWS ...]
"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

SHAPES = [("qkv", 3 * 4096, 4096), ("o", 4096, 4096), ("gate_up", 2 * 11008, 4096), ("down", 4096, 11008)]


def main():
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    rows = [int(a) for a in sys.argv[1:]] or [384, 512, 520, 576, 800]
    for m in rows:
        for name, n, k in SHAPES:
            x = torch.randn(m, k, device=dev, dtype=torch.float16)
            w = torch.randn(n, k, device=dev, dtype=torch.float16) * 0.02
            for _ in range(3):
                torch.matmul(x, w.t())
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    torch.matmul(x, w.t())
                torch.cuda.synchronize()
            seen = {}
            for e in prof.events():
                if e.device_type.name != "CUDA":
                    continue
                key = e.name
                s = seen.setdefault(key, [0, 0.0])
                s[0] += 1
                s[1] += e.device_time if hasattr(e, "device_time") else e.cuda_time
            for kname, (count, us) in seen.items():
                print(f"{m:5d} {name:8s} {us / count:8.1f} us x{count // 5}  {kname[:230]}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
