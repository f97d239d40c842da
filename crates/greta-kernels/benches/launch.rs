//! What the host spends launching the decode kernels (argument packing, size checks and the
//! driver's launch call), without the GPU's execution: batches of launches are timed up to
//! the last launch call, then the stream is drained outside the timing. Needs a GPU and the
//! built kernels (`cargo xtask build-kernels`); without them it says so and measures nothing.
//! A decode step of SmolLM2-135M makes 185 such launches (captured once into a graph; eager
//! decode pays them every token). Each launch is timed both ways the kernels can go out:
//! overlapped (`cuLaunchKernelEx` with programmatic serialization on NVIDIA, the default)
//! and plain (`cuLaunchKernel`, `--overlap off`). The prefill's grouped Q/K/V product is timed
//! too: on Hopper it encodes five TMA descriptors per launch on the host; and, where the
//! device has it, the prefill's SwiGLU GEMM (gate/up and act's operands in one launch, four
//! descriptors) and the Q/K/V product that writes K and V into the caches (five); and the
//! prefill attention as the untraced pass launches it (RoPE on q, the output product's hi
//! and FP8 lo, no ctx), whose K and V tiles come by TMA on Hopper: two descriptors a launch.
//! The decode step's attention is timed in both of its forms (ctx, or the splits' partials
//! left for the output product, `--ctx-combine`), and the output product in both (reading
//! ctx, or combining the partials).
//!
//! cargo bench -p greta-kernels --bench launch

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use greta_kernels::gpu::{
    default_dir, AttnScratch, AttnShape, CtxSplits, F16Operands, GemmLo, GemmOut, GemmRoute,
    GemmWeights, GpuKernels, KvCacheOut, LoOperand, MatShape, QRope, QkvRope, Rows, SwigluOut,
};
use hiprt::{Gpu, PlatformChoice};

/// Launches per timed batch: well under the driver's queue depth, so no launch waits.
const BATCH: u64 = 256;

fn launches(c: &mut Criterion) {
    let gpu = match Gpu::open(PlatformChoice::Auto, 0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("launch benches skipped: no GPU ({e})");
            return;
        }
    };
    let mut k = match GpuKernels::load(&gpu, &default_dir()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("launch benches skipped: {e}");
            return;
        }
    };
    let s = gpu.stream().unwrap();
    let (d, ff, q_row, kv_row, cap) = (576, 1536, 576, 192, 640);
    let w = |n: usize| gpu.alloc::<u16>(n).unwrap();
    let f = |n: usize| gpu.alloc::<f32>(n).unwrap();
    let (wq, wk, wv, wg, wu) = (
        w(q_row * d),
        w(kv_row * d),
        w(kv_row * d),
        w(ff * d),
        w(ff * d),
    );
    let (mut x, y, norm) = (f(d), f(d), f(d));
    let (mut q, mut kk, mut v, mut normed) = (f(q_row), f(kv_row), f(kv_row), f(d));
    let (mut gate, mut up, mut act) = (f(ff), f(ff), f(ff));
    let (mut kc, mut vc) = (w(cap * kv_row), w(cap * kv_row));
    // Position 0 (alloc does not zero): the kernels read it, and the attention's splits
    // that hold keys, from it.
    let mut pos = gpu.alloc::<u32>(1).unwrap();
    pos.zero(&s).unwrap();
    let inv = f(32);
    // The decode step's attention and output product (SmolLM2-135M): the rotated rows, ctx,
    // the output projection and its product.
    let (mut q_rot, mut k_rot, mut ctx, mut proj) = (f(q_row), f(kv_row), f(q_row), f(d));
    let wo = w(d * q_row);
    let timed = |name: &str, c: &mut Criterion, launch: &mut dyn FnMut()| {
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH);
                    let t = Instant::now();
                    for _ in 0..n {
                        launch();
                    }
                    spent += t.elapsed();
                    s.synchronize().unwrap();
                    left -= n;
                }
                spent
            })
        });
    };
    // A 512-token prefill's Q/K/V inputs and outputs (SmolLM2-135M).
    let t = 512;
    let (xh, xl) = (w(t * d), w(t * d));
    let (mut pq, mut pk, mut pv) = (f(t * q_row), f(t * kv_row), f(t * kv_row));
    // The SwiGLU GEMM's outputs: act's hi and FP8 lo (the default down product's operands).
    let (mut ah, mut aq) = (w(t * ff), gpu.alloc::<u8>(t * ff).unwrap());
    // The pass's RoPE table (head_dim 64), for the Q/K/V product that writes the caches.
    let angles = f(t * 64);
    // The prefill attention's output product operands (hi and FP8 lo) and its scratch.
    let (mut oh, mut oq) = (w(t * q_row), gpu.alloc::<u8>(t * q_row).unwrap());
    let mut scratch = AttnScratch::new(&gpu, 9, 64, cap).unwrap();
    for overlap in [true, false] {
        k.overlap = overlap;
        let tag = if overlap { "overlapped" } else { "plain" };
        timed(
            &format!("launch/gemm_f16 (qkv, 512 rows), {tag}"),
            c,
            &mut || {
                let mut outs = [
                    GemmOut {
                        w: &wq,
                        w8: None,
                        y: &mut pq,
                        n: q_row,
                    },
                    GemmOut {
                        w: &wk,
                        w8: None,
                        y: &mut pk,
                        n: kv_row,
                    },
                    GemmOut {
                        w: &wv,
                        w8: None,
                        y: &mut pv,
                        n: kv_row,
                    },
                ];
                k.gemm_f16(
                    GemmRoute::Auto,
                    &s,
                    &xh,
                    Some(GemmLo::F16(&xl)),
                    &mut outs,
                    t,
                    d,
                )
                .unwrap()
            },
        );
        if k.has_qkv_cache() {
            timed(
                &format!("launch/gemm_f16_qkv_cache (qkv into the caches, 512 rows), {tag}"),
                c,
                &mut || {
                    let weights = [&wq, &wk, &wv].map(|w| GemmWeights { w, w8: None });
                    let out = KvCacheOut {
                        caches: [&mut kc, &mut vc],
                        angles: &angles,
                        pos0: &pos,
                        shape: QkvRope {
                            rows: t,
                            n_heads: q_row / 64,
                            n_kv_heads: kv_row / 64,
                            head_dim: 64,
                            half_split: false,
                            capacity: cap,
                            keys: t,
                        },
                    };
                    k.gemm_f16_qkv_cache(
                        None,
                        &s,
                        &xh,
                        Some(GemmLo::F16(&xl)),
                        weights,
                        &mut pq,
                        out,
                        d,
                    )
                    .unwrap()
                },
            );
        }
        if k.has_gemm_swiglu() && k.has_fp8_lo() {
            timed(
                &format!("launch/gemm_f16_swiglu (gate/up, 512 rows), {tag}"),
                c,
                &mut || {
                    let out = SwigluOut {
                        gate: None,
                        up: None,
                        act: None,
                        ops: F16Operands {
                            hi: &mut ah,
                            lo: Some(LoOperand::Fp8(&mut aq)),
                        },
                    };
                    let shape = MatShape { t, k: d, n: ff };
                    k.gemm_f16_swiglu(None, &s, &xh, None, [&wg, &wu], out, shape)
                        .unwrap()
                },
            );
        }
        if k.has_prefill_q_rope(64) && k.attention_writes_operands(t, 64) && k.has_fp8_lo() {
            timed(
                &format!("launch/attention (prefill, 512 rows), {tag}"),
                c,
                &mut || {
                    let ops = F16Operands {
                        hi: &mut oh,
                        lo: Some(LoOperand::Fp8(&mut oq)),
                    };
                    let rope = QRope {
                        angles: &angles,
                        half_split: false,
                    };
                    let shape = AttnShape {
                        rows: t,
                        n_heads: 9,
                        n_kv_heads: 3,
                        head_dim: 64,
                        max_kv: cap,
                        keys: t,
                    };
                    let (q, kc, vc) = (&pq, &kc, &vc);
                    k.attention_with_operands(
                        &s,
                        q,
                        kc,
                        vc,
                        &mut scratch,
                        None,
                        Some(ops),
                        Some(rope),
                        &pos,
                        shape,
                    )
                    .unwrap();
                },
            );
        }
        timed(&format!("launch/gemv3 (qkv), {tag}"), c, &mut || {
            k.gemv3(
                &s,
                [&wq, &wk, &wv],
                [q_row, kv_row, kv_row],
                &normed,
                [&mut q, &mut kk, &mut v],
                d,
            )
            .unwrap()
        });
        timed(&format!("launch/gate_up_silu, {tag}"), c, &mut || {
            k.gate_up_silu(&s, &wg, &wu, &normed, [&mut gate, &mut up, &mut act], ff, d)
                .unwrap()
        });
        timed(&format!("launch/add_rmsnorm, {tag}"), c, &mut || {
            k.add_rmsnorm(
                &s,
                &mut x,
                &y,
                &norm,
                &mut normed,
                Rows { rows: 1, len: d },
                1e-5,
            )
            .unwrap()
        });
        let shape = QkvRope {
            rows: 1,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            half_split: true,
            capacity: cap,
            keys: cap,
        };
        timed(&format!("launch/rope_qk_append, {tag}"), c, &mut || {
            k.rope_qk_append(
                &s,
                [&mut q, &mut kk],
                &v,
                [&mut kc, &mut vc],
                &pos,
                &inv,
                shape,
            )
            .unwrap()
        });
        // The decode step's one-launch attention (RoPE, append, the splits of a 640-position
        // grid) both ways: writing ctx (a cluster a head on Hopper), and leaving its splits'
        // partials for the output product (`--ctx-combine`), which then combines them.
        if k.has_decode_rope(64) {
            for (form, with_ctx) in [("ctx", true), ("partials", false)] {
                timed(
                    &format!("launch/attention_rope ({form}), {tag}"),
                    c,
                    &mut || {
                        k.attention_rope(
                            &s,
                            [&q, &kk, &v],
                            [&mut kc, &mut vc],
                            [&mut q_rot, &mut k_rot],
                            &mut scratch,
                            with_ctx.then_some(&mut ctx),
                            &pos,
                            &inv,
                            shape,
                        )
                        .unwrap()
                    },
                );
            }
        }
        timed(&format!("launch/gemv_add (output), {tag}"), c, &mut || {
            k.gemv_add(&s, &wo, &ctx, &mut proj, &mut x, d, q_row)
                .unwrap()
        });
        timed(
            &format!("launch/gemv_add_splits (output), {tag}"),
            c,
            &mut || {
                let splits = CtxSplits {
                    scratch: &scratch,
                    pos0: &pos,
                    keys: cap,
                    head_dim: 64,
                };
                k.gemv_add_splits(&s, &wo, splits, &mut proj, &mut x, d, q_row)
                    .unwrap()
            },
        );
    }
}

criterion_group!(benches, launches);
criterion_main!(benches);
