//! Typed launchers for the compiled kernels (kernels/*.hip, built by `cargo xtask
//! build-kernels`). Each has the signature of its CPU reference op in `cpu`, over device
//! buffers; tests/gpu_ops.rs checks every one against the CPU with NMSE thresholds.

use std::ffi::c_void;
use std::path::{Path, PathBuf};

use crate::timeline;
use hiprt::{
    DeviceBuffer, Function, Gpu, HipError, LaunchDims, Module, Platform, Stream, TensorMap,
};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Runtime(#[from] HipError),
    #[error("no code object for this {platform} GPU in {dir} (tried {tried}); build them with `cargo xtask build-kernels` or set GRETA_KERNELS_DIR")]
    Missing {
        platform: Platform,
        dir: String,
        tried: String,
    },
    #[error("{0}")]
    Shape(String),
    #[error("no kernel named {name:?} in the code objects of {dir} (names as in kernels/*.hip, e.g. attn_decode_split_hd64, add_rmsnorm_f32)")]
    UnknownKernel { name: String, dir: String },
    #[error("the kernels in {dir} were built without the timeline: build them with `cargo xtask build-kernels --timeline` (NVIDIA only; into target/kernels-timeline) and point GRETA_KERNELS_DIR there")]
    NoTimeline { dir: String },
    #[error("{name} cannot be left out of a timing study: it also moves the decode position, so without it every step would run at the prompt's first position and time a shorter attention, not the step without {name} (the kernels that move it: {})", MOVES_POSITION.join(", "))]
    SkipMovesPosition { name: String },
}

/// Kernels that move the decode position as well as doing their work (a pick writes the
/// next position; advance_pos adds a pass's rows). Left out of a timing study, the position
/// stays at 0 through the prompt and every step after it, and the attention reads one key
/// instead of the context: session 13 read 96.6 µs a token "saved" by leaving out
/// argmax_f32 on the Llama-2-7B shape, where the scan itself costs none (H200).
const MOVES_POSITION: [&str; 4] = [
    "argmax_f32",
    "argmax_f32_cluster",
    "sample_topk",
    "advance_pos",
];

/// Whether a timing study may leave `name` out (`GpuKernels::skip_kernels`).
fn check_skippable(name: &str) -> Result<()> {
    if MOVES_POSITION.contains(&name) {
        return Err(KernelError::SkipMovesPosition { name: name.into() });
    }
    Ok(())
}

pub type Result<T> = std::result::Result<T, KernelError>;

/// Where the code objects are: $GRETA_KERNELS_DIR, else `kernels/` beside the executable,
/// else the workspace's target/kernels (a development build).
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GRETA_KERNELS_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.join("kernels")))
        .filter(|d| d.is_dir())
    {
        return d;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/kernels"))
}

/// The targets a platform's GPU may be, in the order their objects are tried (a code object
/// for another architecture fails to load, so the first that loads is the device's).
fn candidates(p: Platform) -> &'static [(&'static str, &'static str)] {
    match p {
        Platform::Nvidia => &[("sm_90a", "cubin")],
        Platform::Amd => &[("gfx942", "hsaco"), ("gfx90a", "hsaco")],
    }
}

fn grid1(n: usize, block: u32) -> LaunchDims {
    LaunchDims {
        grid: [n.div_ceil(block as usize) as u32, 1, 1],
        block: [block, 1, 1],
        shared_bytes: 0,
        cluster: 1,
    }
}

fn rows(rows: usize, block: u32) -> LaunchDims {
    LaunchDims {
        grid: [rows as u32, 1, 1],
        block: [block, 1, 1],
        shared_bytes: 0,
        cluster: 1,
    }
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        KernelError::Shape(format!(
            "{what} = {v} does not fit the kernels' 32-bit sizes"
        ))
    })
}

/// Pointers to launch arguments: each value boxed so its address is stable.
struct Args(Vec<Box<dyn std::any::Any>>);

impl Args {
    fn new() -> Self {
        Args(Vec::new())
    }
    fn ptr<T: Copy>(mut self, b: &DeviceBuffer<T>) -> Self {
        self.0.push(Box::new(b.ptr().addr() as u64));
        self
    }
    /// A null pointer (an absent operand the kernel does not read).
    fn null(mut self) -> Self {
        self.0.push(Box::new(0u64));
        self
    }
    /// An optional operand: its pointer, or null when absent.
    fn ptr_or_null<T: Copy>(self, b: Option<&DeviceBuffer<T>>) -> Self {
        match b {
            Some(b) => self.ptr(b),
            None => self.null(),
        }
    }
    /// A TMA descriptor, by value.
    fn tmap(mut self, m: TensorMap) -> Self {
        self.0.push(Box::new(m));
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.push(Box::new(v));
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.push(Box::new(v));
        self
    }
    fn f32(mut self, v: f32) -> Self {
        self.0.push(Box::new(v));
        self
    }
    fn pointers(&mut self) -> Vec<*mut c_void> {
        self.0
            .iter_mut()
            .map(|b| (&mut **b as *mut dyn std::any::Any).cast::<c_void>())
            .collect()
    }
}

/// `rows` rows of `len` values.
#[derive(Debug, Clone, Copy)]
pub struct Rows {
    pub rows: usize,
    pub len: usize,
}

/// The shape of a RoPE call: `rows` rows of `n_heads` heads of `head_dim`; `half_split`
/// pairs (i, i + d/2) as Hugging Face does, else (2i, 2i+1) as GGUF weights need.
#[derive(Debug, Clone, Copy)]
pub struct RopeShape {
    pub rows: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub half_split: bool,
}

/// The RMSNorm a decode product applies in its prologue (`gemv3_norm`,
/// `gate_up_silu_norm`): weights `w`, `eps`, and where block 0 writes the normalised row.
pub struct NormIn<'a> {
    pub w: &'a DeviceBuffer<f32>,
    pub eps: f32,
    pub out: &'a mut DeviceBuffer<f32>,
}

/// Where a kernel that writes an f32 activation also writes that activation's f16 operands
/// for the matrix units: `hi` and, for a product that reads its input as hi + lo, `lo`
/// (bitwise what `split_f16` makes of the f32 output).
pub struct F16Operands<'a> {
    pub hi: &'a mut DeviceBuffer<u16>,
    pub lo: Option<LoOperand<'a>>,
}

/// The low half of a split input: f16 (`split_f16`'s), or FP8 (`--split-lo fp8`): one byte
/// a value, e5m2(lo x 2^LO8_SCALE_LOG2) (kernels/greta_device.h).
pub enum LoOperand<'a> {
    F16(&'a mut DeviceBuffer<u16>),
    Fp8(&'a mut DeviceBuffer<u8>),
}

impl LoOperand<'_> {
    /// The f16 buffer, where the low half is f16.
    fn f16(&self) -> Option<&DeviceBuffer<u16>> {
        match self {
            LoOperand::F16(b) => Some(b),
            LoOperand::Fp8(_) => None,
        }
    }
    /// The FP8 bytes, where the low half is FP8.
    fn fp8(&self) -> Option<&DeviceBuffer<u8>> {
        match self {
            LoOperand::F16(_) => None,
            LoOperand::Fp8(q) => Some(q),
        }
    }
}

/// A GEMM's low half of its input (`gemm_f16`): see `LoOperand`.
#[derive(Clone, Copy)]
pub enum GemmLo<'a> {
    F16(&'a DeviceBuffer<u16>),
    Fp8(&'a DeviceBuffer<u8>),
}

/// log2 of the one fixed scale of the FP8 low halves (G_LO8_SCALE_LOG2 in
/// kernels/greta_device.h; greta-trace's `f16lo8` emulation has the same rule): a byte
/// holds e5m2(lo x 2^11).
pub const LO8_SCALE_LOG2: i32 = 11;

/// An f16 weight matrix's FP8 e4m3 copy for the lo products of `--split-lo fp8`: `q` [rows,
/// k] bytes under one power-of-two scale, `scale` (`quantize_e4m3`).
pub struct E4m3Matrix {
    pub q: DeviceBuffer<u8>,
    pub scale: DeviceBuffer<f32>,
    /// The largest |w| as f32 bits (quantize_e4m3's first kernel's atomic max).
    absmax: DeviceBuffer<u32>,
}

impl E4m3Matrix {
    pub fn alloc(gpu: &Gpu, rows: usize, k: usize) -> Result<Self> {
        Ok(E4m3Matrix {
            q: gpu.alloc::<u8>(rows * k)?,
            scale: gpu.alloc::<f32>(1)?,
            absmax: gpu.alloc::<u32>(1)?,
        })
    }
}

/// 4-float vectors a thread of `add_rmsnorm_split` keeps (kernels/ops.hip's NORM_SPLIT_VECS).
const NORM_SPLIT_VECS: usize = 4;
/// The longest row `add_rmsnorm_split` takes: NORM_SPLIT_VECS vectors for each of 1024 threads.
pub const NORM_SPLIT_MAX_D: usize = 4 * NORM_SPLIT_VECS * 1024;

/// The longest row a product with the norm in its prologue takes: x in LDS, 48 KiB.
pub const NORM_PROLOGUE_MAX_K: usize = 12 * 1024;

pub struct GpuKernels {
    pub object: PathBuf,
    /// Launch each kernel so that it may start while the one ahead of it drains (hiprt's
    /// `launch_overlapped`: programmatic dependent launch on NVIDIA sm_90; plain stream
    /// order on AMD, which has no such launch). On by default; off gives plain launches to
    /// compare with. Every kernel waits for its predecessor before touching shared data
    /// (kernels/greta_device.h), so results are the same either way.
    pub overlap: bool,
    /// The greedy pick over a thread-block cluster where clusters run (`argmax`); off, the
    /// one-block kernel every platform has (the op test runs both).
    pub cluster_argmax: bool,
    /// A timing study's kernels (`skip_kernels`): their launches are left out.
    skip: Vec<String>,
    /// The (kernel, blocks, threads) launched since `record_launches`, for a timing study's
    /// labels (`greta bench --timeline`: the stamps know a launch's module and shape only).
    launched: Option<std::sync::Mutex<std::collections::BTreeSet<(String, u32, u32)>>>,
    /// Threads per wave (warp) of the device: 64 on CDNA, 32 on NVIDIA.
    wave: u32,
    /// Whether launches may run in thread-block clusters (NVIDIA's sm_90a objects): the
    /// split decode attention then combines a head's splits in one cluster.
    clusters: bool,
    /// The loaded code objects by kernels/*.hip stem: they keep the functions alive,
    /// `skip_kernels` looks names up in them, and `timeline` reads their rings.
    modules: Vec<(&'static str, Module)>,
    kv_append: Function,
    attn_scores: Function,
    attn_softmax: Function,
    attn_context: Function,
    attn_prefill_flash: Function,
    /// The register-resident prefill attention for head_dim 64 and 128 (NVIDIA only; see
    /// `attention`).
    attn_prefill_fa: Option<[Function; 2]>,
    /// The split decode attention by head_dim (16, 32, .. 128: index head_dim / 16 - 1), and
    /// its form with the token's RoPE and KV append (none at 112; see kernels/attention.hip).
    attn_decode_split: [Function; DECODE_HEAD_DIMS],
    attn_decode_rope: [Option<Function>; DECODE_HEAD_DIMS],
    advance_pos: Function,
    gemm_mma: Function,
    /// The k % 8 == 0 fast path (f16 activations) by tile size: 128, 64, 32 (see `gemm_f16`).
    gemm_f16: [(usize, u32, Function); 3],
    /// The same products on Hopper's warpgroup matrix units, by tile (`WgmmaTile::ALL`;
    /// sm_90a objects only).
    gemm_f16_wgmma: Option<[(WgmmaTile, Function); 4]>,
    /// Their SwiGLU forms (gate and up with act's operands in the epilogue), by tile
    /// (`WgmmaTile::SWIGLU`; sm_90a objects only).
    gemm_f16_wgmma_swiglu: Option<[(WgmmaTile, Function); 4]>,
    /// Its forms with the lo half on the FP8 matrix units (`GemmLo::Fp8`), by tile
    /// (`WgmmaTile::LO8`), with the kernels that make FP8 operands.
    fp8: Option<Fp8Kernels>,
    /// The device's multiprocessors: the warpgroup GEMM's tile choice and the decode
    /// attention's clusters (`decode_cluster`) count waves of them, and the prefill flash
    /// attention orders its blocks by them (0 where there is no warpgroup GEMM).
    multiprocessors: usize,
    /// The dynamic shared memory a small decode product's block takes so that at most two
    /// share a multiprocessor (`spread_shared`); 0 where launches never overlap.
    spread_pad: u32,
    split_f16: Function,
    add_rmsnorm_split: Function,
    silu_mul_split: Function,
    gemm_plain: Function,
    sample_topk: Function,
    embed: Function,
    rmsnorm: Function,
    rope: Function,
    silu_mul: Function,
    add_rmsnorm: Function,
    rope_qk_append: Function,
    /// rope_qk_append four pairs a thread (head_dim % 8 == 0).
    rope_qk_append_x4: Function,
    gemv3: Function,
    gemv3_r2: Function,
    gemv3_norm: [Function; 2],
    gemv_add: [Function; 2],
    /// gemv_add for rows of more than two load groups (`gemv_add`).
    gemv_add_pre2: Function,
    gate_up_silu: Function,
    gate_up_silu_norm: Function,
    gemv_plain: Function,
    argmax: Function,
    /// argmax over a cluster of ARGMAX_CLUSTER blocks (where clusters run).
    argmax_cluster: Option<Function>,
}

/// The FP8 low-half kernels (sm_90a objects only; kernels/gemm.hip, ops.hip).
struct Fp8Kernels {
    gemm: [(WgmmaTile, Function); 2],
    split: Function,
    absmax: Function,
    quantize: Function,
}

const BLOCK: u32 = 256;
/// From this many rows on, the decode products take two rows per wave (`launch_rows`).
const TWO_PER_WAVE_FROM: usize = 16_384;
/// Halves a lane loads per group of a decode product's row (gemv.hip: 8 per 16-byte load,
/// UNROLL = 4 loads in flight).
const GEMV_GROUP_LANE_HALVES: usize = 8 * 4;
/// Threads of a norm's block: decode normalises one row, so one block does it all, and 1024
/// threads make each one's share (4 values of Llama-2-7B's 4096) one round of loads. The
/// fused add_rmsnorm and rmsnorm use the same size, which keeps them bitwise equal.
const NORM_BLOCK: u32 = 1024;

/// Threads of a block of a decode product with the norm in its prologue. Every block
/// normalises x for its rows, so a larger block makes fewer prologues (each reads x and the
/// norm weights), and a block of k / 8 threads loads them in one round (two 4-float vectors
/// a thread: gemv.hip's NORM_VECS). Measured on an H200 (session 9): 512 threads for
/// Llama-2-7B's k = 4096 made decode 2.3 % faster than 256, while 512 for SmolLM2's 576
/// made it 4.5 % slower (36 blocks for Q/K/V leave most SMs idle): the smallest block that
/// loads in one round, from 256 up to 1024. (Q/K/V rows of more than two load groups now
/// take two rows a wave in 256-thread blocks instead: `gemv3_norm`, session 20.)
fn norm_block(k: usize) -> u32 {
    const VALUES_PER_THREAD: usize = 8;
    let need = k.div_ceil(VALUES_PER_THREAD);
    [BLOCK, 512, NORM_BLOCK]
        .into_iter()
        .find(|&b| b as usize >= need)
        .unwrap_or(NORM_BLOCK)
}

impl GpuKernels {
    pub fn load(gpu: &Gpu, dir: &Path) -> Result<Self> {
        let mut tried = Vec::new();
        for (target, ext) in candidates(gpu.platform()) {
            let path = dir.join(target).join(format!("ops.{ext}"));
            let Ok(image) = std::fs::read(&path) else {
                tried.push(format!("{target}/ops.{ext} (absent)"));
                continue;
            };
            let ops = match gpu.load_module(&image) {
                Ok(m) => m,
                Err(e) => {
                    tried.push(format!("{target}/ops.{ext} ({e})"));
                    continue;
                }
            };
            // The first object that loads names the target; the others must load too.
            let other = |stem: &str| -> Result<Module> {
                let p = dir.join(target).join(format!("{stem}.{ext}"));
                let image = std::fs::read(&p)
                    .map_err(|e| KernelError::Shape(format!("{}: {e}", p.display())))?;
                Ok(gpu.load_module(&image)?)
            };
            let plain_attn = other("fallback_attention")?;
            let plain_gemm = other("fallback_gemm")?;
            let attn = other("attention")?;
            let gemm = other("gemm")?;
            let gemv = other("gemv")?;
            let wave = match gpu.platform() {
                Platform::Nvidia => 32,
                Platform::Amd => 64,
            };
            // Hopper objects: thread-block clusters and the warpgroup GEMM.
            let hopper = gpu.platform() == Platform::Nvidia && *target == "sm_90a";
            // Where launches overlap (sm_90a), the small decode products spread their
            // blocks (`spread_shared`); their kernels may then take that much dynamic
            // shared memory.
            let spread_pad = match hopper {
                true => spread_pad(gpu.shared_per_multiprocessor()?),
                false => 0,
            };
            let product = |name: &str| -> Result<Function> {
                let f = gemv.function(name)?;
                if spread_pad > 0 {
                    f.set_max_dynamic_shared(spread_pad)?;
                }
                Ok(f)
            };
            return Ok(GpuKernels {
                object: path,
                overlap: true,
                cluster_argmax: true,
                skip: Vec::new(),
                launched: None,
                wave,
                clusters: hopper,
                embed: ops.function("embed_f16")?,
                rmsnorm: ops.function("rmsnorm_f32")?,
                rope: ops.function("rope_f32")?,
                silu_mul: ops.function("silu_mul_f32")?,
                add_rmsnorm: ops.function("add_rmsnorm_f32")?,
                rope_qk_append: ops.function("rope_qk_append_f16")?,
                rope_qk_append_x4: ops.function("rope_qk_append_x4_f16")?,
                gemv3: product("gemv3_f16")?,
                gemv3_r2: product("gemv3_f16_r2")?,
                gemv3_norm: [product("gemv3_norm_f16")?, product("gemv3_norm_f16_r2")?],
                gemv_add: [product("gemv_add_f16")?, product("gemv_add_f16_r2")?],
                gemv_add_pre2: gemv.function("gemv_add_f16_pre2")?,
                gate_up_silu: gemv.function("gemv_gate_up_silu_f16")?,
                gate_up_silu_norm: product("gemv_gate_up_silu_norm_f16")?,
                gemv_plain: ops.function("gemv_f16")?,
                argmax: ops.function("argmax_f32")?,
                argmax_cluster: match hopper {
                    true => Some(ops.function("argmax_f32_cluster")?),
                    false => None,
                },
                sample_topk: ops.function("sample_topk")?,
                kv_append: ops.function("kv_append_f16")?,
                advance_pos: ops.function("advance_pos")?,
                attn_scores: plain_attn.function("attn_scores")?,
                attn_softmax: plain_attn.function("attn_softmax")?,
                attn_context: plain_attn.function("attn_context")?,
                attn_prefill_flash: attn.function("attn_prefill_flash")?,
                attn_prefill_fa: match gpu.platform() {
                    Platform::Nvidia => {
                        let f64 = attn.function("attn_prefill_fa_64")?;
                        let f128 = attn.function("attn_prefill_fa_128")?;
                        f64.set_max_dynamic_shared(fa_shared_bytes(64))?;
                        f128.set_max_dynamic_shared(fa_shared_bytes(128))?;
                        Some([f64, f128])
                    }
                    Platform::Amd => None,
                },
                attn_decode_split: per_decode_head_dim(|hd| {
                    attn.function(&format!("attn_decode_split_hd{hd}"))
                })?,
                attn_decode_rope: per_decode_head_dim(|hd| {
                    (hd != DECODE_ROPE_NONE)
                        .then(|| attn.function(&format!("attn_decode_rope_split_hd{hd}")))
                        .transpose()
                })?,
                gemm_mma: gemm.function("gemm_f16w_mma")?,
                // (tile, threads per block): GEMM_F16 in kernels/gemm.hip.
                gemm_f16: [
                    (128, 8 * wave, gemm.function("gemm_f16_128")?),
                    (64, 4 * wave, gemm.function("gemm_f16_64")?),
                    (32, 4 * wave, gemm.function("gemm_f16_32")?),
                ],
                gemm_f16_wgmma: match hopper {
                    true => Some(wgmma_forms(&gemm, WgmmaTile::ALL, WgmmaTile::kernel)?),
                    false => None,
                },
                gemm_f16_wgmma_swiglu: match hopper {
                    true => Some(wgmma_forms(
                        &gemm,
                        WgmmaTile::SWIGLU,
                        WgmmaTile::swiglu_kernel,
                    )?),
                    false => None,
                },
                fp8: match hopper {
                    true => {
                        let tile = |t: WgmmaTile| -> Result<(WgmmaTile, Function)> {
                            let f = gemm.function(&format!("{}_lo8", t.kernel()))?;
                            f.set_max_dynamic_shared(wgmma_lo8_shared(t))?;
                            Ok((t, f))
                        };
                        let [a, b] = WgmmaTile::LO8;
                        Some(Fp8Kernels {
                            gemm: [tile(a)?, tile(b)?],
                            split: ops.function("split_f16_lo8")?,
                            absmax: ops.function("absmax_f16")?,
                            quantize: ops.function("quantize_e4m3")?,
                        })
                    }
                    false => None,
                },
                // Read only where the warpgroup GEMM runs, its one reader: an attribute
                // query no AMD GPU has run yet cannot stop the AMD load.
                multiprocessors: match hopper {
                    true => gpu.multiprocessors()?,
                    false => 0,
                },
                spread_pad,
                split_f16: ops.function("split_f16")?,
                add_rmsnorm_split: ops.function("add_rmsnorm_split_f16")?,
                silu_mul_split: ops.function("silu_mul_split_f16")?,
                gemm_plain: plain_gemm.function("gemm_f16w_fallback")?,
                modules: vec![
                    ("ops", ops),
                    ("fallback_attention", plain_attn),
                    ("fallback_gemm", plain_gemm),
                    ("attention", attn),
                    ("gemm", gemm),
                    ("gemv", gemv),
                ],
            });
        }
        Err(KernelError::Missing {
            platform: gpu.platform(),
            dir: dir.display().to_string(),
            tried: tried.join("; "),
        })
    }

    /// Refuses kernels built without the timeline (`cargo xtask build-kernels
    /// --timeline`, which gives every module its ring).
    pub fn require_timeline(&self) -> Result<()> {
        for (_, m) in &self.modules {
            if !m.has_global(timeline::COUNT_SYMBOL)? {
                let dir = self.object.parent().and_then(|p| p.parent());
                return Err(KernelError::NoTimeline {
                    dir: dir.unwrap_or(&self.object).display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// The timeline's rings of every module, read on `s` (see `timeline`); refused for
    /// kernels built without it.
    pub fn timeline(&self, s: &Stream) -> Result<Vec<timeline::Ring>> {
        self.require_timeline()?;
        let mut rings = Vec::new();
        for (name, m) in &self.modules {
            let n = m.read_global(timeline::COUNT_SYMBOL, s)?;
            let count = n
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| {
                    KernelError::Shape(format!("{name}: the timeline counter is not 4 bytes"))
                })?;
            rings.push(timeline::Ring {
                module: name,
                count,
                bytes: m.read_global(timeline::RING_SYMBOL, s)?,
            });
        }
        Ok(rings)
    }

    /// For a timing study: from now on, note each kernel's name with the shapes it is
    /// launched in (`launched_shapes`), so that the timeline's launches, which its stamps know
    /// by module and shape only, can be named. Launches replayed from a captured graph are
    /// the captured ones.
    pub fn record_launches(&mut self) {
        self.launched = Some(Default::default());
    }

    /// The (kernel, blocks, threads) launched since `record_launches`, sorted; empty if it
    /// was not called.
    pub fn launched_shapes(&self) -> Vec<(String, u32, u32)> {
        self.launched.as_ref().map_or_else(Vec::new, |set| {
            let set = set.lock().unwrap_or_else(|e| e.into_inner());
            set.iter().cloned().collect()
        })
    }

    /// For a timing study only (`greta bench --skip-kernels`): every later launch of these
    /// kernels (by name, as in the kernel objects) is left out, so that what a run saves is
    /// what the kernels cost where they stand (their work and their place in the chain of
    /// dependent launches). Every result computed after a skipped launch is wrong. A name no
    /// loaded object defines is refused, and so is a kernel that moves the decode position
    /// (a pick, advance_pos): without it the study would time a different step.
    pub fn skip_kernels(&mut self, names: &[String]) -> Result<()> {
        for n in names {
            check_skippable(n)?;
            if !self.modules.iter().any(|(_, m)| m.function(n).is_ok()) {
                return Err(KernelError::UnknownKernel {
                    name: n.clone(),
                    dir: self.object.display().to_string(),
                });
            }
        }
        self.skip = names.to_vec();
        Ok(())
    }

    /// The kernels a timing study leaves out (empty in every real run).
    pub fn skipped(&self) -> &[String] {
        &self.skip
    }

    fn launch(&self, f: &Function, dims: LaunchDims, s: &Stream, args: Args) -> Result<()> {
        self.launch_as(f, dims, s, args, self.overlap)
    }

    /// `launch`, never overlapped with the kernel ahead (it starts after all of the stream's
    /// earlier work has finished).
    fn launch_serial(&self, f: &Function, dims: LaunchDims, s: &Stream, args: Args) -> Result<()> {
        self.launch_as(f, dims, s, args, false)
    }

    fn launch_as(
        &self,
        f: &Function,
        dims: LaunchDims,
        s: &Stream,
        mut args: Args,
        overlapped: bool,
    ) -> Result<()> {
        if self.skip.iter().any(|n| n == f.name()) {
            return Ok(());
        }
        if let Some(set) = &self.launched {
            let shape = (dims.grid.iter().product(), dims.block.iter().product());
            let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
            set.insert((f.name().to_string(), shape.0, shape.1));
        }
        let mut p = args.pointers();
        // SAFETY: every launcher passes the kernel's parameters in order and type, and checks
        // the buffer sizes the kernel will touch; every kernel waits for its predecessor
        // (g_wait_previous) before touching memory another kernel writes or reads.
        unsafe {
            if overlapped {
                f.launch_overlapped(dims, s, &mut p)?
            } else {
                f.launch(dims, s, &mut p)?
            }
        };
        Ok(())
    }

    fn need<T: Copy>(b: &DeviceBuffer<T>, n: usize, what: &str) -> Result<()> {
        Self::need_of(b, n, what, "")
    }

    /// `need` for both halves of `ops` (lo where present) over `shape`, of launcher `what`.
    fn need_ops(ops: &F16Operands, shape: Rows, what: &str) -> Result<()> {
        let n = shape.rows * shape.len;
        Self::need_of(ops.hi, n, what, "hi")?;
        match &ops.lo {
            Some(LoOperand::F16(lo)) => Self::need_of(lo, n, what, "lo"),
            Some(LoOperand::Fp8(q)) => Self::need_of(q, n, what, "lo (FP8)"),
            None => Ok(()),
        }
    }

    /// Whether this device has the FP8 lo products (`GemmLo::Fp8`, `--split-lo fp8`):
    /// Hopper's objects.
    pub fn has_fp8_lo(&self) -> bool {
        self.fp8.is_some()
    }

    fn fp8(&self, what: &str) -> Result<&Fp8Kernels> {
        self.fp8.as_ref().ok_or_else(|| {
            KernelError::Shape(format!(
                "{what}: the FP8 low halves need an sm_90a device (Hopper's FP8 matrix units); use f16 low halves here"
            ))
        })
    }

    /// The argument for the FP8 form of `ops`' low half (its bytes; null where the low half
    /// is f16 or absent), refused where the device has no FP8 route.
    fn lo8_arg(&self, args: Args, ops: &F16Operands, what: &str) -> Result<Args> {
        match ops.lo.as_ref().and_then(|l| l.fp8()) {
            Some(q) => {
                self.fp8(what)?;
                Ok(args.ptr(q))
            }
            None => Ok(args.null()),
        }
    }

    /// The FP8 copy of an f16 weight matrix `w` [rows, k] (k % 16 == 0) into `out` under one
    /// power-of-two scale (kernels/ops.hip `absmax_f16`, then `quantize_e4m3`).
    pub fn quantize_e4m3(
        &self,
        s: &Stream,
        w: &DeviceBuffer<u16>,
        out: &mut E4m3Matrix,
        rows_n: usize,
        k: usize,
    ) -> Result<()> {
        let fp8 = self.fp8("quantize_e4m3")?;
        check_fp8_rows(k, "quantize_e4m3")?;
        let n = rows_n * k;
        Self::need(w, n, "quantize_e4m3 w")?;
        Self::need(&out.q, n, "quantize_e4m3 q")?;
        out.absmax.zero(s)?;
        // Enough blocks to fill the GPU; each strides over the rest.
        let grid = grid1(n.div_ceil(8).min(1024 * BLOCK as usize), BLOCK);
        let args = Args::new().ptr(w).u64(n as u64).ptr(&out.absmax);
        self.launch(&fp8.absmax, grid, s, args)?;
        let args = Args::new().ptr(w).u64(n as u64).ptr(&out.absmax);
        self.launch(&fp8.quantize, grid, s, args.ptr(&out.q).ptr(&out.scale))
    }

    /// hi = f16(x) (`split_f16`'s) and the FP8 low half of x [t, k] (k % 8 == 0): the
    /// operands of a product whose input no fused kernel wrote.
    pub fn split_f16_lo8(
        &self,
        s: &Stream,
        x: &DeviceBuffer<f32>,
        hi: &mut DeviceBuffer<u16>,
        q: &mut DeviceBuffer<u8>,
        shape: Rows,
    ) -> Result<()> {
        let f = &self.fp8("split_f16_lo8")?.split;
        let Rows { rows: t, len: k } = shape;
        if !k.is_multiple_of(8) || k == 0 {
            return Err(KernelError::Shape(format!(
                "split_f16_lo8: k = {k} (accepted: a positive multiple of 8)"
            )));
        }
        let n = t * k;
        Self::need(x, n, "split_f16_lo8 x")?;
        Self::need(hi, n, "split_f16_lo8 hi")?;
        Self::need(q, n, "split_f16_lo8 lo")?;
        if t == 0 {
            return Ok(());
        }
        // Eight values a thread (kernels/ops.hip).
        let args = Args::new().ptr(x).ptr(hi).ptr(q).u64(n as u64);
        self.launch(f, grid1(n.div_ceil(8), BLOCK), s, args)
    }

    /// `need` for buffer `name` of launcher `what` (the message is built only on failure:
    /// these checks run on every launch).
    fn need_of<T: Copy>(b: &DeviceBuffer<T>, n: usize, what: &str, name: &str) -> Result<()> {
        if b.len() < n {
            let sep = if name.is_empty() { "" } else { " " };
            return Err(KernelError::Shape(format!(
                "{what}{sep}{name}: buffer of {} elements, {n} needed",
                b.len()
            )));
        }
        Ok(())
    }

    /// out[r] = table[ids[r]] (f16 rows widened to f32). The first kernel of every pass, and
    /// never an overlapped launch: a pass starts once everything before it has finished,
    /// whether or not the host waited for it (the decode attention loads the earlier keys
    /// before its wait on that).
    pub fn embed(
        &self,
        s: &Stream,
        table: &DeviceBuffer<u16>,
        ids: &DeviceBuffer<u32>,
        out: &mut DeviceBuffer<f32>,
        n_rows: usize,
        d: usize,
    ) -> Result<()> {
        Self::need(ids, n_rows, "embed ids")?;
        Self::need(out, n_rows * d, "embed out")?;
        self.launch_serial(
            &self.embed,
            rows(n_rows, BLOCK),
            s,
            Args::new()
                .ptr(table)
                .ptr(ids)
                .ptr(out)
                .u32(u32_of(d, "d")?),
        )
    }

    pub fn rmsnorm(
        &self,
        s: &Stream,
        x: &DeviceBuffer<f32>,
        w: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
        shape: Rows,
        eps: f32,
    ) -> Result<()> {
        let Rows {
            rows: n_rows,
            len: d,
        } = shape;
        Self::need(x, n_rows * d, "rmsnorm x")?;
        Self::need(w, d, "rmsnorm w")?;
        Self::need(out, n_rows * d, "rmsnorm out")?;
        self.launch(
            &self.rmsnorm,
            rows(n_rows, NORM_BLOCK),
            s,
            Args::new()
                .ptr(x)
                .ptr(w)
                .ptr(out)
                .u32(u32_of(d, "d")?)
                .f32(eps),
        )
    }

    /// x += y, then out = rmsnorm(x) * w, per row (the residual add and the next norm in one
    /// launch; bitwise what `add` then `rmsnorm` give).
    #[allow(clippy::too_many_arguments)]
    pub fn add_rmsnorm(
        &self,
        s: &Stream,
        x: &mut DeviceBuffer<f32>,
        y: &DeviceBuffer<f32>,
        w: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
        shape: Rows,
        eps: f32,
    ) -> Result<()> {
        let Rows {
            rows: n_rows,
            len: d,
        } = shape;
        for (b, what) in [
            (&*x, "add_rmsnorm x"),
            (y, "add_rmsnorm y"),
            (&*out, "add_rmsnorm out"),
        ] {
            Self::need(b, n_rows * d, what)?;
        }
        Self::need(w, d, "add_rmsnorm w")?;
        self.launch(
            &self.add_rmsnorm,
            rows(n_rows, NORM_BLOCK),
            s,
            Args::new()
                .ptr(x)
                .ptr(y)
                .ptr(w)
                .ptr(out)
                .u32(u32_of(d, "d")?)
                .f32(eps),
        )
    }

    /// RoPE on q (`n_heads`) and k (`n_kv_heads`) in place, then k and v appended to the
    /// f16 caches at positions `*pos0..`: two `rope` and two `kv_append` calls in one launch,
    /// bitwise the same values.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_qk_append(
        &self,
        s: &Stream,
        [q, k]: [&mut DeviceBuffer<f32>; 2],
        v: &DeviceBuffer<f32>,
        [k_cache, v_cache]: [&mut DeviceBuffer<u16>; 2],
        pos0: &DeviceBuffer<u32>,
        inv_freq: &DeviceBuffer<f32>,
        shape: QkvRope,
    ) -> Result<()> {
        let QkvRope {
            rows: n_rows,
            n_heads,
            n_kv_heads,
            head_dim,
            half_split,
            ..
        } = shape;
        Self::need_rope_io(
            &shape,
            [q, k, v],
            [k_cache, v_cache],
            pos0,
            inv_freq,
            "rope_qk_append",
        )?;
        let args = Args::new()
            .ptr(q)
            .ptr(k)
            .ptr(v)
            .ptr(k_cache)
            .ptr(v_cache)
            .ptr(pos0)
            .ptr(inv_freq)
            .u32(u32_of(n_heads, "n_heads")?)
            .u32(u32_of(n_kv_heads, "n_kv_heads")?)
            .u32(u32_of(head_dim, "head_dim")?)
            .u32(half_split as u32);
        if head_dim.is_multiple_of(8) {
            // A thread for every four pairs of every head of a row.
            let quads = (n_heads + n_kv_heads) * head_dim / 8;
            let block = quads
                .next_multiple_of(self.wave as usize)
                .min(BLOCK as usize);
            let dims = LaunchDims {
                grid: [
                    u32_of(n_rows, "rows")?,
                    u32_of(quads.div_ceil(block), "rope blocks")?,
                    1,
                ],
                block: [block as u32, 1, 1],
                shared_bytes: 0,
                cluster: 1,
            };
            return self.launch(&self.rope_qk_append_x4, dims, s, args);
        }
        let dims = LaunchDims {
            grid: [
                u32_of(n_rows, "rows")?,
                u32_of(n_heads + n_kv_heads, "heads")?,
                1,
            ],
            block: [64, 1, 1],
            shared_bytes: 0,
            cluster: 1,
        };
        self.launch(&self.rope_qk_append, dims, s, args)
    }

    /// The size checks of a RoPE + KV append (`rope_qk_append`, `attention_rope`): q, k and
    /// v of `shape.rows` tokens, both caches of `shape.capacity` positions, the frequencies
    /// and the position; `what` names the caller in an error.
    fn need_rope_io(
        shape: &QkvRope,
        [q, k, v]: [&DeviceBuffer<f32>; 3],
        [k_cache, v_cache]: [&DeviceBuffer<u16>; 2],
        pos0: &DeviceBuffer<u32>,
        inv_freq: &DeviceBuffer<f32>,
        what: &str,
    ) -> Result<()> {
        let kv_row = shape.n_kv_heads * shape.head_dim;
        Self::need_of(q, shape.rows * shape.n_heads * shape.head_dim, what, "q")?;
        Self::need_of(k, shape.rows * kv_row, what, "k")?;
        Self::need_of(v, shape.rows * kv_row, what, "v")?;
        Self::need_of(k_cache, shape.capacity * kv_row, what, "k cache")?;
        Self::need_of(v_cache, shape.capacity * kv_row, what, "v cache")?;
        Self::need_of(inv_freq, shape.head_dim / 2, what, "inv_freq")?;
        Self::need_of(pos0, 1, what, "pos0")
    }

    /// RoPE in place on `[rows, n_heads * head_dim]`; row r at position `*pos0 + r`.
    pub fn rope(
        &self,
        s: &Stream,
        x: &mut DeviceBuffer<f32>,
        pos0: &DeviceBuffer<u32>,
        inv_freq: &DeviceBuffer<f32>,
        shape: RopeShape,
    ) -> Result<()> {
        let RopeShape {
            rows: n_rows,
            n_heads,
            head_dim,
            half_split,
        } = shape;
        Self::need(x, n_rows * n_heads * head_dim, "rope x")?;
        Self::need(inv_freq, head_dim / 2, "rope inv_freq")?;
        Self::need(pos0, 1, "rope pos0")?;
        let args = Args::new()
            .ptr(x)
            .ptr(pos0)
            .ptr(inv_freq)
            .u32(u32_of(n_heads, "n_heads")?)
            .u32(u32_of(head_dim, "head_dim")?)
            .u32(half_split as u32);
        self.launch(&self.rope, rows(n_rows, BLOCK), s, args)
    }

    pub fn silu_mul(
        &self,
        s: &Stream,
        gate: &DeviceBuffer<f32>,
        up: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
        n: usize,
    ) -> Result<()> {
        for (b, w) in [(gate, "gate"), (up, "up")] {
            Self::need(b, n, w)?;
        }
        Self::need(out, n, "silu_mul out")?;
        self.launch(
            &self.silu_mul,
            grid1(n, BLOCK),
            s,
            Args::new().ptr(gate).ptr(up).ptr(out).u32(u32_of(n, "n")?),
        )
    }

    /// y[n] = w[n, k] · x[k], f16 weights (decode): one row per wave (two from 16k rows on),
    /// 16-byte loads; the Q/K/V kernel with one matrix.
    pub fn gemv(
        &self,
        s: &Stream,
        w: &DeviceBuffer<u16>,
        x: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<f32>,
        n: usize,
        k: usize,
    ) -> Result<()> {
        Self::need(w, n * k, "gemv w")?;
        Self::need(x, k, "gemv x")?;
        Self::need(y, n, "gemv y")?;
        let args = Args::new()
            .ptr(w)
            .ptr(y)
            .u32(u32_of(n, "n")?)
            .null()
            .null()
            .u32(0)
            .null()
            .null()
            .u32(0)
            .ptr(x)
            .u32(u32_of(k, "k")?);
        self.launch_gemv3(n, s, args)
    }

    /// gemv3_f16 takes one row per wave, gemv3_f16_r2 two: more waves keep more loads in
    /// flight until the rows are many (measured on an H200: Llama-2-7B's 4096-row output
    /// projection at 0.56 of copy bandwidth with two rows per wave; the 32000-row LM head at
    /// 0.89). `pair`: the one-row and two-row kernels of one product family.
    /// `block`: threads per block (`BLOCK`, or `norm_block` for the norm-prologue forms).
    #[allow(clippy::too_many_arguments)]
    fn launch_rows(
        &self,
        [one, two]: [&Function; 2],
        rows: usize,
        block: u32,
        shared_bytes: u32,
        s: &Stream,
        args: Args,
    ) -> Result<()> {
        let (f, items) = if rows >= TWO_PER_WAVE_FROM {
            (two, rows.div_ceil(2))
        } else {
            (one, rows)
        };
        self.launch(f, self.product_dims(items, block, shared_bytes), s, args)
    }

    /// A decode product's launch: `wave_rows_of(items, block)` with the `shared` bytes it
    /// needs, or the spread pad where `spread_shared` gives it one (launches overlapping).
    fn product_dims(&self, items: usize, block: u32, shared: u32) -> LaunchDims {
        let dims = self.wave_rows_of(items, block);
        let spread = self
            .overlap
            .then_some((self.multiprocessors, self.spread_pad));
        LaunchDims {
            shared_bytes: spread_shared(dims.grid[0] as usize, shared, spread),
            ..dims
        }
    }

    fn launch_gemv3(&self, rows: usize, s: &Stream, args: Args) -> Result<()> {
        self.launch_rows([&self.gemv3, &self.gemv3_r2], rows, BLOCK, 0, s, args)
    }

    /// The LDS a product with the norm in its prologue takes (x for one row), after
    /// checking that the kernels take this row length: a multiple of 4 (16-byte loads) whose
    /// row fits the 48 KiB every launch may have.
    pub fn norm_prologue_bytes(k: usize) -> Result<u32> {
        if k == 0 || !k.is_multiple_of(4) || k > NORM_PROLOGUE_MAX_K {
            return Err(KernelError::Shape(format!(
                "a product with the norm in its prologue takes rows of a multiple of 4 up to {NORM_PROLOGUE_MAX_K}; got {k}"
            )));
        }
        Ok(4 * k as u32)
    }

    /// Q, K and V of one token from the residual stream x: each block normalises x itself
    /// (`norm`: rmsnorm's weights and eps; block 0 writes the normalised row to `norm.out`),
    /// then as `gemv3`. Decode's attention norm without a launch of its own. The dot
    /// products take x · w first and the rms scale after, so y differs from rmsnorm then
    /// gemv3 by rounding (a few f32 ulps).
    #[allow(clippy::too_many_arguments)]
    pub fn gemv3_norm(
        &self,
        s: &Stream,
        ws: [&DeviceBuffer<u16>; 3],
        ns: [usize; 3],
        x: &DeviceBuffer<f32>,
        norm: NormIn,
        ys: [&mut DeviceBuffer<f32>; 3],
        k: usize,
    ) -> Result<()> {
        let shared = Self::norm_prologue_bytes(k)?;
        let args = Self::stacked_args(ws, ns, x, ys, k, "gemv3_norm")?;
        let args = Self::norm_args(args, norm, k, "gemv3_norm")?;
        let [a, b] = &self.gemv3_norm;
        let rows: usize = ns.iter().sum();
        // Rows of more than two load groups (Llama-2-7B's k = 4096 on NVIDIA): two rows a
        // wave (76 registers) in 8-wave blocks, three an SM, 24 waves of 4 KiB of weights
        // in flight against 32 of 2 KiB at one row a wave in 16-wave blocks; the norm
        // prologue then loads x in two rounds. H200, session 20, five rounds over two
        // calls: 7B decode +0.3 to +0.7 %. The same two rows a wave in 16-wave blocks (one
        // an SM) measured −1.1 % (session 18), in 32-wave blocks at one row −3.7 %.
        let group = GEMV_GROUP_LANE_HALVES * self.wave as usize;
        if k > 2 * group {
            let dims = self.product_dims(rows.div_ceil(2), BLOCK, shared);
            return self.launch(b, dims, s, args);
        }
        self.launch_rows([a, b], rows, norm_block(k), shared, s, args)
    }

    /// y = w · x and resid += y in one launch (decode's output and down projections with
    /// the residual add behind them; resid gets exactly resid + y). Rows of more than two
    /// load groups (`GEMV_GROUP_LANE_HALVES` halves a lane: k > 2048 on NVIDIA, Llama-2-7B's
    /// output and down products) take gemv_add_f16_pre2, which loads two groups of each row
    /// before waiting for the kernel ahead, not one: the same sums, bit for bit, with more
    /// bytes in flight under that kernel's tail (H200: 7B decode +1.4 %; SmolLM2's shorter
    /// down rows measured 2 % slower with it, so they keep the one-group kernel), and two
    /// rows a wave sharing the loads of x (+2.7 % more, session 18).
    #[allow(clippy::too_many_arguments)]
    pub fn gemv_add(
        &self,
        s: &Stream,
        w: &DeviceBuffer<u16>,
        x: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<f32>,
        resid: &mut DeviceBuffer<f32>,
        n: usize,
        k: usize,
    ) -> Result<()> {
        Self::need(w, n * k, "gemv_add w")?;
        Self::need(x, k, "gemv_add x")?;
        Self::need(y, n, "gemv_add y")?;
        Self::need(resid, n, "gemv_add resid")?;
        let args = Args::new()
            .ptr(w)
            .ptr(y)
            .u32(u32_of(n, "n")?)
            .ptr(x)
            .u32(u32_of(k, "k")?)
            .ptr(resid);
        let group = GEMV_GROUP_LANE_HALVES * self.wave as usize;
        if k.is_multiple_of(8) && k > 2 * group && n < TWO_PER_WAVE_FROM {
            return self.launch(&self.gemv_add_pre2, self.wave_rows(n.div_ceil(2)), s, args);
        }
        let [a, b] = &self.gemv_add;
        self.launch_rows([a, b], n, BLOCK, 0, s, args)
    }

    /// Three products of one x in one launch (Q, K and V of a decode step):
    /// `ys[i][..ns[i]] = ws[i][ns[i], k] · x`.
    pub fn gemv3(
        &self,
        s: &Stream,
        ws: [&DeviceBuffer<u16>; 3],
        ns: [usize; 3],
        x: &DeviceBuffer<f32>,
        ys: [&mut DeviceBuffer<f32>; 3],
        k: usize,
    ) -> Result<()> {
        let args = Self::stacked_args(ws, ns, x, ys, k, "gemv3")?;
        self.launch_gemv3(ns.iter().sum(), s, args)
    }

    /// The arguments of the stacked products (w, y, n of each of three, then x, k), after
    /// checking every buffer's size; `what` names the caller in an error.
    fn stacked_args(
        ws: [&DeviceBuffer<u16>; 3],
        ns: [usize; 3],
        x: &DeviceBuffer<f32>,
        ys: [&mut DeviceBuffer<f32>; 3],
        k: usize,
        what: &str,
    ) -> Result<Args> {
        Self::need_of(x, k, what, "x")?;
        let mut args = Args::new();
        for ((w, y), n) in ws.into_iter().zip(ys).zip(ns) {
            Self::need_of(w, n * k, what, "w")?;
            Self::need_of(y, n, what, "y")?;
            args = args.ptr(w).ptr(y).u32(u32_of(n, "n")?);
        }
        Ok(args.ptr(x).u32(u32_of(k, "k")?))
    }

    /// `args` followed by the norm's (weights, where block 0 writes the normalised row,
    /// eps), after checking their sizes against the row length k.
    fn norm_args(args: Args, norm: NormIn, k: usize, what: &str) -> Result<Args> {
        Self::need_of(norm.w, k, what, "norm weights")?;
        Self::need_of(norm.out, k, what, "normed")?;
        Ok(args.ptr(norm.w).ptr(norm.out).f32(norm.eps))
    }

    /// gate = w_gate · x, up = w_up · x, act = silu(gate) * up (decode's SwiGLU FFN input
    /// in one launch; `act` is bitwise what `silu_mul` gives from the same gate and up).
    #[allow(clippy::too_many_arguments)]
    pub fn gate_up_silu(
        &self,
        s: &Stream,
        w_gate: &DeviceBuffer<u16>,
        w_up: &DeviceBuffer<u16>,
        x: &DeviceBuffer<f32>,
        [gate, up, act]: [&mut DeviceBuffer<f32>; 3],
        n: usize,
        k: usize,
    ) -> Result<()> {
        let args = Self::gate_up_args([w_gate, w_up], x, [gate, up, act], n, k, "gate_up_silu")?;
        self.launch(&self.gate_up_silu, self.wave_rows(n), s, args)
    }

    /// The arguments of the gate/up products (w_gate, w_up, x, gate, up, act, n, k), after
    /// checking every buffer's size; `what` names the caller in an error.
    fn gate_up_args(
        [w_gate, w_up]: [&DeviceBuffer<u16>; 2],
        x: &DeviceBuffer<f32>,
        [gate, up, act]: [&mut DeviceBuffer<f32>; 3],
        n: usize,
        k: usize,
        what: &str,
    ) -> Result<Args> {
        Self::need_of(w_gate, n * k, what, "w_gate")?;
        Self::need_of(w_up, n * k, what, "w_up")?;
        Self::need_of(x, k, what, "x")?;
        for (b, name) in [(&*gate, "gate"), (&*up, "up"), (&*act, "act")] {
            Self::need_of(b, n, what, name)?;
        }
        Ok(Args::new()
            .ptr(w_gate)
            .ptr(w_up)
            .ptr(x)
            .ptr(gate)
            .ptr(up)
            .ptr(act)
            .u32(u32_of(n, "n")?)
            .u32(u32_of(k, "k")?))
    }

    /// `gate_up_silu` from the residual stream x with the FFN norm in the prologue (as
    /// `gemv3_norm`: block 0 writes the normalised row to `norm.out`).
    #[allow(clippy::too_many_arguments)]
    pub fn gate_up_silu_norm(
        &self,
        s: &Stream,
        w_gate: &DeviceBuffer<u16>,
        w_up: &DeviceBuffer<u16>,
        x: &DeviceBuffer<f32>,
        norm: NormIn,
        [gate, up, act]: [&mut DeviceBuffer<f32>; 3],
        n: usize,
        k: usize,
    ) -> Result<()> {
        let shared = Self::norm_prologue_bytes(k)?;
        let what = "gate_up_silu_norm";
        let args = Self::gate_up_args([w_gate, w_up], x, [gate, up, act], n, k, what)?;
        let args = Self::norm_args(args, norm, k, what)?;
        let dims = self.product_dims(n, norm_block(k), shared);
        self.launch(&self.gate_up_silu_norm, dims, s, args)
    }

    /// Blocks of BLOCK threads with one wave per item.
    fn wave_rows(&self, items: usize) -> LaunchDims {
        self.wave_rows_of(items, BLOCK)
    }

    /// Blocks of `block` threads (a multiple of the wave) with one wave per item.
    fn wave_rows_of(&self, items: usize, block: u32) -> LaunchDims {
        let waves = (block / self.wave) as usize;
        LaunchDims {
            grid: [items.div_ceil(waves).max(1) as u32, 1, 1],
            block: [block, 1, 1],
            shared_bytes: 0,
            cluster: 1,
        }
    }

    /// The same product by the plain block-per-row kernel (the baseline of `gemv`).
    pub fn gemv_plain(
        &self,
        s: &Stream,
        w: &DeviceBuffer<u16>,
        x: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<f32>,
        n: usize,
        k: usize,
    ) -> Result<()> {
        Self::need(w, n * k, "gemv w")?;
        Self::need(x, k, "gemv x")?;
        Self::need(y, n, "gemv y")?;
        self.launch(
            &self.gemv_plain,
            rows(n, BLOCK),
            s,
            Args::new().ptr(w).ptr(x).ptr(y).u32(u32_of(k, "k")?),
        )
    }

    /// The argmax of x[..n] (first on ties), computed on the device, as a pick: to
    /// `at.out[0]`, with the position advanced and the token kept (see [`PickAt`]).
    pub fn argmax(
        &self,
        s: &Stream,
        x: &DeviceBuffer<f32>,
        n: usize,
        at: PickAt<'_>,
    ) -> Result<()> {
        Self::need(x, n, "argmax x")?;
        let args = at.args(Args::new().ptr(x).u32(u32_of(n, "n")?), "argmax")?;
        match self.argmax_cluster.as_ref().filter(|_| self.cluster_argmax) {
            // One cluster: its blocks split the scan (kernels/ops.hip).
            Some(f) => {
                let dims = LaunchDims {
                    grid: [ARGMAX_CLUSTER, 1, 1],
                    block: [1024, 1, 1],
                    shared_bytes: 0,
                    cluster: ARGMAX_CLUSTER,
                };
                self.launch(f, dims, s, args)
            }
            None => self.launch(&self.argmax, rows(1, 1024), s, args),
        }
    }

    /// y[t, n] = x[t, k] · w[n, k]ᵀ (f16 weights) on the matrix units (MFMA / HMMA) for any
    /// shape: each f32 activation enters as two f16 (hi + lo), accumulation is f32. The
    /// model's prefill uses `split_f16` + `gemm_f16` where k % 8 == 0 (every Llama shape).
    pub fn gemm(
        &self,
        s: &Stream,
        x: &DeviceBuffer<f32>,
        w: &DeviceBuffer<u16>,
        y: &mut DeviceBuffer<f32>,
        shape: MatShape,
    ) -> Result<()> {
        self.launch_gemm(&self.gemm_mma, (64, 4 * self.wave), s, x, w, y, shape)
    }

    /// The matrix units' operands for `n` activations: `hi` = f16(x) and, when `lo` is given,
    /// `lo` = f16(x - hi).
    pub fn split_f16(
        &self,
        s: &Stream,
        x: &DeviceBuffer<f32>,
        hi: &mut DeviceBuffer<u16>,
        lo: Option<&mut DeviceBuffer<u16>>,
        n: usize,
    ) -> Result<()> {
        Self::need(x, n, "split_f16 x")?;
        Self::need(hi, n, "split_f16 hi")?;
        if let Some(lo) = &lo {
            Self::need(lo, n, "split_f16 lo")?;
        }
        let args = Args::new().ptr(x).ptr(hi).ptr_or_null(lo.as_deref());
        self.launch(
            &self.split_f16,
            grid1(n.div_ceil(8), BLOCK),
            s,
            args.u32(u32_of(n, "n")?),
        )
    }

    /// x += y per row where `y` is given, then out = rmsnorm(x) · w, and `ops` what
    /// `split_f16` makes of out, bitwise, in one launch: the prefill's norms ahead of a
    /// product on the matrix units. out's values are `add_rmsnorm`'s / `rmsnorm`'s summed in
    /// another order; `out: None` stores only the operands (the model's untraced prefill:
    /// nothing else reads out). Requires d % 4 == 0 and d ≤ `NORM_SPLIT_MAX_D`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_rmsnorm_split(
        &self,
        s: &Stream,
        x: &mut DeviceBuffer<f32>,
        y: Option<&DeviceBuffer<f32>>,
        w: &DeviceBuffer<f32>,
        out: Option<&mut DeviceBuffer<f32>>,
        ops: F16Operands,
        shape: Rows,
        eps: f32,
    ) -> Result<()> {
        let Rows {
            rows: n_rows,
            len: d,
        } = shape;
        if !d.is_multiple_of(4) || d > NORM_SPLIT_MAX_D {
            return Err(KernelError::Shape(format!(
                "add_rmsnorm_split: d = {d} (accepted: a multiple of 4 up to {NORM_SPLIT_MAX_D})"
            )));
        }
        let n = n_rows * d;
        Self::need(x, n, "add_rmsnorm_split x")?;
        if let Some(y) = y {
            Self::need(y, n, "add_rmsnorm_split y")?;
        }
        Self::need(w, d, "add_rmsnorm_split w")?;
        if let Some(out) = &out {
            Self::need(out, n, "add_rmsnorm_split out")?;
        }
        Self::need_ops(&ops, shape, "add_rmsnorm_split")?;
        // About four vectors a thread: a block of d / 16 threads, in whole waves.
        let block = (d / 4)
            .div_ceil(4)
            .next_multiple_of(self.wave as usize)
            .min(1024) as u32;
        let args = Args::new()
            .ptr(x)
            .ptr_or_null(y)
            .ptr(w)
            .ptr_or_null(out.as_deref())
            .ptr(ops.hi)
            .ptr_or_null(ops.lo.as_ref().and_then(|l| l.f16()));
        let args = self.lo8_arg(args, &ops, "add_rmsnorm_split")?;
        let args = args.u32(u32_of(d, "d")?).f32(eps);
        self.launch(&self.add_rmsnorm_split, rows(n_rows, block), s, args)
    }

    /// act = silu(gate) · up (`silu_mul`'s values, bitwise) and `ops` what `split_f16`
    /// makes of act, bitwise, in one launch: the prefill's SwiGLU ahead of the down product.
    /// `act: None` stores only the operands.
    pub fn silu_mul_split(
        &self,
        s: &Stream,
        gate: &DeviceBuffer<f32>,
        up: &DeviceBuffer<f32>,
        act: Option<&mut DeviceBuffer<f32>>,
        ops: F16Operands,
        shape: Rows,
    ) -> Result<()> {
        let n = shape.rows * shape.len;
        for (b, what) in [(gate, "silu_mul_split gate"), (up, "silu_mul_split up")] {
            Self::need(b, n, what)?;
        }
        if let Some(act) = &act {
            Self::need(act, n, "silu_mul_split act")?;
        }
        Self::need_ops(&ops, shape, "silu_mul_split")?;
        let args = Args::new()
            .ptr(gate)
            .ptr(up)
            .ptr_or_null(act.as_deref())
            .ptr(ops.hi)
            .ptr_or_null(ops.lo.as_ref().and_then(|l| l.f16()));
        let args = self
            .lo8_arg(args, &ops, "silu_mul_split")?
            .u32(u32_of(n, "n")?);
        self.launch(&self.silu_mul_split, grid1(n.div_ceil(8), BLOCK), s, args)
    }

    /// Whether this device has the warpgroup GEMM (`GemmRoute::Wgmma`).
    pub fn has_wgmma(&self) -> bool {
        self.gemm_f16_wgmma.is_some()
    }

    /// y_i[t, n_i] = (a + a_lo)[t, k] · w_i[n_i, k]ᵀ for each product of `outs` (products
    /// that share their input: Q, K and V; gate and up), from f16 activations (`split_f16`'s
    /// output; `a_lo` left out: the activations as one f16), f32 accumulation, by the kernel
    /// `route` picks (`GemmRoute::Auto` in the model; the op tests check each). The warpgroup
    /// kernel computes up to three products per launch. Requires k % 8 == 0 (rows of 16
    /// bytes) and k > 0. An FP8 low half (`GemmLo::Fp8`: the lo products on the FP8 matrix
    /// units, each output's `w8` the weights' copy) takes the warpgroup kernel, k % 16 == 0.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f16(
        &self,
        route: GemmRoute,
        s: &Stream,
        a: &DeviceBuffer<u16>,
        lo: Option<GemmLo<'_>>,
        outs: &mut [GemmOut<'_>],
        t: usize,
        k: usize,
    ) -> Result<()> {
        if let Some(GemmLo::Fp8(q)) = lo {
            return self.gemm_f16_lo8(route, s, a, q, outs, t, k);
        }
        let a_lo = match lo {
            Some(GemmLo::F16(b)) => Some(b),
            _ => None,
        };
        if !k.is_multiple_of(8) || k == 0 {
            return Err(KernelError::Shape(format!(
                "gemm_f16 needs k > 0 and k % 8 == 0 (16-byte rows); k = {k} (use gemm, which takes any k > 0)"
            )));
        }
        Self::need(a, t * k, "gemm_f16 a")?;
        if let Some(lo) = a_lo {
            Self::need(lo, t * k, "gemm_f16 a_lo")?;
        }
        for o in outs.iter() {
            Self::need(o.w, o.n * k, "gemm_f16 w")?;
            Self::need(o.y, t * o.n, "gemm_f16 y")?;
        }
        if t == 0 {
            return Ok(()); // no rows: nothing to launch (a grid of zero blocks is an error)
        }
        match (route, &self.gemm_f16_wgmma) {
            (GemmRoute::Wgmma | GemmRoute::WgmmaTile(_), None) => Err(KernelError::Shape(
                "the warpgroup GEMM needs an sm_90a device (Hopper)".into(),
            )),
            (GemmRoute::Wgmma | GemmRoute::WgmmaTile(_) | GemmRoute::Auto, Some(tiles)) => {
                for group in outs.chunks_mut(3) {
                    let tile = match route {
                        GemmRoute::WgmmaTile(tile) => tile,
                        _ => wgmma_tile(t, group.iter().map(|o| o.n), self.multiprocessors),
                    };
                    let (_, f) = tiles.iter().find(|(tl, _)| *tl == tile).ok_or_else(|| {
                        KernelError::Shape(format!(
                            "no warpgroup GEMM of tile {tile:?}; the kernels have {:?}",
                            WgmmaTile::ALL
                        ))
                    })?;
                    self.gemm_f16_wgmma(f, tile, s, a, a_lo, group, t, k)?;
                }
                Ok(())
            }
            _ => {
                for o in outs.iter_mut() {
                    let (tile, block, f) = gemm_tile(&self.gemm_f16, t, o.n);
                    let dims = LaunchDims {
                        grid: [o.n.div_ceil(tile) as u32, t.div_ceil(tile) as u32, 1],
                        block: [block, 1, 1],
                        shared_bytes: 0,
                        cluster: 1,
                    };
                    self.launch(
                        f,
                        dims,
                        s,
                        Args::new()
                            .ptr(a)
                            .ptr_or_null(a_lo)
                            .ptr(o.w)
                            .ptr(o.y)
                            .u32(u32_of(t, "t")?)
                            .u32(u32_of(k, "k")?)
                            .u32(u32_of(o.n, "n")?),
                    )?;
                }
                Ok(())
            }
        }
    }

    /// `gemm_f16` with an FP8 low half: the warpgroup kernel's LO8 form (kernels/gemm.hip),
    /// on the tile `wgmma_tile` picks where it has that form, else 128 x 128.
    #[allow(clippy::too_many_arguments)]
    fn gemm_f16_lo8(
        &self,
        route: GemmRoute,
        s: &Stream,
        a: &DeviceBuffer<u16>,
        q: &DeviceBuffer<u8>,
        outs: &mut [GemmOut<'_>],
        t: usize,
        k: usize,
    ) -> Result<()> {
        let fp8 = self.fp8("gemm_f16 with an FP8 low half")?;
        check_fp8_rows(k, "gemm_f16 with an FP8 low half")?;
        Self::need(a, t * k, "gemm_f16 a")?;
        Self::need(q, t * k, "gemm_f16 a_lo (FP8)")?;
        for o in outs.iter() {
            Self::need(o.w, o.n * k, "gemm_f16 w")?;
            Self::need(o.y, t * o.n, "gemm_f16 y")?;
            let Some(w8) = o.w8 else {
                return Err(KernelError::Shape(
                    "gemm_f16 with an FP8 low half needs each product's FP8 weights (GemmOut::w8)"
                        .into(),
                ));
            };
            Self::need(&w8.q, o.n * k, "gemm_f16 w8")?;
            Self::need(&w8.scale, 1, "gemm_f16 w8 scale")?;
        }
        if t == 0 {
            return Ok(());
        }
        for group in outs.chunks_mut(3) {
            let tile = match route {
                GemmRoute::WgmmaTile(tile) => tile,
                GemmRoute::Auto | GemmRoute::Wgmma => {
                    let tile = wgmma_tile(t, group.iter().map(|o| o.n), self.multiprocessors);
                    match WgmmaTile::LO8.contains(&tile) {
                        true => tile,
                        false => WgmmaTile::LO8[0],
                    }
                }
                other => {
                    return Err(KernelError::Shape(format!(
                        "gemm_f16 with an FP8 low half runs on the warpgroup kernel only, not {other:?}"
                    )))
                }
            };
            let (_, f) = fp8.gemm.iter().find(|(tl, _)| *tl == tile).ok_or_else(|| {
                KernelError::Shape(format!(
                    "no FP8-lo warpgroup GEMM of tile {tile:?}; the kernels have {:?}",
                    WgmmaTile::LO8
                ))
            })?;
            let (m32, n32) = (tile.m as u32, tile.n as u32);
            // FP8 boxes of the f16 step's K: 64-byte rows (the 64-byte swizzle).
            let lo_box = WGMMA_BK;
            let mut args = Args::new()
                .tmap(a.tensor_map_f16(t, k, m32, WGMMA_BK)?)
                .tmap(q.tensor_map_u8(t, k, m32, lo_box)?);
            // Absent products (n = 0) repeat the last present one's maps and pointers.
            let at = |i: usize| i.min(group.len() - 1);
            for i in 0..3 {
                let o = &group[at(i)];
                args = args.tmap(o.w.tensor_map_f16(o.n, k, n32, WGMMA_BK)?);
            }
            for i in 0..3 {
                let o = &group[at(i)];
                let w8 = o.w8.expect("checked above");
                args = args.tmap(w8.q.tensor_map_u8(o.n, k, n32, lo_box)?);
            }
            for i in 0..3 {
                args = args.ptr(group[at(i)].y);
            }
            for i in 0..3 {
                args = args.ptr(&group[at(i)].w8.expect("checked above").scale);
            }
            let (args, dims) = wgmma_launch(args, tile, group, t, k, wgmma_lo8_shared(tile))?;
            self.launch(f, dims, s, args)?;
        }
        Ok(())
    }

    /// Whether this device has the warpgroup GEMM's SwiGLU forms (`gemm_f16_swiglu`).
    pub fn has_gemm_swiglu(&self) -> bool {
        self.gemm_f16_wgmma_swiglu.is_some()
    }

    /// The prefill's gate, up and SwiGLU in one launch (the warpgroup kernel's SwiGLU form):
    /// gate = (a + a_lo) · w_gateᵀ and up = (a + a_lo) · w_upᵀ over `t` rows of `k` (a, a_lo
    /// as `gemm_f16`'s; the low half f16 or absent), act = silu(gate) · up (`silu_mul`'s
    /// arithmetic, bitwise, on the kernel's own gate and up), and `out.ops` what
    /// `split_f16` makes of act, bitwise: `gemm_f16` then `silu_mul_split` in one launch,
    /// which writes 3 bytes an output (hi and an FP8 lo) where those wrote gate and up as
    /// f32 and read them back. `out`'s gate, up and act are stored only where
    /// given, all three or none (an observer wants them). `tile`: None picks by `wgmma_swiglu_tile`; the op
    /// tests force each. Hopper only; k % 8 == 0, k > 0.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f16_swiglu(
        &self,
        tile: Option<WgmmaTile>,
        s: &Stream,
        a: &DeviceBuffer<u16>,
        a_lo: Option<&DeviceBuffer<u16>>,
        [w_gate, w_up]: [&DeviceBuffer<u16>; 2],
        out: SwigluOut<'_>,
        shape: MatShape,
    ) -> Result<()> {
        let what = "gemm_f16_swiglu";
        let MatShape { t, k, n } = shape;
        let Some(tiles) = &self.gemm_f16_wgmma_swiglu else {
            return Err(KernelError::Shape(format!(
                "{what}: the SwiGLU GEMM is the warpgroup kernel's and needs an sm_90a device (Hopper); use gemm_f16 and silu_mul_split"
            )));
        };
        if !k.is_multiple_of(8) || k == 0 {
            return Err(KernelError::Shape(format!(
                "{what} needs k > 0 and k % 8 == 0 (16-byte rows); k = {k}"
            )));
        }
        Self::need(a, t * k, "gemm_f16_swiglu a")?;
        if let Some(lo) = a_lo {
            Self::need(lo, t * k, "gemm_f16_swiglu a_lo")?;
        }
        Self::need(w_gate, n * k, "gemm_f16_swiglu w_gate")?;
        Self::need(w_up, n * k, "gemm_f16_swiglu w_up")?;
        let SwigluOut { gate, up, act, ops } = out;
        let stored = [gate.is_some(), up.is_some(), act.is_some()];
        if stored.contains(&true) && stored.contains(&false) {
            return Err(KernelError::Shape(format!(
                "{what}: gate, up and act are stored all three or none (given: {stored:?})"
            )));
        }
        for (b, name) in [(&gate, "gate"), (&up, "up"), (&act, "act")] {
            if let Some(b) = b {
                Self::need_of(b, t * n, what, name)?;
            }
        }
        Self::need_ops(&ops, Rows { rows: t, len: n }, what)?;
        if t == 0 || n == 0 {
            return Ok(()); // nothing to compute (a grid of zero blocks is an error)
        }
        let tile = tile.unwrap_or_else(|| wgmma_swiglu_tile(t, n, self.multiprocessors));
        let (_, f) = tiles.iter().find(|(tl, _)| *tl == tile).ok_or_else(|| {
            KernelError::Shape(format!(
                "no SwiGLU warpgroup GEMM of tile {tile:?}; the kernels have {:?}",
                WgmmaTile::SWIGLU
            ))
        })?;
        let (m32, half) = (tile.m as u32, tile.n as u32 / 2);
        let ta = a.tensor_map_f16(t, k, m32, WGMMA_BK)?;
        let ta_lo = match a_lo {
            Some(lo) => lo.tensor_map_f16(t, k, m32, WGMMA_BK)?,
            None => ta,
        };
        let args = Args::new()
            .tmap(ta)
            .tmap(ta_lo)
            .tmap(w_gate.tensor_map_f16(n, k, half, WGMMA_BK)?)
            .tmap(w_up.tensor_map_f16(n, k, half, WGMMA_BK)?)
            .ptr_or_null(gate.as_deref())
            .ptr_or_null(up.as_deref())
            .ptr_or_null(act.as_deref())
            .ptr(ops.hi)
            .ptr_or_null(ops.lo.as_ref().and_then(|l| l.f16()));
        let args = self
            .lo8_arg(args, &ops, what)?
            .u32(u32_of(t, "t")?)
            .u32(u32_of(k, "k")?)
            .u32(u32_of(n, "n")?)
            .u32(a_lo.is_some() as u32);
        let dims = LaunchDims {
            grid: [
                t.div_ceil(tile.m) as u32,
                u32_of(n.div_ceil(tile.n / 2), "column tiles")?,
                1,
            ],
            block: [wgmma_threads(tile), 1, 1],
            shared_bytes: wgmma_shared(tile),
            cluster: 1,
        };
        self.launch(f, dims, s, args)
    }

    /// The warpgroup GEMM's tiles on this device (empty without one): the op tests run each.
    pub fn wgmma_tiles(&self) -> Vec<WgmmaTile> {
        self.gemm_f16_wgmma
            .iter()
            .flatten()
            .map(|(tile, _)| *tile)
            .collect()
    }

    /// Up to three products of `gemm_f16` in one launch of the warpgroup kernel of `tile`
    /// (checked by the caller: k % 8 == 0, k > 0 and the buffers' sizes). Its operands are
    /// read through TMA descriptors, made here per call (a host-side encode, no device work;
    /// the launch copies them by value).
    #[allow(clippy::too_many_arguments)]
    fn gemm_f16_wgmma(
        &self,
        f: &Function,
        tile: WgmmaTile,
        s: &Stream,
        a: &DeviceBuffer<u16>,
        a_lo: Option<&DeviceBuffer<u16>>,
        group: &mut [GemmOut<'_>],
        t: usize,
        k: usize,
    ) -> Result<()> {
        let (m32, n32) = (tile.m as u32, tile.n as u32);
        let ta = a.tensor_map_f16(t, k, m32, WGMMA_BK)?;
        let ta_lo = match a_lo {
            Some(lo) => lo.tensor_map_f16(t, k, m32, WGMMA_BK)?,
            None => ta,
        };
        let mut args = Args::new().tmap(ta).tmap(ta_lo);
        // Absent products (n = 0, no column tiles) repeat the last present one's pointers.
        for i in 0..3 {
            let o = &group[i.min(group.len() - 1)];
            args = args.tmap(o.w.tensor_map_f16(o.n, k, n32, WGMMA_BK)?);
        }
        for i in 0..3 {
            let o = &mut group[i.min(group.len() - 1)];
            args = args.ptr(o.y);
        }
        let (args, dims) = wgmma_launch(args, tile, group, t, k, wgmma_shared(tile))?;
        self.launch(f, dims, s, args.u32(a_lo.is_some() as u32))
    }

    /// The same product by the plain tiled GEMM (no matrix units, f32 activations): the
    /// baseline the matrix-unit GEMM is checked against.
    pub fn gemm_plain(
        &self,
        s: &Stream,
        x: &DeviceBuffer<f32>,
        w: &DeviceBuffer<u16>,
        y: &mut DeviceBuffer<f32>,
        shape: MatShape,
    ) -> Result<()> {
        self.launch_gemm(&self.gemm_plain, (16, 256), s, x, w, y, shape)
    }

    /// Launches a GEMM kernel of signature (x, w, y, t, k, n) whose blocks of `block` threads
    /// each compute a `tile` x `tile` piece of y.
    #[allow(clippy::too_many_arguments)]
    fn launch_gemm(
        &self,
        f: &Function,
        (tile, block): (usize, u32),
        s: &Stream,
        x: &DeviceBuffer<f32>,
        w: &DeviceBuffer<u16>,
        y: &mut DeviceBuffer<f32>,
        shape: MatShape,
    ) -> Result<()> {
        let MatShape { t, k, n } = shape;
        Self::need(x, t * k, "gemm x")?;
        Self::need(w, n * k, "gemm w")?;
        Self::need(y, t * n, "gemm y")?;
        let dims = LaunchDims {
            grid: [n.div_ceil(tile) as u32, t.div_ceil(tile) as u32, 1],
            block: [block, 1, 1],
            shared_bytes: 0,
            cluster: 1,
        };
        self.launch(
            f,
            dims,
            s,
            Args::new()
                .ptr(x)
                .ptr(w)
                .ptr(y)
                .u32(u32_of(t, "t")?)
                .u32(u32_of(k, "k")?)
                .u32(u32_of(n, "n")?),
        )
    }

    /// Writes `rows` rows of `kv_row` values into the f16 cache at positions `*pos0..`.
    pub fn kv_append(
        &self,
        s: &Stream,
        src: &DeviceBuffer<f32>,
        cache: &mut DeviceBuffer<u16>,
        pos0: &DeviceBuffer<u32>,
        shape: Rows,
        capacity: usize,
    ) -> Result<()> {
        Self::need(src, shape.rows * shape.len, "kv_append src")?;
        Self::need(cache, capacity * shape.len, "kv_append cache")?;
        self.launch(
            &self.kv_append,
            rows(shape.rows, BLOCK),
            s,
            Args::new()
                .ptr(src)
                .ptr(cache)
                .ptr(pos0)
                .u32(u32_of(shape.len, "kv_row")?),
        )
    }

    /// Causal GQA attention of `att.rows` query rows at positions `*pos0..` over the cache
    /// (capacity `att.max_kv`) by the plain three-pass kernels, through the `scores` scratch
    /// (`rows * n_heads * max_kv`): the baseline of [`GpuKernels::attention`].
    #[allow(clippy::too_many_arguments)]
    pub fn attention_plain(
        &self,
        s: &Stream,
        q: &DeviceBuffer<f32>,
        k_cache: &DeviceBuffer<u16>,
        v_cache: &DeviceBuffer<u16>,
        scores: &mut DeviceBuffer<f32>,
        ctx: &mut DeviceBuffer<f32>,
        pos0: &DeviceBuffer<u32>,
        att: AttnShape,
    ) -> Result<()> {
        // The plain kernels' grid spans the cache (max_kv); `keys` is the split kernel's.
        let AttnShape {
            rows: n_rows,
            n_heads,
            n_kv_heads,
            head_dim,
            max_kv,
            ..
        } = att;
        Self::need(q, n_rows * n_heads * head_dim, "attention q")?;
        Self::need(scores, n_rows * n_heads * max_kv, "attention scores")?;
        Self::need(ctx, n_rows * n_heads * head_dim, "attention ctx")?;
        Self::need(k_cache, max_kv * n_kv_heads * head_dim, "attention k cache")?;
        Self::need(v_cache, max_kv * n_kv_heads * head_dim, "attention v cache")?;
        let (nh, nkv, hd, mk) = (
            u32_of(n_heads, "n_heads")?,
            u32_of(n_kv_heads, "n_kv_heads")?,
            u32_of(head_dim, "head_dim")?,
            u32_of(max_kv, "max_kv")?,
        );
        let rh = u32_of(n_rows * n_heads, "rows * heads")?;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let dims = LaunchDims {
            grid: [max_kv.div_ceil(BLOCK as usize) as u32, rh, 1],
            block: [BLOCK, 1, 1],
            shared_bytes: 0,
            cluster: 1,
        };
        self.launch(
            &self.attn_scores,
            dims,
            s,
            Args::new()
                .ptr(q)
                .ptr(k_cache)
                .ptr(scores)
                .ptr(pos0)
                .u32(nh)
                .u32(nkv)
                .u32(hd)
                .u32(mk)
                .f32(scale),
        )?;
        self.launch(
            &self.attn_softmax,
            rows(rh as usize, BLOCK),
            s,
            Args::new().ptr(scores).ptr(pos0).u32(nh).u32(mk),
        )?;
        let block = (head_dim as u32).clamp(32, 1024);
        self.launch(
            &self.attn_context,
            rows(rh as usize, block),
            s,
            Args::new()
                .ptr(scores)
                .ptr(v_cache)
                .ptr(ctx)
                .ptr(pos0)
                .u32(nh)
                .u32(nkv)
                .u32(hd)
                .u32(mk),
        )
    }

    /// Causal GQA attention of `att.rows` query rows at positions `*pos0..` over the cache:
    /// flash-style on the matrix units for several rows (prefill), split over the KV length
    /// for one row (decode), through `scratch` (see [`AttnScratch`]).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        s: &Stream,
        q: &DeviceBuffer<f32>,
        k_cache: &DeviceBuffer<u16>,
        v_cache: &DeviceBuffer<u16>,
        scratch: &mut AttnScratch,
        ctx: &mut DeviceBuffer<f32>,
        pos0: &DeviceBuffer<u32>,
        att: AttnShape,
    ) -> Result<()> {
        self.attention_with_operands(s, q, k_cache, v_cache, scratch, ctx, None, pos0, att)
            .map(|_| ())
    }

    /// `attention`, and where `ops` are given and the register-resident prefill kernel runs
    /// (several rows, head_dim 64 or 128, NVIDIA), the output projection's f16 operands of
    /// ctx in the same launch (bitwise what `split_f16` makes of ctx). Returns whether it
    /// wrote them; where it did not, `ops` is untouched and the caller splits ctx.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_with_operands(
        &self,
        s: &Stream,
        q: &DeviceBuffer<f32>,
        k_cache: &DeviceBuffer<u16>,
        v_cache: &DeviceBuffer<u16>,
        scratch: &mut AttnScratch,
        ctx: &mut DeviceBuffer<f32>,
        ops: Option<F16Operands>,
        pos0: &DeviceBuffer<u32>,
        att: AttnShape,
    ) -> Result<bool> {
        let AttnShape {
            rows: n_rows,
            n_heads,
            n_kv_heads,
            head_dim,
            max_kv,
            keys,
        } = att;
        check_attention_shape(n_heads, n_kv_heads, head_dim)?;
        Self::need(q, n_rows * n_heads * head_dim, "attention q")?;
        Self::need(ctx, n_rows * n_heads * head_dim, "attention ctx")?;
        Self::need(k_cache, max_kv * n_kv_heads * head_dim, "attention k cache")?;
        Self::need(v_cache, max_kv * n_kv_heads * head_dim, "attention v cache")?;
        let (nh, nkv, hd) = (
            u32_of(n_heads, "n_heads")?,
            u32_of(n_kv_heads, "n_kv_heads")?,
            u32_of(head_dim, "head_dim")?,
        );
        let scale = 1.0 / (head_dim as f32).sqrt();
        if n_rows > 1 {
            // Register-resident (fa_waves waves x 16 rows per block) where it exists, else
            // the LDS kernel (one wave x 16 rows).
            let fa = match (&self.attn_prefill_fa, head_dim) {
                (Some([f64, _]), 64) => Some(f64),
                (Some([_, f128]), 128) => Some(f128),
                _ => None,
            };
            let (f, waves, shared_bytes) = match fa {
                Some(f) => (f, fa_waves(head_dim), fa_shared_bytes(head_dim)),
                None => (&self.attn_prefill_flash, 1, 0),
            };
            let dims = LaunchDims {
                grid: [n_rows.div_ceil(16 * waves as usize) as u32, nh, 1],
                block: [waves * self.wave, 1, 1],
                shared_bytes,
                cluster: 1,
            };
            let mut args = Args::new().ptr(q).ptr(k_cache).ptr(v_cache).ptr(ctx);
            // Only the register-resident kernel writes the operands.
            let ops = ops.filter(|_| fa.is_some());
            if fa.is_some() {
                if let Some(o) = &ops {
                    let shape = Rows {
                        rows: n_rows,
                        len: n_heads * head_dim,
                    };
                    Self::need_ops(o, shape, "attention")?;
                    if matches!(o.lo, Some(LoOperand::Fp8(_))) {
                        return Err(KernelError::Shape(
                            "attention writes f16 low halves only; FP8 ones come from split_f16_lo8".into(),
                        ));
                    }
                }
                args = args
                    .ptr_or_null(ops.as_ref().map(|o| &*o.hi))
                    .ptr_or_null(ops.as_ref().and_then(|o| o.lo.as_ref()?.f16()));
            }
            let args = args.ptr(pos0).u32(u32_of(n_rows, "rows")?).u32(nh).u32(nkv);
            let args = match fa {
                // The multiprocessors order its blocks (longest pairs with shortest on one
                // SM; 0 where unknown: longest first).
                Some(_) => args
                    .f32(scale)
                    .u32(u32_of(self.multiprocessors, "multiprocessors")?),
                None => args.u32(hd).f32(scale),
            };
            self.launch(f, dims, s, args)?;
            return Ok(ops.is_some());
        }
        let dims = self.decode_dims(scratch, n_heads, head_dim, [keys, max_kv])?;
        let ns = dims.grid[0];
        self.launch(
            &self.attn_decode_split[head_dim / 16 - 1],
            dims,
            s,
            Args::new()
                .ptr(q)
                .ptr(k_cache)
                .ptr(v_cache)
                .ptr(&scratch.part_m)
                .ptr(&scratch.part_l)
                .ptr(&scratch.part_o)
                .ptr(&scratch.done)
                .ptr(ctx)
                .ptr(pos0)
                .u32(nh)
                .u32(nkv)
                .u32(ns)
                .f32(scale),
        )?;
        Ok(false)
    }

    /// The split decode attention's grid (splits x heads, from the keys the pass attends
    /// over; the kernels take the split count, `grid[0]`) after checking that the scratch
    /// holds it.
    /// Where clusters run and a head has at most DECODE_CLUSTER_MAX splits, its splits are
    /// one cluster, and combine through shared memory (kernels/attention.hip).
    fn decode_dims(
        &self,
        scratch: &AttnScratch,
        n_heads: usize,
        head_dim: usize,
        [keys, capacity]: [usize; 2],
    ) -> Result<LaunchDims> {
        check_keys(keys, capacity)?;
        let splits = decode_splits(keys);
        if scratch.n_heads < n_heads || scratch.head_dim < head_dim || scratch.splits < splits {
            return Err(KernelError::Shape(format!(
                "attention scratch for {} heads x {} dims x {} splits; {n_heads} x {head_dim} x {splits} needed",
                scratch.n_heads, scratch.head_dim, scratch.splits
            )));
        }
        let ns = u32_of(splits, "splits")?;
        let nh = u32_of(n_heads, "n_heads")?;
        let block = 128; // DECODE_BLOCK in kernels/attention.hip
        Ok(LaunchDims {
            grid: [ns, nh, 1],
            block: [block, 1, 1],
            shared_bytes: 0,
            cluster: decode_cluster(
                splits,
                n_heads,
                self.clusters.then_some(self.multiprocessors),
            ),
        })
    }

    /// Whether `attention_rope` takes this head_dim (every one `attention` takes but 112).
    pub fn has_decode_rope(&self, head_dim: usize) -> bool {
        check_attention_shape(1, 1, head_dim).is_ok()
            && self.attn_decode_rope[head_dim / 16 - 1].is_some()
    }

    /// One token's attention with its RoPE and KV append in the same launch (decode's
    /// `rope_qk_append` + `attention`, bitwise the same values): `qkv` are the unrotated
    /// Q/K/V products of the token at `*pos0`; k and v go into the caches at `*pos0`, and the
    /// rotated q and k into `rot` (for the trace: QRope, KRope). `shape.rows` must be 1.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_rope(
        &self,
        s: &Stream,
        [q, k, v]: [&DeviceBuffer<f32>; 3],
        [k_cache, v_cache]: [&mut DeviceBuffer<u16>; 2],
        [q_rot, k_rot]: [&mut DeviceBuffer<f32>; 2],
        scratch: &mut AttnScratch,
        ctx: &mut DeviceBuffer<f32>,
        pos0: &DeviceBuffer<u32>,
        inv_freq: &DeviceBuffer<f32>,
        shape: QkvRope,
    ) -> Result<()> {
        let QkvRope {
            rows,
            n_heads,
            n_kv_heads,
            head_dim,
            half_split,
            capacity,
            keys,
        } = shape;
        check_attention_shape(n_heads, n_kv_heads, head_dim)?;
        let what = "attention_rope";
        if rows != 1 {
            return Err(KernelError::Shape(format!(
                "{what} takes one token (decode); got {rows} rows"
            )));
        }
        let Some(f) = &self.attn_decode_rope[head_dim / 16 - 1] else {
            return Err(KernelError::Shape(format!(
                "{what}: no kernel for head_dim {head_dim} (see has_decode_rope)"
            )));
        };
        Self::need_rope_io(&shape, [q, k, v], [k_cache, v_cache], pos0, inv_freq, what)?;
        let (q_row, kv_row) = (n_heads * head_dim, n_kv_heads * head_dim);
        Self::need_of(q_rot, q_row, what, "q_rot")?;
        Self::need_of(k_rot, kv_row, what, "k_rot")?;
        Self::need_of(ctx, q_row, what, "ctx")?;
        let dims = self.decode_dims(scratch, n_heads, head_dim, [keys, capacity])?;
        let args = Args::new()
            .ptr(q)
            .ptr(k)
            .ptr(v)
            .ptr(k_cache)
            .ptr(v_cache)
            .ptr(q_rot)
            .ptr(k_rot)
            .ptr(inv_freq)
            .u32(half_split as u32)
            .ptr(&scratch.part_m)
            .ptr(&scratch.part_l)
            .ptr(&scratch.part_o)
            .ptr(&scratch.done)
            .ptr(ctx)
            .ptr(pos0)
            .u32(u32_of(n_heads, "n_heads")?)
            .u32(u32_of(n_kv_heads, "n_kv_heads")?)
            .u32(dims.grid[0])
            .f32(1.0 / (head_dim as f32).sqrt());
        self.launch(f, dims, s, args)
    }

    /// Draws one token from `logits[..n]` on the device as the host sampler does
    /// (temperature, top-k, top-p; see [`DeviceSampling`]), advancing the generator state
    /// `rng` (seeded with the sampler's seed), as a pick (see [`PickAt`]).
    pub fn sample(
        &self,
        s: &Stream,
        logits: &DeviceBuffer<f32>,
        n: usize,
        cfg: DeviceSampling,
        rng: &mut DeviceBuffer<u64>,
        at: PickAt<'_>,
    ) -> Result<()> {
        cfg.check()?;
        Self::need(logits, n, "sample logits")?;
        Self::need(rng, 1, "sample rng")?;
        let args = Args::new()
            .ptr(logits)
            .u32(u32_of(n, "n")?)
            .f32(cfg.temperature)
            .u32(cfg.top_k as u32)
            .f32(cfg.top_p)
            .ptr(rng);
        let args = at.args(args, "sample")?;
        self.launch(&self.sample_topk, rows(1, 1024), s, args)
    }

    /// *pos0 += by, on the device.
    pub fn advance_pos(&self, s: &Stream, pos0: &mut DeviceBuffer<u32>, by: usize) -> Result<()> {
        self.launch(
            &self.advance_pos,
            rows(1, 32),
            s,
            Args::new().ptr(pos0).u32(u32_of(by, "by")?),
        )
    }
}

/// Which kernel computes a `gemm_f16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmRoute {
    /// The warpgroup kernel on Hopper (`Wgmma`), the matrix-unit tiles (`Mma`) elsewhere.
    Auto,
    /// mma.sync / MFMA tiles of 128, 64 or 32 (the largest that fills the GPU).
    Mma,
    /// The warpgroup (wgmma) kernel fed by the TMA unit, its tile chosen by `wgmma_tile`; an
    /// error on devices without it.
    Wgmma,
    /// The warpgroup kernel of this tile (the op tests check every tile at edge shapes).
    WgmmaTile(WgmmaTile),
}

/// A tile of the warpgroup GEMM: `m` input rows by `n` output columns (GEMM_WGMMA in
/// kernels/gemm.hip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgmmaTile {
    pub m: usize,
    pub n: usize,
}

impl WgmmaTile {
    /// The kernels' tiles: 128 x 128, 64 x 64 for products too narrow to fill the GPU with
    /// 128s, and the wide 128 x 256 and 128 x 232 for those whose 128-column tiles make no
    /// fewer waves of blocks (their m64n256 / m64n232 products keep the matrix units busier:
    /// kernels/gemm.hip); 232 where 256's last wave would leave many multiprocessors idle.
    pub const ALL: [WgmmaTile; 4] = [
        WgmmaTile { m: 128, n: 128 },
        WgmmaTile { m: 64, n: 64 },
        WgmmaTile { m: 128, n: 256 },
        WgmmaTile { m: 128, n: 232 },
    ];
    /// The tiles with an FP8-lo form (kernels/gemm.hip: the wide tile's two accumulator sets
    /// would take 256 registers).
    pub const LO8: [WgmmaTile; 2] = [WgmmaTile { m: 128, n: 128 }, WgmmaTile { m: 64, n: 64 }];
    /// The tiles of the SwiGLU forms (`gemm_f16_swiglu`: n / 2 gate and n / 2 up columns
    /// each), in `ALL`'s order: square, small, wide, and 224 where 232 is unfused (its
    /// halves must be whole 8-row swizzle atoms).
    pub const SWIGLU: [WgmmaTile; 4] = [
        WgmmaTile { m: 128, n: 128 },
        WgmmaTile { m: 64, n: 64 },
        WgmmaTile { m: 128, n: 256 },
        WgmmaTile { m: 128, n: 224 },
    ];

    fn kernel(&self) -> String {
        match self.m == self.n {
            true => format!("gemm_f16_wgmma_{}", self.m),
            false => format!("gemm_f16_wgmma_{}x{}", self.m, self.n),
        }
    }
    fn swiglu_kernel(&self) -> String {
        self.kernel().replace("wgmma_", "wgmma_swiglu_")
    }
}

/// Blocks of the cluster argmax (ARGMAX_CLUSTER in kernels/ops.hip).
const ARGMAX_CLUSTER: u32 = 8;

/// The warpgroup GEMM's K step (WG_BK in kernels/gemm.hip: the TMA boxes' columns, 128 bytes
/// of f16) and depth (WG_STAGES; a kernel build with another depth needs this one too).
const WGMMA_BK: u32 = 64;
const WGMMA_STAGES: u32 = 6;
/// The 128 x 232 tile's depth (WG_STAGES_232 in kernels/gemm.hip): 4 of 45 KiB.
const WGMMA_STAGES_232: u32 = 4;

/// The warpgroup GEMM's stages for `tile` (GEMM_WGMMA in kernels/gemm.hip): as many as fit
/// the 227 KiB a block may opt in to on sm_90, up to `WGMMA_STAGES`: 4 of 48 KiB for the
/// 128 x 256 tile; 4 of 45 KiB for 128 x 232 (5 fit, and measured level: session 25).
fn wgmma_stages(tile: WgmmaTile) -> u32 {
    match tile.n {
        256 | 224 => 4,
        232 => WGMMA_STAGES_232,
        _ => WGMMA_STAGES,
    }
}

/// The warpgroup GEMM's threads a block for `tile`: a consumer warpgroup per 64 rows, then
/// the producer warp (kernels/gemm.hip).
fn wgmma_threads(tile: WgmmaTile) -> u32 {
    128 * (tile.m as u32 / 64) + 32
}

/// The warpgroup GEMM's kernels of `tiles` (named by `name`), each allowed the dynamic
/// shared memory its stages take.
fn wgmma_forms(
    gemm: &Module,
    tiles: [WgmmaTile; 4],
    name: fn(&WgmmaTile) -> String,
) -> Result<[(WgmmaTile, Function); 4]> {
    let load = |t: WgmmaTile| -> Result<(WgmmaTile, Function)> {
        let f = gemm.function(&name(&t))?;
        f.set_max_dynamic_shared(wgmma_shared(t))?;
        Ok((t, f))
    };
    let [a, b, c, d] = tiles;
    Ok([load(a)?, load(b)?, load(c)?, load(d)?])
}

/// Dynamic shared memory of the warpgroup GEMM of `tile`: its stages of an A and a B box,
/// 1 KiB to align them to the 1024-byte swizzle atom, and a full and an empty barrier (8
/// bytes each) per stage. 128 x 128: 193 KiB (one block per SM); 64 x 64: 97 KiB (two);
/// 128 x 256: 193 KiB; 128 x 232: 181 KiB.
fn wgmma_shared(tile: WgmmaTile) -> u32 {
    let stages = wgmma_stages(tile);
    stages * (tile.m + tile.n) as u32 * WGMMA_BK * 2 + 1024 + stages * 2 * 8
}

/// The warpgroup GEMM's arguments after its operands (t, k, the group's widths: 0 for an
/// absent product) and its launch shape for `group` on `tile`: row tiles first (the blocks
/// that share a weight tile run together, so it comes from HBM once), then each product's
/// column tiles; the consumer warpgroups and the producer warp (kernels/gemm.hip).
fn wgmma_launch(
    args: Args,
    tile: WgmmaTile,
    group: &[GemmOut<'_>],
    t: usize,
    k: usize,
    shared_bytes: u32,
) -> Result<(Args, LaunchDims)> {
    let mut args = args.u32(u32_of(t, "t")?).u32(u32_of(k, "k")?);
    let mut col_tiles = 0;
    for i in 0..3 {
        let n = group.get(i).map_or(0, |o| o.n);
        col_tiles += n.div_ceil(tile.n);
        args = args.u32(u32_of(n, "n")?);
    }
    let dims = LaunchDims {
        grid: [
            t.div_ceil(tile.m) as u32,
            u32_of(col_tiles, "column tiles")?,
            1,
        ],
        block: [wgmma_threads(tile), 1, 1],
        shared_bytes,
        cluster: 1,
    };
    Ok((args, dims))
}

/// The FP8-lo forms' stages (GEMM_WGMMA_LO8 in kernels/gemm.hip): a stage holds the f16
/// step's boxes and the FP8 ones (half their bytes), so fewer fit: 4 for 128 x 128 (192
/// KiB), 6 for 64 x 64.
fn wgmma_lo8_stages(tile: WgmmaTile) -> u32 {
    match tile.m {
        128 => 4,
        _ => 6,
    }
}

/// Dynamic shared memory of an FP8-lo form: its stages of four boxes, the alignment slack
/// and the barriers.
fn wgmma_lo8_shared(tile: WgmmaTile) -> u32 {
    let stages = wgmma_lo8_stages(tile);
    stages * (tile.m + tile.n) as u32 * WGMMA_BK * 3 + 1024 + stages * 2 * 8
}

/// The warpgroup GEMM's tile for products of widths `ns` sharing `t` input rows on a device
/// of `sms` multiprocessors (one 128 block runs on each at a time): 64 x 64 unless 128s
/// still give `BLOCKS_WANTED` blocks (as `gemm_tile`); then the tile among 128 x 256, 128 x
/// 232 and 128 x 128 whose waves of blocks take least time, a block's time taken as its
/// columns (the same rows and K). A tie goes to the wider tile, whose columns cost less
/// (kernels/gemm.hip: gate/up 152 against 158 us with the 128 x 168 tile 256 replaced, whose
/// ties went the other way). Llama-2-7B's gate/up at 512 rows on 132 SMs: 688 blocks of 128
/// columns make 6 waves (768 columns), 344 of 256 make 3 (768), 384 of 232 make 3 (696).
fn wgmma_tile(t: usize, ns: impl IntoIterator<Item = usize>, sms: usize) -> WgmmaTile {
    let ns: Vec<usize> = ns.into_iter().collect();
    least_waves(t, &ns, sms, WgmmaTile::ALL, |tile| tile.n)
}

/// `wgmma_tile` for the SwiGLU forms, whose tiles have half their columns' outputs (a gate
/// and an up column each): 7B's gate/up at 512 rows on 132 SMs takes 128 x 224, 396 blocks
/// in 3 waves (672 columns a multiprocessor; 128 x 256: 344 blocks, 768).
fn wgmma_swiglu_tile(t: usize, n: usize, sms: usize) -> WgmmaTile {
    least_waves(t, &[n], sms, WgmmaTile::SWIGLU, |tile| tile.n / 2)
}

/// The tile of [square, small, wide, wider] for products of widths `ns` over `t` rows on
/// `sms` multiprocessors, a tile covering `outputs(tile)` of a product's columns: small
/// unless square gives `BLOCKS_WANTED` blocks, else the least waves x columns (a block's
/// time), ties to the first of wide, wider, square.
fn least_waves(
    t: usize,
    ns: &[usize],
    sms: usize,
    [square, small, wide, wider]: [WgmmaTile; 4],
    outputs: impl Fn(WgmmaTile) -> usize,
) -> WgmmaTile {
    let blocks = |tile: WgmmaTile| -> usize {
        t.div_ceil(tile.m) * ns.iter().map(|n| n.div_ceil(outputs(tile))).sum::<usize>()
    };
    if blocks(square) < BLOCKS_WANTED {
        return small;
    }
    let time = |tile: WgmmaTile| blocks(tile).div_ceil(sms.max(1)) * tile.n;
    // The first of the least time: ties go to the wider tile.
    [wide, wider, square]
        .into_iter()
        .min_by_key(|&tile| time(tile))
        .expect("three tiles")
}

/// What `gemm_f16_swiglu` writes: act's f16 operands for the down product, and gate, up
/// and act as f32 where given (the traced path; the untraced one reads only the operands).
pub struct SwigluOut<'a> {
    pub gate: Option<&'a mut DeviceBuffer<f32>>,
    pub up: Option<&'a mut DeviceBuffer<f32>>,
    pub act: Option<&'a mut DeviceBuffer<f32>>,
    pub ops: F16Operands<'a>,
}

/// One product of a `gemm_f16` call: y[t, n] = x[t, k] · w[n, k]ᵀ.
pub struct GemmOut<'a> {
    pub w: &'a DeviceBuffer<u16>,
    /// w's FP8 copy, for an input whose low half is FP8 (`GemmLo::Fp8`).
    pub w8: Option<&'a E4m3Matrix>,
    pub y: &'a mut DeviceBuffer<f32>,
    pub n: usize,
}

/// Blocks a GEMM grid should have before its tiles grow: a block for every multiprocessor of
/// a big GPU (H100: 132 SMs, MI300X: 304 CUs; 128 is the line).
const BLOCKS_WANTED: usize = 128;

/// The largest tile whose grid still has `BLOCKS_WANTED` blocks, else the smallest: small
/// matrices (SmolLM2's 576 columns) need many small blocks more than large tiles' reuse.
fn gemm_tile<F>(tiles: &[(usize, u32, F)], t: usize, n: usize) -> (usize, u32, &F) {
    let pick = tiles
        .iter()
        .find(|(tile, _, _)| t.div_ceil(*tile) * n.div_ceil(*tile) >= BLOCKS_WANTED)
        .unwrap_or(tiles.last().expect("at least one tile"));
    (pick.0, pick.1, &pick.2)
}

/// The shape of a fused RoPE + KV append: `rows` tokens, `n_heads` query and `n_kv_heads`
/// key/value heads of `head_dim`, caches of `capacity` positions. `keys`: as
/// [`AttnShape::keys`] (read by `attention_rope` only).
#[derive(Debug, Clone, Copy)]
pub struct QkvRope {
    pub rows: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub half_split: bool,
    pub capacity: usize,
    pub keys: usize,
}

/// `y[t, n] = x[t, k] · w[n, k]ᵀ`.
#[derive(Debug, Clone, Copy)]
pub struct MatShape {
    pub t: usize,
    pub k: usize,
    pub n: usize,
}

/// Keys per block of the split decode attention (DECODE_KEYS in kernels/attention.hip).
pub const DECODE_SPLIT: usize = 128;
/// Waves per block of the register-resident prefill attention (ATTN_PREFILL_FA in
/// kernels/attention.hip): 2 at head_dim 64, 4 at 128.
fn fa_waves(head_dim: usize) -> u32 {
    if head_dim == 64 {
        2
    } else {
        4
    }
}

/// Keys per K/V tile of the register-resident prefill attention (FA_KEYS in
/// kernels/attention.hip).
const FA_KEYS: usize = 64;

/// Dynamic shared memory of the register-resident prefill attention: two stages of a K and a
/// V tile of FA_KEYS keys x head_dim halves.
fn fa_shared_bytes(head_dim: usize) -> u32 {
    (2 * 2 * FA_KEYS * head_dim * std::mem::size_of::<u16>()) as u32
}

/// Largest head_dim the flash attention kernel holds (HD_MAX in kernels/attention.hip).
pub const FLASH_HEAD_DIM_MAX: usize = 128;
/// What a pick leaves in the history instead of a token when a logit is NaN (G_PICK_NAN in
/// kernels/ops.hip): the host sampler refuses such logits, and the device has no token to
/// give either, so the host reads this word and reports the error.
pub const PICK_NAN: u32 = u32::MAX;

/// Largest top-k the device sampler takes (SAMPLE_K_MAX in kernels/ops.hip).
pub const SAMPLE_K_MAX: usize = 256;

/// The head dims the split decode attention has a kernel for: 16, 32, .. 128
/// (`attn_decode_split_hd{16..128}`), the ones `check_attention_shape` takes.
const DECODE_HEAD_DIMS: usize = FLASH_HEAD_DIM_MAX / 16;
/// The one head_dim without a RoPE form (it spills on sm_90a; kernels/attention.hip).
const DECODE_ROPE_NONE: usize = 112;

/// One decode attention kernel per head_dim (16, 32, .. 128), looked up by `find`.
fn per_decode_head_dim<T>(
    find: impl FnMut(usize) -> std::result::Result<T, HipError>,
) -> std::result::Result<[T; DECODE_HEAD_DIMS], HipError> {
    let found = (1..=DECODE_HEAD_DIMS)
        .map(|i| 16 * i)
        .map(find)
        .collect::<std::result::Result<Vec<T>, _>>()?;
    Ok(found.try_into().ok().expect("one per head_dim"))
}

/// The most splits of one head the split decode attention combines in a thread-block cluster
/// (8: the portable cluster size). Longer caches launch without clusters: measured on an H200
/// (docs/performance.md, session 12), clusters of 8 over a 4096-position cache, most of whose
/// splits exit at once, cost Llama-2-7B decode 2 %.
pub const DECODE_CLUSTER_MAX: usize = 8;

/// How many KV splits decode attention uses for `keys` positions (`AttnShape::keys`; the
/// scratch is sized for a whole cache's).
pub fn decode_splits(keys: usize) -> usize {
    keys.div_ceil(DECODE_SPLIT).max(1)
}

/// Refuses FP8 rows of `k` bytes that the TMA cannot read: its rows (global strides) are a
/// positive multiple of 16 bytes. `what` names the caller in the error.
fn check_fp8_rows(k: usize, what: &str) -> Result<()> {
    if k == 0 || !k.is_multiple_of(16) {
        return Err(KernelError::Shape(format!(
            "{what}: k = {k} (accepted: a positive multiple of 16, the TMA's 16-byte rows of FP8 bytes)"
        )));
    }
    Ok(())
}

/// Refuses a decode attention over no keys or over more than the cache holds.
fn check_keys(keys: usize, capacity: usize) -> Result<()> {
    if keys == 0 || keys > capacity {
        return Err(KernelError::Shape(format!(
            "decode attention over {keys} keys of a {capacity}-position cache: keys must be 1..={capacity}"
        )));
    }
    Ok(())
}

/// The dynamic shared memory (bytes, a multiple of 1 KiB) that keeps a small decode
/// product to at most two blocks a multiprocessor: half of what one holds less 24 KiB, so
/// two padded blocks (with their static shared memory and the 1 KiB the hardware reserves
/// a block) leave room for a decode attention block beside them, and a third never fits.
/// Why: with overlapped launches the blocks of the next few kernels are resident before
/// their inputs are ready, and the block scheduler then packed a 72-block product of
/// SmolLM2 onto 23-36 multiprocessors, 2-3 blocks each, where the decode attention's
/// placement happened to leave it 54-59 (tools/gpu/timeline.py, session 20): the packed
/// products ran 0.3-0.6 µs longer each, which made SmolLM2's decode 3-11 % slower at most
/// context lengths than at the bench's. Capped at two a multiprocessor (the kernels do
/// not use the memory), SmolLM2's decode went 2417 -> 2766 tok/s at one split, 2133 ->
/// 2465 at three, 2401 -> 2421 at the bench's five (H200, session 20); results are bit
/// for bit the same (the kernels never touch the pad; h100_checks.sh passed on it).
pub fn spread_pad(shared_per_multiprocessor: usize) -> u32 {
    let pad = shared_per_multiprocessor.saturating_sub(24 * 1024) / 2;
    (pad / 1024 * 1024) as u32
}

/// The dynamic shared memory of a decode product's launch of `blocks` blocks that needs
/// `shared` itself: `spread = (multiprocessors, spread_pad)` where launches overlap. A
/// launch of at most three blocks for every two multiprocessors takes the pad (see
/// `spread_pad`); a larger one keeps its own: there the pad spreads little (its blocks
/// are near two an SM anyway) and takes the room the next kernel's blocks would be
/// resident in, loading their weights (H200, session 20: Llama-3.2-1B's 256-block output
/// and down products padded, decode 1176 -> 1065 tok/s; Llama-2-7B's Q/K/V and gate/up,
/// 9 % slower). SmolLM2's products (72, 120 and 192 blocks on 132 SMs) take it.
pub fn spread_shared(blocks: usize, shared: u32, spread: Option<(usize, u32)>) -> u32 {
    match spread {
        Some((sms, pad)) if pad > shared && 2 * blocks <= 3 * sms => pad,
        _ => shared,
    }
}

/// The decode attention's cluster (blocks along the splits) for `splits` splits of each of
/// `n_heads` heads, on a device whose clusters run over `sms` multiprocessors (None: no
/// clusters): all of a head's splits where they fit one cluster and the layer's blocks fit
/// one wave of the device, else none (1: the splits combine through memory). Past one wave
/// the clusters cost: Llama-2-7B (32 heads) decodes 2.5-3 % slower at 8 splits with them
/// (270.5 / 268.6 against 277.2 / 276.9 tok/s in two calls; H200, 132 SMs, session 19) and
/// even at 5; SmolLM2's 9 heads gain 4-12 % from them at 2-8 splits but 4 (docs/performance.md,
/// session 19).
pub fn decode_cluster(splits: usize, n_heads: usize, sms: Option<usize>) -> u32 {
    match sms {
        Some(sms) if (2..=DECODE_CLUSTER_MAX).contains(&splits) && splits * n_heads <= sms => {
            splits as u32
        }
        _ => 1,
    }
}

/// Refuses, with the reason, a head shape the matrix-unit attention kernels do not take.
pub fn check_attention_shape(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Result<()> {
    if head_dim == 0 || !head_dim.is_multiple_of(16) || head_dim > FLASH_HEAD_DIM_MAX {
        return Err(KernelError::Shape(format!(
            "head_dim {head_dim}: the GPU attention kernels take multiples of 16 up to {FLASH_HEAD_DIM_MAX}"
        )));
    }
    if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(KernelError::Shape(format!(
            "{n_heads} query heads cannot share {n_kv_heads} KV heads evenly"
        )));
    }
    Ok(())
}

/// Scratch of the split decode attention: a running max, sum and unnormalised output per
/// (head, split), and per head the count of splits done (the last one combines; it leaves
/// the count at zero again). Sized from the model and the cache capacity, allocated once.
pub struct AttnScratch {
    n_heads: usize,
    head_dim: usize,
    splits: usize,
    part_m: DeviceBuffer<f32>,
    part_l: DeviceBuffer<f32>,
    part_o: DeviceBuffer<f32>,
    done: DeviceBuffer<u32>,
}

impl AttnScratch {
    pub fn new(gpu: &Gpu, n_heads: usize, head_dim: usize, capacity: usize) -> Result<Self> {
        let splits = decode_splits(capacity);
        let mut done = gpu.alloc::<u32>(n_heads)?;
        let s = gpu.stream()?;
        done.zero(&s)?;
        s.synchronize()?;
        Ok(AttnScratch {
            n_heads,
            head_dim,
            splits,
            part_m: gpu.alloc(n_heads * splits)?,
            part_l: gpu.alloc(n_heads * splits)?,
            part_o: gpu.alloc(n_heads * splits * head_dim)?,
            done,
        })
    }
    pub fn bytes(&self) -> usize {
        4 * (self.part_m.len() + self.part_l.len() + self.part_o.len() + self.done.len())
    }
}

/// Where a pick (`argmax`, `sample`) leaves its token: in `out[0]` (the next decode step's
/// input), and, with the pass's position `pos[0]` advanced by `advance` (the pass's rows),
/// at `history[pos[0]]` — where the host reads it while the next step already runs. A
/// position past the history is not written there (the caller sizes the history to the KV
/// cache's capacity + 1, the last position a token can be picked for). Logits with a NaN
/// leave [`PICK_NAN`] in the history and token 0 in `out`.
pub struct PickAt<'a> {
    pub out: &'a mut DeviceBuffer<u32>,
    pub pos: &'a mut DeviceBuffer<u32>,
    pub advance: usize,
    pub history: &'a mut DeviceBuffer<u32>,
}

impl PickAt<'_> {
    fn args(self, a: Args, what: &str) -> Result<Args> {
        GpuKernels::need_of(self.out, 1, what, "out")?;
        GpuKernels::need_of(self.pos, 1, what, "pos")?;
        GpuKernels::need_of(self.history, 1, what, "history")?;
        Ok(a.ptr(self.out)
            .ptr(self.pos)
            .u32(u32_of(self.advance, "advance")?)
            .ptr(self.history)
            .u32(u32_of(self.history.len(), "history length")?))
    }
}

/// Sampling the device does itself: temperature > 0, top-k in 1..=[`SAMPLE_K_MAX`],
/// 0 < top-p <= 1, no repetition penalty (it needs the history on the host).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceSampling {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
}

impl DeviceSampling {
    pub fn check(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(KernelError::Shape(format!(
                "device sampling: temperature {} (accepted: finite, > 0; 0 is the argmax)",
                self.temperature
            )));
        }
        if !(1..=SAMPLE_K_MAX).contains(&self.top_k) {
            return Err(KernelError::Shape(format!(
                "device sampling: top_k {} (accepted: 1..={SAMPLE_K_MAX})",
                self.top_k
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(KernelError::Shape(format!(
                "device sampling: top_p {} (accepted: 0 < top_p <= 1)",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// The shape of an attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub rows: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// The cache's capacity in positions (the scores row length).
    pub max_kv: usize,
    /// The positions the pass attends over, at least: its last position + 1, at most
    /// `max_kv`. The decode attention's grid covers these in splits of 128 keys
    /// (`decode_splits`), not the whole cache, so a pass near the start of a long cache
    /// launches few splits (one cluster a head where clusters run). A smaller value than the
    /// pass's positions would leave keys out: a graph captured with it may be replayed only
    /// while its positions stay within the same number of splits.
    pub keys: usize,
}

#[cfg(test)]
mod tests {
    use super::{
        check_fp8_rows, check_keys, check_skippable, decode_cluster, decode_splits, gemm_tile,
        norm_block, wgmma_shared, wgmma_swiglu_tile, wgmma_tile, GpuKernels, KernelError,
        WgmmaTile, DECODE_CLUSTER_MAX, NORM_PROLOGUE_MAX_K,
    };

    /// A timing study may leave out a product or the attention, not a kernel that moves the
    /// position (it would time steps at position 0); the refusal names the kernel and why.
    #[test]
    fn a_timing_study_may_not_leave_out_what_moves_the_position() {
        for name in [
            "argmax_f32",
            "argmax_f32_cluster",
            "sample_topk",
            "advance_pos",
        ] {
            let e = check_skippable(name).unwrap_err();
            assert!(
                matches!(e, KernelError::SkipMovesPosition { .. }),
                "{name}: {e}"
            );
            let msg = e.to_string();
            assert!(msg.starts_with(name) && msg.contains("position"), "{msg}");
        }
        for name in [
            "gemv_add_f16",
            "attn_decode_rope_split_hd64",
            "gemv3_f16_r2",
        ] {
            assert!(check_skippable(name).is_ok(), "{name}");
        }
        // The list names kernels that exist (a rename would otherwise leave it stale).
        let ops = include_str!("../../../kernels/ops.hip");
        for name in super::MOVES_POSITION {
            assert!(
                ops.contains(&format!("GRETA_KERNEL void {name}(")),
                "{name} is not a kernel of kernels/ops.hip"
            );
        }
    }

    /// Hopper's 228 KiB a multiprocessor: two padded product blocks fit (each with the 1 KiB
    /// the hardware reserves a block and the products' static shared memory, at most 1152
    /// bytes) with a decode attention block (under 8 KiB static) beside them, and a third
    /// does not; only launches of at most 3 blocks for 2 multiprocessors take the pad, only
    /// where launches overlap, and a launch needing more keeps its own.
    #[test]
    fn spread_pad_holds_two_product_blocks_and_an_attention_block_an_sm() {
        let sm = 228 * 1024;
        let pad = super::spread_pad(sm) as usize;
        assert_eq!(pad % 1024, 0);
        let block = pad + 1152 + 1024;
        assert!(2 * block + 8 * 1024 + 1024 <= sm, "pad {pad}");
        assert!(3 * block > sm, "pad {pad}");
        assert!(pad <= 227 * 1024, "a block may take at most 227 KiB");
        let spread = Some((132, pad as u32));
        assert_eq!(super::spread_shared(72, 2304, spread), pad as u32);
        assert_eq!(super::spread_shared(198, 0, spread), pad as u32);
        assert_eq!(super::spread_shared(199, 0, spread), 0);
        assert_eq!(super::spread_shared(256, 0, spread), 0);
        assert_eq!(super::spread_shared(72, 2304, None), 2304);
        assert_eq!(super::spread_shared(72, 200_000, spread), 200_000);
        assert_eq!(super::spread_pad(16 * 1024), 0);
    }

    /// A head's splits are one cluster where clusters run, 2 to 8 splits hold the keys (the
    /// bench's 576 positions: 5) and the layer's blocks fit one wave of the device (132
    /// SMs: SmolLM2's 9 heads always, Llama-2-7B's 32 up to 4 splits); one split needs
    /// none, and past 1024 keys (9 splits and more) none is launched.
    #[test]
    fn decode_cluster_holds_a_heads_splits_when_they_fit_one_and_the_blocks_one_wave() {
        let h200 = Some(132);
        for (keys, splits, smollm2, llama2_7b) in [
            (1, 1, 1, 1),
            (128, 1, 1, 1),
            (129, 2, 2, 2),
            (512, 4, 4, 4),
            (513, 5, 5, 1),
            (576, 5, 5, 1),
            (1024, 8, 8, 1),
            (1025, 9, 1, 1),
            (4096, 32, 1, 1),
        ] {
            assert_eq!(decode_splits(keys), splits, "keys {keys}");
            assert_eq!(
                decode_cluster(splits, 9, h200),
                smollm2,
                "9 heads, keys {keys}"
            );
            assert_eq!(
                decode_cluster(splits, 32, h200),
                llama2_7b,
                "32 heads, keys {keys}"
            );
            assert_eq!(
                decode_cluster(splits, 9, None),
                1,
                "no clusters on this device"
            );
        }
        assert_eq!(DECODE_CLUSTER_MAX, 8, "the portable cluster size");
    }

    /// FP8 rows the TMA reads: a positive multiple of 16 bytes; the refusal names the caller
    /// and what is accepted.
    #[test]
    fn fp8_rows_are_a_positive_multiple_of_16_bytes() {
        for k in [16, 576, 4096, 11_008] {
            assert!(check_fp8_rows(k, "x").is_ok(), "k = {k}");
        }
        for k in [0, 8, 24, 1000] {
            let e = check_fp8_rows(k, "quantize_e4m3").unwrap_err().to_string();
            assert!(e.starts_with("quantize_e4m3: k = "), "{e}");
            assert!(e.contains("positive multiple of 16"), "{e}");
        }
    }

    /// The keys a decode attention covers: from one to the cache's capacity; the refusal
    /// names both.
    #[test]
    fn decode_keys_lie_within_the_cache() {
        assert!(check_keys(1, 1).is_ok() && check_keys(513, 4096).is_ok());
        assert!(check_keys(4096, 4096).is_ok());
        for (keys, capacity) in [(0, 4096), (4097, 4096), (2, 1)] {
            let msg = check_keys(keys, capacity).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("{keys} keys"))
                    && msg.contains(&format!("{capacity}-position")),
                "{msg}"
            );
        }
    }

    /// The measured sizes (SmolLM2 256, Llama-2-7B 512) and the rule between them: the
    /// smallest block whose threads load x in one round of 8 values each, at most 1024.
    #[test]
    fn norm_block_loads_x_in_one_round_from_256_threads() {
        for (k, threads) in [
            (576, 256),
            (2048, 256),
            (2056, 512),
            (4096, 512),
            (5120, 1024),
            (8192, 1024),
            (12_288, 1024),
        ] {
            assert_eq!(norm_block(k), threads, "k = {k}");
        }
    }

    #[test]
    fn norm_prologue_takes_rows_that_fit_its_lds_and_vector_loads() {
        // SmolLM2, Llama-2-7B, Llama-2-70B hidden sizes: x in LDS, 4 bytes a value.
        for (k, bytes) in [(576, 2304), (4096, 16_384), (8192, 32_768)] {
            assert_eq!(GpuKernels::norm_prologue_bytes(k).unwrap(), bytes);
        }
        assert!(GpuKernels::norm_prologue_bytes(NORM_PROLOGUE_MAX_K).is_ok());
        for bad in [0, 4098, NORM_PROLOGUE_MAX_K + 4] {
            let e = GpuKernels::norm_prologue_bytes(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("got {bad}")), "{e}");
        }
    }

    /// The warpgroup GEMM's tile at the two benchmark shapes (512-token prompt) on an H100's
    /// or H200's 132 SMs: 128 x 128 for Llama-2-7B's groups but gate/up, 128 x 232 for
    /// gate/up (fewer waves' columns), 64 x 64 for SmolLM2's narrow ones; a wide tile only
    /// where its waves take no longer.
    #[test]
    fn wgmma_tile_fills_the_gpu_before_it_grows() {
        let [square, small, wide, wide232] = WgmmaTile::ALL;
        let pick = |t, ns: &[usize]| wgmma_tile(t, ns.iter().copied(), 132);
        assert_eq!(pick(512, &[4096]), square, "7B output/down: 4 x 32 blocks");
        assert_eq!(
            pick(512, &[4096, 4096, 4096]),
            square,
            "7B Q/K/V: 3 waves of 128 columns (384), 2 of 256 (512)"
        );
        assert_eq!(
            pick(512, &[11_008, 11_008]),
            wide232,
            "7B gate/up: 6 waves of 128 columns (688 blocks, 768), 3 of 256 (344, 768), 3 of 232 (384, 696)"
        );
        assert_eq!(
            pick(512, &[8192, 8192]),
            wide,
            "1B gate/up: 4 waves of 128 columns (512 blocks, 512), 2 of 256 (256, 512), 3 of 232 (288, 696)"
        );
        assert_eq!(
            wgmma_tile(512, [11_008, 11_008], 160),
            square,
            "on 160 SMs: 5 waves of 128 columns (640), 3 of 256 (768)"
        );
        assert_eq!(
            pick(512, &[576, 192, 192]),
            small,
            "SmolLM2 Q/K/V: 4 x 9 = 36 blocks of 128"
        );
        assert_eq!(
            pick(512, &[1536, 1536]),
            small,
            "SmolLM2 gate/up: 4 x 24 = 96 blocks of 128"
        );
        assert_eq!(pick(7, &[100]), small, "a short prompt");
        assert_eq!(
            wgmma_shared(square),
            197_728,
            "6 x 32 KiB stages + 1 KiB + barriers"
        );
        for t in [wide, wide232] {
            assert!(
                wgmma_shared(t) <= 232_448,
                "the wide tiles' stages fit the 227 KiB a block may opt in to on sm_90"
            );
        }
    }

    /// The SwiGLU forms' tiles cover half their columns' outputs: 7B's gate/up takes the
    /// 224-column tile (3.0 waves of 132), Llama-3.2-1B's the 256 one, SmolLM2's 64 x 64.
    #[test]
    fn wgmma_swiglu_tile_counts_outputs_not_columns() {
        let [square, small, wide, wide224] = WgmmaTile::SWIGLU;
        assert_eq!(
            wgmma_swiglu_tile(512, 11_008, 132),
            wide224,
            "7B: 396 blocks of 112 outputs in 3 waves (672 columns); 344 of 128 (768); 688 of 64 (768)"
        );
        assert_eq!(
            wgmma_swiglu_tile(512, 8192, 132),
            wide,
            "1B: 256 blocks of 128 outputs in 2 waves (512 columns), 296 of 112 in 3 (672)"
        );
        assert_eq!(
            wgmma_swiglu_tile(512, 1536, 132),
            small,
            "SmolLM2: 4 x 24 = 96 blocks of 64 outputs"
        );
        assert_eq!(
            wgmma_swiglu_tile(512, 4096, 132),
            wide,
            "one wave of 128 blocks (256 columns) ties two of 256 of 128: the wider"
        );
        assert_eq!(
            wgmma_swiglu_tile(512, 5000, 132),
            square,
            "3 waves of 316 blocks (384 columns); 2 of 160 (512), 2 of 180 (448)"
        );
        assert_eq!(wide224.swiglu_kernel(), "gemm_f16_wgmma_swiglu_128x224");
        assert_eq!(square.swiglu_kernel(), "gemm_f16_wgmma_swiglu_128");
        assert!(wgmma_shared(wide224) <= 232_448, "4 stages of 44 KiB fit");
    }

    /// The prefill GEMM's tile choice at the two benchmark shapes (512-token prompt): big
    /// tiles where they still fill the GPU, small ones for SmolLM2's narrow matrices.
    #[test]
    fn gemm_tile_fills_the_gpu_before_it_grows() {
        let tiles = [(128, 256u32, "128"), (64, 128, "64"), (32, 128, "32")];
        let pick = |t, n| gemm_tile(&tiles, t, n).0;
        assert_eq!(
            pick(512, 4096),
            128,
            "Llama-2-7B Q/O/down: 4 x 32 = 128 blocks of 128"
        );
        assert_eq!(pick(512, 11_008), 128, "Llama-2-7B gate/up");
        assert_eq!(
            pick(512, 1536),
            64,
            "SmolLM2 gate/up: 4 x 12 = 48 blocks of 128 is too few"
        );
        assert_eq!(
            pick(512, 576),
            32,
            "SmolLM2 Q/O/down: 72 blocks of 64 is too few"
        );
        assert_eq!(pick(7, 100), 32, "a tiny product takes the smallest tile");
    }
}
