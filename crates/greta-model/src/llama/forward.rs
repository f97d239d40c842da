//! The Llama forward pass on the CPU, one function per stage of the diagram:
//!
//! ```text
//! embed_out -> [ attn_norm -> q,k,v -> q_rope,k_rope -> attn_ctx -> attn_out -> resid_attn
//!               -> ffn_norm -> ffn_gate,ffn_up -> ffn_act -> ffn_out -> resid_ffn ] x L
//!           -> final_norm -> logits
//! ```
//!
//! Every stage hands its output to the `StageObserver`, which is how StageTrace sees the
//! model without tracer calls inside the compute.

use greta_kernels::cpu::{self, AttentionShape, RopePairing};
use greta_trace::{Pass, Point, StageAt, StageObserver};

use super::config::{LlamaConfig, RopeStyle};
use super::kv_cache::{KvCache, KvCacheFull};
use super::weights::{LayerWeights, LlamaWeights, Matrix};

/// Which rows of logits to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, audits).
    All,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    KvCacheFull(#[from] KvCacheFull),
    #[error("token id {id} at index {index} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, index: usize, vocab: usize },
    #[error("no tokens to evaluate")]
    Empty,
}

pub struct Llama {
    pub config: LlamaConfig,
    pub weights: LlamaWeights,
    inv_freq: Vec<f32>,
}

/// The stage context: where the rows are, and who is watching.
struct Ctx<'a> {
    obs: &'a mut dyn StageObserver,
    pos0: usize,
}

impl Ctx<'_> {
    fn emit(&mut self, point: Point, layer: Option<usize>, rows: &mut [f32], row_len: usize) {
        if self.obs.wants(point, layer) {
            self.obs.observe(
                StageAt {
                    point,
                    layer,
                    pos0: self.pos0,
                },
                rows,
                row_len,
            );
        }
    }
}

fn linear(x: &[f32], w: &Matrix, t: usize) -> Vec<f32> {
    let mut y = vec![0f32; t * w.rows];
    cpu::matmul_wt(x, w.view(), &mut y, t, w.cols, w.rows);
    y
}

impl Llama {
    pub fn new(config: LlamaConfig, weights: LlamaWeights) -> Self {
        let inv_freq = config.rope_inv_freq(weights.rope_freq_factors.as_deref());
        Llama {
            config,
            weights,
            inv_freq,
        }
    }

    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(
            self.config.n_layers,
            self.config.n_kv_heads * self.config.head_dim,
            capacity,
        )
    }

    /// Runs `tokens` at positions `cache.len()..`, appending their K/V to the cache.
    /// Prefill passes the whole prompt; decode passes one token. Returns logits
    /// `[rows, vocab]` for the rows `which` asks for.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
        obs: &mut dyn StageObserver,
    ) -> Result<Vec<f32>, ForwardError> {
        if tokens.is_empty() {
            return Err(ForwardError::Empty);
        }
        cache.reserve(tokens.len())?;
        obs.begin_pass(Pass {
            pos0: cache.len(),
            tokens,
        });
        let mut ctx = Ctx {
            obs,
            pos0: cache.len(),
        };
        let mut x = self.embed(tokens, &mut ctx)?;
        for (l, w) in self.weights.layers.iter().enumerate() {
            x = self.layer(l, w, x, tokens.len(), cache, &mut ctx);
        }
        cache.advance(tokens.len());
        let d = self.config.hidden;
        let rows = match which {
            Logits::All => x,
            Logits::Last => {
                ctx.pos0 += tokens.len() - 1;
                x[(tokens.len() - 1) * d..].to_vec()
            }
        };
        let normed = self.final_norm(&rows, &mut ctx);
        Ok(self.logits(&normed, &mut ctx))
    }

    fn embed(&self, tokens: &[u32], ctx: &mut Ctx) -> Result<Vec<f32>, ForwardError> {
        let e = &self.weights.token_embd;
        let mut x = vec![0f32; tokens.len() * e.cols];
        for (index, (&id, row)) in tokens.iter().zip(x.chunks_exact_mut(e.cols)).enumerate() {
            if id as usize >= e.rows {
                return Err(ForwardError::TokenOutOfRange {
                    id,
                    index,
                    vocab: e.rows,
                });
            }
            e.row_f32(id as usize, row);
        }
        ctx.emit(Point::EmbedOut, None, &mut x, e.cols);
        Ok(x)
    }

    fn layer(
        &self,
        l: usize,
        w: &LayerWeights,
        mut x: Vec<f32>,
        t: usize,
        cache: &mut KvCache,
        ctx: &mut Ctx,
    ) -> Vec<f32> {
        let d = self.config.hidden;
        ctx.emit(Point::AttnIn, Some(l), &mut x, d);
        let attn = self.attention_block(l, w, &x, t, cache, ctx);
        let mut x = self.residual(Point::ResidAttn, l, x, &attn, ctx);
        let ffn = self.ffn_block(l, w, &x, t, ctx);
        x = self.residual(Point::ResidFfn, l, x, &ffn, ctx);
        x
    }

    fn rms_norm(
        &self,
        point: Point,
        layer: Option<usize>,
        x: &[f32],
        w: &[f32],
        ctx: &mut Ctx,
    ) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        cpu::rmsnorm(x, w, self.config.rms_eps, &mut out);
        ctx.emit(point, layer, &mut out, w.len());
        out
    }

    fn projection(
        &self,
        point: Point,
        layer: usize,
        x: &[f32],
        w: &Matrix,
        t: usize,
        ctx: &mut Ctx,
    ) -> Vec<f32> {
        // A numerics probe on this product's input alone (`--inject ...:f16in`): the other
        // products that read the same stage keep it as it is.
        let probed;
        let x = if ctx.obs.wants_input(point, Some(layer)) {
            let mut copy = x.to_vec();
            let at = StageAt {
                point,
                layer: Some(layer),
                pos0: ctx.pos0,
            };
            ctx.obs.observe_input(at, &mut copy);
            probed = copy;
            &probed[..]
        } else {
            x
        };
        let mut y = linear(x, w, t);
        ctx.emit(point, Some(layer), &mut y, w.rows);
        y
    }

    fn rope(
        &self,
        point: Point,
        layer: usize,
        mut x: Vec<f32>,
        n_heads: usize,
        ctx: &mut Ctx,
    ) -> Vec<f32> {
        let pairing = match self.config.rope_style {
            RopeStyle::AdjacentPairs => RopePairing::Adjacent,
            RopeStyle::HalfSplit => RopePairing::HalfSplit,
        };
        cpu::rope(
            &mut x,
            ctx.pos0,
            n_heads,
            self.config.head_dim,
            &self.inv_freq,
            pairing,
        );
        ctx.emit(point, Some(layer), &mut x, n_heads * self.config.head_dim);
        x
    }

    fn attention_block(
        &self,
        l: usize,
        w: &LayerWeights,
        x: &[f32],
        t: usize,
        cache: &mut KvCache,
        ctx: &mut Ctx,
    ) -> Vec<f32> {
        let c = &self.config;
        let normed = self.rms_norm(Point::AttnNorm, Some(l), x, &w.attn_norm, ctx);
        let q = self.projection(Point::Q, l, &normed, &w.wq, t, ctx);
        let k = self.projection(Point::K, l, &normed, &w.wk, t, ctx);
        let v = self.projection(Point::V, l, &normed, &w.wv, t, ctx);
        let q = self.rope(Point::QRope, l, q, c.n_heads, ctx);
        let k = self.rope(Point::KRope, l, k, c.n_kv_heads, ctx);
        cache.write(l, &k, &v);
        let mut attn_ctx = vec![0f32; q.len()];
        let shape = AttentionShape {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            pos0: ctx.pos0,
        };
        // A numerics probe (`--inject ...:attn_ctx:f16p`): the probabilities as the GPU's
        // prefill flash attention rounds them.
        let probs = match ctx.obs.wants_input(Point::AttnCtx, Some(l)) {
            true => cpu::Probs::F16,
            false => cpu::Probs::F32,
        };
        cpu::attention_probs(&q, &cache.k[l], &cache.v[l], &mut attn_ctx, shape, probs);
        ctx.emit(
            Point::AttnCtx,
            Some(l),
            &mut attn_ctx,
            c.n_heads * c.head_dim,
        );
        self.projection(Point::AttnOut, l, &attn_ctx, &w.wo, t, ctx)
    }

    fn residual(
        &self,
        point: Point,
        l: usize,
        mut x: Vec<f32>,
        block_out: &[f32],
        ctx: &mut Ctx,
    ) -> Vec<f32> {
        cpu::add_in_place(&mut x, block_out);
        ctx.emit(point, Some(l), &mut x, self.config.hidden);
        x
    }

    fn ffn_block(
        &self,
        l: usize,
        w: &LayerWeights,
        x: &[f32],
        t: usize,
        ctx: &mut Ctx,
    ) -> Vec<f32> {
        let normed = self.rms_norm(Point::FfnNorm, Some(l), x, &w.ffn_norm, ctx);
        let gate = self.projection(Point::FfnGate, l, &normed, &w.w_gate, t, ctx);
        let up = self.projection(Point::FfnUp, l, &normed, &w.w_up, t, ctx);
        let mut act = vec![0f32; gate.len()];
        cpu::silu_mul(&gate, &up, &mut act);
        ctx.emit(Point::FfnAct, Some(l), &mut act, self.config.intermediate);
        self.projection(Point::FfnOut, l, &act, &w.w_down, t, ctx)
    }

    fn final_norm(&self, x: &[f32], ctx: &mut Ctx) -> Vec<f32> {
        self.rms_norm(Point::FinalNorm, None, x, &self.weights.output_norm, ctx)
    }

    fn logits(&self, x: &[f32], ctx: &mut Ctx) -> Vec<f32> {
        let head = self.weights.lm_head();
        let t = x.len() / self.config.hidden;
        let mut y = linear(x, head, t);
        ctx.emit(Point::Logits, None, &mut y, head.rows);
        y
    }
}
