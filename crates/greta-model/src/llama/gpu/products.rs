//! The projections: `y = x · wᵀ` for the groups of products that share an input, on the
//! GEMVs or the matrix units, with the norms, SwiGLU and residual adds fused into them.

use super::*;

/// Which activation buffers a projection reads and writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Lin {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    Head,
}

impl Lin {
    /// A layer's products (the LM head is not one).
    pub(super) const LAYER: [Lin; 7] = [
        Lin::Q,
        Lin::K,
        Lin::V,
        Lin::O,
        Lin::Gate,
        Lin::Up,
        Lin::Down,
    ];

    /// The weight matrix's shape `[rows, cols]` (rows: outputs; cols: the input's length).
    pub(super) fn shape(self, c: &LlamaConfig) -> (usize, usize) {
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
    pub(super) fn in_ffn_operands(self) -> bool {
        matches!(self, Lin::Gate | Lin::Up)
    }

    /// The products that read the same input as `self` (one launch's group).
    pub(super) fn group(self) -> &'static [Lin] {
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
    pub(super) fn group_needs_lo(self, split: SplitInputs) -> bool {
        self.group().iter().any(|m| m.needs_lo(split))
    }

    /// Whether every product of `self`'s group that takes a low half has it in the form
    /// `form` names (`SplitLo::fp8`: the products with FP8 weight copies; `SplitLo::sparse`):
    /// one launch takes one kind of low half, so a group whose split products are not all in
    /// `form` takes the plainer one.
    pub(super) fn group_lo_in(self, split: SplitInputs, form: SplitInputs) -> bool {
        self.group()
            .iter()
            .all(|m| !m.needs_lo(split) || m.needs_lo(form))
    }

    /// Whether the product's input enters the matrix units as hi + lo (two f16) rather than
    /// one f16.
    pub(super) fn needs_lo(self, split: SplitInputs) -> bool {
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

/// The input of a decode product with the residual add (`project_add`).
#[derive(Clone, Copy)]
pub(super) enum ProjectIn {
    /// The output projection's: the attention context.
    Ctx,
    /// The output projection's, combined from the partials the decode attention over
    /// `keys` positions left in the scratch (`ctx_in_product`).
    CtxSplits { keys: usize },
    /// The down projection's: SwiGLU's output.
    Act,
}

impl GpuLlama {
    /// Whether the products of `first`'s group over `t` rows of `k` run on the matrix units
    /// (`gemm_f16`, from f16 operands of their input), and if so whether the input enters
    /// as hi + lo (`Lin::needs_lo`). Up to `gemv_rows` rows take the GEMVs, a k that is not
    /// a multiple of 8 the any-shape GEMM: neither reads operands.
    /// The low half is FP8 for the products `split_lo` names (those whose weights
    /// `set_split_lo` copied to FP8).
    pub(super) fn f16_operands(&self, first: Lin, t: usize, k: usize) -> Option<LoKind> {
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
    pub(super) fn forced_tile(&self, lin: Lin) -> Option<WgmmaTile> {
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
    pub(super) fn products(
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

    /// Layer `l`'s Q, K and V over `t` rows from `pos0` in one launch, q into `st.q` and K
    /// (rotated) and V into the layer's caches (`kv_in_qkv_product` says where);
    /// `operands_ready` as `products`'.
    pub(super) fn qkv_into_cache(
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
            (&w.wq, w.fp8().q.as_ref()),
            (&w.wk, w.fp8().k.as_ref()),
            (&w.wv, w.fp8().v.as_ref()),
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

    /// The norm ahead of a product group over `t` rows (`next`: the group's first product):
    /// x += proj first where `add`, then normed = rmsnorm(x) · w, and where that group runs
    /// on the matrix units, its f16 operands in the same launch (`add_rmsnorm_split`), with
    /// normed itself stored only where `keep` (an observer wants it: the products read the
    /// operands, nothing else reads normed). Returns whether it made the operands.
    pub(super) fn norm(
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
    pub(super) fn swiglu(&self, st: &mut GpuState, t: usize, keep: bool) -> Result<bool> {
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
    pub(super) fn gate_up_swiglu(
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
            .fp8()
            .gate
            .as_ref()
            .zip(w.fp8().up.as_ref())
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
                    (Lin::Gate, &w.w_gate, w.fp8().gate.as_ref(), n_ff),
                    (Lin::Up, &w.w_up, w.fp8().up.as_ref(), n_ff),
                ];
                self.products(st, &gate_up, t, d, operands_ready)?;
                self.swiglu(st, t, keep[2])
            }
        }
    }

    /// One token's Q, K and V from `normed`, one launch: the unfused decode path, and the
    /// fused one's rerun when an observer changed the norm its prologue made.
    pub(super) fn qkv_one(&self, st: &mut GpuState, w: &GpuLayer) -> Result<()> {
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
    pub(super) fn gate_up_one(&self, st: &mut GpuState, w: &GpuLayer) -> Result<()> {
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

    /// Decode's output (input ctx, or the attention's split partials it is combined from)
    /// or down (input act) projection with the residual add in its epilogue: proj = w ·
    /// input, x += proj, one launch; then proj and x observed at `at` ([product,
    /// residual]). While the observer watches the product, x is kept in `last` first, so
    /// that a changed product is added to the residual it was added to (as the unfused
    /// stages would).
    pub(super) fn project_add(
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
}

#[cfg(test)]
mod tests {
    use super::{Lin, SplitInputs};

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
}
