//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use greta_model::model::{self, LoadedModel};
use safetensors::SafeTensors;

/// The fixtures directory: this crate's, where it was built, unless GRETA_TEST_FIXTURES names
/// another (a test binary built in one tree and run in another: the GPU machine's variant
/// runs, tools/gpu/kernel_variants.sh).
pub fn fixtures() -> PathBuf {
    match std::env::var_os("GRETA_TEST_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// The default model (SmolLM2-135M-Instruct Q4_1), fetched on first use as `greta generate`
/// does; the tests that need it fail, not skip, when it cannot be had.
pub fn default_model() -> LoadedModel {
    let cache = greta_model::default_model::cache_dir();
    let path = greta_model::default_model::ensure(&cache, "python3", &mut |m| eprintln!("{m}"))
        .unwrap_or_else(|e| panic!("{e}"));
    load(&path)
}

pub fn load(path: &std::path::Path) -> LoadedModel {
    model::load(path, &mut |_, _| {}).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// Reads named f32 / i32 arrays from an oracle's safetensors file.
pub struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    pub fn open(path: &std::path::Path) -> Self {
        Expected {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }
    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (t.shape().to_vec(), v)
    }
    pub fn i32(&self, name: &str) -> Vec<i32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::I32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

pub fn argmax(row: &[f32]) -> usize {
    greta_model::generate::sampler::argmax(row) as usize
}
