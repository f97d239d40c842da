//! Causal GQA attention on the CPU, over a KV cache of f32 or f16 values.
//!
//! Every route computes the same sums in the same order (the generic loops' order; the tests
//! hold them to it bit for bit), so the storage format and the route change the bytes read
//! and the time, never the arithmetic: an f16 cache gives exactly what an f32 cache holding
//! the same values rounded to f16 gives.

use half::f16;
use rayon::prelude::*;

use super::{dot_widened, hsum8, softmax};

/// An element of the KV cache: f32 (the reference) or f16 (half the bytes a step reads, as
/// the GPU's cache and llama.cpp's default hold them). Widening is exact.
pub trait KvElem: Copy + Send + Sync + private::Sealed + 'static {
    fn widen(self) -> f32;

    /// Eight consecutive values widened to f32.
    ///
    /// # Safety
    /// `p` must be valid for 8 reads; the caller must run with AVX2 and F16C enabled.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

mod private {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
}

impl KvElem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl KvElem for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
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
pub fn attention<E: KvElem>(
    q: &[f32],
    k_cache: &[E],
    v_cache: &[E],
    out: &mut [f32],
    s: AttentionShape,
) {
    attention_probs(q, k_cache, v_cache, out, s, Probs::F32);
}

/// How `attention_probs` takes the probabilities that multiply V.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probs {
    /// softmax in f32 (the reference).
    F32,
    /// As the GPU's prefill flash attention: each exp(score - the row's max) rounded to
    /// f16, the row's sum taken over the rounded values, the output divided by it (a
    /// numerics probe, `--inject ...:attn_ctx:f16p`; the kernel takes its max over the keys
    /// seen so far and rescales, so its roundings fall on other values of the same size).
    F16,
}

/// `attention` with the probabilities taken as `probs` says.
pub fn attention_probs<E: KvElem>(
    q: &[f32],
    k_cache: &[E],
    v_cache: &[E],
    out: &mut [f32],
    s: AttentionShape,
    probs: Probs,
) {
    attention_loops(q, k_cache, v_cache, out, s, probs, Loops::fastest());
}

/// Which loops compute a head's scores and its weighted values. All give the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loops {
    /// Any head size, element by element: what every route takes at other head sizes, and
    /// a route of its own for the tests to hold the others to.
    #[cfg(test)]
    Generic,
    /// Head sizes 64 and 128 with q and the output row in local arrays (portable Rust,
    /// which the compiler vectorises for the build's baseline: SSE2 on x86-64).
    Sized,
    /// Head sizes 64 and 128 with AVX2 (and F16C for f16 caches), four keys at a time.
    /// Multiplies and adds stay separate instructions (no FMA), as in the loops above,
    /// so the roundings are theirs.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Loops {
    fn fastest() -> Loops {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            return Loops::Avx2;
        }
        Loops::Sized
    }
}

/// `attention_probs` on the given loops.
fn attention_loops<E: KvElem>(
    q: &[f32],
    k_cache: &[E],
    v_cache: &[E],
    out: &mut [f32],
    s: AttentionShape,
    probs: Probs,
    loops: Loops,
) {
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
        // Each head's keys and values are read from its first element on, `kv_row` apart;
        // the slices' lengths bound every read of the loops below (the AVX2 ones check it).
        let k_head = &k_cache[kvh * hd..];
        let v_head = &v_cache[kvh * hd..];
        let mut scores = vec![0f32; n_keys];
        // SAFETY (the AVX2 arms here and below): `Loops::Avx2` is chosen only where
        // `avx2::available()` found AVX2 and F16C; the loops assert their slices' bounds.
        match (loops, hd) {
            #[cfg(target_arch = "x86_64")]
            (Loops::Avx2, 64) => unsafe {
                avx2::key_scores::<64, E>(qh, k_head, kv_row, scale, &mut scores)
            },
            #[cfg(target_arch = "x86_64")]
            (Loops::Avx2, 128) => unsafe {
                avx2::key_scores::<128, E>(qh, k_head, kv_row, scale, &mut scores)
            },
            (Loops::Sized, 64) => key_scores::<64, E>(qh, k_head, kv_row, scale, &mut scores),
            (Loops::Sized, 128) => key_scores::<128, E>(qh, k_head, kv_row, scale, &mut scores),
            _ => {
                for (j, sc) in scores.iter_mut().enumerate() {
                    *sc = dot_widened(qh, &k_head[j * kv_row..][..hd]) * scale;
                }
            }
        }
        // F16: the weights stay unnormalised, and the output is divided by their sum after.
        let inv_sum = match probs {
            Probs::F32 => {
                softmax(&mut scores);
                None
            }
            Probs::F16 => {
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for v in scores.iter_mut() {
                    *v = f16::from_f32((*v - max).exp()).to_f32();
                    sum += *v;
                }
                Some(1.0 / sum)
            }
        };
        match (loops, hd) {
            #[cfg(target_arch = "x86_64")]
            (Loops::Avx2, 64) => unsafe { avx2::weigh_values::<64, E>(&scores, v_head, kv_row, o) },
            #[cfg(target_arch = "x86_64")]
            (Loops::Avx2, 128) => unsafe {
                avx2::weigh_values::<128, E>(&scores, v_head, kv_row, o)
            },
            (Loops::Sized, 64) => weigh_values::<64, E>(&scores, v_head, kv_row, o),
            (Loops::Sized, 128) => weigh_values::<128, E>(&scores, v_head, kv_row, o),
            _ => {
                o.fill(0.0);
                for (j, &p) in scores.iter().enumerate() {
                    let vj = &v_head[j * kv_row..][..hd];
                    for (ov, &vv) in o.iter_mut().zip(vj) {
                        *ov += p * vv.widen();
                    }
                }
            }
        }
        if let Some(inv) = inv_sum {
            o.iter_mut().for_each(|v| *v *= inv);
        }
    });
}

/// `scores[j] = scale · (q · k_j)` for the keys `k_j = k[j * stride..][..HD]`: [`dot_widened`]'s
/// sums in its order, bit for bit, with q held in a local array across the keys.
#[inline(always)]
fn key_scores<const HD: usize, E: KvElem>(
    q: &[f32],
    k: &[E],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
) {
    const { assert!(HD.is_multiple_of(8)) };
    let q: &[f32; HD] = q.try_into().unwrap();
    for (j, sc) in scores.iter_mut().enumerate() {
        let kj: &[E; HD] = k[j * stride..j * stride + HD].try_into().unwrap();
        let mut acc = [0f32; 8];
        for c in 0..HD / 8 {
            for i in 0..8 {
                acc[i] += q[c * 8 + i] * kj[c * 8 + i].widen();
            }
        }
        *sc = hsum8(acc) * scale;
    }
}

/// `o = Σ_j p[j]·v_j` over rows `v_j = v[j * stride..][..HD]`, each element summed in j
/// order from 0 (what the generic loop computes, bit for bit), with the sums in a local
/// array the compiler keeps in registers instead of `o` in memory.
#[inline(always)]
fn weigh_values<const HD: usize, E: KvElem>(p: &[f32], v: &[E], stride: usize, o: &mut [f32]) {
    let mut acc = [0f32; HD];
    for (j, &pj) in p.iter().enumerate() {
        let vj: &[E; HD] = v[j * stride..j * stride + HD].try_into().unwrap();
        for i in 0..HD {
            acc[i] += pj * vj[i].widen();
        }
    }
    o.copy_from_slice(&acc);
}

/// The sized loops at 256 bits. A key's eight running sums are one register, so its
/// products and sums are the portable loops' lane for lane.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::KvElem;

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c")
    }

    /// [`super::hsum8`] of a register's lanes: (a0 + a4, a1 + a5, a2 + a6, a3 + a7), then
    /// (first + second) + (third + fourth).
    #[inline(always)]
    unsafe fn hsum8(v: __m256) -> f32 {
        let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let u = _mm_hadd_ps(t, t);
        _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)))
    }

    /// [`super::key_scores`], four keys at a time (their sums are independent chains, so
    /// the adds' latency overlaps).
    ///
    /// # Safety
    /// The CPU must have AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn key_scores<const HD: usize, E: KvElem>(
        q: &[f32],
        k: &[E],
        stride: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        const { assert!(HD.is_multiple_of(8)) };
        let n = scores.len();
        assert!(q.len() >= HD && (n == 0 || k.len() >= (n - 1) * stride + HD));
        let mut j = 0;
        while j + 4 <= n {
            keys::<HD, 4, E>(q, k, stride, j, scale, scores);
            j += 4;
        }
        while j < n {
            keys::<HD, 1, E>(q, k, stride, j, scale, scores);
            j += 1;
        }
    }

    /// The scores of keys j..j + U, each key's eight running sums one register.
    ///
    /// # Safety
    /// Keys j..j + U must lie within `k` (checked by the caller).
    #[inline(always)]
    unsafe fn keys<const HD: usize, const U: usize, E: KvElem>(
        q: &[f32],
        k: &[E],
        stride: usize,
        j: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let (q, k) = (q.as_ptr(), k.as_ptr());
        let mut acc = [_mm256_setzero_ps(); U];
        for c in 0..HD / 8 {
            let qc = _mm256_loadu_ps(q.add(c * 8));
            for (u, a) in acc.iter_mut().enumerate() {
                let x = _mm256_mul_ps(qc, E::load8(k.add((j + u) * stride + c * 8)));
                *a = _mm256_add_ps(*a, x);
            }
        }
        for (u, a) in acc.into_iter().enumerate() {
            *scores.get_unchecked_mut(j + u) = hsum8(a) * scale;
        }
    }

    /// [`super::weigh_values`]: the output row's sums in registers, 64 columns a pass over
    /// the keys (eight registers; a 128-wide head takes two passes, each reading its half of
    /// every value row), each column summed over j in order from 0.
    ///
    /// # Safety
    /// The CPU must have AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn weigh_values<const HD: usize, E: KvElem>(
        p: &[f32],
        v: &[E],
        stride: usize,
        o: &mut [f32],
    ) {
        const { assert!(HD.is_multiple_of(64)) };
        let n = p.len();
        assert!(o.len() == HD && (n == 0 || v.len() >= (n - 1) * stride + HD));
        let v = v.as_ptr();
        for half in 0..HD / 64 {
            let col = half * 64;
            let mut acc = [_mm256_setzero_ps(); 8];
            for (j, &pj) in p.iter().enumerate() {
                let pv = _mm256_set1_ps(pj);
                let row = v.add(j * stride + col);
                for (c, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(pv, E::load8(row.add(c * 8))));
                }
            }
            for (c, a) in acc.into_iter().enumerate() {
                _mm256_storeu_ps(o.as_mut_ptr().add(col + c * 8), a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::{nmse, values};

    /// Causal GQA attention in f64, written out: the scores, exp(score - max) (rounded to f16
    /// where `round_p`, the `Probs::F16` form), each row normalised by the sum of those.
    fn naive_attention(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: AttentionShape,
        round_p: bool,
    ) -> Vec<f64> {
        let (nh, nkv, hd) = (s.n_heads, s.n_kv_heads, s.head_dim);
        let t = q.len() / (nh * hd);
        let mut y = vec![0f64; q.len()];
        for r in 0..t {
            for h in 0..nh {
                let kvh = h / (nh / nkv);
                let n = s.pos0 + r + 1;
                let scores: Vec<f64> = (0..n)
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
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let p: Vec<f64> = scores
                    .iter()
                    .map(|x| match round_p {
                        true => half::f16::from_f64((x - m).exp()).to_f64(),
                        false => (x - m).exp(),
                    })
                    .collect();
                let z: f64 = p.iter().sum();
                for d in 0..hd {
                    y[r * nh * hd + h * hd + d] = (0..n)
                        .map(|j| p[j] / z * v[j * nkv * hd + kvh * hd + d] as f64)
                        .sum();
                }
            }
        }
        y
    }

    /// An attention case: its shape and q [t rows], k and v [pos0 + t positions], seeded.
    fn attention_case(
        [nh, nkv, hd, pos0, t]: [usize; 5],
        seed: u64,
    ) -> (AttentionShape, Vec<f32>, Vec<f32>, Vec<f32>) {
        let shape = AttentionShape {
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            pos0,
        };
        let q = values(t * nh * hd, seed);
        let k = values((pos0 + t) * nkv * hd, seed + 1);
        let v = values((pos0 + t) * nkv * hd, seed + 2);
        (shape, q, k, v)
    }

    #[test]
    fn attention_matches_naive_with_gqa() {
        let (shape, q, k, v) = attention_case([6, 2, 4, 3, 2], 1);
        let mut out = vec![0f32; q.len()];
        attention(&q, &k, &v, &mut out, shape);
        let expect = naive_attention(&q, &k, &v, shape, false);
        assert!(nmse(&out, &expect) < 1e-12, "nmse {}", nmse(&out, &expect));
    }

    /// The routes an x86-64 CPU of this build can take, with those it cannot left out.
    fn all_loops() -> Vec<Loops> {
        let mut loops = vec![Loops::Generic, Loops::Sized];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            loops.push(Loops::Avx2);
        }
        loops
    }

    fn run<E: KvElem>(
        (shape, q, k, v): &(AttentionShape, Vec<f32>, Vec<f32>, Vec<f32>),
        cast: impl Fn(f32) -> E,
        probs: Probs,
        loops: Loops,
    ) -> Vec<f32> {
        let k: Vec<E> = k.iter().map(|&x| cast(x)).collect();
        let v: Vec<E> = v.iter().map(|&x| cast(x)).collect();
        let mut out = vec![0f32; q.len()];
        attention_loops(q, &k, &v, &mut out, *shape, probs, loops);
        out
    }

    fn differing(a: &[f32], b: &[f32]) -> usize {
        a.iter()
            .zip(b)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count()
    }

    /// Every route (the sized loops, portable and AVX2, against the generic ones) computes
    /// the same bits, for f32 and f16 caches, both probability kinds, GQA, several query rows
    /// after cached positions (key counts 38 to 40: the AVX2 loop's four-key steps and its
    /// remainder); and against the naive f64 attention within 1e-12.
    #[test]
    fn every_attention_route_gives_the_generic_loops_bits() {
        for hd in [64, 128] {
            let case = attention_case([6, 2, hd, 37, 3], hd as u64);
            for probs in [Probs::F32, Probs::F16] {
                let want32 = run(&case, |x| x, probs, Loops::Generic);
                let want16 = run(&case, f16::from_f32, probs, Loops::Generic);
                for loops in all_loops() {
                    let d = differing(&run(&case, |x| x, probs, loops), &want32);
                    assert_eq!(d, 0, "hd {hd} {probs:?} {loops:?} f32: {d} values differ");
                    let d = differing(&run(&case, f16::from_f32, probs, loops), &want16);
                    assert_eq!(d, 0, "hd {hd} {probs:?} {loops:?} f16: {d} values differ");
                }
            }
            let (shape, q, k, v) = &case;
            let mut out = vec![0f32; q.len()];
            attention(q, k, v, &mut out, *shape);
            let e = nmse(&out, &naive_attention(q, k, v, *shape, false));
            assert!(e < 1e-12, "hd {hd}: nmse {e}");
        }
    }

    /// An f16 cache gives bit for bit what an f32 cache holding the same values rounded to
    /// f16 gives, on every route and head size (48: the generic loops only): the storage
    /// changes the bytes read, not the arithmetic. And the rounding is visible: the f16
    /// cache's output is not the unrounded cache's.
    #[test]
    fn an_f16_cache_computes_what_f32_holding_its_values_does() {
        for hd in [48, 64, 128] {
            let case = attention_case([4, 4, hd, 21, 2], 3 + hd as u64);
            let round = |x: f32| f16::from_f32(x).to_f32();
            for loops in all_loops() {
                let stored = run(&case, f16::from_f32, Probs::F32, loops);
                let d = differing(&stored, &run(&case, round, Probs::F32, loops));
                assert_eq!(d, 0, "hd {hd} {loops:?}: {d} values differ");
                let exact = run(&case, |x| x, Probs::F32, loops);
                let e = nmse(
                    &stored,
                    &exact.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                );
                assert!(e > 1e-12 && e < 1e-5, "hd {hd} {loops:?}: nmse {e:.3e}");
            }
        }
    }

    /// `Probs::F16` (the `f16p` probe): the output is the naive attention's with each
    /// exp(score - max) rounded to f16 and the row normalised by the rounded values' sum, and
    /// it differs from the exact softmax's by what that rounding makes.
    #[test]
    fn attention_with_f16_probabilities_rounds_them_and_nothing_else() {
        let (shape, q, k, v) = attention_case([4, 2, 16, 40, 3], 7);
        let run = |probs: Probs| {
            let mut out = vec![0f32; q.len()];
            attention_probs(&q, &k, &v, &mut out, shape, probs);
            out
        };
        let (f16p, f32p) = (run(Probs::F16), run(Probs::F32));
        let rounded = naive_attention(&q, &k, &v, shape, true);
        let exact = naive_attention(&q, &k, &v, shape, false);
        let near = nmse(&f16p, &rounded);
        let off = nmse(&f16p, &exact);
        assert!(
            near < 1e-11,
            "against the naive rounded form: nmse {near:.3e}"
        );
        assert!(
            off > 1e3 * nmse(&f32p, &exact) && off < 1e-6,
            "against the exact softmax: nmse {off:.3e} (f32 {:.3e})",
            nmse(&f32p, &exact)
        );
    }
}
