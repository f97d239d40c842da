//! `--inject LAYER:POINT:KIND`: perturb one stage on purpose, so that anyone can check that
//! the diff and the audits find a planted fault exactly where it was planted.

use std::fmt;
use std::str::FromStr;

use crate::point::{Point, StageAt};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Scale(f32),
    Add(f32),
    Nan,
    Zero,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Injection {
    /// None for the points outside the layers (written `-`).
    pub layer: Option<usize>,
    pub point: Point,
    pub fault: Fault,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--inject {value:?}: {reason}; accepted: LAYER:POINT:KIND with LAYER a layer index (or - for embed_out, final_norm, logits) and KIND one of scale=F, add=F, nan, zero (e.g. 3:attn_out:scale=1.01)")]
pub struct InjectError {
    pub value: String,
    pub reason: String,
}

impl FromStr for Injection {
    type Err = InjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let e = |reason: String| InjectError {
            value: s.to_string(),
            reason,
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [layer, point, kind] = parts[..] else {
            return Err(e(format!(
                "{} parts separated by ':', 3 needed",
                parts.len()
            )));
        };
        let point = Point::parse(point).map_err(|u| e(u.to_string()))?;
        let layer = match layer {
            "-" => None,
            l => Some(
                l.parse::<usize>()
                    .map_err(|_| e(format!("layer {l:?} is not an index")))?,
            ),
        };
        if point.in_layer() != layer.is_some() {
            return Err(e(format!(
                "{point} {} inside a layer",
                if point.in_layer() {
                    "lives"
                } else {
                    "does not live"
                }
            )));
        }
        let num = |v: &str| {
            v.parse::<f32>()
                .map_err(|_| e(format!("{v:?} is not a number")))
        };
        let fault = match kind.split_once('=') {
            Some(("scale", v)) => Fault::Scale(num(v)?),
            Some(("add", v)) => Fault::Add(num(v)?),
            None if kind == "nan" => Fault::Nan,
            None if kind == "zero" => Fault::Zero,
            _ => return Err(e(format!("kind {kind:?} is unknown"))),
        };
        Ok(Injection {
            layer,
            point,
            fault,
        })
    }
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(l) => write!(f, "{l}:")?,
            None => f.write_str("-:")?,
        }
        write!(f, "{}:", self.point)?;
        match self.fault {
            Fault::Scale(v) => write!(f, "scale={v}"),
            Fault::Add(v) => write!(f, "add={v}"),
            Fault::Nan => f.write_str("nan"),
            Fault::Zero => f.write_str("zero"),
        }
    }
}

impl Injection {
    pub fn matches(&self, point: Point, layer: Option<usize>) -> bool {
        self.point == point && self.layer == layer
    }

    /// Applies the fault to every row of the stage if this is the stage.
    pub fn apply(&self, at: StageAt, rows: &mut [f32]) {
        if !self.matches(at.point, at.layer) {
            return;
        }
        for v in rows.iter_mut() {
            *v = match self.fault {
                Fault::Scale(s) => *v * s,
                Fault::Add(a) => *v + a,
                Fault::Nan => f32::NAN,
                Fault::Zero => 0.0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_documented_forms() {
        for s in [
            "3:attn_out:scale=1.01",
            "0:q_rope:add=0.5",
            "-:logits:nan",
            "12:ffn_act:zero",
        ] {
            assert_eq!(s.parse::<Injection>().unwrap().to_string(), s);
        }
        for (bad, needle) in [
            ("3:attn_out", "3 needed"),
            ("x:q:zero", "not an index"),
            ("-:q:zero", "lives inside"),
            ("1:logits:zero", "does not live"),
            ("1:q:double", "unknown"),
            ("1:qq:zero", "unknown trace point"),
        ] {
            let e = bad.parse::<Injection>().unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("accepted"), "{bad}: {e}");
        }
    }
}
