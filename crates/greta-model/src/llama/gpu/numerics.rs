//! The numerics of the GPU products' inputs: which products split their f32 input into f16
//! hi + lo (`--split-inputs`), in which format the low half runs (`--split-lo`: f16, or FP8
//! e5m2 on Hopper's FP8 units), and the automatic choice; docs/gpu.md, "Numerics".

use super::*;

/// The format of a split input's low half on the matrix units (`--split-lo`), by product:
/// f16 (two f16 products), or FP8 e5m2 under one fixed power-of-two scale, whose product
/// (with FP8 e4m3 copies of the weights, one scale each) runs on the FP8 units at twice
/// the f16 rate (Hopper only; docs/gpu.md, "Numerics"). `fp8` is the
/// set of products whose low half is FP8 (of those `SplitInputs` splits); `sparse`, of those,
/// the products whose FP8 low half is kept 2:4-sparse (each 4 values' 2 largest, on Hopper's
/// sparse FP8 units at 1.7x the dense rate; docs/sparse-lo.md): gate/up only, whose input's
/// writer (the FFN norm) makes the sparse form in its own launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitLo {
    pub fp8: SplitInputs,
    pub sparse: SplitInputs,
}

impl SplitLo {
    pub const F16: SplitLo = SplitLo {
        fp8: SplitInputs::NONE,
        sparse: SplitInputs::NONE,
    };
    pub const FP8: SplitLo = SplitLo {
        fp8: SplitInputs::ALL,
        sparse: SplitInputs::NONE,
    };
}

impl Default for SplitLo {
    fn default() -> Self {
        SplitLo::F16
    }
}

impl std::str::FromStr for SplitLo {
    type Err = String;
    /// `f16`, `fp8` (every split product), or `fp8:LIST` (a comma list of qkv, q, kv, o, gate_up,
    /// down; the others keep f16 low halves); either FP8 form may end in `+sparse:gate_up`
    /// (gate/up's FP8 low half kept 2:4-sparse).
    fn from_str(v: &str) -> std::result::Result<Self, String> {
        let accepted = "accepted: f16, fp8, or fp8:LIST with LIST a comma list of qkv, q, kv, o, gate_up, down; an FP8 form may end in +sparse:gate_up";
        let (base, sparse) = match v.split_once("+sparse:") {
            Some((base, list)) => {
                let sparse: SplitInputs = list.parse().map_err(|e| format!("{v:?}: {e}"))?;
                if sparse.and(SplitInputs::GATE_UP) != sparse || sparse == SplitInputs::NONE {
                    return Err(format!(
                        "{v:?}: 2:4-sparse low halves are for gate_up only (its input's writer makes them; the audit fails them on every product: docs/sparse-lo.md); {accepted}"
                    ));
                }
                (base, sparse)
            }
            None => (v, SplitInputs::NONE),
        };
        let fp8 = match base {
            "f16" => SplitInputs::NONE,
            "fp8" => SplitInputs::ALL,
            _ => match base.strip_prefix("fp8:") {
                Some(list) => list.parse().map_err(|e| format!("{v:?}: {e}"))?,
                None => return Err(format!("{v:?}: {accepted}")),
            },
        };
        if sparse.and(fp8) != sparse {
            return Err(format!(
                "{v:?}: a sparse low half is an FP8 one, so {sparse} must have FP8 low halves too; {accepted}"
            ));
        }
        Ok(SplitLo { fp8, sparse })
    }
}

impl std::fmt::Display for SplitLo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.fp8 {
            SplitInputs::NONE => f.write_str("f16")?,
            SplitInputs::ALL => f.write_str("fp8")?,
            set => write!(f, "fp8:{set}")?,
        }
        if self.sparse != SplitInputs::NONE {
            write!(f, "+sparse:{}", self.sparse)?;
        }
        Ok(())
    }
}

/// `--split-lo`'s value: a format for the products (`Set`), or `Auto`, which
/// `GpuLlama::auto_split_lo` resolves for the device and the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitLoChoice {
    #[default]
    Auto,
    Set(SplitLo),
}

impl std::str::FromStr for SplitLoChoice {
    type Err = String;
    /// `auto`, or what `SplitLo` parses.
    fn from_str(v: &str) -> std::result::Result<Self, String> {
        match v {
            "auto" => Ok(SplitLoChoice::Auto),
            _ => v
                .parse()
                .map(SplitLoChoice::Set)
                .map_err(|e: String| e.replace("accepted: f16", "accepted: auto, f16")),
        }
    }
}

impl std::fmt::Display for SplitLoChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitLoChoice::Auto => f.write_str("auto"),
            SplitLoChoice::Set(lo) => lo.fmt(f),
        }
    }
}

/// `--split-lo auto` keeps f16 low halves where the FP8 weight copies would take more than
/// this fraction of the device's free memory: the KV cache and workspace come after them.
const AUTO_FP8_MAX_FREE_FRACTION: f64 = 0.25;

/// Bytes of the FP8 weight copies `GpuLlama::set_split_lo(lo)` makes for a model of
/// config `c` whose prefill splits the products `split`.
pub fn fp8_copy_bytes(c: &LlamaConfig, split: SplitInputs, lo: SplitLo) -> usize {
    let layer: usize = Lin::LAYER
        .iter()
        .filter_map(|&which| fp8_copy_shape(c, split, lo, which))
        .map(|(rows, cols)| rows * cols)
        .sum();
    layer * c.n_layers
}

/// The shape `[rows, cols]` of the FP8 copy `set_split_lo(lo)` makes of a layer's product
/// `which`, if it makes one: for products both sets name, less the LM head (no FP8 copy)
/// and rows that are not a multiple of 16 bytes of FP8 (the TMA's rows).
pub(super) fn fp8_copy_shape(
    c: &LlamaConfig,
    split: SplitInputs,
    lo: SplitLo,
    which: Lin,
) -> Option<(usize, usize)> {
    let on = which != Lin::Head && which.needs_lo(split) && which.needs_lo(lo.fp8);
    let (rows, cols) = which.shape(c);
    (on && cols.is_multiple_of(16)).then_some((rows, cols))
}

/// What `--split-lo auto` chose, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoLo {
    Fp8,
    /// The device has no FP8 matrix units.
    NoUnits,
    /// The FP8 copies would take `bytes` of the `free` bytes of device memory.
    Memory {
        bytes: usize,
        free: usize,
    },
}

impl AutoLo {
    /// The rule of `--split-lo auto` (`GpuLlama::auto_split_lo`): `units`, whether the
    /// device has the FP8 route; `free`, its free memory in bytes. Any model width: with
    /// e5m2 low halves under one fixed scale (session 23, H200, prefill-512 against f16 lo)
    /// Llama-2-7B's shape took −17 %, Llama-3.2-1B's −9 %, SmolLM2-135M's −8 %. (Sessions
    /// 17-22's e4m3 form, whose GEMM rescaled every K step, kept f16 below hidden 4096: 1B
    /// was 2-3 % slower with it.)
    pub fn choose(units: bool, c: &LlamaConfig, split: SplitInputs, free: usize) -> AutoLo {
        if !units {
            return AutoLo::NoUnits;
        }
        let bytes = fp8_copy_bytes(c, split, SplitLo::FP8);
        if bytes as f64 > free as f64 * AUTO_FP8_MAX_FREE_FRACTION {
            return AutoLo::Memory { bytes, free };
        }
        AutoLo::Fp8
    }

    pub fn split_lo(self) -> SplitLo {
        match self {
            AutoLo::Fp8 => SplitLo::FP8,
            _ => SplitLo::F16,
        }
    }
}

/// How a product group's input enters the matrix units: one f16, or hi + lo with lo f16 or
/// FP8 (`GpuLlama::f16_operands`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoKind {
    None,
    F16,
    Fp8,
    /// FP8, kept 2:4-sparse (`SplitLo::sparse`).
    Fp8Sparse,
}

/// Which prefill products take their f32 input as hi + lo (two f16, ~22 bits) on the matrix
/// units; the others take it rounded to one f16 (llama.cpp's numerics). Decode's products
/// always read f32. `greta ... --split-inputs` sets it; `Default` is the measured choice
/// (docs/gpu.md, "Numerics"). Q and K/V are apart because the CPU emulation found Q's input
/// needs no split where K's and V's have theirs (session 29): `kv` splits K and V only
/// (Q then runs in its own hi-only launch), `qkv` all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitInputs {
    pub q: bool,
    pub kv: bool,
    pub o: bool,
    pub gate_up: bool,
    pub down: bool,
    pub head: bool,
}

impl SplitInputs {
    pub const ALL: SplitInputs = SplitInputs {
        q: true,
        kv: true,
        o: true,
        gate_up: true,
        down: true,
        head: true,
    };
    pub const NONE: SplitInputs = SplitInputs {
        q: false,
        kv: false,
        o: false,
        gate_up: false,
        down: false,
        head: false,
    };
    pub const GATE_UP: SplitInputs = SplitInputs {
        gate_up: true,
        ..SplitInputs::NONE
    };
    /// The names a list may hold (`qkv` is `q` and `kv` together).
    const NAMES: [&'static str; 7] = ["qkv", "q", "kv", "o", "gate_up", "down", "head"];

    /// The products both sets name.
    pub fn and(self, other: SplitInputs) -> SplitInputs {
        SplitInputs {
            q: self.q && other.q,
            kv: self.kv && other.kv,
            o: self.o && other.o,
            gate_up: self.gate_up && other.gate_up,
            down: self.down && other.down,
            head: self.head && other.head,
        }
    }

    fn set(&mut self, name: &str) -> bool {
        match name {
            "qkv" => (self.q, self.kv) = (true, true),
            "q" => self.q = true,
            "kv" => self.kv = true,
            "o" => self.o = true,
            "gate_up" => self.gate_up = true,
            "down" => self.down = true,
            "head" => self.head = true,
            _ => return false,
        }
        true
    }
}

/// Every product but the LM head: the one set of those measured that passes the GPU audit of
/// the default model's first 10 layers on all three of split_inputs_compare.sh's prompts with
/// margin (H200, session 30: worst 3.22e-3 / 1.19e-3 / 3.90e-3 against the audit's 8e-3; the
/// third prompt is ~650 tokens long). Until session 30 the default left gate/up's input
/// unsplit (`qkv,o,down`): it passes the two short prompts and **fails** the long one (8.26e-3
/// at layer 2 `ffn_out`, position 166: the sentence's full stop, a row whose gate or up dot
/// product cancels at one element; not a peaked row), as do
/// `kv,o,down`, `gate_up,down`, `o,gate_up,down`, `kv,gate_up,down` (9.3e-3 to 1.0e-2) and
/// `none` (1.19e-2); `kv,o,gate_up,down` passes at 6.87e-3, too near the tolerance to ship.
/// The cost, Llama-2-7B prefill-512 on the H200: 18.46 ms against 15.11 (`qkv,o,down`, same
/// call) and 11.45 (`none`, the peers' numerics). Session 31 audited the whole model under it
/// (worst 3.904e-3 on the three prompts). docs/gpu.md, "Numerics".
impl Default for SplitInputs {
    fn default() -> Self {
        SplitInputs {
            head: false,
            ..SplitInputs::ALL
        }
    }
}

impl std::str::FromStr for SplitInputs {
    type Err = String;
    /// `all`, `none`, or a comma list of qkv, q, kv, o, gate_up, down, head.
    fn from_str(v: &str) -> std::result::Result<Self, String> {
        match v {
            "all" => return Ok(SplitInputs::ALL),
            "none" => return Ok(SplitInputs::NONE),
            _ => {}
        }
        let mut s = SplitInputs::NONE;
        for part in v.split(',') {
            if !s.set(part) {
                return Err(format!(
                    "{part:?} is not a product; accepted: all, none, or a comma list of {}",
                    SplitInputs::NAMES.join(", ")
                ));
            }
        }
        Ok(s)
    }
}

/// `--split-inputs`'s value: a set of products (`Set`), or `Auto`: the policy `greta
/// calibrate` chose for the loaded weights on this kernel target and build
/// (`crate::calibrate`), and `SplitInputs::default()` where there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitInputsChoice {
    #[default]
    Auto,
    Set(SplitInputs),
}

impl std::str::FromStr for SplitInputsChoice {
    type Err = String;
    /// `auto`, or what `SplitInputs` parses.
    fn from_str(v: &str) -> std::result::Result<Self, String> {
        match v {
            "auto" => Ok(SplitInputsChoice::Auto),
            _ => v
                .parse()
                .map(SplitInputsChoice::Set)
                .map_err(|e: String| e.replace("accepted: all", "accepted: auto, all")),
        }
    }
}

impl std::fmt::Display for SplitInputsChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitInputsChoice::Auto => f.write_str("auto"),
            SplitInputsChoice::Set(s) => s.fmt(f),
        }
    }
}

impl std::fmt::Display for SplitInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let attention = match (self.q, self.kv) {
            (true, true) => Some("qkv"),
            (true, false) => Some("q"),
            (false, true) => Some("kv"),
            (false, false) => None,
        };
        let rest = [
            (self.o, "o"),
            (self.gate_up, "gate_up"),
            (self.down, "down"),
            (self.head, "head"),
        ];
        let on: Vec<&str> = attention
            .into_iter()
            .chain(rest.into_iter().filter_map(|(b, n)| b.then_some(n)))
            .collect();
        f.write_str(&match *self {
            SplitInputs::NONE => "none".to_string(),
            SplitInputs::ALL => "all".to_string(),
            _ => on.join(","),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    #[test]
    fn split_inputs_choice_takes_auto_or_a_set() {
        assert_eq!("auto".parse(), Ok(SplitInputsChoice::Auto));
        assert_eq!(SplitInputsChoice::default(), SplitInputsChoice::Auto);
        assert_eq!(
            "none".parse(),
            Ok(SplitInputsChoice::Set(SplitInputs::NONE))
        );
        assert_eq!(
            "qkv,down".parse::<SplitInputsChoice>().unwrap().to_string(),
            "qkv,down"
        );
        let e = "fast".parse::<SplitInputsChoice>().unwrap_err();
        assert!(e.contains("accepted: auto, all, none"), "{e}");
    }

    #[test]
    fn split_inputs_parse_print_and_refuse_unknown_products() {
        for v in [
            "all",
            "none",
            "qkv,down",
            "o",
            "gate_up,head",
            "kv,down",
            "q,o",
        ] {
            assert_eq!(v.parse::<SplitInputs>().unwrap().to_string(), v);
        }
        assert_eq!(
            "q,kv,o,gate_up,down".parse::<SplitInputs>().unwrap(),
            SplitInputs::default()
        );
        assert_eq!(SplitInputs::default().to_string(), "qkv,o,gate_up,down");
        assert_eq!(
            "qkv,o,gate_up,down,head".parse::<SplitInputs>().unwrap(),
            SplitInputs::ALL
        );
        let e = "qkv,ffn".parse::<SplitInputs>().unwrap_err();
        assert!(e.contains("\"ffn\"") && e.contains("gate_up"), "{e}");
        assert!("".parse::<SplitInputs>().is_err());
    }

    #[test]
    fn fp8_copies_of_llama2_7b_take_what_the_device_showed() {
        // Session 17 (H200): 14.67 GB on the device with f16 lo, 18.29 GB with fp8 for the
        // then default split products (Q/K/V, output, down): their copies are 3.59 GB of that.
        let c = synthetic::config("llama2-7b").unwrap();
        let old_default: SplitInputs = "qkv,o,down".parse().unwrap();
        assert_eq!(
            fp8_copy_bytes(&c, old_default, SplitLo::FP8),
            32 * 4096 * 27_392
        );
        // Session 30's default adds gate/up's (2 x 11008 x 4096 a layer): 6.48 GB.
        let split = SplitInputs::default();
        assert_eq!(
            fp8_copy_bytes(&c, split, SplitLo::FP8),
            32 * 4096 * (27_392 + 2 * 11_008)
        );
        assert_eq!(fp8_copy_bytes(&c, split, SplitLo::F16), 0);
        // K and V split alone: Q's copy (4096 x 4096 a layer) is not made.
        let kv = "kv,o,down".parse().unwrap();
        assert_eq!(
            fp8_copy_bytes(&c, kv, SplitLo::FP8),
            32 * 4096 * (27_392 - 4096)
        );
        // FP8 asked for gate/up alone: their copies only, and none where they are not split.
        let gate_up = SplitLo {
            fp8: "gate_up".parse().unwrap(),
            sparse: SplitInputs::NONE,
        };
        assert_eq!(fp8_copy_bytes(&c, old_default, gate_up), 0);
        assert_eq!(fp8_copy_bytes(&c, split, gate_up), 32 * 2 * 11_008 * 4096);
    }

    /// The CPU emulation of the FP8 low halves (`--inject ...:f16lo8`, which
    /// tools/oracle/split_inputs_emulate.sh audits) and the GPU kernels (whose bytes the op
    /// tests check against greta-kernels' constant) scale lo by the same power of two.
    #[test]
    fn the_emulated_and_the_gpu_low_halves_share_their_scale() {
        assert_eq!(
            greta_kernels::gpu::LO8_SCALE_LOG2,
            greta_trace::inject::LO8_SCALE_LOG2
        );
    }

    #[test]
    fn auto_takes_fp8_only_with_the_units_and_the_memory() {
        let split = SplitInputs::default();
        let gb = 1_000_000_000;
        let c7 = synthetic::config("llama2-7b").unwrap();
        // An H200 / H100 with the 7B model loaded: 6.48 GB of copies in > 50 GB free.
        assert_eq!(AutoLo::choose(true, &c7, split, 120 * gb), AutoLo::Fp8);
        assert_eq!(AutoLo::Fp8.split_lo(), SplitLo::FP8);
        // No FP8 route (AMD, pre-Hopper NVIDIA): f16, whatever the model.
        assert_eq!(AutoLo::choose(false, &c7, split, 120 * gb), AutoLo::NoUnits);
        // Narrower models too (measured faster with FP8 lo on both shapes), down to a
        // small free memory for SmolLM2's small copies (58 MB: f16 below 232 MB free).
        for name in ["llama3.2-1b", "smollm2-135m"] {
            let c = synthetic::config(name).unwrap();
            assert_eq!(AutoLo::choose(true, &c, split, 120 * gb), AutoLo::Fp8);
        }
        let c = synthetic::config("smollm2-135m").unwrap();
        let small = fp8_copy_bytes(&c, split, SplitLo::FP8);
        assert!(matches!(
            AutoLo::choose(true, &c, split, 3 * small),
            AutoLo::Memory { .. }
        ));
        assert_eq!(AutoLo::choose(true, &c, split, 5 * small), AutoLo::Fp8);
        // 6.48 GB of copies need 25.9 GB free (a quarter): at 25 GB, f16 and why.
        let bytes = fp8_copy_bytes(&c7, split, SplitLo::FP8);
        assert_eq!(
            AutoLo::choose(true, &c7, split, 25 * gb),
            AutoLo::Memory {
                bytes,
                free: 25 * gb
            }
        );
        assert_eq!(AutoLo::choose(true, &c7, split, 26 * gb), AutoLo::Fp8);
        let memory = AutoLo::Memory { bytes, free: 0 };
        for f16 in [AutoLo::NoUnits, memory] {
            assert_eq!(f16.split_lo(), SplitLo::F16);
        }
    }
}
