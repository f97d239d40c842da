#!/usr/bin/env python3
"""Random-weight Llama checkpoints of real model shapes, for the GPU checks (run on the GPU
machine, which has torch and transformers). The tokenizer is the tiny fixtures' SentencePiece
one (384 tokens, fewer than any of these vocabularies), so prompts stay within the vocabulary.

  python3 tools/gpu/make_random_llama.py smollm2-135m OUTDIR
  python3 tools/gpu/make_random_llama.py llama2-7b-2layers OUTDIR
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    # SmolLM2-135M: 30 layers, hidden 576, 9 heads / 3 KV heads, tied embeddings, theta 1e5.
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                         rope_theta=100000.0, max_position_embeddings=8192),
    # Llama-2-7B with 2 of its 32 layers: MHA, untied.
    "llama2-7b-2layers": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=2,
                              num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False,
                              rope_theta=10000.0, max_position_embeddings=4096),
}


def main():
    name, out = sys.argv[1], Path(sys.argv[2])
    torch.manual_seed(0)
    cfg = dict(SHAPES[name])
    theta = cfg.pop("rope_theta")
    config = LlamaConfig(rms_norm_eps=1e-5, initializer_range=0.02, **cfg)
    config.rope_parameters = {"rope_type": "default", "rope_theta": theta}
    model = LlamaForCausalLM(config).to(torch.float16)
    model.save_pretrained(out, safe_serialization=True)
    tiny = Path(__file__).resolve().parents[2] / "crates/greta-model/tests/fixtures/tiny/mha-tied-theta1e4"
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(tiny / f, out / f)
    print(name, "->", out)


if __name__ == "__main__":
    main()
