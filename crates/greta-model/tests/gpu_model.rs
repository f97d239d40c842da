//! The model on a GPU (ignored unless GRETA_REQUIRE_GPU=1; tools/gpu/h100_checks.sh runs it):
//! captured-graph decode gives the same tokens as eager launches, and both follow the CPU
//! reference route that holds the weights as the GPU does.

mod common;

use greta_model::generate::sampler::{Sampler, SamplerConfig};
use greta_model::generate::{generate, generate_gpu, Decoding};
use greta_model::kernels::gpu::{default_dir, GpuKernels};
use greta_model::llama::gpu::GpuLlama;
use greta_model::llama::weights::CpuWeights;
use greta_model::model;
use hiprt::{Gpu, PlatformChoice};

fn gpu() -> Gpu {
    assert_eq!(
        std::env::var("GRETA_REQUIRE_GPU").as_deref(),
        Ok("1"),
        "set GRETA_REQUIRE_GPU=1 to run the GPU tests"
    );
    Gpu::open(PlatformChoice::Auto, 0)
        .unwrap_or_else(|e| panic!("GRETA_REQUIRE_GPU=1 but no GPU opened: {e}"))
}

fn greedy() -> Sampler {
    Sampler::new(SamplerConfig {
        temperature: 0.0,
        ..Default::default()
    })
    .unwrap()
}

#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1"]
fn graph_replay_matches_eager_launches_and_the_cpu() {
    let g = gpu();
    for v in [
        "mha-tied-theta1e4",
        "gqa-untied-theta5e5",
        "gqa4-llama3-rope",
    ] {
        let path = common::fixtures()
            .join("tiny")
            .join(v)
            .join("model-f16.gguf");
        let lm = model::load_as(&path, CpuWeights::F16Rounded, &mut |_, _| {}).unwrap();
        let prompt = lm.tokenizer.encode("The quick brown fox", true).unwrap();
        let n = 48;
        let run_gpu = |graph: bool| {
            let k = GpuKernels::load(&g, &default_dir()).unwrap();
            let m = GpuLlama::upload(
                g.clone(),
                k,
                lm.model.config.clone(),
                &lm.model.weights,
                &mut |_, _| {},
            )
            .unwrap();
            let mut st = m.new_state(prompt.len() + n, prompt.len()).unwrap();
            let mut s = greedy();
            let mut out = Vec::new();
            generate_gpu(
                &m,
                &mut st,
                &prompt,
                Decoding {
                    max_new: n,
                    sampler: &mut s,
                    is_eog: &|_| false,
                },
                graph,
                &mut |t| {
                    out.push(t);
                    true
                },
            )
            .unwrap();
            out
        };
        let (graph, eager) = (run_gpu(true), run_gpu(false));
        assert_eq!(graph.len(), n);
        assert_eq!(
            graph, eager,
            "{v}: graph replay and eager launches chose different tokens"
        );
        let mut cache = lm.model.new_cache(prompt.len() + n);
        let mut s = greedy();
        let mut cpu = Vec::new();
        generate(
            &lm.model,
            &mut cache,
            &prompt,
            Decoding {
                max_new: n,
                sampler: &mut s,
                is_eog: &|_| false,
            },
            &mut greta_model::trace::NoTrace,
            &mut |t| {
                cpu.push(t);
                true
            },
        )
        .unwrap();
        let agree = graph.iter().zip(&cpu).take_while(|(a, b)| a == b).count();
        eprintln!("{v}: GPU and CPU greedy tokens agree for the first {agree} of {n}");
        assert!(
            agree >= 16,
            "{v}: GPU and CPU greedy tokens part after {agree}: {graph:?} vs {cpu:?}"
        );
    }
}
