//! RoPE, the KV append and the attention, and which launch forms a pass takes for them.

use super::*;

impl GpuLlama {
    /// Whether an untraced prefill rotates q inside the attention (`rope_attend`), from one
    /// table of angles a pass (`rope_angles`). Measured on an H200 (session 35,
    /// docs/performance.md): at head_dim 128 (Llama-2-7B) it saves 0.17 ms of a 512-token
    /// prefill; at 64 (SmolLM2-135M, whose q is a tenth as large and whose prefill is
    /// host-bound) the table's launch cost 0.05 ms more than it saved, so those shapes keep
    /// `rope_qk_append`.
    pub(super) fn q_rope_in_attention(&self) -> bool {
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
    pub(super) fn kv_in_qkv_product(&self, t: usize, l: usize, obs: &dyn StageObserver) -> bool {
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
    pub(super) fn qkv_rope(&self, st: &GpuState, t: usize, pos0: usize) -> QkvRope {
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
    pub(super) fn rope_attend(
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

    /// Whether decode's output product combines the attention's splits of layer `l` (one
    /// token at `pos0`) as it loads them, where ctx is never made (`CtxCombine`): only in
    /// the fused step (`project_add`), where the attention runs in its one launch with RoPE,
    /// and no observer reads (or may change) QRope, KRope or AttnCtx there, which would
    /// need ctx or a rerun from it.
    pub(super) fn ctx_in_product(
        &self,
        t: usize,
        l: usize,
        pos0: usize,
        obs: &dyn StageObserver,
    ) -> bool {
        let c = &self.config;
        self.decode_fused(t)
            && self.kernels.has_decode_rope(c.head_dim)
            && ![Point::QRope, Point::KRope, Point::AttnCtx]
                .into_iter()
                .any(|p| obs.wants(p, Some(l)))
            && self.ctx_combine.in_product(c.n_heads, c.head_dim, pos0 + t)
    }
}
