//! The runtime entry points the engine uses, as one trait with an implementation per
//! platform: `amd` (libamdhip64, opened at run time) and `nvidia` (the CUDA driver API
//! through cudarc's dynamically loaded `sys` layer). The HIP module API mirrors the CUDA
//! driver API call for call, so the two implementations are line-by-line twins.

use std::ffi::c_void;

use crate::result::{HipError, Result};
use crate::Platform;

macro_rules! handle {
    ($($name:ident),*) => {$(
        /// An opaque runtime handle.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub(crate) *mut c_void);
        // SAFETY: runtime handles are plain identifiers, usable from any thread that has
        // the device bound; the safe layer binds the device before each use.
        unsafe impl Send for $name {}
        unsafe impl Sync for $name {}
    )*};
}
handle!(
    DevicePtr,
    StreamHandle,
    EventHandle,
    ModuleHandle,
    FunctionHandle,
    GraphHandle,
    GraphExecHandle
);

impl DevicePtr {
    pub fn is_null(&self) -> bool {
        self.0.is_null()
    }
    /// The address `bytes` further on (for sub-buffers).
    pub fn offset(&self, bytes: usize) -> DevicePtr {
        DevicePtr((self.0 as usize + bytes) as *mut c_void)
    }
    pub fn addr(&self) -> usize {
        self.0 as usize
    }
}

/// A count the runtime returned as a C int, refused unless positive (a zero would size grids
/// of no blocks).
pub(crate) fn positive_count(what: &str, v: i32) -> Result<usize> {
    match usize::try_from(v) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(HipError::Invalid(format!(
            "{what} returned {v}; expected a positive count"
        ))),
    }
}

/// Grid and block dimensions, dynamic shared memory and thread-block cluster of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    /// Blocks per thread-block cluster along x (1: no clusters). A cluster's blocks run at
    /// once and may read each other's shared memory. NVIDIA sm_90 and later only (HIP has no
    /// clusters and refuses more than 1); `grid[0]` must be a multiple of it, and at most 8
    /// is portable.
    pub cluster: u32,
}

impl LaunchDims {
    /// Refuses, with the reason, a cluster the launch cannot take (checked before the
    /// runtime is called, on every platform).
    pub fn check_cluster(&self) -> Result<()> {
        if self.cluster == 0 || !self.grid[0].is_multiple_of(self.cluster) {
            return Err(HipError::Invalid(format!(
                "a launch of {} blocks along x cannot run in clusters of {}: the cluster must be at least 1 and divide the grid",
                self.grid[0], self.cluster
            )));
        }
        Ok(())
    }
}

/// An opaque TMA descriptor (CUDA's `CUtensorMap`: 128 bytes, 64-byte aligned), passed to a
/// kernel by value.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct TensorMap(pub [u64; 16]);

/// The element type a tensor map reads: f16, or bytes (FP8 for the matrix units; the
/// TMA only moves them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorElem {
    F16,
    U8,
}

impl TensorElem {
    pub fn bytes(self) -> u64 {
        match self {
            TensorElem::F16 => 2,
            TensorElem::U8 => 1,
        }
    }
}

/// A block's thread count as the runtimes' `int` argument (occupancy queries), refused past
/// i32::MAX with the count named.
pub(crate) fn block_threads_arg(threads: u32) -> Result<i32> {
    i32::try_from(threads).map_err(|_| HipError::Invalid(format!("a block of {threads} threads")))
}

pub trait Driver: Send + Sync {
    fn platform(&self) -> Platform;
    /// Runtime (driver) version as the platform reports it.
    fn version(&self) -> Result<i32>;
    fn device_count(&self) -> Result<usize>;
    fn device_name(&self, ordinal: usize) -> Result<String>;
    fn device_total_mem(&self, ordinal: usize) -> Result<usize>;
    /// Streaming multiprocessors (NVIDIA) or compute units (AMD): how many blocks of a
    /// kernel that fills one run at once, which sizes grids against wave quantisation.
    fn device_multiprocessors(&self, ordinal: usize) -> Result<usize>;
    /// Shared memory (LDS) one multiprocessor holds for all its resident blocks: how many
    /// blocks of a given shared-memory size can share it. Queried only where programmatic
    /// dependent launch runs (NVIDIA sm_90); a platform without an implementation says so.
    fn device_shared_per_multiprocessor(&self, ordinal: usize) -> Result<usize> {
        let _ = ordinal;
        Err(crate::result::HipError::Invalid(
            "the shared memory per multiprocessor is queried on NVIDIA only".into(),
        ))
    }
    /// (free, total) bytes of the calling thread's current device.
    fn mem_info(&self) -> Result<(usize, usize)>;
    /// Makes `ordinal` the current device of the calling thread.
    fn bind_device(&self, ordinal: usize) -> Result<()>;

    fn malloc(&self, bytes: usize) -> Result<DevicePtr>;
    /// # Safety
    /// `ptr` must come from `malloc` and not be used afterwards.
    unsafe fn free(&self, ptr: DevicePtr) -> Result<()>;
    /// # Safety
    /// `dst` must hold `src.len()` bytes; `src` must stay alive until the stream reaches
    /// the copy.
    unsafe fn memcpy_htod(&self, dst: DevicePtr, src: &[u8], stream: StreamHandle) -> Result<()>;
    /// # Safety
    /// `src` must hold `dst.len()` bytes; `dst` must stay alive until the stream reaches it.
    unsafe fn memcpy_dtoh(
        &self,
        dst: &mut [u8],
        src: DevicePtr,
        stream: StreamHandle,
    ) -> Result<()>;
    /// # Safety
    /// Both pointers must hold `bytes` bytes.
    unsafe fn memcpy_dtod(
        &self,
        dst: DevicePtr,
        src: DevicePtr,
        bytes: usize,
        stream: StreamHandle,
    ) -> Result<()>;
    /// # Safety
    /// `dst` must hold `bytes` bytes.
    unsafe fn memset_d8(
        &self,
        dst: DevicePtr,
        value: u8,
        bytes: usize,
        stream: StreamHandle,
    ) -> Result<()>;

    fn stream_create(&self) -> Result<StreamHandle>;
    fn stream_destroy(&self, s: StreamHandle) -> Result<()>;
    fn stream_synchronize(&self, s: StreamHandle) -> Result<()>;

    fn event_create(&self) -> Result<EventHandle>;
    fn event_record(&self, e: EventHandle, s: StreamHandle) -> Result<()>;
    fn event_synchronize(&self, e: EventHandle) -> Result<()>;
    fn event_elapsed_ms(&self, start: EventHandle, end: EventHandle) -> Result<f32>;
    fn event_destroy(&self, e: EventHandle) -> Result<()>;

    /// Loads a code object (HSACO on AMD, cubin on NVIDIA) from memory.
    fn module_load_data(&self, image: &[u8]) -> Result<ModuleHandle>;
    fn module_unload(&self, m: ModuleHandle) -> Result<()>;
    fn module_get_function(&self, m: ModuleHandle, name: &str) -> Result<FunctionHandle>;
    /// A module's global variable by name: its device address and size in bytes, or None
    /// where the module defines no such name (the kernel timeline's rings, `greta bench
    /// --timeline`). Implemented for NVIDIA; a platform without it says so.
    fn module_get_global(&self, m: ModuleHandle, name: &str) -> Result<Option<(DevicePtr, usize)>> {
        let _ = m;
        Err(crate::result::HipError::Invalid(format!(
            "module globals ({name}) are read on NVIDIA only"
        )))
    }
    /// Lets the kernel take up to `bytes` of dynamic shared memory (LDS) per block: NVIDIA
    /// needs the opt-in above 48 KiB; a CDNA workgroup may use its CU's 64 KiB without one.
    fn function_set_max_dynamic_shared(&self, f: FunctionHandle, bytes: u32) -> Result<()>;
    /// How many blocks of `threads` threads and `shared_bytes` of dynamic shared memory
    /// (LDS) one multiprocessor (CU) holds at once, by the kernel's registers, its static
    /// and dynamic shared memory and its launch bounds: with the device's multiprocessor
    /// count, what makes a launch's grid a number of waves.
    fn function_max_active_blocks(
        &self,
        f: FunctionHandle,
        threads: u32,
        shared_bytes: u32,
    ) -> Result<u32>;
    /// How many clusters of `cluster` blocks (each of `threads` threads and `shared_bytes`
    /// of dynamic shared memory) the whole device runs at once: a cluster's blocks must share
    /// one GPU processing cluster, so this can be fewer than the blocks a multiprocessor
    /// holds times the multiprocessors, divided by `cluster`. NVIDIA sm_90 and later only.
    fn function_max_active_clusters(
        &self,
        f: FunctionHandle,
        threads: u32,
        shared_bytes: u32,
        cluster: u32,
    ) -> Result<u32>;
    /// # Safety
    /// `params` must point at one value per kernel parameter, of the kernel's types.
    unsafe fn launch(
        &self,
        f: FunctionHandle,
        dims: LaunchDims,
        s: StreamHandle,
        params: &mut [*mut c_void],
    ) -> Result<()>;
    /// Launches `f` so that it may start before the kernel ahead of it on `s` has finished
    /// (NVIDIA's programmatic dependent launch, sm_90 and later): its blocks can be resident
    /// and running their prologue while the previous grid drains. The kernel must wait for
    /// its predecessor (`g_wait_previous` in kernels/greta_device.h) before it touches memory
    /// the predecessor writes or reads. Platforms without the feature launch in stream order,
    /// which is what the default does.
    ///
    /// # Safety
    /// As `launch`, and the kernel must wait as above.
    unsafe fn launch_overlapped(
        &self,
        f: FunctionHandle,
        dims: LaunchDims,
        s: StreamHandle,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        self.launch(f, dims, s, params)
    }

    /// A TMA descriptor (NVIDIA sm_90+) of a row-major matrix `[rows][cols]` of `elem` at
    /// `ptr`, read in boxes of `box_rows` x `box_cols` into shared memory with a swizzle as
    /// wide as a box row (32, 64 or 128 bytes: the K-major layouts the wgmma operand
    /// descriptors read); out-of-range elements read as zero. Platforms without TMA refuse.
    fn tensor_map(
        &self,
        ptr: DevicePtr,
        elem: TensorElem,
        rows: u64,
        cols: u64,
        box_rows: u32,
        box_cols: u32,
    ) -> Result<TensorMap> {
        let _ = (ptr, elem, rows, cols, box_rows, box_cols);
        Err(HipError::Invalid(format!(
            "tensor maps (TMA) need an NVIDIA sm_90 GPU; this is {}",
            self.platform()
        )))
    }

    fn stream_begin_capture(&self, s: StreamHandle) -> Result<()>;
    fn stream_end_capture(&self, s: StreamHandle) -> Result<GraphHandle>;
    fn graph_instantiate(&self, g: GraphHandle) -> Result<GraphExecHandle>;
    fn graph_launch(&self, g: GraphExecHandle, s: StreamHandle) -> Result<()>;
    fn graph_destroy(&self, g: GraphHandle) -> Result<()>;
    fn graph_exec_destroy(&self, g: GraphExecHandle) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::LaunchDims;

    #[test]
    fn a_cluster_must_divide_the_grid_along_x() {
        let dims = |grid_x, cluster| LaunchDims {
            grid: [grid_x, 3, 1],
            block: [128, 1, 1],
            shared_bytes: 0,
            cluster,
        };
        for (x, c) in [(4, 1), (4, 2), (4, 4), (5, 5), (8, 8), (7, 1)] {
            assert!(dims(x, c).check_cluster().is_ok(), "{x} in clusters of {c}");
        }
        for (x, c) in [(4, 0), (4, 3), (5, 8)] {
            let e = dims(x, c).check_cluster().unwrap_err().to_string();
            assert!(
                e.contains(&format!("{x} blocks")) && e.contains(&format!("clusters of {c}")),
                "{e}"
            );
        }
    }
}
