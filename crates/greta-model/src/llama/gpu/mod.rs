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
mod gemm_tiles;
mod numerics;
mod weights_id;

pub use ahead::*;
pub use gemm_tiles::*;
pub use numerics::*;
pub use weights_id::*;

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
    /// (`SplitLo::Fp8`; none otherwise).
    fp8: LayerFp8,
}

/// A layer's FP8 weight copies, by product (made by `GpuLlama::set_split_lo`).
#[derive(Default)]
struct LayerFp8 {
    q: Option<E4m3Matrix>,
    k: Option<E4m3Matrix>,
    v: Option<E4m3Matrix>,
    o: Option<E4m3Matrix>,
    gate: Option<E4m3Matrix>,
    up: Option<E4m3Matrix>,
    down: Option<E4m3Matrix>,
}

impl LayerFp8 {
    fn get(&self, which: Lin) -> Option<&E4m3Matrix> {
        match which {
            Lin::Q => self.q.as_ref(),
            Lin::K => self.k.as_ref(),
            Lin::V => self.v.as_ref(),
            Lin::O => self.o.as_ref(),
            Lin::Gate => self.gate.as_ref(),
            Lin::Up => self.up.as_ref(),
            Lin::Down => self.down.as_ref(),
            Lin::Head => None,
        }
    }
}

/// The input of a decode product with the residual add (`project_add`).
#[derive(Clone, Copy)]
enum ProjectIn {
    /// The output projection's: the attention context.
    Ctx,
    /// The output projection's, combined from the partials the decode attention over
    /// `keys` positions left in the scratch (`ctx_in_product`).
    CtxSplits { keys: usize },
    /// The down projection's: SwiGLU's output.
    Act,
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

fn to_f16(name: &str, v: &[f32]) -> Result<Vec<u16>> {
    v.iter()
        .map(|&x| {
            let h = f16::from_f32(x);
            if h.is_infinite() && x.is_finite() {
                return Err(GpuError::F16Overflow {
                    name: name.to_string(),
                    value: x,
                });
            }
            Ok(h.to_bits())
        })
        .collect()
}

fn upload<T: Copy>(gpu: &Gpu, s: &Stream, v: &[T]) -> Result<DeviceBuffer<T>> {
    let mut b = gpu.alloc::<T>(v.len())?;
    b.copy_from_host(v, s)?;
    Ok(b)
}

/// A matrix as the GPU stores it: f16 bits, widened from its file type where it is not f16
/// already (an f16 overflow is an error, not an inf). An f16 file's bytes are those bits
/// already on a little-endian host and are borrowed, not copied (a 7B's 13 GB copied a
/// value at a time took ~10 s of its load).
pub fn f16_bits<'a>(name: &str, m: &'a Matrix) -> Result<Cow<'a, [u16]>> {
    if let Storage::Blocks {
        ty: GgmlType::F16,
        bytes,
    } = &m.storage
    {
        if cfg!(target_endian = "little") {
            if let Ok(bits) = bytemuck::try_cast_slice::<u8, u16>(bytes) {
                return Ok(Cow::Borrowed(bits));
            }
        }
        return Ok(Cow::Owned(
            bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect(),
        ));
    }
    let mut f = vec![0f32; m.rows * m.cols];
    m.view().rows_f32(0, m.cols, &mut f);
    to_f16(name, &f).map(Cow::Owned)
}

fn upload_matrix(
    gpu: &Gpu,
    s: &Stream,
    id: &mut WeightsHasher,
    name: &str,
    m: &Matrix,
) -> Result<DeviceBuffer<u16>> {
    let bits = f16_bits(name, m)?;
    id.u16s(&bits);
    upload(gpu, s, &bits)
}

fn upload_f32(
    gpu: &Gpu,
    s: &Stream,
    id: &mut WeightsHasher,
    v: &[f32],
) -> Result<DeviceBuffer<f32>> {
    id.f32s(v);
    upload(gpu, s, v)
}

impl GpuLlama {
    /// Loads the kernels for `gpu` (from `greta_kernels::gpu::default_dir()`) and uploads the
    /// model: what every front end does.
    pub fn load(
        gpu: &Gpu,
        config: LlamaConfig,
        w: &LlamaWeights,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let kernels = GpuKernels::load(gpu, &greta_kernels::gpu::default_dir())?;
        Self::upload(gpu.clone(), kernels, config, w, progress)
    }

    /// Uploads the model: matrices widened from their file type and stored as f16 (an f16
    /// overflow is an error, not an inf), norms as f32.
    pub fn upload(
        gpu: Gpu,
        kernels: GpuKernels,
        config: LlamaConfig,
        w: &LlamaWeights,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        check_attention_shape(config.n_heads, config.n_kv_heads, config.head_dim)?;
        let s = gpu.stream()?;
        let total = w.layers.len() + 2;
        // Hashed in upload order, which is fixed: the same weights give the same id.
        let mut id = WeightsHasher::new(&config);
        let token_embd = upload_matrix(&gpu, &s, &mut id, "token_embd", &w.token_embd)?;
        progress(1, total);
        let mut layers = Vec::with_capacity(w.layers.len());
        for (i, l) in w.layers.iter().enumerate() {
            let mut m = |n: &str, m: &Matrix| {
                upload_matrix(&gpu, &s, &mut id, &format!("layer {i} {n}"), m)
            };
            let (wq, wk, wv, wo) = (
                m("q", &l.wq)?,
                m("k", &l.wk)?,
                m("v", &l.wv)?,
                m("o", &l.wo)?,
            );
            let (w_gate, w_up, w_down) = (
                m("gate", &l.w_gate)?,
                m("up", &l.w_up)?,
                m("down", &l.w_down)?,
            );
            layers.push(GpuLayer {
                attn_norm: upload_f32(&gpu, &s, &mut id, &l.attn_norm)?,
                wq,
                wk,
                wv,
                wo,
                ffn_norm: upload_f32(&gpu, &s, &mut id, &l.ffn_norm)?,
                w_gate,
                w_up,
                w_down,
                fp8: LayerFp8::default(),
            });
            progress(i + 2, total);
        }
        let output = match &w.output {
            Some(o) => Some(upload_matrix(&gpu, &s, &mut id, "output", o)?),
            None => None,
        };
        let inv_freq = upload_f32(
            &gpu,
            &s,
            &mut id,
            &config.rope_inv_freq(w.rope_freq_factors.as_deref()),
        )?;
        let output_norm = upload_f32(&gpu, &s, &mut id, &w.output_norm)?;
        progress(total, total);
        Ok(GpuLlama {
            weights_id: id.finish(),
            split_inputs: SplitInputs::default(),
            gemm_tiles: GemmTiles::default(),
            gemv_rows: DEFAULT_GEMV_ROWS,
            ctx_combine: CtxCombine::default(),
            split_lo: SplitLo::F16,
            alloc: CachingAllocator::new(gpu.clone()),
            gpu,
            kernels,
            config,
            token_embd,
            layers,
            output_norm,
            output,
            inv_freq,
        })
    }

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
    /// makes FP8 copies of those products' weights here (two launches each: +1 byte a
    /// weight, +3.6 GB for Llama-2-7B's Q/K/V, output and down), f16 frees them. Refused
    /// where the device has no FP8 route. `split_lo()` then says which products got FP8:
    /// those both sets name, less the LM head (no FP8 copy) and any whose rows are not a
    /// multiple of 16 bytes of FP8 (the TMA's rows), which keep f16 low halves.
    pub fn set_split_lo(&mut self, lo: SplitLo) -> Result<()> {
        if lo != SplitLo::F16 && !self.kernels.has_fp8_lo() {
            return Err(GpuError::NoFp8);
        }
        let (c, split) = (&self.config, self.split_inputs);
        let s = self.gpu.stream()?;
        for l in &mut self.layers {
            l.fp8 = LayerFp8::default();
            let (gpu, k) = (&self.gpu, &self.kernels);
            let copy = |which: Lin, w: &DeviceBuffer<u16>| -> Result<Option<E4m3Matrix>> {
                let Some((rows, cols)) = fp8_copy_shape(c, split, lo, which) else {
                    return Ok(None);
                };
                let mut m = E4m3Matrix::alloc(gpu, rows, cols)?;
                k.quantize_e4m3(&s, w, &mut m, rows, cols)?;
                Ok(Some(m))
            };
            l.fp8 = LayerFp8 {
                q: copy(Lin::Q, &l.wq)?,
                k: copy(Lin::K, &l.wk)?,
                v: copy(Lin::V, &l.wv)?,
                o: copy(Lin::O, &l.wo)?,
                gate: copy(Lin::Gate, &l.w_gate)?,
                up: copy(Lin::Up, &l.w_up)?,
                down: copy(Lin::Down, &l.w_down)?,
            };
        }
        s.synchronize()?;
        let has = |which: Lin| self.layers.first().and_then(|l| l.fp8.get(which)).is_some();
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

    /// Buffers for up to `max_rows` tokens per pass and a KV cache of `capacity` positions.
    pub fn new_state(&self, capacity: usize, max_rows: usize) -> Result<GpuState> {
        let c = &self.config;
        let g = &self.gpu;
        let kv_row = c.n_kv_heads * c.head_dim;
        let q_row = c.n_heads * c.head_dim;
        let r = max_rows.max(1);
        let pool = &self.alloc;
        let alloc = |n: usize| pool.alloc::<f32>(n);
        let mut pos = pool.alloc::<u32>(1)?;
        let stream = g.stream()?;
        pos.write(0, &[0], &stream)?;
        Ok(GpuState {
            capacity,
            max_rows: r,
            len: 0,
            k_cache: (0..c.n_layers)
                .map(|_| pool.alloc::<u16>(capacity * kv_row))
                .collect::<std::result::Result<_, _>>()?,
            v_cache: (0..c.n_layers)
                .map(|_| pool.alloc::<u16>(capacity * kv_row))
                .collect::<std::result::Result<_, _>>()?,
            pos,
            ids: pool.alloc::<u32>(r)?,
            x: alloc(r * c.hidden)?,
            normed: alloc(r * c.hidden)?,
            q: alloc(r * q_row)?,
            k: alloc(r * kv_row)?,
            v: alloc(r * kv_row)?,
            ctx: alloc(r * q_row)?,
            proj: alloc(r * c.hidden)?,
            gate: alloc(r * c.intermediate)?,
            up: alloc(r * c.intermediate)?,
            act: alloc(r * c.intermediate)?,
            operands: {
                let widest = c.hidden.max(q_row).max(c.intermediate);
                OperandBufs {
                    hi: pool.alloc::<u16>(r * widest)?,
                    lo: pool.alloc::<u16>(r * widest)?,
                    lo8: pool.alloc::<u8>(r * widest)?,
                    sparse: None,
                }
            },
            ffn_operands: OperandBufs {
                hi: pool.alloc::<u16>(r * c.hidden)?,
                lo: pool.alloc::<u16>(r * c.hidden)?,
                lo8: pool.alloc::<u8>(r * c.hidden)?,
                // Made where the policy asks for it (`SplitLo::sparse`; 1.3 MB for
                // Llama-2-7B at 512 rows), outside the pool.
                sparse: match self.split_lo.sparse.gate_up {
                    true => Some(SparseLo8::alloc(g, &stream, r, c.hidden)?),
                    false => None,
                },
            },
            attn_scratch: AttnScratch::new(g, c.n_heads, c.head_dim, capacity)?,
            rng: pool.alloc::<u64>(1)?,
            pick: TokenPick::Argmax,
            history: pool.alloc::<u32>(capacity + 1)?,
            reads: g.stream()?,
            last: alloc(c.hidden)?,
            q_rot: alloc(q_row)?,
            k_rot: alloc(kv_row)?,
            rope_angles: alloc(r * c.head_dim)?,
            logits: alloc(r * c.vocab_size)?,
            stream,
            graphs: Vec::new(),
        })
    }
}

/// A prefill product's input as f16 for the matrix units: hi, and lo where it needs it (f16,
/// or FP8).
struct OperandBufs {
    hi: Pooled<u16>,
    lo: Pooled<u16>,
    lo8: Pooled<u8>,
    /// The 2:4-sparse FP8 low half, where the policy has one for these operands' products.
    sparse: Option<SparseLo8>,
}

impl OperandBufs {
    /// Makes x's operands (`rows` rows) of the form `lo` here: `split_f16`, or
    /// `split_f16_lo8` for an FP8 low half. For a product whose input's writer did not make
    /// them (`GpuLlama::products`, `gate_up_swiglu`).
    fn make(
        &mut self,
        k: &GpuKernels,
        s: &Stream,
        x: &DeviceBuffer<f32>,
        lo: LoKind,
        rows: Rows,
    ) -> Result<()> {
        match lo {
            LoKind::Fp8 => k.split_f16_lo8(s, x, &mut self.hi, &mut self.lo8, rows)?,
            LoKind::Fp8Sparse => {
                let sparse = self.sparse.as_mut().ok_or(GpuError::NoSparseLo)?;
                k.split_f16_lo8s(s, x, &mut self.hi, sparse, rows)?
            }
            _ => k.split_f16(
                s,
                x,
                &mut self.hi,
                (lo == LoKind::F16).then_some(&mut *self.lo),
                rows.rows * rows.len,
            )?,
        }
        Ok(())
    }

    /// The buffers a writer of operands with a low half of `lo` fills.
    fn get(&mut self, lo: LoKind) -> Result<F16Operands<'_>> {
        Ok(F16Operands {
            hi: &mut self.hi,
            lo: match lo {
                LoKind::None => None,
                LoKind::F16 => Some(LoOperand::F16(&mut self.lo)),
                LoKind::Fp8 => Some(LoOperand::Fp8(&mut self.lo8)),
                LoKind::Fp8Sparse => Some(LoOperand::Fp8Sparse(
                    self.sparse.as_mut().ok_or(GpuError::NoSparseLo)?,
                )),
            },
        })
    }

    /// The low half a product reads, for operands of the form `lo` (none: hi alone).
    fn gemm_lo(&self, lo: LoKind) -> Result<Option<GemmLo<'_>>> {
        Ok(match lo {
            LoKind::None => None,
            LoKind::F16 => Some(GemmLo::F16(&self.lo)),
            LoKind::Fp8 => Some(GemmLo::Fp8(&self.lo8)),
            LoKind::Fp8Sparse => Some(GemmLo::Fp8Sparse(
                self.sparse.as_ref().ok_or(GpuError::NoSparseLo)?,
            )),
        })
    }
}

/// Everything a sequence needs on the device, allocated once (pointer-stable for graphs).
pub struct GpuState {
    capacity: usize,
    max_rows: usize,
    /// Host mirror of the device position.
    len: usize,
    k_cache: Vec<Pooled<u16>>,
    v_cache: Vec<Pooled<u16>>,
    pos: Pooled<u32>,
    /// Token ids of the pass; `ids[0]` is where the device argmax writes the next token.
    ids: Pooled<u32>,
    x: Pooled<f32>,
    normed: Pooled<f32>,
    q: Pooled<f32>,
    k: Pooled<f32>,
    v: Pooled<f32>,
    ctx: Pooled<f32>,
    proj: Pooled<f32>,
    gate: Pooled<f32>,
    up: Pooled<f32>,
    act: Pooled<f32>,
    /// A prefill product's input as f16 for the matrix units (hi, and lo where it needs it):
    /// every product's but gate/up's, act's for the down product included.
    operands: OperandBufs,
    /// Gate/up's input operands (the FFN norm's): apart from `operands`, because the SwiGLU
    /// GEMM (`gemm_f16_swiglu`) reads them while it writes act's.
    ffn_operands: OperandBufs,
    attn_scratch: AttnScratch,
    /// The device sampler's generator state (splitmix64), seeded by `set_pick`.
    rng: Pooled<u64>,
    /// How a decode step picks its token on the device (captured into the graph).
    pick: TokenPick,
    /// Every picked token at the position it will take (capacity + 1 entries): the host
    /// reads step t's token here while step t + 1 runs (`DecodeAhead`).
    history: Pooled<u32>,
    /// The stream those reads go through (the main one is busy with the next step).
    reads: Stream,
    last: Pooled<f32>,
    /// One token's rotated q and k from the decode attention that does its own RoPE (the
    /// trace's QRope and KRope; `q` and `k` keep the products).
    q_rot: Pooled<f32>,
    k_rot: Pooled<f32>,
    /// The RoPE angles of a pass's rows (`rope_angles`), where the prefill attention rotates
    /// q itself (`rope_attend`).
    rope_angles: Pooled<f32>,
    logits: Pooled<f32>,
    pub stream: Stream,
    /// Captured decode steps, one per count of the decode attention's splits: its grid
    /// follows the position (`AttnShape::keys`), so a step at position p replays the graph
    /// captured for `decode_splits(p + 1)`, captured the first time a step needs it. The
    /// last `GRAPHS_KEPT` captured are kept (positions grow; a rewind may step back one).
    graphs: Vec<(usize, GraphExec)>,
}

impl GpuState {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The token the last pick wrote on the device (waits for the stream).
    pub fn picked(&self) -> Result<u32> {
        read_pick(&self.history, self.len, &self.stream)
    }

    /// Sets how the device picks tokens, seeding the sampler's generator. The captured decode
    /// graphs are dropped when the pick's launch changes (argmax against a draw, or other
    /// sampling settings: they are the kernel's arguments); a new seed alone keeps them (the
    /// generator's state is a buffer the graph reads).
    pub fn set_pick(&mut self, pick: TokenPick) -> Result<()> {
        if let TokenPick::Sample { cfg, seed } = pick {
            cfg.check()?;
            self.rng.write(0, &[seed], &self.stream)?;
        }
        if !pick.same_launch(&self.pick) {
            self.graphs.clear();
        }
        self.pick = pick;
        Ok(())
    }

    /// Goes back to `len` positions (`len <= self.len()`): the device position and the host's
    /// mirror; the cache entries past it are not used again until overwritten. Waits for the
    /// stream (a step still in flight would advance the position after the write).
    pub fn rewind(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(GpuError::Rewind {
                len: self.len,
                requested: len,
            });
        }
        self.stream.synchronize()?;
        self.pos.write(0, &[len as u32], &self.stream)?;
        self.len = len;
        Ok(())
    }

    /// Forgets the sequence (position 0, cache contents unused), keeping every buffer and the
    /// captured decode graphs: a graph reads the position from the device and is replayed at
    /// every position of its split count, in any sequence of this state.
    pub fn reset(&mut self) -> Result<()> {
        self.pos.write(0, &[0], &self.stream)?;
        self.len = 0;
        Ok(())
    }

    /// Device memory this state holds (KV cache, activations, scratch), in bytes.
    pub fn device_bytes(&self) -> usize {
        let f = |b: &Pooled<f32>| 4 * b.len();
        let kv: usize = self
            .k_cache
            .iter()
            .chain(&self.v_cache)
            .map(|b| 2 * b.len())
            .sum();
        kv + [
            &self.x,
            &self.normed,
            &self.q,
            &self.k,
            &self.v,
            &self.ctx,
            &self.proj,
            &self.gate,
            &self.up,
            &self.act,
            &self.last,
            &self.q_rot,
            &self.k_rot,
            &self.logits,
        ]
        .into_iter()
        .map(f)
        .sum::<usize>()
            + [&self.operands, &self.ffn_operands]
                .iter()
                .map(|o| 2 * (o.hi.len() + o.lo.len()) + o.lo8.len())
                .sum::<usize>()
            + self.attn_scratch.bytes()
    }
}

/// How the device picks the next token at the end of a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenPick {
    /// The largest logit (the first on ties).
    Argmax,
    /// A draw as the host sampler makes it, from the generator seeded with `seed`.
    Sample { cfg: DeviceSampling, seed: u64 },
}

impl TokenPick {
    /// Whether the two picks launch the same kernel with the same arguments (the seed is
    /// not one: it goes to the generator's buffer).
    fn same_launch(&self, other: &TokenPick) -> bool {
        match (self, other) {
            (TokenPick::Argmax, TokenPick::Argmax) => true,
            (TokenPick::Sample { cfg: a, .. }, TokenPick::Sample { cfg: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// Copies a stage's rows to the host for the observer and back (an injected fault changes
/// them). Returns whether the observer changed them: a fused kernel that already computed
/// later stages from the old values must then have them recomputed.
fn observe(
    obs: &mut dyn StageObserver,
    s: &Stream,
    at: StageAt,
    buf: &mut DeviceBuffer<f32>,
    rows: usize,
    row_len: usize,
) -> Result<bool> {
    if !obs.wants(at.point, at.layer) {
        return Ok(false);
    }
    let mut host = vec![0f32; rows * row_len];
    buf.read(0, &mut host, s)?;
    let before = host.clone();
    obs.observe(at, &mut host, row_len);
    if host
        .iter()
        .zip(&before)
        .any(|(a, b)| a.to_bits() != b.to_bits())
    {
        buf.write(0, &host, s)?;
        return Ok(true);
    }
    Ok(false)
}

/// A pass's rows: `t` tokens at positions `pos0..`, and whether the pass is a fused decode
/// step (`GpuLlama::decode_fused`).
#[derive(Clone, Copy)]
struct PassRows {
    t: usize,
    pos0: usize,
    fused: bool,
}

impl PassRows {
    /// Where a stage of the pass is reported.
    fn at(self, point: Point, layer: Option<usize>) -> StageAt {
        StageAt {
            point,
            layer,
            pos0: self.pos0,
        }
    }
}

/// What one block of a pass hands the next about `normed`, the norm the next block's first
/// products read.
struct NormFlow {
    /// `normed` is not yet the next norm of the current x: true after the embedding; after
    /// a layer's fused add + norm, only if an observer changed x.
    stale: bool,
    /// The f16 operands of `normed` for the next normed product group (Q/K/V or gate/up)
    /// are already made (`norm`); cleared when an observer changes `normed`.
    operands: bool,
}

impl GpuLlama {
    /// Whether the products of `first`'s group over `t` rows of `k` run on the matrix units
    /// (`gemm_f16`, from f16 operands of their input), and if so whether the input enters
    /// as hi + lo (`Lin::needs_lo`). Up to `gemv_rows` rows take the GEMVs, a k that is not
    /// a multiple of 8 the any-shape GEMM: neither reads operands.
    /// The low half is FP8 for the products `split_lo` names (those whose weights
    /// `set_split_lo` copied to FP8).
    fn f16_operands(&self, first: Lin, t: usize, k: usize) -> Option<LoKind> {
        (!self.on_gemvs(t) && k.is_multiple_of(8)).then(|| {
            match (
                first.group_needs_lo(self.split_inputs),
                first.group_lo_in(self.split_inputs, self.split_lo.fp8),
            ) {
                (false, _) => LoKind::None,
                (true, false) => LoKind::F16,
                (true, true)
                    if k.is_multiple_of(32)
                        && first.group_lo_in(self.split_inputs, self.split_lo.sparse) =>
                {
                    LoKind::Fp8Sparse
                }
                (true, true) => LoKind::Fp8,
            }
        })
    }

    /// The tile `--gemm-tiles` forces on the group whose first product is `lin` (gate/up's
    /// is a SwiGLU tile: where gate and up run as two products instead, the grouped GEMM
    /// takes the tile of that shape if it has one and otherwise refuses it by name, rather
    /// than the study timing a tile it did not ask for).
    fn forced_tile(&self, lin: Lin) -> Option<WgmmaTile> {
        let t = self.gemm_tiles;
        match lin {
            Lin::Q | Lin::K | Lin::V => t.qkv,
            Lin::O => t.o,
            Lin::Gate | Lin::Up => t.gate_up,
            Lin::Down => t.down,
            Lin::Head => None,
        }
    }

    /// The products that share one input (`group`: which, weights, output width), each
    /// `y = x · wᵀ` over `t` rows of `k`. One row: the GEMV; up to `gemv_rows` rows: the
    /// GEMVs over rows (one launch for the group). More: the input's f16
    /// operands for the matrix units (hi, plus lo where `Lin::needs_lo`) are made once —
    /// here by `split_f16`, unless `operands_ready` says the kernel that wrote the input
    /// made them (`norm`, `swiglu`) — then one `gemm_f16` computes the group (one launch
    /// on Hopper); a k that is not a multiple of 8 takes the any-shape GEMM (always hi + lo).
    fn products(
        &self,
        st: &mut GpuState,
        group: &[(Lin, &DeviceBuffer<u16>, Option<&E4m3Matrix>, usize)],
        t: usize,
        k: usize,
        operands_ready: bool,
    ) -> Result<()> {
        let kernels = &self.kernels;
        let Some(&(first, ..)) = group.first() else {
            return Ok(());
        };
        let io = st.product_io(first, group.iter().map(|&(which, ..)| which));
        let Some(lo) = self.f16_operands(first, t, k) else {
            if t > 1 && self.on_gemvs(t) {
                let products = group.iter().zip(io.ys).map(|(&(_, w, _, n), y)| (w, y, n));
                return Ok(kernels.gemv_rows(io.s, products.collect(), io.x, k, t)?);
            }
            for (&(_, w, _, n), y) in group.iter().zip(io.ys) {
                if t == 1 {
                    kernels.gemv(io.s, w, io.x, y, n, k)?;
                } else {
                    kernels.gemm(io.s, io.x, w, y, MatShape { t, k, n })?;
                }
            }
            return Ok(());
        };
        if !operands_ready {
            io.ops
                .make(kernels, io.s, io.x, lo, Rows { rows: t, len: k })?;
        }
        // The group's products that take the low half, and those that read hi alone where the
        // policy splits some of a group only (`--split-inputs kv`: Q apart from K and V), each
        // set in its own launch.
        let (mut split, mut plain): (Vec<GemmOut>, Vec<GemmOut>) = (Vec::new(), Vec::new());
        for (&(which, w, w8, n), y) in group.iter().zip(io.ys) {
            let out = GemmOut { w, w8, y, n };
            match lo != LoKind::None && !which.needs_lo(self.split_inputs) {
                true => plain.push(out),
                false => split.push(out),
            }
        }
        let gemm_lo = io.ops.gemm_lo(lo)?;
        let route = self
            .forced_tile(first)
            .map_or(GemmRoute::Auto, GemmRoute::WgmmaTile);
        if !split.is_empty() {
            kernels.gemm_f16(route, io.s, &io.ops.hi, gemm_lo, &mut split, t, k)?;
        }
        if !plain.is_empty() {
            kernels.gemm_f16(route, io.s, &io.ops.hi, None, &mut plain, t, k)?;
        }
        Ok(())
    }

    /// Whether an untraced prefill rotates q inside the attention (`rope_attend`), from one
    /// table of angles a pass (`rope_angles`). Measured on an H200 (session 35,
    /// docs/performance.md): at head_dim 128 (Llama-2-7B) it saves 0.17 ms of a 512-token
    /// prefill; at 64 (SmolLM2-135M, whose q is a tenth as large and whose prefill is
    /// host-bound) the table's launch cost 0.05 ms more than it saved, so those shapes keep
    /// `rope_qk_append`.
    fn q_rope_in_attention(&self) -> bool {
        let hd = self.config.head_dim;
        hd >= 128 && self.kernels.has_prefill_q_rope(hd)
    }

    /// Whether layer `l`'s Q/K/V product over `t` rows writes K (rotated) and V straight into
    /// the layer's caches (`gemm_f16_qkv_cache`, bitwise what `rope_k_append` writes there:
    /// the op test checks it): where the attention rotates q itself (`q_rope_in_attention`),
    /// RoPE pairs adjacent columns (GGUF's pairing: a pair lies in one thread's
    /// accumulators), the three products are one launch on the matrix units (all split
    /// alike), and no observer reads K, V, QRope or KRope at `l` (they are never stored as
    /// f32 here). Measured on an H200: docs/performance.md, session 47.
    fn kv_in_qkv_product(&self, t: usize, l: usize, obs: &dyn StageObserver) -> bool {
        let c = &self.config;
        t > 1
            && self.q_rope_in_attention()
            && c.rope_style == RopeStyle::AdjacentPairs
            && c.head_dim.is_power_of_two()
            && self.kernels.has_qkv_cache()
            && Lin::Q.needs_lo(self.split_inputs) == Lin::K.needs_lo(self.split_inputs)
            && self.f16_operands(Lin::Q, t, c.hidden).is_some()
            && ![Point::K, Point::V, Point::QRope, Point::KRope]
                .iter()
                .any(|&p| obs.wants(p, Some(l)))
    }

    /// Whether an untraced pass of `t` rows puts K and V into the cache from the Q/K/V
    /// product (`kv_in_qkv_product` with no observer): which route the tests and the bench
    /// take.
    pub fn kv_from_qkv_product(&self, t: usize) -> bool {
        self.kv_in_qkv_product(t, 0, &greta_trace::NoTrace)
    }

    /// The RoPE and KV append shape of a pass of `t` rows from `pos0` on `st`.
    fn qkv_rope(&self, st: &GpuState, t: usize, pos0: usize) -> QkvRope {
        let c = &self.config;
        QkvRope {
            rows: t,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            half_split: c.rope_style == RopeStyle::HalfSplit,
            capacity: st.capacity,
            keys: pos0 + t,
        }
    }

    /// Layer `l`'s Q, K and V over `t` rows from `pos0` in one launch, q into `st.q` and K
    /// (rotated) and V into the layer's caches (`kv_in_qkv_product` says where);
    /// `operands_ready` as `products`'.
    fn qkv_into_cache(
        &self,
        st: &mut GpuState,
        l: usize,
        t: usize,
        pos0: usize,
        operands_ready: bool,
    ) -> Result<()> {
        let d = self.config.hidden;
        let w = &self.layers[l];
        let rope = self.qkv_rope(st, t, pos0);
        let Some(lo) = self.f16_operands(Lin::Q, t, d) else {
            unreachable!("kv_in_qkv_product checked that Q/K/V run on the matrix units")
        };
        let GpuState {
            stream,
            normed,
            operands,
            q,
            k_cache,
            v_cache,
            rope_angles,
            pos,
            ..
        } = st;
        if !operands_ready {
            operands.make(&self.kernels, stream, normed, lo, Rows { rows: t, len: d })?;
        }
        let gemm_lo = operands.gemm_lo(lo)?;
        let weights = [
            (&w.wq, w.fp8.q.as_ref()),
            (&w.wk, w.fp8.k.as_ref()),
            (&w.wv, w.fp8.v.as_ref()),
        ]
        .map(|(w, w8)| GemmWeights { w, w8 });
        self.kernels.gemm_f16_qkv_cache(
            self.gemm_tiles.qkv,
            stream,
            &operands.hi,
            gemm_lo,
            weights,
            q,
            KvCacheOut {
                caches: [&mut k_cache[l], &mut v_cache[l]],
                angles: rope_angles,
                pos0: pos,
                shape: rope,
            },
            d,
        )?;
        Ok(())
    }

    /// RoPE on q and k, k and v into layer `l`'s cache, and the attention (the QRope, KRope
    /// stages; AttnCtx is the caller's). One token, where the kernels have the form: one
    /// launch (`attention_rope`), the rotated rows in `q_rot` / `k_rot`; an observer's change
    /// to them reruns the append and the attention from the changed rows. Several rows that
    /// no observer reads at QRope or KRope: `rope_k_append` (the keys into the cache), then
    /// the attention rotating q as it loads it (`kv_cached`: the Q/K/V product already put
    /// the keys and values there, `qkv_into_cache`). Otherwise `rope_qk_append` rotates q
    /// and k in place and appends, then `attention`. Returns whether the attention also made
    /// the output product's f16 operands of ctx. Where `ctx_in_product` (the caller's
    /// `ctx_in_product`, which also picks the output product), the one launch leaves its
    /// splits' partials for the output product, and ctx is not made.
    #[allow(clippy::too_many_arguments)]
    fn rope_attend(
        &self,
        st: &mut GpuState,
        l: usize,
        t: usize,
        pos0: usize,
        kv_cached: bool,
        ctx_in_product: bool,
        obs: &mut dyn StageObserver,
    ) -> Result<bool> {
        let c = &self.config;
        let k = &self.kernels;
        let hd = c.head_dim;
        let (q_row, kv_row) = (c.n_heads * hd, c.n_kv_heads * hd);
        let at = |point| StageAt {
            point,
            layer: Some(l),
            pos0,
        };
        // The positions this pass attends over: the decode attention's grid covers these.
        let keys = pos0 + t;
        let rope = self.qkv_rope(st, t, pos0);
        let shape = AttnShape {
            rows: t,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: hd,
            max_kv: st.capacity,
            keys,
        };
        let kv = Rows {
            rows: t,
            len: kv_row,
        };
        let one_launch = t == 1 && k.has_decode_rope(hd);
        // Where the output product runs on the matrix units, the prefill attention may write
        // its operands of ctx too (f16 or FP8 low halves), and where it does and no observer
        // reads ctx, ctx itself is not stored: the product reads only the operands.
        let ctx_lo = self.f16_operands(Lin::O, t, q_row);
        let keep_ctx = obs.wants(Point::AttnCtx, Some(l))
            || !(ctx_lo.is_some() && k.attention_writes_operands(t, hd));
        // Several rows that no observer reads at QRope or KRope, where the prefill attention
        // rotates q itself: RoPE on the keys alone, into the cache only, and q rotated as the
        // attention loads it (the same bits as the path below: the op tests check it), which
        // saves writing and reading back q and k.
        let q_in_attention = t > 1
            && self.q_rope_in_attention()
            && !obs.wants(Point::QRope, Some(l))
            && !obs.wants(Point::KRope, Some(l));
        debug_assert!(!kv_cached || q_in_attention, "kv_in_qkv_product implies it");
        let q_rope = if q_in_attention {
            if !kv_cached {
                k.rope_k_append(
                    &st.stream,
                    &st.k,
                    &st.v,
                    [&mut st.k_cache[l], &mut st.v_cache[l]],
                    &st.pos,
                    &self.inv_freq,
                    rope,
                )?;
            }
            Some(QRope {
                angles: &st.rope_angles,
                half_split: rope.half_split,
            })
        } else {
            if one_launch {
                k.attention_rope(
                    &st.stream,
                    [&st.q, &st.k, &st.v],
                    [&mut st.k_cache[l], &mut st.v_cache[l]],
                    [&mut st.q_rot, &mut st.k_rot],
                    &mut st.attn_scratch,
                    (!ctx_in_product).then_some(&mut *st.ctx),
                    &st.pos,
                    &self.inv_freq,
                    rope,
                )?;
            } else {
                k.rope_qk_append(
                    &st.stream,
                    [&mut st.q, &mut st.k],
                    &st.v,
                    [&mut st.k_cache[l], &mut st.v_cache[l]],
                    &st.pos,
                    &self.inv_freq,
                    rope,
                )?;
            }
            // The rotated rows: beside the products after the one launch, in place otherwise.
            let (q_rows, k_rows) = if one_launch {
                (&mut st.q_rot, &mut st.k_rot)
            } else {
                (&mut st.q, &mut st.k)
            };
            let q_changed = observe(obs, &st.stream, at(Point::QRope), q_rows, t, q_row)?;
            let k_changed = observe(obs, &st.stream, at(Point::KRope), k_rows, t, kv_row)?;
            if k_changed {
                k.kv_append(
                    &st.stream,
                    k_rows,
                    &mut st.k_cache[l],
                    &st.pos,
                    kv,
                    st.capacity,
                )?;
            }
            if one_launch && !q_changed && !k_changed {
                // The one launch's ctx stands.
                return Ok(false);
            }
            None
        };
        // q as the attention reads it: the rotated rows beside the products after the one
        // launch; otherwise st.q (rotated in place, or unrotated where the attention rotates
        // it as it loads it).
        let q = if one_launch { &st.q_rot } else { &st.q };
        Ok(k.attention_with_operands(
            &st.stream,
            q,
            &st.k_cache[l],
            &st.v_cache[l],
            &mut st.attn_scratch,
            keep_ctx.then_some(&mut *st.ctx),
            ctx_lo.map(|lo| st.operands.get(lo)).transpose()?,
            q_rope,
            &st.pos,
            shape,
        )?)
    }

    /// The norm ahead of a product group over `t` rows (`next`: the group's first product):
    /// x += proj first where `add`, then normed = rmsnorm(x) · w, and where that group runs
    /// on the matrix units, its f16 operands in the same launch (`add_rmsnorm_split`), with
    /// normed itself stored only where `keep` (an observer wants it: the products read the
    /// operands, nothing else reads normed). Returns whether it made the operands.
    fn norm(
        &self,
        st: &mut GpuState,
        add: bool,
        w: &DeviceBuffer<f32>,
        next: Option<Lin>,
        t: usize,
        keep: bool,
    ) -> Result<bool> {
        let c = &self.config;
        let (k, d) = (&self.kernels, c.hidden);
        let rows = Rows { rows: t, len: d };
        let operands = next
            .and_then(|first| self.f16_operands(first, t, d))
            .filter(|_| d <= NORM_SPLIT_MAX_D);
        match operands {
            Some(lo) => {
                let bufs = match next.is_some_and(Lin::in_ffn_operands) {
                    true => &mut st.ffn_operands,
                    false => &mut st.operands,
                };
                let ops = bufs.get(lo)?;
                let y = add.then_some(&*st.proj);
                k.add_rmsnorm_split(
                    &st.stream,
                    &mut st.x,
                    y,
                    w,
                    keep.then_some(&mut *st.normed),
                    ops,
                    rows,
                    c.rms_eps,
                )?
            }
            None if add => k.add_rmsnorm(
                &st.stream,
                &mut st.x,
                &st.proj,
                w,
                &mut st.normed,
                rows,
                c.rms_eps,
            )?,
            None => k.rmsnorm(&st.stream, &st.x, w, &mut st.normed, rows, c.rms_eps)?,
        }
        Ok(operands.is_some())
    }

    /// SwiGLU over `t` rows: act = silu(gate) · up, and where the down product runs on the
    /// matrix units, its f16 operands in the same launch (`silu_mul_split`), with act
    /// itself stored only where `keep` (as `norm`). Returns whether it made the operands.
    fn swiglu(&self, st: &mut GpuState, t: usize, keep: bool) -> Result<bool> {
        let n_ff = self.config.intermediate;
        let k = &self.kernels;
        let Some(lo) = self.f16_operands(Lin::Down, t, n_ff) else {
            k.silu_mul(&st.stream, &st.gate, &st.up, &mut st.act, t * n_ff)?;
            return Ok(false);
        };
        let ops = st.operands.get(lo)?;
        let rows = Rows { rows: t, len: n_ff };
        let act = keep.then_some(&mut *st.act);
        k.silu_mul_split(&st.stream, &st.gate, &st.up, act, ops, rows)?;
        Ok(true)
    }

    /// The prefill's gate, up and SwiGLU over `t` rows from normed (its operands already
    /// made where `operands_ready`): up to `gemv_rows` rows, one launch of the GEMVs
    /// (`gate_up_silu_rows`); else one launch of the SwiGLU GEMM (`gemm_f16_swiglu`) where
    /// the device has it and gate/up's input and act's output are operands of the kinds it
    /// takes; else the products, then `swiglu`. `keep`: which of gate, up and act an
    /// observer wants; the SwiGLU GEMM stores all three if it wants any (a change to gate or
    /// up reruns `swiglu`, which reads both). Returns whether act's operands for the down
    /// product are made.
    fn gate_up_swiglu(
        &self,
        st: &mut GpuState,
        w: &GpuLayer,
        t: usize,
        operands_ready: bool,
        keep: [bool; 3],
    ) -> Result<bool> {
        let c = &self.config;
        let (k, d, n_ff) = (&self.kernels, c.hidden, c.intermediate);
        if self.on_gemvs(t) {
            k.gate_up_silu_rows(
                &st.stream,
                &w.w_gate,
                &w.w_up,
                &st.normed,
                [&mut st.gate, &mut st.up, &mut st.act],
                n_ff,
                d,
                t,
            )?;
            return Ok(false);
        }
        let input = self.f16_operands(Lin::Gate, t, d);
        // An FP8 low half needs gate's and up's FP8 copies (made where the input is split
        // and its low half FP8: `set_split_lo`).
        let w8 = w
            .fp8
            .gate
            .as_ref()
            .zip(w.fp8.up.as_ref())
            .map(|(g, u)| [g, u]);
        let fused = match input {
            Some(LoKind::Fp8 | LoKind::Fp8Sparse) => w8.is_some(),
            other => other.is_some(),
        };
        match (input, self.f16_operands(Lin::Down, t, n_ff)) {
            (Some(lo_in), Some(lo_out)) if fused && k.has_gemm_swiglu() => {
                let GpuState {
                    stream,
                    normed,
                    ffn_operands: ins,
                    operands: outs,
                    gate,
                    up,
                    act,
                    ..
                } = st;
                if !operands_ready {
                    ins.make(k, stream, normed, lo_in, Rows { rows: t, len: d })?;
                }
                let stored = keep.contains(&true);
                let out = SwigluOut {
                    gate: stored.then_some(&mut **gate),
                    up: stored.then_some(&mut **up),
                    act: stored.then_some(&mut **act),
                    ops: outs.get(lo_out)?,
                };
                let shape = MatShape { t, k: d, n: n_ff };
                let a_lo = match lo_in {
                    LoKind::None => None,
                    LoKind::F16 => Some(SwigluLo::F16(&ins.lo)),
                    LoKind::Fp8 => w8.map(|w8| SwigluLo::Fp8 { q: &ins.lo8, w8 }),
                    LoKind::Fp8Sparse => {
                        let lo = ins.sparse.as_ref().ok_or(GpuError::NoSparseLo)?;
                        w8.map(|w8| SwigluLo::Fp8Sparse { lo, w8 })
                    }
                };
                k.gemm_f16_swiglu(
                    self.gemm_tiles.gate_up,
                    stream,
                    &ins.hi,
                    a_lo,
                    [&w.w_gate, &w.w_up],
                    out,
                    shape,
                )?;
                Ok(true)
            }
            _ => {
                let gate_up = [
                    (Lin::Gate, &w.w_gate, w.fp8.gate.as_ref(), n_ff),
                    (Lin::Up, &w.w_up, w.fp8.up.as_ref(), n_ff),
                ];
                self.products(st, &gate_up, t, d, operands_ready)?;
                self.swiglu(st, t, keep[2])
            }
        }
    }

    /// One token's Q, K and V from `normed`, one launch: the unfused decode path, and the
    /// fused one's rerun when an observer changed the norm its prologue made.
    fn qkv_one(&self, st: &mut GpuState, w: &GpuLayer) -> Result<()> {
        let c = &self.config;
        let (q_row, kv_row) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        self.kernels.gemv3(
            &st.stream,
            [&w.wq, &w.wk, &w.wv],
            [q_row, kv_row, kv_row],
            &st.normed,
            [&mut st.q, &mut st.k, &mut st.v],
            c.hidden,
        )?;
        Ok(())
    }

    /// One token's gate, up and SwiGLU from `normed`, one launch (as `qkv_one`).
    fn gate_up_one(&self, st: &mut GpuState, w: &GpuLayer) -> Result<()> {
        let c = &self.config;
        self.kernels.gate_up_silu(
            &st.stream,
            &w.w_gate,
            &w.w_up,
            &st.normed,
            [&mut st.gate, &mut st.up, &mut st.act],
            c.intermediate,
            c.hidden,
        )?;
        Ok(())
    }

    /// Whether a pass of `t` rows runs the decode step's fused launches: the norms in the
    /// prologues of the products that read them, the residual adds in the epilogues of the
    /// products that feed them (`project_add`).
    fn decode_fused(&self, t: usize) -> bool {
        t == 1 && GpuKernels::norm_prologue_bytes(self.config.hidden).is_ok()
    }

    /// Whether decode's output product combines the attention's splits of layer `l` (one
    /// token at `pos0`) as it loads them, where ctx is never made (`CtxCombine`): only in
    /// the fused step (`project_add`), where the attention runs in its one launch with RoPE,
    /// and no observer reads (or may change) QRope, KRope or AttnCtx there, which would
    /// need ctx or a rerun from it.
    fn ctx_in_product(&self, t: usize, l: usize, pos0: usize, obs: &dyn StageObserver) -> bool {
        let c = &self.config;
        self.decode_fused(t)
            && self.kernels.has_decode_rope(c.head_dim)
            && ![Point::QRope, Point::KRope, Point::AttnCtx]
                .into_iter()
                .any(|p| obs.wants(p, Some(l)))
            && self.ctx_combine.in_product(c.n_heads, c.head_dim, pos0 + t)
    }

    /// Decode's output (input ctx, or the attention's split partials it is combined from)
    /// or down (input act) projection with the residual add in its epilogue: proj = w ·
    /// input, x += proj, one launch; then proj and x observed at `at` ([product,
    /// residual]). While the observer watches the product, x is kept in `last` first, so
    /// that a changed product is added to the residual it was added to (as the unfused
    /// stages would).
    fn project_add(
        &self,
        st: &mut GpuState,
        input: ProjectIn,
        w: &DeviceBuffer<u16>,
        obs: &mut dyn StageObserver,
        [out_at, resid_at]: [StageAt; 2],
    ) -> Result<()> {
        let c = &self.config;
        let d = c.hidden;
        let watched = obs.wants(out_at.point, out_at.layer);
        if watched {
            st.last.copy_from_device(0, &st.x, 0, d, &st.stream)?;
        }
        let q_row = c.n_heads * c.head_dim;
        let k = &self.kernels;
        match input {
            ProjectIn::Ctx => {
                k.gemv_add(&st.stream, w, &st.ctx, &mut st.proj, &mut st.x, d, q_row)?
            }
            ProjectIn::CtxSplits { keys } => {
                let splits = CtxSplits {
                    scratch: &st.attn_scratch,
                    pos0: &st.pos,
                    keys,
                    head_dim: c.head_dim,
                };
                k.gemv_add_splits(&st.stream, w, splits, &mut st.proj, &mut st.x, d, q_row)?
            }
            ProjectIn::Act => {
                let n_ff = c.intermediate;
                k.gemv_add(&st.stream, w, &st.act, &mut st.proj, &mut st.x, d, n_ff)?
            }
        }
        if observe(obs, &st.stream, out_at, &mut st.proj, 1, d)? {
            st.x.copy_from_device(0, &st.last, 0, d, &st.stream)?;
            // The add alone is wanted; the norm it also writes is made again by the next
            // product's prologue.
            self.kernels.add_rmsnorm(
                &st.stream,
                &mut st.x,
                &st.proj,
                &self.output_norm,
                &mut st.normed,
                Rows { rows: 1, len: d },
                c.rms_eps,
            )?;
        }
        observe(obs, &st.stream, resid_at, &mut st.x, 1, d)?;
        Ok(())
    }

    /// Runs `tokens` (already in `st.ids`) at positions `pos0..`. Returns the number of
    /// logits rows, which stay in `st.logits` ([rows, vocab]; one row for `Last`).
    ///
    /// The stages are TRACE.md's, in its order; several run in one launch (RoPE with the KV
    /// append; for several tokens the residual add with the next norm; for one token Q/K/V
    /// as one product with the attention norm in its prologue, RoPE and the append inside
    /// the attention, gate/up with the FFN norm and SwiGLU, the output and down products
    /// with the residual add: 5 launches per layer). Every stage's value an observer reads
    /// is materialised and observed after its launch (a few are left unmade where none
    /// reads them: the attention context, which the output product may read as f16
    /// operands in prefill or combine from the attention's splits in decode); where an
    /// observer changes a value that a fused launch already consumed, the consuming stage is
    /// run again from the changed value, so an injected fault propagates exactly as it does
    /// through unfused stages.
    ///
    /// Read as the paper's diagram: `embed`, then per layer `attention_block` and
    /// `ffn_block`, then `final_norm_and_logits`.
    fn forward_inner(
        &self,
        st: &mut GpuState,
        t: usize,
        which: Logits,
        obs: &mut dyn StageObserver,
        pos0: usize,
    ) -> Result<usize> {
        let pass = PassRows {
            t,
            pos0,
            fused: self.decode_fused(t),
        };
        self.embed(st, pass, obs)?;
        // The angles the prefill attention rotates q by, one table for every layer (a layer
        // whose QRope or KRope an observer reads takes rope_qk_append instead).
        if t > 1 && self.q_rope_in_attention() {
            self.kernels.rope_angles(
                &st.stream,
                &mut st.rope_angles,
                &st.pos,
                &self.inv_freq,
                t,
                self.config.head_dim,
            )?;
        }
        let mut flow = NormFlow {
            stale: true,
            operands: false,
        };
        for l in 0..self.layers.len() {
            self.attention_block(st, pass, l, &mut flow, obs)?;
            self.ffn_block(st, pass, l, &mut flow, obs)?;
        }
        self.final_norm_and_logits(st, pass, which, flow.stale, obs)
    }

    /// embed_out: the token rows of the pass's ids.
    fn embed(&self, st: &mut GpuState, pass: PassRows, obs: &mut dyn StageObserver) -> Result<()> {
        let d = self.config.hidden;
        let k = &self.kernels;
        k.embed(&st.stream, &self.token_embd, &st.ids, &mut st.x, pass.t, d)?;
        let at = pass.at(Point::EmbedOut, None);
        observe(obs, &st.stream, at, &mut st.x, pass.t, d)?;
        Ok(())
    }

    /// Layer `l`'s attention block: attn_in → attn_norm → q, k, v → q_rope, k_rope, attn_ctx
    /// (`rope_attend`) → attn_out → resid_attn, and for the FFN block ffn_norm where the
    /// pass is not fused (a fused step's gate/up product makes its own norm).
    fn attention_block(
        &self,
        st: &mut GpuState,
        pass: PassRows,
        l: usize,
        flow: &mut NormFlow,
        obs: &mut dyn StageObserver,
    ) -> Result<()> {
        let (c, k) = (&self.config, &self.kernels);
        let w = &self.layers[l];
        let PassRows { t, pos0, fused } = pass;
        let d = c.hidden;
        let (q_row, kv_row) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        let layer = Some(l);
        let at = |point| pass.at(point, layer);
        let kv_cached = self.kv_in_qkv_product(t, l, &*obs);
        if fused {
            // A change to x at AttnIn reaches the product's prologue, which reads x.
            observe(obs, &st.stream, at(Point::AttnIn), &mut st.x, t, d)?;
            let norm = NormIn {
                w: &w.attn_norm,
                eps: c.rms_eps,
                out: &mut st.normed,
            };
            k.gemv3_norm(
                &st.stream,
                [&w.wq, &w.wk, &w.wv],
                [q_row, kv_row, kv_row],
                &st.x,
                norm,
                [&mut st.q, &mut st.k, &mut st.v],
                d,
            )?;
            if observe(obs, &st.stream, at(Point::AttnNorm), &mut st.normed, t, d)? {
                self.qkv_one(st, w)?;
            }
        } else {
            flow.stale |= observe(obs, &st.stream, at(Point::AttnIn), &mut st.x, t, d)?;
            if flow.stale {
                let keep = obs.wants(Point::AttnNorm, layer);
                flow.operands = self.norm(st, false, &w.attn_norm, Some(Lin::Q), t, keep)?;
            }
            flow.operands &= !observe(obs, &st.stream, at(Point::AttnNorm), &mut st.normed, t, d)?;

            // Q, K, V (K and V into the cache by the product where it can).
            if t == 1 {
                self.qkv_one(st, w)?;
            } else if kv_cached {
                self.qkv_into_cache(st, l, t, pos0, flow.operands)?;
            } else {
                let qkv = [
                    (Lin::Q, &w.wq, w.fp8.q.as_ref(), q_row),
                    (Lin::K, &w.wk, w.fp8.k.as_ref(), kv_row),
                    (Lin::V, &w.wv, w.fp8.v.as_ref(), kv_row),
                ];
                self.products(st, &qkv, t, d, flow.operands)?;
            }
        }
        observe(obs, &st.stream, at(Point::Q), &mut st.q, t, q_row)?;
        observe(obs, &st.stream, at(Point::K), &mut st.k, t, kv_row)?;
        observe(obs, &st.stream, at(Point::V), &mut st.v, t, kv_row)?;

        // Decided once for the layer: the attention's launch (partials, no ctx) and the
        // output product's input (`ProjectIn::CtxSplits`) both follow it.
        let ctx_in_product = self.ctx_in_product(t, l, pos0, &*obs);
        // Whether the output product's f16 operands of ctx are made: cleared when an
        // observer changes ctx after the attention wrote them.
        let mut ctx_operands = self.rope_attend(st, l, t, pos0, kv_cached, ctx_in_product, obs)?;
        ctx_operands &= !observe(obs, &st.stream, at(Point::AttnCtx), &mut st.ctx, t, q_row)?;
        if fused {
            let input = match ctx_in_product {
                true => ProjectIn::CtxSplits { keys: pos0 + t },
                false => ProjectIn::Ctx,
            };
            let at = [at(Point::AttnOut), at(Point::ResidAttn)];
            return self.project_add(st, input, &w.wo, obs, at);
        }
        let o = [(Lin::O, &w.wo, w.fp8.o.as_ref(), d)];
        self.products(st, &o, t, q_row, ctx_operands)?;
        observe(obs, &st.stream, at(Point::AttnOut), &mut st.proj, t, d)?;

        // Residual + ffn_norm.
        let keep = obs.wants(Point::FfnNorm, layer);
        flow.operands = self.norm(st, true, &w.ffn_norm, Some(Lin::Gate), t, keep)?;
        if observe(obs, &st.stream, at(Point::ResidAttn), &mut st.x, t, d)? {
            flow.operands = self.norm(st, false, &w.ffn_norm, Some(Lin::Gate), t, keep)?;
        }
        flow.operands &= !observe(obs, &st.stream, at(Point::FfnNorm), &mut st.normed, t, d)?;
        Ok(())
    }

    /// Layer `l`'s FFN block: (ffn_norm where fused) → ffn_gate, ffn_up → ffn_act → ffn_out
    /// → resid_ffn, and where the pass is not fused the next norm (the next layer's
    /// attn_norm, or the final norm).
    fn ffn_block(
        &self,
        st: &mut GpuState,
        pass: PassRows,
        l: usize,
        flow: &mut NormFlow,
        obs: &mut dyn StageObserver,
    ) -> Result<()> {
        let (c, k) = (&self.config, &self.kernels);
        let w = &self.layers[l];
        let PassRows { t, fused, .. } = pass;
        let (d, n_ff) = (c.hidden, c.intermediate);
        let layer = Some(l);
        let at = |point| pass.at(point, layer);
        // Whether the down product's f16 operands of `act` are made (`swiglu`).
        let mut act_operands = false;
        let keep_act = obs.wants(Point::FfnAct, layer);
        if fused {
            let norm = NormIn {
                w: &w.ffn_norm,
                eps: c.rms_eps,
                out: &mut st.normed,
            };
            k.gate_up_silu_norm(
                &st.stream,
                &w.w_gate,
                &w.w_up,
                &st.x,
                norm,
                [&mut st.gate, &mut st.up, &mut st.act],
                n_ff,
                d,
            )?;
            if observe(obs, &st.stream, at(Point::FfnNorm), &mut st.normed, t, d)? {
                self.gate_up_one(st, w)?;
            }
        } else if t == 1 {
            self.gate_up_one(st, w)?;
        } else {
            let keep = [Point::FfnGate, Point::FfnUp].map(|p| obs.wants(p, layer));
            act_operands =
                self.gate_up_swiglu(st, w, t, flow.operands, [keep[0], keep[1], keep_act])?;
        }
        let gate_changed = observe(obs, &st.stream, at(Point::FfnGate), &mut st.gate, t, n_ff)?;
        let up_changed = observe(obs, &st.stream, at(Point::FfnUp), &mut st.up, t, n_ff)?;
        if gate_changed || up_changed {
            act_operands = self.swiglu(st, t, keep_act)?;
        }
        act_operands &= !observe(obs, &st.stream, at(Point::FfnAct), &mut st.act, t, n_ff)?;
        if fused {
            let at = [at(Point::FfnOut), at(Point::ResidFfn)];
            self.project_add(st, ProjectIn::Act, &w.w_down, obs, at)?;
            // `normed` is not the next norm: the next layer's product makes its own.
            flow.stale = true;
            return Ok(());
        }
        let down = [(Lin::Down, &w.w_down, w.fp8.down.as_ref(), d)];
        self.products(st, &down, t, n_ff, act_operands)?;
        observe(obs, &st.stream, at(Point::FfnOut), &mut st.proj, t, d)?;

        // Residual + the next norm (the next layer's attn_norm, with Q/K/V's operands, or
        // the final norm).
        let (next_norm, next) = match self.layers.get(l + 1) {
            Some(next) => (&next.attn_norm, Some(Lin::Q)),
            None => (&self.output_norm, None),
        };
        // The final norm (no operands) always stores normed: the head reads it.
        let keep = obs.wants(Point::AttnNorm, Some(l + 1));
        flow.operands = self.norm(st, true, next_norm, next, t, keep)?;
        flow.stale = observe(obs, &st.stream, at(Point::ResidFfn), &mut st.x, t, d)?;
        Ok(())
    }

    /// final_norm → logits, for every row of the pass or its last alone (`which`); returns
    /// the number of logits rows. `norm_stale`: `normed` is not yet the final norm of x.
    fn final_norm_and_logits(
        &self,
        st: &mut GpuState,
        pass: PassRows,
        which: Logits,
        norm_stale: bool,
        obs: &mut dyn StageObserver,
    ) -> Result<usize> {
        let c = &self.config;
        let PassRows { t, pos0, .. } = pass;
        let d = c.hidden;
        if norm_stale {
            let rows_d = Rows { rows: t, len: d };
            let (x, normed) = (&st.x, &mut st.normed);
            let (w, eps) = (&self.output_norm, c.rms_eps);
            self.kernels
                .rmsnorm(&st.stream, x, w, normed, rows_d, eps)?;
        }
        let (rows, first) = match which {
            Logits::All => (t, pos0),
            Logits::Last if t == 1 => (1, pos0),
            Logits::Last => {
                // The last row's final norm moves to row 0, where the head reads it.
                st.last
                    .copy_from_device(0, &st.normed, (t - 1) * d, d, &st.stream)?;
                st.normed.copy_from_device(0, &st.last, 0, d, &st.stream)?;
                (1, pos0 + t - 1)
            }
        };
        let at = |point| StageAt {
            point,
            layer: None,
            pos0: first,
        };
        observe(
            obs,
            &st.stream,
            at(Point::FinalNorm),
            &mut st.normed,
            rows,
            d,
        )?;
        let head = self.output.as_ref().unwrap_or(&self.token_embd);
        self.products(st, &[(Lin::Head, head, None, c.vocab_size)], rows, d, false)?;
        let n = c.vocab_size;
        observe(obs, &st.stream, at(Point::Logits), &mut st.logits, rows, n)?;
        Ok(rows)
    }

    /// Runs `tokens` at positions `st.len()..` and returns the logits rows `which` asks for.
    pub fn forward(
        &self,
        tokens: &[u32],
        st: &mut GpuState,
        which: Logits,
        obs: &mut dyn StageObserver,
    ) -> Result<Vec<f32>> {
        let rows = self.forward_no_readback(tokens, st, which, obs, false)?;
        let mut out = vec![0f32; rows * self.config.vocab_size];
        st.logits.read(0, &mut out, &st.stream)?;
        Ok(out)
    }

    /// The pass of `tokens` up to its logits, then the end of the pass: the pick of the next
    /// token on the device (which also advances the position) with `pick`, else the
    /// position's advance alone.
    fn forward_no_readback(
        &self,
        tokens: &[u32],
        st: &mut GpuState,
        which: Logits,
        obs: &mut dyn StageObserver,
        pick: bool,
    ) -> Result<usize> {
        let t = tokens.len();
        if t > st.max_rows {
            return Err(GpuError::TooManyRows {
                max: st.max_rows,
                requested: t,
            });
        }
        if st.len + t > st.capacity {
            return Err(GpuError::KvCacheFull {
                capacity: st.capacity,
                used: st.len,
                requested: t,
            });
        }
        if let Some((index, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= self.config.vocab_size)
        {
            return Err(GpuError::TokenOutOfRange {
                id,
                index,
                vocab: self.config.vocab_size,
            });
        }
        obs.begin_pass(Pass {
            pos0: st.len,
            tokens,
        });
        st.ids.write(0, tokens, &st.stream)?;
        let pos0 = st.len;
        let rows = self.forward_inner(st, t, which, obs, pos0)?;
        if pick {
            self.pick_on_device(st, t)?;
        } else {
            self.kernels.advance_pos(&st.stream, &mut st.pos, t)?;
        }
        st.len += t;
        Ok(rows)
    }

    /// Writes the token the state's `TokenPick` chooses from the last logits row into `ids[0]`
    /// and `history` at the position it will take, advancing the position by the pass's
    /// `t` rows.
    fn pick_on_device(&self, st: &mut GpuState, t: usize) -> Result<()> {
        let n = self.config.vocab_size;
        let at = PickAt {
            out: &mut st.ids,
            pos: &mut st.pos,
            advance: t,
            history: &mut st.history,
        };
        match st.pick {
            TokenPick::Argmax => self.kernels.argmax(&st.stream, &st.logits, n, at)?,
            TokenPick::Sample { cfg, .. } => {
                self.kernels
                    .sample(&st.stream, &st.logits, n, cfg, &mut st.rng, at)?
            }
        }
        Ok(())
    }

    /// Computes the keys and values of all but the last part of `prompt` into the cache,
    /// the state's rows (`new_state`'s `max_rows`) a pass, and returns that last part (1 to
    /// `max_rows` tokens), whose pass gives the logits: a prompt longer than the state's
    /// rows is prefilled in parts (as llama.cpp's batches do) instead of refused. Nothing is
    /// read back or waited for; a prompt that fits one pass comes back whole.
    pub fn prefill_head<'p>(&self, prompt: &'p [u32], st: &mut GpuState) -> Result<&'p [u32]> {
        let last = match prompt.len() {
            0 => 0,
            n => (n - 1) % st.max_rows + 1,
        };
        let (head, tail) = prompt.split_at(prompt.len() - last);
        for part in head.chunks(st.max_rows) {
            self.forward_no_readback(part, st, Logits::Last, &mut greta_trace::NoTrace, false)?;
        }
        Ok(tail)
    }

    /// Prefills `prompt` and leaves the next token (chosen on the device) in `ids[0]`;
    /// returns it.
    pub fn prefill_pick(&self, prompt: &[u32], st: &mut GpuState) -> Result<u32> {
        self.prefill_enqueue(prompt, st)?;
        st.picked()
    }

    /// `prefill_pick` up to the read-back: every launch of the prompt's pass and the pick is
    /// issued, none waited for (`GpuState::picked` then reads the token). `greta bench` times
    /// the two apart to tell a host-bound prefill from a GPU-bound one.
    pub fn prefill_enqueue(&self, prompt: &[u32], st: &mut GpuState) -> Result<()> {
        self.forward_no_readback(prompt, st, Logits::Last, &mut greta_trace::NoTrace, true)?;
        Ok(())
    }

    /// One decode step of the token in `ids[0]`, entirely on the device: embed, layers,
    /// logits, the pick into `ids[0]`, position + 1.
    fn decode_step_device(&self, st: &mut GpuState) -> Result<()> {
        let pos0 = st.len;
        self.forward_inner(st, 1, Logits::Last, &mut greta_trace::NoTrace, pos0)?;
        self.pick_on_device(st, 1)
    }

    /// Decodes the token in `ids[0]` and returns the next (chosen on the device). With
    /// `graph`, the step is captured (once per split count of the decode attention: see
    /// `GpuState::graphs`) and replayed; without, its kernels are launched one by one. The
    /// host waits for the step; [`DecodeAhead`] keeps one step ahead instead.
    pub fn decode_on_device(&self, st: &mut GpuState, graph: bool) -> Result<u32> {
        self.decode_enqueue(st, graph)?;
        st.picked()
    }

    /// Issues one decode step of the token in `ids[0]` (see `decode_on_device`) without
    /// waiting for it: its token lands in `ids[0]` and at `history[st.len()]` afterwards.
    pub fn decode_enqueue(&self, st: &mut GpuState, graph: bool) -> Result<()> {
        if st.len + 1 > st.capacity {
            return Err(GpuError::KvCacheFull {
                capacity: st.capacity,
                used: st.len,
                requested: 1,
            });
        }
        if graph {
            let splits = decode_splits(st.len + 1);
            let at = match st.graphs.iter().position(|(n, _)| *n == splits) {
                Some(at) => at,
                None => {
                    st.stream.begin_capture()?;
                    let captured = self.decode_step_device(st);
                    let g = st.stream.end_capture()?;
                    captured?;
                    if st.graphs.len() == GRAPHS_KEPT {
                        // The oldest, for a split count the position has left; were it still
                        // in flight, the driver frees it when it completes.
                        st.graphs.remove(0);
                    }
                    st.graphs.push((splits, g.instantiate()?));
                    st.graphs.len() - 1
                }
            };
            st.graphs[at].1.launch(&st.stream)?;
        } else {
            self.decode_step_device(st)?;
        }
        st.len += 1;
        Ok(())
    }
}

/// The token a pick left at `history[pos]` (read on stream `s`), or the error it flagged
/// there: [`PICK_NAN`] for logits with a NaN, which came from the row of position `pos - 1`.
fn read_pick(history: &DeviceBuffer<u32>, pos: usize, s: &Stream) -> Result<u32> {
    let mut id = [0u32];
    history.read(pos, &mut id, s)?;
    pick_token(id[0], pos)
}

/// The history word at `pos` as a token (see [`read_pick`]).
fn pick_token(word: u32, pos: usize) -> Result<u32> {
    match word {
        PICK_NAN => Err(GpuError::NanLogits {
            position: pos.saturating_sub(1),
        }),
        token => Ok(token),
    }
}

/// `GpuLlama::set_gemv_rows`'s default: the most rows of a pass that take the GEMVs.
/// Measured on an H200 (session 58, docs/performance.md): the 7B's prefill of 2 / 3 / 4
/// tokens 4.96 / 5.35 / 6.21 ms on the GEMVs against 8.73 / 8.73 / 8.69 on the GEMM under
/// the default numerics (6.18 / 6.16 / 6.28 under `none`), SmolLM2's 1.17-1.23 against
/// 1.51-1.53; from 6 rows on the GEMVs are the slower (7B: 9.9 ms at 6, 11.6 at 8), their
/// loads of x from L2 growing with the rows while the GEMM's time stays level.
pub const DEFAULT_GEMV_ROWS: usize = 4;

/// Captured decode steps a state keeps (`GpuState::graphs`): a long cache would otherwise
/// hold one for every 128 positions it has passed.
const GRAPHS_KEPT: usize = 2;

/// Which activation buffers a projection reads and writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lin {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    Head,
}

/// The buffers of products that share their input: the input, the outputs (in the
/// products' order), and the input's f16 operand buffers.
struct LinIo<'a> {
    s: &'a Stream,
    x: &'a DeviceBuffer<f32>,
    ys: Vec<&'a mut DeviceBuffer<f32>>,
    /// The input's operands (`ffn_operands` for gate/up: `Lin::in_ffn_operands`).
    ops: &'a mut OperandBufs,
}

impl GpuState {
    /// The buffers of the products `which` (Q, K and V; gate and up; or one), borrowed
    /// together, with the input of `input` (a group's products share it).
    fn product_io(&mut self, input: Lin, which: impl Iterator<Item = Lin>) -> LinIo<'_> {
        let GpuState {
            stream,
            normed,
            ctx,
            act,
            operands,
            ffn_operands,
            q,
            k,
            v,
            proj,
            gate,
            up,
            logits,
            ..
        } = self;
        let x: &DeviceBuffer<f32> = match input {
            Lin::O => ctx,
            Lin::Down => act,
            _ => normed,
        };
        let ops = match input.in_ffn_operands() {
            true => ffn_operands,
            false => operands,
        };
        let mut outs = [q, k, v, proj, gate, up, logits].map(|b| Some(&mut **b));
        let ys = which
            .map(|l| {
                let slot = match l {
                    Lin::Q => 0,
                    Lin::K => 1,
                    Lin::V => 2,
                    Lin::O | Lin::Down => 3,
                    Lin::Gate => 4,
                    Lin::Up => 5,
                    Lin::Head => 6,
                };
                outs[slot]
                    .take()
                    .expect("one output per product of a group")
            })
            .collect();
        LinIo {
            s: stream,
            x,
            ys,
            ops,
        }
    }
}

impl Lin {
    /// A layer's products (the LM head is not one).
    const LAYER: [Lin; 7] = [
        Lin::Q,
        Lin::K,
        Lin::V,
        Lin::O,
        Lin::Gate,
        Lin::Up,
        Lin::Down,
    ];

    /// The weight matrix's shape `[rows, cols]` (rows: outputs; cols: the input's length).
    fn shape(self, c: &LlamaConfig) -> (usize, usize) {
        let (d, n_ff) = (c.hidden, c.intermediate);
        let (q_row, kv_row) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        match self {
            Lin::Q => (q_row, d),
            Lin::K | Lin::V => (kv_row, d),
            Lin::O => (d, q_row),
            Lin::Gate | Lin::Up => (n_ff, d),
            Lin::Down => (d, n_ff),
            Lin::Head => (c.vocab_size, d),
        }
    }

    /// Whether the product's input operands live in `GpuState::ffn_operands` (gate/up's,
    /// which the SwiGLU GEMM reads while it writes act's into `operands`).
    fn in_ffn_operands(self) -> bool {
        matches!(self, Lin::Gate | Lin::Up)
    }

    /// The products that read the same input as `self` (one launch's group).
    fn group(self) -> &'static [Lin] {
        match self {
            Lin::Q | Lin::K | Lin::V => &[Lin::Q, Lin::K, Lin::V],
            Lin::Gate | Lin::Up => &[Lin::Gate, Lin::Up],
            Lin::O => &[Lin::O],
            Lin::Down => &[Lin::Down],
            Lin::Head => &[Lin::Head],
        }
    }

    /// Whether any product of `self`'s group takes the input as hi + lo: then the input's
    /// operands carry a low half.
    fn group_needs_lo(self, split: SplitInputs) -> bool {
        self.group().iter().any(|m| m.needs_lo(split))
    }

    /// Whether every product of `self`'s group that takes a low half has it in the form
    /// `form` names (`SplitLo::fp8`: the products with FP8 weight copies; `SplitLo::sparse`):
    /// one launch takes one kind of low half, so a group whose split products are not all in
    /// `form` takes the plainer one.
    fn group_lo_in(self, split: SplitInputs, form: SplitInputs) -> bool {
        self.group()
            .iter()
            .all(|m| !m.needs_lo(split) || m.needs_lo(form))
    }

    /// Whether the product's input enters the matrix units as hi + lo (two f16) rather than
    /// one f16.
    fn needs_lo(self, split: SplitInputs) -> bool {
        match self {
            Lin::Q => split.q,
            Lin::K | Lin::V => split.kv,
            Lin::O => split.o,
            Lin::Gate | Lin::Up => split.gate_up,
            Lin::Down => split.down,
            Lin::Head => split.head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{pick_token, GpuError, Lin, SplitInputs, PICK_NAN};

    /// `--split-inputs kv`: the Q/K/V group's operands carry a low half (K and V read it), Q
    /// alone reads hi (its own launch); the group's low half is FP8 only where every split
    /// product of it has an FP8 copy (one launch, one kind); the default splits all three.
    #[test]
    fn a_group_split_in_part_makes_the_low_half_for_its_split_products_only() {
        let kv: SplitInputs = "kv,down".parse().unwrap();
        assert!(Lin::Q.group_needs_lo(kv) && Lin::V.group_needs_lo(kv));
        assert!(!Lin::Q.needs_lo(kv) && Lin::K.needs_lo(kv) && Lin::V.needs_lo(kv));
        assert!(!Lin::O.group_needs_lo(kv) && Lin::Down.group_needs_lo(kv));
        let default = SplitInputs::default();
        assert!(Lin::LAYER[..3].iter().all(|l| l.needs_lo(default)));
        assert!(Lin::Q.group_lo_in(kv, SplitInputs::ALL));
        assert!(Lin::Q.group_lo_in(kv, "kv".parse().unwrap()));
        assert!(!Lin::Q.group_lo_in(default, "q".parse().unwrap()));
        let no_gate: SplitInputs = "qkv,o,down".parse().unwrap();
        assert!(
            Lin::Gate.group_lo_in(no_gate, SplitInputs::NONE),
            "nothing split"
        );
        assert!(!Lin::Gate.group_lo_in(default, SplitInputs::NONE));
        // The sparse set (`SplitLo::sparse`, gate/up only) takes gate/up's group, and no other.
        let sparse = SplitInputs::GATE_UP;
        assert!(Lin::Gate.group_lo_in(default, sparse) && Lin::Up.group_lo_in(default, sparse));
        assert!([Lin::Q, Lin::O, Lin::Down]
            .iter()
            .all(|l| !l.group_lo_in(default, sparse)));
    }

    #[test]
    fn a_pick_flagged_nan_is_an_error_naming_the_logits_position() {
        assert_eq!(pick_token(17, 5).unwrap(), 17);
        assert_eq!(pick_token(PICK_NAN - 1, 5).unwrap(), PICK_NAN - 1);
        let e = pick_token(PICK_NAN, 5).unwrap_err();
        assert!(matches!(e, GpuError::NanLogits { position: 4 }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("position 4") && msg.contains("NaN") && msg.contains("greta audit"),
            "{msg}"
        );
    }
}
