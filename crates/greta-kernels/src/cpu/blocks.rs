//! Dot products of GGML block weights with f32 rows, without widening the weights first:
//! the scale factored out of each block's sum, portable loops and x86 vector kernels.

use rayon::prelude::*;

use super::matmul::{SendPtr, GEMV_ROWS_PER_TASK};
use super::*;
use crate::quant::{dequantize_block, GgmlType};

/// The most rows of x the multi-row block kernels take at once (`gemv_rows`): four
/// accumulators and a block's four vectors of values leave registers for the loads among
/// AVX2's sixteen. Eight measured level on SmolLM2's gate/up and 1.35x slower on its down
/// product (session 57, `prefill_route`).
pub(super) const ROWS_AT_ONCE: usize = 4;

/// The lane of a block's widened header (`x86::header`) that scales its offset term, where
/// [`block_sums`] puts a lone row's term: Q4_0's d (the term is −8d·Σx), Q4_1's m.
pub(super) const Q4_0_OFFSET_LANE: usize = 0;
pub(super) const Q4_1_OFFSET_LANE: usize = 1;

/// The block sums of a group of 1 to [`ROWS_AT_ONCE`] rows of x (`rows`, k values each;
/// blocks of `ty`) as the SIMD kernels take them: a 4-lane operand a block, which the
/// block's header widened (`[d, m, ..]` for Q4_1, `[d, ..]` for the others) multiplies into
/// its offset terms, m·Σx for Q4_1 and −8d·Σx for Q4_0 (−8 is a power of two, so
/// d·(−8Σx) rounds as (−8d)·Σx does). One row: the term in the header's own lane (lane 1
/// for Q4_1's m, lane 0 for Q4_0's d), so the header multiplies it as it is. Several: row
/// j's term in lane j, under the scale broadcast, one product for every row where each
/// took its own (session 60). Q8_0 has no offset term. Made once a product; they serve
/// every weight row.
pub(super) fn block_sums(rows: &[f32], k: usize, ty: GgmlType) -> Vec<[f32; 4]> {
    let r = rows.len() / k;
    assert!(
        (1..=ROWS_AT_ONCE).contains(&r) && rows.len() == r * k,
        "1 to {ROWS_AT_ONCE} whole rows of x"
    );
    let bs = ty.block_size();
    let (c, lane) = match ty {
        GgmlType::Q4_0 => (-8.0, Q4_0_OFFSET_LANE),
        GgmlType::Q4_1 => (1.0, Q4_1_OFFSET_LANE),
        // No offset term (Q8_0), or no SIMD kernel to read one: the sums would go unused.
        _ => return vec![[0.0; 4]; k / bs],
    };
    (0..k / bs)
        .map(|i| {
            let sum = |j: usize| c * rows[j * k + i * bs..][..bs].iter().sum::<f32>();
            let mut op = [0f32; 4];
            if r == 1 {
                op[lane] = sum(0);
            } else {
                for (j, lane) in op.iter_mut().enumerate().take(r) {
                    *lane = sum(j);
                }
            }
            op
        })
        .collect()
}

/// Whether [`gemv_rows`] takes blocks of `ty` on this CPU.
pub(super) fn gemv_rows_available(ty: GgmlType) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::Isa::best().is_some() && x86::handles(ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        false
    }
}

/// `y[t, n] = x[t, k] · w[n, k]ᵀ` over the blocks as stored, 4 rows of x at a time,
/// split over rayon tasks by rows of `w`: a block is unpacked once for several rows of x
/// instead of once a row, and nothing is widened to f32. Every value is the one [`gemv`]
/// computes for its row of x, bit for bit. Callers check [`gemv_rows_available`].
#[cfg(target_arch = "x86_64")]
pub(super) fn gemv_rows(
    x: &[f32],
    ty: GgmlType,
    bytes: &[u8],
    y: &mut [f32],
    t: usize,
    k: usize,
    n: usize,
) {
    let rb = ty.row_bytes(k as u64) as usize;
    // The rows of x in groups of ROWS_AT_ONCE and one of the rest, each group's block sums
    // made once (k is whole blocks: rows do not share one).
    let groups: Vec<(usize, usize, Vec<[f32; 4]>)> = (0..t)
        .step_by(ROWS_AT_ONCE)
        .map(|i| {
            let r = (t - i).min(ROWS_AT_ONCE);
            (i, r, block_sums(&x[i * k..(i + r) * k], k, ty))
        })
        .collect();
    let isa = x86::Isa::best().expect("callers check gemv_rows_available");
    let y_ptr = SendPtr(y.as_mut_ptr());
    bytes
        .par_chunks(GEMV_ROWS_PER_TASK * rb)
        .enumerate()
        .for_each(|(c, ws)| {
            let y_ptr = &y_ptr;
            let n0 = c * GEMV_ROWS_PER_TASK;
            let xr = |i: usize| &x[i * k..(i + 1) * k];
            // SAFETY: the CPU runs `isa` (`gemv_rows_available`, `best`); this task
            // writes columns n0..n0 + ws.len() / rb of rows i.. of y (row stride n), which
            // no other task writes, all within y (t * n values, asserted by the caller).
            let yr = |i: usize| unsafe { y_ptr.0.add(i * n + n0) };
            for (i, r, sums) in &groups {
                // Rows i..i + R of x through the kernel for R rows.
                macro_rules! rows {
                    ($r:literal) => {{
                        let at: [usize; $r] = std::array::from_fn(|j| i + j);
                        unsafe {
                            x86::dot_rows_x::<$r>(isa, ty, ws, rb, at.map(xr), sums, at.map(yr))
                        }
                    }};
                }
                match r {
                    4 => rows!(4),
                    3 => rows!(3),
                    2 => rows!(2),
                    _ => rows!(1),
                }
            }
        });
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn gemv_rows(
    _: &[f32],
    ty: GgmlType,
    _: &[u8],
    _: &mut [f32],
    _: usize,
    _: usize,
    _: usize,
) {
    unreachable!("no multi-row kernel for {ty:?} on this CPU; `gemv_rows_available` first")
}

/// Uses the widest SIMD block kernels the CPU has (AVX-512, else AVX2; checked at run
/// time, so one binary runs everywhere), the portable loops otherwise.
pub(super) fn block_rows_dispatch(
    ty: GgmlType,
    w: &[u8],
    rb: usize,
    x: &[f32],
    xsum: &[[f32; 4]],
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(isa), true) = (x86::Isa::best(), x86::handles(ty)) {
        // SAFETY: the CPU runs `isa` (`best` checked it).
        unsafe { x86::dot_rows(isa, ty, w, rb, x, xsum, y) };
        return;
    }
    let _ = xsum;
    block_rows(ty, w, rb, x, y);
}

/// Hand-written row dot products for the common 32-value block types, at AVX2's width and at
/// AVX-512's: the auto-vectorised portable loops stay at 128-bit width with shuffles and
/// spills. One loop structure, generic over the vector width ([`x86::Lanes`]).
#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use crate::quant::GgmlType;

    /// The vector width of the block kernels.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Isa {
        /// 8 lanes (AVX2, FMA, F16C).
        Avx2,
        /// 16 lanes (AVX-512F as well): a block is two vectors instead of four, so half the
        /// conversions and multiplies; the lanes differ from AVX2's, and so do the sums'
        /// last bits.
        Avx512,
    }

    impl Isa {
        /// The widest this CPU runs (the features are detected once and cached by std).
        pub fn best() -> Option<Isa> {
            let base = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c");
            match (base, std::arch::is_x86_feature_detected!("avx512f")) {
                (true, true) => Some(Isa::Avx512),
                (true, false) => Some(Isa::Avx2),
                (false, _) => None,
            }
        }

        /// Every width this CPU runs, narrowest first.
        #[cfg(test)]
        pub fn available() -> Vec<Isa> {
            match Isa::best() {
                Some(Isa::Avx512) => vec![Isa::Avx2, Isa::Avx512],
                Some(Isa::Avx2) => vec![Isa::Avx2],
                None => vec![],
            }
        }
    }

    pub fn handles(ty: GgmlType) -> bool {
        matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
    }

    /// A block's first 4 bytes widened as two f16 values: `[d, m, 0, 0]` for Q4_1, `[d, _, 0,
    /// 0]` for Q4_0 and Q8_0 (lane 1 is two payload bytes there, and is never read). One
    /// load and one conversion give both of Q4_1's scales; converting each alone took three
    /// instructions on the vector ports, which bound the loop (session 60).
    #[inline(always)]
    unsafe fn header(b: *const u8) -> __m128 {
        _mm_cvtph_ps(_mm_cvtsi32_si128((b as *const i32).read_unaligned()))
    }

    /// A vector width's operations on 32-value blocks.
    pub trait Lanes {
        type V: Copy;
        /// A block's 32 values as vectors, in ggml's order.
        type Block: Copy;
        unsafe fn zero() -> Self::V;
        /// Lane 0 of `h` in every lane.
        unsafe fn splat_first(h: __m128) -> Self::V;
        unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        unsafe fn hsum(v: Self::V) -> f32;
        /// The 32 nibbles of a Q4 payload (low nibbles are values 0..16, high 16..32).
        unsafe fn nibbles(qs: *const u8) -> Self::Block;
        /// The 32 signed bytes of a Q8_0 payload.
        unsafe fn signed_bytes(q: *const u8) -> Self::Block;
        /// Σ q·x over the block, in lanes.
        unsafe fn dot(q: Self::Block, x: *const f32) -> Self::V;
    }

    pub struct Avx2;

    impl Lanes for Avx2 {
        type V = __m256;
        type Block = [__m256; 4];

        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }

        #[inline(always)]
        unsafe fn splat_first(h: __m128) -> __m256 {
            _mm256_broadcastss_ps(h)
        }

        #[inline(always)]
        unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }

        #[inline(always)]
        unsafe fn hsum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
        }

        /// The low nibbles (values 0..16) and the high ones (values 16..32) masked out a
        /// byte each, then widened and converted 8 at a time.
        #[inline(always)]
        unsafe fn nibbles(qs: *const u8) -> [__m256; 4] {
            let raw = _mm_loadu_si128(qs as *const __m128i);
            let mask = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(raw, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
            let cvt = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
            [
                cvt(lo),
                cvt(_mm_srli_si128(lo, 8)),
                cvt(hi),
                cvt(_mm_srli_si128(hi, 8)),
            ]
        }

        #[inline(always)]
        unsafe fn signed_bytes(q: *const u8) -> [__m256; 4] {
            let cvt = |o: usize| {
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                    q.add(o) as *const __m128i
                )))
            };
            [cvt(0), cvt(8), cvt(16), cvt(24)]
        }

        #[inline(always)]
        unsafe fn dot(q: [__m256; 4], x: *const f32) -> __m256 {
            let mut s = _mm256_mul_ps(q[0], _mm256_loadu_ps(x));
            s = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(x.add(8)), s);
            s = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(x.add(16)), s);
            _mm256_fmadd_ps(q[3], _mm256_loadu_ps(x.add(24)), s)
        }
    }

    pub struct Avx512;

    impl Lanes for Avx512 {
        type V = __m512;
        type Block = [__m512; 2];

        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }

        #[inline(always)]
        unsafe fn splat_first(h: __m128) -> __m512 {
            _mm512_broadcastss_ps(h)
        }

        #[inline(always)]
        unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }

        #[inline(always)]
        unsafe fn hsum(v: __m512) -> f32 {
            // Halves added in a fixed order (the reduction intrinsic leaves its order to the
            // compiler).
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
            let h = _mm256_add_ps(_mm512_castps512_ps256(v), high);
            Avx2::hsum(h)
        }

        /// Each byte widened to a lane, its nibbles looked up as floats in a table of 0..16:
        /// a permute reads only an index's low 4 bits, so the low nibble needs no mask and
        /// the high one a shift. Four instructions on the vector ports where masks, shifts,
        /// widenings and conversions took seven; the same floats.
        #[inline(always)]
        unsafe fn nibbles(qs: *const u8) -> [__m512; 2] {
            let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(qs as *const __m128i));
            let table = _mm512_setr_ps(
                0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0,
                15.0,
            );
            [
                _mm512_permutexvar_ps(b, table),
                _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(b), table),
            ]
        }

        #[inline(always)]
        unsafe fn signed_bytes(q: *const u8) -> [__m512; 2] {
            let cvt = |o: usize| {
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                    q.add(o) as *const __m128i
                )))
            };
            [cvt(0), cvt(16)]
        }

        #[inline(always)]
        unsafe fn dot(q: [__m512; 2], x: *const f32) -> __m512 {
            let s = _mm512_mul_ps(q[0], _mm512_loadu_ps(x));
            _mm512_fmadd_ps(q[1], _mm512_loadu_ps(x.add(16)), s)
        }
    }

    /// `y[r] = Σ_j w[r, j]·x[j]` for the rows of `w` (each `rb` bytes of blocks of `ty`);
    /// `xsum` holds x's block sums as `block_sums` lays them out: [`dot_rows_x`] for one row
    /// of x.
    ///
    /// # Safety
    /// The CPU must run `isa` (one of [`Isa::available`]).
    pub unsafe fn dot_rows(
        isa: Isa,
        ty: GgmlType,
        w: &[u8],
        rb: usize,
        x: &[f32],
        xsum: &[[f32; 4]],
        y: &mut [f32],
    ) {
        assert_eq!(y.len() * rb, w.len(), "one output per row of w");
        dot_rows_x::<1>(isa, ty, w, rb, [x], xsum, [y.as_mut_ptr()])
    }

    /// `y_j[r] = Σ_i w[r, i]·x_j[i]` for `R` rows `x_j` of x at once (`xsum` their block
    /// sums as `block_sums` makes them for the group; `y_j` points at row j's output for the
    /// first row of `w`): each block of `w` is unpacked once for all of them. Row j's value
    /// is the one the loop for `x_j` alone computes at the same width, bit for bit: the same
    /// operations in the same order.
    ///
    /// # Safety
    /// The CPU must run `isa`; each `y_j` must be valid for `w.len() / rb` writes.
    pub unsafe fn dot_rows_x<const R: usize>(
        isa: Isa,
        ty: GgmlType,
        w: &[u8],
        rb: usize,
        x: [&[f32]; R],
        xsum: &[[f32; 4]],
        y: [*mut f32; R],
    ) {
        match isa {
            Isa::Avx2 => dot_rows_x_avx2::<R>(ty, w, rb, x, xsum, y),
            Isa::Avx512 => dot_rows_x_avx512::<R>(ty, w, rb, x, xsum, y),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_rows_x_avx2<const R: usize>(
        ty: GgmlType,
        w: &[u8],
        rb: usize,
        x: [&[f32]; R],
        xsum: &[[f32; 4]],
        y: [*mut f32; R],
    ) {
        rows_x_typed::<Avx2, R>(ty, w, rb, x, xsum, y)
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn dot_rows_x_avx512<const R: usize>(
        ty: GgmlType,
        w: &[u8],
        rb: usize,
        x: [&[f32]; R],
        xsum: &[[f32; 4]],
        y: [*mut f32; R],
    ) {
        rows_x_typed::<Avx512, R>(ty, w, rb, x, xsum, y)
    }

    /// Rows are short (SmolLM2's: 360 bytes), too short for the hardware prefetchers to run
    /// ahead of: ask for the row AHEAD rows on while this one is summed, or each row's
    /// first loads wait on memory (2026-12-02, Intel Xeon: decode 44 -> 90 tok/s).
    const AHEAD: usize = 8;

    #[inline(always)]
    unsafe fn prefetch_row(w: &[u8], rb: usize, n: usize) {
        let (base, len) = (w.as_ptr() as usize, w.len());
        let next = (n + AHEAD) * rb;
        let mut o = next;
        while o < (next + rb).min(len) {
            _mm_prefetch::<_MM_HINT_T0>((base + o) as *const i8);
            o += 64;
        }
    }

    #[inline(always)]
    unsafe fn rows_x_typed<L: Lanes, const R: usize>(
        ty: GgmlType,
        w: &[u8],
        rb: usize,
        x: [&[f32]; R],
        xsum: &[[f32; 4]],
        y: [*mut f32; R],
    ) {
        assert_eq!(rb, xsum.len() * ty.block_bytes(), "row is not whole blocks");
        for xj in x {
            assert_eq!(xsum.len() * 32, xj.len(), "one sum per 32-value block of x");
        }
        match ty {
            GgmlType::Q4_0 => {
                rows_x::<L, R, 18, true, { super::Q4_0_OFFSET_LANE }>(w, rb, x, xsum, y, |b| {
                    L::nibbles(b.add(2))
                })
            }
            GgmlType::Q4_1 => {
                rows_x::<L, R, 20, true, { super::Q4_1_OFFSET_LANE }>(w, rb, x, xsum, y, |b| {
                    L::nibbles(b.add(4))
                })
            }
            GgmlType::Q8_0 => {
                rows_x::<L, R, 34, false, 0>(w, rb, x, xsum, y, |b| L::signed_bytes(b.add(2)))
            }
            other => unreachable!("no SIMD kernel for {other:?}; `handles` must be checked first"),
        }
    }

    /// The loop of [`dot_rows_x`] for blocks of `BB` bytes; `payload` gives a block's 32
    /// values. Where `OFFSET`, the blocks' offset terms are the [`header`]'s scale (lane
    /// `LANE`) times the block's operand (`block_sums`), each row's summed block by block in
    /// a lane of its own: the scalar sums they replaced, bit for bit.
    #[inline(always)]
    unsafe fn rows_x<
        L: Lanes,
        const R: usize,
        const BB: usize,
        const OFFSET: bool,
        const LANE: usize,
    >(
        w: &[u8],
        rb: usize,
        x: [&[f32]; R],
        xsum: &[[f32; 4]],
        y: [*mut f32; R],
        payload: impl Fn(*const u8) -> L::Block,
    ) {
        let n_blocks = rb / BB;
        for (n, row) in w.chunks_exact(rb).enumerate() {
            // The rows come from memory for the first group of x rows and from cache for
            // the others.
            prefetch_row(w, rb, n);
            let r = row.as_ptr();
            let mut acc = [L::zero(); R];
            let mut offset = _mm_setzero_ps();
            for i in 0..n_blocks {
                let b = r.add(i * BB);
                let h = header(b);
                let (d, q) = (L::splat_first(h), payload(b));
                for j in 0..R {
                    acc[j] = L::fmadd(d, L::dot(q, x[j].as_ptr().add(i * 32)), acc[j]);
                }
                if OFFSET {
                    // One row: its term lines up with the header's lane; several: the scale
                    // in every lane, row j's term in lane j (`block_sums`).
                    let scale = match (R, LANE) {
                        (1, _) => h,
                        (_, 0) => _mm_broadcastss_ps(h),
                        _ => _mm_permute_ps::<0b0101_0101>(h),
                    };
                    let op = _mm_loadu_ps(xsum.as_ptr().add(i) as *const f32);
                    offset = _mm_add_ps(offset, _mm_mul_ps(scale, op));
                }
            }
            let terms: [f32; 4] = std::mem::transmute(offset);
            for j in 0..R {
                *y[j].add(n) = L::hsum(acc[j]) + terms[if R == 1 { LANE } else { j }];
            }
        }
    }
}

#[inline(always)]
pub(super) fn block_rows(ty: GgmlType, w: &[u8], rb: usize, x: &[f32], y: &mut [f32]) {
    // One monomorphized loop per block type, so that the unpacking inlines and vectorises.
    macro_rules! rows {
        ($f:expr) => {
            for (yv, row) in y.iter_mut().zip(w.chunks_exact(rb)) {
                *yv = $f(row, x);
            }
        };
    }
    match ty {
        GgmlType::Q4_0 => rows!(dot_row_q4_0),
        GgmlType::Q4_1 => rows!(dot_row_q4_1),
        GgmlType::Q8_0 => rows!(dot_row_q8_0),
        _ if ty.block_size() == 32 => rows!(|r, x| dot_row_generic::<32>(ty, r, x)),
        _ if ty.block_size() == 256 => rows!(|r, x| dot_row_generic::<256>(ty, r, x)),
        _ => {
            let mut buf = vec![0f32; x.len()];
            for (yv, row) in y.iter_mut().zip(w.chunks_exact(rb)) {
                for (blk, out) in row
                    .chunks_exact(ty.block_bytes())
                    .zip(buf.chunks_exact_mut(ty.block_size()))
                {
                    dequantize_block(ty, blk, out);
                }
                *yv = dot(x, &buf);
            }
        }
    }
}

#[inline(always)]
pub(super) fn f16_le(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

#[inline(always)]
pub(super) fn hsum8(acc: [f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Σ q·x over one 32-value block of small integers `q`, in 8 lanes.
#[inline(always)]
pub(super) fn lanes_dot32(q: &[f32; 32], x: &[f32]) -> [f32; 8] {
    let x: &[f32; 32] = x.try_into().expect("32-value block");
    let mut s = [0f32; 8];
    for c in 0..4 {
        for l in 0..8 {
            s[l] += q[c * 8 + l] * x[c * 8 + l];
        }
    }
    s
}

/// The nibbles of a 16-byte Q4 payload, low nibbles first (ggml's order).
#[inline(always)]
pub(super) fn unpack_nibbles(qs: &[u8]) -> [f32; 32] {
    let qs: &[u8; 16] = qs.try_into().expect("16-byte payload");
    let mut q = [0f32; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0f) as f32;
        q[j + 16] = (qs[j] >> 4) as f32;
    }
    q
}

// Q4_0: x = d·(q − 8) so Σ x·v = d·(Σ q·v − 8·Σ v); Q4_1: x = d·q + m so Σ x·v = d·Σ q·v +
// m·Σ v. Factoring the scale out of the block sum changes rounding only (the engine's tests
// against transformers on the dequantized weights hold to 1e-3).
#[inline(always)]
pub(super) fn dot_row_q4_0(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, xs) in row.chunks_exact(18).zip(x.chunks_exact(32)) {
        let d = f16_le(b);
        let mut q = unpack_nibbles(&b[2..18]);
        q.iter_mut().for_each(|v| *v -= 8.0);
        let s = lanes_dot32(&q, xs);
        for l in 0..8 {
            acc[l] += d * s[l];
        }
    }
    hsum8(acc)
}

#[inline(always)]
pub(super) fn dot_row_q4_1(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, xs) in row.chunks_exact(20).zip(x.chunks_exact(32)) {
        let (d, m) = (f16_le(b), f16_le(&b[2..]));
        let s = lanes_dot32(&unpack_nibbles(&b[4..20]), xs);
        let ones = lanes_dot32(&[1.0; 32], xs);
        for l in 0..8 {
            acc[l] += d * s[l] + m * ones[l];
        }
    }
    hsum8(acc)
}

#[inline(always)]
pub(super) fn dot_row_q8_0(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, xs) in row.chunks_exact(34).zip(x.chunks_exact(32)) {
        let d = f16_le(b);
        let qs: &[u8; 32] = b[2..34].try_into().expect("32-byte payload");
        let q: [f32; 32] = std::array::from_fn(|j| qs[j] as i8 as f32);
        let s = lanes_dot32(&q, xs);
        for l in 0..8 {
            acc[l] += d * s[l];
        }
    }
    hsum8(acc)
}

/// Any block type: dequantize a block, then multiply.
#[inline(always)]
pub(super) fn dot_row_generic<const BS: usize>(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    let mut buf = [0f32; BS];
    let mut acc = [0f32; 8];
    for (blk, xs) in row.chunks_exact(ty.block_bytes()).zip(x.chunks_exact(BS)) {
        dequantize_block(ty, blk, &mut buf);
        for (c, xc) in buf.chunks_exact(8).zip(xs.chunks_exact(8)) {
            for i in 0..8 {
                acc[i] += c[i] * xc[i];
            }
        }
    }
    hsum8(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::{naive_matmul_wt, nmse, random_blocks, values};
    use crate::cpu::{matmul_wt, matmul_wt_route, MatmulRoute, WeightView};

    /// The multi-row product gives each row of x exactly what the per-row GEMV gives it, for
    /// every count of rows (groups of 4 and each remainder) and a weight that splits into
    /// tasks unevenly; and it is checked against f64 too (the same values, so through
    /// the per-row route's own test below as well).
    #[test]
    fn rows_of_x_together_give_each_row_its_own_gemv_bit_for_bit() {
        let (n, k) = (300, 96);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let bytes = random_blocks(ty, n * k / ty.block_size(), 40 + ty.id() as u64);
            let w = WeightView::Blocks { ty, bytes: &bytes };
            let mut wf = vec![0f32; n * k];
            w.rows_f32(0, k, &mut wf);
            for t in 1..=9 {
                let x = values(t * k, 90 + t as u64);
                let mut rows = vec![0f32; t * n];
                let mut single = vec![0f32; t * n];
                matmul_wt_route(&x, w, &mut rows, t, k, n, MatmulRoute::GemvRows);
                matmul_wt_route(&x, w, &mut single, t, k, n, MatmulRoute::Gemv);
                let differ = rows
                    .iter()
                    .zip(&single)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(
                    differ,
                    0,
                    "{ty:?} t={t}: {differ} of {} values differ",
                    t * n
                );
                let e = nmse(&rows, &naive_matmul_wt(&x, &wf, t, k, n));
                assert!(e < 1e-10, "{ty:?} t={t}: nmse {e}");
            }
        }
    }

    /// Each vector width this CPU runs (AVX2, and AVX-512 where it has it; the routes take
    /// the widest) multiplies the blocks as their dequantized values, and its multi-row
    /// kernel gives each row its own single-row value bit for bit, at every row count.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_vector_width_multiplies_blocks_and_keeps_rows_bitwise() {
        let (n, k) = (70, 160);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let rb = ty.row_bytes(k as u64) as usize;
            let bytes = random_blocks(ty, n * k / 32, 7 + ty.id() as u64);
            let mut wf = vec![0f32; n * k];
            WeightView::Blocks { ty, bytes: &bytes }.rows_f32(0, k, &mut wf);
            let x = values(4 * k, 3);
            let xr = |j: usize| &x[j * k..][..k];
            let sr = |j: usize| block_sums(xr(j), k, ty);
            let first3 = block_sums(&x[..3 * k], k, ty);
            for isa in x86::Isa::available() {
                let mut single = vec![0f32; 4 * n];
                for (j, y) in single.chunks_exact_mut(n).enumerate() {
                    unsafe { x86::dot_rows(isa, ty, &bytes, rb, xr(j), &sr(j), y) };
                }
                let e = nmse(&single, &naive_matmul_wt(&x, &wf, 4, k, n));
                assert!(e < 1e-10, "{ty:?} {isa:?}: nmse {e}");
                let mut rows = vec![0f32; 4 * n];
                let p = rows.as_mut_ptr();
                unsafe {
                    x86::dot_rows_x::<3>(
                        isa,
                        ty,
                        &bytes,
                        rb,
                        [xr(0), xr(1), xr(2)],
                        &first3,
                        [p, p.add(n), p.add(2 * n)],
                    );
                    x86::dot_rows_x::<1>(isa, ty, &bytes, rb, [xr(3)], &sr(3), [p.add(3 * n)]);
                }
                let differ = (0..4 * n)
                    .filter(|&i| rows[i].to_bits() != single[i].to_bits())
                    .count();
                assert_eq!(differ, 0, "{ty:?} {isa:?}: {differ} values differ");
            }
        }
    }

    #[test]
    fn block_weights_multiply_as_their_dequantized_values() {
        // Every route of the block kernels (AVX2 where the CPU has it, portable loops, the
        // prefill GEMM on widened rows) against f64 on the dequantized matrix.
        let (n, k) = (37, 512);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
        ] {
            let bytes = random_blocks(ty, n * k / ty.block_size(), ty.id() as u64);
            let w = WeightView::Blocks { ty, bytes: &bytes };
            let mut wf = vec![0f32; n * k];
            w.rows_f32(0, k, &mut wf);
            for t in [1, 2, 5] {
                let x = values(t * k, 11 + t as u64);
                let mut y = vec![0f32; t * n];
                matmul_wt(&x, w, &mut y, t, k, n);
                let r = naive_matmul_wt(&x, &wf, t, k, n);
                let e = nmse(&y, &r);
                assert!(e < 1e-10, "{ty:?} t={t}: nmse {e}");
            }
            let mut portable = vec![0f32; n];
            let x = values(k, 12);
            let xsum = block_sums(&x, k, ty);
            block_rows(
                ty,
                &bytes,
                ty.row_bytes(k as u64) as usize,
                &x,
                &mut portable,
            );
            let mut dispatched = vec![0f32; n];
            block_rows_dispatch(
                ty,
                &bytes,
                ty.row_bytes(k as u64) as usize,
                &x,
                &xsum,
                &mut dispatched,
            );
            let e = nmse(
                &dispatched,
                &portable.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            );
            assert!(e < 1e-10, "{ty:?}: dispatched vs portable nmse {e}");
        }
    }
}
