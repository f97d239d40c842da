//! The weights of a Llama model, loaded from GGUF or safetensors into f32 for the CPU
//! backend, with every shape checked against the config.

use greta_kernels::cpu::WeightView;

use crate::io::gguf::GgufFile;
use crate::io::quant::GgmlType;
use crate::io::safetensors::SafetensorsCheckpoint;
use crate::io::FormatError;

use super::config::LlamaConfig;

/// A row-major matrix `[rows, cols]`: one output feature per row.
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub storage: Storage,
}

/// How a matrix is held in memory on the CPU.
pub enum Storage {
    F32(Vec<f32>),
    /// GGML quant blocks as in the file: the CPU kernels multiply them directly, with the
    /// exact dequantized values, reading 4 to 8 times fewer bytes than f32.
    Blocks {
        ty: GgmlType,
        bytes: Vec<u8>,
    },
}

impl Matrix {
    pub fn view(&self) -> WeightView<'_> {
        match &self.storage {
            Storage::F32(v) => WeightView::F32(v),
            Storage::Blocks { ty, bytes } => WeightView::Blocks { ty: *ty, bytes },
        }
    }

    /// Row `r` as f32 (an embedding lookup).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        self.view().rows_f32(r, self.cols, out);
    }
}

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Matrix,
    pub w_up: Matrix,
    pub w_down: Matrix,
}

pub struct LlamaWeights {
    pub token_embd: Matrix,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>,
    /// None when the LM head is tied to the token embedding.
    pub output: Option<Matrix>,
    /// Per-frequency divisors of Llama 3 RoPE scaling, as llama.cpp's converter stores them.
    pub rope_freq_factors: Option<Vec<f32>>,
}

impl LlamaWeights {
    pub fn lm_head(&self) -> &Matrix {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }
}

/// Where tensors come from: each source names its tensors its own way.
pub trait TensorSource {
    fn has(&self, name: &str) -> bool;
    /// Every tensor the source holds.
    fn names(&self) -> Vec<String>;
    fn read(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), FormatError>;
    /// A matrix in the storage the CPU kernels read best; f32 unless overridden.
    fn read_matrix(&self, name: &str) -> Result<(Vec<usize>, Storage), FormatError> {
        self.read(name).map(|(shape, v)| (shape, Storage::F32(v)))
    }
}

/// The per-stage names of a weight file layout.
pub struct TensorNames {
    pub token_embd: &'static str,
    pub output_norm: &'static str,
    pub output: &'static str,
    pub layer: fn(usize, LayerTensor) -> String,
}

#[derive(Clone, Copy)]
pub enum LayerTensor {
    AttnNorm,
    Q,
    K,
    V,
    O,
    FfnNorm,
    Gate,
    Up,
    Down,
}

impl LayerTensor {
    pub const ALL: [LayerTensor; 9] = [
        LayerTensor::AttnNorm,
        LayerTensor::Q,
        LayerTensor::K,
        LayerTensor::V,
        LayerTensor::O,
        LayerTensor::FfnNorm,
        LayerTensor::Gate,
        LayerTensor::Up,
        LayerTensor::Down,
    ];
}

pub const GGUF_NAMES: TensorNames = TensorNames {
    token_embd: "token_embd.weight",
    output_norm: "output_norm.weight",
    output: "output.weight",
    layer: |i, t| {
        let s = match t {
            LayerTensor::AttnNorm => "attn_norm",
            LayerTensor::Q => "attn_q",
            LayerTensor::K => "attn_k",
            LayerTensor::V => "attn_v",
            LayerTensor::O => "attn_output",
            LayerTensor::FfnNorm => "ffn_norm",
            LayerTensor::Gate => "ffn_gate",
            LayerTensor::Up => "ffn_up",
            LayerTensor::Down => "ffn_down",
        };
        format!("blk.{i}.{s}.weight")
    },
};

pub const HF_NAMES: TensorNames = TensorNames {
    token_embd: "model.embed_tokens.weight",
    output_norm: "model.norm.weight",
    output: "lm_head.weight",
    layer: |i, t| {
        let s = match t {
            LayerTensor::AttnNorm => "input_layernorm",
            LayerTensor::Q => "self_attn.q_proj",
            LayerTensor::K => "self_attn.k_proj",
            LayerTensor::V => "self_attn.v_proj",
            LayerTensor::O => "self_attn.o_proj",
            LayerTensor::FfnNorm => "post_attention_layernorm",
            LayerTensor::Gate => "mlp.gate_proj",
            LayerTensor::Up => "mlp.up_proj",
            LayerTensor::Down => "mlp.down_proj",
        };
        format!("model.layers.{i}.{s}.weight")
    },
};

impl TensorSource for GgufFile {
    fn has(&self, name: &str) -> bool {
        self.header.tensor(name).is_some()
    }
    fn names(&self) -> Vec<String> {
        self.header.tensors.iter().map(|t| t.name.clone()).collect()
    }
    fn read(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), FormatError> {
        self.tensor_f32(name)
    }
    fn read_matrix(&self, name: &str) -> Result<(Vec<usize>, Storage), FormatError> {
        let t = self
            .header
            .tensor(name)
            .ok_or_else(|| FormatError::MissingTensor(name.to_string()))?;
        if t.ggml_type.block_size() > 1 {
            Ok((
                t.shape(),
                Storage::Blocks {
                    ty: t.ggml_type,
                    bytes: self.tensor_bytes(t).to_vec(),
                },
            ))
        } else {
            self.read(name).map(|(shape, v)| (shape, Storage::F32(v)))
        }
    }
}

impl TensorSource for SafetensorsCheckpoint {
    fn has(&self, name: &str) -> bool {
        self.contains(name)
    }
    fn names(&self) -> Vec<String> {
        SafetensorsCheckpoint::names(self)
            .map(str::to_string)
            .collect()
    }
    fn read(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), FormatError> {
        self.tensor_f32(name)
    }
}

fn matrix(
    src: &dyn TensorSource,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<Matrix, FormatError> {
    let (shape, storage) = src.read_matrix(name)?;
    if shape != [rows, cols] {
        return Err(FormatError::ShapeMismatch {
            name: name.to_string(),
            found: shape,
            expected: vec![rows, cols],
        });
    }
    Ok(Matrix {
        rows,
        cols,
        storage,
    })
}

fn vector(src: &dyn TensorSource, name: &str, len: usize) -> Result<Vec<f32>, FormatError> {
    let (shape, data) = src.read(name)?;
    if shape != [len] {
        return Err(FormatError::ShapeMismatch {
            name: name.to_string(),
            found: shape,
            expected: vec![len],
        });
    }
    Ok(data)
}

/// How the CPU backend holds quantized weights: the route a backend audit compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuWeights {
    /// GGML blocks multiplied directly (AVX2 kernels where the CPU has them).
    #[default]
    Blocks,
    /// Everything widened to f32 at load: the plain reference route.
    F32,
    /// Matrices rounded to f16 and widened back, norms f32: the weights exactly as the GPU
    /// backend stores them, so a GPU audit against this route sees only the GPU's own
    /// rounding (f16 KV cache, summation order).
    F16Rounded,
}

impl CpuWeights {
    pub fn route_name(self) -> &'static str {
        match self {
            CpuWeights::Blocks => "cpu-blocks",
            CpuWeights::F32 => "cpu-f32-reference",
            CpuWeights::F16Rounded => "cpu-f16-weights-reference",
        }
    }
}

/// Restricts a source to f32 storage, with matrices optionally rounded through f16.
struct WidenToF32<'a> {
    src: &'a dyn TensorSource,
    round_matrices_to_f16: bool,
}

impl TensorSource for WidenToF32<'_> {
    fn has(&self, name: &str) -> bool {
        self.src.has(name)
    }
    fn names(&self) -> Vec<String> {
        self.src.names()
    }
    fn read(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), FormatError> {
        self.src.read(name)
    }
    fn read_matrix(&self, name: &str) -> Result<(Vec<usize>, Storage), FormatError> {
        let (shape, mut v) = self.src.read(name)?;
        if self.round_matrices_to_f16 {
            v.iter_mut()
                .for_each(|x| *x = half::f16::from_f32(*x).to_f32());
        }
        Ok((shape, Storage::F32(v)))
    }
}

impl LlamaWeights {
    /// The tensors of `src` that a Llama of `cfg` does not compute with, sorted: what
    /// loading would leave out. Not counted: Llama 3's `rope_freqs.weight` (read with the
    /// weights), the RoPE frequencies older Hugging Face checkpoints store
    /// (`*.rotary_emb.inv_freq`, computed here from the config as transformers does), and
    /// a stored LM head that the config ties to the embedding (transformers ties it too).
    pub fn unused_tensors(
        src: &dyn TensorSource,
        names: &TensorNames,
        cfg: &LlamaConfig,
    ) -> Vec<String> {
        let mut used: std::collections::HashSet<String> = [
            names.token_embd,
            names.output_norm,
            names.output,
            "rope_freqs.weight",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        for i in 0..cfg.n_layers {
            for t in LayerTensor::ALL {
                used.insert((names.layer)(i, t));
            }
        }
        let mut unused: Vec<String> = src
            .names()
            .into_iter()
            .filter(|n| !used.contains(n) && !n.ends_with(".rotary_emb.inv_freq"))
            .collect();
        unused.sort();
        unused
    }

    /// Loads every tensor with the storage `route` asks for.
    pub fn load_as(
        src: &dyn TensorSource,
        names: &TensorNames,
        cfg: &LlamaConfig,
        route: CpuWeights,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, FormatError> {
        match route {
            CpuWeights::Blocks => Self::load(src, names, cfg, progress),
            CpuWeights::F32 => Self::load(
                &WidenToF32 {
                    src,
                    round_matrices_to_f16: false,
                },
                names,
                cfg,
                progress,
            ),
            CpuWeights::F16Rounded => Self::load(
                &WidenToF32 {
                    src,
                    round_matrices_to_f16: true,
                },
                names,
                cfg,
                progress,
            ),
        }
    }

    /// Loads every tensor, checking each shape against `cfg`. `progress` is called with
    /// (tensors done, tensors total) so that long loads can show progress.
    pub fn load(
        src: &dyn TensorSource,
        names: &TensorNames,
        cfg: &LlamaConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, FormatError> {
        let (d, hd) = (cfg.hidden, cfg.head_dim);
        let total = 3 + LayerTensor::ALL.len() * cfg.n_layers;
        let mut done = 0;
        let mut tick = |progress: &mut dyn FnMut(usize, usize)| {
            done += 1;
            progress(done, total);
        };
        let token_embd = matrix(src, names.token_embd, cfg.vocab_size, d)?;
        tick(progress);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |t| (names.layer)(i, t);
            let layer = LayerWeights {
                attn_norm: vector(src, &n(LayerTensor::AttnNorm), d)?,
                wq: matrix(src, &n(LayerTensor::Q), cfg.n_heads * hd, d)?,
                wk: matrix(src, &n(LayerTensor::K), cfg.n_kv_heads * hd, d)?,
                wv: matrix(src, &n(LayerTensor::V), cfg.n_kv_heads * hd, d)?,
                wo: matrix(src, &n(LayerTensor::O), d, cfg.n_heads * hd)?,
                ffn_norm: vector(src, &n(LayerTensor::FfnNorm), d)?,
                w_gate: matrix(src, &n(LayerTensor::Gate), cfg.intermediate, d)?,
                w_up: matrix(src, &n(LayerTensor::Up), cfg.intermediate, d)?,
                w_down: matrix(src, &n(LayerTensor::Down), d, cfg.intermediate)?,
            };
            for _ in LayerTensor::ALL {
                tick(progress);
            }
            layers.push(layer);
        }
        let output_norm = vector(src, names.output_norm, d)?;
        tick(progress);
        let output = if cfg.tied_embeddings {
            None
        } else {
            Some(matrix(src, names.output, cfg.vocab_size, d)?)
        };
        tick(progress);
        let rope_freq_factors = if src.has("rope_freqs.weight") {
            Some(vector(src, "rope_freqs.weight", hd / 2)?)
        } else {
            None
        };
        Ok(LlamaWeights {
            token_embd,
            layers,
            output_norm,
            output,
            rope_freq_factors,
        })
    }
}
