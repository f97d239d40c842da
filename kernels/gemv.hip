// Decode products (one token, batch 1): y = W x for f16 weights [n, k] and f32 x. Decode
// reads every weight once per token, so these kernels are about keeping enough 16-byte loads
// in flight to run at the memory bandwidth, and about launching few kernels: the Q, K and V
// projections are one launch (gemv3_f16), and the gate and up projections one launch that
// also applies SwiGLU (gemv_gate_up_silu_f16).
#include "greta_device.h"

#define UNROLL 4

// Dot products of x[0..k) with two weight rows a and b (b may equal a), summed over the
// wave; every lane gets both. A lane takes 8 weights per row per step with 16-byte loads
// (and the 8 matching activations with two), UNROLL steps at a time: 2 UNROLL weight loads
// in flight per lane (8 KiB per wave of 32 at UNROLL 4), which is what keeps HBM busy. Rows whose length is not a multiple of 8 (not 16-byte aligned) take the
// scalar loop.
GRETA_DEVICE void g_dot2(const g_half* GRETA_RESTRICT a, const g_half* GRETA_RESTRICT b,
                         const float* GRETA_RESTRICT x, unsigned k, float* out_a, float* out_b) {
    unsigned lane = g_lane();
    float sa = 0.0f, sb = 0.0f;
    if (k % 8 == 0) {
        const unsigned step = 8 * GRETA_WAVE;
        unsigned i = 8 * lane;
        // All loads of UNROLL steps are issued before the first product uses them.
        for (; i + (UNROLL - 1) * step < k; i += UNROLL * step) {
            g_h8 ra[UNROLL], rb[UNROLL];
            float xv[UNROLL][8];
            for (unsigned u = 0; u < UNROLL; ++u) {
                ra[u] = *(const g_h8*)(a + i + u * step);
                rb[u] = *(const g_h8*)(b + i + u * step);
            }
            for (unsigned u = 0; u < UNROLL; ++u) g_load_f8(x + i + u * step, xv[u]);
            for (unsigned u = 0; u < UNROLL; ++u)
                for (unsigned e = 0; e < 8; ++e) {
                    sa += g_h2f(ra[u].v[e]) * xv[u][e];
                    sb += g_h2f(rb[u].v[e]) * xv[u][e];
                }
        }
        for (; i < k; i += step) {
            g_h8 ra = *(const g_h8*)(a + i), rb = *(const g_h8*)(b + i);
            float xv[8];
            g_load_f8(x + i, xv);
            for (unsigned e = 0; e < 8; ++e) {
                sa += g_h2f(ra.v[e]) * xv[e];
                sb += g_h2f(rb.v[e]) * xv[e];
            }
        }
    } else {
        for (unsigned i = lane; i < k; i += GRETA_WAVE) {
            sa += g_h2f(a[i]) * x[i];
            sb += g_h2f(b[i]) * x[i];
        }
    }
    *out_a = g_wave_sum(sa);
    *out_b = g_wave_sum(sb);
}

// Rows [0, n0) of the stacked matrix are w0's (written to y0), the next n1 w1's, the next n2
// w2's: Q, K and V of one token in one launch (n1 = n2 = 0: a plain product). A wave takes
// two consecutive rows. Grid: ceil((n0 + n1 + n2) / (2 * waves per block)); block: a
// multiple of the wave size.
GRETA_DEVICE void g_stacked_row(unsigned r, const g_half* w0, float* y0, unsigned n0, const g_half* w1, float* y1,
                                unsigned n1, const g_half* w2, float* y2, unsigned k, const g_half** wr, float** yr) {
    if (r < n0) {
        *wr = w0 + (unsigned long)r * k;
        *yr = y0 + r;
    } else if (r < n0 + n1) {
        *wr = w1 + (unsigned long)(r - n0) * k;
        *yr = y1 + (r - n0);
    } else {
        *wr = w2 + (unsigned long)(r - n0 - n1) * k;
        *yr = y2 + (r - n0 - n1);
    }
}
GRETA_KERNEL void gemv3_f16(const g_half* w0, float* y0, unsigned n0, const g_half* w1, float* y1, unsigned n1,
                            const g_half* w2, float* y2, unsigned n2, const float* x, unsigned k) {
    unsigned waves = g_bdim() / GRETA_WAVE;
    unsigned n = n0 + n1 + n2;
    unsigned r0 = 2 * (g_bid() * waves + g_tid() / GRETA_WAVE);
    if (r0 >= n) return;
    unsigned r1 = r0 + 1 < n ? r0 + 1 : r0;
    const g_half *wa, *wb;
    float *ya, *yb;
    g_stacked_row(r0, w0, y0, n0, w1, y1, n1, w2, y2, k, &wa, &ya);
    g_stacked_row(r1, w0, y0, n0, w1, y1, n1, w2, y2, k, &wb, &yb);
    float da, db;
    g_dot2(wa, wb, x, k, &da, &db);
    if (g_lane() == 0) {
        *ya = da;
        if (r1 != r0) *yb = db;
    }
}

// gate = Wg x, up = Wu x, act = silu(gate) * up (the expression of silu_mul_f32, so the
// result is bitwise the unfused one's). gate and up are written for the trace. A wave takes
// row i of both matrices. Grid: ceil(n / waves per block); block: a multiple of the wave size.
GRETA_KERNEL void gemv_gate_up_silu_f16(const g_half* wg, const g_half* wu, const float* x, float* gate, float* up,
                                        float* act, unsigned n, unsigned k) {
    unsigned waves = g_bdim() / GRETA_WAVE;
    unsigned row = g_bid() * waves + g_tid() / GRETA_WAVE;
    if (row >= n) return;
    float g, u;
    g_dot2(wg + (unsigned long)row * k, wu + (unsigned long)row * k, x, k, &g, &u);
    if (g_lane() == 0) {
        gate[row] = g;
        up[row] = u;
        act[row] = g / (1.0f + g_exp(-g)) * u;
    }
}
