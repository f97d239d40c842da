//! The AMD platform: libamdhip64 opened at run time with libloading. Nothing links against
//! ROCm, so the engine builds and runs (on the CPU) where ROCm is absent.
//!
//! Device facts come from calls whose signatures are stable across ROCm 5 and 6
//! (hipDeviceGetName, hipDeviceTotalMem); `hipDeviceProp_t` is never read because its
//! layout changed between the two.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

use crate::driver::*;
use crate::result::{HipError, Result};
use crate::Platform;

type Err = c_int;
type Ptr = *mut c_void;

/// hipErrorNoDevice.
const HIP_ERROR_NO_DEVICE: c_int = 100;
/// hipErrorInvalidDevice: what ROCm 5.2's hipInit returns on a machine with no AMD GPU
/// (no /dev/kfd), seen with Debian's libamdhip64-5.
const HIP_ERROR_INVALID_DEVICE: c_int = 101;
/// hipDeviceAttributeMultiprocessorCount: 63 in the hipDeviceAttribute_t of ROCm 5 and 6
/// (hip_runtime_api.h; not yet read back on an AMD GPU).
const HIP_ATTR_MULTIPROCESSOR_COUNT: c_int = 63;
/// hipStreamCaptureModeGlobal.
const CAPTURE_MODE_GLOBAL: c_int = 0;
/// hipMemoryTypeHost-style default flags for hipHostMalloc.
const _HOST_MALLOC_DEFAULT: c_uint = 0;

macro_rules! hip_api {
    ($($field:ident: $sym:literal => fn($($arg:ty),*) -> Err;)*) => {
        /// Every entry point the engine uses, resolved once when the library opens.
        struct Api {
            $($field: unsafe extern "C" fn($($arg),*) -> Err,)*
            get_error_string: unsafe extern "C" fn(Err) -> *const c_char,
            get_error_name: unsafe extern "C" fn(Err) -> *const c_char,
        }

        /// The names of every entry point, for the symbol-resolution test.
        pub const ENTRY_POINTS: &[&str] = &[$($sym,)* "hipGetErrorString", "hipGetErrorName"];

        impl Api {
            /// # Safety
            /// `lib` must be libamdhip64.
            unsafe fn resolve(lib: &libloading::Library) -> std::result::Result<Api, String> {
                fn sym<T: Copy>(lib: &libloading::Library, name: &str) -> std::result::Result<T, String> {
                    // SAFETY: the caller names HIP entry points with their C signatures.
                    unsafe { lib.get::<T>(name.as_bytes()).map(|s| *s).map_err(|e| format!("entry point {name} is missing: {e}")) }
                }
                Ok(Api {
                    $($field: sym(lib, $sym)?,)*
                    get_error_string: sym(lib, "hipGetErrorString")?,
                    get_error_name: sym(lib, "hipGetErrorName")?,
                })
            }
        }
    };
}

hip_api! {
    init: "hipInit" => fn(c_uint) -> Err;
    driver_get_version: "hipDriverGetVersion" => fn(*mut c_int) -> Err;
    get_device_count: "hipGetDeviceCount" => fn(*mut c_int) -> Err;
    device_get_name: "hipDeviceGetName" => fn(*mut c_char, c_int, c_int) -> Err;
    device_total_mem: "hipDeviceTotalMem" => fn(*mut usize, c_int) -> Err;
    device_get_attribute: "hipDeviceGetAttribute" => fn(*mut c_int, c_int, c_int) -> Err;
    mem_get_info: "hipMemGetInfo" => fn(*mut usize, *mut usize) -> Err;
    set_device: "hipSetDevice" => fn(c_int) -> Err;
    malloc: "hipMalloc" => fn(*mut Ptr, usize) -> Err;
    free: "hipFree" => fn(Ptr) -> Err;
    memcpy_htod_async: "hipMemcpyHtoDAsync" => fn(Ptr, *const c_void, usize, Ptr) -> Err;
    memcpy_dtoh_async: "hipMemcpyDtoHAsync" => fn(*mut c_void, Ptr, usize, Ptr) -> Err;
    memcpy_dtod_async: "hipMemcpyDtoDAsync" => fn(Ptr, Ptr, usize, Ptr) -> Err;
    memset_d8_async: "hipMemsetD8Async" => fn(Ptr, u8, usize, Ptr) -> Err;
    stream_create: "hipStreamCreate" => fn(*mut Ptr) -> Err;
    stream_destroy: "hipStreamDestroy" => fn(Ptr) -> Err;
    stream_synchronize: "hipStreamSynchronize" => fn(Ptr) -> Err;
    event_create: "hipEventCreate" => fn(*mut Ptr) -> Err;
    event_record: "hipEventRecord" => fn(Ptr, Ptr) -> Err;
    event_synchronize: "hipEventSynchronize" => fn(Ptr) -> Err;
    event_elapsed_time: "hipEventElapsedTime" => fn(*mut f32, Ptr, Ptr) -> Err;
    event_destroy: "hipEventDestroy" => fn(Ptr) -> Err;
    module_load_data: "hipModuleLoadData" => fn(*mut Ptr, *const c_void) -> Err;
    module_unload: "hipModuleUnload" => fn(Ptr) -> Err;
    module_get_function: "hipModuleGetFunction" => fn(*mut Ptr, Ptr, *const c_char) -> Err;
    module_occupancy_max_active_blocks: "hipModuleOccupancyMaxActiveBlocksPerMultiprocessor" => fn(*mut c_int, Ptr, c_int, usize) -> Err;
    module_launch_kernel: "hipModuleLaunchKernel" => fn(Ptr, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, Ptr, *mut *mut c_void, *mut *mut c_void) -> Err;
    stream_begin_capture: "hipStreamBeginCapture" => fn(Ptr, c_int) -> Err;
    stream_end_capture: "hipStreamEndCapture" => fn(Ptr, *mut Ptr) -> Err;
    graph_instantiate: "hipGraphInstantiate" => fn(*mut Ptr, Ptr, *mut Ptr, *mut c_char, usize) -> Err;
    graph_launch: "hipGraphLaunch" => fn(Ptr, Ptr) -> Err;
    graph_destroy: "hipGraphDestroy" => fn(Ptr) -> Err;
    graph_exec_destroy: "hipGraphExecDestroy" => fn(Ptr) -> Err;
}

pub struct AmdDriver {
    api: Api,
    /// The library the entry points live in: kept open as long as they may be called.
    _lib: libloading::Library,
    pub library: &'static str,
}

impl AmdDriver {
    /// Opens libamdhip64 (trying the names of `Platform::Amd`), resolves every entry point
    /// and initialises the runtime.
    pub fn open() -> Result<AmdDriver> {
        let mut errors = Vec::new();
        for &name in Platform::Amd.library_names() {
            // SAFETY: loading the HIP runtime runs its initialisers; that is its documented use.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => {
                    // SAFETY: `lib` is libamdhip64.
                    let api = unsafe { Api::resolve(&lib) }.map_err(|reason| HipError::Load {
                        platform: Platform::Amd,
                        reason: format!("{name}: {reason}"),
                    })?;
                    let d = AmdDriver {
                        api,
                        _lib: lib,
                        library: name,
                    };
                    // SAFETY: hipInit takes flags, 0 is the only defined value.
                    let code = unsafe { (d.api.init)(0) };
                    if code == HIP_ERROR_NO_DEVICE || code == HIP_ERROR_INVALID_DEVICE {
                        // The call's failure without the platform, which NoDevice names.
                        let why = match d.check("hipInit", code) {
                            Err(HipError::Call {
                                call,
                                code,
                                name,
                                message,
                                ..
                            }) => crate::result::call_failed(call, code, &name, &message),
                            Err(e) => e.to_string(),
                            Ok(()) => String::new(),
                        };
                        return Err(HipError::NoDevice {
                            platform: Platform::Amd,
                            detail: format!("{why}; library {name}"),
                        });
                    }
                    d.check("hipInit", code)?;
                    return Ok(d);
                }
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        Err(HipError::Load {
            platform: Platform::Amd,
            reason: format!("libamdhip64 not found ({})", errors.join("; ")),
        })
    }

    fn check(&self, call: &'static str, code: Err) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: the HIP runtime returns static strings for any code.
        let text = |p: *const c_char| {
            if p.is_null() {
                "?".to_string()
            } else {
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        let name = text(unsafe { (self.api.get_error_name)(code) });
        let message = text(unsafe { (self.api.get_error_string)(code) });
        Err(HipError::Call {
            platform: Platform::Amd,
            call,
            code,
            name,
            message,
        })
    }
}

fn ordinal(o: usize) -> Result<c_int> {
    c_int::try_from(o).map_err(|_| HipError::Invalid(format!("device index {o} is out of range")))
}

impl Driver for AmdDriver {
    fn platform(&self) -> Platform {
        Platform::Amd
    }
    fn version(&self) -> Result<i32> {
        let mut v = 0;
        self.check("hipDriverGetVersion", unsafe {
            (self.api.driver_get_version)(&mut v)
        })?;
        Ok(v)
    }
    fn device_count(&self) -> Result<usize> {
        let mut n = 0;
        let code = unsafe { (self.api.get_device_count)(&mut n) };
        if code == HIP_ERROR_NO_DEVICE {
            return Ok(0);
        }
        self.check("hipGetDeviceCount", code)?;
        Ok(n.max(0) as usize)
    }
    fn device_name(&self, o: usize) -> Result<String> {
        let mut buf = [0 as c_char; 256];
        self.check("hipDeviceGetName", unsafe {
            (self.api.device_get_name)(buf.as_mut_ptr(), buf.len() as c_int, ordinal(o)?)
        })?;
        // SAFETY: the runtime wrote a NUL-terminated string into buf.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }
    fn device_total_mem(&self, o: usize) -> Result<usize> {
        let mut b = 0;
        self.check("hipDeviceTotalMem", unsafe {
            (self.api.device_total_mem)(&mut b, ordinal(o)?)
        })?;
        Ok(b)
    }
    fn device_multiprocessors(&self, o: usize) -> Result<usize> {
        let mut v = 0;
        self.check("hipDeviceGetAttribute", unsafe {
            (self.api.device_get_attribute)(&mut v, HIP_ATTR_MULTIPROCESSOR_COUNT, ordinal(o)?)
        })?;
        positive_count(
            "hipDeviceGetAttribute(hipDeviceAttributeMultiprocessorCount)",
            v,
        )
    }
    fn mem_info(&self) -> Result<(usize, usize)> {
        let (mut free, mut total) = (0, 0);
        self.check("hipMemGetInfo", unsafe {
            (self.api.mem_get_info)(&mut free, &mut total)
        })?;
        Ok((free, total))
    }
    fn bind_device(&self, o: usize) -> Result<()> {
        self.check("hipSetDevice", unsafe {
            (self.api.set_device)(ordinal(o)?)
        })
    }
    fn malloc(&self, bytes: usize) -> Result<DevicePtr> {
        let mut p = std::ptr::null_mut();
        self.check("hipMalloc", unsafe { (self.api.malloc)(&mut p, bytes) })?;
        Ok(DevicePtr(p))
    }
    unsafe fn free(&self, p: DevicePtr) -> Result<()> {
        self.check("hipFree", (self.api.free)(p.0))
    }
    unsafe fn memcpy_htod(&self, dst: DevicePtr, src: &[u8], s: StreamHandle) -> Result<()> {
        self.check(
            "hipMemcpyHtoDAsync",
            (self.api.memcpy_htod_async)(dst.0, src.as_ptr().cast(), src.len(), s.0),
        )
    }
    unsafe fn memcpy_dtoh(&self, dst: &mut [u8], src: DevicePtr, s: StreamHandle) -> Result<()> {
        self.check(
            "hipMemcpyDtoHAsync",
            (self.api.memcpy_dtoh_async)(dst.as_mut_ptr().cast(), src.0, dst.len(), s.0),
        )
    }
    unsafe fn memcpy_dtod(
        &self,
        dst: DevicePtr,
        src: DevicePtr,
        bytes: usize,
        s: StreamHandle,
    ) -> Result<()> {
        self.check(
            "hipMemcpyDtoDAsync",
            (self.api.memcpy_dtod_async)(dst.0, src.0, bytes, s.0),
        )
    }
    unsafe fn memset_d8(
        &self,
        dst: DevicePtr,
        value: u8,
        bytes: usize,
        s: StreamHandle,
    ) -> Result<()> {
        self.check(
            "hipMemsetD8Async",
            (self.api.memset_d8_async)(dst.0, value, bytes, s.0),
        )
    }
    fn stream_create(&self) -> Result<StreamHandle> {
        let mut s = std::ptr::null_mut();
        self.check("hipStreamCreate", unsafe {
            (self.api.stream_create)(&mut s)
        })?;
        Ok(StreamHandle(s))
    }
    fn stream_destroy(&self, s: StreamHandle) -> Result<()> {
        self.check("hipStreamDestroy", unsafe {
            (self.api.stream_destroy)(s.0)
        })
    }
    fn stream_synchronize(&self, s: StreamHandle) -> Result<()> {
        self.check("hipStreamSynchronize", unsafe {
            (self.api.stream_synchronize)(s.0)
        })
    }
    fn event_create(&self) -> Result<EventHandle> {
        let mut e = std::ptr::null_mut();
        self.check("hipEventCreate", unsafe { (self.api.event_create)(&mut e) })?;
        Ok(EventHandle(e))
    }
    fn event_record(&self, e: EventHandle, s: StreamHandle) -> Result<()> {
        self.check("hipEventRecord", unsafe {
            (self.api.event_record)(e.0, s.0)
        })
    }
    fn event_synchronize(&self, e: EventHandle) -> Result<()> {
        self.check("hipEventSynchronize", unsafe {
            (self.api.event_synchronize)(e.0)
        })
    }
    fn event_elapsed_ms(&self, a: EventHandle, b: EventHandle) -> Result<f32> {
        let mut ms = 0f32;
        self.check("hipEventElapsedTime", unsafe {
            (self.api.event_elapsed_time)(&mut ms, a.0, b.0)
        })?;
        Ok(ms)
    }
    fn event_destroy(&self, e: EventHandle) -> Result<()> {
        self.check("hipEventDestroy", unsafe { (self.api.event_destroy)(e.0) })
    }
    fn module_load_data(&self, image: &[u8]) -> Result<ModuleHandle> {
        let mut m = std::ptr::null_mut();
        self.check("hipModuleLoadData", unsafe {
            (self.api.module_load_data)(&mut m, image.as_ptr().cast())
        })?;
        Ok(ModuleHandle(m))
    }
    fn module_unload(&self, m: ModuleHandle) -> Result<()> {
        self.check("hipModuleUnload", unsafe { (self.api.module_unload)(m.0) })
    }
    fn module_get_function(&self, m: ModuleHandle, name: &str) -> Result<FunctionHandle> {
        let c = CString::new(name)
            .map_err(|_| HipError::Invalid(format!("kernel name {name:?} contains NUL")))?;
        let mut f = std::ptr::null_mut();
        self.check("hipModuleGetFunction", unsafe {
            (self.api.module_get_function)(&mut f, m.0, c.as_ptr())
        })?;
        Ok(FunctionHandle(f))
    }
    fn function_max_active_blocks(
        &self,
        f: FunctionHandle,
        threads: u32,
        shared_bytes: u32,
    ) -> Result<u32> {
        let threads = block_threads_arg(threads)?;
        let mut n: c_int = 0;
        self.check(
            "hipModuleOccupancyMaxActiveBlocksPerMultiprocessor",
            unsafe {
                (self.api.module_occupancy_max_active_blocks)(
                    &mut n,
                    f.0,
                    threads,
                    shared_bytes as usize,
                )
            },
        )?;
        Ok(n.max(0) as u32)
    }
    fn function_max_active_clusters(
        &self,
        _f: FunctionHandle,
        _threads: u32,
        _shared_bytes: u32,
        cluster: u32,
    ) -> Result<u32> {
        Err(HipError::Invalid(format!(
            "HIP has no thread-block clusters: an occupancy query for clusters of {cluster} blocks runs on NVIDIA sm_90 and later only"
        )))
    }
    fn function_set_max_dynamic_shared(&self, _f: FunctionHandle, bytes: u32) -> Result<()> {
        // CDNA2/3: 64 KiB of LDS per CU, all of it available to one workgroup, no opt-in.
        if bytes > 64 * 1024 {
            return Err(HipError::Invalid(format!(
                "{bytes} bytes of LDS requested; a CDNA workgroup has at most 65536"
            )));
        }
        Ok(())
    }
    unsafe fn launch(
        &self,
        f: FunctionHandle,
        d: LaunchDims,
        s: StreamHandle,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        if d.cluster > 1 {
            return Err(HipError::Invalid(format!(
                "HIP has no thread-block clusters: a launch in clusters of {} blocks runs on NVIDIA sm_90 and later only",
                d.cluster
            )));
        }
        let [gx, gy, gz] = d.grid;
        let [bx, by, bz] = d.block;
        self.check(
            "hipModuleLaunchKernel",
            (self.api.module_launch_kernel)(
                f.0,
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                d.shared_bytes,
                s.0,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
        )
    }
    fn stream_begin_capture(&self, s: StreamHandle) -> Result<()> {
        self.check("hipStreamBeginCapture", unsafe {
            (self.api.stream_begin_capture)(s.0, CAPTURE_MODE_GLOBAL)
        })
    }
    fn stream_end_capture(&self, s: StreamHandle) -> Result<GraphHandle> {
        let mut g = std::ptr::null_mut();
        self.check("hipStreamEndCapture", unsafe {
            (self.api.stream_end_capture)(s.0, &mut g)
        })?;
        Ok(GraphHandle(g))
    }
    fn graph_instantiate(&self, g: GraphHandle) -> Result<GraphExecHandle> {
        let mut e = std::ptr::null_mut();
        self.check("hipGraphInstantiate", unsafe {
            (self.api.graph_instantiate)(&mut e, g.0, std::ptr::null_mut(), std::ptr::null_mut(), 0)
        })?;
        Ok(GraphExecHandle(e))
    }
    fn graph_launch(&self, g: GraphExecHandle, s: StreamHandle) -> Result<()> {
        self.check("hipGraphLaunch", unsafe {
            (self.api.graph_launch)(g.0, s.0)
        })
    }
    fn graph_destroy(&self, g: GraphHandle) -> Result<()> {
        self.check("hipGraphDestroy", unsafe { (self.api.graph_destroy)(g.0) })
    }
    fn graph_exec_destroy(&self, g: GraphExecHandle) -> Result<()> {
        self.check("hipGraphExecDestroy", unsafe {
            (self.api.graph_exec_destroy)(g.0)
        })
    }
}
