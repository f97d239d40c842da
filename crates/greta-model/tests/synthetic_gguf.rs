//! `greta bench --write-gguf`: the GGUF written from a synthetic model holds exactly its
//! weights and hyper-parameters (greta's own reader, which is checked against gguf-py in
//! quant_parity / llama_cpp_parity, reads back identical logits). llama.cpp loading the same
//! file is checked on the GPU machine (tools/gpu/peer_bench.sh, which benches llama.cpp on it).

use greta_model::io::gguf_write;
use greta_model::llama::weights::CpuWeights;
use greta_model::llama::{Llama, Logits};
use greta_model::{model, synthetic};

/// The logits of `a` at every position of 12 synthetic tokens (from `seed`), and the largest
/// difference from `b`'s.
fn logits_and_worst_diff(a: &Llama, b: &Llama, seed: u64) -> (Vec<f32>, f32) {
    let tokens = synthetic::tokens(12, a.config.vocab_size, seed);
    let run = |m: &Llama| {
        let mut c = m.new_cache(16);
        m.forward(
            &tokens,
            &mut c,
            Logits::All,
            &mut greta_model::trace::NoTrace,
        )
        .unwrap()
    };
    let (want, got) = (run(a), run(b));
    let worst = want
        .iter()
        .zip(&got)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    (want, worst)
}

#[test]
fn written_gguf_reads_back_as_the_same_model() {
    let cfg = synthetic::config("tiny").unwrap();
    let w = synthetic::weights(&cfg, 5, &mut |_, _| {});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let bytes = gguf_write::write_llama(&path, &cfg, &w, "tiny", &mut |_, _| {}).unwrap();
    assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
    let lm = model::load_as(&path, CpuWeights::F32, &mut |_, _| {}).unwrap();
    assert_eq!(lm.model.config, cfg);
    let a = Llama::new(cfg.clone(), w);
    let (want, worst) = logits_and_worst_diff(&a, &lm.model, 1);
    // Same f16 values; only the CPU route (f16 blocks vs widened f32) differs.
    assert!(worst < 1e-5, "logits differ by {worst}");
    assert!(want.iter().any(|v| v.abs() > 1e-3), "degenerate logits");
    // The placeholder vocabulary is a working SentencePiece one.
    assert_eq!(lm.tokenizer.token_text(259).as_deref(), Some("t259"));
}

/// The Hugging Face directory written from a GGUF-paired (adjacent RoPE) synthetic model:
/// greta's safetensors route (rotate_half, checked against transformers in hf_parity) reads
/// it back as the same function, so the Q/K rows were put in Hugging Face's order.
#[test]
fn written_hf_directory_reads_back_as_the_same_model() {
    let cfg = synthetic::config("tiny").unwrap();
    let w = synthetic::weights(&cfg, 9, &mut |_, _| {});
    let dir = tempfile::tempdir().unwrap();
    greta_model::io::hf_write::write_llama(dir.path(), &cfg, &w).unwrap();
    let lm = model::load_as(dir.path(), CpuWeights::F32, &mut |_, _| {}).unwrap();
    assert_eq!(
        lm.model.config.rope_style,
        greta_model::llama::config::RopeStyle::HalfSplit
    );
    let a = Llama::new(cfg.clone(), w);
    let (_, worst) = logits_and_worst_diff(&a, &lm.model, 2);
    assert!(worst < 1e-4, "logits differ by {worst}");
    assert_eq!(
        lm.tokenizer.encode("t300 t301", false).unwrap(),
        vec![300, 301]
    );
}

#[test]
fn a_model_gguf_cannot_express_is_refused() {
    let mut cfg = synthetic::config("tiny").unwrap();
    cfg.rope_style = greta_model::llama::config::RopeStyle::HalfSplit;
    let w = synthetic::weights(&cfg, 5, &mut |_, _| {});
    let dir = tempfile::tempdir().unwrap();
    let err = gguf_write::write_llama(&dir.path().join("x.gguf"), &cfg, &w, "x", &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("rotate_half"), "{err}");
}
