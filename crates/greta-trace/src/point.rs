//! The trace points of the Llama pipeline, in order, and the observer the model's stages
//! report to. The point list is defined here, once; docs/trace.md is checked against it.

use std::fmt;

/// The trace points, in pipeline order (shared/TRACE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Point {
    EmbedOut,
    AttnIn,
    AttnNorm,
    Q,
    K,
    V,
    QRope,
    KRope,
    AttnCtx,
    AttnOut,
    ResidAttn,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnAct,
    FfnOut,
    ResidFfn,
    FinalNorm,
    Logits,
}

impl Point {
    pub const ALL: [Point; 19] = [
        Point::EmbedOut,
        Point::AttnIn,
        Point::AttnNorm,
        Point::Q,
        Point::K,
        Point::V,
        Point::QRope,
        Point::KRope,
        Point::AttnCtx,
        Point::AttnOut,
        Point::ResidAttn,
        Point::FfnNorm,
        Point::FfnGate,
        Point::FfnUp,
        Point::FfnAct,
        Point::FfnOut,
        Point::ResidFfn,
        Point::FinalNorm,
        Point::Logits,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Point::EmbedOut => "embed_out",
            Point::AttnIn => "attn_in",
            Point::AttnNorm => "attn_norm",
            Point::Q => "q",
            Point::K => "k",
            Point::V => "v",
            Point::QRope => "q_rope",
            Point::KRope => "k_rope",
            Point::AttnCtx => "attn_ctx",
            Point::AttnOut => "attn_out",
            Point::ResidAttn => "resid_attn",
            Point::FfnNorm => "ffn_norm",
            Point::FfnGate => "ffn_gate",
            Point::FfnUp => "ffn_up",
            Point::FfnAct => "ffn_act",
            Point::FfnOut => "ffn_out",
            Point::ResidFfn => "resid_ffn",
            Point::FinalNorm => "final_norm",
            Point::Logits => "logits",
        }
    }

    /// Whether the point lives inside a transformer layer.
    pub fn in_layer(self) -> bool {
        !matches!(self, Point::EmbedOut | Point::FinalNorm | Point::Logits)
    }

    pub fn parse(name: &str) -> Result<Point, UnknownPoint> {
        Point::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| UnknownPoint(name.to_string()))
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPoint(pub String);

impl fmt::Display for UnknownPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Point::ALL.iter().map(|p| p.name()).collect();
        write!(
            f,
            "unknown trace point {:?}; accepted: {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownPoint {}

/// Where a stage's output was produced: which point, which layer, which positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageAt {
    pub point: Point,
    /// None outside the layers (embed_out, final_norm, logits).
    pub layer: Option<usize>,
    /// Position of the first row.
    pub pos0: usize,
}

/// One call of the model's forward pass: which positions, which tokens.
#[derive(Debug, Clone, Copy)]
pub struct Pass<'a> {
    /// Position of the first token.
    pub pos0: usize,
    pub tokens: &'a [u32],
}

impl Pass<'_> {
    /// A pass of one token after others is a decode step; anything else is a prefill.
    pub fn phase(&self) -> Phase {
        if self.tokens.len() == 1 && self.pos0 > 0 {
            Phase::Decode
        } else {
            Phase::Prefill
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Prefill,
    Decode,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }
}

/// Receives every stage's output, row-major `[rows, row_len]`, as the model computes it.
/// The rows are mutable so that a fault can be injected on purpose (`--inject`).
pub trait StageObserver {
    /// Called at the start of each forward pass.
    fn begin_pass(&mut self, _pass: Pass) {}
    /// Whether this observer wants the point at all: lets the model skip the call, so that
    /// tracing off costs one predictable branch per stage.
    fn wants(&self, point: Point, layer: Option<usize>) -> bool;
    fn observe(&mut self, at: StageAt, rows: &mut [f32], row_len: usize);
    /// Whether the product that writes `point` should read a changed copy of its input (a
    /// numerics probe, `--inject ...:f16in`). Only the CPU forward asks; the GPU route
    /// refuses such probes up front (its products read their operands on the device).
    fn wants_input(&self, _point: Point, _layer: Option<usize>) -> bool {
        false
    }
    /// Changes `x`, a copy of the input of the product that writes `at.point`, made for that
    /// product alone (called where `wants_input` said so).
    fn observe_input(&mut self, _at: StageAt, _x: &mut [f32]) {}
    /// Whether the product that writes `point` multiplies its (probed) input's low half by
    /// the weights' FP8 copy, as the GPU's `--split-lo fp8` does (`--inject ...:f16lo8w8in`),
    /// and in which form (all of it, or 2:4-sparse: `f16lo8sw8in`); None: it does not.
    fn lo_on_fp8_weights(
        &self,
        _point: Point,
        _layer: Option<usize>,
    ) -> Option<crate::inject::LoForm> {
        None
    }
}

/// The observer of an untraced run.
pub struct NoTrace;

impl StageObserver for NoTrace {
    fn wants(&self, _: Point, _: Option<usize>) -> bool {
        false
    }
    fn observe(&mut self, _: StageAt, _: &mut [f32], _: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_in_trace_md_order() {
        for p in Point::ALL {
            assert_eq!(Point::parse(p.name()), Ok(p));
        }
        // Pipeline order is the enum's order.
        let mut sorted = Point::ALL;
        sorted.sort();
        assert_eq!(sorted, Point::ALL);
        assert_eq!(Point::ALL.iter().filter(|p| !p.in_layer()).count(), 3);
    }

    #[test]
    fn unknown_point_lists_accepted_names() {
        let e = Point::parse("attn_bogus").unwrap_err().to_string();
        assert!(e.contains("attn_bogus") && e.contains("resid_ffn"), "{e}");
    }
}
