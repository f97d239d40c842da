//! The generation loop: prefill the prompt, then decode one token at a time.

pub mod sampler;
pub mod stop;

use std::time::{Duration, Instant};

use greta_trace::StageObserver;

use greta_kernels::gpu::{DeviceSampling, SAMPLE_K_MAX};

use crate::llama::gpu::{DecodeAhead, GpuLlama, GpuState, TokenPick};
use crate::llama::{ForwardError, KvCache, Llama, Logits};
use sampler::{Sampler, SamplerError};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error("the prompt is empty: at least one token is needed")]
    EmptyPrompt,
    #[error(
        "the prompt has {prompt} tokens and {max_new} more were asked for, but the context holds \
         {capacity}; shorten the prompt, lower --max-tokens or raise --ctx"
    )]
    PromptTooLong {
        prompt: usize,
        max_new: usize,
        capacity: usize,
    },
    #[error(
        "the cache already holds {cached} positions and the prompt has {prompt} tokens: the \
         cache must hold fewer than the prompt, whose last token gives the first logits"
    )]
    CacheCoversPrompt { cached: usize, prompt: usize },
}

/// What one generation did, for the speed report.
#[derive(Debug, Clone, Default)]
pub struct GenerateStats {
    /// The whole prompt, the tokens the cache already held included.
    pub prompt_tokens: usize,
    /// The prompt's leading tokens the cache already held (not computed again).
    pub reused_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    /// Whether generation stopped at an end-of-generation token (else at max_new).
    pub stopped_at_eog: bool,
    /// Every token sampled, in order, an end-of-generation token that ended the run
    /// included. The cache then holds the prompt and a prefix of these (the last one sampled
    /// is never fed back).
    pub tokens: Vec<u32>,
}

impl GenerateStats {
    /// Tokens generated, an end-of-generation token that ended the run included.
    pub fn generated_tokens(&self) -> usize {
        self.tokens.len()
    }
    /// The prompt tokens the prefill computed.
    pub fn computed_tokens(&self) -> usize {
        self.prompt_tokens - self.reused_tokens
    }
    pub fn prefill_tok_s(&self) -> f64 {
        self.computed_tokens() as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }
    /// Decode speed over the tokens decoded after the first (which came from prefill).
    pub fn decode_tok_s(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// How to pick tokens and when to stop.
pub struct Decoding<'a> {
    /// Most tokens to generate.
    pub max_new: usize,
    pub sampler: &'a mut Sampler,
    /// Tokens that end generation (EOS, end of turn).
    pub is_eog: &'a dyn Fn(u32) -> bool,
}

/// Refuses, before any work, a request the cache cannot hold. `cached` of the prompt's
/// tokens are in the cache already; the last sampled token is never fed back, so prompt +
/// max_new - 1 positions are used.
fn check_fits(
    prompt: usize,
    max_new: usize,
    cached: usize,
    capacity: usize,
) -> Result<(), GenerateError> {
    if prompt == 0 {
        return Err(GenerateError::EmptyPrompt);
    }
    if cached >= prompt {
        return Err(GenerateError::CacheCoversPrompt { cached, prompt });
    }
    if prompt + max_new.saturating_sub(1) > capacity {
        return Err(GenerateError::PromptTooLong {
            prompt,
            max_new,
            capacity,
        });
    }
    Ok(())
}

/// Generates up to `max_new` tokens after `prompt`, calling `on_token` with each as soon
/// as it is sampled (return false to stop). Stops early at end-of-generation tokens.
///
/// The cache holds the keys and values of `prompt`'s first `cache.len()` tokens (none for a
/// fresh cache; a conversation's earlier turns, `crate::conversation`), and the rest are
/// computed; the sampler's repetition window sees the whole prompt either way.
pub fn generate(
    model: &Llama,
    cache: &mut KvCache,
    prompt: &[u32],
    decoding: Decoding,
    obs: &mut dyn StageObserver,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<GenerateStats, GenerateError> {
    let Decoding {
        max_new,
        sampler,
        is_eog,
    } = decoding;
    let reused = cache.len();
    check_fits(prompt.len(), max_new, reused, cache.capacity())?;
    let mut stats = GenerateStats {
        prompt_tokens: prompt.len(),
        reused_tokens: reused,
        ..Default::default()
    };
    let mut history = prompt.to_vec();
    let t0 = Instant::now();
    let logits = model.forward(&prompt[reused..], cache, Logits::Last, obs)?;
    let first = sampler.sample(&logits, &history)?;
    stats.prefill_time = t0.elapsed();
    let t1 = Instant::now();
    decode_loop::<GenerateError, _>(
        first,
        max_new,
        is_eog,
        &mut history,
        &mut stats,
        on_token,
        |tok, history| {
            let logits = model.forward(&[tok], cache, Logits::Last, obs)?;
            Ok(sampler.sample(&logits, history)?)
        },
    )?;
    stats.decode_time = t1.elapsed();
    Ok(stats)
}

/// Where the GPU path picks tokens for a sampler configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuSampling {
    /// On the device, inside the decode step (and its graph).
    Device(TokenPick),
    /// On the host from logits read back each step (no graph), for the reason given.
    Host(String),
}

/// Greedy decoding and temperature / top-k (1..=256) / top-p sampling run on the device;
/// a repetition penalty (which needs the history) or a top-k outside the device's range is
/// sampled on the host.
pub fn gpu_sampling(cfg: &sampler::SamplerConfig) -> GpuSampling {
    if cfg.repetition_penalty != 1.0 {
        return GpuSampling::Host(format!(
            "--repeat-penalty {} is applied on the host: each step's logits are read back and the decode graph is not used",
            cfg.repetition_penalty
        ));
    }
    if cfg.temperature == 0.0 {
        return GpuSampling::Device(TokenPick::Argmax);
    }
    if cfg.top_k == 0 || cfg.top_k > SAMPLE_K_MAX {
        return GpuSampling::Host(format!(
            "--top-k {} is sampled on the host (the device sampler takes 1..={SAMPLE_K_MAX}): each step's logits are read back and the decode graph is not used",
            cfg.top_k
        ));
    }
    GpuSampling::Device(TokenPick::Sample {
        cfg: DeviceSampling {
            temperature: cfg.temperature,
            top_k: cfg.top_k,
            top_p: cfg.top_p,
        },
        seed: cfg.seed,
    })
}

/// Generation on the GPU, as [`generate`] on the CPU (the state holds the keys and values
/// of `prompt`'s first `st.len()` tokens); a prompt longer than the state's rows is
/// prefilled in parts ([`GpuLlama::prefill_head`]). Where [`gpu_sampling`] says so, the
/// token is picked on the device (into the next step's input, one captured graph per step
/// when `graph`), drawing the same tokens from the same seed as the host sampler; otherwise
/// each step's logits are read back and sampled on the host, without the graph.
pub fn generate_gpu(
    model: &GpuLlama,
    st: &mut GpuState,
    prompt: &[u32],
    decoding: Decoding,
    graph: bool,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<GenerateStats, GpuGenerateError> {
    let Decoding {
        max_new,
        sampler,
        is_eog,
    } = decoding;
    let reused = st.len();
    check_fits(prompt.len(), max_new, reused, st.capacity())?;
    let mut stats = GenerateStats {
        prompt_tokens: prompt.len(),
        reused_tokens: reused,
        ..Default::default()
    };
    let on_device = match gpu_sampling(sampler.config()) {
        GpuSampling::Device(pick) => {
            st.set_pick(pick)?;
            true
        }
        GpuSampling::Host(_) => false,
    };
    let mut history = prompt.to_vec();
    let t0 = Instant::now();
    // A prompt longer than the state's rows: all but its last part first.
    let last = model.prefill_head(&prompt[reused..], st)?;
    let first = if on_device {
        model.prefill_pick(last, st)?
    } else {
        let logits = model.forward(last, st, Logits::Last, &mut greta_trace::NoTrace)?;
        sampler.sample(&logits, &history)?
    };
    stats.prefill_time = t0.elapsed();
    let t1 = Instant::now();
    let mut step = if on_device {
        // One step ahead: the GPU decodes token t + 1 while the host hands out token t.
        let steps = max_new.saturating_sub(1);
        GpuStep::Ahead(DecodeAhead::new(model, st, graph, steps)?)
    } else {
        GpuStep::Host { model, st, sampler }
    };
    let looped = decode_loop::<GpuGenerateError, _>(
        first,
        max_new,
        is_eog,
        &mut history,
        &mut stats,
        on_token,
        |tok, history| step.next(tok, history),
    );
    let finished = match step {
        GpuStep::Ahead(ahead) => ahead.finish(),
        GpuStep::Host { .. } => Ok(()),
    };
    looped?;
    finished?;
    stats.decode_time = t1.elapsed();
    Ok(stats)
}

/// How `generate_gpu` gets the token after `tok`: from the device, a step ahead of the host,
/// or from the logits read back and sampled on the host.
enum GpuStep<'a> {
    Ahead(DecodeAhead<'a>),
    Host {
        model: &'a GpuLlama,
        st: &'a mut GpuState,
        sampler: &'a mut Sampler,
    },
}

impl GpuStep<'_> {
    fn next(&mut self, tok: u32, history: &[u32]) -> Result<u32, GpuGenerateError> {
        Ok(match self {
            GpuStep::Ahead(ahead) => ahead.next_token()?,
            GpuStep::Host { model, st, sampler } => {
                let logits = model.forward(&[tok], st, Logits::Last, &mut greta_trace::NoTrace)?;
                sampler.sample(&logits, history)?
            }
        })
    }
}

/// The decode loop both backends share: hand each token to `on_token`, stop at an
/// end-of-generation token, at `max_new`, or when `on_token` says so; otherwise `next`
/// feeds the token and returns the one after it.
fn decode_loop<E, F: FnMut(u32, &[u32]) -> Result<u32, E>>(
    first: u32,
    max_new: usize,
    is_eog: &dyn Fn(u32) -> bool,
    history: &mut Vec<u32>,
    stats: &mut GenerateStats,
    on_token: &mut dyn FnMut(u32) -> bool,
    mut next: F,
) -> Result<(), E> {
    let mut tok = first;
    for i in 0..max_new {
        history.push(tok);
        stats.tokens.push(tok);
        if is_eog(tok) {
            stats.stopped_at_eog = true;
            break;
        }
        if !on_token(tok) || i + 1 == max_new {
            break;
        }
        tok = next(tok, history)?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum GpuGenerateError {
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Gpu(#[from] crate::llama::gpu::GpuError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
}
