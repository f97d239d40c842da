//! What the host sampler costs a token at SmolLM2's vocabulary (49 152 logits): `greta
//! generate`'s defaults (temperature 0.8, top-k 40, top-p 0.95), top-k off (every logit
//! ranked), and the argmax. The CPU backend draws every token here; the GPU only with a
//! repetition penalty or top-k outside 1..=256.
//!
//! cargo bench -p greta-model --bench sampler

use criterion::{criterion_group, criterion_main, Criterion};
use greta_model::generate::sampler::{Sampler, SamplerConfig};

fn bench(c: &mut Criterion) {
    let mut st = 7u64;
    let logits: Vec<f32> = (0..49_152)
        .map(|_| {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((st >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 20.0
        })
        .collect();
    for (name, temperature, top_k, top_p) in [
        ("t0.8_k40_p0.95", 0.8, 40, 0.95),
        ("t0.8_k0_p0.95", 0.8, 0, 0.95),
        ("greedy", 0.0, 40, 0.95),
    ] {
        let mut s = Sampler::new(SamplerConfig {
            temperature,
            top_k,
            top_p,
            ..Default::default()
        })
        .unwrap();
        c.bench_function(&format!("sample_49152/{name}"), |b| {
            b.iter(|| s.sample(std::hint::black_box(&logits), &[]).unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
