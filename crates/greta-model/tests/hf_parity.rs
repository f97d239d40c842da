//! Logits against Hugging Face transformers on tiny random Llama checkpoints
//! (tools/oracle/make_tiny_llamas.py): MHA and GQA, tied and untied embeddings, rope theta
//! 1e4 and 5e5, Llama 3 rope scaling; from safetensors (half-split RoPE) and from the GGUF
//! files llama.cpp's converter wrote (permuted Q/K, adjacent-pair RoPE, rope_freqs).

mod common;

use common::{argmax, fixtures, load, Expected};
use greta_model::llama::Logits;
use greta_model::trace::NoTrace;

const VARIANTS: [&str; 3] = [
    "mha-tied-theta1e4",
    "gqa-untied-theta5e5",
    "gqa4-llama3-rope",
];

/// f32 compute on both sides: only summation order differs.
const F32_MAX_ABS: f32 = 1e-3;

struct Comparison {
    max_abs: f32,
    top1_agree: usize,
    rows: usize,
}

fn compare(got: &[f32], want: &[f32], vocab: usize) -> Comparison {
    assert_eq!(got.len(), want.len(), "logit count");
    let max_abs = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let rows = want.len() / vocab;
    let top1_agree = (0..rows)
        .filter(|&r| {
            argmax(&got[r * vocab..(r + 1) * vocab]) == argmax(&want[r * vocab..(r + 1) * vocab])
        })
        .count();
    Comparison {
        max_abs,
        top1_agree,
        rows,
    }
}

fn prefill_logits(path: &std::path::Path, tokens: &[u32]) -> Vec<f32> {
    let lm = load(path);
    let mut cache = lm.model.new_cache(tokens.len());
    lm.model
        .forward(tokens, &mut cache, Logits::All, &mut NoTrace)
        .unwrap()
}

fn decode_logits(path: &std::path::Path, tokens: &[u32]) -> Vec<f32> {
    let lm = load(path);
    let mut cache = lm.model.new_cache(tokens.len());
    tokens
        .iter()
        .flat_map(|&t| {
            lm.model
                .forward(&[t], &mut cache, Logits::Last, &mut NoTrace)
                .unwrap()
        })
        .collect()
}

fn expected(variant: &str) -> (Vec<u32>, Vec<f32>, Vec<f32>, usize) {
    let e = Expected::open(
        &fixtures()
            .join("tiny")
            .join(variant)
            .join("expected.safetensors"),
    );
    let tokens: Vec<u32> = e.i32("tokens").into_iter().map(|t| t as u32).collect();
    let (shape, logits) = e.f32("logits");
    let (_, logits_f16w) = e.f32("logits_f16w");
    (tokens, logits, logits_f16w, shape[1])
}

#[test]
fn safetensors_f32_matches_transformers_in_prefill_and_decode() {
    for v in VARIANTS {
        let (tokens, want, _, vocab) = expected(v);
        let dir = fixtures().join("tiny").join(v);
        for (route, got) in [
            ("prefill", prefill_logits(&dir, &tokens)),
            ("decode", decode_logits(&dir, &tokens)),
        ] {
            let c = compare(&got, &want, vocab);
            assert!(
                c.max_abs <= F32_MAX_ABS,
                "{v} {route}: max abs diff {} > {F32_MAX_ABS}",
                c.max_abs
            );
            assert_eq!(
                c.top1_agree,
                c.rows,
                "{v} {route}: top-1 differs at {} of {} positions",
                c.rows - c.top1_agree,
                c.rows
            );
        }
    }
}

#[test]
fn gguf_f16_matches_transformers_on_the_same_f16_weights() {
    for v in VARIANTS {
        let (tokens, _, want_f16w, vocab) = expected(v);
        let path = fixtures().join("tiny").join(v).join("model-f16.gguf");
        for (route, got) in [
            ("prefill", prefill_logits(&path, &tokens)),
            ("decode", decode_logits(&path, &tokens)),
        ] {
            let c = compare(&got, &want_f16w, vocab);
            assert!(
                c.max_abs <= F32_MAX_ABS,
                "{v} {route}: max abs diff {} > {F32_MAX_ABS}",
                c.max_abs
            );
            assert_eq!(
                c.top1_agree,
                c.rows,
                "{v} {route}: top-1 differs at {} positions",
                c.rows - c.top1_agree
            );
        }
    }
}

#[test]
fn gguf_q8_0_matches_transformers_on_the_weights_gguf_py_dequantizes() {
    for v in VARIANTS {
        let (tokens, ..) = expected(v);
        let e = Expected::open(&fixtures().join("tiny").join(v).join("expected.safetensors"));
        let (shape, want) = e.f32("logits_q8w");
        let path = fixtures().join("tiny").join(v).join("model-q8_0.gguf");
        let c = compare(&prefill_logits(&path, &tokens), &want, shape[1]);
        assert!(
            c.max_abs <= F32_MAX_ABS,
            "{v}: max abs diff {} > {F32_MAX_ABS}",
            c.max_abs
        );
        assert_eq!(
            c.top1_agree,
            c.rows,
            "{v}: top-1 differs at {} positions",
            c.rows - c.top1_agree
        );
    }
}

#[test]
fn tokenizers_reproduce_sentencepiece_ids() {
    let prompt = "The quick brown fox computes 12 + 345 = 357; café 🙂 and    spaces.\n";
    for v in VARIANTS {
        let (tokens, ..) = expected(v);
        let gguf = load(&fixtures().join("tiny").join(v).join("model-f16.gguf"));
        assert_eq!(
            gguf.tokenizer.encode(prompt, true).unwrap(),
            tokens,
            "{v}: GGUF SentencePiece tokenizer"
        );
        assert_eq!(
            gguf.tokenizer.decode(&tokens[1..]).unwrap(),
            prompt,
            "{v}: decode round trip"
        );
    }
}

#[test]
fn sharded_checkpoint_loads_the_same_weights_as_one_file() {
    let src = fixtures().join("tiny").join("gqa-untied-theta5e5");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let half = tensors.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&tensors[..half], &tensors[half..]].into_iter().enumerate() {
        let name = format!("model-{:05}-of-00002.safetensors", i + 1);
        let data =
            safetensors::serialize(part.iter().map(|(n, v)| (n.clone(), v.clone())), None).unwrap();
        std::fs::write(dir.path().join(&name), data).unwrap();
        for (n, _) in part {
            weight_map.insert(n.clone(), serde_json::Value::String(name.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let (tokens, ..) = expected("gqa-untied-theta5e5");
    assert_eq!(
        prefill_logits(dir.path(), &tokens),
        prefill_logits(&src, &tokens),
        "sharded and single-file logits differ"
    );
}
