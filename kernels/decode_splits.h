// The decode attention's split over the KV length, as both of its ends see it: the attention
// (kernels/attention.hip) writes one partial (m, l, unnormalised o) per (head, split), and
// where it is launched without ctx the output product (kernels/gemv.hip) combines them as
// it loads its input. One definition of the split size and of the combine, so that the
// product's ctx is bitwise the one the attention writes when it combines them itself.
#pragma once
#include "greta_device.h"

// Keys per split (DECODE_KEYS in gpu/attention.rs): one per thread of a decode block.
#define DECODE_KEYS 128
// The running max's start: the most negative finite float, so an empty wave's weight
// exp(NEG_INF - M) is 0 rather than NaN.
#define NEG_INF (-3.402823466e38f)
// The most splits of a head combined in one cluster (DECODE_CLUSTER_MAX in
// gpu/attention.rs), and the most a product combines (`ctx_from_splits` there).
#define DECODE_CLUSTER_MAX 8

// The values of the context row a thread of the combining product takes (g_ctx_from_splits:
// four consecutive ones, a 16-byte load a split), and so the longest row it combines:
// CTX_PER_THREAD x the product's 256 threads (CTX_PRODUCT_MAX_K in gpu/attention.rs).
#define CTX_PER_THREAD 4
// The most heads of a combined row (its shortest head_dim is 16).
#define CTX_HEADS_MAX (CTX_PER_THREAD * 256 / 16)

// x[i] = ctx[i] for i < k = heads x hd, from the partials of the splits holding keys
// (`active` of them, at most DECODE_CLUSTER_MAX), as the partials attention (LEAVE) lays
// them out: split s's o of value i = (h, d) at part_o[s * k + i]; its m and l at
// part_ml[(s * heads + h) * 8] and [... + 1] (a 32-byte sector of their own). ctx[h, d] =
// sum_s exp(m_s - M) o_s[d] / sum_s exp(m_s - M) l_s, M = max_s m_s, each sum in split order
// from 0.0f, as attn_decode_finish combines them (one split: o / l, the weight exp(0) being
// exactly 1). One round trip: thread t < k / 4 issues the 16-byte loads of values 4t..4t+3
// of every split at once, thread h < heads those of head h's m and l, whose weights and
// l-sum it leaves in LDS for the others. Every thread of the block calls; the barrier at
// the end publishes x (LDS) to the block. k <= 4 x block size, k % 4 == 0.
// What this prologue costs is its instructions as much as its round trip: every wave of the
// block issues them before its first dot product. Session 61's form (a load per value and
// split with 64-bit address arithmetic, a division by hd per value: ~730 instructions after
// the wait) cost SmolLM2's decode 6 % against the attention's own combine on an H100;
// with 32-bit offsets, the head by a multiply and each value's splits side by side (two
// 16-byte loads) it drew level (+0.2 %). And where its data lies: written this way, with
// whole 32-byte sectors (a block's o row, a sector of its own for m and l) rather than a
// split's 4 bytes of each value's 32, the product ran +0.8 % faster again (+1.0 % over
// the attention's combine; session 62, one H100, three interleaved rounds). A sector
// written in part is likely filled from DRAM before L2 serves a read of it; that is the
// reading, not a measurement of the fill.
GRETA_DEVICE void g_ctx_from_splits(const float* part_ml, const float* part_o, unsigned active, unsigned hd,
                                    unsigned k, float* x) {
    // Head h's weights exp(m_s - M) at [h][s], its l-sum at [h][DECODE_CLUSTER_MAX].
    GRETA_SHARED float wsh[CTX_HEADS_MAX][DECODE_CLUSTER_MAX + 1];
    const unsigned t = g_tid();
    // A head is i / hd, taken as floor((i + 0.5) / hd) in f32: exact here (i < 1024, hd >=
    // 16: the quotient lies at least 0.5 / hd from an integer, the f32 error ~1e-5 below
    // that), a multiply where an integer division by a runtime hd is ~20 instructions.
    const float inv_hd = 1.0f / (float)hd;
    const unsigned heads = (unsigned)(((float)k + 0.5f) * inv_hd);
    const bool mine = 4 * t < k;
    g_f4 po[DECODE_CLUSTER_MAX];
    if (mine)
        for (unsigned s = 0; s < DECODE_CLUSTER_MAX; ++s)
            if (s < active) po[s] = *(const g_f4*)(part_o + s * k + 4 * t);
    if (t < heads) {
        float pm[DECODE_CLUSTER_MAX], pl[DECODE_CLUSTER_MAX];
        for (unsigned s = 0; s < DECODE_CLUSTER_MAX; ++s)
            if (s < active) {
                const float* ml = part_ml + (s * heads + t) * 8;
                pm[s] = ml[0];
                pl[s] = ml[1];
            }
        float cm = NEG_INF;
        for (unsigned s = 0; s < DECODE_CLUSTER_MAX; ++s)
            if (s < active) cm = pm[s] > cm ? pm[s] : cm;
        float cl = 0.0f;
        for (unsigned s = 0; s < DECODE_CLUSTER_MAX; ++s)
            if (s < active) {
                const float e = g_exp(pm[s] - cm);
                cl += e * pl[s];
                wsh[t][s] = e;
            }
        wsh[t][DECODE_CLUSTER_MAX] = cl;
    }
    g_sync();
    if (mine) {
        const float* wh = wsh[(unsigned)(((float)(4 * t) + 0.5f) * inv_hd)];
        g_f4 out;
        for (unsigned e = 0; e < 4; ++e) {
            float od = 0.0f;
            for (unsigned s = 0; s < DECODE_CLUSTER_MAX; ++s)
                if (s < active) od += wh[s] * po[s].v[e];
            out.v[e] = od / wh[DECODE_CLUSTER_MAX];
        }
        *(g_f4*)(x + 4 * t) = out;
    }
    g_sync();
}
