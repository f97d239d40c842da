// Plain (no matrix units) attention: the correct baseline the matrix-unit kernels of
// attention.hip are compared with. Three passes over a scores scratch buffer: scores, softmax, sum.
// Causal, grouped-query; positions and lengths read from device memory so that a captured
// decode graph replays unchanged from token to token.
#include "greta_device.h"

#define MAX_BLOCK 1024

// scores[(r * n_heads + h) * max_kv + j] = q_r,h · k_j,kvh / sqrt(hd) for j <= *pos0 + r,
// -inf beyond. Grid: (ceil(max_kv / block), rows * n_heads); block: any.
GRETA_KERNEL void attn_scores(const float* q, const g_half* k_cache, float* scores, const unsigned* pos0,
                              unsigned n_heads, unsigned n_kv_heads, unsigned head_dim, unsigned max_kv, float scale) {
    g_overlap_entry();
    unsigned rh = g_bid_y();
    unsigned r = rh / n_heads, h = rh % n_heads;
    unsigned j = g_bid() * g_bdim() + g_tid();
    if (j >= max_kv) return;
    unsigned kvh = h / (n_heads / n_kv_heads);
    float* out = scores + (unsigned long)rh * max_kv;
    if (j > *pos0 + r) { out[j] = -3.402823466e38f; return; }
    const float* qh = q + ((unsigned long)r * n_heads + h) * head_dim;
    const g_half* kj = k_cache + ((unsigned long)j * n_kv_heads + kvh) * head_dim;
    float acc = 0.0f;
    for (unsigned d = 0; d < head_dim; ++d) acc += qh[d] * g_h2f(kj[d]);
    out[j] = acc * scale;
}

// Softmax over j <= *pos0 + r of each (r, h) row of scores, in place. Grid: rows * n_heads;
// block: power of two <= 1024.
GRETA_KERNEL void attn_softmax(float* scores, const unsigned* pos0, unsigned n_heads, unsigned max_kv) {
    g_overlap_entry();
    GRETA_SHARED float scratch[MAX_BLOCK];
    unsigned rh = g_bid();
    unsigned r = rh / n_heads;
    unsigned n = *pos0 + r + 1;
    float* row = scores + (unsigned long)rh * max_kv;
    float m = -3.402823466e38f;
    for (unsigned j = g_tid(); j < n; j += g_bdim()) m = row[j] > m ? row[j] : m;
    m = g_block_max(m, scratch);
    float sum = 0.0f;
    for (unsigned j = g_tid(); j < n; j += g_bdim()) {
        float e = g_exp(row[j] - m);
        row[j] = e;
        sum += e;
    }
    float total = g_block_sum(sum, scratch);
    float inv = 1.0f / total;
    for (unsigned j = g_tid(); j < n; j += g_bdim()) row[j] *= inv;
}

// ctx[r, h, d] = sum_j p[r, h, j] * v[j, kvh, d]. Grid: rows * n_heads; block: head_dim
// threads (<= 1024).
GRETA_KERNEL void attn_context(const float* probs, const g_half* v_cache, float* ctx, const unsigned* pos0,
                               unsigned n_heads, unsigned n_kv_heads, unsigned head_dim, unsigned max_kv) {
    g_overlap_entry();
    unsigned rh = g_bid();
    unsigned r = rh / n_heads, h = rh % n_heads;
    unsigned kvh = h / (n_heads / n_kv_heads);
    unsigned n = *pos0 + r + 1;
    const float* p = probs + (unsigned long)rh * max_kv;
    for (unsigned d = g_tid(); d < head_dim; d += g_bdim()) {
        float acc = 0.0f;
        for (unsigned j = 0; j < n; ++j) acc += p[j] * g_h2f(v_cache[((unsigned long)j * n_kv_heads + kvh) * head_dim + d]);
        ctx[(unsigned long)rh * head_dim + d] = acc;
    }
}
