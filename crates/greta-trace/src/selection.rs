//! What to trace: layers, points, phases, token positions, sample size, dumps. Parsed once
//! at start-up from GRETA_TRACE_STAGE_* variables or the matching command-line options; a
//! value that does not parse is an error saying what is accepted.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::point::{Phase, Point};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{var}={value:?}: {reason}; accepted: {accepted}")]
pub struct SelectionError {
    pub var: String,
    pub value: String,
    pub reason: String,
    pub accepted: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LayerSel {
    All,
    /// Explicit layers plus, maybe, the last one (resolved once the layer count is known).
    Some {
        layers: Vec<usize>,
        last: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum TokenSel {
    /// The last prefill row and every decode step (the default).
    Last,
    All,
    Positions(Vec<usize>),
}

impl std::fmt::Display for LayerSel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerSel::All => f.write_str("all"),
            LayerSel::Some { layers, last } => {
                let mut parts: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
                if *last {
                    parts.push("last".into());
                }
                f.write_str(&parts.join(","))
            }
        }
    }
}

impl std::fmt::Display for TokenSel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSel::Last => f.write_str("last"),
            TokenSel::All => f.write_str("all"),
            TokenSel::Positions(p) => f.write_str(
                &p.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub enabled: bool,
    pub out: Option<PathBuf>,
    pub layers: LayerSel,
    /// Points selected (from names and globs).
    pub points: Vec<Point>,
    pub phases: Vec<Phase>,
    pub tokens: TokenSel,
    pub sample: usize,
    pub debug_input: bool,
    pub dump: Option<PathBuf>,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            enabled: false,
            out: None,
            layers: LayerSel::All,
            points: Point::ALL.to_vec(),
            phases: vec![Phase::Prefill, Phase::Decode],
            tokens: TokenSel::Last,
            sample: 16,
            debug_input: false,
            dump: None,
        }
    }
}

/// The variables, in the order TRACE.md lists them, with what each accepts.
pub const VARIABLES: [(&str, &str, &str); 9] = [
    ("GRETA_TRACE_STAGE", "tracing on (1) or off (0)", "0"),
    (
        "GRETA_TRACE_STAGE_OUT",
        "output file",
        "greta-trace-<run>.jsonl",
    ),
    (
        "GRETA_TRACE_STAGE_LAYERS",
        "`all`, a list, ranges, `last` (e.g. `0-2,15,last`)",
        "all",
    ),
    (
        "GRETA_TRACE_STAGE_POINTS",
        "a list of points or globs (`attn_*`)",
        "all",
    ),
    (
        "GRETA_TRACE_STAGE_PHASES",
        "`prefill`, `decode` (comma-separated)",
        "prefill,decode",
    ),
    (
        "GRETA_TRACE_STAGE_TOKENS",
        "`last`, `all`, or positions (`0,5-7`)",
        "last",
    ),
    (
        "GRETA_TRACE_STAGE_SAMPLE",
        "values in `sample` (0 or more)",
        "16",
    ),
    (
        "GRETA_TRACE_STAGE_DEBUG_INPUT",
        "input provenance on embed_out / attn_in (1 or 0)",
        "0",
    ),
    (
        "GRETA_TRACE_STAGE_DUMP",
        "directory for full tensors (.npy)",
        "none",
    ),
];

fn err(
    var: &str,
    value: &str,
    reason: impl Into<String>,
    accepted: &'static str,
) -> SelectionError {
    SelectionError {
        var: var.into(),
        value: value.into(),
        reason: reason.into(),
        accepted,
    }
}

fn parse_bool(var: &str, v: &str) -> Result<bool, SelectionError> {
    match v {
        "1" | "true" | "on" => Ok(true),
        "0" | "false" | "off" | "" => Ok(false),
        _ => Err(err(var, v, "not a boolean", "1, 0, true, false, on, off")),
    }
}

/// Parses `0-2,15` into indices.
fn parse_indices(var: &str, v: &str, accepted: &'static str) -> Result<Vec<usize>, SelectionError> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim) {
        let num = |s: &str| {
            s.trim().parse::<usize>().map_err(|_| {
                err(
                    var,
                    v,
                    format!("{s:?} is not a non-negative integer"),
                    accepted,
                )
            })
        };
        if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(err(
                    var,
                    v,
                    format!("range {part:?} runs backwards"),
                    accepted,
                ));
            }
            out.extend(a..=b);
        } else {
            out.push(num(part)?);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

pub fn parse_layers(v: &str) -> Result<LayerSel, SelectionError> {
    const ACCEPTED: &str =
        "all, or a comma list of layers, ranges (a-b) and `last`, e.g. 0-2,15,last";
    let var = "GRETA_TRACE_STAGE_LAYERS";
    if v.trim() == "all" {
        return Ok(LayerSel::All);
    }
    let last = v.split(',').any(|p| p.trim() == "last");
    let rest: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|p| *p != "last")
        .collect();
    let layers = if rest.is_empty() {
        Vec::new()
    } else {
        parse_indices(var, &rest.join(","), ACCEPTED)?
    };
    if layers.is_empty() && !last {
        return Err(err(var, v, "no layer selected", ACCEPTED));
    }
    Ok(LayerSel::Some { layers, last })
}

/// Points from names and globs (`*` matches any run of characters).
pub fn parse_points(v: &str) -> Result<Vec<Point>, SelectionError> {
    let var = "GRETA_TRACE_STAGE_POINTS";
    if v.trim() == "all" {
        return Ok(Point::ALL.to_vec());
    }
    let mut out = Vec::new();
    for pat in v.split(',').map(str::trim) {
        let matched: Vec<Point> = Point::ALL
            .into_iter()
            .filter(|p| glob(pat, p.name()))
            .collect();
        if matched.is_empty() {
            return Err(SelectionError {
                var: var.into(),
                value: v.into(),
                reason: format!("{pat:?} names no trace point"),
                accepted: "all, or point names or globs among: embed_out attn_in attn_norm q k v q_rope k_rope attn_ctx attn_out resid_attn ffn_norm ffn_gate ffn_up ffn_act ffn_out resid_ffn final_norm logits",
            });
        }
        out.extend(matched);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn glob(pat: &str, name: &str) -> bool {
    match pat.split_once('*') {
        None => pat == name,
        Some((head, tail)) => {
            name.len() >= head.len()
                && name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| glob(tail, &name[head.len() + i..]))
        }
    }
}

pub fn parse_phases(v: &str) -> Result<Vec<Phase>, SelectionError> {
    let mut out = Vec::new();
    for p in v.split(',').map(str::trim) {
        out.push(match p {
            "prefill" => Phase::Prefill,
            "decode" => Phase::Decode,
            _ => {
                return Err(err(
                    "GRETA_TRACE_STAGE_PHASES",
                    v,
                    format!("{p:?} is not a phase"),
                    "prefill, decode (comma-separated)",
                ))
            }
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub fn parse_tokens(v: &str) -> Result<TokenSel, SelectionError> {
    match v.trim() {
        "last" => Ok(TokenSel::Last),
        "all" => Ok(TokenSel::All),
        s => parse_indices(
            "GRETA_TRACE_STAGE_TOKENS",
            s,
            "last, all, or positions such as 0,5-7",
        )
        .map(TokenSel::Positions),
    }
}

impl Selection {
    /// Builds the selection from variables (the process environment, or the same keys given
    /// on the command line, which take precedence because they come later in `vars`).
    /// Unknown GRETA_TRACE_STAGE_* variables are errors, not ignored.
    pub fn from_vars<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, SelectionError> {
        let mut map = BTreeMap::new();
        for (k, v) in vars {
            if k.starts_with("GRETA_TRACE_STAGE") {
                if !VARIABLES.iter().any(|(name, ..)| *name == k) {
                    return Err(err(k, v, "unknown variable", "GRETA_TRACE_STAGE, _OUT, _LAYERS, _POINTS, _PHASES, _TOKENS, _SAMPLE, _DEBUG_INPUT, _DUMP"));
                }
                map.insert(k, v);
            }
        }
        let mut s = Selection::default();
        for (k, v) in map {
            match k {
                "GRETA_TRACE_STAGE" => s.enabled = parse_bool(k, v)?,
                "GRETA_TRACE_STAGE_OUT" => s.out = Some(PathBuf::from(v)),
                "GRETA_TRACE_STAGE_LAYERS" => s.layers = parse_layers(v)?,
                "GRETA_TRACE_STAGE_POINTS" => s.points = parse_points(v)?,
                "GRETA_TRACE_STAGE_PHASES" => s.phases = parse_phases(v)?,
                "GRETA_TRACE_STAGE_TOKENS" => s.tokens = parse_tokens(v)?,
                "GRETA_TRACE_STAGE_SAMPLE" => {
                    s.sample = v.parse().map_err(|_| {
                        err(k, v, "not a non-negative integer", "a count such as 16")
                    })?
                }
                "GRETA_TRACE_STAGE_DEBUG_INPUT" => s.debug_input = parse_bool(k, v)?,
                "GRETA_TRACE_STAGE_DUMP" => s.dump = Some(PathBuf::from(v)),
                _ => unreachable!("checked against VARIABLES above"),
            }
        }
        Ok(s)
    }

    pub fn wants_layer(&self, layer: Option<usize>, n_layers: usize) -> bool {
        match (&self.layers, layer) {
            (_, None) | (LayerSel::All, _) => true,
            (LayerSel::Some { layers, last }, Some(l)) => {
                layers.contains(&l) || (*last && l + 1 == n_layers)
            }
        }
    }

    pub fn wants_point(&self, p: Point) -> bool {
        self.points.contains(&p)
    }

    /// Whether row `pos` of a pass is recorded. `last_pos` is the last position of the pass.
    pub fn wants_pos(&self, phase: Phase, pos: usize, last_pos: usize) -> bool {
        if !self.phases.contains(&phase) {
            return false;
        }
        match &self.tokens {
            TokenSel::All => true,
            TokenSel::Last => phase == Phase::Decode || pos == last_pos,
            TokenSel::Positions(ps) => ps.contains(&pos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let s = Selection::from_vars([
            ("GRETA_TRACE_STAGE", "1"),
            ("GRETA_TRACE_STAGE_LAYERS", "0-2,15,last"),
            ("GRETA_TRACE_STAGE_POINTS", "attn_*,logits"),
            ("GRETA_TRACE_STAGE_TOKENS", "0,5-7"),
            ("PATH", "/usr/bin"),
        ])
        .unwrap();
        assert!(s.enabled);
        assert_eq!(
            s.layers,
            LayerSel::Some {
                layers: vec![0, 1, 2, 15],
                last: true
            }
        );
        assert_eq!(
            s.points,
            vec![
                Point::AttnIn,
                Point::AttnNorm,
                Point::AttnCtx,
                Point::AttnOut,
                Point::Logits
            ]
        );
        assert_eq!(s.tokens, TokenSel::Positions(vec![0, 5, 6, 7]));
        assert!(
            s.wants_layer(Some(29), 30)
                && s.wants_layer(Some(15), 30)
                && !s.wants_layer(Some(3), 30)
        );
    }

    #[test]
    fn bad_values_say_what_is_accepted() {
        for (k, v, needle) in [
            (
                "GRETA_TRACE_STAGE_POINTS",
                "attn_bogus",
                "names no trace point",
            ),
            ("GRETA_TRACE_STAGE_LAYERS", "3-1", "runs backwards"),
            (
                "GRETA_TRACE_STAGE_LAYERS",
                "x",
                "not a non-negative integer",
            ),
            ("GRETA_TRACE_STAGE_PHASES", "both", "not a phase"),
            ("GRETA_TRACE_STAGE", "yes", "not a boolean"),
            ("GRETA_TRACE_STAGE_SAMPEL", "3", "unknown variable"),
        ] {
            let e = Selection::from_vars([(k, v)]).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("accepted"), "{k}={v}: {e}");
        }
    }
}
