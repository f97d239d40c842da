//! The Llama forward pass on a GPU, through hiprt and the compiled kernels. The same stages
//! as the CPU pass, reported to the same `StageObserver` (rows are copied to the host only
//! for the stages an observer wants). Weights and the KV cache are f16; activations,
//! norms, softmax and the residual stream f32.
//!
//! Decode is graph-capturable: every buffer is allocated once, positions and the next token
//! id live in device memory (`pos`, `ids`), the argmax runs on the device, and a step ends by
//! advancing `pos` on the device. `GpuLlama::decode_enqueue` captures one step for each
//! count of the decode attention's splits (its grid follows the position) and replays it;
//! each replay decodes the token the previous step chose.
//!
//! The files, in the order a pass meets them: `load` (the weights onto the device), `state`
//! (a sequence's buffers), `stages` (one pass, stage by stage), `products` and `attention`
//! (the launches the stages make), `run` (forward, prefill and decode steps, graphs).

use std::borrow::Cow;

use greta_hal::allocator::{AllocStats, CachingAllocator, Pooled};
use greta_kernels::gpu::{
    check_attention_shape, decode_splits, AttnScratch, AttnShape, CtxCombine, CtxSplits,
    DeviceSampling, E4m3Matrix, F16Operands, GemmLo, GemmOut, GemmRoute, GemmWeights, GpuKernels,
    KernelError, KvCacheOut, LoOperand, MatShape, NormIn, PickAt, QRope, QkvRope, Rows, SparseLo8,
    SwigluLo, SwigluOut, WgmmaTile, GEMV_ROWS_MAX, NORM_SPLIT_MAX_D, PICK_NAN,
};
use greta_trace::{Pass, Point, StageAt, StageObserver};
use half::f16;
use hiprt::{DeviceBuffer, Event, Gpu, GraphExec, HipError, Stream};

use super::config::{LlamaConfig, RopeStyle};
use super::forward::Logits;
use super::weights::{LlamaWeights, Matrix, Storage};
use crate::io::quant::GgmlType;

mod ahead;
mod attention;
mod gemm_tiles;
mod load;
mod numerics;
mod products;
mod run;
mod stages;
mod state;
mod weights_id;

pub use ahead::*;
pub use gemm_tiles::*;
pub use load::f16_bits;
pub use numerics::*;
pub use state::{GpuState, TokenPick};
pub use weights_id::*;

use products::{Lin, ProjectIn};
use stages::observe;
use state::read_pick;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(transparent)]
    Runtime(#[from] HipError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("tensor {name:?}: value {value} does not fit in f16 (the GPU stores weights as f16)")]
    F16Overflow { name: String, value: f32 },
    #[error(
        "the KV cache holds {capacity} positions; {used} are used and {requested} more were requested \\
         (raise --ctx, up to the model's context, or shorten the prompt)"
    )]
    KvCacheFull {
        capacity: usize,
        used: usize,
        requested: usize,
    },
    #[error("at most {max} tokens per forward pass on the GPU; {requested} were given")]
    TooManyRows { max: usize, requested: usize },
    #[error("token id {id} at index {index} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, index: usize, vocab: usize },
    #[error("cannot rewind a sequence of {len} positions to {requested}")]
    Rewind { len: usize, requested: usize },
    #[error("a decode run of {steps} steps was asked for step {}", steps + 1)]
    AheadExhausted { steps: usize },
    #[error("--split-lo fp8 needs Hopper's FP8 matrix units (an sm_90a device); this GPU has none: use --split-lo f16")]
    NoFp8,
    #[error("this state has no room for 2:4-sparse low halves: it was made before `--split-lo ...+sparse:gate_up` was set (make the state after set_split_lo)")]
    NoSparseLo,
    #[error(
        "the logits at position {position} contain NaN, so no token can be picked from them \
         (found by the device's pick); `greta audit backend --against cpu` names the stage \
         where the NaN first appears"
    )]
    NanLogits { position: usize },
    #[error("--gemv-rows {requested}: the GEMVs take at most {max} rows of input (0 or 1: every prefill of several rows on the GEMM)")]
    GemvRows { requested: usize, max: usize },
}

type Result<T> = std::result::Result<T, GpuError>;

struct GpuLayer {
    attn_norm: DeviceBuffer<f32>,
    wq: DeviceBuffer<u16>,
    wk: DeviceBuffer<u16>,
    wv: DeviceBuffer<u16>,
    wo: DeviceBuffer<u16>,
    ffn_norm: DeviceBuffer<f32>,
    w_gate: DeviceBuffer<u16>,
    w_up: DeviceBuffer<u16>,
    w_down: DeviceBuffer<u16>,
    /// FP8 copies of the weights whose lo products run on the FP8 matrix units
    /// (`SplitLo::Fp8`; none otherwise), made with the first state after `set_split_lo`
    /// (`make_fp8_copies`).
    fp8: std::sync::OnceLock<LayerFp8>,
}

impl GpuLayer {
    /// The layer's FP8 copies, or none where none are made (yet).
    fn fp8(&self) -> &LayerFp8 {
        self.fp8.get().unwrap_or(&NO_FP8)
    }
}

/// A layer without FP8 copies.
static NO_FP8: LayerFp8 = LayerFp8 {
    q: None,
    k: None,
    v: None,
    o: None,
    gate: None,
    up: None,
    down: None,
};

/// A layer's FP8 weight copies, by product (made by `GpuLlama::make_fp8_copies`).
struct LayerFp8 {
    q: Option<E4m3Matrix>,
    k: Option<E4m3Matrix>,
    v: Option<E4m3Matrix>,
    o: Option<E4m3Matrix>,
    gate: Option<E4m3Matrix>,
    up: Option<E4m3Matrix>,
    down: Option<E4m3Matrix>,
}

pub struct GpuLlama {
    pub gpu: Gpu,
    /// Which prefill products read hi + lo (see `SplitInputs`).
    pub split_inputs: SplitInputs,
    /// Warpgroup GEMM tiles forced for a timing study (`GemmTiles`; none by default).
    pub gemm_tiles: GemmTiles,
    /// A pass of at most this many rows multiplies through the GEMVs (`set_gemv_rows`).
    gemv_rows: usize,
    /// Where a decode step combines the attention's splits (`CtxCombine`).
    pub ctx_combine: CtxCombine,
    /// The products whose low half is FP8 (`set_split_lo`).
    split_lo: SplitLo,
    /// The split and low halves the FP8 copies are to be made for (`make_fp8_copies`).
    fp8_request: Option<(SplitInputs, SplitLo)>,
    /// Where sequences' buffers come from (and go back to when a state is dropped).
    alloc: CachingAllocator,
    pub kernels: GpuKernels,
    pub config: LlamaConfig,
    token_embd: DeviceBuffer<u16>,
    layers: Vec<GpuLayer>,
    output_norm: DeviceBuffer<f32>,
    output: Option<DeviceBuffer<u16>>,
    inv_freq: DeviceBuffer<f32>,
    /// What the GPU computes with, as a hash of it (`WeightsId`): the key of the numerics
    /// calibration made for these weights (`crate::calibrate`).
    pub weights_id: WeightsId,
}

impl GpuLlama {
    /// Sets the most rows a pass multiplies through the GEMVs (`GpuKernels::gemv_rows`,
    /// `gate_up_silu_rows`) rather than the prefill GEMM: such a pass reads each weight
    /// once with f32 inputs, as decode does (so no input is split or rounded to f16 there,
    /// whatever `split_inputs` says). 0 or 1: only decode's single rows.
    pub fn set_gemv_rows(&mut self, rows: usize) -> Result<()> {
        if rows > GEMV_ROWS_MAX {
            return Err(GpuError::GemvRows {
                requested: rows,
                max: GEMV_ROWS_MAX,
            });
        }
        self.gemv_rows = rows.max(1);
        Ok(())
    }

    /// The most rows a pass multiplies through the GEMVs (`set_gemv_rows`).
    pub fn gemv_rows(&self) -> usize {
        self.gemv_rows
    }

    /// Whether a pass of `t` rows multiplies through the GEMVs rather than the GEMM (one
    /// row always does): the one rule the forward pass's products and the bench's report
    /// follow.
    pub fn on_gemvs(&self, t: usize) -> bool {
        t <= self.gemv_rows
    }

    /// The low halves' format for the products `split_inputs` splits (set that first): FP8
    /// asks for FP8 copies of those products' weights (two launches each: +1 byte a
    /// weight, +3.6 GB for Llama-2-7B's Q/K/V, output and down), made with the next state
    /// (`make_fp8_copies`); f16 frees them. Refused
    /// where the device has no FP8 route. `split_lo()` then says which products got FP8:
    /// those both sets name, less the LM head (no FP8 copy) and any whose rows are not a
    /// multiple of 16 bytes of FP8 (the TMA's rows), which keep f16 low halves.
    pub fn set_split_lo(&mut self, lo: SplitLo) -> Result<()> {
        if lo != SplitLo::F16 && !self.kernels.has_fp8_lo() {
            return Err(GpuError::NoFp8);
        }
        let (c, split) = (&self.config, self.split_inputs);
        let has = |which: Lin| fp8_copy_shape(c, split, lo, which).is_some();
        self.split_lo = SplitLo {
            fp8: SplitInputs {
                q: has(Lin::Q),
                kv: has(Lin::K),
                o: has(Lin::O),
                gate_up: has(Lin::Gate),
                down: has(Lin::Down),
                head: false,
            },
            sparse: SplitInputs {
                gate_up: lo.sparse.gate_up && has(Lin::Gate),
                ..SplitInputs::NONE
            },
        };
        for l in &mut self.layers {
            l.fp8 = std::sync::OnceLock::new();
        }
        self.fp8_request = (self.split_lo.fp8 != SplitInputs::NONE).then_some((split, lo));
        Ok(())
    }

    /// Makes the FP8 copies `set_split_lo` asked for, once: with the first state made after
    /// it (`new_state`), so that they are allocated after that state's buffers rather than
    /// between the weights and them. Where the decode state lands moved SmolLM2's decode
    /// by up to 1.7 % on an H100 (docs/performance.md, session 63), and after the weights
    /// was the faster place on every machine measured; made here, the default decoded
    /// 1.0 % faster, level with no copies at all (session 64). The copies are made before
    /// any pass can read them (`forward` asks again).
    fn make_fp8_copies(&self) -> Result<()> {
        let Some((split, lo)) = self.fp8_request else {
            return Ok(());
        };
        if self.layers.first().is_none_or(|l| l.fp8.get().is_some()) {
            return Ok(());
        }
        let (c, gpu, k) = (&self.config, &self.gpu, &self.kernels);
        let s = gpu.stream()?;
        let copy = |which: Lin, w: &DeviceBuffer<u16>| -> Result<Option<E4m3Matrix>> {
            let Some((rows, cols)) = fp8_copy_shape(c, split, lo, which) else {
                return Ok(None);
            };
            let mut m = E4m3Matrix::alloc(gpu, rows, cols)?;
            k.quantize_e4m3(&s, w, &mut m, rows, cols)?;
            Ok(Some(m))
        };
        let mut made = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            made.push(LayerFp8 {
                q: copy(Lin::Q, &l.wq)?,
                k: copy(Lin::K, &l.wk)?,
                v: copy(Lin::V, &l.wv)?,
                o: copy(Lin::O, &l.wo)?,
                gate: copy(Lin::Gate, &l.w_gate)?,
                up: copy(Lin::Up, &l.w_up)?,
                down: copy(Lin::Down, &l.w_down)?,
            });
        }
        s.synchronize()?;
        for (l, m) in self.layers.iter().zip(made) {
            // Another thread's copies, made at the same time, are the same values.
            let _ = l.fp8.set(m);
        }
        Ok(())
    }

    /// What `--split-lo auto` takes on this device for this model and its `split_inputs`:
    /// FP8 low halves where the device has the units and the copies fit in a quarter of the
    /// free memory; f16 otherwise.
    pub fn auto_split_lo(&self) -> Result<AutoLo> {
        let units = self.kernels.has_fp8_lo();
        let free = match units {
            true => self.gpu.free_memory()?,
            false => 0,
        };
        Ok(AutoLo::choose(units, &self.config, self.split_inputs, free))
    }

    /// The products whose low half is FP8 (see `set_split_lo`).
    pub fn split_lo(&self) -> SplitLo {
        self.split_lo
    }

    /// What the model's caching allocator has done (a dropped state gives its blocks back,
    /// and the next state of the same shape reuses them).
    pub fn alloc_stats(&self) -> AllocStats {
        self.alloc.stats()
    }
}

/// `GpuLlama::set_gemv_rows`'s default: the most rows of a pass that take the GEMVs.
/// Measured on an H200 (session 58, docs/performance.md): the 7B's prefill of 2 / 3 / 4
/// tokens 4.96 / 5.35 / 6.21 ms on the GEMVs against 8.73 / 8.73 / 8.69 on the GEMM under
/// the default numerics (6.18 / 6.16 / 6.28 under `none`), SmolLM2's 1.17-1.23 against
/// 1.51-1.53; from 6 rows on the GEMVs are the slower (7B: 9.9 ms at 6, 11.6 at 8), their
/// loads of x from L2 growing with the rows while the GEMM's time stays level.
pub const DEFAULT_GEMV_ROWS: usize = 4;
