#!/usr/bin/env python3
"""Hugging Face transformers as a speed peer: the same weights greta benchmarks (a directory
written by `greta bench --write-safetensors`), batch 1, f16, on the GPU, measured as
`greta bench` measures: prefill = one forward pass over a prompt of random ids (the logits of
its last position), decode = greedy generation of N tokens after it with the KV cache,
median of REPS repetitions after a warm-up.

--compile: the same model run as gpt-fast runs its own (which is not installed on the GPU
machines, and they have no network): a static KV cache allocated once, the prefill and the
decode step each under torch.compile(mode="reduce-overhead", fullgraph=True) (Inductor's
kernels, replayed as CUDA graphs), the tokens kept on the device and read back once at the
end (as gpt-fast's generate loop does). Its compile and capture happen in the warm-up, out of
the timing. If the whole-graph compile fails it falls back to fullgraph=False and says so in
"method".

Usage: hf_bench.py MODEL_DIR [--prompt-len 512] [--gen 128] [--reps 3] [--attn eager|sdpa]
  [--compile]
Prints one JSON object: {"prefill_ms", "decode_tok_s", "engine", "torch", "method", ...}.
"""
import argparse
import contextlib
import json
import statistics
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def sync():
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attn", default=None, choices=["eager", "sdpa"],
                    help="attention implementation (default: eager; sdpa with --compile, as gpt-fast)")
    ap.add_argument("--compile", action="store_true", help="static cache + torch.compile (gpt-fast's method)")
    ap.add_argument("--cudagraph-trees", action="store_true",
                    help="with --compile: torch.compile's own CUDA graphs (mode='reduce-overhead') instead of "
                         "one graph captured by hand per step")
    ap.add_argument("--device", default="cuda", help="torch device (cpu: to try the script without a GPU)")
    a = ap.parse_args()
    a.attn = a.attn or ("sdpa" if a.compile else "eager")
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float16, attn_implementation=a.attn).to(a.device).eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, a.prompt_len), generator=g).to(a.device)

    def prefill():
        sync()
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
            sync()
            t = time.perf_counter()
            for _ in range(a.gen):
                out = model(tok, past_key_values=past, use_cache=True)
                past = out.past_key_values
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
                tok.item()  # the token read back each step, as a streaming generation does
        return a.gen / (time.perf_counter() - t)

    method = "dynamic KV cache, eager; the token read back each step"
    agreement = None
    t0 = time.perf_counter()
    if a.compile:
        prefill, decode, method, agreement = compiled(model, ids, a)
    prefill(), decode()  # warm-up (with --compile: compilation and graph capture)
    warmup_s = time.perf_counter() - t0
    pf = [prefill() for _ in range(a.reps)]
    dc = [decode() for _ in range(a.reps)]
    what = "static cache + torch.compile" if a.compile else "eager"
    print(json.dumps({
        "engine": f"transformers {transformers.__version__} ({what}, {a.attn} attention, f16)",
        "method": method,
        "warmup_s": warmup_s,
        "agreement": agreement() if agreement else None,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if a.device == "cuda" else a.device,
        "prefill_ms": statistics.median(pf),
        "decode_tok_s": statistics.median(dc),
        "all_prefill_ms": pf,
        "all_decode_tok_s": dc,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if a.device == "cuda" else None,
    }))


def compiled(model, ids, a):
    """gpt-fast's method on the transformers model: (prefill, decode, method). One StaticCache
    holds every run (a static address, as CUDA graphs need), reset (zeroed, its length back
    to 0: newer transformers keep the length in the cache and ignore cache_position) before
    each prompt, outside the timing."""
    from transformers import StaticCache

    prompt = ids.shape[1]
    cache = StaticCache(config=model.config, max_cache_len=prompt + a.gen)
    prompt_pos = torch.arange(prompt, device=ids.device)

    def run(tokens, pos):
        out = model(tokens, past_key_values=cache, cache_position=pos, position_ids=pos.unsqueeze(0),
                    use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1, keepdim=True)

    # Two functions, so that the prompt's shape and the step's each get their own static
    # graph (dynamic=False: no recompile of one into a dynamic-shape graph for both).
    def prefill_run(tokens, pos):
        return run(tokens, pos)

    def decode_run(tokens, pos):
        return run(tokens, pos)

    # The cache's tensors are made at its first update: once eagerly, outside the graphs.
    with torch.no_grad():
        run(ids, prompt_pos)
    cache.reset()
    last = []
    if not a.cudagraph_trees:
        try:
            prefill, decode, method = captured(prefill_run, decode_run, cache, ids, prompt_pos, a, last)
            return prefill, decode, method, agreement_of(run, cache, ids, prompt_pos, a, last)
        except Exception as e:  # say so, and fall back to torch.compile's own CUDA graphs
            print(f"capturing the compiled steps failed ({type(e).__name__}: {str(e)[:300]}); "
                  "falling back to mode='reduce-overhead'", file=sys.stderr)
            torch._dynamo.reset()
            cache.reset()
    fullgraph = True
    try:
        first = torch.compile(prefill_run, mode="reduce-overhead", fullgraph=True, dynamic=False)
        step = torch.compile(decode_run, mode="reduce-overhead", fullgraph=True, dynamic=False)
        with torch.no_grad():
            step(first(ids, prompt_pos).clone(), torch.tensor([prompt], device=ids.device))
    except Exception as e:  # a graph break: say so, and run what does compile
        cache.reset()
        print(f"fullgraph compile failed ({type(e).__name__}: {str(e)[:300]}); retrying with fullgraph=False",
              file=sys.stderr)
        torch._dynamo.reset()
        fullgraph = False
        first = torch.compile(prefill_run, mode="reduce-overhead", dynamic=False)
        step = torch.compile(decode_run, mode="reduce-overhead", dynamic=False)

    def prefill():
        cache.reset()
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            tok = first(ids, prompt_pos)
        tok.item()
        return (time.perf_counter() - t) * 1e3

    def decode():
        out = torch.empty(a.gen, dtype=torch.long, device=ids.device)
        cache.reset()
        with torch.no_grad():
            tok = first(ids, prompt_pos).clone()
            pos = torch.tensor([prompt], device=ids.device)
            sync()
            t = time.perf_counter()
            for i in range(a.gen):
                # A CUDA graph's output is overwritten by its next replay: keep a copy.
                tok = step(tok, pos).clone()
                out[i] = tok[0, 0]
                pos += 1
            last[:] = out.tolist()  # the tokens read back once, at the end (gpt-fast's loop)
        return a.gen / (time.perf_counter() - t)

    method = (f"static KV cache ({prompt + a.gen} positions), prefill and decode step under "
              f"torch.compile(mode='reduce-overhead', fullgraph={fullgraph}), tokens read back at the end")
    return prefill, decode, method, agreement_of(run, cache, ids, prompt_pos, a, last)


def captured(prefill_run, decode_run, cache, ids, prompt_pos, a, last):
    """Inductor's kernels without torch.compile's own CUDA graphs (cudagraph trees check and
    copy their inputs at every call, ~1 ms a step on SmolLM2 in session 29): the prefill and
    the decode step each captured by hand as one CUDA graph, the step's token, position and
    output slot advanced inside it, so a decode step is one replay (gpt-fast's loop, less its
    Python). Raises where capture fails; the caller falls back. Off CUDA (to try the script
    without a GPU) a "replay" is a call of the same body."""
    prompt, dev = ids.shape[1], ids.device
    first = torch.compile(prefill_run, fullgraph=True, dynamic=False)
    step = torch.compile(decode_run, fullgraph=True, dynamic=False)
    first_tok = torch.zeros((1, 1), dtype=torch.long, device=dev)
    tok = torch.zeros((1, 1), dtype=torch.long, device=dev)
    pos = torch.full((1,), prompt, dtype=torch.long, device=dev)
    slot = torch.zeros((1,), dtype=torch.long, device=dev)
    out = torch.zeros(a.gen, dtype=torch.long, device=dev)

    def prefill_body():
        first_tok.copy_(first(ids, prompt_pos))

    def step_body():
        nxt = step(tok, pos)
        tok.copy_(nxt)
        out.index_copy_(0, slot, nxt.view(1))
        pos.add_(1)
        slot.add_(1)

    def capture(body):
        if not ids.is_cuda:
            return body
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            body()
        return g.replay

    side = torch.cuda.Stream() if ids.is_cuda else None
    if side:
        side.wait_stream(torch.cuda.current_stream())
    with (torch.cuda.stream(side) if side else contextlib.nullcontext()), torch.no_grad():
        for _ in range(2):  # compile, and each kernel's first launch, off the graphs
            # The step's position and slot back to the first each time (they advanced past
            # the cache and `out` on the second pass with --gen 1: index_copy_ out of bounds).
            cache.reset()
            pos.fill_(prompt)
            slot.zero_()
            prefill_body()
            tok.copy_(first_tok)
            step_body()
    if side:
        torch.cuda.current_stream().wait_stream(side)
    cache.reset()
    with torch.no_grad():
        replay_prefill, replay_step = capture(prefill_body), capture(step_body)
    cache.reset()

    def prefill():
        cache.reset()
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            replay_prefill()
        first_tok.item()
        return (time.perf_counter() - t) * 1e3

    def decode():
        cache.reset()
        with torch.no_grad():
            replay_prefill()
            tok.copy_(first_tok)
            pos.fill_(prompt)
            slot.zero_()
            sync()
            t = time.perf_counter()
            for _ in range(a.gen):
                replay_step()
            last[:] = out.tolist()  # the tokens read back once, at the end (gpt-fast's loop)
        return a.gen / (time.perf_counter() - t)

    how = "each captured as one CUDA graph" if ids.is_cuda else "called directly (no GPU: no graphs)"
    method = (f"static KV cache ({prompt + a.gen} positions), prefill and decode step compiled by "
              f"torch.compile(fullgraph=True), {how}, tokens read back at the end")
    return prefill, decode, method


def agreement_of(run, cache, ids, prompt_pos, a, last):
    prompt = ids.shape[1]

    def agreement():
        """How many of the compiled run's greedy tokens the same model gives uncompiled (the
        first divergence, if any: random weights have near-ties that other kernels may break)."""
        cache.reset()
        with torch.no_grad():
            tok = run(ids, prompt_pos)
            ref = []
            for i in range(a.gen):
                tok = run(tok, torch.tensor([prompt + i], device=ids.device))
                ref.append(tok.item())
        n = next((i for i, (x, y) in enumerate(zip(last, ref)) if x != y), len(ref))
        return f"{n} of {len(ref)} greedy tokens as the uncompiled model's"

    return agreement


if __name__ == "__main__":
    main()
