// Attention on the matrix units: flash-style causal GQA attention for prefill, and decode
// attention split over the KV length. K and V come from the f16 cache ([pos][kv_head][d]);
// queries are f32 and the output (the attention context) f32. Positions are read from device
// memory (*pos0) so a captured decode graph replays unchanged from token to token.
#include "decode_splits.h"

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
    g_overlap_entry();
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

#if defined(GRETA_WGMMA)
// Prefill attention with S and O in registers (FlashAttention-2's shape) for head_dim HD of
// 64 or 128, NVIDIA sm_90a (the only NVIDIA target built): WAVES waves per block, 16 query
// rows each, share key/value tiles of FA_KEYS keys that the TMA unit copies into LDS, two
// tiles in flight (the copy of the next tile runs under the products of this one). Per
// tile, a wave computes S = Q Kᵀ on the matrix units (Q as hi + lo f16 fragments held in
// registers for the whole kernel, K fragments by ldmatrix), the online softmax on S where the
// HMMA accumulators leave it (lane l holds rows l / 4 and l / 4 + 8; a row's 64 scores sit in
// the 4 lanes of a quad),
// and O += P V with P taken straight from those registers as the A operand (the m16n8k16
// accumulator and A layouts line up) and V fragments by ldmatrix.trans; each row's sum of P
// comes from the same products, P times a column of ones. Nothing but K and V (and Q and
// its RoPE angles once, on their way into registers) passes through LDS: 2 stages x (K + V)
// x FA_KEYS x HD halves of dynamic shared memory (32 KiB at HD 64, 64 KiB at HD 128, + 1 KiB
// for the boxes' 1024-byte alignment; the launcher opts in). Blocks
// are ordered by the keys they see (the last rows see the most), longest first, paired on a
// multiprocessor with the shortest (`sms`).
// The softmax numerics are the LDS kernel's above but for the exponential and the
// normalisation: scores scaled in f32, exponentials as 2^x on the special function unit
// (relative error ~2^-22, below the f16 rounding of P that follows), P rounded to f16 and
// summed as rounded, outputs times one reciprocal a row. Session 26 took the kernel from
// 40.7 to 20.5 µs a 7B layer (H200) by cutting its instructions: a branch around every
// score's expf, a division (with its slow-path check) an output, address arithmetic a tile,
// and by the block order (docs/performance.md). CDNA keeps the LDS kernel
// (docs/amd.md: MFMA's accumulator is the transpose of its A operand, so the same idea there
// computes Sᵀ = K Qᵀ).
// head_dim 128 on sm_90a multiplies with wgmma instead (fa_wgmma below): the same block,
// tiles and softmax, the products on the warpgroup's matrix units.
// Grid: (ceil(rows / (16 WAVES)), n_heads); block: WAVES waves; dynamic shared memory:
// fa_shared_bytes(HD) (gpu/attention.rs).
#define FA_KEYS 64
// Row r, 16-byte chunk c of a [FA_KEYS][HD] f16 tile, chunks XOR-swizzled by r % 8: the 8
// rows one ldmatrix reads at one chunk hit 8 different bank groups. At HD 64 (128-byte rows)
// this is the TMA's 128-byte swizzle of a [FA_KEYS][64] box, which is how the K and V tiles
// arrive; Q's staging uses it at every HD.
template <unsigned HD>
GRETA_DEVICE unsigned fa_at(unsigned r, unsigned c) { return r * HD + ((c ^ (r & 7u)) << 3); }
// The K and V tiles as the TMA writes them: HD / 64 boxes of [FA_KEYS][64] halves side by
// side, 128-byte rows in the 128-byte swizzle (chunk c of row r at chunk c ^ (r % 8), boxes
// 1024-byte aligned): fa_at's layout at HD 64, and at HD 128 the operand layout wgmma reads
// by descriptor (K-major for Kᵀ, N-major for V).

// Whether the prefill attention of head_dim `hd` multiplies on the warpgroup's matrix units:
// head_dim 128 on sm_90a (its block is already 4 waves, one warpgroup of 64 rows). Its S = Q Kᵀ
// is 16 m64n64k16 products a key tile (Q hi and lo from registers, K by descriptor) where the
// mma.sync form issues 128 m16n8k16 ones a wave and an ldmatrix for every two, and its O += P V
// 4 m64n128k16 (P from registers, V by descriptor, N-major) where that form issues 64 and 32
// ldmatrix.trans; the products run asynchronously and read K and V straight from the tiles.
// The softmax, P's rounding and the sums are the same instructions on the same registers.
template <unsigned HD>
constexpr bool fa_wgmma = HD == 128;

// Two f16 of the output's operands, stored together.
struct __align__(4) g_h2 {
    g_half v[2];
};

template <unsigned HD, unsigned WAVES>
GRETA_DEVICE void attn_prefill_fa(const float* GRETA_RESTRICT q, const g_tmap* tk, const g_tmap* tv,
                                  float* GRETA_RESTRICT ctx,
                                  g_half* GRETA_RESTRICT hi, g_half* GRETA_RESTRICT lo,
                                  unsigned char* GRETA_RESTRICT lo8, const unsigned* pos0,
                                  unsigned rows, unsigned n_heads, unsigned n_kv_heads, float scale, unsigned sms,
                                  const float* GRETA_RESTRICT angles, unsigned half_split, g_half* smem) {
    constexpr unsigned DC = HD / 16, CH = HD / 8, NT = FA_KEYS / 8, BLOCK_ROWS = 16 * WAVES;
    constexpr unsigned THREADS = GRETA_WAVE * WAVES;
    constexpr unsigned TILE = FA_KEYS * HD; // halves of one K or V tile
    static_assert(BLOCK_ROWS <= FA_KEYS, "Q is staged through one K tile");
    // head_dim 128 on sm_90a: the products on the warpgroup's matrix units (fa_wgmma).
    constexpr bool WG = fa_wgmma<HD>;
    static_assert(!WG || WAVES == 4, "the wgmma form is one warpgroup: 64 rows");
    static_assert(WG || HD == 64, "the mma.sync form's tiles are single TMA boxes: HD 64");
    // The tiles are TMA boxes (and the wgmma form's operands) in 1024-byte swizzle atoms (the
    // launcher adds 1 KiB).
    smem = (g_half*)(((unsigned long)smem + 1023) & ~1023ul);
    // Stages of K and V tiles: the copies of S - 1 tiles are in flight under a tile's
    // products (3 stages measured level with the wgmma form, session 45; the launcher sizes
    // 2: fa_shared_bytes). The last stage holds the RoPE angles, then Q's hi and lo, until
    // the main loop.
    constexpr unsigned S = 2;
    g_half* const qstage = smem + 2 * (S - 1) * TILE;
    static_assert(BLOCK_ROWS * HD * sizeof(float) <= 2 * TILE * sizeof(g_half), "the angles fit a stage");
    const unsigned tid = g_tid(), wave = tid / GRETA_WAVE, l = g_lane();
    // Work items (row tile, head), longest first (the last row tile sees the most keys under
    // the causal mask). The first `sms` blocks take them in that order and the rest from the
    // shortest back: block b and block b + sms, which the scheduler puts on one
    // multiprocessor when two fit there, then carry about the same number of key tiles
    // together (7B: at most 9 tiles an SM, where longest-first alone put up to 12). sms = 0:
    // longest first throughout.
    unsigned r0, h;
    {
        const unsigned T = gridDim.x, H = gridDim.y, b = g_bid() + T * g_bid_y();
        const unsigned first = sms ? sms : T * H;
        const unsigned k = b < first ? b : T * H - 1 - (b - first);
        r0 = (T - 1 - k / H) * BLOCK_ROWS;
        h = k % H;
    }
    const unsigned kvh = h / (n_heads / n_kv_heads);
    // A stage's "full" barrier: thread 0's arrival plus its K and V boxes' bytes. Its phases
    // alternate parity as the stage is reused.
    GRETA_SHARED unsigned long long full[S];
    if (tid == 0) {
        for (unsigned s = 0; s < S; ++s) g_mbar_init(&full[s], 1);
        g_mbar_init_fence();
    }

    // Q's loads go out first (they do not wait on pos0), every one before the first
    // conversion waits on one.
    constexpr unsigned QN = BLOCK_ROWS * CH / THREADS;
    float qv[QN][8];
    for (unsigned n = 0; n < QN; ++n) {
        const unsigned c = tid + n * THREADS, r = r0 + c / CH;
        if (r < rows) {
            g_load_f8(q + ((unsigned long)r * n_heads + h) * HD + 8 * (c % CH), qv[n]);
        } else {
            for (unsigned x = 0; x < 8; ++x) qv[n][x] = 0.0f;
        }
    }
    const unsigned p0 = *pos0;
    const unsigned last_row = r0 + BLOCK_ROWS - 1 < rows ? r0 + BLOCK_ROWS - 1 : rows - 1;
    const unsigned n_keys = p0 + last_row + 1;

    // Tile j0's keys and values into stage st: thread 0 sends the TMA unit HD / 64 boxes of
    // [FA_KEYS][64] halves of each cache (rows past the launch's key bound read as zero) and
    // the stage's barrier counts their bytes. Stage st's K tile is at smem + 2 st TILE, its V
    // tile right after, box b of each at b FA_KEYS 64 halves (the layout above). As
    // 16-byte copies by every thread (cp.async, before session 48) they cost each thread 16
    // copies and their address arithmetic a tile, and a block barrier before the tile's
    // products: SmolLM2's prefill (head_dim 64) 2 % slower, the 7B's level (H200).
    auto copy_tile = [&](unsigned j0, unsigned st) {
        if (tid != 0) return;
        g_half* kd = smem + 2 * st * TILE;
        g_half* vd = kd + TILE;
        // The stage's last readers (ldmatrix at HD 64; Q's staging before the first use of
        // the last stage) were the generic proxy's; the block barrier before this ordered them.
        g_fence_proxy_async();
        g_mbar_arrive_expect(&full[st], 2 * TILE * sizeof(g_half));
        for (unsigned b = 0; b < HD / 64; ++b) {
            g_tma_load_2d(kd + b * FA_KEYS * 64, tk, (int)(kvh * HD + 64 * b), (int)j0, &full[st]);
            g_tma_load_2d(vd + b * FA_KEYS * 64, tv, (int)(kvh * HD + 64 * b), (int)j0, &full[st]);
        }
    };
    // The block's rows of the RoPE table into the last stage, as one group, ahead of the
    // first tiles: the rotation below then reads them from LDS. (Loaded into registers chunk by
    // chunk, each of a thread's QN chunks waited for its own round trip: QN in a row.)
    float* const angle_rows = (float*)qstage;
    if (angles)
        for (unsigned c = tid; c < BLOCK_ROWS * HD / 4; c += THREADS) {
            const unsigned r = r0 + c / (HD / 4);
            const bool valid = r < rows;
            g_copy16_async((g_half*)(angle_rows + 4 * c),
                           (const g_half*)(valid ? angles + (unsigned long)r0 * HD + 4 * c : angles), valid);
        }
    g_async_commit();
    for (unsigned t = 0; t + 1 < S; ++t)
        if (t * FA_KEYS < n_keys) copy_tile(t * FA_KEYS, t);
    // The angles are in.
    if (angles) {
        g_async_wait<0>();
        g_sync();
    }

    // RoPE on q where angles are given (the untraced prefill: rope_k_append then rotates the
    // keys alone), while tile 0 is on its way: rope_qk_append's bits, from rope_angles_f32's
    // table (row r: sin, cos of each pair) and g_rope_first / g_rope_second. A thread's chunk
    // ch holds 8 elements of its row: pairs (2 i, 2 i + 1) lie whole in it; a pair (i, i +
    // HD / 2) spans chunks ch and ch ^ (CH / 2), which lane l ^ (CH / 2) holds (c % CH =
    // tid % CH, THREADS a multiple of CH).
    static_assert(THREADS % CH == 0 && CH / 2 < GRETA_WAVE, "a chunk's partner is in the wave");
    if (angles) {
#pragma unroll
        for (unsigned n = 0; n < QN; ++n) {
            const unsigned c = tid + n * THREADS, ch = c % CH, r = r0 + c / CH;
            if (half_split) {
                // Pairs 8 (ch % (CH / 2)) .. + 7: 16 floats of the row's table (zeros past the
                // last row).
                float sc[16];
                const float* at = angle_rows + (r - r0) * HD + 16 * (ch % (CH / 2));
                g_load_f8(at, sc);
                g_load_f8(at + 8, sc + 8);
                const bool first = ch < CH / 2;
#pragma unroll
                for (unsigned x = 0; x < 8; ++x) {
                    const float other = g_shfl_xor(qv[n][x], CH / 2);
                    const float sn = sc[2 * x], cs = sc[2 * x + 1];
                    qv[n][x] = first ? g_rope_first(qv[n][x], other, sn, cs) : g_rope_second(other, qv[n][x], sn, cs);
                }
            } else if (r < rows) {
                // Pairs 4 ch .. + 3: 8 floats of the row's table.
                float sc[8];
                g_load_f8(angle_rows + (r - r0) * HD + 8 * ch, sc);
#pragma unroll
                for (unsigned m = 0; m < 4; ++m) {
                    const float x0 = qv[n][2 * m], x1 = qv[n][2 * m + 1];
                    qv[n][2 * m] = g_rope_first(x0, x1, sc[2 * m], sc[2 * m + 1]);
                    qv[n][2 * m + 1] = g_rope_second(x0, x1, sc[2 * m], sc[2 * m + 1]);
                }
            }
        }
    }

    // Q = hi + lo staged through the last stage's K (hi) and V (lo) tiles, where the angles
    // were (every thread done with them first), then into registers.
    if (angles) g_sync();
    for (unsigned n = 0; n < QN; ++n) {
        const unsigned c = tid + n * THREADS;
        g_h8 qhi, qlo;
        for (unsigned x = 0; x < 8; ++x) g_split_f16(qv[n][x], &qhi.v[x], &qlo.v[x]);
        *(g_h8*)&qstage[fa_at<HD>(c / CH, c % CH)] = qhi;
        *(g_h8*)&qstage[TILE + fa_at<HD>(c / CH, c % CH)] = qlo;
    }
    // The TMA later writes tiles over these (the async proxy after this thread's stores).
    g_fence_proxy_async();
    g_sync();
    unsigned qh[DC][4], ql[DC][4];
    for (unsigned dc = 0; dc < DC; ++dc) {
        g_ldmatrix4(qh[dc], qstage + fa_at<HD>(16 * wave + l % 16, 2 * dc + l / 16));
        g_ldmatrix4(ql[dc], qstage + TILE + fa_at<HD>(16 * wave + l % 16, 2 * dc + l / 16));
    }
    g_sync();

    // The ldmatrix addresses of stage 0 (bytes in the shared window). A lane's row in an 8 x
    // 8 matrix is l % 8 = x, so its chunk c lands at chunk c ^ x (fa_at); for chunk 2 d + b
    // (d = 0 .. DC - 1, b one bit) that is 2 ((d & 4) + ((d & 3) ^ (x >> 1))) + (b ^ (x & 1)):
    // four addresses a lane, one for each d & 3, and the rest of d, the key tile's rows and
    // the stage are constants added to them. (The warpgroup form reads K and V by descriptor.)
    const unsigned mi = l / 8, x = l % 8;
    unsigned k_at[4], v_at[4];
    if constexpr (!WG)
        for (unsigned j = 0; j < 4; ++j) {
            // K as the B operand of S = Q Kᵀ: matrix mi is (keys 8 (mi / 2) .., chunk mi % 2).
            k_at[j] = g_smem_addr(smem + ((mi / 2) * 8 + x) * HD + 8 * (2 * (j ^ (x >> 1)) + ((mi % 2) ^ (x & 1))));
            // V (transposed on the way) as the B operand of O = P V: matrix mi is (keys 8 (mi %
            // 2) .., chunk mi / 2).
            v_at[j] = g_smem_addr(smem + TILE + ((mi % 2) * 8 + x) * HD +
                                  8 * (2 * (j ^ (x >> 1)) + ((mi / 2) ^ (x & 1))));
        }
    // Stage 0's K (K-major: keys are S's columns, head_dim the products' K) and V (N-major:
    // head_dim is O's columns, keys the products' K) as wgmma operands; a stage, a 16-column
    // step of head_dim in K's box and a 16-key step in V's move their start addresses by
    // constants (in 16-byte units).
    const unsigned long long k_desc = g_wgmma_desc(smem), v_desc = g_wgmma_desc_n_major(smem + TILE, FA_KEYS * 128);

    float o[2 * DC][4];
    for (unsigned nt = 0; nt < 2 * DC; ++nt)
        for (unsigned e = 0; e < 4; ++e) o[nt][e] = 0.0f;
    // Each row's sum of P (as rounded to f16), as P times a column of ones on the matrix
    // units: every column of this m16n8 tile holds it (no shuffles at the end).
    float lsum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const unsigned ones = 0x3c003c00u; // two f16 1.0
    // m: each row's running maximum in base-2 units (score x scale_log2); a true -inf (not
    // NEG_INF, which is finite) until the row sees a key.
    float m[2] = {-INFINITY, -INFINITY};
    const float scale_log2 = scale * 1.4426950408889634f;
    const unsigned qd = l % 4;
    const unsigned pos_r[2] = {p0 + r0 + 16 * wave + l / 4, p0 + r0 + 16 * wave + l / 4 + 8};
    // ph: the parity of stage st's current use.
    for (unsigned j0 = 0, st = 0, ph = 0; j0 < n_keys; j0 += FA_KEYS) {
        // The copy S - 1 tiles on goes out before this tile's products (into the stage the
        // last tile used, which every warp has left: the barrier ending the loop); then each
        // thread waits for this tile's bytes.
        const unsigned next = j0 + (S - 1) * FA_KEYS;
        if (next < n_keys) copy_tile(next, st == 0 ? S - 1 : st - 1);
        g_mbar_wait(&full[st], ph);
        // The block's last tile: its V rows past the block's keys to zero (the TMA read them
        // from the cache up to the launch's bound, positions this block does not see). Their
        // scores are masked to -inf and P is exactly 0 there, but 0 x a non-finite value in
        // memory nobody wrote would still be NaN. Once a block, so the barrier is block-uniform.
        if (j0 + FA_KEYS > n_keys) {
            g_half* vd = smem + (2 * st + 1) * TILE;
            for (unsigned c = (n_keys - j0) * CH + tid; c < FA_KEYS * CH; c += THREADS) {
                const unsigned j = c / CH, ch = c % CH;
                *(uint4*)(vd + (ch / 8) * FA_KEYS * 64 + j * 64 + 8 * (ch % 8)) = make_uint4(0u, 0u, 0u, 0u);
            }
            // Ordinary stores, read by wgmma (the async proxy) at HD 128.
            g_fence_proxy_async();
            g_sync();
        }
        const unsigned stage = st * 2 * TILE * sizeof(g_half);

        // S = Q Kᵀ, Q as hi + lo. The warpgroup's m64n64 accumulators lie as the m16n8
        // ones of each warp's 16 rows (greta_device.h), so s is the same in both forms.
        float s[NT][4];
        if constexpr (WG) {
            float(&sw)[4 * NT] = *reinterpret_cast<float(*)[4 * NT]>(&s[0][0]);
            g_wgmma_fence();
            for (unsigned dc = 0; dc < DC; ++dc) {
                // head_dim 16 dc ..: box dc / 4, 32 bytes a step along its 128-byte rows.
                const unsigned long long kd = k_desc + (stage >> 4) + (dc / 4) * (FA_KEYS * 128 >> 4) + 2 * (dc % 4);
                g_wgmma_m64n64k16_rs(sw, qh[dc], kd, dc > 0);
                g_wgmma_m64n64k16_rs(sw, ql[dc], kd, 1);
            }
            g_wgmma_commit();
            g_wgmma_wait<0>();
        } else {
            for (unsigned nt = 0; nt < NT; ++nt)
                for (unsigned e = 0; e < 4; ++e) s[nt][e] = 0.0f;
            for (unsigned dc = 0; dc < DC; ++dc)
                for (unsigned p = 0; p < NT / 2; ++p) {
                    unsigned kb[4];
                    g_ldmatrix4_at(kb, k_at[dc & 3] + stage + 2 * (16 * p * HD + 16 * (dc & 4)));
                    g_hmma16816(s[2 * p], qh[dc], kb[0], kb[1]);
                    g_hmma16816(s[2 * p], ql[dc], kb[0], kb[1]);
                    g_hmma16816(s[2 * p + 1], qh[dc], kb[2], kb[3]);
                    g_hmma16816(s[2 * p + 1], ql[dc], kb[2], kb[3]);
                }
        }

        // Online softmax in base 2 (scores times scale·log2 e, so one FFMA and one ex2 a
        // score), with no branch a score: a masked score is -inf and ex2(-inf) is 0; a row
        // that sees no key yet subtracts 0 instead of its -inf maximum. Only a tile that
        // crosses the diagonal (some row of the block sees part of it) is masked.
        unsigned pk[NT][2]; // P as f16 pairs: the P·V product's A operand
        auto softmax = [&](auto masked) {
            for (unsigned hr = 0; hr < 2; ++hr) {
                float mx = -INFINITY;
                for (unsigned nt = 0; nt < NT; ++nt)
                    for (unsigned e = 0; e < 2; ++e) {
                        float& v = s[nt][2 * hr + e];
                        if constexpr (decltype(masked)::value)
                            v = j0 + 8 * nt + 2 * qd + e <= pos_r[hr] ? v : -INFINITY;
                        mx = fmaxf(mx, v);
                    }
                mx = fmaxf(mx, g_shfl_xor(mx, 1));
                mx = fmaxf(mx, g_shfl_xor(mx, 2));
                const float m_new = fmaxf(m[hr], mx * scale_log2);
                const float m_use = m_new == -INFINITY ? 0.0f : m_new;
                const float alpha = g_exp2_approx(m[hr] - m_use);
                for (unsigned nt = 0; nt < NT; ++nt) {
                    const float p0 = g_exp2_approx(fmaf(s[nt][2 * hr], scale_log2, -m_use));
                    const float p1 = g_exp2_approx(fmaf(s[nt][2 * hr + 1], scale_log2, -m_use));
                    pk[nt][hr] = g_pack_h2(p0, p1);
                }
                m[hr] = m_new;
                for (unsigned nt = 0; nt < 2 * DC; ++nt) {
                    o[nt][2 * hr] *= alpha;
                    o[nt][2 * hr + 1] *= alpha;
                }
                lsum[2 * hr] *= alpha;
                lsum[2 * hr + 1] *= alpha;
            }
        };
        if (j0 + FA_KEYS - 1 <= p0 + r0)
            softmax(g_bool<false>{});
        else
            softmax(g_bool<true>{});

        // O += P V, P's A fragments for keys 16 kc .. straight from the softmax's registers.
        auto p_frag = [&](unsigned kc, unsigned (&a)[4]) {
            a[0] = pk[2 * kc][0], a[1] = pk[2 * kc][1], a[2] = pk[2 * kc + 1][0], a[3] = pk[2 * kc + 1][1];
        };
        if constexpr (WG) {
            unsigned a[FA_KEYS / 16][4];
            for (unsigned kc = 0; kc < FA_KEYS / 16; ++kc) {
                p_frag(kc, a[kc]);
                g_hmma16816(lsum, a[kc], ones, ones);
            }
            float(&ow)[8 * DC] = *reinterpret_cast<float(*)[8 * DC]>(&o[0][0]);
            g_wgmma_fence();
            // Keys 16 kc ..: 16 of V's 128-byte rows on; its two boxes are head_dim 0-63, 64-127.
            for (unsigned kc = 0; kc < FA_KEYS / 16; ++kc)
                g_wgmma_m64n128k16_rs_tb(ow, a[kc], v_desc + (stage >> 4) + kc * (16 * 128 >> 4), 1);
            g_wgmma_commit();
            g_wgmma_wait<0>();
        } else {
            for (unsigned kc = 0; kc < FA_KEYS / 16; ++kc) {
                unsigned a[4];
                p_frag(kc, a);
                g_hmma16816(lsum, a, ones, ones);
                for (unsigned dp = 0; dp < DC; ++dp) {
                    unsigned vb[4];
                    g_ldmatrix4_trans_at(vb, v_at[dp & 3] + stage + 2 * (16 * kc * HD + 16 * (dp & 4)));
                    g_hmma16816(o[2 * dp], a, vb[0], vb[1]);
                    g_hmma16816(o[2 * dp + 1], a, vb[2], vb[3]);
                }
            }
        }
        g_sync();
        if (++st == S) st = 0, ph ^= 1;
    }

#pragma unroll
    for (unsigned hr = 0; hr < 2; ++hr) {
        unsigned r = r0 + 16 * wave + l / 4 + 8 * hr;
        if (r >= rows) continue;
        // One division a row, then products (a division an element, with its slow-path
        // check, was a tenth of the kernel's instructions).
        const float inv = 1.0f / lsum[2 * hr];
        const unsigned long at = ((unsigned long)r * n_heads + h) * HD + 2 * qd;
        // Both loops unrolled, or o moves to the stack (272 bytes at head_dim 128).
#pragma unroll
        for (unsigned nt = 0; nt < 2 * DC; ++nt) {
            const float v0 = o[nt][2 * hr] * inv, v1 = o[nt][2 * hr + 1] * inv;
            if (ctx) *(float2*)(ctx + at + 8 * nt) = make_float2(v0, v1);
            if (hi) {
                g_h2 h2, l2;
                g_split_f16(v0, &h2.v[0], &l2.v[0]);
                g_split_f16(v1, &h2.v[1], &l2.v[1]);
                *(g_h2*)(hi + at + 8 * nt) = h2;
                if (lo) *(g_h2*)(lo + at + 8 * nt) = l2;
#if defined(GRETA_FP8)
                // split_f16_lo8's bytes.
                if (lo8) *(unsigned short*)(lo8 + at + 8 * nt) = g_lo8x2(v0 - g_h2f(h2.v[0]), v1 - g_h2f(h2.v[1]));
#endif
            }
        }
    }
}

// Waves per block: 2 at HD 64 (SmolLM2's 9 heads x 512 rows make 144 blocks, not 72 on a
// 132-multiprocessor card), 4 at HD 128 (more sharing of each K/V tile). gpu/attention.rs: fa_waves.
// hi, lo: the output projection's f16 operands of ctx (what split_f16 makes of it, bitwise),
// written beside it where hi is not null (lo where it is not null), which saves split_f16's
// launch and its read of ctx; lo8 (FP8 builds, lo null): the FP8 low halves instead, what
// split_f16_lo8 makes of ctx, bitwise. ctx null: not stored (the untraced prefill, where only
// the output product reads the attention's output, through hi and lo / lo8). angles: where
// not null, q is the Q product's unrotated output and the kernel applies RoPE (half_split:
// the pairing) as it loads it, from rope_angles_f32's table of the pass's rows.
#define ATTN_PREFILL_FA(HD, WAVES)                                                                             \
    GRETA_KERNEL void attn_prefill_fa_##HD(const float* q, const __grid_constant__ g_tmap tk,                  \
                                           const __grid_constant__ g_tmap tv,                                  \
                                           float* ctx, g_half* hi, g_half* lo, unsigned char* lo8,             \
                                           const unsigned* pos0, unsigned rows, unsigned n_heads,              \
                                           unsigned n_kv_heads, float scale, unsigned sms,                     \
                                           const float* angles, unsigned half_split) {                         \
        g_overlap_entry();                                                                                      \
        extern __shared__ GRETA_ALIGN16 g_half fa_smem[];                                                       \
        attn_prefill_fa<HD, WAVES>(q, &tk, &tv, ctx, hi, lo, lo8, pos0, rows, n_heads, n_kv_heads,             \
                                   scale, sms, angles, half_split, fa_smem);                                    \
    }
ATTN_PREFILL_FA(64, 2)
ATTN_PREFILL_FA(128, 4)
#endif

// DECODE_KEYS, DECODE_CLUSTER_MAX: kernels/decode_splits.h.
#define DECODE_BLOCK 128
#define DECODE_WAVES_MAX (DECODE_BLOCK / 32)

// Decode attention of one query row (at position *pos0) split over the KV length: block
// (s, h) takes keys [s * DECODE_KEYS, min((s + 1) * DECODE_KEYS, *pos0 + 1)) of head h, and
// each of its waves GRETA_WAVE consecutive keys of those. The kernel is latency-bound at
// decode's sizes (one wave per scheduler, nothing to switch to), so it is laid out for few
// dependent memory round trips: every K and V load a block makes is issued at once, and
// the keys before the current one before g_wait_previous (an earlier pass wrote them, and
// *pos0; every pass begins with a launch that is never overlapped, embed_f16, so it starts
// once all earlier work has finished, whether or not the host waited for it, as it does
// not when decoding a step ahead). Only the current key's K and V, which the kernel ahead
// (RoPE + append) or this one writes, and q wait.
// Two lane layouts, by head_dim (measured on an H200, docs/performance.md, session 11):
//   attn_decode_lanes (head_dim < 128): lane = key for the scores (the lane reads its whole
//     K row; q from LDS as a broadcast);
//   attn_decode_chunks (head_dim 128): lane = 16-byte chunk of a key, so each K load of a
//     wave reads whole rows (coalesced); a butterfly sums a key's chunks. It took
//     Llama-2-7B's decode from 258.6 to 274.7 tok/s; at head_dim 64 it cost SmolLM2 4-6 %
//     in every form tried, hence the split.
// Both merge the waves' (m, l, o) through LDS; with one split holding keys (the grid covers
// the capacity, the context may be shorter) the block writes ctx; otherwise it writes its
// partial (m, l, unnormalised o) and one block combines the head's splits into ctx, with no
// second launch per layer (attn_decode_finish): on NVIDIA sm_90, where the cache holds at
// most DECODE_CLUSTER_MAX splits, the splits of a head are launched as one thread-block
// cluster, leave their partials in shared memory, and its first block combines them after a
// cluster barrier; otherwise the partials go to memory and the last block of head h to
// finish (an atomic count in done[h], reset to 0 by that block for the next step) combines
// them. LEAVE (attn_decode_rope_partials_hd*): every split holding keys leaves its partial
// in memory, one split too, and returns: the output product combines them as it loads its
// input (gemv_add_splits_f16 in kernels/gemv.hip, bitwise the ctx written here), so no
// block waits for another and the combine is off the attention's critical path.
// CH = head_dim / 8 is a template argument so that every load is unrolled.
// ROPE: the attention also does the token's RoPE and KV append (rope_qk_append_f16's work,
// one launch fewer per layer): q is the unrotated query, and the g_decode_rope inputs and
// outputs below apply (otherwise r is unused).
// Grid: (n_splits, n_heads); block: DECODE_BLOCK.
struct g_decode_rope {
    const float* k_new;  // this token's unrotated key heads (n_kv_heads x head_dim)
    const float* v_new;  // and value heads
    g_half* k_cache;     // the caches, written at the current position (the same buffers
    g_half* v_cache;     // attn_decode reads)
    float* q_rot;        // the rotated query and key, f32, for the trace (QRope, KRope)
    float* k_rot;
    const float* inv_freq;
    unsigned half_split;
    float* ksh;     // LDS, head_dim floats: the rotated key (lanes)
    float* sin_sh;  // LDS, head_dim / 2 floats each: the current position's angles (chunks)
    float* cos_sh;
};
// The end both layouts share: the waves' (m, l, o) merged through LDS (o as R partial rows
// of head_dim per wave in red, summed), then ctx written (one split holds keys) or the
// split's partial published and, in the last block of head h to finish, the splits
// combined into ctx. The caller has filled red, wm and wl; every thread of the block calls.
// The loops over d run once per thread (HD <= DECODE_BLOCK) but stay loops: written as
// `if (t < HD)` they compiled SmolLM2's kernel differently (144 registers, not 188) and 8 %
// slower (session 11).
// Session 12 measured the one-barrier cluster combine below 5.7-9 % slower on SmolLM2 and
// blamed its head_dim 64 RoPE kernel's 148 registers (main then 188). Session 21 measured it
// again after the decode products were spread over the SMs (spread_shared in gpu/gemv.rs): the
// register count no longer decides (a 138-register build of the old combine ran level with
// 188), and the one-barrier combine is SmolLM2's +4 %. What decided in session 12 was where
// the products' blocks landed beside the attention's, not the attention's registers. Still
// check the registers (cuobjdump --dump-resource-usage) of a change here before measuring.
#if defined(GRETA_CLUSTERS)
// Block 0's mbarrier when a head's splits run as a cluster: every thread of every split
// holding keys arrives once, after writing its share of the split's partial into block 0.
GRETA_DEVICE unsigned long long* attn_decode_cluster_bar() {
    GRETA_SHARED unsigned long long bar;
    return &bar;
}
// At the kernel's entry, launched in clusters: block 0 sets up its mbarrier for one arrival
// per thread of the cluster, and every thread arrives (relaxed) at the cluster barrier that
// the splits wait on before their first write into block 0 (attn_decode_finish).
GRETA_DEVICE void attn_decode_cluster_entry() {
    const unsigned nb = g_cluster_blocks();
    if (nb == 1) return;
    if (g_tid() == 0 && g_cluster_rank() == 0) {
        g_mbar_init(attn_decode_cluster_bar(), nb * DECODE_BLOCK);
        g_mbar_init_fence();
    }
    g_cluster_arrive_relaxed();
}
#else
GRETA_DEVICE void attn_decode_cluster_entry() {}
#endif
template <unsigned HD, unsigned R, bool LEAVE>
GRETA_DEVICE void attn_decode_finish(const float* red, const float* wm, const float* wl, unsigned active,
                                     unsigned h, unsigned n_heads, unsigned n_splits, unsigned s, float* part_m,
                                     float* part_l, float* part_o, unsigned* done, float* ctx, unsigned* last) {
    constexpr unsigned WAVES = DECODE_BLOCK / GRETA_WAVE;
    const unsigned t = g_tid();
    const unsigned long part = (unsigned long)h * n_splits + s;
#if defined(GRETA_CLUSTERS)
    // Split x's partial o, then m and l, at psh[x * (HD + 2)] of the cluster's block 0.
    GRETA_SHARED float psh[DECODE_CLUSTER_MAX * (HD + 2)];
    // Launched in clusters, the grid's splits are one cluster (decode_cluster in gpu/attention.rs).
    const unsigned nb = g_cluster_blocks();
    const bool in_cluster = nb > 1 && active <= nb;
    float* pdst = nullptr;
    if (in_cluster) {
        // Every block arrived at the cluster barrier at entry, after block 0 set up its
        // mbarrier (attn_decode_cluster_entry): long done by now, so this wait is short.
        g_cluster_wait();
        pdst = g_cluster_map(psh, 0) + s * (HD + 2);
    }
#else
    float* const pdst = nullptr;
    const bool in_cluster = false;
#endif
    g_sync();
    // LEAVE: every split leaves its partial for the output product to combine
    // (g_ctx_from_splits, kernels/decode_splits.h), with no wait on any other block.
    float mm = wm[0];
    for (unsigned w = 1; w < WAVES; ++w) mm = wm[w] > mm ? wm[w] : mm;
    float ll = 0.0f;
    for (unsigned w = 0; w < WAVES; ++w) ll += g_exp(wm[w] - mm) * wl[w];
    for (unsigned d = t; d < HD; d += DECODE_BLOCK) {
        float od = 0.0f;
        for (unsigned w = 0; w < WAVES; ++w) {
            float sw = 0.0f;
            for (unsigned i = 0; i < R; ++i) sw += red[(w * R + i) * HD + d];
            od += g_exp(wm[w] - mm) * sw;
        }
        if (LEAVE)
            // Split-major, [split][head][d]: the block writes whole 32-byte sectors (a
            // sector partly written is filled from DRAM when read; kernels/decode_splits.h).
            part_o[((unsigned long)s * n_heads + h) * HD + d] = od;
        else if (active == 1)
            ctx[(unsigned long)h * HD + d] = od / ll;
        else if (in_cluster)
            pdst[d] = od;
        else
            part_o[part * HD + d] = od;
    }
    if (LEAVE) {
        // m and l in a sector of their own, [split][head][8]: m, l, then zeros.
        if (t < 8) part_m[(s * n_heads + h) * 8 + t] = t == 0 ? mm : t == 1 ? ll : 0.0f;
        return;
    }
    if (active == 1) return;
#if defined(GRETA_CLUSTERS)
    if (in_cluster) {
        // The head's active splits are cluster ranks 0 .. active - 1 (block s has rank s).
        // Each thread has written its share of the split's partial into block 0 and arrives
        // on block 0's mbarrier, releasing it; the splits then leave. Block 0 arrives for the
        // splits past the context (exited at once), waits for the phase and combines from
        // its own shared memory: no device-scope fence, no atomic, no second barrier, and
        // no split waits for another but block 0.
        unsigned long long* bar = attn_decode_cluster_bar();
        if (t == 0) {
            pdst[HD] = mm;
            pdst[HD + 1] = ll;
        }
        g_cluster_mbar_arrive(bar, 0);
        if (s != 0) return;
        if (t == 0 && nb > active) g_cluster_mbar_arrive_local(bar, (nb - active) * DECODE_BLOCK);
        g_cluster_mbar_wait(bar, 0);
        float pm[DECODE_CLUSTER_MAX];
        float cm = NEG_INF;
        for (unsigned x = 0; x < DECODE_CLUSTER_MAX; ++x)
            if (x < active) {
                pm[x] = psh[x * (HD + 2) + HD];
                cm = pm[x] > cm ? pm[x] : cm;
            }
        float cl = 0.0f;
        for (unsigned x = 0; x < DECODE_CLUSTER_MAX; ++x)
            if (x < active) {
                pm[x] = g_exp(pm[x] - cm);
                cl += pm[x] * psh[x * (HD + 2) + HD + 1];
            }
        for (unsigned d = t; d < HD; d += DECODE_BLOCK) {
            float od = 0.0f;
            for (unsigned x = 0; x < DECODE_CLUSTER_MAX; ++x)
                if (x < active) od += pm[x] * psh[x * (HD + 2) + d];
            ctx[(unsigned long)h * HD + d] = od / cl;
        }
        return;
    }
#endif
    if (t == 0) {
        part_m[part] = mm;
        part_l[part] = ll;
    }
    // Publish this split; the block that completes the count combines.
    g_fence_release();
    g_sync();
    if (t == 0) *last = g_atomic_inc(&done[h]) == active - 1;
    g_sync();
    if (!*last) return;
    g_fence_acquire();
    // ctx[h, d] = sum_s exp(m_s - M) o_s[d] / sum_s exp(m_s - M) l_s over the active splits
    // of head h (each holds at least one key: m_s is a score, l_s >= 1).
    const float* pm = part_m + (unsigned long)h * n_splits;
    const float* pl = part_l + (unsigned long)h * n_splits;
    float cm = NEG_INF;
    for (unsigned x = 0; x < active; ++x) cm = pm[x] > cm ? pm[x] : cm;
    float cl = 0.0f;
    for (unsigned x = 0; x < active; ++x) cl += g_exp(pm[x] - cm) * pl[x];
    for (unsigned d = t; d < HD; d += DECODE_BLOCK) {
        float od = 0.0f;
        for (unsigned x = 0; x < active; ++x)
            od += g_exp(pm[x] - cm) * part_o[((unsigned long)h * n_splits + x) * HD + d];
        ctx[(unsigned long)h * HD + d] = od / cl;
    }
    if (t == 0) done[h] = 0;
}

// Lane = key (head_dim < 128). Scores: the lane issues all head_dim / 8 16-byte loads of its
// K row at once and takes the dot product with q (in LDS, read as a broadcast); output:
// lane = (key group g, 16-byte chunk c of head_dim), all of the lane's V loads (one per
// group of keys) issued at once, each weighted by the key's e (fetched from the key's lane).
template <unsigned CH, bool ROPE, bool LEAVE>
GRETA_DEVICE void attn_decode_lanes(const float* q, const g_half* k_cache, const g_half* v_cache, float* part_m,
                                    float* part_l, float* part_o, unsigned* done, float* ctx, const unsigned* pos0,
                                    unsigned n_heads, unsigned n_kv_heads, unsigned n_splits, float scale,
                                    float* qsh, float* red, float* wm, float* wl, unsigned* last,
                                    const g_decode_rope& r) {
    constexpr unsigned HD = 8 * CH;
    // Output pass: G keys per pass (lanes past G * CH idle), P passes over the wave's keys.
    constexpr unsigned G = GRETA_WAVE / CH;
    constexpr unsigned P = (GRETA_WAVE + G - 1) / G;
    const unsigned s = g_bid(), h = g_bid_y(), t = g_tid(), lane = g_lane(), wave = t / GRETA_WAVE;
    const unsigned kvh = h / (n_heads / n_kv_heads);
    const unsigned long kv_row = (unsigned long)n_kv_heads * HD;
    const unsigned n = *pos0 + 1;
    const unsigned j0 = s * DECODE_KEYS;
    // The splits that hold keys: the grid covers at least the context (the host sizes it
    // from the pass's position, AttnShape::keys, and a graph replays it while the position
    // stays within its splits), the context only its first `active`. A split past it exits
    // at once: it writes no partial and is not counted; one active split writes ctx itself.
    const unsigned active = (n + DECODE_KEYS - 1) / DECODE_KEYS;
    if (j0 >= n) return;
    const unsigned jw = j0 + wave * GRETA_WAVE; // this wave's first key
    const unsigned j = jw + lane;
    const bool valid = j < n;
    const unsigned c = lane % CH, g = lane / CH;
    // Every load this block makes (its K rows, its V chunks, q) is issued here, before
    // any of them is used: V does not depend on the scores, so K and V share one memory
    // round trip instead of two in a row. The keys before the current one (cur = *pos0)
    // are loaded before g_wait_previous, under the kernels ahead of this one: an earlier
    // pass wrote them (and *pos0), and every pass begins with a launch that is never
    // overlapped (embed_f16: it starts once all earlier work has finished, whether or not
    // the host waited for it, as it does not when decoding a step ahead). Only the current
    // key's K and V, which the kernel ahead (RoPE + append) or this one writes, and q wait.
    const unsigned cur = n - 1;
    // ROPE: the angles of the current position (one pair a thread), before the loads: the
    // sine's slow path would otherwise run with every load below in flight.
    static_assert(!ROPE || HD / 2 <= DECODE_BLOCK, "one RoPE pair a thread");
    float rope_s = 0.0f, rope_c = 0.0f;
    if (ROPE && t < HD / 2) g_rope_angle((float)cur, r.inv_freq, t, &rope_s, &rope_c);
    const g_half* kr = k_cache + j * kv_row + kvh * HD;
    g_h8 kv[CH];
    if (valid && j != cur)
        for (unsigned c8 = 0; c8 < CH; ++c8) kv[c8] = *(const g_h8*)(kr + 8 * c8);
    g_h8 vv[P];
    bool use[P];
    for (unsigned p = 0; p < P; ++p) {
        unsigned key = p * G + g; // within the wave
        use[p] = g < G && key < GRETA_WAVE && jw + key < n;
        if (use[p] && jw + key != cur) vv[p] = *(const g_h8*)(v_cache + (jw + key) * kv_row + kvh * HD + 8 * c);
    }
    g_wait_previous();
    if (ROPE) {
        // Rotate q (every block of head h) and, in the block holding the current key, k, in
        // LDS with rope_qk_append_f16's arithmetic; that block also writes the rotated rows
        // for the trace, and the first query head of each KV group appends k and v to the
        // caches. The current key's lane and V chunks take k and v rounded to f16 as the
        // cache holds them, so the scores are bitwise those of the two-launch path.
        const bool holds_cur = cur - j0 < DECODE_KEYS;
        const float* kn = r.k_new + kvh * HD;
        const float* vn = r.v_new + kvh * HD;
        for (unsigned d = t; d < HD; d += DECODE_BLOCK) {
            qsh[d] = q[(unsigned long)h * HD + d];
            if (holds_cur) r.ksh[d] = kn[d];
        }
        g_sync();
        if (t < HD / 2) {
            unsigned a, b;
            g_rope_rotate(qsh, rope_s, rope_c, t, HD / 2, r.half_split, &a, &b);
            if (holds_cur) g_rope_rotate(r.ksh, rope_s, rope_c, t, HD / 2, r.half_split, &a, &b);
        }
        g_sync();
        if (holds_cur) {
            const bool appends = h % (n_heads / n_kv_heads) == 0;
            const unsigned long at = (unsigned long)cur * kv_row + kvh * HD;
            for (unsigned d = t; d < HD; d += DECODE_BLOCK) {
                r.q_rot[(unsigned long)h * HD + d] = qsh[d];
                if (appends) {
                    r.k_rot[kvh * HD + d] = r.ksh[d];
                    r.k_cache[at + d] = g_f2h(r.ksh[d]);
                    r.v_cache[at + d] = g_f2h(vn[d]);
                }
            }
        }
        if (j == cur)
            for (unsigned c8 = 0; c8 < CH; ++c8)
                for (unsigned e = 0; e < 8; ++e) kv[c8].v[e] = g_f2h(r.ksh[8 * c8 + e]);
        for (unsigned p = 0; p < P; ++p)
            if (use[p] && jw + p * G + g == cur)
                for (unsigned e = 0; e < 8; ++e) vv[p].v[e] = g_f2h(vn[8 * c + e]);
    } else {
        if (j == cur)
            for (unsigned c8 = 0; c8 < CH; ++c8) kv[c8] = *(const g_h8*)(kr + 8 * c8);
        for (unsigned p = 0; p < P; ++p)
            if (use[p] && jw + p * G + g == cur)
                vv[p] = *(const g_h8*)(v_cache + (unsigned long)cur * kv_row + kvh * HD + 8 * c);
        for (unsigned d = t; d < HD; d += DECODE_BLOCK) qsh[d] = q[(unsigned long)h * HD + d];
    }
    g_sync();
    float sc = NEG_INF;
    if (valid) {
        float acc = 0.0f;
        for (unsigned c8 = 0; c8 < CH; ++c8)
            for (unsigned e = 0; e < 8; ++e) acc += qsh[8 * c8 + e] * g_h2f(kv[c8].v[e]);
        sc = acc * scale;
    }
    // NEG_INF is finite: an empty wave gets m = NEG_INF, l = 0, o = 0, and weight
    // exp(NEG_INF - M) = 0 below.
    const float m = g_wave_max(sc);
    const float ew = valid ? g_exp(sc - m) : 0.0f;
    const float l = g_wave_sum(ew);

    float o[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float pw[P];
    for (unsigned p = 0; p < P; ++p) {
        // Every lane takes part in the exchange; idle lanes read a valid lane.
        pw[p] = g_shfl(ew, (p * G + g) % GRETA_WAVE);
        if (!use[p]) pw[p] = 0.0f;
    }
    for (unsigned p = 0; p < P; ++p)
        if (pw[p] != 0.0f)
            for (unsigned e = 0; e < 8; ++e) o[e] += pw[p] * g_h2f(vv[p].v[e]);
    if (g < G)
        for (unsigned e = 0; e < 8; ++e) red[(wave * G + g) * HD + 8 * c + e] = o[e];
    if (lane == 0) {
        wm[wave] = m;
        wl[wave] = l;
    }
    attn_decode_finish<HD, G, LEAVE>(red, wm, wl, active, h, n_heads, n_splits, s, part_m, part_l, part_o, done,
                                     ctx, last);
}

// Chunk c (8 dims) of a head rotated by RoPE with g_rope_rotate's arithmetic: x holds the
// chunk, pt the partner chunk (half_split: the pairs' other halves, chunk c +- CH / 2;
// interleaved: unused, the pairs are within the chunk), sn / cs element e's angle.
template <unsigned CH>
GRETA_DEVICE void g_rope_chunk(float* x, const float* pt, unsigned c, unsigned half_split, const float* sn,
                               const float* cs) {
    if (half_split) {
        const bool first = c < CH / 2;  // a chunk of the pairs' first halves
        for (unsigned e = 0; e < 8; ++e)
            x[e] = first ? g_rope_first(x[e], pt[e], sn[e], cs[e]) : g_rope_second(pt[e], x[e], sn[e], cs[e]);
    } else {
        for (unsigned e = 0; e < 8; e += 2) {
            const float x0 = x[e], x1 = x[e + 1];
            x[e] = g_rope_first(x0, x1, sn[e], cs[e]);
            x[e + 1] = g_rope_second(x0, x1, sn[e], cs[e]);
        }
    }
}
// Lane = chunk (head_dim 128: a power-of-two number of chunks, CH, that divides the wave).
// Lane (g, c) holds the 16-byte chunk c of key g of each group of G = wave / CH consecutive
// keys; the wave's keys are P = CH such groups. Every K and V load of a wave reads G whole
// rows, and a lane issues all of its P K loads and P V loads at once. Scores: each lane
// takes the dot product of its chunk of q with its chunk of each of its P keys (P
// independent chains), and a butterfly over the CH lanes of a key (CH - 1 shuffles) leaves
// the whole score of key c * G + g in lane (g, c). Output: the lane weights its P V chunks
// (each key's weight fetched from its lane) and the G lanes of a chunk sum theirs.
// The current key is not among the loaded keys: its registers stay zero, and the wave
// holding it adds its score and value apart (its chunks from the cache, or rotated here
// and rounded to f16 as the cache holds them), so no loaded register is rewritten after
// the wait (which would unpack them half by half). ROPE: each lane rotates its own chunks
// of q (and, where it needs the current key, of k) in registers, with the angles from LDS.
template <unsigned CH, bool ROPE, bool LEAVE>
GRETA_DEVICE void attn_decode_chunks(const float* q, const g_half* k_cache, const g_half* v_cache, float* part_m,
                                     float* part_l, float* part_o, unsigned* done, float* ctx, const unsigned* pos0,
                                     unsigned n_heads, unsigned n_kv_heads, unsigned n_splits, float scale,
                                     float* red, float* wm, float* wl, unsigned* last, const g_decode_rope& r) {
    constexpr unsigned HD = 8 * CH;
    constexpr unsigned G = GRETA_WAVE / CH;  // keys per load
    constexpr unsigned P = CH;               // loads per wave of keys
    static_assert((CH & (CH - 1)) == 0 && G * CH == GRETA_WAVE, "a power-of-two number of chunks within a wave");
    const unsigned s = g_bid(), h = g_bid_y(), t = g_tid(), lane = g_lane(), wave = t / GRETA_WAVE;
    const unsigned c = lane % CH, g = lane / CH;
    const unsigned kvh = h / (n_heads / n_kv_heads);
    const unsigned long kv_row = (unsigned long)n_kv_heads * HD;
    const unsigned n = *pos0 + 1;
    const unsigned j0 = s * DECODE_KEYS;
    // The splits that hold keys: the grid covers at least the context (the host sizes it
    // from the pass's position, AttnShape::keys, and a graph replays it while the position
    // stays within its splits), the context only its first `active`. A split past it exits
    // at once: it writes no partial and is not counted; one active split writes ctx itself.
    const unsigned active = (n + DECODE_KEYS - 1) / DECODE_KEYS;
    if (j0 >= n) return;
    const unsigned jw = j0 + wave * GRETA_WAVE;  // this wave's first key
    const unsigned cur = n - 1;
    const bool cur_here = cur - jw < GRETA_WAVE;  // this wave holds the current key
    // Every K and V load is issued here, before any is used: V does not depend on the
    // scores, so K and V share one memory round trip instead of two in a row. The keys
    // before the current one are loaded before g_wait_previous, under the kernels ahead of
    // this one: an earlier pass wrote them (and *pos0), and every pass begins with a
    // launch that is never overlapped (embed_f16: it starts once all earlier work has
    // finished, whether or not the host waited for it, as it does not when decoding a step
    // ahead). Only the current key's K and V, and q, wait.
    g_h8 kv[P], vv[P];
    for (unsigned p = 0; p < P; ++p) {
        const unsigned j = jw + p * G + g;
        const unsigned long at = j * kv_row + kvh * HD + 8 * c;
        kv[p] = g_load_h8_or_zero(k_cache + at, j < cur);
        vv[p] = g_load_h8_or_zero(v_cache + at, j < cur);
    }
    // ROPE: the angles of the current position (a pair a thread) into LDS, once the loads
    // are on their way.
    if (ROPE) {
        if (t < HD / 2) g_rope_angle((float)cur, r.inv_freq, t, &r.sin_sh[t], &r.cos_sh[t]);
        g_sync();
    }
    g_wait_previous();
    // This lane's chunk of q (rotated: ROPE) and, in the wave holding the current key, that
    // key's chunk of k and v (as the cache holds them), all loaded in one round trip.
    float qc[8], kc[8], vc[8];
    const bool needs_cur = cur_here || (ROPE && cur - j0 < DECODE_KEYS && wave == 0);
    {
        g_load_f8(q + (unsigned long)h * HD + 8 * c, qc);
        const unsigned long at = (unsigned long)cur * kv_row + kvh * HD + 8 * c;
        if (ROPE) {
            const unsigned pc = c < CH / 2 ? c + CH / 2 : c - CH / 2;
            float qp[8], kp[8];
            if (r.half_split) g_load_f8(q + (unsigned long)h * HD + 8 * pc, qp);
            if (needs_cur) {
                g_load_f8(r.k_new + kvh * HD + 8 * c, kc);
                g_load_f8(r.v_new + kvh * HD + 8 * c, vc);
                if (r.half_split) g_load_f8(r.k_new + kvh * HD + 8 * pc, kp);
            }
            float sn[8], cs[8];
            for (unsigned e = 0; e < 8; ++e) {
                const unsigned i = r.half_split ? 8 * (c % (CH / 2)) + e : 4 * c + e / 2;
                sn[e] = r.sin_sh[i];
                cs[e] = r.cos_sh[i];
            }
            g_rope_chunk<CH>(qc, qp, c, r.half_split, sn, cs);
            if (needs_cur) g_rope_chunk<CH>(kc, kp, c, r.half_split, sn, cs);
        } else if (needs_cur) {
            g_load_h8(k_cache + at, kc);
            g_load_h8(v_cache + at, vc);
        }
    }
    // The current key's chunks rounded to f16 as the cache holds them (a no-op on the
    // values read from it).
    g_h8 kh, vh;
    for (unsigned e = 0; e < 8; ++e) {
        kh.v[e] = g_f2h(needs_cur ? kc[e] : 0.0f);
        vh.v[e] = g_f2h(needs_cur ? vc[e] : 0.0f);
    }
    if (ROPE && cur - j0 < DECODE_KEYS && wave == 0 && g == 0) {
        // The block holding the current key writes the rotated rows for the trace, and the
        // first query head of each KV group appends k and v to the caches.
        const unsigned long at = (unsigned long)cur * kv_row + kvh * HD + 8 * c;
        for (unsigned e = 0; e < 8; ++e) r.q_rot[(unsigned long)h * HD + 8 * c + e] = qc[e];
        if (h % (n_heads / n_kv_heads) == 0) {
            for (unsigned e = 0; e < 8; ++e) r.k_rot[kvh * HD + 8 * c + e] = kc[e];
            *(g_h8*)(r.k_cache + at) = kh;
            *(g_h8*)(r.v_cache + at) = vh;
        }
    }
    // Scores: chunk c's part of each key's dot product, then the butterfly: at the stage of
    // mask m the lane keeps the half of its sums that bit m of c selects and sends the other
    // half to lane ^ m, so after the stages lane (g, c) holds the sum over the CH lanes of
    // its key for group p = c. The current key's registers are zero; its score is the group
    // sum of the lanes' parts with its own chunks.
    float dot[P];
    for (unsigned p = 0; p < P; ++p) {
        float acc = 0.0f;
        for (unsigned e = 0; e < 8; ++e) acc += qc[e] * g_h2f(kv[p].v[e]);
        dot[p] = acc;
    }
    for (unsigned m = CH / 2, len = P; m > 0; m >>= 1, len >>= 1) {
        const bool upper = (c & m) != 0;
        for (unsigned i = 0; i < len / 2; ++i) {
            const float send = upper ? dot[i] : dot[i + len / 2];
            const float keep = upper ? dot[i + len / 2] : dot[i];
            dot[i] = keep + g_shfl_xor(send, m);
        }
    }
    const unsigned key = c * G + g;  // within the wave: the key whose score this lane holds
    const unsigned kcur = cur - jw;  // the current key within the wave (cur_here)
    float sc = dot[0];
    if (cur_here) {
        float pc = 0.0f;
        for (unsigned e = 0; e < 8; ++e) pc += qc[e] * g_h2f(kh.v[e]);
        pc = g_group_sum(pc, CH);
        if (key == kcur) sc = pc;
    }
    const bool valid = jw + key < n;
    sc = valid ? sc * scale : NEG_INF;
    // NEG_INF is finite: an empty wave gets m = NEG_INF, l = 0, o = 0, and weight
    // exp(NEG_INF - M) = 0 below.
    const float m = g_wave_max(sc);
    const float ew = valid ? g_exp(sc - m) : 0.0f;
    const float l = g_wave_sum(ew);

    // Output: key p * G + g's weight is in lane (g, p) (the current key's value registers
    // are zero: its lanes add it last); then the G lanes of chunk c sum.
    float o[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float pw[P];
    for (unsigned p = 0; p < P; ++p) pw[p] = g_shfl(ew, g * CH + p);
    for (unsigned p = 0; p < P; ++p)
        for (unsigned e = 0; e < 8; ++e) o[e] += pw[p] * g_h2f(vv[p].v[e]);
    if (cur_here) {
        const float wc = g_shfl(ew, (kcur % G) * CH + kcur / G);
        if (g == kcur % G)
            for (unsigned e = 0; e < 8; ++e) o[e] += wc * g_h2f(vh.v[e]);
    }
    for (unsigned mk = CH; mk < GRETA_WAVE; mk <<= 1)
        for (unsigned e = 0; e < 8; ++e) o[e] += g_shfl_xor(o[e], mk);
    if (g == 0)
        for (unsigned e = 0; e < 8; ++e) red[wave * HD + 8 * c + e] = o[e];
    if (lane == 0) {
        wm[wave] = m;
        wl[wave] = l;
    }
    attn_decode_finish<HD, 1, LEAVE>(red, wm, wl, active, h, n_heads, n_splits, s, part_m, part_l, part_o, done,
                                     ctx, last);
}

template <unsigned CH, bool ROPE, bool LEAVE>
GRETA_DEVICE void attn_decode(const float* q, const g_half* k_cache, const g_half* v_cache, float* part_m,
                              float* part_l, float* part_o, unsigned* done, float* ctx, const unsigned* pos0,
                              unsigned n_heads, unsigned n_kv_heads, unsigned n_splits, float scale, float* qsh,
                              float* red, float* wm, float* wl, unsigned* last, const g_decode_rope& r) {
    if constexpr (CH >= 16)
        attn_decode_chunks<CH, ROPE, LEAVE>(q, k_cache, v_cache, part_m, part_l, part_o, done, ctx, pos0, n_heads,
                                            n_kv_heads, n_splits, scale, red, wm, wl, last, r);
    else
        attn_decode_lanes<CH, ROPE, LEAVE>(q, k_cache, v_cache, part_m, part_l, part_o, done, ctx, pos0, n_heads,
                                           n_kv_heads, n_splits, scale, qsh, red, wm, wl, last, r);
}

// One kernel per head_dim (a multiple of 16 up to HD_MAX: check_attention_shape in gpu/attention.rs),
// attn_decode_split_hd<HD> and attn_decode_rope_split_hd<HD>, not one kernel switching on
// it: the registers of a switch over every head_dim are allocated for all its cases at
// once (232 for the plain kernel on sm_90a where its 128 case alone takes 220; the RoPE
// form spilled at 255), and each launch needs only its own.
#define ATTN_DECODE_SHARED                                                                                   \
    GRETA_SHARED GRETA_ALIGN16 float qsh[HD_MAX];                                                            \
    GRETA_SHARED GRETA_ALIGN16 float red[DECODE_BLOCK * 8];                                                  \
    GRETA_SHARED float wm[DECODE_WAVES_MAX], wl[DECODE_WAVES_MAX];                                           \
    GRETA_SHARED unsigned last;
// attn_decode waits for the kernel ahead after its loads of the earlier keys, so both call
// g_launch_next alone at entry. The RoPE form: q, k_new and v_new are the unrotated Q/K/V
// products; k_cache and v_cache are written at *pos0; q_rot and k_rot receive the rotated
// rows; half_split as rope_f32 (decode's one-launch attention: no rope_qk_append_f16).
#define ATTN_DECODE_KERNELS(HD)                                                                              \
    GRETA_KERNEL GRETA_BLOCK_MAX(DECODE_BLOCK) void attn_decode_split_hd##HD(                                \
        const float* q, const g_half* k_cache, const g_half* v_cache, float* part_m, float* part_l,          \
        float* part_o, unsigned* done, float* ctx, const unsigned* pos0, unsigned n_heads,                   \
        unsigned n_kv_heads, unsigned n_splits, float scale) {                                               \
        g_launch_next();                                                                                     \
        attn_decode_cluster_entry();                                                                         \
        ATTN_DECODE_SHARED                                                                                   \
        const g_decode_rope r = {};                                                                          \
        attn_decode<HD / 8, false, false>(q, k_cache, v_cache, part_m, part_l, part_o, done, ctx, pos0,      \
                                          n_heads, n_kv_heads, n_splits, scale, qsh, red, wm, wl, &last, r); \
    }
#define ATTN_DECODE_ROPE_FORM(NAME, HD, LEAVE)                                                               \
    GRETA_KERNEL GRETA_BLOCK_MAX(DECODE_BLOCK) void NAME(                                                    \
        const float* q, const float* k_new, const float* v_new, g_half* k_cache, g_half* v_cache,            \
        float* q_rot, float* k_rot, const float* inv_freq, unsigned half_split, float* part_m,               \
        float* part_l, float* part_o, unsigned* done, float* ctx, const unsigned* pos0, unsigned n_heads,    \
        unsigned n_kv_heads, unsigned n_splits, float scale) {                                               \
        g_launch_next();                                                                                     \
        attn_decode_cluster_entry();                                                                         \
        ATTN_DECODE_SHARED                                                                                   \
        GRETA_SHARED GRETA_ALIGN16 float ksh[HD_MAX], sin_sh[HD_MAX / 2], cos_sh[HD_MAX / 2];                \
        const g_decode_rope r = {k_new, v_new, k_cache, v_cache, q_rot, k_rot,                               \
                                 inv_freq, half_split, ksh, sin_sh, cos_sh};                                 \
        attn_decode<HD / 8, true, LEAVE>(q, k_cache, v_cache, part_m, part_l, part_o, done, ctx, pos0,       \
                                         n_heads, n_kv_heads, n_splits, scale, qsh, red, wm, wl, &last, r);  \
    }
// attn_decode_rope_partials_hd<HD>: the same, each split leaving its partial for the output
// product (gemv_add_splits_f16; ctx unused, launched without clusters). Its own kernel, not
// a flag: the ctx form keeps its code and registers (a runtime flag took SmolLM2's from 148
// to 192).
#define ATTN_DECODE_ROPE_KERNEL(HD)                                                                          \
    ATTN_DECODE_ROPE_FORM(attn_decode_rope_split_hd##HD, HD, false)                                          \
    ATTN_DECODE_ROPE_FORM(attn_decode_rope_partials_hd##HD, HD, true)
ATTN_DECODE_KERNELS(16)
ATTN_DECODE_KERNELS(32)
ATTN_DECODE_KERNELS(48)
ATTN_DECODE_KERNELS(64)
ATTN_DECODE_KERNELS(80)
ATTN_DECODE_KERNELS(96)
ATTN_DECODE_KERNELS(112)
ATTN_DECODE_KERNELS(128)
// No RoPE form at 112: it spills on sm_90a (255 registers and 232 bytes of stack); a model
// of that head_dim decodes with rope_qk_append_f16 and attn_decode_split_hd112.
ATTN_DECODE_ROPE_KERNEL(16)
ATTN_DECODE_ROPE_KERNEL(32)
ATTN_DECODE_ROPE_KERNEL(48)
ATTN_DECODE_ROPE_KERNEL(64)
ATTN_DECODE_ROPE_KERNEL(80)
ATTN_DECODE_ROPE_KERNEL(96)
ATTN_DECODE_ROPE_KERNEL(128)
#undef ATTN_DECODE_KERNELS
#undef ATTN_DECODE_ROPE_KERNEL
#undef ATTN_DECODE_ROPE_FORM
#undef ATTN_DECODE_SHARED
