//! Comparing two traces: align their records, measure each pair's error, and name the
//! first divergence in pipeline order (earliest layer, then point, then position).

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::Serialize;

use crate::point::{Phase, Point};
use crate::record::StageRecord;
use crate::recorder::Captured;

/// Which record fields must agree for two records to be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// prompt, position, layer, point: a token's stages whatever pass computed them
    /// (prefill vs decode).
    Position,
    /// Also phase and step: the same pass of the same run.
    Step,
}

impl std::str::FromStr for Align {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "position" => Ok(Align::Position),
            "step" => Ok(Align::Step),
            other => Err(format!(
                "unknown --align {other:?}; accepted: position, step"
            )),
        }
    }
}

/// How the error of a pair of rows is measured (b: the reference side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// max|a − b| / rms(b): the worst element, in units of the row's scale. Sensitive to a
    /// single wrong element; grows with the row length and the crest factor of the row.
    Max,
    /// rms(a − b) / rms(b) (the square root of test-backend-ops' NMSE): a fault that scales or
    /// shifts a whole row shows at its full size, while independent per-element rounding
    /// (f16 storage) averages out instead of being read at its largest.
    Rms,
}

impl Metric {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "max" => Ok(Metric::Max),
            "rms" => Ok(Metric::Rms),
            other => Err(format!("--metric {other:?}: accepted: max, rms")),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Metric::Max => "max",
            Metric::Rms => "rms",
        }
    }
}

/// Relative tolerances on the chosen error metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerances {
    pub metric: Metric,
    pub default: f64,
    pub per_point: BTreeMap<Point, f64>,
}

/// f32 on both sides, only summation order differing, stays near 1e-6; 1e-3 leaves room
/// for reordered reductions over long rows while a planted fault of 1 % stands out.
pub const DEFAULT_TOLERANCE: f64 = 1e-3;

/// The default when the route under test is the GPU backend, audited against the CPU route
/// that holds weights and K/V as f16 too. What remains is rounding the two sides cannot
/// share: a K or V element whose f32 value differs in its last bits (another summation order)
/// can round to the neighbouring f16, one f16 ulp (2^-11 relative) apart, and these add up
/// over the layers. Measured on an H100 (2026-11-28), worst over every stage and position:
/// 5.7e-3 for a random SmolLM2-135M-shaped model (30 layers), 3.9e-3 for a Llama-2-7B-shaped
/// one (2 layers). 1e-2 leaves room for that; a planted 1 % fault still stands out.
pub const GPU_F16_TOLERANCE: f64 = 1e-2;

/// The GPU audit's default since the matrix-unit kernels (2026-11-28): the [`Metric::Rms`]
/// error, which reads a 1 % scale fault as exactly 1e-2 whatever the row, against the
/// independent f16 roundings of weights, K/V, GEMM inputs and attention probabilities that
/// the GPU makes and the reference does not. Figures behind the value: docs/gpu.md.
pub const GPU_F16_RMS_TOLERANCE: f64 = 8e-3;

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            metric: Metric::Max,
            default: DEFAULT_TOLERANCE,
            per_point: BTreeMap::new(),
        }
    }
}

impl Tolerances {
    pub fn for_point(&self, p: Point) -> f64 {
        self.per_point.get(&p).copied().unwrap_or(self.default)
    }

    /// Parses `--tol` values: `F` (the default) or `POINT=F`, comma-separated.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut t = Tolerances::default();
        for part in spec.split(',').map(str::trim) {
            let bad = || {
                format!("--tol {part:?}: accepted: a number (the default for every point) or POINT=NUMBER, comma-separated, e.g. 1e-3,logits=1e-2")
            };
            match part.split_once('=') {
                None => t.default = part.parse().map_err(|_| bad())?,
                Some((p, v)) => {
                    let point = Point::parse(p).map_err(|e| e.to_string())?;
                    t.per_point.insert(point, v.parse().map_err(|_| bad())?);
                }
            }
        }
        Ok(t)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairError {
    /// max|a − b| / rms(b); infinite when NaN/inf counts differ.
    pub error: f64,
    /// rms(a − b) / rms(b); infinite when NaN/inf counts differ.
    pub rms_error: f64,
    pub max_abs: f64,
    /// Index in the row of the largest difference (when known).
    pub index: Option<usize>,
    /// Whether the values were compared in full (dumps or in-memory rows) or estimated from
    /// hashes, samples and statistics.
    pub exact: bool,
}

fn compare(a: &Captured, b: &Captured) -> PairError {
    let (ra, rb) = (&a.record, &b.record);
    if ra.stats.nan != rb.stats.nan || ra.stats.inf != rb.stats.inf || ra.shape != rb.shape {
        return PairError {
            error: f64::INFINITY,
            rms_error: f64::INFINITY,
            max_abs: f64::INFINITY,
            index: None,
            exact: true,
        };
    }
    let scale = rb.stats.rms.max(1e-30);
    if let (Some(va), Some(vb)) = (&a.values, &b.values) {
        let mut max_abs = 0f64;
        let mut index = None;
        let mut sq = 0f64;
        for (i, (x, y)) in va.iter().zip(vb).enumerate() {
            let d = if x.is_finite() && y.is_finite() {
                (*x as f64 - *y as f64).abs()
            } else if x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) {
                0.0
            } else {
                f64::INFINITY
            };
            sq += d * d;
            if d > max_abs {
                max_abs = d;
                index = Some(i);
            }
        }
        return PairError {
            error: max_abs / scale,
            rms_error: (sq / va.len().max(1) as f64).sqrt() / scale,
            max_abs,
            index,
            exact: true,
        };
    }
    if ra.hash == rb.hash {
        return PairError {
            error: 0.0,
            rms_error: 0.0,
            max_abs: 0.0,
            index: None,
            exact: true,
        };
    }
    // From the samples and the whole-row statistics: a lower bound on the true error.
    let mut max_abs = 0f64;
    let mut index = None;
    let (mut sq, mut n) = (0f64, 0usize);
    for ((ia, va), (ib, vb)) in ra.sample.iter().zip(&rb.sample) {
        if ia == ib {
            let d = (va.0 as f64 - vb.0 as f64).abs();
            sq += d * d;
            n += 1;
            if d > max_abs || (d.is_nan() && max_abs.is_finite()) {
                max_abs = if d.is_nan() { f64::INFINITY } else { d };
                index = Some(*ia);
            }
        }
    }
    for d in [
        (ra.stats.max as f64 - rb.stats.max as f64).abs(),
        (ra.stats.min as f64 - rb.stats.min as f64).abs(),
        (ra.stats.rms - rb.stats.rms).abs(),
    ] {
        if d > max_abs {
            max_abs = d;
            index = None;
        }
    }
    // rms(a − b) >= |rms(a) − rms(b)| (triangle inequality); the samples estimate it too.
    let rms_diff = (ra.stats.rms - rb.stats.rms)
        .abs()
        .max((sq / n.max(1) as f64).sqrt());
    PairError {
        error: max_abs / scale,
        rms_error: if rms_diff.is_nan() {
            f64::INFINITY
        } else {
            rms_diff / scale
        },
        max_abs,
        index,
        exact: false,
    }
}

/// Pipeline order: embed_out, then each layer's points in order, then final_norm, logits.
fn pipeline_key(layer: Option<usize>, point: Point) -> (usize, Point) {
    let rank = match (point, layer) {
        (Point::EmbedOut, _) => 0,
        (Point::FinalNorm | Point::Logits, _) => usize::MAX,
        (_, Some(l)) => l + 1,
        (_, None) => 0,
    };
    (rank, point)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    pub layer: Option<usize>,
    pub point: String,
    pub pos: usize,
    pub phase_a: Phase,
    pub phase_b: Phase,
    pub error: f64,
    pub tolerance: f64,
    pub max_abs: f64,
    pub index: Option<usize>,
    pub exact: bool,
}

/// The worst pair of one (layer, point).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointSummary {
    pub layer: Option<usize>,
    pub point: String,
    pub pairs: usize,
    pub worst_error: f64,
    pub worst_pos: usize,
    pub max_abs: f64,
    pub tolerance: f64,
    pub diverged: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MissingRecord {
    pub side: &'static str,
    pub prompt: String,
    pub pos: usize,
    pub layer: Option<usize>,
    pub point: String,
}

/// A position where the two runs fed different tokens (free-running generation after an
/// earlier divergence): its stages are not compared, since their inputs differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenMismatch {
    pub prompt: String,
    pub pos: usize,
    pub token_a: Option<u32>,
    pub token_b: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffReport {
    pub label_a: String,
    pub label_b: String,
    /// The error metric the tolerances apply to (and `error` / `worst_error` report).
    pub metric: Metric,
    pub pairs: usize,
    pub token_mismatch: Vec<TokenMismatch>,
    /// Records of one side with no partner on the other: each is a divergence too.
    pub missing: Vec<MissingRecord>,
    pub points: Vec<PointSummary>,
    pub first_divergence: Option<Divergence>,
}

impl DiffReport {
    pub fn diverged(&self) -> bool {
        self.first_divergence.is_some()
            || !self.missing.is_empty()
            || !self.token_mismatch.is_empty()
    }

    /// The one-line verdict.
    pub fn verdict(&self) -> String {
        match &self.first_divergence {
            Some(d) => format!(
                "FIRST DIVERGENCE: layer {} point {} pos {} ({} vs {}): {} error {:.3e} > tolerance {:.1e} (max abs {:.3e}{}){}",
                d.layer.map_or("-".to_string(), |l| l.to_string()),
                d.point,
                d.pos,
                d.phase_a.name(),
                d.phase_b.name(),
                self.metric.name(),
                d.error,
                d.tolerance,
                d.max_abs,
                d.index.map_or(String::new(), |i| format!(" at index {i}")),
                if d.exact { "" } else { ", estimated from samples and stats" }
            ),
            None if !self.token_mismatch.is_empty() => {
                let t = &self.token_mismatch[0];
                format!("NO VALUE DIVERGENCE, but the runs fed different tokens from pos {} on ({:?} vs {:?})", t.pos, t.token_a, t.token_b)
            }
            None if !self.missing.is_empty() => format!("NO VALUE DIVERGENCE, but {} records have no partner", self.missing.len()),
            None => format!(
                "OK: {} record pairs within tolerance ({} error)",
                self.pairs,
                self.metric.name()
            ),
        }
    }

    /// The compact human table: one line per (layer, point), pipeline order.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<6} {:<11} {:>6} {:>12} {:>12} {:>6} {:>9}\n",
            "layer", "point", "pairs", "worst err", "max abs", "pos", "tol"
        );
        for p in &self.points {
            s += &format!(
                "{:<6} {:<11} {:>6} {:>12.3e} {:>12.3e} {:>6} {:>9.1e}{}\n",
                p.layer.map_or("-".to_string(), |l| l.to_string()),
                p.point,
                p.pairs,
                p.worst_error,
                p.max_abs,
                p.worst_pos,
                p.tolerance,
                if p.diverged { "  <-- diverges" } else { "" }
            );
        }
        if let Some(t) = self.token_mismatch.first() {
            s += &format!("different input tokens at {} positions, first pos {} ({:?} vs {:?}): not compared\n", self.token_mismatch.len(), t.pos, t.token_a, t.token_b);
        }
        for m in &self.missing {
            s += &format!(
                "missing in {}: prompt {} pos {} layer {:?} point {}\n",
                m.side, m.prompt, m.pos, m.layer, m.point
            );
        }
        s
    }
}

type Key = (String, usize, Option<usize>, Point, Option<(Phase, usize)>);

fn key(r: &StageRecord, align: Align) -> Key {
    let point = Point::parse(&r.point).expect("points are validated when records are read or made");
    let ps = match align {
        Align::Position => None,
        Align::Step => Some((r.phase, r.step)),
    };
    (r.prompt.clone(), r.pos, r.layer, point, ps)
}

/// Compares side `a` with the reference side `b`.
pub fn diff(
    label_a: &str,
    a: &[Captured],
    label_b: &str,
    b: &[Captured],
    align: Align,
    tol: &Tolerances,
) -> DiffReport {
    let index_b: BTreeMap<Key, &Captured> = b.iter().map(|c| (key(&c.record, align), c)).collect();
    let index_a: BTreeMap<Key, &Captured> = a.iter().map(|c| (key(&c.record, align), c)).collect();
    let mut missing = Vec::new();
    let mut summaries: BTreeMap<((usize, Point), Option<usize>), PointSummary> = BTreeMap::new();
    let mut first: Option<((usize, Point), usize, Divergence)> = None;
    let mut pairs = 0;
    let mut token_mismatch: BTreeMap<(String, usize), TokenMismatch> = BTreeMap::new();
    // The pairs' errors are independent and the bulk of the work (a 7B calibration compares
    // ~5 GB of stage rows a policy), so they are computed in parallel; the summaries are then
    // folded in key order, so the report is the same as a sequential pass's.
    let errors: Vec<Option<PairError>> = index_a
        .iter()
        .collect::<Vec<_>>()
        .par_iter()
        .map(|(k, ca)| {
            let cb = index_b.get(*k)?;
            (ca.record.token_id == cb.record.token_id).then(|| compare(ca, cb))
        })
        .collect();
    for ((k, ca), e) in index_a.iter().zip(errors) {
        let Some(cb) = index_b.get(k) else {
            missing.push(MissingRecord {
                side: "b",
                prompt: k.0.clone(),
                pos: k.1,
                layer: k.2,
                point: k.3.name().into(),
            });
            continue;
        };
        if ca.record.token_id != cb.record.token_id {
            token_mismatch
                .entry((k.0.clone(), k.1))
                .or_insert_with(|| TokenMismatch {
                    prompt: k.0.clone(),
                    pos: k.1,
                    token_a: ca.record.token_id,
                    token_b: cb.record.token_id,
                });
            continue;
        }
        pairs += 1;
        let (layer, point, pos) = (k.2, k.3, k.1);
        let mut e = e.expect("compared: a partner with the same token");
        if tol.metric == Metric::Rms {
            e.error = e.rms_error;
        }
        let t = tol.for_point(point);
        // NaN errors count as divergence.
        let diverged = e.error.is_nan() || e.error > t;
        let pk = pipeline_key(layer, point);
        let s = summaries
            .entry((pk, layer))
            .or_insert_with(|| PointSummary {
                layer,
                point: point.name().into(),
                pairs: 0,
                worst_error: 0.0,
                worst_pos: pos,
                max_abs: 0.0,
                tolerance: t,
                diverged: false,
            });
        s.pairs += 1;
        if e.error > s.worst_error || (e.error.is_nan() && !s.worst_error.is_nan()) {
            s.worst_error = e.error;
            s.worst_pos = pos;
            s.max_abs = e.max_abs;
        }
        s.diverged |= diverged;
        if diverged
            && first
                .as_ref()
                .is_none_or(|(fk, fpos, _)| (pk, pos) < (*fk, *fpos))
        {
            let d = Divergence {
                layer,
                point: point.name().into(),
                pos,
                phase_a: ca.record.phase,
                phase_b: cb.record.phase,
                error: e.error,
                tolerance: t,
                max_abs: e.max_abs,
                index: e.index,
                exact: e.exact,
            };
            first = Some((pk, pos, d));
        }
    }
    for k in index_b.keys().filter(|k| !index_a.contains_key(*k)) {
        missing.push(MissingRecord {
            side: "a",
            prompt: k.0.clone(),
            pos: k.1,
            layer: k.2,
            point: k.3.name().into(),
        });
    }
    DiffReport {
        label_a: label_a.into(),
        label_b: label_b.into(),
        metric: tol.metric,
        pairs,
        token_mismatch: token_mismatch.into_values().collect(),
        missing,
        points: summaries.into_values().collect(),
        first_divergence: first.map(|(_, _, d)| d),
    }
}

/// Wraps records read from a file (no full values) for `diff`.
pub fn from_records(records: Vec<StageRecord>) -> Vec<Captured> {
    records
        .into_iter()
        .map(|record| Captured {
            record,
            values: None,
        })
        .collect()
}
