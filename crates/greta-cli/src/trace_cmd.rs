//! `greta trace diff`, `greta audit ...`, and the tracing options of `greta generate`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use greta_model::audit::{self, AuditSetup};
use greta_model::model::LoadedModel;
use greta_trace::diff::{self, Align, DiffReport, Tolerances};
use greta_trace::inject::Injection;
use greta_trace::record::{RunRecord, Trace};
use greta_trace::recorder::{Recorder, RunIds};
use greta_trace::selection::{self, Selection};

/// The StageTrace options of `greta generate` (each overrides its GRETA_TRACE_STAGE_* variable).
#[derive(Args, Default)]
pub struct TraceArgs {
    /// Record StageTrace records (GRETA_TRACE_STAGE=1).
    #[arg(long)]
    pub trace: bool,
    /// Trace file (GRETA_TRACE_STAGE_OUT; default greta-trace-<run>.jsonl).
    #[arg(long, value_name = "FILE")]
    pub trace_out: Option<PathBuf>,
    /// Layers: all, a list, ranges, last, e.g. 0-2,15,last (GRETA_TRACE_STAGE_LAYERS).
    #[arg(long, value_name = "SEL")]
    pub trace_layers: Option<String>,
    /// Points or globs, e.g. attn_*,logits (GRETA_TRACE_STAGE_POINTS).
    #[arg(long, value_name = "SEL")]
    pub trace_points: Option<String>,
    /// prefill, decode (GRETA_TRACE_STAGE_PHASES).
    #[arg(long, value_name = "SEL")]
    pub trace_phases: Option<String>,
    /// last, all, or positions such as 0,5-7 (GRETA_TRACE_STAGE_TOKENS).
    #[arg(long, value_name = "SEL")]
    pub trace_tokens: Option<String>,
    /// Values in each record's sample (GRETA_TRACE_STAGE_SAMPLE; default 16).
    #[arg(long, value_name = "N")]
    pub trace_sample: Option<String>,
    /// Add input provenance to embed_out / attn_in (GRETA_TRACE_STAGE_DEBUG_INPUT=1).
    #[arg(long)]
    pub trace_debug_input: bool,
    /// Directory for full tensors as .npy (GRETA_TRACE_STAGE_DUMP).
    #[arg(long, value_name = "DIR")]
    pub trace_dump: Option<PathBuf>,
    /// Perturb a stage: [PHASE@]LAYER:POINT:KIND, LAYER an index, * (every layer) or -
    /// (outside the layers), PHASE prefill or decode (default both), KIND one of scale=F,
    /// add=F, nan, zero, f16 (round to f16), f16lo8 (f16 hi + FP8 lo), or f16in, f16lo8in
    /// (the same roundings of one product's input: POINT q, k, v, attn_out, ffn_gate,
    /// ffn_up or ffn_out; CPU only), f16lo8w8in (f16lo8in with the low half times the
    /// weights' FP8 copy, as the GPU's --split-lo fp8; CPU only), f16lo8sw8in (f16lo8w8in with
    /// the low half 2:4-sparse: the 2 largest of every 4 kept, docs/sparse-lo.md; CPU only),
    /// or f16p (POINT attn_ctx: the attention's probabilities
    /// rounded to f16, as the GPU's prefill flash attention does; CPU only). Repeat the flag
    /// to perturb several stages in one run (applied in the order given).
    #[arg(
        long,
        value_name = "[PHASE@]LAYER:POINT:KIND",
        allow_hyphen_values = true
    )]
    pub inject: Vec<String>,
}

impl TraceArgs {
    /// The selection from the environment, then these options on top. Parsed once, here.
    pub fn selection(&self, env: &[(String, String)]) -> Result<Selection> {
        let mut vars: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("GRETA_TRACE_STAGE"))
            .cloned()
            .collect();
        let mut set = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                vars.push((k.to_string(), v));
            }
        };
        set("GRETA_TRACE_STAGE", self.trace.then(|| "1".into()));
        set(
            "GRETA_TRACE_STAGE_OUT",
            self.trace_out.as_ref().map(|p| p.display().to_string()),
        );
        set("GRETA_TRACE_STAGE_LAYERS", self.trace_layers.clone());
        set("GRETA_TRACE_STAGE_POINTS", self.trace_points.clone());
        set("GRETA_TRACE_STAGE_PHASES", self.trace_phases.clone());
        set("GRETA_TRACE_STAGE_TOKENS", self.trace_tokens.clone());
        set("GRETA_TRACE_STAGE_SAMPLE", self.trace_sample.clone());
        set(
            "GRETA_TRACE_STAGE_DEBUG_INPUT",
            self.trace_debug_input.then(|| "1".into()),
        );
        set(
            "GRETA_TRACE_STAGE_DUMP",
            self.trace_dump.as_ref().map(|p| p.display().to_string()),
        );
        // Later entries win: a map keeps the command line's value over the environment's.
        let mut last = std::collections::BTreeMap::new();
        for (k, v) in &vars {
            last.insert(k.as_str(), v.as_str());
        }
        Ok(Selection::from_vars(last)?)
    }

    pub fn injections(&self) -> Result<Vec<Injection>> {
        parse_injections(&self.inject)
    }
}

/// The `--inject` values, parsed in the order given.
pub(crate) fn parse_injections(values: &[String]) -> Result<Vec<Injection>> {
    Ok(values.iter().map(|s| s.parse()).collect::<Result<_, _>>()?)
}

/// A run id: unique enough to tell traces apart, derived from the clock and the process.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:012x}",
        xxhash_rust::xxh3::xxh3_64(format!("{nanos}-{}", std::process::id()).as_bytes())
            & 0xffff_ffff_ffff
    )
}

fn selection_json(sel: &Selection) -> serde_json::Value {
    serde_json::json!({
        "layers": sel.layers.to_string(),
        "points": sel.points.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "phases": sel.phases.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "tokens": sel.tokens.to_string(),
        "sample": sel.sample,
        "debug_input": sel.debug_input,
        "dump": sel.dump.as_ref().map(|p| p.display().to_string()),
    })
}

/// The recorder for `greta generate`, writing to the selection's file.
pub fn generate_recorder(
    sel: Selection,
    inject: &[Injection],
    lm: &LoadedModel,
    route: &str,
) -> Result<(Recorder, Option<PathBuf>)> {
    let run = run_id();
    let ids = RunIds {
        run: run.clone(),
        prompt: "p0".into(),
        backend: "cpu".into(),
        route: route.into(),
    };
    let n_layers = lm.model.config.n_layers;
    if !sel.enabled {
        return Ok((
            Recorder::new(sel, n_layers, ids).with_injections(inject.iter().copied())?,
            None,
        ));
    }
    let path = sel
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("greta-trace-{run}.jsonl")));
    if let Some(d) = &sel.dump {
        std::fs::create_dir_all(d)
            .with_context(|| format!("creating the dump directory {}", d.display()))?;
    }
    let file = std::fs::File::create(&path)
        .with_context(|| format!("creating the trace file {}", path.display()))?;
    let record = RunRecord {
        v: greta_trace::SCHEMA_VERSION,
        run,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        git_rev: env!("GRETA_GIT_REV").into(),
        model_path: lm.path.display().to_string(),
        model_hash: lm.content_hash.clone(),
        model_config: serde_json::to_value(&lm.model.config)?,
        backend: "cpu".into(),
        device: "cpu".into(),
        routes: vec![route.into()],
        selection: selection_json(&sel),
    };
    let rec = Recorder::new(sel, n_layers, ids)
        .with_injections(inject.iter().copied())?
        .to_writer(Box::new(std::io::BufWriter::new(file)), &record)?;
    Ok((rec, Some(path)))
}

#[derive(Args)]
pub struct DiffArgs {
    /// The trace under test.
    pub a: PathBuf,
    /// The reference trace.
    pub b: PathBuf,
    /// Which fields align records: position (prompt, pos, layer, point) or step (also phase and step).
    #[arg(long, default_value = "position", value_parser = parse_align)]
    pub align: Align,
    #[command(flatten)]
    pub report: ReportArgs,
}

fn parse_align(s: &str) -> Result<Align, String> {
    s.parse()
}

#[derive(Args)]
pub struct ReportArgs {
    /// Relative tolerance: NUMBER for every point, or POINT=NUMBER, comma-separated
    /// (default 1e-3 for the max metric; the GPU backend audit: 8e-3 on the rms metric).
    #[arg(long, value_name = "SPEC")]
    pub tol: Option<String>,
    /// Error metric: max (max|a-b| / rms(b), the default) or rms (rms(a-b) / rms(b); the
    /// GPU backend audit's default, see docs/trace.md).
    #[arg(long, value_name = "max|rms")]
    pub metric: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ReportArgs {
    fn tolerances(&self) -> Result<Tolerances> {
        let mut t = match &self.tol {
            None => Tolerances::default(),
            Some(s) => Tolerances::parse(s).map_err(anyhow::Error::msg)?,
        };
        if let Some(m) = &self.metric {
            t.metric = greta_trace::diff::Metric::parse(m).map_err(anyhow::Error::msg)?;
        }
        Ok(t)
    }
}

/// Prints a report; returns the exit code (0 within tolerance, 1 divergence).
fn print_report(
    kind: &str,
    report: &DiffReport,
    json: bool,
    extra: serde_json::Value,
) -> Result<i32> {
    if json {
        let mut v = serde_json::to_value(report)?;
        v["audit"] = serde_json::Value::String(kind.to_string());
        v["diverged"] = serde_json::Value::Bool(report.diverged());
        v["verdict"] = serde_json::Value::String(report.verdict());
        if let serde_json::Value::Object(m) = extra {
            for (k, x) in m {
                v[k] = x;
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{kind}: {} (under test) vs {} (reference)",
            report.label_a, report.label_b
        );
        print!("{}", report.table());
        println!("{}", report.verdict());
    }
    Ok(if report.diverged() { 1 } else { 0 })
}

pub fn cmd_diff(a: DiffArgs) -> Result<i32> {
    let tol = a.report.tolerances()?;
    let ta = Trace::read(&a.a)?;
    let tb = Trace::read(&a.b)?;
    let report = diff::diff(
        &a.a.display().to_string(),
        &diff::from_records(ta.stages),
        &a.b.display().to_string(),
        &diff::from_records(tb.stages),
        a.align,
        &tol,
    );
    print_report("trace diff", &report, a.report.json, serde_json::json!({}))
}

#[derive(Args)]
pub struct AuditArgs {
    /// The prompt (raw text, BOS added as the model asks).
    #[arg(long, default_value = DEFAULT_AUDIT_PROMPT)]
    pub prompt: String,
    /// Layers to compare (all, a list, ranges, last).
    #[arg(long, default_value = "all")]
    pub layers: String,
    /// Points or globs to compare.
    #[arg(long, default_value = "all")]
    pub points: String,
    /// Perturb a stage of the route under test: [PHASE@]LAYER:POINT:KIND (LAYER - outside
    /// layers, * every layer; PHASE prefill or decode, default both; KIND scale=F, add=F,
    /// nan, zero, f16, f16lo8; f16in, f16lo8in, f16lo8w8in, f16lo8sw8in round one product's input and f16p the
    /// attention's probabilities (attn_ctx), CPU routes only).
    /// Repeat the flag for several.
    #[arg(
        long,
        value_name = "[PHASE@]LAYER:POINT:KIND",
        allow_hyphen_values = true
    )]
    pub inject: Vec<String>,
    /// Apply the --inject faults to the reference route as well (audit backend only): the audit
    /// then passes only if the route under test carries each change on as the reference
    /// does (a fused launch rerun from an observer's change, not left as computed).
    #[arg(long, requires = "inject")]
    pub inject_reference: bool,
    /// Both routes keep K and V rounded to f16 (audit backend without a GPU: the CPU routes;
    /// the GPU audit's reference always does, to match the GPU's f16 cache). With it a CPU
    /// emulation of the GPU's numerics compares what the GPU audit compares.
    #[arg(long)]
    pub kv_f16: bool,
    #[command(flatten)]
    pub gpu: crate::gpu_args::GpuArgs,
    #[command(flatten)]
    pub report: ReportArgs,
}

pub const DEFAULT_AUDIT_PROMPT: &str = "The history of science is the study of how people came to understand the natural world, from the first records of the stars to the laws of motion and the structure of the atom.";

impl AuditArgs {
    pub fn setup(&self) -> Result<AuditSetup> {
        let selection = Selection {
            layers: selection::parse_layers(&self.layers)?,
            points: selection::parse_points(&self.points)?,
            ..Selection::default()
        };
        Ok(AuditSetup {
            selection,
            inject: parse_injections(&self.inject)?,
            inject_reference: self.inject_reference,
            kv_f16: self.kv_f16,
            tolerances: self.report.tolerances()?,
            prompt_id: "p0".into(),
        })
    }
}

pub fn cmd_prefill_decode(
    args: &AuditArgs,
    positions: Option<&str>,
    lm: &LoadedModel,
) -> Result<i32> {
    refuse_backend_only_flags(args, "prefill-decode")?;
    let setup = args.setup()?;
    let tokens = lm.tokenizer.encode(&args.prompt, true)?;
    let positions: Vec<usize> = match positions {
        None | Some("all") => (0..tokens.len()).collect(),
        Some(s) => match selection::parse_tokens(s)? {
            selection::TokenSel::Positions(p) => p,
            _ => bail!("--positions {s:?}: accepted: all, or positions such as 0,5-7"),
        },
    };
    if let Some(&p) = positions.iter().find(|&&p| p >= tokens.len()) {
        bail!(
            "--positions: position {p} is past the prompt's {} tokens",
            tokens.len()
        );
    }
    let report = audit::prefill_decode(&lm.model, &tokens, &positions, &setup, &mut |_| {})?;
    print_report(
        "audit prefill-decode",
        &report,
        args.report.json,
        serde_json::json!({"positions": positions, "tokens": tokens.len()}),
    )
}

pub fn cmd_backend(
    args: &AuditArgs,
    against: &str,
    path: &Path,
    platform: greta_hal::PlatformChoice,
) -> Result<i32> {
    if against != "cpu" {
        bail!("--against {against:?}: accepted: cpu");
    }
    let setup = args.setup()?;
    use greta_model::llama::weights::CpuWeights;
    let report = match greta_hal::Gpu::open(platform, 0) {
        Ok(gpu) => {
            refuse_input_probes(&setup.inject, "the GPU route")?;
            // The reference holds the weights as the GPU does (rounded to f16), so the audit
            // measures the GPU's kernels, not the f16 storage format.
            let reference =
                greta_model::model::load_as(path, CpuWeights::F16Rounded, &mut |_, _| {})?;
            crate::warn_assumed(path, &reference);
            let tokens = reference.tokenizer.encode(&args.prompt, true)?;
            let route = format!("gpu-{}", gpu.platform());
            eprintln!(
                "auditing {route} ({}) against {}",
                gpu.name(),
                CpuWeights::F16Rounded.route_name()
            );
            let model = args.gpu.upload(&gpu, &reference.model)?;
            eprintln!(
                "GPU prefill inputs as hi + lo: {} (lo {})",
                model.split_inputs,
                model.split_lo()
            );
            let mut setup = setup;
            if args.report.metric.is_none() {
                setup.tolerances.metric = greta_trace::diff::Metric::Rms;
            }
            if args.report.tol.is_none() {
                setup.tolerances.default = match setup.tolerances.metric {
                    greta_trace::diff::Metric::Rms => greta_trace::diff::GPU_F16_RMS_TOLERANCE,
                    greta_trace::diff::Metric::Max => greta_trace::diff::GPU_F16_TOLERANCE,
                };
            }
            eprintln!(
                "tolerance: {:.0e} on the {} error (f16 storage and f16 matrix-unit inputs on the GPU; --metric and --tol override)",
                setup.tolerances.default,
                setup.tolerances.metric.name()
            );
            let report = audit::backend_gpu(
                &model,
                &route,
                &reference.model,
                CpuWeights::F16Rounded.route_name(),
                &tokens,
                &setup,
            )?;
            return print_report(
                "audit backend",
                &report,
                args.report.json,
                serde_json::json!({"tokens": tokens.len()}),
            );
        }
        Err(e) => {
            let reference = greta_model::model::load_as(path, CpuWeights::F32, &mut |_, _| {})?;
            crate::warn_assumed(path, &reference);
            let tokens = reference.tokenizer.encode(&args.prompt, true)?;
            // No GPU: the optimised CPU route is audited against the plain one.
            eprintln!(
                "no GPU ({e}): auditing {} against {}",
                CpuWeights::Blocks.route_name(),
                CpuWeights::F32.route_name()
            );
            let under = greta_model::model::load_as(path, CpuWeights::Blocks, &mut |_, _| {})?;
            let report = audit::backend(
                (&under.model, CpuWeights::Blocks.route_name()),
                (&reference.model, CpuWeights::F32.route_name()),
                &tokens,
                &setup,
            )?;
            print_report(
                "audit backend",
                &report,
                args.report.json,
                serde_json::json!({"tokens": tokens.len()}),
            )
        }
    };
    report
}

/// `--inject-reference` and `--kv-f16` mean something only where a reference route runs
/// beside the route under test from the same tokens, each with its own cache: `audit backend`.
fn refuse_backend_only_flags(args: &AuditArgs, audit: &str) -> Result<()> {
    for (set, flag) in [
        (args.inject_reference, "--inject-reference"),
        (args.kv_f16, "--kv-f16"),
    ] {
        if set {
            bail!("{flag}: accepted by `audit backend` only, not `audit {audit}`");
        }
    }
    Ok(())
}

/// The probes inside an operation (`f16in`, `f16lo8in` on a product's input, `f16p` on the attention's probabilities) act in the CPU forward only: a route
/// that runs its products elsewhere would silently ignore them.
fn refuse_input_probes(inject: &[Injection], route: &str) -> Result<()> {
    if let Some(i) = inject.iter().find(|i| i.fault.on_input()) {
        bail!(
            "--inject {i}: probes inside an operation (a product's input, the attention's probabilities) \
             run on the CPU forward only, not on {route}; round the stage the product reads instead \
             (e.g. prefill@*:attn_norm:f16)"
        );
    }
    Ok(())
}

pub fn cmd_route(args: &AuditArgs, lm: &LoadedModel) -> Result<i32> {
    refuse_backend_only_flags(args, "route")?;
    let setup = args.setup()?;
    refuse_input_probes(
        &setup.inject,
        "`audit route` (it re-runs each product on its recorded input)",
    )?;
    let tokens = lm.tokenizer.encode(&args.prompt, true)?;
    let reports = audit::route(&lm.model, &tokens, &setup)?;
    let diverged = reports.iter().any(|r| r.report.diverged());
    if args.report.json {
        let v: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| serde_json::json!({"route": r.route, "diverged": r.report.diverged(), "verdict": r.report.verdict(), "report": r.report}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"audit": "audit route", "reference": "gemv-f32-plain", "tokens": tokens.len(), "routes": v})
            )?
        );
    } else {
        println!("audit route: every matrix product re-run on its recorded input by each kernel route, against gemv-f32-plain");
        for r in &reports {
            let worst = r
                .report
                .points
                .iter()
                .map(|p| p.worst_error)
                .fold(0f64, f64::max);
            println!(
                "route {:<14} worst error {:.3e}  {}",
                r.route,
                worst,
                r.report.verdict()
            );
        }
        if diverged {
            for r in reports.iter().filter(|r| r.report.diverged()) {
                println!("\nroute {}:", r.route);
                print!("{}", r.report.table());
            }
        }
    }
    Ok(if diverged { 1 } else { 0 })
}
