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
#else
#include <cuda_fp16.h>
#define GRETA_NVIDIA 1
#define GRETA_KERNEL extern "C" __global__
#define GRETA_DEVICE static __device__ inline
#define GRETA_SHARED __shared__
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
GRETA_DEVICE float g_sin(float x) { return sinf(x); }
GRETA_DEVICE float g_cos(float x) { return cosf(x); }
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
// Device-scope release / acquire fences and an atomic increment (returns the old value):
// the "last block finishes the reduction" pattern of the split decode attention.
GRETA_DEVICE void g_fence_release() { __builtin_amdgcn_fence(__ATOMIC_RELEASE, "agent"); }
GRETA_DEVICE void g_fence_acquire() { __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "agent"); }
GRETA_DEVICE unsigned g_atomic_inc(unsigned* p) {
    return __hip_atomic_fetch_add(p, 1u, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
}
// Eight consecutive f16 values (16 bytes, 16-byte aligned) widened to f32.
GRETA_DEVICE void g_load_h8(const g_half* p, float* out) {
    typedef _Float16 h8 __attribute__((ext_vector_type(8)));
    h8 v = *(const h8*)p;
    for (unsigned i = 0; i < 8; ++i) out[i] = (float)v[i];
}
#else
GRETA_DEVICE float g_shfl_xor(float v, unsigned m) { return __shfl_xor_sync(0xffffffffu, v, m); }
GRETA_DEVICE void g_fence_release() { __threadfence(); }
GRETA_DEVICE void g_fence_acquire() { __threadfence(); }
GRETA_DEVICE unsigned g_atomic_inc(unsigned* p) { return atomicAdd(p, 1u); }
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
GRETA_DEVICE void g_load_f8(const float* p, float* out) {
    g_f4 a = *(const g_f4*)p, b = *(const g_f4*)(p + 4);
    for (unsigned i = 0; i < 4; ++i) {
        out[i] = a.v[i];
        out[4 + i] = b.v[i];
    }
}
