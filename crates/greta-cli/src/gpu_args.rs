//! Options every GPU-running command takes (generate, bench, audit backend).

use clap::Args;
use greta_model::llama::gpu::{GpuLlama, SplitInputs, SPLIT_ABOVE_DEFAULT};

#[derive(Args, Clone, Copy)]
pub struct GpuArgs {
    /// GPU prefill: which products take their f32 input as hi + lo (two f16) on the matrix
    /// units; the rest round it to one f16. all, none, or a comma list of qkv, o, gate_up,
    /// down, head (docs/gpu.md, "Numerics").
    #[arg(long, value_name = "LIST", default_value_t = SplitInputs::default())]
    pub split_inputs: SplitInputs,
    /// In those products' inputs, only the elements larger than this multiple of their
    /// row's rms keep their low half (the massive activations); the rest round to f16.
    /// 0: every element keeps it (the full hi + lo product).
    #[arg(long, value_name = "MULTIPLE", default_value_t = SPLIT_ABOVE_DEFAULT, value_parser = parse_above)]
    pub split_above: f32,
    /// Launch each GPU kernel so that it may start while the one ahead of it drains
    /// (NVIDIA sm_90: programmatic dependent launch; its launch and its reads of weights
    /// overlap the previous kernel's tail). off: plain stream order, to compare with. AMD
    /// launches in stream order either way.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub overlap: bool,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

fn parse_above(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?}: expected a multiple of the row's rms, a finite number >= 0"
        )),
    }
}

impl GpuArgs {
    /// Sets the options on a loaded model.
    pub fn apply(self, model: &mut GpuLlama) {
        model.split_inputs = self.split_inputs;
        model.split_above = self.split_above;
        model.kernels.overlap = self.overlap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        gpu: GpuArgs,
    }

    #[test]
    fn overlap_takes_on_or_off_and_defaults_to_on() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("greta").chain(args.iter().copied()))
                .map(|c| c.gpu.overlap)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse(&[]), Ok(true));
        assert_eq!(parse(&["--overlap", "on"]), Ok(true));
        assert_eq!(parse(&["--overlap", "off"]), Ok(false));
        assert_eq!(parse(&["--overlap=off"]), Ok(false));
        let err = parse(&["--overlap", "yes"]).unwrap_err();
        assert!(err.contains("expected on or off"), "{err}");
        // A bare flag is refused (it needs its value), not read as "on".
        assert!(parse(&["--overlap"]).is_err());
    }

    #[test]
    fn split_above_takes_a_finite_multiple_at_least_zero() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("greta").chain(args.iter().copied()))
                .map(|c| c.gpu.split_above)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse(&[]), Ok(SPLIT_ABOVE_DEFAULT));
        assert_eq!(parse(&["--split-above", "0"]), Ok(0.0));
        assert_eq!(parse(&["--split-above", "16.5"]), Ok(16.5));
        for bad in ["-1", "inf", "NaN", "eight"] {
            let err = parse(&[&format!("--split-above={bad}")]).unwrap_err();
            assert!(err.contains("finite number >= 0"), "{bad}: {err}");
        }
    }
}
