//! report.md and its plots (PNG through plotters) for a repro artifact: what ran, on what,
//! with which result, and per audit the worst error of each layer against the tolerance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde_json::Value;

use crate::repro::{Experiment, Kind};

const FONT_CANDIDATES: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// The TTF the plots' text is drawn with: $GRETA_FONT, else DejaVu Sans (Debian's
/// fonts-dejavu-core, which `cargo xtask ci` installs). Registered once with plotters.
pub fn font() -> Result<PathBuf> {
    let path = std::env::var_os("GRETA_FONT")
        .map(PathBuf::from)
        .or_else(|| {
            FONT_CANDIDATES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        });
    let Some(path) = path else {
        bail!(
            "no TTF font for the report's plots: install fonts-dejavu-core (apt-get install fonts-dejavu-core) or set GRETA_FONT to a .ttf file; looked in {}",
            FONT_CANDIDATES.join(", ")
        );
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{}: not a usable TTF font", path.display()))?;
    Ok(path)
}

const SHOWN: [&str; 5] = ["attn_ctx", "attn_out", "ffn_act", "ffn_out", "resid_ffn"];
const FLOOR: f64 = 1e-9;

/// Per-layer worst error of an audit's points: the worst over all points, and the series of
/// the points in SHOWN. Returns the PNG's file name.
/// A route audit (several reports, one per kernel route) gets one line per route instead.
fn audit_plot(dir: &Path, step: &str, out: &Value) -> Result<Option<String>> {
    let mut series: BTreeMap<String, Vec<(usize, f64)>> = BTreeMap::new();
    let mut worst: BTreeMap<usize, f64> = BTreeMap::new();
    let mut tol: f64 = 0.0;
    let mut metric = out["metric"].as_str().unwrap_or("max").to_string();
    if let Some(routes) = out["routes"].as_array() {
        for r in routes {
            let rep = &r["report"];
            metric = rep["metric"].as_str().unwrap_or("max").to_string();
            let mut per_layer: BTreeMap<usize, f64> = BTreeMap::new();
            for p in rep["points"].as_array().into_iter().flatten() {
                let (Some(layer), Some(err)) = (p["layer"].as_u64(), p["worst_error"].as_f64())
                else {
                    continue;
                };
                let err = if err.is_finite() { err.max(FLOOR) } else { 1.0 };
                tol = tol.max(p["tolerance"].as_f64().unwrap_or(0.0));
                let e = per_layer.entry(layer as usize).or_insert(FLOOR);
                *e = e.max(err);
                let w = worst.entry(layer as usize).or_insert(FLOOR);
                *w = w.max(err);
            }
            let label = rep["label_a"].as_str().unwrap_or("?").to_string();
            series.insert(format!("route {label}"), per_layer.into_iter().collect());
        }
    }
    for p in out["points"].as_array().into_iter().flatten() {
        let (Some(layer), Some(err)) = (p["layer"].as_u64(), p["worst_error"].as_f64()) else {
            continue;
        };
        let layer = layer as usize;
        let err = if err.is_finite() { err.max(FLOOR) } else { 1.0 };
        tol = tol.max(p["tolerance"].as_f64().unwrap_or(0.0));
        let w = worst.entry(layer).or_insert(FLOOR);
        *w = w.max(err);
        let name = p["point"].as_str().unwrap_or("?");
        if SHOWN.contains(&name) {
            series
                .entry(name.to_string())
                .or_default()
                .push((layer, err));
        }
    }
    if worst.is_empty() {
        return Ok(None);
    }
    let n_layers = worst.keys().max().copied().unwrap_or(0) + 1;
    let top = worst.values().cloned().fold(tol, f64::max) * 3.0;
    let file = format!("{step}.png");
    let path = dir.join(&file);
    let root = BitMapBackend::new(&path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{step}: worst error per layer (metric: {metric})"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            0usize..n_layers.max(2) - 1,
            (FLOOR..top.max(1e-6)).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("layer")
        .y_desc("relative error")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    let colors = [BLUE, GREEN, MAGENTA, CYAN, RGBColor(200, 120, 0)];
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().cloned(), c.stroke_width(1)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
    }
    chart
        .draw_series(LineSeries::new(
            worst.iter().map(|(l, e)| (*l, *e)),
            BLACK.stroke_width(3),
        ))?
        .label("worst of all points")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(3)));
    if tol > 0.0 {
        chart
            .draw_series(LineSeries::new(
                vec![(0, tol), (n_layers.max(2) - 1, tol)],
                RED.stroke_width(2),
            ))?
            .label(format!("tolerance {tol:.0e}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(Some(file))
}

fn summary(kind: Kind, step: &Value) -> String {
    let o = &step["output"];
    if step["ran"] != true {
        return format!(
            "**failed**: {}",
            step["stderr_tail"]
                .as_str()
                .unwrap_or("")
                .replace('\n', " / ")
        );
    }
    match kind {
        Kind::Generate => {
            let t = step["text"].as_str().unwrap_or("").replace('\n', " ");
            let short: String = t.chars().take(100).collect();
            format!(
                "\"{short}{}\"",
                if t.chars().count() > 100 { "…" } else { "" }
            )
        }
        Kind::Trace => format!(
            "{} stage records in traces/{}.jsonl",
            step["trace_records"].as_u64().unwrap_or(0),
            step["name"].as_str().unwrap_or("?")
        ),
        // `--kl` runs report the divergence from the plain model instead.
        Kind::Perplexity if o.get("kld_mean").is_some() => format!(
            "under {}: perplexity {:.4} against {:.4} plain, KL mean {:.2e} / max {:.2e} nats, same top token at {:.2} % of {} positions",
            o["inject"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            o["ppl_probe"].as_f64().unwrap_or(f64::NAN),
            o["ppl_base"].as_f64().unwrap_or(f64::NAN),
            o["kld_mean"].as_f64().unwrap_or(f64::NAN),
            o["kld_max"].as_f64().unwrap_or(f64::NAN),
            100.0 * o["same_top1"].as_f64().unwrap_or(f64::NAN),
            o["scored"]
        ),
        Kind::Perplexity => format!(
            "perplexity {:.4} over {} chunks ({} tokens)",
            o["ppl"].as_f64().unwrap_or(f64::NAN),
            o["chunks"],
            o["tokens"]
        ),
        Kind::AuditRoute => {
            let routes: Vec<String> = o["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let rep = &r["report"];
                    let worst = rep["points"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["worst_error"].as_f64())
                        .fold(0.0, f64::max);
                    format!(
                        "{} {} (worst {worst:.1e})",
                        rep["label_a"].as_str().unwrap_or("?"),
                        if r["diverged"] == true {
                            "DIVERGES"
                        } else {
                            "ok"
                        }
                    )
                })
                .collect();
            format!(
                "against {}: {}",
                o["reference"].as_str().unwrap_or("?"),
                routes.join(", ")
            )
        }
        Kind::AuditPrefillDecode | Kind::AuditBackend => {
            o["verdict"].as_str().unwrap_or("(no verdict)").to_string()
        }
        Kind::Bench => format!(
            "prefill {:.2} ms, decode {:.1} tok/s, {:.0} GB/s = {:.2} of the copy bandwidth ({})",
            o["prefill_ms"].as_f64().unwrap_or(f64::NAN),
            o["decode_tok_s"].as_f64().unwrap_or(f64::NAN),
            o["achieved_gb_s"].as_f64().unwrap_or(f64::NAN),
            o["fraction_of_copy"].as_f64().unwrap_or(f64::NAN),
            o["device"].as_str().unwrap_or("?")
        ),
    }
}

/// Writes report.md (and the audit plots) into the artifact directory.
pub fn report(
    dir: &Path,
    exp: &Experiment,
    manifest: &Value,
    results: &Value,
    font: &Path,
) -> Result<()> {
    let mut md = format!(
        "# {} — {}\n\n{}\n\n",
        exp.name,
        results["status"].as_str().unwrap_or("?"),
        exp.description.trim()
    );
    md += &format!(
        "- code: git {}{}\n- machine: {}; {} CPUs ({}); GPU: {}\n- toolchain: {}\n",
        manifest["git"]["rev"].as_str().unwrap_or("?"),
        if manifest["git"]["dirty"] == true {
            " (with uncommitted changes)"
        } else {
            ""
        },
        manifest["machine"]["os"].as_str().unwrap_or("?"),
        manifest["machine"]["cpus"],
        manifest["machine"]["cpu"].as_str().unwrap_or("?"),
        manifest["machine"]["gpu"].as_str().unwrap_or("?"),
        manifest["rustc"].as_str().unwrap_or("?"),
    );
    for m in manifest["models"].as_array().into_iter().flatten() {
        md += &format!(
            "- model {}: {}\n",
            m["source"].as_str().unwrap_or("?"),
            m["xxh3"]
                .as_str()
                .map(|h| format!("xxh3 {h}"))
                .unwrap_or_else(|| m["content"].as_str().unwrap_or("").to_string())
        );
    }
    md += &format!(
        "- started {}; everything in force is in manifest.json\n\n",
        manifest["started"].as_str().unwrap_or("?")
    );
    md += "| step | what ran | exit | time | result |\n|---|---|---|---|---|\n";
    let mut plots = Vec::new();
    for (step, r) in exp
        .steps
        .iter()
        .zip(results["steps"].as_array().into_iter().flatten())
    {
        md += &format!(
            "| {} | `{}` | {} | {:.1} s | {} |\n",
            step.name,
            r["command"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
                .replace('|', "\\|"),
            r["exit_code"],
            r["duration_s"].as_f64().unwrap_or(0.0),
            summary(step.kind, r).replace('|', "\\|")
        );
        if matches!(
            step.kind,
            Kind::AuditPrefillDecode | Kind::AuditBackend | Kind::AuditRoute
        ) {
            if let Some(f) = audit_plot(dir, &step.name, &r["output"])? {
                plots.push((step.name.clone(), f));
            }
        }
    }
    for (name, f) in plots {
        md += &format!(
            "\n## {name}\n\n![{name}]({f})\n\nWorst relative error per layer (log scale; exact zeros drawn at {FLOOR:.0e}), the worst over all points in black, the tolerance in red. A point above the red line is a divergence.\n"
        );
    }
    md += &format!(
        "\n## Re-checking\n\n`cargo xtask repro --check {}` re-runs this experiment and compares: identical hashes on the same machine and backend, within each step's tolerance elsewhere (docs/reproducibility.md). Plots drawn with {}.\n",
        dir.display(),
        font.display()
    );
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}
