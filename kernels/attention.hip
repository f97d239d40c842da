// Attention on the matrix units: flash-style causal GQA attention for prefill, and decode
// attention split over the KV length. K and V come from the f16 cache ([pos][kv_head][d]);
// queries are f32 and the output (the attention context) f32. Positions are read from device
// memory (*pos0) so a captured decode graph replays unchanged from token to token.
#include "greta_device.h"

#define NEG_INF (-3.402823466e38f)
#define HD_MAX 128
// Keys per step of the prefill kernel.
#define KT 32
// Row pitches: HD_MAX + 8 and KT + 8 halves keep 16-row tiles 32-byte aligned and rows 16
// bytes apart across the banks; f32 tiles get + 4.
#define LDH (HD_MAX + 8)
#define LDP (KT + 8)
#define LDS (KT + 4)
#define LDO (HD_MAX + 4)

// One wave per block handles 16 query rows (r0 .. r0+15, at positions *pos0 + r) of one
// head, streaming the keys 0 ..= the last row's position in tiles of KT:
//   S = Q K^T (matrix units, Q split into two f16) -> online softmax per row (running max m,
//   sum l; every lane of the wave takes part: GRETA_WAVE / 16 lanes per row) -> P in f16
//   O = O * exp(m_old - m_new) + P V (matrix units)
// K, V and Q move in 16-byte loads. Scores are scaled in f32 after the product. LDS: 46 KiB
// at HD_MAX 128 (under the 48 KiB a block takes without opting in). Grid: (ceil(rows / 16),
// n_heads); block: one wave. head_dim: a multiple of 16, at most HD_MAX.
GRETA_KERNEL void attn_prefill_flash(const float* q, const g_half* k_cache, const g_half* v_cache, float* ctx,
                                     const unsigned* pos0, unsigned rows, unsigned n_heads, unsigned n_kv_heads,
                                     unsigned head_dim, float scale) {
    GRETA_SHARED GRETA_ALIGN32 g_half qs[16 * LDH];
    GRETA_SHARED GRETA_ALIGN32 g_half ql[16 * LDH];
    GRETA_SHARED GRETA_ALIGN32 g_half ks[KT * LDH];
    GRETA_SHARED GRETA_ALIGN32 g_half vs[KT * LDH];
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
    unsigned chunks = head_dim / 8;
    unsigned last_row = r0 + 15 < rows ? r0 + 15 : rows - 1;
    unsigned n_keys = p0 + last_row + 1;
    for (unsigned e = lane; e < 16 * chunks; e += nl) {
        unsigned i = e / chunks, c = (e % chunks) * 8, r = r0 + i;
        float v[8];
        if (r < rows) {
            g_load_f8(q + ((unsigned long)r * n_heads + h) * head_dim + c, v);
        } else {
            for (unsigned x = 0; x < 8; ++x) v[x] = 0.0f;
        }
        g_h8 hi, lo;
        for (unsigned x = 0; x < 8; ++x) {
            hi.v[x] = g_f2h(v[x]);
            lo.v[x] = g_f2h(v[x] - g_h2f(hi.v[x]));
            os[i * LDO + c + x] = 0.0f;
        }
        *(g_h8*)&qs[i * LDH + c] = hi;
        *(g_h8*)&ql[i * LDH + c] = lo;
    }
    if (lane < 16) {
        m_s[lane] = NEG_INF;
        l_s[lane] = 0.0f;
    }
    g_sync();
    const unsigned lanes_per_row = GRETA_WAVE / 16, keys_per_lane = KT / lanes_per_row;
    for (unsigned j0 = 0; j0 < n_keys; j0 += KT) {
        for (unsigned e = lane; e < KT * chunks; e += nl) {
            unsigned i = e / chunks, c = (e % chunks) * 8, j = j0 + i;
            g_h8 kv, vv;
            if (j < n_keys) {
                unsigned long at = (unsigned long)j * kv_row + kvh * head_dim + c;
                kv = *(const g_h8*)(k_cache + at);
                vv = *(const g_h8*)(v_cache + at);
            } else {
                for (unsigned x = 0; x < 8; ++x) kv.v[x] = vv.v[x] = g_f2h(0.0f);
            }
            *(g_h8*)&ks[i * LDH + c] = kv;
            *(g_h8*)&vs[i * LDH + c] = vv;
        }
        g_sync();
        g_acc16 s[KT / 16];
        for (unsigned n = 0; n < KT / 16; ++n) g_acc16_zero(s[n]);
        // Q = hi + lo (two f16) as in gemm.hip, so the scores keep f32 queries.
        for (unsigned c = 0; c < head_dim; c += 16) {
            g_frag_a hi, lo;
            g_load_a(hi, &qs[c], LDH);
            g_load_a(lo, &ql[c], LDH);
            for (unsigned n = 0; n < KT / 16; ++n) {
                g_frag_bt b;
                g_load_bt(b, &ks[16 * n * LDH + c], LDH);
                g_mma16(s[n], hi, b);
                g_mma16(s[n], lo, b);
            }
        }
        for (unsigned n = 0; n < KT / 16; ++n) g_acc16_store(s[n], &ss[16 * n], LDS);
        g_sync();
        {
            unsigned i = lane % 16, part = lane / 16, pos = p0 + r0 + i;
            unsigned jb = part * keys_per_lane;
            float m_old = m_s[i], mx = NEG_INF;
            for (unsigned j = jb; j < jb + keys_per_lane; ++j) {
                float v = j0 + j <= pos ? ss[i * LDS + j] * scale : NEG_INF;
                ss[i * LDS + j] = v;
                mx = v > mx ? v : mx;
            }
            for (unsigned m = 16; m < GRETA_WAVE; m <<= 1) {
                float o = g_shfl_xor(mx, m);
                mx = o > mx ? o : mx;
            }
            float m_new = mx > m_old ? mx : m_old;
            // A row with no visible key yet (m_new still -inf) keeps O and l at zero.
            bool none = m_new == NEG_INF;
            float alpha = none ? 1.0f : g_exp(m_old - m_new);
            float sum = 0.0f;
            for (unsigned j = jb; j < jb + keys_per_lane; ++j) {
                float v = ss[i * LDS + j];
                float p = (none || v == NEG_INF) ? 0.0f : g_exp(v - m_new);
                g_half ph = g_f2h(p);
                ps[i * LDP + j] = ph;
                // The sum uses the rounded P the matrix product sees, so O / l stays a weighted mean.
                sum += g_h2f(ph);
            }
            for (unsigned m = 16; m < GRETA_WAVE; m <<= 1) sum += g_shfl_xor(sum, m);
            if (part == 0) {
                m_s[i] = m_new;
                l_s[i] = l_s[i] * alpha + sum;
                alpha_s[i] = alpha;
            }
        }
        g_sync();
        for (unsigned c = 0; c < head_dim; c += 16) {
            g_acc16 o;
            g_acc16_zero(o);
            for (unsigned kk = 0; kk < KT; kk += 16) g_mma16_ab(o, &ps[kk], LDP, &vs[kk * LDH + c], LDH);
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
// sum and unnormalised output to part_m/part_l/part_o[h * n_splits + s] (splits past the end
// write an empty partial). Scores: a group of head_dim / 8 lanes per key, each one 16-byte
// chunk of K, summed by shuffles. Output: the same groups, each lane accumulating one 16-byte
// chunk of V over every G-th key, then the groups' sums added through LDS.
// The last block of head h to finish (an atomic count in done[h], reset to 0 by that block
// for the next step) combines the head's splits into ctx: no second launch per layer.
// Grid: (n_splits, n_heads); block: DECODE_BLOCK.
GRETA_KERNEL void attn_decode_split(const float* q, const g_half* k_cache, const g_half* v_cache, float* part_m,
                                    float* part_l, float* part_o, unsigned* done, float* ctx, const unsigned* pos0,
                                    unsigned n_heads, unsigned n_kv_heads, unsigned head_dim, unsigned n_splits,
                                    float scale) {
    GRETA_SHARED GRETA_ALIGN16 float qsh[HD_MAX];
    GRETA_SHARED float p[SPLIT];
    GRETA_SHARED float red[DECODE_BLOCK * 8];
    GRETA_SHARED float scratch[DECODE_BLOCK];
    GRETA_SHARED unsigned last;
    unsigned s = g_bid(), h = g_bid_y(), t = g_tid();
    unsigned kvh = h / (n_heads / n_kv_heads);
    unsigned kv_row = n_kv_heads * head_dim;
    unsigned n = *pos0 + 1;
    unsigned j0 = s * SPLIT;
    unsigned j1 = j0 + SPLIT < n ? j0 + SPLIT : n;
    unsigned long part = (unsigned long)h * n_splits + s;
    // Lanes per key: head_dim / 8 chunks, in a power-of-two group (shuffle sums).
    unsigned chunks = head_dim / 8, width = 1;
    while (width < chunks) width <<= 1;
    unsigned per_pass = g_bdim() / width, c = t % width, g = t / width;
    if (j0 < n) {
        for (unsigned d = t; d < head_dim; d += g_bdim()) qsh[d] = q[(unsigned long)h * head_dim + d];
        g_sync();
        float local_max = NEG_INF;
        for (unsigned jb = j0; jb < j1; jb += per_pass) {
            unsigned j = jb + g;
            float acc = 0.0f;
            if (j < j1 && c < chunks) {
                float k8[8];
                g_load_h8(k_cache + (unsigned long)j * kv_row + kvh * head_dim + 8 * c, k8);
                for (unsigned e = 0; e < 8; ++e) acc += qsh[8 * c + e] * k8[e];
            }
            float sc = g_group_sum(acc, width) * scale;
            if (j < j1) {
                if (c == 0) p[j - j0] = sc;
                local_max = sc > local_max ? sc : local_max;
            }
        }
        float m = g_block_max(local_max, scratch);
        float local_sum = 0.0f;
        for (unsigned j = j0 + t; j < j1; j += g_bdim()) {
            float e = g_exp(p[j - j0] - m);
            p[j - j0] = e;
            local_sum += e;
        }
        float l = g_block_sum(local_sum, scratch);
        float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        if (c < chunks) {
            for (unsigned j = j0 + g; j < j1; j += per_pass) {
                float v8[8];
                g_load_h8(v_cache + (unsigned long)j * kv_row + kvh * head_dim + 8 * c, v8);
                float pj = p[j - j0];
                for (unsigned e = 0; e < 8; ++e) acc[e] += pj * v8[e];
            }
            for (unsigned e = 0; e < 8; ++e) red[g * head_dim + 8 * c + e] = acc[e];
        }
        g_sync();
        for (unsigned d = t; d < head_dim; d += g_bdim()) {
            float o = 0.0f;
            for (unsigned gg = 0; gg < per_pass; ++gg) o += red[gg * head_dim + d];
            part_o[part * head_dim + d] = o;
        }
        if (t == 0) {
            part_m[part] = m;
            part_l[part] = l;
        }
    } else {
        if (t == 0) {
            part_m[part] = NEG_INF;
            part_l[part] = 0.0f;
        }
        for (unsigned d = t; d < head_dim; d += g_bdim()) part_o[part * head_dim + d] = 0.0f;
    }
    // Publish this split; the block that completes the count combines.
    g_fence_release();
    g_sync();
    if (t == 0) last = g_atomic_inc(&done[h]) == n_splits - 1;
    g_sync();
    if (!last) return;
    g_fence_acquire();
    // ctx[h, d] = sum_s exp(m_s - M) o_s[d] / sum_s exp(m_s - M) l_s over the splits of head h.
    const float* pm = part_m + (unsigned long)h * n_splits;
    const float* pl = part_l + (unsigned long)h * n_splits;
    float mm = NEG_INF;
    for (unsigned x = 0; x < n_splits; ++x) mm = pm[x] > mm ? pm[x] : mm;
    float ll = 0.0f;
    for (unsigned x = 0; x < n_splits; ++x)
        if (pm[x] != NEG_INF) ll += g_exp(pm[x] - mm) * pl[x];
    for (unsigned d = t; d < head_dim; d += g_bdim()) {
        float o = 0.0f;
        for (unsigned x = 0; x < n_splits; ++x)
            if (pm[x] != NEG_INF) o += g_exp(pm[x] - mm) * part_o[((unsigned long)h * n_splits + x) * head_dim + d];
        ctx[(unsigned long)h * head_dim + d] = o / ll;
    }
    if (t == 0) done[h] = 0;
}
