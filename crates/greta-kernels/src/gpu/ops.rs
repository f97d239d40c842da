//! Launchers of kernels/ops.hip: the embedding, the norms (alone, with the residual add,
//! with the products' f16 operands), RoPE and the KV append, SwiGLU, the operand splits and
//! FP8 copies, the picks (argmax, the device sampler) and the position.

use super::*;

/// 4-float vectors a thread of `add_rmsnorm_split` keeps (kernels/ops.hip's NORM_SPLIT_VECS).
const NORM_SPLIT_VECS: usize = 4;

/// The longest row `add_rmsnorm_split` takes: NORM_SPLIT_VECS vectors for each of 1024 threads.
pub const NORM_SPLIT_MAX_D: usize = 4 * NORM_SPLIT_VECS * 1024;

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
pub(super) fn norm_block(k: usize) -> u32 {
    const VALUES_PER_THREAD: usize = 8;
    let need = k.div_ceil(VALUES_PER_THREAD);
    [BLOCK, 512, NORM_BLOCK]
        .into_iter()
        .find(|&b| b as usize >= need)
        .unwrap_or(NORM_BLOCK)
}

/// Blocks of the cluster argmax (ARGMAX_CLUSTER in kernels/ops.hip).
const ARGMAX_CLUSTER: u32 = 8;

/// What a pick leaves in the history instead of a token when a logit is NaN (G_PICK_NAN in
/// kernels/ops.hip): the host sampler refuses such logits, and the device has no token to
/// give either, so the host reads this word and reports the error.
pub const PICK_NAN: u32 = u32::MAX;

/// Largest top-k the device sampler takes (SAMPLE_K_MAX in kernels/ops.hip).
pub const SAMPLE_K_MAX: usize = 256;

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

/// The shape of a RoPE call: `rows` rows of `n_heads` heads of `head_dim`; `half_split`
/// pairs (i, i + d/2) as Hugging Face does, else (2i, 2i+1) as GGUF weights need.
#[derive(Debug, Clone, Copy)]
pub struct RopeShape {
    pub rows: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub half_split: bool,
}

impl GpuKernels {
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

    /// `split_f16_lo8` with the low halves kept 2:4-sparse (docs/sparse-lo.md): hi as
    /// `split_f16` writes it, and in `lo` each 4 columns' two largest FP8 low halves (their
    /// magnitude as e5m2's bytes order it; the lower column on a tie) with their metadata, the
    /// operands of `GemmLo::Fp8Sparse` and `SwigluLo::Fp8Sparse`. k % 32 == 0; `lo` made for at
    /// least `shape.rows` rows of exactly k columns. Hopper only.
    pub fn split_f16_lo8s(
        &self,
        s: &Stream,
        x: &DeviceBuffer<f32>,
        hi: &mut DeviceBuffer<u16>,
        lo: &mut SparseLo8,
        shape: Rows,
    ) -> Result<()> {
        let what = "split_f16_lo8s";
        let f = &self.fp8(what)?.split_sparse;
        let Rows { rows: t, len: k } = shape;
        lo.check(t, k, what)?;
        Self::need(x, t * k, "split_f16_lo8s x")?;
        Self::need(hi, t * k, "split_f16_lo8s hi")?;
        if t == 0 {
            return Ok(());
        }
        // A thread a metadata word (32 columns), over the rows the GEMM's tiles read.
        let rows_padded = t.div_ceil(128) * 128;
        let threads = rows_padded * k.div_ceil(128) * 4;
        let args = Args::new()
            .ptr(x)
            .ptr(hi)
            .ptr(&lo.q)
            .ptr(&lo.meta)
            .u32(u32_of(t, "t")?)
            .u32(u32_of(k, "k")?)
            .u32(u32_of(rows_padded, "rows")?);
        self.launch(f, grid1(threads, BLOCK), s, args)
    }

    /// `out[r] = table[ids[r]]` (f16 rows widened to f32). The first kernel of every pass, and
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
        caches: [&mut DeviceBuffer<u16>; 2],
        pos0: &DeviceBuffer<u32>,
        inv_freq: &DeviceBuffer<f32>,
        shape: QkvRope,
    ) -> Result<()> {
        self.rope_append(s, Some(q), k, v, caches, pos0, inv_freq, shape)
    }

    /// `rope_qk_append` without q: RoPE on k, then k and v appended to the caches; k itself
    /// is left as it was (the rotated rows go to the cache only). For the prefill attention
    /// that rotates q itself (`attention_with_operands`' `q_rope`). Needs head_dim % 8 == 0.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_k_append(
        &self,
        s: &Stream,
        k: &DeviceBuffer<f32>,
        v: &DeviceBuffer<f32>,
        caches: [&mut DeviceBuffer<u16>; 2],
        pos0: &DeviceBuffer<u32>,
        inv_freq: &DeviceBuffer<f32>,
        shape: QkvRope,
    ) -> Result<()> {
        if !shape.head_dim.is_multiple_of(8) {
            return Err(KernelError::Shape(format!(
                "rope_k_append needs head_dim % 8 == 0; head_dim = {} (use rope_qk_append)",
                shape.head_dim
            )));
        }
        self.rope_append(s, None, k, v, caches, pos0, inv_freq, shape)
    }

    /// The RoPE angles of `rows` positions from `*pos0` (sin, cos of each pair: `head_dim`
    /// floats a row, `g_rope_angle`'s values) into `angles`, for the prefill attention that
    /// rotates q itself (`QRope`): one table a pass, read by every layer.
    pub fn rope_angles(
        &self,
        s: &Stream,
        angles: &mut DeviceBuffer<f32>,
        pos0: &DeviceBuffer<u32>,
        inv_freq: &DeviceBuffer<f32>,
        rows: usize,
        head_dim: usize,
    ) -> Result<()> {
        Self::need(angles, rows * head_dim, "rope_angles angles")?;
        Self::need(inv_freq, head_dim / 2, "rope_angles inv_freq")?;
        Self::need(pos0, 1, "rope_angles pos0")?;
        let half = head_dim / 2;
        let dims = LaunchDims {
            grid: [u32_of(rows, "rows")?, 1, 1],
            block: [
                half.next_multiple_of(self.wave as usize)
                    .min(BLOCK as usize) as u32,
                1,
                1,
            ],
            shared_bytes: 0,
            cluster: 1,
        };
        let args = Args::new()
            .ptr(angles)
            .ptr(pos0)
            .ptr(inv_freq)
            .u32(u32_of(half, "half")?);
        self.launch(&self.rope_angles, dims, s, args)
    }

    /// `rope_qk_append` (q given) or `rope_k_append` (q absent: the key heads alone, and the
    /// rotated k to the cache only).
    #[allow(clippy::too_many_arguments)]
    fn rope_append(
        &self,
        s: &Stream,
        q: Option<&mut DeviceBuffer<f32>>,
        k: &DeviceBuffer<f32>,
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
        let what = match q {
            Some(_) => "rope_qk_append",
            None => "rope_k_append",
        };
        let q = q.map(|q| &*q);
        Self::need_rope_io(&shape, q, [k, v], [k_cache, v_cache], pos0, inv_freq, what)?;
        let args = Args::new()
            .ptr_or_null(q)
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
            // A thread for every four pairs of every head of a row (the key heads alone
            // without q: the kernel's rot_q).
            let rotated = n_kv_heads + if q.is_some() { n_heads } else { 0 };
            let quads = rotated * head_dim / 8;
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
            // keep_k: the rotated k back into k where q is rotated too (its observers read
            // both there).
            let args = args.u32(q.is_some() as u32).u32(q.is_some() as u32);
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

    /// The size checks of a RoPE + KV append (`rope_qk_append`, `rope_k_append`,
    /// `attention_rope`): q (where given), k and v of `shape.rows` tokens, both caches of
    /// `shape.capacity` positions, the frequencies and the position; `what` names the
    /// caller in an error.
    pub(super) fn need_rope_io(
        shape: &QkvRope,
        q: Option<&DeviceBuffer<f32>>,
        [k, v]: [&DeviceBuffer<f32>; 2],
        [k_cache, v_cache]: [&DeviceBuffer<u16>; 2],
        pos0: &DeviceBuffer<u32>,
        inv_freq: &DeviceBuffer<f32>,
        what: &str,
    ) -> Result<()> {
        let kv_row = shape.n_kv_heads * shape.head_dim;
        if let Some(q) = q {
            Self::need_of(q, shape.rows * shape.n_heads * shape.head_dim, what, "q")?;
        }
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
        let args = self.lo8_sparse_args(args, &ops, "add_rmsnorm_split")?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
