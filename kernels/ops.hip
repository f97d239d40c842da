// The elementwise and row ops of the forward pass (f32 activations, f16 weights where
// stored). Each has a CPU reference in greta-kernels' cpu.rs with the same semantics; the
// GPU op tests compare the two with NMSE thresholds.
#include "greta_device.h"

#define MAX_BLOCK 1024

// out[r, :] = table[ids[r], :] widened to f32. Grid: rows; block: any.
GRETA_KERNEL void embed_f16(const g_half* table, const unsigned* ids, float* out, unsigned d) {
    g_overlap_entry();
    unsigned r = g_bid();
    const g_half* row = table + (unsigned long)ids[r] * d;
    for (unsigned i = g_tid(); i < d; i += g_bdim()) out[(unsigned long)r * d + i] = g_h2f(row[i]);
}

// out = x / sqrt(mean(x^2) + eps) * w, per row. Grid: rows; block: a multiple of the wave
// size <= 1024.
GRETA_KERNEL void rmsnorm_f32(const float* x, const float* w, float* out, unsigned d, float eps) {
    g_overlap_entry();
    GRETA_SHARED float scratch[MAX_BLOCK];
    unsigned r = g_bid();
    const float* xr = x + (unsigned long)r * d;
    float ss = 0.0f;
    for (unsigned i = g_tid(); i < d; i += g_bdim()) ss += xr[i] * xr[i];
    float total = g_block_sum(ss, scratch);
    float scale = 1.0f / g_sqrt(total / (float)d + eps);
    for (unsigned i = g_tid(); i < d; i += g_bdim()) out[(unsigned long)r * d + i] = xr[i] * scale * w[i];
}

// x[r] += y[r], then out[r] = rmsnorm(x[r]) * w: the residual add and the next stage's norm
// in one launch. Each thread reads back only what it wrote, in rmsnorm_f32's order, so the
// result is bitwise the unfused pair's. Grid: rows; block: as rmsnorm_f32.
GRETA_KERNEL void add_rmsnorm_f32(float* x, const float* y, const float* w, float* out, unsigned d, float eps) {
    g_overlap_entry();
    GRETA_SHARED float scratch[MAX_BLOCK];
    unsigned r = g_bid();
    float* xr = x + (unsigned long)r * d;
    const float* yr = y + (unsigned long)r * d;
    float ss = 0.0f;
    for (unsigned i = g_tid(); i < d; i += g_bdim()) {
        float v = xr[i] + yr[i];
        xr[i] = v;
        ss += v * v;
    }
    float total = g_block_sum(ss, scratch);
    float scale = 1.0f / g_sqrt(total / (float)d + eps);
    for (unsigned i = g_tid(); i < d; i += g_bdim()) out[(unsigned long)r * d + i] = xr[i] * scale * w[i];
}

// RoPE on q and k of each row in place and both appended to the f16 cache at *pos0 + r:
// rope_f32 twice and kv_append_f16 twice in one launch, bitwise the same values. Block
// (r, h) takes head h of row r: a query head for h < n_heads, else key head h - n_heads,
// which it also appends with the same value head (decode has one row: a block per head
// keeps the launch from being one block's serial loop). Grid: (rows, n_heads + n_kv_heads);
// block: any (head_dim / 2 threads use every lane).
GRETA_KERNEL void rope_qk_append_f16(float* q, float* k, const float* v, g_half* k_cache, g_half* v_cache,
                                     const unsigned* pos0, const float* inv_freq, unsigned n_heads,
                                     unsigned n_kv_heads, unsigned head_dim, unsigned half_split) {
    g_overlap_entry();
    unsigned r = g_bid(), h = g_bid_y();
    unsigned p = *pos0 + r;
    float pos = (float)p;
    unsigned half = head_dim / 2, kv_row = n_kv_heads * head_dim;
    if (h < n_heads) {
        float* head = q + ((unsigned long)r * n_heads + h) * head_dim;
        for (unsigned i = g_tid(); i < half; i += g_bdim()) {
            unsigned ia, ib;
            g_rope_pair(head, pos, inv_freq, i, half, half_split, &ia, &ib);
        }
        return;
    }
    unsigned kh = h - n_heads;
    float* head = k + (unsigned long)r * kv_row + kh * head_dim;
    unsigned long dst = (unsigned long)p * kv_row + kh * head_dim;
    for (unsigned i = g_tid(); i < half; i += g_bdim()) {
        unsigned ia, ib;
        g_rope_pair(head, pos, inv_freq, i, half, half_split, &ia, &ib);
        k_cache[dst + ia] = g_f2h(head[ia]);
        k_cache[dst + ib] = g_f2h(head[ib]);
    }
    const float* vh = v + (unsigned long)r * kv_row + kh * head_dim;
    for (unsigned i = g_tid(); i < head_dim; i += g_bdim()) v_cache[dst + i] = g_f2h(vh[i]);
}

// rope_qk_append_f16's work (bitwise its values: the same g_rope_angle and rotation per
// pair) four pairs a thread, with 16-byte loads, for head_dim % 8 == 0 (every Llama shape).
// The scalar kernel's block per (row, head) of head_dim / 2 threads left the prefill to
// 32 768 blocks of two loads a thread (Llama-2-7B: 42 µs a layer under ncu, 0.14 of copy).
// Thread j of row r takes quad j % (head_dim / 8) of head j / (head_dim / 8) (query heads,
// then key heads): pairs i0..i0+3, i0 = 4 (j % (head_dim / 8)), whose elements lie in two
// 4-float vectors, at i0 and i0 + head_dim / 2 (half_split) or at 2 i0 and 2 i0 + 4. A key
// head's thread also appends those elements of k and v. Grid: (rows, quads / block rounded
// up); block: any. The attention is let in at the end.
// rot_q = 0: the key heads alone (the grid covers those; q untouched, the prefill attention
// rotates it as it loads it, from rope_angles_f32's table); keep_k = 0: the rotated k goes to
// the cache only, not back to k (nothing reads it there in an untraced prefill).
GRETA_KERNEL void rope_qk_append_x4_f16(float* q, float* k, const float* v, g_half* k_cache, g_half* v_cache,
                                        const unsigned* pos0, const float* inv_freq, unsigned n_heads,
                                        unsigned n_kv_heads, unsigned head_dim, unsigned half_split,
                                        unsigned rot_q, unsigned keep_k) {
    g_wait_previous();
    const unsigned r = g_bid(), j = g_bid_y() * g_bdim() + g_tid();
    const unsigned half = head_dim / 2, quads = half / 4, h = j / quads + (rot_q ? 0 : n_heads),
                   i0 = 4 * (j % quads);
    if (h < n_heads + n_kv_heads) {
        const unsigned p = *pos0 + r, kv_row = n_kv_heads * head_dim;
        const float pos = (float)p;
        const unsigned a = half_split ? i0 : 2 * i0, b = half_split ? i0 + half : 2 * i0 + 4;
        const bool is_k = h >= n_heads;
        float* head = is_k ? k + (unsigned long)r * kv_row + (h - n_heads) * head_dim
                           : q + ((unsigned long)r * n_heads + h) * head_dim;
        g_f4 va = *(const g_f4*)(head + a), vb = *(const g_f4*)(head + b);
        // A key head's v is loaded here, with its k: after the stores to k below (which may
        // alias v as far as the compiler knows) it would be a second round trip.
        g_f4 wa{}, wb{};
        const unsigned long off = (unsigned long)(h - n_heads) * head_dim;
        if (is_k) {
            const float* vh = v + (unsigned long)r * kv_row + off;
            wa = *(const g_f4*)(vh + a);
            wb = *(const g_f4*)(vh + b);
        }
        float s[4], c[4];
        for (unsigned m = 0; m < 4; ++m) g_rope_angle(pos, inv_freq, i0 + m, &s[m], &c[m]);
        if (half_split) {
            // Pair m: (va[m], vb[m]).
            for (unsigned m = 0; m < 4; ++m) {
                float x0 = va.v[m], x1 = vb.v[m];
                va.v[m] = g_rope_first(x0, x1, s[m], c[m]);
                vb.v[m] = g_rope_second(x0, x1, s[m], c[m]);
            }
        } else {
            // Pairs 0, 1 in va, pairs 2, 3 in vb, each as (even, odd).
            for (unsigned m = 0; m < 2; ++m) {
                float x0 = va.v[2 * m], x1 = va.v[2 * m + 1];
                va.v[2 * m] = g_rope_first(x0, x1, s[m], c[m]);
                va.v[2 * m + 1] = g_rope_second(x0, x1, s[m], c[m]);
                x0 = vb.v[2 * m];
                x1 = vb.v[2 * m + 1];
                vb.v[2 * m] = g_rope_first(x0, x1, s[2 + m], c[2 + m]);
                vb.v[2 * m + 1] = g_rope_second(x0, x1, s[2 + m], c[2 + m]);
            }
        }
        if (!is_k || keep_k) {
            *(g_f4*)(head + a) = va;
            *(g_f4*)(head + b) = vb;
        }
        if (is_k) {
            const unsigned long dst = (unsigned long)p * kv_row + off;
            g_h4 ka, kb, ca, cb;
            for (unsigned e = 0; e < 4; ++e) {
                ka.v[e] = g_f2h(va.v[e]);
                kb.v[e] = g_f2h(vb.v[e]);
                ca.v[e] = g_f2h(wa.v[e]);
                cb.v[e] = g_f2h(wb.v[e]);
            }
            *(g_h4*)(k_cache + dst + a) = ka;
            *(g_h4*)(k_cache + dst + b) = kb;
            *(g_h4*)(v_cache + dst + a) = ca;
            *(g_h4*)(v_cache + dst + b) = cb;
        }
    }
    g_launch_next();
}

// Rotates each head of each row in place; row r is at position *pos0 + r (read from device
// memory, so a captured decode graph needs no update per token). half_split: 0 pairs
// (2i, 2i+1) (GGUF), 1 pairs (i, i + hd/2) (Hugging Face). Grid: rows; block: any.
GRETA_KERNEL void rope_f32(float* x, const unsigned* pos0, const float* inv_freq, unsigned n_heads,
                           unsigned head_dim, unsigned half_split) {
    g_overlap_entry();
    unsigned r = g_bid();
    float pos = (float)(*pos0 + r);
    unsigned half = head_dim / 2;
    float* row = x + (unsigned long)r * n_heads * head_dim;
    for (unsigned j = g_tid(); j < n_heads * half; j += g_bdim()) {
        unsigned a, b;
        g_rope_pair(row + (j / half) * head_dim, pos, inv_freq, j % half, half, half_split, &a, &b);
    }
}

// The RoPE angles of a pass's rows: angles[r * 2 half + 2 i] = sin, + 1 = cos of pair i at
// position *pos0 + r (g_rope_angle: rope_qk_append's values bitwise). Every layer's prefill
// attention reads them (attn_prefill_fa's angles), which leaves it no sine or cosine: made
// there for each head of each layer, they cost more than rope_qk_append's bytes saved
// (session 35). Grid: rows; block: any.
GRETA_KERNEL void rope_angles_f32(float* angles, const unsigned* pos0, const float* inv_freq, unsigned half) {
    g_overlap_entry();
    const unsigned r = g_bid();
    const float pos = (float)(*pos0 + r);
    for (unsigned i = g_tid(); i < half; i += g_bdim()) {
        float s, c;
        g_rope_angle(pos, inv_freq, i, &s, &c);
        angles[(unsigned long)r * 2 * half + 2 * i] = s;
        angles[(unsigned long)r * 2 * half + 2 * i + 1] = c;
    }
}

// out = silu(gate) * up. Grid x block covers n.
GRETA_KERNEL void silu_mul_f32(const float* gate, const float* up, float* out, unsigned n) {
    g_overlap_entry();
    unsigned i = g_bid() * g_bdim() + g_tid();
    if (i < n) {
        out[i] = g_silu_mul(gate[i], up[i]);
    }
}

// The f16 operands of the prefill GEMM: hi = f16(x) and, where lo is not null, lo = f16(x - hi)
// (x = hi + lo to 22 bits of mantissa; see gemm.hip for which products need lo). Eight
// elements per thread (16-byte stores of each half); grid x block x 8 covers n.
// The next kernel is let in only at the end: launched at the top, the GEMMs behind this
// short kernel (each of which lets its own successor in at once) filled the SMs with blocks
// waiting on their inputs, and SmolLM2's prefill took 4.83 ms instead of 4.15 (H200).
GRETA_KERNEL void split_f16(const float* x, g_half* hi, g_half* lo, unsigned n) {
    g_wait_previous();
    unsigned i = (g_bid() * g_bdim() + g_tid()) * 8;
    if (i + 8 <= n) {
        float v[8];
        g_load_f8(x + i, v);
        g_h8 h, l;
        for (unsigned j = 0; j < 8; ++j) g_split_f16(v[j], &h.v[j], &l.v[j]);
        *(g_h8*)(hi + i) = h;
        if (lo) *(g_h8*)(lo + i) = l;
    } else {
        for (; i < n; ++i) {
            g_half h, l;
            g_split_f16(x[i], &h, &l);
            hi[i] = h;
            if (lo) lo[i] = l;
        }
    }
    g_launch_next();
}

// The prefill's norms with the next product's f16 operands in the same launch: x[r] += y[r]
// where y is not null, out[r] = rmsnorm(x[r]) * w (add_rmsnorm_f32's / rmsnorm_f32's values,
// summed in another order; not stored where out is null: nothing but an observer reads it
// once the operands exist), and hi[r] (lo[r] where not null) what split_f16 makes of
// out[r], bitwise. Saves split_f16's launch and its read of out. A thread keeps its 4-float vectors
// (t, t + block, ...) in registers from the load to the stores: with 4 of them (x and w),
// 62 registers on sm_90a, so a block of 1024 threads (d = 16 384) still launches; 8 took
// 136, and a block of 512 did not launch (H200, session 15). Grid: rows; block: a multiple
// of the wave size, at least d / (4 * NORM_SPLIT_VECS); d % 4 == 0.
// The next kernel (the GEMM) is let in only at the end, as split_f16 does.
#define NORM_SPLIT_VECS 4
//
// lo8 (lo null): the low halves in FP8 instead (`--split-lo fp8`, greta_device.h). sq and
// smeta (lo and lo8 null; d % 32 == 0): the FP8 low halves kept 2:4-sparse, compressed bytes
// and metadata (split_f16_lo8s's, bitwise; `--split-lo ...+sparse:gate_up`).
GRETA_KERNEL void add_rmsnorm_split_f16(float* x, const float* y, const float* w, float* out, g_half* hi, g_half* lo,
                                        unsigned char* lo8, unsigned char* sq, unsigned* smeta, unsigned d,
                                        float eps) {
    g_wait_previous();
    GRETA_SHARED float scratch[MAX_BLOCK / GRETA_WAVE];
    const unsigned t = g_tid(), b = g_bdim();
    const unsigned long row = (unsigned long)g_bid() * d;
    // Every load of x and y is issued before the first store to x: y, x and w are not
    // restrict (a restrict y would be ld.global.nc, which ptxas may hoist above the wait), so
    // a load after a store to x is kept after it, and a store waits for its sum. Loading y
    // between the stores made four dependent round trips of a thread's four vectors (0.35 of
    // the copy bandwidth under ncu, session 15). w (one row, from L2) is loaded after the
    // stores, its latency under the block's sum; loading it with x would add 16 live
    // registers to the 62 a 1024-thread block allows.
    g_f4 v[NORM_SPLIT_VECS], wv[NORM_SPLIT_VECS];
    for (unsigned c = 0; c < NORM_SPLIT_VECS; ++c) {
        unsigned i = 4 * (t + c * b);
        if (i < d) {
            v[c] = *(const g_f4*)(x + row + i);
            if (y) wv[c] = *(const g_f4*)(y + row + i);
        }
    }
    if (y) {
        for (unsigned c = 0; c < NORM_SPLIT_VECS; ++c) {
            unsigned i = 4 * (t + c * b);
            if (i < d) {
                for (unsigned e = 0; e < 4; ++e) v[c].v[e] += wv[c].v[e];
                *(g_f4*)(x + row + i) = v[c];
            }
        }
    }
    for (unsigned c = 0; c < NORM_SPLIT_VECS; ++c) {
        unsigned i = 4 * (t + c * b);
        if (i < d) wv[c] = *(const g_f4*)(w + i);
    }
    float ss = 0.0f;
    for (unsigned c = 0; c < NORM_SPLIT_VECS; ++c)
        if (4 * (t + c * b) < d)
            for (unsigned e = 0; e < 4; ++e) ss += v[c].v[e] * v[c].v[e];
    float total = g_block_sum(ss, scratch);
    float scale = 1.0f / g_sqrt(total / (float)d + eps);
    for (unsigned c = 0; c < NORM_SPLIT_VECS; ++c) {
        unsigned i = 4 * (t + c * b);
        unsigned nibble = 0;
        if (i < d) {
            g_f4 o;
            g_h4 h, l;
            float r[4];
            for (unsigned e = 0; e < 4; ++e) {
                o.v[e] = v[c].v[e] * scale * wv[c].v[e];
                g_split_f16(o.v[e], &h.v[e], &l.v[e]);
                r[e] = o.v[e] - g_h2f(h.v[e]);
            }
            if (out) *(g_f4*)(out + row + i) = o;
            *(g_h4*)(hi + row + i) = h;
            if (lo) *(g_h4*)(lo + row + i) = l;
#if defined(GRETA_FP8)
            if (lo8) *(unsigned*)(lo8 + row + i) = g_lo8x4(r);
            if (sq) {
                unsigned kept;
                nibble = g_sparse24(g_lo8x4(r), &kept) << (4 * ((i / 4) % 8));
                *(unsigned short*)(sq + row / 2 + i / 2) = (unsigned short)kept;
            }
#endif
        }
#if defined(GRETA_FP8)
        // The sparse form's metadata word: the nibbles of 8 consecutive 4-column groups,
        // which 8 consecutive lanes hold (a block is whole warps, so a warp's lanes take
        // consecutive groups); every lane takes part in the shuffles (d % 32 == 0, so the
        // 8 lanes of a word are all in the row or all past it).
        if (sq) {
            nibble |= __shfl_xor_sync(0xffffffffu, nibble, 1);
            nibble |= __shfl_xor_sync(0xffffffffu, nibble, 2);
            nibble |= __shfl_xor_sync(0xffffffffu, nibble, 4);
            if (i < d && i % 32 == 0) smeta[sp_meta_word(g_bid(), i / 32, d)] = nibble;
        }
#endif
    }
    g_launch_next();
}

// act = silu(gate) * up (silu_mul_f32's values, bitwise; not stored where act is null) and
// the down product's f16 operands of act (split_f16's, bitwise) in one launch: saves
// split_f16's launch and its read of act. Eight elements a thread; grid x block x 8 covers n. The GEMM is let in at the end.
//
// lo8 (lo null): the low halves in FP8 (greta_device.h).
GRETA_KERNEL void silu_mul_split_f16(const float* gate, const float* up, float* act, g_half* hi, g_half* lo,
                                     unsigned char* lo8, unsigned n) {
    g_wait_previous();
    unsigned i = (g_bid() * g_bdim() + g_tid()) * 8;
    if (i + 8 <= n) {
        float g[8], u[8];
        g_load_f8(gate + i, g);
        g_load_f8(up + i, u);
        g_f4 a[2];
        g_h8 h, l;
        float r[8];
        for (unsigned j = 0; j < 8; ++j) {
            float v = g_silu_mul(g[j], u[j]);
            a[j / 4].v[j % 4] = v;
            g_split_f16(v, &h.v[j], &l.v[j]);
            r[j] = v - g_h2f(h.v[j]);
        }
        if (act) {
            *(g_f4*)(act + i) = a[0];
            *(g_f4*)(act + i + 4) = a[1];
        }
        *(g_h8*)(hi + i) = h;
        if (lo) *(g_h8*)(lo + i) = l;
#if defined(GRETA_FP8)
        if (lo8) *(uint2*)(lo8 + i) = g_lo8x8(r);
#endif
    } else {
        for (; i < n; ++i) {
            float v = g_silu_mul(gate[i], up[i]);
            g_half h, l;
            g_split_f16(v, &h, &l);
            if (act) act[i] = v;
            hi[i] = h;
            if (lo) lo[i] = l;
#if defined(GRETA_FP8)
            if (lo8) lo8[i] = g_lo8(v - g_h2f(h));
#endif
        }
    }
    g_launch_next();
}

#if defined(GRETA_FP8)
// split_f16 with FP8 low halves (`--split-lo fp8`) over n = t * k values (n % 8 == 0): hi
// as split_f16 writes it, lo8 as the norm and SwiGLU write it (greta_device.h), for inputs
// no fused kernel wrote (and after an observer's change). Grid-wide, 8 values a thread.
GRETA_KERNEL void split_f16_lo8(const float* x, g_half* hi, unsigned char* lo8, unsigned long n) {
    g_wait_previous();
    const unsigned long i = ((unsigned long)g_bid() * g_bdim() + g_tid()) * 8;
    if (i < n) {
        float v[8], r[8];
        g_load_f8(x + i, v);
        g_h8 h;
        for (unsigned j = 0; j < 8; ++j) {
            h.v[j] = g_f2h(v[j]);
            r[j] = v[j] - g_h2f(h.v[j]);
        }
        *(g_h8*)(hi + i) = h;
        *(uint2*)(lo8 + i) = g_lo8x8(r);
    }
    g_launch_next();
}

// split_f16_lo8 with the low halves 2:4-sparse (docs/sparse-lo.md): x [t][k] f32 (k % 32 ==
// 0) to hi [t][k] (split_f16's), q [t][k / 2], each 4 columns' two largest FP8 low halves
// (magnitude as e5m2's byte orders it; the lower index on a tie) in column order, and their
// metadata (sp_meta_word's tiling: a nibble a 4 columns, bits 1:0 and 3:2 the kept indices).
// A thread a metadata word (32 columns) over rows_padded rows (a multiple of 128: the GEMM's
// row tiles read whole 64-row blocks) and the words of ceil(k / 128) steps; rows past t and
// words past k get 0x44444444 (columns 0 and 1 of each 4: a valid pattern over zeros).
GRETA_KERNEL void split_f16_lo8s(const float* x, g_half* hi, unsigned char* q, unsigned* meta, unsigned t, unsigned k,
                                 unsigned rows_padded) {
    g_wait_previous();
    const unsigned words = (k + 127) / 128 * 4;
    const unsigned long i = (unsigned long)g_bid() * g_bdim() + g_tid();
    if (i < (unsigned long)rows_padded * words) {
        const unsigned r = (unsigned)(i / words), j = (unsigned)(i % words);
        unsigned word = 0x44444444u;
        if (r < t && 32 * j < k) {
            const unsigned long at = (unsigned long)r * k + 32 * j;
            // The 32 FP8 low halves as 8 words: word c holds columns 4 c .. + 3 (byte b: 4 c + b).
            unsigned lw[8];
#pragma unroll
            for (unsigned v8 = 0; v8 < 4; ++v8) {
                float v[8], rr[8];
                g_load_f8(x + at + 8 * v8, v);
                g_h8 h;
#pragma unroll
                for (unsigned e = 0; e < 8; ++e) {
                    h.v[e] = g_f2h(v[e]);
                    rr[e] = v[e] - g_h2f(h.v[e]);
                }
                *(g_h8*)(hi + at + 8 * v8) = h;
                const uint2 b = g_lo8x8(rr);
                lw[2 * v8] = b.x;
                lw[2 * v8 + 1] = b.y;
            }
            unsigned ow[4] = {0u, 0u, 0u, 0u};
            word = 0;
#pragma unroll
            for (unsigned c = 0; c < 8; ++c) {
                unsigned kept;
                word |= g_sparse24(lw[c], &kept) << (4 * c);
                ow[c / 2] |= kept << (16 * (c & 1));
            }
            *(uint4*)(q + (unsigned long)r * (k / 2) + 16 * j) = make_uint4(ow[0], ow[1], ow[2], ow[3]);
        }
        meta[sp_meta_word(r, j, k)] = word;
    }
    g_launch_next();
}

// The FP8 copy of an f16 weight matrix for the lo products, under one power-of-two scale
// for the whole matrix (the GEMM folds it into each step's row scales): absmax_f16 takes
// the largest |w| into *m (as bits: non-negative floats order as unsigned integers; *m
// zeroed first), then quantize_e4m3 writes w8 = e4m3(w / scale) and, from block 0, the
// scale. n % 8 == 0. Run once, when `--split-lo fp8` is set. Grid-stride; block: a multiple
// of the wave.
GRETA_KERNEL void absmax_f16(const g_half* w, unsigned long n, unsigned* m) {
    g_wait_previous();
    GRETA_SHARED float scratch[MAX_BLOCK / GRETA_WAVE];
    float v = 0.0f;
    for (unsigned long i = ((unsigned long)g_bid() * g_bdim() + g_tid()) * 8; i < n;
         i += (unsigned long)gridDim.x * g_bdim() * 8) {
        float x[8];
        g_load_h8(w + i, x);
        const float a = g_max8_abs(x);
        v = a > v ? a : v;
    }
    v = g_block_max(v, scratch);
    if (g_tid() == 0) atomicMax(m, __float_as_uint(v));
    g_launch_next();
}
GRETA_KERNEL void quantize_e4m3(const g_half* w, unsigned long n, const unsigned* m, unsigned char* w8,
                                float* scale) {
    g_wait_previous();
    const float mx = __uint_as_float(*m), inv = g_lo8_inv_scale(mx);
    for (unsigned long i = ((unsigned long)g_bid() * g_bdim() + g_tid()) * 8; i < n;
         i += (unsigned long)gridDim.x * g_bdim() * 8) {
        float x[8];
        g_load_h8(w + i, x);
        *(uint2*)(w8 + i) = g_e4m3x8(x, inv);
    }
    if (g_bid() == 0 && g_tid() == 0) *scale = g_lo8_scale(mx);
    g_launch_next();
}
#endif

// y[row] = dot(w[row, :], x) for f16 weights [n, k], f32 x. Grid: n rows; block: power of
// two <= 1024. The plain, block-per-row baseline gemv3_f16 (gemv.hip) is checked against.
GRETA_KERNEL void gemv_f16(const g_half* w, const float* x, float* y, unsigned k) {
    g_overlap_entry();
    GRETA_SHARED float scratch[MAX_BLOCK];
    unsigned row = g_bid();
    const g_half* wr = w + (unsigned long)row * k;
    float acc = 0.0f;
    for (unsigned i = g_tid(); i < k; i += g_bdim()) acc += g_h2f(wr[i]) * x[i];
    float total = g_block_sum(acc, scratch);
    if (g_tid() == 0) y[row] = total;
}

// The argmax's scan: the index of the largest of x[0..n) (the first on ties). One block, power
// of two threads <= 1024. A thread loads ARGMAX_VECS 16-byte vectors at once before it compares any:
// one value per round trip took SmolLM2's 49 152 logits 48 dependent round trips (24 µs of a
// 500 µs decode step in place, H200, session 9); now 3. x must be 16-byte aligned (a buffer's
// start: the launcher passes one).
#define ARGMAX_VECS 4
// (v, i) replaces the best so far (*bv, *bi) when it is better: a NaN beats every number (so
// that a NaN among the logits reaches the pick, which flags it: g_pick_write), then the
// larger value, then the lower index. Start from (-inf, 0xffffffff), which any element beats.
GRETA_DEVICE void g_argmax_take(float v, unsigned i, float* bv, unsigned* bi) {
    const bool v_nan = v != v, b_nan = *bv != *bv;
    if (v_nan ? (!b_nan || i < *bi) : (!b_nan && (v > *bv || (v == *bv && i < *bi)))) {
        *bv = v;
        *bi = i;
    }
}
// The thread's part of the scan: the 16-byte vectors i0, i0 + block, ... below v1 of x,
// ARGMAX_VECS of them loaded before any is compared.
GRETA_DEVICE void g_argmax_scan(const float* x, unsigned i0, unsigned v1, float* bv, unsigned* bi) {
    const unsigned b = g_bdim();
    for (; i0 < v1; i0 += ARGMAX_VECS * b) {
        g_f4 v[ARGMAX_VECS];
        for (unsigned u = 0; u < ARGMAX_VECS; ++u)
            if (i0 + u * b < v1) v[u] = *(const g_f4*)(x + 4 * (i0 + u * b));
        for (unsigned u = 0; u < ARGMAX_VECS; ++u)
            if (i0 + u * b < v1)
                for (unsigned e = 0; e < 4; ++e) g_argmax_take(v[u].v[e], 4 * (i0 + u * b) + e, bv, bi);
    }
}
// A pick's last act: the token goes to out[0] (the next step's input), the position moves on
// by `by` (the pass's rows) and the token is also kept at history[new position], where the
// host reads it while the next step already runs. Logits with a NaN have no token to give
// (the host sampler refuses them): history gets G_PICK_NAN, which the host reports as an
// error (PICK_NAN in crates/greta-kernels/src/gpu/ops.rs), and out gets token 0 so that a step
// already issued behind this one reads a row of the embedding, not past it. One thread.
#define G_PICK_NAN 0xffffffffu
GRETA_DEVICE void g_pick_write(unsigned tok, bool nan, unsigned* out, unsigned* pos0, unsigned by, unsigned* history,
                               unsigned history_len) {
    *out = nan ? 0u : tok;
    unsigned p = *pos0 + by;
    *pos0 = p;
    if (p < history_len) history[p] = nan ? G_PICK_NAN : tok;
}

// The argmax of x[..n] (first on ties) as a pick (g_pick_write). One block.
GRETA_KERNEL void argmax_f32(const float* x, unsigned n, unsigned* out, unsigned* pos0, unsigned by,
                             unsigned* history, unsigned history_len) {
    g_overlap_entry();
    GRETA_SHARED float best_v[MAX_BLOCK];
    GRETA_SHARED unsigned best_i[MAX_BLOCK];
    unsigned t = g_tid();
    float bv = -__builtin_inff();
    unsigned bi = 0xffffffffu;
    const unsigned n4 = n / 4, b = g_bdim();
    g_argmax_scan(x, t, n4, &bv, &bi);
    for (unsigned i = 4 * n4 + t; i < n; i += b) g_argmax_take(x[i], i, &bv, &bi);
    best_v[t] = bv;
    best_i[t] = bi;
    g_sync();
    for (unsigned s = g_bdim() / 2; s > 0; s >>= 1) {
        if (t < s) g_argmax_take(best_v[t + s], best_i[t + s], &best_v[t], &best_i[t]);
        g_sync();
    }
    if (t == 0) g_pick_write(best_i[0], best_v[0] != best_v[0], out, pos0, by, history, history_len);
}

#if defined(GRETA_CLUSTERS)
// The same argmax over a thread-block cluster (NVIDIA sm_90): block b of the cluster scans
// the b-th share of x's 16-byte vectors (the last block also the n % 4 tail), in one round of
// loads for vocabularies up to ~131 k at 8 blocks of 1024 threads (argmax_f32 takes three
// for SmolLM2's 49 152); each block's best comes from wave shuffles and one LDS step (not a
// ten-step LDS tree), and block 0 takes the best of the blocks' bests through distributed
// shared memory. Ties go to the lower index at every step, so the pick is argmax_f32's.
// Grid: one cluster of ARGMAX_CLUSTER blocks along x; block: 1024 threads.
#define ARGMAX_CLUSTER 8
// (value, index) of the better of two candidates: the larger value, the lower index on ties.
GRETA_DEVICE void g_argmax_shfl(float* bv, unsigned* bi, unsigned m) {
    float ov = __shfl_xor_sync(0xffffffffu, *bv, m);
    unsigned oi = __shfl_xor_sync(0xffffffffu, *bi, m);
    g_argmax_take(ov, oi, bv, bi);
}
GRETA_KERNEL void argmax_f32_cluster(const float* x, unsigned n, unsigned* out, unsigned* pos0, unsigned by,
                                     unsigned* history, unsigned history_len) {
    g_overlap_entry();
    GRETA_SHARED float wave_v[32];
    GRETA_SHARED unsigned wave_i[32];
    // This block's best: the value, and the index's bits (a peer reads both as floats).
    GRETA_SHARED float best[2];
    const unsigned t = g_tid(), b = g_bdim(), blk = g_bid(), blocks = g_cluster_blocks();
    const unsigned n4 = n / 4, share = (n4 + blocks - 1) / blocks;
    const unsigned v0 = blk * share < n4 ? blk * share : n4, v1 = v0 + share < n4 ? v0 + share : n4;
    float bv = -__builtin_inff();
    unsigned bi = 0xffffffffu;
    g_argmax_scan(x, v0 + t, v1, &bv, &bi);
    if (blk == blocks - 1)
        for (unsigned i = 4 * n4 + t; i < n; i += b) g_argmax_take(x[i], i, &bv, &bi);
    for (unsigned m = 16; m > 0; m >>= 1) g_argmax_shfl(&bv, &bi, m);
    if (g_lane() == 0) {
        wave_v[t / 32] = bv;
        wave_i[t / 32] = bi;
    }
    g_sync();
    if (t < 32) {
        bv = t < b / 32 ? wave_v[t] : -__builtin_inff();
        bi = t < b / 32 ? wave_i[t] : 0xffffffffu;
        for (unsigned m = 16; m > 0; m >>= 1) g_argmax_shfl(&bv, &bi, m);
        if (t == 0) {
            best[0] = bv;
            best[1] = __uint_as_float(bi);
        }
    }
    g_cluster_sync();
    if (blk == 0 && t == 0) {
        float v = best[0];
        unsigned i = __float_as_uint(best[1]);
        for (unsigned r = 1; r < blocks; ++r) {
            const float* peer = g_cluster_peer(best, r);
            g_argmax_take(peer[0], __float_as_uint(peer[1]), &v, &i);
        }
        g_pick_write(i, v != v, out, pos0, by, history, history_len);
    }
    // No block leaves while block 0 may still read its best.
    g_cluster_sync();
}
#endif

// cache[(*pos0 + r) * kv_row + i] = f16(src[r * kv_row + i]). Grid: rows; block: any.
GRETA_KERNEL void kv_append_f16(const float* src, g_half* cache, const unsigned* pos0, unsigned kv_row) {
    g_overlap_entry();
    unsigned r = g_bid();
    unsigned long dst = (unsigned long)(*pos0 + r) * kv_row;
    for (unsigned i = g_tid(); i < kv_row; i += g_bdim()) cache[dst + i] = g_f2h(src[(unsigned long)r * kv_row + i]);
}

// *pos0 += by: the end of a pass whose logits go to the host (a pick advances the position itself).
GRETA_KERNEL void advance_pos(unsigned* pos0, unsigned by) {
    g_overlap_entry();
    if (g_tid() == 0 && g_bid() == 0) *pos0 += by;
}

// Draws the next token exactly as the host Sampler does for temperature > 0, top-k in
// 1..=SAMPLE_K_MAX and top-p, without leaving the device: the top_k largest of
// v = logits / temperature in the host's order (f32::total_cmp descending, index ascending),
// then their softmax, cut at top_p, and a draw from the splitmix64 stream whose state is
// *rng (advanced once per draw, as on the host).
// The top_k are found by a radix select on v's bits (a key whose unsigned order is
// total_cmp's): a histogram of the keys' top 12 bits gives the bin of the top_k-th largest;
// once the keys in that bin and above number at most SAMPLE_CANDIDATES, one coalesced pass
// gathers them into LDS and each one's rank among them (key descending, index ascending)
// says whether it is in. Until then the next 12 (then 8) bits are counted among the keys of
// that bin. Only when more than SAMPLE_CANDIDATES keys tie at the top_k-th's exact value do
// contiguous chunks (index order) decide which ties are in. Real logits have a tail, so one
// histogram and one gather usually do: two passes over the logits, where session 21's form
// always made three or four, two of them one thread per chunk (uncoalesced), and the form
// before it top_k block-wide argmaxes (0.5 ms a token at top_k 40 over 49 152 logits).
// One block of SAMPLE_BLOCK threads.
#define SAMPLE_K_MAX 256
#define SAMPLE_BLOCK 1024
#define SAMPLE_BINS 4096
#define SAMPLE_CANDIDATES 1024
// The unsigned key of v whose order is f32::total_cmp's (-0 below +0; NaN at the ends).
GRETA_DEVICE unsigned g_total_key(float v) {
    const unsigned u = g_float_bits(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// Inclusive prefix sum of x over the wave's lanes (shuffles; every lane calls).
GRETA_DEVICE unsigned g_wave_inclusive_sum(unsigned x) {
    const unsigned lane = g_lane();
    for (unsigned d = 1; d < GRETA_WAVE; d <<= 1) {
        const unsigned y = g_float_bits(g_shfl(g_bits_float(x), lane >= d ? lane - d : lane));
        if (lane >= d) x += y;
    }
    return x;
}
// Exclusive prefix sum of x over the block's SAMPLE_BLOCK threads (x[t] in, the sum before t
// out; the total in *total): the waves' sums by shuffles, then wave 0 scans the waves'
// totals. buf: SAMPLE_BLOCK / GRETA_WAVE words of LDS. Every thread calls. Three barriers
// (an LDS Hillis-Steele scan took twenty).
GRETA_DEVICE unsigned g_block_exclusive_sum(unsigned x, unsigned* buf, unsigned* total) {
    const unsigned t = g_tid(), w = t / GRETA_WAVE, lane = g_lane(), waves = SAMPLE_BLOCK / GRETA_WAVE;
    const unsigned inclusive = g_wave_inclusive_sum(x);
    if (lane == GRETA_WAVE - 1) buf[w] = inclusive;
    g_sync();
    if (w == 0) {
        const unsigned v = g_wave_inclusive_sum(lane < waves ? buf[lane] : 0u);
        if (lane < waves) buf[lane] = v;
    }
    g_sync();
    const unsigned before = (w > 0 ? buf[w - 1] : 0u) + inclusive - x;
    *total = buf[waves - 1];
    g_sync();
    return before;
}
// Calls f(v, i) with v = logits[i] / temperature for i = begin, begin + stride, ... < end, in
// that order, the loads issued SAMPLE_UNROLL at a time: one block runs the sampler, and one
// load in flight per thread left its passes at the L2's latency per element (call 4 of
// session 21: 127 us a token over 49 152 logits).
#define SAMPLE_UNROLL 8
template <typename F>
GRETA_DEVICE void g_sample_each(const float* logits, float temperature, unsigned begin, unsigned end,
                                unsigned stride, F f) {
    unsigned i = begin;
    for (; i + (SAMPLE_UNROLL - 1) * stride < end; i += SAMPLE_UNROLL * stride) {
        float x[SAMPLE_UNROLL];
#pragma unroll
        for (unsigned j = 0; j < SAMPLE_UNROLL; ++j) x[j] = logits[i + j * stride];
#pragma unroll
        for (unsigned j = 0; j < SAMPLE_UNROLL; ++j) f(x[j] / temperature, i + j * stride);
    }
    for (; i < end; i += stride) f(logits[i] / temperature, i);
}
// The radix select's state between passes (LDS).
struct SampleSelect {
    unsigned prefix;     // the digits found so far, the bits below them zero
    unsigned want;       // how many keys with that prefix are in
    unsigned at_or_above; // keys >= prefix (those above it and all that share it)
    unsigned slots;      // the gather's next free slot
    unsigned nan;        // whether a logit is NaN (the first pass looks)
};
// One radix pass: the histogram of digit (key >> shift) & (2^width - 1) over the keys whose
// bits under `mask` are sel->prefix, then the digit of the sel->want-th largest among them.
// Thread t holds bins 4t .. 4t + 3. Every thread calls.
GRETA_DEVICE void g_sample_digit(const float* logits, unsigned n, float temperature, unsigned mask, unsigned shift,
                                 unsigned width, unsigned* hist, unsigned* scan, SampleSelect* sel) {
    const unsigned t = g_tid();
    for (unsigned b = t; b < SAMPLE_BINS; b += SAMPLE_BLOCK) hist[b] = 0u;
    g_sync();
    const unsigned prefix = sel->prefix, want = sel->want, above_prefix = sel->at_or_above;
    g_sample_each(logits, temperature, t, n, SAMPLE_BLOCK, [&](float v, unsigned) {
        const unsigned key = g_total_key(v);
        if ((key & mask) == prefix) g_atomic_add_lds(&hist[(key >> shift) & ((1u << width) - 1u)], 1u);
        if (mask == 0u && v != v) sel->nan = 1u;
    });
    g_sync();
    // The keys in the bins above thread t's: the total less the sum up to and with its own.
    const unsigned b0 = 4u * t;
    const unsigned mine = hist[b0] + hist[b0 + 1] + hist[b0 + 2] + hist[b0 + 3];
    unsigned total;
    const unsigned below = g_block_exclusive_sum(mine, scan, &total);
    const unsigned above = total - below - mine;
    if (above < want && want <= above + mine) {
        unsigned acc = above;
        for (unsigned j = 4; j-- > 0;) {
            const unsigned c = hist[b0 + j];
            if (want <= acc + c) {
                sel->prefix = prefix | ((b0 + j) << shift);
                sel->want = want - acc;
                // The keys above the prefix's bin, those above this bin in it, the bin.
                sel->at_or_above = (above_prefix - total) + acc + c;
                break;
            }
            acc += c;
        }
    }
    g_sync();
}
GRETA_KERNEL void sample_topk(const float* logits, unsigned n, float temperature, unsigned top_k, float top_p,
                              unsigned long long* rng, unsigned* out, unsigned* pos0, unsigned by,
                              unsigned* history, unsigned history_len) {
    g_overlap_entry();
    GRETA_SHARED unsigned hist[SAMPLE_BINS];
    GRETA_SHARED unsigned scan[SAMPLE_BLOCK / GRETA_WAVE];
    GRETA_SHARED SampleSelect sel;
    // The keys gathered (any order), then the top k in order and their probabilities.
    GRETA_SHARED float pick_v[SAMPLE_CANDIDATES];
    GRETA_SHARED unsigned pick_k[SAMPLE_CANDIDATES], pick_i[SAMPLE_CANDIDATES];
    GRETA_SHARED float cand_v[SAMPLE_K_MAX], probs[SAMPLE_K_MAX];
    GRETA_SHARED unsigned cand_i[SAMPLE_K_MAX];
    const unsigned t = g_tid();
    const unsigned k = top_k < n ? top_k : n;
    if (t == 0) sel = SampleSelect{0u, k, n, 0u, 0u};
    // Digits of 12, 12 and 8 bits, until the keys at or above the k-th's bin fit in LDS.
    unsigned mask = 0u;
    bool gathered = false;
    for (unsigned pass = 0; pass < 3 && !gathered; ++pass) {
        const unsigned shift = pass == 0 ? 20u : pass == 1 ? 8u : 0u;
        const unsigned width = pass == 2 ? 8u : 12u;
        g_sample_digit(logits, n, temperature, mask, shift, width, hist, scan, &sel);
        if (sel.nan) {
            if (t == 0) g_pick_write(0u, true, out, pos0, by, history, history_len);
            return;
        }
        mask |= ((1u << width) - 1u) << shift;
        gathered = sel.at_or_above <= SAMPLE_CANDIDATES;
    }
    unsigned picked = k;
    if (gathered) {
        // Every key >= the bin's lowest, in any order: they are ranked below.
        const unsigned low = sel.prefix;
        g_sample_each(logits, temperature, t, n, SAMPLE_BLOCK, [&](float v, unsigned i) {
            const unsigned key = g_total_key(v);
            if (key >= low) {
                const unsigned slot = g_atomic_add_lds(&sel.slots, 1u);
                pick_v[slot] = v;
                pick_k[slot] = key;
                pick_i[slot] = i;
            }
        });
        picked = sel.at_or_above;
    } else {
        // More than SAMPLE_CANDIDATES keys share the k-th's value: every key above it is in,
        // and of its ties those of lowest index, found over contiguous chunks so that the
        // block's order is the index order (a thread a chunk: uncoalesced, and rare).
        const unsigned thr = sel.prefix, ties = sel.want;
        const unsigned chunk = (n + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK;
        const unsigned a = t * chunk < n ? t * chunk : n, e = a + chunk < n ? a + chunk : n;
        unsigned above_n = 0u, equal_n = 0u;
        g_sample_each(logits, temperature, a, e, 1, [&](float v, unsigned) {
            const unsigned key = g_total_key(v);
            above_n += key > thr;
            equal_n += key == thr;
        });
        unsigned total;
        const unsigned equal_before = g_block_exclusive_sum(equal_n, scan, &total);
        const unsigned equal_take =
            equal_before >= ties ? 0u : (ties - equal_before < equal_n ? ties - equal_before : equal_n);
        unsigned slot = g_block_exclusive_sum(above_n + equal_take, scan, &total);
        unsigned equal_left = equal_take;
        g_sample_each(logits, temperature, a, e, 1, [&](float v, unsigned i) {
            const unsigned key = g_total_key(v);
            bool in = key > thr;
            if (key == thr && equal_left > 0u) {
                in = true;
                --equal_left;
            }
            if (in) {
                pick_v[slot] = v;
                pick_k[slot] = key;
                pick_i[slot] = i;
                ++slot;
            }
        });
    }
    g_sync();
    // Each gathered key's place in (key descending, index ascending); the first k are in.
    for (unsigned c = t; c < picked; c += SAMPLE_BLOCK) {
        const unsigned key = pick_k[c], idx = pick_i[c];
        unsigned rank = 0u;
        for (unsigned j = 0; j < picked; ++j) rank += pick_k[j] > key || (pick_k[j] == key && pick_i[j] < idx);
        if (rank < k) {
            cand_v[rank] = pick_v[c];
            cand_i[rank] = idx;
        }
    }
    g_sync();
    if (t < k) probs[t] = g_exp(cand_v[t] - cand_v[0]);
    g_sync();
    if (t != 0) return;
    // The host's sums, in the host's order.
    float sum = 0.0f;
    for (unsigned c = 0; c < k; ++c) sum += probs[c];
    for (unsigned c = 0; c < k; ++c) probs[c] /= sum;
    unsigned keep = k;
    if (top_p < 1.0f) {
        float acc = 0.0f;
        for (unsigned c = 0; c < k; ++c) {
            acc += probs[c];
            if (acc >= top_p) { keep = c + 1; break; }
        }
        float s2 = 0.0f;
        for (unsigned c = 0; c < keep; ++c) s2 += probs[c];
        for (unsigned c = 0; c < keep; ++c) probs[c] /= s2;
    }
    unsigned long long state = *rng + 0x9e3779b97f4a7c15ull;
    *rng = state;
    unsigned long long z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    float r = (float)((z ^ (z >> 31)) >> 40) / (float)(1u << 24);
    float acc = 0.0f;
    unsigned chosen = cand_i[keep - 1];
    for (unsigned c = 0; c < keep; ++c) {
        acc += probs[c];
        if (r < acc) { chosen = cand_i[c]; break; }
    }
    g_pick_write(chosen, false, out, pos0, by, history, history_len);
}
