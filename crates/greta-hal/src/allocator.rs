//! A caching device allocator. `hipMalloc`/`cuMemAlloc` and their frees are slow and can
//! synchronise the device, so blocks that are given back are kept by size class and handed
//! out again; `trim` returns them to the runtime. Sequences (KV cache, activations, scratch)
//! are allocated through it, so a second sequence of the same shape (a server's next request,
//! the next repetition of a benchmark, the other side of an audit) costs no runtime call.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use hiprt::{DeviceBuffer, Gpu, HipError};

/// Requests round up to a multiple of 512 bytes below 1 MiB and of 2 MiB above, so that
/// buffers of nearly the same size share blocks without wasting more than a few percent.
pub fn size_class(bytes: usize) -> usize {
    const SMALL: usize = 512;
    const LARGE: usize = 2 << 20;
    let b = bytes.max(1);
    if b < (1 << 20) {
        b.div_ceil(SMALL) * SMALL
    } else {
        b.div_ceil(LARGE) * LARGE
    }
}

/// What the allocator has done, in bytes and calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Blocks obtained from the runtime.
    pub runtime_allocs: u64,
    /// Requests served from cached blocks.
    pub reuses: u64,
    pub in_use_bytes: usize,
    pub cached_bytes: usize,
    /// The most device memory held at once (in use + cached).
    pub peak_bytes: usize,
}

#[derive(Default)]
struct Pool {
    free: BTreeMap<usize, Vec<DeviceBuffer<u8>>>,
    stats: AllocStats,
}

#[derive(Clone)]
pub struct CachingAllocator {
    gpu: Gpu,
    pool: Arc<Mutex<Pool>>,
}

impl CachingAllocator {
    pub fn new(gpu: Gpu) -> Self {
        CachingAllocator {
            gpu,
            pool: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // A panic while the lock was held leaves consistent data (every update is one
        // statement), so a poisoned lock is still usable.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `len` elements of `T`, uninitialised (a reused block holds what its last user wrote).
    pub fn alloc<T: Copy>(&self, len: usize) -> Result<Pooled<T>, HipError> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| HipError::Invalid(format!("{len} elements overflow")))?;
        let class = size_class(bytes);
        let cached = {
            let mut p = self.lock();
            let block = p.free.get_mut(&class).and_then(Vec::pop);
            if block.is_some() {
                p.stats.reuses += 1;
                p.stats.cached_bytes -= class;
                p.stats.in_use_bytes += class;
            }
            block
        };
        let block = match cached {
            Some(b) => b,
            None => {
                let b = self.gpu.alloc::<u8>(class)?;
                let mut p = self.lock();
                p.stats.runtime_allocs += 1;
                p.stats.in_use_bytes += class;
                p.stats.peak_bytes = p
                    .stats
                    .peak_bytes
                    .max(p.stats.in_use_bytes + p.stats.cached_bytes);
                b
            }
        };
        // SAFETY: the block holds `class >= bytes` bytes.
        let buf = unsafe { block.reinterpret::<T>(len) };
        Ok(Pooled {
            buf: Some(buf),
            class,
            pool: self.pool.clone(),
        })
    }

    pub fn stats(&self) -> AllocStats {
        self.lock().stats
    }

    /// Frees every cached block (the runtime gets the memory back).
    pub fn trim(&self) {
        let mut p = self.lock();
        p.free.clear();
        p.stats.cached_bytes = 0;
    }
}

/// A buffer from a [`CachingAllocator`]; dropping it returns its block to the cache. Derefs
/// to the `DeviceBuffer` every launcher takes.
pub struct Pooled<T: Copy> {
    buf: Option<DeviceBuffer<T>>,
    class: usize,
    pool: Arc<Mutex<Pool>>,
}

impl<T: Copy> Deref for Pooled<T> {
    type Target = DeviceBuffer<T>;
    fn deref(&self) -> &DeviceBuffer<T> {
        self.buf.as_ref().expect("live until dropped")
    }
}

impl<T: Copy> DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut DeviceBuffer<T> {
        self.buf.as_mut().expect("live until dropped")
    }
}

impl<T: Copy> Drop for Pooled<T> {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            // SAFETY: the block was allocated with `class` bytes.
            let block = unsafe { b.reinterpret::<u8>(self.class) };
            let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            p.stats.in_use_bytes -= self.class;
            p.stats.cached_bytes += self.class;
            p.free.entry(self.class).or_default().push(block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_round_up_and_stay_close() {
        assert_eq!(size_class(0), 512);
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 1024);
        assert_eq!(size_class((1 << 20) - 1), 1 << 20);
        assert_eq!(size_class(1 << 20), 2 << 20);
        assert_eq!(size_class((2 << 20) + 1), 4 << 20);
        for b in [1usize, 700, 100_000, 3 << 20, 335_544_320] {
            let c = size_class(b);
            assert!(c >= b && c - b < (2 << 20), "{b} -> {c}");
            assert!(c.is_multiple_of(512));
        }
    }
}
