//! What the launches ask L2 to keep between decode steps (NVIDIA's persisting accesses).
//!
//! A decode step of a small model streams every weight once through L2, and nothing of it
//! survives to the next step. The one product that is bound by bandwidth there is the LM
//! head (SmolLM2: 49 152 x 576 f16, 56.6 MB, ~20 µs of a ~400 µs step; the layers' products
//! are latency-bound and load their weights under the kernel ahead). Marking part of the
//! head persisting keeps that part in an L2 set-aside across steps, so the head reads it
//! from L2 and only the rest from DRAM. The values are the same bits either way.

use hiprt::{DeviceBuffer, Gpu, L2Window};

use super::{GpuKernels, KernelError, Result};

/// How much of one buffer L2 keeps: the set-aside made for it and the window's share of
/// persisting lines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct L2Pin {
    /// Bytes of L2 set aside for persisting lines.
    pub set_aside: usize,
    /// The buffer's bytes the window covers (at most the device's longest window).
    pub window: usize,
    /// The share of the window's lines marked persisting (set_aside / window, at most 1).
    pub hit_ratio: f64,
    /// The device's whole L2.
    pub l2_bytes: usize,
}

impl GpuKernels {
    /// Asks L2 to keep up to `want` bytes of `w` across launches: sets `want` (at most the
    /// device's limit) aside for persisting lines, and every later product launch that
    /// reads `w` (`gemv`) carries a window over it whose persisting share fits that
    /// set-aside, so the window's persisting lines do not evict each other. Replaces any
    /// earlier pin. NVIDIA sm_80 and later only; elsewhere the runtime's refusal is
    /// returned. `want` 0 unpins (and gives the set-aside back).
    pub fn pin_in_l2(&mut self, gpu: &Gpu, w: &DeviceBuffer<u16>, want: usize) -> Result<L2Pin> {
        let limits = gpu.l2_persisting()?;
        if want == 0 {
            gpu.set_l2_persisting(0)?;
            self.l2_pin = None;
            return Ok(L2Pin {
                set_aside: 0,
                window: 0,
                hit_ratio: 0.0,
                l2_bytes: limits.l2_bytes,
            });
        }
        if limits.max_set_aside == 0 || limits.max_window == 0 {
            return Err(KernelError::Shape(format!(
                "this device sets no L2 aside for persisting accesses (most set-aside {} bytes, longest window {} bytes)",
                limits.max_set_aside, limits.max_window
            )));
        }
        let bytes = w.len() * 2;
        let set_aside = want.min(limits.max_set_aside).min(bytes);
        gpu.set_l2_persisting(set_aside)?;
        let window = bytes.min(limits.max_window);
        let hit_ratio = (set_aside as f64 / window as f64).min(1.0);
        self.l2_pin = Some(L2Window {
            base: w.ptr(),
            bytes: window,
            hit_ppm: (hit_ratio * 1e6).floor() as u32,
        });
        Ok(L2Pin {
            set_aside,
            window,
            hit_ratio,
            l2_bytes: limits.l2_bytes,
        })
    }

    /// The window a launch reading `w` carries: the pin's, where `w` is the pinned buffer.
    pub(super) fn l2_window_for(&self, w: &DeviceBuffer<u16>) -> Option<L2Window> {
        self.l2_pin.filter(|p| p.base == w.ptr())
    }
}
