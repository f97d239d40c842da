//! Perplexity as llama.cpp's `llama-perplexity` computes it by default, so the two compare:
//! the text is tokenized once (BOS first when the model adds one), cut into
//! non-overlapping chunks of `n_ctx` tokens, the first token of each chunk replaced by BOS
//! (when the model adds one), and only the second half of each chunk scored.
//!
//! The forward passes report to an observer: `NoTrace` for the plain figure, or one that
//! injects numerics probes (`--inject prefill@*:ffn_norm:f16`: what a rounding the GPU or a
//! peer applies costs the model's perplexity, not only its audit).

use greta_trace::StageObserver;

use crate::llama::{ForwardError, Llama, Logits};

#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error("perplexity with a context of {n_ctx} needs at least {} tokens; the text has {tokens}", 2 * n_ctx)]
    TooShort { tokens: usize, n_ctx: usize },
    #[error("context {n_ctx} is too small; accepted: 8 or more (and at most the model's {max})")]
    BadContext { n_ctx: usize, max: usize },
    #[error(transparent)]
    Forward(#[from] ForwardError),
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

pub fn perplexity(
    model: &Llama,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    obs: &mut dyn StageObserver,
    on_chunk: &mut dyn FnMut(usize, usize, f64),
) -> Result<PerplexityResult, PerplexityError> {
    if n_ctx < 8 || n_ctx > model.config.max_context.max(8) {
        return Err(PerplexityError::BadContext {
            n_ctx,
            max: model.config.max_context,
        });
    }
    if tokens.len() < 2 * n_ctx {
        return Err(PerplexityError::TooShort {
            tokens: tokens.len(),
            n_ctx,
        });
    }
    let n_chunks = tokens.len() / n_ctx;
    let first = n_ctx / 2;
    let vocab = model.config.vocab_size;
    let mut nll = 0f64;
    let mut count = 0usize;
    let mut running = Vec::with_capacity(n_chunks);
    let mut cache = model.new_cache(n_ctx);
    for c in 0..n_chunks {
        let start = c * n_ctx;
        let mut chunk = tokens[start..start + n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        cache.truncate(0);
        let logits = model.forward(&chunk, &mut cache, Logits::All, obs)?;
        for j in first..n_ctx - 1 {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let target = tokens[start + j + 1] as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            nll += lse - row[target] as f64;
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
