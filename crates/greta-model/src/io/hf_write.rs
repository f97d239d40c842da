//! Writing a Llama model as a Hugging Face directory (config.json, model.safetensors in f16,
//! a word-level tokenizer.json over the same placeholder vocabulary as the GGUF writer), so
//! that transformers and the engines built on it run exactly the weights GRETA runs:
//! `greta bench --write-safetensors DIR`.
//!
//! A model held with GGUF's RoPE pairing (adjacent dimensions) has its Q and K rows put back
//! in Hugging Face's order (rotate_half pairs i with i + d/2): the inverse of the permutation
//! llama.cpp's converter applies, so both files describe the same function.

use std::path::Path;

use half::f16;
use safetensors::tensor::{Dtype, TensorView};

use crate::io::quant::GgmlType;
use crate::llama::config::{LlamaConfig, RopeStyle};
use crate::llama::weights::{LlamaWeights, Matrix, Storage};

use super::gguf_write::{vocab, WriteError};

/// f16 bytes of a matrix, rows in the order `row_of(r)` gives for output row r.
fn f16_bytes(m: &Matrix, row_of: &dyn Fn(usize) -> usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.rows * m.cols * 2);
    let mut row = vec![0f32; m.cols];
    for r in 0..m.rows {
        let src = row_of(r);
        match &m.storage {
            Storage::Blocks {
                ty: GgmlType::F16,
                bytes,
            } => out.extend_from_slice(&bytes[src * m.cols * 2..(src + 1) * m.cols * 2]),
            _ => {
                m.row_f32(src, &mut row);
                for v in &row {
                    out.extend_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
        }
    }
    out
}

/// Hugging Face row r of a Q/K matrix with `heads` heads of `hd` comes from GGUF row
/// 2i + s of the same head, where r = s·hd/2 + i.
fn hf_row_from_gguf(r: usize, hd: usize) -> usize {
    let (head, j) = (r / hd, r % hd);
    let (s, i) = (j / (hd / 2), j % (hd / 2));
    head * hd + 2 * i + s
}

fn norm_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| f16::from_f32(*x).to_le_bytes())
        .collect()
}

/// Writes `cfg` + `w` into `dir` (created if needed).
pub fn write_llama(dir: &Path, cfg: &LlamaConfig, w: &LlamaWeights) -> Result<(), WriteError> {
    let io = |error| WriteError::Io {
        path: dir.display().to_string(),
        error,
    };
    if cfg.rope_scaling.is_some() || w.rope_freq_factors.is_some() {
        return Err(WriteError::Unsupported(
            "Llama 3 RoPE scaling is not written".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let hd = cfg.head_dim;
    let identity = |r: usize| r;
    let permuted = move |r: usize| hf_row_from_gguf(r, hd);
    let qk: &dyn Fn(usize) -> usize = match cfg.rope_style {
        RopeStyle::AdjacentPairs => &permuted,
        RopeStyle::HalfSplit => &identity,
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = vec![(
        "model.embed_tokens.weight".into(),
        vec![cfg.vocab_size, cfg.hidden],
        f16_bytes(&w.token_embd, &identity),
    )];
    for (i, l) in w.layers.iter().enumerate() {
        let p = |s: &str| format!("model.layers.{i}.{s}.weight");
        let m =
            |m: &Matrix, rows: &dyn Fn(usize) -> usize| (vec![m.rows, m.cols], f16_bytes(m, rows));
        for (name, (shape, bytes)) in [
            ("self_attn.q_proj", m(&l.wq, qk)),
            ("self_attn.k_proj", m(&l.wk, qk)),
            ("self_attn.v_proj", m(&l.wv, &identity)),
            ("self_attn.o_proj", m(&l.wo, &identity)),
            ("mlp.gate_proj", m(&l.w_gate, &identity)),
            ("mlp.up_proj", m(&l.w_up, &identity)),
            ("mlp.down_proj", m(&l.w_down, &identity)),
        ] {
            tensors.push((p(name), shape, bytes));
        }
        tensors.push((
            p("input_layernorm"),
            vec![cfg.hidden],
            norm_bytes(&l.attn_norm),
        ));
        tensors.push((
            p("post_attention_layernorm"),
            vec![cfg.hidden],
            norm_bytes(&l.ffn_norm),
        ));
    }
    tensors.push((
        "model.norm.weight".into(),
        vec![cfg.hidden],
        norm_bytes(&w.output_norm),
    ));
    if let Some(o) = &w.output {
        tensors.push((
            "lm_head.weight".into(),
            vec![cfg.vocab_size, cfg.hidden],
            f16_bytes(o, &identity),
        ));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            TensorView::new(Dtype::F16, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| WriteError::Unsupported(format!("tensor {n}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .map_err(|e| WriteError::Unsupported(format!("model.safetensors: {e}")))?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden,
        "intermediate_size": cfg.intermediate,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "max_position_embeddings": cfg.max_context,
        "tie_word_embeddings": cfg.tied_embeddings,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float16",
    });
    let (tokens, _, types) = vocab(cfg.vocab_size);
    let vocab_map: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = (0..3)
        .map(|i| {
            serde_json::json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": types[i] != 1})
        })
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "<unk>"},
    });
    let tok_config = serde_json::json!({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    for (name, v) in [
        ("config.json", config),
        ("tokenizer.json", tokenizer),
        ("tokenizer_config.json", tok_config),
    ] {
        std::fs::write(
            dir.join(name),
            serde_json::to_string_pretty(&v).expect("json"),
        )
        .map_err(io)?;
    }
    Ok(())
}
