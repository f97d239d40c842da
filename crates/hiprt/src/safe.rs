//! The safe layer: a device, streams, typed device buffers, modules and kernels, events,
//! and graph capture and replay. RAII throughout; a release that fails in `Drop` (where no
//! error can be returned) is reported on stderr, never silently dropped, and every type
//! has an explicit `close` that returns the error instead.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::amd::AmdDriver;
use crate::driver::*;
use crate::nvidia::NvidiaDriver;
use crate::result::{HipError, Result};
use crate::Platform;

/// Which platform to open (the CLI's `--platform`, or `GRETA_PLATFORM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformChoice {
    Amd,
    Nvidia,
    /// AMD first, then NVIDIA: the first with a device.
    Auto,
}

impl std::str::FromStr for PlatformChoice {
    type Err = HipError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "amd" => Ok(PlatformChoice::Amd),
            "nvidia" => Ok(PlatformChoice::Nvidia),
            "auto" => Ok(PlatformChoice::Auto),
            other => Err(HipError::Invalid(format!(
                "platform {other:?}; accepted: amd, nvidia, auto"
            ))),
        }
    }
}

/// Opens a platform's runtime.
pub fn open_driver(p: Platform) -> Result<Arc<dyn Driver>> {
    Ok(match p {
        Platform::Amd => Arc::new(AmdDriver::open()?),
        Platform::Nvidia => Arc::new(NvidiaDriver::open()?),
    })
}

fn report_drop(what: &str, r: Result<()>) {
    if let Err(e) = r {
        eprintln!("hiprt: releasing {what} failed: {e}");
    }
}

/// One GPU, bound to the calling thread.
#[derive(Clone)]
pub struct Gpu {
    driver: Arc<dyn Driver>,
    ordinal: usize,
    name: String,
}

impl Gpu {
    /// Opens device `ordinal` of the chosen platform. With `Auto`, the errors of every
    /// platform tried are reported together.
    pub fn open(choice: PlatformChoice, ordinal: usize) -> Result<Gpu> {
        let platforms: &[Platform] = match choice {
            PlatformChoice::Amd => &[Platform::Amd],
            PlatformChoice::Nvidia => &[Platform::Nvidia],
            PlatformChoice::Auto => &[Platform::Amd, Platform::Nvidia],
        };
        let mut errors = Vec::new();
        for &p in platforms {
            match open_driver(p).and_then(|d| Gpu::on(d, ordinal)) {
                Ok(g) => return Ok(g),
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            1 => Err(errors.remove(0)),
            _ => Err(HipError::NoPlatform(errors)),
        }
    }

    /// Device `ordinal` of an opened runtime.
    pub fn on(driver: Arc<dyn Driver>, ordinal: usize) -> Result<Gpu> {
        let n = driver.device_count()?;
        if n == 0 {
            return Err(HipError::NoDevice {
                platform: driver.platform(),
                detail: "the runtime reports 0 devices".into(),
            });
        }
        if ordinal >= n {
            return Err(HipError::Invalid(format!(
                "device index {ordinal} does not exist; {n} devices found"
            )));
        }
        driver.bind_device(ordinal)?;
        let name = driver.device_name(ordinal)?;
        Ok(Gpu {
            driver,
            ordinal,
            name,
        })
    }

    pub fn platform(&self) -> Platform {
        self.driver.platform()
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }
    pub fn total_memory(&self) -> Result<usize> {
        self.driver.device_total_mem(self.ordinal)
    }
    /// Streaming multiprocessors (NVIDIA) or compute units (AMD).
    pub fn multiprocessors(&self) -> Result<usize> {
        self.driver.device_multiprocessors(self.ordinal)
    }

    /// Bytes of shared memory one multiprocessor holds (NVIDIA only; see the driver's
    /// `device_shared_per_multiprocessor`).
    pub fn shared_per_multiprocessor(&self) -> Result<usize> {
        self.driver.device_shared_per_multiprocessor(self.ordinal)
    }

    /// Bytes of device memory free on this device now.
    pub fn free_memory(&self) -> Result<usize> {
        self.bind()?;
        Ok(self.driver.mem_info()?.0)
    }

    /// Bytes of device memory in use on this device (total - free): this process's
    /// allocations and context, plus any other process's.
    pub fn used_memory(&self) -> Result<usize> {
        self.bind()?;
        let (free, total) = self.driver.mem_info()?;
        Ok(total - free)
    }

    /// Binds this device to the calling thread (needed once per thread).
    pub fn bind(&self) -> Result<()> {
        self.driver.bind_device(self.ordinal)
    }

    pub fn stream(&self) -> Result<Stream> {
        Ok(Stream {
            driver: self.driver.clone(),
            handle: Some(self.driver.stream_create()?),
        })
    }

    pub fn event(&self) -> Result<Event> {
        Ok(Event {
            driver: self.driver.clone(),
            handle: Some(self.driver.event_create()?),
        })
    }

    /// An uninitialised buffer of `len` elements.
    pub fn alloc<T: Copy>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| HipError::Invalid(format!("{len} elements overflow")))?;
        let ptr = self.driver.malloc(bytes.max(1))?;
        Ok(DeviceBuffer {
            driver: self.driver.clone(),
            ptr: Some(ptr),
            len,
            _t: PhantomData,
        })
    }

    pub fn load_module(&self, image: &[u8]) -> Result<Module> {
        Ok(Module {
            inner: Arc::new(ModuleInner {
                driver: self.driver.clone(),
                handle: Some(self.driver.module_load_data(image)?),
            }),
        })
    }
}

pub struct Stream {
    driver: Arc<dyn Driver>,
    handle: Option<StreamHandle>,
}

impl Stream {
    pub fn handle(&self) -> StreamHandle {
        self.handle.expect("a stream is live until closed")
    }
    pub fn synchronize(&self) -> Result<()> {
        self.driver.stream_synchronize(self.handle())
    }
    /// Starts recording the launches and copies issued on this stream into a graph.
    pub fn begin_capture(&self) -> Result<()> {
        self.driver.stream_begin_capture(self.handle())
    }
    pub fn end_capture(&self) -> Result<Graph> {
        Ok(Graph {
            driver: self.driver.clone(),
            handle: Some(self.driver.stream_end_capture(self.handle())?),
        })
    }
    pub fn close(mut self) -> Result<()> {
        self.driver
            .stream_destroy(self.handle.take().expect("live"))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            report_drop("a stream", self.driver.stream_destroy(h));
        }
    }
}

pub struct Event {
    driver: Arc<dyn Driver>,
    handle: Option<EventHandle>,
}

impl Event {
    pub fn record(&self, s: &Stream) -> Result<()> {
        self.driver
            .event_record(self.handle.expect("live"), s.handle())
    }
    pub fn synchronize(&self) -> Result<()> {
        self.driver.event_synchronize(self.handle.expect("live"))
    }
    /// Milliseconds from `start` to this event (both recorded and complete).
    pub fn elapsed_since(&self, start: &Event) -> Result<f32> {
        self.driver
            .event_elapsed_ms(start.handle.expect("live"), self.handle.expect("live"))
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            report_drop("an event", self.driver.event_destroy(h));
        }
    }
}

/// `len` elements of `T` in device memory; pointer-stable for its whole life.
pub struct DeviceBuffer<T: Copy> {
    driver: Arc<dyn Driver>,
    ptr: Option<DevicePtr>,
    len: usize,
    _t: PhantomData<T>,
}

fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: T is Copy plain data; the byte view covers exactly the slice.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T: Copy>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as above; callers only write byte patterns of T's that came from the device.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}

impl DeviceBuffer<u16> {
    /// A TMA descriptor of this buffer read as a row-major f16 matrix `[rows][cols]` in
    /// boxes of `box_rows` x `box_cols` (see `Driver::tensor_map`). The buffer must outlive
    /// every launch that reads the descriptor.
    pub fn tensor_map_f16(
        &self,
        rows: usize,
        cols: usize,
        box_rows: u32,
        box_cols: u32,
    ) -> Result<TensorMap> {
        tensor_map(self, TensorElem::F16, rows, cols, box_rows, box_cols)
    }
}

impl DeviceBuffer<u8> {
    /// The same over a byte matrix (FP8 operands): rows of a multiple of 16 bytes.
    pub fn tensor_map_u8(
        &self,
        rows: usize,
        cols: usize,
        box_rows: u32,
        box_cols: u32,
    ) -> Result<TensorMap> {
        tensor_map(self, TensorElem::U8, rows, cols, box_rows, box_cols)
    }
}

/// The TMA needs rows (its global strides) of a multiple of 16 bytes.
fn tensor_map<T: Copy>(
    b: &DeviceBuffer<T>,
    elem: TensorElem,
    rows: usize,
    cols: usize,
    box_rows: u32,
    box_cols: u32,
) -> Result<TensorMap> {
    let per_16_bytes = 16 / elem.bytes() as usize;
    if rows.checked_mul(cols).is_none_or(|n| n > b.len) || !cols.is_multiple_of(per_16_bytes) {
        return Err(HipError::Invalid(format!(
            "a tensor map of {rows} x {cols} {elem:?} over a buffer of {} elements (rows of a multiple of {per_16_bytes} needed)",
            b.len
        )));
    }
    b.driver
        .tensor_map(b.ptr(), elem, rows as u64, cols as u64, box_rows, box_cols)
}

impl<T: Copy> DeviceBuffer<T> {
    /// The same allocation seen as `len` elements of `U` (for allocators that keep untyped
    /// blocks). Ownership moves: the memory is freed once, by the returned buffer.
    ///
    /// # Safety
    /// The allocation must hold at least `len * size_of::<U>()` bytes: the size it was made
    /// with, not this view's `len`, which may be shorter.
    pub unsafe fn reinterpret<U: Copy>(mut self, len: usize) -> DeviceBuffer<U> {
        DeviceBuffer {
            driver: self.driver.clone(),
            ptr: self.ptr.take(),
            len,
            _t: PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn ptr(&self) -> DevicePtr {
        self.ptr.expect("a buffer is live until closed")
    }
    fn check_len(&self, n: usize, what: &str) -> Result<()> {
        if n != self.len {
            return Err(HipError::Invalid(format!(
                "{what}: {n} elements for a buffer of {}",
                self.len
            )));
        }
        Ok(())
    }
    /// Copies `src` in and waits for the copy (the host slice is free again on return).
    pub fn copy_from_host(&mut self, src: &[T], s: &Stream) -> Result<()> {
        self.check_len(src.len(), "copy_from_host")?;
        // SAFETY: lengths checked; the stream is synchronised before `src` can go away.
        unsafe {
            self.driver
                .memcpy_htod(self.ptr(), as_bytes(src), s.handle())?
        };
        s.synchronize()
    }
    /// Copies the buffer out, waiting for the copy.
    pub fn copy_to_host(&self, dst: &mut [T], s: &Stream) -> Result<()> {
        self.check_len(dst.len(), "copy_to_host")?;
        // SAFETY: lengths checked; synchronised before `dst` is read.
        unsafe {
            self.driver
                .memcpy_dtoh(as_bytes_mut(dst), self.ptr(), s.handle())?
        };
        s.synchronize()
    }
    pub fn to_vec(&self, s: &Stream) -> Result<Vec<T>>
    where
        T: Default,
    {
        let mut v = vec![T::default(); self.len];
        self.copy_to_host(&mut v, s)?;
        Ok(v)
    }
    fn check_range(&self, offset: usize, n: usize, what: &str) -> Result<()> {
        if offset.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(HipError::Invalid(format!(
                "{what}: elements {offset}..{} of a buffer of {}",
                offset.saturating_add(n),
                self.len
            )));
        }
        Ok(())
    }

    /// Copies `dst.len()` elements starting at element `offset` out, waiting for the copy.
    pub fn read(&self, offset: usize, dst: &mut [T], s: &Stream) -> Result<()> {
        self.check_range(offset, dst.len(), "read")?;
        // SAFETY: range checked; synchronised before `dst` is read.
        unsafe {
            self.driver.memcpy_dtoh(
                as_bytes_mut(dst),
                self.ptr().offset(offset * std::mem::size_of::<T>()),
                s.handle(),
            )?
        };
        s.synchronize()
    }

    /// Copies `src` in at element `offset`, waiting for the copy.
    pub fn write(&mut self, offset: usize, src: &[T], s: &Stream) -> Result<()> {
        self.check_range(offset, src.len(), "write")?;
        // SAFETY: range checked; synchronised before `src` can go away.
        unsafe {
            self.driver.memcpy_htod(
                self.ptr().offset(offset * std::mem::size_of::<T>()),
                as_bytes(src),
                s.handle(),
            )?
        };
        s.synchronize()
    }

    /// Copies `n` elements of `src` from `src_offset` to `dst_offset` of this buffer, on `s`
    /// (asynchronous: it can be captured in a graph).
    pub fn copy_from_device(
        &mut self,
        dst_offset: usize,
        src: &DeviceBuffer<T>,
        src_offset: usize,
        n: usize,
        s: &Stream,
    ) -> Result<()> {
        self.check_range(dst_offset, n, "copy_from_device destination")?;
        src.check_range(src_offset, n, "copy_from_device source")?;
        let size = std::mem::size_of::<T>();
        // SAFETY: both ranges checked.
        unsafe {
            self.driver.memcpy_dtod(
                self.ptr().offset(dst_offset * size),
                src.ptr().offset(src_offset * size),
                n * size,
                s.handle(),
            )
        }
    }

    /// Sets every byte to zero (asynchronously, on `s`).
    pub fn zero(&mut self, s: &Stream) -> Result<()> {
        self.fill_bytes(0, s)
    }

    /// Sets every byte to `byte` (asynchronously, on `s`).
    pub fn fill_bytes(&mut self, byte: u8, s: &Stream) -> Result<()> {
        // SAFETY: the buffer holds len * size_of::<T>() bytes.
        unsafe {
            self.driver.memset_d8(
                self.ptr(),
                byte,
                self.len * std::mem::size_of::<T>(),
                s.handle(),
            )
        }
    }
    pub fn close(mut self) -> Result<()> {
        // SAFETY: the pointer came from malloc and is not used after this.
        unsafe { self.driver.free(self.ptr.take().expect("live")) }
    }
}

impl<T: Copy> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        if let Some(p) = self.ptr.take() {
            // SAFETY: the pointer came from malloc and is not used after this.
            report_drop("a device buffer", unsafe { self.driver.free(p) });
        }
    }
}

struct ModuleInner {
    driver: Arc<dyn Driver>,
    handle: Option<ModuleHandle>,
}

impl Drop for ModuleInner {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            report_drop("a module", self.driver.module_unload(h));
        }
    }
}

/// A loaded code object. Its kernels keep it loaded.
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
}

impl Module {
    /// Whether the module defines a global variable of this name.
    pub fn has_global(&self, name: &str) -> Result<bool> {
        let d = &self.inner.driver;
        Ok(d.module_get_global(self.inner.handle.expect("live"), name)?
            .is_some())
    }

    /// The bytes of the module's global variable `name`, read on `s` (which it waits for).
    pub fn read_global(&self, name: &str, s: &Stream) -> Result<Vec<u8>> {
        let d = &self.inner.driver;
        let (p, bytes) = d
            .module_get_global(self.inner.handle.expect("live"), name)?
            .ok_or_else(|| HipError::Invalid(format!("the module has no global {name:?}")))?;
        let mut out = vec![0u8; bytes];
        // SAFETY: `p` is the start of a live module's global of `bytes` bytes.
        unsafe { d.memcpy_dtoh(&mut out, p, s.handle())? };
        s.synchronize()?;
        Ok(out)
    }
    pub fn function(&self, name: &str) -> Result<Function> {
        let h = self
            .inner
            .driver
            .module_get_function(self.inner.handle.expect("live"), name)?;
        Ok(Function {
            module: self.inner.clone(),
            handle: h,
            name: name.to_string(),
        })
    }
}

/// A kernel of a loaded module.
#[derive(Clone)]
pub struct Function {
    module: Arc<ModuleInner>,
    handle: FunctionHandle,
    name: String,
}

impl Function {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Lets launches of this kernel take up to `bytes` of dynamic shared memory per block
    /// (`LaunchDims::shared_bytes`); NVIDIA refuses more than 48 KiB without this.
    pub fn set_max_dynamic_shared(&self, bytes: u32) -> Result<()> {
        self.module
            .driver
            .function_set_max_dynamic_shared(self.handle, bytes)
    }
    /// How many blocks of `threads` threads with `shared_bytes` of dynamic shared memory one
    /// multiprocessor (CU) runs at once (the runtime's occupancy calculator: registers,
    /// shared memory, launch bounds). 0 means such a block cannot run at all.
    pub fn max_active_blocks(&self, threads: u32, shared_bytes: u32) -> Result<u32> {
        self.module
            .driver
            .function_max_active_blocks(self.handle, threads, shared_bytes)
    }
    /// How many clusters of `cluster` blocks of `threads` threads with `shared_bytes` of
    /// dynamic shared memory the whole device runs at once (NVIDIA sm_90 and later; AMD
    /// refuses: HIP has no clusters). 0 means such a cluster cannot run at all.
    pub fn max_active_clusters(
        &self,
        threads: u32,
        shared_bytes: u32,
        cluster: u32,
    ) -> Result<u32> {
        self.module
            .driver
            .function_max_active_clusters(self.handle, threads, shared_bytes, cluster)
    }
    /// Launches the kernel on `s`.
    ///
    /// # Safety
    /// `params` must hold one pointer per kernel parameter, each to a value of that
    /// parameter's type, and every buffer the kernel touches must be large enough.
    pub unsafe fn launch(
        &self,
        dims: LaunchDims,
        s: &Stream,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        dims.check_cluster()?;
        self.module
            .driver
            .launch(self.handle, dims, s.handle(), params)
    }
    /// Launches the kernel on `s`, allowed to start while the kernel ahead of it drains
    /// (`Driver::launch_overlapped`).
    ///
    /// # Safety
    /// As `launch`, and the kernel must wait for its predecessor before it touches memory
    /// the predecessor writes or reads.
    pub unsafe fn launch_overlapped(
        &self,
        dims: LaunchDims,
        s: &Stream,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        dims.check_cluster()?;
        self.module
            .driver
            .launch_overlapped(self.handle, dims, s.handle(), params)
    }
}

/// A captured graph, not yet instantiated.
pub struct Graph {
    driver: Arc<dyn Driver>,
    handle: Option<GraphHandle>,
}

impl Graph {
    pub fn instantiate(&self) -> Result<GraphExec> {
        Ok(GraphExec {
            driver: self.driver.clone(),
            handle: Some(self.driver.graph_instantiate(self.handle.expect("live"))?),
        })
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            report_drop("a graph", self.driver.graph_destroy(h));
        }
    }
}

/// An instantiated graph: replayed with `launch`.
pub struct GraphExec {
    driver: Arc<dyn Driver>,
    handle: Option<GraphExecHandle>,
}

impl GraphExec {
    pub fn launch(&self, s: &Stream) -> Result<()> {
        self.driver
            .graph_launch(self.handle.expect("live"), s.handle())
    }
}

impl Drop for GraphExec {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            report_drop("a graph instance", self.driver.graph_exec_destroy(h));
        }
    }
}
