//! `greta generate`: a prompt through the chat template, prefill and decode on the chosen
//! backend, the text streamed to stdout (or one JSON object), speeds on stderr.

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use greta_hal::{BackendRequest, PlatformChoice};
use greta_model::conversation::Conversation;
use greta_model::generate::sampler::{Sampler, SamplerConfig};
use greta_model::generate::{self, Decoding};

use crate::trace_cmd::{self, TraceArgs};
use crate::{gpu_args, load_model, parse_backend, resolve_model, ModelArgs};

#[derive(Args)]
pub struct GenerateArgs {
    /// The prompt; read from stdin when absent or "-".
    prompt: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// Apply the model's chat template (default: on when the model has one).
    #[arg(long, overrides_with = "no_chat")]
    chat: bool,
    /// Send the prompt as raw text, without the chat template.
    #[arg(long)]
    no_chat: bool,
    /// System message for the chat template.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Print one JSON object when done instead of streaming the text: text, generated ids,
    /// token counts, why it stopped, prefill and decode speeds, backend and model.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    trace: TraceArgs,
}

/// How tokens are picked and where generation stops (`generate` and `chat`).
#[derive(Args)]
pub(crate) struct SamplingArgs {
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Repetition penalty over the last 64 tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Stop where the generated text first contains this string, and leave it out of the
    /// output; repeat the flag for several.
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Random seed: the same seed gives the same output.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl SamplingArgs {
    pub fn config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repeat_penalty,
            seed: self.seed,
            ..Default::default()
        }
    }
}

/// Where generation runs and the cache it has (`generate` and `chat`).
#[derive(Args)]
pub(crate) struct RunArgs {
    /// KV-cache capacity in tokens (default: the model's context, at most 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// Where to run: cpu, gpu or auto.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    pub backend: BackendRequest,
    /// GPU: launch each decode step's kernels one by one instead of replaying the captured graph.
    #[arg(long)]
    pub no_graph: bool,
    #[command(flatten)]
    pub gpu: gpu_args::GpuArgs,
    #[command(flatten)]
    pub kv: crate::kv_args::KvCacheArgs,
}

impl RunArgs {
    /// The KV cache's capacity: `--ctx`, refused past the model's context.
    pub fn capacity(&self, model: &greta_model::llama::Llama) -> Result<usize> {
        let max_ctx = model.config.max_context;
        match self.ctx {
            Some(c) if c > max_ctx => {
                bail!("--ctx {c} exceeds the model's context of {max_ctx} tokens")
            }
            Some(c) => Ok(c),
            None => Ok(max_ctx.min(4096)),
        }
    }

    /// Uploads the model for generation and says on stderr how it will decode (the graph,
    /// where tokens are picked, FP8 copies `auto` chose).
    pub fn upload_for_decode(
        self,
        gpu: &greta_hal::Gpu,
        model: &greta_model::llama::Llama,
        sampler: &SamplerConfig,
    ) -> Result<greta_model::llama::gpu::GpuLlama> {
        let t_up = Instant::now();
        let split_lo = self.gpu.split_lo;
        let model = self.gpu.upload(gpu, model)?;
        let route = match generate::gpu_sampling(sampler) {
            generate::GpuSampling::Device(_) if self.no_graph => {
                "eager (--no-graph), tokens picked on the device".to_string()
            }
            generate::GpuSampling::Device(_) => {
                "as a captured graph, tokens picked on the device".to_string()
            }
            generate::GpuSampling::Host(why) => format!("eager: {why}"),
        };
        // FP8 low halves cost device memory that the user did not name when `auto`
        // chose them: said here, with the option that skips them.
        let lo = model.split_lo();
        let fp8 = match lo == greta_model::llama::gpu::SplitLo::F16 {
            true => String::new(),
            false => format!(
                "; prefill lo products {lo} ({:.2} GB of FP8 weight copies, --split-lo {split_lo}; f16 skips them)",
                greta_model::llama::gpu::fp8_copy_bytes(&model.config, model.split_inputs, lo)
                    as f64
                    / 1e9,
            ),
        };
        eprintln!(
            "uploaded to {} in {:.2}s{fp8}; decode {route}",
            gpu.name(),
            t_up.elapsed().as_secs_f64(),
        );
        Ok(model)
    }
}

/// The line every generating command prints once the model is loaded.
pub(crate) fn say_loaded(
    path: &std::path::Path,
    lm: &greta_model::model::LoadedModel,
    selection: &greta_hal::Selection,
    load_time: std::time::Duration,
) {
    let c = &lm.model.config;
    eprintln!(
        "model: {} ({} layers, hidden {}, {} heads / {} KV heads, vocab {}); backend: {} ({}); loaded in {:.2}s",
        path.display(),
        c.n_layers,
        c.hidden,
        c.n_heads,
        c.n_kv_heads,
        c.vocab_size,
        selection.backend,
        selection.reason,
        load_time.as_secs_f64()
    );
}

/// Where generated text goes: streamed to stdout as it comes (unless `--json` keeps it for
/// one object), and kept whole either way. The first error writing ends generation and is
/// returned by `finish`.
struct TextSink {
    out: std::io::StdoutLock<'static>,
    stream: bool,
    text: String,
    error: Option<anyhow::Error>,
}

impl TextSink {
    pub fn new(json: bool) -> Self {
        TextSink {
            out: std::io::stdout().lock(),
            stream: !json,
            text: String::new(),
            error: None,
        }
    }

    /// Hands `text` out; false once writing has failed (generation should stop).
    pub fn emit(&mut self, text: &str) -> bool {
        if self.error.is_some() {
            return false;
        }
        self.text.push_str(text);
        if self.stream {
            if let Err(e) = self
                .out
                .write_all(text.as_bytes())
                .and_then(|_| self.out.flush())
            {
                self.error = Some(anyhow::Error::from(e).context("writing to stdout"));
                return false;
            }
        }
        true
    }

    pub fn fail(&mut self, e: anyhow::Error) {
        self.error.get_or_insert(e);
    }

    /// The whole text and stdout (a streamed text ended with a newline), or the first error.
    pub fn finish(mut self) -> Result<(String, std::io::StdoutLock<'static>)> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.stream {
            writeln!(self.out).context("writing to stdout")?;
        }
        Ok((self.text, self.out))
    }
}

/// A generation's tokens as text: decoded as they come, cut where the first stop string
/// begins, handed to a [`TextSink`] (`generate` and each turn of `chat`).
pub(crate) struct TokenText<'t> {
    stream: greta_model::tokenizer::TokenStream<'t>,
    stops: generate::stop::StopStrings,
    sink: TextSink,
    stopped_at: Option<String>,
}

impl<'t> TokenText<'t> {
    pub fn new(
        tok: &'t greta_model::tokenizer::Tokenizer,
        stops: generate::stop::StopStrings,
        json: bool,
    ) -> Self {
        TokenText {
            stream: tok.stream(),
            stops,
            sink: TextSink::new(json),
            stopped_at: None,
        }
    }

    /// Takes the next token; false when generation should stop (a stop string came, or the
    /// text could not be decoded or written).
    pub fn push(&mut self, id: u32) -> bool {
        match self.stream.push(id) {
            Ok(Some(piece)) => {
                let pushed = self.stops.push(&piece);
                let written = self.sink.emit(&pushed.text);
                if pushed.stopped_at.is_some() {
                    self.stopped_at = pushed.stopped_at;
                    return false;
                }
                written
            }
            Ok(None) => true,
            Err(e) => {
                self.sink.fail(e.into());
                false
            }
        }
    }

    /// The whole text (with what was held back for stop strings where none came), the stop
    /// string that ended it, and stdout; or the first error.
    pub fn finish(mut self) -> Result<(String, Option<String>, std::io::StdoutLock<'static>)> {
        if self.stopped_at.is_none() {
            self.sink.emit(&self.stops.finish());
        }
        let (text, out) = self.sink.finish()?;
        Ok((text, self.stopped_at, out))
    }
}

pub fn cmd_generate(a: GenerateArgs, platform: PlatformChoice) -> Result<()> {
    let selection = greta_hal::select(a.run.backend, platform)?;
    let kv_format = a.run.kv.format(&selection.backend)?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    let trace_sel = a.trace.selection(&env)?;
    let inject = a.trace.injections()?;
    let prompt = match a.prompt.as_deref() {
        None | Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the prompt from stdin")?;
            s
        }
        Some(p) => p.to_string(),
    };
    let sampler_cfg = a.sampling.config();
    let mut sampler = Sampler::new(sampler_cfg.clone())?;
    // Bad flag values are refused before the model loads.
    let stops = generate::stop::StopStrings::new(a.sampling.stop.clone())?;
    let path = resolve_model(&a.model)?;
    let t_load = Instant::now();
    let lm = load_model(&path, false)?;
    say_loaded(&path, &lm, &selection, t_load.elapsed());
    let use_chat = match (a.chat, a.no_chat, &lm.tokenizer.chat_template) {
        (_, true, _) => false,
        (true, _, None) => bail!("--chat: the model has no chat template; use --no-chat"),
        (_, _, t) => t.is_some(),
    };
    if a.system.is_some() && !use_chat {
        bail!("--system needs the chat template, which is off for this run");
    }
    let tok = &lm.tokenizer;
    let ids = if use_chat {
        Conversation::new(tok, a.system.clone())?
            .prompt(tok, &prompt)?
            .ids
    } else {
        tok.encode(&prompt, true)?
    };
    let capacity = a.run.capacity(&lm.model)?;
    let (mut recorder, trace_path) =
        trace_cmd::generate_recorder(trace_sel, &inject, &lm, "cpu-blocks")?;
    for i in &inject {
        eprintln!("injecting {i}");
    }
    let mut text = TokenText::new(tok, stops, a.json);
    let mut ids_out = Vec::new();
    let mut on_token = |id| {
        ids_out.push(id);
        text.push(id)
    };
    let decoding = Decoding {
        max_new: a.max_tokens,
        sampler: &mut sampler,
        is_eog: &|id| tok.is_end_of_generation(id),
    };
    let stats = match &selection.backend {
        greta_hal::Backend::Cpu => {
            a.run.gpu.note_unused_on_cpu();
            let mut cache = lm.model.new_cache_as(capacity, kv_format);
            generate::generate(
                &lm.model,
                &mut cache,
                &ids,
                decoding,
                &mut recorder,
                &mut on_token,
            )?
        }
        greta_hal::Backend::Gpu(gpu) => {
            if recorder.selection().enabled || !inject.is_empty() {
                bail!("tracing and --inject run on the CPU backend for generation; on the GPU use `greta audit backend`");
            }
            let no_graph = a.run.no_graph;
            let model = a.run.upload_for_decode(gpu, &lm.model, &sampler_cfg)?;
            let mut st = model.new_state(capacity, ids.len())?;
            generate::generate_gpu(&model, &mut st, &ids, decoding, !no_graph, &mut on_token)?
        }
    };
    let (text_out, stopped_at, mut out) = text.finish()?;
    if a.json {
        // `ids` are the tokens handed out; an end-of-generation token that ended the run is
        // counted in generated_tokens (as on stderr) but is not text, so not among them.
        let json = serde_json::json!({
            "text": text_out,
            "ids": ids_out,
            "prompt_tokens": stats.prompt_tokens,
            "generated_tokens": stats.generated_tokens(),
            "stop": match (&stopped_at, stats.stopped_at_eog) {
                (Some(_), _) => "stop_string",
                (None, true) => "end_of_generation",
                (None, false) => "max_tokens",
            },
            "stop_string": stopped_at,
            "prefill_ms": stats.prefill_time.as_secs_f64() * 1e3,
            "prefill_tok_s": stats.prefill_tok_s(),
            "decode_tok_s": stats.decode_tok_s(),
            "backend": selection.backend.to_string(),
            "model": path.display().to_string(),
        });
        writeln!(out, "{json}")?;
    }
    let written = recorder.finish().context("writing the trace")?;
    if let Some(p) = trace_path {
        eprintln!("trace: {written} stage records in {}", p.display());
    }
    eprintln!(
        "prompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s{}",
        stats.prompt_tokens,
        stats.prefill_tok_s(),
        stats.generated_tokens(),
        stats.decode_tok_s(),
        match (&stopped_at, stats.stopped_at_eog) {
            (Some(s), _) => format!(" (stopped at --stop {s:?})"),
            (None, true) => String::new(),
            (None, false) => " (stopped at --max-tokens)".to_string(),
        }
    );
    Ok(())
}
