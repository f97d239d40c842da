//! Perplexity as llama.cpp's `llama-perplexity` computes it by default, so the two compare:
//! the text is tokenized once (BOS first when the model adds one), cut into
//! non-overlapping chunks of `n_ctx` tokens, the first token of each chunk replaced by BOS
//! (when the model adds one), and only the second half of each chunk scored.
//!
//! A chunk's logits come from a closure (`ChunkLogits`): the CPU model's forward pass
//! (`cpu_logits`, with an observer that may inject numerics probes: what a rounding costs
//! the model's perplexity, not only its audit) or the GPU's. `divergence` runs two of them
//! on every chunk and measures how far the second's next-token distributions lie from the
//! first's (the CPU reference against a probe, or against the GPU route).

use greta_trace::StageObserver;

use crate::llama::gpu::GpuError;
use crate::llama::{ForwardError, KvFormat, Llama, LlamaConfig, Logits};

/// One forward pass over a chunk from its first position: every position's logits, `vocab`
/// floats a row.
pub type ChunkLogits<'a> = dyn FnMut(&[u32]) -> Result<Vec<f32>, PerplexityError> + 'a;

/// The CPU model's chunks over a KV cache of `format`, reporting to `obs` (`NoTrace`, or a
/// recorder injecting probes).
pub fn cpu_logits<'a>(
    model: &'a Llama,
    n_ctx: usize,
    format: KvFormat,
    obs: &'a mut dyn StageObserver,
) -> impl FnMut(&[u32]) -> Result<Vec<f32>, PerplexityError> + 'a {
    let mut cache = model.new_cache_as(n_ctx, format);
    move |chunk| {
        cache.truncate(0);
        Ok(model.forward(chunk, &mut cache, Logits::All, obs)?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error("perplexity with a context of {n_ctx} needs at least {} tokens; the text has {tokens}", 2 * n_ctx)]
    TooShort { tokens: usize, n_ctx: usize },
    #[error("context {n_ctx} is too small; accepted: 8 or more (and at most the model's {max})")]
    BadContext { n_ctx: usize, max: usize },
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(
        "a chunk of {n_ctx} tokens gave {got} logits; {n_ctx} x the vocabulary's {vocab} expected"
    )]
    LogitsShape {
        n_ctx: usize,
        vocab: usize,
        got: usize,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PerplexityResult {
    pub ppl: f64,
    pub chunks: usize,
    /// Tokens the text tokenized to.
    pub tokens: usize,
    /// Per-chunk running perplexity, as llama-perplexity prints it.
    pub running: Vec<f64>,
}

/// The chunks llama-perplexity scores: `n_ctx` tokens each, BOS first where the model adds
/// one. Checks the context and the text's length.
fn chunks<'a>(
    config: &LlamaConfig,
    tokens: &'a [u32],
    n_ctx: usize,
    bos: Option<u32>,
) -> Result<impl Iterator<Item = (usize, Vec<u32>)> + 'a, PerplexityError> {
    if n_ctx < 8 || n_ctx > config.max_context.max(8) {
        return Err(PerplexityError::BadContext {
            n_ctx,
            max: config.max_context,
        });
    }
    if tokens.len() < 2 * n_ctx {
        return Err(PerplexityError::TooShort {
            tokens: tokens.len(),
            n_ctx,
        });
    }
    Ok((0..tokens.len() / n_ctx).map(move |c| {
        let start = c * n_ctx;
        let mut chunk = tokens[start..start + n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        (start, chunk)
    }))
}

/// A chunk's logits, checked to hold a row for each of its positions.
fn chunk_logits(
    logits_of: &mut ChunkLogits,
    chunk: &[u32],
    vocab: usize,
) -> Result<Vec<f32>, PerplexityError> {
    let logits = logits_of(chunk)?;
    match logits.len() == chunk.len() * vocab {
        true => Ok(logits),
        false => Err(PerplexityError::LogitsShape {
            n_ctx: chunk.len(),
            vocab,
            got: logits.len(),
        }),
    }
}

/// log Σ exp(row) (in f64, from the row's maximum) and the row's first maximum.
fn log_sum_exp(row: &[f32]) -> (f64, usize) {
    let (arg, max) =
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(ai, am), (i, &v)| match v > am {
                true => (i, v),
                false => (ai, am),
            });
    let max = max as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    (sum.ln() + max, arg)
}

pub fn perplexity(
    config: &LlamaConfig,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    logits_of: &mut ChunkLogits,
    on_chunk: &mut dyn FnMut(usize, usize, f64),
) -> Result<PerplexityResult, PerplexityError> {
    let all = chunks(config, tokens, n_ctx, bos)?;
    let n_chunks = tokens.len() / n_ctx;
    let first = n_ctx / 2;
    let vocab = config.vocab_size;
    let mut nll = 0f64;
    let mut count = 0usize;
    let mut running = Vec::with_capacity(n_chunks);
    for (c, (start, chunk)) in all.enumerate() {
        let logits = chunk_logits(logits_of, &chunk, vocab)?;
        for j in first..n_ctx - 1 {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let target = tokens[start + j + 1] as usize;
            nll += log_sum_exp(row).0 - row[target] as f64;
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        on_chunk(c + 1, n_chunks, ppl);
    }
    Ok(PerplexityResult {
        ppl: (nll / count as f64).exp(),
        chunks: n_chunks,
        tokens: tokens.len(),
        running,
    })
}

/// How far a probed model's next-token distributions lie from the plain model's, at the
/// positions perplexity scores (llama-perplexity's `--kl-divergence` figures).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Divergence {
    /// Perplexity of the plain run and of the probed one, over the same tokens.
    pub ppl_base: f64,
    pub ppl_probe: f64,
    /// KL(plain ‖ probed) per scored position, in nats: mean, 99th percentile, largest.
    pub kld_mean: f64,
    pub kld_p99: f64,
    pub kld_max: f64,
    /// The fraction of scored positions whose most likely token is the same in both.
    pub same_top1: f64,
    pub scored: usize,
}

/// Every chunk twice, through `base` (the CPU reference) and `probe` (the reference under
/// numerics probes, or the GPU route): what the probe's numerics cost the model's
/// predictions, position by position.
pub fn divergence(
    config: &LlamaConfig,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    base_of: &mut ChunkLogits,
    probe_of: &mut ChunkLogits,
    on_chunk: &mut dyn FnMut(usize, usize),
) -> Result<Divergence, PerplexityError> {
    let all = chunks(config, tokens, n_ctx, bos)?;
    let n_chunks = tokens.len() / n_ctx;
    let first = n_ctx / 2;
    let vocab = config.vocab_size;
    let (mut nll_b, mut nll_p, mut same) = (0f64, 0f64, 0usize);
    let mut klds = Vec::new();
    for (c, (start, chunk)) in all.enumerate() {
        let base = chunk_logits(base_of, &chunk, vocab)?;
        let probed = chunk_logits(probe_of, &chunk, vocab)?;
        for j in first..n_ctx - 1 {
            let (b, q) = (
                &base[j * vocab..(j + 1) * vocab],
                &probed[j * vocab..(j + 1) * vocab],
            );
            let ((lb, ab), (lq, aq)) = (log_sum_exp(b), log_sum_exp(q));
            let target = tokens[start + j + 1] as usize;
            nll_b += lb - b[target] as f64;
            nll_p += lq - q[target] as f64;
            same += usize::from(ab == aq);
            // Σ p_b (log p_b − log p_q), log p = logit − lse.
            let kld: f64 = b
                .iter()
                .zip(q)
                .map(|(&x, &y)| {
                    let lp = x as f64 - lb;
                    lp.exp() * (lp - (y as f64 - lq))
                })
                .sum();
            klds.push(kld.max(0.0));
        }
        on_chunk(c + 1, n_chunks);
    }
    let n = klds.len();
    let mean = klds.iter().sum::<f64>() / n as f64;
    klds.sort_by(f64::total_cmp);
    Ok(Divergence {
        ppl_base: (nll_b / n as f64).exp(),
        ppl_probe: (nll_p / n as f64).exp(),
        kld_mean: mean,
        kld_p99: klds[(n * 99 / 100).min(n - 1)],
        kld_max: klds[n - 1],
        same_top1: same as f64 / n as f64,
        scored: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::RopeStyle;

    fn config(vocab: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size: vocab,
            hidden: 8,
            intermediate: 16,
            n_layers: 1,
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 8,
            rms_eps: 1e-5,
            rope_theta: 1e4,
            rope_style: RopeStyle::HalfSplit,
            rope_scaling: None,
            max_context: 64,
            tied_embeddings: false,
            sliding_window: None,
        }
    }

    /// Logits that depend on the chunk's tokens only: row j favours token (t_j + 1) % 4.
    fn logits(chunk: &[u32], sharp: f32) -> Vec<f32> {
        chunk
            .iter()
            .flat_map(|&t| (0..4).map(move |v| if v == (t + 1) % 4 { sharp } else { 0.0 }))
            .collect()
    }

    /// Against closed forms: the same model twice diverges by 0 and agrees everywhere; a
    /// sharper copy's KL per position is KL(p ‖ q) for the two 4-way distributions, and its
    /// top token is the same; the perplexity is exp of the mean of -log p(next token).
    #[test]
    fn divergence_and_perplexity_match_closed_forms() {
        let cfg = config(4);
        let tokens: Vec<u32> = (0..32).map(|i| i % 4).collect();
        let mut a = |c: &[u32]| Ok(logits(c, 1.0));
        let mut b = |c: &[u32]| Ok(logits(c, 1.0));
        let d = divergence(&cfg, &tokens, 16, None, &mut a, &mut b, &mut |_, _| {}).unwrap();
        assert_eq!((d.kld_mean, d.kld_max, d.same_top1), (0.0, 0.0, 1.0));
        assert_eq!(
            d.scored,
            2 * 7,
            "positions 8..15 of each chunk predict 7 tokens"
        );
        // Every next token is (t + 1) % 4, the favoured one: p = e / (e + 3).
        let p = std::f64::consts::E / (std::f64::consts::E + 3.0);
        assert!((d.ppl_base - 1.0 / p).abs() < 1e-12, "{}", d.ppl_base);
        let r = perplexity(&cfg, &tokens, 16, None, &mut a, &mut |_, _, _| {}).unwrap();
        assert!((r.ppl - d.ppl_base).abs() < 1e-12);
        let mut sharp = |c: &[u32]| Ok(logits(c, 2.0));
        let d = divergence(&cfg, &tokens, 16, None, &mut a, &mut sharp, &mut |_, _| {}).unwrap();
        let q = (2f64).exp() / ((2f64).exp() + 3.0);
        let kl = p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / 3.0 / ((1.0 - q) / 3.0)).ln();
        assert!(
            (d.kld_mean - kl).abs() < 1e-9 && (d.kld_max - kl).abs() < 1e-9,
            "{d:?} {kl}"
        );
        assert_eq!(d.same_top1, 1.0);
    }

    /// A closure that gives the wrong number of logits is an error naming both counts.
    #[test]
    fn a_chunk_with_the_wrong_logits_count_is_an_error() {
        let cfg = config(4);
        let tokens: Vec<u32> = (0..32).map(|i| i % 4).collect();
        let mut short = |c: &[u32]| Ok(vec![0.0; c.len() * 4 - 1]);
        let e = perplexity(&cfg, &tokens, 16, None, &mut short, &mut |_, _, _| {}).unwrap_err();
        assert!(
            e.to_string()
                .contains("gave 63 logits; 16 x the vocabulary's 4"),
            "{e}"
        );
    }
}
