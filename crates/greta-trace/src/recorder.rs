//! The observer that turns stage outputs into records: selection, hashing, statistics,
//! samples, optional full-tensor dumps, and fault injection ahead of all of it.

use std::io::Write;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::inject::{check_layers, InjectError, Injection, LoForm};
use crate::point::{Pass, Phase, Point, StageAt, StageObserver};
use crate::record::{InputProvenance, JsonF32, Record, RunRecord, StageRecord};
use crate::row;
use crate::selection::Selection;
use crate::SCHEMA_VERSION;

/// What every stage record of a run repeats.
#[derive(Debug, Clone)]
pub struct RunIds {
    pub run: String,
    pub prompt: String,
    pub backend: String,
    pub route: String,
}

/// One recorded row, with its values when the recorder keeps them (audits compare whole
/// rows; files hold hashes, stats and samples).
#[derive(Debug, Clone)]
pub struct Captured {
    pub record: StageRecord,
    pub values: Option<Vec<f32>>,
}

pub struct Recorder {
    sel: Selection,
    n_layers: usize,
    ids: RunIds,
    out: Option<Box<dyn Write>>,
    keep_rows: bool,
    /// Records kept in memory (when `keep_rows`).
    pub captured: Vec<Captured>,
    /// Faults applied in order at their stages (several may hit one stage).
    inject: Vec<Injection>,
    phase: Phase,
    step: usize,
    decode_passes: usize,
    pass_pos0: usize,
    pass_tokens: Vec<u32>,
    /// The first write error; reported by `finish`, never dropped.
    error: Option<std::io::Error>,
    written: usize,
}

impl Recorder {
    /// A recorder for a model of `n_layers` layers. Nothing is written until `write_run`.
    pub fn new(sel: Selection, n_layers: usize, ids: RunIds) -> Self {
        Recorder {
            sel,
            n_layers,
            ids,
            out: None,
            keep_rows: false,
            captured: Vec::new(),
            inject: Vec::new(),
            phase: Phase::Prefill,
            step: 0,
            decode_passes: 0,
            pass_pos0: 0,
            pass_tokens: Vec::new(),
            error: None,
            written: 0,
        }
    }

    /// Writes records as JSON Lines to `out`, starting with the run record.
    pub fn to_writer(mut self, mut out: Box<dyn Write>, run: &RunRecord) -> std::io::Result<Self> {
        serde_json::to_writer(&mut out, &Record::Run(run.clone()))?;
        out.write_all(b"\n")?;
        self.out = Some(out);
        Ok(self)
    }

    /// Keeps every recorded row in memory, values included (for the audits).
    pub fn keep_rows(mut self) -> Self {
        self.keep_rows = true;
        self
    }

    pub fn with_injection(self, inject: Option<Injection>) -> Result<Self, InjectError> {
        self.with_injections(inject)
    }

    /// Several faults at once (e.g. an f16 rounding of several stages in every layer). One
    /// at a layer the model lacks is an error: it would never fire, and a probe that does
    /// nothing reads as a stage that does not care.
    pub fn with_injections(
        mut self,
        inject: impl IntoIterator<Item = Injection>,
    ) -> Result<Self, InjectError> {
        let from = self.inject.len();
        self.inject.extend(inject);
        check_layers(&self.inject[from..], self.n_layers)?;
        Ok(self)
    }

    pub fn selection(&self) -> &Selection {
        &self.sel
    }

    /// Flushes the output; returns the number of stage records written, or the first
    /// write error.
    pub fn finish(&mut self) -> std::io::Result<usize> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if let Some(out) = self.out.as_mut() {
            out.flush()?;
        }
        Ok(self.written)
    }

    fn recording(&self) -> bool {
        self.sel.enabled && (self.out.is_some() || self.keep_rows || self.sel.dump.is_some())
    }

    /// What a row's record takes from the recorder (shared by the threads that make a
    /// stage's records; the recorder itself holds a writer that is not).
    fn row_context(&self) -> RowContext<'_> {
        RowContext {
            ids: &self.ids,
            sel: &self.sel,
            phase: self.phase,
            step: self.step,
            pass_pos0: self.pass_pos0,
            pass_tokens: &self.pass_tokens,
        }
    }

    /// Writes, dumps and keeps one row's record, in the order of the rows.
    /// `kept`: the row's values where the recorder keeps rows (copied with the record).
    fn sink(
        &mut self,
        at: StageAt,
        record: StageRecord,
        row_vals: &[f32],
        kept: Option<Vec<f32>>,
    ) -> std::io::Result<()> {
        if let Some(dir) = &self.sel.dump {
            let layer = at.layer.map_or("-".to_string(), |l| l.to_string());
            let name = format!(
                "{}-s{}-p{}-L{}-{}.npy",
                self.phase.name(),
                self.step,
                record.pos,
                layer,
                at.point.name()
            );
            write_npy(&dir.join(name), row_vals)?;
        }
        if let Some(out) = self.out.as_mut() {
            serde_json::to_writer(&mut *out, &Record::Stage(record.clone()))?;
            out.write_all(b"\n")?;
        }
        self.written += 1;
        if kept.is_some() {
            self.captured.push(Captured {
                record,
                values: kept,
            });
        }
        Ok(())
    }
}

/// The recorder's state a row's record is made from.
struct RowContext<'a> {
    ids: &'a RunIds,
    sel: &'a Selection,
    phase: Phase,
    step: usize,
    pass_pos0: usize,
    pass_tokens: &'a [u32],
}

impl RowContext<'_> {
    /// The record of one row (pure, so that `observe` makes a stage's records in parallel).
    fn record(
        &self,
        at: StageAt,
        idx: usize,
        row_vals: &[f32],
        row_len: usize,
        total: usize,
    ) -> StageRecord {
        let pos = at.pos0 + idx;
        let token_index = pos.checked_sub(self.pass_pos0);
        let token_id = token_index.and_then(|i| self.pass_tokens.get(i).copied());
        let input = (self.sel.debug_input && matches!(at.point, Point::EmbedOut | Point::AttnIn))
            .then(|| InputProvenance {
                src: match (at.point, at.layer) {
                    (Point::EmbedOut, _) | (_, Some(0)) => "embedding".into(),
                    (_, Some(l)) => format!("resid_ffn of layer {}", l - 1),
                    _ => "embedding".into(),
                },
                token_index: token_index.unwrap_or(0),
                kv_pos: pos,
                decode_step: self.step,
                offset: idx * row_len,
                alloc: total,
            });
        let (top5, top_gap) = if at.point == Point::Logits {
            let t = row::top_k(row_vals, 5);
            let gap = if t.len() >= 2 {
                Some(JsonF32(t[0].1 - t[1].1))
            } else {
                None
            };
            (
                Some(t.into_iter().map(|(i, v)| (i, JsonF32(v))).collect()),
                gap,
            )
        } else {
            (None, None)
        };
        StageRecord {
            v: SCHEMA_VERSION,
            run: self.ids.run.clone(),
            prompt: self.ids.prompt.clone(),
            backend: self.ids.backend.clone(),
            route: self.ids.route.clone(),
            phase: self.phase,
            step: self.step,
            pos,
            token_id,
            layer: at.layer,
            point: at.point.name().to_string(),
            dtype: "f32".into(),
            shape: vec![row_len],
            hash: row::hash(row_vals),
            stats: row::stats(row_vals),
            sample: row::sample(row_vals, self.sel.sample)
                .into_iter()
                .map(|(i, v)| (i, JsonF32(v)))
                .collect(),
            input,
            top5,
            top_gap,
        }
    }
}

impl StageObserver for Recorder {
    fn begin_pass(&mut self, pass: Pass) {
        // The phase decides phase-bound injections even when nothing is recorded.
        self.phase = pass.phase();
        if !self.recording() {
            return;
        }
        if self.phase == Phase::Decode {
            self.decode_passes += 1;
            self.step = self.decode_passes;
        } else {
            self.step = 0;
        }
        self.pass_pos0 = pass.pos0;
        self.pass_tokens.clear();
        self.pass_tokens.extend_from_slice(pass.tokens);
    }

    fn wants(&self, point: Point, layer: Option<usize>) -> bool {
        self.inject
            .iter()
            .any(|i| i.matches(point, layer) && i.in_phase(self.phase))
            || (self.recording()
                && self.sel.wants_point(point)
                && self.sel.wants_layer(layer, self.n_layers))
    }

    fn wants_input(&self, point: Point, layer: Option<usize>) -> bool {
        self.inject
            .iter()
            .any(|i| i.matches_input(point, layer) && i.in_phase(self.phase))
    }

    fn lo_on_fp8_weights(&self, point: Point, layer: Option<usize>) -> Option<LoForm> {
        self.inject
            .iter()
            .filter(|i| i.in_phase(self.phase))
            .find_map(|i| i.lo_on_fp8_weights(point, layer))
    }

    fn observe_input(&mut self, at: StageAt, x: &mut [f32]) {
        for i in self.inject.iter().filter(|i| i.in_phase(self.phase)) {
            i.apply_input(at, x);
        }
    }

    fn observe(&mut self, at: StageAt, rows: &mut [f32], row_len: usize) {
        for i in self.inject.iter().filter(|i| i.in_phase(self.phase)) {
            i.apply(at, rows);
        }
        if !(self.recording()
            && self.sel.wants_point(at.point)
            && self.sel.wants_layer(at.layer, self.n_layers))
        {
            return;
        }
        let n = rows.len() / row_len;
        let last_pos = self.pass_pos0 + self.pass_tokens.len().max(1) - 1;
        let wanted: Vec<usize> = (0..n)
            .filter(|&idx| self.sel.wants_pos(self.phase, at.pos0 + idx, last_pos))
            .collect();
        // A prefill stage is hundreds of rows of thousands of values, each hashed, summed and
        // sampled: made in parallel (the audits of a 7B record ~5 GB a run), kept in order.
        let rows: &[f32] = rows;
        let row = |idx: usize| &rows[idx * row_len..(idx + 1) * row_len];
        let (ctx, keep) = (self.row_context(), self.keep_rows);
        let records: Vec<(StageRecord, Option<Vec<f32>>)> = wanted
            .par_iter()
            .map(|&idx| {
                let r = row(idx);
                let record = ctx.record(at, idx, r, row_len, rows.len());
                (record, keep.then(|| r.to_vec()))
            })
            .collect();
        for (idx, (record, kept)) in wanted.into_iter().zip(records) {
            if self.error.is_some() {
                return;
            }
            if let Err(e) = self.sink(at, record, row(idx), kept) {
                self.error = Some(e);
            }
        }
    }
}

/// Writes a 1-D little-endian f32 .npy file (format 1.0).
pub fn write_npy(path: &PathBuf, values: &[f32]) -> std::io::Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        values.len()
    );
    // Magic (6) + version (2) + header length (2) + header must be a multiple of 64.
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + values.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes)
}
