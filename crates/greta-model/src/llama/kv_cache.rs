//! The KV cache: keys (after RoPE) and values of every past position, per layer, with an
//! explicit capacity. Writing past it is an error, never a silent truncation.

use greta_kernels::cpu::{self, AttentionShape, Probs};
use half::f16;
use half::slice::HalfFloatSliceExt;

#[derive(Debug, thiserror::Error)]
#[error(
    "the KV cache holds {capacity} positions; {used} are used and {requested} more were requested \
     (raise --ctx, up to the model's context, or shorten the prompt)"
)]
pub struct KvCacheFull {
    pub capacity: usize,
    pub used: usize,
    pub requested: usize,
}

/// What the cache stores keys and values as. Attention's arithmetic is f32 either way (the
/// values are widened exactly as they are read); f16 halves the cache's memory and the bytes
/// a decode step reads at long contexts, at the cost of one f16 rounding of each K and V
/// value, the GPU's cache's rounding (and llama.cpp's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvFormat {
    /// The reference: K and V exactly as computed.
    #[default]
    F32,
    F16,
}

impl KvFormat {
    pub fn bytes_per_value(self) -> usize {
        match self {
            KvFormat::F32 => 4,
            KvFormat::F16 => 2,
        }
    }
}

impl std::fmt::Display for KvFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvFormat::F32 => "f32",
            KvFormat::F16 => "f16",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown KV cache format {0:?}: f32 or f16")]
pub struct UnknownKvFormat(pub String);

impl std::str::FromStr for KvFormat {
    type Err = UnknownKvFormat;

    fn from_str(s: &str) -> Result<Self, UnknownKvFormat> {
        match s {
            "f32" => Ok(KvFormat::F32),
            "f16" => Ok(KvFormat::F16),
            other => Err(UnknownKvFormat(other.to_string())),
        }
    }
}

/// Keys and values of every layer, `[capacity, kv_row]` each, in one format.
enum Store {
    F32 { k: Vec<Vec<f32>>, v: Vec<Vec<f32>> },
    F16 { k: Vec<Vec<f16>>, v: Vec<Vec<f16>> },
}

pub struct KvCache {
    capacity: usize,
    row: usize,
    len: usize,
    store: Store,
}

impl KvCache {
    /// A cache for `capacity` positions of `n_layers` layers of `kv_row` values each.
    pub fn new(n_layers: usize, kv_row: usize, capacity: usize, format: KvFormat) -> Self {
        fn layers<T: Clone>(n: usize, len: usize, zero: T) -> Vec<Vec<T>> {
            (0..n).map(|_| vec![zero.clone(); len]).collect()
        }
        let len = capacity * kv_row;
        let store = match format {
            KvFormat::F32 => Store::F32 {
                k: layers(n_layers, len, 0f32),
                v: layers(n_layers, len, 0f32),
            },
            KvFormat::F16 => Store::F16 {
                k: layers(n_layers, len, f16::ZERO),
                v: layers(n_layers, len, f16::ZERO),
            },
        };
        KvCache {
            capacity,
            row: kv_row,
            len: 0,
            store,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Checks that `n` more positions fit, before any of them is computed.
    pub fn reserve(&self, n: usize) -> Result<(), KvCacheFull> {
        if self.len + n > self.capacity {
            return Err(KvCacheFull {
                capacity: self.capacity,
                used: self.len,
                requested: n,
            });
        }
        Ok(())
    }

    /// Stores rows `[t, kv_row]` of keys and values for `layer` at positions len..len+t
    /// (rounded to nearest even where the cache is f16).
    pub(crate) fn write(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let start = self.len * self.row;
        match &mut self.store {
            Store::F32 { k: ks, v: vs } => {
                ks[layer][start..start + k.len()].copy_from_slice(k);
                vs[layer][start..start + v.len()].copy_from_slice(v);
            }
            Store::F16 { k: ks, v: vs } => {
                ks[layer][start..start + k.len()].convert_from_f32_slice(k);
                vs[layer][start..start + v.len()].convert_from_f32_slice(v);
            }
        }
    }

    /// Attention of the rows `q` over this layer's cached positions (`cpu::attention_probs`
    /// on the cache's format).
    pub(crate) fn attend(
        &self,
        layer: usize,
        q: &[f32],
        out: &mut [f32],
        shape: AttentionShape,
        probs: Probs,
    ) {
        match &self.store {
            Store::F32 { k, v } => cpu::attention_probs(q, &k[layer], &v[layer], out, shape, probs),
            Store::F16 { k, v } => cpu::attention_probs(q, &k[layer], &v[layer], out, shape, probs),
        }
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Bytes held (keys and values of every layer).
    pub fn bytes(&self) -> usize {
        fn sum<T>(x: &[Vec<T>]) -> usize {
            x.iter().map(|l| l.len() * std::mem::size_of::<T>()).sum()
        }
        match &self.store {
            Store::F32 { k, v } => sum(k) + sum(v),
            Store::F16 { k, v } => sum(k) + sum(v),
        }
    }

    /// Forgets every position from `len` on (for re-evaluating a prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f16 cache stores each value as `f16::from_f32` rounds it (to nearest, ties to
    /// even: the GPU's `__float2half_rn`), whatever path the slice conversion takes,
    /// including ties, subnormals, overflow to infinity and the row after the first.
    #[test]
    fn the_f16_cache_rounds_each_value_to_nearest_even() {
        let row: Vec<f32> = (0..40)
            .map(|i| match i {
                0 => 1.0 + 2f32.powi(-11),       // a tie: rounds down to 1.0 (even)
                1 => 1.0 + 3.0 * 2f32.powi(-11), // a tie: rounds up
                2 => 1e-6,                       // an f16 subnormal
                3 => 70000.0,                    // past f16's largest: infinity
                _ => (i as f32 * 0.731).sin() * 10f32.powi(i % 5 - 2),
            })
            .collect();
        let mut cache = KvCache::new(2, 40, 3, KvFormat::F16);
        let other: Vec<f32> = row.iter().map(|x| -x).collect();
        cache.write(1, &other, &row);
        cache.advance(1);
        cache.write(1, &row, &other);
        let Store::F16 { k, v } = &cache.store else {
            panic!("an f16 cache")
        };
        for (i, &x) in row.iter().enumerate() {
            assert_eq!(
                k[1][40 + i].to_bits(),
                f16::from_f32(x).to_bits(),
                "k value {i}"
            );
            assert_eq!(v[1][i].to_bits(), f16::from_f32(x).to_bits(), "v value {i}");
        }
        assert_eq!(k[1][40].to_f32(), 1.0);
        assert!(k[1][43].is_infinite());
        assert_eq!(cache.bytes(), 2 * 2 * 3 * 40 * 2);
    }
}
