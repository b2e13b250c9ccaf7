#include "attention_common.h"
#include <string.h>

/* No implicit FMA contraction (as -ffp-contract=off, but part of the file, so it holds however
 * the package is built): scalar and SIMD twins of a kernel perform the same IEEE operations and
 * agree bit for bit. */
#pragma clang fp contract(off)

/* Causal attention of query rows of one head against one KV head, fused (flash-style): keys
 * are taken a block of 16 at a time, and each row keeps a running max m, a running sum l of
 * exponentials and an unnormalised output o, so no row of scores is ever written out.
 *
 * KV memory is paged in blocks of 16 positions (SIFT_KEY_BLOCK); blocks[b] is the base of the
 * block holding positions 16b ... 16b + 15. Within it, keys are transposed: KV head g's panel
 * is (head_dim × 16) floats at blocks[b] + k_off + g · head_dim · 16, so 16 keys are scored
 * with one vector FMA per dimension (two on 8 lanes); values are head-major too, KV head g's
 * 16 rows of head_dim floats at blocks[b] + v_off + g · 16 · head_dim, so the values a block
 * contributes to one head are 8 KB in a row (rows kv_dim apart would all fall into one L1 set).
 *
 * For a row at position P, for each block b = 0 ... P/16 in order, with its visible keys
 * j ≤ P (the row's own position included):
 *     s_j   = (Σ_dd fma(q[dd], k_j[dd]) in dd order) · scale
 *     m'    = max(m, max_j s_j)                      (m starts at −∞; a max is exact in any order)
 *     c     = exp(m − m')
 *     e_j   = exp(s_j − m'), 0 for keys the row does not see
 *     l     = l · c + tree16(e)                      (l starts at 0; the fixed 16-lane tree)
 *     o[dd] = o[dd] · c, then o[dd] = fma(e_j, v_j[dd], o[dd]) for its visible j in order
 * and finally out[dd] = o[dd] · (1 / l). These operations, in this order, are the same on
 * every path, so the portable and SIMD twins agree bit for bit; and they depend only on the
 * row's own position and its keys, so a row's output never depends on how rows are tiled,
 * chunked or batched, or on which rows share a register tile. (Blocks past a row's position
 * are never applied to it; stale data past the last position is never read into a result.)
 *
 * The loops: keys in chunks of ATT_CHUNK blocks outside (their K and V, 128 KB for head_dim
 * 128, stay in L2), groups of rows inside (6 on 8 lanes, 8 on 16), so K/V are read from beyond
 * L2 once per call, not once per row group; o lives in `out` between chunks, m and l in
 * `scratch`. */

typedef struct {
    const float *const *blocks;
    size_t k_off, v_off;
} kv_view;

static inline const float *key_panel(kv_view kv, size_t b, size_t g, size_t d) {
    return kv.blocks[b] + kv.k_off + g * d * SIFT_KEY_BLOCK;
}
/* KV head g's value row of position pos. */
static inline const float *value_row(kv_view kv, size_t pos, size_t g, size_t d) {
    return kv.blocks[pos / SIFT_KEY_BLOCK] + kv.v_off + (g * SIFT_KEY_BLOCK + pos % SIFT_KEY_BLOCK) * d;
}

/* The running max, its correction and the new running sum for one row and block, from the
 * row's scaled scores e[0..16) (overwritten with the exponentials; keys past `visible` get 0). */
static inline float softmax_step_portable(float *e, size_t visible, float *m, float *l) {
    float bm = -INFINITY;
    for (size_t j = 0; j < visible; j++) bm = fmaxf(bm, e[j]);
    float m_new = fmaxf(*m, bm);
    float c = exp_portable(*m - m_new);
    for (size_t j = 0; j < SIFT_KEY_BLOCK; j++) e[j] = j < visible ? exp_portable(e[j] - m_new) : 0.0f;
    float acc[16];
    memcpy(acc, e, sizeof acc);
    *l = *l * c + sum16_tree(acc);
    *m = m_new;
    return c;
}

static void attention_portable(const float *q, size_t q_stride, size_t rows, size_t first_pos, kv_view kv,
                               size_t g, size_t d, float scale, float *out, size_t out_stride) {
    for (size_t r = 0; r < rows; r++) {
        size_t pos = first_pos + r;
        const float *qr = q + r * q_stride;
        float *o = out + r * out_stride;
        for (size_t dd = 0; dd < d; dd++) o[dd] = 0.0f;
        float m = -INFINITY, l = 0.0f;
        for (size_t b = 0; b * SIFT_KEY_BLOCK <= pos; b++) {
            size_t visible = visible_keys(pos, b);
            const float *panel = key_panel(kv, b, g, d);
            float e[16];
            for (size_t j = 0; j < visible; j++) {
                float acc = 0.0f;
                for (size_t dd = 0; dd < d; dd++) acc = fmaf(qr[dd], panel[dd * SIFT_KEY_BLOCK + j], acc);
                e[j] = acc * scale;
            }
            float c = softmax_step_portable(e, visible, &m, &l);
            for (size_t dd = 0; dd < d; dd++) {
                float acc = o[dd] * c;
                for (size_t j = 0; j < visible; j++) acc = fmaf(e[j], value_row(kv, b * SIFT_KEY_BLOCK + j, g, d)[dd], acc);
                o[dd] = acc;
            }
        }
        float inv = 1.0f / l;
        for (size_t dd = 0; dd < d; dd++) o[dd] = o[dd] * inv;
    }
}

#if SIFT_X86
/* ---- AVX2 (8 lanes; also the AVX-512 level's when head_dim is not a multiple of 32) -------- */


/* o[r] = o[r] · c[r] + Σ_{j < keys} e[r][j] · v_j for NR rows (compile-time), 16 dims at a time.
 * `rescale` 0 when every c[r] is 1 (the running max did not move): x · 1 = x, so skipping the
 * multiplication changes no bit. */
ATT_AVX2 void pv_avx2(int nr, int rescale, const float (*e)[16], const float *c, size_t keys, kv_view kv, size_t first_key,
                      size_t g, size_t d, float *out, size_t out_stride) {
    const float *v = value_row(kv, first_key, g, d);
    for (size_t d0 = 0; d0 < d; d0 += 16) {
        __m256 acc[ATT_ROWS][2];
        for (int r = 0; r < nr; r++) {
            acc[r][0] = _mm256_loadu_ps(out + r * out_stride + d0);
            acc[r][1] = _mm256_loadu_ps(out + r * out_stride + d0 + 8);
            if (rescale) {
                __m256 cr = _mm256_set1_ps(c[r]);
                acc[r][0] = _mm256_mul_ps(acc[r][0], cr);
                acc[r][1] = _mm256_mul_ps(acc[r][1], cr);
            }
        }
        for (size_t j = 0; j < keys; j++) {
            __m256 v0 = _mm256_loadu_ps(v + j * d + d0), v1 = _mm256_loadu_ps(v + j * d + d0 + 8);
            for (int r = 0; r < nr; r++) {
                __m256 ej = _mm256_set1_ps(e[r][j]);
                acc[r][0] = _mm256_fmadd_ps(ej, v0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(ej, v1, acc[r][1]);
            }
        }
        for (int r = 0; r < nr; r++) {
            _mm256_storeu_ps(out + r * out_stride + d0, acc[r][0]);
            _mm256_storeu_ps(out + r * out_stride + d0 + 8, acc[r][1]);
        }
    }
}

/* NR rows (compile-time; positions pos0 ...) over blocks [b0, b1). */
ATT_AVX2 void rows_avx2(int nr, const float *q, size_t q_stride, size_t pos0, size_t b0, size_t b1, kv_view kv,
                        size_t g, size_t d, float scale, float *out, size_t out_stride, float *m, float *l) {
    const __m256i lanes0 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), lanes1 = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    const __m256 vscale = _mm256_set1_ps(scale), minus_inf = _mm256_set1_ps(-INFINITY);
    size_t last = pos0 + (size_t)nr - 1;
    if (b0 * SIFT_KEY_BLOCK > last) return;
    for (size_t b = b0; b < b1 && b * SIFT_KEY_BLOCK <= last; b++) {
        const float *panel = key_panel(kv, b, g, d);
        __m256 s[ATT_ROWS][2];
        for (int r = 0; r < nr; r++) s[r][0] = s[r][1] = _mm256_setzero_ps();
        for (size_t dd = 0; dd < d; dd++) {
            __m256 k0 = _mm256_loadu_ps(panel + dd * SIFT_KEY_BLOCK), k1 = _mm256_loadu_ps(panel + dd * SIFT_KEY_BLOCK + 8);
            for (int r = 0; r < nr; r++) {
                __m256 qr = _mm256_set1_ps(q[r * q_stride + dd]);
                s[r][0] = _mm256_fmadd_ps(qr, k0, s[r][0]);
                s[r][1] = _mm256_fmadd_ps(qr, k1, s[r][1]);
            }
        }
        float e[ATT_ROWS][16] __attribute__((aligned(32)));
        float c[ATT_ROWS];
        size_t vis[ATT_ROWS];
        int all_full = 1, rescale = 0;
        for (int r = 0; r < nr; r++) {
            vis[r] = visible_keys(pos0 + (size_t)r, b);
            if (vis[r] < SIFT_KEY_BLOCK) all_full = 0;
            if (vis[r] == 0) continue;
            __m256i n = _mm256_set1_epi32((int)vis[r]);
            __m256 see0 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(n, lanes0));
            __m256 see1 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(n, lanes1));
            __m256 x0 = _mm256_mul_ps(s[r][0], vscale), x1 = _mm256_mul_ps(s[r][1], vscale);
            float bm = max16_avx2(_mm256_blendv_ps(minus_inf, x0, see0), _mm256_blendv_ps(minus_inf, x1, see1));
            float m_new = fmaxf(m[r], bm);
            c[r] = correction(m[r], m_new);
            if (c[r] != 1.0f) rescale = 1;
            __m256 vm = _mm256_set1_ps(m_new);
            __m256 e0 = _mm256_and_ps(exp_avx2(_mm256_sub_ps(x0, vm)), see0);
            __m256 e1 = _mm256_and_ps(exp_avx2(_mm256_sub_ps(x1, vm)), see1);
            _mm256_store_ps(e[r], e0);
            _mm256_store_ps(e[r] + 8, e1);
            l[r] = l[r] * c[r] + sum16_tree_avx2(e0, e1);
            m[r] = m_new;
        }
        if (all_full) {
            if (rescale) pv_avx2(nr, 1, (const float (*)[16])e, c, SIFT_KEY_BLOCK, kv, b * SIFT_KEY_BLOCK, g, d, out, out_stride);
            else pv_avx2(nr, 0, (const float (*)[16])e, c, SIFT_KEY_BLOCK, kv, b * SIFT_KEY_BLOCK, g, d, out, out_stride);
        } else {
            /* The diagonal: each row with the keys it sees. */
            for (int r = 0; r < nr; r++)
                if (vis[r] > 0)
                    pv_avx2(1, 1, (const float (*)[16])e[r], c + r, vis[r], kv, b * SIFT_KEY_BLOCK, g, d, out + r * out_stride, out_stride);
        }
    }
}

__attribute__((target("avx2,fma")))
static void attention_avx2(const float *q, size_t q_stride, size_t rows, size_t first_pos, kv_view kv,
                           size_t g, size_t d, float scale, float *out, size_t out_stride, float *m, float *l) {
    size_t blocks = (first_pos + rows + SIFT_KEY_BLOCK - 1) / SIFT_KEY_BLOCK;
    for (size_t b0 = 0; b0 < blocks; b0 += ATT_CHUNK) {
        size_t b1 = b0 + ATT_CHUNK < blocks ? b0 + ATT_CHUNK : blocks;
        size_t r = 0;
#define ROWS(NR) rows_avx2(NR, q + r * q_stride, q_stride, first_pos + r, b0, b1, kv, g, d, scale, \
                           out + r * out_stride, out_stride, m + r, l + r)
        for (; r + 6 <= rows; r += 6) ROWS(6);
        if (r + 4 <= rows) { ROWS(4); r += 4; }
        if (r + 2 <= rows) { ROWS(2); r += 2; }
        if (r < rows) { ROWS(1); r += 1; }
#undef ROWS
    }
    for (size_t r = 0; r < rows; r++) {
        __m256 inv = _mm256_set1_ps(1.0f / l[r]);
        float *o = out + r * out_stride;
        for (size_t dd = 0; dd < d; dd += 8) _mm256_storeu_ps(o + dd, _mm256_mul_ps(_mm256_loadu_ps(o + dd), inv));
    }
}

/* ---- AVX-512 (16 lanes: one block of keys, or 16 dims, per register) ----------------------- */
/* The same operations in the same order as the 8-lane kernel, on registers twice as wide: the
 * scores of two blocks at once (QKᵀ: 2·NR independent chains), PV 32 dims at a time, and the
 * diagonal blocks' rows under a mask (a masked-off fma leaves the accumulator as it was, which is
 * what skipping the key does), so every row group keeps its register tile on the diagonal too. */


/* o[r] = o[r] · c[r] + Σ_{j < vis[r]} e[r][j] · v_j for NR rows, 32 dims at a time; `masked` 0
 * when every row sees all 16 keys. `rescale` as in pv_avx2. */
ATT_512 void pv_avx512(int nr, int rescale, int masked, const float (*e)[16], const float *c, const size_t *vis,
                       kv_view kv, size_t first_key, size_t g, size_t d, float *out, size_t out_stride) {
    const float *v = value_row(kv, first_key, g, d);
    size_t keys = SIFT_KEY_BLOCK;
    if (masked) {
        keys = 0;
        for (int r = 0; r < nr; r++) keys = vis[r] > keys ? vis[r] : keys;
    }
    for (size_t d0 = 0; d0 < d; d0 += 32) {
        __m512 acc[ATT_ROWS][2];
        for (int r = 0; r < nr; r++) {
            acc[r][0] = _mm512_loadu_ps(out + r * out_stride + d0);
            acc[r][1] = _mm512_loadu_ps(out + r * out_stride + d0 + 16);
            if (rescale) {
                __m512 cr = _mm512_set1_ps(c[r]);
                acc[r][0] = _mm512_mul_ps(acc[r][0], cr);
                acc[r][1] = _mm512_mul_ps(acc[r][1], cr);
            }
        }
        for (size_t j = 0; j < keys; j++) {
            __m512 v0 = _mm512_loadu_ps(v + j * d + d0), v1 = _mm512_loadu_ps(v + j * d + d0 + 16);
            for (int r = 0; r < nr; r++) {
                __m512 ej = _mm512_set1_ps(e[r][j]);
                if (masked) {
                    __mmask16 sees = j < vis[r] ? 0xFFFF : 0;
                    acc[r][0] = _mm512_mask3_fmadd_ps(ej, v0, acc[r][0], sees);
                    acc[r][1] = _mm512_mask3_fmadd_ps(ej, v1, acc[r][1], sees);
                } else {
                    acc[r][0] = _mm512_fmadd_ps(ej, v0, acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(ej, v1, acc[r][1]);
                }
            }
        }
        for (int r = 0; r < nr; r++) {
            _mm512_storeu_ps(out + r * out_stride + d0, acc[r][0]);
            _mm512_storeu_ps(out + r * out_stride + d0 + 16, acc[r][1]);
        }
    }
}

/* One block's softmax step and PV for NR rows from their raw scores s[r]. */
ATT_512 void block_avx512(int nr, __m512 *s, size_t pos0, size_t b, kv_view kv, size_t g, size_t d, float scale,
                          float *out, size_t out_stride, float *m, float *l) {
    float e[8][16] __attribute__((aligned(64)));
    float c[8];
    size_t vis[8];
    int all_full = 1, rescale = 0;
    /* Every row's steps, the reductions of all eight done together (rows past nr see no key). */
    __m512 x[8], ex[8];
    __mmask16 sees[8];
    float bm[8], sum[8], m_new[8];
    for (int r = 0; r < 8; r++) {
        vis[r] = r < nr ? visible_keys(pos0 + (size_t)r, b) : 0;
        if (r < nr && vis[r] < SIFT_KEY_BLOCK) all_full = 0;
        sees[r] = (__mmask16)(vis[r] >= 16 ? 0xFFFF : (1u << vis[r]) - 1);
        x[r] = r < nr ? _mm512_mul_ps(s[r], _mm512_set1_ps(scale)) : _mm512_setzero_ps();
        ex[r] = _mm512_mask_blend_ps(sees[r], _mm512_set1_ps(-INFINITY), x[r]);
    }
    max8_avx512(ex, bm);
    for (int r = 0; r < 8; r++) {
        m_new[r] = vis[r] ? fmaxf(m[r], bm[r]) : 0.0f;
        c[r] = vis[r] ? correction(m[r], m_new[r]) : 1.0f;
        if (c[r] != 1.0f) rescale = 1;
        ex[r] = _mm512_maskz_mov_ps(sees[r], exp_avx512(_mm512_sub_ps(x[r], _mm512_set1_ps(m_new[r]))));
        _mm512_store_ps(e[r], ex[r]);
    }
    sum8_avx512(ex, sum);
    for (int r = 0; r < nr; r++) {
        if (vis[r] == 0) continue;
        l[r] = l[r] * c[r] + sum[r];
        m[r] = m_new[r];
    }
    /* A row that sees none of the block has c = 1 and no key under the mask: it is left as it was. */
    if (all_full) {
        if (rescale) pv_avx512(nr, 1, 0, (const float (*)[16])e, c, vis, kv, b * SIFT_KEY_BLOCK, g, d, out, out_stride);
        else pv_avx512(nr, 0, 0, (const float (*)[16])e, c, vis, kv, b * SIFT_KEY_BLOCK, g, d, out, out_stride);
    } else {
        pv_avx512(nr, 1, 1, (const float (*)[16])e, c, vis, kv, b * SIFT_KEY_BLOCK, g, d, out, out_stride);
    }
}

/* NR rows (compile-time; positions pos0 ...) over blocks [b0, b1), two blocks' scores at a time. */
ATT_512 void rows_avx512(int nr, const float *q, size_t q_stride, size_t pos0, size_t b0, size_t b1, kv_view kv,
                         size_t g, size_t d, float scale, float *out, size_t out_stride, float *m, float *l) {
    size_t last = pos0 + (size_t)nr - 1;
    if (b0 * SIFT_KEY_BLOCK > last) return;
    size_t end = (last / SIFT_KEY_BLOCK + 1) < b1 ? last / SIFT_KEY_BLOCK + 1 : b1;
    size_t b = b0;
    for (; b + 2 <= end; b += 2) {
        const float *p0 = key_panel(kv, b, g, d), *p1 = key_panel(kv, b + 1, g, d);
        __m512 s0[ATT_ROWS], s1[ATT_ROWS];
        for (int r = 0; r < nr; r++) s0[r] = s1[r] = _mm512_setzero_ps();
        for (size_t dd = 0; dd < d; dd++) {
            __m512 k0 = _mm512_loadu_ps(p0 + dd * SIFT_KEY_BLOCK), k1 = _mm512_loadu_ps(p1 + dd * SIFT_KEY_BLOCK);
            for (int r = 0; r < nr; r++) {
                __m512 qr = _mm512_set1_ps(q[r * q_stride + dd]);
                s0[r] = _mm512_fmadd_ps(qr, k0, s0[r]);
                s1[r] = _mm512_fmadd_ps(qr, k1, s1[r]);
            }
        }
        block_avx512(nr, s0, pos0, b, kv, g, d, scale, out, out_stride, m, l);
        block_avx512(nr, s1, pos0, b + 1, kv, g, d, scale, out, out_stride, m, l);
    }
    if (b < end) {
        const float *p0 = key_panel(kv, b, g, d);
        __m512 s0[ATT_ROWS];
        for (int r = 0; r < nr; r++) s0[r] = _mm512_setzero_ps();
        for (size_t dd = 0; dd < d; dd++) {
            __m512 k0 = _mm512_loadu_ps(p0 + dd * SIFT_KEY_BLOCK);
            for (int r = 0; r < nr; r++) s0[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r * q_stride + dd]), k0, s0[r]);
        }
        block_avx512(nr, s0, pos0, b, kv, g, d, scale, out, out_stride, m, l);
    }
}

__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx2")))
static void attention_avx512(const float *q, size_t q_stride, size_t rows, size_t first_pos, kv_view kv,
                             size_t g, size_t d, float scale, float *out, size_t out_stride, float *m, float *l) {
    size_t blocks = (first_pos + rows + SIFT_KEY_BLOCK - 1) / SIFT_KEY_BLOCK;
    for (size_t b0 = 0; b0 < blocks; b0 += ATT_CHUNK) {
        size_t b1 = b0 + ATT_CHUNK < blocks ? b0 + ATT_CHUNK : blocks;
        size_t r = 0;
#define ROWS(NR) rows_avx512(NR, q + r * q_stride, q_stride, first_pos + r, b0, b1, kv, g, d, scale, \
                             out + r * out_stride, out_stride, m + r, l + r)
        for (; r + 8 <= rows; r += 8) ROWS(8);
        if (r + 4 <= rows) { ROWS(4); r += 4; }
        if (r + 2 <= rows) { ROWS(2); r += 2; }
        if (r < rows) { ROWS(1); r += 1; }
#undef ROWS
    }
    for (size_t r = 0; r < rows; r++) {
        __m512 inv = _mm512_set1_ps(1.0f / l[r]);
        float *o = out + r * out_stride;
        for (size_t dd = 0; dd < d; dd += 16) _mm512_storeu_ps(o + dd, _mm512_mul_ps(_mm512_loadu_ps(o + dd), inv));
    }
}

#endif

void sift_attention(sift_simd level, const float *q, size_t q_stride, size_t rows, size_t first_pos,
                    const float *const *blocks, size_t k_off, size_t v_off, size_t g, size_t d,
                    float scale, float *out, size_t out_stride, float *scratch) {
    kv_view kv = {blocks, k_off, v_off};
    level = sift_simd_usable(level);
#if SIFT_X86
    if (level >= SIFT_SIMD_AVX2 && d % 16 == 0 && d <= ATT_MAX_D) {
        /* The queries and the outputs side by side in the scratch, a tile of rows at a time: rows
         * q_stride or out_stride apart (a token, 8–16 KB in the model) would all fall into the same
         * cache sets. (Copies: the same values; and a row's result does not depend on the tiling.) */
        float *m = scratch, *l = scratch + rows, *qc = scratch + 2 * rows, *ot = qc + SIFT_ATTENTION_Q_FLOATS;
        size_t tile = SIFT_ATTENTION_Q_FLOATS / d;
        for (size_t r0 = 0; r0 < rows; r0 += tile) {
            size_t n = rows - r0 < tile ? rows - r0 : tile;
            for (size_t r = 0; r < n; r++) {
                memcpy(qc + r * d, q + (r0 + r) * q_stride, d * sizeof(float));
                m[r0 + r] = -INFINITY;
                l[r0 + r] = 0.0f;
            }
            memset(ot, 0, n * d * sizeof(float));
            if (level == SIFT_SIMD_AVX512 && d % 32 == 0)
                attention_avx512(qc, d, n, first_pos + r0, kv, g, d, scale, ot, d, m + r0, l + r0);
            else
                attention_avx2(qc, d, n, first_pos + r0, kv, g, d, scale, ot, d, m + r0, l + r0);
            for (size_t r = 0; r < n; r++) memcpy(out + (r0 + r) * out_stride, ot + r * d, d * sizeof(float));
        }
        return;
    }
#endif
    attention_portable(q, q_stride, rows, first_pos, kv, g, d, scale, out, out_stride);
}

/* ---- fp32 FMA peak ------------------------------------------------------------------------ */

enum { PEAK_CHAINS = 12 };   /* independent chains: enough to cover FMA latency × ports */

#if SIFT_X86
__attribute__((target("avx512f")))
static float fma_peak512(size_t iters) {
    __m512 acc[PEAK_CHAINS];
    __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (size_t it = 0; it < iters; it++) {
        for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    __m512 s = acc[0];
    for (int i = 1; i < PEAK_CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma")))
static float fma_peak256(size_t iters) {
    __m256 acc[PEAK_CHAINS];
    __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (size_t it = 0; it < iters; it++) {
        for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
        __asm__ volatile("" : "+x"(a), "+x"(b));
    }
    __m256 s = acc[0];
    for (int i = 1; i < PEAK_CHAINS; i++) s = _mm256_add_ps(s, acc[i]);
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    return lanes[0] + lanes[7];
}
#endif

float sift_fma_peak_loop(sift_simd level, size_t iters) {
    switch (sift_simd_usable(level)) {
#if SIFT_X86
    case SIFT_SIMD_AVX512: return fma_peak512(iters);
    case SIFT_SIMD_AVX2: return fma_peak256(iters);
#endif
    default: return 0.0f;
    }
}

size_t sift_fma_peak_flops(sift_simd level, size_t iters) {
    switch (sift_simd_usable(level)) {
    case SIFT_SIMD_AVX512: return iters * PEAK_CHAINS * 16 * 2;
    case SIFT_SIMD_AVX2: return iters * PEAK_CHAINS * 8 * 2;
    default: return 0;
    }
}
