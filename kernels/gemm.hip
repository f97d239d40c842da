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
// This is the correct, portable baseline; the speed issue adds double-buffered async
// copies and larger tiles (see docs/amd.md for the CDNA3 mapping).
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
