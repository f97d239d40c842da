//! `greta`: the command-line front end of GRETA CORE.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use greta_hal::{BackendRequest, PlatformChoice};
use greta_model::chat::{self, Message};
use greta_model::default_model;
use greta_model::generate::sampler::{Sampler, SamplerConfig};
use greta_model::generate::{self, Decoding};
use greta_model::model::{self, LoadedModel};

mod bench_cmd;
mod calibrate_cmd;
mod gpu_args;
mod perplexity_cmd;
mod progress;
mod trace_cmd;
use trace_cmd::{AuditArgs, DiffArgs, TraceArgs};

#[derive(Parser)]
#[command(
    name = "greta",
    version,
    about = "GRETA CORE: an auditable LLM inference engine for Llama-family models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The GPU platform a GPU backend opens: amd (HIP), nvidia (the CUDA driver) or auto
    /// (AMD first, then NVIDIA: the first with a device).
    #[arg(long, global = true, env = "GRETA_PLATFORM", default_value = "auto", value_parser = parse_platform)]
    platform: PlatformChoice,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming tokens to stdout (stats go to stderr).
    Generate(GenerateArgs),
    /// Print the token ids of a text.
    Tokenize(TokenizeArgs),
    /// Perplexity of a text file, computed as llama.cpp's llama-perplexity does.
    Perplexity(perplexity_cmd::PerplexityArgs),
    /// Prefill time, decode speed and achieved memory bandwidth (against the copy bandwidth
    /// measured in the same run) of a model or a synthetic one of a published shape.
    Bench(bench_cmd::BenchArgs),
    /// Choose the GPU prefill's numerics for a model by auditing them: the cheapest
    /// --split-inputs policy whose every stage stays within half the backend audit's
    /// tolerance on the calibration prompts, kept for `--split-inputs auto` (exit 0: one
    /// passed, 1: none did, 2: an error).
    Calibrate(calibrate_cmd::CalibrateArgs),
    /// Logits of every position of a prompt, from one forward pass, to a .npy file
    /// ([tokens * vocab] f32, row-major): for comparing with other engines.
    Logits(LogitsArgs),
    /// Version, GPU platforms found, and the backends this build has.
    Info,
    /// StageTrace files: compare two traces.
    #[command(subcommand)]
    Trace(TraceCommand),
    /// Compute the same tokens two ways and compare every stage (exit 0: within tolerance,
    /// 1: divergence, 2: bad input).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum TraceCommand {
    /// Align two traces and name the first divergence in pipeline order (exit 0: within
    /// tolerance, 1: divergence, 2: bad input).
    Diff(DiffArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Teacher-forced: each position computed inside a prefill and as a decode step.
    PrefillDecode {
        #[command(flatten)]
        model: ModelArgs,
        /// Positions to audit: all, or a list such as 0,5-7.
        #[arg(long, default_value = "all")]
        positions: String,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// Shadow compare of kernel routes: every matrix product re-run on its recorded input by
    /// each route (GEMM, native GEMV, portable GEMV) against the plain f32 GEMV.
    Route {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// The same prompt on a backend and on the CPU reference route.
    Backend {
        #[command(flatten)]
        model: ModelArgs,
        /// The reference backend (accepted: cpu).
        #[arg(long, default_value = "cpu")]
        against: String,
        #[command(flatten)]
        audit: AuditArgs,
    },
}

#[derive(Args)]
struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Token ids, comma-separated (instead of a text prompt).
    #[arg(long, value_delimiter = ',', conflicts_with = "prompt")]
    ids: Option<Vec<u32>>,
    /// Raw text (BOS added as the model asks).
    #[arg(long)]
    prompt: Option<String>,
    /// Where to run: cpu, gpu or auto.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: BackendRequest,
    /// The .npy file to write.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    gpu: gpu_args::GpuArgs,
}

#[derive(Args)]
struct ModelArgs {
    /// A GGUF file or a Hugging Face model directory. Default: SmolLM2-135M-Instruct Q4_1,
    /// downloaded on first use into the cache ($GRETA_CACHE_DIR or ~/.cache/greta).
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
}

#[derive(Args)]
struct GenerateArgs {
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
    stop: Vec<String>,
    /// Random seed: the same seed gives the same output.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// KV-cache capacity in tokens (default: the model's context, at most 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// Where to run: cpu, gpu or auto.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: BackendRequest,
    /// GPU: launch each decode step's kernels one by one instead of replaying the captured graph.
    #[arg(long)]
    no_graph: bool,
    /// Print one JSON object when done instead of streaming the text: text, generated ids,
    /// token counts, why it stopped, prefill and decode speeds, backend and model.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: gpu_args::GpuArgs,
    #[command(flatten)]
    trace: TraceArgs,
}

#[derive(Args)]
struct TokenizeArgs {
    text: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Print only a JSON array of ids.
    #[arg(long)]
    json: bool,
    /// Do not add BOS even when the model asks for it.
    #[arg(long)]
    no_bos: bool,
}

/// A command's result and its error exit code: a trace selection or --inject that does not
/// parse is bad input (2, as the trace tools exit), any other error 1.
fn with_trace_input_code(r: Result<()>) -> (Result<i32>, i32) {
    let bad_trace_input = r.as_ref().err().is_some_and(|e| {
        e.downcast_ref::<greta_trace::selection::SelectionError>()
            .is_some()
            || e.downcast_ref::<greta_trace::inject::InjectError>()
                .is_some()
    });
    (r.map(|_| 0), if bad_trace_input { 2 } else { 1 })
}

fn parse_platform(s: &str) -> Result<PlatformChoice, String> {
    s.parse::<PlatformChoice>().map_err(|e| e.to_string())
}

fn parse_backend(s: &str) -> Result<BackendRequest, String> {
    s.parse()
        .map_err(|e: greta_hal::UnknownBackend| e.to_string())
}

fn main() {
    let cli = Cli::parse();
    // The CPU backend's products run on rayon's pool, hundreds of parallel calls a token.
    // Called from a thread outside the pool, each call injects its job, wakes a worker and
    // puts this thread to sleep until it is done; as one of the pool's threads, this one
    // works on its own calls and the other workers steal from it.
    // (Session 22, 2 threads, the default model: greedy decode 131-136 tok/s before, 168-170
    // after; docs/performance.md.) Nothing has set the pool up yet: only the arguments have
    // been parsed.
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .expect("rayon's global pool is set up once, before any parallel call");
    // The trace and audit tools exit 2 on bad input, keeping 1 for "divergence found".
    let platform = cli.platform;
    let (result, error_code) = match cli.command {
        Command::Generate(a) => with_trace_input_code(cmd_generate(a, platform)),
        Command::Tokenize(a) => (cmd_tokenize(a).map(|_| 0), 1),
        Command::Perplexity(a) => {
            with_trace_input_code(perplexity_cmd::cmd_perplexity(a, platform))
        }
        Command::Bench(a) => (bench_cmd::cmd_bench(a, platform).map(|_| 0), 1),
        Command::Calibrate(a) => (calibrate_cmd::cmd_calibrate(a, platform), 2),
        Command::Logits(a) => (cmd_logits(a, platform).map(|_| 0), 1),
        Command::Info => (cmd_info().map(|_| 0), 1),
        Command::Trace(TraceCommand::Diff(a)) => (trace_cmd::cmd_diff(a), 2),
        Command::Audit(AuditCommand::PrefillDecode {
            model,
            positions,
            audit,
        }) => (
            resolve_model(&model)
                .and_then(|p| load_model(&p, true))
                .and_then(|lm| trace_cmd::cmd_prefill_decode(&audit, Some(&positions), &lm)),
            2,
        ),
        Command::Audit(AuditCommand::Route { model, audit }) => (
            resolve_model(&model)
                .and_then(|p| load_model(&p, true))
                .and_then(|lm| trace_cmd::cmd_route(&audit, &lm)),
            2,
        ),
        Command::Audit(AuditCommand::Backend {
            model,
            against,
            audit,
        }) => (
            resolve_model(&model)
                .and_then(|p| trace_cmd::cmd_backend(&audit, &against, &p, platform)),
            2,
        ),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::exit(error_code);
        }
    }
}

/// `e` and its causes joined by ": " as `{:#}` joins them, leaving out a cause whose message
/// is already in what comes before it. This workspace's errors say a wrapped error in their
/// message or return it as `source()`, never both (`greta_model::io::FormatError`), but
/// other crates' errors may do both, and `{:#}` alone would then print it twice.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

fn resolve_model(arg: &ModelArgs) -> Result<PathBuf> {
    if let Some(p) = &arg.model {
        return Ok(p.clone());
    }
    let dir = default_model::cache_dir();
    let python = std::env::var("GRETA_PYTHON").unwrap_or_else(|_| "python3".to_string());
    Ok(default_model::ensure(&dir, &python, &mut |msg| {
        eprintln!("{msg}")
    })?)
}

/// Prints what loading assumed or limited where the model's files did not say or ask for
/// what greta computes (`LoadedModel::warnings`), once a load.
pub(crate) fn warn_assumed(path: &Path, loaded: &LoadedModel) {
    for w in &loaded.warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
}

fn load_model(path: &Path, quiet: bool) -> Result<LoadedModel> {
    let bar = progress::bar("loading {msg} [{bar:30}] {pos}/{len} tensors ({elapsed})");
    if quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    // LoadError names the file in every case; the context says what was being done.
    let loaded = model::load(path, &mut progress::follow(&bar)).context("loading the model")?;
    bar.finish_and_clear();
    warn_assumed(path, &loaded);
    Ok(loaded)
}

/// Where `generate`'s text goes: streamed to stdout as it comes, or kept for `--json`'s
/// object. The first error writing ends generation and is returned by `finish`.
struct TextSink {
    out: std::io::StdoutLock<'static>,
    kept: Option<String>,
    error: Option<anyhow::Error>,
}

impl TextSink {
    fn new(json: bool) -> Self {
        TextSink {
            out: std::io::stdout().lock(),
            kept: json.then(String::new),
            error: None,
        }
    }

    /// Hands `text` out; false once writing has failed (generation should stop).
    fn emit(&mut self, text: &str) -> bool {
        if self.error.is_some() {
            return false;
        }
        match &mut self.kept {
            Some(kept) => kept.push_str(text),
            None => {
                if let Err(e) = self
                    .out
                    .write_all(text.as_bytes())
                    .and_then(|_| self.out.flush())
                {
                    self.error = Some(anyhow::Error::from(e).context("writing to stdout"));
                    return false;
                }
            }
        }
        true
    }

    fn fail(&mut self, e: anyhow::Error) {
        self.error.get_or_insert(e);
    }

    /// The kept text (empty when streamed) and stdout, or the first error.
    fn finish(self) -> Result<(String, std::io::StdoutLock<'static>)> {
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.kept.unwrap_or_default(), self.out)),
        }
    }
}

fn cmd_generate(a: GenerateArgs, platform: PlatformChoice) -> Result<()> {
    let selection = greta_hal::select(a.backend, platform)?;
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
    let sampler_cfg = SamplerConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repeat_penalty,
        seed: a.seed,
        ..Default::default()
    };
    let mut sampler = Sampler::new(sampler_cfg.clone())?;
    let path = resolve_model(&a.model)?;
    let t_load = Instant::now();
    let lm = load_model(&path, false)?;
    eprintln!(
        "model: {} ({} layers, hidden {}, {} heads / {} KV heads, vocab {}); backend: {} ({}); loaded in {:.2}s",
        path.display(),
        lm.model.config.n_layers,
        lm.model.config.hidden,
        lm.model.config.n_heads,
        lm.model.config.n_kv_heads,
        lm.model.config.vocab_size,
        selection.backend,
        selection.reason,
        t_load.elapsed().as_secs_f64()
    );
    let use_chat = match (a.chat, a.no_chat, &lm.tokenizer.chat_template) {
        (_, true, _) => false,
        (true, _, None) => bail!("--chat: the model has no chat template; use --no-chat"),
        (_, _, t) => t.is_some(),
    };
    if a.system.is_some() && !use_chat {
        bail!("--system needs the chat template, which is off for this run");
    }
    let tok = &lm.tokenizer;
    let text = if use_chat {
        let mut messages = Vec::new();
        if let Some(s) = &a.system {
            messages.push(Message {
                role: "system".into(),
                content: s.clone(),
            });
        }
        messages.push(Message {
            role: "user".into(),
            content: prompt,
        });
        let name = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or_default();
        chat::render(
            tok.chat_template.as_deref().unwrap_or_default(),
            &messages,
            &name(tok.bos),
            &name(tok.eos),
        )?
    } else {
        prompt
    };
    let ids = tok.encode(&text, true)?;
    let max_ctx = lm.model.config.max_context;
    let capacity = match a.ctx {
        Some(c) if c > max_ctx => {
            bail!("--ctx {c} exceeds the model's context of {max_ctx} tokens")
        }
        Some(c) => c,
        None => max_ctx.min(4096),
    };
    let (mut recorder, trace_path) =
        trace_cmd::generate_recorder(trace_sel, &inject, &lm, "cpu-blocks")?;
    for i in &inject {
        eprintln!("injecting {i}");
    }
    let mut stream = tok.stream();
    let mut stops = generate::stop::StopStrings::new(a.stop.clone())?;
    let mut stopped_at: Option<String> = None;
    let mut sink = TextSink::new(a.json);
    let mut ids_out = Vec::new();
    let mut on_token = |id| {
        ids_out.push(id);
        match stream.push(id) {
            Ok(Some(piece)) => {
                let pushed = stops.push(&piece);
                let written = sink.emit(&pushed.text);
                if pushed.stopped_at.is_some() {
                    stopped_at = pushed.stopped_at;
                    return false;
                }
                written
            }
            Ok(None) => true,
            Err(e) => {
                sink.fail(anyhow::Error::from(e));
                false
            }
        }
    };
    let decoding = Decoding {
        max_new: a.max_tokens,
        sampler: &mut sampler,
        is_eog: &|id| tok.is_end_of_generation(id),
    };
    let stats = match &selection.backend {
        greta_hal::Backend::Cpu => {
            a.gpu.note_unused_on_cpu();
            let mut cache = lm.model.new_cache(capacity);
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
            let t_up = Instant::now();
            let mut model = greta_model::llama::gpu::GpuLlama::load(
                gpu,
                lm.model.config.clone(),
                &lm.model.weights,
                &mut |_, _| {},
            )?;
            a.gpu.apply(&mut model)?;
            let route = match generate::gpu_sampling(&sampler_cfg) {
                generate::GpuSampling::Device(_) if a.no_graph => {
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
                    "; prefill lo products {lo} ({:.2} GB of FP8 weight copies, --split-lo {}; f16 skips them)",
                    greta_model::llama::gpu::fp8_copy_bytes(&model.config, model.split_inputs, lo)
                        as f64
                        / 1e9,
                    a.gpu.split_lo
                ),
            };
            eprintln!(
                "uploaded to {} in {:.2}s{fp8}; decode {route}",
                gpu.name(),
                t_up.elapsed().as_secs_f64(),
            );
            let mut st = model.new_state(capacity, ids.len())?;
            generate::generate_gpu(&model, &mut st, &ids, decoding, !a.no_graph, &mut on_token)?
        }
    };
    if stopped_at.is_none() {
        // Text held back in case it began a stop string: none came.
        sink.emit(&stops.finish());
    }
    let (text_out, mut out) = sink.finish()?;
    if a.json {
        // `ids` are the tokens handed out; an end-of-generation token that ended the run is
        // counted in generated_tokens (as on stderr) but is not text, so not among them.
        let json = serde_json::json!({
            "text": text_out,
            "ids": ids_out,
            "prompt_tokens": stats.prompt_tokens,
            "generated_tokens": stats.generated_tokens,
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
    } else {
        writeln!(out)?;
    }
    let written = recorder.finish().context("writing the trace")?;
    if let Some(p) = trace_path {
        eprintln!("trace: {written} stage records in {}", p.display());
    }
    eprintln!(
        "prompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s{}",
        stats.prompt_tokens,
        stats.prefill_tok_s(),
        stats.generated_tokens,
        stats.decode_tok_s(),
        match (&stopped_at, stats.stopped_at_eog) {
            (Some(s), _) => format!(" (stopped at --stop {s:?})"),
            (None, true) => String::new(),
            (None, false) => " (stopped at --max-tokens)".to_string(),
        }
    );
    Ok(())
}

fn cmd_logits(a: LogitsArgs, platform: PlatformChoice) -> Result<()> {
    let selection = greta_hal::select(a.backend, platform)?;
    let path = resolve_model(&a.model)?;
    let lm = load_model(&path, true)?;
    let ids = match (&a.ids, &a.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(p)) => lm.tokenizer.encode(p, true)?,
        (None, None) => bail!("give the tokens: --ids 1,2,3 or --prompt TEXT"),
    };
    if ids.is_empty() {
        bail!("no tokens to run");
    }
    let logits = match &selection.backend {
        greta_hal::Backend::Cpu => {
            a.gpu.note_unused_on_cpu();
            let mut cache = lm.model.new_cache(ids.len());
            lm.model.forward(
                &ids,
                &mut cache,
                greta_model::llama::Logits::All,
                &mut greta_model::trace::NoTrace,
            )?
        }
        greta_hal::Backend::Gpu(gpu) => {
            let mut model = greta_model::llama::gpu::GpuLlama::load(
                gpu,
                lm.model.config.clone(),
                &lm.model.weights,
                &mut |_, _| {},
            )?;
            a.gpu.apply(&mut model)?;
            let mut st = model.new_state(ids.len(), ids.len())?;
            model.forward(
                &ids,
                &mut st,
                greta_model::llama::Logits::All,
                &mut greta_model::trace::NoTrace,
            )?
        }
    };
    greta_model::trace::recorder::write_npy(&a.out, &logits)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "{}",
        serde_json::json!({
            "out": a.out.display().to_string(),
            "tokens": ids.len(),
            "vocab": lm.model.config.vocab_size,
            "backend": selection.backend.to_string(),
            "ids": ids,
        })
    );
    Ok(())
}

fn cmd_tokenize(a: TokenizeArgs) -> Result<()> {
    let path = resolve_model(&a.model)?;
    let lm = load_model(&path, a.json)?;
    let ids = lm.tokenizer.encode(&a.text, !a.no_bos)?;
    if a.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        for id in ids {
            let text = lm.tokenizer.token_text(id).unwrap_or_default();
            println!("{id:6} -> {text:?}");
        }
    }
    Ok(())
}

fn cmd_info() -> Result<()> {
    println!(
        "greta {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("GRETA_GIT_REV")
    );
    println!(
        "backends in this build: cpu (f32 reference, {} threads)",
        rayon_threads()
    );
    for p in greta_hal::Platform::ALL {
        match hiprt::safe::open_driver(p) {
            Ok(d) => {
                let version = d
                    .version()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|e| format!("unknown ({e})"));
                let n = d.device_count()?;
                println!("platform {p}: runtime version {version}, {n} device(s)");
                for i in 0..n {
                    let mem = d
                        .device_total_mem(i)
                        .map(|b| format!("{} MiB", b >> 20))
                        .unwrap_or_else(|e| e.to_string());
                    let sms = d
                        .device_multiprocessors(i)
                        .map(|n| format!("{n} multiprocessors"))
                        .unwrap_or_else(|e| e.to_string());
                    println!("  device {i}: {} ({mem}, {sms})", d.device_name(i)?);
                }
            }
            Err(e) => println!("platform {p}: {e}"),
        }
    }
    let kdir = greta_model::kernels::gpu::default_dir();
    match std::fs::read_to_string(kdir.join("manifest.json")) {
        Ok(m) => {
            let v: serde_json::Value =
                serde_json::from_str(&m).context("reading the kernel manifest")?;
            let objects = v["objects"].as_array().map(Vec::len).unwrap_or(0);
            let mut targets: Vec<&str> = v["objects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["target"].as_str())
                .collect();
            targets.sort_unstable();
            targets.dedup();
            println!(
                "GPU kernels: {objects} code objects for {} in {}",
                targets.join(", "),
                kdir.display()
            );
        }
        Err(_) => println!(
            "GPU kernels: none in {} (build them with `cargo xtask build-kernels`)",
            kdir.display()
        ),
    }
    println!(
        "default model cache: {}",
        default_model::cache_dir().display()
    );
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
