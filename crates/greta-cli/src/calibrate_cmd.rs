//! `greta calibrate`: choose a model's GPU prefill numerics by auditing them
//! (greta_model::calibrate), and keep the choice for `--split-inputs auto`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use greta_model::calibrate::{self, Calibration, Profile, Prompt, Step};
use greta_model::llama::gpu::{GpuLlama, SplitInputs, SplitInputsChoice};
use greta_model::llama::weights::CpuWeights;
use greta_model::llama::Llama;
use greta_model::synthetic;
use greta_trace::diff::{Metric, GPU_F16_RMS_TOLERANCE};

use crate::gpu_args::{GpuArgs, BUILD};
use crate::progress::{bar, follow};

#[derive(Args)]
pub struct CalibrateArgs {
    /// A GGUF file or Hugging Face directory, or synthetic:NAME (random weights of a
    /// published shape, as `greta bench` makes them). Default: the default model.
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// synthetic:NAME only: the seed of the weights and of the prompt's token ids (the
    /// bench's: the same seed calibrates the model `greta bench --seed` runs).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// synthetic:NAME only: the prompt's length in tokens (random ids, as the bench's).
    #[arg(long, default_value_t = 512)]
    prompt_len: usize,
    /// A calibration prompt (raw text, BOS added as the model asks); repeat for several.
    /// Default: four (the audit's default prompt, a chat request, ~650 tokens of one
    /// sentence repeated, ~570 tokens of prose).
    #[arg(long)]
    prompt: Vec<String>,
    /// A policy to try, as `--split-inputs` spells it (e.g. `o,down`); repeat for a ladder of
    /// your own, tried in the order given (the first within the margin is chosen, so put the
    /// cheapest first). Default: none, qkv, qkv,o, qkv,o,down, qkv,o,gate_up,down (a chain,
    /// each rung one more product split).
    #[arg(long = "try", value_name = "POLICY")]
    try_split: Vec<SplitInputs>,
    /// Audit every policy of the ladder instead of stopping at the first chosen (a study of
    /// what each reads; the choice is the same).
    #[arg(long)]
    all: bool,
    /// Audit the policies and print what they read, without keeping the choice.
    #[arg(long)]
    no_save: bool,
    #[command(flatten)]
    gpu: GpuArgs,
    /// Print the profile (and where it was kept) as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Exit 0 where a policy passed with the margin (kept for `--split-inputs auto`), 1 where
/// none did (the profile is kept all the same, and auto then keeps the default).
pub fn cmd_calibrate(a: CalibrateArgs, platform: greta_hal::PlatformChoice) -> Result<i32> {
    if a.gpu.split_inputs != SplitInputsChoice::Auto {
        bail!("greta calibrate tries the --split-inputs policies itself (none, qkv, qkv,o, qkv,o,down, qkv,o,gate_up,down, or those given with --try); leave --split-inputs out");
    }
    let ladder = calibrate::Ladder {
        rungs: match a.try_split.is_empty() {
            true => calibrate::LADDER.to_vec(),
            false => a.try_split.clone(),
        },
        all: a.all,
    };
    let synthetic_name = a.model.as_deref().and_then(synthetic::parse_spec);
    if synthetic_name.is_some() && !a.prompt.is_empty() {
        bail!(
            "--prompt: synthetic models have no tokenizer; their prompt is --prompt-len random ids"
        );
    }
    if let Some(name) = synthetic_name {
        synthetic::config(name)?; // an unknown shape is named before the GPU is looked for
    }
    let gpu = greta_hal::Gpu::open(platform, 0).context(
        "greta calibrate audits the GPU's numerics against the CPU reference, so it needs a GPU",
    )?;
    let started = Instant::now();
    // The reference holds the weights as the GPU does (rounded to f16) and K/V in f16, as
    // `greta audit backend` does: what is measured is the GPU's kernels and numerics.
    let (label, mut model, cpu, prompts) = match synthetic_name {
        Some(name) => {
            let config = synthetic::config(name)?;
            let prompt = Prompt {
                id: format!("random{}", a.prompt_len),
                tokens: synthetic::tokens(a.prompt_len, config.vocab_size, a.seed),
            };
            // Before the weights are made (the 7B's: 13 GB, then 27 GB widened for the CPU).
            fits(std::slice::from_ref(&prompt), config.max_context)?;
            let b = bar("generating {msg} [{bar:30}] {pos}/{len} layers ({elapsed})");
            b.set_message(format!("synthetic:{name} (seed {})", a.seed));
            let w = synthetic::weights(&config, a.seed, &mut follow(&b));
            b.finish_and_clear();
            let model = upload(&gpu, config.clone(), &w)?;
            let cpu = Llama::new(config, synthetic::widened_for_cpu(w));
            (
                format!("synthetic:{name} (seed {})", a.seed),
                model,
                cpu,
                vec![prompt],
            )
        }
        None => {
            let path = crate::resolve_model(&crate::ModelArgs {
                model: a.model.as_ref().map(PathBuf::from),
            })?;
            let b = bar("loading {msg} [{bar:30}] {pos}/{len} tensors ({elapsed})");
            b.set_message(format!("{} (f16-rounded)", path.display()));
            let reference =
                greta_model::model::load_as(&path, CpuWeights::F16Rounded, &mut follow(&b))
                    .context("loading the model")?;
            b.finish_and_clear();
            crate::warn_assumed(&path, &reference);
            let model = upload(
                &gpu,
                reference.model.config.clone(),
                &reference.model.weights,
            )?;
            let texts: Vec<(String, String)> = match a.prompt.is_empty() {
                true => calibrate::text_prompts(crate::trace_cmd::DEFAULT_AUDIT_PROMPT)
                    .into_iter()
                    .map(|(id, t)| (id.to_string(), t))
                    .collect(),
                false => a
                    .prompt
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (format!("p{i}"), t.clone()))
                    .collect(),
            };
            let mut prompts = Vec::new();
            for (id, text) in texts {
                let tokens = reference.tokenizer.encode(&text, true)?;
                prompts.push(Prompt { id, tokens });
            }
            fits(&prompts, reference.model.config.max_context)?;
            (path.display().to_string(), model, reference.model, prompts)
        }
    };
    let route = format!("gpu-{}", gpu.platform());
    eprintln!(
        "calibrating {label} on {} ({}, greta {BUILD}): weights {}",
        gpu.name(),
        model.kernels.target,
        model.weights_id
    );
    let mut setup = greta_model::audit::AuditSetup::default();
    setup.tolerances.metric = Metric::Rms;
    setup.tolerances.default = GPU_F16_RMS_TOLERANCE;
    let gpu_args = a.gpu;
    let mut configure = |m: &mut GpuLlama, split| {
        GpuArgs {
            split_inputs: SplitInputsChoice::Set(split),
            ..gpu_args
        }
        .apply(m)
        .map(|_| ())
        .map_err(Into::into)
    };
    let mut step_started = Instant::now();
    let calibration = Calibration {
        cpu: &cpu,
        cpu_route: CpuWeights::F16Rounded.route_name(),
        prompts: &prompts,
        ladder: &ladder,
        setup: &setup,
    };
    let rungs = calibration.run(&mut model, &route, &mut configure, &mut |step| match step {
        Step::Reference { prompt, tokens } => {
            eprintln!("  CPU reference: prompt {prompt}, {tokens} tokens");
        }
        Step::Rung(r) => {
            let worst = match (r.worst_error, r.worst_fraction) {
                (Some(e), Some(f)) => {
                    format!("{e:.3e} ({f:.2} of the tolerance {:.0e}", r.tolerance)
                }
                _ => format!("not finite (fails; tolerance {:.0e}", r.tolerance),
            };
            eprintln!(
                "  --split-inputs {:<20} worst {worst}; {}){}  [{:.1} s]",
                r.split_inputs,
                r.worst_at,
                if r.chosen { "  <-- chosen" } else { "" },
                step_started.elapsed().as_secs_f64()
            );
            step_started = Instant::now();
        }
    })?;
    let profile = Profile {
        weights: model.weights_id.to_string(),
        target: model.kernels.target.to_string(),
        build: BUILD.to_string(),
        model: label,
        device: gpu.name().to_string(),
        prompts: prompts
            .iter()
            .map(|p| (p.id.clone(), p.tokens.len()))
            .collect(),
        margin: calibrate::MARGIN,
        rungs,
    };
    let chosen = profile
        .chosen()
        .map_err(anyhow::Error::msg)?
        .map(|(_, r)| &r.split_inputs);
    let path = match a.no_save {
        true => None,
        false => Some(calibrate::save(
            &greta_model::default_model::cache_dir(),
            &profile,
        )?),
    };
    if a.json {
        let mut v = serde_json::to_value(&profile)?;
        v["chosen"] = serde_json::json!(chosen);
        v["path"] = serde_json::json!(path);
        v["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        match chosen {
            Some(s) => println!(
                "chosen: --split-inputs {s} (the first policy of the ladder, cheapest first, whose worst stage is within 1/{} of the audit's tolerance)",
                calibrate::MARGIN
            ),
            None => println!(
                "no policy passed with margin: --split-inputs auto keeps the default for these weights"
            ),
        }
        match &path {
            Some(p) => println!(
                "kept in {}: `--split-inputs auto` (the default) uses it for these weights on {} with this greta build ({:.0} s)",
                p.display(),
                profile.target,
                started.elapsed().as_secs_f64()
            ),
            None => println!("not kept (--no-save)"),
        }
    }
    Ok(if chosen.is_some() { 0 } else { 1 })
}

/// Uploads the weights to the GPU behind a progress bar.
fn upload(
    gpu: &greta_hal::Gpu,
    config: greta_model::llama::LlamaConfig,
    w: &greta_model::llama::weights::LlamaWeights,
) -> Result<GpuLlama> {
    let b = bar("uploading [{bar:30}] {pos}/{len} ({elapsed})");
    let model = GpuLlama::load(gpu, config, w, &mut follow(&b))?;
    b.finish_and_clear();
    Ok(model)
}

/// Refuses a calibration prompt longer than the model's context, naming both.
fn fits(prompts: &[Prompt], max_context: usize) -> Result<()> {
    let longest = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    if longest > max_context {
        bail!("a calibration prompt of {longest} tokens is longer than the model's context ({max_context})");
    }
    Ok(())
}
