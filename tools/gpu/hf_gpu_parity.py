#!/usr/bin/env python3
"""Logits of GRETA's GPU backend against Hugging Face transformers on the same GPU machine,
for random Llama checkpoints: MHA and GQA (ratios 3, 4, 8), tied and untied, head_dim 64 and
128. Run there (it has torch and transformers): OUT=dir python3 tools/gpu/hf_gpu_parity.py

The checkpoints are saved in f16 (GRETA's GPU stores weights as f16), so both sides run the
same weights; transformers runs them in f32 (TF32 off) as the reference, and in f16 to show
what f16 arithmetic alone costs. Pass: GRETA's GPU top-1 equals the reference's at >= 99 % of
positions and rms(greta - ref) / rms(ref) <= 1e-2 (the documented f16 tolerance), per model.
Writes OUT/hf_gpu_parity.json; exits 1 if any model fails.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[2]
GRETA = os.environ.get("GRETA", str(ROOT / "target/device/greta"))
OUT = Path(os.environ.get("OUT", "/tmp"))
TOKENS = 256
TOP1_MIN = 0.99
RMS_MAX = 1e-2

CASES = {
    "mha-tied-hd64": dict(vocab_size=4096, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                          num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=True, theta=1e4),
    "gqa4-untied-hd128": dict(vocab_size=8192, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                              num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False, theta=5e5),
    "gqa3-tied-hd64": dict(vocab_size=4096, hidden_size=576, intermediate_size=1536, num_hidden_layers=6,
                           num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, theta=1e5),
    "gqa8-untied-hd64": dict(vocab_size=4096, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                             num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=False, theta=1e4),
}


def compare(got, want):
    d = got - want
    return {
        "max_abs": float(np.abs(d).max()),
        "rms_rel": float(np.sqrt((d ** 2).mean()) / np.sqrt((want ** 2).mean())),
        "top1": float((got.argmax(-1) == want.argmax(-1)).mean()),
    }


def greta_logits(path, ids, backend, vocab):
    out = Path("/tmp") / f"greta-{backend}.npy"
    # GPU_ARGS: options for the GPU runs (e.g. --split-lo fp8).
    extra = os.environ.get("GPU_ARGS", "").split() if backend == "gpu" else []
    subprocess.run([GRETA, "logits", "-m", str(path), "--backend", backend, "--ids", ",".join(map(str, ids)),
                    "--out", str(out)] + extra, check=True, stdout=subprocess.DEVNULL)
    return np.load(out).reshape(len(ids), vocab)


def hf_logits(path, ids, dtype):
    m = LlamaForCausalLM.from_pretrained(path, dtype=dtype).cuda().eval()
    with torch.no_grad():
        x = m(torch.tensor([ids], device="cuda")).logits[0].float().cpu().numpy()
    del m
    torch.cuda.empty_cache()
    return x


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tok_src = ROOT / "crates/greta-model/tests/fixtures/tiny/mha-tied-theta1e4"
    results, ok = {}, True
    for i, (name, spec) in enumerate(CASES.items()):
        spec = dict(spec)
        theta = spec.pop("theta")
        torch.manual_seed(100 + i)
        cfg = LlamaConfig(rms_norm_eps=1e-5, initializer_range=0.05, max_position_embeddings=4096, **spec)
        cfg.rope_parameters = {"rope_type": "default", "rope_theta": theta}
        path = Path("/tmp/hf-parity") / name
        LlamaForCausalLM(cfg).to(torch.float16).save_pretrained(path, safe_serialization=True)
        for f in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(tok_src / f, path / f)
        g = torch.Generator().manual_seed(7 + i)
        ids = torch.randint(3, spec["vocab_size"], (TOKENS,), generator=g).tolist()
        ref = hf_logits(path, ids, torch.float32)
        r = {
            "greta_gpu": compare(greta_logits(path, ids, "gpu", spec["vocab_size"]), ref),
            "greta_cpu": compare(greta_logits(path, ids, "cpu", spec["vocab_size"]), ref),
            "hf_fp16": compare(hf_logits(path, ids, torch.float16), ref),
        }
        passed = r["greta_gpu"]["top1"] >= TOP1_MIN and r["greta_gpu"]["rms_rel"] <= RMS_MAX
        r["pass"] = passed
        ok &= passed
        results[name] = r
        print(f"{name}: " + "  ".join(f"{k} top1 {v['top1']:.4f} rms_rel {v['rms_rel']:.2e} max_abs {v['max_abs']:.2e}"
                                      for k, v in r.items() if isinstance(v, dict)) + ("  PASS" if passed else "  FAIL"))
    (OUT / "hf_gpu_parity.json").write_text(json.dumps({
        "device": torch.cuda.get_device_name(0), "transformers": __import__("transformers").__version__,
        "torch": torch.__version__, "tokens": TOKENS, "top1_min": TOP1_MIN, "rms_max": RMS_MAX, "models": results,
    }, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
