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
use crate::llama::{ForwardError, Llama, LlamaConfig, Logits};

/// One forward pass over a chunk from its first position: every position's logits, `vocab`
/// floats a row.
pub type ChunkLogits<'a> = dyn FnMut(&[u32]) -> Result<Vec<f32>, PerplexityError> + 'a;

/// The CPU model's chunks, reporting to `obs` (`NoTrace`, or a recorder injecting probes).
pub fn cpu_logits<'a>(
    model: &'a Llama,
    n_ctx: usize,
    obs: &'a mut dyn StageObserver,
) -> impl FnMut(&[u32]) -> Result<Vec<f32>, PerplexityError> + 'a {
    let mut cache = model.new_cache(n_ctx);
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
    let n_chunks = tokens.len() / n_ctx;
    let first = n_ctx / 2;
    let vocab = config.vocab_size;
    let mut nll = 0f64;
    let mut count = 0usize;
    let mut running = Vec::with_capacity(n_chunks);
    for (c, (start, chunk)) in chunks(config, tokens, n_ctx, bos)?.enumerate() {
        let logits = logits_of(&chunk)?;
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
    let n_chunks = tokens.len() / n_ctx;
    let first = n_ctx / 2;
    let vocab = config.vocab_size;
    let (mut nll_b, mut nll_p, mut same) = (0f64, 0f64, 0usize);
    let mut klds = Vec::new();
    for (c, (start, chunk)) in chunks(config, tokens, n_ctx, bos)?.enumerate() {
        let base = base_of(&chunk)?;
        let probed = probe_of(&chunk)?;
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
