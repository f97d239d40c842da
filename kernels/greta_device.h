// greta_device.h: the one portability header every kernel is written against.
//
// The same source compiles for AMD (clang -x hip --offload-device-only, no ROCm headers:
// -nogpuinc -nogpulib) and NVIDIA (nvcc -x cu). Only this file knows which is which.
// Activations are f32; weights and the KV cache are stored as f16 (g_half) and widened on
// load; accumulation is f32.
#pragma once

#if defined(__HIP__)
#define GRETA_AMD 1
#define GRETA_KERNEL extern "C" __attribute__((global))
#define GRETA_DEVICE static __attribute__((device)) inline
#define GRETA_SHARED __attribute__((shared))
// The most threads a kernel's blocks have: lets the compiler give each thread the registers
// a smaller block leaves (HIP assumes 1024-thread blocks otherwise: at most 128 VGPRs at
// wave64, where the decode attention spilled 226).
#define GRETA_BLOCK_MAX(n) __attribute__((amdgpu_flat_work_group_size(1, n)))
// Wave size: 64 on CDNA (gfx90a, gfx942).
#define GRETA_WAVE 64
typedef _Float16 g_half;
GRETA_DEVICE unsigned g_tid() { return __builtin_amdgcn_workitem_id_x(); }
GRETA_DEVICE unsigned g_bid() { return __builtin_amdgcn_workgroup_id_x(); }
GRETA_DEVICE unsigned g_bid_y() { return __builtin_amdgcn_workgroup_id_y(); }
GRETA_DEVICE unsigned g_bdim() { return __builtin_amdgcn_workgroup_size_x(); }
GRETA_DEVICE void g_sync() {
    __builtin_amdgcn_fence(__ATOMIC_RELEASE, "workgroup");
    __builtin_amdgcn_s_barrier();
    __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "workgroup");
}
GRETA_DEVICE float g_h2f(g_half h) { return (float)h; }
GRETA_DEVICE g_half g_f2h(float f) { return (g_half)f; }
GRETA_DEVICE float g_sqrt(float x) { return __builtin_sqrtf(x); }
GRETA_DEVICE float g_exp(float x) { return __builtin_expf(x); }
GRETA_DEVICE float g_sin(float x) { return __builtin_sinf(x); }
GRETA_DEVICE float g_cos(float x) { return __builtin_cosf(x); }
GRETA_DEVICE float g_fma(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
#else
#include <cuda_fp16.h>
#define GRETA_NVIDIA 1
#define GRETA_KERNEL extern "C" __global__
#define GRETA_DEVICE static __device__ inline
#define GRETA_SHARED __shared__
// Nothing on NVIDIA: nvcc already allows 255 registers a thread whatever the block (the
// measured sm_90a objects were built so; __launch_bounds__ changes their code).
#define GRETA_BLOCK_MAX(n)
#define GRETA_WAVE 32
typedef __half g_half;
GRETA_DEVICE unsigned g_tid() { return threadIdx.x; }
GRETA_DEVICE unsigned g_bid() { return blockIdx.x; }
GRETA_DEVICE unsigned g_bid_y() { return blockIdx.y; }
GRETA_DEVICE unsigned g_bdim() { return blockDim.x; }
GRETA_DEVICE void g_sync() { __syncthreads(); }
GRETA_DEVICE float g_h2f(g_half h) { return __half2float(h); }
GRETA_DEVICE g_half g_f2h(float f) { return __float2half(f); }
GRETA_DEVICE float g_sqrt(float x) { return sqrtf(x); }
GRETA_DEVICE float g_exp(float x) { return expf(x); }
// 2^x by the special function unit alone (ex2.approx: relative error ~2^-22, subnormal
// results flushed to 0, ex2(-inf) = 0): for a softmax whose P is rounded to f16 next.
GRETA_DEVICE float g_exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// 1 / x by the special function unit alone (rcp.approx: within 1 ulp, subnormals flushed).
GRETA_DEVICE float g_rcp_approx(float x) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
GRETA_DEVICE float g_sin(float x) { return sinf(x); }
GRETA_DEVICE float g_cos(float x) { return cosf(x); }
GRETA_DEVICE float g_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
#endif

// A compile-time flag passed to a generic lambda (`if constexpr (decltype(f)::value)`), so
// one body yields two specialised copies.
template <bool B>
struct g_bool {
    static constexpr bool value = B;
};

// RoPE at position pos, pair i: the angle's sine and cosine, and the rotation of the pair
// (g_rope_pair does both). rope_f32, rope_qk_append_f16, the decode attention's own RoPE and
// the prefill attention's RoPE on q share them, so their values are bitwise equal.
GRETA_DEVICE void g_rope_angle(float pos, const float* inv_freq, unsigned i, float* s, float* c) {
    float angle = pos * inv_freq[i];
    *s = g_sin(angle);
    *c = g_cos(angle);
}
// The rotated pair (x0, x1) by (c, s): its first and second element. Every RoPE site
// rotates through these two, so that each element gets the same arithmetic everywhere; the
// fused multiply-adds are written out because the compiler's contraction of `a * b - c * d`
// may differ between sites (which product it keeps exact), and the prefill attention's RoPE
// on q must give rope_qk_append's bits.
GRETA_DEVICE float g_rope_first(float x0, float x1, float s, float c) { return g_fma(x0, c, -(x1 * s)); }
GRETA_DEVICE float g_rope_second(float x0, float x1, float s, float c) { return g_fma(x0, s, x1 * c); }
// Rotates pair i of a head by (c, s); returns the indices it wrote through *ia, *ib.
GRETA_DEVICE void g_rope_rotate(float* head, float s, float c, unsigned i, unsigned half, unsigned half_split,
                                unsigned* ia, unsigned* ib) {
    unsigned a = half_split ? i : 2 * i;
    unsigned b = half_split ? i + half : 2 * i + 1;
    float x0 = head[a], x1 = head[b];
    head[a] = g_rope_first(x0, x1, s, c);
    head[b] = g_rope_second(x0, x1, s, c);
    *ia = a;
    *ib = b;
}
GRETA_DEVICE void g_rope_pair(float* head, float pos, const float* inv_freq, unsigned i, unsigned half,
                              unsigned half_split, unsigned* ia, unsigned* ib) {
    float s, c;
    g_rope_angle(pos, inv_freq, i, &s, &c);
    g_rope_rotate(head, s, c, i, half, half_split, ia, ib);
}

// Overlapped launches (hiprt's launch_overlapped: NVIDIA programmatic dependent launch,
// sm_90+). A kernel so launched may be resident while the kernel ahead of it still runs, so
// g_wait_previous() must come before its first access to memory another kernel writes or
// reads (activations, the KV cache, the position; the weights are read-only and may be read
// before it). g_launch_next() lets the kernel after this one start its own blocks once every
// block of this grid has called it or exited: called first thing, the next kernel's launch
// and prologue hide under this one's tail. Without an overlapped launch both are no-ops;
// HIP has no such launch, and on CDNA both compile to nothing.
GRETA_DEVICE void g_launch_next() {
#if defined(GRETA_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// The kernel timeline (`cargo xtask build-kernels --timeline`, NVIDIA sm_90 only; read by
// `greta bench --timeline`, crates/greta-kernels/src/timeline.rs): thread 0 of every block
// that waits stamps when it reached the wait and when the wait let it go (%globaltimer,
// ns), with its SM, block and grid, into its module's ring. All blocks of a launch pass
// their wait only after every block of the launch ahead has finished, so the stamps give
// the order of launches, each one's time on the critical path and how early its blocks
// were resident. The stamps cost a decode step ~10 % (SmolLM2): compare within such a build.
#if defined(GRETA_TIMELINE) && defined(GRETA_NVIDIA)
struct g_stamp {
    unsigned long long arrive, release;
    unsigned seq, sm, block, grid, threads, cycles;
};
// 2^20 stamps (40 MiB a module, timeline builds only): a whole 7B prefill-512 bench run's
// (~600 K in the busiest module); 2^18 overflowed there (session 27).
#define GRETA_TIMELINE_RING (1u << 20)
extern "C" {
__device__ unsigned greta_timeline_n;
__device__ g_stamp greta_timeline[GRETA_TIMELINE_RING];
}
#endif
GRETA_DEVICE void g_wait_previous() {
#if defined(GRETA_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#ifdef GRETA_TIMELINE
    unsigned long long arrive, release;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(arrive));
    const long long c0 = clock64();
#endif
    asm volatile("griddepcontrol.wait;" ::: "memory");
#ifdef GRETA_TIMELINE
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(release));
        unsigned sm;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        const unsigned seq = atomicAdd(&greta_timeline_n, 1u);
        g_stamp r;
        r.arrive = arrive;
        r.release = release;
        r.seq = seq;
        r.sm = sm;
        r.block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
        r.grid = gridDim.x * gridDim.y * gridDim.z;
        r.threads = blockDim.x * blockDim.y * blockDim.z;
        r.cycles = (unsigned)(clock64() - c0);
        greta_timeline[seq % GRETA_TIMELINE_RING] = r;
    }
#endif
#endif
}
// Both, at a kernel's entry: for kernels with nothing to do before their inputs are ready.
GRETA_DEVICE void g_overlap_entry() {
    g_launch_next();
    g_wait_previous();
}

// Thread-block clusters (NVIDIA sm_90+; hiprt's LaunchDims::cluster): the blocks of a
// cluster, consecutive along x, run at once and read each other's shared memory.
// GRETA_CLUSTERS says whether the target has them; CDNA does not (the helpers below do not
// exist there).
#if defined(GRETA_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define GRETA_CLUSTERS 1
// Blocks in this block's cluster (1 when launched without clusters).
GRETA_DEVICE unsigned g_cluster_blocks() {
    unsigned n;
    asm("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(n));
    return n;
}
// Every thread of the cluster that has not exited arrives and waits (an exited thread does
// not hold the barrier up: PTX `exit`); writes before it, to shared memory of this block or
// of a peer, are visible to every thread after it (release / acquire at cluster scope).
// Every thread of a warp must call it together (the .aligned form).
GRETA_DEVICE void g_cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// The address of `p` (this block's shared memory) in the block of cluster rank `rank`; the
// peer must not exit before the reads through it are done.
GRETA_DEVICE const float* g_cluster_peer(const float* p, unsigned rank) {
    unsigned long long out;
    asm volatile("mapa.u64 %0, %1, %2;\n" : "=l"(out) : "l"(p), "r"(rank));
    return (const float*)out;
}
// The same for writing into the peer's shared memory.
GRETA_DEVICE float* g_cluster_map(float* p, unsigned rank) {
    unsigned long long out;
    asm volatile("mapa.u64 %0, %1, %2;\n" : "=l"(out) : "l"(p), "r"(rank));
    return (float*)out;
}
// This block's rank in its cluster.
GRETA_DEVICE unsigned g_cluster_rank() {
    unsigned r;
    asm("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
// The halves of g_cluster_sync, for a barrier whose arrival is issued early (relaxed: no
// ordering of this thread's writes) and waited on late.
GRETA_DEVICE void g_cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory"); }
GRETA_DEVICE void g_cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }
// Shared-memory mbarriers (sm_90; the TMA pipeline of gemm.hip and the decode attention's
// cluster combine). A shared-window address, as their operands take it.
GRETA_DEVICE unsigned g_smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
// Sets up the mbarrier at `bar` with the number of arrivals its phase waits for.
GRETA_DEVICE void g_mbar_init(unsigned long long* bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(g_smem_addr(bar)), "r"(count) : "memory");
}
// Makes initialised barriers visible to the async proxy (the TMA unit) and to the other
// threads of the cluster (for a barrier its peers arrive on, a cluster barrier must still
// follow before any peer arrives).
GRETA_DEVICE void g_mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
// One arrival on the mbarrier at `bar`'s place in the block of cluster rank `rank`, releasing
// this thread's earlier writes (to any block's shared memory) at cluster scope.
GRETA_DEVICE void g_cluster_mbar_arrive(unsigned long long* bar, unsigned rank) {
    asm volatile(
        "{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\n"
        "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [ra];\n}\n" ::"r"(g_smem_addr(bar)),
        "r"(rank)
        : "memory");
}
// `count` arrivals on this block's own mbarrier (for blocks that will not arrive).
GRETA_DEVICE void g_cluster_mbar_arrive_local(unsigned long long* bar, unsigned count) {
    asm volatile("mbarrier.arrive.release.cluster.shared::cta.b64 _, [%0], %1;\n" ::"r"(g_smem_addr(bar)),
                 "r"(count)
                 : "memory");
}
// Waits for phase `parity` of this block's mbarrier, acquiring at cluster scope what the
// arrivals released.
GRETA_DEVICE void g_cluster_mbar_wait(unsigned long long* bar, unsigned parity) {
    unsigned done = 0;
    while (!done)
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(g_smem_addr(bar)), "r"(parity)
                     : "memory");
}
#endif

// ---------------------------------------------------------------------------------------
// The matrix units, one 16x16x16 f16 product with an f32 accumulator per wave (warp).
//
// g_acc16 is one wave's 16x16 f32 tile. g_mma16_abt(c, a, lda, bt, ldb) adds A·B where
//   A[i][k] = a[i * lda + k]   (16 x 16, row-major, f16, usually in LDS / shared memory)
//   B[k][j] = bt[j * ldb + k]  (B given transposed: the layout of a weight matrix [n][k]
//                               and of a K-cache tile [key][d])
// g_mma16_ab takes B[k][j] = b[k * ldb + j] (a V-cache tile [key][d]). g_acc16_store writes
// the tile row-major to out[i * ldo + j]. Every lane of the wave must call them together.
//
// AMD (CDNA2/3): v_mfma_f32_16x16x16f16 on wave64. Lane l supplies A[l % 16][4 (l / 16) + e]
// and B[4 (l / 16) + e][l % 16] for e = 0..3, and holds D[4 (l / 16) + e][l % 16].
// NVIDIA: the wmma API (HMMA on sm_90); its fragment layout is opaque, which is why tiles are
// exchanged through memory rather than element by element.
// Alignment (wmma's rules, kept on both): pointers 32-byte aligned, lda/ldb multiples of 8
// halves, ldo a multiple of 4 floats.
#if defined(GRETA_AMD)
typedef _Float16 g_half4 __attribute__((ext_vector_type(4)));
typedef float g_float4 __attribute__((ext_vector_type(4)));
struct g_acc16 {
    g_float4 v;
};
GRETA_DEVICE unsigned g_lane() { return g_tid() % GRETA_WAVE; }
GRETA_DEVICE void g_acc16_zero(g_acc16& c) { c.v = (g_float4){0.0f, 0.0f, 0.0f, 0.0f}; }
GRETA_DEVICE void g_mma16_abt(g_acc16& c, const g_half* a, unsigned lda, const g_half* bt, unsigned ldb) {
    unsigned l = g_lane(), r = l % 16, k0 = 4 * (l / 16);
    g_half4 av, bv;
    for (unsigned e = 0; e < 4; ++e) {
        av[e] = a[r * lda + k0 + e];
        bv[e] = bt[r * ldb + k0 + e];
    }
    c.v = __builtin_amdgcn_mfma_f32_16x16x16f16(av, bv, c.v, 0, 0, 0);
}
GRETA_DEVICE void g_mma16_ab(g_acc16& c, const g_half* a, unsigned lda, const g_half* b, unsigned ldb) {
    unsigned l = g_lane(), r = l % 16, k0 = 4 * (l / 16);
    g_half4 av, bv;
    for (unsigned e = 0; e < 4; ++e) {
        av[e] = a[r * lda + k0 + e];
        bv[e] = b[(k0 + e) * ldb + r];
    }
    c.v = __builtin_amdgcn_mfma_f32_16x16x16f16(av, bv, c.v, 0, 0, 0);
}
// Operand fragments, loaded once and used in several products (a wave's tile of 4 x 2
// products loads 4 A and 2 B fragments per K step, not 16 of each).
struct g_frag_a {
    g_half4 v;
};
struct g_frag_bt {
    g_half4 v;
};
GRETA_DEVICE void g_load_a(g_frag_a& f, const g_half* a, unsigned lda) {
    unsigned l = g_lane(), r = l % 16, k0 = 4 * (l / 16);
    for (unsigned e = 0; e < 4; ++e) f.v[e] = a[r * lda + k0 + e];
}
GRETA_DEVICE void g_load_bt(g_frag_bt& f, const g_half* bt, unsigned ldb) {
    unsigned l = g_lane(), r = l % 16, k0 = 4 * (l / 16);
    for (unsigned e = 0; e < 4; ++e) f.v[e] = bt[r * ldb + k0 + e];
}
GRETA_DEVICE void g_mma16(g_acc16& c, const g_frag_a& a, const g_frag_bt& b) {
    c.v = __builtin_amdgcn_mfma_f32_16x16x16f16(a.v, b.v, c.v, 0, 0, 0);
}
// Orders a wave's LDS writes before its own later reads (lanes exchange through LDS).
GRETA_DEVICE void g_wave_sync() {
    __builtin_amdgcn_fence(__ATOMIC_RELEASE, "wavefront");
    __builtin_amdgcn_wave_barrier();
    __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "wavefront");
}
GRETA_DEVICE void g_acc16_store(const g_acc16& c, float* out, unsigned ldo) {
    unsigned l = g_lane(), col = l % 16, r0 = 4 * (l / 16);
    for (unsigned e = 0; e < 4; ++e) out[(r0 + e) * ldo + col] = c.v[e];
}
#define GRETA_ALIGN32 __attribute__((aligned(32)))
#define GRETA_ALIGN16 __attribute__((aligned(16)))
#define GRETA_ALIGN8 __attribute__((aligned(8)))
#define GRETA_RESTRICT __restrict__
#else
#include <mma.h>
struct g_acc16 {
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> f;
};
GRETA_DEVICE unsigned g_lane() { return g_tid() % GRETA_WAVE; }
GRETA_DEVICE void g_acc16_zero(g_acc16& c) { nvcuda::wmma::fill_fragment(c.f, 0.0f); }
GRETA_DEVICE void g_mma16_abt(g_acc16& c, const g_half* a, unsigned lda, const g_half* bt, unsigned ldb) {
    using namespace nvcuda::wmma;
    fragment<matrix_a, 16, 16, 16, __half, row_major> af;
    fragment<matrix_b, 16, 16, 16, __half, col_major> bf;
    load_matrix_sync(af, a, lda);
    load_matrix_sync(bf, bt, ldb);
    mma_sync(c.f, af, bf, c.f);
}
GRETA_DEVICE void g_mma16_ab(g_acc16& c, const g_half* a, unsigned lda, const g_half* b, unsigned ldb) {
    using namespace nvcuda::wmma;
    fragment<matrix_a, 16, 16, 16, __half, row_major> af;
    fragment<matrix_b, 16, 16, 16, __half, row_major> bf;
    load_matrix_sync(af, a, lda);
    load_matrix_sync(bf, b, ldb);
    mma_sync(c.f, af, bf, c.f);
}
struct g_frag_a {
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> f;
};
struct g_frag_bt {
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __half, nvcuda::wmma::col_major> f;
};
GRETA_DEVICE void g_load_a(g_frag_a& f, const g_half* a, unsigned lda) { nvcuda::wmma::load_matrix_sync(f.f, a, lda); }
GRETA_DEVICE void g_load_bt(g_frag_bt& f, const g_half* bt, unsigned ldb) {
    nvcuda::wmma::load_matrix_sync(f.f, bt, ldb);
}
GRETA_DEVICE void g_mma16(g_acc16& c, const g_frag_a& a, const g_frag_bt& b) { nvcuda::wmma::mma_sync(c.f, a.f, b.f, c.f); }
GRETA_DEVICE void g_wave_sync() { __syncwarp(); }
GRETA_DEVICE void g_acc16_store(const g_acc16& c, float* out, unsigned ldo) {
    nvcuda::wmma::store_matrix_sync(out, c.f, ldo, nvcuda::wmma::mem_row_major);
}
#define GRETA_ALIGN32 __align__(32)
#define GRETA_ALIGN16 __align__(16)
#define GRETA_ALIGN8 __align__(8)
#define GRETA_RESTRICT __restrict__
#endif

// Lane exchange, fences, atomics and 16-byte loads. AMD: ds_bpermute across the 64 lanes;
// NVIDIA: shuffles.
#if defined(GRETA_AMD)
// The value lane (this lane ^ m) holds.
GRETA_DEVICE float g_shfl_xor(float v, unsigned m) {
    int other = __builtin_amdgcn_ds_bpermute((int)((g_lane() ^ m) << 2), __builtin_bit_cast(int, v));
    return __builtin_bit_cast(float, other);
}
// The value lane `src` holds.
GRETA_DEVICE float g_shfl(float v, unsigned src) {
    int other = __builtin_amdgcn_ds_bpermute((int)(src << 2), __builtin_bit_cast(int, v));
    return __builtin_bit_cast(float, other);
}
// Device-scope release / acquire fences and an atomic increment (returns the old value):
// the "last block finishes the reduction" pattern of the split decode attention.
GRETA_DEVICE void g_fence_release() { __builtin_amdgcn_fence(__ATOMIC_RELEASE, "agent"); }
GRETA_DEVICE void g_fence_acquire() { __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "agent"); }
GRETA_DEVICE unsigned g_atomic_inc(unsigned* p) {
    return __hip_atomic_fetch_add(p, 1u, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
}
// An atomic add to a word of LDS (a block's histogram, a slot counter); returns the old value.
GRETA_DEVICE unsigned g_atomic_add_lds(unsigned* p, unsigned v) {
    return __hip_atomic_fetch_add(p, v, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_WORKGROUP);
}
// The bits of an f32, and the f32 of some bits.
GRETA_DEVICE unsigned g_float_bits(float v) { return __builtin_bit_cast(unsigned, v); }
GRETA_DEVICE float g_bits_float(unsigned u) { return __builtin_bit_cast(float, u); }
// Eight consecutive f16 values (16 bytes, 16-byte aligned) widened to f32.
GRETA_DEVICE void g_load_h8(const g_half* p, float* out) {
    typedef _Float16 h8 __attribute__((ext_vector_type(8)));
    h8 v = *(const h8*)p;
    for (unsigned i = 0; i < 8; ++i) out[i] = (float)v[i];
}
#else
GRETA_DEVICE float g_shfl_xor(float v, unsigned m) { return __shfl_xor_sync(0xffffffffu, v, m); }
GRETA_DEVICE float g_shfl(float v, unsigned src) { return __shfl_sync(0xffffffffu, v, src); }
GRETA_DEVICE void g_fence_release() { __threadfence(); }
GRETA_DEVICE void g_fence_acquire() { __threadfence(); }
GRETA_DEVICE unsigned g_atomic_inc(unsigned* p) { return atomicAdd(p, 1u); }
GRETA_DEVICE unsigned g_atomic_add_lds(unsigned* p, unsigned v) { return atomicAdd(p, v); }
GRETA_DEVICE unsigned g_float_bits(float v) { return __float_as_uint(v); }
GRETA_DEVICE float g_bits_float(unsigned u) { return __uint_as_float(u); }
GRETA_DEVICE void g_load_h8(const g_half* p, float* out) {
    uint4 u = *(const uint4*)p;
    const __half2* h = (const __half2*)&u;
    for (unsigned i = 0; i < 4; ++i) {
        float2 f = __half22float2(h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}
#endif

// Sum and max over the lanes of a wave (every lane gets the result), and over aligned
// groups of `width` lanes (a power of two <= the wave size).
GRETA_DEVICE float g_group_sum(float v, unsigned width) {
    for (unsigned m = width / 2; m > 0; m >>= 1) v += g_shfl_xor(v, m);
    return v;
}
GRETA_DEVICE float g_wave_sum(float v) { return g_group_sum(v, GRETA_WAVE); }
GRETA_DEVICE float g_wave_max(float v) {
    for (unsigned m = GRETA_WAVE / 2; m > 0; m >>= 1) {
        float other = g_shfl_xor(v, m);
        v = other > v ? other : v;
    }
    return v;
}

// Block-wide sum and max: each wave reduces with shuffles, then every thread adds the
// waves' values from shared memory in wave order (so every thread holds the same, bitwise
// reproducible result). Two barriers instead of a log2(block) tree. Contract: the block
// size is a multiple of the wave size (at most 1024 threads) and scratch holds one float per
// wave; the scratch may be reused right after the call.
GRETA_DEVICE float g_block_sum(float v, float* scratch) {
    unsigned waves = g_bdim() / GRETA_WAVE;
    v = g_wave_sum(v);
    if (g_lane() == 0) scratch[g_tid() / GRETA_WAVE] = v;
    g_sync();
    float r = 0.0f;
    for (unsigned w = 0; w < waves; ++w) r += scratch[w];
    g_sync();
    return r;
}
GRETA_DEVICE float g_block_max(float v, float* scratch) {
    unsigned waves = g_bdim() / GRETA_WAVE;
    v = g_wave_max(v);
    if (g_lane() == 0) scratch[g_tid() / GRETA_WAVE] = v;
    g_sync();
    float r = scratch[0];
    for (unsigned w = 1; w < waves; ++w) r = scratch[w] > r ? scratch[w] : r;
    g_sync();
    return r;
}

// 16-byte vector loads: eight f32 (two 16-byte loads) and eight raw f16 (one), from
// 16-byte-aligned addresses. Register staging for the GEMM's software pipeline.
struct GRETA_ALIGN16 g_f4 {
    float v[4];
};
struct GRETA_ALIGN16 g_h8 {
    g_half v[8];
};
struct GRETA_ALIGN8 g_h4 {
    g_half v[4];
};

// SwiGLU's product of one element, silu(g) * u: every site (silu_mul_f32, the decode gate/up
// product, the prefill's silu_mul_split_f16 and the SwiGLU GEMM's epilogue) computes it so,
// and their values are bitwise equal. NVIDIA: g * u / (1 + 2^(-g log2 e)) on the special
// function unit (ex2.approx and rcp.approx, a few ulps from the CPU's g / (1 + e^-g) * u;
// ex2's overflow at g < -88 gives 1 / inf = 0, silu's limit): expf and an IEEE division
// were ~25 instructions an element, most of the SwiGLU GEMM epilogue's (session 27: the
// 7B gate/up kernel 153 us against 142 for the same GEMM storing f32, under ncu). AMD:
// the plain form (not measured there).
#if defined(GRETA_NVIDIA)
GRETA_DEVICE float g_silu_mul(float g, float u) {
    return g * g_rcp_approx(1.0f + g_exp2_approx(g * -1.4426950408889634f)) * u;
}
#else
GRETA_DEVICE float g_silu_mul(float g, float u) { return g / (1.0f + g_exp(-g)) * u; }
#endif
// The f16 operand pair of v for the matrix units: hi = f16(v), lo = f16(v - hi) (gemm.hip
// says which products read lo). split_f16 and the kernels that write operands beside their
// f32 output share it, so the operands are bitwise what split_f16 makes of that output.
GRETA_DEVICE void g_split_f16(float v, g_half* hi, g_half* lo) {
    *hi = g_f2h(v);
    *lo = g_f2h(v - g_h2f(*hi));
}

// FP8 low halves (`--split-lo fp8`, Hopper): x = hi + lo with hi = f16(x) as above and
// lo = x - hi (exact in f32) stored as e5m2(lo * 2^G_LO8_SCALE_LOG2), so that the lo
// product runs on the FP8 matrix units at twice the f16 rate (the weights' FP8 copies are
// e4m3 under one power-of-two scale per matrix, below). One fixed scale, no per-row or
// per-group ones: an f16 value's lo is at most half its ulp, 16 at f16's largest binade,
// and 16 * 2^11 = 2^15 is within e5m2's 57 344 (no saturation); e5m2's normals reach 2^29
// below that, so every lo of 2^-25 and more keeps e5m2's 2 mantissa bits (smaller ones, of
// elements in f16's lowest binades, an absolute 2^-28). So the GEMM sums a row's lo products
// over all of K with no rescaling between its steps, and no writer needs a row's maximum.
// (Session 17's e4m3 under one scale per row failed the audit: e4m3's 2^15 of range is
// less than a massive activation's row spans; per 64 columns it passed but made the GEMM
// rescale every step.) The op tests check the bytes against the float8 crate's conversion;
// greta-trace's `f16lo8` injection is the same rule on the CPU.
#define G_LO8_SCALE_LOG2 11
// The 2:4-sparse low halves' metadata (docs/sparse-lo.md), tiled for the GEMM's K 128 steps:
// the words of 64 rows for one step lie together (1 KiB), so that a step's metadata is one
// bulk copy a warpgroup; in it row r's 4 words (word w: the nibbles of columns 32 w .. + 31
// of the step) lie at 4 (r % 64) in the order 0, 2, 1, 3, so that the two a GEMM thread
// reads (words h and h + 2: half h of each K 64 product) are one 8-byte load. The offset, in
// words, of row block rb's step s in a k-column matrix:
GRETA_DEVICE unsigned long sp_meta_at(unsigned rb, unsigned s, unsigned k) {
    return ((unsigned long)rb * ((k + 127) / 128) + s) * 256;
}
// and of row r's word j (columns 32 j .. + 31 of the row).
GRETA_DEVICE unsigned long sp_meta_word(unsigned r, unsigned j, unsigned k) {
    const unsigned w = j % 4;
    return sp_meta_at(r / 64, j / 4, k) + 4 * (r % 64) + ((w & 1) << 1 | w >> 1);
}
// The 2:4 selection of a sparse low half (split_f16_lo8s, add_rmsnorm_split): of the 4 FP8
// bytes of w (4 consecutive columns, byte b column b), the two of largest magnitude (e5m2's
// byte & 0x7f orders them; the lower column on a tie), in column order. Returns their nibble
// (bits 1:0 and 3:2: the kept columns) and puts the two bytes in *kept (the first low).
GRETA_DEVICE unsigned g_sparse24(unsigned w, unsigned* kept) {
    // Keys unique and ordered as the rule orders the columns: magnitude, then the lower
    // column (3 - b in the low bits); a column is kept where it beats two of the other three
    // (six comparisons, not the sixteen of counting each column's betters with its ties).
    unsigned key[4];
#pragma unroll
    for (unsigned b = 0; b < 4; ++b) key[b] = ((w >> (8 * b)) & 0x7f) << 2 | (3 - b);
    const unsigned c01 = key[0] > key[1], c02 = key[0] > key[2], c03 = key[0] > key[3];
    const unsigned c12 = key[1] > key[2], c13 = key[1] > key[3], c23 = key[2] > key[3];
    const unsigned mask = (c01 + c02 + c03 >= 2) | (1 - c01 + c12 + c13 >= 2) << 1 |
                          (2 - c02 - c12 + c23 >= 2) << 2 | (3 - c03 - c13 - c23 >= 2) << 3;
    const unsigned keep0 = mask & 1 ? 0 : mask & 2 ? 1 : mask & 4 ? 2 : 3;
    const unsigned keep1 = mask & 8 ? 3 : mask & 4 ? 2 : mask & 2 ? 1 : 0;
    *kept = ((w >> (8 * keep0)) & 0xff) | ((w >> (8 * keep1)) & 0xff) << 8;
    return keep0 | keep1 << 2;
}
GRETA_DEVICE float g_fabs(float x) {
#if defined(GRETA_AMD)
    return __builtin_fabsf(x);
#else
    return fabsf(x);
#endif
}
// The weights' FP8 copy (quantize_e4m3): one power-of-two scale s for the matrix, 2^(E - 7)
// for its largest |w| in [2^E, 2^(E+1)): dividing by it is exact and the largest lands in
// [128, 256) (e4m3 saturates at 448; its normals cover the 2^14 below).
GRETA_DEVICE int g_lo8_exponent(float m) {
#if defined(GRETA_AMD)
    int e = (int)((__builtin_bit_cast(unsigned, m) >> 23) & 0xff) - 127;
#else
    int e = (int)((__float_as_uint(m) >> 23) & 0xff) - 127;
#endif
    // A matrix of zeros (or f32 subnormals only): any scale does; this one keeps both
    // powers within normal f32 range limits.
    return e < -119 ? -119 : e;
}
GRETA_DEVICE float g_pow2(int e) {
#if defined(GRETA_AMD)
    return __builtin_bit_cast(float, (unsigned)(e + 127) << 23);
#else
    return __uint_as_float((unsigned)(e + 127) << 23);
#endif
}
// The matrix's scale s and its inverse from its largest |w|.
GRETA_DEVICE float g_lo8_scale(float m) { return g_pow2(g_lo8_exponent(m) - 7); }
GRETA_DEVICE float g_lo8_inv_scale(float m) { return g_pow2(7 - g_lo8_exponent(m)); }
GRETA_DEVICE float g_max4_abs(const float* r) {
    float m = 0.0f;
    for (unsigned j = 0; j < 4; ++j) m = g_fabs(r[j]) > m ? g_fabs(r[j]) : m;
    return m;
}
GRETA_DEVICE float g_max8_abs(const float* r) {
    const float a = g_max4_abs(r), b = g_max4_abs(r + 4);
    return a > b ? a : b;
}
#if defined(GRETA_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
// FP8 conversions in hardware (sm_89+): round to nearest even, saturating (e4m3 at +-448,
// e5m2 at +-57 344; the scales keep values inside both). AMD has no FP8 lo route
// (gfx942's FP8 is the fnuz format and its MFMA path is not written): there the kernels'
// lo8 branches compile out and the host refuses `--split-lo fp8`.
#define GRETA_FP8 1
// Two values packed as bytes: a in the low byte, b in the high one (memory order a, b).
GRETA_DEVICE unsigned short g_e4m3x2(float a, float b) {
    unsigned short r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %2, %1;\n" : "=h"(r) : "f"(a), "f"(b));
    return r;
}
GRETA_DEVICE unsigned short g_e5m2x2(float a, float b) {
    unsigned short r;
    asm("cvt.rn.satfinite.e5m2x2.f32 %0, %2, %1;\n" : "=h"(r) : "f"(a), "f"(b));
    return r;
}
// Eight values times `inv` (memory order) as 8 bytes of e4m3.
GRETA_DEVICE uint2 g_e4m3x8(const float* r, float inv) {
    uint2 q;
    q.x = (unsigned)g_e4m3x2(r[0] * inv, r[1] * inv) | ((unsigned)g_e4m3x2(r[2] * inv, r[3] * inv) << 16);
    q.y = (unsigned)g_e4m3x2(r[4] * inv, r[5] * inv) | ((unsigned)g_e4m3x2(r[6] * inv, r[7] * inv) << 16);
    return q;
}
// Low halves (lo = x - f16(x)) as the GEMM's FP8 bytes: e5m2(lo * 2^G_LO8_SCALE_LOG2).
GRETA_DEVICE float g_lo8_scaled(float lo) { return lo * (float)(1u << G_LO8_SCALE_LOG2); }
GRETA_DEVICE unsigned char g_lo8(float lo) { return (unsigned char)g_e5m2x2(g_lo8_scaled(lo), 0.0f); }
// Two low halves as two bytes (memory order a, b): what every writer of FP8 operands stores
// for a pair (split_f16_lo8, the norms, SwiGLU, the attention's epilogue).
GRETA_DEVICE unsigned short g_lo8x2(float a, float b) { return g_e5m2x2(g_lo8_scaled(a), g_lo8_scaled(b)); }
GRETA_DEVICE unsigned g_lo8x4(const float* r) {
    return (unsigned)g_lo8x2(r[0], r[1]) | ((unsigned)g_lo8x2(r[2], r[3]) << 16);
}
GRETA_DEVICE uint2 g_lo8x8(const float* r) {
    uint2 q;
    q.x = g_lo8x4(r);
    q.y = g_lo8x4(r + 4);
    return q;
}
#endif
// Eight f16 weights a decode pass reads once: NVIDIA's cache-streaming load (ld.global.cs,
// evict-first in L1 and L2), so that the weight stream does not push the KV cache and the
// activations out of L2 between steps. AMD: a plain load.
GRETA_DEVICE g_h8 g_load_once_h8(const g_half* p) {
#if defined(GRETA_NVIDIA) && defined(__CUDA_ARCH__)
    uint4 u = __ldcs((const uint4*)p);
    return *(const g_h8*)&u;
#else
    return *(const g_h8*)p;
#endif
}
// Eight f16 from p where `valid`, else zeros, kept as four 32-bit words (a conditional
// load into zero-initialised halves is merged half by half, a PRMT per half).
GRETA_DEVICE g_h8 g_load_h8_or_zero(const g_half* p, bool valid) {
    struct GRETA_ALIGN16 words {
        unsigned v[4];
    } u = {{0u, 0u, 0u, 0u}};
    if (valid) u = *(const words*)p;
    g_h8 r;
    __builtin_memcpy(&r, &u, sizeof r);
    return r;
}
GRETA_DEVICE void g_load_f8(const float* p, float* out) {
    g_f4 a = *(const g_f4*)p, b = *(const g_f4*)(p + 4);
    for (unsigned i = 0; i < 4; ++i) {
        out[i] = a.v[i];
        out[4 + i] = b.v[i];
    }
}

// ---------------------------------------------------------------------------------------
// K slabs in LDS and a wave's tile of products on the matrix units: the building blocks of
// the prefill GEMM (kernels/gemm.hip).
//
// A slab holds rows of G_SLAB_K = 32 f16 of a row-major operand ([t][k] activations, [n][k]
// weights): 64 bytes, four 16-byte chunks per row. Chunk c of row r is stored at chunk
// c ^ ((r / 2) % 4) of that row, so the 8 rows a matrix load reads at one chunk land on 8
// different 16-byte bank groups (no conflicts, no padding).
#define G_SLAB_K 32
GRETA_DEVICE unsigned g_slab_at(unsigned r, unsigned c) { return r * G_SLAB_K + ((c ^ ((r >> 1) & 3u)) << 3); }

#if defined(GRETA_NVIDIA)
// 16 bytes global -> LDS without passing through registers (cp.async, sm_80+); zero-filled
// when !valid (src is then not read). Groups of copies are committed and waited for by count.
GRETA_DEVICE void g_copy16_async(g_half* dst, const g_half* src, bool valid) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
GRETA_DEVICE void g_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N committed groups are still in flight.
template <int N>
GRETA_DEVICE void g_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// A wave's FM x FN tile of 16 x 16 f32 accumulators. On NVIDIA each 16 x 16 is two
// m16n8k16 HMMA accumulators: lane l holds rows l / 4 (+ 8) and columns 2 (l % 4) (+ 1) of
// each 16 x 8 half. Operands come from slabs through ldmatrix (four 8 x 8 matrices per load).
template <unsigned FM, unsigned FN>
struct g_wave_tile {
    float c[FM][2 * FN][4];
};
template <unsigned FM, unsigned FN>
GRETA_DEVICE void g_tile_zero(g_wave_tile<FM, FN>& t) {
    for (unsigned i = 0; i < FM; ++i)
        for (unsigned j = 0; j < 2 * FN; ++j)
            for (unsigned e = 0; e < 4; ++e) t.c[i][j][e] = 0.0f;
}
// At a shared-memory address (g_smem_addr), which a caller can advance by constants.
GRETA_DEVICE void g_ldmatrix4_at(unsigned (&r)[4], unsigned a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
GRETA_DEVICE void g_ldmatrix4(unsigned (&r)[4], const g_half* p) { g_ldmatrix4_at(r, g_smem_addr(p)); }
GRETA_DEVICE void g_hmma16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// The same four 8 x 8 matrices transposed on the way (B operands stored [k][n], like a
// V tile [key][d]).
GRETA_DEVICE void g_ldmatrix4_trans_at(unsigned (&r)[4], unsigned a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
GRETA_DEVICE void g_ldmatrix4_trans(unsigned (&r)[4], const g_half* p) { g_ldmatrix4_trans_at(r, g_smem_addr(p)); }
// Two f32 as one register of two f16 (the first in the low half): an HMMA operand.
GRETA_DEVICE unsigned g_pack_h2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *(unsigned*)&h;
}
// t += A · Bᵀ over K = kk .. kk + 15 of the slabs: A rows ar0 .. ar0 + 16 FM - 1 of slab `as`,
// B rows (output columns) br0 .. br0 + 16 FN - 1 of slab `bs`.
template <unsigned FM, unsigned FN>
GRETA_DEVICE void g_tile_mma(g_wave_tile<FM, FN>& t, const g_half* as, unsigned ar0, const g_half* bs, unsigned br0,
                             unsigned kk) {
    unsigned l = g_lane();
    unsigned a[FM][4], b[FN][4];
    // A: lanes 0-15 give rows 0-15 at chunk 0 of the step, lanes 16-31 the same rows at
    // chunk 1 -> registers (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15).
    for (unsigned i = 0; i < FM; ++i) g_ldmatrix4(a[i], as + g_slab_at(ar0 + 16 * i + l % 16, kk / 8 + l / 16));
    // B: matrix m = l / 8 is (columns 8 (m / 2) .., k 8 (m % 2) ..) -> b0, b1 of the first
    // 8 columns, then of the second.
    for (unsigned j = 0; j < FN; ++j) {
        unsigned m = l / 8;
        g_ldmatrix4(b[j], bs + g_slab_at(br0 + 16 * j + (m / 2) * 8 + l % 8, kk / 8 + m % 2));
    }
    for (unsigned i = 0; i < FM; ++i)
        for (unsigned j = 0; j < FN; ++j) {
            g_hmma16816(t.c[i][2 * j], a[i], b[j][0], b[j][1]);
            g_hmma16816(t.c[i][2 * j + 1], a[i], b[j][2], b[j][3]);
        }
}
// Writes the tile to y[(r0 + i) * ldy + c0 + j] for rows < rows and columns < cols.
template <unsigned FM, unsigned FN>
GRETA_DEVICE void g_tile_store(const g_wave_tile<FM, FN>& t, float* y, unsigned ldy, unsigned r0, unsigned c0,
                               unsigned rows, unsigned cols) {
    unsigned l = g_lane();
    bool pairs = ldy % 2 == 0;
    for (unsigned i = 0; i < FM; ++i)
        for (unsigned j = 0; j < 2 * FN; ++j)
            for (unsigned h = 0; h < 2; ++h) {
                unsigned r = r0 + 16 * i + l / 4 + 8 * h, c = c0 + 8 * j + 2 * (l % 4);
                if (r >= rows) continue;
                float* p = y + (unsigned long)r * ldy + c;
                if (pairs && c + 1 < cols) {
                    *(float2*)p = make_float2(t.c[i][j][2 * h], t.c[i][j][2 * h + 1]);
                } else {
                    if (c < cols) p[0] = t.c[i][j][2 * h];
                    if (c + 1 < cols) p[1] = t.c[i][j][2 * h + 1];
                }
            }
}
#else
// CDNA has no asynchronous global -> LDS copy of 16 bytes: a load and a store (the
// pipeline's barriers order them the same way).
GRETA_DEVICE void g_copy16_async(g_half* dst, const g_half* src, bool valid) {
    g_h8 v;
    if (valid) {
        v = *(const g_h8*)src;
    } else {
        for (unsigned e = 0; e < 8; ++e) v.v[e] = g_f2h(0.0f);
    }
    *(g_h8*)dst = v;
}
GRETA_DEVICE void g_async_commit() {}
template <int N>
GRETA_DEVICE void g_async_wait() {}

// A wave's FM x FN tile of 16 x 16 f32 accumulators: v_mfma_f32_16x16x16f16, lane l holds
// rows 4 (l / 16) .. + 3 of column l % 16; it supplies A[l % 16][4 (l / 16) ..] and
// B[4 (l / 16) ..][l % 16] (8 bytes of one slab chunk each).
template <unsigned FM, unsigned FN>
struct g_wave_tile {
    g_float4 c[FM][FN];
};
template <unsigned FM, unsigned FN>
GRETA_DEVICE void g_tile_zero(g_wave_tile<FM, FN>& t) {
    for (unsigned i = 0; i < FM; ++i)
        for (unsigned j = 0; j < FN; ++j) t.c[i][j] = (g_float4){0.0f, 0.0f, 0.0f, 0.0f};
}
template <unsigned FM, unsigned FN>
GRETA_DEVICE void g_tile_mma(g_wave_tile<FM, FN>& t, const g_half* as, unsigned ar0, const g_half* bs, unsigned br0,
                             unsigned kk) {
    unsigned l = g_lane(), k4 = kk + 4 * (l / 16);
    g_half4 a[FM], b[FN];
    for (unsigned i = 0; i < FM; ++i) a[i] = *(const g_half4*)(as + g_slab_at(ar0 + 16 * i + l % 16, k4 / 8) + k4 % 8);
    for (unsigned j = 0; j < FN; ++j) b[j] = *(const g_half4*)(bs + g_slab_at(br0 + 16 * j + l % 16, k4 / 8) + k4 % 8);
    for (unsigned i = 0; i < FM; ++i)
        for (unsigned j = 0; j < FN; ++j) t.c[i][j] = __builtin_amdgcn_mfma_f32_16x16x16f16(a[i], b[j], t.c[i][j], 0, 0, 0);
}
template <unsigned FM, unsigned FN>
GRETA_DEVICE void g_tile_store(const g_wave_tile<FM, FN>& t, float* y, unsigned ldy, unsigned r0, unsigned c0,
                               unsigned rows, unsigned cols) {
    unsigned l = g_lane();
    for (unsigned i = 0; i < FM; ++i)
        for (unsigned j = 0; j < FN; ++j)
            for (unsigned e = 0; e < 4; ++e) {
                unsigned r = r0 + 16 * i + 4 * (l / 16) + e, c = c0 + 16 * j + l % 16;
                if (r < rows && c < cols) y[(unsigned long)r * ldy + c] = t.c[i][j][e];
            }
}
#endif

#if defined(GRETA_NVIDIA) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Hopper's warpgroup matrix units (wgmma, sm_90a): four warps multiply operands read straight
// from shared memory, asynchronously. Operands are K-major tiles in the 128-byte swizzle:
// rows of 64 f16 (128 bytes), 16-byte chunk c of row r stored at chunk c ^ (r % 8), tiles
// 1024-byte aligned (8 rows make one swizzle atom).
#define GRETA_WGMMA 1
// The shared-memory matrix descriptor of a tile in that swizzle starting at `p`: start
// address / 16 (bits 0-13), leading byte offset / 16 (bits 16-29), stride byte offset 1024 /
// 16 between 8-row atoms (bits 32-45), 128-byte swizzle (bits 62-63 = 1). g_wgmma_desc: a
// K-major tile, whose leading byte offset is unused (1). Adding 2 moves the start 32 bytes
// along K: the next 16 columns.
GRETA_DEVICE unsigned long long g_wgmma_desc_lbo(const void* p, unsigned lbo_bytes) {
    unsigned long long a = (unsigned)__cvta_generic_to_shared(p);
    return ((a & 0x3FFFF) >> 4) | ((unsigned long long)(lbo_bytes >> 4) << 16) | ((1024ull >> 4) << 32) | (1ull << 62);
}
GRETA_DEVICE unsigned long long g_wgmma_desc(const void* p) { return g_wgmma_desc_lbo(p, 16); }
// The same for an N-major B (the `_tb` products: B's N dimension contiguous, as V's head
// dimension is in a [keys][head_dim] tile), laid as boxes of 64 N (128-byte rows, one per K)
// in the same swizzle: 8 K rows make an atom, atoms 1024 bytes apart along K (the stride byte
// offset), and `box_bytes` apart along N (the leading byte offset: the next 64 columns).
// Adding 128 moves the start 16 K rows on: the next product's operand.
GRETA_DEVICE unsigned long long g_wgmma_desc_n_major(const void* p, unsigned box_bytes) {
    return g_wgmma_desc_lbo(p, box_bytes);
}
// Orders this thread's completed writes to shared memory by ordinary stores or cp.async (the
// generic proxy) before later reads by wgmma or TMA (the async proxy); a block barrier after
// it makes every thread's writes visible to every warp's products.
GRETA_DEVICE void g_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
GRETA_DEVICE void g_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
GRETA_DEVICE void g_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed wgmma groups of this warpgroup are still running.
template <int N>
GRETA_DEVICE void g_wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// d = A · Bᵀ + (accumulate ? d : 0) for one warpgroup: A 64 x 16 and B N x 16 (both
// K-major, by descriptor), d 64 x N f32: thread (warp w, lane l) holds rows 16 w + l / 4
// (+ 8), columns 8 j + 2 (l % 4) (+ 1) in d[4 j ..], j = 0 .. N / 8 - 1 (the m16n8
// accumulator layout, per warp). A tile's first product passes accumulate = 0, so no
// instruction writes the accumulators before the pipeline (ptxas serialises wgmma when one
// does). The wrappers, one per shape, are generated (xtask/src/wgmma.rs): each of d's
// elements is an operand of its own.
#include "greta_wgmma.h"
// Each kind of descriptor product has a template of its width N that calls N's wrapper
// (generated too): g_wgmma_m64k16<N> (f16), g_wgmma_m64k32_e5m2_e4m3<N>,
// g_wgmma_m64k32_e4m3_e5m2<N>, g_wgmma_sp_m64k64_e5m2_e4m3<N>.
// f16, by tile width (kernels/gemm.hip): 64 and 128; the wide 256, whose every byte of B read
// from shared memory feeds twice an m64n128 product's multiply-adds; 232, for 7B's gate/up at
// 512 rows (384 blocks in 2.9 waves of 132 where 256 makes 344 in 2.6, whose third leaves 52
// multiprocessors idle); 224, the SwiGLU GEMM's (112 gate and 112 up columns: 396 blocks in
// 3.0 waves); 192, for 7B's Q/K/V at 512 rows (264 blocks in exactly 2 waves of 132, where
// 128 makes 384 in 2.9: the same columns a multiprocessor, read with fewer bytes of shared
// memory a multiply-add); and every multiple of 8 from 64 to 256, the swapped tiles' token
// widths (SWAP in gemm.hip).
// FP8, A e5m2 and B e4m3, K 32 a step (32 bytes of the 64-byte swizzled rows, so a descriptor
// advances by 2 per step as the f16 one does): the lo products of `--split-lo fp8` (gemm.hip:
// e5m2 low halves of the input, e4m3 copies of the weights). FP8 wgmma reads both operands
// K-major and has no transpose flags. The swapped tiles' are A e4m3 (the weights' copy) and B
// e5m2 (the tokens' low halves), at every swapped width.
// The 2:4-sparse FP8 product (docs/sparse-lo.md): A's compressed K 64 (32 bytes a row, laid
// as a dense K 32 operand) by descriptor, B's K 64, and `meta`, this thread's metadata word:
// lane 4 g + q of warp w covers row 16 w + g + 8 (q & 1), chunks (4 columns) 8 (q >> 1) .. + 7
// of the 16, a nibble a chunk (bits 1:0 and 3:2: the indices of its first and second kept
// value, the compressed values in that order). Measured on an H200 against the CPU
// (tools/gpu/probes/sparse_wgmma_probe.cu): 1.71x the dense FP8 rate.
// Two consecutive words of shared memory at p (8-byte aligned), by a shared load: p's
// generic address would make it a generic load, which waits on the long scoreboard.
GRETA_DEVICE void g_lds_u32x2(const void* p, unsigned* a, unsigned* b) {
    asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(*a), "=r"(*b) : "r"(g_smem_addr(p)) : "memory");
}
// Keeps a and b in their registers up to here: a volatile store of both to `sink` (shared
// memory, 8 bytes; volatile, so that ptxas does not drop it as overwritten) that reads them.
// For registers an asynchronous product still reads (a sparse wgmma's metadata), which ptxas
// would otherwise reuse before the wait on that product; an empty asm does not do it (it
// leaves no instruction in the PTX, so nothing reads them for ptxas).
GRETA_DEVICE void g_hold_regs(unsigned* sink, unsigned a, unsigned b) {
    asm volatile("st.volatile.shared.v2.u32 [%0], {%1, %2};\n" ::"r"(g_smem_addr(sink)), "r"(a), "r"(b) : "memory");
}
// A K-major tile of 64-byte rows in the 64-byte swizzle (8-row atoms of 512 bytes, the
// stride byte offset; layout type 2): the TMA boxes of the compressed low halves.
GRETA_DEVICE unsigned long long g_wgmma_desc64(const void* p) {
    unsigned long long a = (unsigned)__cvta_generic_to_shared(p);
    return ((a & 0x3FFFF) >> 4) | (1ull << 16) | ((512ull >> 4) << 32) | (2ull << 62);
}

// Tensor-memory-access copies (TMA) and the shared-memory barriers that count them. A TMA
// descriptor (hiprt's TensorMap, CUDA's CUtensorMap) is a kernel parameter passed by value
// (__grid_constant__, so its address is the parameter's own); `g_tma_load_2d` copies the
// box at (column c0, row c1) into shared memory at `dst` and adds its bytes to the
// barrier's transaction count.
struct __align__(64) g_tmap {
    unsigned long long opaque[16];
};
// One arrival that also expects `bytes` of TMA transactions before the phase completes.
GRETA_DEVICE void g_mbar_arrive_expect(unsigned long long* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(g_smem_addr(bar)), "r"(bytes)
                 : "memory");
}
GRETA_DEVICE void g_mbar_arrive(unsigned long long* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(g_smem_addr(bar)) : "memory");
}
// Waits until the barrier's phase of parity `parity` has completed.
GRETA_DEVICE void g_mbar_wait(unsigned long long* bar, unsigned parity) {
    unsigned done = 0;
    while (!done) {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(g_smem_addr(bar)), "r"(parity)
            : "memory");
    }
}
// A plain bulk copy of `bytes` (a multiple of 16, both addresses 16-byte aligned) from global
// memory into shared memory, counted by `bar` as the TMA's boxes are.
GRETA_DEVICE void g_bulk_load(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
            g_smem_addr(dst)),
        "l"((unsigned long long)src), "r"(bytes), "r"(g_smem_addr(bar))
        : "memory");
}
GRETA_DEVICE void g_tma_load_2d(void* dst, const g_tmap* map, int c0, int c1, unsigned long long* bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
            g_smem_addr(dst)),
        "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(g_smem_addr(bar))
        : "memory");
}
#endif
