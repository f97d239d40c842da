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

// x[i] = ctx[i] for i < k = heads x hd, from the partials of the splits holding keys
// (`active` of them, at most DECODE_CLUSTER_MAX; head h's split x at h * n_splits + x):
// ctx[h, d] = sum_x exp(m_x - M) o_x[d] / sum_x exp(m_x - M) l_x, M = max_x m_x, each sum in
// split order from 0.0f, as attn_decode_finish combines them (one split: o / l, the
// weight exp(0) being exactly 1). Every load of a thread's row is issued at once. Every
// thread of the block calls; the barrier at the end publishes x (LDS) to the block.
GRETA_DEVICE void g_ctx_from_splits(const float* part_m, const float* part_l, const float* part_o,
                                    unsigned active, unsigned n_splits, unsigned hd, unsigned k, float* x) {
    for (unsigned i = g_tid(); i < k; i += g_bdim()) {
        const unsigned h = i / hd, d = i - h * hd;
        const unsigned long p0 = (unsigned long)h * n_splits;
        float pm[DECODE_CLUSTER_MAX], pl[DECODE_CLUSTER_MAX], po[DECODE_CLUSTER_MAX];
        for (unsigned s = 0; s < DECODE_CLUSTER_MAX; ++s)
            if (s < active) {
                pm[s] = part_m[p0 + s];
                pl[s] = part_l[p0 + s];
                po[s] = part_o[(p0 + s) * hd + d];
            }
        float cm = NEG_INF;
        for (unsigned s = 0; s < DECODE_CLUSTER_MAX; ++s)
            if (s < active) cm = pm[s] > cm ? pm[s] : cm;
        float cl = 0.0f, od = 0.0f;
        for (unsigned s = 0; s < DECODE_CLUSTER_MAX; ++s)
            if (s < active) {
                const float e = g_exp(pm[s] - cm);
                cl += e * pl[s];
                od += e * po[s];
            }
        x[i] = od / cl;
    }
    g_sync();
}
