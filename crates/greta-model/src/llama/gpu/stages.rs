//! One forward pass, stage by stage (TRACE.md's stages, in its order): `embed`, then per
//! layer `attention_block` and `ffn_block`, then `final_norm_and_logits`.

use super::*;

/// Copies a stage's rows to the host for the observer and back (an injected fault changes
/// them). Returns whether the observer changed them: a fused kernel that already computed
/// later stages from the old values must then have them recomputed.
pub(super) fn observe(
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
pub(super) struct PassRows {
    pub(super) t: usize,
    pub(super) pos0: usize,
    pub(super) fused: bool,
}

impl PassRows {
    /// Where a stage of the pass is reported.
    pub(super) fn at(self, point: Point, layer: Option<usize>) -> StageAt {
        StageAt {
            point,
            layer,
            pos0: self.pos0,
        }
    }
}

/// What one block of a pass hands the next about `normed`, the norm the next block's first
/// products read.
pub(super) struct NormFlow {
    /// `normed` is not yet the next norm of the current x: true after the embedding; after
    /// a layer's fused add + norm, only if an observer changed x.
    pub(super) stale: bool,
    /// The f16 operands of `normed` for the next normed product group (Q/K/V or gate/up)
    /// are already made (`norm`); cleared when an observer changes `normed`.
    pub(super) operands: bool,
}

impl GpuLlama {
    /// Whether a pass of `t` rows runs the decode step's fused launches: the norms in the
    /// prologues of the products that read them, the residual adds in the epilogues of the
    /// products that feed them (`project_add`).
    pub(super) fn decode_fused(&self, t: usize) -> bool {
        t == 1 && GpuKernels::norm_prologue_bytes(self.config.hidden).is_ok()
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
    pub(super) fn forward_inner(
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
    pub(super) fn embed(
        &self,
        st: &mut GpuState,
        pass: PassRows,
        obs: &mut dyn StageObserver,
    ) -> Result<()> {
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
    pub(super) fn attention_block(
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
                    (Lin::Q, &w.wq, w.fp8().q.as_ref(), q_row),
                    (Lin::K, &w.wk, w.fp8().k.as_ref(), kv_row),
                    (Lin::V, &w.wv, w.fp8().v.as_ref(), kv_row),
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
        let o = [(Lin::O, &w.wo, w.fp8().o.as_ref(), d)];
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
    pub(super) fn ffn_block(
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
        let down = [(Lin::Down, &w.w_down, w.fp8().down.as_ref(), d)];
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
    pub(super) fn final_norm_and_logits(
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
}
