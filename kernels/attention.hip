// Attention on the matrix units: flash-style causal GQA attention for prefill, and decode
// attention split over the KV length. K and V come from the f16 cache ([pos][kv_head][d]);
// queries are f32 and the output (the attention context) f32. Positions are read from device
// memory (*pos0) so a captured decode graph replays unchanged from token to token.
#include "greta_device.h"

#define NEG_INF (-3.402823466e38f)
#define HD_MAX 128
// Row pitches: HD_MAX + 8 halves and 16 + 8 halves keep 16-row tiles 32-byte aligned and
// rows 16 bytes apart across the banks; f32 tiles get + 4.
#define LDH (HD_MAX + 8)
#define LDP (16 + 8)
#define LDS (16 + 4)
#define LDO (HD_MAX + 4)

// One wave per block handles 16 query rows (r0 .. r0+15, at positions *pos0 + r) of one
// head, streaming the keys 0 ..= the last row's position in tiles of 16:
//   S = Q K^T (matrix units, Q split into two f16) -> online softmax per row (running max m,
//   sum l) -> P in f16
//   O = O * exp(m_old - m_new) + P V (matrix units)
// Scores are scaled in f32 after the product. Grid: (ceil(rows / 16), n_heads); block: one
// wave. head_dim: a multiple of 16, at most HD_MAX.
GRETA_KERNEL void attn_prefill_flash(const float* q, const g_half* k_cache, const g_half* v_cache, float* ctx,
                                     const unsigned* pos0, unsigned rows, unsigned n_heads, unsigned n_kv_heads,
                                     unsigned head_dim, float scale) {
    GRETA_SHARED GRETA_ALIGN32 g_half qs[16 * LDH];
    GRETA_SHARED GRETA_ALIGN32 g_half ql[16 * LDH];
    GRETA_SHARED GRETA_ALIGN32 g_half ks[16 * LDH];
    GRETA_SHARED GRETA_ALIGN32 g_half vs[16 * LDH];
    GRETA_SHARED GRETA_ALIGN32 g_half ps[16 * LDP];
    GRETA_SHARED GRETA_ALIGN32 float ss[16 * LDS];
    GRETA_SHARED GRETA_ALIGN32 float os[16 * LDO];
    GRETA_SHARED GRETA_ALIGN32 float ts[16 * LDO];
    GRETA_SHARED float m_s[16], l_s[16], alpha_s[16];
    unsigned lane = g_tid(), nl = g_bdim();
    unsigned r0 = g_bid() * 16, h = g_bid_y();
    unsigned kvh = h / (n_heads / n_kv_heads);
    unsigned p0 = *pos0;
    unsigned kv_row = n_kv_heads * head_dim;
    unsigned last_row = r0 + 15 < rows ? r0 + 15 : rows - 1;
    unsigned n_keys = p0 + last_row + 1;
    for (unsigned e = lane; e < 16 * head_dim; e += nl) {
        unsigned i = e / head_dim, d = e % head_dim, r = r0 + i;
        float v = r < rows ? q[((unsigned long)r * n_heads + h) * head_dim + d] : 0.0f;
        g_half hi = g_f2h(v);
        qs[i * LDH + d] = hi;
        ql[i * LDH + d] = g_f2h(v - g_h2f(hi));
        os[i * LDO + d] = 0.0f;
    }
    if (lane < 16) {
        m_s[lane] = NEG_INF;
        l_s[lane] = 0.0f;
    }
    g_sync();
    for (unsigned j0 = 0; j0 < n_keys; j0 += 16) {
        for (unsigned e = lane; e < 16 * head_dim; e += nl) {
            unsigned i = e / head_dim, d = e % head_dim, j = j0 + i;
            unsigned long at = (unsigned long)j * kv_row + kvh * head_dim + d;
            bool in = j < n_keys;
            ks[i * LDH + d] = in ? k_cache[at] : g_f2h(0.0f);
            vs[i * LDH + d] = in ? v_cache[at] : g_f2h(0.0f);
        }
        g_sync();
        g_acc16 s;
        g_acc16_zero(s);
        // Q = hi + lo (two f16) as in gemm.hip, so the scores keep f32 queries.
        for (unsigned c = 0; c < head_dim; c += 16) {
            g_mma16_abt(s, &qs[c], LDH, &ks[c], LDH);
            g_mma16_abt(s, &ql[c], LDH, &ks[c], LDH);
        }
        g_acc16_store(s, ss, LDS);
        g_sync();
        if (lane < 16) {
            unsigned i = lane, pos = p0 + r0 + i;
            float m_old = m_s[i], m_new = m_old;
            for (unsigned j = 0; j < 16; ++j) {
                float v = j0 + j <= pos ? ss[i * LDS + j] * scale : NEG_INF;
                ss[i * LDS + j] = v;
                m_new = v > m_new ? v : m_new;
            }
            // A row with no visible key yet (m_new still -inf) keeps O and l at zero.
            bool none = m_new == NEG_INF;
            float alpha = none ? 1.0f : g_exp(m_old - m_new);
            float sum = 0.0f;
            for (unsigned j = 0; j < 16; ++j) {
                float v = ss[i * LDS + j];
                float p = (none || v == NEG_INF) ? 0.0f : g_exp(v - m_new);
                g_half ph = g_f2h(p);
                ps[i * LDP + j] = ph;
                // The sum uses the rounded P the matrix product sees, so O / l stays a weighted mean.
                sum += g_h2f(ph);
            }
            m_s[i] = m_new;
            l_s[i] = l_s[i] * alpha + sum;
            alpha_s[i] = alpha;
        }
        g_sync();
        for (unsigned c = 0; c < head_dim; c += 16) {
            g_acc16 o;
            g_acc16_zero(o);
            g_mma16_ab(o, ps, LDP, &vs[c], LDH);
            g_acc16_store(o, &ts[c], LDO);
        }
        g_sync();
        for (unsigned e = lane; e < 16 * head_dim; e += nl) {
            unsigned i = e / head_dim, d = e % head_dim;
            os[i * LDO + d] = os[i * LDO + d] * alpha_s[i] + ts[i * LDO + d];
        }
        g_sync();
    }
    for (unsigned e = lane; e < 16 * head_dim; e += nl) {
        unsigned i = e / head_dim, d = e % head_dim, r = r0 + i;
        if (r < rows) ctx[((unsigned long)r * n_heads + h) * head_dim + d] = os[i * LDO + d] / l_s[i];
    }
}

#define SPLIT 64
#define DECODE_BLOCK 256

// Decode attention of one query row (at position *pos0) split over the KV length: block
// (s, h) takes keys [s * SPLIT, min((s + 1) * SPLIT, *pos0 + 1)) and writes its running max,
// sum and unnormalised output to part_m/part_l/part_o[h * n_splits + s]; splits past the end
// write an empty partial. Scores: one thread per key. Output: DECODE_BLOCK / head_dim groups
// of head_dim threads each take every G-th key (reads coalesced over d, several keys in
// flight), then the groups' sums are added. Grid: (n_splits, n_heads); block: DECODE_BLOCK.
GRETA_KERNEL void attn_decode_split(const float* q, const g_half* k_cache, const g_half* v_cache, float* part_m,
                                    float* part_l, float* part_o, const unsigned* pos0, unsigned n_heads,
                                    unsigned n_kv_heads, unsigned head_dim, unsigned n_splits, float scale) {
    GRETA_SHARED float qsh[HD_MAX];
    GRETA_SHARED float p[SPLIT];
    GRETA_SHARED float scratch[DECODE_BLOCK];
    unsigned s = g_bid(), h = g_bid_y(), t = g_tid();
    unsigned kvh = h / (n_heads / n_kv_heads);
    unsigned kv_row = n_kv_heads * head_dim;
    unsigned n = *pos0 + 1;
    unsigned j0 = s * SPLIT;
    unsigned j1 = j0 + SPLIT < n ? j0 + SPLIT : n;
    unsigned long part = (unsigned long)h * n_splits + s;
    if (j0 >= n) {
        if (t == 0) {
            part_m[part] = NEG_INF;
            part_l[part] = 0.0f;
        }
        for (unsigned d = t; d < head_dim; d += g_bdim()) part_o[part * head_dim + d] = 0.0f;
        return;
    }
    for (unsigned d = t; d < head_dim; d += g_bdim()) qsh[d] = q[(unsigned long)h * head_dim + d];
    g_sync();
    float local_max = NEG_INF;
    for (unsigned j = j0 + t; j < j1; j += g_bdim()) {
        const g_half* kj = k_cache + (unsigned long)j * kv_row + kvh * head_dim;
        float acc = 0.0f;
        for (unsigned d = 0; d < head_dim; d += 8) {
            float kv8[8];
            g_load_h8(kj + d, kv8);
            for (unsigned e = 0; e < 8; ++e) acc += qsh[d + e] * kv8[e];
        }
        acc *= scale;
        p[j - j0] = acc;
        local_max = acc > local_max ? acc : local_max;
    }
    float m = g_block_max(local_max, scratch);
    float local_sum = 0.0f;
    for (unsigned j = j0 + t; j < j1; j += g_bdim()) {
        float e = g_exp(p[j - j0] - m);
        p[j - j0] = e;
        local_sum += e;
    }
    float l = g_block_sum(local_sum, scratch);
    unsigned groups = g_bdim() / head_dim;
    unsigned g = t / head_dim, d = t % head_dim;
    float acc = 0.0f;
    if (g < groups) {
        const g_half* v = v_cache + kvh * head_dim + d;
        for (unsigned j = j0 + g; j < j1; j += groups) acc += p[j - j0] * g_h2f(v[(unsigned long)j * kv_row]);
    }
    scratch[t] = acc;
    g_sync();
    if (t < head_dim) {
        float o = 0.0f;
        for (unsigned gg = 0; gg < groups; ++gg) o += scratch[gg * head_dim + t];
        part_o[part * head_dim + t] = o;
    }
    if (t == 0) {
        part_m[part] = m;
        part_l[part] = l;
    }
}

// ctx[h, d] = sum_s exp(m_s - M) o_s[d] / sum_s exp(m_s - M) l_s over the splits of head h.
// Grid: n_heads; block: any (threads stride over head_dim).
GRETA_KERNEL void attn_decode_combine(const float* part_m, const float* part_l, const float* part_o, float* ctx,
                                      unsigned head_dim, unsigned n_splits) {
    unsigned h = g_bid();
    const float* pm = part_m + (unsigned long)h * n_splits;
    const float* pl = part_l + (unsigned long)h * n_splits;
    float m = NEG_INF;
    for (unsigned s = 0; s < n_splits; ++s) m = pm[s] > m ? pm[s] : m;
    float l = 0.0f;
    for (unsigned s = 0; s < n_splits; ++s)
        if (pm[s] != NEG_INF) l += g_exp(pm[s] - m) * pl[s];
    for (unsigned d = g_tid(); d < head_dim; d += g_bdim()) {
        float acc = 0.0f;
        for (unsigned s = 0; s < n_splits; ++s)
            if (pm[s] != NEG_INF) acc += g_exp(pm[s] - m) * part_o[((unsigned long)h * n_splits + s) * head_dim + d];
        ctx[(unsigned long)h * head_dim + d] = acc / l;
    }
}
