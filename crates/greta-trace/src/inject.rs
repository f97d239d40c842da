//! `--inject LAYER:POINT:KIND`: perturb one stage on purpose, so that anyone can check that
//! the diff and the audits find a planted fault exactly where it was planted. `f16` is a
//! numerics probe rather than a fault: it rounds the stage to f16, which is what a kernel
//! that stored it as f16 (or fed it once-rounded to f16 matrix units) would do, so a diff
//! against an untouched run shows what that rounding costs downstream. `f16in` and
//! `f16lo8in` are the same probes on one product's input instead of a stage (attn_norm
//! feeds the q, k and v products alike; `*:q:f16in` rounds what the q product reads only),
//! run by the CPU routes, which multiply on the host; the GPU route refuses them.

use std::fmt;
use std::str::FromStr;

use crate::point::{Phase, Point, StageAt};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Scale(f32),
    Add(f32),
    Nan,
    Zero,
    /// Round to the nearest f16 (ties to even), as an f16 store would.
    F16,
    /// Keep x as hi + lo with hi = f16(x) and lo = x - hi rounded to FP8 e5m2 (2 mantissa
    /// bits) under the one fixed scale 2^11, the GPU's rule for `--split-lo fp8`
    /// (kernels/greta_device.h: every f16 value's lo times 2^11 lies within e5m2's range):
    /// what a product sees whose input is split in hi + lo with the lo half on FP8 matrix
    /// units. (The FP8 rounding of the weights that lo product also multiplies is not
    /// modelled.)
    F16Lo8,
    /// The product that writes this point reads its input rounded to f16 (`f16in`); its
    /// output and every other reader of that input are left alone.
    F16In,
    /// The product that writes this point reads its input as f16 hi + e5m2 lo (`f16lo8in`).
    F16Lo8In,
    /// As `f16lo8in`, and the lo half multiplies the weights' FP8 e4m3 copy (one
    /// power-of-two scale a matrix, the GPU's `quantize_e4m3` rule) while hi multiplies the
    /// weights themselves (`f16lo8w8in`): all of the GPU's `--split-lo fp8` product.
    F16Lo8W8In,
    /// As `f16lo8w8in`, with the low half 2:4-sparse along each row (`f16lo8sw8in`): of every
    /// 4 consecutive values its 2 largest in magnitude kept (ties: the lower index) and the
    /// other 2 zero, the operand Hopper's sparse FP8 products would multiply
    /// (docs/sparse-lo.md). A numerics probe of a form the GPU does not run yet.
    F16Lo8SW8In,
    /// The attention that writes attn_ctx takes its probabilities as the GPU's prefill flash
    /// attention does (`f16p`): each exp(score - the row's max) rounded to f16 before it
    /// multiplies V, and the row's sum taken over the rounded values.
    F16P,
}

impl Fault {
    /// Whether the fault acts inside the operation that writes the point (a product's input,
    /// the attention's probabilities) rather than on the stage's values: CPU routes only.
    pub fn on_input(self) -> bool {
        matches!(
            self,
            Fault::F16In | Fault::F16Lo8In | Fault::F16Lo8W8In | Fault::F16Lo8SW8In | Fault::F16P
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Injection {
    /// None for the points outside the layers (written `-`), and with `every_layer`.
    pub layer: Option<usize>,
    /// Every layer's instance of the point (written `*`; in-layer points only): the f16
    /// probe of a whole model's worth of one rounding.
    pub every_layer: bool,
    pub point: Point,
    pub fault: Fault,
    /// Only in passes of this phase (written `prefill@` or `decode@` in front): e.g. the f16
    /// rounding a GPU's prefill matrix units apply and its decode products do not.
    pub phase: Option<Phase>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--inject {value:?}: {reason}; accepted: [PHASE@]LAYER:POINT:KIND with PHASE prefill or decode (default: both), LAYER a layer index, * for every layer, or - for embed_out, final_norm, logits, and KIND one of scale=F, add=F, nan, zero, f16, f16lo8, or f16in, f16lo8in, f16lo8w8in, f16lo8sw8in on a product's output point (q, k, v, attn_out, ffn_gate, ffn_up, ffn_out; CPU routes only), f16p on attn_ctx (CPU routes only) (e.g. 3:attn_out:scale=1.01, prefill@*:attn_norm:f16, prefill@*:q:f16in)")]
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
        let (phase, rest) = match s.split_once('@') {
            Some(("prefill", r)) => (Some(Phase::Prefill), r),
            Some(("decode", r)) => (Some(Phase::Decode), r),
            Some((p, _)) => return Err(e(format!("phase {p:?} is unknown"))),
            None => (None, s),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let [layer, point, kind] = parts[..] else {
            return Err(e(format!(
                "{} parts separated by ':', 3 needed",
                parts.len()
            )));
        };
        let point = Point::parse(point).map_err(|u| e(u.to_string()))?;
        let every_layer = layer == "*";
        let layer = match layer {
            "-" | "*" => None,
            l => Some(
                l.parse::<usize>()
                    .map_err(|_| e(format!("layer {l:?} is not an index")))?,
            ),
        };
        if point.in_layer() != (layer.is_some() || every_layer) {
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
            None if kind == "f16" => Fault::F16,
            None if kind == "f16lo8" => Fault::F16Lo8,
            None if kind == "f16in" => Fault::F16In,
            None if kind == "f16lo8in" => Fault::F16Lo8In,
            None if kind == "f16lo8w8in" => Fault::F16Lo8W8In,
            None if kind == "f16lo8sw8in" => Fault::F16Lo8SW8In,
            None if kind == "f16p" => Fault::F16P,
            _ => return Err(e(format!("kind {kind:?} is unknown"))),
        };
        if fault == Fault::F16P && point != Point::AttnCtx {
            return Err(e(format!(
                "f16p acts on the probabilities of the attention, which writes attn_ctx, not {point}"
            )));
        }
        // The input probes other than f16p (checked above) act on a product's input.
        if fault.on_input() && fault != Fault::F16P && !PRODUCT_OUTPUTS.contains(&point) {
            return Err(e(format!(
                "{kind} acts on the input of the product that writes the point, and {point} is not written by one"
            )));
        }
        Ok(Injection {
            layer,
            every_layer,
            point,
            fault,
            phase,
        })
    }
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.phase {
            write!(f, "{}@", p.name())?;
        }
        match self.layer {
            _ if self.every_layer => f.write_str("*:")?,
            Some(l) => write!(f, "{l}:")?,
            None => f.write_str("-:")?,
        }
        write!(f, "{}:", self.point)?;
        match self.fault {
            Fault::Scale(v) => write!(f, "scale={v}"),
            Fault::Add(v) => write!(f, "add={v}"),
            Fault::Nan => f.write_str("nan"),
            Fault::Zero => f.write_str("zero"),
            Fault::F16 => f.write_str("f16"),
            Fault::F16Lo8 => f.write_str("f16lo8"),
            Fault::F16In => f.write_str("f16in"),
            Fault::F16Lo8In => f.write_str("f16lo8in"),
            Fault::F16Lo8W8In => f.write_str("f16lo8w8in"),
            Fault::F16Lo8SW8In => f.write_str("f16lo8sw8in"),
            Fault::F16P => f.write_str("f16p"),
        }
    }
}

/// The in-layer points a product writes: where `f16in` and `f16lo8in` may act.
pub const PRODUCT_OUTPUTS: [Point; 7] = [
    Point::Q,
    Point::K,
    Point::V,
    Point::AttnOut,
    Point::FfnGate,
    Point::FfnUp,
    Point::FfnOut,
];

/// An error naming the first injection whose layer the model lacks (`n_layers` layers)
/// (`Recorder::with_injections` checks what it is given).
pub fn check_layers(inject: &[Injection], n_layers: usize) -> Result<(), InjectError> {
    match inject
        .iter()
        .find(|i| i.layer.is_some_and(|l| l >= n_layers))
    {
        Some(i) => Err(InjectError {
            value: i.to_string(),
            reason: format!(
                "layer {}, but the model has {n_layers} layers (0 to {})",
                i.layer.unwrap_or_default(),
                n_layers.saturating_sub(1)
            ),
        }),
        None => Ok(()),
    }
}

impl Injection {
    /// Whether the injection acts in a pass of `phase`.
    pub fn in_phase(&self, phase: Phase) -> bool {
        self.phase.is_none_or(|p| p == phase)
    }

    pub fn matches(&self, point: Point, layer: Option<usize>) -> bool {
        self.point == point && (self.layer == layer || (self.every_layer && layer.is_some()))
    }

    /// Applies the fault to every value of the stage's rows if this is the stage (faults on a
    /// product's input act in `apply_input` instead).
    pub fn apply(&self, at: StageAt, rows: &mut [f32]) {
        if self.fault.on_input() || !self.matches(at.point, at.layer) {
            return;
        }
        let each = |rows: &mut [f32], f: &dyn Fn(f32) -> f32| {
            rows.iter_mut().for_each(|v| *v = f(*v));
        };
        match self.fault {
            Fault::Scale(s) => each(rows, &|v| v * s),
            Fault::Add(a) => each(rows, &|v| v + a),
            Fault::Nan => each(rows, &|_| f32::NAN),
            Fault::Zero => each(rows, &|_| 0.0),
            Fault::F16 => each(rows, &|v| half::f16::from_f32(v).to_f32()),
            Fault::F16Lo8 => each(rows, &f16_lo8),
            // Input probes act inside the operation (apply_input, the attention), not here.
            f => debug_assert!(f.on_input()),
        }
    }

    /// Which low half the product that writes `point` multiplies by the weights' FP8 copy
    /// under this probe: all of it (`f16lo8w8in`) or its 2:4-sparse part (`f16lo8sw8in`);
    /// None where this probe does neither there.
    pub fn lo_on_fp8_weights(&self, point: Point, layer: Option<usize>) -> Option<LoForm> {
        let form = match self.fault {
            Fault::F16Lo8W8In => LoForm::Dense,
            Fault::F16Lo8SW8In => LoForm::Sparse24,
            _ => return None,
        };
        self.matches(point, layer).then_some(form)
    }

    /// Whether this acts on the input of the product that writes `point`.
    pub fn matches_input(&self, point: Point, layer: Option<usize>) -> bool {
        self.fault.on_input() && self.matches(point, layer)
    }

    /// Applies an input fault to `x`, the input of the product that writes `at.point` (a copy
    /// the caller made for that product alone), if this is that product.
    pub fn apply_input(&self, at: StageAt, x: &mut [f32]) {
        if !self.matches_input(at.point, at.layer) {
            return;
        }
        match self.fault {
            Fault::F16In => x
                .iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32()),
            Fault::F16Lo8In | Fault::F16Lo8W8In | Fault::F16Lo8SW8In => {
                x.iter_mut().for_each(|v| *v = f16_lo8(*v))
            }
            _ => {}
        }
    }
}

/// The low half a product multiplies by the weights' FP8 copy (`f16lo8w8in`,
/// `f16lo8sw8in`): all of it, or its 2 largest of every 4 values along each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoForm {
    Dense,
    Sparse24,
}

/// log2 of the fixed scale of the FP8 low halves (the GPU's G_LO8_SCALE_LOG2): an f16
/// value's lo is at most half its ulp, 16 at f16's largest binade, and 16 x 2^11 = 2^15 is
/// within e5m2's 57 344. Lo values from 2^-25 keep e5m2's 2 bits; smaller ones (elements
/// below ~2^-13, f16's lowest binades) keep an absolute 2^-28, still 2^-14 of the smallest
/// normal f16 value.
pub const LO8_SCALE_LOG2: i32 = 11;

/// x as f16 hi + e5m2 lo (Fault::F16Lo8).
fn f16_lo8(x: f32) -> f32 {
    let hi = half::f16::from_f32(x).to_f32();
    let scale = (LO8_SCALE_LOG2 as f32).exp2();
    hi + e5m2((x - hi) * scale) / scale
}

/// The largest finite FP8 e5m2 value.
const E5M2_MAX: f32 = 57344.0;

/// x rounded to the nearest FP8 e5m2 value (ties to even; 2 mantissa bits, normals down
/// to 2^-14, subnormals in steps of 2^-16), saturated at +-57 344 as the GPU's `satfinite`
/// conversion does.
fn e5m2(x: f32) -> f32 {
    let a = x.abs();
    if a == 0.0 || !a.is_finite() {
        return x;
    }
    // The quantum at a's binade (at least the subnormals' 2^-16): 2^(e - 2). The binade
    // from the bits (log2 may round up just below a power of two).
    let e = (((a.to_bits() >> 23) & 0xff) as i32 - 127).max(-14);
    let quantum = ((e - 2) as f32).exp2();
    let r = ((a / quantum).round_ties_even() * quantum).min(E5M2_MAX);
    r.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// e5m2's grid: 2 mantissa bits, ties to even, subnormals to 2^-16, saturating at
    /// 57 344 (values from the OCP FP8 specification's table).
    #[test]
    fn e5m2_rounds_to_its_grid() {
        for (x, want) in [
            (1.0, 1.0),
            (1.125, 1.0), // half a quantum above 1: ties to even
            (1.375, 1.5), // 1 + 3/8: ties to even, up
            (1.25, 1.25),
            (-3.3, -3.5),
            (57344.0, 57344.0),
            (70000.0, 57344.0),
            (0.99999994, 1.0),                // just below a power of two
            (2f32.powi(-14), 2f32.powi(-14)), // the smallest normal
            (2f32.powi(-16), 2f32.powi(-16)), // the smallest subnormal
            (2f32.powi(-17), 0.0),            // a tie, to even (0)
            (0.0, 0.0),
        ] {
            assert_eq!(e5m2(x), want, "e5m2({x})");
        }
    }

    /// The emulation's e5m2 is the float8 crate's (a port of CUDA's conversion, which the
    /// GPU's `cvt.rn.satfinite` matches in the op tests) on every value below its
    /// saturation, sampled across all binades the low halves reach.
    #[test]
    fn e5m2_matches_the_float8_crate() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Exponents 2^-30 .. 2^16, random mantissa and sign.
            let bits = (((seed >> 40) % 47 + 97) << 23) as u32 | (seed as u32 & 0x807f_ffff);
            let x = f32::from_bits(bits);
            if x.abs() > 57344.0 {
                continue;
            }
            let want = float8::F8E5M2::from_f32(x).to_f32();
            assert_eq!(e5m2(x).to_bits(), want.to_bits(), "e5m2({x:e})");
        }
    }

    /// The fixed scale keeps every lo of 2^-25 and more in e5m2's normal range (its 2
    /// mantissa bits), from f16's largest binade down; smaller lo keep an absolute 2^-28.
    #[test]
    fn f16_lo8_keeps_two_bits_of_every_lo() {
        for x in [
            60015.0f32,
            1000.3,
            1.0 + 1e-4,
            -0.3377,
            0.00123,
            7.1e-5,
            6.2e-5,
            3e-7,
        ] {
            let lo = x - half::f16::from_f32(x).to_f32();
            let got = f16_lo8(x);
            assert!(
                (got - x).abs() <= (lo.abs() / 8.0).max(2f32.powi(-28)),
                "{x}: {got} (lo {lo})"
            );
        }
        // The largest possible lo (half of f16's largest ulp, 32) stays finite.
        assert_eq!(e5m2(16.0 * 2048.0), 32768.0);
    }

    /// hi + e5m2 lo keeps a row far closer than f16 alone (about 3 more bits), and exact f16
    /// rows unchanged.
    #[test]
    fn f16_lo8_is_closer_than_f16_and_keeps_f16_values() {
        let row: Vec<f32> = (0..576)
            .map(|i| ((i as f32) * 0.7311).sin() * 3.0 + 0.1)
            .collect();
        let err = |r: &[f32]| -> f64 {
            r.iter()
                .zip(&row)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let at = StageAt {
            point: Point::FfnAct,
            layer: Some(0),
            pos0: 0,
        };
        let (mut f16, mut lo8) = (row.clone(), row.clone());
        "0:ffn_act:f16"
            .parse::<Injection>()
            .unwrap()
            .apply(at, &mut f16);
        "0:ffn_act:f16lo8"
            .parse::<Injection>()
            .unwrap()
            .apply(at, &mut lo8);
        assert!(
            err(&lo8) * 8.0 < err(&f16),
            "{} vs {}",
            err(&lo8),
            err(&f16)
        );
        let mut exact = f16.clone();
        "0:ffn_act:f16lo8"
            .parse::<Injection>()
            .unwrap()
            .apply(at, &mut exact);
        assert_eq!(exact, f16, "f16 values have lo = 0");
    }

    #[test]
    fn layers_past_the_model_are_named() {
        let inject: Vec<Injection> = [
            "*:ffn_act:f16",
            "-:final_norm:f16",
            "29:ffn_act:f16",
            "30:ffn_act:f16",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(check_layers(&inject[..3], 30), Ok(()));
        let e = check_layers(&inject, 30).unwrap_err();
        assert_eq!(e.value, "30:ffn_act:f16");
        assert!(
            e.reason.contains("the model has 30 layers (0 to 29)"),
            "{e}"
        );
    }

    #[test]
    fn parses_and_prints_the_documented_forms() {
        for s in [
            "3:attn_out:scale=1.01",
            "0:q_rope:add=0.5",
            "-:logits:nan",
            "12:ffn_act:zero",
            "4:ffn_norm:f16",
            "*:ffn_norm:f16",
            "prefill@*:attn_norm:f16",
            "prefill@*:ffn_act:f16lo8",
            "decode@-:logits:add=1",
            "prefill@*:q:f16in",
            "2:ffn_out:f16lo8in",
            "prefill@*:attn_ctx:f16p",
            "prefill@*:ffn_gate:f16lo8w8in",
            "prefill@*:ffn_out:f16lo8sw8in",
        ] {
            assert_eq!(s.parse::<Injection>().unwrap().to_string(), s);
        }
        let p: Injection = "prefill@*:attn_norm:f16".parse().unwrap();
        assert!(p.in_phase(Phase::Prefill) && !p.in_phase(Phase::Decode));
        let both: Injection = "*:attn_norm:f16".parse().unwrap();
        assert!(both.in_phase(Phase::Prefill) && both.in_phase(Phase::Decode));
        for (bad, needle) in [
            ("3:attn_out", "3 needed"),
            ("x:q:zero", "not an index"),
            ("-:q:zero", "lives inside"),
            ("*:logits:f16", "does not live"),
            ("1:logits:zero", "does not live"),
            ("1:q:double", "unknown"),
            ("1:qq:zero", "unknown trace point"),
            ("warmup@1:q:zero", "phase \"warmup\" is unknown"),
            ("*:attn_norm:f16in", "not written by one"),
            ("1:q_rope:f16lo8in", "not written by one"),
            ("*:q:f16p", "writes attn_ctx"),
            ("*:attn_ctx:f16lo8w8in", "not written by one"),
            ("*:ffn_act:f16lo8sw8in", "not written by one"),
        ] {
            let e = bad.parse::<Injection>().unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("accepted"), "{bad}: {e}");
        }
    }

    /// An input fault changes the named product's input (the copy handed to it) as the stage
    /// fault of the same rounding changes a stage, and never the stage's own values.
    #[test]
    fn input_faults_round_the_product_input_only() {
        let at = |point| StageAt {
            point,
            layer: Some(1),
            pos0: 0,
        };
        let row = vec![0.1f32, 1.0 + 1.0 / 4096.0, -3.3377, 1000.3];
        let q: Injection = "*:q:f16in".parse().unwrap();
        assert!(q.matches_input(Point::Q, Some(1)) && !q.matches_input(Point::K, Some(1)));
        let mut out = row.clone();
        q.apply(at(Point::Q), &mut out);
        assert_eq!(out, row, "an input fault leaves the stage's values alone");
        let (mut input, mut stage) = (row.clone(), row.clone());
        q.apply_input(at(Point::Q), &mut input);
        "1:attn_norm:f16"
            .parse::<Injection>()
            .unwrap()
            .apply(at(Point::AttnNorm), &mut stage);
        assert_eq!(input, stage, "f16in rounds as f16 does");
        assert_ne!(input, row);
        let mut k_input = row.clone();
        q.apply_input(at(Point::K), &mut k_input);
        assert_eq!(k_input, row, "the k product's input is not q's");
        let (mut lo8_in, mut lo8) = (row.clone(), row.clone());
        "1:ffn_out:f16lo8in"
            .parse::<Injection>()
            .unwrap()
            .apply_input(at(Point::FfnOut), &mut lo8_in);
        "1:ffn_act:f16lo8"
            .parse::<Injection>()
            .unwrap()
            .apply(at(Point::FfnAct), &mut lo8);
        assert_eq!(lo8_in, lo8, "f16lo8in rounds as f16lo8 does");
    }

    /// f16 rounds to the nearest f16 value: exact f16 values stay, others move by at most
    /// half an f16 ulp, and values past f16's range become infinite (as an f16 store would).
    #[test]
    fn f16_rounds_as_an_f16_store_would() {
        let every: Injection = "*:ffn_norm:f16".parse().unwrap();
        assert!(every.matches(Point::FfnNorm, Some(0)) && every.matches(Point::FfnNorm, Some(29)));
        assert!(!every.matches(Point::FfnAct, Some(0)));
        let inj: Injection = "0:ffn_norm:f16".parse().unwrap();
        assert!(!inj.matches(Point::FfnNorm, Some(1)));
        let at = StageAt {
            point: Point::FfnNorm,
            layer: Some(0),
            pos0: 0,
        };
        let mut rows = vec![1.0, 0.1, 1.0 + 1.0 / 4096.0, 65504.0, 1e6, -3.0e-8];
        inj.apply(at, &mut rows);
        assert_eq!(rows[0], 1.0);
        assert_eq!(
            rows[1], 0.099975586,
            "0.1 -> the nearest f16, 0.0999755859375"
        );
        assert_eq!(rows[2], 1.0, "1 + 2^-12 is a quarter of an f16 ulp above 1");
        assert_eq!(rows[3], 65504.0, "the largest f16");
        assert!(rows[4].is_infinite(), "past f16's range");
        assert_eq!(
            rows[5], -5.9604645e-8,
            "past half the smallest subnormal, 2^-24: to it"
        );
    }
}
