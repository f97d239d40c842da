//! Options every GPU-running command takes (generate, bench, audit backend).

use std::path::PathBuf;

use clap::Args;
use greta_model::calibrate::{self, Lookup};
use greta_model::kernels::gpu::{CtxCombine, StreamK, GEMV_ROWS_MAX};
use greta_model::llama::gpu::{
    AutoLo, GemmTiles, GpuLlama, SplitInputs, SplitInputsChoice, SplitLo, SplitLoChoice,
    DEFAULT_GEMV_ROWS,
};

#[derive(Args, Clone, Copy)]
pub struct GpuArgs {
    /// GPU prefill: which products take their f32 input as hi + lo (two f16) on the matrix
    /// units; the rest round it to one f16. auto, all, none, or a comma list of qkv, o,
    /// gate_up, down, head, with q and kv for Q alone and K and V alone (Q then runs in its
    /// own launch). auto: the policy `greta calibrate` chose for these weights on this GPU
    /// and greta build (the cheapest that passes the backend audit with 2x margin: on an H200
    /// none for the random SmolLM2 shape, the split below for the random 7B shape and the
    /// default model), else qkv,o,gate_up,down, the one set measured that passes the audit of
    /// the default model on a ~650-token prompt with margin. none gives llama.cpp's numerics
    /// and its speed (docs/gpu.md, "Numerics").
    #[arg(long, value_name = "auto|LIST", default_value_t = SplitInputsChoice::default())]
    pub split_inputs: SplitInputsChoice,
    /// GPU prefill: the low half of a split input. f16: a second f16 product. fp8: FP8 e5m2
    /// under one fixed power-of-two scale, multiplied on Hopper's FP8 matrix units with
    /// FP8 e4m3 copies of those products' weights (made at load: +1 byte a weight); fp8:LIST for some products only (qkv, q, kv, o, gate_up, down); sm_90a only,
    /// refused elsewhere. An FP8 form may end in +sparse:gate_up: gate/up's FP8 low half
    /// kept 2:4-sparse (each 4 values' 2 largest) on the sparse FP8 units (experimental,
    /// docs/sparse-lo.md; never chosen by auto). auto: fp8 on an sm_90a device where the
    /// copies fit in a quarter of the free memory, f16 otherwise (docs/gpu.md, "Numerics").
    #[arg(long, value_name = "auto|f16|fp8|fp8:LIST[+sparse:gate_up]", default_value_t = SplitLoChoice::default())]
    pub split_lo: SplitLoChoice,
    /// Launch each GPU kernel so that it may start while the one ahead of it drains
    /// (NVIDIA sm_90: programmatic dependent launch; its launch and its reads of weights
    /// overlap the previous kernel's tail). off: plain stream order, to compare with. AMD
    /// launches in stream order either way.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub overlap: bool,
    /// GPU prefill (Hopper's warpgroup GEMM): where a product's output tiles leave the last
    /// wave of the multiprocessors short, cut that wave's tiles into parts along K that all
    /// of them take in turn (stream-K). off (the default): every tile whole; auto: where the
    /// cost model saves a block 0.15 of a tile or more; always: wherever the last wave is
    /// short (for tests). Measured on an H200 (session 52): no faster for the 7B at any
    /// prompt length from 512 to 896, the card's time following the products' work rather
    /// than their waves (docs/performance.md). The sums come in another order: f32 results
    /// differ in their last bits.
    #[arg(long, value_name = "off|auto|always", default_value_t = StreamK::Off)]
    pub stream_k: StreamK,
    /// GPU prefill (Hopper's warpgroup GEMM): let the Q/K/V, output, down and gate/up
    /// products cut the prompt's rows into tiles of 72 to 256 (the weights on the matrix
    /// units' A side) where that takes fewer waves than 128-row tiles, as cuBLAS does; off:
    /// 128- and 64-row tiles only, to compare with. Measured on an H200 (sessions 53-54): the
    /// 7B prefill under the default numerics up to 22 % faster at prompt lengths off the
    /// multiples of 128 (384: -21 %, 520: -18 %, 800: -7 %), level at 512; the Llama-3.2-1B
    /// shape 38 % faster at 520.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub swapped_tiles: bool,
    /// GPU prefill timing study (Hopper's warpgroup GEMM): force some products' tiles
    /// instead of the chooser's, to time each tile at one prompt length. A comma list of
    /// PRODUCT=TILE: products qkv, o, gate_up, down; tiles as their kernels are named (128,
    /// 64, 128x256, 128x232, 128x192, t72 .. t256 swapped; gate_up's SwiGLU GEMM: 128, 64,
    /// 128x256, 128x224, t72 .. t120). A tile without the form a launch needs (FP8 low
    /// halves: 128, 64, 128x192 and the swapped ones; Q/K/V into the caches: those to t192)
    /// is refused when that launch comes, naming the tiles there are. The products' values
    /// are the same on every tile up to the sums' order (the op tests check each tile); the
    /// time is what changes. auto: the chooser's.
    #[arg(long, value_name = "auto|LIST", default_value_t = GemmTiles::default())]
    pub gemm_tiles: GemmTiles,
    /// GPU prefill: a pass of at most N tokens (a short prompt, a chat turn's new tokens)
    /// multiplies through the decode GEMVs over its rows, each weight read once and the
    /// inputs kept in f32 (the decode step's numerics), instead of the prefill GEMM, which
    /// rounds the inputs to f16 for the matrix units and fills few of its tiles with a few
    /// rows. At most 16; 0 or 1: every pass of several tokens takes the GEMM. The default,
    /// 4, is where the GEMVs were the faster on an H200 (the 7B's 2-4 tokens 1.4-1.8x,
    /// SmolLM2's 1.2-1.3x; from 6 tokens on the GEMM is).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_GEMV_ROWS, value_parser = parse_gemv_rows)]
    pub gemv_rows: usize,
    /// GPU decode: where the attention's splits over the KV cache (128 positions each) are
    /// combined into the context row. attention: in the attention, where a head's splits
    /// wait for each other (a thread-block cluster on Hopper, else the last split to
    /// finish); product: each split leaves its partial and the output product combines
    /// them as it loads its input (up to 8 splits: 1024 positions, and context rows of at
    /// most 1024 values, heads x head_dim: SmolLM2's 576, not Llama-2-7B's 4096; otherwise
    /// the attention). auto: product from 2 splits, the attention at one (nothing to
    /// combine). The values are the same bits either way; a run that traces the attention
    /// combines in it.
    #[arg(long, value_name = "auto|attention|product", default_value_t = CtxCombine::default())]
    pub ctx_combine: CtxCombine,
}

fn parse_gemv_rows(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= GEMV_ROWS_MAX => Ok(n),
        _ => Err(format!(
            "{s:?}: expected a number of rows from 0 to {GEMV_ROWS_MAX} (0 or 1: every pass of several tokens on the GEMM)"
        )),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

impl GpuArgs {
    /// The options set to other than their defaults.
    fn changed(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.split_inputs != SplitInputsChoice::default() {
            set.push("--split-inputs");
        }
        if self.split_lo != SplitLoChoice::default() {
            set.push("--split-lo");
        }
        if !self.overlap {
            set.push("--overlap");
        }
        if self.stream_k != StreamK::Off {
            set.push("--stream-k");
        }
        if !self.swapped_tiles {
            set.push("--swapped-tiles");
        }
        if !self.gemm_tiles.is_auto() {
            set.push("--gemm-tiles");
        }
        if self.gemv_rows != DEFAULT_GEMV_ROWS {
            set.push("--gemv-rows");
        }
        if self.ctx_combine != CtxCombine::default() {
            set.push("--ctx-combine");
        }
        set
    }

    /// On the CPU backend the GPU options do nothing: says so on stderr where one was set
    /// to other than its default, rather than ignore it silently.
    pub fn note_unused_on_cpu(&self) {
        let set = self.changed();
        if !set.is_empty() {
            eprintln!(
                "note: {} set the GPU backend's prefill and launches; this run is on the CPU, which ignores them",
                set.join(", ")
            );
        }
    }

    /// Uploads `model` to `gpu` and sets these options on it (`apply`): what every command
    /// that runs a loaded model on the GPU does first.
    pub fn upload(
        self,
        gpu: &greta_hal::Gpu,
        model: &greta_model::llama::Llama,
    ) -> anyhow::Result<GpuLlama> {
        let mut on_gpu = GpuLlama::load(gpu, model.config.clone(), &model.weights, &mut |_, _| {})?;
        self.apply(&mut on_gpu)?;
        Ok(on_gpu)
    }

    /// Sets the options on a loaded model (FP8 low halves make their weight copies here,
    /// and a split product that cannot take one is named on stderr, as is `auto` keeping
    /// f16 for want of memory). Returns where the prefill's policy came from.
    pub fn apply(self, model: &mut GpuLlama) -> anyhow::Result<SplitOrigin> {
        let (split, origin) = self.resolve_split_inputs(model)?;
        model.split_inputs = split;
        model.kernels.overlap = self.overlap;
        model.kernels.set_stream_k(&model.gpu, self.stream_k)?;
        model.kernels.set_swapped_tiles(self.swapped_tiles);
        model.gemm_tiles = self.gemm_tiles;
        model.set_gemv_rows(self.gemv_rows)?;
        model.ctx_combine = self.ctx_combine;
        let lo = match self.split_lo {
            SplitLoChoice::Set(lo) => lo,
            SplitLoChoice::Auto => {
                let auto = model.auto_split_lo()?;
                if let AutoLo::Memory { bytes, free } = auto {
                    eprintln!(
                        "note: --split-lo auto: f16 low halves, since the FP8 weight copies ({:.2} GB) would take more than a quarter of the device's free memory ({:.2} GB)",
                        bytes as f64 / 1e9,
                        free as f64 / 1e9
                    );
                }
                auto.split_lo()
            }
        };
        model.set_split_lo(lo)?;
        let asked = SplitLo {
            fp8: lo.fp8.and(split),
            sparse: lo.sparse.and(lo.fp8).and(split),
        };
        // Said for an explicit choice only: `auto` means whatever products can take FP8.
        if model.split_lo() != asked && self.split_lo != SplitLoChoice::Auto {
            eprintln!(
                "note: --split-lo {}: FP8 low halves for {} of the split products ({}); the others keep f16 (the LM head has no FP8 copy; FP8 rows need a multiple of 16 bytes)",
                self.split_lo,
                model.split_lo(),
                split
            );
        }
        Ok(origin)
    }

    /// The policy `--split-inputs` names, or for `auto` the one `auto_split_inputs` finds.
    fn resolve_split_inputs(self, model: &GpuLlama) -> anyhow::Result<(SplitInputs, SplitOrigin)> {
        match self.split_inputs {
            SplitInputsChoice::Set(split) => Ok((split, SplitOrigin::Given)),
            SplitInputsChoice::Auto => auto_split_inputs(model),
        }
    }
}

/// `--split-inputs auto`: the policy `greta calibrate` chose for these weights on this
/// kernel target and build (said on stderr), else the default (said where a calibration
/// exists but is not used).
fn auto_split_inputs(model: &GpuLlama) -> anyhow::Result<(SplitInputs, SplitOrigin)> {
    let default = SplitInputs::default();
    let dir = greta_model::default_model::cache_dir();
    let (profile, path) = match calibrate::lookup(
        &dir,
        model.weights_id,
        model.kernels.target,
        BUILD,
    )? {
        Lookup::Absent(_) => return Ok((default, SplitOrigin::Default)),
        Lookup::Stale { path, build } => {
            eprintln!(
                "note: --split-inputs auto: {} was calibrated by greta {build}, this is {BUILD} (its kernels may round otherwise), so the default {default}; run `greta calibrate` again",
                path.display()
            );
            return Ok((default, SplitOrigin::Default));
        }
        Lookup::Found(profile, path) => (profile, path),
    };
    let Some((split, rung)) = profile.chosen().map_err(anyhow::Error::msg)? else {
        eprintln!(
            "note: --split-inputs auto: the calibration of these weights ({}) passed no policy with margin, so the default {default}",
            path.display()
        );
        return Ok((default, SplitOrigin::Default));
    };
    eprintln!(
        "numerics: --split-inputs auto: {split}, as `greta calibrate` chose for these weights (worst stage {:.2} of the audit's tolerance on its prompts; {})",
        rung.worst_fraction.unwrap_or(f64::NAN),
        path.display()
    );
    Ok((split, SplitOrigin::Calibrated(path)))
}

/// The greta build a calibration belongs to (git revision, `-dirty` for a changed tree).
pub const BUILD: &str = env!("GRETA_GIT_REV");

/// Where a run's `--split-inputs` policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitOrigin {
    /// Named on the command line.
    Given,
    /// `auto` without a usable calibration: `SplitInputs::default()`.
    Default,
    /// `auto` with the calibration at this path.
    Calibrated(PathBuf),
}

impl std::fmt::Display for SplitOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitOrigin::Given => f.write_str("given"),
            SplitOrigin::Default => f.write_str("default (auto, no calibration used)"),
            SplitOrigin::Calibrated(p) => write!(f, "calibrated ({})", p.display()),
        }
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

    /// The GPU options as `greta ARGS` parses them, or clap's message.
    fn parse(args: &[&str]) -> Result<GpuArgs, String> {
        Cli::try_parse_from(std::iter::once("greta").chain(args.iter().copied()))
            .map(|c| c.gpu)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn overlap_takes_on_or_off_and_defaults_to_on() {
        let parse = |args: &[&str]| parse(args).map(|g| g.overlap);
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
    fn the_options_a_cpu_run_ignores_are_named() {
        let changed = |args: &[&str]| parse(args).unwrap().changed();
        assert!(changed(&[]).is_empty());
        assert!(changed(&["--split-lo", "auto", "--overlap", "on"]).is_empty());
        assert!(changed(&["--split-inputs", "auto"]).is_empty());
        assert_eq!(
            changed(&[
                "--split-lo",
                "fp8",
                "--split-inputs",
                "all",
                "--overlap",
                "off"
            ]),
            ["--split-inputs", "--split-lo", "--overlap"]
        );
    }

    #[test]
    fn split_lo_takes_auto_f16_or_fp8_and_defaults_to_auto() {
        let parse = |args: &[&str]| parse(args).map(|g| g.split_lo);
        let set = |lo| Ok(SplitLoChoice::Set(lo));
        assert_eq!(parse(&[]), Ok(SplitLoChoice::Auto));
        assert_eq!(parse(&["--split-lo", "auto"]), Ok(SplitLoChoice::Auto));
        assert_eq!(parse(&["--split-lo", "fp8"]), set(SplitLo::FP8));
        assert_eq!(parse(&["--split-lo", "f16"]), set(SplitLo::F16));
        let Ok(SplitLoChoice::Set(some)) = parse(&["--split-lo", "fp8:qkv,down"]) else {
            panic!("fp8:qkv,down is a set of products");
        };
        assert!(some.fp8.q && some.fp8.kv && some.fp8.down && !some.fp8.o && !some.fp8.gate_up);
        assert_eq!(some.to_string(), "fp8:qkv,down");
        let err = parse(&["--split-lo", "e4m3"]).unwrap_err();
        assert!(
            err.contains("accepted: auto, f16, fp8, or fp8:LIST"),
            "{err}"
        );
        let err = parse(&["--split-lo", "fp8:ffn"]).unwrap_err();
        assert!(err.contains("\"ffn\" is not a product"), "{err}");
        // Sparse low halves: gate/up's, on an FP8 low half; printed back as parsed.
        let Ok(SplitLoChoice::Set(sp)) = parse(&["--split-lo", "fp8+sparse:gate_up"]) else {
            panic!("fp8+sparse:gate_up is a policy");
        };
        assert_eq!(sp.fp8, SplitLo::FP8.fp8);
        assert!(sp.sparse.gate_up && !sp.sparse.down && !sp.sparse.q);
        assert_eq!(sp.to_string(), "fp8+sparse:gate_up");
        let Ok(SplitLoChoice::Set(sp)) = parse(&["--split-lo", "fp8:o,gate_up+sparse:gate_up"])
        else {
            panic!("fp8:o,gate_up+sparse:gate_up is a policy");
        };
        assert_eq!(sp.to_string(), "fp8:o,gate_up+sparse:gate_up");
        for (bad, why) in [
            ("fp8+sparse:down", "for gate_up only"),
            ("fp8+sparse:qkv,gate_up", "for gate_up only"),
            ("fp8:o,down+sparse:gate_up", "must have FP8 low halves too"),
            ("f16+sparse:gate_up", "must have FP8 low halves too"),
            ("fp8+sparse:ffn", "\"ffn\" is not a product"),
        ] {
            let err = parse(&["--split-lo", bad]).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
