//! The products y = x · wᵀ over f32 or GGML block weights: the GEMV for one row of x, the
//! multi-row GEMV for a few (`blocks`), the GEMM on widened rows for more.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::blocks::*;
use super::dot;
use crate::quant::{dequantize_block, GgmlType};

/// Rows per rayon task in the matrix-vector path: enough work to hide the scheduling cost.
pub(super) const GEMV_ROWS_PER_TASK: usize = 128;
/// Output columns per task in the prefill GEMM (also the rows dequantized at a time).
pub(super) const GEMM_N_BLOCK: usize = 256;
/// Most rows of x the multi-row GEMV takes before the GEMM on widened rows does. Session 57,
/// 2-core AMD EPYC, Q4_1 at SmolLM2's gate/up and down shapes (`prefill_route` in
/// benches/cpu_ops.rs): the GEMM's cost is mostly the widening, ~0.85 ms whatever the rows,
/// the multi-row GEMV's ~16-18 µs a row; at 128 rows they tie (2.04 against 2.38 ms, 2.26
/// against 2.24), at 256 the GEMM leads (3.6 against 4.5 ms), at 16 the GEMV (0.28 against
/// 1.03 ms).
pub(super) const GEMV_ROWS_MAX: usize = 128;

/// A weight matrix `[n, k]` as the kernels read it.
#[derive(Debug, Clone, Copy)]
pub enum WeightView<'a> {
    F32(&'a [f32]),
    /// GGML blocks, row after row (`k / block_size` blocks per row), multiplied without
    /// first being widened to an f32 copy: decode reads 4 to 8 times fewer bytes, and the
    /// values multiplied are exactly the dequantized ones.
    Blocks {
        ty: GgmlType,
        bytes: &'a [u8],
    },
}

impl WeightView<'_> {
    fn check(&self, n: usize, k: usize) {
        match *self {
            WeightView::F32(w) => assert_eq!(w.len(), n * k, "matmul_wt: w is not [n, k]"),
            WeightView::Blocks { ty, bytes } => {
                assert_eq!(
                    k % ty.block_size(),
                    0,
                    "matmul_wt: k is not whole {ty:?} blocks"
                );
                assert_eq!(
                    bytes.len() as u64,
                    n as u64 * ty.row_bytes(k as u64),
                    "matmul_wt: w is not [n, k]"
                );
            }
        }
    }

    /// Dequantizes rows `r0..r0 + out.len() / k` into `out`.
    pub fn rows_f32(&self, r0: usize, k: usize, out: &mut [f32]) {
        match *self {
            WeightView::F32(w) => out.copy_from_slice(&w[r0 * k..r0 * k + out.len()]),
            // f16 is one value a block: widened a chunk at a time through half's slice
            // conversion (F16C where the CPU has it) instead of a block call a value.
            WeightView::Blocks {
                ty: GgmlType::F16,
                bytes,
            } => {
                let src = &bytes[r0 * k * 2..(r0 * k + out.len()) * 2];
                let mut h = [f16::ZERO; 256];
                for (x, y) in src.chunks(2 * h.len()).zip(out.chunks_mut(h.len())) {
                    for (b, v) in x.chunks_exact(2).zip(&mut h) {
                        *v = f16::from_le_bytes([b[0], b[1]]);
                    }
                    h[..y.len()].convert_to_f32_slice(y);
                }
            }
            WeightView::Blocks { ty, bytes } => {
                let rb = ty.row_bytes(k as u64) as usize;
                let rows = out.len() / k;
                let src = &bytes[r0 * rb..(r0 + rows) * rb];
                for (blk, y) in src
                    .chunks_exact(ty.block_bytes())
                    .zip(out.chunks_exact_mut(ty.block_size()))
                {
                    dequantize_block(ty, blk, y);
                }
            }
        }
    }
}

/// The kernel routes of a matrix product, for `greta audit route`, which runs each on the
/// same input and compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulRoute {
    /// What `matmul_wt` picks: for quantized weights the multi-row GEMV up to 128 rows of
    /// x (where the CPU has it), for any weights a GEMV per row for few rows, the GEMM
    /// otherwise.
    Auto,
    /// Rows widened to f32 (for quantized weights), then `matrixmultiply`'s sgemm.
    Gemm,
    /// A GEMV per row over the weights as stored, with the SIMD block kernels (AVX-512 or
    /// AVX2) where the CPU has them.
    Gemv,
    /// The GEMV over the blocks as stored, several rows of x at a time, each block unpacked
    /// once for them (AVX-512 or AVX2, Q4_0 / Q4_1 / Q8_0; elsewhere `Gemv`'s per-row loop).
    GemvRows,
    /// A GEMV per row over the blocks with the portable loops (no hand-written SIMD).
    GemvPortable,
    /// The plain route: the whole matrix widened to f32, then a GEMV per row.
    GemvF32,
}

impl MatmulRoute {
    pub const ALL: [MatmulRoute; 6] = [
        MatmulRoute::Auto,
        MatmulRoute::Gemm,
        MatmulRoute::Gemv,
        MatmulRoute::GemvRows,
        MatmulRoute::GemvPortable,
        MatmulRoute::GemvF32,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MatmulRoute::Auto => "auto",
            MatmulRoute::Gemm => "gemm-sgemm",
            MatmulRoute::Gemv => "gemv-native",
            MatmulRoute::GemvRows => "gemv-rows",
            MatmulRoute::GemvPortable => "gemv-portable",
            MatmulRoute::GemvF32 => "gemv-f32-plain",
        }
    }
}

/// `y[t, n] = x[t, k] · w[n, k]ᵀ` by the named route.
pub fn matmul_wt_route(
    x: &[f32],
    w: WeightView,
    y: &mut [f32],
    t: usize,
    k: usize,
    n: usize,
    route: MatmulRoute,
) {
    assert_eq!(x.len(), t * k, "matmul_wt: x is not [t, k]");
    assert_eq!(y.len(), t * n, "matmul_wt: y is not [t, n]");
    w.check(n, k);
    match route {
        MatmulRoute::Auto => matmul_wt(x, w, y, t, k, n),
        MatmulRoute::Gemm => gemm(x, w, y, t, k, n),
        MatmulRoute::Gemv => {
            for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
                gemv(xr, w, yr, k);
            }
        }
        MatmulRoute::GemvRows => match w {
            WeightView::Blocks { ty, bytes } if gemv_rows_available(ty) => {
                gemv_rows(x, ty, bytes, y, t, k, n)
            }
            _ => {
                for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
                    gemv(xr, w, yr, k);
                }
            }
        },
        MatmulRoute::GemvPortable => {
            for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
                match w {
                    WeightView::F32(_) => gemv(xr, w, yr, k),
                    WeightView::Blocks { ty, bytes } => {
                        block_rows(ty, bytes, ty.row_bytes(k as u64) as usize, xr, yr)
                    }
                }
            }
        }
        MatmulRoute::GemvF32 => {
            let mut wf = vec![0f32; n * k];
            w.rows_f32(0, k, &mut wf);
            for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
                gemv(xr, WeightView::F32(&wf), yr, k);
            }
        }
    }
}

/// `y[t, n] = x[t, k] · w[n, k]ᵀ`.
pub fn matmul_wt(x: &[f32], w: WeightView, y: &mut [f32], t: usize, k: usize, n: usize) {
    assert_eq!(x.len(), t * k, "matmul_wt: x is not [t, k]");
    assert_eq!(y.len(), t * n, "matmul_wt: y is not [t, n]");
    w.check(n, k);
    if let WeightView::Blocks { ty, bytes } = w {
        // Quantized weights, 2 to GEMV_ROWS_MAX rows (a short prompt, a chat turn's new
        // message): the blocks as stored, a block unpacked once for several rows, beat
        // widening the matrix to f32 for the GEMM (`prefill_route` in benches/cpu_ops.rs).
        if t > 1 && t <= GEMV_ROWS_MAX && gemv_rows_available(ty) {
            gemv_rows(x, ty, bytes, y, t, k, n);
            return;
        }
    }
    // Few rows: stream the weights once per row. Widening a quantized matrix for the GEMM
    // costs more than a few matrix-vector products over its blocks.
    let gemv_rows = match w {
        WeightView::F32(_) => 2,
        WeightView::Blocks { .. } => 8,
    };
    if t <= gemv_rows {
        // Decode: memory-bound; stream each weight row once per token row.
        for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
            gemv(xr, w, yr, k);
        }
        return;
    }
    gemm(x, w, y, t, k, n);
}

/// `y_i[n_i] = w_i[n_i, k] · x[k]` for several matrices that read the same x (a layer's
/// Q, K and V; gate and up), as one parallel loop over all their row blocks instead of one
/// loop a matrix: a decode step makes fewer parallel calls, and the small products (K and
/// V: two blocks each) share the cores with the large. `gemv` is this loop for one
/// matrix, and a matrix's values do not depend on which others share the loop (its rows'
/// blocks and kernels are the same).
pub fn gemv_many(x: &[f32], products: &mut [(WeightView, &mut [f32])]) {
    let k = x.len();
    let mut sums = Vec::with_capacity(products.len());
    for (w, y) in products.iter() {
        w.check(y.len(), k);
        sums.push(match w {
            WeightView::Blocks { ty, .. } => block_sums(x, k, *ty),
            WeightView::F32(_) => Vec::new(),
        });
    }
    let mut tasks = Vec::new();
    for ((w, y), xsum) in products.iter_mut().zip(&sums) {
        let w = *w;
        let rb = match w {
            WeightView::F32(_) => 4 * k,
            WeightView::Blocks { ty, .. } => ty.row_bytes(k as u64) as usize,
        };
        for (i, ys) in y.chunks_mut(GEMV_ROWS_PER_TASK).enumerate() {
            tasks.push((w, i * GEMV_ROWS_PER_TASK, ys, xsum.as_slice(), rb));
        }
    }
    tasks
        .into_par_iter()
        .for_each(|(w, r0, ys, xsum, rb)| match w {
            WeightView::F32(wf) => {
                for (n, yv) in ys.iter_mut().enumerate() {
                    *yv = dot(x, &wf[(r0 + n) * k..][..k]);
                }
            }
            WeightView::Blocks { ty, bytes } => {
                let ws = &bytes[r0 * rb..(r0 + ys.len()) * rb];
                block_rows_dispatch(ty, ws, rb, x, xsum, ys)
            }
        });
}

/// Prefill: a cache-blocked GEMM, split over column blocks of the output so both cores
/// work; quantized rows are widened one block of columns at a time.
pub(super) fn gemm(x: &[f32], w: WeightView, y: &mut [f32], t: usize, k: usize, n: usize) {
    let blocks: Vec<(usize, usize)> = (0..n)
        .step_by(GEMM_N_BLOCK)
        .map(|s| (s, GEMM_N_BLOCK.min(n - s)))
        .collect();
    let y_ptr = SendPtr(y.as_mut_ptr());
    blocks.par_iter().for_each(|&(n0, nb)| {
        let y_ptr = &y_ptr;
        let scratch;
        let wb: &[f32] = match w {
            WeightView::F32(wf) => &wf[n0 * k..(n0 + nb) * k],
            WeightView::Blocks { .. } => {
                let mut s = vec![0f32; nb * k];
                w.rows_f32(n0, k, &mut s);
                scratch = s;
                &scratch
            }
        };
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
                wb.as_ptr(),
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

pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: used only to hand disjoint column ranges of one buffer to rayon tasks.
unsafe impl Sync for SendPtr {}

/// `y[n] = w[n, k] · x[k]`, rows split over rayon tasks.
pub(super) fn gemv(x: &[f32], w: WeightView, y: &mut [f32], k: usize) {
    debug_assert_eq!(x.len(), k);
    gemv_many(x, &mut [(w, y)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::{naive_matmul_wt, nmse, random_blocks, values};
    use proptest::prelude::*;

    /// The f16 rows' chunked widening gives every value's own f16 -> f32 (half's scalar
    /// conversion), bit for bit, specials included, over rows that straddle its chunks.
    #[test]
    fn f16_rows_widen_to_each_values_own_f32() {
        let (k, rows) = (300, 4);
        let mut bits: Vec<u16> = (0..k * rows)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u16)
            .collect();
        bits[..6].copy_from_slice(&[0x7c00, 0xfc00, 0x7e01, 0x0001, 0x8000, 0x3c00]);
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let view = WeightView::Blocks {
            ty: GgmlType::F16,
            bytes: &bytes,
        };
        for r0 in [0, 1] {
            let mut out = vec![0f32; (rows - r0) * k];
            view.rows_f32(r0, k, &mut out);
            for (i, y) in out.iter().enumerate() {
                let want = f16::from_bits(bits[r0 * k + i]).to_f32();
                assert_eq!(y.to_bits(), want.to_bits(), "row {r0} value {i}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matmul_matches_f64(t in 1usize..40, k in 1usize..150, n in 1usize..300, seed in any::<u64>()) {
            let x = values(t * k, seed);
            let w = values(n * k, seed ^ 1);
            let mut y = vec![0f32; t * n];
            matmul_wt(&x, WeightView::F32(&w), &mut y, t, k, n);
            let r = naive_matmul_wt(&x, &w, t, k, n);
            prop_assert!(nmse(&y, &r) < 1e-10, "nmse {}", nmse(&y, &r));
        }
    }

    /// Several matrices over one x in one parallel loop give each value the bits it gets
    /// in a loop of its own (`gemv`), and the f64 product's value within 1e-10: f32 and
    /// block weights mixed, row counts that split into blocks unevenly.
    #[test]
    fn gemv_many_gives_each_product_its_own_gemv_bits() {
        let k = 256;
        let (q4, q8) = (
            random_blocks(GgmlType::Q4_1, 300 * k / 32, 5),
            random_blocks(GgmlType::Q8_0, 70 * k / 32, 6),
        );
        let wf = values(129 * k, 7);
        let views = [
            WeightView::Blocks {
                ty: GgmlType::Q4_1,
                bytes: &q4,
            },
            WeightView::F32(&wf),
            WeightView::Blocks {
                ty: GgmlType::Q8_0,
                bytes: &q8,
            },
        ];
        let rows = [300, 129, 70];
        let x = values(k, 8);
        let mut ys: Vec<Vec<f32>> = rows.iter().map(|&n| vec![0f32; n]).collect();
        let mut products: Vec<_> = views
            .iter()
            .zip(ys.iter_mut())
            .map(|(w, y)| (*w, y.as_mut_slice()))
            .collect();
        gemv_many(&x, &mut products);
        for ((w, y), n) in views.iter().zip(&ys).zip(rows) {
            let mut lone = vec![0f32; n];
            gemv(&x, *w, &mut lone, k);
            let mut wf = vec![0f32; n * k];
            w.rows_f32(0, k, &mut wf);
            let e = nmse(y, &naive_matmul_wt(&x, &wf, 1, k, n));
            assert!(e < 1e-10, "{n} rows: nmse {e}");
            let differ = y
                .iter()
                .zip(&lone)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(differ, 0, "{n} rows: {differ} values differ");
        }
    }
}
