//! The StageTrace v1 records (JSON Lines, one object per line, schema version in each).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::point::Phase;
use crate::row::Stats;

/// An f32 that survives JSON: NaN and ±inf are written as the strings "nan", "inf", "-inf"
/// (JSON numbers cannot hold them, and serde_json would write null).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JsonF32(pub f32);

impl Serialize for JsonF32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_nan() {
            s.serialize_str("nan")
        } else if v.is_infinite() {
            s.serialize_str(if v > 0.0 { "inf" } else { "-inf" })
        } else {
            s.serialize_f32(v)
        }
    }
}

impl<'de> Deserialize<'de> for JsonF32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(f32),
            Str(String),
        }
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(JsonF32(v)),
            Repr::Str(s) => match s.as_str() {
                "nan" => Ok(JsonF32(f32::NAN)),
                "inf" => Ok(JsonF32(f32::INFINITY)),
                "-inf" => Ok(JsonF32(f32::NEG_INFINITY)),
                other => Err(serde::de::Error::custom(format!(
                    "{other:?} is not a number, \"nan\", \"inf\" or \"-inf\""
                ))),
            },
        }
    }
}

/// The first record of a trace: what produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub v: u32,
    pub run: String,
    pub tool_version: String,
    pub git_rev: String,
    pub model_path: String,
    pub model_hash: String,
    pub model_config: serde_json::Value,
    pub backend: String,
    pub device: String,
    pub routes: Vec<String>,
    pub selection: serde_json::Value,
}

/// Where the input row of embed_out / attn_in came from (GRETA_TRACE_STAGE_DEBUG_INPUT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputProvenance {
    /// "embedding" for embed_out, "residual" for attn_in (the previous layer's output, or
    /// the embedding for layer 0).
    pub src: String,
    pub token_index: usize,
    pub kv_pos: usize,
    pub decode_step: usize,
    /// Offset of the row in the stage's buffer, and that buffer's size, in elements.
    pub offset: usize,
    pub alloc: usize,
}

/// One row of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecord {
    pub v: u32,
    pub run: String,
    pub prompt: String,
    pub backend: String,
    pub route: String,
    pub phase: Phase,
    pub step: usize,
    pub pos: usize,
    pub token_id: Option<u32>,
    pub layer: Option<usize>,
    pub point: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub hash: String,
    pub stats: Stats,
    pub sample: Vec<(usize, JsonF32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputProvenance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top5: Option<Vec<(u32, JsonF32)>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_gap: Option<JsonF32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Run(RunRecord),
    Stage(StageRecord),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}:{line}: not a StageTrace v1 record: {reason}")]
    Malformed {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Structure { path: String, reason: String },
}

/// A whole trace file: its run record and its stage records.
#[derive(Debug, Clone)]
pub struct Trace {
    pub run: RunRecord,
    pub stages: Vec<StageRecord>,
}

impl Trace {
    pub fn read(path: &std::path::Path) -> Result<Trace, ReadError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ReadError::Io {
            path: p.clone(),
            error,
        })?;
        Trace::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Trace, ReadError> {
        let mut run = None;
        let mut stages = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let rec: Record = serde_json::from_str(line).map_err(|e| ReadError::Malformed {
                path: path.into(),
                line: i + 1,
                reason: e.to_string(),
            })?;
            let v = match &rec {
                Record::Run(r) => r.v,
                Record::Stage(s) => s.v,
            };
            if v != crate::SCHEMA_VERSION {
                return Err(ReadError::Malformed {
                    path: path.into(),
                    line: i + 1,
                    reason: format!("schema version {v}; accepted: {}", crate::SCHEMA_VERSION),
                });
            }
            match rec {
                Record::Run(r) if run.is_none() && stages.is_empty() => run = Some(r),
                Record::Run(_) => {
                    return Err(ReadError::Structure {
                        path: path.into(),
                        reason: format!(
                            "line {}: a second run record; a trace holds one run, first",
                            i + 1
                        ),
                    })
                }
                Record::Stage(_) if run.is_none() => {
                    return Err(ReadError::Structure {
                        path: path.into(),
                        reason: "the first record is not the run record".into(),
                    })
                }
                Record::Stage(s) => {
                    crate::point::Point::parse(&s.point).map_err(|e| ReadError::Malformed {
                        path: path.into(),
                        line: i + 1,
                        reason: e.to_string(),
                    })?;
                    stages.push(s)
                }
            }
        }
        let run = run.ok_or_else(|| ReadError::Structure {
            path: path.into(),
            reason: "no records".into(),
        })?;
        Ok(Trace { run, stages })
    }
}
