//! CPU reference ops. Row-major throughout; a weight matrix `w` of shape `[n, k]` holds one
//! output feature per row, as PyTorch's `nn.Linear.weight` and GGUF's `ne = [k, n]` do.

use rayon::prelude::*;

/// How a head's dimensions are paired for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopePairing {
    /// (x[2i], x[2i+1]): llama.cpp's NORM mode, for GGUF-converted weights.
    Adjacent,
    /// (x[i], x[i + d/2]): Hugging Face's rotate_half.
    HalfSplit,
}

/// Rows per rayon task in the matrix-vector path: enough work to hide the scheduling cost.
const GEMV_ROWS_PER_TASK: usize = 64;

/// `y[t, n] = x[t, k] · w[n, k]ᵀ`.
pub fn matmul_wt(x: &[f32], w: &[f32], y: &mut [f32], t: usize, k: usize, n: usize) {
    assert_eq!(x.len(), t * k, "matmul_wt: x is not [t, k]");
    assert_eq!(w.len(), n * k, "matmul_wt: w is not [n, k]");
    assert_eq!(y.len(), t * n, "matmul_wt: y is not [t, n]");
    if t <= 2 {
        // Decode: memory-bound; stream each weight row once per token row.
        for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
            yr.par_chunks_mut(GEMV_ROWS_PER_TASK)
                .zip(w.par_chunks(GEMV_ROWS_PER_TASK * k))
                .for_each(|(ys, ws)| {
                    for (yv, wr) in ys.iter_mut().zip(ws.chunks_exact(k)) {
                        *yv = dot(xr, wr);
                    }
                });
        }
        return;
    }
    // Prefill: a cache-blocked GEMM, split over column blocks of the output so both cores work.
    const N_BLOCK: usize = 256;
    let blocks: Vec<(usize, usize)> = (0..n)
        .step_by(N_BLOCK)
        .map(|s| (s, N_BLOCK.min(n - s)))
        .collect();
    let y_ptr = SendPtr(y.as_mut_ptr());
    blocks.par_iter().for_each(|&(n0, nb)| {
        let y_ptr = &y_ptr;
        // SAFETY: each task writes the disjoint columns n0..n0+nb of y (row stride n);
        // a, b and c are within their slices by the asserts above.
        unsafe {
            matrixmultiply::sgemm(
                t,
                k,
                nb,
                1.0,
                x.as_ptr(),
                k as isize,
                1,
                w.as_ptr().add(n0 * k),
                1,
                k as isize,
                0.0,
                y_ptr.0.add(n0),
                n as isize,
                1,
            );
        }
    });
}

struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint column ranges of one buffer to rayon tasks.
unsafe impl Sync for SendPtr {}

/// Dot product with eight independent accumulators, so that the loop vectorises and the
/// summation order is fixed (results do not depend on thread count).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
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

/// Shapes of one causal GQA attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Position of the first query row; query row `r` sees keys `0..=pos0 + r`.
    pub pos0: usize,
}

/// Causal attention with grouped KV heads. `q` is `[t, n_heads*head_dim]`; `k_cache` and
/// `v_cache` are `[>= pos0 + t, n_kv_heads*head_dim]`; `out` is `[t, n_heads*head_dim]`.
pub fn attention(q: &[f32], k_cache: &[f32], v_cache: &[f32], out: &mut [f32], s: AttentionShape) {
    let hd = s.head_dim;
    let q_row = s.n_heads * hd;
    let kv_row = s.n_kv_heads * hd;
    let group = s.n_heads / s.n_kv_heads;
    let t = q.len() / q_row;
    assert_eq!(out.len(), q.len());
    assert!(k_cache.len() >= (s.pos0 + t) * kv_row && v_cache.len() >= (s.pos0 + t) * kv_row);
    let scale = 1.0 / (hd as f32).sqrt();
    // One task per (query row, head): independent, and enough of them to fill the cores.
    out.par_chunks_mut(hd).enumerate().for_each(|(idx, o)| {
        let (r, h) = (idx / s.n_heads, idx % s.n_heads);
        let kvh = h / group;
        let qh = &q[r * q_row + h * hd..][..hd];
        let n_keys = s.pos0 + r + 1;
        let mut scores: Vec<f32> = (0..n_keys)
            .map(|j| dot(qh, &k_cache[j * kv_row + kvh * hd..][..hd]) * scale)
            .collect();
        softmax(&mut scores);
        o.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            let vj = &v_cache[j * kv_row + kvh * hd..][..hd];
            for (ov, &vv) in o.iter_mut().zip(vj) {
                *ov += p * vv;
            }
        }
    });
}

/// `x += y`, elementwise (the residual connection).
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_matmul_wt(x: &[f32], w: &[f32], t: usize, k: usize, n: usize) -> Vec<f64> {
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

    fn nmse(a: &[f32], b: &[f64]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum::<f64>().max(1e-30);
        num / den
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matmul_matches_f64(t in 1usize..40, k in 1usize..150, n in 1usize..300, seed in any::<u64>()) {
            let x = values(t * k, seed);
            let w = values(n * k, seed ^ 1);
            let mut y = vec![0f32; t * n];
            matmul_wt(&x, &w, &mut y, t, k, n);
            let r = naive_matmul_wt(&x, &w, t, k, n);
            prop_assert!(nmse(&y, &r) < 1e-10, "nmse {}", nmse(&y, &r));
        }
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
    fn attention_matches_naive_with_gqa() {
        let (nh, nkv, hd, pos0, t) = (6, 2, 4, 3, 2);
        let q = values(t * nh * hd, 1);
        let k = values((pos0 + t) * nkv * hd, 2);
        let v = values((pos0 + t) * nkv * hd, 3);
        let mut out = vec![0f32; q.len()];
        attention(
            &q,
            &k,
            &v,
            &mut out,
            AttentionShape {
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
                pos0,
            },
        );
        let mut expect = vec![0f64; q.len()];
        for r in 0..t {
            for h in 0..nh {
                let kvh = h / (nh / nkv);
                let n = pos0 + r + 1;
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..hd)
                            .map(|d| {
                                q[r * nh * hd + h * hd + d] as f64
                                    * k[j * nkv * hd + kvh * hd + d] as f64
                            })
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for d in 0..hd {
                    expect[r * nh * hd + h * hd + d] = (0..n)
                        .map(|j| (s[j] - m).exp() / z * v[j * nkv * hd + kvh * hd + d] as f64)
                        .sum();
                }
            }
        }
        assert!(nmse(&out, &expect) < 1e-12, "nmse {}", nmse(&out, &expect));
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
