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

// Block-wide sum through shared memory (scratch: one float per thread of the block, whose
// size is a power of two). Portable and exact in its order; the speed issue replaces it with
// wave shuffles.
GRETA_DEVICE float g_block_sum(float v, float* scratch) {
    unsigned t = g_tid();
    scratch[t] = v;
    g_sync();
    for (unsigned s = g_bdim() / 2; s > 0; s >>= 1) {
        if (t < s) scratch[t] += scratch[t + s];
        g_sync();
    }
    float r = scratch[0];
    g_sync();
    return r;
}
