// Decode products (one token, batch 1): y = W x for f16 weights [n, k] and f32 x. Decode
// reads every weight once per token, so these kernels are about keeping enough 16-byte loads
// in flight to run at the memory bandwidth, and about launching few kernels: the Q, K and V
// projections are one launch (gemv3_f16), and the gate and up projections one launch that
// also applies SwiGLU (gemv_gate_up_silu_f16).
#include "decode_splits.h"

#define UNROLL 4

// Dot products of x[0..k) with R weight rows, summed over the wave; every lane gets them. A
// lane takes 8 weights per row per step with 16-byte loads (and the 8 matching activations
// with two), UNROLL steps per group: R * UNROLL weight loads in flight per lane (at R = 1,
// 2 KiB per wave of 32, 4 KiB per wave of 64), which is what keeps HBM busy. A row's first
// and last groups are predicated (steps past k load zeros) rather than a loop of single
// steps, so a short row (SmolLM2's k = 576: 2.25 steps) is one round trip to memory, not
// three; the sums are bitwise those of the step-by-step order (the extra terms are 0 * 0).
// Rows whose length is not a multiple of 8 (not 16-byte aligned) take the scalar loop.
// A row's first group of weights is loaded before g_wait_previous (weights are read-only):
// in an overlapped launch those loads run under the previous kernel's tail, and x, which
// that kernel writes, is read only after the wait.
template <unsigned R>
GRETA_DEVICE void g_dot_weights(const g_half* const* w, unsigned i, unsigned k, g_h8 (*wv)[UNROLL]) {
    const unsigned step = 8 * GRETA_WAVE;
    for (unsigned u = 0; u < UNROLL; ++u)
        for (unsigned r = 0; r < R; ++r)
            if (i + u * step < k)
                wv[r][u] = g_load_once_h8(w[r] + i + u * step);
            else
                for (unsigned e = 0; e < 8; ++e) wv[r][u].v[e] = g_f2h(0.0f);
}
// acc[r] += the products of one group of weights and activations, in step order.
template <unsigned R>
GRETA_DEVICE void g_dot_fma(float* acc, const g_h8 (*wv)[UNROLL], const float (*xv)[8]) {
    for (unsigned u = 0; u < UNROLL; ++u)
        for (unsigned r = 0; r < R; ++r)
            for (unsigned e = 0; e < 8; ++e) acc[r] += g_h2f(wv[r][u].v[e]) * xv[u][e];
}
// The products of one group whose weights are in wv: activations past k read as zeros.
template <unsigned R>
GRETA_DEVICE void g_dot_group(float* acc, const g_h8 (*wv)[UNROLL], const float* x, unsigned i,
                              unsigned k) {
    const unsigned step = 8 * GRETA_WAVE;
    float xv[UNROLL][8];
    for (unsigned u = 0; u < UNROLL; ++u)
        if (i + u * step < k)
            g_load_f8(x + i + u * step, xv[u]);
        else
            for (unsigned e = 0; e < 8; ++e) xv[u][e] = 0.0f;
    g_dot_fma<R>(acc, wv, xv);
}
// The first group of a row's weights, loaded before the wait (weights are read-only).
template <unsigned R>
GRETA_DEVICE void g_dot_prefetch(const g_half* const* w, unsigned k, g_h8 (*wv)[UNROLL]) {
    if (k % 8 == 0) g_dot_weights<R>(w, 8 * g_lane(), k, wv);
}
// The first two groups of a row's weights (wv, wv2), loaded before the wait: twice the
// bytes in flight under the kernel ahead's tail (gemv_add_f16_pre2).
template <unsigned R>
GRETA_DEVICE void g_dot_prefetch2(const g_half* const* w, unsigned k, g_h8 (*wv)[UNROLL], g_h8 (*wv2)[UNROLL]) {
    const unsigned group = UNROLL * 8 * GRETA_WAVE;
    if (k % 8 == 0) {
        g_dot_weights<R>(w, 8 * g_lane(), k, wv);
        g_dot_weights<R>(w, 8 * g_lane() + group, k, wv2);
    }
}
// The rest of the dot products after the wait: the prefetched group(s) (PRE: 1, or 2 with
// the second in wv2), the full groups, the last partial one; the same sums in the same
// order whatever PRE (a prefetched full group is predicated all true). x may be in global
// memory or in LDS. x is not a restrict pointer: const restrict makes its loads
// ld.global.nc, which ptxas may move above griddepcontrol.wait (session 14: a kernel read
// the previous one's output before it was written; xtask now checks the SASS).
template <unsigned R, unsigned PRE = 1>
GRETA_DEVICE void g_dot_rest(const g_half* const* w, const float* x, unsigned k, g_h8 (*wv)[UNROLL],
                             float* out, const g_h8 (*wv2)[UNROLL] = nullptr) {
    unsigned lane = g_lane();
    float acc[R];
    for (unsigned r = 0; r < R; ++r) acc[r] = 0.0f;
    if (k % 8 == 0) {
        const unsigned step = 8 * GRETA_WAVE, group = UNROLL * step;
        unsigned i = 8 * lane;
        g_dot_group<R>(acc, wv, x, i, k);
        if constexpr (PRE == 2)
            if (k > group) {
                i += group;
                g_dot_group<R>(acc, wv2, x, i, k);
            }
        // Full groups: a plain loop, all loads of a group issued before its products (a
        // predicated loop here measured slower on Llama-2-7B's rows).
        for (i += group; i + (UNROLL - 1) * step < k; i += group) {
            float xv[UNROLL][8];
            for (unsigned u = 0; u < UNROLL; ++u)
                for (unsigned r = 0; r < R; ++r) wv[r][u] = g_load_once_h8(w[r] + i + u * step);
            for (unsigned u = 0; u < UNROLL; ++u) g_load_f8(x + i + u * step, xv[u]);
            g_dot_fma<R>(acc, wv, xv);
        }
        // The last, partial group (predicated).
        if (i < k) {
            g_dot_weights<R>(w, i, k, wv);
            g_dot_group<R>(acc, wv, x, i, k);
        }
    } else {
        for (unsigned i = lane; i < k; i += GRETA_WAVE)
            for (unsigned r = 0; r < R; ++r) acc[r] += g_h2f(w[r][i]) * x[i];
    }
    for (unsigned r = 0; r < R; ++r) out[r] = g_wave_sum(acc[r]);
}

// The norm in the product's prologue (decode): the block reads the residual stream x (k
// floats) and the norm weights nw, keeps x * nw in LDS (xs) and returns the rms scale
// 1 / sqrt(mean(x^2) + eps), which the caller applies to its dot products: (x * nw * scale)
// · w as scale * ((x * nw) · w), so the norm needs no launch of its own and no second pass.
// Block 0 also writes the normalised row, x * nw * scale, to `normed` (the trace's norm
// stage). Every thread's loads are 16-byte vectors issued together (one round trip for
// k <= 4 * NORM_VECS * block: SmolLM2; two for Llama-2-7B: four vectors per thread measured
// 72 registers for Q/K/V against 56 with two); k % 4 == 0 (checked by the launcher). Needs
// every thread of the block.
#define NORM_VECS 2
GRETA_DEVICE float g_norm_prologue(const float* x, const float* nw, float* normed, float* xs, unsigned k, float eps) {
    GRETA_SHARED float scratch[32];
    float ss = 0.0f;
    const unsigned k4 = k / 4, stride = g_bdim() * NORM_VECS;
    for (unsigned i0 = g_tid(); i0 < k4; i0 += stride) {
        g_f4 xv[NORM_VECS], wv[NORM_VECS];
        for (unsigned u = 0; u < NORM_VECS; ++u)
            if (i0 + u * g_bdim() < k4) {
                xv[u] = *(const g_f4*)(x + 4 * (i0 + u * g_bdim()));
                wv[u] = *(const g_f4*)(nw + 4 * (i0 + u * g_bdim()));
            }
        for (unsigned u = 0; u < NORM_VECS; ++u)
            if (i0 + u * g_bdim() < k4)
                for (unsigned e = 0; e < 4; ++e) {
                    float v = xv[u].v[e];
                    ss += v * v;
                    xs[4 * (i0 + u * g_bdim()) + e] = v * wv[u].v[e];
                }
    }
    // g_block_sum's barriers also publish xs to the block.
    float scale = 1.0f / g_sqrt(g_block_sum(ss, scratch) / (float)k + eps);
    if (g_bid() == 0)
        for (unsigned i = g_tid(); i < k; i += g_bdim()) normed[i] = xs[i] * scale;
    return scale;
}

// Rows [0, n0) of the stacked matrix are w0's (written to y0), the next n1 w1's, the next n2
// w2's: Q, K and V of one token in one launch (n1 = n2 = 0: a plain product). A wave takes
// R consecutive rows. Block: a multiple of the wave size.
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
// The decode attention's partials, left for the product to combine into its input x (the
// attention launched without ctx: kernels/decode_splits.h): each split's m and l (part_ml)
// and unnormalised o (part_o).
struct g_ctx_splits {
    const float* part_ml;
    const float* part_o;
    const unsigned* pos0;
    unsigned hd;
};
// NORM: x is the residual stream, normalised in the prologue (g_norm_prologue; xs: k
// floats of LDS). SPLITS: x is the attention context, combined from the splits' partials
// into xs (k floats of LDS) after the wait (g_ctx_from_splits). ADD: the product is also
// added into resid (resid[row] += y[row]: the residual add behind the output and down
// projections; one product, n1 = n2 = 0), resid read right after the wait so that its round
// trip hides under the dot products.
// PRE: the groups of each row loaded before the wait, 1 or 2 (g_dot_prefetch2).
template <unsigned R, bool NORM, bool ADD, unsigned PRE = 1, bool SPLITS = false>
GRETA_DEVICE void g_gemv3(const g_half* w0, float* y0, unsigned n0, const g_half* w1, float* y1, unsigned n1,
                          const g_half* w2, float* y2, unsigned n2, const float* x, unsigned k, const float* nw,
                          float* normed, float eps, float* resid, float* xs, const g_ctx_splits& sp = {}) {
    g_launch_next();
    unsigned waves = g_bdim() / GRETA_WAVE;
    unsigned n = n0 + n1 + n2;
    unsigned r0 = R * (g_bid() * waves + g_tid() / GRETA_WAVE);
    const bool active = r0 < n;
    // Without a prologue a wave past the end has nothing to do; with one, every wave
    // takes part in the block's sum or combine first.
    if (!NORM && !SPLITS && !active) return;
    const g_half* w[R];
    float* y[R];
    for (unsigned r = 0; r < R; ++r) {
        // A row past the end repeats the last one (same addresses: no extra traffic), unstored.
        unsigned row = r0 + r < n ? r0 + r : n - 1;
        g_stacked_row(row, w0, y0, n0, w1, y1, n1, w2, y2, k, &w[r], &y[r]);
    }
    g_h8 wv[R][UNROLL];
    g_h8 wv2[PRE == 2 ? R : 1][UNROLL];
    if (active) {
        if constexpr (PRE == 2)
            g_dot_prefetch2<R>(w, k, wv, wv2);
        else
            g_dot_prefetch<R>(w, k, wv);
    }
    // SPLITS: the splits holding keys, from the position, read before the wait as the
    // attention reads it (kernels/attention.hip: an earlier pass wrote it, and every pass
    // begins with a launch that is never overlapped), so that the partials' loads after the
    // wait are the combine's one round trip.
    unsigned splits_active = 0;
    if constexpr (SPLITS) splits_active = (*sp.pos0 + DECODE_KEYS) / DECODE_KEYS;
    g_wait_previous();
    float scale = 1.0f;
    if (NORM) {
        scale = g_norm_prologue(x, nw, normed, xs, k, eps);
        x = xs;
    }
    if constexpr (SPLITS) {
        g_ctx_from_splits(sp.part_ml, sp.part_o, splits_active, sp.hd, k, xs);
        x = xs;
    }
    if (!active) return;
    float before[R];
    if (ADD && g_lane() == 0)
        for (unsigned r = 0; r < R; ++r) before[r] = r0 + r < n ? resid[r0 + r] : 0.0f;
    float d[R];
    g_dot_rest<R, PRE>(w, x, k, wv, d, wv2);
    if (g_lane() == 0)
        for (unsigned r = 0; r < R; ++r)
            if (r0 + r < n) {
                float v = NORM ? d[r] * scale : d[r];
                *y[r] = v;
                if (ADD) resid[r0 + r] = before[r] + v;
            }
}
// One row per wave (more waves in flight: the better choice below ~16k rows, measured) and
// two rows per wave (the LM head). Grid: ceil(rows / (R * waves per block)).
#define GEMV3_ARGS                                                                                                 \
    const g_half *w0, float *y0, unsigned n0, const g_half *w1, float *y1, unsigned n1, const g_half *w2, float *y2, \
        unsigned n2, const float *x, unsigned k
GRETA_KERNEL void gemv3_f16(GEMV3_ARGS) {
    g_gemv3<1, false, false>(w0, y0, n0, w1, y1, n1, w2, y2, n2, x, k, nullptr, nullptr, 0.0f, nullptr, nullptr);
}
GRETA_KERNEL void gemv3_f16_r2(GEMV3_ARGS) {
    g_gemv3<2, false, false>(w0, y0, n0, w1, y1, n1, w2, y2, n2, x, k, nullptr, nullptr, 0.0f, nullptr, nullptr);
}
// The same with the norm in the prologue (decode's Q/K/V from the residual stream x and the
// attention norm's weights nw; block 0 writes the normalised x to normed). Dynamic LDS: k
// floats.
GRETA_KERNEL void gemv3_norm_f16(GEMV3_ARGS, const float* nw, float* normed, float eps) {
    extern GRETA_SHARED GRETA_ALIGN16 float gemv_xs[];
    g_gemv3<1, true, false>(w0, y0, n0, w1, y1, n1, w2, y2, n2, x, k, nw, normed, eps, nullptr, gemv_xs);
}
GRETA_KERNEL void gemv3_norm_f16_r2(GEMV3_ARGS, const float* nw, float* normed, float eps) {
    extern GRETA_SHARED GRETA_ALIGN16 float gemv_xs[];
    g_gemv3<2, true, false>(w0, y0, n0, w1, y1, n1, w2, y2, n2, x, k, nw, normed, eps, nullptr, gemv_xs);
}
// y = W x and resid += y (decode's output and down projections with the residual add).
GRETA_KERNEL void gemv_add_f16(const g_half* w, float* y, unsigned n, const float* x, unsigned k, float* resid) {
    g_gemv3<1, false, true>(w, y, n, nullptr, nullptr, 0, nullptr, nullptr, 0, x, k, nullptr, nullptr, 0.0f, resid,
                            nullptr);
}
// The same with each row's first two groups loaded before the wait (g_dot_prefetch2), for
// rows of more than two groups (Llama-2-7B's output and down products, k = 4096 and 11008):
// H200, session 14: 7B decode +1.4 %. Not for shorter rows: with SmolLM2's down product
// (k = 1536, two groups) it measured 2 % slower. Two rows per wave, which share each load of
// x: these products read x from global memory (L1), two 16-byte loads of it per 16-byte load
// of weights at one row a wave, and at two rows 7B decode read +2.7 % (H200, session 18;
// staging x in LDS instead measured −2.5 %). gpu/gemv.rs: gemv_add picks it.
GRETA_KERNEL GRETA_BLOCK_MAX(256) void gemv_add_f16_pre2(const g_half* w, float* y, unsigned n, const float* x,
                                                         unsigned k, float* resid) {
    g_gemv3<2, false, true, 2>(w, y, n, nullptr, nullptr, 0, nullptr, nullptr, 0, x, k, nullptr, nullptr, 0.0f, resid,
                               nullptr);
}
GRETA_KERNEL void gemv_add_f16_r2(const g_half* w, float* y, unsigned n, const float* x, unsigned k, float* resid) {
    g_gemv3<2, false, true>(w, y, n, nullptr, nullptr, 0, nullptr, nullptr, 0, x, k, nullptr, nullptr, 0.0f, resid,
                            nullptr);
}
// gemv_add_f16 whose x is the attention context, combined from the decode attention's
// partials (attn_decode_rope_partials_hd*) in the prologue: the combine leaves the
// attention's critical path, where a head's splits waited for each other (a cluster
// barrier, or the last split to finish). Bitwise the products of the ctx the attention
// would have written (g_ctx_from_splits). Dynamic LDS: k floats (or the spread pad); k at
// most CTX_PER_THREAD x 256: every block combines the whole row, four values a thread
// (the 7B's 4096 would be 16 a thread and 80 KiB of partials a block at its 5 splits).
GRETA_KERNEL GRETA_BLOCK_MAX(256) void gemv_add_splits_f16(const g_half* w, float* y, unsigned n, const float* part_ml,
                                                           const float* part_o, const unsigned* pos0, unsigned hd,
                                                           unsigned k, float* resid) {
    extern GRETA_SHARED GRETA_ALIGN16 float gemv_xs[];
    const g_ctx_splits sp = {part_ml, part_o, pos0, hd};
    g_gemv3<1, false, true, 1, true>(w, y, n, nullptr, nullptr, 0, nullptr, nullptr, 0, nullptr, k, nullptr, nullptr,
                                     0.0f, resid, gemv_xs, sp);
}

// gate = Wg x, up = Wu x, act = silu(gate) * up (the expression of silu_mul_f32, so the
// result is bitwise the unfused one's). gate and up are written for the trace. A wave takes
// row i of both matrices. Grid: ceil(n / waves per block); block: a multiple of the wave size.
template <bool NORM>
GRETA_DEVICE void g_gate_up_silu(const g_half* wg, const g_half* wu, const float* x, float* gate, float* up,
                                 float* act, unsigned n, unsigned k, const float* nw, float* normed, float eps,
                                 float* xs) {
    g_launch_next();
    unsigned waves = g_bdim() / GRETA_WAVE;
    unsigned row = g_bid() * waves + g_tid() / GRETA_WAVE;
    const bool active = row < n;
    if (!NORM && !active) return;
    const unsigned r = active ? row : n - 1;
    const g_half* w[2] = {wg + (unsigned long)r * k, wu + (unsigned long)r * k};
    g_h8 wv[2][UNROLL];
    if (active) g_dot_prefetch<2>(w, k, wv);
    g_wait_previous();
    float scale = 1.0f;
    if (NORM) {
        scale = g_norm_prologue(x, nw, normed, xs, k, eps);
        x = xs;
    }
    if (!active) return;
    float d[2];
    g_dot_rest<2>(w, x, k, wv, d);
    float g = NORM ? d[0] * scale : d[0], u = NORM ? d[1] * scale : d[1];
    if (g_lane() == 0) {
        gate[row] = g;
        up[row] = u;
        act[row] = g_silu_mul(g, u);
    }
}
GRETA_KERNEL void gemv_gate_up_silu_f16(const g_half* wg, const g_half* wu, const float* x, float* gate, float* up,
                                        float* act, unsigned n, unsigned k) {
    g_gate_up_silu<false>(wg, wu, x, gate, up, act, n, k, nullptr, nullptr, 0.0f, nullptr);
}
// The same with the FFN norm in the prologue (x: the residual stream; dynamic LDS: k floats).
GRETA_KERNEL void gemv_gate_up_silu_norm_f16(const g_half* wg, const g_half* wu, const float* x, float* gate,
                                             float* up, float* act, unsigned n, unsigned k, const float* nw,
                                             float* normed, float eps) {
    extern GRETA_SHARED GRETA_ALIGN16 float gemv_xs[];
    g_gate_up_silu<true>(wg, wu, x, gate, up, act, n, k, nw, normed, eps, gemv_xs);
}

// ---------------------------------------------------------------------------------------
// Short prefills (a few rows of input, e.g. a chat turn's new tokens): y[t, n] = W[n, k] ·
// x[t, k] for t < rows <= T, f32 x and f32 sums as decode. The prefill GEMM rounds x to f16
// (hi, or hi + lo) for the matrix units and fills few of its tiles at a few rows; here each
// weight is loaded once, as by the decode products, and multiplied with every row's x. Each
// lane's sums run over the same elements in the same order as g_dot_rest's, and the wave
// sums are the same, so row t of the result is bitwise what gemv3_f16 gives for x[t] (the
// op test checks it). x is read from global memory by every wave, T * 32 bytes per 16 bytes
// of weights a lane (R weight rows a wave share those loads): past 4 rows that traffic, from
// L2 once x outgrows L1, sets the pace (H200, session 58: the 7B's 2-4 token prefill 1.4-1.8x
// faster than on the GEMM, 8 tokens 1.4x slower), so the model sends at most 4 rows here by
// default (`--gemv-rows`); tools/gpu/variants/gemv-rows-lds.patch stages x in LDS instead.
template <unsigned R, unsigned T>
GRETA_DEVICE void g_rows_fma(float (*acc)[T], const g_h8 (*wv)[UNROLL], const float* x, unsigned i, unsigned k,
                             unsigned rows, bool tail) {
    const unsigned step = 8 * GRETA_WAVE;
#pragma unroll
    for (unsigned u = 0; u < UNROLL; ++u) {
        const bool in = !tail || i + u * step < k;
        float wf[R][8];
#pragma unroll
        for (unsigned r = 0; r < R; ++r)
#pragma unroll
            for (unsigned e = 0; e < 8; ++e) wf[r][e] = g_h2f(wv[r][u].v[e]);
#pragma unroll
        for (unsigned t = 0; t < T; ++t) {
            if (t < rows) {
                float xv[8];
                if (in) {
                    g_load_f8(x + (unsigned long)t * k + i + u * step, xv);
                } else {
#pragma unroll
                    for (unsigned e = 0; e < 8; ++e) xv[e] = 0.0f;
                }
#pragma unroll
                for (unsigned r = 0; r < R; ++r)
#pragma unroll
                    for (unsigned e = 0; e < 8; ++e) acc[r][t] += wf[r][e] * xv[e];
            }
        }
    }
}
// The dot products of R weight rows w[r] with `rows` rows of x (row stride k), summed over
// the wave into out[r][t] (every lane gets them). The first group of weights is loaded before
// the wait, as in g_gemv3.
template <unsigned R, unsigned T>
GRETA_DEVICE void g_rows_dot(const g_half* const* w, const float* x, unsigned k, unsigned rows, bool active,
                             float (*out)[T]) {
    g_h8 wv[R][UNROLL];
    if (active) g_dot_prefetch<R>(w, k, wv);
    g_wait_previous();
    if (!active) return;
    float acc[R][T];
#pragma unroll
    for (unsigned r = 0; r < R; ++r)
#pragma unroll
        for (unsigned t = 0; t < T; ++t) acc[r][t] = 0.0f;
    if (k % 8 == 0) {
        const unsigned step = 8 * GRETA_WAVE, group = UNROLL * step;
        unsigned i = 8 * g_lane();
        g_rows_fma<R, T>(acc, wv, x, i, k, rows, true);
        for (i += group; i + (UNROLL - 1) * step < k; i += group) {
#pragma unroll
            for (unsigned u = 0; u < UNROLL; ++u)
#pragma unroll
                for (unsigned r = 0; r < R; ++r) wv[r][u] = g_load_once_h8(w[r] + i + u * step);
            g_rows_fma<R, T>(acc, wv, x, i, k, rows, false);
        }
        if (i < k) {
            g_dot_weights<R>(w, i, k, wv);
            g_rows_fma<R, T>(acc, wv, x, i, k, rows, true);
        }
    } else {
        for (unsigned i = g_lane(); i < k; i += GRETA_WAVE)
#pragma unroll
            for (unsigned r = 0; r < R; ++r) {
                const float wf = g_h2f(w[r][i]);
#pragma unroll
                for (unsigned t = 0; t < T; ++t)
                    if (t < rows) acc[r][t] += wf * x[(unsigned long)t * k + i];
            }
    }
#pragma unroll
    for (unsigned r = 0; r < R; ++r)
#pragma unroll
        for (unsigned t = 0; t < T; ++t) out[r][t] = t < rows ? g_wave_sum(acc[r][t]) : 0.0f;
}
// Stacked products as gemv3_f16's (rows [0, n0) of w0, then n1 of w1, n2 of w2: Q, K and V
// in one launch), over `rows` rows of x: y_i[t, j] (row stride n_i). A wave takes R
// consecutive weight rows. Grid: ceil((n0 + n1 + n2) / (R * waves per block)).
template <unsigned R, unsigned T>
GRETA_DEVICE void g_gemv_rows(const g_half* w0, float* y0, unsigned n0, const g_half* w1, float* y1, unsigned n1,
                              const g_half* w2, float* y2, unsigned n2, const float* x, unsigned k, unsigned rows) {
    g_launch_next();
    const unsigned waves = g_bdim() / GRETA_WAVE, n = n0 + n1 + n2;
    const unsigned r0 = R * (g_bid() * waves + g_tid() / GRETA_WAVE);
    const bool active = r0 < n;
    const g_half* w[R];
    float* y[R];
    unsigned stride[R];
#pragma unroll
    for (unsigned r = 0; r < R; ++r) {
        // A row past the end repeats the last one (same addresses: no extra traffic), unstored.
        const unsigned row = r0 + r < n ? r0 + r : n - 1;
        g_stacked_row(row, w0, y0, n0, w1, y1, n1, w2, y2, k, &w[r], &y[r]);
        stride[r] = row < n0 ? n0 : row < n0 + n1 ? n1 : n2;
    }
    float d[R][T];
    g_rows_dot<R, T>(w, x, k, rows, active, d);
    if (!active || g_lane() != 0) return;
#pragma unroll
    for (unsigned r = 0; r < R; ++r)
#pragma unroll
        for (unsigned t = 0; t < T; ++t)
            if (r0 + r < n && t < rows) y[r][(unsigned long)t * stride[r]] = d[r][t];
}
#define GEMV_ROWS_ARGS GEMV3_ARGS, unsigned rows
GRETA_KERNEL GRETA_BLOCK_MAX(256) void gemv_rows4_f16(GEMV_ROWS_ARGS) { g_gemv_rows<2, 4>(w0, y0, n0, w1, y1, n1, w2, y2, n2, x, k, rows); }
GRETA_KERNEL GRETA_BLOCK_MAX(256) void gemv_rows8_f16(GEMV_ROWS_ARGS) { g_gemv_rows<2, 8>(w0, y0, n0, w1, y1, n1, w2, y2, n2, x, k, rows); }
GRETA_KERNEL GRETA_BLOCK_MAX(256) void gemv_rows16_f16(GEMV_ROWS_ARGS) {
    g_gemv_rows<2, 16>(w0, y0, n0, w1, y1, n1, w2, y2, n2, x, k, rows);
}
// gate = Wg x, up = Wu x, act = silu(gate) * up over `rows` rows of x (row stride k; outputs
// [rows, n]): a wave takes row j of both matrices, as gemv_gate_up_silu_f16 for one row, and
// each output is bitwise that kernel's for that row of x. Grid: ceil(n / waves per block).
template <unsigned T>
GRETA_DEVICE void g_gate_up_silu_rows(const g_half* wg, const g_half* wu, const float* x, float* gate, float* up,
                                      float* act, unsigned n, unsigned k, unsigned rows) {
    g_launch_next();
    const unsigned row = g_bid() * (g_bdim() / GRETA_WAVE) + g_tid() / GRETA_WAVE;
    const bool active = row < n;
    const unsigned j = active ? row : n - 1;
    const g_half* w[2] = {wg + (unsigned long)j * k, wu + (unsigned long)j * k};
    float d[2][T];
    g_rows_dot<2, T>(w, x, k, rows, active, d);
    if (!active || g_lane() != 0) return;
#pragma unroll
    for (unsigned t = 0; t < T; ++t)
        if (t < rows) {
            const unsigned long o = (unsigned long)t * n + row;
            gate[o] = d[0][t];
            up[o] = d[1][t];
            act[o] = g_silu_mul(d[0][t], d[1][t]);
        }
}
#define GATE_UP_ROWS_ARGS                                                                                         \
    const g_half *wg, const g_half *wu, const float *x, float *gate, float *up, float *act, unsigned n, unsigned k, \
        unsigned rows
GRETA_KERNEL GRETA_BLOCK_MAX(256) void gemv_gate_up_silu_rows4_f16(GATE_UP_ROWS_ARGS) {
    g_gate_up_silu_rows<4>(wg, wu, x, gate, up, act, n, k, rows);
}
GRETA_KERNEL GRETA_BLOCK_MAX(256) void gemv_gate_up_silu_rows8_f16(GATE_UP_ROWS_ARGS) {
    g_gate_up_silu_rows<8>(wg, wu, x, gate, up, act, n, k, rows);
}
GRETA_KERNEL GRETA_BLOCK_MAX(256) void gemv_gate_up_silu_rows16_f16(GATE_UP_ROWS_ARGS) {
    g_gate_up_silu_rows<16>(wg, wu, x, gate, up, act, n, k, rows);
}
