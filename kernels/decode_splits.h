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

// The most values of the context row a thread of the combining product takes
// (g_ctx_from_splits: all of its loads in registers at once), and so the longest row it
// combines: CTX_PER_THREAD x the product's 256 threads (CTX_PRODUCT_MAX_K in
// gpu/attention.rs).
#define CTX_PER_THREAD 4
// The most heads of a combined row (its shortest head_dim is 16).
#define CTX_HEADS_MAX (CTX_PER_THREAD * 256 / 16)

// x[i] = ctx[i] for i < k = heads x hd, from the partials of the splits holding keys
// (`active` of them, at most DECODE_CLUSTER_MAX; head h's split s at h * n_splits + s):
// ctx[h, d] = sum_s exp(m_s - M) o_s[d] / sum_s exp(m_s - M) l_s, M = max_s m_s, each sum in
// split order from 0.0f, as attn_decode_finish combines them (one split: o / l, the weight
// exp(0) being exactly 1). One round trip: every thread issues the loads of its (at most
// CTX_PER_THREAD) values of every split at once, and thread h < heads those of head h's m
// and l, whose weights and l-sum it leaves in LDS for the others (the first version had
// each thread load and weigh its values one after another: SmolLM2's decode 10 % slower
// than the attention's own combine, session 61). Every thread of the block calls; the
// barrier at the end publishes x (LDS) to the block. k <= CTX_PER_THREAD x block size.
GRETA_DEVICE void g_ctx_from_splits(const float* part_m, const float* part_l, const float* part_o,
                                    unsigned active, unsigned n_splits, unsigned hd, unsigned k, float* x) {
    // Head h's weights exp(m_s - M) at [h][s], its l-sum at [h][DECODE_CLUSTER_MAX].
    GRETA_SHARED float wsh[CTX_HEADS_MAX][DECODE_CLUSTER_MAX + 1];
    const unsigned t = g_tid(), bd = g_bdim(), heads = k / hd;
    float po[CTX_PER_THREAD][DECODE_CLUSTER_MAX];
    for (unsigned r = 0; r < CTX_PER_THREAD; ++r) {
        const unsigned i = t + r * bd;
        if (i < k) {
            const unsigned h = i / hd, d = i - h * hd;
            for (unsigned s = 0; s < DECODE_CLUSTER_MAX; ++s)
                if (s < active) po[r][s] = part_o[((unsigned long)h * n_splits + s) * hd + d];
        }
    }
    if (t < heads) {
        float pm[DECODE_CLUSTER_MAX], pl[DECODE_CLUSTER_MAX];
        for (unsigned s = 0; s < DECODE_CLUSTER_MAX; ++s)
            if (s < active) {
                pm[s] = part_m[(unsigned long)t * n_splits + s];
                pl[s] = part_l[(unsigned long)t * n_splits + s];
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
    for (unsigned r = 0; r < CTX_PER_THREAD; ++r) {
        const unsigned i = t + r * bd;
        if (i < k) {
            const unsigned h = i / hd;
            float od = 0.0f;
            for (unsigned s = 0; s < DECODE_CLUSTER_MAX; ++s)
                if (s < active) od += wsh[h][s] * po[r][s];
            x[i] = od / wsh[h][DECODE_CLUSTER_MAX];
        }
    }
    g_sync();
}
