// GEMM on the matrix units for prefill: y[t, n] = x[t, k] · w[n, k]^T, f16 weights, f32
// activations, f32 accumulation and output. The matrix units take f16 operands, so an
// activation either enters rounded to one f16 (what llama.cpp's CUDA path does for cuBLAS) or
// split into x = hi + lo (two f16, 22 bits of mantissa between them) with both halves
// multiplied. Rounding loses 2^-12 of a large activation, and where a few massive
// activations cancel in a dot product that loss is the whole result (default model: 2.7e-2
// rms at ffn_act of layer 9 with every input rounded); which products need the split is
// measured, not assumed (`--split-inputs`, docs/gpu.md "Numerics").
//
// A block computes a 64 x 64 tile of y with 4 waves, each a 32 x 32 quadrant made of 2 x 2
// 16x16x16 matrix-unit products (MFMA on gfx9, HMMA on sm_90), stepping K by 32. Edges in
// t, k and n are zero-filled on load and masked on store, so no shape needs padding.
// gemm_f16w_mma takes any shape and f32 activations; gemm_f16_{32,64,128} below are the
// fast path for k % 8 == 0 (every Llama shape): f16 activations (hi, and lo where the product
// needs it), asynchronous 16-byte copies into swizzled slabs, operands straight from the
// slabs into registers (see docs/amd.md for the CDNA3 mapping).
#include "greta_device.h"

#define BM 64
#define BN 64
#define BK 32
// Row pitch of the f16 tiles: BK + 8 halves keeps every 16-row tile 32-byte aligned (wmma)
// and shifts consecutive rows by 16 bytes across the LDS banks.
#define LDT (BK + 8)
#define LDC (BN + 4)

// Grid: (ceil(n / 64), ceil(t / 64)); block: 4 waves (128 threads on NVIDIA, 256 on AMD).
GRETA_KERNEL void gemm_f16w_mma(const float* x, const g_half* w, float* y, unsigned t, unsigned k, unsigned n) {
    g_overlap_entry();
    GRETA_SHARED GRETA_ALIGN32 g_half xs[BM * LDT];
    GRETA_SHARED GRETA_ALIGN32 g_half xl[BM * LDT];
    GRETA_SHARED GRETA_ALIGN32 g_half ws[BN * LDT];
    GRETA_SHARED GRETA_ALIGN32 float cs[BM * LDC];
    unsigned wave = g_tid() / GRETA_WAVE;
    unsigned wm = (wave / 2) * 32, wn = (wave % 2) * 32;
    unsigned row0 = g_bid_y() * BM, col0 = g_bid() * BN;
    g_acc16 acc[2][2];
    for (unsigned i = 0; i < 2; ++i)
        for (unsigned j = 0; j < 2; ++j) g_acc16_zero(acc[i][j]);
    for (unsigned k0 = 0; k0 < k; k0 += BK) {
        for (unsigned e = g_tid(); e < BM * BK; e += g_bdim()) {
            unsigned r = e / BK, c = e % BK, gk = k0 + c;
            unsigned gr = row0 + r, gn = col0 + r;
            float v = gr < t && gk < k ? x[(unsigned long)gr * k + gk] : 0.0f;
            g_split_f16(v, &xs[r * LDT + c], &xl[r * LDT + c]);
            ws[r * LDT + c] = gn < n && gk < k ? w[(unsigned long)gn * k + gk] : g_f2h(0.0f);
        }
        g_sync();
        for (unsigned kk = 0; kk < BK; kk += 16)
            for (unsigned i = 0; i < 2; ++i)
                for (unsigned j = 0; j < 2; ++j) {
                    const g_half* wt = &ws[(wn + 16 * j) * LDT + kk];
                    g_mma16_abt(acc[i][j], &xs[(wm + 16 * i) * LDT + kk], LDT, wt, LDT);
                    g_mma16_abt(acc[i][j], &xl[(wm + 16 * i) * LDT + kk], LDT, wt, LDT);
                }
        g_sync();
    }
    for (unsigned i = 0; i < 2; ++i)
        for (unsigned j = 0; j < 2; ++j) g_acc16_store(acc[i][j], &cs[(wm + 16 * i) * LDC + wn + 16 * j], LDC);
    g_sync();
    for (unsigned e = g_tid(); e < BM * BN; e += g_bdim()) {
        unsigned r = e / BN, c = e % BN, gr = row0 + r, gc = col0 + c;
        if (gr < t && gc < n) y[(unsigned long)gr * n + gc] = cs[r * LDC + c];
    }
}

// The fast path, for k % 8 == 0 (every Llama shape): y[t, n] = a[t, k] · w[n, k]ᵀ with the
// activations already in f16 (ops.hip's split_f16 writes them once for every product that
// reads them). Where a product needs the activation's low half too (`a_lo` not null), the
// kernel runs over a virtual K of 2k: [a | a_lo] · [w | w]ᵀ, so hi and lo share one
// accumulator and one pipeline.
//
// A block computes a TM x TN tile of y with (TM / WM) x (TN / WN) waves, each a WM x WN
// piece as 16 x 16 accumulators in registers (g_wave_tile). K advances 32 at a time
// through STAGES slabs in LDS (A and B, swizzled, greta_device.h): the 16-byte copies of
// step s + STAGES - 1 are issued (cp.async on NVIDIA) before the products of step s, so the
// memory latency of STAGES - 1 steps hides behind the matrix units. 128 x 128: 3 stages, 48
// KiB of slabs, the most a block takes without opting in. Edges in t and n are zero-filled
// on load and masked on store.
template <unsigned TM, unsigned TN, unsigned WM, unsigned WN, unsigned STAGES>
GRETA_DEVICE void gemm_f16_tile(const g_half* GRETA_RESTRICT a, const g_half* GRETA_RESTRICT a_lo,
                                const g_half* GRETA_RESTRICT w, float* GRETA_RESTRICT y, unsigned t, unsigned k,
                                unsigned n, g_half* slabs) {
    constexpr unsigned WAVES_N = TN / WN, WAVES = (TM / WM) * WAVES_N, THREADS = WAVES * GRETA_WAVE;
    constexpr unsigned STAGE = (TM + TN) * G_SLAB_K, CHUNKS_A = TM * G_SLAB_K / 8,
                       CHUNKS = (TM + TN) * G_SLAB_K / 8;
    // Each thread copies up to PER chunks per step: the same rows and K column at every step,
    // so where they come from and go to is worked out once.
    constexpr unsigned PER = (CHUNKS + THREADS - 1) / THREADS;
    static_assert(THREADS % 4 == 0, "a thread's chunk column is fixed");
    const unsigned tid = g_tid(), wave = tid / GRETA_WAVE;
    const unsigned wm = (wave / WAVES_N) * WM, wn = (wave % WAVES_N) * WN;
    const unsigned row0 = g_bid_y() * TM, col0 = g_bid() * TN;
    const unsigned kv = a_lo ? 2 * k : k;
    const unsigned steps = (kv + G_SLAB_K - 1) / G_SLAB_K;

    const unsigned ch = tid % 4;
    unsigned src_row[PER], dst[PER];
    bool is_a[PER], row_ok[PER];
    for (unsigned p = 0; p < PER; ++p) {
        unsigned c = tid + p * THREADS;
        is_a[p] = c < CHUNKS_A;
        unsigned r = (is_a[p] ? c : c - CHUNKS_A) / 4;
        unsigned g = is_a[p] ? row0 + r : col0 + r;
        row_ok[p] = c < CHUNKS && g < (is_a[p] ? t : n);
        src_row[p] = row_ok[p] ? g * k : 0;
        dst[p] = c < CHUNKS ? (is_a[p] ? 0 : TM * G_SLAB_K) + g_slab_at(r, ch) : 0;
    }
    auto load = [&](unsigned step, unsigned stage) {
        // Column vk of the virtual K: the high halves, then the low ones (k % 8 == 0, so a
        // chunk never straddles).
        unsigned vk = step * G_SLAB_K + ch * 8;
        bool in_k = vk < kv, lo = vk >= k;
        unsigned col = lo ? vk - k : vk;
        const g_half* xa = lo ? a_lo : a;
        g_half* base = slabs + stage * STAGE;
        for (unsigned p = 0; p < PER; ++p) {
            if (PER * THREADS > CHUNKS && tid + p * THREADS >= CHUNKS) break;
            const g_half* src = (is_a[p] ? xa : w) + src_row[p] + col;
            bool valid = in_k && row_ok[p];
            g_copy16_async(base + dst[p], valid ? src : w, valid);
        }
    };

    g_wave_tile<WM / 16, WN / 16> acc;
    g_tile_zero(acc);
    for (unsigned s = 0; s + 1 < STAGES; ++s) {
        if (s < steps) load(s, s);
        g_async_commit();
    }
    for (unsigned s = 0; s < steps; ++s) {
        // Step s's copies are done (at most STAGES - 2 later groups still in flight), and
        // every wave has finished step s - 1, whose slab the next load overwrites.
        g_async_wait<STAGES - 2>();
        g_sync();
        unsigned next = s + STAGES - 1;
        if (next < steps) load(next, next % STAGES);
        g_async_commit();
        const g_half* as = slabs + (s % STAGES) * STAGE;
        const g_half* bs = as + TM * G_SLAB_K;
        g_tile_mma(acc, as, wm, bs, wn, 0);
        g_tile_mma(acc, as, wm, bs, wn, 16);
    }
    g_tile_store(acc, y, n, row0 + wm, col0 + wn, t, n);
}

// Grid: (ceil(n / TN), ceil(t / TM)); block: (TM / WM) (TN / WN) waves (the launcher's table
// in crates/greta-kernels/src/gpu/gemm.rs).
#define GEMM_F16(NAME, TM, TN, WM, WN, STAGES)                                                               \
    GRETA_KERNEL void NAME(const g_half* a, const g_half* a_lo, const g_half* w, float* y, unsigned t,        \
                           unsigned k, unsigned n) {                                                         \
        g_overlap_entry();                                                                                   \
        GRETA_SHARED GRETA_ALIGN16 g_half slabs[STAGES * (TM + TN) * G_SLAB_K];                              \
        gemm_f16_tile<TM, TN, WM, WN, STAGES>(a, a_lo, w, y, t, k, n, slabs);                                \
    }
// Stages: as many as fit in 48 KiB (small tiles do little work per step, so they need more
// steps in flight to cover the memory latency).
GEMM_F16(gemm_f16_128, 128, 128, 64, 32, 3)
GEMM_F16(gemm_f16_64, 64, 64, 32, 32, 6)
GEMM_F16(gemm_f16_32, 32, 32, 16, 16, 8)

#if defined(GRETA_WGMMA)
// The same product on Hopper's warpgroup matrix units, fed by the TMA unit, for up to three
// products that share their input (Q, K and V; gate and up) in one launch. A block computes
// a TM x TN tile of one product's y, K in steps of 64 through WG_STAGES stages of dynamic
// shared memory (an A box of TM rows x 64 of a or a_lo and a B box of TN rows x 64 of w per
// stage, both in the 128-byte swizzle the operand descriptors read). TM / 64 consumer
// warpgroups multiply (each 64 rows x TN columns, TN / 2 f32 accumulators per thread) and
// one thread of a producer warp after them issues the box copies, so no consumer spends
// issue slots or registers on addresses. (The producer was a whole warpgroup, whose three
// idle warps held registers: a warp instead made 7B prefill 0.5-1.2 % faster, H200,
// session 15; two blocks an SM at 3 stages each, which the smaller block allows, made it
// 25 % slower: tools/gpu/variants/wgmma-two-blocks.patch.) Each stage has a "full"
// barrier (the producer's arrival plus the copies' bytes) and an "empty" one (one arrival
// per consumer warp once its products from the stage are done). Every thread waits for the kernel ahead before its first copy or
// write (issuing the weights' first boxes before the wait was slower: 7B prefill 21.65 ->
// 22.05 ms on an H200, likely by taking bandwidth from the memory-bound kernel ahead).
// Edges are the TMA's: rows and columns past the matrix read as zero. K runs over a's
// ceil(k / 64) steps, then a_lo's when `has_lo` (the sums of [a | a_lo] . [w | w]).
// Persistent: the launch's output tiles, ceil(t / TM) x (sum over the products of
// ceil(n_i / TN)), ordered row tiles first (the blocks sharing a weight tile run together),
// then product 0's column tiles, product 1's, product 2's (n_i = 0 for an absent one), are
// taken by a grid of at most as many blocks as the multiprocessors hold at once, block b the
// tiles b, b + gridDim.x, ...; its stage ring runs on across them, so that the producer fills
// the next tile's first stages while the consumers store the last one's outputs (against a
// block a tile, H200, session 42: 7B prefill-512 15.94-15.98 -> 15.74-15.78 ms, -650
// 24.60-24.94 -> 23.73-23.90; the more tiles a block takes, the more it gains). Block: 128
// TM / 64 + 32 threads (the consumer warpgroups, then the producer warp, of which one
// thread works); dynamic shared memory: wgmma_shared (gpu/gemm/tiles.rs).
#define WG_BK 64
// The build may set the depth, for an A/B (kernel_variants.sh). 6: a step's products take
// ~0.3-0.75 us, a copy under load ~1 us (7B prefill with cp.async copies on an H200: 4
// stages 26.8 ms, 5 25.6, 6 25.1, 7 25.0; session 6).
#ifndef WG_STAGES
#define WG_STAGES 6
#endif

// With LO8 (`--split-lo fp8`), the lo half is FP8: ta_lo reads e5m2 bytes [t, k] under the
// one fixed scale 2^-G_LO8_SCALE_LOG2 (greta_device.h), and the weights it multiplies are
// an FP8 copy (tw8_i: e4m3 [n_i, k] under one scale, *sw_i). A tile runs its FP8 steps
// first, over all of K into acc, at K 128 a step (four m64k32 products, e5m2 x e4m3, at
// twice the f16 rate): a 128-element FP8 row is 128 bytes, as an f16 box row of K 64, so an
// FP8 step fills a stage in the same layout, swizzle and descriptors. acc is then scaled
// once by the low products' powers of two (exact), and the f16 steps add onto it in the same
// registers. One accumulator set: the wide tiles fit, and the 128 tile takes 90 registers.
// Measured on an H200: session 17's forms (7B Q/K/V under ncu: f16 lo 198 us) — all lo
// steps after the hi ones at K 128 but promoting scaled partial sums each step (198 us: a
// wait on its own products every step), e4m3 lo under one scale per row and 64 columns
// (176 us, the same waits), e4m3 under one scale per row (148 us, failed the audit: its
// range is too short for the rows of a massive activation); then two accumulator sets, the
// hi and lo products interleaved in each K 64 step with the lo boxes in 64-byte rows beside
// the hi ones (sessions 17-32: 154 registers, so no wide tile). The FP8-first form: on the
// wide SwiGLU tiles at K 64 (session 32: 7B prefill 18.3 -> 17.6 ms, the wide tile it
// allowed), K 128 (session 33: 17.6 -> 16.9, the FP8 stages filled), then on every tile
// (sessions 33-34: 16.8 -> 15.9 ms, audited on the whole default model before it replaced
// the interleaved form; at K 64, half-filled FP8 stages, it had lost 0.5 ms there).
//
// With SWIGLU (gate/up ahead of the down product, `gemm_f16_wgmma_swiglu_*`), a block's B
// box is two of TN / 2 rows each, the gate weights' and the up weights' for the same TN / 2
// output columns, so a thread holds gate and up of each of its outputs in its own
// accumulators (gate's columns in acc[0 .. TN / 4), up's TN / 4 later), and the epilogue
// (g_swiglu_store) writes act = silu(gate) · up as the down product's f16 operands instead
// of gate and up as f32: 3 bytes an output where the unfused path wrote 8 and read them
// back. act is bitwise silu_mul_f32's of the kernel's own gate and up, its operands
// split_f16's of act (g_silu_mul, g_split_f16; the op test checks both bit for bit).
// Measured (session 27, H200, 7B at 512 rows, under ncu): 144 us against 142 + 22 for the
// 128 x 232 GEMM and silu_mul_split; in the prefill only ~0.08 ms of 15 (why so much less
// is open: docs/performance.md, session 27).
struct g_swiglu_out {
    // Stored only where not null (an observer wants the stage: the traced path): all three
    // or none.
    float *gate, *up, *act;
    // The down product's operands of act: hi always, lo (f16) or lo8 (FP8) where not null.
    g_half *hi, *lo;
    unsigned char* lo8;
};

// The SwiGLU epilogue of a thread's accumulators (a TN-column wgmma tile of gate | up halves):
// rows r0 and r0 + 8, output columns c0 + 8 q (+ 1) for q < TN / 16; t rows and n outputs
// of n a row in all. Stores in pairs where n is even (every Llama shape), else one by one.
// F32 (gate, up, act stored) and LO (0 none, 1 f16, 2 FP8) are the launch's, made
// compile-time by g_swiglu_store so that no store tests its pointer (the 64-bit null tests
// at every store were among the epilogue's most executed instructions, session 27).
// One output's SwiGLU at `at`: act = silu(gate) * up, its f16 operand and low half (LO: 0
// none, 1 f16, 2 FP8), and with F32 gate, up and act themselves.
template <bool F32, unsigned LO>
GRETA_DEVICE void g_swiglu_one(const g_swiglu_out& o, unsigned long at, float g, float u) {
    const float v = g_silu_mul(g, u);
    g_half hi, lo16;
    g_split_f16(v, &hi, &lo16);
    if (F32) {
        o.gate[at] = g;
        o.up[at] = u;
        o.act[at] = v;
    }
    o.hi[at] = hi;
    if (LO == 1) o.lo[at] = lo16;
#if defined(GRETA_FP8)
    if (LO == 2) o.lo8[at] = g_lo8(v - g_h2f(hi));
#endif
}
template <unsigned TN, bool F32, unsigned LO>
GRETA_DEVICE void g_swiglu_pairs(const float (&acc)[TN / 2], const g_swiglu_out& o, unsigned r0, unsigned c0,
                                 unsigned t, unsigned n) {
    constexpr unsigned Q = TN / 16, UP = TN / 4;
    const bool pairs = n % 2 == 0;
#pragma unroll
    for (unsigned h = 0; h < 2; ++h) {
        const unsigned r = r0 + 8 * h;
        if (r >= t) continue;
#pragma unroll
        for (unsigned q = 0; q < Q; ++q) {
            const unsigned col = c0 + 8 * q;
            if (col >= n) continue;
            const unsigned long at = (unsigned long)r * n + col;
            const unsigned e = 4 * q + 2 * h;
            float g[2] = {acc[e], acc[e + 1]}, u[2] = {acc[e + UP], acc[e + UP + 1]}, v[2], lo[2];
            g_half hi[2], lo16[2];
            for (unsigned i = 0; i < 2; ++i) {
                v[i] = g_silu_mul(g[i], u[i]);
                g_split_f16(v[i], &hi[i], &lo16[i]);
                lo[i] = v[i] - g_h2f(hi[i]);
            }
            if (pairs) {
                if (F32) {
                    *(float2*)(o.gate + at) = make_float2(g[0], g[1]);
                    *(float2*)(o.up + at) = make_float2(u[0], u[1]);
                    *(float2*)(o.act + at) = make_float2(v[0], v[1]);
                }
                *(__half2*)(o.hi + at) = __halves2half2(hi[0], hi[1]);
                if (LO == 1) *(__half2*)(o.lo + at) = __halves2half2(lo16[0], lo16[1]);
#if defined(GRETA_FP8)
                if (LO == 2) *(unsigned short*)(o.lo8 + at) = g_lo8x2(lo[0], lo[1]);
#endif
                continue;
            }
            // Odd n, one by one from the values above (g_swiglu_one here recomputes them, and
            // ptxas then allocates these forms' registers differently: SASS +96 instructions).
            for (unsigned i = 0; i < 2 && col + i < n; ++i) {
                if (F32) {
                    o.gate[at + i] = g[i];
                    o.up[at + i] = u[i];
                    o.act[at + i] = v[i];
                }
                o.hi[at + i] = hi[i];
                if (LO == 1) o.lo[at + i] = lo16[i];
#if defined(GRETA_FP8)
                if (LO == 2) o.lo8[at + i] = g_lo8(lo[i]);
#endif
            }
        }
    }
}
// The launch's F32 and LO as compile-time values: `store` is called with a g_swiglu_form
// of them (o.gate and o.lo / o.lo8 tested once a tile, not at every store).
template <bool F32_, unsigned LO_>
struct g_swiglu_form {
    static constexpr bool F32 = F32_;
    static constexpr unsigned LO = LO_;
};
template <typename Store>
GRETA_DEVICE void g_swiglu_forms(const g_swiglu_out& o, Store store) {
    const unsigned lo = o.lo8 ? 2 : o.lo ? 1 : 0;
    if (o.gate) {
        if (lo == 2) store(g_swiglu_form<true, 2>{});
        else if (lo == 1) store(g_swiglu_form<true, 1>{});
        else store(g_swiglu_form<true, 0>{});
    } else {
        if (lo == 2) store(g_swiglu_form<false, 2>{});
        else if (lo == 1) store(g_swiglu_form<false, 1>{});
        else store(g_swiglu_form<false, 0>{});
    }
}
template <unsigned TN>
GRETA_DEVICE void g_swiglu_store(const float (&acc)[TN / 2], const g_swiglu_out& o, unsigned r0, unsigned c0,
                                 unsigned t, unsigned n) {
    g_swiglu_forms(o, [&](auto form) {
        g_swiglu_pairs<TN, decltype(form)::F32, decltype(form)::LO>(acc, o, r0, c0, t, n);
    });
}

// The SwiGLU epilogue of a swapped tile (SWAP): gate's sums in acc, up's in acc_up, the
// thread's output columns f0 and f0 + 8 (of n) and rows r0 + 8 q (+ 1) (of t). act and its
// operands are g_swiglu_pairs' to the bit; stored one by one (a row's neighbouring columns
// are other lanes'): 8 columns of a row a warp's store.
template <unsigned TN, bool F32, unsigned LO>
GRETA_DEVICE void g_swiglu_swapped(const float (&acc)[TN / 2], const float (&acc_up)[TN / 2], const g_swiglu_out& o,
                                   unsigned f0, unsigned r0, unsigned t, unsigned n) {
#pragma unroll
    for (unsigned h = 0; h < 2; ++h) {
        const unsigned f = f0 + 8 * h;
        if (f >= n) continue;
#pragma unroll
        for (unsigned q = 0; q < TN / 8; ++q)
#pragma unroll
            for (unsigned i = 0; i < 2; ++i) {
                const unsigned r = r0 + 8 * q + i;
                if (r >= t) continue;
                g_swiglu_one<F32, LO>(o, (unsigned long)r * n + f, acc[4 * q + 2 * h + i], acc_up[4 * q + 2 * h + i]);
            }
    }
}
template <unsigned TN>
GRETA_DEVICE void g_swiglu_store_swapped(const float (&acc)[TN / 2], const float (&acc_up)[TN / 2],
                                         const g_swiglu_out& o, unsigned f0, unsigned r0, unsigned t, unsigned n) {
    g_swiglu_forms(o, [&](auto form) {
        g_swiglu_swapped<TN, decltype(form)::F32, decltype(form)::LO>(acc, acc_up, o, f0, r0, t, n);
    });
}

// One output tile of a launch: its first row and column, and the product it belongs to
// (prod: 0, 1 or 2, the group's order).
struct g_wgmma_at {
    unsigned row0, col0, n, prod;
    const g_tmap *tw, *tw8;
    const float* sw;
    float* y;
};

// With KV (the untraced prefill's Q/K/V group, `gemm_f16_qkv_cache` in gpu/gemm.rs), products
// 1 and 2 (K and V) are not stored as f32: K rotated (RoPE, adjacent pairs) and V go as f16
// straight into the layer's caches at the pass's positions, which is rope_k_append's work
// (its reads of K and V as f32 and its launch). A thread holds output columns 2j and 2j + 1
// of each row it stores, so a pair of the GGUF pairing never leaves its registers; its
// angles come from rope_angles_f32's table (the prefill attention's), the values
// g_rope_angle gives rope_k_append, and the rotation is g_rope_first / g_rope_second: the
// cache's bits are rope_k_append's (the op test checks them). head_mask: head_dim - 1 (a
// power of two).
struct g_kv_out {
    g_half *k_cache, *v_cache;
    const float* angles;
    const unsigned* pos0;
    unsigned head_mask;
};

// The KV epilogue of a K or V tile (at.prod 1 or 2): rows r0 and r0 + 8 (of t), columns
// c0 + 8 q (+ 1), position p0 + row. Every K / V width is even (n_kv_heads x head_dim), so
// a pair is whole. A K row's angles are all loaded before its first store, through the
// read-only path (which the cache's stores cannot alias): loaded pair by pair, each after
// the previous pair's store, they cost a round trip a pair (session 47: the 7B's Q/K/V
// +10 us a layer, with 48 loads in a row in the SASS).
template <unsigned TN>
GRETA_DEVICE void g_kv_store(const float (&acc)[TN / 2], const g_kv_out& o, const g_wgmma_at& at, unsigned r0,
                             unsigned c0, unsigned t, unsigned p0) {
    const bool key = at.prod == 1;
    g_half* cache = key ? o.k_cache : o.v_cache;
#pragma unroll
    for (unsigned h = 0; h < 2; ++h) {
        const unsigned r = r0 + 8 * h;
        if (r >= t) continue;
        g_half* row = cache + (unsigned long)(p0 + r) * at.n;
        // (sin, cos) of pair (col & head_mask) / 2: at 2 x that index in the table (a
        // column past n reads a valid entry of the row, unused).
        float2 sc[TN / 8];
        if (key) {
            const float* angles = o.angles + (unsigned long)r * (o.head_mask + 1);
#pragma unroll
            for (unsigned q = 0; q < TN / 8; ++q)
                sc[q] = __ldg((const float2*)(angles + ((c0 + 8 * q) & o.head_mask)));
        }
#pragma unroll
        for (unsigned q = 0; q < TN / 8; ++q) {
            const unsigned col = c0 + 8 * q;
            if (col >= at.n) continue;
            float v0 = acc[4 * q + 2 * h], v1 = acc[4 * q + 2 * h + 1];
            if (key) {
                const float x0 = v0, x1 = v1;
                v0 = g_rope_first(x0, x1, sc[q].x, sc[q].y);
                v1 = g_rope_second(x0, x1, sc[q].x, sc[q].y);
            }
            *(__half2*)(row + col) = __halves2half2(g_f2h(v0), g_f2h(v1));
        }
    }
}

// The same from a swapped tile's accumulators (SWAP): output columns f0 and f0 + 8 (of
// at.n), rows r0 + 8 q (+ 1) (of t). A RoPE pair's two columns (2j, 2j + 1) lie in lanes 4
// apart (the accumulator rows l / 4 and l / 4 + 1), so each lane takes its partner's value by
// one shuffle, every lane at every step (a shuffle in a divergent branch would read lanes
// that skipped it), and computes its own column's rotation: the bits of g_kv_store's.
template <unsigned TN>
GRETA_DEVICE void g_kv_store_swapped(const float (&acc)[TN / 2], const g_kv_out& o, const g_wgmma_at& at,
                                     unsigned f0, unsigned r0, unsigned t, unsigned p0) {
    const bool key = at.prod == 1;
    g_half* cache = key ? o.k_cache : o.v_cache;
#pragma unroll
    for (unsigned h = 0; h < 2; ++h) {
        const unsigned f = f0 + 8 * h;
        const bool odd = f & 1;
#pragma unroll
        for (unsigned q = 0; q < TN / 8; ++q)
#pragma unroll
            for (unsigned i = 0; i < 2; ++i) {
                const unsigned r = r0 + 8 * q + i;
                float v = acc[4 * q + 2 * h + i];
                if (key) {
                    const float w = __shfl_xor_sync(0xffffffffu, v, 4);
                    if (r < t) {
                        const float2 sc = __ldg((const float2*)(o.angles + (unsigned long)r * (o.head_mask + 1) +
                                                                ((f & ~1u) & o.head_mask)));
                        const float x0 = odd ? w : v, x1 = odd ? v : w;
                        v = odd ? g_rope_second(x0, x1, sc.x, sc.y) : g_rope_first(x0, x1, sc.x, sc.y);
                    }
                }
                if (r < t && f < at.n) cache[(unsigned long)(p0 + r) * at.n + f] = g_f2h(v);
            }
    }
}

// Stream-K (sessions 51-52): where a launch's tiles do not fill whole waves of the
// persistent grid, the last wave's `tiles` tiles (the remainder, fewer than the grid) are cut
// along K into `parts` parts of equal steps, and the grid takes the parts as it takes whole
// tiles: piece v = g_bid(), + gridDim.x, ... after the whole tiles, part (v - dp) / tiles of
// tile dp + (v - dp) % tiles. So at any time the blocks run the same part of neighbouring
// tiles, which share their weights' K range (the row tiles of a column come one after
// another): session 51's cut of the tiles' steps in one run [b U / G, (b + 1) U / G) a block
// had the blocks at every K offset at once, and the shared tiles read their weights from
// DRAM up to 6x over (H200, session 52: gate/up at 800 rows 837 MB against 332, 399 us
// against 359; down 1.21 GB against 192). A tile's parts add up in order, each waiting for
// the one before it: part 0 leaves its sums in the tile's slot (TM x TN f32 in the consumer
// threads' register order) and sets each consumer warp's flag to 1; part j adds the slot to
// its own sums and leaves them there with flag j + 1; the last part adds and stores the tile
// as a whole one, and sets the flags back to 0. A part waits only for a piece the grid took
// before it, and all blocks are resident (the grid is what the multiprocessors hold), so the
// waits end; the order of the additions does not depend on timing.
struct g_sk {
    unsigned tiles, parts;
    float* part;
    unsigned* flag;
};

// A consumer warp's release of its piece's sums (flag value v), and the wait for value v.
GRETA_DEVICE void g_flag_release(unsigned* f, unsigned v) {
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(f), "r"(v) : "memory");
}
GRETA_DEVICE void g_flag_acquire(const unsigned* f, unsigned want) {
    unsigned v = 0;
    do {
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(f) : "memory");
    } while (v != want);
}

template <unsigned TM, unsigned TN, unsigned STAGES = WG_STAGES, bool LO8 = false, bool SWIGLU = false,
          bool KV = false, bool SP = false, bool SK = false, bool SWAP = false>
GRETA_DEVICE void gemm_f16_wgmma_tile(const g_sk& sk, unsigned char* raw, const g_tmap* ta, const g_tmap* ta_lo, const g_tmap* tw0,
                                      const g_tmap* tw1, const g_tmap* tw2, float* y0, float* y1, float* y2,
                                      unsigned t, unsigned k, unsigned n0, unsigned n1, unsigned n2,
                                      unsigned has_lo, const g_tmap* tw8_0 = nullptr,
                                      const g_tmap* tw8_1 = nullptr, const g_tmap* tw8_2 = nullptr,
                                      const float* sw0 = nullptr, const float* sw1 = nullptr,
                                      const float* sw2 = nullptr, const g_swiglu_out* swiglu = nullptr,
                                      const g_kv_out* kv = nullptr, const unsigned* meta = nullptr) {
    static_assert(!SWIGLU || SWAP || TN % 16 == 0, "SwiGLU: each half of B whole 8-row swizzle atoms");
    static_assert(!(SWIGLU && KV), "KV is the Q/K/V group's epilogue");
    static_assert(!SP || (LO8 && !KV), "SP: the FP8 low steps of the LO8 and SwiGLU LO8 forms");
    static_assert(!SWAP || (!SP && TM == (SWIGLU ? 256 : 128)), "SWAP: 128 weight rows, SwiGLU 256");
    // SWAP with SWIGLU: the A box is gate's 128 rows then up's, and consumer warpgroup c
    // multiplies gate's rows 64 c .. into acc and up's into acc_up: gate and up of an output
    // in one thread.
    constexpr bool SW2 = SWAP && SWIGLU;
    // A block's output columns: TN, or TN / 2 gate-up pairs; with SWAP, TM (the A box's
    // weight rows) or TM / 2 pairs, its tokens TN (the B box's rows).
    constexpr unsigned TNO = SWAP ? (SWIGLU ? TM / 2 : TM) : SWIGLU ? TN / 2 : TN, TROWS = SWAP ? TN : TM;
    // A stage holds one step's boxes of 128-byte rows: f16 ones (K 64) or, LO8, FP8 ones (K 128).
    constexpr unsigned A_HALVES = TM * WG_BK, STAGE_BYTES = (TM + TN) * WG_BK * 2;
    static_assert(A_HALVES * 2 % 1024 == 0 && STAGE_BYTES % 1024 == 0, "boxes start on swizzle atoms");
    constexpr unsigned CONSUMERS = SW2 ? 2 : TM / 64, CONSUMER_WARPS = CONSUMERS * 4;
    // Swizzle atoms are 1024-byte aligned (the launcher adds 1 KiB for this).
    unsigned char* smem = (unsigned char*)(((unsigned long)raw + 1023) & ~1023ul);
    unsigned long long* full = (unsigned long long*)(smem + STAGES * STAGE_BYTES);
    unsigned long long* empty = full + STAGES;
    // SP: 16 bytes past the barriers that a consumer's stores hold its two pairs of metadata
    // registers with (lo_step below; wgmma_shared counts them).
    unsigned* sink = (unsigned*)(empty + STAGES);
    const unsigned tid = g_tid(), wg = tid / 128, producer = CONSUMERS * 128;

    // The launch's tiles: row tiles first, then product 0's column tiles, product 1's,
    // product 2's (SWIGLU: one product of n0 outputs, its gate weights tw0 and its up
    // weights tw1). A block takes tiles g_bid(), + gridDim.x, ... (persistent: the grid is
    // what the multiprocessors hold at once, so that a block's producer fills its stages
    // for the next tile while its consumers store the last one).
    const unsigned c0 = (n0 + TNO - 1) / TNO, c1 = (n1 + TNO - 1) / TNO, c2 = (n2 + TNO - 1) / TNO;
    const unsigned row_tiles = (t + TROWS - 1) / TROWS, tiles = row_tiles * (SWIGLU ? c0 : c0 + c1 + c2);
    auto tile_at = [&](unsigned i) {
        unsigned j = i / row_tiles;
        g_wgmma_at a = {(i - j * row_tiles) * TROWS, 0, n0, 0, tw0, tw8_0, sw0, y0};
        if (!SWIGLU && j >= c0 + c1) {
            j -= c0 + c1, a.n = n2, a.prod = 2, a.tw = tw2, a.y = y2, a.tw8 = tw8_2, a.sw = sw2;
        } else if (!SWIGLU && j >= c0) {
            j -= c0, a.n = n1, a.prod = 1, a.tw = tw1, a.y = y1, a.tw8 = tw8_1, a.sw = sw1;
        }
        a.col0 = j * TNO;
        return a;
    };
    const unsigned hi_steps = (k + WG_BK - 1) / WG_BK;
    // LO8: the FP8 steps (K 128 each) first, then the f16 steps (K 64).
    const unsigned lo_steps = LO8 ? (k + 2 * WG_BK - 1) / (2 * WG_BK) : 0;
    const unsigned steps = LO8 ? lo_steps + hi_steps : has_lo ? 2 * hi_steps : hi_steps;
    // The block's pieces: tiles g_bid(), + gridDim.x, ... whole, and with SK (the `_sk`
    // forms, g_sk) the last sk.tiles as sk.parts parts each (steps [s0, s1), part j), taken
    // on in the same turn. Without SK every piece is a whole tile (s0 = 0, s1 = steps: the
    // code is the whole-tile kernel's, the stream-K branches folded away). A part has at
    // least one step (its products start its sums).
    const unsigned dp = SK ? tiles - sk.tiles : tiles;
    const unsigned parts = SK ? min(sk.parts, steps) : 1, end = SK ? dp + sk.tiles * parts : tiles;
    struct piece {
        unsigned i, s0, s1, j;
    };
    auto pieces = [&, v = g_bid()](piece& p) mutable {
        if (v >= end) return false;
        if (!SK || v < dp) {
            p = {v, 0, steps, 0};
        } else {
            const unsigned j = (v - dp) / sk.tiles, i = v - dp - j * sk.tiles;
            p = {dp + i, j * steps / parts, (j + 1) * steps / parts, j};
        }
        v += gridDim.x;
        return true;
    };
    if (tid == producer) {
        for (unsigned s = 0; s < STAGES; ++s) {
            g_mbar_init(&full[s], 1);
            g_mbar_init(&empty[s], CONSUMER_WARPS);
        }
        g_mbar_init_fence();
    }
    g_sync();
    // KV: the kernel after it (the prefill attention, which reads the caches this one writes)
    // is let in only as this grid's blocks exit. Let in at entry, its blocks took the
    // multiprocessors in the order this persistent grid left them, not the even spread the
    // attention orders its blocks for (H200, session 47: 16 key tiles on the busiest SM
    // against 9, the attention +3 us a 7B layer and the prefill 0.25 ms slower than with
    // this); rope_k_append, between them before, had drained it.
    if constexpr (KV) g_wait_previous();
    else g_overlap_entry();

    if (tid >= producer) {
        if (tid != producer) return;
        // The stage and the parity of its use, advanced step by step over the block's tiles
        // (no division a step); `used`: whether every stage has been filled once.
        unsigned st = 0, ph = 0;
        bool used = false;
        for (piece p; pieces(p);) {
            const g_wgmma_at at = tile_at(p.i);
            for (unsigned s = p.s0; s < p.s1; ++s) {
                // The consumers' release of this stage's previous use.
                if (used) g_mbar_wait(&empty[st], ph ^ 1);
                const bool lo = LO8 ? s < lo_steps : s >= hi_steps;
                // LO8: the FP8 steps first (K 128: boxes of 128-byte rows, as the f16 ones),
                // then the f16 ones (K 64), each over all of K; every step fills its stage.
                const int kc = (int)(LO8 ? (lo ? s * 2 * WG_BK : (s - lo_steps) * WG_BK)
                                         : (lo ? s - hi_steps : s) * WG_BK);
                const g_tmap *a_map = lo ? ta_lo : ta, *w_map = LO8 && lo ? at.tw8 : at.tw,
                             *w_up = LO8 && lo ? tw8_1 : tw1;
                unsigned char* slab = smem + st * STAGE_BYTES;
                if (SWAP) {
                    // SWAP: the weights' TM rows into the A box, the tokens' TN into the B box.
                    g_mbar_arrive_expect(&full[st], STAGE_BYTES);
                    g_tma_load_2d(slab, w_map, kc, (int)at.col0, &full[st]);
                    if (SW2) g_tma_load_2d(slab + A_HALVES, w_up, kc, (int)at.col0, &full[st]);
                    g_tma_load_2d(slab + A_HALVES * 2, a_map, kc, (int)at.row0, &full[st]);
                } else {
                    if (SP && lo) {
                        // SP: the step's compressed low halves (TM rows of 64 bytes: K 128),
                        // then each 64-row half's metadata (1 KiB, sp_meta_at) after them, where
                        // the dense A box's second half would be; B as in every FP8 step.
                        g_mbar_arrive_expect(&full[st], STAGE_BYTES - TM * 64 + TM / 64 * 1024);
                        g_tma_load_2d(slab, a_map, kc / 2, (int)at.row0, &full[st]);
                        for (unsigned h = 0; h < TM / 64; ++h)
                            g_bulk_load(slab + TM * 64 + h * 1024, meta + sp_meta_at(at.row0 / 64 + h, s, k), 1024,
                                        &full[st]);
                    } else {
                        g_mbar_arrive_expect(&full[st], STAGE_BYTES);
                        g_tma_load_2d(slab, a_map, kc, (int)at.row0, &full[st]);
                    }
                    g_tma_load_2d(slab + A_HALVES * 2, w_map, kc, (int)at.col0, &full[st]);
                    if (SWIGLU)
                        g_tma_load_2d(slab + A_HALVES * 2 + TNO * WG_BK * 2, w_up, kc, (int)at.col0, &full[st]);
                }
                if (++st == STAGES) st = 0, ph ^= 1, used = true;
            }
        }
        return;
    }

    // The consumer warpgroup, read from lane 0: the same value, but one the compiler knows
    // is uniform across the warp, so the operands' descriptors (which start from it) and the
    // stage offsets are kept and advanced in uniform registers where wgmma reads them. From
    // tid / 128 they were per-thread values, and every wgmma waited for four R2UR moves
    // (cuobjdump -sass: 235 in 128_lo8, 3079 in swiglu_128x224_lo8; now ~10 each, none in
    // the main loops).
    const unsigned c = __shfl_sync(0xffffffffu, wg, 0);
    float acc[TN / 2], acc_up[SW2 ? TN / 2 : 1];
    // SW2: up's rows in the A box, as a descriptor offset (16-byte units).
    constexpr unsigned UP = A_HALVES * 2 / 2 / 16;
    const unsigned l = g_lane(), warp = (tid % 128) / 32;
    // The stage, the parity of its full barrier's phase and the previous step's stage,
    // advanced step by step over the block's tiles, and the operands' descriptors in stage
    // 0, which a stage's offset / 16 moves (the descriptor's start address field): between
    // one step's wait on its products and the next step's products this loop issues only
    // what it must (the division by STAGES and the descriptors' arithmetic sat there:
    // tools/gpu/stall_sites.sh).
    unsigned st = 0, ph = 0, prev = 0;
    const unsigned long long da0 = g_wgmma_desc(smem + c * 64 * WG_BK * 2), db0 = g_wgmma_desc(smem + A_HALVES * 2);
    // SP: the warpgroup's 64 compressed rows of 64 bytes.
    const unsigned long long da_sp = g_wgmma_desc64(smem + c * 64 * 64);
    // KV: the pass's first position (read after the wait for the kernel ahead, which may
    // write it).
    const unsigned p0 = KV ? *kv->pos0 : 0;
    for (piece p; pieces(p);) {
        const g_wgmma_at at = tile_at(p.i);
        if constexpr (LO8) {
            // The low products' scales (read ahead). Their boxes lie as the f16 ones (da0, db0).
            const float lo_scale = 1.0f / (float)(1u << G_LO8_SCALE_LOG2);
            const float scale = *at.sw * lo_scale, scale_up = SWIGLU ? *sw1 * lo_scale : scale;
            // One FP8 step (K 128). SP: its two metadata words go into `mine`, one of two
            // register pairs used by alternate steps, and `other` (the step before's pair) is
            // held until the wait that retires that step's products. A sparse wgmma reads its
            // metadata register while it runs, and ptxas does not know it: with one pair it
            // loaded the next step's words into the registers under the running products
            // (wrong low products on some 128-row tiles, differently each run; the op test
            // caught it, and the SASS showed the reuse). The hold is a shared store of both
            // words after the wait (to `sink`, past the barriers), which ptxas keeps after it.
            unsigned meta[2][2] = {{0u, 0u}, {0u, 0u}};
            auto lo_step = [&](unsigned s, unsigned (&mine)[2], const unsigned (&other)[2]) {
                g_mbar_wait(&full[st], ph);
                const unsigned long long o = st * (STAGE_BYTES >> 4);
                if constexpr (SP) {
                    // This thread's two words from the stage, one 8-byte load (sp_meta_word:
                    // words h and h + 2 of its row, h = (lane & 3) / 2, lie together).
                    const unsigned char* mw = smem + st * STAGE_BYTES + TM * 64 + c * 1024 +
                                              16 * (16 * warp + l / 4 + 8 * (l & 1)) + 8 * ((l & 3) / 2);
                    g_lds_u32x2(mw, &mine[0], &mine[1]);
                }
                g_wgmma_fence();
                if constexpr (SP) {
                    // K 128 as two sparse K 64 products: the compressed rows 32 bytes a product,
                    // B's 64.
                    g_wgmma_sp_m64k64_e5m2_e4m3<TN>(acc, da_sp + o, db0 + o, mine[0], s > p.s0);
                    g_wgmma_sp_m64k64_e5m2_e4m3<TN>(acc, da_sp + o + 2, db0 + o + 4, mine[1], 1);
                    g_wgmma_commit();
#ifdef GRETA_SP_DRAIN
                    g_wgmma_wait<0>();
#else
                    g_wgmma_wait<1>();
#endif
                    g_hold_regs(sink + 2 * (&other == &meta[1]), other[0], other[1]);
                } else {
                    // K 128 a step: four K 32 products, each 32 bytes on along the 128-byte rows.
                    for (unsigned kk = 0; kk < 2 * WG_BK / 32; ++kk)
                        if constexpr (SWAP) {
                            g_wgmma_m64k32_e4m3_e5m2<TN>(acc, da0 + o + 2 * kk, db0 + o + 2 * kk, s > p.s0 || kk > 0);
                            if constexpr (SW2)
                                g_wgmma_m64k32_e4m3_e5m2<TN>(acc_up, da0 + o + 2 * kk + UP, db0 + o + 2 * kk,
                                                             s > p.s0 || kk > 0);
                        } else {
                            g_wgmma_m64k32_e5m2_e4m3<TN>(acc, da0 + o + 2 * kk, db0 + o + 2 * kk, s > p.s0 || kk > 0);
                        }
                    g_wgmma_commit();
                    g_wgmma_wait<1>();
                }
                if (s > p.s0 && g_lane() == 0) g_mbar_arrive(&empty[prev]);
                prev = st;
                if (++st == STAGES) st = 0, ph ^= 1;
            };
            // Two loops, not one with a branch between the FP8 and the f16 products: a wgmma
            // in a path ptxas cannot prove uniform makes it serialise every wgmma (C7520).
            // SP: steps in pairs, so that each pair's registers are named apart.
            // The piece's FP8 steps, then its f16 ones (a piece of a stream-K share may
            // have either or both).
            const unsigned lo_end = SK ? min(p.s1, lo_steps) : lo_steps;
            unsigned s = p.s0;
            if constexpr (SP) {
                for (; s + 2 <= lo_end; s += 2) {
                    lo_step(s, meta[0], meta[1]);
                    lo_step(s + 1, meta[1], meta[0]);
                }
            }
            for (; s < lo_end; ++s) lo_step(s, meta[0], meta[1]);
            if (!SK || p.s0 < lo_end) {
                // The low sums complete, times their scales (powers of two: exact); the
                // f16 products then add onto them in the same registers.
                g_wgmma_wait<0>();
                if constexpr (SP) {
                    g_hold_regs(sink, meta[0][0], meta[0][1]);
                    g_hold_regs(sink + 2, meta[1][0], meta[1][1]);
                }
                for (unsigned q = 0; q < TN / 2; ++q) acc[q] *= SWIGLU && !SWAP && q >= TN / 4 ? scale_up : scale;
                if constexpr (SW2)
                    for (unsigned q = 0; q < TN / 2; ++q) acc_up[q] *= scale_up;
            }
            // The f16 steps add onto the FP8 sums; a stream-K piece of f16 steps only starts
            // its sums at its first (zeroing the accumulators in a branch instead made ptxas
            // serialise every wgmma of the `_sk` forms: C7515).
            for (unsigned s = SK ? max(p.s0, lo_steps) : lo_steps; s < p.s1; ++s) {
                g_mbar_wait(&full[st], ph);
                const unsigned long long o = st * (STAGE_BYTES >> 4);
                g_wgmma_fence();
                for (unsigned kk = 0; kk < WG_BK / 16; ++kk) {
                    g_wgmma_m64k16<TN>(acc, da0 + o + 2 * kk, db0 + o + 2 * kk, !SK || s > p.s0 || kk > 0);
                    if constexpr (SW2)
                        g_wgmma_m64k16<TN>(acc_up, da0 + o + 2 * kk + UP, db0 + o + 2 * kk, !SK || s > p.s0 || kk > 0);
                }
                g_wgmma_commit();
                g_wgmma_wait<1>();
                if ((!SK || s > p.s0) && g_lane() == 0) g_mbar_arrive(&empty[prev]);
                prev = st;
                if (++st == STAGES) st = 0, ph ^= 1;
            }
        } else {
            for (unsigned s = p.s0; s < p.s1; ++s) {
                g_mbar_wait(&full[st], ph);
                const unsigned long long o = st * (STAGE_BYTES >> 4);
                const unsigned long long da = da0 + o, db = db0 + o;
                g_wgmma_fence();
                for (unsigned kk = 0; kk < WG_BK / 16; ++kk) {
                    g_wgmma_m64k16<TN>(acc, da + 2 * kk, db + 2 * kk, s > p.s0 || kk > 0);
                    if constexpr (SW2) g_wgmma_m64k16<TN>(acc_up, da + 2 * kk + UP, db + 2 * kk, s > p.s0 || kk > 0);
                }
                g_wgmma_commit();
                // Step s - 1's products are done: its stage may be refilled. (Two steps left
                // in flight, each stage released a step later: 7B prefill +3.6 %, H200,
                // session 46, tools/gpu/variants/gemm-depth2.patch.)
                g_wgmma_wait<1>();
                if (s > p.s0 && g_lane() == 0) g_mbar_arrive(&empty[prev]);
                prev = st;
                if (++st == STAGES) st = 0, ph ^= 1;
            }
        }
        // The piece's last products done: its last stage goes back to the producer, which
        // fills it for the block's next piece while this one's outputs are stored.
        g_wgmma_wait<0>();
        if (g_lane() == 0) g_mbar_arrive(&empty[prev]);
        // Stream-K (g_sk): the tile's parts add up in order in its slot; the last stores it.
        if (SK && p.i >= dp) {
            constexpr unsigned CT = TM / 64 * 128;
            float* part = sk.part + (unsigned long)(p.i - dp) * (TM * TN) + tid;
            unsigned* f = sk.flag + (p.i - dp) * CONSUMER_WARPS + tid / 32;
            if (p.j > 0) {
                g_flag_acquire(f, p.j);
                // 8 loads at a time: all TN / 2 in flight would double the accumulators'
                // registers where the widest tiles have none to spare. (TN / 2 is 116 on the
                // 232 tile: the last group is short.)
#pragma unroll
                for (unsigned q0 = 0; q0 < TN / 2; q0 += 8) {
                    float v[8];
#pragma unroll
                    for (unsigned j = 0; j < 8; ++j)
                        if (q0 + j < TN / 2) v[j] = __ldcg(part + (q0 + j) * CT);
#pragma unroll
                    for (unsigned j = 0; j < 8; ++j)
                        if (q0 + j < TN / 2) acc[q0 + j] += v[j];
                    asm volatile("" ::: "memory");
                }
            }
            if (p.j + 1 < parts) {
#pragma unroll
                for (unsigned q = 0; q < TN / 2; ++q) __stcg(part + q * CT, acc[q]);
                g_fence_release();
                __syncwarp();
                if (l == 0) g_flag_release(f, p.j + 1);
                continue;
            }
            __syncwarp();
            if (l == 0) *f = 0;
        }
        if constexpr (SW2) {
            g_swiglu_store_swapped<TN>(acc, acc_up, *swiglu, at.col0 + 64 * c + 16 * warp + l / 4, at.row0 + 2 * (l % 4),
                                       t, n0);
            continue;
        } else if constexpr (SWIGLU) {
            g_swiglu_store<TN>(acc, *swiglu, at.row0 + 64 * c + 16 * warp + l / 4, at.col0 + 2 * (l % 4), t, n0);
            continue;
        }
        if constexpr (KV) {
            if (at.prod != 0) {
                if constexpr (SWAP) {
                    g_kv_store_swapped<TN>(acc, *kv, at, at.col0 + 64 * c + 16 * warp + l / 4, at.row0 + 2 * (l % 4), t, p0);
                } else {
                    g_kv_store<TN>(acc, *kv, at, at.row0 + 64 * c + 16 * warp + l / 4, at.col0 + 2 * (l % 4), t, p0);
                }
                continue;
            }
        }
        if constexpr (SWAP) {
            // The accumulators' rows are the tile's weight rows (output columns), their
            // columns its tokens: a warp's store covers 8 consecutive outputs (32 bytes) of
            // each of 4 tokens, whole sectors.
            for (unsigned h = 0; h < 2; ++h) {
                const unsigned col = at.col0 + 64 * c + 16 * warp + l / 4 + 8 * h;
                if (col >= at.n) continue;
                for (unsigned q = 0; q < TN / 8; ++q)
                    for (unsigned i = 0; i < 2; ++i) {
                        const unsigned r = at.row0 + 8 * q + 2 * (l % 4) + i;
                        if (r < t) at.y[(unsigned long)r * at.n + col] = acc[4 * q + 2 * h + i];
                    }
            }
            continue;
        }
        const bool pairs = at.n % 2 == 0;
        for (unsigned h = 0; h < 2; ++h) {
            unsigned r = at.row0 + 64 * c + 16 * warp + l / 4 + 8 * h;
            if (r >= t) continue;
            for (unsigned q = 0; q < TN / 8; ++q) {
                unsigned col = at.col0 + 8 * q + 2 * (l % 4);
                float* p = at.y + (unsigned long)r * at.n + col;
                float v0 = acc[4 * q + 2 * h], v1 = acc[4 * q + 2 * h + 1];
                if (pairs && col + 1 < at.n) {
                    *(float2*)p = make_float2(v0, v1);
                } else {
                    if (col < at.n) p[0] = v0;
                    if (col + 1 < at.n) p[1] = v1;
                }
            }
        }
    }
}

// 128 x 128 tiles where they give the GPU enough blocks (Llama-2-7B), 64 x 64 where not
// (SmolLM2: 576-column products), and the wide 128 x 256 or 128 x 232 where their waves of
// blocks take no longer than 128 x 128's, chosen by wgmma_tile (gpu/gemm/tiles.rs). The wide tiles'
// m64n256 products read 10 KiB of operands from shared memory for 256 K of multiply-adds
// where two m64n128 ones read 12 KiB: under Nsight Compute (H200, session 24) the tensor
// pipe was active 84 % of 7B gate/up's cycles against 74 % with the 128 x 168 tile 256
// replaced (152 against 158 us; cuBLAS's 168 x 128 tiles: 96 %, 128 us). 232 is for the
// waves: 7B's gate/up at 512 rows makes 344 blocks of 256 on 132 SMs, 2.6 waves whose third
// leaves 52 idle, and 384 of 232, 2.9 (a multiprocessor's share 696 columns against 768;
// session 25: 153.5 -> 141.5 us at the same 84 % tensor pipe; 5 stages measured level).
// Stages: as many as fit 227 KiB (6 of 32 KiB, 6 of 16, 4 of 48, 4 of 45: wgmma_stages in
// gpu/gemm/tiles.rs). BOUNDS: the wide tiles' __launch_bounds__, so that ptxas keeps a thread's
// registers (its 128 or 116 accumulators) to what 288 threads may hold; the others compile
// as they did before (no bound).
#define GEMM_WGMMA_FORM(NAME, TM, TN, STAGES, BOUNDS, SK)                                                            \
    GRETA_KERNEL void BOUNDS                                                                                         \
        NAME(const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo,                               \
             const __grid_constant__ g_tmap tw0, const __grid_constant__ g_tmap tw1,                                \
             const __grid_constant__ g_tmap tw2, float* y0, float* y1, float* y2, unsigned t, unsigned k,           \
             unsigned n0, unsigned n1, unsigned n2, unsigned has_lo,                                                 \
             unsigned sk_tiles, unsigned sk_parts, float* sk_part,                                                   \
             unsigned* sk_flag) {                                                                                    \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        gemm_f16_wgmma_tile<TM, TN, STAGES, false, false, false, false, SK>(sk, wg_raw, &ta, &ta_lo, &tw0, &tw1,     \
            &tw2, y0, y1, y2, t, k, n0, n1, n2, has_lo);                                                             \
    }
// Each tile's whole-tile form and its stream-K form (`_sk`: SK above).
#define GEMM_WGMMA(NAME, TM, TN, STAGES, BOUNDS)                                                                     \
    GEMM_WGMMA_FORM(NAME, TM, TN, STAGES, BOUNDS, false)                                                             \
    GEMM_WGMMA_FORM(NAME##_sk, TM, TN, STAGES, BOUNDS, true)
GEMM_WGMMA(gemm_f16_wgmma_128, 128, 128, WG_STAGES, )
GEMM_WGMMA(gemm_f16_wgmma_64, 64, 64, WG_STAGES, )
GEMM_WGMMA(gemm_f16_wgmma_128x256, 128, 256, 4, __launch_bounds__(288, 1))
// The build may set the 232 tile's depth, as WG_STAGES (and WGMMA_STAGES_232 in gpu/gemm/tiles.rs).
#ifndef WG_STAGES_232
#define WG_STAGES_232 4
#endif
GEMM_WGMMA(gemm_f16_wgmma_128x232, 128, 232, WG_STAGES_232, __launch_bounds__(288, 1))
// 128 x 192 for 7B's Q/K/V at 512 rows (session 40): 264 blocks in exactly 2 waves of 132
// where 128 x 128 makes 384 in 2.9 (the same 384 columns a multiprocessor), each m64n192
// product reading 8 KiB of operands for 192 K multiply-adds (n128: 6 KiB for 128 K); 5 stages
// of 40 KiB.
GEMM_WGMMA(gemm_f16_wgmma_128x192, 128, 192, 5, __launch_bounds__(288, 1))

// The swapped tiles (SWAP above; session 53): 128 output columns (the weights' rows, wgmma's
// A operand) by TOKENS input rows (wgmma's N: a multiple of 8 from 72 to 256), so that a
// prompt's rows are cut into tiles of about equal size instead of 128-row ones whose last is
// mostly padding. cuBLAS does the same (its nvjet kernels at 520 rows: 104 or 136 tokens a
// tile) and its GEMMs cost about the same a token at every length, where greta's 128-row
// tiles cost up to 1.4x (docs/performance.md, session 53). For the plain and FP8-lo grouped
// products (output, down), Q/K/V's with K and V into the caches (KV: g_kv_store_swapped) and,
// since session 54, the SwiGLU GEMM's (GEMM_WGMMA_SWIGLU_T below).
// Stages: as many as fit 227 KiB, at most 6 (g_swap_stages; wgmma_stages in gpu/gemm/tiles.rs).
// No stream-K forms.
template <unsigned TOKENS, unsigned A_ROWS = 128>
constexpr unsigned g_swap_stages = (227u * 1024 - 1040) / ((A_ROWS + TOKENS) * WG_BK * 2 + 16) < 6
                                       ? (227u * 1024 - 1040) / ((A_ROWS + TOKENS) * WG_BK * 2 + 16)
                                       : 6;
#define GEMM_WGMMA_T(TOKENS)                                                                                         \
    GRETA_KERNEL void __launch_bounds__(288, 1)                                                                      \
        gemm_f16_wgmma_t##TOKENS(const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo,           \
                                 const __grid_constant__ g_tmap tw0, const __grid_constant__ g_tmap tw1,            \
                                 const __grid_constant__ g_tmap tw2, float* y0, float* y1, float* y2, unsigned t,   \
                                 unsigned k, unsigned n0, unsigned n1, unsigned n2, unsigned has_lo,                \
                                 unsigned sk_tiles, unsigned sk_parts, float* sk_part, unsigned* sk_flag) {          \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        gemm_f16_wgmma_tile<128, TOKENS, g_swap_stages<TOKENS>, false, false, false, false, false, true>(            \
            sk, wg_raw, &ta, &ta_lo, &tw0, &tw1, &tw2, y0, y1, y2, t, k, n0, n1, n2, has_lo);                        \
    }                                                                                                                \
    GRETA_KERNEL void __launch_bounds__(288, 1) gemm_f16_wgmma_t##TOKENS##_lo8(                                      \
        const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo, const __grid_constant__ g_tmap tw0, \
        const __grid_constant__ g_tmap tw1, const __grid_constant__ g_tmap tw2, const __grid_constant__ g_tmap tw8_0, \
        const __grid_constant__ g_tmap tw8_1, const __grid_constant__ g_tmap tw8_2, float* y0, float* y1, float* y2, \
        const float* sw0, const float* sw1, const float* sw2, unsigned t, unsigned k, unsigned n0, unsigned n1,     \
        unsigned n2, unsigned sk_tiles, unsigned sk_parts, float* sk_part, unsigned* sk_flag) {                      \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        gemm_f16_wgmma_tile<128, TOKENS, g_swap_stages<TOKENS>, true, false, false, false, false, true>(             \
            sk, wg_raw, &ta, &ta_lo, &tw0, &tw1, &tw2, y0, y1, y2, t, k, n0, n1, n2, 1, &tw8_0, &tw8_1, &tw8_2, sw0, \
            sw1, sw2);                                                                                               \
    }
// The Q/K/V forms with K and V into the caches, up to 192 tokens: from 200 on, ptxas spills
// their epilogue (8-164 bytes; the 168 registers a thread of a 288-thread block may hold).
#define GEMM_WGMMA_T_KV(TOKENS)                                                                                      \
    GRETA_KERNEL void __launch_bounds__(288, 1) gemm_f16_wgmma_t##TOKENS##_kv(                                       \
        const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo, const __grid_constant__ g_tmap tw0, \
        const __grid_constant__ g_tmap tw1, const __grid_constant__ g_tmap tw2, float* y0, unsigned t, unsigned k,   \
        unsigned n0, unsigned n1, unsigned n2, unsigned has_lo, g_half* k_cache, g_half* v_cache,                    \
        const float* angles, const unsigned* pos0, unsigned head_mask, unsigned sk_tiles, unsigned sk_parts,         \
        float* sk_part, unsigned* sk_flag) {                                                                         \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        const g_kv_out kv = {k_cache, v_cache, angles, pos0, head_mask};                                             \
        gemm_f16_wgmma_tile<128, TOKENS, g_swap_stages<TOKENS>, false, false, true, false, false, true>(             \
            sk, wg_raw, &ta, &ta_lo, &tw0, &tw1, &tw2, y0, nullptr, nullptr, t, k, n0, n1, n2, has_lo, nullptr,      \
            nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, &kv);                                              \
    }                                                                                                                \
    GRETA_KERNEL void __launch_bounds__(288, 1) gemm_f16_wgmma_t##TOKENS##_lo8_kv(                                   \
        const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo, const __grid_constant__ g_tmap tw0, \
        const __grid_constant__ g_tmap tw1, const __grid_constant__ g_tmap tw2, const __grid_constant__ g_tmap tw8_0, \
        const __grid_constant__ g_tmap tw8_1, const __grid_constant__ g_tmap tw8_2, float* y0, const float* sw0,     \
        const float* sw1, const float* sw2, unsigned t, unsigned k, unsigned n0, unsigned n1, unsigned n2,          \
        g_half* k_cache, g_half* v_cache, const float* angles, const unsigned* pos0, unsigned head_mask,             \
        unsigned sk_tiles, unsigned sk_parts, float* sk_part, unsigned* sk_flag) {                                   \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        const g_kv_out kv = {k_cache, v_cache, angles, pos0, head_mask};                                             \
        gemm_f16_wgmma_tile<128, TOKENS, g_swap_stages<TOKENS>, true, false, true, false, false, true>(              \
            sk, wg_raw, &ta, &ta_lo, &tw0, &tw1, &tw2, y0, nullptr, nullptr, t, k, n0, n1, n2, 1, &tw8_0, &tw8_1,    \
            &tw8_2, sw0, sw1, sw2, nullptr, &kv);                                                                    \
    }
// The SwiGLU forms on swapped tiles: gate's 128 weight rows and up's (256 in the A box: two
// m64 products a consumer warpgroup each K step, gate and up of an output in one thread) by
// TOKENS; 128 outputs a tile. To 120 tokens: both accumulator sets in the 168 registers.
#define GEMM_WGMMA_SWIGLU_T(TOKENS)                                                                                  \
    GRETA_KERNEL void __launch_bounds__(288, 1) gemm_f16_wgmma_swiglu_t##TOKENS(                                     \
        const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo,                                     \
        const __grid_constant__ g_tmap tw_gate, const __grid_constant__ g_tmap tw_up, float* gate, float* up,        \
        float* act, g_half* hi, g_half* lo, unsigned char* lo8, unsigned t, unsigned k, unsigned n, unsigned has_lo, \
        unsigned sk_tiles, unsigned sk_parts, float* sk_part, unsigned* sk_flag) {                                   \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        const g_swiglu_out out = {gate, up, act, hi, lo, lo8};                                                       \
        gemm_f16_wgmma_tile<256, TOKENS, g_swap_stages<TOKENS, 256>, false, true, false, false, false, true>(        \
            sk, wg_raw, &ta, &ta_lo, &tw_gate, &tw_up, &tw_up, nullptr, nullptr, nullptr, t, k, n, n, 0, has_lo,    \
            nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, &out);                                             \
    }                                                                                                                \
    GRETA_KERNEL void __launch_bounds__(288, 1) gemm_f16_wgmma_swiglu_t##TOKENS##_lo8(                               \
        const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo,                                     \
        const __grid_constant__ g_tmap tw_gate, const __grid_constant__ g_tmap tw_up,                                \
        const __grid_constant__ g_tmap tw8_gate, const __grid_constant__ g_tmap tw8_up, const float* sw_gate,       \
        const float* sw_up, float* gate, float* up, float* act, g_half* hi, g_half* lo, unsigned char* lo8,        \
        unsigned t, unsigned k, unsigned n, unsigned sk_tiles, unsigned sk_parts, float* sk_part,                   \
        unsigned* sk_flag) {                                                                                         \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        const g_swiglu_out out = {gate, up, act, hi, lo, lo8};                                                       \
        gemm_f16_wgmma_tile<256, TOKENS, g_swap_stages<TOKENS, 256>, true, true, false, false, false, true>(         \
            sk, wg_raw, &ta, &ta_lo, &tw_gate, &tw_up, &tw_up, nullptr, nullptr, nullptr, t, k, n, n, 0, 1,          \
            &tw8_gate, &tw8_up, &tw8_up, sw_gate, sw_up, sw_up, &out);                                               \
    }
GEMM_WGMMA_SWIGLU_T(72) GEMM_WGMMA_SWIGLU_T(80) GEMM_WGMMA_SWIGLU_T(88) GEMM_WGMMA_SWIGLU_T(96)
GEMM_WGMMA_SWIGLU_T(104) GEMM_WGMMA_SWIGLU_T(112) GEMM_WGMMA_SWIGLU_T(120)
// Every multiple of 8 from 72 to 256 but 128, the square tile's (WgmmaTile::SWAPPED in
// gpu/gemm/tiles.rs); the KV forms to 192 (WgmmaTile::SWAPPED_KV).
GEMM_WGMMA_T(72) GEMM_WGMMA_T(80) GEMM_WGMMA_T(88) GEMM_WGMMA_T(96) GEMM_WGMMA_T(104) GEMM_WGMMA_T(112)
GEMM_WGMMA_T(120) GEMM_WGMMA_T(136) GEMM_WGMMA_T(144) GEMM_WGMMA_T(152) GEMM_WGMMA_T(160) GEMM_WGMMA_T(168)
GEMM_WGMMA_T(176) GEMM_WGMMA_T(184) GEMM_WGMMA_T(192) GEMM_WGMMA_T(200) GEMM_WGMMA_T(208) GEMM_WGMMA_T(216)
GEMM_WGMMA_T(224) GEMM_WGMMA_T(232) GEMM_WGMMA_T(240) GEMM_WGMMA_T(248) GEMM_WGMMA_T(256)
GEMM_WGMMA_T_KV(72) GEMM_WGMMA_T_KV(80) GEMM_WGMMA_T_KV(88) GEMM_WGMMA_T_KV(96) GEMM_WGMMA_T_KV(104)
GEMM_WGMMA_T_KV(112) GEMM_WGMMA_T_KV(120) GEMM_WGMMA_T_KV(136) GEMM_WGMMA_T_KV(144) GEMM_WGMMA_T_KV(152)
GEMM_WGMMA_T_KV(160) GEMM_WGMMA_T_KV(168) GEMM_WGMMA_T_KV(176) GEMM_WGMMA_T_KV(184) GEMM_WGMMA_T_KV(192)

// The Q/K/V group with K and V into the caches (KV above), on the tiles the FP8-lo forms
// have (128, 64, 128 x 192: wgmma_lo8_tile picks for both).
#define GEMM_WGMMA_KV_FORM(NAME, TM, TN, STAGES, BOUNDS, SK)                                                         \
    GRETA_KERNEL void BOUNDS                                                                                         \
        NAME(const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo,                               \
             const __grid_constant__ g_tmap tw0, const __grid_constant__ g_tmap tw1,                                \
             const __grid_constant__ g_tmap tw2, float* y0, unsigned t, unsigned k, unsigned n0, unsigned n1,       \
             unsigned n2, unsigned has_lo, g_half* k_cache, g_half* v_cache, const float* angles,                  \
             const unsigned* pos0, unsigned head_mask,                                                               \
             unsigned sk_tiles, unsigned sk_parts, float* sk_part, unsigned* sk_flag) {                              \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        const g_kv_out kv = {k_cache, v_cache, angles, pos0, head_mask};                                             \
        gemm_f16_wgmma_tile<TM, TN, STAGES, false, false, true, false, SK>(sk, wg_raw, &ta, &ta_lo, &tw0, &tw1,      \
            &tw2, y0, nullptr, nullptr, t, k, n0, n1, n2, has_lo, nullptr, nullptr, nullptr, nullptr, nullptr,       \
            nullptr, nullptr, &kv);                                                                                  \
    }
#define GEMM_WGMMA_KV(NAME, TM, TN, STAGES, BOUNDS)                                                                  \
    GEMM_WGMMA_KV_FORM(NAME, TM, TN, STAGES, BOUNDS, false)                                                          \
    GEMM_WGMMA_KV_FORM(NAME##_sk, TM, TN, STAGES, BOUNDS, true)
GEMM_WGMMA_KV(gemm_f16_wgmma_128_kv, 128, 128, WG_STAGES, )
GEMM_WGMMA_KV(gemm_f16_wgmma_64_kv, 64, 64, WG_STAGES, )
GEMM_WGMMA_KV(gemm_f16_wgmma_128x192_kv, 128, 192, 5, __launch_bounds__(288, 1))

// The SwiGLU forms (SWIGLU above): gate's weights tw_gate, up's tw_up (TMA boxes of TN / 2
// rows), n outputs a row; gate, up, act null unless traced (g_swiglu_out). Tiles as GEMM_WGMMA's, the
// 224-column one for 7B's gate/up at 512 rows: 99 column tiles of 112 outputs x 4 row tiles
// = 396 blocks, 3.0 waves of 132 (232's unfused 384 blocks of 116 gate or up columns made
// 2.9; a multiprocessor's share 672 columns against 696).
#define GEMM_WGMMA_SWIGLU_FORM(NAME, TM, TN, STAGES, BOUNDS, SK)                                                     \
    GRETA_KERNEL void BOUNDS NAME(const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo,          \
                                  const __grid_constant__ g_tmap tw_gate, const __grid_constant__ g_tmap tw_up,     \
                                  float* gate, float* up, float* act, g_half* hi, g_half* lo,                       \
                                  unsigned char* lo8, unsigned t, unsigned k, unsigned n, unsigned has_lo,           \
                                  unsigned sk_tiles, unsigned sk_parts, float* sk_part, unsigned* sk_flag) {         \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        const g_swiglu_out out = {gate, up, act, hi, lo, lo8};                                                       \
        gemm_f16_wgmma_tile<TM, TN, STAGES, false, true, false, false, SK>(sk, wg_raw, &ta, &ta_lo, &tw_gate,        \
            &tw_up, &tw_up, nullptr, nullptr, nullptr, t, k, n, n, 0, has_lo, nullptr, nullptr, nullptr, nullptr,    \
            nullptr, nullptr, &out);                                                                                 \
    }
#define GEMM_WGMMA_SWIGLU(NAME, TM, TN, STAGES, BOUNDS)                                                              \
    GEMM_WGMMA_SWIGLU_FORM(NAME, TM, TN, STAGES, BOUNDS, false)                                                      \
    GEMM_WGMMA_SWIGLU_FORM(NAME##_sk, TM, TN, STAGES, BOUNDS, true)
GEMM_WGMMA_SWIGLU(gemm_f16_wgmma_swiglu_128, 128, 128, WG_STAGES, )
GEMM_WGMMA_SWIGLU(gemm_f16_wgmma_swiglu_64, 64, 64, WG_STAGES, )
GEMM_WGMMA_SWIGLU(gemm_f16_wgmma_swiglu_128x256, 128, 256, 4, __launch_bounds__(288, 1))
// (224 at 5 stages fits 227 KiB and measured level in both forms: H200, session 46,
// tools/gpu/variants/gemm-swiglu224-5stages.patch.)
GEMM_WGMMA_SWIGLU(gemm_f16_wgmma_swiglu_128x224, 128, 224, 4, __launch_bounds__(288, 1))

// The FP8-lo forms (LO8 above) of the grouped products, on the 128 and 64 tiles, in the
// f16 forms' stages (6 of 32 KiB, 6 of 16 KiB: an FP8 step fills a stage as an f16 one):
// 90 and 58 registers; and on 128 x 192 (7B's Q/K/V at 512 rows, output and down at ~650).
// The wider tiles have none: at the prompt lengths where wgmma_tile would pick them for
// Q/K/V, output or down, measure first (session 32's lo8-seq-all gave them forms). Bounded to their block as the
// SwiGLU forms below need: an SM's four sub-partitions hold 16K registers each, so a block
// of 9 warps (one sub-partition takes 3) launches only at <= 168 registers a thread (an
// unbounded 172 failed: CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES).
#define GEMM_WGMMA_LO8_FORM(NAME, TM, TN, STAGES, SK)                                                                \
    GRETA_KERNEL void __launch_bounds__(TM / 64 * 128 + 32, 1)                                                       \
        NAME(const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo,                               \
             const __grid_constant__ g_tmap tw0, const __grid_constant__ g_tmap tw1,                                \
             const __grid_constant__ g_tmap tw2, const __grid_constant__ g_tmap tw8_0,                              \
             const __grid_constant__ g_tmap tw8_1, const __grid_constant__ g_tmap tw8_2, float* y0, float* y1,      \
             float* y2, const float* sw0, const float* sw1, const float* sw2, unsigned t, unsigned k,               \
             unsigned n0, unsigned n1, unsigned n2,                                                                  \
             unsigned sk_tiles, unsigned sk_parts, float* sk_part, unsigned* sk_flag) {                              \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        gemm_f16_wgmma_tile<TM, TN, STAGES, true, false, false, false, SK>(sk, wg_raw, &ta, &ta_lo, &tw0, &tw1,      \
            &tw2, y0, y1, y2, t, k, n0, n1, n2, 1, &tw8_0, &tw8_1, &tw8_2, sw0, sw1, sw2);                           \
    }
#define GEMM_WGMMA_LO8(NAME, TM, TN, STAGES)                                                                         \
    GEMM_WGMMA_LO8_FORM(NAME, TM, TN, STAGES, false)                                                                 \
    GEMM_WGMMA_LO8_FORM(NAME##_sk, TM, TN, STAGES, true)
GEMM_WGMMA_LO8(gemm_f16_wgmma_128_lo8, 128, 128, WG_STAGES)
GEMM_WGMMA_LO8(gemm_f16_wgmma_64_lo8, 64, 64, WG_STAGES)
GEMM_WGMMA_LO8(gemm_f16_wgmma_128x192_lo8, 128, 192, 5)

// The FP8-lo forms with 2:4-sparse low products (SP above; docs/sparse-lo.md): ta_lo reads the
// compressed low halves [t][k / 2] in boxes of 64-byte rows, meta their tiled metadata
// (split_f16_lo8s). On the LO8 forms' tiles.
#define GEMM_WGMMA_LO8SP_FORM(NAME, TM, TN, STAGES, SK)                                                              \
    GRETA_KERNEL void __launch_bounds__(TM / 64 * 128 + 32, 1)                                                       \
        NAME(const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo,                               \
             const __grid_constant__ g_tmap tw0, const __grid_constant__ g_tmap tw1,                                \
             const __grid_constant__ g_tmap tw2, const __grid_constant__ g_tmap tw8_0,                              \
             const __grid_constant__ g_tmap tw8_1, const __grid_constant__ g_tmap tw8_2, float* y0, float* y1,      \
             float* y2, const float* sw0, const float* sw1, const float* sw2, unsigned t, unsigned k,               \
             unsigned n0, unsigned n1, unsigned n2, const unsigned* meta,                                            \
             unsigned sk_tiles, unsigned sk_parts, float* sk_part,                                                   \
             unsigned* sk_flag) {                                                                                    \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        gemm_f16_wgmma_tile<TM, TN, STAGES, true, false, false, true, SK>(sk, wg_raw, &ta, &ta_lo, &tw0, &tw1,       \
            &tw2, y0, y1, y2, t, k, n0, n1, n2, 1, &tw8_0, &tw8_1, &tw8_2, sw0, sw1, sw2, nullptr, nullptr, meta);   \
    }
#define GEMM_WGMMA_LO8SP(NAME, TM, TN, STAGES)                                                                       \
    GEMM_WGMMA_LO8SP_FORM(NAME, TM, TN, STAGES, false)                                                               \
    GEMM_WGMMA_LO8SP_FORM(NAME##_sk, TM, TN, STAGES, true)
GEMM_WGMMA_LO8SP(gemm_f16_wgmma_128_lo8sp, 128, 128, WG_STAGES)
GEMM_WGMMA_LO8SP(gemm_f16_wgmma_64_lo8sp, 64, 64, WG_STAGES)
GEMM_WGMMA_LO8SP(gemm_f16_wgmma_128x192_lo8sp, 128, 192, 5)

// The FP8-lo forms with K and V into the caches (KV above).
#define GEMM_WGMMA_LO8_KV_FORM(NAME, TM, TN, STAGES, SK)                                                             \
    GRETA_KERNEL void __launch_bounds__(TM / 64 * 128 + 32, 1)                                                       \
        NAME(const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo,                               \
             const __grid_constant__ g_tmap tw0, const __grid_constant__ g_tmap tw1,                                \
             const __grid_constant__ g_tmap tw2, const __grid_constant__ g_tmap tw8_0,                              \
             const __grid_constant__ g_tmap tw8_1, const __grid_constant__ g_tmap tw8_2, float* y0,                 \
             const float* sw0, const float* sw1, const float* sw2, unsigned t, unsigned k, unsigned n0,            \
             unsigned n1, unsigned n2, g_half* k_cache, g_half* v_cache, const float* angles,                      \
             const unsigned* pos0, unsigned head_mask,                                                               \
             unsigned sk_tiles, unsigned sk_parts, float* sk_part, unsigned* sk_flag) {                              \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        const g_kv_out kv = {k_cache, v_cache, angles, pos0, head_mask};                                             \
        gemm_f16_wgmma_tile<TM, TN, STAGES, true, false, true, false, SK>(sk, wg_raw, &ta, &ta_lo, &tw0, &tw1,       \
            &tw2, y0, nullptr, nullptr, t, k, n0, n1, n2, 1, &tw8_0, &tw8_1, &tw8_2, sw0, sw1, sw2, nullptr, &kv);   \
    }
#define GEMM_WGMMA_LO8_KV(NAME, TM, TN, STAGES)                                                                      \
    GEMM_WGMMA_LO8_KV_FORM(NAME, TM, TN, STAGES, false)                                                              \
    GEMM_WGMMA_LO8_KV_FORM(NAME##_sk, TM, TN, STAGES, true)
GEMM_WGMMA_LO8_KV(gemm_f16_wgmma_128_lo8_kv, 128, 128, WG_STAGES)
GEMM_WGMMA_LO8_KV(gemm_f16_wgmma_64_lo8_kv, 64, 64, WG_STAGES)
GEMM_WGMMA_LO8_KV(gemm_f16_wgmma_128x192_lo8_kv, 128, 192, 5)

// The SwiGLU forms with an FP8 low half (SWIGLU and LO8 above; session 30, when the default
// split gate/up's input too): gate's and up's FP8 copies tw8_gate, tw8_up (boxes of TN / 2
// rows after each other, as the f16 ones) under their own scales. Without it, gate/up with
// FP8 lo ran as one grouped LO8 launch writing gate and up as f32, then silu_mul_split read
// them back (8 bytes an output each way; session 31, H200: SmolLM2's prefill 2.08 -> 1.72
// ms). On every SwiGLU tile, in the f16 forms' stages: the one accumulator set of the
// FP8-first form is what lets the wide tiles have one (7B's gate/up takes 128 x 224:
// session 32), at 146 (224) and 167 (256) registers, as their f16 forms.
#define GEMM_WGMMA_SWIGLU_LO8_FORM(NAME, TM, TN, STAGES, SK)                                                         \
    GRETA_KERNEL void __launch_bounds__(TM / 64 * 128 + 32, 1)                                                       \
        NAME(const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo,                               \
             const __grid_constant__ g_tmap tw_gate, const __grid_constant__ g_tmap tw_up,                          \
             const __grid_constant__ g_tmap tw8_gate, const __grid_constant__ g_tmap tw8_up, const float* sw_gate,  \
             const float* sw_up, float* gate, float* up, float* act, g_half* hi, g_half* lo, unsigned char* lo8,   \
             unsigned t, unsigned k, unsigned n,                                                                     \
             unsigned sk_tiles, unsigned sk_parts, float* sk_part, unsigned* sk_flag) {                              \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        const g_swiglu_out out = {gate, up, act, hi, lo, lo8};                                                       \
        gemm_f16_wgmma_tile<TM, TN, STAGES, true, true, false, false, SK>(sk, wg_raw, &ta, &ta_lo, &tw_gate,         \
            &tw_up, &tw_up, nullptr, nullptr, nullptr, t, k, n, n, 0, 1, &tw8_gate, &tw8_up, &tw8_up, sw_gate,       \
            sw_up, sw_up, &out);                                                                                     \
    }
#define GEMM_WGMMA_SWIGLU_LO8(NAME, TM, TN, STAGES)                                                                  \
    GEMM_WGMMA_SWIGLU_LO8_FORM(NAME, TM, TN, STAGES, false)                                                          \
    GEMM_WGMMA_SWIGLU_LO8_FORM(NAME##_sk, TM, TN, STAGES, true)
GEMM_WGMMA_SWIGLU_LO8(gemm_f16_wgmma_swiglu_128_lo8, 128, 128, WG_STAGES)
GEMM_WGMMA_SWIGLU_LO8(gemm_f16_wgmma_swiglu_64_lo8, 64, 64, WG_STAGES)
GEMM_WGMMA_SWIGLU_LO8(gemm_f16_wgmma_swiglu_128x256_lo8, 128, 256, 4)
GEMM_WGMMA_SWIGLU_LO8(gemm_f16_wgmma_swiglu_128x224_lo8, 128, 224, 4)

// The SwiGLU forms with 2:4-sparse low products (SP and LO8SP above), on every SwiGLU tile.
#define GEMM_WGMMA_SWIGLU_LO8SP_FORM(NAME, TM, TN, STAGES, SK)                                                       \
    GRETA_KERNEL void __launch_bounds__(TM / 64 * 128 + 32, 1)                                                       \
        NAME(const __grid_constant__ g_tmap ta, const __grid_constant__ g_tmap ta_lo,                               \
             const __grid_constant__ g_tmap tw_gate, const __grid_constant__ g_tmap tw_up,                          \
             const __grid_constant__ g_tmap tw8_gate, const __grid_constant__ g_tmap tw8_up, const float* sw_gate,  \
             const float* sw_up, float* gate, float* up, float* act, g_half* hi, g_half* lo, unsigned char* lo8,   \
             unsigned t, unsigned k, unsigned n, const unsigned* meta,                                               \
             unsigned sk_tiles, unsigned sk_parts, float* sk_part,                                                   \
             unsigned* sk_flag) {                                                                                    \
        extern __shared__ unsigned char wg_raw[];                                                                    \
        const g_sk sk = {sk_tiles, sk_parts, sk_part, sk_flag};                                                      \
        const g_swiglu_out out = {gate, up, act, hi, lo, lo8};                                                       \
        gemm_f16_wgmma_tile<TM, TN, STAGES, true, true, false, true, SK>(sk, wg_raw, &ta, &ta_lo, &tw_gate, &tw_up,  \
            &tw_up, nullptr, nullptr, nullptr, t, k, n, n, 0, 1, &tw8_gate, &tw8_up, &tw8_up, sw_gate, sw_up,        \
            sw_up, &out, nullptr, meta);                                                                             \
    }
#define GEMM_WGMMA_SWIGLU_LO8SP(NAME, TM, TN, STAGES)                                                                \
    GEMM_WGMMA_SWIGLU_LO8SP_FORM(NAME, TM, TN, STAGES, false)                                                        \
    GEMM_WGMMA_SWIGLU_LO8SP_FORM(NAME##_sk, TM, TN, STAGES, true)
GEMM_WGMMA_SWIGLU_LO8SP(gemm_f16_wgmma_swiglu_128_lo8sp, 128, 128, WG_STAGES)
GEMM_WGMMA_SWIGLU_LO8SP(gemm_f16_wgmma_swiglu_64_lo8sp, 64, 64, WG_STAGES)
GEMM_WGMMA_SWIGLU_LO8SP(gemm_f16_wgmma_swiglu_128x256_lo8sp, 128, 256, 4)
GEMM_WGMMA_SWIGLU_LO8SP(gemm_f16_wgmma_swiglu_128x224_lo8sp, 128, 224, 4)
#endif
