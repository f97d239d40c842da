// Sparse FP8 wgmma on Hopper (session 49): what would a 2:4-sparse low product need, and
// what would it buy? Three parts, each printed:
//  1. discovery: which metadata nibble of which lane selects the kept columns of which row
//     and 4-column chunk of A for wgmma.mma_async.sp m64nNk64 e5m2 x e4m3 (the PTX manual
//     gives it only as a figure): A all ones, B the identity, every nibble 0x4 (columns 0
//     and 1 of each chunk) but one lane's one nibble 0xE (columns 2 and 3), per block;
//  2. check: random compressed A, random valid metadata laid by part 1's map, random B,
//     against a CPU product (small integers and halves: exact in f32), under the two
//     orders a chunk's two compressed values could take;
//  3. rate: the matrix units' throughput, operands resident in shared memory, for f16
//     (m64n256k16), dense FP8 (m64n256k32) and sparse FP8 (m64n256k64), in dense-equivalent
//     TFLOP/s, with the SM clock sampled by clock64 against the wall clock.
// Build here: nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -Ikernels tools/gpu/probes/sparse_wgmma_probe.cu
//   -o target/carry/sparse_wgmma_probe (static cudart); run it on the GPU machine.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>
#define GRETA_DEVICE __device__ __forceinline__
#include "greta_wgmma.h"

#include "cuda_check.h"

// The sparse products: greta_wgmma.h's g_wgmma_sp_ wrappers (A by descriptor, one metadata
// register a thread, sparsity selector 0: at k64 with 8-bit types every thread of a group
// of four holds metadata).

// A K-major tile of 128-byte rows in the 128-byte swizzle (as the TMA writes the GEMM's):
// byte k of row r. 8-row atoms of 1024 bytes (the descriptor's stride byte offset).
__host__ __device__ inline unsigned sw128(unsigned r, unsigned k) {
    return r * 128 + ((((k >> 4) ^ (r & 7))) << 4) + (k & 15);
}
__device__ inline unsigned long long desc128(const void* p) {
    unsigned long long a = (unsigned)__cvta_generic_to_shared(p);
    return ((a & 0x3FFFF) >> 4) | (1ull << 16) | ((1024ull >> 4) << 32) | (1ull << 62);
}
__device__ inline uint8_t* align1024(uint8_t* p) {
    return (uint8_t*)(((unsigned long long)p + 1023) & ~1023ull);
}
__device__ inline void g_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ inline void g_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ inline void g_wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ inline void fence_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// The accumulator of an m64nN product: element i of thread t is row, column:
__host__ __device__ inline void d_at(unsigned t, unsigned i, unsigned& row, unsigned& col) {
    const unsigned w = t / 32, l = t % 32;
    row = 16 * w + l / 4 + 8 * ((i / 2) & 1);
    col = 8 * (i / 4) + 2 * (l % 4) + (i & 1);
}

// Part 1: block e < 256 changes nibble e % 8 of lane e / 8 of warp 0 (block 256 changes none);
// out[e][row][col], rows 0-15 (warp 0's), 64 columns.
__global__ void discover(float* out) {
    extern __shared__ uint8_t smem_raw[];
    uint8_t* base = align1024(smem_raw);
    uint8_t *A = base, *B = base + 8192;
    for (unsigned i = threadIdx.x; i < 8192; i += blockDim.x) {
        const unsigned r = i / 128, k = i % 128;
        A[sw128(r, k)] = k < 32 ? 0x3C : 0;             // e5m2 1.0: 32 compressed values = K 64
        B[sw128(r, k)] = (k < 64 && k == r) ? 0x38 : 0; // e4m3 1.0 on the diagonal
    }
    fence_async();
    __syncthreads();
    const unsigned e = blockIdx.x, lane = e / 8, nib = e % 8;
    unsigned meta = 0x44444444u; // every chunk: columns 0 and 1
    if (e < 256 && threadIdx.x == lane) meta = (meta & ~(0xFu << (4 * nib))) | (0xEu << (4 * nib));
    float d[32];
    for (int i = 0; i < 32; ++i) d[i] = 0.f;
    g_wgmma_fence();
    g_wgmma_sp_m64n64k64_e5m2_e4m3(d, desc128(A), desc128(B), meta, 0);
    g_wgmma_commit();
    g_wgmma_wait<0>();
    for (unsigned i = 0; i < 32; ++i) {
        unsigned row, col;
        d_at(threadIdx.x, i, row, col);
        if (row < 16) out[(e * 16 + row) * 64 + col] = d[i];
    }
}

// Part 2: A's compressed tile and B's tile as host-made shared-memory images, metadata a
// thread; D (64 x 64) out.
__global__ void check(const uint8_t* img, const unsigned* meta, float* out) {
    extern __shared__ uint8_t smem_raw[];
    uint8_t* base = align1024(smem_raw);
    for (unsigned i = threadIdx.x; i < 16384; i += blockDim.x) base[i] = img[i];
    fence_async();
    __syncthreads();
    float d[32];
    for (int i = 0; i < 32; ++i) d[i] = 0.f;
    g_wgmma_fence();
    g_wgmma_sp_m64n64k64_e5m2_e4m3(d, desc128(base), desc128(base + 8192), meta[threadIdx.x], 0);
    g_wgmma_commit();
    g_wgmma_wait<0>();
    for (unsigned i = 0; i < 32; ++i) {
        unsigned row, col;
        d_at(threadIdx.x, i, row, col);
        out[row * 64 + col] = d[i];
    }
}

// Part 3: two warpgroups a block, each issuing ITERS products of K 64 (dense-equivalent) on
// resident operands; KIND 0: f16 (4 x m64n256k16), 1: dense FP8 (2 x m64n256k32), 2: sparse
// FP8 (1 x m64n256k64). cycles: the block's clock64 span (SM clock), for the clock's rate.
template <int KIND>
__global__ void __launch_bounds__(256) rate(int iters, float* sink, long long* cycles) {
    extern __shared__ uint8_t smem_raw[];
    uint8_t* base = align1024(smem_raw);
    uint8_t *A = base, *B = base + 16384; // A: 64 x 256 bytes (two 128-byte boxes), B: 256 x 128
    for (unsigned i = threadIdx.x; i < 16384 + 32768; i += blockDim.x) {
        // Small finite values of both FP8 kinds and of f16 (no NaN or infinity patterns).
        const unsigned v = (i * 2654435761u) >> 24;
        base[i] = KIND == 0 ? (i & 1 ? (uint8_t)(0x30 | (v & 0x83)) : (uint8_t)v) : (uint8_t)((v & 0xB7));
    }
    fence_async();
    __syncthreads();
    const long long c0 = clock64();
    float d[128];
    for (int i = 0; i < 128; ++i) d[i] = 0.f;
    const unsigned long long da = desc128(A), db = desc128(B);
    for (int it = 0; it < iters; ++it) {
        g_wgmma_fence();
        if constexpr (KIND == 0) {
            for (int kk = 0; kk < 4; ++kk) g_wgmma_m64n256k16(d, da + 2 * kk, db + 2 * kk, 1);
        } else if constexpr (KIND == 1) {
            for (int kk = 0; kk < 2; ++kk) g_wgmma_m64n256k32_e5m2_e4m3(d, da + 2 * kk, db + 2 * kk, 1);
        } else {
            g_wgmma_sp_m64n256k64_e5m2_e4m3(d, da, db, 0x44444444u ^ (unsigned)(it & 0x88888888u), 1);
        }
        g_wgmma_commit();
        g_wgmma_wait<1>();
    }
    g_wgmma_wait<0>();
    float s = 0.f;
    for (int i = 0; i < 128; ++i) s += d[i];
    if (s == 1234.5f) sink[0] = s; // keeps the products
    if (threadIdx.x == 0) cycles[blockIdx.x] = clock64() - c0;
}

static float e5m2_to_f(uint8_t b) {
    const int s = b >> 7, e = (b >> 2) & 31, m = b & 3;
    float v = e == 0 ? ldexpf((float)m, -16) : ldexpf(1.f + m / 4.f, e - 15);
    return s ? -v : v;
}
static float e4m3_to_f(uint8_t b) {
    const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    float v = e == 0 ? ldexpf((float)m, -9) : ldexpf(1.f + m / 8.f, e - 7);
    return s ? -v : v;
}

int main() {
    int dev = 0;
    CK(cudaSetDevice(dev));
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, dev));
    printf("device: %s, %d SMs\n", p.name, p.multiProcessorCount);
    const size_t smem = 16384 + 1024;
    CK(cudaFuncSetAttribute(discover, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CK(cudaFuncSetAttribute(check, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));

    // Part 1.
    float* d_out;
    const int E = 257;
    CK(cudaMalloc(&d_out, sizeof(float) * E * 16 * 64));
    CK(cudaMemset(d_out, 0, sizeof(float) * E * 16 * 64));
    discover<<<E, 128, smem>>>(d_out);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<float> h(E * 16 * 64);
    CK(cudaMemcpy(h.data(), d_out, sizeof(float) * h.size(), cudaMemcpyDeviceToHost));
    const float* ref = &h[256 * 16 * 64];
    bool base_ok = true;
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 64; ++c) base_ok &= ref[r * 64 + c] == ((c % 4) < 2 ? 1.f : 0.f);
    printf("discovery: base pattern (0x4 everywhere: columns 0, 1 of each chunk) %s\n", base_ok ? "as expected" : "NOT as expected");
    // map[lane][nib] = row * 16 + chunk, or -1 (no change), -2 (more than one chunk changed)
    int map[32][8];
    int unmapped = 0, multi = 0;
    for (int e = 0; e < 256; ++e) {
        int found = -1;
        for (int r = 0; r < 16; ++r)
            for (int ch = 0; ch < 16; ++ch) {
                bool changed = false, as_expected = true;
                for (int c = 0; c < 4; ++c) {
                    const float v = h[(e * 16 + r) * 64 + 4 * ch + c], b = ref[r * 64 + 4 * ch + c];
                    changed |= v != b;
                    as_expected &= v == (c >= 2 ? 1.f : 0.f);
                }
                if (changed) {
                    if (!as_expected) printf("  lane %d nibble %d: row %d chunk %d changed, not to columns 2, 3\n", e / 8, e % 8, r, ch);
                    found = found == -1 ? r * 16 + ch : -2;
                }
            }
        map[e / 8][e % 8] = found;
        unmapped += found == -1;
        multi += found == -2;
    }
    printf("discovery: %d nibbles select no chunk, %d more than one\n", unmapped, multi);
    printf("lane: (row, chunk) of nibbles 0..7\n");
    for (int l = 0; l < 32; ++l) {
        printf("  %2d:", l);
        for (int n = 0; n < 8; ++n)
            if (map[l][n] >= 0) printf(" (%2d,%2d)", map[l][n] / 16, map[l][n] % 16);
            else printf(" (  %s  )", map[l][n] == -1 ? "--" : "**");
        printf("\n");
    }

    // Part 2: warps 1-3 take warp 0's map shifted by 16 w rows (the manual: warp w holds rows 16 w ..).
    srand(49);
    std::vector<uint8_t> img(16384, 0);
    std::vector<float> Ac(64 * 32), Bd(64 * 64);
    std::vector<int> idx(64 * 16 * 2);
    const uint8_t e5[] = {0x38, 0x3C, 0x3E, 0x40, 0xB8, 0xBC, 0xBE, 0xC0, 0x00}; // +-0.5, 1, 1.5, 2, 0
    const uint8_t e4[] = {0x30, 0x38, 0x3C, 0x40, 0xB0, 0xB8, 0xBC, 0xC0};       // +-0.5, 1, 1.5, 2
    for (int r = 0; r < 64; ++r)
        for (int k = 0; k < 32; ++k) {
            const uint8_t b = e5[rand() % 9];
            img[sw128(r, k)] = b;
            Ac[r * 32 + k] = e5m2_to_f(b);
        }
    for (int n = 0; n < 64; ++n)
        for (int k = 0; k < 64; ++k) {
            const uint8_t b = e4[rand() % 8];
            img[8192 + sw128(n, k)] = b;
            Bd[k * 64 + n] = e4m3_to_f(b);
        }
    const int pairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
    std::vector<unsigned> meta(128, 0);
    bool map_ok = unmapped == 0 && multi == 0;
    for (int r = 0; r < 64; ++r)
        for (int ch = 0; ch < 16; ++ch) {
            const int* pr = pairs[rand() % 6];
            idx[(r * 16 + ch) * 2] = pr[0];
            idx[(r * 16 + ch) * 2 + 1] = pr[1];
        }
    if (map_ok)
        for (int w = 0; w < 4; ++w)
            for (int l = 0; l < 32; ++l)
                for (int n = 0; n < 8; ++n) {
                    const int r = 16 * w + map[l][n] / 16, ch = map[l][n] % 16;
                    const unsigned nib = idx[(r * 16 + ch) * 2] | (idx[(r * 16 + ch) * 2 + 1] << 2);
                    meta[32 * w + l] |= nib << (4 * n);
                }
    if (!map_ok) printf("check: skipped (the map is not one chunk a nibble)\n");
    else {
        uint8_t* d_img;
        unsigned* d_meta;
        float* d_d;
        CK(cudaMalloc(&d_img, 16384));
        CK(cudaMalloc(&d_meta, 128 * 4));
        CK(cudaMalloc(&d_d, 64 * 64 * 4));
        CK(cudaMemcpy(d_img, img.data(), 16384, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d_meta, meta.data(), 128 * 4, cudaMemcpyHostToDevice));
        check<<<1, 128, smem>>>(d_img, d_meta, d_d);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        std::vector<float> D(64 * 64);
        CK(cudaMemcpy(D.data(), d_d, 64 * 64 * 4, cudaMemcpyDeviceToHost));
        // Compressed value 2 ch + j goes to column 4 ch + idx[j] (order 0) or idx[1 - j] (order 1).
        for (int order = 0; order < 2; ++order) {
            int bad = 0;
            double worst = 0;
            for (int r = 0; r < 64; ++r)
                for (int n = 0; n < 64; ++n) {
                    double s = 0;
                    for (int ch = 0; ch < 16; ++ch)
                        for (int j = 0; j < 2; ++j) {
                            const int col = 4 * ch + idx[(r * 16 + ch) * 2 + (order ? 1 - j : j)];
                            s += (double)Ac[r * 32 + 2 * ch + j] * Bd[col * 64 + n];
                        }
                    const double diff = fabs(s - D[r * 64 + n]);
                    bad += diff > 0;
                    worst = diff > worst ? diff : worst;
                }
            printf("check, compressed order %d: %d of 4096 outputs differ from the CPU's (worst %.3g)\n", order, bad, worst);
        }
    }

    // Part 3.
    float* sink;
    long long* cyc;
    const int blocks = p.multiProcessorCount, iters = 20000;
    CK(cudaMalloc(&sink, 4));
    CK(cudaMalloc(&cyc, sizeof(long long) * blocks));
    const size_t rsmem = 16384 + 32768 + 1024;
    CK(cudaFuncSetAttribute(rate<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)rsmem));
    CK(cudaFuncSetAttribute(rate<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)rsmem));
    CK(cudaFuncSetAttribute(rate<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)rsmem));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    const char* names[3] = {"f16 (4 x m64n256k16)", "dense FP8 (2 x m64n256k32)", "sparse FP8 (m64n256k64)"};
    for (int round = 0; round < 3; ++round)
        for (int kind = 0; kind < 3; ++kind) {
            void (*f)(int, float*, long long*) = kind == 0 ? rate<0> : kind == 1 ? rate<1> : rate<2>;
            f<<<blocks, 256, rsmem>>>(iters / 10, sink, cyc); // warm
            CK(cudaEventRecord(a));
            f<<<blocks, 256, rsmem>>>(iters, sink, cyc);
            CK(cudaEventRecord(b));
            CK(cudaGetLastError());
            CK(cudaEventSynchronize(b));
            float ms;
            CK(cudaEventElapsedTime(&ms, a, b));
            std::vector<long long> c(blocks);
            CK(cudaMemcpy(c.data(), cyc, sizeof(long long) * blocks, cudaMemcpyDeviceToHost));
            long long cmax = 0;
            for (long long x : c) cmax = x > cmax ? x : cmax;
            const double flop = 2.0 * blocks * 2 * (double)iters * 64 * 256 * 64;
            printf("rate round %d, %-28s %8.1f TFLOP/s (dense-equivalent), %.3f ms, SM clock ~%.0f MHz\n", round,
                   names[kind], flop / (ms * 1e-3) / 1e12, ms, cmax / (ms * 1e3));
        }
    return 0;
}
