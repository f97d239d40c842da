// GEMM on the matrix units for prefill: y[t, n] = x[t, k] · w[n, k]^T, f16 weights, f32
// activations, f32 accumulation and output. The matrix units take f16 operands, so each
// activation is split into x = hi + lo (two f16, 22 bits of mantissa between them) and both
// halves are multiplied: rounding x to one f16 (what llama.cpp's CUDA path does for cuBLAS)
// loses 2^-12 of a large activation, and where a few massive activations cancel in a dot
// product that loss is the whole result (measured on the default model: 2.7e-2 rms error at
// ffn_act of layer 9). Two products per step keep the engine's numerics: weights f16, the
// rest f32.
//
// A block computes a 64 x 64 tile of y with 4 waves, each a 32 x 32 quadrant made of 2 x 2
// 16x16x16 matrix-unit products (MFMA on gfx9, HMMA on sm_90), stepping K by 32. Edges in
// t, k and n are zero-filled on load and masked on store, so no shape needs padding.
// gemm_f16w_mma takes any shape; gemm_f16w_mma_{32,64,128} below are the fast path for
// k % 8 == 0 (every Llama shape): 16-byte loads, a software pipeline, and fragments reused
// across a wave's products (see docs/amd.md for the CDNA3 mapping).
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
            g_half hi = g_f2h(v);
            xs[r * LDT + c] = hi;
            xl[r * LDT + c] = g_f2h(v - g_h2f(hi));
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

// The fast path: a TILE x TILE block of y, 32 of K per step, with
// - 16-byte global loads (8 activations, 8 weights per thread and chunk) into registers for
//   step s + 1 issued before the products of step s, so their latency hides behind the
//   matrix units (one LDS buffer, register staging: 30 KiB of tiles + 10 KiB of store
//   patches for TILE 128, inside the 48 KiB a block may take without opting in on NVIDIA
//   and the 64 KiB of a CDNA3 CU);
// - WAVES waves in a 2 x WAVES/2 grid, each holding (TILE/2) x (2 TILE/WAVES) of y as
//   16 x 16 accumulators; per 16 of K it loads its A (hi and lo) and B fragments once and
//   issues every product from them;
// - interior 16 x 16 tiles stored straight from the accumulators; edge tiles through a
//   per-wave LDS patch with masked writes.
// Requires k % 8 == 0 (16-byte-aligned rows); t and n are free.
#define FBK 32
#define FLD (FBK + 8)
#define PATCH_LD 20

template <unsigned TILE, unsigned WAVES>
GRETA_DEVICE void gemm_tiled(const float* GRETA_RESTRICT x, const g_half* GRETA_RESTRICT w, float* GRETA_RESTRICT y,
                             unsigned t, unsigned k, unsigned n, g_half* xs, g_half* xl, g_half* ws, float* patch) {
    constexpr unsigned WAVES_N = WAVES / 2;
    constexpr unsigned WTM = TILE / 2, WTN = TILE / WAVES_N;
    constexpr unsigned FM = WTM / 16, FN = WTN / 16;
    constexpr unsigned THREADS = WAVES * GRETA_WAVE;
    constexpr unsigned CHUNKS = TILE * FBK / 8;
    constexpr unsigned PER = (CHUNKS + THREADS - 1) / THREADS;
    const unsigned tid = g_tid(), wave = tid / GRETA_WAVE;
    const unsigned wm = (wave / WAVES_N) * WTM, wn = (wave % WAVES_N) * WTN;
    const unsigned row0 = g_bid_y() * TILE, col0 = g_bid() * TILE;

    float xr[PER][8];
    g_h8 wr[PER];
    auto fetch = [&](unsigned k0) {
        for (unsigned p = 0; p < PER; ++p) {
            unsigned c = tid + p * THREADS;
            unsigned r = c / (FBK / 8), gk = k0 + (c % (FBK / 8)) * 8;
            unsigned gr = row0 + r, gn = col0 + r;
            bool in_k = c < CHUNKS && gk < k;
            if (in_k && gr < t) {
                g_load_f8(x + (unsigned long)gr * k + gk, xr[p]);
            } else {
                for (unsigned e = 0; e < 8; ++e) xr[p][e] = 0.0f;
            }
            if (in_k && gn < n) {
                wr[p] = *(const g_h8*)(w + (unsigned long)gn * k + gk);
            } else {
                for (unsigned e = 0; e < 8; ++e) wr[p].v[e] = g_f2h(0.0f);
            }
        }
    };
    auto stash = [&]() {
        for (unsigned p = 0; p < PER; ++p) {
            unsigned c = tid + p * THREADS;
            if (c >= CHUNKS) continue;
            unsigned at = (c / (FBK / 8)) * FLD + (c % (FBK / 8)) * 8;
            g_h8 hi, lo;
            for (unsigned e = 0; e < 8; ++e) {
                hi.v[e] = g_f2h(xr[p][e]);
                lo.v[e] = g_f2h(xr[p][e] - g_h2f(hi.v[e]));
            }
            *(g_h8*)&xs[at] = hi;
            *(g_h8*)&xl[at] = lo;
            *(g_h8*)&ws[at] = wr[p];
        }
    };

    g_acc16 acc[FM][FN];
    for (unsigned i = 0; i < FM; ++i)
        for (unsigned j = 0; j < FN; ++j) g_acc16_zero(acc[i][j]);
    fetch(0);
    for (unsigned k0 = 0; k0 < k; k0 += FBK) {
        stash();
        g_sync();
        if (k0 + FBK < k) fetch(k0 + FBK);
        for (unsigned kk = 0; kk < FBK; kk += 16) {
            g_frag_bt b[FN];
            for (unsigned j = 0; j < FN; ++j) g_load_bt(b[j], &ws[(wn + 16 * j) * FLD + kk], FLD);
            for (unsigned i = 0; i < FM; ++i) {
                g_frag_a hi, lo;
                g_load_a(hi, &xs[(wm + 16 * i) * FLD + kk], FLD);
                g_load_a(lo, &xl[(wm + 16 * i) * FLD + kk], FLD);
                for (unsigned j = 0; j < FN; ++j) {
                    g_mma16(acc[i][j], hi, b[j]);
                    g_mma16(acc[i][j], lo, b[j]);
                }
            }
        }
        g_sync();
    }

    float* mine = patch + wave * 16 * PATCH_LD;
    const unsigned lane = g_lane();
    for (unsigned i = 0; i < FM; ++i)
        for (unsigned j = 0; j < FN; ++j) {
            unsigned gr = row0 + wm + 16 * i, gc = col0 + wn + 16 * j;
            if (gr >= t || gc >= n) continue;
            if (gr + 16 <= t && gc + 16 <= n && n % 8 == 0) {
                g_acc16_store(acc[i][j], y + (unsigned long)gr * n + gc, n);
                continue;
            }
            g_acc16_store(acc[i][j], mine, PATCH_LD);
            g_wave_sync();
            for (unsigned e = lane; e < 256; e += GRETA_WAVE) {
                unsigned r = e / 16, c = e % 16;
                if (gr + r < t && gc + c < n) y[(unsigned long)(gr + r) * n + gc + c] = mine[r * PATCH_LD + c];
            }
            g_wave_sync();
        }
}

// Grid: (ceil(n / TILE), ceil(t / TILE)); block: WAVES waves (the launcher's table).
#define GEMM_TILED(TILE, WAVES)                                                                              \
    GRETA_KERNEL void gemm_f16w_mma_##TILE(const float* x, const g_half* w, float* y, unsigned t, unsigned k,     \
                                           unsigned n) {                                                     \
        GRETA_SHARED GRETA_ALIGN32 g_half xs[TILE * FLD];                                                     \
        GRETA_SHARED GRETA_ALIGN32 g_half xl[TILE * FLD];                                                     \
        GRETA_SHARED GRETA_ALIGN32 g_half ws[TILE * FLD];                                                     \
        GRETA_SHARED GRETA_ALIGN32 float patch[WAVES * 16 * PATCH_LD];                                        \
        gemm_tiled<TILE, WAVES>(x, w, y, t, k, n, xs, xl, ws, patch);                                         \
    }
GEMM_TILED(128, 8)
GEMM_TILED(64, 4)
GEMM_TILED(32, 4)
