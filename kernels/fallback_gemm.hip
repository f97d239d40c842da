// Plain tiled GEMM (no matrix units): y[t, n] = x[t, k] · w[n, k]^T with f16 weights and f32
// activations and accumulation. The baseline for the MFMA / tensor-core GEMM of the speed
// work, and the prefill route until then.
#include "greta_device.h"

#define TILE 16

// Grid: (ceil(n / 16), ceil(t / 16)); block: 256 (16 x 16).
GRETA_KERNEL void gemm_f16w_fallback(const float* x, const g_half* w, float* y, unsigned t, unsigned k, unsigned n) {
    g_overlap_entry();
    GRETA_SHARED float xs[TILE][TILE + 1];
    GRETA_SHARED float ws[TILE][TILE + 1];
    unsigned tx = g_tid() % TILE, ty = g_tid() / TILE;
    unsigned col = g_bid() * TILE + tx;   // output feature
    unsigned row = g_bid_y() * TILE + ty; // token row
    float acc = 0.0f;
    for (unsigned k0 = 0; k0 < k; k0 += TILE) {
        unsigned kx = k0 + tx;
        xs[ty][tx] = (row < t && kx < k) ? x[(unsigned long)row * k + kx] : 0.0f;
        unsigned wrow = g_bid() * TILE + ty;
        ws[ty][tx] = (wrow < n && kx < k) ? g_h2f(w[(unsigned long)wrow * k + kx]) : 0.0f;
        g_sync();
        for (unsigned i = 0; i < TILE; ++i) acc += xs[ty][i] * ws[tx][i];
        g_sync();
    }
    if (row < t && col < n) y[(unsigned long)row * n + col] = acc;
}
