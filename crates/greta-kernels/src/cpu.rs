//! CPU reference ops. Row-major throughout; a weight matrix `w` of shape `[n, k]` holds one
//! output feature per row, as PyTorch's `nn.Linear.weight` and GGUF's `ne = [k, n]` do.
//!
//! `matmul`: the products (`matmul_wt` and its routes, `gemv_many`) over f32 or GGML block
//! weights; `blocks`: the block weights' dot products without widening them (portable, and
//! AVX2 / AVX-512 on x86); `attention`; the element-wise ops are here.

mod attention;
mod blocks;
mod matmul;
pub use attention::{attention, attention_probs, AttentionShape, KvElem, Probs};
use blocks::hsum8;
pub use matmul::{gemv_many, matmul_wt, matmul_wt_route, MatmulRoute, WeightView};

/// How a head's dimensions are paired for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopePairing {
    /// `(x[2i], x[2i+1])`: llama.cpp's NORM mode, for GGUF-converted weights.
    Adjacent,
    /// `(x[i], x[i + d/2])`: Hugging Face's rotate_half.
    HalfSplit,
}

/// Dot product with eight independent accumulators, so that the loop vectorises and the
/// summation order is fixed (results do not depend on thread count).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_widened(a, b)
}

/// [`dot`] of an f32 row with a row of f32 or f16 values (the KV cache's), in its order:
/// eight running sums, added as [`hsum8`] does, then the remainder.
#[inline(always)]
fn dot_widened<E: KvElem>(a: &[f32], b: &[E]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i].widen();
        }
    }
    let mut s = hsum8(acc);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y.widen();
    }
    s
}

/// RMSNorm of each row of `x` (length `d`), scaled by `w`: `x / sqrt(mean(x²) + eps) * w`.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    assert_eq!(x.len(), out.len());
    assert_eq!(x.len() % d, 0, "rmsnorm: rows are not of length {d}");
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss: f32 = dot(xr, xr);
        let scale = 1.0 / (ss / d as f32 + eps).sqrt();
        for ((o, &xv), &wv) in or.iter_mut().zip(xr).zip(w) {
            *o = xv * scale * wv;
        }
    }
}

/// Rotates each head of each row in place. `x` is `[t, n_heads * head_dim]`, row `r` at
/// position `pos0 + r`; `inv_freq` has `head_dim / 2` entries.
pub fn rope(
    x: &mut [f32],
    pos0: usize,
    n_heads: usize,
    head_dim: usize,
    inv_freq: &[f32],
    pairing: RopePairing,
) {
    let row = n_heads * head_dim;
    let half = head_dim / 2;
    assert_eq!(inv_freq.len(), half);
    assert_eq!(x.len() % row, 0);
    for (r, xr) in x.chunks_exact_mut(row).enumerate() {
        let pos = (pos0 + r) as f32;
        for head in xr.chunks_exact_mut(head_dim) {
            for (i, &f) in inv_freq.iter().enumerate() {
                // Angles in f32, as transformers computes them, so the two agree to rounding.
                let (sin, cos) = (pos * f).sin_cos();
                let (a, b) = match pairing {
                    RopePairing::Adjacent => (2 * i, 2 * i + 1),
                    RopePairing::HalfSplit => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }
}

/// `out = silu(gate) * up`, elementwise.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == up.len() && up.len() == out.len());
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `x += y`, elementwise (the residual connection).
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::GgmlType;

    pub(super) fn naive_matmul_wt(x: &[f32], w: &[f32], t: usize, k: usize, n: usize) -> Vec<f64> {
        let mut y = vec![0f64; t * n];
        for i in 0..t {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|l| x[i * k + l] as f64 * w[j * k + l] as f64)
                    .sum();
            }
        }
        y
    }

    pub(super) fn nmse(a: &[f32], b: &[f64]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum::<f64>().max(1e-30);
        num / den
    }

    pub(super) fn values(n: usize, seed: u64) -> Vec<f32> {
        // splitmix64: deterministic test data without a rand dependency.
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_add(0x9e3779b97f4a7c15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
                ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Random blocks of `ty` with finite scales (random bytes, f16 scale fields rewritten).
    pub(super) fn random_blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
        let bytes: Vec<u8> = values(n_blocks * ty.block_bytes(), seed)
            .iter()
            .map(|v| ((v + 1.0) * 127.9) as u8)
            .collect();
        let scales = values(n_blocks * 2, seed ^ 5);
        let mut out = bytes;
        let f16_fields: &[usize] = match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
            GgmlType::Q6K => &[208],
            _ => &[],
        };
        for (b, blk) in out.chunks_exact_mut(ty.block_bytes()).enumerate() {
            for (i, &off) in f16_fields.iter().enumerate() {
                let v = half::f16::from_f32(scales[(b * 2 + i) % scales.len()] * 0.05);
                blk[off..off + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn rope_pairings_are_permutations_of_each_other() {
        // GGUF conversion permutes Q/K rows so that adjacent-pair RoPE on the permuted
        // vector equals half-split RoPE on the original: check that identity here.
        let (hd, heads) = (8, 2);
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 10000f32.powf(-(2.0 * i as f32) / hd as f32))
            .collect();
        let x = values(hd * heads, 7);
        let perm = |v: &[f32]| -> Vec<f32> {
            // llama.cpp's permute: within a head, row 2i <- i, row 2i+1 <- i + d/2
            let mut out = vec![0f32; v.len()];
            for h in 0..heads {
                for i in 0..hd / 2 {
                    out[h * hd + 2 * i] = v[h * hd + i];
                    out[h * hd + 2 * i + 1] = v[h * hd + i + hd / 2];
                }
            }
            out
        };
        let mut a = x.clone();
        rope(&mut a, 5, heads, hd, &inv, RopePairing::HalfSplit);
        let mut b = perm(&x);
        rope(&mut b, 5, heads, hd, &inv, RopePairing::Adjacent);
        assert_eq!(perm(&a), b);
        assert_ne!(a, x, "rotation at position 5 must change the vector");
    }

    #[test]
    fn rmsnorm_and_silu_match_definitions() {
        let x = values(12, 4);
        let w = values(6, 5);
        let mut out = vec![0f32; 12];
        rmsnorm(&x, &w, 1e-5, &mut out);
        for r in 0..2 {
            let ms: f64 = x[r * 6..r * 6 + 6]
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                / 6.0;
            for i in 0..6 {
                let e = x[r * 6 + i] as f64 / (ms + 1e-5).sqrt() * w[i] as f64;
                assert!((out[r * 6 + i] as f64 - e).abs() < 1e-6);
            }
        }
        let mut o = vec![0f32; 12];
        silu_mul(&x, &w.repeat(2), &mut o);
        for i in 0..12 {
            let g = x[i] as f64;
            assert!((o[i] as f64 - g / (1.0 + (-g).exp()) * w[i % 6] as f64).abs() < 1e-6);
        }
    }
}
