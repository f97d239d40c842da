//! File formats: GGUF, safetensors, GGML quant types. Pure data, no model logic, so that
//! each can be fuzzed and tested alone.

pub mod gguf;
pub mod gguf_write;
pub mod hf_write;
pub mod quant;
pub mod safetensors;

use std::path::{Path, PathBuf};

/// Errors reading a model file. Each names the field, tensor or offset that was wrong.
///
/// Like every error of this workspace, a variant that wraps another error says it in its
/// own message and does not also return it as `source()`: a printer of the chain (`{:#}`)
/// would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {inner}")]
    InFile {
        path: PathBuf,
        inner: Box<FormatError>,
    },
    #[error(
        "truncated file: {what} at byte {offset} needs {needed} bytes, only {available} remain"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("corrupt file: {what} at byte {offset}: {reason}")]
    Corrupt {
        what: String,
        offset: u64,
        reason: String,
    },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(
        "tensor {tensor:?} has unknown GGML type id {id}; accepted: F32(0) F16(1) Q4_0(2) Q4_1(3) \
         Q5_0(6) Q5_1(7) Q8_0(8) Q4_K(12) Q5_K(13) Q6_K(14) BF16(30)"
    )]
    UnknownQuantType { id: u32, tensor: String },
    #[error("metadata key {key:?}: {reason}")]
    BadMetadata { key: String, reason: String },
    #[error("required metadata key {0:?} is missing")]
    MissingMetadata(String),
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
    #[error(
        "{} tensor(s) that greta's llama does not compute: {}{}; refused rather than left out \
         (llama.cpp refuses tensors its llama does not know, and computes the optional ones, \
         such as the products' biases, that greta has no stage for)",
        .0.len(),
        .0.iter().take(4).map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "),
        if .0.len() > 4 { ", ..." } else { "" }
    )]
    UnusedTensors(Vec<String>),
    #[error("tensor {name:?} has shape {found:?}, but the model config implies {expected:?}")]
    ShapeMismatch {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor {name:?}: bf16 value {value} at index {index} does not fit in {target}")]
    Overflow {
        name: String,
        value: f32,
        index: usize,
        target: &'static str,
    },
}

impl FormatError {
    /// Names the file the error came from, once.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            e @ (FormatError::Io { .. } | FormatError::InFile { .. }) => e,
            e => FormatError::InFile {
                path: path.to_path_buf(),
                inner: Box::new(e),
            },
        }
    }
}
