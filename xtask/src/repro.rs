//! `cargo xtask repro NAME` runs experiments/NAME.toml and leaves a self-describing artifact
//! directory; `cargo xtask repro --check DIR` re-runs the experiment an artifact records and
//! compares the two. Layout and rules: docs/reproducibility.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::root;

/// An experiment file (experiments/NAME.toml).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    pub description: String,
    /// "default" (the default model), a path (relative to the workspace), or synthetic:NAME.
    pub model: String,
    /// GRETA_* variables set for every step.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique in the experiment; names the step's files.
    pub name: String,
    pub kind: Kind,
    /// Overrides the experiment's model for this step.
    #[serde(default)]
    pub model: Option<String>,
    /// cpu, gpu or auto (steps that take --backend).
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    /// Further options, passed as they are.
    #[serde(default)]
    pub args: Vec<String>,
    /// Relative tolerance on the step's numbers when a re-run is not deterministic (another
    /// machine or backend); defaults per kind.
    #[serde(default)]
    pub tolerance: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Generate,
    Trace,
    Perplexity,
    AuditPrefillDecode,
    AuditBackend,
    AuditRoute,
    Bench,
}

impl Kind {
    /// Exit codes that mean the step ran (an audit that finds a divergence has run).
    fn accepted_exit(self) -> &'static [i32] {
        match self {
            Kind::AuditPrefillDecode | Kind::AuditBackend | Kind::AuditRoute => &[0, 1],
            _ => &[0],
        }
    }
    /// Whether two runs on the same machine and backend give identical bytes.
    fn deterministic(self) -> bool {
        self != Kind::Bench
    }
    fn default_tolerance(self) -> f64 {
        match self {
            Kind::Bench => 0.25,
            Kind::Perplexity => 1e-3,
            // Audit errors are rounding noise; across machines they move by their own size.
            _ => 1.0,
        }
    }
    /// Keys whose values are expected to change between runs (never compared).
    fn volatile(key: &str) -> bool {
        matches!(
            key,
            "device" | "out" | "all_prefill_ms" | "all_decode_tok_s" | "duration_s"
        )
    }
}

pub fn load(path: &Path) -> Result<Experiment> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let e: Experiment =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut seen = std::collections::BTreeSet::new();
    for s in &e.steps {
        if !seen.insert(&s.name) {
            bail!("{}: step name {:?} is used twice", path.display(), s.name);
        }
    }
    if e.steps.is_empty() {
        bail!("{}: no steps", path.display());
    }
    Ok(e)
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn default_model_path() -> PathBuf {
    let dir = std::env::var_os("GRETA_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("greta")))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/greta")
        });
    dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn xxh3_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
}

/// What the model argument of a step resolves to, and its identity for the manifest.
fn model_identity(spec: &str) -> Result<(Option<String>, Value)> {
    if let Some(name) = spec.strip_prefix("synthetic:") {
        return Ok((
            Some(spec.to_string()),
            json!({"source": spec, "synthetic": name, "content": "generated from --seed by greta (see greta_model::synthetic)"}),
        ));
    }
    let path = if spec == "default" {
        let p = default_model_path();
        if !p.exists() {
            crate::fetch_model()?;
        }
        p
    } else {
        root().join(spec)
    };
    if !path.exists() {
        bail!("model {spec:?}: {} does not exist", path.display());
    }
    let hash = if path.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        let mut parts = Vec::new();
        for n in names {
            parts.push(format!(
                "{}:{}",
                n.file_name().unwrap().to_string_lossy(),
                xxh3_file(&n)?
            ));
        }
        parts.join(",")
    } else {
        xxh3_file(&path)?
    };
    Ok((
        Some(path.display().to_string()),
        json!({"source": spec, "path": path.display().to_string(), "xxh3": hash}),
    ))
}

/// The machine, for deciding whether a re-run should be bit-identical.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let gpu = output(Command::new("nvidia-smi").args([
        "--query-gpu=name,driver_version,memory.total",
        "--format=csv,noheader",
    ]));
    json!({
        "os": output(Command::new("uname").args(["-srm"])),
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "gpu": if gpu.is_empty() { "none found (no nvidia-smi answer)".to_string() } else { gpu },
    })
}

/// The UTC time in `format` (date(1)'s), or "" when date does not answer.
fn utc(format: &str) -> String {
    output(Command::new("date").arg("-u").arg(format))
}

/// Whether tracked files differ from HEAD (the artifact is then "-dirty").
fn git_dirty() -> bool {
    !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty()
}

fn git(args: &[&str]) -> String {
    output(Command::new("git").arg("-C").arg(root()).args(args))
}

/// The greta binary of this checkout (built in release mode first).
fn greta_binary() -> Result<PathBuf> {
    crate::run(
        "cargo build --release -p greta-cli",
        crate::cargo().args(["build", "--release", "--quiet", "-p", "greta-cli"]),
    )?;
    Ok(root().join("target/release/greta"))
}

/// The command line of a step (after the binary).
fn step_args(step: &Step, model: &Option<String>, dir: &Path) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let model_args = |a: &mut Vec<String>| {
        if let Some(m) = model {
            a.extend(["-m".into(), m.clone()]);
        }
    };
    let backend = |a: &mut Vec<String>| {
        if let Some(b) = &step.backend {
            a.extend(["--backend".into(), b.clone()]);
        }
    };
    match step.kind {
        Kind::Generate | Kind::Trace => {
            a.push("generate".into());
            model_args(&mut a);
            backend(&mut a);
            if step.kind == Kind::Trace {
                let out = dir.join("traces").join(format!("{}.jsonl", step.name));
                a.extend([
                    "--trace".into(),
                    "--trace-out".into(),
                    out.display().to_string(),
                ]);
            }
            a.extend(step.args.iter().cloned());
            a.push(step.prompt.clone().unwrap_or_else(|| "Hello".into()));
        }
        Kind::Perplexity => {
            a.push("perplexity".into());
            model_args(&mut a);
            a.push("--json".into());
            a.extend(step.args.iter().cloned());
        }
        Kind::AuditPrefillDecode | Kind::AuditBackend | Kind::AuditRoute => {
            a.push("audit".into());
            a.push(
                match step.kind {
                    Kind::AuditPrefillDecode => "prefill-decode",
                    Kind::AuditBackend => "backend",
                    _ => "route",
                }
                .into(),
            );
            model_args(&mut a);
            if let Some(p) = &step.prompt {
                a.extend(["--prompt".into(), p.clone()]);
            }
            a.push("--json".into());
            a.extend(step.args.iter().cloned());
        }
        Kind::Bench => {
            a.push("bench".into());
            model_args(&mut a);
            backend(&mut a);
            a.push("--json".into());
            a.extend(step.args.iter().cloned());
        }
    }
    a
}

/// Where artifact directories go: $GRETA_ARTIFACTS_DIR, else artifacts/ in the workspace.
pub fn artifacts_root() -> PathBuf {
    std::env::var_os("GRETA_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("artifacts"))
}

fn artifact_dir(base: &Path, name: &str, suffix: &str) -> Result<PathBuf> {
    let date = utc("+%Y-%m-%d");
    let rev = git(&["rev-parse", "--short=12", "HEAD"]);
    let dirty = git_dirty();
    let base = base.join(if date.is_empty() {
        "undated".to_string()
    } else {
        date
    });
    let stem = format!(
        "{name}-{}{}{suffix}",
        if rev.is_empty() { "norev" } else { &rev },
        if dirty { "-dirty" } else { "" }
    );
    let mut dir = base.join(&stem);
    let mut n = 2;
    while dir.exists() {
        dir = base.join(format!("{stem}-{n}"));
        n += 1;
    }
    std::fs::create_dir_all(dir.join("traces"))?;
    Ok(dir)
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs `exp` into a new artifact directory; returns it. The manifest says "incomplete" from
/// the start and "complete" only once every step ran, so an interrupted or failed run never
/// looks finished.
pub fn run_experiment(
    exp: &Experiment,
    exp_text: &str,
    suffix: &str,
    base: &Path,
) -> Result<(PathBuf, bool)> {
    let font = crate::plots::font()?;
    let dir = artifact_dir(base, &exp.name, suffix)?;
    eprintln!("==> repro {}: artifacts in {}", exp.name, dir.display());
    std::fs::write(dir.join("experiment.toml"), exp_text)?;
    write_json(
        &dir.join("manifest.json"),
        &json!({"status": "incomplete", "experiment": exp}),
    )?;
    match run_in(exp, &dir, &font) {
        Ok(complete) => Ok((dir, complete)),
        Err(e) => {
            // Whatever stopped the run is recorded; the artifact stays incomplete.
            let mut m: Value = std::fs::read_to_string(dir.join("manifest.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_else(|| json!({}));
            m["status"] = json!("incomplete");
            m["error"] = json!(format!("{e:#}"));
            write_json(&dir.join("manifest.json"), &m)?;
            Err(e.context(format!(
                "the artifact {} is marked incomplete",
                dir.display()
            )))
        }
    }
}

fn run_in(exp: &Experiment, dir: &Path, font: &Path) -> Result<bool> {
    let dir = dir.to_path_buf();
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("GRETA_"))
        .collect();
    env.extend(exp.env.clone());
    let kernels = std::fs::read_to_string(root().join("target/kernels/manifest.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .map(|v| v["objects"].clone())
        .unwrap_or_else(|| json!("no kernel manifest (target/kernels): GPU steps use none"));
    let mut models = BTreeMap::new();
    for s in &exp.steps {
        let spec = s.model.clone().unwrap_or_else(|| exp.model.clone());
        if let std::collections::btree_map::Entry::Vacant(e) = models.entry(spec.clone()) {
            e.insert(model_identity(&spec)?);
        }
    }
    let greta = greta_binary()?;
    let mut manifest = json!({
        "status": "incomplete",
        "experiment": exp,
        "git": {
            "rev": git(&["rev-parse", "HEAD"]),
            "dirty": git_dirty(),
        },
        "rustc": output(Command::new("rustc").arg("-V")),
        "machine": machine(),
        "greta_info": output(Command::new(&greta).arg("info")),
        "kernels": kernels,
        "models": models.values().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        "env": env,
        "started": utc("+%Y-%m-%dT%H:%M:%SZ"),
    });
    write_json(&dir.join("manifest.json"), &manifest)?;
    let mut results = Vec::new();
    let mut complete = true;
    let n = exp.steps.len();
    for (i, step) in exp.steps.iter().enumerate() {
        let spec = step.model.clone().unwrap_or_else(|| exp.model.clone());
        let model = models[&spec].0.clone();
        let args = step_args(step, &model, &dir);
        eprintln!(
            "[{}/{n}] {} ({:?}): greta {}",
            i + 1,
            step.name,
            step.kind,
            args.join(" ")
        );
        let t = Instant::now();
        let out = Command::new(&greta)
            .args(&args)
            .envs(&exp.env)
            .current_dir(root())
            .output()
            .with_context(|| format!("starting greta for step {}", step.name))?;
        let secs = t.elapsed().as_secs_f64();
        let code = out.status.code().unwrap_or(-1);
        let stdout_file = dir.join(format!("{}.out", step.name));
        std::fs::write(&stdout_file, &out.stdout)?;
        std::fs::write(dir.join(format!("{}.err", step.name)), &out.stderr)?;
        let ran = step.kind.accepted_exit().contains(&code);
        complete &= ran;
        let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let mut hashes = BTreeMap::new();
        let mut trace_records = 0;
        hashes.insert(
            "stdout".to_string(),
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&out.stdout)),
        );
        if step.kind == Kind::Trace {
            let trace = dir.join("traces").join(format!("{}.jsonl", step.name));
            if let Ok(text) = std::fs::read_to_string(&trace) {
                // The first line names the run (its id and time) and each stage record repeats
                // the run id: the hash covers the stage records without it.
                let stages: String = text
                    .lines()
                    .skip(1)
                    .map(|l| match serde_json::from_str::<Value>(l) {
                        Ok(Value::Object(mut m)) => {
                            m.remove("run");
                            Value::Object(m).to_string()
                        }
                        _ => l.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                trace_records = text.lines().count().saturating_sub(1);
                hashes.insert(
                    "trace_stages".into(),
                    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(stages.as_bytes())),
                );
            }
        }
        let tail = String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!(
            "      exit {code} in {secs:.1}s{}",
            if ran {
                String::new()
            } else {
                format!(" -- FAILED:\n{tail}")
            }
        );
        let mut r = json!({
            "name": step.name,
            "kind": step.kind,
            "command": std::iter::once("greta".to_string()).chain(args.iter().cloned()).collect::<Vec<_>>(),
            "exit_code": code,
            "ran": ran,
            "duration_s": secs,
            "hashes": hashes,
            "output": parsed,
        });
        if step.kind == Kind::Generate {
            r["text"] = json!(String::from_utf8_lossy(&out.stdout));
        }
        if step.kind == Kind::Trace {
            r["trace_records"] = json!(trace_records);
        }
        if !ran {
            r["stderr_tail"] = json!(tail);
        }
        results.push(r);
        write_json(
            &dir.join("results.json"),
            &json!({"experiment": exp.name, "status": "incomplete", "steps": results}),
        )?;
    }
    let status = if complete { "complete" } else { "incomplete" };
    let results = json!({"experiment": exp.name, "status": status, "steps": results});
    write_json(&dir.join("results.json"), &results)?;
    crate::plots::report(&dir, exp, &manifest, &results, font)?;
    manifest["status"] = json!(status);
    manifest["finished"] = json!(utc("+%Y-%m-%dT%H:%M:%SZ"));
    write_json(&dir.join("manifest.json"), &manifest)?;
    eprintln!("==> {status}: {}", dir.display());
    Ok(complete)
}

/// Compares two JSON values: numbers within `tol` (relative; `None`: exactly), the rest
/// equal; volatile keys skipped. Differences are appended as "path: a vs b".
pub fn compare_json(path: &str, a: &Value, b: &Value, tol: Option<f64>, diffs: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                if Kind::volatile(k) {
                    continue;
                }
                match y.get(k) {
                    Some(vb) => compare_json(&format!("{path}.{k}"), va, vb, tol, diffs),
                    None => diffs.push(format!("{path}.{k}: only in the re-run")),
                }
            }
            for k in y
                .keys()
                .filter(|k| !x.contains_key(*k) && !Kind::volatile(k))
            {
                diffs.push(format!("{path}.{k}: only in the original"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                diffs.push(format!("{path}: {} vs {} elements", x.len(), y.len()));
                return;
            }
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                compare_json(&format!("{path}[{i}]"), va, vb, tol, diffs);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            let same = match tol {
                None => x == y,
                Some(t) => (x - y).abs() <= t * x.abs().max(y.abs()) || x == y,
            };
            if !same {
                diffs.push(format!("{path}: {x} vs {y}"));
            }
        }
        _ => {
            if a != b {
                diffs.push(format!("{path}: {a} vs {b}"));
            }
        }
    }
}

/// Re-runs the experiment of artifact `dir` and lists what differs; Ok(true) when nothing does.
pub fn check(dir: &Path) -> Result<bool> {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).with_context(|| {
            format!(
                "{}: not an artifact directory (no manifest.json)",
                dir.display()
            )
        })?,
    )?;
    if manifest["status"] != "complete" {
        bail!(
            "{}: the artifact is marked {} -- nothing complete to check against",
            dir.display(),
            manifest["status"]
        );
    }
    let text = std::fs::read_to_string(dir.join("experiment.toml"))?;
    let exp: Experiment = toml::from_str(&text)?;
    let old: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json"))?)?;
    let (new_dir, complete) = run_experiment(&exp, &text, "-check", &artifacts_root())?;
    let new: Value = serde_json::from_str(&std::fs::read_to_string(new_dir.join("results.json"))?)?;
    let new_manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(new_dir.join("manifest.json"))?)?;
    let same_machine = manifest["machine"] == new_manifest["machine"];
    let mut all = Vec::new();
    let mut report = Vec::new();
    for (i, step) in exp.steps.iter().enumerate() {
        let (a, b) = (&old["steps"][i], &new["steps"][i]);
        let deterministic = same_machine && step.kind.deterministic();
        let mut diffs = Vec::new();
        if a["exit_code"] != b["exit_code"] {
            diffs.push(format!(
                "exit code: {} vs {}",
                b["exit_code"], a["exit_code"]
            ));
        }
        if deterministic {
            compare_json("hashes", &b["hashes"], &a["hashes"], None, &mut diffs);
        } else if step.kind == Kind::Trace {
            let trace = |d: &Path| d.join("traces").join(format!("{}.jsonl", step.name));
            let st = Command::new(root().join("target/release/greta"))
                .args(["trace", "diff"])
                .arg(trace(&new_dir))
                .arg(trace(dir))
                .output()?;
            if !st.status.success() {
                diffs.push(format!(
                    "trace diff: {}",
                    String::from_utf8_lossy(&st.stdout)
                        .lines()
                        .last()
                        .unwrap_or("")
                ));
            }
        }
        if step.kind != Kind::Generate && step.kind != Kind::Trace {
            let tol = if deterministic {
                None
            } else {
                Some(step.tolerance.unwrap_or(step.kind.default_tolerance()))
            };
            compare_json("output", &b["output"], &a["output"], tol, &mut diffs);
        }
        let verdict = if diffs.is_empty() && step.kind == Kind::Generate && !deterministic {
            "exit code same; text not judged (another machine may part from it)".to_string()
        } else if diffs.is_empty() {
            format!(
                "same ({})",
                if deterministic {
                    "identical hashes"
                } else {
                    "within tolerance"
                }
            )
        } else {
            format!("DIFFERS ({} differences)", diffs.len())
        };
        eprintln!("  {}: {verdict}", step.name);
        for d in diffs.iter().take(20) {
            eprintln!("      {d}");
        }
        report
            .push(json!({"step": step.name, "deterministic": deterministic, "differences": diffs}));
        all.extend(diffs);
    }
    let ok = all.is_empty() && complete;
    write_json(
        &new_dir.join("check.json"),
        &json!({"checked": dir.display().to_string(), "same_machine": same_machine, "identical_or_within_tolerance": ok, "steps": report}),
    )?;
    eprintln!(
        "==> check of {}: {}",
        dir.display(),
        if ok {
            "the re-run agrees"
        } else {
            "the re-run DIFFERS"
        }
    );
    Ok(ok)
}

pub fn main(args: &[String]) -> Result<i32> {
    match args {
        [flag, dir] if flag == "--check" => Ok(if check(Path::new(dir))? { 0 } else { 1 }),
        [name] if !name.starts_with('-') => {
            let path = root().join("experiments").join(format!("{name}.toml"));
            if !path.exists() {
                let names: Vec<String> = std::fs::read_dir(root().join("experiments"))?
                    .filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.path()
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                    })
                    .collect();
                bail!("no experiment {name:?}; accepted: {}", names.join(", "));
            }
            let exp = load(&path)?;
            let (_, complete) = run_experiment(
                &exp,
                &std::fs::read_to_string(&path)?,
                "",
                &artifacts_root(),
            )?;
            Ok(if complete { 0 } else { 1 })
        }
        _ => bail!("usage: cargo xtask repro NAME | cargo xtask repro --check ARTIFACT_DIR"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_experiments_parse() {
        for name in ["smoke", "prefill-decode", "backend-parity", "bench"] {
            let e = load(&root().join("experiments").join(format!("{name}.toml"))).unwrap();
            assert_eq!(e.name, name);
        }
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        let bad = "name='x'\ndescription='d'\nmodel='default'\n[[steps]]\nname='a'\nkind='generate'\nbakend='cpu'\n";
        let err = toml::from_str::<Experiment>(bad).unwrap_err().to_string();
        assert!(err.contains("bakend"), "{err}");
        let bad = "name='x'\ndescription='d'\nmodel='default'\n[[steps]]\nname='a'\nkind='fly'\n";
        let err = toml::from_str::<Experiment>(bad).unwrap_err().to_string();
        assert!(
            err.contains("fly") && err.contains("audit-backend"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_model_leaves_an_artifact_marked_incomplete_with_the_reason() {
        let text = "name='m'\ndescription='d'\nmodel='no/such/model.gguf'\n[[steps]]\nname='a'\nkind='generate'\n";
        let exp: Experiment = toml::from_str(text).unwrap();
        let base = std::env::temp_dir().join(format!("greta-repro-test-{}", std::process::id()));
        let err = run_experiment(&exp, text, "", &base).unwrap_err();
        assert!(format!("{err:#}").contains("marked incomplete"), "{err:#}");
        let day = std::fs::read_dir(&base)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let dir = std::fs::read_dir(day)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let m: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(m["status"], "incomplete");
        assert!(
            m["error"].as_str().unwrap().contains("no/such/model.gguf"),
            "{m}"
        );
        assert!(
            check(&dir).is_err(),
            "an incomplete artifact must not be checkable"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn json_comparison_exact_and_within_tolerance() {
        let a = json!({"ppl": 16.49, "device": "x", "points": [{"worst_error": 1e-4}], "ok": true});
        let b = json!({"ppl": 16.50, "device": "y", "points": [{"worst_error": 1e-4}], "ok": true});
        let mut d = Vec::new();
        compare_json("o", &a, &b, None, &mut d);
        assert_eq!(d, vec!["o.ppl: 16.49 vs 16.5"]);
        d.clear();
        compare_json("o", &a, &b, Some(1e-3), &mut d);
        assert!(d.is_empty(), "{d:?}");
        let c = json!({"ppl": 16.49, "points": [], "ok": false});
        d.clear();
        compare_json("o", &a, &c, Some(1.0), &mut d);
        assert_eq!(d.len(), 2, "{d:?}");
    }
}
