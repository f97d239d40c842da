//! `greta`: the command-line front end of GRETA CORE.

// The argument structs' doc comments are clap's `--help` text, read in a terminal, where
// `[PHASE@]LAYER` is usage syntax and `<run>` a placeholder, not rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use greta_hal::{BackendRequest, PlatformChoice};
use greta_model::default_model;
use greta_model::model::{self, LoadedModel};

mod bench_cmd;
mod calibrate_cmd;
mod chat_cmd;
mod generate_cmd;
mod gpu_args;
mod kv_args;
mod perplexity_cmd;
mod progress;
mod trace_cmd;
use trace_cmd::{AuditArgs, DiffArgs};

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
    Generate(generate_cmd::GenerateArgs),
    /// A conversation on stdin, a message a line: the chat template over every turn, the
    /// KV cache kept between turns so each computes only its new tokens.
    Chat(chat_cmd::ChatArgs),
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
    /// each route (GEMM, native GEMV, multi-row GEMV, portable GEMV) against the plain f32 GEMV.
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
        Command::Generate(a) => with_trace_input_code(generate_cmd::cmd_generate(a, platform)),
        Command::Chat(a) => (chat_cmd::cmd_chat(a, platform).map(|()| 0), 1),
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
            let model = a.gpu.upload(gpu, &lm.model)?;
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
