//! The CPU reference ops at the default model's (SmolLM2-135M) shapes: the decode product
//! over Q4_1 blocks (what the default model stores) and over f32, the prefill product, the
//! widening of f16 rows, and the row ops. These are the CPU backend's costs; the GPU kernels
//! are checked against these ops, not timed by them.
//!
//! cargo bench -p greta-kernels --bench cpu_ops

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use greta_kernels::cpu::{self, AttentionShape, MatmulRoute, RopePairing, WeightView};
use greta_kernels::quant::GgmlType;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Q4_1 blocks of `n` rows of `k`: scale 0.01, offset -0.08, random nibbles.
fn q4_1(n: usize, k: usize) -> Vec<u8> {
    let blocks = n * k / 32;
    let (d, m) = (half::f16::from_f32(0.01), half::f16::from_f32(-0.08));
    let nibbles = values(blocks * 16, 7);
    let mut out = Vec::with_capacity(blocks * 20);
    for b in 0..blocks {
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&m.to_le_bytes());
        out.extend(
            nibbles[b * 16..(b + 1) * 16]
                .iter()
                .map(|v| ((v + 0.5) * 255.0) as u8),
        );
    }
    out
}

fn products(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_wt");
    // (t, k, n): decode Q/O (576x576), gate/up (1536x576), down (576x1536); prefill of 64 rows.
    for (t, k, n) in [
        (1, 576, 576),
        (1, 576, 1536),
        (1, 1536, 576),
        (64, 576, 1536),
    ] {
        let x = values(t * k, 1);
        let wf = values(n * k, 2);
        let wq = q4_1(n, k);
        let mut y = vec![0f32; t * n];
        g.bench_function(BenchmarkId::new("f32", format!("{t}x{k}x{n}")), |b| {
            b.iter(|| cpu::matmul_wt(&x, WeightView::F32(&wf), &mut y, t, k, n))
        });
        let w = WeightView::Blocks {
            ty: GgmlType::Q4_1,
            bytes: &wq,
        };
        g.bench_function(BenchmarkId::new("q4_1", format!("{t}x{k}x{n}")), |b| {
            b.iter(|| cpu::matmul_wt(&x, w, &mut y, t, k, n))
        });
    }
    g.finish();
}

/// The Q4_1 prefill product by each route that can take it, over prompt lengths from a chat
/// turn's few rows to a long prompt's: where `matmul_wt` should switch from the multi-row
/// GEMV (weights read as stored, a block unpacked once for 4 rows of x) to the GEMM on
/// widened rows. SmolLM2's gate/up shape (k 576, n 1536) and down (k 1536, n 576).
fn prefill_routes(c: &mut Criterion) {
    let mut g = c.benchmark_group("prefill_route");
    for (k, n) in [(576, 1536), (1536, 576)] {
        let wq = q4_1(n, k);
        let w = WeightView::Blocks {
            ty: GgmlType::Q4_1,
            bytes: &wq,
        };
        for t in [4, 8, 16, 32, 64, 128, 256] {
            let x = values(t * k, 1);
            let mut y = vec![0f32; t * n];
            for route in [MatmulRoute::Gemm, MatmulRoute::GemvRows, MatmulRoute::Gemv] {
                g.bench_function(
                    BenchmarkId::new(route.name(), format!("{t}x{k}x{n}")),
                    |b| b.iter(|| cpu::matmul_wt_route(&x, w, &mut y, t, k, n, route)),
                );
            }
        }
    }
    g.finish();
}

/// Widening f16 weight rows to f32: what the prefill GEMM does a column block at a time for
/// an f16 file, and what a synthetic 7B's CPU reference does to all its 13 GB (`greta
/// calibrate`). A 7B gate/up's shape.
fn widen(c: &mut Criterion) {
    let (n, k) = (256, 4096);
    let bytes: Vec<u8> = values(n * k, 3)
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let w = WeightView::Blocks {
        ty: GgmlType::F16,
        bytes: &bytes,
    };
    let mut out = vec![0f32; n * k];
    c.bench_function("rows_f32/f16-256x4096", |b| {
        b.iter(|| w.rows_f32(0, k, &mut out))
    });
}

fn row_ops(c: &mut Criterion) {
    let (d, ff) = (576, 1536);
    let x = values(d, 3);
    let w = values(d, 4);
    let mut out = vec![0f32; d];
    c.bench_function("rmsnorm/576", |b| {
        b.iter(|| cpu::rmsnorm(&x, &w, 1e-5, &mut out))
    });
    let (gate, up) = (values(ff, 5), values(ff, 6));
    let mut act = vec![0f32; ff];
    c.bench_function("silu_mul/1536", |b| {
        b.iter(|| cpu::silu_mul(&gate, &up, &mut act))
    });
    let inv: Vec<f32> = (0..32).map(|i| 1e5f32.powf(-(i as f32) / 32.0)).collect();
    let mut q = values(9 * 64, 8);
    c.bench_function("rope/9x64", |b| {
        b.iter(|| cpu::rope(&mut q, 511, 9, 64, &inv, RopePairing::HalfSplit))
    });
    // Decode attention of one row at position 511 over a 512-position cache (9 heads, 3 KV).
    let (kv_row, len) = (3 * 64, 512);
    let (kc, vc) = (values(len * kv_row, 9), values(len * kv_row, 10));
    let q1 = values(9 * 64, 11);
    let mut o = vec![0f32; 9 * 64];
    let shape = AttentionShape {
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        pos0: len - 1,
    };
    c.bench_function("attention/decode-pos511", |b| {
        b.iter(|| cpu::attention(&q1, &kc, &vc, &mut o, shape))
    });
    // The same over an f16 cache (`--kv-cache f16`): half the bytes, the same arithmetic.
    let (kh, vh): (Vec<half::f16>, Vec<half::f16>) = (
        kc.iter().map(|&x| half::f16::from_f32(x)).collect(),
        vc.iter().map(|&x| half::f16::from_f32(x)).collect(),
    );
    c.bench_function("attention/decode-pos511-f16", |b| {
        b.iter(|| cpu::attention(&q1, &kh, &vh, &mut o, shape))
    });
    // A prefill's attention: 128 rows after 384 cached positions.
    let (kc, vc) = (values(len * kv_row, 12), values(len * kv_row, 13));
    let q128 = values(128 * 9 * 64, 14);
    let mut o128 = vec![0f32; q128.len()];
    let prefill = AttentionShape {
        pos0: len - 128,
        ..shape
    };
    c.bench_function("attention/prefill-128-after-384", |b| {
        b.iter(|| cpu::attention(&q128, &kc, &vc, &mut o128, prefill))
    });
}

criterion_group!(benches, products, prefill_routes, widen, row_ops);
criterion_main!(benches);
