//! Tokenizers built with the `tokenizers` crate, from a GGUF vocabulary (gpt2-style BPE with
//! llama.cpp's pre-tokenizer variants, SentencePiece-style `llama`) or from tokenizer.json.
//!
//! The GGUF path rebuilds what llama.cpp does (llama-vocab.cpp): the same pre-tokenizer
//! regexes per `tokenizer.ggml.pre`, byte-level BPE over the merges, BOS per the metadata.
//! tests/tokenizer_parity.rs checks the ids against llama.cpp's own `llama-tokenize`.

use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::io::gguf::{GgufHeader, Value};
use crate::io::FormatError;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("tokenizer model {0:?} is not supported; accepted: \"gpt2\" (BPE), \"llama\" (SentencePiece)")]
    UnsupportedModel(String),
    #[error(
        "pre-tokenizer {0:?} is not supported; accepted: \"default\", \"gpt2\", \"smollm\", \
         \"llama-bpe\", \"llama3\", \"llama-v3\", \"starcoder\", \"refact\""
    )]
    UnsupportedPre(String),
    #[error("tokenizer: {0}")]
    Build(String),
    #[error("cannot read tokenizer file {path}: {reason}")]
    File { path: String, reason: String },
}

fn build_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build(e.to_string())
}

/// llama.cpp's token attributes (tokenizer.ggml.token_type).
const TOKEN_TYPE_UNKNOWN: i64 = 2;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regex cascade llama.cpp applies before byte-level BPE, per `tokenizer.ggml.pre`.
/// Each regex splits the pieces the previous one produced, keeping unmatched text.
/// Returns also whether whole pre-tokens found in the vocabulary skip the merges.
fn pre_tokenizer_regexes(pre: &str) -> Result<(Vec<&'static str>, bool), TokenizerError> {
    Ok(match pre {
        "llama-bpe" | "llama3" | "llama-v3" => (vec![LLAMA3_REGEX], true),
        "smollm" | "starcoder" | "refact" => (vec![r"\p{N}", GPT2_REGEX], false),
        "gpt2" => (vec![GPT2_REGEX], false),
        "default" => (
            vec![
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_REGEX,
                r"\p{N}+",
                r"[0-9][0-9][0-9]",
            ],
            false,
        ),
        other => return Err(TokenizerError::UnsupportedPre(other.to_string())),
    })
}

/// A tokenizer plus what generation needs to know about its special tokens.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether encoding a prompt prepends BOS (the model's metadata decides).
    pub add_bos: bool,
    /// Whether encoding a prompt appends EOS (`tokenizer.ggml.add_eos_token`, as llama.cpp
    /// reads it; Hugging Face tokenizers add it through tokenizer.json's post-processor).
    pub add_eos: bool,
    /// Tokens that end generation: EOS, EOT and the chat template's end-of-turn token.
    pub end_of_generation: Vec<u32>,
    pub chat_template: Option<String>,
    /// What was assumed where the model's files did not say (the caller shows them: llama.cpp
    /// prints the same cases as warnings).
    pub warnings: Vec<String>,
}

/// End-of-turn tokens chat templates write, which end generation by their text (llama.cpp
/// treats these control tokens as end-of-generation); GGUF vocabularies add Gemma-style
/// `<end_of_turn>`.
const END_OF_TURN: [&str; 5] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
];

fn strings(h: &GgufHeader, key: &str) -> Result<Vec<String>, TokenizerError> {
    let arr = h
        .get_array(key)?
        .ok_or_else(|| FormatError::MissingMetadata(key.to_string()))?;
    arr.iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(FormatError::BadMetadata {
                key: key.to_string(),
                reason: format!("expected strings, found {other:?}"),
            }
            .into()),
        })
        .collect()
}

fn numbers(h: &GgufHeader, key: &str) -> Result<Option<Vec<f64>>, TokenizerError> {
    let Some(arr) = h.get_array(key)? else {
        return Ok(None);
    };
    arr.iter()
        .map(|v| {
            v.as_f64().ok_or_else(|| {
                FormatError::BadMetadata {
                    key: key.to_string(),
                    reason: format!("expected numbers, found {v:?}"),
                }
                .into()
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn token_id(h: &GgufHeader, key: &str, n_vocab: usize) -> Result<Option<u32>, TokenizerError> {
    match h.get_u64(key)? {
        None => Ok(None),
        Some(id) if (id as usize) < n_vocab => Ok(Some(id as u32)),
        Some(id) => Err(FormatError::BadMetadata {
            key: key.to_string(),
            reason: format!("token id {id} is outside the vocabulary of {n_vocab}"),
        }
        .into()),
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(h: &GgufHeader) -> Result<Self, TokenizerError> {
        let model = h
            .get_str("tokenizer.ggml.model")?
            .ok_or_else(|| FormatError::MissingMetadata("tokenizer.ggml.model".into()))?;
        let tokens = strings(h, "tokenizer.ggml.tokens")?;
        let n_vocab = tokens.len();
        let types = numbers(h, "tokenizer.ggml.token_type")?.unwrap_or_else(|| vec![1.0; n_vocab]);
        if types.len() != n_vocab {
            return Err(FormatError::BadMetadata {
                key: "tokenizer.ggml.token_type".into(),
                reason: format!("{} entries for {n_vocab} tokens", types.len()),
            }
            .into());
        }
        let bos = token_id(h, "tokenizer.ggml.bos_token_id", n_vocab)?;
        let eos = token_id(h, "tokenizer.ggml.eos_token_id", n_vocab)?;
        let eot = token_id(h, "tokenizer.ggml.eot_token_id", n_vocab)?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();

        let mut warnings = Vec::new();
        let (mut inner, default_add_bos) = match model {
            "gpt2" => {
                let pre = match h.get_str("tokenizer.ggml.pre")? {
                    Some(pre) => pre,
                    None => {
                        warnings.push(
                            "tokenizer.ggml.pre is missing: using the \"default\" pre-tokenizer, \
                             as llama.cpp does; token ids may differ from the model's own tokenizer"
                                .to_string(),
                        );
                        "default"
                    }
                };
                let (regexes, ignore_merges) = pre_tokenizer_regexes(pre)?;
                let merges = strings(h, "tokenizer.ggml.merges")?
                    .into_iter()
                    .enumerate()
                    .map(|(i, m)| {
                        m.split_once(' ')
                            .map(|(a, b)| (a.to_string(), b.to_string()))
                            .ok_or_else(|| FormatError::BadMetadata {
                                key: "tokenizer.ggml.merges".into(),
                                reason: format!(
                                    "merge #{i} {m:?} is not two tokens separated by a space"
                                ),
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let bpe = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .ignore_merges(ignore_merges)
                    .build()
                    .map_err(build_err)?;
                let mut pres: Vec<PreTokenizerWrapper> = regexes
                    .iter()
                    .map(|r| {
                        Split::new(
                            SplitPattern::Regex(r.to_string()),
                            SplitDelimiterBehavior::Isolated,
                            false,
                        )
                        .map(PreTokenizerWrapper::Split)
                        .map_err(build_err)
                    })
                    .collect::<Result<_, _>>()?;
                pres.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
                    false, false, false,
                )));
                let mut t = tokenizers::Tokenizer::new(bpe);
                t.with_pre_tokenizer(Some(PreSequence::new(pres)));
                t.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
                // llama.cpp adds BOS by default for the llama3 family only.
                (t, matches!(pre, "llama-bpe" | "llama3" | "llama-v3"))
            }
            "llama" => {
                // SentencePiece's leading "▁" on the text, unless the model says otherwise
                // (llama.cpp's default and key).
                let space_prefix = h
                    .get_bool("tokenizer.ggml.add_space_prefix")?
                    .unwrap_or(true);
                let scores = numbers(h, "tokenizer.ggml.scores")?
                    .ok_or_else(|| FormatError::MissingMetadata("tokenizer.ggml.scores".into()))?;
                let merges = merges_from_scores(&tokens, &scores, &types);
                let unk = tokens
                    .iter()
                    .zip(&types)
                    .find(|(_, &ty)| ty as i64 == TOKEN_TYPE_UNKNOWN)
                    .map(|(t, _)| t.clone())
                    .unwrap_or_else(|| "<unk>".to_string());
                let bpe = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .unk_token(unk)
                    .fuse_unk(true)
                    .byte_fallback(true)
                    .build()
                    .map_err(build_err)?;
                let mut t = tokenizers::Tokenizer::new(bpe);
                let mut normalizers = vec![];
                if space_prefix {
                    normalizers.push(Prepend::new("\u{2581}".into()).into());
                }
                normalizers.push(Replace::new(" ", "\u{2581}").map_err(build_err)?.into());
                t.with_normalizer(Some(NormalizerSequence::new(normalizers)))
                    .map_err(build_err)?;
                let mut decoders = vec![
                    DecoderWrapper::Replace(Replace::new("\u{2581}", " ").map_err(build_err)?),
                    DecoderWrapper::ByteFallback(ByteFallback::new()),
                    DecoderWrapper::Fuse(Fuse::new()),
                ];
                // The prefix's space comes off the decoded text; there is none without it.
                if space_prefix {
                    decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
                }
                t.with_decoder(Some(DecoderSequence::new(decoders)));
                (t, true)
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };

        // Control and user-defined tokens are matched whole in the text, before the
        // pre-tokenizer, as llama.cpp's tokenizer_st_partition does.
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &ty)| matches!(ty as i64, TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED))
            .map(|(t, &ty)| AddedToken::from(t.clone(), ty as i64 == TOKEN_TYPE_CONTROL))
            .collect();
        inner.add_special_tokens(specials).map_err(build_err)?;

        let add_bos = h
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(default_add_bos);
        let add_eos = h.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        if add_eos && eos.is_none() {
            return Err(FormatError::BadMetadata {
                key: "tokenizer.ggml.add_eos_token".into(),
                reason: "true, but the model names no EOS token (tokenizer.ggml.eos_token_id)"
                    .into(),
            }
            .into());
        }
        let chat_template = h.get_str("tokenizer.chat_template")?.map(str::to_string);
        let mut end_of_generation: Vec<u32> = [eos, eot].into_iter().flatten().collect();
        for name in END_OF_TURN.iter().chain(&["<end_of_turn>"]) {
            if let Some(id) = tokens.iter().position(|t| t == name) {
                end_of_generation.push(id as u32);
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        Ok(Tokenizer {
            inner,
            bos,
            eos,
            add_bos,
            add_eos,
            end_of_generation,
            chat_template,
            warnings,
        })
    }

    /// Builds the tokenizer of a Hugging Face model directory (tokenizer.json, with
    /// tokenizer_config.json for the chat template and special tokens when present).
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| TokenizerError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let mut warnings = Vec::new();
        let config: serde_json::Value = match read_optional(&config_path)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| TokenizerError::File {
                path: config_path.display().to_string(),
                reason: e.to_string(),
            })?,
            None => {
                warnings.push(
                    "tokenizer_config.json not found: no chat template, and no BOS or EOS \
                     token named"
                        .to_string(),
                );
                serde_json::Value::Null
            }
        };
        let token_named = |key: &str| -> Option<u32> {
            let v = config.get(key)?;
            let text = v
                .as_str()
                .or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            inner.token_to_id(text)
        };
        let bos = token_named("bos_token");
        let eos = token_named("eos_token");
        // transformers (4.47 on) saves the template as chat_template.jinja beside the
        // tokenizer and reads that file before tokenizer_config.json's field.
        let chat_template = match read_optional(&dir.join("chat_template.jinja"))? {
            Some(t) => Some(t),
            None => match config.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Array(list)) => {
                    let named = |t: &serde_json::Value| {
                        t.get("name").and_then(|n| n.as_str()).map(str::to_string)
                    };
                    let default = list
                        .iter()
                        .find(|t| named(t).as_deref() == Some("default"))
                        .and_then(|t| t.get("template").and_then(|s| s.as_str()));
                    if default.is_none() {
                        let names: Vec<String> = list.iter().filter_map(named).collect();
                        warnings.push(format!(
                            "tokenizer_config.json's chat templates ({}) have none named \
                                 \"default\": no chat template is used",
                            names.join(", ")
                        ));
                    }
                    default.map(str::to_string)
                }
                _ => None,
            },
        };
        let mut end_of_generation: Vec<u32> = eos.into_iter().collect();
        for name in END_OF_TURN {
            if let Some(id) = inner.token_to_id(name) {
                end_of_generation.push(id);
            }
        }
        end_of_generation.extend(generation_eos_ids(dir, inner.get_vocab_size(true))?);
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        // tokenizer.json's post-processor adds BOS itself where the model wants it.
        Ok(Tokenizer {
            inner,
            bos,
            eos,
            add_bos: false,
            add_eos: false,
            end_of_generation,
            chat_template,
            warnings,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes text. With `add_special`, BOS is prepended when the model asks for it.
    /// Special tokens written in the text (e.g. `<|im_start|>`) are always recognised.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode(text, add_special).map_err(build_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special && self.add_bos {
            if let Some(bos) = self.bos {
                ids.push(bos);
            }
        }
        ids.extend_from_slice(enc.get_ids());
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner.decode(ids, false).map_err(build_err)
    }

    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }

    /// A streaming decoder: feed ids one at a time, get text as soon as it is complete
    /// UTF-8 (multi-byte characters split over tokens are held back until whole).
    pub fn stream(&self) -> TokenStream<'_> {
        TokenStream {
            tokenizer: self,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }
}

/// Decodes only a window of the latest tokens a push, not all of them: decoding everything
/// again made a push cost O(tokens so far): 222 µs after 2048 tokens against 0.87 µs now
/// (`cargo bench -p greta-model --bench token_stream`), where SmolLM2's whole GPU decode
/// step is 378 µs (the GPU decodes a step ahead while the host streams, so the old cost
/// hid under the step until it outgrew it, past ~3000 tokens). The window starts one
/// emission back (`prefix`), so that a decoder rule applied to the first token of a decode
/// (SentencePiece strips its leading space) applies to both texts compared, and the new text
/// is what `ids[prefix..]` decodes to beyond `ids[prefix..read]`.
pub struct TokenStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    /// Where the window starts: the start of the emission before the last.
    prefix: usize,
    /// The end of what has been emitted.
    read: usize,
}

impl TokenStream<'_> {
    /// Adds a token; returns the new text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let done = self.tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let text = self.tokenizer.decode(&self.ids[self.prefix..])?;
        // An incomplete UTF-8 sequence decodes to U+FFFD at the end: wait for more tokens.
        if text.ends_with('\u{FFFD}')
            || text.len() <= done.len()
            || !text.is_char_boundary(done.len())
        {
            return Ok(None);
        }
        let new = text[done.len()..].to_string();
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(Some(new))
    }
}

/// A Hugging Face directory's optional file: None where it does not exist; any other
/// failure to read it is an error naming it.
fn read_optional(path: &Path) -> Result<Option<String>, TokenizerError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TokenizerError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// generation_config.json's `eos_token_id` (one id or a list) in a Hugging Face model
/// directory: where transformers' generate() stops (Llama 3.1 lists <|end_of_text|>,
/// <|eom_id|> and <|eot_id|>). None without the file; an id outside the vocabulary, or a
/// file that cannot be read or parsed, is an error naming it.
fn generation_eos_ids(dir: &Path, vocab: usize) -> Result<Vec<u32>, TokenizerError> {
    let path = dir.join("generation_config.json");
    let bad = |reason: String| TokenizerError::File {
        path: path.display().to_string(),
        reason,
    };
    let Some(text) = read_optional(&path)? else {
        return Ok(vec![]);
    };
    let j: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let ids = match j.get("eos_token_id") {
        None | Some(serde_json::Value::Null) => vec![],
        Some(serde_json::Value::Array(list)) => list.clone(),
        Some(one) => vec![one.clone()],
    };
    ids.iter()
        .map(|v| {
            v.as_u64()
                .filter(|&id| (id as usize) < vocab)
                .map(|id| id as u32)
                .ok_or_else(|| bad(format!("eos_token_id {v} is not a token id")))
        })
        .collect()
}

/// SentencePiece vocabularies in GGUF carry scores, not merges. llama.cpp merges the
/// adjacent pair whose concatenation is a token with the highest score; ranking each
/// possible (left, right) split of every token by that token's score gives BPE the same order.
fn merges_from_scores(tokens: &[String], scores: &[f64], types: &[f64]) -> Vec<(String, String)> {
    let index: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut ranked: Vec<(f64, usize, String, String)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        if types.get(id).copied().unwrap_or(1.0) as i64 != 1 {
            continue;
        }
        for (split, _) in tok.char_indices().skip(1) {
            let (l, r) = tok.split_at(split);
            if index.contains_key(l) && index.contains_key(r) {
                ranked.push((
                    scores.get(id).copied().unwrap_or(0.0),
                    id,
                    l.to_string(),
                    r.to_string(),
                ));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, _, l, r)| (l, r)).collect()
}
