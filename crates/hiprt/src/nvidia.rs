//! The NVIDIA platform: the CUDA driver API through cudarc's dynamically loaded `sys` layer.
//! The driver library is looked for before any call, so a machine without it gets an error,
//! not cudarc's panic.

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Mutex;

use cudarc::driver::sys;

use crate::driver::*;
use crate::result::{HipError, Result};
use crate::Platform;

/// Every entry point the engine uses, for documentation and `greta info`.
pub const ENTRY_POINTS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetName",
    "cuDeviceTotalMem_v2",
    "cuDeviceGetAttribute",
    "cuMemGetInfo_v2",
    "cuDevicePrimaryCtxRetain",
    "cuCtxSetCurrent",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuMemcpyDtoDAsync_v2",
    "cuMemsetD8Async",
    "cuStreamCreate",
    "cuStreamDestroy_v2",
    "cuStreamSynchronize",
    "cuEventCreate",
    "cuEventRecord",
    "cuEventSynchronize",
    "cuEventElapsedTime",
    "cuEventDestroy_v2",
    "cuModuleLoadData",
    "cuModuleUnload",
    "cuModuleGetFunction",
    "cuModuleGetGlobal_v2",
    "cuLaunchKernel",
    "cuLaunchKernelEx",
    "cuFuncSetAttribute",
    "cuOccupancyMaxActiveBlocksPerMultiprocessor",
    "cuOccupancyMaxActiveClusters",
    "cuTensorMapEncodeTiled",
    "cuStreamBeginCapture_v2",
    "cuStreamEndCapture",
    "cuGraphInstantiateWithFlags",
    "cuGraphLaunch",
    "cuGraphDestroy",
    "cuGraphExecDestroy",
    "cuGetErrorName",
    "cuGetErrorString",
];

pub struct NvidiaDriver {
    /// The primary context of each device, retained on first bind.
    contexts: Mutex<Vec<Option<usize>>>,
}

fn check(call: &'static str, r: sys::CUresult) -> Result<()> {
    if r == sys::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let text = |f: unsafe fn(sys::CUresult, *mut *const c_char) -> sys::CUresult| {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: the driver writes a pointer to a static string, or leaves it null.
        unsafe { f(r, &mut p) };
        if p.is_null() {
            "?".to_string()
        } else {
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    Err(HipError::Call {
        platform: Platform::Nvidia,
        call,
        code: r as i32,
        name: text(sys::cuGetErrorName),
        message: text(sys::cuGetErrorString),
    })
}

fn dptr(p: DevicePtr) -> sys::CUdeviceptr {
    p.0 as usize as sys::CUdeviceptr
}

fn stream(s: StreamHandle) -> sys::CUstream {
    s.0 as sys::CUstream
}

/// cuLaunchKernelEx with the launch's attributes: programmatic stream serialisation when
/// `overlapped` (Driver::launch_overlapped), the cluster's size when `d.cluster` > 1.
///
/// # Safety
/// As `Driver::launch` (and `launch_overlapped` when `overlapped`).
unsafe fn launch_ex(
    f: FunctionHandle,
    d: LaunchDims,
    s: StreamHandle,
    params: &mut [*mut c_void],
    overlapped: bool,
) -> Result<()> {
    let [gx, gy, gz] = d.grid;
    let [bx, by, bz] = d.block;
    // SAFETY (of the union writes): each value's member is the one its attribute reads.
    let mut attrs: [sys::CUlaunchAttribute; 2] = std::mem::zeroed();
    let mut n = 0;
    if overlapped {
        attrs[n].id =
            sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attrs[n].value.programmaticStreamSerializationAllowed = 1;
        n += 1;
    }
    if d.cluster > 1 {
        attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
        attrs[n].value.clusterDim.x = d.cluster;
        attrs[n].value.clusterDim.y = 1;
        attrs[n].value.clusterDim.z = 1;
        n += 1;
    }
    let config = sys::CUlaunchConfig {
        gridDimX: gx,
        gridDimY: gy,
        gridDimZ: gz,
        blockDimX: bx,
        blockDimY: by,
        blockDimZ: bz,
        sharedMemBytes: d.shared_bytes,
        hStream: stream(s),
        attrs: attrs.as_mut_ptr(),
        numAttrs: n as u32,
    };
    check(
        "cuLaunchKernelEx",
        sys::cuLaunchKernelEx(
            &config,
            f.0.cast(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        ),
    )
}

impl NvidiaDriver {
    /// A device attribute that must be a positive count (`what`: its name in errors).
    fn positive_attribute(
        &self,
        o: usize,
        attr: sys::CUdevice_attribute,
        what: &str,
    ) -> Result<usize> {
        let d = self.device(o)?;
        let mut v = 0;
        check("cuDeviceGetAttribute", unsafe {
            sys::cuDeviceGetAttribute(&mut v, attr, d)
        })?;
        positive_count(&format!("cuDeviceGetAttribute({what})"), v)
    }

    /// Finds the CUDA driver library and initialises it.
    pub fn open() -> Result<NvidiaDriver> {
        // SAFETY: only probes for the library.
        if !unsafe { sys::is_culib_present() } {
            return Err(HipError::Load {
                platform: Platform::Nvidia,
                reason: "the CUDA driver library (libcuda.so) is not installed".into(),
            });
        }
        // SAFETY: cuInit takes flags, 0 is the only defined value.
        let r = unsafe { sys::cuInit(0) };
        if r == sys::CUresult::CUDA_ERROR_NO_DEVICE {
            return Err(HipError::NoDevice {
                platform: Platform::Nvidia,
                detail: "cuInit returned CUDA_ERROR_NO_DEVICE".into(),
            });
        }
        check("cuInit", r)?;
        Ok(NvidiaDriver {
            contexts: Mutex::new(Vec::new()),
        })
    }

    fn device(&self, o: usize) -> Result<sys::CUdevice> {
        let o = i32::try_from(o)
            .map_err(|_| HipError::Invalid(format!("device index {o} is out of range")))?;
        let mut d = 0;
        check("cuDeviceGet", unsafe { sys::cuDeviceGet(&mut d, o) })?;
        Ok(d)
    }
}

impl Driver for NvidiaDriver {
    fn platform(&self) -> Platform {
        Platform::Nvidia
    }
    fn version(&self) -> Result<i32> {
        let mut v = 0;
        check("cuDriverGetVersion", unsafe {
            sys::cuDriverGetVersion(&mut v)
        })?;
        Ok(v)
    }
    fn device_count(&self) -> Result<usize> {
        let mut n = 0;
        check("cuDeviceGetCount", unsafe { sys::cuDeviceGetCount(&mut n) })?;
        Ok(n.max(0) as usize)
    }
    fn device_name(&self, o: usize) -> Result<String> {
        let d = self.device(o)?;
        let mut buf = [0 as c_char; 256];
        check("cuDeviceGetName", unsafe {
            sys::cuDeviceGetName(buf.as_mut_ptr(), buf.len() as i32, d)
        })?;
        // SAFETY: the driver wrote a NUL-terminated string into buf.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }
    fn device_total_mem(&self, o: usize) -> Result<usize> {
        let d = self.device(o)?;
        let mut b = 0;
        check("cuDeviceTotalMem_v2", unsafe {
            sys::cuDeviceTotalMem_v2(&mut b, d)
        })?;
        Ok(b)
    }
    fn device_multiprocessors(&self, o: usize) -> Result<usize> {
        self.positive_attribute(
            o,
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            "MULTIPROCESSOR_COUNT",
        )
    }
    fn device_shared_per_multiprocessor(&self, o: usize) -> Result<usize> {
        self.positive_attribute(
            o,
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
            "MAX_SHARED_MEMORY_PER_MULTIPROCESSOR",
        )
    }
    fn mem_info(&self) -> Result<(usize, usize)> {
        let (mut free, mut total) = (0, 0);
        check("cuMemGetInfo_v2", unsafe {
            sys::cuMemGetInfo_v2(&mut free, &mut total)
        })?;
        Ok((free, total))
    }
    fn bind_device(&self, o: usize) -> Result<()> {
        let mut ctxs = self
            .contexts
            .lock()
            .map_err(|_| HipError::Invalid("context table poisoned".into()))?;
        if ctxs.len() <= o {
            ctxs.resize(o + 1, None);
        }
        let ctx = match ctxs[o] {
            Some(c) => c as sys::CUcontext,
            None => {
                let d = self.device(o)?;
                let mut c = std::ptr::null_mut();
                check("cuDevicePrimaryCtxRetain", unsafe {
                    sys::cuDevicePrimaryCtxRetain(&mut c, d)
                })?;
                ctxs[o] = Some(c as usize);
                c
            }
        };
        check("cuCtxSetCurrent", unsafe { sys::cuCtxSetCurrent(ctx) })
    }
    fn malloc(&self, bytes: usize) -> Result<DevicePtr> {
        let mut p = 0;
        check("cuMemAlloc_v2", unsafe {
            sys::cuMemAlloc_v2(&mut p, bytes)
        })?;
        Ok(DevicePtr(p as usize as *mut c_void))
    }
    unsafe fn free(&self, p: DevicePtr) -> Result<()> {
        check("cuMemFree_v2", sys::cuMemFree_v2(dptr(p)))
    }
    unsafe fn memcpy_htod(&self, dst: DevicePtr, src: &[u8], s: StreamHandle) -> Result<()> {
        check(
            "cuMemcpyHtoDAsync_v2",
            sys::cuMemcpyHtoDAsync_v2(dptr(dst), src.as_ptr().cast(), src.len(), stream(s)),
        )
    }
    unsafe fn memcpy_dtoh(&self, dst: &mut [u8], src: DevicePtr, s: StreamHandle) -> Result<()> {
        check(
            "cuMemcpyDtoHAsync_v2",
            sys::cuMemcpyDtoHAsync_v2(dst.as_mut_ptr().cast(), dptr(src), dst.len(), stream(s)),
        )
    }
    unsafe fn memcpy_dtod(
        &self,
        dst: DevicePtr,
        src: DevicePtr,
        bytes: usize,
        s: StreamHandle,
    ) -> Result<()> {
        check(
            "cuMemcpyDtoDAsync_v2",
            sys::cuMemcpyDtoDAsync_v2(dptr(dst), dptr(src), bytes, stream(s)),
        )
    }
    unsafe fn memset_d8(
        &self,
        dst: DevicePtr,
        value: u8,
        bytes: usize,
        s: StreamHandle,
    ) -> Result<()> {
        check(
            "cuMemsetD8Async",
            sys::cuMemsetD8Async(dptr(dst), value, bytes, stream(s)),
        )
    }
    fn stream_create(&self) -> Result<StreamHandle> {
        let mut s = std::ptr::null_mut();
        check("cuStreamCreate", unsafe { sys::cuStreamCreate(&mut s, 0) })?;
        Ok(StreamHandle(s.cast()))
    }
    fn stream_destroy(&self, s: StreamHandle) -> Result<()> {
        check("cuStreamDestroy_v2", unsafe {
            sys::cuStreamDestroy_v2(stream(s))
        })
    }
    fn stream_synchronize(&self, s: StreamHandle) -> Result<()> {
        check("cuStreamSynchronize", unsafe {
            sys::cuStreamSynchronize(stream(s))
        })
    }
    fn event_create(&self) -> Result<EventHandle> {
        let mut e = std::ptr::null_mut();
        check("cuEventCreate", unsafe { sys::cuEventCreate(&mut e, 0) })?;
        Ok(EventHandle(e.cast()))
    }
    fn event_record(&self, e: EventHandle, s: StreamHandle) -> Result<()> {
        check("cuEventRecord", unsafe {
            sys::cuEventRecord(e.0.cast(), stream(s))
        })
    }
    fn event_synchronize(&self, e: EventHandle) -> Result<()> {
        check("cuEventSynchronize", unsafe {
            sys::cuEventSynchronize(e.0.cast())
        })
    }
    fn event_elapsed_ms(&self, a: EventHandle, b: EventHandle) -> Result<f32> {
        let mut ms = 0f32;
        check("cuEventElapsedTime", unsafe {
            sys::cuEventElapsedTime(&mut ms, a.0.cast(), b.0.cast())
        })?;
        Ok(ms)
    }
    fn event_destroy(&self, e: EventHandle) -> Result<()> {
        check("cuEventDestroy_v2", unsafe {
            sys::cuEventDestroy_v2(e.0.cast())
        })
    }
    fn module_load_data(&self, image: &[u8]) -> Result<ModuleHandle> {
        let mut m = std::ptr::null_mut();
        check("cuModuleLoadData", unsafe {
            sys::cuModuleLoadData(&mut m, image.as_ptr().cast())
        })?;
        Ok(ModuleHandle(m.cast()))
    }
    fn module_unload(&self, m: ModuleHandle) -> Result<()> {
        check("cuModuleUnload", unsafe { sys::cuModuleUnload(m.0.cast()) })
    }
    fn module_get_function(&self, m: ModuleHandle, name: &str) -> Result<FunctionHandle> {
        let c = CString::new(name)
            .map_err(|_| HipError::Invalid(format!("kernel name {name:?} contains NUL")))?;
        let mut f = std::ptr::null_mut();
        check("cuModuleGetFunction", unsafe {
            sys::cuModuleGetFunction(&mut f, m.0.cast(), c.as_ptr())
        })?;
        Ok(FunctionHandle(f.cast()))
    }
    fn module_get_global(&self, m: ModuleHandle, name: &str) -> Result<Option<(DevicePtr, usize)>> {
        let c = CString::new(name)
            .map_err(|_| HipError::Invalid(format!("global name {name:?} contains NUL")))?;
        let (mut p, mut bytes) = (0, 0usize);
        let r = unsafe { sys::cuModuleGetGlobal_v2(&mut p, &mut bytes, m.0.cast(), c.as_ptr()) };
        if r == sys::CUresult::CUDA_ERROR_NOT_FOUND {
            return Ok(None);
        }
        check("cuModuleGetGlobal_v2", r)?;
        Ok(Some((DevicePtr(p as usize as *mut c_void), bytes)))
    }
    fn function_set_max_dynamic_shared(&self, f: FunctionHandle, bytes: u32) -> Result<()> {
        let value = i32::try_from(bytes)
            .map_err(|_| HipError::Invalid(format!("{bytes} bytes of shared memory")))?;
        check("cuFuncSetAttribute", unsafe {
            sys::cuFuncSetAttribute(
                f.0.cast(),
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                value,
            )
        })
    }
    fn function_max_active_blocks(
        &self,
        f: FunctionHandle,
        threads: u32,
        shared_bytes: u32,
    ) -> Result<u32> {
        let threads = block_threads_arg(threads)?;
        let mut n = 0;
        check("cuOccupancyMaxActiveBlocksPerMultiprocessor", unsafe {
            sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(
                &mut n,
                f.0.cast(),
                threads,
                shared_bytes as usize,
            )
        })?;
        Ok(n.max(0) as u32)
    }
    fn function_max_active_clusters(
        &self,
        f: FunctionHandle,
        threads: u32,
        shared_bytes: u32,
        cluster: u32,
    ) -> Result<u32> {
        block_threads_arg(threads)?;
        // SAFETY (of the union write): clusterDim is the member the attribute reads.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
        attr.value.clusterDim.x = cluster;
        attr.value.clusterDim.y = 1;
        attr.value.clusterDim.z = 1;
        // The grid is one cluster (the query reads the block and the cluster, and wants a
        // grid the cluster divides).
        let config = sys::CUlaunchConfig {
            gridDimX: cluster,
            gridDimY: 1,
            gridDimZ: 1,
            blockDimX: threads,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: shared_bytes,
            hStream: std::ptr::null_mut(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        let mut n = 0;
        check("cuOccupancyMaxActiveClusters", unsafe {
            sys::cuOccupancyMaxActiveClusters(&mut n, f.0.cast(), &config)
        })?;
        Ok(n.max(0) as u32)
    }
    unsafe fn launch(
        &self,
        f: FunctionHandle,
        d: LaunchDims,
        s: StreamHandle,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        if d.cluster > 1 {
            return launch_ex(f, d, s, params, false);
        }
        let [gx, gy, gz] = d.grid;
        let [bx, by, bz] = d.block;
        check(
            "cuLaunchKernel",
            sys::cuLaunchKernel(
                f.0.cast(),
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                d.shared_bytes,
                stream(s),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
        )
    }
    fn tensor_map(
        &self,
        ptr: DevicePtr,
        elem: TensorElem,
        rows: u64,
        cols: u64,
        box_rows: u32,
        box_cols: u32,
    ) -> Result<TensorMap> {
        // SAFETY: the driver fills the 128-byte descriptor; it only reads the arrays below.
        let mut map: sys::CUtensorMap = unsafe { std::mem::zeroed() };
        let dims = [cols, rows];
        let strides = [cols * elem.bytes()];
        let dtype = match elem {
            TensorElem::F16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            TensorElem::U8 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT8,
        };
        // The swizzle is as wide as a box row: the K-major layouts wgmma's descriptors read.
        let swizzle = match box_cols as u64 * elem.bytes() {
            128 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            64 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
            32 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
            b => {
                return Err(HipError::Invalid(format!(
                    "a tensor map box row of {b} bytes (accepted: 32, 64 or 128, a swizzle width)"
                )))
            }
        };
        let boxes = [box_cols, box_rows];
        let steps = [1u32, 1];
        check("cuTensorMapEncodeTiled", unsafe {
            sys::cuTensorMapEncodeTiled(
                &mut map,
                dtype,
                2,
                ptr.addr() as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                steps.as_ptr(),
                sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                swizzle,
                sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        })?;
        Ok(TensorMap(map.opaque))
    }
    unsafe fn launch_overlapped(
        &self,
        f: FunctionHandle,
        d: LaunchDims,
        s: StreamHandle,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        launch_ex(f, d, s, params, true)
    }
    fn stream_begin_capture(&self, s: StreamHandle) -> Result<()> {
        check("cuStreamBeginCapture_v2", unsafe {
            sys::cuStreamBeginCapture_v2(
                stream(s),
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL,
            )
        })
    }
    fn stream_end_capture(&self, s: StreamHandle) -> Result<GraphHandle> {
        let mut g = std::ptr::null_mut();
        check("cuStreamEndCapture", unsafe {
            sys::cuStreamEndCapture(stream(s), &mut g)
        })?;
        Ok(GraphHandle(g.cast()))
    }
    fn graph_instantiate(&self, g: GraphHandle) -> Result<GraphExecHandle> {
        let mut e = std::ptr::null_mut();
        check("cuGraphInstantiateWithFlags", unsafe {
            sys::cuGraphInstantiateWithFlags(&mut e, g.0.cast(), 0)
        })?;
        Ok(GraphExecHandle(e.cast()))
    }
    fn graph_launch(&self, g: GraphExecHandle, s: StreamHandle) -> Result<()> {
        check("cuGraphLaunch", unsafe {
            sys::cuGraphLaunch(g.0.cast(), stream(s))
        })
    }
    fn graph_destroy(&self, g: GraphHandle) -> Result<()> {
        check("cuGraphDestroy", unsafe { sys::cuGraphDestroy(g.0.cast()) })
    }
    fn graph_exec_destroy(&self, g: GraphExecHandle) -> Result<()> {
        check("cuGraphExecDestroy", unsafe {
            sys::cuGraphExecDestroy(g.0.cast())
        })
    }
}
