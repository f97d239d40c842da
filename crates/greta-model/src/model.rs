//! Opening a model from a path: a GGUF file, or a Hugging Face directory
//! (config.json + safetensors + tokenizer.json).

use std::path::{Path, PathBuf};

use crate::io::gguf::GgufFile;
use crate::io::safetensors::SafetensorsCheckpoint;
use crate::io::FormatError;
use crate::llama::config::ConfigError;
use crate::llama::weights::{CpuWeights, LlamaWeights, GGUF_NAMES, HF_NAMES};
use crate::llama::{Llama, LlamaConfig};
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model file {0} does not exist")]
    NotFound(PathBuf),
    /// Names its file (`FormatError::in_file`, applied where it is made).
    #[error(transparent)]
    Format(FormatError),
    // The wrapped error is in the message, not also `source()` (see `FormatError`).
    #[error("{path}: {error}")]
    Config { path: PathBuf, error: ConfigError },
    #[error("{path}: {error}")]
    Tokenizer {
        path: PathBuf,
        error: TokenizerError,
    },
    #[error("{0} is neither a GGUF file nor a directory with config.json; accepted: a .gguf file or a Hugging Face model directory")]
    UnknownLayout(PathBuf),
}

/// Where the weights came from, for reports and traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Gguf,
    HuggingFace,
}

pub struct LoadedModel {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
    pub source: SourceKind,
    /// xxh3-64 of the weight file(s), hex.
    pub content_hash: String,
    /// What loading assumed or limited where the files did not match what greta computes
    /// (the tokenizer's assumptions, a sliding window cutting the context); the caller
    /// shows them.
    pub warnings: Vec<String>,
}

fn warnings(config: &LlamaConfig, tokenizer: &Tokenizer, unused: &[String]) -> Vec<String> {
    let mut w = tokenizer.warnings.clone();
    if !unused.is_empty() {
        w.push(format!(
            "{} checkpoint tensor(s) are not used by a llama model and are left out, as \
             transformers leaves them out: {}{}",
            unused.len(),
            unused[..unused.len().min(8)].join(", "),
            if unused.len() > 8 { ", ..." } else { "" }
        ));
    }
    if let Some(window) = config.sliding_window {
        w.push(format!(
            "the model attends to its last {window} keys (sliding_window), which greta does \
             not implement: contexts are limited to {window} tokens, where the window masks \
             nothing"
        ));
    }
    w
}

/// Loads the model and its tokenizer. `progress(done, total)` is called per tensor.
pub fn load(path: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<LoadedModel, LoadError> {
    load_as(path, CpuWeights::Blocks, progress)
}

/// Loads with an explicit CPU weight route (the backend audit loads both).
pub fn load_as(
    path: &Path,
    route: CpuWeights,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel, LoadError> {
    if !path.exists() {
        return Err(LoadError::NotFound(path.to_path_buf()));
    }
    let fmt = |e: FormatError| LoadError::Format(e.in_file(path));
    if path.is_dir() {
        let cfg_path = path.join("config.json");
        if !cfg_path.exists() {
            return Err(LoadError::UnknownLayout(path.to_path_buf()));
        }
        let config = LlamaConfig::from_hf_config(&cfg_path).map_err(|error| LoadError::Config {
            path: cfg_path.clone(),
            error,
        })?;
        let ckpt = SafetensorsCheckpoint::open_dir(path).map_err(fmt)?;
        // transformers' rule: a checkpoint tensor the model class does not use is left out
        // with a warning (greta's Llama computes what LlamaForCausalLM computes).
        let unused = LlamaWeights::unused_tensors(&ckpt, &HF_NAMES, &config);
        let weights =
            LlamaWeights::load_as(&ckpt, &HF_NAMES, &config, route, progress).map_err(fmt)?;
        let tokenizer = Tokenizer::from_hf_dir(path).map_err(|error| LoadError::Tokenizer {
            path: path.to_path_buf(),
            error,
        })?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let dir_err = |error| {
            fmt(FormatError::Io {
                path: path.to_path_buf(),
                error,
            })
        };
        let mut names: Vec<_> = std::fs::read_dir(path)
            .map_err(dir_err)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(dir_err)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        names.sort();
        for p in names {
            let bytes = std::fs::read(&p).map_err(|e| {
                fmt(FormatError::Io {
                    path: p.clone(),
                    error: e,
                })
            })?;
            hasher.update(&bytes);
        }
        return Ok(LoadedModel {
            warnings: warnings(&config, &tokenizer, &unused),
            model: Llama::new(config, weights),
            tokenizer,
            path: path.to_path_buf(),
            source: SourceKind::HuggingFace,
            content_hash: format!("{:016x}", hasher.digest()),
        });
    }
    let file = GgufFile::open(path).map_err(fmt)?;
    let config = LlamaConfig::from_gguf(&file.header).map_err(|error| LoadError::Config {
        path: path.to_path_buf(),
        error,
    })?;
    // A tensor greta does not compute makes the file an error: llama.cpp refuses the ones
    // its llama does not know and computes the optional ones (biases), so leaving either
    // out would compute something else than the file's model.
    let unused = LlamaWeights::unused_tensors(&file, &GGUF_NAMES, &config);
    if !unused.is_empty() {
        return Err(fmt(FormatError::UnusedTensors(unused)));
    }
    let weights =
        LlamaWeights::load_as(&file, &GGUF_NAMES, &config, route, progress).map_err(fmt)?;
    let tokenizer = Tokenizer::from_gguf(&file.header).map_err(|error| LoadError::Tokenizer {
        path: path.to_path_buf(),
        error,
    })?;
    let content_hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(file.bytes()));
    Ok(LoadedModel {
        warnings: warnings(&config, &tokenizer, &[]),
        model: Llama::new(config, weights),
        tokenizer,
        path: path.to_path_buf(),
        source: SourceKind::Gguf,
        content_hash,
    })
}
