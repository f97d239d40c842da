//! A name for the numbers a GPU model computes with: the 128-bit xxh3 of its config and of
//! every tensor as uploaded (f16 matrices after any widening, f32 norms and RoPE
//! frequencies). Two loads of the same weights get the same id whatever file type they came
//! from (a Q4_1 GGUF and the f16 copy of what it widens to are the same model to the GPU);
//! any changed value gives another. The numerics calibration (`crate::calibrate`) is kept
//! under it, so that a calibration is used only for the weights it audited.

use xxhash_rust::xxh3::Xxh3;

use crate::llama::config::LlamaConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeightsId(pub u128);

impl std::fmt::Display for WeightsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for WeightsId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.len() == 32 {
            true => u128::from_str_radix(s, 16)
                .map(WeightsId)
                .map_err(|e| format!("{s:?}: {e}")),
            false => Err(format!("{s:?}: a weights id is 32 hex digits")),
        }
    }
}

/// Feeds tensors in upload order (`GpuLlama::upload`); values as little-endian bytes.
pub(super) struct WeightsHasher {
    h: Xxh3,
    buf: Vec<u8>,
}

/// Values staged a chunk at a time, so that hashing allocates nothing per tensor.
const CHUNK: usize = 1 << 14;

impl WeightsHasher {
    pub(super) fn new(config: &LlamaConfig) -> Self {
        let mut h = Xxh3::new();
        // The config's every field (shapes, eps, RoPE) is part of what the weights mean.
        h.update(format!("{config:?}").as_bytes());
        WeightsHasher {
            h,
            buf: Vec::with_capacity(CHUNK * 4),
        }
    }

    pub(super) fn u16s(&mut self, v: &[u16]) {
        self.values(v, u16::to_le_bytes);
    }

    pub(super) fn f32s(&mut self, v: &[f32]) {
        self.values(v, f32::to_le_bytes);
    }

    /// The length, then the values' little-endian bytes: on a little-endian host the values'
    /// memory as it is (xxh3 at memory speed: a 7B's 13 GB staged a value at a time took
    /// ~15 s of its load), elsewhere staged a chunk at a time. The same bytes either way, so
    /// the same id.
    fn values<T: bytemuck::Pod, const N: usize>(&mut self, v: &[T], bytes: fn(T) -> [u8; N]) {
        self.h.update(&(v.len() as u64).to_le_bytes());
        if cfg!(target_endian = "little") {
            self.h.update(bytemuck::cast_slice(v));
            return;
        }
        for c in v.chunks(CHUNK) {
            self.buf.clear();
            self.buf.extend(c.iter().flat_map(|&x| bytes(x)));
            self.h.update(&self.buf);
        }
    }

    pub(super) fn finish(self) -> WeightsId {
        WeightsId(self.h.digest128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    fn id(f: impl FnOnce(&mut WeightsHasher)) -> WeightsId {
        let mut h = WeightsHasher::new(&synthetic::config("tiny").unwrap());
        f(&mut h);
        h.finish()
    }

    #[test]
    fn the_id_follows_every_value_and_the_tensor_boundaries() {
        let a: Vec<u16> = (0..40_000u32).map(|i| i as u16).collect();
        let base = id(|h| h.u16s(&a));
        assert_eq!(base, id(|h| h.u16s(&a)), "the same values, the same id");
        let mut b = a.clone();
        b[33_000] ^= 1; // past the first chunk
        assert_ne!(base, id(|h| h.u16s(&b)));
        // The same bytes cut into two tensors are another model.
        assert_ne!(
            base,
            id(|h| {
                h.u16s(&a[..100]);
                h.u16s(&a[100..]);
            })
        );
        // The config is part of it.
        let mut other = WeightsHasher::new(&synthetic::config("smollm2-135m").unwrap());
        other.u16s(&a);
        assert_ne!(base, other.finish());
        assert_ne!(id(|h| h.f32s(&[1.0, 2.0])), id(|h| h.f32s(&[1.0, 2.5])));
    }

    /// The id is xxh3-128 of the bytes the module doc names (config, then each tensor's
    /// length and little-endian values), computed here the plain way, a value at a time:
    /// the hasher's fast path must hash exactly these bytes, or every kept calibration
    /// would silently stop matching its weights.
    #[test]
    fn the_id_is_xxh3_128_of_the_config_and_each_tensors_length_and_le_values() {
        let c = synthetic::config("tiny").unwrap();
        let (a, b): (Vec<u16>, Vec<f32>) = (
            (0..20_000u32).map(|i| (i * 7) as u16).collect(),
            vec![1.5, -2.25, 3e-8],
        );
        let mut bytes = format!("{c:?}").into_bytes();
        bytes.extend((a.len() as u64).to_le_bytes());
        bytes.extend(a.iter().flat_map(|x| x.to_le_bytes()));
        bytes.extend((b.len() as u64).to_le_bytes());
        bytes.extend(b.iter().flat_map(|x| x.to_le_bytes()));
        let got = id(|h| {
            h.u16s(&a);
            h.f32s(&b);
        });
        assert_eq!(got, WeightsId(xxhash_rust::xxh3::xxh3_128(&bytes)));
    }

    /// What makes one id for a model whatever its CPU route: `GpuLlama::upload` hashes the
    /// f16 values it uploads (`f16_bits`) and the f32 norms, and a Q8_0 file loaded as
    /// blocks or as f16-rounded f32 gives the same of both (the GPU test checks the ids).
    #[test]
    fn a_model_loaded_as_blocks_or_f16_rounded_uploads_the_same_values() {
        use crate::llama::gpu::f16_bits;
        use crate::llama::weights::{CpuWeights, LlamaWeights, Matrix};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny/gqa4-llama3-rope/model-q8_0.gguf");
        let load = |route| {
            crate::model::load_as(&path, route, &mut |_, _| {})
                .unwrap()
                .model
        };
        let (a, b) = (load(CpuWeights::Blocks), load(CpuWeights::F16Rounded));
        assert_eq!(format!("{:?}", a.config), format!("{:?}", b.config));
        fn matrices(w: &LlamaWeights) -> Vec<&Matrix> {
            let mut v = vec![&w.token_embd];
            v.extend(w.output.as_ref());
            for l in &w.layers {
                v.extend([&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
            }
            v
        }
        let (ma, mb) = (matrices(&a.weights), matrices(&b.weights));
        assert_eq!(ma.len(), mb.len());
        for (x, y) in ma.iter().zip(&mb) {
            let bits = f16_bits("m", x).unwrap();
            assert_eq!(bits, f16_bits("m", y).unwrap());
            assert!(bits.iter().any(|&h| h != 0));
        }
        for (x, y) in a.weights.layers.iter().zip(&b.weights.layers) {
            assert_eq!(x.attn_norm, y.attn_norm);
            assert_eq!(x.ffn_norm, y.ffn_norm);
        }
        assert_eq!(a.weights.output_norm, b.weights.output_norm);
    }

    #[test]
    fn ids_print_and_parse_as_32_hex_digits() {
        let x = WeightsId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(x.to_string(), "0123456789abcdef0011223344556677");
        assert_eq!(x.to_string().parse::<WeightsId>(), Ok(x));
        assert!("abc"
            .parse::<WeightsId>()
            .unwrap_err()
            .contains("32 hex digits"));
        assert!("g123456789abcdef0011223344556677"
            .parse::<WeightsId>()
            .is_err());
    }
}
