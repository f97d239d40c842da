//! `--kv-cache`: what the CPU's KV cache stores, for every command that runs a model.

use anyhow::{bail, Result};
use clap::Args;
use greta_hal::Backend;
use greta_model::llama::KvFormat;

#[derive(Args, Clone, Copy)]
pub(crate) struct KvCacheArgs {
    /// The KV cache's element type on the CPU: f32 (the default: the reference's, K and V
    /// exactly as computed) or f16 (half the cache's memory, and of the bytes each decode
    /// step reads at long contexts; each K and V value rounded once, as the GPU's cache,
    /// always f16, and llama.cpp's default hold them; attention still computes in f32).
    #[arg(long, value_name = "f32|f16")]
    kv_cache: Option<KvFormat>,
}

impl KvCacheArgs {
    /// The format for a run on `backend`: the GPU's cache is f16, and asking it for f32 is
    /// an error rather than a silent f16.
    pub fn format(&self, backend: &Backend) -> Result<KvFormat> {
        match (backend, self.kv_cache) {
            (Backend::Cpu, f) => Ok(f.unwrap_or(KvFormat::F32)),
            (Backend::Gpu(_), None | Some(KvFormat::F16)) => Ok(KvFormat::F16),
            (Backend::Gpu(_), Some(f)) => {
                bail!("--kv-cache {f}: the GPU's KV cache holds f16 only (f32 is a CPU option)")
            }
        }
    }
}
