//! Random-weight models of real shapes, built in memory from a seed, for benchmarks: the
//! speed of a forward pass depends on the shapes, not on the values. `synthetic:llama2-7b`,
//! `synthetic:llama3.2-1b` and `synthetic:smollm2-135m` have the shapes of those models
//! (Llama 3.2's RoPE frequency scaling left out: it changes no shape and no cost);
//! `synthetic:tiny` is small enough for tests. Matrices are f16 (as the GPU stores them, and as `--write-gguf` saves
//! them for other engines), norms f32 and 1.
//!
//! Values are uniform in ±0.02·√3 (standard deviation 0.02, the Llama initialisation), each
//! drawn by splitmix64 from (seed, tensor, index), so that tensors are generated in parallel
//! and the same seed always gives the same model.

use half::f16;
use rayon::prelude::*;

use crate::io::quant::GgmlType;
use crate::llama::config::{LlamaConfig, RopeStyle};
use crate::llama::weights::{LayerWeights, LlamaWeights, Matrix, Storage};

/// The shapes `synthetic:NAME` accepts.
pub const NAMES: [&str; 4] = ["llama2-7b", "llama3.2-1b", "smollm2-135m", "tiny"];

#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    #[error("unknown synthetic model {0:?}; accepted: {accepted}", accepted = NAMES.map(|n| format!("synthetic:{n}")).join(", "))]
    Unknown(String),
}

/// The config of a synthetic shape. RoPE pairs adjacent dimensions, as GGUF's `llama`
/// architecture does, so the GGUF written from these weights means the same model to
/// llama.cpp.
pub fn config(name: &str) -> Result<LlamaConfig, SyntheticError> {
    let base = LlamaConfig {
        vocab_size: 32_000,
        hidden: 4096,
        intermediate: 11_008,
        n_layers: 32,
        n_heads: 32,
        n_kv_heads: 32,
        head_dim: 128,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_style: RopeStyle::AdjacentPairs,
        rope_scaling: None,
        max_context: 4096,
        tied_embeddings: false,
        sliding_window: None,
    };
    Ok(match name {
        "llama2-7b" => base,
        // Grouped-query attention (4 query heads a KV head), a 128 256-token vocabulary and
        // tied embeddings: the shape between the other two.
        "llama3.2-1b" => LlamaConfig {
            vocab_size: 128_256,
            hidden: 2048,
            intermediate: 8192,
            n_layers: 16,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 64,
            rope_theta: 500_000.0,
            max_context: 131_072,
            tied_embeddings: true,
            sliding_window: None,
            ..base
        },
        "smollm2-135m" => LlamaConfig {
            vocab_size: 49_152,
            hidden: 576,
            intermediate: 1536,
            n_layers: 30,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            max_context: 8192,
            tied_embeddings: true,
            sliding_window: None,
            ..base
        },
        "tiny" => LlamaConfig {
            vocab_size: 512,
            hidden: 64,
            intermediate: 160,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            max_context: 256,
            ..base
        },
        other => return Err(SyntheticError::Unknown(other.to_string())),
    })
}

/// `Some(name)` for a model argument of the form `synthetic:NAME`.
pub fn parse_spec(spec: &str) -> Option<&str> {
    spec.strip_prefix("synthetic:")
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_f16(rows: usize, cols: usize, seed: u64, tensor: u64) -> Matrix {
    let a = 0.02 * 3f32.sqrt();
    let key = splitmix(seed ^ splitmix(tensor));
    let mut bytes = vec![0u8; rows * cols * 2];
    bytes
        .par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(c, chunk)| {
            let first = (c << 15) as u64;
            for (i, b) in chunk.chunks_exact_mut(2).enumerate() {
                let u = (splitmix(key ^ (first + i as u64)) >> 40) as f32 / (1u64 << 24) as f32;
                b.copy_from_slice(&f16::from_f32((2.0 * u - 1.0) * a).to_le_bytes());
            }
        });
    Matrix {
        rows,
        cols,
        storage: Storage::Blocks {
            ty: GgmlType::F16,
            bytes,
        },
    }
}

/// Builds the weights of `cfg` from `seed`; `progress(done, total)` per layer.
pub fn weights(
    cfg: &LlamaConfig,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> LlamaWeights {
    let (d, q_row, kv_row) = (
        cfg.hidden,
        cfg.n_heads * cfg.head_dim,
        cfg.n_kv_heads * cfg.head_dim,
    );
    let total = cfg.n_layers + 1;
    let token_embd = random_f16(cfg.vocab_size, d, seed, 0);
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let t = |i: u64| 16 + 16 * l as u64 + i;
        layers.push(LayerWeights {
            attn_norm: vec![1.0; d],
            wq: random_f16(q_row, d, seed, t(0)),
            wk: random_f16(kv_row, d, seed, t(1)),
            wv: random_f16(kv_row, d, seed, t(2)),
            wo: random_f16(d, q_row, seed, t(3)),
            ffn_norm: vec![1.0; d],
            w_gate: random_f16(cfg.intermediate, d, seed, t(4)),
            w_up: random_f16(cfg.intermediate, d, seed, t(5)),
            w_down: random_f16(d, cfg.intermediate, seed, t(6)),
        });
        progress(l + 1, total);
    }
    let output = (!cfg.tied_embeddings).then(|| random_f16(cfg.vocab_size, d, seed, 1));
    progress(total, total);
    LlamaWeights {
        token_embd,
        layers,
        output_norm: vec![1.0; d],
        output,
        rope_freq_factors: None,
    }
}

/// The same weights as the CPU backend holds f16 files: widened to f32 at load (its f16
/// route is the generic block loop, many times slower than the f32 GEMV).
pub fn widened_for_cpu(mut w: LlamaWeights) -> LlamaWeights {
    // In parallel over row bands: a 7B's 13 GB is a calibration's to widen (4 of its layers
    // took 11.6 s on one core of the 2-core build machine before, 1.9 s on both now).
    fn widen(m: &mut Matrix) {
        const BAND: usize = 64;
        if let Storage::Blocks { .. } = m.storage {
            let (view, k) = (m.view(), m.cols);
            let mut v = vec![0f32; m.rows * k];
            v.par_chunks_mut(BAND * k)
                .enumerate()
                .for_each(|(i, out)| view.rows_f32(i * BAND, k, out));
            m.storage = Storage::F32(v);
        }
    }
    widen(&mut w.token_embd);
    if let Some(o) = w.output.as_mut() {
        widen(o);
    }
    for l in &mut w.layers {
        for m in [
            &mut l.wq,
            &mut l.wk,
            &mut l.wv,
            &mut l.wo,
            &mut l.w_gate,
            &mut l.w_up,
            &mut l.w_down,
        ] {
            widen(m);
        }
    }
    w
}

/// `n` token ids in `0..vocab` from `seed` (a benchmark prompt).
pub fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    (0..n as u64)
        .map(|i| (splitmix(splitmix(seed ^ 0x5eed) ^ i) % vocab as u64) as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_the_published_models() {
        let c = config("llama2-7b").unwrap();
        // Llama-2-7B: 6.74 B parameters; SmolLM2-135M: 134.5 M (without norms);
        // Llama-3.2-1B: 1 235 814 400 with its 33 norms of 2048.
        assert_eq!(c.matrix_params(), 6_738_149_376);
        assert_eq!(
            config("llama3.2-1b").unwrap().matrix_params() + 33 * 2048,
            1_235_814_400
        );
        assert_eq!(config("smollm2-135m").unwrap().matrix_params(), 134_479_872);
        let err = config("llama9").unwrap_err().to_string();
        assert!(
            err.contains("synthetic:llama2-7b") && err.contains("llama9"),
            "{err}"
        );
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let c = config("tiny").unwrap();
        let bytes = |w: &LlamaWeights| match &w.layers[1].w_down.storage {
            Storage::Blocks { bytes, .. } => bytes.clone(),
            Storage::F32(_) => unreachable!(),
        };
        let a = weights(&c, 1, &mut |_, _| {});
        assert_eq!(bytes(&a), bytes(&weights(&c, 1, &mut |_, _| {})));
        assert_ne!(bytes(&a), bytes(&weights(&c, 2, &mut |_, _| {})));
        // Uniform in ±0.0346: the mean square is 0.02² within sampling error.
        let m = &a.layers[0].w_gate;
        let mut v = vec![0f32; m.rows * m.cols];
        m.view().rows_f32(0, m.cols, &mut v);
        let ms = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32;
        assert!((ms.sqrt() - 0.02).abs() < 0.001, "rms {}", ms.sqrt());
        assert!(v.iter().all(|x| x.abs() <= 0.0347));
    }
}
