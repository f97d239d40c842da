//! Launchers of kernels/gemv.hip: the decode step's products (one row of input), with the
//! norm in their prologue, the residual add or SwiGLU in their epilogue, and the rule that
//! spreads small launches over the multiprocessors.

use super::*;

/// The RMSNorm a decode product applies in its prologue (`gemv3_norm`,
/// `gate_up_silu_norm`): weights `w`, `eps`, and where block 0 writes the normalised row.
pub struct NormIn<'a> {
    pub w: &'a DeviceBuffer<f32>,
    pub eps: f32,
    pub out: &'a mut DeviceBuffer<f32>,
}

/// The decode attention's partials an output product combines into its input
/// (`GpuKernels::gemv_add_splits`): left in `scratch` by `attention_rope` launched without
/// ctx over `keys` positions, for heads of `head_dim`.
#[derive(Clone, Copy)]
pub struct CtxSplits<'a> {
    pub scratch: &'a AttnScratch,
    pub pos0: &'a DeviceBuffer<u32>,
    pub keys: usize,
    pub head_dim: usize,
}

/// The longest row a product with the norm in its prologue takes: x in LDS, 48 KiB.
pub const NORM_PROLOGUE_MAX_K: usize = 12 * 1024;

/// From this many rows on, the decode products take two rows per wave (`launch_rows`).
const TWO_PER_WAVE_FROM: usize = 16_384;

/// The most rows of input the short-prefill products take (`gemv_rows`: kernels/gemv.hip
/// has forms for 4, 8 and 16).
pub const GEMV_ROWS_MAX: usize = 16;

/// Weight rows a wave of `gemv_rows` takes (R in kernels/gemv.hip's gemv_rows forms).
const GEMV_ROWS_PER_WAVE: usize = 2;

/// Halves a lane loads per group of a decode product's row (gemv.hip: 8 per 16-byte load,
/// UNROLL = 4 loads in flight).
const GEMV_GROUP_LANE_HALVES: usize = 8 * 4;

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

impl GpuKernels {
    /// `y[n] = w[n, k] · x[k]`, f16 weights (decode): one row per wave (two from 16k rows on),
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

    /// `gemv_add` whose input is the attention context of one token, combined from the
    /// decode attention's partials as the product loads it (`attention_rope` launched
    /// without ctx, over `splits.keys` positions): bitwise `gemv_add` of the ctx the
    /// attention would have written (kernels/decode_splits.h). `k` = heads x head_dim, at
    /// most `CTX_PRODUCT_MAX_K`; at most DECODE_CLUSTER_MAX splits (`decode_splits`).
    #[allow(clippy::too_many_arguments)]
    pub fn gemv_add_splits(
        &self,
        s: &Stream,
        w: &DeviceBuffer<u16>,
        splits: CtxSplits,
        y: &mut DeviceBuffer<f32>,
        resid: &mut DeviceBuffer<f32>,
        n: usize,
        k: usize,
    ) -> Result<()> {
        let what = "gemv_add_splits";
        let CtxSplits {
            scratch,
            pos0,
            keys,
            head_dim,
        } = splits;
        scratch.splits_for(keys, k, head_dim, what)?;
        Self::need_of(w, n * k, what, "w")?;
        Self::need_of(y, n, what, "y")?;
        Self::need_of(resid, n, what, "resid")?;
        Self::need_of(pos0, 1, what, "pos0")?;
        let shared = Self::norm_prologue_bytes(k)?;
        let args = Args::new()
            .ptr(w)
            .ptr(y)
            .u32(u32_of(n, "n")?)
            .ptr(&scratch.part_m)
            .ptr(&scratch.part_o)
            .ptr(pos0)
            .u32(u32_of(head_dim, "head_dim")?)
            .u32(u32_of(k, "k")?)
            .ptr(resid);
        let dims = self.product_dims(n, BLOCK, shared);
        self.launch(&self.gemv_add_splits, dims, s, args)
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
        let args = Self::gate_up_args([w_gate, w_up], x, [gate, up, act], n, k, 1, "gate_up_silu")?;
        self.launch(&self.gate_up_silu, self.wave_rows(n), s, args)
    }

    /// The arguments of the gate/up products (w_gate, w_up, x, gate, up, act, n, k) over
    /// `rows` rows of x, after checking every buffer's size; `what` names the caller in an
    /// error.
    #[allow(clippy::too_many_arguments)]
    fn gate_up_args(
        [w_gate, w_up]: [&DeviceBuffer<u16>; 2],
        x: &DeviceBuffer<f32>,
        [gate, up, act]: [&mut DeviceBuffer<f32>; 3],
        n: usize,
        k: usize,
        rows: usize,
        what: &str,
    ) -> Result<Args> {
        Self::need_of(w_gate, n * k, what, "w_gate")?;
        Self::need_of(w_up, n * k, what, "w_up")?;
        Self::need_of(x, rows * k, what, "x")?;
        for (b, name) in [(&*gate, "gate"), (&*up, "up"), (&*act, "act")] {
            Self::need_of(b, rows * n, what, name)?;
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
        let args = Self::gate_up_args([w_gate, w_up], x, [gate, up, act], n, k, 1, what)?;
        let args = Self::norm_args(args, norm, k, what)?;
        let dims = self.product_dims(n, norm_block(k), shared);
        self.launch(&self.gate_up_silu_norm, dims, s, args)
    }

    /// The products of a short prefill: `ys[i][t, ..ns[i]] = ws[i] · x[t]` for each of up to
    /// three products sharing x (Q, K and V in one launch), over `rows` rows of x (row
    /// stride k), 1 ≤ rows ≤ `GEMV_ROWS_MAX`. Each weight is read once, as by the decode
    /// products, and row t of each result is bitwise what `gemv` gives for `x[t]` (f32 x, the
    /// same sums in the same order), where the prefill GEMM would round x to f16 for the
    /// matrix units and fill few of its tiles.
    pub fn gemv_rows(
        &self,
        s: &Stream,
        products: Vec<(&DeviceBuffer<u16>, &mut DeviceBuffer<f32>, usize)>,
        x: &DeviceBuffer<f32>,
        k: usize,
        rows: usize,
    ) -> Result<()> {
        let what = "gemv_rows";
        let f = Self::rows_form(&self.gemv_rows, rows, what)?;
        if products.is_empty() || products.len() > 3 {
            return Err(KernelError::Shape(format!(
                "{what}: 1 to 3 products share one launch; got {}",
                products.len()
            )));
        }
        Self::need_of(x, rows * k, what, "x")?;
        let mut args = Args::new();
        let mut total = 0;
        for (w, y, n) in products.iter() {
            Self::need_of(w, n * k, what, "w")?;
            Self::need_of(y, rows * n, what, "y")?;
            args = args.ptr(*w).ptr(&**y).u32(u32_of(*n, "n")?);
            total += n;
        }
        for _ in products.len()..3 {
            args = args.null().null().u32(0);
        }
        let args = args.ptr(x).u32(u32_of(k, "k")?).u32(u32_of(rows, "rows")?);
        // Two weight rows a wave (GEMV_ROWS_PER_WAVE): they share each load of x.
        let dims = self.product_dims(total.div_ceil(GEMV_ROWS_PER_WAVE), BLOCK, 0);
        self.launch(f, dims, s, args)
    }

    /// gate, up and act = silu(gate) · up over `rows` rows of x (outputs [rows, n]), one
    /// launch: `gate_up_silu` for a short prefill, each row bitwise that kernel's.
    #[allow(clippy::too_many_arguments)]
    pub fn gate_up_silu_rows(
        &self,
        s: &Stream,
        w_gate: &DeviceBuffer<u16>,
        w_up: &DeviceBuffer<u16>,
        x: &DeviceBuffer<f32>,
        [gate, up, act]: [&mut DeviceBuffer<f32>; 3],
        n: usize,
        k: usize,
        rows: usize,
    ) -> Result<()> {
        let what = "gate_up_silu_rows";
        let f = Self::rows_form(&self.gate_up_silu_rows, rows, what)?;
        let args = Self::gate_up_args([w_gate, w_up], x, [gate, up, act], n, k, rows, what)?
            .u32(u32_of(rows, "rows")?);
        self.launch(f, self.product_dims(n, BLOCK, 0), s, args)
    }

    /// The form of a rows kernel (`gemv_rows`, `gate_up_silu_rows`) that takes `rows`: the
    /// narrowest of 4, 8 and 16 (its sums for the rows past `rows` are skipped).
    fn rows_form<'f>(forms: &'f [Function; 3], rows: usize, what: &str) -> Result<&'f Function> {
        match rows {
            1..=4 => Ok(&forms[0]),
            5..=8 => Ok(&forms[1]),
            9..=GEMV_ROWS_MAX => Ok(&forms[2]),
            _ => Err(KernelError::Shape(format!(
                "{what}: takes 1 to {GEMV_ROWS_MAX} rows of input; got {rows} (more take the prefill GEMM)"
            ))),
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
