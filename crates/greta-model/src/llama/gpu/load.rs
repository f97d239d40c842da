//! Weights onto the device: a model's matrices as f16, its norms and RoPE frequencies as f32
//! (the FP8 copies for the prefill's low halves are `set_split_lo`'s, in mod.rs).

use super::*;

pub(super) fn to_f16(name: &str, v: &[f32]) -> Result<Vec<u16>> {
    v.iter()
        .map(|&x| {
            let h = f16::from_f32(x);
            if h.is_infinite() && x.is_finite() {
                return Err(GpuError::F16Overflow {
                    name: name.to_string(),
                    value: x,
                });
            }
            Ok(h.to_bits())
        })
        .collect()
}

pub(super) fn upload<T: Copy>(gpu: &Gpu, s: &Stream, v: &[T]) -> Result<DeviceBuffer<T>> {
    let mut b = gpu.alloc::<T>(v.len())?;
    b.copy_from_host(v, s)?;
    Ok(b)
}

/// A matrix as the GPU stores it: f16 bits, widened from its file type where it is not f16
/// already (an f16 overflow is an error, not an inf). An f16 file's bytes are those bits
/// already on a little-endian host and are borrowed, not copied (a 7B's 13 GB copied a
/// value at a time took ~10 s of its load).
pub fn f16_bits<'a>(name: &str, m: &'a Matrix) -> Result<Cow<'a, [u16]>> {
    if let Storage::Blocks {
        ty: GgmlType::F16,
        bytes,
    } = &m.storage
    {
        if cfg!(target_endian = "little") {
            if let Ok(bits) = bytemuck::try_cast_slice::<u8, u16>(bytes) {
                return Ok(Cow::Borrowed(bits));
            }
        }
        return Ok(Cow::Owned(
            bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect(),
        ));
    }
    let mut f = vec![0f32; m.rows * m.cols];
    m.view().rows_f32(0, m.cols, &mut f);
    to_f16(name, &f).map(Cow::Owned)
}

pub(super) fn upload_matrix(
    gpu: &Gpu,
    s: &Stream,
    id: &mut WeightsHasher,
    name: &str,
    m: &Matrix,
) -> Result<DeviceBuffer<u16>> {
    let bits = f16_bits(name, m)?;
    id.u16s(&bits);
    upload(gpu, s, &bits)
}

pub(super) fn upload_f32(
    gpu: &Gpu,
    s: &Stream,
    id: &mut WeightsHasher,
    v: &[f32],
) -> Result<DeviceBuffer<f32>> {
    id.f32s(v);
    upload(gpu, s, v)
}

impl GpuLlama {
    /// Loads the kernels for `gpu` (from `greta_kernels::gpu::default_dir()`) and uploads the
    /// model: what every front end does.
    pub fn load(
        gpu: &Gpu,
        config: LlamaConfig,
        w: &LlamaWeights,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let kernels = GpuKernels::load(gpu, &greta_kernels::gpu::default_dir())?;
        Self::upload(gpu.clone(), kernels, config, w, progress)
    }

    /// Uploads the model: matrices widened from their file type and stored as f16 (an f16
    /// overflow is an error, not an inf), norms as f32.
    pub fn upload(
        gpu: Gpu,
        kernels: GpuKernels,
        config: LlamaConfig,
        w: &LlamaWeights,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        check_attention_shape(config.n_heads, config.n_kv_heads, config.head_dim)?;
        let s = gpu.stream()?;
        let total = w.layers.len() + 2;
        // Hashed in upload order, which is fixed: the same weights give the same id.
        let mut id = WeightsHasher::new(&config);
        let token_embd = upload_matrix(&gpu, &s, &mut id, "token_embd", &w.token_embd)?;
        progress(1, total);
        let mut layers = Vec::with_capacity(w.layers.len());
        for (i, l) in w.layers.iter().enumerate() {
            let mut m = |n: &str, m: &Matrix| {
                upload_matrix(&gpu, &s, &mut id, &format!("layer {i} {n}"), m)
            };
            let (wq, wk, wv, wo) = (
                m("q", &l.wq)?,
                m("k", &l.wk)?,
                m("v", &l.wv)?,
                m("o", &l.wo)?,
            );
            let (w_gate, w_up, w_down) = (
                m("gate", &l.w_gate)?,
                m("up", &l.w_up)?,
                m("down", &l.w_down)?,
            );
            layers.push(GpuLayer {
                attn_norm: upload_f32(&gpu, &s, &mut id, &l.attn_norm)?,
                wq,
                wk,
                wv,
                wo,
                ffn_norm: upload_f32(&gpu, &s, &mut id, &l.ffn_norm)?,
                w_gate,
                w_up,
                w_down,
                fp8: std::sync::OnceLock::new(),
            });
            progress(i + 2, total);
        }
        let output = match &w.output {
            Some(o) => Some(upload_matrix(&gpu, &s, &mut id, "output", o)?),
            None => None,
        };
        let inv_freq = upload_f32(
            &gpu,
            &s,
            &mut id,
            &config.rope_inv_freq(w.rope_freq_factors.as_deref()),
        )?;
        let output_norm = upload_f32(&gpu, &s, &mut id, &w.output_norm)?;
        progress(total, total);
        Ok(GpuLlama {
            weights_id: id.finish(),
            split_inputs: SplitInputs::default(),
            gemm_tiles: GemmTiles::default(),
            gemv_rows: DEFAULT_GEMV_ROWS,
            ctx_combine: CtxCombine::default(),
            split_lo: SplitLo::F16,
            fp8_request: None,
            alloc: CachingAllocator::new(gpu.clone()),
            gpu,
            kernels,
            config,
            token_embd,
            layers,
            output_norm,
            output,
            inv_freq,
        })
    }
}
