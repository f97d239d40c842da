//! Launchers of kernels/gemm.hip: the prefill's products (many rows), on the warpgroup
//! GEMM (Hopper: wgmma fed by TMA, f16 or FP8 low halves, SwiGLU in the epilogue) or the
//! mma.sync / MFMA tiles, and the choice of tile.

use super::*;

/// A GEMM's low half of its input (`gemm_f16`): see `LoOperand`.
#[derive(Clone, Copy)]
pub enum GemmLo<'a> {
    F16(&'a DeviceBuffer<u16>),
    Fp8(&'a DeviceBuffer<u8>),
    /// FP8 and 2:4-sparse (`split_f16_lo8s`): the lo products on the sparse FP8 matrix units.
    Fp8Sparse(&'a SparseLo8),
}

/// The low half of the SwiGLU GEMM's input (`gemm_f16_swiglu`): f16, or FP8 with the FP8
/// copies of gate's and up's weights that its lo products multiply (as `GemmOut::w8`).
#[derive(Clone, Copy)]
pub enum SwigluLo<'a> {
    F16(&'a DeviceBuffer<u16>),
    Fp8 {
        q: &'a DeviceBuffer<u8>,
        w8: [&'a E4m3Matrix; 2],
    },
    /// FP8 and 2:4-sparse (`split_f16_lo8s`), with the same weight copies.
    Fp8Sparse {
        lo: &'a SparseLo8,
        w8: [&'a E4m3Matrix; 2],
    },
}

/// An FP8 low half kept 2:4-sparse (docs/sparse-lo.md), as `split_f16_lo8s` and
/// `add_rmsnorm_split` write it and the sparse FP8 products read it: `q` [rows][k / 2] bytes,
/// each 4 columns' two largest low halves in column order, and `meta` their metadata (a
/// nibble a 4 columns) tiled for the GEMM's K 128 steps (`sp_meta_word` in
/// kernels/greta_device.h), over rows rounded up to 128
/// (the GEMM's row tiles read whole 64-row blocks). k % 32 == 0 (the TMA's 16-byte rows of
/// the compressed bytes, one metadata word a 32 columns).
pub struct SparseLo8 {
    pub q: DeviceBuffer<u8>,
    pub meta: DeviceBuffer<u32>,
    rows: usize,
    k: usize,
}

impl SparseLo8 {
    /// Room for `rows` rows of `k` columns, the metadata set to 0x44444444 on `s` (every
    /// group's columns 0 and 1: a valid pattern for the rows and words past what a writer
    /// fills, which the GEMM's whole 64-row blocks and K 128 steps still read, over zeros).
    pub fn alloc(gpu: &Gpu, s: &Stream, rows: usize, k: usize) -> Result<Self> {
        check_sparse_k(k, "SparseLo8")?;
        let mut meta = gpu.alloc::<u32>(Self::meta_words(rows, k))?;
        meta.fill_bytes(0x44, s)?;
        Ok(SparseLo8 {
            q: gpu.alloc::<u8>(rows * k / 2)?,
            meta,
            rows,
            k,
        })
    }

    /// The metadata's words for `rows` rows of `k` columns: 1 KiB a 64-row block a K 128
    /// step, over rows rounded up to 128.
    pub fn meta_words(rows: usize, k: usize) -> usize {
        rows.div_ceil(128) * 2 * k.div_ceil(128) * 256
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Refuses a use of `t` rows of `k` columns that this buffer was not made for, by name.
    pub(super) fn check(&self, t: usize, k: usize, what: &str) -> Result<()> {
        if k != self.k || t > self.rows {
            return Err(KernelError::Shape(format!(
                "{what}: sparse low halves of {} x {} read as {t} x {k} (accepted: at most {} rows of exactly {} columns)",
                self.rows, self.k, self.rows, self.k
            )));
        }
        Ok(())
    }
}

/// Refuses a sparse low half's row length the kernels cannot read, by name.
pub(super) fn check_sparse_k(k: usize, what: &str) -> Result<()> {
    if k == 0 || !k.is_multiple_of(32) {
        return Err(KernelError::Shape(format!(
            "{what}: k = {k} (accepted: a positive multiple of 32 for 2:4-sparse low halves: one metadata word a 32 columns, 16-byte rows of compressed bytes)"
        )));
    }
    Ok(())
}

/// The FP8 low half the LO8 forms read: every value, or 2:4-sparse.
#[derive(Clone, Copy)]
enum Lo8In<'a> {
    Dense(&'a DeviceBuffer<u8>),
    Sparse(&'a SparseLo8),
}

impl<'a> GemmLo<'a> {
    /// The FP8 low half (every value or 2:4-sparse), where it is one.
    fn lo8(self) -> Option<Lo8In<'a>> {
        match self {
            GemmLo::F16(_) => None,
            GemmLo::Fp8(q) => Some(Lo8In::Dense(q)),
            GemmLo::Fp8Sparse(sp) => Some(Lo8In::Sparse(sp)),
        }
    }
}

impl<'a> SwigluLo<'a> {
    /// The FP8 low half and gate's and up's FP8 weight copies, where the low half is FP8.
    fn lo8(self) -> Option<(Lo8In<'a>, [&'a E4m3Matrix; 2])> {
        match self {
            SwigluLo::F16(_) => None,
            SwigluLo::Fp8 { q, w8 } => Some((Lo8In::Dense(q), w8)),
            SwigluLo::Fp8Sparse { lo, w8 } => Some((Lo8In::Sparse(lo), w8)),
        }
    }
}

impl Lo8In<'_> {
    /// (A sparse buffer's k passed `check_sparse_k` when it was made; `SparseLo8::check`
    /// holds the use to that k.)
    fn check(&self, t: usize, k: usize, what: &str) -> Result<()> {
        match self {
            Lo8In::Dense(q) => GpuKernels::need_of(q, t * k, what, "a_lo (FP8)"),
            Lo8In::Sparse(sp) => sp.check(t, k, what),
        }
    }

    /// The TMA map of its bytes: K 128 a step, as 128-byte rows (dense) or the compressed
    /// 64 (sparse).
    fn tensor_map(&self, t: usize, k: usize, m: u32) -> Result<TensorMap> {
        Ok(match self {
            Lo8In::Dense(q) => q.tensor_map_u8(t, k, m, WGMMA_BK8)?,
            Lo8In::Sparse(sp) => sp.q.tensor_map_u8(t, k / 2, m, WGMMA_BK8 / 2)?,
        })
    }

    /// The sparse forms' last argument: the metadata.
    fn meta_arg(&self, args: Args) -> Args {
        match self {
            Lo8In::Dense(_) => args,
            Lo8In::Sparse(sp) => args.ptr(&sp.meta),
        }
    }
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
    pub(super) absmax: DeviceBuffer<u32>,
}

/// The scale of a weight matrix's FP8 copy (`quantize_e4m3`; `g_lo8_scale` in
/// kernels/greta_device.h) for its largest |w|, `max_abs`: 2^(E - 7) for `max_abs` in
/// [2^E, 2^(E+1)), E at least -119, so that dividing by it is exact and the largest value
/// lands in [128, 256) (e4m3 saturates at 448). The host's statement of the rule, for the op
/// tests' expected bytes and the CPU emulation of the FP8 low halves.
pub fn e4m3_weight_scale(max_abs: f32) -> f32 {
    let e = (((max_abs.to_bits() >> 23) & 0xff) as i32 - 127).max(-119);
    f32::from_bits(((e - 7 + 127) as u32) << 23)
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
    /// 128s, and the wide 128 x 256, 128 x 232 and 128 x 192 for those whose 128-column
    /// tiles make no fewer waves of blocks (their wider products keep the matrix units
    /// busier: kernels/gemm.hip); 232 where 256's last wave would leave many multiprocessors
    /// idle, 192 where it makes whole waves (7B's Q/K/V at 512 rows: 264 blocks, 2 of 132).
    pub const ALL: [WgmmaTile; 5] = [
        WgmmaTile { m: 128, n: 128 },
        WgmmaTile { m: 64, n: 64 },
        WgmmaTile { m: 128, n: 256 },
        WgmmaTile { m: 128, n: 232 },
        WgmmaTile { m: 128, n: 192 },
    ];
    /// The tiles with an FP8-lo form of the (grouped) GEMM (kernels/gemm.hip, LO8: FP8 steps
    /// first, one accumulator set): 128 x 128, 64 x 64 and 128 x 192 (7B's Q/K/V at 512
    /// rows). The wider ones have none (no prompt length measured picks them for a split
    /// product). The SwiGLU GEMM has one on every tile (`SWIGLU`).
    pub const LO8: [WgmmaTile; 3] = [
        WgmmaTile { m: 128, n: 128 },
        WgmmaTile { m: 64, n: 64 },
        WgmmaTile { m: 128, n: 192 },
    ];
    /// The tiles of the SwiGLU forms (`gemm_f16_swiglu`: n / 2 gate and n / 2 up columns
    /// each), in `ALL`'s order: square, small, wide, and 224 where 232 is unfused (its
    /// halves must be whole 8-row swizzle atoms).
    pub const SWIGLU: [WgmmaTile; 4] = [
        WgmmaTile { m: 128, n: 128 },
        WgmmaTile { m: 64, n: 64 },
        WgmmaTile { m: 128, n: 256 },
        WgmmaTile { m: 128, n: 224 },
    ];

    /// `swapped` after `tiles`: the tiles of the plain and FP8-lo grouped products
    /// (`SWAPPED`) or of the Q/K/V cache forms (`SWAPPED_KV`).
    pub(super) fn with_swapped(tiles: &[WgmmaTile], swapped: &[WgmmaTile]) -> Vec<WgmmaTile> {
        tiles.iter().chain(swapped).copied().collect()
    }

    /// Whether the tile puts its input rows on the matrix units' N side (`SWAPPED`).
    pub fn swapped(&self) -> bool {
        self.m != 64 && self.m != 128
    }

    pub(super) fn kernel(&self) -> String {
        if self.swapped() {
            return format!("gemm_f16_wgmma_t{}", self.m);
        }
        match self.m == self.n {
            true => format!("gemm_f16_wgmma_{}", self.m),
            false => format!("gemm_f16_wgmma_{}x{}", self.m, self.n),
        }
    }
    /// Tiles of 128 output columns by 72, 80, .. 256 input rows (every multiple of 8 but
    /// 128, the square tile): the weights are the matrix units' A operand, 64 rows a consumer
    /// warpgroup, and the input rows their N (SWAP in kernels/gemm.hip), so that a prompt's
    /// rows are cut into tiles of about equal size (7B's output and down at 520 rows: 4 row
    /// tiles of 136 fill one wave of 132 blocks, where 128-row tiles make 5 whose last holds 8
    /// rows, 160 blocks in 2 waves). The plain and FP8-lo grouped products have them
    /// (`with_swapped`), the Q/K/V cache forms those to 192 (`SWAPPED_KV`); the SwiGLU and
    /// sparse forms none (a swapped SwiGLU form measured slower: session 53,
    /// tools/gpu/variants/swiglu-swapped.patch).
    pub const SWAPPED: [WgmmaTile; 23] = {
        let mut tiles = [WgmmaTile { m: 0, n: 128 }; 23];
        let (mut i, mut m) = (0, 72);
        while i < tiles.len() {
            if m == 128 {
                m += 8;
            }
            tiles[i].m = m;
            i += 1;
            m += 8;
        }
        tiles
    };

    /// The swapped tiles of the Q/K/V cache forms: `SWAPPED` to 192 rows (wider, ptxas spills
    /// their epilogue under the 168 registers a thread of theirs may hold).
    pub const SWAPPED_KV: &'static [WgmmaTile] = Self::SWAPPED.split_at(15).0;

    /// The SwiGLU forms' swapped tiles: 72-120 input rows by 256 weight rows (gate's 128 and
    /// up's: 128 outputs), every multiple of 8 (both accumulator sets fit a thread's 168
    /// registers to 120).
    pub const SWAPPED_SWIGLU: [WgmmaTile; 7] = {
        let mut tiles = [WgmmaTile { m: 0, n: 256 }; 7];
        let mut i = 0;
        while i < tiles.len() {
            tiles[i].m = 72 + 8 * i;
            i += 1;
        }
        tiles
    };

    pub(super) fn swiglu_kernel(&self) -> String {
        self.kernel().replace("wgmma_", "wgmma_swiglu_")
    }
}

/// The warpgroup GEMM's K step (WG_BK in kernels/gemm.hip: the TMA boxes' columns, 128 bytes
/// of f16) and depth (WG_STAGES; a kernel build with another depth needs this one too).
const WGMMA_BK: u32 = 64;

/// The FP8-lo forms' K step for their FP8 operands (2 * WG_BK in kernels/gemm.hip): 128
/// bytes of FP8 a box row, as the f16 boxes' K 64, so an FP8 step fills a stage in the same
/// layout.
const WGMMA_BK8: u32 = 2 * WGMMA_BK;

const WGMMA_STAGES: u32 = 6;

/// The 128 x 232 tile's depth (WG_STAGES_232 in kernels/gemm.hip): 4 of 45 KiB.
const WGMMA_STAGES_232: u32 = 4;

/// The warpgroup GEMM's stages for `tile` (GEMM_WGMMA in kernels/gemm.hip): as many as fit
/// the 227 KiB a block may opt in to on sm_90, up to `WGMMA_STAGES`: 4 of 48 KiB for the
/// 128 x 256 tile; 4 of 45 KiB for 128 x 232 (5 fit, and measured level: session 25); 5 of
/// 40 KiB for 128 x 192.
fn wgmma_stages(tile: WgmmaTile) -> u32 {
    if tile.swapped() {
        // g_swap_stages in kernels/gemm.hip: as many as fit a block's 227 KiB, at most
        // WGMMA_STAGES.
        return (1..=WGMMA_STAGES)
            .rev()
            .find(|&stages| shared_bytes(tile, stages) <= 227 * 1024)
            .unwrap_or(1);
    }
    match tile.n {
        256 | 224 => 4,
        232 => WGMMA_STAGES_232,
        192 => 5,
        _ => WGMMA_STAGES,
    }
}

/// The warpgroup GEMM's threads a block for `tile`: a consumer warpgroup per 64 rows (of
/// the weights in a swapped tile), then the producer warp (kernels/gemm.hip).
fn wgmma_threads(tile: WgmmaTile) -> u32 {
    // Swapped: two, on 64 weight rows each (the SwiGLU forms' 256: 64 of gate's, 64 of up's).
    let consumers = if tile.swapped() {
        2
    } else {
        tile.m as u32 / 64
    };
    128 * consumers + 32
}

/// Which warpgroup GEMM launches share their last wave out along K (stream-K:
/// kernels/gemm.hip, g_sk). A persistent launch of `tiles` tiles on a grid of `g` blocks
/// runs ceil(tiles / g) tiles on its busiest blocks; where the last wave is short (7B at 800
/// rows: gate/up's 602 tiles of 128 x 256 on 132 blocks, 4 waves and 74 tiles), its tiles
/// are cut into parts along K that the whole grid takes in turn, at the cost of a part's
/// pipeline refill and its sums' round trip through a slot. The sums are the same products
/// added in another order: f32 results differ in their last bits from the whole tiles'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamK {
    /// Shared where the cost model (`StreamK::split`) saves a block at least
    /// `STREAM_K_AUTO_GAIN` of a tile.
    Auto,
    /// Every tile whole: the default (on an H200 the 7B's prefill is no faster shared at
    /// any prompt length measured, 512-896: session 52 in docs/performance.md).
    Off,
    /// Shared wherever the last wave is short, gain or not (the op tests: every kind of
    /// part).
    Always,
}

/// How a launch's short last wave is shared out: its `tiles` tiles (fewer than the grid),
/// each in `parts` parts of equal steps along K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamKSplit {
    pub tiles: usize,
    pub parts: usize,
}

/// The most parts a tile is cut into: beyond it, the parts' costs outgrow what finer cuts
/// even out.
pub const STREAM_K_MAX_PARTS: usize = 8;
/// What a part costs a block beyond its steps, in tiles (its pipeline's refill, its sums'
/// store and load: a few microseconds against a 7B tile's ~60): an estimate, not measured.
pub const STREAM_K_PART_COST: f64 = 0.05;
/// The least a block's time must fall by, in tiles, for `Auto` to share.
pub const STREAM_K_AUTO_GAIN: f64 = 0.15;

impl StreamK {
    /// The share of a launch of `tiles` tiles on `g` blocks (None: every tile whole). The
    /// last wave's r tiles in p parts make ceil(p r / g) turns of 1 / p tile on the busiest
    /// block, each costing `STREAM_K_PART_COST` more, against one whole tile: p is the
    /// cheapest of 2..=`STREAM_K_MAX_PARTS` (the fewest parts of equal cost).
    pub fn split(self, tiles: usize, g: usize) -> Option<StreamKSplit> {
        let rest = tiles.checked_rem(g)?;
        if self == StreamK::Off || rest == 0 {
            return None;
        }
        let (parts, time) = (2..=STREAM_K_MAX_PARTS)
            .map(|p| {
                let turns = (p * rest).div_ceil(g) as f64;
                (p, turns / p as f64 + STREAM_K_PART_COST * turns)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("two parts at least");
        let split = StreamKSplit { tiles: rest, parts };
        match self {
            StreamK::Always => Some(split),
            _ => (1.0 - time >= STREAM_K_AUTO_GAIN).then_some(split),
        }
    }
}

impl std::str::FromStr for StreamK {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(StreamK::Auto),
            "off" => Ok(StreamK::Off),
            "always" => Ok(StreamK::Always),
            _ => Err(format!("{s:?}: expected auto, off or always")),
        }
    }
}

impl std::fmt::Display for StreamK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StreamK::Auto => "auto",
            StreamK::Off => "off",
            StreamK::Always => "always",
        })
    }
}

/// The stream-K launches' slots: a partial tile (TM x TN f32) and a flag per consumer warp
/// for each tile of a short last wave (fewer than the grid's blocks), sized for the largest
/// of the loaded forms (128 x 256 on 132 multiprocessors: 17.3 MB). One set for every
/// launch: the GEMMs of one stream run one after the other, each waiting for the one ahead
/// before it writes (greta_device.h).
pub(super) struct StreamKSpace {
    pub(super) part: DeviceBuffer<f32>,
    pub(super) flag: DeviceBuffer<u32>,
}

impl StreamKSpace {
    pub(super) fn new<'a>(gpu: &Gpu, forms: impl Iterator<Item = &'a WgmmaForm>) -> Result<Self> {
        let (mut part, mut flags) = (1, 1);
        for (f, (_, resident_sk)) in forms.filter_map(|f| f.sk.as_ref().map(|sk| (f, sk))) {
            part = part.max(resident_sk * f.tile.m * f.tile.n);
            flags = flags.max(resident_sk * f.tile.m / 64 * 4);
        }
        let s = gpu.stream()?;
        let mut flag = gpu.alloc::<u32>(flags)?;
        flag.zero(&s)?;
        s.synchronize()?;
        s.close()?;
        Ok(StreamKSpace {
            part: gpu.alloc::<f32>(part)?,
            flag,
        })
    }
}

/// One tile's warpgroup GEMM kernel, with the blocks of it the device holds at once, and
/// its stream-K form (`NAME_sk`: the same kernel with the pieces' code; the whole-tile
/// form's main loops are the kernel's as before stream-K) where the tile has one (the
/// swapped tiles have none).
pub(super) struct WgmmaForm {
    pub(super) tile: WgmmaTile,
    pub(super) f: Function,
    /// Blocks of it all multiprocessors run at once (the occupancy calculator's blocks a
    /// multiprocessor, times the multiprocessors): the persistent grid's size.
    pub(super) resident: usize,
    /// The stream-K form and its resident blocks (all of which must be resident at once: a
    /// tile's first piece waits for its others).
    pub(super) sk: Option<(Function, usize)>,
}

/// The warpgroup GEMM's kernels of `tiles` (named by `name`), each allowed the dynamic
/// shared memory its stages take, on a device of `sms` multiprocessors.
pub(super) fn wgmma_forms(
    gemm: &Module,
    tiles: &[WgmmaTile],
    name: fn(&WgmmaTile) -> String,
    sms: usize,
) -> Result<Vec<WgmmaForm>> {
    tiles
        .iter()
        .map(|&tile| {
            let (threads, shared) = (wgmma_threads(tile), wgmma_shared(tile));
            let load = |name: &str| -> Result<(Function, usize)> {
                let f = gemm.function(name)?;
                f.set_max_dynamic_shared(shared)?;
                let per_sm = f.max_active_blocks(threads, shared)?;
                if per_sm == 0 {
                    return Err(KernelError::Shape(format!(
                        "{}: the occupancy calculator fits no block of {threads} threads and {shared} bytes of dynamic shared memory on a multiprocessor",
                        f.name()
                    )));
                }
                Ok((f, per_sm as usize * sms))
            };
            let (f, resident) = load(&name(&tile))?;
            let sk = match tile.swapped() {
                true => None,
                false => Some(load(&format!("{}_sk", name(&tile)))?),
            };
            Ok(WgmmaForm {
                tile,
                f,
                resident,
                sk,
            })
        })
        .collect()
}

/// The form of `tile` among `forms` (`what`: which kernels, for the error).
fn wgmma_form<'a>(forms: &'a [WgmmaForm], tile: WgmmaTile, what: &str) -> Result<&'a WgmmaForm> {
    forms.iter().find(|w| w.tile == tile).ok_or_else(|| {
        let have: Vec<WgmmaTile> = forms.iter().map(|w| w.tile).collect();
        KernelError::Shape(format!(
            "no {what} of tile {tile:?}; the kernels have {have:?}"
        ))
    })
}

/// Dynamic shared memory of the warpgroup GEMM of `tile`: its stages of an A and a B box,
/// 1 KiB to align them to the 1024-byte swizzle atom, a full and an empty barrier (8 bytes
/// each) per stage, and 16 bytes past them (the sparse forms' register hold, `sink` in
/// kernels/gemm.hip). 128 x 128: 193 KiB (one block per SM); 64 x 64: 97 KiB (two); 128 x
/// 256: 193 KiB; 128 x 232: 181 KiB. The FP8-lo forms take the same: an FP8 step of K 128
/// fills a stage as an f16 step of K 64 does.
pub(super) fn wgmma_shared(tile: WgmmaTile) -> u32 {
    shared_bytes(tile, wgmma_stages(tile))
}

/// `wgmma_shared` for `stages` stages.
fn shared_bytes(tile: WgmmaTile, stages: u32) -> u32 {
    stages * (tile.m + tile.n) as u32 * WGMMA_BK * 2 + 1024 + stages * 2 * 8 + 16
}

/// The warpgroup GEMM's arguments after its operands (t, k, the group's widths: 0 for an
/// absent product) and its output tiles for `group` on `tile`: row tiles first (the blocks
/// that share a weight tile run together, so it comes from HBM once), then each product's
/// column tiles, in the order the kernel's blocks take them (kernels/gemm.hip).
fn wgmma_group_args(
    args: Args,
    tile: WgmmaTile,
    group: &[GemmOut<'_>],
    t: usize,
    k: usize,
) -> Result<(Args, usize)> {
    let ns = [0, 1, 2].map(|i| group.get(i).map_or(0, |o| o.n));
    wgmma_size_args(args, tile, ns, t, k)
}

/// `wgmma_group_args` from the three products' widths (0 for an absent one).
fn wgmma_size_args(
    args: Args,
    tile: WgmmaTile,
    ns: [usize; 3],
    t: usize,
    k: usize,
) -> Result<(Args, usize)> {
    let mut args = args.u32(u32_of(t, "t")?).u32(u32_of(k, "k")?);
    let mut col_tiles = 0;
    for n in ns {
        col_tiles += n.div_ceil(tile.n);
        args = args.u32(u32_of(n, "n")?);
    }
    Ok((args, t.div_ceil(tile.m) * col_tiles))
}

/// The warpgroup GEMM's tile for products of widths `ns` sharing `t` input rows on a device
/// of `sms` multiprocessors (one 128 block runs on each at a time): 64 x 64 unless 128s
/// still give `BLOCKS_WANTED` blocks (as `gemm_tile`); then the tile among 128 x 256, 128 x
/// 232, 128 x 192 and 128 x 128 whose waves of blocks take least time, a block's time taken
/// as its columns (the same rows and K). A tie goes to the wider tile, whose columns cost
/// less (kernels/gemm.hip: gate/up 152 against 158 us with the 128 x 168 tile 256 replaced,
/// whose ties went the other way). Llama-2-7B's gate/up at 512 rows on 132 SMs: 688 blocks
/// of 128 columns make 6 waves (768 columns), 344 of 256 make 3 (768), 384 of 232 make 3
/// (696); its Q/K/V 384 of 128 make 3 (384), 264 of 192 make 2 (384: the wider).
fn wgmma_tile(t: usize, ns: impl IntoIterator<Item = usize>, sms: usize) -> WgmmaTile {
    let ns: Vec<usize> = ns.into_iter().collect();
    let [square, small, w256, w232, w192] = WgmmaTile::ALL;
    least_waves(t, &ns, sms, (square, small), &[w256, w232, w192], |tile| {
        tile.n
    })
}

/// `base` (a tile chosen among the unswapped ones) or the tile of `swapped` (the swapped
/// tiles that have the product's form: `WgmmaTile::SWAPPED`, `SWAPPED_KV`) whose waves take
/// least time, if less than `base`'s: a tile's time the tiles its busiest
/// multiprocessor takes times its multiply-adds (rows x columns), ties among the swapped to
/// the wider. Against the 64 x 64 tile a tie goes to the swapped one (an m64n64 product
/// reads the most shared memory a multiply-add), against the 128-row tiles to them (the
/// forms measured longest). Llama-2-7B's output and down products at 520 rows on 132 SMs:
/// 128 x 128 makes 160 blocks in 2 waves (32 768 rows x columns a multiprocessor), 136 x 128
/// makes 128 in 1 (17 408). A tile covers `outputs(tile)` of a product's columns (the
/// SwiGLU forms' half their weight rows, others all).
fn with_swapped(
    t: usize,
    ns: &[usize],
    sms: usize,
    base: WgmmaTile,
    swapped: &[WgmmaTile],
    outputs: impl Fn(WgmmaTile) -> usize,
) -> WgmmaTile {
    let time = |tile: WgmmaTile| -> usize {
        let blocks =
            t.div_ceil(tile.m) * ns.iter().map(|n| n.div_ceil(outputs(tile))).sum::<usize>();
        blocks.div_ceil(sms.max(1)) * tile.m * tile.n
    };
    let base_time = time(base);
    let small = base.m == 64;
    swapped
        .iter()
        .rev()
        .copied()
        .filter(|&tile| time(tile) < base_time || (small && time(tile) == base_time))
        .min_by_key(|&tile| time(tile))
        .unwrap_or(base)
}

/// `wgmma_tile` among the tiles with an FP8-lo form (`WgmmaTile::LO8`): 128 x 192 or 128 x
/// 128 by the same waves, 64 x 64 for narrow products.
fn wgmma_lo8_tile(t: usize, ns: impl IntoIterator<Item = usize>, sms: usize) -> WgmmaTile {
    let ns: Vec<usize> = ns.into_iter().collect();
    let [square, small, w192] = WgmmaTile::LO8;
    least_waves(t, &ns, sms, (square, small), &[w192], |tile| tile.n)
}

/// `wgmma_tile` for the SwiGLU forms, whose tiles have half their columns' outputs (a gate
/// and an up column each): 7B's gate/up at 512 rows on 132 SMs takes 128 x 224, 396 blocks
/// in 3 waves (672 columns a multiprocessor; 128 x 256: 344 blocks, 768).
fn wgmma_swiglu_tile(t: usize, n: usize, sms: usize) -> WgmmaTile {
    let [square, small, wide, wider] = WgmmaTile::SWIGLU;
    least_waves(t, &[n], sms, (square, small), &[wide, wider], |tile| {
        tile.n / 2
    })
}

/// The tile for products of widths `ns` over `t` rows on `sms` multiprocessors, a tile
/// covering `outputs(tile)` of a product's columns: small unless square gives
/// `BLOCKS_WANTED` blocks, else the least waves x columns (a block's time) among `wide`
/// and square, ties to the first in `wide`'s order (widest first), square last.
fn least_waves(
    t: usize,
    ns: &[usize],
    sms: usize,
    (square, small): (WgmmaTile, WgmmaTile),
    wide: &[WgmmaTile],
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
    wide.iter()
        .copied()
        .chain([square])
        .min_by_key(|&tile| time(tile))
        .expect("square at least")
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

/// The weights of one product of `gemm_f16_qkv_cache`'s group: f16, and the FP8 copy its lo
/// product reads under an FP8 low half (as `GemmOut::w8`).
#[derive(Clone, Copy)]
pub struct GemmWeights<'a> {
    pub w: &'a DeviceBuffer<u16>,
    pub w8: Option<&'a E4m3Matrix>,
}

/// Where `gemm_f16_qkv_cache` writes K and V: the layer's caches (f16, `shape.capacity`
/// positions of `n_kv_heads * head_dim`), at positions `*pos0 ..`; `angles` the pass's RoPE
/// table (`rope_angles`, `shape.rows` rows).
pub struct KvCacheOut<'a> {
    pub caches: [&'a mut DeviceBuffer<u16>; 2],
    pub angles: &'a DeviceBuffer<f32>,
    pub pos0: &'a DeviceBuffer<u32>,
    pub shape: QkvRope,
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

/// `y[t, n] = x[t, k] · w[n, k]ᵀ`.
#[derive(Debug, Clone, Copy)]
pub struct MatShape {
    pub t: usize,
    pub k: usize,
    pub n: usize,
}

impl GpuKernels {
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

    /// Whether this device has the warpgroup GEMM (`GemmRoute::Wgmma`).
    pub fn has_wgmma(&self) -> bool {
        self.gemm_f16_wgmma.is_some()
    }

    /// Whether the plain, FP8-lo and Q/K/V cache products may take a swapped tile
    /// (`WgmmaTile::SWAPPED`) where its waves take less than the 128-row tiles' (the default).
    pub fn swapped_tiles(&self) -> bool {
        self.swapped_tiles
    }

    /// Sets `swapped_tiles` (off: every product on the 128- and 64-row tiles, as before
    /// session 53; for an A/B in one build).
    pub fn set_swapped_tiles(&mut self, on: bool) {
        self.swapped_tiles = on;
    }

    /// `base` or, where `swapped_tiles` is on, the tile of `swapped` that `with_swapped`
    /// takes for products of widths `ns` over `t` rows.
    fn swapped_or(
        &self,
        t: usize,
        ns: &[usize],
        base: WgmmaTile,
        swapped: &[WgmmaTile],
    ) -> WgmmaTile {
        self.swapped_or_outputs(t, ns, base, swapped, |tile| tile.n)
    }

    /// `swapped_or` for tiles of `outputs(tile)` of a product's columns (the SwiGLU forms').
    fn swapped_or_outputs(
        &self,
        t: usize,
        ns: &[usize],
        base: WgmmaTile,
        swapped: &[WgmmaTile],
        outputs: impl Fn(WgmmaTile) -> usize,
    ) -> WgmmaTile {
        let sms = self.multiprocessors;
        match self.swapped_tiles {
            true => with_swapped(t, ns, sms, base, swapped, outputs),
            false => base,
        }
    }

    /// Which warpgroup GEMM launches share their short last wave out along K (`StreamK`).
    pub fn stream_k(&self) -> StreamK {
        self.stream_k
    }

    /// Sets `stream_k`, making the shared launches' slots on `gpu` the first time a mode
    /// other than `Off` is set on a device with the warpgroup GEMM (17.3 MB on an H200;
    /// nothing is made while stream-K stays off, the default). Elsewhere the mode is kept
    /// and changes nothing: only the warpgroup GEMM has stream-K forms.
    pub fn set_stream_k(&mut self, gpu: &Gpu, mode: StreamK) -> Result<()> {
        if mode != StreamK::Off && self.has_wgmma() && self.stream_k_space.is_none() {
            self.stream_k_space = Some(StreamKSpace::new(gpu, self.wgmma_forms())?);
        }
        self.stream_k = mode;
        Ok(())
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
        if let Some(lo8) = lo.and_then(GemmLo::lo8) {
            return self.gemm_f16_lo8(route, s, a, lo8, outs, t, k);
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
            (GemmRoute::Wgmma | GemmRoute::WgmmaTile(_) | GemmRoute::Auto, Some(forms)) => {
                for group in outs.chunks_mut(3) {
                    let tile = match route {
                        GemmRoute::WgmmaTile(tile) => tile,
                        _ => {
                            let ns: Vec<usize> = group.iter().map(|o| o.n).collect();
                            let base = wgmma_tile(t, ns.iter().copied(), self.multiprocessors);
                            self.swapped_or(t, &ns, base, &WgmmaTile::SWAPPED)
                        }
                    };
                    let form = wgmma_form(forms, tile, "warpgroup GEMM")?;
                    self.gemm_f16_wgmma(form, s, a, a_lo, group, t, k)?;
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
    /// or its SP form where the low half is 2:4-sparse, on the tile `wgmma_lo8_tile` picks
    /// among those with that form.
    #[allow(clippy::too_many_arguments)]
    fn gemm_f16_lo8(
        &self,
        route: GemmRoute,
        s: &Stream,
        a: &DeviceBuffer<u16>,
        lo: Lo8In<'_>,
        outs: &mut [GemmOut<'_>],
        t: usize,
        k: usize,
    ) -> Result<()> {
        let fp8 = self.fp8("gemm_f16 with an FP8 low half")?;
        check_fp8_rows(k, "gemm_f16 with an FP8 low half")?;
        Self::need(a, t * k, "gemm_f16 a")?;
        lo.check(t, k, "gemm_f16")?;
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
                    let ns: Vec<usize> = group.iter().map(|o| o.n).collect();
                    let base = wgmma_lo8_tile(t, ns.iter().copied(), self.multiprocessors);
                    match lo {
                        Lo8In::Dense(_) => self.swapped_or(t, &ns, base, &WgmmaTile::SWAPPED),
                        // The sparse forms have no swapped tiles.
                        Lo8In::Sparse(_) => base,
                    }
                }
                other => {
                    return Err(KernelError::Shape(format!(
                        "gemm_f16 with an FP8 low half runs on the warpgroup kernel only, not {other:?}"
                    )))
                }
            };
            let form = match lo {
                Lo8In::Dense(_) => wgmma_form(&fp8.gemm, tile, "FP8-lo warpgroup GEMM")?,
                Lo8In::Sparse(_) => wgmma_form(&fp8.gemm_sp, tile, "sparse FP8-lo warpgroup GEMM")?,
            };
            let (m32, n32) = (tile.m as u32, tile.n as u32);
            let mut args = Args::new()
                .tmap(a.tensor_map_f16(t, k, m32, WGMMA_BK)?)
                .tmap(lo.tensor_map(t, k, m32)?);
            // Absent products (n = 0) repeat the last present one's maps and pointers.
            let at = |i: usize| i.min(group.len() - 1);
            for i in 0..3 {
                let o = &group[at(i)];
                args = args.tmap(o.w.tensor_map_f16(o.n, k, n32, WGMMA_BK)?);
            }
            for i in 0..3 {
                let o = &group[at(i)];
                let w8 = o.w8.expect("checked above");
                args = args.tmap(w8.q.tensor_map_u8(o.n, k, n32, WGMMA_BK8)?);
            }
            for i in 0..3 {
                args = args.ptr(group[at(i)].y);
            }
            for i in 0..3 {
                args = args.ptr(&group[at(i)].w8.expect("checked above").scale);
            }
            let (args, tiles) = wgmma_group_args(args, tile, group, t, k)?;
            self.launch_wgmma(form, tiles, s, lo.meta_arg(args))?;
        }
        Ok(())
    }

    /// Whether this device has the Q/K/V GEMM that writes K and V into the caches
    /// (`gemm_f16_qkv_cache`).
    pub fn has_qkv_cache(&self) -> bool {
        self.gemm_f16_wgmma_kv.is_some()
    }

    /// The untraced prefill's Q, K and V in one launch of the warpgroup kernel (its KV
    /// form, kernels/gemm.hip): q = (a + lo) · wqᵀ into `q` as f32, as `gemm_f16` writes
    /// it; K = (a + lo) · wkᵀ rotated (RoPE in adjacent pairs, GGUF's pairing) and V =
    /// (a + lo) · wvᵀ as f16 into `out`'s caches at positions `*pos0 ..`, bitwise what
    /// `gemm_f16` then `rope_k_append` write there, without K and V as f32 (their stores,
    /// the append's reads and its launch). Rows are `out.shape.rows`; `lo` as `gemm_f16`'s
    /// (an FP8 low half needs every product's `w8`). `tile`: None picks by the FP8-lo
    /// forms' rule (`wgmma_lo8_tile`); the op tests force each. Hopper only; k % 8 == 0.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f16_qkv_cache(
        &self,
        tile: Option<WgmmaTile>,
        s: &Stream,
        a: &DeviceBuffer<u16>,
        lo: Option<GemmLo<'_>>,
        weights: [GemmWeights<'_>; 3],
        q: &mut DeviceBuffer<f32>,
        out: KvCacheOut<'_>,
        k: usize,
    ) -> Result<()> {
        let what = "gemm_f16_qkv_cache";
        let Some(forms) = &self.gemm_f16_wgmma_kv else {
            return Err(KernelError::Shape(format!(
                "{what}: the Q/K/V GEMM that writes the caches is the warpgroup kernel's and needs an sm_90a device (Hopper); use gemm_f16 and rope_k_append"
            )));
        };
        let KvCacheOut {
            caches: [k_cache, v_cache],
            angles,
            pos0,
            shape,
        } = out;
        let QkvRope {
            rows: t,
            n_heads,
            n_kv_heads,
            head_dim: hd,
            half_split,
            capacity,
            keys,
        } = shape;
        if half_split {
            return Err(KernelError::Shape(format!(
                "{what} rotates K in pairs of adjacent columns (GGUF's pairing), not (i, i + head_dim / 2); use gemm_f16 and rope_k_append"
            )));
        }
        if !hd.is_power_of_two() {
            return Err(KernelError::Shape(format!(
                "{what}: head_dim = {hd} (accepted: a power of two)"
            )));
        }
        check_keys(what, t, keys, capacity)?;
        check_f16_rows(k, what)?;
        let ns = [n_heads * hd, n_kv_heads * hd, n_kv_heads * hd];
        Self::need_of(a, t * k, what, "a")?;
        Self::need_of(q, t * ns[0], what, "q")?;
        for (w, (n, name)) in weights.iter().zip(ns.iter().zip(["wq", "wk", "wv"])) {
            Self::need_of(w.w, n * k, what, name)?;
        }
        Self::need_of(k_cache, capacity * ns[1], what, "k cache")?;
        Self::need_of(v_cache, capacity * ns[2], what, "v cache")?;
        Self::need_of(angles, t * hd, what, "angles")?;
        Self::need_of(pos0, 1, what, "pos0")?;
        let w8s = match lo {
            Some(GemmLo::F16(b)) => {
                Self::need_of(b, t * k, what, "a_lo")?;
                None
            }
            Some(GemmLo::Fp8(b)) => {
                self.fp8(what)?;
                check_fp8_rows(k, what)?;
                Self::need_of(b, t * k, what, "a_lo (FP8)")?;
                let mut w8s = Vec::with_capacity(3);
                for (w, (n, name)) in weights.iter().zip(ns.iter().zip(["wq", "wk", "wv"])) {
                    let Some(w8) = w.w8 else {
                        return Err(KernelError::Shape(format!(
                            "{what} with an FP8 low half needs each product's FP8 weights (GemmWeights::w8); {name} has none"
                        )));
                    };
                    Self::need_of(&w8.q, n * k, what, name)?;
                    Self::need_of(&w8.scale, 1, what, name)?;
                    w8s.push(w8);
                }
                Some(w8s)
            }
            Some(GemmLo::Fp8Sparse(_)) => {
                return Err(KernelError::Shape(format!(
                    "{what}: no form with 2:4-sparse low halves (accepted: f16 or dense FP8; Q/K/V's low half stays whole, docs/sparse-lo.md)"
                )))
            }
            None => None,
        };
        if t == 0 {
            return Ok(());
        }
        let tile = tile.unwrap_or_else(|| {
            let base = wgmma_lo8_tile(t, ns, self.multiprocessors);
            self.swapped_or(t, &ns, base, WgmmaTile::SWAPPED_KV)
        });
        let (m32, n32) = (tile.m as u32, tile.n as u32);
        let mut args = Args::new().tmap(a.tensor_map_f16(t, k, m32, WGMMA_BK)?);
        let (form, (args, tiles)) = match (lo, w8s) {
            (Some(GemmLo::Fp8(b)), Some(w8s)) => {
                let fp8 = self.fp8(what)?;
                let form = wgmma_form(&fp8.gemm_kv, tile, "FP8-lo Q/K/V GEMM into the caches")?;
                args = args.tmap(b.tensor_map_u8(t, k, m32, WGMMA_BK8)?);
                for (w, &n) in weights.iter().zip(&ns) {
                    args = args.tmap(w.w.tensor_map_f16(n, k, n32, WGMMA_BK)?);
                }
                for (w8, &n) in w8s.iter().zip(&ns) {
                    args = args.tmap(w8.q.tensor_map_u8(n, k, n32, WGMMA_BK8)?);
                }
                args = args.ptr(q);
                for w8 in &w8s {
                    args = args.ptr(&w8.scale);
                }
                (form, wgmma_size_args(args, tile, ns, t, k)?)
            }
            (lo, _) => {
                let form = wgmma_form(forms, tile, "Q/K/V GEMM into the caches")?;
                let a_lo = match lo {
                    Some(GemmLo::F16(b)) => Some(b),
                    _ => None,
                };
                // Without a low half the kernel reads no ta_lo: a's map stands in.
                args = args.tmap(a_lo.unwrap_or(a).tensor_map_f16(t, k, m32, WGMMA_BK)?);
                for (w, &n) in weights.iter().zip(&ns) {
                    args = args.tmap(w.w.tensor_map_f16(n, k, n32, WGMMA_BK)?);
                }
                let (args, tiles) = wgmma_size_args(args.ptr(q), tile, ns, t, k)?;
                (form, (args.u32(a_lo.is_some() as u32), tiles))
            }
        };
        let args = args
            .ptr(k_cache)
            .ptr(v_cache)
            .ptr(angles)
            .ptr(pos0)
            .u32(u32_of(hd - 1, "head_dim")?);
        self.launch_wgmma(form, tiles, s, args)
    }

    /// Whether this device has the warpgroup GEMM's SwiGLU forms (`gemm_f16_swiglu`).
    pub fn has_gemm_swiglu(&self) -> bool {
        self.gemm_f16_wgmma_swiglu.is_some()
    }

    /// The prefill's gate, up and SwiGLU in one launch (the warpgroup kernel's SwiGLU form):
    /// gate = (a + a_lo) · w_gateᵀ and up = (a + a_lo) · w_upᵀ over `t` rows of `k` (a, a_lo
    /// as `gemm_f16`'s; the low half f16, FP8 with the weights' FP8 copies, or absent), act = silu(gate) · up (`silu_mul`'s
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
        a_lo: Option<SwigluLo<'_>>,
        [w_gate, w_up]: [&DeviceBuffer<u16>; 2],
        out: SwigluOut<'_>,
        shape: MatShape,
    ) -> Result<()> {
        let what = "gemm_f16_swiglu";
        let MatShape { t, k, n } = shape;
        let Some(forms) = &self.gemm_f16_wgmma_swiglu else {
            return Err(KernelError::Shape(format!(
                "{what}: the SwiGLU GEMM is the warpgroup kernel's and needs an sm_90a device (Hopper); use gemm_f16 and silu_mul_split"
            )));
        };
        check_f16_rows(k, what)?;
        Self::need(a, t * k, "gemm_f16_swiglu a")?;
        let fp8_lo = a_lo.and_then(SwigluLo::lo8);
        if let Some(SwigluLo::F16(lo)) = a_lo {
            Self::need(lo, t * k, "gemm_f16_swiglu a_lo")?;
        }
        if let Some((lo, w8)) = fp8_lo {
            self.fp8(what)?;
            check_fp8_rows(k, what)?;
            lo.check(t, k, what)?;
            for (w8, name) in w8.iter().zip(["w8 gate", "w8 up"]) {
                Self::need_of(&w8.q, n * k, what, name)?;
                Self::need_of(&w8.scale, 1, what, name)?;
            }
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
        let outputs = |args: Args| {
            args.ptr_or_null(gate.as_deref())
                .ptr_or_null(up.as_deref())
                .ptr_or_null(act.as_deref())
                .ptr(ops.hi)
                .ptr_or_null(ops.lo.as_ref().and_then(|l| l.f16()))
        };
        let tiles = |tile: WgmmaTile| t.div_ceil(tile.m) * n.div_ceil(tile.n / 2);
        // The sparse forms have no swapped tiles.
        let picked = |sparse: bool| {
            let base = wgmma_swiglu_tile(t, n, self.multiprocessors);
            match sparse {
                true => base,
                false => {
                    self.swapped_or_outputs(t, &[n], base, &WgmmaTile::SWAPPED_SWIGLU, |tile| {
                        tile.n / 2
                    })
                }
            }
        };
        if let Some((lo, [w8_gate, w8_up])) = fp8_lo {
            // Every SwiGLU tile has an FP8-lo form (FP8 steps first, one accumulator set:
            // LO8 in kernels/gemm.hip) and a sparse one (SP).
            let tile = tile.unwrap_or_else(|| picked(matches!(lo, Lo8In::Sparse(_))));
            let fp8 = self.fp8(what)?;
            let form = match lo {
                Lo8In::Dense(_) => wgmma_form(&fp8.swiglu, tile, "FP8-lo SwiGLU warpgroup GEMM")?,
                Lo8In::Sparse(_) => {
                    wgmma_form(&fp8.swiglu_sp, tile, "sparse FP8-lo SwiGLU warpgroup GEMM")?
                }
            };
            let (m32, half) = (tile.m as u32, tile.n as u32 / 2);
            let args = Args::new()
                .tmap(a.tensor_map_f16(t, k, m32, WGMMA_BK)?)
                .tmap(lo.tensor_map(t, k, m32)?)
                .tmap(w_gate.tensor_map_f16(n, k, half, WGMMA_BK)?)
                .tmap(w_up.tensor_map_f16(n, k, half, WGMMA_BK)?)
                .tmap(w8_gate.q.tensor_map_u8(n, k, half, WGMMA_BK8)?)
                .tmap(w8_up.q.tensor_map_u8(n, k, half, WGMMA_BK8)?)
                .ptr(&w8_gate.scale)
                .ptr(&w8_up.scale);
            let args = self
                .lo8_arg(outputs(args), &ops, what)?
                .u32(u32_of(t, "t")?)
                .u32(u32_of(k, "k")?)
                .u32(u32_of(n, "n")?);
            return self.launch_wgmma(form, tiles(tile), s, lo.meta_arg(args));
        }
        let tile = tile.unwrap_or_else(|| picked(false));
        let form = wgmma_form(forms, tile, "SwiGLU warpgroup GEMM")?;
        let (m32, half) = (tile.m as u32, tile.n as u32 / 2);
        let a_lo = match a_lo {
            Some(SwigluLo::F16(lo)) => Some(lo),
            _ => None,
        };
        let ta = a.tensor_map_f16(t, k, m32, WGMMA_BK)?;
        let ta_lo = match a_lo {
            Some(lo) => lo.tensor_map_f16(t, k, m32, WGMMA_BK)?,
            None => ta,
        };
        let args = Args::new()
            .tmap(ta)
            .tmap(ta_lo)
            .tmap(w_gate.tensor_map_f16(n, k, half, WGMMA_BK)?)
            .tmap(w_up.tensor_map_f16(n, k, half, WGMMA_BK)?);
        let args = self
            .lo8_arg(outputs(args), &ops, what)?
            .u32(u32_of(t, "t")?)
            .u32(u32_of(k, "k")?)
            .u32(u32_of(n, "n")?)
            .u32(a_lo.is_some() as u32);
        self.launch_wgmma(form, tiles(tile), s, args)
    }

    /// The persistent warpgroup GEMM's launch of `tiles` output tiles on `form`: a block per
    /// tile up to what the multiprocessors hold at once (`WgmmaForm::resident`), each block
    /// taking the tiles g_bid(), + gridDim.x, ... (kernels/gemm.hip), so that its producer
    /// fills the stages of its next tile while its consumers store the last one.
    /// Where the tiles do not fill whole waves, `stream_k` may share the last wave out
    /// along K over the whole grid (`StreamK::split`; kernels/gemm.hip, g_sk).
    fn launch_wgmma(&self, form: &WgmmaForm, tiles: usize, s: &Stream, args: Args) -> Result<()> {
        // A stream-K share runs the `_sk` form on its whole grid; a tile without one whole.
        let (f, blocks, split) = match &form.sk {
            Some((f_sk, resident_sk)) => match self.stream_k.split(tiles, *resident_sk) {
                Some(split) => (f_sk, *resident_sk, Some(split)),
                None => (&form.f, tiles.min(form.resident), None),
            },
            None => (&form.f, tiles.min(form.resident), None),
        };
        let dims = LaunchDims {
            grid: [u32_of(blocks, "blocks")?, 1, 1],
            block: [wgmma_threads(form.tile), 1, 1],
            shared_bytes: wgmma_shared(form.tile),
            cluster: 1,
        };
        let args = args
            .u32(u32_of(split.map_or(0, |s| s.tiles), "stream-K tiles")?)
            .u32(u32_of(split.map_or(0, |s| s.parts), "stream-K parts")?);
        // The whole-tile forms never read the slots: null until stream-K is first set.
        let args = match (&self.stream_k_space, split) {
            (Some(space), _) => args.ptr(&space.part).ptr(&space.flag),
            (None, None) => args.null().null(),
            (None, Some(_)) => {
                return Err(KernelError::Shape(
                    "a stream-K launch without its slots (GpuKernels::set_stream_k makes them)"
                        .into(),
                ))
            }
        };
        self.launch_tiles(f, dims, u32_of(tiles, "tiles")?, s, args)
    }

    /// Every warpgroup GEMM form loaded (for the stream-K slots' size).
    pub(super) fn wgmma_forms(&self) -> impl Iterator<Item = &WgmmaForm> {
        let fp8 = self.fp8.iter().flat_map(|f| {
            [&f.gemm, &f.swiglu, &f.gemm_kv, &f.gemm_sp, &f.swiglu_sp]
                .into_iter()
                .flatten()
        });
        [
            &self.gemm_f16_wgmma,
            &self.gemm_f16_wgmma_swiglu,
            &self.gemm_f16_wgmma_kv,
        ]
        .into_iter()
        .flatten()
        .flatten()
        .chain(fp8)
    }

    /// The warpgroup GEMM's tiles on this device (empty without one): the op tests run each.
    pub fn wgmma_tiles(&self) -> Vec<WgmmaTile> {
        self.gemm_f16_wgmma
            .iter()
            .flatten()
            .map(|w| w.tile)
            .collect()
    }

    /// Up to three products of `gemm_f16` in one launch of the warpgroup kernel `form`
    /// (checked by the caller: k % 8 == 0, k > 0 and the buffers' sizes). Its operands are
    /// read through TMA descriptors, made here per call (a host-side encode, no device work;
    /// the launch copies them by value).
    #[allow(clippy::too_many_arguments)]
    fn gemm_f16_wgmma(
        &self,
        form: &WgmmaForm,
        s: &Stream,
        a: &DeviceBuffer<u16>,
        a_lo: Option<&DeviceBuffer<u16>>,
        group: &mut [GemmOut<'_>],
        t: usize,
        k: usize,
    ) -> Result<()> {
        let tile = form.tile;
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
        let (args, tiles) = wgmma_group_args(args, tile, group, t, k)?;
        self.launch_wgmma(form, tiles, s, args.u32(a_lo.is_some() as u32))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warpgroup GEMM's tile at the two benchmark shapes (512-token prompt) on an H100's
    /// or H200's 132 SMs: 128 x 128 for Llama-2-7B's output and down, 128 x 192 for Q/K/V
    /// (whole waves), 128 x 232 for gate/up (fewer waves' columns), 64 x 64 for SmolLM2's
    /// narrow ones; a wide tile only where its waves take no longer.
    /// Stream-K's share: none where the tiles fill whole waves or `Off`; else the last
    /// wave's tiles, in the parts the cost model finds cheapest, under `Auto` only where a
    /// block saves `STREAM_K_AUTO_GAIN` of a tile. The 7B on 132 SMs: gate/up at 800 rows
    /// (602 tiles, 74 in the last wave) in 5 parts: 3 turns of a fifth, 0.6 + 0.15 of a
    /// tile against 1; at 520 rows (495 of 128 x 224, 99 short) at best 4: 3 turns of a
    /// quarter (0.9), too little for Auto; Q/K/V at 512 (264) none; output and down at 520
    /// (110 tiles, all short: 0.83 + 0.25 at best, in 6) none under Auto.
    #[test]
    fn stream_k_shares_the_last_wave_where_it_pays() {
        use StreamK::*;
        let split = |tiles, parts| Some(StreamKSplit { tiles, parts });
        assert_eq!(Auto.split(602, 132), split(74, 5));
        assert_eq!(Auto.split(495, 132), None);
        assert_eq!(Always.split(495, 132), split(99, 4));
        assert_eq!(Auto.split(264, 132), None);
        assert_eq!(Auto.split(110, 132), None);
        assert_eq!(Always.split(110, 132), split(110, 6));
        assert_eq!(Always.split(264, 132), None);
        assert_eq!(Off.split(602, 132), None);
        assert_eq!(Always.split(10, 0), None);
        for tiles in 1..1000 {
            for mode in [Auto, Always] {
                if let Some(s) = mode.split(tiles, 132) {
                    // The whole tiles fill whole waves; every part is of a short wave.
                    assert_eq!((tiles - s.tiles) % 132, 0, "{mode} {tiles}");
                    assert!(s.tiles < 132, "{mode} {tiles}");
                    assert!(
                        (2..=STREAM_K_MAX_PARTS).contains(&s.parts),
                        "{mode} {tiles}"
                    );
                }
            }
        }
        assert_eq!("always".parse::<StreamK>(), Ok(Always));
        assert!("on"
            .parse::<StreamK>()
            .unwrap_err()
            .contains("auto, off or always"));
    }

    #[test]
    fn swapped_tiles_cut_the_rows_to_fill_the_waves() {
        assert!(WgmmaTile::SWAPPED.iter().all(|t| t.swapped()
            && t.n == 128
            && t.m % 8 == 0
            && (72..=256).contains(&t.m)
            && t.m != 128));
        assert!(WgmmaTile::ALL.iter().all(|t| !t.swapped()));
        assert_eq!(WgmmaTile::SWAPPED[7].kernel(), "gemm_f16_wgmma_t136");
        let t = |m| WgmmaTile { m, n: 128 };
        let pick = |rows, ns: &[usize]| {
            let base = wgmma_tile(rows, ns.iter().copied(), 132);
            with_swapped(rows, ns, 132, base, &WgmmaTile::SWAPPED, |t| t.n)
        };
        let [square, small, _, _, wide192] = WgmmaTile::ALL;
        assert_eq!(
            pick(512, &[4096]),
            square,
            "7B output/down at 512 rows: 128 blocks of 128 x 128 in one wave, no swapped tile less"
        );
        assert_eq!(
            pick(520, &[4096]),
            t(136),
            "at 520: 128 x 128 makes 160 blocks in 2 waves (32 768 a multiprocessor), 136 x 128 makes 128 in 1 (17 408)"
        );
        assert_eq!(
            pick(650, &[4096]),
            t(168),
            "at 650: 128 x 192 makes 132 in 1 wave (24 576), 168 x 128 128 in 1 (21 504)"
        );
        assert_eq!(
            pick(384, &[4096]),
            t(96),
            "at 384: 64 x 64 (128 x 128 makes 96 blocks, too few) makes 384 blocks, 3 a multiprocessor (12 288); 96 x 128 makes 128 in 1 wave (12 288), the tie to it"
        );
        assert_eq!(
            pick(800, &[4096]),
            t(200),
            "at 800: 4 row tiles of 200 x 32 column tiles, one wave"
        );
        assert_eq!(
            pick(512, &[4096, 4096, 4096]),
            wide192,
            "7B Q/K/V at 512 rows: 264 blocks of 128 x 192 in 2 waves (49 152); 256 x 128 makes 192 in 2 (65 536)"
        );
        assert_eq!(pick(7, &[100]), small, "a short prompt");
        // The Q/K/V cache forms (to 192 rows).
        let qkv = |rows| {
            let ns = [4096, 4096, 4096];
            let base = wgmma_lo8_tile(rows, ns, 132);
            with_swapped(rows, &ns, 132, base, WgmmaTile::SWAPPED_KV, |t| t.n)
        };
        assert_eq!(
            qkv(512),
            wide192,
            "Q/K/V at 512 rows: 264 blocks of 128 x 192, 2 waves"
        );
        assert_eq!(
            qkv(520),
            t(136),
            "Q/K/V at 520: 128 x 128 makes 480 blocks in 4 waves (65 536), 136 x 128 384 in 3 (52 224)"
        );
        assert_eq!(
            pick(512, &[576, 192, 192]),
            small,
            "SmolLM2 Q/K/V: 120 blocks of 64 x 64 (4096); 256 x 128 makes 18 (32 768)"
        );
        assert_eq!(
            pick(256, &[4096]),
            small,
            "7B output at 256 rows: 256 blocks of 64 x 64 (8192); 72 x 128 makes 128 (9216)"
        );
    }

    #[test]
    fn wgmma_tile_fills_the_gpu_before_it_grows() {
        let [square, small, wide, wide232, wide192] = WgmmaTile::ALL;
        let pick = |t, ns: &[usize]| wgmma_tile(t, ns.iter().copied(), 132);
        assert_eq!(pick(512, &[4096]), square, "7B output/down: 4 x 32 blocks");
        assert_eq!(
            pick(512, &[4096, 4096, 4096]),
            wide192,
            "7B Q/K/V: 3 waves of 128 columns (384 blocks: 384), 2 of 192 (264: 384, the wider), 2 of 256 (512)"
        );
        assert_eq!(
            pick(650, &[4096]),
            wide192,
            "7B output/down at ~650 rows: 2 waves of 128 columns (192 blocks: 256), 1 of 192 (132: 192)"
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
            wide192,
            "on 160 SMs: 5 waves of 128 columns (640), 3 of 192 (464 blocks: 576), 3 of 256 (768)"
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
            197_744,
            "6 x 32 KiB stages + 1 KiB + barriers + the sparse forms' 16-byte hold"
        );
        for t in [wide, wide232, wide192] {
            assert!(
                wgmma_shared(t) <= 232_448,
                "the wide tiles' stages fit the 227 KiB a block may opt in to on sm_90"
            );
        }
    }

    /// The FP8-lo forms' tile: 128 x 192 where its waves take no longer than 128 x 128's
    /// (7B's Q/K/V at 512 rows, output and down at ~650), never a tile without that form.
    /// The sparse low halves' sizes: the metadata covers rows rounded up to 128 (two 64-row
    /// blocks a 128-row tile) and K rounded up to 128 (one 1 KiB block a step), and row
    /// lengths the kernels cannot read are refused by name.
    #[test]
    fn sparse_low_halves_are_sized_for_the_gemm_tiles() {
        assert_eq!(SparseLo8::meta_words(130, 1536), 4 * 12 * 256);
        assert_eq!(SparseLo8::meta_words(128, 224), 2 * 2 * 256);
        assert_eq!(SparseLo8::meta_words(1, 32), 2 * 256);
        assert!(check_sparse_k(64, "x").is_ok() && check_sparse_k(11008, "x").is_ok());
        for k in [0, 48, 100] {
            let e = check_sparse_k(k, "x").unwrap_err().to_string();
            assert!(e.contains("multiple of 32"), "{e}");
        }
    }

    #[test]
    fn wgmma_lo8_tile_chooses_among_the_lo8_forms() {
        let [square, small, wide192] = WgmmaTile::LO8;
        let pick = |t, ns: &[usize]| wgmma_lo8_tile(t, ns.iter().copied(), 132);
        assert_eq!(
            pick(512, &[4096, 4096, 4096]),
            wide192,
            "7B Q/K/V: 2 waves of 192"
        );
        assert_eq!(
            pick(512, &[4096]),
            square,
            "7B output/down: one wave of 128 blocks"
        );
        assert_eq!(
            pick(650, &[4096]),
            wide192,
            "~650 rows: 1 wave of 132 blocks of 192"
        );
        assert_eq!(
            pick(512, &[11_008, 11_008]),
            wide192,
            "gate/up unfused: 6 waves of 128 (768) tie 4 of 192 (768): the wider (232 has no FP8-lo form)"
        );
        assert_eq!(pick(512, &[576, 192, 192]), small, "SmolLM2 Q/K/V");
        for tile in WgmmaTile::LO8 {
            assert!(
                WgmmaTile::ALL.contains(&tile),
                "{tile:?} has an f16 form too"
            );
        }
    }

    /// The FP8 weight scale puts a matrix's largest |w| in [128, 256) by a power of two, and
    /// stays a normal f32 for a matrix of zeros.
    #[test]
    fn e4m3_weight_scale_puts_the_largest_weight_in_128_to_256() {
        for m in [1.0f32, 1.75, 0.0123, 300.0, 65504.0, 2f32.powi(-100)] {
            let s = e4m3_weight_scale(m);
            assert_eq!(s, 2f32.powi(s.log2() as i32), "{m}: {s} is a power of two");
            assert!((128.0..256.0).contains(&(m / s)), "{m} / {s}");
        }
        assert_eq!(e4m3_weight_scale(0.0), 2f32.powi(-126));
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

    /// The SwiGLU forms' swapped tiles (256 weight rows, 128 outputs) against the unswapped
    /// choice, 7B's gate/up (11 008 outputs) on 132 SMs: 86 output tiles a row tile.
    #[test]
    fn swapped_swiglu_tiles_counted_by_outputs() {
        let pick = |rows| {
            let base = wgmma_swiglu_tile(rows, 11_008, 132);
            with_swapped(
                rows,
                &[11_008],
                132,
                base,
                &WgmmaTile::SWAPPED_SWIGLU,
                |t| t.n / 2,
            )
        };
        let t = |m| WgmmaTile { m, n: 256 };
        assert!(WgmmaTile::SWAPPED_SWIGLU.iter().all(|t| t.swapped()));
        assert_eq!(
            pick(512),
            WgmmaTile::SWIGLU[3],
            "512: 128 x 224 makes 396 blocks in 3 waves (86 016); 104 x 256 430 in 4 (106 496)"
        );
        assert_eq!(
            pick(520),
            t(88),
            "520: 128 x 224 makes 495 blocks in 4 waves (114 688); 88 x 256 516 in 4 (90 112)"
        );
        assert_eq!(
            pick(576),
            t(96),
            "576: 6 row tiles of 96, 516 blocks in 4 waves"
        );
        assert_eq!(
            pick(650),
            t(112),
            "650: 6 row tiles of 112 (the last 90), 4 waves"
        );
        assert_eq!(
            pick(800),
            t(80),
            "800: 10 row tiles of 80, 860 blocks in 7 waves"
        );
        assert_eq!(
            WgmmaTile::SWAPPED_SWIGLU[2].swiglu_kernel(),
            "gemm_f16_wgmma_swiglu_t88"
        );
    }

    /// What the swapped tiles are for, over every prompt length a multiple of 8 from 320 to
    /// 4096: the tiles chosen for the 7B's four products under the default numerics (Q/K/V
    /// into the caches, output and down FP8-lo, gate/up's SwiGLU) keep the waves they
    /// launch at least 0.88 full of useful multiply-adds on 132 SMs (128-row tiles alone
    /// left output and down at 520 rows 0.49 full: 160 blocks in 2 waves). The worst
    /// length is 392 (gate/up on 72 x 256 tiles, 516 blocks in 4 waves: 0.89).
    #[test]
    fn chosen_tiles_fill_their_waves_at_every_length() {
        let sms = 132;
        let fill = |t: usize, ns: &[usize], tile: WgmmaTile, outputs: usize| {
            let blocks = t.div_ceil(tile.m) * ns.iter().map(|n| n.div_ceil(outputs)).sum::<usize>();
            let useful = ns.iter().map(|n| t * n).sum::<usize>();
            useful as f64 / (blocks.div_ceil(sms) * sms * tile.m * outputs) as f64
        };
        let qkv = [4096, 4096, 4096];
        for t in (320..=4096).step_by(8) {
            let base = wgmma_lo8_tile(t, qkv, sms);
            let q = with_swapped(t, &qkv, sms, base, WgmmaTile::SWAPPED_KV, |x| x.n);
            let base = wgmma_lo8_tile(t, [4096], sms);
            let o = with_swapped(t, &[4096], sms, base, &WgmmaTile::SWAPPED, |x| x.n);
            let base = wgmma_swiglu_tile(t, 11_008, sms);
            let g = with_swapped(t, &[11_008], sms, base, &WgmmaTile::SWAPPED_SWIGLU, |x| {
                x.n / 2
            });
            for (what, ns, tile, outputs) in [
                ("Q/K/V", &qkv[..], q, q.n),
                ("output/down", &[4096][..], o, o.n),
                ("gate/up", &[11_008][..], g, g.n / 2),
            ] {
                let f = fill(t, ns, tile, outputs);
                assert!(
                    f >= 0.88,
                    "{t} rows, {what}: {tile:?} fills {f:.3} of its waves"
                );
            }
        }
        let unswapped = fill(520, &[4096], wgmma_lo8_tile(520, [4096], sms), 128);
        assert!(unswapped < 0.5, "520 rows on 128 x 128: {unswapped:.3}");
    }

    /// Every tile's forms (f16, SwiGLU, and their FP8-lo forms, which take the same
    /// stages) fit the 227 KiB a block may opt in to.
    #[test]
    fn wgmma_forms_fit_shared_memory() {
        let all = WgmmaTile::ALL.into_iter().chain(WgmmaTile::SWIGLU);
        for tile in all
            .chain(WgmmaTile::SWAPPED)
            .chain(WgmmaTile::SWAPPED_SWIGLU)
        {
            let bytes = wgmma_shared(tile);
            assert!(bytes <= 232_448, "{tile:?}: {bytes} bytes");
        }
        let [square, small, wide, wide224] = WgmmaTile::SWIGLU;
        for (tile, bytes, what) in [
            (square, 6 * 256 * 128 + 1024 + 96 + 16, "6 stages of 32 KiB"),
            (small, 6 * 128 * 128 + 1024 + 96 + 16, "6 stages of 16 KiB"),
            (wide, 4 * 384 * 128 + 1024 + 64 + 16, "4 stages of 48 KiB"),
            (
                WgmmaTile { m: 136, n: 128 },
                6 * 264 * 128 + 1024 + 96 + 16,
                "swapped 136: 6 stages of 33 KiB",
            ),
            (
                WgmmaTile { m: 176, n: 128 },
                5 * 304 * 128 + 1024 + 80 + 16,
                "swapped 176: 5 stages of 38 KiB (6 would not fit)",
            ),
            (
                WgmmaTile { m: 256, n: 128 },
                4 * 384 * 128 + 1024 + 64 + 16,
                "swapped 256: 4 stages of 48 KiB",
            ),
            (
                wide224,
                4 * 352 * 128 + 1024 + 64 + 16,
                "4 stages of 44 KiB",
            ),
        ] {
            assert_eq!(wgmma_shared(tile), bytes, "{tile:?}: {what}");
        }
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
