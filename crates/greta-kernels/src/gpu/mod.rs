//! Typed launchers for the compiled kernels (kernels/*.hip, built by `cargo xtask
//! build-kernels`). Each has the signature of its CPU reference op in `cpu`, over device
//! buffers; tests/gpu_ops.rs checks every one against the CPU with NMSE thresholds.
//! This module loads the code objects and launches (`GpuKernels`, the argument checks the
//! launchers share); the launchers are filed by kernel source: `ops` (kernels/ops.hip),
//! `gemv` (gemv.hip: decode products), `gemm` (gemm.hip: prefill products), `attention`
//! (attention.hip).

use std::ffi::c_void;
use std::path::{Path, PathBuf};

use crate::timeline;
use hiprt::{
    DeviceBuffer, Function, Gpu, HipError, LaunchDims, Module, Platform, Stream, TensorMap,
};

mod attention;
mod gemm;
mod gemv;
mod ops;

pub use attention::*;
pub use gemm::*;
pub use gemv::*;
pub use ops::*;

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

/// A launch's arguments, packed into one buffer of 8-byte slots: one allocation where a box
/// per value made ~19 for a GEMM launch with its TMA descriptors (session 34 measured the
/// prefill's host issue time 0.23 ms lower on average over ten pairs, docs/performance.md).
/// The driver copies each parameter's bytes from its address into the kernel's parameter
/// space, so a slot's 8-byte alignment suffices, for a TMA descriptor (64-byte aligned in
/// the kernel) too: op tests 14/14 on the H200 with this layout, session 34. A 4-byte value
/// is the low half of its slot, which on a little-endian host (the only kind this crate
/// builds for) is the slot's first four bytes.
struct Args {
    slots: Vec<u64>,
    /// Each argument's first slot.
    starts: Vec<usize>,
}

#[cfg(target_endian = "big")]
compile_error!(
    "Args packs 4-byte kernel arguments as the low half of a u64: little-endian hosts only"
);

impl Args {
    fn new() -> Self {
        Args {
            slots: Vec::with_capacity(192),
            starts: Vec::with_capacity(24),
        }
    }
    fn words(mut self, w: &[u64]) -> Self {
        self.starts.push(self.slots.len());
        self.slots.extend_from_slice(w);
        self
    }
    fn ptr<T: Copy>(self, b: &DeviceBuffer<T>) -> Self {
        self.u64(b.ptr().addr() as u64)
    }
    /// A null pointer (an absent operand the kernel does not read).
    fn null(self) -> Self {
        self.u64(0)
    }
    /// An optional operand: its pointer, or null when absent.
    fn ptr_or_null<T: Copy>(self, b: Option<&DeviceBuffer<T>>) -> Self {
        match b {
            Some(b) => self.ptr(b),
            None => self.null(),
        }
    }
    /// A TMA descriptor, by value (128 bytes: 16 slots).
    fn tmap(self, m: TensorMap) -> Self {
        self.words(&m.0)
    }
    fn u32(self, v: u32) -> Self {
        self.u64(u64::from(v))
    }
    fn u64(self, v: u64) -> Self {
        self.words(&[v])
    }
    fn f32(self, v: f32) -> Self {
        self.u32(v.to_bits())
    }
    /// Each argument's address, for the driver: into `slots`' heap buffer, so valid until
    /// `self` is dropped or grown (the launch that takes them owns `self` and does neither).
    fn pointers(&mut self) -> Vec<*mut c_void> {
        let base = self.slots.as_mut_ptr();
        self.starts
            .iter()
            .map(|&i| base.wrapping_add(i).cast::<c_void>())
            .collect()
    }
}

/// `rows` rows of `len` values.
#[derive(Debug, Clone, Copy)]
pub struct Rows {
    pub rows: usize,
    pub len: usize,
}

/// Where a kernel that writes an f32 activation also writes that activation's f16 operands
/// for the matrix units: `hi` and, for a product that reads its input as hi + lo, `lo`
/// (bitwise what `split_f16` makes of the f32 output).
pub struct F16Operands<'a> {
    pub hi: &'a mut DeviceBuffer<u16>,
    pub lo: Option<LoOperand<'a>>,
}

/// The low half of a split input: f16 (`split_f16`'s), or FP8 (`--split-lo fp8`): one byte
/// a value, e5m2(lo x 2^LO8_SCALE_LOG2) (kernels/greta_device.h), or FP8 kept 2:4-sparse
/// (`SparseLo8`; only `add_rmsnorm_split` and `split_f16_lo8s` write it).
pub enum LoOperand<'a> {
    F16(&'a mut DeviceBuffer<u16>),
    Fp8(&'a mut DeviceBuffer<u8>),
    Fp8Sparse(&'a mut SparseLo8),
}

impl LoOperand<'_> {
    /// The f16 buffer, where the low half is f16.
    fn f16(&self) -> Option<&DeviceBuffer<u16>> {
        match self {
            LoOperand::F16(b) => Some(b),
            _ => None,
        }
    }
    /// The FP8 bytes, where the low half is FP8 (every value).
    fn fp8(&self) -> Option<&DeviceBuffer<u8>> {
        match self {
            LoOperand::Fp8(q) => Some(q),
            _ => None,
        }
    }
    /// The sparse FP8 low half, where it is one.
    fn sparse(&self) -> Option<&SparseLo8> {
        match self {
            LoOperand::Fp8Sparse(sp) => Some(sp),
            _ => None,
        }
    }
}

/// One shape a run launched a kernel in (`GpuKernels::record_launches`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LaunchShape {
    pub kernel: String,
    pub blocks: u32,
    /// The launch's pieces of work: its blocks, or, for the persistent warpgroup GEMM whose
    /// blocks each take output tiles in turn, its output tiles.
    pub tiles: u32,
    pub threads: u32,
    /// Dynamic shared memory (LDS) a block, bytes.
    pub shared_bytes: u32,
    /// Blocks a thread-block cluster (1: no clusters).
    pub cluster: u32,
}

/// A launch shape with what the device makes of it (`GpuKernels::launched`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    pub shape: LaunchShape,
    /// Blocks of this shape one multiprocessor runs at once (registers, shared memory,
    /// launch bounds; 0: none fits).
    pub blocks_per_sm: u32,
    /// Clustered launches: the clusters of this shape the whole device runs at once (a
    /// cluster's blocks must share a GPC, which can leave multiprocessors out); 0 otherwise.
    pub clusters_resident: u32,
}

impl Launched {
    /// The launch in waves over `sms` multiprocessors: tiles / (blocks_per_sm x sms) (a
    /// grid's blocks, or the persistent GEMM's output tiles). A launch of 2.1 waves runs in
    /// three rounds, the last mostly idle; that is what a tile choice weighs
    /// (`wgmma_tile`). A clustered launch's wave is its resident clusters' blocks (the
    /// per-block figure does not bound it: a cluster's blocks must share a GPC). None where
    /// nothing fits.
    pub fn waves(&self, sms: usize) -> Option<f64> {
        let per_wave = match self.shape.cluster {
            0 | 1 => self.blocks_per_sm as usize * sms,
            c => self.clusters_resident as usize * c as usize,
        };
        (per_wave > 0).then(|| self.shape.tiles as f64 / per_wave as f64)
    }
}

pub struct GpuKernels {
    pub object: PathBuf,
    /// The code objects' target (sm_90a, gfx942, gfx90a): what their numerics are those of.
    pub target: &'static str,
    /// Launch each kernel so that it may start while the one ahead of it drains (hiprt's
    /// `launch_overlapped`: programmatic dependent launch on NVIDIA sm_90; plain stream
    /// order on AMD, which has no such launch). On by default; off gives plain launches to
    /// compare with. Every kernel waits for its predecessor before touching shared data
    /// (kernels/greta_device.h), so results are the same either way.
    pub overlap: bool,
    /// The greedy pick over a thread-block cluster where clusters run (`argmax`); off, the
    /// one-block kernel every platform has (the op test runs both).
    pub cluster_argmax: bool,
    /// Which warpgroup GEMM launches share their short last wave out along K (stream-K,
    /// `StreamK`; `set_stream_k`); `Off` by default: measured no faster on an H200
    /// (docs/performance.md, session 52).
    stream_k: StreamK,
    /// The stream-K launches' partial tiles and flags, made by `set_stream_k` when first
    /// asked for (sm_90a objects only).
    stream_k_space: Option<StreamKSpace>,
    /// Whether the plain, FP8-lo, Q/K/V cache and SwiGLU products may take swapped tiles
    /// (`WgmmaTile::SWAPPED`, `SWAPPED_SWIGLU`; `set_swapped_tiles`): on by default.
    swapped_tiles: bool,
    /// A timing study's kernels (`skip_kernels`): their launches are left out.
    skip: Vec<String>,
    /// The launch shapes since `record_launches`, for a timing study's labels (`greta bench
    /// --timeline`: the stamps know a launch's module and shape only) and `launched`.
    launched: Option<std::sync::Mutex<std::collections::BTreeSet<LaunchShape>>>,
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
    /// attn_decode_rope leaving every split's partial for the output product
    /// (`attention_rope` without ctx).
    attn_decode_rope_partials: [Option<Function>; DECODE_HEAD_DIMS],
    advance_pos: Function,
    gemm_mma: Function,
    /// The k % 8 == 0 fast path (f16 activations) by tile size: 128, 64, 32 (see `gemm_f16`).
    gemm_f16: [(usize, u32, Function); 3],
    /// The same products on Hopper's warpgroup matrix units, by tile (`WgmmaTile::ALL`, then
    /// `SWAPPED`; sm_90a objects only).
    gemm_f16_wgmma: Option<Vec<WgmmaForm>>,
    /// Their SwiGLU forms (gate and up with act's operands in the epilogue), by tile
    /// (`WgmmaTile::SWIGLU`; sm_90a objects only).
    gemm_f16_wgmma_swiglu: Option<Vec<WgmmaForm>>,
    /// The Q/K/V group's forms that write K (rotated) and V into the caches
    /// (`gemm_f16_qkv_cache`), by tile (`WgmmaTile::LO8`, then `SWAPPED_KV`; sm_90a objects
    /// only).
    gemm_f16_wgmma_kv: Option<Vec<WgmmaForm>>,
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
    rope_angles: Function,
    gemv3: Function,
    gemv3_r2: Function,
    gemv3_norm: [Function; 2],
    gemv_add: [Function; 2],
    /// gemv_add for rows of more than two load groups (`gemv_add`).
    gemv_add_pre2: Function,
    /// gemv_add with the attention's split combine in the prologue (`gemv_add_splits`).
    gemv_add_splits: Function,
    gate_up_silu: Function,
    gate_up_silu_norm: Function,
    /// The short-prefill products over up to 4, 8 and 16 rows of input (`gemv_rows`).
    gemv_rows: [Function; 3],
    /// gate, up and SwiGLU over up to 4, 8 and 16 rows (`gate_up_silu_rows`).
    gate_up_silu_rows: [Function; 3],
    gemv_plain: Function,
    argmax: Function,
    /// argmax over a cluster of ARGMAX_CLUSTER blocks (where clusters run).
    argmax_cluster: Option<Function>,
}

/// The FP8 low-half kernels (sm_90a objects only; kernels/gemm.hip, ops.hip).
struct Fp8Kernels {
    /// The grouped GEMM's FP8-lo forms, on the `LO8` and `SWAPPED` tiles.
    gemm: Vec<WgmmaForm>,
    /// The SwiGLU GEMM's FP8-lo forms (`SwigluLo::Fp8`), on every SwiGLU tile.
    swiglu: Vec<WgmmaForm>,
    /// `gemm_f16_qkv_cache`'s FP8-lo forms, on the `LO8` and `SWAPPED_KV` tiles.
    gemm_kv: Vec<WgmmaForm>,
    split: Function,
    /// The LO8 and SwiGLU LO8 forms with 2:4-sparse low products (`GemmLo::Fp8Sparse`,
    /// `SwigluLo::Fp8Sparse`; SP in kernels/gemm.hip), on the unswapped tiles, and the kernel
    /// that writes their operands (`split_f16_lo8s`).
    gemm_sp: Vec<WgmmaForm>,
    swiglu_sp: Vec<WgmmaForm>,
    split_sparse: Function,
    absmax: Function,
    quantize: Function,
}

const BLOCK: u32 = 256;

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
            // Read only on Hopper, where its readers run (the warpgroup GEMM's tile choice
            // and persistent grid, the attentions' clusters and block order: the field's
            // doc): an attribute query no AMD GPU has run yet cannot stop the AMD load.
            let multiprocessors = match hopper {
                true => gpu.multiprocessors()?,
                false => 0,
            };
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
                target,
                overlap: true,
                cluster_argmax: true,
                stream_k: StreamK::Off,
                stream_k_space: None,
                swapped_tiles: true,
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
                rope_angles: ops.function("rope_angles_f32")?,
                gemv3: product("gemv3_f16")?,
                gemv3_r2: product("gemv3_f16_r2")?,
                gemv3_norm: [product("gemv3_norm_f16")?, product("gemv3_norm_f16_r2")?],
                gemv_add: [product("gemv_add_f16")?, product("gemv_add_f16_r2")?],
                gemv_add_pre2: gemv.function("gemv_add_f16_pre2")?,
                gemv_add_splits: product("gemv_add_splits_f16")?,
                gate_up_silu: gemv.function("gemv_gate_up_silu_f16")?,
                gate_up_silu_norm: product("gemv_gate_up_silu_norm_f16")?,
                gemv_rows: [
                    product("gemv_rows4_f16")?,
                    product("gemv_rows8_f16")?,
                    product("gemv_rows16_f16")?,
                ],
                gate_up_silu_rows: [
                    product("gemv_gate_up_silu_rows4_f16")?,
                    product("gemv_gate_up_silu_rows8_f16")?,
                    product("gemv_gate_up_silu_rows16_f16")?,
                ],
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
                attn_decode_rope_partials: per_decode_head_dim(|hd| {
                    (hd != DECODE_ROPE_NONE)
                        .then(|| attn.function(&format!("attn_decode_rope_partials_hd{hd}")))
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
                    true => Some(wgmma_forms(
                        &gemm,
                        &WgmmaTile::with_swapped(&WgmmaTile::ALL, &WgmmaTile::SWAPPED),
                        WgmmaTile::kernel,
                        multiprocessors,
                    )?),
                    false => None,
                },
                gemm_f16_wgmma_swiglu: match hopper {
                    true => Some(wgmma_forms(
                        &gemm,
                        &WgmmaTile::with_swapped(&WgmmaTile::SWIGLU, &WgmmaTile::SWAPPED_SWIGLU),
                        WgmmaTile::swiglu_kernel,
                        multiprocessors,
                    )?),
                    false => None,
                },
                gemm_f16_wgmma_kv: match hopper {
                    true => Some(wgmma_forms(
                        &gemm,
                        &WgmmaTile::with_swapped(&WgmmaTile::LO8, WgmmaTile::SWAPPED_KV),
                        |t| format!("{}_kv", t.kernel()),
                        multiprocessors,
                    )?),
                    false => None,
                },
                fp8: match hopper {
                    true => Some(Fp8Kernels {
                        gemm: wgmma_forms(
                            &gemm,
                            &WgmmaTile::with_swapped(&WgmmaTile::LO8, &WgmmaTile::SWAPPED),
                            |t| format!("{}_lo8", t.kernel()),
                            multiprocessors,
                        )?,
                        swiglu: wgmma_forms(
                            &gemm,
                            &WgmmaTile::with_swapped(
                                &WgmmaTile::SWIGLU,
                                &WgmmaTile::SWAPPED_SWIGLU,
                            ),
                            |t| format!("{}_lo8", t.swiglu_kernel()),
                            multiprocessors,
                        )?,
                        gemm_kv: wgmma_forms(
                            &gemm,
                            &WgmmaTile::with_swapped(&WgmmaTile::LO8, WgmmaTile::SWAPPED_KV),
                            |t| format!("{}_lo8_kv", t.kernel()),
                            multiprocessors,
                        )?,
                        split: ops.function("split_f16_lo8")?,
                        gemm_sp: wgmma_forms(
                            &gemm,
                            &WgmmaTile::LO8,
                            |t| format!("{}_lo8sp", t.kernel()),
                            multiprocessors,
                        )?,
                        swiglu_sp: wgmma_forms(
                            &gemm,
                            &WgmmaTile::SWIGLU,
                            |t| format!("{}_lo8sp", t.swiglu_kernel()),
                            multiprocessors,
                        )?,
                        split_sparse: ops.function("split_f16_lo8s")?,
                        absmax: ops.function("absmax_f16")?,
                        quantize: ops.function("quantize_e4m3")?,
                    }),
                    false => None,
                },
                multiprocessors,
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
        let shapes: std::collections::BTreeSet<_> = self
            .recorded()
            .into_iter()
            .map(|l| (l.kernel, l.blocks, l.threads))
            .collect();
        shapes.into_iter().collect()
    }

    /// Every launch shape since `record_launches`, sorted, each with the blocks of it that
    /// one multiprocessor holds at once (the runtime's occupancy calculator), from which
    /// `Launched::waves` counts the grid's waves; empty if it was not called.
    pub fn launched(&self) -> Result<Vec<Launched>> {
        self.recorded()
            .into_iter()
            .map(|shape| {
                let f = self
                    .modules
                    .iter()
                    .find_map(|(_, m)| m.function(&shape.kernel).ok())
                    .ok_or_else(|| {
                        KernelError::Shape(format!(
                            "launched kernel {} is in no loaded object",
                            shape.kernel
                        ))
                    })?;
                let blocks_per_sm = f.max_active_blocks(shape.threads, shape.shared_bytes)?;
                let clusters_resident = match shape.cluster {
                    0 | 1 => 0,
                    c => f.max_active_clusters(shape.threads, shape.shared_bytes, c)?,
                };
                Ok(Launched {
                    shape,
                    blocks_per_sm,
                    clusters_resident,
                })
            })
            .collect()
    }

    fn recorded(&self) -> Vec<LaunchShape> {
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
        self.launch_as(f, dims, None, s, args, self.overlap)
    }

    /// `launch` of a persistent kernel whose blocks take `tiles` pieces of work in turn
    /// (recorded for `launched`'s waves).
    fn launch_tiles(
        &self,
        f: &Function,
        dims: LaunchDims,
        tiles: u32,
        s: &Stream,
        args: Args,
    ) -> Result<()> {
        self.launch_as(f, dims, Some(tiles), s, args, self.overlap)
    }

    /// `launch`, never overlapped with the kernel ahead (it starts after all of the stream's
    /// earlier work has finished).
    fn launch_serial(&self, f: &Function, dims: LaunchDims, s: &Stream, args: Args) -> Result<()> {
        self.launch_as(f, dims, None, s, args, false)
    }

    fn launch_as(
        &self,
        f: &Function,
        dims: LaunchDims,
        tiles: Option<u32>,
        s: &Stream,
        mut args: Args,
        overlapped: bool,
    ) -> Result<()> {
        if self.skip.iter().any(|n| n == f.name()) {
            return Ok(());
        }
        if let Some(set) = &self.launched {
            let blocks = dims.grid.iter().product();
            let shape = LaunchShape {
                kernel: f.name().to_string(),
                blocks,
                tiles: tiles.unwrap_or(blocks),
                threads: dims.block.iter().product(),
                shared_bytes: dims.shared_bytes,
                cluster: dims.cluster,
            };
            set.lock().unwrap_or_else(|e| e.into_inner()).insert(shape);
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
            Some(LoOperand::Fp8Sparse(sp)) => sp.check(shape.rows, shape.len, what),
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
        if ops.lo.as_ref().is_some_and(|l| l.sparse().is_some()) {
            return Err(KernelError::Shape(format!(
                "{what}: no 2:4-sparse FP8 low-half output (accepted: f16 or FP8 low halves; add_rmsnorm_split and split_f16_lo8s write sparse ones)"
            )));
        }
        match ops.lo.as_ref().and_then(|l| l.fp8()) {
            Some(q) => {
                self.fp8(what)?;
                Ok(args.ptr(q))
            }
            None => Ok(args.null()),
        }
    }

    /// `lo8_arg` and the sparse form's two arguments after it (its compressed bytes and
    /// metadata; null where the low half is not sparse), for the writers that have it.
    fn lo8_sparse_args(&self, args: Args, ops: &F16Operands, what: &str) -> Result<Args> {
        match ops.lo.as_ref().and_then(|l| l.sparse()) {
            Some(sp) => {
                self.fp8(what)?;
                Ok(args.null().ptr(&sp.q).ptr(&sp.meta))
            }
            None => Ok(self.lo8_arg(args, ops, what)?.null().null()),
        }
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
}

/// Refuses f16 rows of `k` elements that the matrix-unit GEMMs cannot read: they load rows
/// in 16-byte pieces (8 f16), so k must be a positive multiple of 8. `what` names the caller
/// in the error.
fn check_f16_rows(k: usize, what: &str) -> Result<()> {
    if !k.is_multiple_of(8) || k == 0 {
        return Err(KernelError::Shape(format!(
            "{what} needs k > 0 and k % 8 == 0 (16-byte rows); k = {k}"
        )));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the driver reads at each argument's address is that argument's bytes as the
    /// kernel declares it: a 4-byte value's own bytes (not the slot's other half), an f32's
    /// bits, a descriptor's 128 bytes; the addresses follow the order of the calls.
    #[test]
    fn packed_arguments_read_back_as_the_kernel_declares_them() {
        let map = TensorMap(std::array::from_fn(|i| 0x0101_0101_0101_0101 * i as u64));
        let mut a = Args::new()
            .u32(0xdead_beef)
            .tmap(map)
            .f32(-1.5)
            .u64(u64::MAX - 7)
            .null();
        let p = a.pointers();
        assert_eq!(p.len(), 5);
        // SAFETY: each pointer addresses a live slot of `a` holding at least the bytes read.
        unsafe {
            assert_eq!(p[0].cast::<u32>().read(), 0xdead_beef);
            assert_eq!(p[1].cast::<[u64; 16]>().read(), map.0);
            assert_eq!(f32::from_bits(p[2].cast::<u32>().read()), -1.5);
            assert_eq!(p[3].cast::<u64>().read(), u64::MAX - 7);
            assert_eq!(p[4].cast::<u64>().read(), 0);
        }
        // Slots after the descriptor: 1 + 16, so the f32 sits 136 bytes on.
        assert_eq!(p[2] as usize - p[0] as usize, 136);
    }

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
        let ops = include_str!("../../../../kernels/ops.hip");
        for name in super::MOVES_POSITION {
            assert!(
                ops.contains(&format!("GRETA_KERNEL void {name}(")),
                "{name} is not a kernel of kernels/ops.hip"
            );
        }
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

    /// Waves as `greta bench --kernels` prints them: session 41's 7B at 650 rows, Q/K/V's
    /// 396 tiles of one block a multiprocessor on 132 are three whole waves, gate/up's 516
    /// 3.9, whether 396 blocks take them or a persistent grid of 132; two blocks a
    /// multiprocessor halve them; a clustered launch counts by the clusters resident; a
    /// grid no block (or cluster) of which fits has none.
    #[test]
    fn waves_are_tiles_over_what_the_multiprocessors_hold() {
        let l = |tiles, cluster, blocks_per_sm| Launched {
            shape: LaunchShape {
                kernel: "k".into(),
                blocks: tiles,
                tiles,
                threads: 288,
                shared_bytes: 0,
                cluster,
            },
            blocks_per_sm,
            clusters_resident: 0,
        };
        assert_eq!(l(396, 1, 1).waves(132), Some(3.0));
        assert!((l(516, 1, 1).waves(132).unwrap() - 3.909).abs() < 1e-3);
        assert_eq!(l(396, 1, 2).waves(132), Some(1.5));
        assert_eq!(l(396, 1, 0).waves(132), None);
        assert_eq!(l(396, 1, 1).waves(0), None);
        // Clustered: by the clusters resident, not the blocks a multiprocessor holds (64
        // pairs where 132 blocks would fit: 396 tiles are 3.09 waves, not 3).
        assert_eq!(l(396, 2, 1).waves(132), None, "no cluster fits");
        let mut paired = l(396, 2, 1);
        paired.clusters_resident = 64;
        assert!((paired.waves(132).unwrap() - 396.0 / 128.0).abs() < 1e-12);
        let mut persistent = l(396, 1, 1);
        persistent.shape.blocks = 132;
        assert_eq!(persistent.waves(132), Some(3.0));
    }
}
