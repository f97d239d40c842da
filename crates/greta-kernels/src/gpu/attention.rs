//! Launchers of kernels/attention.hip: the prefill's flash attention, the decode step's
//! attention split over the KV length (with RoPE and the append in the same launch where it
//! has the form), the KV append, and their scratch.

use super::*;

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

/// RoPE on q inside the prefill attention (`GpuKernels::attention_with_operands`): the
/// angles of the pass's rows (`GpuKernels::rope_angles`) and the pairing
/// (`QkvRope::half_split`).
#[derive(Clone, Copy)]
pub struct QRope<'a> {
    pub angles: &'a DeviceBuffer<f32>,
    pub half_split: bool,
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
/// V tile of FA_KEYS keys x head_dim halves, and 1 KiB more, so that the tiles (TMA boxes in
/// the 128-byte swizzle, and the wgmma form's operands) start on 1024-byte swizzle atoms.
pub(super) fn fa_shared_bytes(head_dim: usize) -> u32 {
    (2 * 2 * FA_KEYS * head_dim * std::mem::size_of::<u16>() + 1024) as u32
}

/// Columns of one TMA box of the prefill attention's K and V tiles: 64 halves, one 128-byte
/// swizzle row (the tile of a head is head_dim / 64 boxes side by side).
const FA_BOX_COLS: u32 = 64;

/// Largest head_dim the flash attention kernel holds (HD_MAX in kernels/attention.hip).
pub const FLASH_HEAD_DIM_MAX: usize = 128;

/// The head dims the split decode attention has a kernel for: 16, 32, .. 128
/// (`attn_decode_split_hd{16..128}`), the ones `check_attention_shape` takes.
pub(super) const DECODE_HEAD_DIMS: usize = FLASH_HEAD_DIM_MAX / 16;

/// The one head_dim without a RoPE form (it spills on sm_90a; kernels/attention.hip).
pub(super) const DECODE_ROPE_NONE: usize = 112;

/// One decode attention kernel per head_dim (16, 32, .. 128), looked up by `find`.
pub(super) fn per_decode_head_dim<T>(
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
/// splits exit at once, cost Llama-2-7B decode 2 %. Also the most splits an output product
/// combines in its prologue (`gemv_add_splits`: kernels/decode_splits.h holds a thread's
/// partials in registers, all loads at once).
pub const DECODE_CLUSTER_MAX: usize = 8;

/// Where a decode step combines its attention's splits into the context row (one token, the
/// attention with RoPE in its launch, the output product with the residual add): in the
/// attention (a head's splits wait for each other: a cluster barrier on sm_90, or the last
/// split to finish), or in the output product's prologue as it loads its input
/// (`gemv_add_splits`), so that no attention block waits for another. The values are the
/// same bits either way (the op tests check it); the time is what changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CtxCombine {
    /// The product where there are 2 to DECODE_CLUSTER_MAX splits, the attention otherwise.
    #[default]
    Auto,
    Attention,
    /// The product wherever it can (at most DECODE_CLUSTER_MAX splits).
    Product,
}

/// The longest context row (heads x head_dim) an output product combines from the splits:
/// CTX_PER_THREAD (4) values a thread of its 256 (kernels/decode_splits.h), every load of
/// them at once: SmolLM2's 576 fits; Llama-3.2-1B's 2048 and the 7B's 4096 combine in the
/// attention.
pub const CTX_PRODUCT_MAX_K: usize = 4 * 256;

impl CtxCombine {
    /// Whether the output product combines the splits of a decode attention of `n_heads`
    /// heads of `head_dim` over `keys` positions.
    pub fn in_product(self, n_heads: usize, head_dim: usize, keys: usize) -> bool {
        let splits = decode_splits(keys);
        splits <= DECODE_CLUSTER_MAX
            && n_heads * head_dim <= CTX_PRODUCT_MAX_K
            && match self {
                CtxCombine::Attention => false,
                CtxCombine::Product => true,
                // One split has nothing to combine: the attention writes ctx, and the plain
                // product reads it (the combining product costs ~1 µs a layer more than
                // the plain one's load of ctx, its LDS staging and barriers; session 62).
                CtxCombine::Auto => splits >= 2,
            }
    }
}

impl std::str::FromStr for CtxCombine {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(CtxCombine::Auto),
            "attention" => Ok(CtxCombine::Attention),
            "product" => Ok(CtxCombine::Product),
            _ => Err(format!("{s:?}: expected auto, attention or product")),
        }
    }
}

impl std::fmt::Display for CtxCombine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CtxCombine::Auto => "auto",
            CtxCombine::Attention => "attention",
            CtxCombine::Product => "product",
        })
    }
}

/// How many KV splits decode attention uses for `keys` positions (`AttnShape::keys`; the
/// scratch is sized for a whole cache's).
pub fn decode_splits(keys: usize) -> usize {
    keys.div_ceil(DECODE_SPLIT).max(1)
}

/// Refuses a pass's key bound (`AttnShape::keys`, `QkvRope::keys`) outside `least..=capacity`:
/// a pass attends over at least its last position + 1 (`least`: its rows, and 1 for an
/// attention), at most the cache. `what` names the caller in the error.
pub(super) fn check_keys(what: &str, least: usize, keys: usize, capacity: usize) -> Result<()> {
    if keys < least || keys > capacity {
        return Err(KernelError::Shape(format!(
            "{what} over {keys} keys of a {capacity}-position cache: keys must be {least}..={capacity} (a pass \
             attends over at least its last position + 1)"
        )));
    }
    Ok(())
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
/// The partials attention (`attention_rope` without ctx) lays its partials out otherwise,
/// for the output product that combines them (kernels/decode_splits.h): o split-major in
/// `part_o`, and m and l together in `part_m` (`part_l` unused there).
pub struct AttnScratch {
    n_heads: usize,
    head_dim: usize,
    splits: usize,
    /// m per (head, split); the partials form: m and l, [split][head][8].
    pub(super) part_m: DeviceBuffer<f32>,
    pub(super) part_l: DeviceBuffer<f32>,
    /// o per (head, split); the partials form: [split][head][head_dim].
    pub(super) part_o: DeviceBuffer<f32>,
    done: DeviceBuffer<u32>,
}

impl AttnScratch {
    pub fn new(gpu: &Gpu, n_heads: usize, head_dim: usize, capacity: usize) -> Result<Self> {
        let splits = decode_splits(capacity);
        let slots = splits.max(DECODE_CLUSTER_MAX);
        let mut done = gpu.alloc::<u32>(n_heads)?;
        let s = gpu.stream()?;
        done.zero(&s)?;
        s.synchronize()?;
        Ok(AttnScratch {
            n_heads,
            head_dim,
            splits,
            // Room for DECODE_CLUSTER_MAX splits at least, whatever the capacity, and m and
            // l in a 32-byte sector of their own per (split, head): the partials
            // attention's layout (kernels/decode_splits.h).
            part_m: gpu.alloc(n_heads * slots * 8)?,
            part_l: gpu.alloc(n_heads * slots)?,
            part_o: gpu.alloc(n_heads * slots * head_dim)?,
            done,
        })
    }
    pub fn bytes(&self) -> usize {
        4 * (self.part_m.len() + self.part_l.len() + self.part_o.len() + self.done.len())
    }

    /// The splits a decode attention over `keys` positions leaves its partials in, for a
    /// product that combines them into a context row of `k` = heads x `head_dim`
    /// (`gemv_add_splits`), after checking that this scratch holds them, that the row is
    /// the scratch's own heads and head_dim (the partials' layout), and that the product
    /// can combine them (at most DECODE_CLUSTER_MAX). `what` names the caller.
    pub(super) fn splits_for(
        &self,
        keys: usize,
        k: usize,
        head_dim: usize,
        what: &str,
    ) -> Result<usize> {
        let splits = decode_splits(keys);
        if splits > DECODE_CLUSTER_MAX {
            return Err(KernelError::Shape(format!(
                "{what}: {keys} keys are {splits} splits of {DECODE_SPLIT}; a product combines at most {DECODE_CLUSTER_MAX} (the attention combines longer contexts itself)"
            )));
        }
        if k > CTX_PRODUCT_MAX_K {
            return Err(KernelError::Shape(format!(
                "{what}: a product combines context rows of at most {CTX_PRODUCT_MAX_K} (heads x head_dim); got {k} (the attention combines longer rows itself)"
            )));
        }
        if head_dim == 0 || !k.is_multiple_of(head_dim) {
            return Err(KernelError::Shape(format!(
                "{what}: a context row of {k} is not whole heads of {head_dim}"
            )));
        }
        let heads = k / head_dim;
        if splits > self.splits {
            return Err(KernelError::Shape(format!(
                "{what}: attention scratch for {} splits; {keys} keys are {splits}",
                self.splits
            )));
        }
        // The partials are laid out by the scratch's heads and head_dim (split s's row at s x
        // heads x head_dim: kernels/decode_splits.h), so the attention that leaves them and
        // the product that combines them must both take exactly those, or the product would
        // read them misaligned.
        if heads != self.n_heads || head_dim != self.head_dim {
            return Err(KernelError::Shape(format!(
                "{what}: the partials are laid out for {} heads of {}; a context row of {heads} heads of {head_dim} would read them misaligned",
                self.n_heads, self.head_dim
            )));
        }
        Ok(splits)
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
    /// while its positions stay within the same number of splits. The register-resident
    /// prefill kernel's TMA reads the caches up to it (rows past it as zero; it clears what
    /// a block reads past its own last key itself).
    pub keys: usize,
}

impl GpuKernels {
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
        self.attention_with_operands(
            s,
            q,
            k_cache,
            v_cache,
            scratch,
            Some(ctx),
            None,
            None,
            pos0,
            att,
        )
        .map(|_| ())
    }

    /// `attention`, and where `ops` are given and the register-resident prefill kernel runs
    /// (several rows, head_dim 64 or 128, NVIDIA: `has_prefill_fa`), the output projection's
    /// f16 operands of ctx in the same launch (bitwise what `split_f16` makes of ctx, or
    /// `split_f16_lo8` for FP8 low halves). Returns whether it wrote them; where it did not,
    /// `ops` is untouched and the caller splits ctx.
    /// `ctx: None` leaves ctx unstored (the untraced prefill: only the output product reads
    /// it, through the operands): only where that kernel writes them; elsewhere an error.
    /// With `q_rope`, q is the Q product's unrotated output and the kernel applies RoPE as
    /// it loads each row: ctx is bitwise `rope_qk_append` then `attention`'s. Only the
    /// register-resident kernel does (`has_prefill_q_rope`); elsewhere it is an error.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_with_operands(
        &self,
        s: &Stream,
        q: &DeviceBuffer<f32>,
        k_cache: &DeviceBuffer<u16>,
        v_cache: &DeviceBuffer<u16>,
        scratch: &mut AttnScratch,
        ctx: Option<&mut DeviceBuffer<f32>>,
        ops: Option<F16Operands>,
        q_rope: Option<QRope<'_>>,
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
        check_keys("attention", n_rows.max(1), keys, max_kv)?;
        Self::need(q, n_rows * n_heads * head_dim, "attention q")?;
        let writes_ops = ops.is_some() && self.attention_writes_operands(n_rows, head_dim);
        let ctx = match ctx {
            Some(ctx) => {
                Self::need(ctx, n_rows * n_heads * head_dim, "attention ctx")?;
                Some(ctx)
            }
            None if writes_ops => None,
            None => {
                return Err(KernelError::Shape(format!(
                    "attention without ctx: only the register-resident prefill kernel writing the output \
                     product's operands may leave it out (several rows, head_dim 64 or 128, NVIDIA, operands \
                     given); got {n_rows} rows, head_dim {head_dim}, operands {}",
                    if ops.is_some() { "given" } else { "not given" }
                )));
            }
        };
        Self::need(k_cache, max_kv * n_kv_heads * head_dim, "attention k cache")?;
        Self::need(v_cache, max_kv * n_kv_heads * head_dim, "attention v cache")?;
        let (nh, nkv, hd) = (
            u32_of(n_heads, "n_heads")?,
            u32_of(n_kv_heads, "n_kv_heads")?,
            u32_of(head_dim, "head_dim")?,
        );
        let scale = 1.0 / (head_dim as f32).sqrt();
        if let Some(r) = &q_rope {
            if n_rows < 2 || !self.has_prefill_q_rope(head_dim) {
                return Err(KernelError::Shape(format!(
                    "RoPE inside the attention needs the register-resident prefill kernel (several rows, \
                     head_dim 64 or 128, NVIDIA); got {n_rows} rows, head_dim {head_dim} (see has_prefill_q_rope)"
                )));
            }
            Self::need(r.angles, n_rows * head_dim, "attention RoPE angles")?;
        }
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
            let args = Args::new().ptr(q);
            let mut args = match fa {
                // The register-resident kernel's tiles come by TMA: the caches as [keys][kv_row]
                // matrices, so rows past the pass's keys read as zero.
                Some(_) => {
                    let kv_row = n_kv_heads * head_dim;
                    let map = |c: &DeviceBuffer<u16>| {
                        c.tensor_map_f16(keys, kv_row, FA_KEYS as u32, FA_BOX_COLS)
                    };
                    args.tmap(map(k_cache)?).tmap(map(v_cache)?)
                }
                None => args.ptr(k_cache).ptr(v_cache),
            }
            .ptr_or_null(ctx.as_deref());
            // Only the register-resident kernel writes the operands.
            let ops = ops.filter(|_| fa.is_some());
            if fa.is_some() {
                if let Some(o) = &ops {
                    let shape = Rows {
                        rows: n_rows,
                        len: n_heads * head_dim,
                    };
                    Self::need_ops(o, shape, "attention")?;
                }
                args = args
                    .ptr_or_null(ops.as_ref().map(|o| &*o.hi))
                    .ptr_or_null(ops.as_ref().and_then(|o| o.lo.as_ref()?.f16()));
                args = match &ops {
                    Some(o) => self.lo8_arg(args, o, "attention")?,
                    None => args.null(),
                };
            }
            let args = args.ptr(pos0).u32(u32_of(n_rows, "rows")?).u32(nh).u32(nkv);
            let args = match fa {
                // The multiprocessors order its blocks (longest pairs with shortest on one
                // SM; 0 where unknown: longest first).
                Some(_) => args
                    .f32(scale)
                    .u32(u32_of(self.multiprocessors, "multiprocessors")?)
                    .ptr_or_null(q_rope.map(|r| r.angles))
                    .u32(q_rope.is_some_and(|r| r.half_split) as u32),
                None => args.u32(hd).f32(scale),
            };
            self.launch(f, dims, s, args)?;
            return Ok(ops.is_some());
        }
        let ctx = ctx.expect("checked above: ctx is left out only where the prefill kernel runs");
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
        check_keys("decode attention", 1, keys, capacity)?;
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

    /// Whether the prefill attention (several rows) applies RoPE to q itself at this
    /// head_dim (`attention_with_operands`' `q_rope`; then `rope_k_append` rotates the keys
    /// alone): where the register-resident kernel runs (NVIDIA, head_dim 64 and 128).
    pub fn has_prefill_q_rope(&self, head_dim: usize) -> bool {
        self.has_prefill_fa(head_dim)
    }

    /// Whether the register-resident prefill attention runs at this head_dim (NVIDIA,
    /// head_dim 64 and 128): the one that writes the output product's operands of ctx
    /// (`attention_with_operands`) and may leave ctx itself unstored.
    pub fn has_prefill_fa(&self, head_dim: usize) -> bool {
        self.attn_prefill_fa.is_some() && matches!(head_dim, 64 | 128)
    }

    /// Whether an attention pass of `n_rows` rows given the output product's operands
    /// writes them itself (the register-resident prefill kernel), so that its caller may
    /// leave ctx out (`attention_with_operands`, which refuses a missing ctx otherwise).
    pub fn attention_writes_operands(&self, n_rows: usize, head_dim: usize) -> bool {
        n_rows > 1 && self.has_prefill_fa(head_dim)
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
    /// Without `ctx`, no block waits for another: every split leaves its partial in
    /// `scratch` for the output product to combine (`gemv_add_splits`, at most
    /// DECODE_CLUSTER_MAX splits); the launch then runs no clusters.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_rope(
        &self,
        s: &Stream,
        [q, k, v]: [&DeviceBuffer<f32>; 3],
        [k_cache, v_cache]: [&mut DeviceBuffer<u16>; 2],
        [q_rot, k_rot]: [&mut DeviceBuffer<f32>; 2],
        scratch: &mut AttnScratch,
        ctx: Option<&mut DeviceBuffer<f32>>,
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
        let forms = match ctx {
            Some(_) => &self.attn_decode_rope,
            None => &self.attn_decode_rope_partials,
        };
        let Some(f) = &forms[head_dim / 16 - 1] else {
            return Err(KernelError::Shape(format!(
                "{what}: no kernel for head_dim {head_dim} (see has_decode_rope)"
            )));
        };
        Self::need_rope_io(
            &shape,
            Some(q),
            [k, v],
            [k_cache, v_cache],
            pos0,
            inv_freq,
            what,
        )?;
        let (q_row, kv_row) = (n_heads * head_dim, n_kv_heads * head_dim);
        Self::need_of(q_rot, q_row, what, "q_rot")?;
        Self::need_of(k_rot, kv_row, what, "k_rot")?;
        let mut dims = self.decode_dims(scratch, n_heads, head_dim, [keys, capacity])?;
        match &ctx {
            Some(ctx) => Self::need_of(ctx, q_row, what, "ctx")?,
            None => {
                scratch.splits_for(keys, q_row, head_dim, what)?;
                dims.cluster = 1;
            }
        }
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
            .ptr_or_null(ctx.as_deref())
            .ptr(pos0)
            .u32(u32_of(n_heads, "n_heads")?)
            .u32(u32_of(n_kv_heads, "n_kv_heads")?)
            .u32(dims.grid[0])
            .f32(1.0 / (head_dim as f32).sqrt());
        self.launch(f, dims, s, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Where a decode step combines its splits: `auto` in the product from 2 splits to
    /// DECODE_CLUSTER_MAX (one split has nothing to combine), `product` up to
    /// DECODE_CLUSTER_MAX splits, `attention` never; past
    /// DECODE_CLUSTER_MAX splits or a row of CTX_PRODUCT_MAX_K (the 7B's 32 heads of 128)
    /// always the attention. Flag values parse and print back.
    #[test]
    fn ctx_combine_takes_the_product_within_its_bounds() {
        let keys = |splits: usize| splits * DECODE_SPLIT;
        for splits in 1..=10 {
            let (small, big) = (
                CtxCombine::Auto.in_product(9, 64, keys(splits)),
                CtxCombine::Auto.in_product(32, 128, keys(splits)),
            );
            assert_eq!(
                small,
                (2..=DECODE_CLUSTER_MAX).contains(&splits),
                "SmolLM2, {splits} splits"
            );
            assert!(!big, "7B, {splits} splits");
            assert_eq!(
                CtxCombine::Product.in_product(8, 128, keys(splits)),
                splits <= DECODE_CLUSTER_MAX,
                "{splits} splits"
            );
            assert!(!CtxCombine::Product.in_product(32, 128, keys(splits)));
            assert!(!CtxCombine::Attention.in_product(9, 64, keys(splits)));
        }
        // One key past 8 splits is a ninth; one past one split, a second.
        assert!(!CtxCombine::Auto.in_product(9, 64, keys(8) + 1));
        assert!(CtxCombine::Auto.in_product(9, 64, keys(1) + 1));
        for v in ["auto", "attention", "product"] {
            assert_eq!(v.parse::<CtxCombine>().unwrap().to_string(), v);
        }
        let e = "cluster".parse::<CtxCombine>().unwrap_err();
        assert!(
            e.contains("\"cluster\"") && e.contains("auto, attention or product"),
            "{e}"
        );
    }

    /// The keys a decode attention covers: from one to the cache's capacity; the refusal
    /// names both.
    #[test]
    fn decode_keys_lie_within_the_cache() {
        let check = |keys, capacity| check_keys("decode attention", 1, keys, capacity);
        assert!(check(1, 1).is_ok() && check(513, 4096).is_ok());
        assert!(check(4096, 4096).is_ok());
        for (keys, capacity) in [(0, 4096), (4097, 4096), (2, 1)] {
            let msg = check(keys, capacity).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("{keys} keys"))
                    && msg.contains(&format!("{capacity}-position")),
                "{msg}"
            );
        }
    }
}
