//! The runtime layer on a real GPU. Run with `GRETA_REQUIRE_GPU=1 cargo test -p hiprt
//! --test gpu -- --ignored`: then a missing GPU fails the tests, it does not skip them.
//! (tools/gpu/h100_checks.sh runs them on the H100 machine.)

use std::ffi::c_void;

use hiprt::{DeviceBuffer, Gpu, LaunchDims, Platform, PlatformChoice, Stream};

/// PTX for `c[i] = a[i] + b[i]`, JIT-compiled by the CUDA driver (cuModuleLoadData takes
/// PTX as well as cubin), so this test needs no compiler on the GPU machine.
const VEC_ADD_PTX: &str = r#"
.version 7.0
.target sm_70
.address_size 64
.visible .entry vec_add(.param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u32 pn)
{
    .reg .pred %p<2>;
    .reg .f32 %f<4>;
    .reg .b32 %r<6>;
    .reg .b64 %rd<11>;
    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.u64 %rd3, [pc];
    ld.param.u32 %r1, [pn];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd4, %rd1;
    cvta.to.global.u64 %rd5, %rd2;
    cvta.to.global.u64 %rd6, %rd3;
    mul.wide.u32 %rd7, %r5, 4;
    add.s64 %rd8, %rd4, %rd7;
    add.s64 %rd9, %rd5, %rd7;
    add.s64 %rd10, %rd6, %rd7;
    ld.global.f32 %f1, [%rd8];
    ld.global.f32 %f2, [%rd9];
    add.f32 %f3, %f1, %f2;
    st.global.f32 [%rd10], %f3;
DONE:
    ret;
}
"#;

fn gpu() -> Gpu {
    assert_eq!(
        std::env::var("GRETA_REQUIRE_GPU").as_deref(),
        Ok("1"),
        "set GRETA_REQUIRE_GPU=1 to run the GPU tests"
    );
    let choice = std::env::var("GRETA_PLATFORM")
        .unwrap_or_else(|_| "auto".into())
        .parse::<PlatformChoice>()
        .unwrap();
    Gpu::open(choice, 0).unwrap_or_else(|e| panic!("GRETA_REQUIRE_GPU=1 but no GPU opened: {e}"))
}

fn module(g: &Gpu) -> hiprt::Module {
    match g.platform() {
        Platform::Nvidia => {
            let mut ptx = VEC_ADD_PTX.as_bytes().to_vec();
            ptx.push(0);
            g.load_module(&ptx).unwrap()
        }
        Platform::Amd => {
            panic!("no AMD code object for this test yet: it comes with cargo xtask build-kernels")
        }
    }
}

/// vec_add's inputs a and b on the device, its output c zeroed, what c should hold, and its
/// four parameters (three device addresses and n).
struct VecAdd {
    a: Vec<f32>,
    want: Vec<f32>,
    c: DeviceBuffer<f32>,
    inputs: [DeviceBuffer<f32>; 2],
    addrs: [u64; 3],
    n: u32,
}

impl VecAdd {
    fn new(g: &Gpu, s: &Stream, n: usize) -> VecAdd {
        let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32).collect();
        let want = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let mut da = g.alloc::<f32>(n).unwrap();
        let mut db = g.alloc::<f32>(n).unwrap();
        let mut c = g.alloc::<f32>(n).unwrap();
        da.copy_from_host(&a, s).unwrap();
        db.copy_from_host(&b, s).unwrap();
        c.zero(s).unwrap();
        let addrs = [da.ptr(), db.ptr(), c.ptr()].map(|p| p.addr() as u64);
        VecAdd {
            a,
            want,
            c,
            inputs: [da, db],
            addrs,
            n: n as u32,
        }
    }
    /// Pointers to the parameters, valid while `self` is neither moved nor dropped.
    fn params(&mut self) -> Vec<*mut c_void> {
        let [pa, pb, pc] = &mut self.addrs;
        vec![
            (pa as *mut u64).cast(),
            (pb as *mut u64).cast(),
            (pc as *mut u64).cast(),
            (&mut self.n as *mut u32).cast(),
        ]
    }
}

#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1 cargo test -p hiprt --test gpu -- --ignored"]
fn copies_round_trip_and_a_kernel_runs_eagerly_and_from_a_graph() {
    let g = gpu();
    eprintln!(
        "device: {} ({}), {} MiB",
        g.name(),
        g.platform(),
        g.total_memory().unwrap() >> 20
    );
    let s = g.stream().unwrap();
    let n = 100_003usize; // not a multiple of the block size
    let mut v = VecAdd::new(&g, &s, n);
    assert_eq!(
        v.inputs[0].to_vec(&s).unwrap(),
        v.a,
        "host -> device -> host"
    );
    assert!(v.c.to_vec(&s).unwrap().iter().all(|&x| x == 0.0));

    let f = module(&g).function("vec_add").unwrap();
    let dims = LaunchDims {
        grid: [n.div_ceil(256) as u32, 1, 1],
        block: [256, 1, 1],
        shared_bytes: 0,
        cluster: 1,
    };
    let mut params = v.params();
    let (start, end) = (g.event().unwrap(), g.event().unwrap());
    start.record(&s).unwrap();
    // SAFETY: four parameters of the kernel's types; every buffer holds n floats.
    unsafe { f.launch(dims, &s, &mut params).unwrap() };
    end.record(&s).unwrap();
    end.synchronize().unwrap();
    assert!(end.elapsed_since(&start).unwrap() >= 0.0);
    assert_eq!(v.c.to_vec(&s).unwrap(), v.want, "eager launch");

    // Capture the same launch, replay it into a zeroed buffer: same result.
    v.c.zero(&s).unwrap();
    s.synchronize().unwrap();
    s.begin_capture().unwrap();
    // SAFETY: as above.
    unsafe { f.launch(dims, &s, &mut params).unwrap() };
    let graph = s.end_capture().unwrap();
    let exec = graph.instantiate().unwrap();
    assert!(
        v.c.to_vec(&s).unwrap().iter().all(|&x| x == 0.0),
        "capture must not run the kernel"
    );
    exec.launch(&s).unwrap();
    s.synchronize().unwrap();
    assert_eq!(v.c.to_vec(&s).unwrap(), v.want, "graph replay");
}

#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1 cargo test -p hiprt --test gpu -- --ignored"]
fn runtime_errors_name_the_call_and_the_code() {
    let g = gpu();
    let e = match g.load_module(b"not a code object\0") {
        Ok(_) => panic!("garbage loaded as a module"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("ModuleLoadData") && e.contains("failed with"),
        "{e}"
    );
    let m = module(&g);
    let e = m
        .function("no_such_kernel")
        .err()
        .expect("missing kernel")
        .to_string();
    assert!(
        e.contains("ModuleGetFunction") && e.contains("failed with"),
        "{e}"
    );
    let e = g
        .alloc::<u8>(usize::MAX / 2)
        .err()
        .expect("absurd allocation")
        .to_string();
    assert!(e.contains("Malloc") || e.contains("MemAlloc"), "{e}");
}

/// A launch in thread-block clusters computes what a plain one does (NVIDIA sm_90: the
/// decode attention's splits run so), overlapped or not; a cluster that does not divide the
/// grid is refused before the runtime is called, naming both sizes.
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1 cargo test -p hiprt --test gpu -- --ignored"]
fn a_launch_in_clusters_runs_and_a_cluster_that_does_not_divide_the_grid_is_refused() {
    let g = gpu();
    let s = g.stream().unwrap();
    let mut v = VecAdd::new(&g, &s, 1000); // 4 blocks of 256
    let f = module(&g).function("vec_add").unwrap();
    let mut params = v.params();
    let dims = |cluster| LaunchDims {
        grid: [4, 1, 1],
        block: [256, 1, 1],
        shared_bytes: 0,
        cluster,
    };
    for cluster in [2, 4] {
        for overlapped in [false, true] {
            v.c.zero(&s).unwrap();
            // SAFETY: four parameters of the kernel's types; every buffer holds n floats.
            let r = unsafe {
                if overlapped {
                    f.launch_overlapped(dims(cluster), &s, &mut params)
                } else {
                    f.launch(dims(cluster), &s, &mut params)
                }
            };
            match g.platform() {
                Platform::Nvidia => {
                    r.unwrap();
                    assert_eq!(
                        v.c.to_vec(&s).unwrap(),
                        v.want,
                        "clusters of {cluster}, overlapped {overlapped}"
                    );
                }
                Platform::Amd => {
                    let e = r.unwrap_err().to_string();
                    assert!(e.contains("no thread-block clusters"), "{e}");
                }
            }
        }
    }
    for bad in [0, 3] {
        // SAFETY: refused before the launch.
        let e = unsafe { f.launch(dims(bad), &s, &mut params) }
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("4 blocks") && e.contains(&format!("clusters of {bad}")),
            "{e}"
        );
    }
}

/// The occupancy calculator (`Function::max_active_blocks`, what `greta bench --kernels`
/// counts waves with) on the limits every sm_90 device has: 2048 threads and 228 KiB of
/// shared memory a multiprocessor. (Not two blocks of 100 KiB: whether they fit depends on
/// the shared-memory carveout the calculator assumes.)
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1 cargo test -p hiprt --test gpu -- --ignored"]
fn occupancy_counts_blocks_by_threads_and_shared_memory() {
    let g = gpu();
    assert_eq!(
        g.shared_per_multiprocessor().unwrap(),
        228 * 1024,
        "the figures below are sm_90's"
    );
    let m = module(&g);
    let f = m.function("vec_add").unwrap();
    assert_eq!(
        f.max_active_blocks(1024, 0).unwrap(),
        2,
        "2048 threads a multiprocessor"
    );
    assert_eq!(f.max_active_blocks(256, 0).unwrap(), 8);
    f.set_max_dynamic_shared(200 * 1024).unwrap();
    assert_eq!(
        f.max_active_blocks(256, 200 * 1024).unwrap(),
        1,
        "200 KiB: one block"
    );
}

/// The cluster occupancy query (`Function::max_active_clusters`, from which `greta bench
/// --kernels` counts a clustered launch's waves): pairs of one-block-a-multiprocessor
/// blocks (200 KiB of shared memory each) fill at most every multiprocessor once, and at
/// least one pair runs; blocks small enough for eight a multiprocessor make more pairs,
/// at most four a multiprocessor.
#[test]
#[ignore = "needs a GPU: GRETA_REQUIRE_GPU=1 cargo test -p hiprt --test gpu -- --ignored"]
fn cluster_occupancy_counts_pairs_of_blocks() {
    let g = gpu();
    let sms = g.multiprocessors().unwrap() as u32;
    let m = module(&g);
    let f = m.function("vec_add").unwrap();
    f.set_max_dynamic_shared(200 * 1024).unwrap();
    let pairs = f.max_active_clusters(256, 200 * 1024, 2).unwrap();
    eprintln!("{sms} multiprocessors: {pairs} clusters of 2 blocks of 200 KiB");
    assert!(
        pairs >= 1 && 2 * pairs <= sms,
        "{pairs} pairs on {sms} multiprocessors"
    );
    let small = f.max_active_clusters(256, 0, 2).unwrap();
    assert!(
        small > pairs && 2 * small <= 8 * sms,
        "{small} pairs of small blocks on {sms} multiprocessors"
    );
}
