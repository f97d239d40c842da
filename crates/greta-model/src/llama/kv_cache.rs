//! The KV cache: keys (after RoPE) and values of every past position, per layer, with an
//! explicit capacity. Writing past it is an error, never a silent truncation.

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

pub struct KvCache {
    /// Round what is stored to f16, as the GPU's f16 cache does (the reference route of a
    /// GPU audit), so that the audit measures kernels rather than the storage format.
    round_to_f16: bool,
    capacity: usize,
    row: usize,
    len: usize,
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
}

impl KvCache {
    /// A cache for `capacity` positions of `n_layers` layers of `kv_row` floats each.
    pub fn new(n_layers: usize, kv_row: usize, capacity: usize) -> Self {
        KvCache {
            round_to_f16: false,
            capacity,
            row: kv_row,
            len: 0,
            k: (0..n_layers)
                .map(|_| vec![0.0; capacity * kv_row])
                .collect(),
            v: (0..n_layers)
                .map(|_| vec![0.0; capacity * kv_row])
                .collect(),
        }
    }

    /// The same cache, storing values rounded to f16 (held as f32).
    pub fn rounding_to_f16(mut self) -> Self {
        self.round_to_f16 = true;
        self
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

    /// Stores rows `[t, kv_row]` of keys and values for `layer` at positions len..len+t.
    pub(crate) fn write(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let start = self.len * self.row;
        self.k[layer][start..start + k.len()].copy_from_slice(k);
        self.v[layer][start..start + v.len()].copy_from_slice(v);
        if self.round_to_f16 {
            for x in self.k[layer][start..start + k.len()]
                .iter_mut()
                .chain(self.v[layer][start..start + v.len()].iter_mut())
            {
                *x = half::f16::from_f32(*x).to_f32();
            }
        }
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Bytes held (keys and values of every layer, f32).
    pub fn bytes(&self) -> usize {
        4 * (self.k.iter().map(Vec::len).sum::<usize>()
            + self.v.iter().map(Vec::len).sum::<usize>())
    }

    /// Forgets every position from `len` on (for re-evaluating a prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}
