//! `greta bench`: see greta_model::bench for what is measured and how.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use greta_hal::{Backend, BackendRequest};
use greta_model::bench::{self, BenchReport, BenchSampling, BenchSpec};
use greta_model::io::gguf_write;
use greta_model::llama::weights::LlamaWeights;
use greta_model::llama::{Llama, LlamaConfig};
use greta_model::synthetic;

use crate::progress::{bar, follow};

#[derive(Args)]
pub struct BenchArgs {
    /// A GGUF file or Hugging Face directory, or synthetic:NAME for random weights of a
    /// published shape (synthetic:llama2-7b, synthetic:llama3.2-1b, synthetic:smollm2-135m,
    /// synthetic:tiny).
    /// Default: the default model.
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Seed of the synthetic weights and of the prompt's token ids.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Prompt length in tokens (random ids); a comma list (e.g. 512,520,640) or the flag
    /// repeated runs each on the one loaded model, as llama-bench's -p does (--json then
    /// prints an array).
    #[arg(long, default_value = "512", value_delimiter = ',', num_args = 1..)]
    prompt_len: Vec<usize>,
    /// Tokens to decode after the prompt (greedy unless --temperature is above 0).
    #[arg(long, default_value_t = 128)]
    gen: usize,
    /// Decode by drawing each token as `greta generate` does (its default is 0.8) instead
    /// of the argmax: the sampler's cost in the decode figure. 0: greedy, as llama-bench.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// With --temperature: keep the k most likely tokens (the GPU accepts 1..=256).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// With --temperature: keep the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// KV cache capacity in positions (the context the state is sized for); default
    /// prompt-len + gen. Memory figures are for this context.
    #[arg(long)]
    ctx: Option<usize>,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Where to run: cpu, gpu or auto.
    #[arg(long, default_value = "auto", value_parser = super::parse_backend)]
    backend: BackendRequest,
    /// GPU: decode with eager launches instead of the captured graph.
    #[arg(long)]
    no_graph: bool,
    #[command(flatten)]
    gpu: crate::gpu_args::GpuArgs,
    #[command(flatten)]
    kv: crate::kv_args::KvCacheArgs,
    /// GPU timing study: leave out every launch of these kernels (comma list of names as in
    /// kernels/*.hip, e.g. add_rmsnorm_f32,attn_decode_split_hd64). What the run gets faster by
    /// is what those kernels cost in place; every output is wrong, and the report says so.
    /// Kernels that move the decode position (argmax_f32, sample_topk, advance_pos) are
    /// refused: without them every step would run at the prompt's first position.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    skip_kernels: Vec<String>,
    /// GPU timing study: write every block's wait for the kernel ahead (when it reached it,
    /// when it passed, its SM, block and grid) as CSV to FILE, for tools/gpu/timeline.py.
    /// Needs kernels built with `cargo xtask build-kernels --timeline` (NVIDIA sm_90; point
    /// GRETA_KERNELS_DIR at target/kernels-timeline); the stamps slow decode ~10 %.
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// GPU: list every kernel the run launched, with its blocks, threads and dynamic shared
    /// memory, how many of its blocks a multiprocessor holds (the runtime's occupancy
    /// calculator) and so the work in waves (in --json as "kernels"; the warpgroup GEMM's
    /// grid is persistent, its blocks taking output tiles in turn: waves count its tiles):
    /// which GEMM tile each prefill product took at this prompt length and whether its last
    /// wave is full, which attention forms ran. Recording takes a lock a launch on the host, so time
    /// without it.
    #[arg(long)]
    kernels: bool,
    /// Print one JSON object (the report; an array of them for several prompt lengths) on
    /// stdout instead of the table, with the model and the build that measured it
    /// ("build": `greta info`'s first line).
    #[arg(long)]
    json: bool,
    /// Also save the weights as GGUF (f16 for synthetic models) so that other engines can
    /// run exactly the same model, e.g. llama-bench -m PATH.
    #[arg(long)]
    write_gguf: Option<PathBuf>,
    /// Also save the weights as a Hugging Face directory (config.json, f16 model.safetensors,
    /// tokenizer.json) so that transformers can run exactly the same model.
    #[arg(long)]
    write_safetensors: Option<PathBuf>,
}

pub fn cmd_bench(a: BenchArgs, platform: greta_hal::PlatformChoice) -> Result<()> {
    let selection = greta_hal::select(a.backend, platform)?;
    if a.prompt_len.len() > 1 && (a.kernels || a.timeline.is_some()) {
        anyhow::bail!(
            "--kernels and --timeline describe one run's launches; give one --prompt-len (got {})",
            a.prompt_len.len()
        );
    }
    let spec = BenchSpec {
        prompt_len: a.prompt_len[0],
        gen: a.gen,
        reps: a.reps,
        seed: a.seed,
        graph: !a.no_graph,
        ctx: a.ctx,
        sampling: (a.temperature != 0.0).then_some(BenchSampling {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
        }),
        kv_cache: a.kv.format(&selection.backend)?,
    };
    let synthetic_name = a.model.as_deref().and_then(synthetic::parse_spec);
    let (label, config, weights): (String, LlamaConfig, LlamaWeights) = match synthetic_name {
        Some(name) => {
            let config = synthetic::config(name)?;
            let b = bar("generating {msg} [{bar:30}] {pos}/{len} layers ({elapsed})");
            b.set_message(format!("synthetic:{name} (seed {})", a.seed));
            let w = synthetic::weights(&config, a.seed, &mut follow(&b));
            b.finish_and_clear();
            (format!("synthetic:{name} (seed {})", a.seed), config, w)
        }
        None => {
            let path = super::resolve_model(&super::ModelArgs {
                model: a.model.as_ref().map(PathBuf::from),
            })?;
            let lm = super::load_model(&path, false)?;
            let Llama {
                config, weights, ..
            } = lm.model;
            (path.display().to_string(), config, weights)
        }
    };
    let specs: Vec<BenchSpec> = a
        .prompt_len
        .iter()
        .map(|&prompt_len| BenchSpec { prompt_len, ..spec })
        .collect();
    for sp in &specs {
        sp.check(&config)?;
    }
    if let Some(out) = &a.write_gguf {
        let b = bar("writing {msg} [{bar:30}] {pos}/{len} tensors ({elapsed})");
        b.set_message(out.display().to_string());
        let t = Instant::now();
        let bytes = gguf_write::write_llama(out, &config, &weights, &label, &mut follow(&b))
            .with_context(|| format!("--write-gguf {}", out.display()))?;
        b.finish_and_clear();
        eprintln!(
            "wrote {} ({:.2} GB) in {:.1}s",
            out.display(),
            bytes as f64 / 1e9,
            t.elapsed().as_secs_f64()
        );
    }
    if let Some(out) = &a.write_safetensors {
        let t = Instant::now();
        greta_model::io::hf_write::write_llama(out, &config, &weights)
            .with_context(|| format!("--write-safetensors {}", out.display()))?;
        eprintln!(
            "wrote {} (Hugging Face layout) in {:.1}s",
            out.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let reps = bar("benchmarking [{bar:30}] {pos}/{len} repetitions ({elapsed})");
    reps.set_length(spec.reps as u64);
    let reports: Vec<BenchReport> = match &selection.backend {
        Backend::Cpu if !a.skip_kernels.is_empty() => {
            anyhow::bail!("--skip-kernels is a GPU timing study; this run is on the CPU")
        }
        Backend::Cpu if a.timeline.is_some() => {
            anyhow::bail!("--timeline is a GPU timing study; this run is on the CPU")
        }
        Backend::Cpu if a.kernels => {
            anyhow::bail!("--kernels lists the GPU kernels a run launches; this run is on the CPU")
        }
        Backend::Cpu => {
            a.gpu.note_unused_on_cpu();
            let weights = if synthetic_name.is_some() {
                synthetic::widened_for_cpu(weights)
            } else {
                weights
            };
            let model = Llama::new(config, weights);
            let mut reports = Vec::new();
            for sp in &specs {
                reps.set_position(0);
                reports.push(bench::bench_cpu(&model, sp, &mut |r| {
                    reps.set_position(r as u64)
                })?);
            }
            reports
        }
        Backend::Gpu(gpu) => {
            let up = bar("uploading [{bar:30}] {pos}/{len} ({elapsed})");
            let mut model =
                greta_model::llama::gpu::GpuLlama::load(gpu, config, &weights, &mut follow(&up))?;
            let origin = a.gpu.apply(&mut model)?;
            model.kernels.skip_kernels(&a.skip_kernels)?;
            if a.timeline.is_some() {
                model.kernels.require_timeline()?; // before the runs, not after them
            }
            if a.timeline.is_some() || a.kernels {
                model.kernels.record_launches();
            }
            up.finish_and_clear();
            drop(weights);
            let wb = bench::gpu_weight_bytes(&model.config);
            let mut reports = Vec::new();
            for sp in &specs {
                reps.set_position(0);
                let mut report =
                    bench::bench_gpu(&model, wb, sp, &mut |r| reps.set_position(r as u64))?;
                report.split_origin = Some(origin.to_string());
                reports.push(report);
            }
            if a.kernels {
                let sms = model.gpu.multiprocessors()?;
                reports[0].kernels = model
                    .kernels
                    .launched()?
                    .into_iter()
                    .map(|l| bench::LaunchedKernel::new(l, sms))
                    .collect();
            }
            if let Some(path) = &a.timeline {
                write_timeline(&model.kernels, &model.gpu.stream()?, path)?;
            }
            reports
        }
    };
    reps.finish_and_clear();
    if a.json {
        let mut vs = Vec::new();
        for r in &reports {
            let mut v = serde_json::to_value(r)?;
            v["model"] = serde_json::Value::String(label.clone());
            // Which greta measured it (`greta info`'s first line): a report kept in docs/
            // or compared across sessions names its build without a hand-written note.
            v["build"] = serde_json::Value::String(format!(
                "greta {} ({})",
                env!("CARGO_PKG_VERSION"),
                env!("GRETA_GIT_REV")
            ));
            vs.push(v);
        }
        let v = match vs.len() {
            1 => vs.remove(0),
            _ => serde_json::Value::Array(vs),
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for (sp, r) in specs.iter().zip(&reports) {
        print_report(&label, sp, r);
    }
    Ok(())
}

/// The table of one length's report.
fn print_report(label: &str, spec: &BenchSpec, r: &BenchReport) {
    if !r.skipped_kernels.is_empty() {
        println!(
            "TIMING STUDY: launches of {} left out; the figures are what the rest costs, the outputs are wrong",
            r.skipped_kernels.join(", ")
        );
    }
    if let Some(tiles) = &r.forced_tiles {
        println!(
            "TIMING STUDY: warpgroup GEMM tiles forced ({tiles}) where the chooser would pick"
        );
    }
    println!(
        "greta bench: {label} on {} ({}{})",
        r.device,
        r.backend,
        if r.backend == "gpu" {
            format!(
                "{}{}",
                if spec.graph {
                    ", decode as a captured graph"
                } else {
                    ", decode eager (--no-graph)"
                },
                match r.overlap {
                    Some(false) => ", plain launches (--overlap off)",
                    _ => ", overlapped launches",
                }
            )
        } else {
            String::new()
        }
    );
    println!(
        "prefill {:>5} tokens: {:>9.2} ms  ({:.0} tok/s, {:.1} TFLOP/s of model FLOPs)        median of {}{}",
        spec.prompt_len,
        r.prefill_ms,
        r.prefill_tok_s,
        r.prefill_tflop_s,
        spec.reps,
        match (&r.split_inputs, &r.split_origin) {
            (Some(s), Some(o)) => format!("; inputs as hi + lo: {s}, {o}"),
            (Some(s), None) => format!("; inputs as hi + lo: {s}"),
            _ => String::new(),
        }
    );
    if let Some(h) = r.prefill_host_ms {
        println!(
            "prefill issue on the host: {h:.2} ms ({:.0} % of the prefill; near 100 %, the host sets the pace)",
            100.0 * h / r.prefill_ms
        );
    }
    println!(
        "decode  {:>5} tokens: {:>9.1} tok/s ({:.3} ms/token){}",
        spec.gen,
        r.decode_tok_s,
        r.decode_ms_per_token,
        match spec.sampling {
            Some(sm) => format!(
                "; sampled: temperature {}, top-k {}, top-p {}",
                sm.temperature, sm.top_k, sm.top_p
            ),
            None => "; greedy".to_string(),
        }
    );
    println!(
        "bandwidth: {:.0} GB/s achieved ({:.1} MB/token) = {:.2} of the {:.0} GB/s copy bandwidth",
        r.achieved_gb_s,
        r.bytes_per_token / 1e6,
        r.fraction_of_copy,
        r.copy_gb_s
    );
    println!(
        "memory: weights {:.2} GB, KV cache + activations + scratch {:.3} GB for {} positions{}",
        r.weight_bytes as f64 / 1e9,
        r.state_bytes as f64 / 1e9,
        spec.capacity(),
        match r.device_used_bytes {
            Some(b) => format!("; device memory in use {:.2} GB", b as f64 / 1e9),
            None => String::new(),
        }
    );
    if !r.kernels.is_empty() {
        println!(
            "kernels launched (name, blocks x threads, dynamic shared memory, blocks a multiprocessor holds, the work in waves of them, and the output tiles a persistent grid's blocks take in turn; decode's as captured in its graph):"
        );
        for k in &r.kernels {
            let waves = match (k.cluster, k.waves) {
                (c, Some(w)) if c > 1 => format!(
                    "{w:.2} waves in clusters of {c} ({} resident)",
                    k.clusters_resident
                ),
                (c, None) if c > 1 => format!("clusters of {c}: none fits"),
                (_, Some(w)) => format!("{w:.2} waves"),
                (_, None) => "no block fits".to_string(),
            };
            let tiles = match k.tiles == k.blocks {
                true => String::new(),
                false => format!(" of {} tiles", k.tiles),
            };
            println!(
                "  {:<44} {:>6} x {:<4} {:>4} KiB  {:>2} a SM  {}{}",
                k.kernel,
                k.blocks,
                k.threads,
                k.shared_bytes.div_ceil(1024),
                k.blocks_per_sm,
                waves,
                tiles
            );
        }
    }
}

/// Where the timeline's kernel names go: FILE.kernels.csv beside FILE (its extension
/// replaced).
fn kernel_names_path(path: &std::path::Path) -> std::path::PathBuf {
    path.with_extension("kernels.csv")
}

/// Writes the timeline's stamps (every module's, ordered by release time) as CSV, and says
/// on stderr how many there are and how many the rings no longer held.
fn write_timeline(
    kernels: &greta_model::kernels::gpu::GpuKernels,
    s: &hiprt::Stream,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let rings = kernels.timeline(s)?;
    let mut stamps = Vec::new();
    let mut lost = Vec::new();
    for r in &rings {
        stamps.extend(r.stamps()?);
        if r.lost() > 0 {
            lost.push(format!("{} of {} ({})", r.lost(), r.count, r.module));
        }
    }
    stamps.sort_by_key(|s| (s.release_ns, s.seq));
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    greta_model::kernels::timeline::write_csv(&stamps, &mut f)?;
    std::io::Write::flush(&mut f)?;
    // The kernels' names by launch shape, beside it (tools/gpu/timeline.py reads both).
    let names = kernel_names_path(path);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&names)?);
    greta_model::kernels::timeline::write_kernel_shapes(&kernels.launched_shapes(), &mut f)?;
    std::io::Write::flush(&mut f)?;
    eprintln!(
        "timeline: {} block stamps written to {}{}",
        stamps.len(),
        path.display(),
        if lost.is_empty() {
            String::new()
        } else {
            format!(
                "; the rings keep the last {} a module, so the earliest were overwritten: {}",
                greta_model::kernels::timeline::RING,
                lost.join(", ")
            )
        }
    );
    Ok(())
}
