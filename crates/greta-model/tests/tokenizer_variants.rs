//! Tokenizers other than the default model's: the `llama-bpe` and `default` pre-tokenizers
//! against llama.cpp's llama-tokenize (tools/oracle/make_pretokenizer_vocabs.py), and a
//! tokenizer.json against transformers (tools/oracle/hf_tokenizer_ids.py).

mod common;

use greta_model::io::gguf::GgufFile;
use greta_model::tokenizer::Tokenizer;

fn texts() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(common::fixtures().join("texts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn llama_bpe_and_default_pre_tokenizers_match_llama_tokenize() {
    let dir = common::fixtures().join("vocab");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    for pre in ["llama-bpe", "default"] {
        let f = GgufFile::open(&dir.join(format!("{pre}.gguf"))).unwrap();
        let tok = Tokenizer::from_gguf(&f.header).unwrap();
        let want_all = &expected[pre];
        let mut checked = 0;
        for (name, text) in texts() {
            let Some(want) = want_all.get(&name) else {
                continue;
            };
            assert_eq!(tok.encode(&text, true).unwrap(), ids(want), "{pre}: {name}");
            checked += 1;
        }
        assert!(checked >= 6, "{pre}: only {checked} texts checked");
    }
}

/// A BPE vocabulary whose GGUF does not name its pre-tokenizer takes llama.cpp's "default"
/// one, as llama.cpp does (its ids below are llama-tokenize's under "default"), and says so.
#[test]
fn a_missing_pre_tokenizer_is_the_default_one_with_a_warning() {
    let dir = common::fixtures().join("vocab");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let mut bytes = std::fs::read(dir.join("llama-bpe.gguf")).unwrap();
    // The key renamed in place (same length, so every offset after it stands).
    let key = b"tokenizer.ggml.pre";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("the fixture names its pre-tokenizer");
    bytes[at + key.len() - 1] = b'X';
    let header = greta_model::io::gguf::GgufHeader::parse(&bytes).unwrap();
    let tok = Tokenizer::from_gguf(&header).unwrap();
    assert_eq!(tok.warnings.len(), 1, "{:?}", tok.warnings);
    assert!(
        tok.warnings[0].contains("tokenizer.ggml.pre is missing"),
        "{:?}",
        tok.warnings
    );
    let mut checked = 0;
    for (name, text) in texts() {
        if let Some(want) = expected["default"].get(&name) {
            assert_eq!(tok.encode(&text, true).unwrap(), ids(want), "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} texts checked");
    let named = GgufFile::open(&dir.join("llama-bpe.gguf")).unwrap();
    assert!(Tokenizer::from_gguf(&named.header)
        .unwrap()
        .warnings
        .is_empty());
}

#[test]
fn tokenizer_json_matches_transformers() {
    let dir = common::fixtures().join("tiny");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("hf_tokenizer_ids.json")).unwrap())
            .unwrap();
    let tok = Tokenizer::from_hf_dir(&dir.join("mha-tied-theta1e4")).unwrap();
    let mut checked = 0;
    for (name, text) in texts() {
        let Some(want) = expected.get(&name) else {
            continue;
        };
        assert_eq!(
            tok.encode(&text, true).unwrap(),
            ids(want),
            "tokenizer.json: {name}"
        );
        checked += 1;
    }
    assert!(checked >= 6);
}

/// The SentencePiece keys llama.cpp reads: `add_space_prefix` false leaves the text's
/// leading "▁" off (and decoding takes no space off), `add_eos_token` true appends EOS.
#[test]
fn spm_space_prefix_and_eos_keys_are_read() {
    use greta_model::io::gguf::Value;
    let path = common::fixtures().join("tiny/mha-tied-theta1e4/model-f16.gguf");
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(
        f.header.get_str("tokenizer.ggml.model").unwrap(),
        Some("llama")
    );
    let text = "Hello world";
    let plain = Tokenizer::from_gguf(&f.header).unwrap();
    let with_prefix = plain.encode(text, false).unwrap();
    let first = plain.token_text(with_prefix[0]).unwrap();
    assert!(first.starts_with('\u{2581}'), "{first:?}");
    assert_eq!(plain.decode(&with_prefix).unwrap(), text);

    let mut h = f.header.clone();
    h.metadata
        .insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false));
    h.metadata
        .insert("tokenizer.ggml.add_eos_token".into(), Value::Bool(true));
    let tok = Tokenizer::from_gguf(&h).unwrap();
    let bare = tok.encode(text, false).unwrap();
    assert_ne!(bare, with_prefix);
    let first = tok.token_text(bare[0]).unwrap();
    assert!(!first.starts_with('\u{2581}'), "{first:?}");
    assert_eq!(tok.decode(&bare).unwrap(), text);
    let special = tok.encode(text, true).unwrap();
    assert_eq!(special.last().copied(), tok.eos, "{special:?}");
    // BOS (where the model adds it), the text's ids, EOS.
    let bos = usize::from(tok.add_bos);
    assert_eq!(&special[bos..special.len() - 1], &bare[..]);
    assert!(plain.encode(text, true).unwrap().last() != plain.eos.as_ref());
}

/// A Hugging Face directory's generation_config.json names where transformers' generate()
/// stops (`eos_token_id`, one id or a list): those ids end generation here too, and an id
/// outside the vocabulary is an error naming the file.
#[test]
fn generation_config_eos_ids_end_generation() {
    let src = common::fixtures().join("tiny/mha-tied-theta1e4");
    let dir = tempfile::tempdir().unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let before = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert!(!before.is_end_of_generation(7));
    let gen = dir.path().join("generation_config.json");
    std::fs::write(&gen, r#"{"eos_token_id": [2, 7]}"#).unwrap();
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert!(tok.is_end_of_generation(7) && tok.is_end_of_generation(2));
    std::fs::write(&gen, r#"{"eos_token_id": 11}"#).unwrap();
    assert!(Tokenizer::from_hf_dir(dir.path())
        .unwrap()
        .is_end_of_generation(11));
    std::fs::write(&gen, r#"{"eos_token_id": [2, 100000]}"#).unwrap();
    let Err(e) = Tokenizer::from_hf_dir(dir.path()) else {
        panic!("an eos_token_id outside the vocabulary was taken");
    };
    let e = e.to_string();
    assert!(
        e.contains("generation_config.json") && e.contains("eos_token_id 100000"),
        "{e}"
    );
}

/// The streaming decoder's pieces, joined, are the whole decode of the same ids, on every
/// fixture text (non-ASCII, code, runs of spaces) and every kind of vocabulary: byte-level
/// BPE (the two pre-tokenizer fixtures), SentencePiece with byte fallback (a 384-token
/// vocabulary, so most non-ASCII characters span several tokens) and a tokenizer.json.
#[test]
fn streamed_pieces_join_to_the_whole_decode() {
    let fixtures = common::fixtures();
    let gguf = |p: &str| {
        let f = GgufFile::open(&fixtures.join(p)).unwrap();
        Tokenizer::from_gguf(&f.header).unwrap()
    };
    let tokenizers = [
        ("llama-bpe", gguf("vocab/llama-bpe.gguf")),
        ("default", gguf("vocab/default.gguf")),
        ("spm", gguf("tiny/mha-tied-theta1e4/model-f16.gguf")),
        (
            "tokenizer.json",
            Tokenizer::from_hf_dir(&fixtures.join("tiny/mha-tied-theta1e4")).unwrap(),
        ),
    ];
    for (name, tok) in &tokenizers {
        for (file, text) in texts() {
            let ids = tok.encode(&text, false).unwrap();
            let mut stream = tok.stream();
            let mut joined = String::new();
            for &id in &ids {
                if let Some(piece) = stream.push(id).unwrap() {
                    joined.push_str(&piece);
                }
            }
            assert_eq!(joined, tok.decode(&ids).unwrap(), "{name}: {file}");
        }
    }
}

/// The chat template where transformers finds it: chat_template.jinja beside the tokenizer
/// first (transformers 4.47 on saves it there), then tokenizer_config.json's field; a list
/// of named templates without a "default" one gives none, with a warning naming them.
#[test]
fn chat_template_file_comes_before_the_config_field() {
    let src = common::fixtures().join("tiny/mha-tied-theta1e4");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let cfg_path = dir.path().join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer_config.json")).unwrap())
            .unwrap();
    cfg["chat_template"] = serde_json::json!([
        {"name": "tool_use", "template": "T{{ messages[0].content }}"},
        {"name": "rag", "template": "R{{ messages[0].content }}"},
    ]);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(tok.chat_template, None);
    assert!(
        tok.warnings
            .iter()
            .any(|w| w.contains("(tool_use, rag)") && w.contains("none named \"default\"")),
        "{:?}",
        tok.warnings
    );
    cfg["chat_template"] = "C{{ messages[0].content }}".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(
        tok.chat_template.as_deref(),
        Some("C{{ messages[0].content }}")
    );
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "J{{ messages[0].content }}",
    )
    .unwrap();
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(
        tok.chat_template.as_deref(),
        Some("J{{ messages[0].content }}")
    );
    assert!(tok.warnings.is_empty(), "{:?}", tok.warnings);
}
