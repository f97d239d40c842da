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
use greta_trace::inject::LoForm;
use greta_trace::{Pass, Point, StageAt, StageObserver};

use super::config::{LlamaConfig, RopeStyle};
use super::kv_cache::{KvCache, KvCacheFull, KvFormat};
use super::weights::{LayerWeights, LlamaWeights, Matrix, Storage};

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

/// x · wᵀ as the GPU's `--split-lo fp8` product computes it: x's f16 hi times w, its low half
/// (x − hi, already on the e5m2 grid where a probe put it there) times w's FP8 e4m3 copy
/// (`e4m3_copy`, made anew at each call: a probe's cost, not the forward's). A numerics probe
/// (`--inject ...:f16lo8w8in`); the GPU splits prefill products only, so give it `prefill@`.
/// `LoForm::Sparse24` (`f16lo8sw8in`): the low half as `sparse_2_of_4` leaves it first.
fn linear_lo_on_fp8_weights(x: &[f32], w: &Matrix, t: usize, form: LoForm) -> Vec<f32> {
    let hi: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    let mut lo: Vec<f32> = x.iter().zip(&hi).map(|(v, h)| v - h).collect();
    if form == LoForm::Sparse24 {
        lo.chunks_mut(w.cols).for_each(sparse_2_of_4);
    }
    let mut y = linear(&hi, w, t);
    let y_lo = linear(&lo, &e4m3_copy(w), t);
    y.iter_mut().zip(&y_lo).for_each(|(a, b)| *a += b);
    y
}

/// Keeps the 2 largest magnitudes of each 4 consecutive values of `row` (ties: the lower
/// index, as the sparse low halves' emulation on the GPU) and zeroes the other 2: the 2:4
/// structure Hopper's sparse products read (docs/sparse-lo.md). A last group of fewer than 4
/// keeps its 2 largest too.
fn sparse_2_of_4(row: &mut [f32]) {
    for g in row.chunks_mut(4) {
        let above = |a: usize| {
            (0..g.len())
                .filter(|&b| g[b].abs() > g[a].abs() || (g[b].abs() == g[a].abs() && b < a))
                .count()
        };
        let drop: Vec<usize> = (0..g.len()).filter(|&a| above(a) >= 2).collect();
        drop.into_iter().for_each(|a| g[a] = 0.0);
    }
}

/// w's FP8 copy as the GPU makes it (`quantize_e4m3`): the f16 weights divided by the one
/// power of two `e4m3_weight_scale` gives, rounded to e4m3 (ties to even), times it again:
/// as f32 values.
fn e4m3_copy(w: &Matrix) -> Matrix {
    let mut v = vec![0f32; w.rows * w.cols];
    for (r, row) in v.chunks_mut(w.cols).enumerate() {
        w.row_f32(r, row);
    }
    v.iter_mut()
        .for_each(|x| *x = half::f16::from_f32(*x).to_f32());
    let s = greta_kernels::gpu::e4m3_weight_scale(v.iter().fold(0f32, |m, x| m.max(x.abs())));
    v.iter_mut()
        .for_each(|x| *x = float8::F8E4M3::from_f32(*x / s).to_f32() * s);
    Matrix {
        rows: w.rows,
        cols: w.cols,
        storage: Storage::F32(v),
    }
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

    /// An f32 cache (the reference's) for `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        self.new_cache_as(capacity, KvFormat::F32)
    }

    /// A cache for `capacity` positions storing K and V as `format`.
    pub fn new_cache_as(&self, capacity: usize, format: KvFormat) -> KvCache {
        KvCache::new(
            self.config.n_layers,
            self.config.n_kv_heads * self.config.head_dim,
            capacity,
            format,
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
        let mut y = if ctx.obs.wants_input(point, Some(layer)) {
            let mut copy = x.to_vec();
            let at = StageAt {
                point,
                layer: Some(layer),
                pos0: ctx.pos0,
            };
            ctx.obs.observe_input(at, &mut copy);
            match ctx.obs.lo_on_fp8_weights(point, Some(layer)) {
                Some(form) => linear_lo_on_fp8_weights(&copy, w, t, form),
                None => linear(&copy, w, t),
            }
        } else {
            linear(x, w, t)
        };
        ctx.emit(point, Some(layer), &mut y, w.rows);
        y
    }

    /// Products that read the same stage (Q, K and V; gate and up). A decode row with no
    /// probe on their inputs takes them in one parallel loop (`cpu::gemv_many`: each value
    /// is the lone product's, bit for bit, and a step makes fewer parallel calls); each is
    /// then reported in order, as one at a time would be (none reads another's output).
    fn projections<const N: usize>(
        &self,
        points: [Point; N],
        layer: usize,
        x: &[f32],
        ws: [&Matrix; N],
        t: usize,
        ctx: &mut Ctx,
    ) -> [Vec<f32>; N] {
        let probed = points.iter().any(|&p| ctx.obs.wants_input(p, Some(layer)));
        if t != 1 || probed {
            return std::array::from_fn(|i| self.projection(points[i], layer, x, ws[i], t, ctx));
        }
        let mut ys: [Vec<f32>; N] = std::array::from_fn(|i| vec![0f32; ws[i].rows]);
        let mut products: Vec<_> = ws
            .iter()
            .zip(ys.iter_mut())
            .map(|(w, y)| (w.view(), y.as_mut_slice()))
            .collect();
        cpu::gemv_many(x, &mut products);
        for (i, y) in ys.iter_mut().enumerate() {
            ctx.emit(points[i], Some(layer), y, ws[i].rows);
        }
        ys
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
        let [q, k, v] = self.projections(
            [Point::Q, Point::K, Point::V],
            l,
            &normed,
            [&w.wq, &w.wk, &w.wv],
            t,
            ctx,
        );
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
        cache.attend(l, &q, &mut attn_ctx, shape, probs);
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
        let [gate, up] = self.projections(
            [Point::FfnGate, Point::FfnUp],
            l,
            &normed,
            [&w.w_gate, &w.w_up],
            t,
            ctx,
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: u32) -> Matrix {
        // Spread over several binades, signs mixed: (i * 37 + seed) mod 101 scaled.
        let v = (0..rows * cols)
            .map(|i| ((i as u32 * 37 + seed) % 101) as f32 / 50.0 - 1.0)
            .map(|x| x * x * x * 0.3)
            .collect();
        Matrix {
            rows,
            cols,
            storage: Storage::F32(v),
        }
    }

    fn values(m: &Matrix) -> &[f32] {
        match &m.storage {
            Storage::F32(v) => v,
            Storage::Blocks { .. } => unreachable!(),
        }
    }

    /// The FP8 copy keeps e4m3's 3 bits (half an ulp, 2^-4 relative, for every value in
    /// e4m3's normal range under the matrix's scale), its largest value lands in [128, 256)
    /// under a power-of-two scale, and it is not the identity.
    #[test]
    fn the_fp8_copy_rounds_each_weight_to_e4m3_under_one_power_of_two() {
        let w = matrix(24, 40, 3);
        let c = e4m3_copy(&w);
        let (a, b) = (values(&w), values(&c));
        let m = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let s = b
            .iter()
            .zip(a)
            .find(|(_, x)| x.abs() == m)
            .map(|(y, _)| y.abs() / m);
        assert!(s.is_some_and(|r| (r - 1.0).abs() <= 1.0 / 16.0), "{s:?}");
        let scale = 2f32.powi((m.log2().floor() as i32) - 7);
        assert!((128.0..256.0).contains(&(m / scale)), "{}", m / scale);
        let mut changed = 0;
        for (&x, &y) in a.iter().zip(b) {
            let x16 = half::f16::from_f32(x).to_f32();
            if x16.abs() / scale >= 2f32.powi(-6) {
                assert!((y - x16).abs() <= x16.abs() / 16.0, "{x} -> {y}");
            }
            changed += (y != x16) as usize;
        }
        assert!(changed > a.len() / 2, "{changed} of {} changed", a.len());
    }

    /// The 2:4 selection keeps each group's 2 largest magnitudes, the lower index on a tie,
    /// and a short last group its 2 largest.
    #[test]
    fn sparse_2_of_4_keeps_the_two_largest_of_each_four() {
        let mut row = [1.0, -3.0, 2.0, 0.5, 4.0, 4.0, -4.0, 1.0, 0.25, -0.5, 0.125];
        sparse_2_of_4(&mut row);
        assert_eq!(
            row,
            [0.0, -3.0, 2.0, 0.0, 4.0, 4.0, 0.0, 0.0, 0.25, -0.5, 0.0]
        );
    }

    /// The sparse low product is the dense one where the low half is already 2:4 sparse, and
    /// otherwise lies between it and hi alone: most of what the low half corrects is kept.
    #[test]
    fn the_sparse_lo_product_keeps_most_of_the_dense_ones_correction() {
        let (t, k, n) = (6, 64, 24);
        let w = matrix(n, k, 11);
        let x: Vec<f32> = (0..t * k)
            .map(|i| ((i * 37) % 101) as f32 / 13.7 - 3.3)
            .collect();
        let hi: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        // Two of every four values exact in f16 (lo = 0): the selection drops nothing.
        let x24: Vec<f32> = x
            .iter()
            .zip(&hi)
            .enumerate()
            .map(|(i, (&v, &h))| if i % 4 < 2 { h } else { v })
            .collect();
        assert_eq!(
            linear_lo_on_fp8_weights(&x24, &w, t, LoForm::Sparse24),
            linear_lo_on_fp8_weights(&x24, &w, t, LoForm::Dense)
        );
        let exact = linear(&x, &w, t);
        let err = |y: &[f32]| -> f32 { y.iter().zip(&exact).map(|(a, b)| (a - b).abs()).sum() };
        let (dense, sparse, hi_alone) = (
            err(&linear_lo_on_fp8_weights(&x, &w, t, LoForm::Dense)),
            err(&linear_lo_on_fp8_weights(&x, &w, t, LoForm::Sparse24)),
            err(&linear(&hi, &w, t)),
        );
        assert!(
            dense < sparse && sparse < hi_alone / 2.0,
            "dense {dense:e}, sparse {sparse:e}, hi alone {hi_alone:e}"
        );
    }

    /// With the low half on the FP8 copy the product is the f16-weight product up to what the
    /// copy loses of lo · w: zero lo gives the plain product bit for bit, and otherwise the
    /// result is far closer to x · w than hi alone is.
    #[test]
    fn the_lo_product_on_fp8_weights_keeps_most_of_what_hi_alone_loses() {
        let (t, k, n) = (5, 40, 24);
        let w = matrix(n, k, 7);
        let x16: Vec<f32> = (0..t * k)
            .map(|i| half::f16::from_f32(((i * 13) % 29) as f32 / 7.0 - 2.0).to_f32())
            .collect();
        assert_eq!(
            linear_lo_on_fp8_weights(&x16, &w, t, LoForm::Dense),
            linear(&x16, &w, t)
        );
        let x: Vec<f32> = (0..t * k)
            .map(|i| ((i * 13) % 29) as f32 / 7.3 - 2.01)
            .collect();
        let hi: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        let exact = linear(&x, &w, t);
        let err = |y: &[f32]| -> f32 { y.iter().zip(&exact).map(|(a, b)| (a - b).abs()).sum() };
        let (e8, e_hi) = (
            err(&linear_lo_on_fp8_weights(&x, &w, t, LoForm::Dense)),
            err(&linear(&hi, &w, t)),
        );
        assert!(
            e8 > 0.0 && e8 < e_hi / 8.0,
            "{e8:e} against hi alone {e_hi:e}"
        );
    }
}
