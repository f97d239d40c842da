//! The model on a GPU (ignored unless GRETA_REQUIRE_GPU=1; tools/gpu/h100_checks.sh runs it):
//! captured-graph decode gives the same tokens as eager launches, and both follow the CPU
//! reference route that holds the weights as the GPU does.

mod common;

use greta_model::generate::sampler::{Sampler, SamplerConfig};
use greta_model::generate::{generate, generate_gpu, Decoding};
use greta_model::kernels::gpu::{default_dir, GpuKernels, PickAt};
use greta_model::llama::gpu::{GpuLlama, GpuState};
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

/// The model as the GPU holds it, uploaded from a loaded file.
fn upload(g: &Gpu, lm: &model::LoadedModel) -> GpuLlama {
    GpuLlama::load(
        g,
        lm.model.config.clone(),
        &lm.model.weights,
        &mut |_, _| {},
    )
    .unwrap()
}

/// Llama-2-7B's head_dim and RoPE pairing in 2 layers of a narrower width, 2 KV heads of 8,
/// a vocabulary of 512: the 7B's GPU routes at a size the CPU reference computes quickly.
fn narrow_7b() -> greta_model::llama::LlamaConfig {
    greta_model::llama::LlamaConfig {
        vocab_size: 512,
        hidden: 1024,
        intermediate: 2816,
        n_layers: 2,
        n_heads: 8,
        n_kv_heads: 2,
        ..greta_model::synthetic::config("llama2-7b").unwrap()
    }
}

/// `narrow_7b` with synthetic weights from `seed`: the CPU reference (holding the weights
/// as the GPU does) and the model uploaded to `g`.
fn narrow_7b_on_both(g: &Gpu, seed: u64) -> (greta_model::llama::forward::Llama, GpuLlama) {
    use greta_model::synthetic;
    let cfg = narrow_7b();
    let cpu = greta_model::llama::forward::Llama::new(
        cfg.clone(),
        synthetic::widened_for_cpu(synthetic::weights(&cfg, seed, &mut |_, _| {})),
    );
    let weights = synthetic::weights(&cfg, seed, &mut |_, _| {});
    let m = GpuLlama::load(g, cfg, &weights, &mut |_, _| {}).unwrap();
    (cpu, m)
}

/// The logits `which` of `turn` on a fresh state after `prefix`, and the kernels the turn
/// launched.
fn turn_after(
    m: &mut GpuLlama,
    prefix: &[u32],
    turn: &[u32],
    which: greta_model::llama::forward::Logits,
) -> (Vec<f32>, Vec<String>) {
    let nt = &mut greta_model::trace::NoTrace;
    let mut st = m
        .new_state(prefix.len() + turn.len(), prefix.len())
        .unwrap();
    m.forward(prefix, &mut st, which, nt).unwrap();
    m.kernels.record_launches();
    let got = m.forward(turn, &mut st, which, nt).unwrap();
    let names = m
        .kernels
        .launched_shapes()
        .into_iter()
        .map(|(k, ..)| k)
        .collect();
    (got, names)
}

/// Normalised mean squared error of `got` against `want`.
fn nmse(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    num / want.iter().map(|&y| (y as f64).powi(2)).sum::<f64>()
}

/// `n` token ids below 512, spread by a multiplicative hash of their index and `seed`.
fn token_ids(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 7) % 512)
        .collect()
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
        // Past positions 128 and 256: the decode attention's grid grows from one split to
        // three, so the graph run captures a step per split count (and drops the first:
        // a state keeps two).
        let n = 270;
        // Generates up to n tokens of the prompt on `st`, stopping after `stop`.
        let decode =
            |m: &GpuLlama, st: &mut GpuState, graph: bool, cfg: SamplerConfig, stop: usize| {
                let mut s = Sampler::new(cfg).unwrap();
                let mut out = Vec::new();
                generate_gpu(
                    m,
                    st,
                    &prompt,
                    Decoding {
                        max_new: n,
                        sampler: &mut s,
                        is_eog: &|_| false,
                    },
                    graph,
                    &mut |t| {
                        out.push(t);
                        out.len() < stop
                    },
                )
                .unwrap();
                out
            };
        // The same on a fresh model and state, returned with the tokens (for a step after
        // the stop).
        let gen_gpu = |graph: bool, cfg: SamplerConfig, stop: usize| {
            let m = upload(&g, &lm);
            let mut st = m.new_state(prompt.len() + n, prompt.len()).unwrap();
            let out = decode(&m, &mut st, graph, cfg, stop);
            (out, m, st)
        };
        let run_gpu = |graph: bool, cfg: SamplerConfig| gen_gpu(graph, cfg, n).0;
        let greedy_cfg = SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        };
        let (graph, eager) = (
            run_gpu(true, greedy_cfg.clone()),
            run_gpu(false, greedy_cfg.clone()),
        );
        assert_eq!(graph.len(), n);
        assert_eq!(
            graph, eager,
            "{v}: graph replay and eager launches chose different tokens"
        );
        // Stopped after 10 tokens (a step already issued past them), the state is where a
        // step-by-step loop leaves it: one more step decodes the 11th token of the full run.
        for graph_on in [true, false] {
            let (out, m, mut st) = gen_gpu(graph_on, greedy_cfg.clone(), 10);
            assert_eq!(out, graph[..10], "{v}: the stopped run's tokens");
            assert_eq!(
                st.len(),
                prompt.len() + 9,
                "{v}: after 10 tokens the state holds the prompt and 9 decoded"
            );
            let next = m.decode_on_device(&mut st, graph_on).unwrap();
            assert_eq!(
                next, graph[10],
                "{v} (graph {graph_on}): the step after a stop decodes the 11th token"
            );
        }
        // Sampling on the device inside the graph draws what eager launches draw.
        let sampled = SamplerConfig {
            temperature: 1.2,
            top_k: 40,
            top_p: 0.95,
            seed: 7,
            ..Default::default()
        };
        let (sg, se) = (
            run_gpu(true, sampled.clone()),
            run_gpu(false, sampled.clone()),
        );
        assert_eq!(sg, se, "{v}: sampled tokens differ between graph and eager");
        assert_ne!(
            sg, graph,
            "{v}: sampling at temperature 1.2 gave the greedy tokens"
        );
        // A state reset for another sequence keeps its decode graphs (they read the position
        // from the device): the same prompt decodes the same tokens through them; then a
        // sampling pick on that state (its graphs dropped: the pick's launch changed) draws
        // what a fresh state drew.
        let (_, m, mut st) = gen_gpu(true, greedy_cfg.clone(), n);
        for (cfg, want) in [(greedy_cfg.clone(), &graph), (sampled, &sg)] {
            st.reset().unwrap();
            let again = decode(&m, &mut st, true, cfg, n);
            assert_eq!(&again, want, "{v}: the second sequence of a reset state");
        }
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

/// The device sampler draws exactly the tokens the host `Sampler` draws from the same logits
/// and seed, for every setting it accepts: logits of SmolLM2's and Llama 3's vocabulary
/// sizes, fine-grained (few ties) and coarse (non-positive values in steps of 1/4: the
/// top-k cut falls among hundreds of equal values, about 50 of +0.0 and 1 500 of -0.0,
/// which the host's total order ranks below +0.0).
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1"]
fn device_sampling_draws_what_the_host_sampler_draws() {
    use greta_model::kernels::gpu::DeviceSampling;
    let g = gpu();
    let k = GpuKernels::load(&g, &default_dir()).unwrap();
    let s = g.stream().unwrap();
    for (vocab, coarse, steps) in [
        (49_152, false, 64u64),
        (49_152, true, 24),
        (128_256, true, 16),
    ] {
        for (temperature, top_k, top_p) in [
            (0.8, 40, 0.95),
            (1.5, 256, 1.0),
            (0.3, 1, 1.0),
            (1.0, 10, 0.5),
            (2.0, 100, 0.9),
        ] {
            let cfg = SamplerConfig {
                temperature,
                top_k,
                top_p,
                seed: 1234,
                ..Default::default()
            };
            let mut host = Sampler::new(cfg.clone()).unwrap();
            let mut rng = g.alloc::<u64>(1).unwrap();
            rng.write(0, &[cfg.seed], &s).unwrap();
            let mut out = g.alloc::<u32>(1).unwrap();
            let (mut pos, mut history) = (g.alloc::<u32>(1).unwrap(), g.alloc::<u32>(65).unwrap());
            pos.write(0, &[0], &s).unwrap();
            let mut dlogits = g.alloc::<f32>(vocab).unwrap();
            let dev = DeviceSampling {
                temperature,
                top_k,
                top_p,
            };
            let mut distinct = std::collections::BTreeSet::new();
            for step in 0..steps {
                // Logits of several scales, with ties among the largest.
                let mut st = step * 7919 + top_k as u64;
                let mut logits: Vec<f32> = (0..vocab)
                    .map(|_| {
                        st = st
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let u = (st >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                        if coarse {
                            // -0.0 where u * 32 rounds to zero.
                            -((u * 32.0).abs().round() / 4.0)
                        } else {
                            u * 12.0
                        }
                    })
                    .collect();
                logits[5] = 7.0;
                logits[9] = 7.0;
                if coarse {
                    // +0.0 ranks above every -0.0 (about 1 500 of them) in the host's order.
                    for i in (13..vocab).step_by(997) {
                        logits[i] = 0.0;
                    }
                }
                dlogits.write(0, &logits, &s).unwrap();
                let at = PickAt {
                    out: &mut out,
                    pos: &mut pos,
                    advance: 1,
                    history: &mut history,
                };
                k.sample(&s, &dlogits, vocab, dev, &mut rng, at).unwrap();
                let got = out.to_vec(&s).unwrap()[0];
                let mut kept = [0u32];
                history.read(step as usize + 1, &mut kept, &s).unwrap();
                let kept = kept[0];
                assert_eq!(
                    kept,
                    got,
                    "step {step}: the draw is kept at position {}",
                    step + 1
                );
                let want = host.sample(&logits, &[]).unwrap();
                assert_eq!(
                    got, want,
                    "vocab {vocab} coarse {coarse} T={temperature} k={top_k} p={top_p} step {step}: device drew {got}, host {want}"
                );
                distinct.insert(got);
            }
            eprintln!(
                "device sampling vocab {vocab} coarse {coarse} T={temperature} k={top_k} p={top_p}: {steps} draws identical to the host ({} distinct tokens)",
                distinct.len()
            );
        }
    }
}

/// Logits with a NaN have no token: both argmax kernels and the sampler leave `PICK_NAN` in
/// the history (the host reports it, as its own sampler refuses NaN) and token 0 as the next
/// step's input, wherever the NaN is and whatever its sign. Logits that are all -inf pick
/// token 0, as the host's argmax does.
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1"]
fn device_picks_flag_nan_logits() {
    use greta_model::generate::sampler::argmax;
    use greta_model::kernels::gpu::{DeviceSampling, PICK_NAN};
    let g = gpu();
    let mut k = GpuKernels::load(&g, &default_dir()).unwrap();
    let s = g.stream().unwrap();
    let vocab = 49_152;
    let mut dlogits = g.alloc::<f32>(vocab).unwrap();
    let (mut out, mut pos) = (g.alloc::<u32>(1).unwrap(), g.alloc::<u32>(1).unwrap());
    let mut history = g.alloc::<u32>(2).unwrap();
    let mut rng = g.alloc::<u64>(1).unwrap();
    rng.write(0, &[7], &s).unwrap();
    let base: Vec<f32> = (0..vocab)
        .map(|i| ((i * 37) % 1000) as f32 / 100.0)
        .collect();
    let mut cases: Vec<(String, Vec<f32>)> = Vec::new();
    for (at, nan) in [(0, f32::NAN), (vocab / 2, -f32::NAN), (vocab - 1, f32::NAN)] {
        let mut l = base.clone();
        l[at] = nan;
        cases.push((format!("NaN (sign {}) at {at}", nan.is_sign_negative()), l));
    }
    cases.push(("all NaN".into(), vec![f32::NAN; vocab]));
    cases.push(("all -inf".into(), vec![f32::NEG_INFINITY; vocab]));
    let pickers = ["argmax (cluster)", "argmax (one block)", "sample"];
    for (what, logits) in &cases {
        dlogits.write(0, logits, &s).unwrap();
        let nan = logits.iter().any(|v| v.is_nan());
        for picker in pickers {
            out.write(0, &[12_345], &s).unwrap();
            pos.write(0, &[0], &s).unwrap();
            history.write(0, &[0, 12_345], &s).unwrap();
            let at = PickAt {
                out: &mut out,
                pos: &mut pos,
                advance: 1,
                history: &mut history,
            };
            k.cluster_argmax = picker == "argmax (cluster)";
            if picker == "sample" {
                let cfg = DeviceSampling {
                    temperature: 0.8,
                    top_k: 40,
                    top_p: 0.95,
                };
                k.sample(&s, &dlogits, vocab, cfg, &mut rng, at).unwrap();
            } else {
                k.argmax(&s, &dlogits, vocab, at).unwrap();
            }
            let (got, kept) = (out.to_vec(&s).unwrap()[0], history.to_vec(&s).unwrap()[1]);
            if nan {
                assert_eq!(kept, PICK_NAN, "{picker}, {what}: history holds {kept}");
                assert_eq!(got, 0, "{picker}, {what}: the next input is {got}");
            } else if picker != "sample" {
                assert_eq!(
                    (got, kept),
                    (argmax(logits), argmax(logits)),
                    "{picker}, {what}"
                );
            } else {
                assert!(
                    got < vocab as u32 && kept == got,
                    "{picker}, {what}: {got}, {kept}"
                );
            }
            assert_eq!(
                pos.to_vec(&s).unwrap()[0],
                1,
                "{picker}, {what}: the position"
            );
        }
        eprintln!("{what}: every pick as expected");
    }
}

/// Up to 24 tokens of `prompt` on a fresh state (cache of 128, decode graphs): the tokens
/// delivered, and how the run ended.
fn generate_24(
    m: &GpuLlama,
    prompt: &[u32],
    cfg: &SamplerConfig,
) -> (
    Vec<u32>,
    Result<(), greta_model::generate::GpuGenerateError>,
) {
    generate_on(m, &mut m.new_state(128, 64).unwrap(), prompt, cfg, 24)
}

/// Up to `max_new` tokens of `prompt` on `st` (decode graphs): the tokens delivered, and
/// how the run ended.
fn generate_on(
    m: &GpuLlama,
    st: &mut GpuState,
    prompt: &[u32],
    cfg: &SamplerConfig,
    max_new: usize,
) -> (
    Vec<u32>,
    Result<(), greta_model::generate::GpuGenerateError>,
) {
    let mut s = Sampler::new(cfg.clone()).unwrap();
    let mut out = Vec::new();
    let r = generate_gpu(
        m,
        st,
        prompt,
        Decoding {
            max_new,
            sampler: &mut s,
            is_eog: &|_| false,
        },
        true,
        &mut |t| {
            out.push(t);
            true
        },
    );
    (out, r.map(|_| ()))
}

/// A second sequence takes the first one's blocks from the caching allocator (no runtime
/// allocation) and, although they hold the first sequence's K/V, decodes the same tokens.
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1"]
fn a_second_state_reuses_the_first_ones_blocks_and_decodes_the_same() {
    let g = gpu();
    let path = common::fixtures().join("tiny/gqa4-llama3-rope/model-f16.gguf");
    let lm = model::load_as(&path, CpuWeights::F16Rounded, &mut |_, _| {}).unwrap();
    let m = upload(&g, &lm);
    let prompts = [
        lm.tokenizer.encode("The quick brown fox", true).unwrap(),
        lm.tokenizer
            .encode("Pack my box with five dozen liquor jugs", true)
            .unwrap(),
    ];
    let greedy_cfg = greedy().config().clone();
    let run = |prompt: &[u32]| {
        let (out, r) = generate_24(&m, prompt, &greedy_cfg);
        r.unwrap();
        out
    };
    let a0 = run(&prompts[0]);
    let first = m.alloc_stats();
    assert!(
        first.runtime_allocs > 0 && first.in_use_bytes == 0,
        "{first:?}"
    );
    let b = run(&prompts[1]); // reuses blocks holding the first sequence's K/V
    let a1 = run(&prompts[0]);
    let after = m.alloc_stats();
    eprintln!("allocator: {first:?} -> {after:?}");
    assert_eq!(after.runtime_allocs, first.runtime_allocs, "{after:?}");
    assert!(after.reuses >= 2 * first.runtime_allocs, "{after:?}");
    assert_eq!(a0, a1, "a reused state decoded differently");
    assert_ne!(a0, b);
}

/// A NaN that reaches the logits stops generation with `GpuError::NanLogits` naming the
/// position, whether the prefill's pick meets it or a decode step's (read one step ahead,
/// through `DecodeAhead`), with the device's argmax and its sampler alike; the tokens
/// picked before it are delivered. The NaN is planted in the weights: the final norm's
/// (every logit of every pass), or the embedding row of a token the clean run generates
/// (the logits of the step that reads it).
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1"]
fn nan_logits_stop_generation_with_an_error_naming_the_position() {
    use greta_model::llama::gpu::GpuError;
    use greta_model::llama::weights::Storage;
    let g = gpu();
    // Untied: a NaN embedding row leaves the LM head clean.
    let path = common::fixtures().join("tiny/gqa-untied-theta5e5/model-f16.gguf");
    let load = |poison: &dyn Fn(&mut greta_model::llama::weights::LlamaWeights)| {
        let mut lm = model::load_as(&path, CpuWeights::F16Rounded, &mut |_, _| {}).unwrap();
        poison(&mut lm.model.weights);
        let config = lm.model.config.clone();
        (
            GpuLlama::load(&g, config, &lm.model.weights, &mut |_, _| {}).unwrap(),
            lm.tokenizer,
        )
    };
    let run = generate_24;
    let nan_at = |r: Result<(), greta_model::generate::GpuGenerateError>| match r {
        Err(greta_model::generate::GpuGenerateError::Gpu(GpuError::NanLogits { position })) => {
            position
        }
        other => panic!("expected NanLogits, got {other:?}"),
    };
    let (clean, tokenizer) = load(&|_| {});
    let prompt = tokenizer.encode("The quick brown fox", true).unwrap();
    let sampled = SamplerConfig {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        seed: 7,
        ..Default::default()
    };
    let greedy_cfg = greedy().config().clone();
    // The prefill's pick.
    let (nan_norm, _) = load(&|w| w.output_norm[0] = f32::NAN);
    for cfg in [&greedy_cfg, &sampled] {
        let (out, r) = run(&nan_norm, &prompt, cfg);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(nan_at(r), prompt.len() - 1);
    }
    // A decode step's pick: the step whose input is the first generated token that neither
    // the prompt nor an earlier step holds.
    for cfg in [&greedy_cfg, &sampled] {
        let (want, r) = run(&clean, &prompt, cfg);
        r.unwrap();
        let j = (0..want.len())
            .find(|&j| !prompt.contains(&want[j]) && !want[..j].contains(&want[j]))
            .expect("a new token");
        let tok = want[j] as usize;
        let (poisoned, _) = load(&|w| {
            let cols = w.token_embd.cols;
            match &mut w.token_embd.storage {
                Storage::F32(v) => v[tok * cols..(tok + 1) * cols].fill(f32::NAN),
                _ => panic!("F16Rounded weights are f32"),
            }
        });
        let (out, r) = run(&poisoned, &prompt, cfg);
        assert_eq!(
            out,
            want[..=j],
            "the tokens before the NaN (temperature {})",
            cfg.temperature
        );
        assert_eq!(
            nan_at(r),
            prompt.len() + j,
            "temperature {}",
            cfg.temperature
        );
        eprintln!(
            "temperature {}: NaN logits named at position {} after {} tokens",
            cfg.temperature,
            prompt.len() + j,
            j + 1
        );
    }
}

/// The calibration's key and its run. The weights id is what the GPU holds: the Q8_0 file
/// loaded as blocks and as f16-rounded f32 gives one id (both upload the same f16 values),
/// the f16 file of the same model another (its values are not Q8_0's). Then `greta
/// calibrate`'s ladder on a fixture: the references are computed once, the cheapest policy
/// is tried first, and a tiny model (no massive activations) passes with none, well inside
/// the margin, with every rung naming where its worst stage was.
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1"]
fn weights_ids_follow_the_uploaded_values_and_calibration_picks_the_cheapest_pass() {
    use greta_model::audit::AuditSetup;
    use greta_model::calibrate::{self, Calibration, Prompt, Step};
    use greta_model::llama::gpu::SplitInputs;
    let g = gpu();
    let dir = common::fixtures().join("tiny").join("gqa4-llama3-rope");
    let up = |file: &str, route: CpuWeights| {
        let lm = model::load_as(&dir.join(file), route, &mut |_, _| {}).unwrap();
        let m = upload(&g, &lm);
        (m, lm)
    };
    let (q8_blocks, _) = up("model-q8_0.gguf", CpuWeights::Blocks);
    let (q8_rounded, _) = up("model-q8_0.gguf", CpuWeights::F16Rounded);
    let (mut f16, lm) = up("model-f16.gguf", CpuWeights::F16Rounded);
    assert_eq!(q8_blocks.weights_id, q8_rounded.weights_id);
    assert_ne!(q8_blocks.weights_id, f16.weights_id);
    let prompts: Vec<Prompt> = ["The quick brown fox", "history of science"]
        .iter()
        .enumerate()
        .map(|(i, t)| Prompt {
            id: format!("p{i}"),
            tokens: lm.tokenizer.encode(t, true).unwrap(),
        })
        .collect();
    let mut setup = AuditSetup::default();
    setup.tolerances.metric = greta_model::trace::diff::Metric::Rms;
    setup.tolerances.default = greta_model::trace::diff::GPU_F16_RMS_TOLERANCE;
    let (mut references, mut tried) = (0, Vec::new());
    let ladder = calibrate::Ladder::default();
    let calibration = |ladder| Calibration {
        cpu: &lm.model,
        cpu_route: CpuWeights::F16Rounded.route_name(),
        prompts: &prompts,
        ladder,
        setup: &setup,
    };
    let rungs = calibration(&ladder)
        .run(
            &mut f16,
            "gpu",
            &mut |m, split| {
                m.split_inputs = split;
                tried.push(split);
                Ok(())
            },
            &mut |s| {
                if let Step::Reference { .. } = s {
                    references += 1;
                }
            },
        )
        .unwrap();
    assert_eq!(references, 2, "one reference a prompt");
    assert_eq!(
        tried,
        [SplitInputs::NONE],
        "none passes first, so no dearer rung runs"
    );
    assert_eq!(rungs.len(), 1);
    let r = &rungs[0];
    assert!(r.chosen && r.split_inputs == "none", "{r:?}");
    assert!(
        r.worst_error.unwrap() > 0.0 && r.worst_fraction.unwrap() <= 0.5,
        "{r:?}"
    );
    assert!(r.worst_at.starts_with("prompt p"), "{r:?}");
    // Every rung audited (a study): the choice is still the first within the margin, and
    // each rung's error is its own (a split policy reads closer to the reference here).
    let ladder = calibrate::Ladder {
        all: true,
        ..calibrate::Ladder::default()
    };
    let mut tried = Vec::new();
    let all = calibration(&ladder)
        .run(
            &mut f16,
            "gpu",
            &mut |m, split| {
                m.split_inputs = split;
                tried.push(split);
                Ok(())
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(tried, calibrate::LADDER);
    let chosen: Vec<bool> = all.iter().map(|r| r.chosen).collect();
    assert_eq!(chosen, [true, false, false, false, false], "{all:?}");
    assert_eq!(all[0], rungs[0], "the same rung reads the same");
    assert!(
        all[4].worst_error.unwrap() < all[0].worst_error.unwrap(),
        "every input split reads closer to the f32 reference than none: {all:?}"
    );
}

/// An observer that reads K at every layer, changing nothing: it keeps each layer of a GPU
/// pass on the route that stores K and V as f32 and appends them (`rope_k_append`).
struct WantsK;

impl greta_model::trace::StageObserver for WantsK {
    fn wants(&self, point: greta_model::trace::Point, _: Option<usize>) -> bool {
        point == greta_model::trace::Point::K
    }
    fn observe(&mut self, _: greta_model::trace::StageAt, _: &mut [f32], _: usize) {}
}

/// A head_dim-128 model in GGUF's RoPE pairing (the bench's synthetic shapes): its untraced
/// prefill writes K and V into the cache from the Q/K/V product (`gemm_f16_qkv_cache`), and
/// its logits are bitwise those of the route that stores K and V and appends them, on a
/// first pass and on a second one past position 0, under f16 and FP8 low halves and FP8 ones
/// with gate/up's 2:4-sparse; each within a small NMSE of the CPU reference's.
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1"]
fn kv_from_the_qkv_product_matches_the_append_route_and_the_cpu() {
    use greta_model::llama::forward::{Llama, Logits};
    use greta_model::llama::gpu::{SplitInputs, SplitLo};
    use greta_model::synthetic;
    let g = gpu();
    let cfg = narrow_7b();
    let (first, second) = (token_ids(300, 1), token_ids(40, 2));
    let cpu = Llama::new(
        cfg.clone(),
        synthetic::widened_for_cpu(synthetic::weights(&cfg, 5, &mut |_, _| {})),
    );
    let mut cache = cpu.new_cache(first.len() + second.len());
    let nt = &mut greta_model::trace::NoTrace;
    let want = [
        cpu.forward(&first, &mut cache, Logits::All, nt).unwrap(),
        cpu.forward(&second, &mut cache, Logits::All, nt).unwrap(),
    ];
    let weights = synthetic::weights(&cfg, 5, &mut |_, _| {});
    let mut m = GpuLlama::load(&g, cfg.clone(), &weights, &mut |_, _| {}).unwrap();
    if !m.kv_from_qkv_product(first.len()) {
        eprintln!("this device has no Q/K/V GEMM into the caches: nothing to compare");
        return;
    }
    // The kernel is Hopper's, which has the FP8 units too.
    // And gate/up's FP8 low half 2:4-sparse (the norm writes it, the SwiGLU GEMM's sparse
    // forms read it): the same bitwise agreement, and the same bound against the CPU.
    let sparse = SplitLo {
        sparse: SplitInputs::GATE_UP,
        ..SplitLo::FP8
    };
    for (name, lo) in [
        ("f16 low halves", SplitLo::F16),
        ("FP8 low halves", SplitLo::FP8),
        ("FP8 low halves, gate/up's 2:4-sparse", sparse),
    ] {
        m.set_split_lo(lo).unwrap();
        let run = |obs: &mut dyn greta_model::trace::StageObserver| -> [Vec<f32>; 2] {
            let mut st = m
                .new_state(first.len() + second.len(), first.len())
                .unwrap();
            [
                m.forward(&first, &mut st, Logits::All, obs).unwrap(),
                m.forward(&second, &mut st, Logits::All, obs).unwrap(),
            ]
        };
        let (fused, appended) = (run(&mut greta_model::trace::NoTrace), run(&mut WantsK));
        for (pass, ((f, a), w)) in fused.iter().zip(&appended).zip(&want).enumerate() {
            let differ = f
                .iter()
                .zip(a)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
            assert_eq!(
                differ, 0,
                "{name}, pass {pass}: {differ} logits differ between K and V from the product and the append route"
            );
            let nmse = nmse(f, w);
            eprintln!(
                "{name}, pass {pass}: bitwise the append route's; NMSE {nmse:.3e} against the CPU"
            );
            assert!(
                nmse < 1e-4,
                "{name}, pass {pass}: NMSE {nmse:.3e} against the CPU reference"
            );
        }
    }
}

/// A prompt longer than the state's rows is prefilled in parts (`GpuLlama::prefill_head`)
/// and generates what one pass over it does; so does a state rewound to part of the prompt,
/// the rest computed (what `greta chat` does between turns).
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1"]
fn a_prompt_in_parts_or_after_a_rewind_generates_what_one_pass_does() {
    let g = gpu();
    let path = common::fixtures().join("tiny/gqa4-llama3-rope/model-f16.gguf");
    let lm = model::load_as(&path, CpuWeights::F16Rounded, &mut |_, _| {}).unwrap();
    let m = upload(&g, &lm);
    let prompt = lm
        .tokenizer
        .encode(
            "Pack my box with five dozen liquor jugs, then the quick brown fox",
            true,
        )
        .unwrap();
    assert!(prompt.len() > 2 * 7, "{} tokens", prompt.len());
    let cfg = greedy().config().clone();
    let run = |st: &mut GpuState, ids: &[u32]| {
        let (out, r) = generate_on(&m, st, ids, &cfg, 12);
        r.unwrap();
        out
    };
    let one_pass = run(&mut m.new_state(128, 128).unwrap(), &prompt);
    let mut parts = m.new_state(128, 7).unwrap();
    assert_eq!(
        run(&mut parts, &prompt),
        one_pass,
        "prefilled 7 rows a pass"
    );
    // generate_gpu takes the whole prompt and computes what the state does not hold.
    parts.rewind(10).unwrap();
    assert_eq!(
        run(&mut parts, &prompt),
        one_pass,
        "rewound to 10 positions, the rest computed"
    );
}

/// A pass of a few rows after a cached prefix (a chat turn's new tokens) multiplies through
/// the GEMVs (`set_gemv_rows`): its launches are the rows kernels, not the GEMM's, and its
/// logits follow the CPU reference, as do those of the same pass on the GEMM.
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1"]
fn a_short_pass_on_the_gemvs_matches_the_cpu() {
    use greta_model::llama::forward::Logits;
    let g = gpu();
    let (cpu, mut m) = narrow_7b_on_both(&g, 7);
    let nt = &mut greta_model::trace::NoTrace;
    let prefix = token_ids(40, 1);
    for t in [2, 7, 16] {
        let turn = token_ids(t, 2 + t as u32);
        let mut cache = cpu.new_cache(prefix.len() + t);
        cpu.forward(&prefix, &mut cache, Logits::All, nt).unwrap();
        let want = cpu.forward(&turn, &mut cache, Logits::All, nt).unwrap();
        let mut errs = Vec::new();
        for (route, rows) in [("GEMVs", 16), ("GEMM", 1)] {
            m.set_gemv_rows(rows).unwrap();
            let (got, names) = turn_after(&mut m, &prefix, &turn, Logits::All);
            let (rows_kernels, gemms) = (
                names.iter().any(|k| k.starts_with("gemv_rows")),
                names.iter().any(|k| k.starts_with("gemm")),
            );
            assert_eq!(
                (rows_kernels, gemms),
                (route == "GEMVs", route == "GEMM"),
                "{t} rows on the {route}: launched {names:?}"
            );
            let e = nmse(&got, &want);
            eprintln!(
                "{t} rows after {} on the {route}: NMSE {e:.3e} against the CPU",
                prefix.len()
            );
            errs.push(e);
        }
        assert!(
            errs[0] < 1e-6 && errs[1] < 1e-4,
            "{t} rows: NMSE against the CPU {:.3e} on the GEMVs (bound 1e-6), {:.3e} on the GEMM (1e-4)",
            errs[0],
            errs[1]
        );
    }
    assert!(m
        .set_gemv_rows(17)
        .unwrap_err()
        .to_string()
        .contains("at most 16 rows"));
}

/// Decode's output product combining the attention's splits as it loads them
/// (`CtxCombine::Product`) gives the logits bit for bit of the attention combining them
/// itself (`Attention`: a cluster a head on Hopper), and both follow the CPU reference: at
/// 1, 3 and 8 splits of context. Past 8 splits the product cannot hold them and the
/// attention combines whatever is asked (no partials kernel launched).
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1"]
fn the_splits_combined_in_the_output_product_give_the_attentions_logits() {
    use greta_model::kernels::gpu::CtxCombine;
    use greta_model::llama::forward::Logits;
    let g = gpu();
    let (cpu, mut m) = narrow_7b_on_both(&g, 11);
    let nt = &mut greta_model::trace::NoTrace;
    // The decode position's keys: 1, 3, 8 and 9 splits of 128.
    for prefix_len in [40usize, 300, 1000, 1100] {
        let splits = (prefix_len + 1).div_ceil(128);
        let (prefix, next) = (token_ids(prefix_len, 3), token_ids(1, 9));
        let mut cache = cpu.new_cache(prefix_len + 1);
        cpu.forward(&prefix, &mut cache, Logits::Last, nt).unwrap();
        let want = cpu.forward(&next, &mut cache, Logits::Last, nt).unwrap();
        let mut got = Vec::new();
        for combine in [CtxCombine::Attention, CtxCombine::Product] {
            m.ctx_combine = combine;
            let (logits, names) = turn_after(&mut m, &prefix, &next, Logits::Last);
            let in_product = combine == CtxCombine::Product && splits <= 8;
            assert_eq!(
                (
                    names
                        .iter()
                        .any(|k| k.starts_with("attn_decode_rope_partials")),
                    names.iter().any(|k| k.starts_with("gemv_add_splits")),
                ),
                (in_product, in_product),
                "{combine} at {splits} splits: launched {names:?}"
            );
            let e = nmse(&logits, &want);
            eprintln!("{combine}, decode after {prefix_len} ({splits} splits): NMSE {e:.3e} against the CPU");
            assert!(
                e < 1e-4,
                "{combine} after {prefix_len}: NMSE {e:.3e} against the CPU (bound 1e-4)"
            );
            got.push(logits);
        }
        let differ = got[0]
            .iter()
            .zip(&got[1])
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "after {prefix_len}: logits differ between the two combines"
        );
    }
}

/// FP8 copies are made with the first state after `set_split_lo`, after its buffers: a
/// state made before the policy changed gets them at its first pass. Both orders give the
/// same logits bit for bit, and FP8 low halves stay within the CPU reference's bound.
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1"]
fn fp8_copies_made_with_the_state_or_at_its_first_pass_give_the_same_logits() {
    use greta_model::llama::forward::{Llama, Logits};
    use greta_model::llama::gpu::SplitLo;
    use greta_model::synthetic;
    let g = gpu();
    let cfg = narrow_7b();
    let prompt = token_ids(300, 3);
    let cpu = Llama::new(
        cfg.clone(),
        synthetic::widened_for_cpu(synthetic::weights(&cfg, 5, &mut |_, _| {})),
    );
    let nt = &mut greta_model::trace::NoTrace;
    let want = cpu
        .forward(&prompt, &mut cpu.new_cache(prompt.len()), Logits::All, nt)
        .unwrap();
    let weights = synthetic::weights(&cfg, 5, &mut |_, _| {});
    let mut m = GpuLlama::load(&g, cfg.clone(), &weights, &mut |_, _| {}).unwrap();
    if m.set_split_lo(SplitLo::FP8).is_err() {
        eprintln!("this device has no FP8 route: nothing to compare");
        return;
    }
    assert_ne!(m.split_lo(), SplitLo::F16, "no product took FP8 low halves");
    let mut st = m.new_state(prompt.len(), prompt.len()).unwrap();
    let with_state = m.forward(&prompt, &mut st, Logits::All, nt).unwrap();
    m.set_split_lo(SplitLo::F16).unwrap();
    let mut early = m.new_state(prompt.len(), prompt.len()).unwrap();
    m.set_split_lo(SplitLo::FP8).unwrap();
    let at_pass = m.forward(&prompt, &mut early, Logits::All, nt).unwrap();
    let differ = with_state
        .iter()
        .zip(&at_pass)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differ, 0, "{differ} logits differ between the two orders");
    let e = nmse(&with_state, &want);
    eprintln!("FP8 low halves: NMSE {e:.3e} against the CPU");
    assert!(e < 1e-4, "NMSE {e:.3e} against the CPU reference");
}
