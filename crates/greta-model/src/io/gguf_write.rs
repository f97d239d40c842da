//! Writing a Llama model as GGUF (v3), so that other engines (llama.cpp) run exactly the
//! weights GRETA runs: `greta bench --write-gguf`. Matrices are written in their storage
//! (f16 for synthetic models, blocks as loaded otherwise), norms as f32. The vocabulary is a
//! placeholder SentencePiece one (`<unk>`, `<s>`, `</s>`, the 256 byte tokens, then `t<i>`):
//! benchmarks feed token ids, not text.

use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use crate::io::quant::GgmlType;
use crate::llama::config::{LlamaConfig, RopeStyle};
use crate::llama::weights::{LlamaWeights, Matrix, Storage};

const ALIGN: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("cannot write GGUF: {0}")]
    Unsupported(String),
}

enum Val<'a> {
    U32(u32),
    F32(f32),
    Str(&'a str),
    Strs(Vec<String>),
    F32s(Vec<f32>),
    I32s(Vec<i32>),
}

struct Out<W: Write> {
    w: W,
}

impl<W: Write> Out<W> {
    fn u32(&mut self, v: u32) -> std::io::Result<()> {
        self.w.write_all(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.w.write_all(&v.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> std::io::Result<()> {
        self.u64(s.len() as u64)?;
        self.w.write_all(s.as_bytes())
    }
    fn kv(&mut self, key: &str, v: &Val) -> std::io::Result<()> {
        self.str(key)?;
        match v {
            Val::U32(x) => {
                self.u32(4)?;
                self.u32(*x)
            }
            Val::F32(x) => {
                self.u32(6)?;
                self.w.write_all(&x.to_le_bytes())
            }
            Val::Str(s) => {
                self.u32(8)?;
                self.str(s)
            }
            Val::Strs(v) => {
                self.u32(9)?;
                self.u32(8)?;
                self.u64(v.len() as u64)?;
                v.iter().try_for_each(|s| self.str(s))
            }
            Val::F32s(v) => {
                self.u32(9)?;
                self.u32(6)?;
                self.u64(v.len() as u64)?;
                v.iter()
                    .try_for_each(|x| self.w.write_all(&x.to_le_bytes()))
            }
            Val::I32s(v) => {
                self.u32(9)?;
                self.u32(5)?;
                self.u64(v.len() as u64)?;
                v.iter()
                    .try_for_each(|x| self.w.write_all(&x.to_le_bytes()))
            }
        }
    }
}

/// One tensor to write: its GGUF name, dims (ne0 = the row length first), type and bytes.
struct Tensor<'a> {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    bytes: std::borrow::Cow<'a, [u8]>,
}

fn matrix(name: String, m: &Matrix) -> Tensor<'_> {
    let (ty, bytes) = match &m.storage {
        Storage::Blocks { ty, bytes } => (*ty, std::borrow::Cow::Borrowed(bytes.as_slice())),
        Storage::F32(v) => (
            GgmlType::F32,
            std::borrow::Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ),
    };
    Tensor {
        name,
        dims: vec![m.cols as u64, m.rows as u64],
        ty,
        bytes,
    }
}

fn vector(name: String, v: &[f32]) -> Tensor<'_> {
    Tensor {
        name,
        dims: vec![v.len() as u64],
        ty: GgmlType::F32,
        bytes: std::borrow::Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
    }
}

/// The placeholder vocabulary: ids 0..3 special, 3..259 bytes, then plain pieces.
pub(crate) fn vocab(n: usize) -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    while tokens.len() < n {
        tokens.push(format!("t{}", tokens.len()));
        types.push(1);
    }
    tokens.truncate(n);
    types.truncate(n);
    let scores = (0..n).map(|i| -(i as f32)).collect();
    (tokens, scores, types)
}

/// Writes `cfg` + `w` to `path` as a GGUF v3 `llama` model; `progress(done, total)` per tensor.
pub fn write_llama(
    path: &Path,
    cfg: &LlamaConfig,
    w: &LlamaWeights,
    name: &str,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<u64, WriteError> {
    if cfg.rope_style != RopeStyle::AdjacentPairs {
        return Err(WriteError::Unsupported(
            "the model pairs RoPE dimensions as Hugging Face does (rotate_half); GGUF's llama architecture pairs adjacent ones, and the Q/K rows would need permuting".into(),
        ));
    }
    if cfg.rope_scaling.is_some() || w.rope_freq_factors.is_some() {
        return Err(WriteError::Unsupported(
            "Llama 3 RoPE scaling is not written".into(),
        ));
    }
    if cfg.vocab_size < 259 {
        return Err(WriteError::Unsupported(format!(
            "vocabulary of {} tokens; the placeholder SentencePiece vocabulary needs at least 259",
            cfg.vocab_size
        )));
    }
    let io = |error| WriteError::Io {
        path: path.display().to_string(),
        error,
    };
    let mut tensors = vec![matrix("token_embd.weight".into(), &w.token_embd)];
    for (i, l) in w.layers.iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        tensors.push(vector(n("attn_norm"), &l.attn_norm));
        tensors.push(matrix(n("attn_q"), &l.wq));
        tensors.push(matrix(n("attn_k"), &l.wk));
        tensors.push(matrix(n("attn_v"), &l.wv));
        tensors.push(matrix(n("attn_output"), &l.wo));
        tensors.push(vector(n("ffn_norm"), &l.ffn_norm));
        tensors.push(matrix(n("ffn_gate"), &l.w_gate));
        tensors.push(matrix(n("ffn_up"), &l.w_up));
        tensors.push(matrix(n("ffn_down"), &l.w_down));
    }
    tensors.push(vector("output_norm.weight".into(), &w.output_norm));
    if let Some(o) = &w.output {
        tensors.push(matrix("output.weight".into(), o));
    }
    let (tokens, scores, types) = vocab(cfg.vocab_size);
    let u = |v: usize| Val::U32(v as u32);
    let kvs: Vec<(&str, Val)> = vec![
        ("general.architecture", Val::Str("llama")),
        ("general.name", Val::Str(name)),
        ("general.file_type", Val::U32(1)),
        ("general.alignment", Val::U32(ALIGN as u32)),
        ("llama.vocab_size", u(cfg.vocab_size)),
        ("llama.context_length", u(cfg.max_context)),
        ("llama.embedding_length", u(cfg.hidden)),
        ("llama.block_count", u(cfg.n_layers)),
        ("llama.feed_forward_length", u(cfg.intermediate)),
        ("llama.attention.head_count", u(cfg.n_heads)),
        ("llama.attention.head_count_kv", u(cfg.n_kv_heads)),
        ("llama.attention.key_length", u(cfg.head_dim)),
        ("llama.attention.value_length", u(cfg.head_dim)),
        ("llama.rope.dimension_count", u(cfg.head_dim)),
        ("llama.rope.freq_base", Val::F32(cfg.rope_theta as f32)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Val::F32(cfg.rms_eps),
        ),
        ("tokenizer.ggml.model", Val::Str("llama")),
        ("tokenizer.ggml.tokens", Val::Strs(tokens)),
        ("tokenizer.ggml.scores", Val::F32s(scores)),
        ("tokenizer.ggml.token_type", Val::I32s(types)),
        ("tokenizer.ggml.unknown_token_id", Val::U32(0)),
        ("tokenizer.ggml.bos_token_id", Val::U32(1)),
        ("tokenizer.ggml.eos_token_id", Val::U32(2)),
    ];
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = Out {
        w: BufWriter::with_capacity(1 << 22, file),
    };
    let header = (|| -> std::io::Result<()> {
        out.w.write_all(b"GGUF")?;
        out.u32(3)?;
        out.u64(tensors.len() as u64)?;
        out.u64(kvs.len() as u64)?;
        for (k, v) in &kvs {
            out.kv(k, v)?;
        }
        let mut offset = 0u64;
        for t in &tensors {
            out.str(&t.name)?;
            out.u32(t.dims.len() as u32)?;
            for &d in &t.dims {
                out.u64(d)?;
            }
            out.u32(t.ty.id())?;
            out.u64(offset)?;
            offset = (offset + t.bytes.len() as u64).div_ceil(ALIGN) * ALIGN;
        }
        Ok(())
    })();
    header.map_err(io)?;
    let pad = |out: &mut Out<BufWriter<std::fs::File>>| -> std::io::Result<()> {
        let at = out.w.stream_position()?;
        let n = at.div_ceil(ALIGN) * ALIGN - at;
        out.w.write_all(&vec![0u8; n as usize])
    };
    pad(&mut out).map_err(io)?;
    for (i, t) in tensors.iter().enumerate() {
        out.w.write_all(&t.bytes).map_err(io)?;
        pad(&mut out).map_err(io)?;
        progress(i + 1, tensors.len());
    }
    out.w.flush().map_err(io)?;
    out.w.stream_position().map_err(io)
}
