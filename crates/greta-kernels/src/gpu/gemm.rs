//! Launchers of kernels/gemm.hip: the prefill's products (many rows), on the warpgroup
//! GEMM (Hopper: wgmma fed by TMA, f16 or FP8 low halves, SwiGLU in the epilogue) or the
//! mma.sync / MFMA tiles, and the choice of tile.

use super::*;

mod stream_k;
mod tiles;

pub use stream_k::*;
pub use tiles::*;

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

    /// Whether the plain, FP8-lo, Q/K/V cache and SwiGLU products may take a swapped tile
    /// (`WgmmaTile::SWAPPED`, `SWAPPED_SWIGLU`) where its waves take less than the 128-row
    /// tiles' (the default).
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
