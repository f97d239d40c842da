//! The Llama-family hyper-parameters, read from GGUF metadata or a Hugging Face config.json.

use std::path::Path;

use crate::io::gguf::GgufHeader;
use crate::io::FormatError;

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RopeStyle {
    /// `(x[2i], x[2i+1])` rotate together: llama.cpp's LLAMA_ROPE_TYPE_NORM. GGUF files
    /// converted from Hugging Face have their Q/K rows permuted to match this pairing.
    AdjacentPairs,
    /// `(x[i], x[i + d/2])` rotate together: Hugging Face's `rotate_half`.
    HalfSplit,
}

/// Llama 3 frequency-dependent RoPE scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_theta: f64,
    pub rope_style: RopeStyle,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// The context the model was trained for (the default KV-cache capacity), cut to
    /// `sliding_window` where that is shorter.
    pub max_context: usize,
    pub tied_embeddings: bool,
    /// The attention window a Hugging Face checkpoint declares (`sliding_window`: Mistral
    /// 7B v0.1's 4096 keys), where it is shorter than the trained context. greta's attention
    /// has no window, so it is exact only while the window masks nothing: `max_context` is
    /// cut to it, and contexts beyond it are refused rather than computed differently from
    /// transformers. (llama.cpp's GGUF of such a model declares no window and attends to
    /// every key: greta reads the GGUF as llama.cpp does.)
    pub sliding_window: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("architecture {0:?} is not supported; accepted: \"llama\" (Llama 2/3, SmolLM2, Mistral-shaped GQA)")]
    Architecture(String),
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
}

impl LlamaConfig {
    fn check(self, file: &str) -> Result<Self, ConfigError> {
        let bad = |reason: String| {
            Err(ConfigError::Invalid {
                file: file.to_string(),
                reason,
            })
        };
        if self.n_heads == 0 || self.n_kv_heads == 0 || self.n_layers == 0 || self.hidden == 0 {
            return bad(format!("zero-sized model: {self:?}"));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} attention heads is not a multiple of {} KV heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head dimension {} is odd; RoPE needs pairs",
                self.head_dim
            ));
        }
        Ok(self)
    }

    pub fn from_gguf(h: &GgufHeader) -> Result<Self, ConfigError> {
        let arch = h
            .get_str("general.architecture")?
            .ok_or_else(|| FormatError::MissingMetadata("general.architecture".into()))?;
        if arch != "llama" {
            return Err(ConfigError::Architecture(arch.to_string()));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = h.require_u64(&key("embedding_length"))? as usize;
        let n_heads = h.require_u64(&key("attention.head_count"))? as usize;
        let n_kv_heads = h
            .get_u64(&key("attention.head_count_kv"))?
            .unwrap_or(n_heads as u64) as usize;
        let head_dim = match h.get_u64(&key("attention.key_length"))? {
            Some(d) => d as usize,
            None if n_heads > 0 => hidden / n_heads,
            None => 0,
        };
        let token_embd = h
            .tensor("token_embd.weight")
            .ok_or_else(|| FormatError::MissingTensor("token_embd.weight".into()))?;
        let vocab_size = match h.get_u64(&key("vocab_size"))? {
            Some(v) => v as usize,
            None => token_embd.shape()[0],
        };
        // Shapes a llama GGUF may declare that greta's stages do not compute: refused by
        // name rather than run as a plain Llama.
        let unsupported = |reason: String| ConfigError::Invalid {
            file: "GGUF metadata".into(),
            reason,
        };
        if let Some(n) = h.get_u64(&key("expert_count"))?.filter(|&n| n > 0) {
            return Err(unsupported(format!(
                "{} is {n}: a mixture-of-experts llama (Mixtral-style) is not supported; accepted: 0 or absent",
                key("expert_count")
            )));
        }
        if let Some(r) = h.get_u64(&key("rope.dimension_count"))? {
            if r as usize != head_dim {
                // llama.cpp refuses the same for a llama ("invalid n_rot").
                return Err(unsupported(format!(
                    "{} is {r}, but RoPE here rotates whole heads of {head_dim}; accepted: {head_dim}",
                    key("rope.dimension_count")
                )));
            }
        }
        if let Some(v) = h.get_u64(&key("attention.value_length"))? {
            if v as usize != head_dim {
                return Err(unsupported(format!(
                    "{} is {v}, but values here are as long as keys ({head_dim}); accepted: {head_dim}",
                    key("attention.value_length")
                )));
            }
        }
        // llama.cpp's converter writes Llama 3 scaling as per-dimension factors in the
        // `rope_freqs.weight` tensor (read with the weights), not as a scaling type.
        match h.get_str(&key("rope.scaling.type"))? {
            None | Some("none") => {}
            Some(other) => {
                return Err(unsupported(format!(
                    "rope scaling type {other:?} is not supported; accepted: none"
                )))
            }
        }
        LlamaConfig {
            vocab_size,
            hidden,
            intermediate: h.require_u64(&key("feed_forward_length"))? as usize,
            n_layers: h.require_u64(&key("block_count"))? as usize,
            n_heads,
            n_kv_heads,
            head_dim,
            // Required, as llama.cpp requires them of a llama GGUF: a guessed epsilon or
            // context would load a model that computes something else, silently.
            rms_eps: h.require_f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
            // Optional in llama.cpp too, with the same default.
            rope_theta: h.get_f64(&key("rope.freq_base"))?.unwrap_or(10000.0),
            rope_style: RopeStyle::AdjacentPairs,
            rope_scaling: None,
            max_context: h.require_u64(&key("context_length"))? as usize,
            tied_embeddings: h.tensor("output.weight").is_none(),
            sliding_window: None,
        }
        .check("GGUF metadata")
    }

    /// Reads a Hugging Face `config.json` (transformers 4 and 5 layouts).
    pub fn from_hf_config(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let invalid = |reason: String| ConfigError::Invalid {
            file: file.clone(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read: {e}")))?;
        let j: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let model_type = j.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        if !matches!(model_type, "llama" | "mistral") {
            return Err(ConfigError::Architecture(model_type.to_string()));
        }
        let num = |k: &str| -> Result<f64, ConfigError> {
            j.get(k)
                .and_then(|v| v.as_f64())
                .ok_or_else(|| invalid(format!("field {k:?} missing or not a number")))
        };
        let opt = |k: &str| j.get(k).and_then(|v| v.as_f64());
        let hidden = num("hidden_size")? as usize;
        let n_heads = num("num_attention_heads")? as usize;
        // transformers 5 moved rope settings into `rope_parameters`; 4.x has them at the top.
        let rope = j
            .get("rope_parameters")
            .or_else(|| j.get("rope_scaling"))
            .filter(|v| v.is_object());
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .and_then(|v| v.as_f64())
            .or_else(|| opt("rope_theta"))
            .unwrap_or(10000.0);
        let rope_scaling = match rope {
            Some(r) => {
                let ty = r
                    .get("rope_type")
                    .or_else(|| r.get("type"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("default");
                match ty {
                    "default" => None,
                    "llama3" => {
                        let f = |k: &str| {
                            r.get(k)
                                .and_then(|v| v.as_f64())
                                .ok_or_else(|| invalid(format!("llama3 rope scaling needs {k:?}")))
                        };
                        Some(Llama3RopeScaling {
                            factor: f("factor")?,
                            low_freq_factor: f("low_freq_factor")?,
                            high_freq_factor: f("high_freq_factor")?,
                            original_max_position_embeddings: f(
                                "original_max_position_embeddings",
                            )?,
                        })
                    }
                    other => {
                        return Err(invalid(format!(
                            "rope_type {other:?} is not supported; accepted: default, llama3"
                        )))
                    }
                }
            }
            None => None,
        };
        let mistral = model_type == "mistral";
        if let Some(act) = j.get("hidden_act") {
            if act.as_str() != Some("silu") {
                return Err(invalid(format!(
                    "hidden_act {act} is not supported (the FFN is SwiGLU); accepted: \"silu\""
                )));
            }
        }
        // Biases on the products: transformers would add them; greta's products have none.
        for k in ["attention_bias", "mlp_bias"] {
            if j.get(k).and_then(|v| v.as_bool()) == Some(true) {
                return Err(invalid(format!(
                    "{k} true is not supported (the products have no bias); accepted: false"
                )));
            }
        }
        // The defaults are transformers' (LlamaConfig's, MistralConfig's), so a config.json
        // that leaves a field out loads as transformers loads it.
        let max_context = opt("max_position_embeddings")
            .map(|v| v as usize)
            .unwrap_or(if mistral { 4096 * 32 } else { 2048 });
        // Only Mistral's attention has a window: absent, MistralConfig's 4096; null, none.
        let sliding_window = match (mistral, j.get("sliding_window")) {
            (false, _) => None,
            (true, None) => Some(4096),
            (true, Some(v)) if v.is_null() => None,
            (true, Some(v)) => Some(v.as_u64().ok_or_else(|| {
                invalid(format!("sliding_window {v} is not a whole number or null"))
            })? as usize),
        }
        .filter(|&w| w < max_context);
        LlamaConfig {
            vocab_size: num("vocab_size")? as usize,
            hidden,
            intermediate: num("intermediate_size")? as usize,
            n_layers: num("num_hidden_layers")? as usize,
            n_heads,
            n_kv_heads: match j.get("num_key_value_heads") {
                // MistralConfig's default is 8; null (or LlamaConfig's absent) is n_heads.
                None if mistral => 8,
                _ => opt("num_key_value_heads")
                    .map(|v| v as usize)
                    .unwrap_or(n_heads),
            },
            head_dim: opt("head_dim")
                .map(|v| v as usize)
                .unwrap_or(hidden.checked_div(n_heads).unwrap_or(0)),
            rms_eps: opt("rms_norm_eps").unwrap_or(1e-6) as f32,
            rope_theta,
            rope_style: RopeStyle::HalfSplit,
            rope_scaling,
            max_context: sliding_window.unwrap_or(max_context),
            tied_embeddings: j
                .get("tie_word_embeddings")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            sliding_window,
        }
        .check(&file)
    }

    /// Matrix elements of one layer (Q, K, V, O, gate, up, down; norms not counted).
    pub fn layer_matrix_params(&self) -> usize {
        let (d, q, kv) = (
            self.hidden,
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        );
        d * q * 2 + d * kv * 2 + 3 * d * self.intermediate
    }

    /// Matrix elements of the whole model: the layers, the embedding, and the LM head
    /// unless it is tied to the embedding (norms not counted).
    pub fn matrix_params(&self) -> usize {
        self.n_layers * self.layer_matrix_params()
            + self.vocab_size * self.hidden * (2 - self.tied_embeddings as usize)
    }

    /// Per-frequency inverse wavelengths: theta^(-2i/d), with Llama 3 scaling applied.
    pub fn rope_inv_freq(&self, freq_factors: Option<&[f32]>) -> Vec<f32> {
        let d = self.head_dim as f64;
        (0..self.head_dim / 2)
            .map(|i| {
                let mut inv = self.rope_theta.powf(-(2.0 * i as f64) / d);
                if let Some(s) = &self.rope_scaling {
                    inv = llama3_scale(inv, s);
                }
                if let Some(f) = freq_factors {
                    inv /= f[i] as f64;
                }
                inv as f32
            })
            .collect()
    }
}

/// transformers' `_compute_llama3_parameters`, per frequency.
fn llama3_scale(inv_freq: f64, s: &Llama3RopeScaling) -> f64 {
    let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
    if wavelen < high_wavelen {
        inv_freq
    } else if wavelen > low_wavelen {
        inv_freq / s.factor
    } else {
        let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
            / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * inv_freq / s.factor + smooth * inv_freq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(extra: serde_json::Value) -> LlamaConfig {
        hf_config(extra).unwrap()
    }

    fn hf_config(extra: serde_json::Value) -> Result<LlamaConfig, ConfigError> {
        let mut j = serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "num_attention_heads": 16,
            "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 100,
        });
        for (k, v) in extra.as_object().unwrap() {
            j[k] = v.clone();
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, j.to_string()).unwrap();
        LlamaConfig::from_hf_config(&p)
    }

    /// Fields a config.json leaves out take transformers' defaults for its model_type
    /// (LlamaConfig, MistralConfig), and Mistral's sliding window cuts the context.
    #[test]
    fn hf_defaults_are_transformers_per_model_type() {
        let llama = hf(serde_json::json!({"sliding_window": 16}));
        assert_eq!(
            (llama.n_kv_heads, llama.max_context, llama.sliding_window),
            (16, 2048, None),
            "LlamaConfig: no window, kv heads = heads, 2048 positions"
        );
        assert_eq!(llama.rms_eps, 1e-6);
        let mistral = hf(serde_json::json!({"model_type": "mistral"}));
        assert_eq!(
            (
                mistral.n_kv_heads,
                mistral.max_context,
                mistral.sliding_window
            ),
            (8, 4096, Some(4096)),
            "MistralConfig: 8 kv heads, 4096-key window over 131072 positions"
        );
        let unwindowed = hf(serde_json::json!({
            "model_type": "mistral", "sliding_window": null, "max_position_embeddings": 32768,
            "num_key_value_heads": null,
        }));
        assert_eq!(
            (
                unwindowed.n_kv_heads,
                unwindowed.max_context,
                unwindowed.sliding_window
            ),
            (16, 32768, None)
        );
        let e = hf_config(serde_json::json!({"hidden_act": "gelu"})).unwrap_err();
        assert!(
            e.to_string()
                .contains("hidden_act \"gelu\" is not supported"),
            "{e}"
        );
        let wide = hf(serde_json::json!({
            "model_type": "mistral", "sliding_window": 32768, "max_position_embeddings": 32768,
        }));
        assert_eq!((wide.max_context, wide.sliding_window), (32768, None));
    }
}
