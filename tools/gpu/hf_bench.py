#!/usr/bin/env python3
"""Hugging Face transformers as a speed peer: the same weights greta benchmarks (a directory
written by `greta bench --write-safetensors`), batch 1, f16, on the GPU, measured as
`greta bench` measures: prefill = one forward pass over a prompt of random ids (the logits of
its last position), decode = greedy generation of N tokens after it with the KV cache,
median of REPS repetitions after a warm-up.

Usage: hf_bench.py MODEL_DIR [--prompt-len 512] [--gen 128] [--reps 3] [--attn eager|sdpa]
Prints one JSON object: {"prefill_ms", "decode_tok_s", "attn", "torch", "transformers", ...}.
"""
import argparse
import json
import statistics
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    a = ap.parse_args()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float16, attn_implementation=a.attn).cuda().eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, a.prompt_len), generator=g).cuda()

    def prefill():
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            out = model(ids, use_cache=True, logits_to_keep=1)
        out.logits.argmax(-1).item()
        return (time.perf_counter() - t) * 1e3

    def decode():
        with torch.no_grad():
            out = model(ids, use_cache=True, logits_to_keep=1)
            past = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(a.gen):
                out = model(tok, past_key_values=past, use_cache=True)
                past = out.past_key_values
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
                tok.item()  # the token read back each step, as a streaming generation does
        return a.gen / (time.perf_counter() - t)

    prefill(), decode()  # warm-up
    pf = [prefill() for _ in range(a.reps)]
    dc = [decode() for _ in range(a.reps)]
    print(json.dumps({
        "engine": f"transformers {transformers.__version__} ({a.attn} attention, f16)",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(),
        "prefill_ms": statistics.median(pf),
        "decode_tok_s": statistics.median(dc),
        "all_prefill_ms": pf,
        "all_decode_tok_s": dc,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(),
    }))


if __name__ == "__main__":
    main()
