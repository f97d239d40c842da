//! `greta perplexity`: llama-perplexity's figure on the CPU reference or the GPU route, under
//! numerics probes, and with `--kl` how far a probed CPU model's, another model file's or
//! the GPU route's next-token distributions lie from the CPU reference's.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use greta_hal::BackendRequest;
use greta_model::llama::KvFormat;

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: crate::ModelArgs,
    /// The text file to score.
    #[arg(long, short = 'f')]
    file: PathBuf,
    /// Chunk length in tokens (llama-perplexity's -c).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Print the result as JSON: {"ppl", "chunks", "tokens", "inject", "backend"}, or with
    /// --kl {"ppl_base", "ppl_probe", "kld_mean", "kld_p99", "kld_max", "same_top1",
    /// "scored", "inject", "backend"} (and "kl_model" with --kl-model).
    #[arg(long)]
    json: bool,
    /// A numerics probe (or fault) in every chunk's forward pass, as `greta audit`'s:
    /// [PHASE@]LAYER:POINT:KIND, e.g. `*:ffn_norm:f16` rounds the gate/up product's input to
    /// f16 in every layer (what f16 activations, the peers' numerics, do to it; KINDs and
    /// points as `greta generate --help` lists them). Repeat the flag for several; the
    /// perplexity is then the model's under those roundings, to set beside the plain one.
    #[arg(
        long,
        value_name = "[PHASE@]LAYER:POINT:KIND",
        allow_hyphen_values = true
    )]
    inject: Vec<String>,
    /// Run every chunk twice and report how far the second run's next-token distributions
    /// lie from the first's at the scored positions (llama-perplexity's --kl-divergence
    /// figures: KL mean, 99th percentile and max in nats, the fraction whose top token
    /// agrees) beside both perplexities. On the CPU: the plain model, then under --inject.
    /// With --backend gpu: the CPU reference, then the GPU route (under its --split-inputs,
    /// --split-lo): what the GPU's numerics cost the model's output.
    #[arg(long)]
    kl: bool,
    /// --kl against another model file on the CPU (under --inject, if given), e.g. a
    /// quantization of the same model or its weights rounded to the GPU's f16
    /// (llama-perplexity's --kl-divergence against a base). It must have the same vocabulary
    /// and tokenize the text as -m's model does; implies --kl.
    #[arg(long, value_name = "MODEL")]
    kl_model: Option<PathBuf>,
    /// Where to run: cpu (default: the reference, which llama-perplexity's figures match)
    /// or gpu (the GPU route's logits; --inject is CPU only).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_backend)]
    backend: BackendRequest,
    #[command(flatten)]
    gpu: crate::gpu_args::GpuArgs,
    // The CPU route's cache; with --kl, the CPU reference it is set against keeps f32.
    #[command(flatten)]
    kv: crate::kv_args::KvCacheArgs,
}

pub fn cmd_perplexity(a: PerplexityArgs, platform: greta_hal::PlatformChoice) -> Result<()> {
    let inject = crate::trace_cmd::parse_injections(&a.inject)?;
    let selection = greta_hal::select(a.backend, platform)?;
    let on_gpu = matches!(selection.backend, greta_hal::Backend::Gpu(_));
    let kv_format = a.kv.format(&selection.backend)?;
    if on_gpu && !inject.is_empty() {
        bail!("--inject runs on the CPU route only (the GPU's products read their operands on the device); on the GPU, --split-inputs and --split-lo set its numerics, and --kl compares them with the CPU reference");
    }
    if on_gpu && a.kl_model.is_some() {
        bail!("--kl-model compares two models on the CPU; --backend gpu compares the GPU route with the CPU reference (give one of them)");
    }
    let kl = a.kl || a.kl_model.is_some();
    let kv_f16 = !on_gpu && kv_format == KvFormat::F16;
    if kl && !on_gpu && inject.is_empty() && a.kl_model.is_none() && !kv_f16 {
        bail!("--kl on the CPU compares the model under --inject probes with the plain model: give at least one --inject, or --kv-cache f16 (the f16 cache against the f32 reference), or --kl-model (another model file), or --backend gpu (the GPU route against the CPU reference)");
    }
    let path = crate::resolve_model(&a.model)?;
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let lm = crate::load_model(&path, a.json)?;
    let tok = &lm.tokenizer;
    let ids = tok.encode(&text, true)?;
    let bos = if tok.add_bos { tok.bos } else { None };
    let config = &lm.model.config;
    // --kl-model: the other model, which must read the text as the same token ids.
    let probe = match &a.kl_model {
        Some(p) => {
            let other = crate::load_model(p, a.json)?;
            if other.model.config.vocab_size != config.vocab_size {
                bail!(
                    "--kl-model {}: a vocabulary of {} tokens, where {} has {}: KL needs the same vocabulary",
                    p.display(),
                    other.model.config.vocab_size,
                    path.display(),
                    config.vocab_size
                );
            }
            if other.tokenizer.encode(&text, true)? != ids {
                bail!(
                    "--kl-model {}: its tokenizer reads {} as other token ids than {}'s: KL needs the same tokens",
                    p.display(),
                    a.file.display(),
                    path.display()
                );
            }
            Some(other)
        }
        None => None,
    };
    // The probes ride on a recorder that records nothing (no selection, no output), on the
    // model they probe.
    let probed_layers = probe
        .as_ref()
        .map_or(config.n_layers, |p| p.model.config.n_layers);
    let mut obs = greta_trace::recorder::Recorder::new(
        greta_trace::selection::Selection::default(),
        probed_layers,
        greta_trace::recorder::RunIds {
            run: crate::trace_cmd::run_id(),
            prompt: a.file.display().to_string(),
            backend: "cpu".into(),
            route: "perplexity".into(),
        },
    )
    .with_injections(inject.iter().copied())?;
    for i in &inject {
        eprintln!("injecting {i}");
    }
    // The GPU route's chunks: one state of n_ctx positions, reset for each.
    let gpu = match &selection.backend {
        greta_hal::Backend::Gpu(gpu) => {
            let model = a.gpu.upload(gpu, &lm.model)?;
            let st = model.new_state(a.ctx, a.ctx)?;
            if !a.json {
                eprintln!("GPU route: {}", selection.backend);
            }
            Some((model, st))
        }
        greta_hal::Backend::Cpu => {
            a.gpu.note_unused_on_cpu();
            None
        }
    };
    let mut gpu_logits = gpu.map(|(model, mut st)| {
        move |chunk: &[u32]| -> Result<Vec<f32>, greta_model::perplexity::PerplexityError> {
            st.reset()?;
            Ok(model.forward(
                chunk,
                &mut st,
                greta_model::llama::Logits::All,
                &mut greta_model::trace::NoTrace,
            )?)
        }
    });
    let t0 = Instant::now();
    let quiet = a.json;
    let inject_names: Vec<String> = inject.iter().map(|i| i.to_string()).collect();
    // The route scored (and, with --kl, set against the plain CPU reference): the GPU's, or
    // the CPU model (-m's, or --kl-model's) under the probes.
    let cpu_model = probe.as_ref().map_or(&lm.model, |p| &p.model);
    let mut cpu = greta_model::perplexity::cpu_logits(cpu_model, a.ctx, kv_format, &mut obs);
    let route: &mut greta_model::perplexity::ChunkLogits = match gpu_logits.as_mut() {
        Some(g) => g,
        None => &mut cpu,
    };
    if kl {
        let mut plain = greta_trace::NoTrace;
        let mut base =
            greta_model::perplexity::cpu_logits(&lm.model, a.ctx, KvFormat::F32, &mut plain);
        let d = greta_model::perplexity::divergence(
            config,
            &ids,
            a.ctx,
            bos,
            &mut base,
            route,
            &mut |i, n| {
                if !quiet {
                    eprintln!("chunk {i}/{n}");
                }
            },
        )?;
        let mut against = match (on_gpu, &a.kl_model) {
            (true, _) => format!("the GPU route ({})", selection.backend),
            (false, Some(p)) => format!("{} {}", p.display(), inject_names.join(" ")),
            (false, None) => inject_names.join(" "),
        };
        if kv_f16 {
            against.push_str(" an f16 KV cache");
        }
        let against = against.trim().to_string();
        if a.json {
            let mut v = serde_json::to_value(&d)?;
            v["inject"] = serde_json::json!(inject_names);
            v["backend"] = serde_json::json!(selection.backend.to_string());
            v["kv_cache"] = serde_json::json!(kv_format.to_string());
            if let Some(p) = &a.kl_model {
                v["kl_model"] = serde_json::json!(p.display().to_string());
            }
            println!("{v}");
        } else {
            println!(
                "under {against}: perplexity {:.4} against {:.4} for the CPU reference; KL divergence mean {:.3e}, 99th percentile {:.3e}, max {:.3e} nats; same top token at {:.2} % of {} positions ({:.1}s)",
                d.ppl_probe,
                d.ppl_base,
                d.kld_mean,
                d.kld_p99,
                d.kld_max,
                100.0 * d.same_top1,
                d.scored,
                t0.elapsed().as_secs_f64()
            );
        }
        return Ok(());
    }
    let r =
        greta_model::perplexity::perplexity(config, &ids, a.ctx, bos, route, &mut |i, n, ppl| {
            if !quiet {
                eprintln!("chunk {i}/{n}: running ppl {ppl:.4}");
            }
        })?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"ppl": r.ppl, "chunks": r.chunks, "tokens": r.tokens, "inject": inject_names, "backend": selection.backend.to_string(), "kv_cache": kv_format.to_string()})
        );
    } else {
        println!(
            "perplexity: {:.4} over {} chunks of {} ({} tokens, {:.1}s)",
            r.ppl,
            r.chunks,
            a.ctx,
            r.tokens,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
