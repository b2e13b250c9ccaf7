#include "attention_common.h"
#include <stdint.h>
#include <string.h>

/* Attention with K, V, Q and the probabilities in bf16: half the KV memory of the fp32 kernel,
 * and on CPUs with AVX512_BF16 its dot products run on `vdpbf16ps` (32 products per instruction
 * where an fp32 FMA does 16). Defined by its operations, which every path performs:
 *
 *  - q is rounded to bf16 (round to nearest even; a denormal becomes a signed zero), as K and V
 *    were when they were stored (`sift_kv_store_bf16`);
 *  - score s_j: acc = 0, then for each pair p of dimensions in order, acc += q[2p+1]·k_j[2p+1],
 *    then acc += q[2p]·k_j[2p], each a rounded fp32 addition of an exact product — what one
 *    `vdpbf16ps` lane does (odd element first: measured on Zen 4, as Intel's SDM describes);
 *  - the running max, correction and exponentials as in the fp32 kernel; each exponential
 *    (0 for keys the row does not see) is rounded to bf16, p_j, and l = l·c + tree16(p);
 *  - o[dd] = o[dd]·c, then for each pair of keys (2m, 2m+1) in order, o[dd] += p_{2m+1}·v_{2m+1}[dd]
 *    then o[dd] += p_{2m}·v_{2m}[dd]; finally o · (1/l);
 *  - all of it with denormals flushed to zero (MXCSR FTZ and DAZ for the call, as `vdpbf16ps`
 *    always does), so the FMA twins without BF16 hardware give the same bits.
 * A row's result depends only on its position and its keys, as in the fp32 kernel.
 *
 * Layout in a KV block (bf16 elements): KV head g's keys are (head_dim/2 × 16) pairs — pair p of
 * key j, (k[2p], k[2p+1]), is the 32-bit word j of row p, so one 64-byte load holds two
 * dimensions of 16 keys; its values are (8 × head_dim) pairs — word dd of row m holds
 * (v_{2m}[dd], v_{2m+1}[dd]), so one load holds 16 dimensions of two keys. */

typedef struct {
    const uint16_t *const *blocks;
    size_t k_off, v_off;
} kv16_view;

static inline const uint32_t *key_pairs(kv16_view kv, size_t b, size_t g, size_t d) {
    return (const uint32_t *)(kv.blocks[b] + kv.k_off + g * d * SIFT_KEY_BLOCK);
}

static inline const uint32_t *value_pairs(kv16_view kv, size_t b, size_t g, size_t d) {
    return (const uint32_t *)(kv.blocks[b] + kv.v_off + g * SIFT_KEY_BLOCK * d);
}

/* ---- bf16 <-> fp32 ---------------------------------------------------------------------- */

static inline uint16_t bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7F800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);  /* DAZ */
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float bf16_f32(uint32_t h) {
    uint32_t u = h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The even (low) and odd (high) halves of a pair word, as fp32. */
static inline float pair_even(uint32_t w) { return bf16_f32(w & 0xFFFFu); }
static inline float pair_odd(uint32_t w) { return bf16_f32(w >> 16); }

#if SIFT_X86
ATT_512 __m512i bf16_round_avx512(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
    __mmask16 denormal = _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7F800000));
    return _mm512_mask_mov_epi32(r, denormal, _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x8000)));
}

ATT_AVX2 __m256i bf16_round_avx2(__m256 x) {
    __m256i u = _mm256_castps_si256(x);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
    __m256i exponent = _mm256_and_si256(u, _mm256_set1_epi32(0x7F800000));
    __m256i denormal = _mm256_cmpeq_epi32(exponent, _mm256_setzero_si256());
    __m256i sign = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x8000));
    return _mm256_blendv_epi8(r, sign, denormal);
}
#endif

/* ---- the store ---------------------------------------------------------------------------- */

void sift_kv_store_bf16(const float *key, const float *value, size_t kv_dim, size_t d,
                        uint16_t *keys, uint16_t *values, size_t slot) {
    for (size_t i = 0; i < kv_dim; i++) {
        size_t g = i / d, dd = i % d;
        keys[g * d * SIFT_KEY_BLOCK + ((dd / 2) * SIFT_KEY_BLOCK + slot) * 2 + dd % 2] = bf16_round(key[i]);
        values[g * SIFT_KEY_BLOCK * d + ((slot / 2) * d + dd) * 2 + slot % 2] = bf16_round(value[i]);
    }
}

/* ---- portable ------------------------------------------------------------------------------ */

static void attention_bf16_portable(const float *q, size_t q_stride, size_t rows, size_t first_pos, kv16_view kv,
                                    size_t g, size_t d, float scale, float *out, size_t out_stride) {
    float qf[ATT_MAX_D];
    for (size_t r = 0; r < rows; r++) {
        size_t pos = first_pos + r;
        for (size_t dd = 0; dd < d; dd++) qf[dd] = bf16_f32(bf16_round(q[r * q_stride + dd]));
        float *o = out + r * out_stride;
        for (size_t dd = 0; dd < d; dd++) o[dd] = 0.0f;
        float m = -INFINITY, l = 0.0f;
        for (size_t b = 0; b * SIFT_KEY_BLOCK <= pos; b++) {
            size_t visible = visible_keys(pos, b);
            const uint32_t *kp = key_pairs(kv, b, g, d);
            float e[16];
            float bm = -INFINITY;
            for (size_t j = 0; j < visible; j++) {
                float acc = 0.0f;
                for (size_t p = 0; p < d / 2; p++) {
                    uint32_t w = kp[p * SIFT_KEY_BLOCK + j];
                    acc = fmaf(qf[2 * p + 1], pair_odd(w), acc);
                    acc = fmaf(qf[2 * p], pair_even(w), acc);
                }
                e[j] = acc * scale;
                bm = fmaxf(bm, e[j]);
            }
            float m_new = fmaxf(m, bm);
            float c = correction(m, m_new);
            float p16[16];
            for (size_t j = 0; j < SIFT_KEY_BLOCK; j++) p16[j] = j < visible ? bf16_f32(bf16_round(exp_portable(e[j] - m_new))) : 0.0f;
            float acc16[16];
            memcpy(acc16, p16, sizeof acc16);
            l = l * c + sum16_tree(acc16);
            m = m_new;
            const uint32_t *vp = value_pairs(kv, b, g, d);
            for (size_t dd = 0; dd < d; dd++) {
                float acc = o[dd] * c;
                /* Keys the row does not see add zero products (acc is never −0, so adding ±0 leaves
                 * it as it is): skipped, so data past the sequence's end is never read. */
                for (size_t mp = 0; 2 * mp < visible; mp++) {
                    uint32_t w = vp[mp * d + dd];
                    if (2 * mp + 1 < visible) acc = fmaf(p16[2 * mp + 1], pair_odd(w), acc);
                    acc = fmaf(p16[2 * mp], pair_even(w), acc);
                }
                o[dd] = acc;
            }
        }
        float inv = 1.0f / l;
        for (size_t dd = 0; dd < d; dd++) o[dd] = o[dd] * inv;
    }
}

#if SIFT_X86
/* ---- AVX2 (8 lanes; the products by FMAs on the pairs' halves) ---------------------------- */

ATT_AVX2 __m256 odd_avx2(__m256i w) { return _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32((int)0xFFFF0000u))); }
ATT_AVX2 __m256 even_avx2(__m256i w) { return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)); }

/* NR rows (compile-time; positions pos0 ...; queries qf as rounded fp32, rows d apart) over
 * blocks [b0, b1). */
ATT_AVX2 void rows_bf16_avx2(int nr, const float *qf, size_t pos0, size_t b0, size_t b1, kv16_view kv,
                             size_t g, size_t d, float scale, float *out, size_t out_stride, float *m, float *l) {
    const __m256i lanes0 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), lanes1 = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    const __m256 vscale = _mm256_set1_ps(scale), minus_inf = _mm256_set1_ps(-INFINITY);
    size_t last = pos0 + (size_t)nr - 1;
    if (b0 * SIFT_KEY_BLOCK > last) return;
    for (size_t b = b0; b < b1 && b * SIFT_KEY_BLOCK <= last; b++) {
        const uint32_t *kp = key_pairs(kv, b, g, d);
        __m256 s[ATT_ROWS][2];
        for (int r = 0; r < nr; r++) s[r][0] = s[r][1] = _mm256_setzero_ps();
        for (size_t p = 0; p < d / 2; p++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(kp + p * SIFT_KEY_BLOCK));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(kp + p * SIFT_KEY_BLOCK + 8));
            __m256 k0o = odd_avx2(w0), k0e = even_avx2(w0), k1o = odd_avx2(w1), k1e = even_avx2(w1);
            for (int r = 0; r < nr; r++) {
                __m256 qo = _mm256_set1_ps(qf[(size_t)r * d + 2 * p + 1]), qe = _mm256_set1_ps(qf[(size_t)r * d + 2 * p]);
                s[r][0] = _mm256_fmadd_ps(qe, k0e, _mm256_fmadd_ps(qo, k0o, s[r][0]));
                s[r][1] = _mm256_fmadd_ps(qe, k1e, _mm256_fmadd_ps(qo, k1o, s[r][1]));
            }
        }
        float pr[ATT_ROWS][16] __attribute__((aligned(32)));
        float c[ATT_ROWS];
        size_t vis[ATT_ROWS];
        int rescale = 0;
        size_t pairs = 0;
        for (int r = 0; r < nr; r++) {
            vis[r] = visible_keys(pos0 + (size_t)r, b);
            c[r] = 1.0f;
            if (vis[r] == 0) continue;
            if ((vis[r] + 1) / 2 > pairs) pairs = (vis[r] + 1) / 2;
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
            __m256 p0 = _mm256_castsi256_ps(_mm256_slli_epi32(bf16_round_avx2(e0), 16));
            __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(bf16_round_avx2(e1), 16));
            _mm256_store_ps(pr[r], p0);
            _mm256_store_ps(pr[r] + 8, p1);
            l[r] = l[r] * c[r] + sum16_tree_avx2(p0, p1);
            m[r] = m_new;
        }
        /* PV, 16 dims at a time; pairs no row sees add zeros and are skipped (same bits), and in
         * a pair half seen by no row (past the last row's position: perhaps data of no
         * sequence) the value is zeroed, so nothing stale is ever read into a result. */
        const uint32_t *vp = value_pairs(kv, b, g, d);
        size_t half = vis[nr - 1] % 2 ? vis[nr - 1] / 2 : SIZE_MAX;
        const __m256i low = _mm256_set1_epi32(0xFFFF);
        for (size_t d0 = 0; d0 < d; d0 += 16) {
            __m256 acc[ATT_ROWS][2];
            for (int r = 0; r < nr; r++) {
                acc[r][0] = _mm256_loadu_ps(out + r * out_stride + d0);
                acc[r][1] = _mm256_loadu_ps(out + r * out_stride + d0 + 8);
                if (rescale && c[r] != 1.0f) {
                    __m256 cr = _mm256_set1_ps(c[r]);
                    acc[r][0] = _mm256_mul_ps(acc[r][0], cr);
                    acc[r][1] = _mm256_mul_ps(acc[r][1], cr);
                }
            }
            for (size_t mp = 0; mp < pairs; mp++) {
                __m256i w0 = _mm256_loadu_si256((const __m256i *)(vp + mp * d + d0));
                __m256i w1 = _mm256_loadu_si256((const __m256i *)(vp + mp * d + d0 + 8));
                if (mp == half) { w0 = _mm256_and_si256(w0, low); w1 = _mm256_and_si256(w1, low); }
                __m256 v0o = odd_avx2(w0), v0e = even_avx2(w0), v1o = odd_avx2(w1), v1e = even_avx2(w1);
                for (int r = 0; r < nr; r++) {
                    if (vis[r] == 0) continue;
                    __m256 po = _mm256_set1_ps(pr[r][2 * mp + 1]), pe = _mm256_set1_ps(pr[r][2 * mp]);
                    acc[r][0] = _mm256_fmadd_ps(pe, v0e, _mm256_fmadd_ps(po, v0o, acc[r][0]));
                    acc[r][1] = _mm256_fmadd_ps(pe, v1e, _mm256_fmadd_ps(po, v1o, acc[r][1]));
                }
            }
            for (int r = 0; r < nr; r++) {
                _mm256_storeu_ps(out + r * out_stride + d0, acc[r][0]);
                _mm256_storeu_ps(out + r * out_stride + d0 + 8, acc[r][1]);
            }
        }
    }
}

__attribute__((target("avx2,fma")))
static void attention_bf16_avx2(const float *qf, size_t rows, size_t first_pos, kv16_view kv, size_t g, size_t d,
                                float scale, float *out, size_t out_stride, float *m, float *l) {
    size_t blocks = (first_pos + rows + SIFT_KEY_BLOCK - 1) / SIFT_KEY_BLOCK;
    for (size_t b0 = 0; b0 < blocks; b0 += ATT_CHUNK) {
        size_t b1 = b0 + ATT_CHUNK < blocks ? b0 + ATT_CHUNK : blocks;
        size_t r = 0;
#define ROWS(NR) rows_bf16_avx2(NR, qf + r * d, first_pos + r, b0, b1, kv, g, d, scale, out + r * out_stride, out_stride, m + r, l + r)
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

/* ---- AVX-512: `vdpbf16ps` (hw), or FMAs on the pairs' halves -------------------------------- */

#define ATT_BF16 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,fma,avx2"), always_inline)) static inline

ATT_BF16 __m512 odd_avx512(__m512i w) { return _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32((int)0xFFFF0000u))); }
ATT_BF16 __m512 even_avx512(__m512i w) { return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)); }

/* acc += pairs(a) · pairs(b), lane by lane, as `vdpbf16ps` does: odd products first. `b` is a
 * pair word broadcast (hw) or its halves bo/be (FMAs). */
ATT_BF16 __m512 dot_pairs(int hw, __m512 acc, __m512i a, __m512 ao, __m512 ae, __m512i b, __m512 bo, __m512 be) {
    if (hw) return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
    return _mm512_fmadd_ps(be, ae, _mm512_fmadd_ps(bo, ao, acc));
}
ATT_BF16 __m512 dot_pairs_masked(int hw, __m512 acc, __mmask16 k, __m512i a, __m512 ao, __m512 ae, __m512i b, __m512 bo, __m512 be) {
    if (hw) return _mm512_mask_dpbf16_ps(acc, k, (__m512bh)a, (__m512bh)b);
    return _mm512_mask3_fmadd_ps(be, ae, _mm512_mask3_fmadd_ps(bo, ao, acc, k), k);
}

/* Scores of NR rows against one or two blocks' key pairs. Queries: pair words qp (hw) or
 * rounded fp32 qf, rows d/2 words (d floats) apart. */
ATT_BF16 void scores_bf16_avx512(int hw, int nr, int two, const uint32_t *qp, const float *qf, size_t d,
                                 const uint32_t *k0, const uint32_t *k1, __m512 *s0, __m512 *s1) {
    for (int r = 0; r < nr; r++) s0[r] = s1[r] = _mm512_setzero_ps();
    for (size_t p = 0; p < d / 2; p++) {
        __m512i w0 = _mm512_loadu_si512(k0 + p * SIFT_KEY_BLOCK);
        __m512i w1 = two ? _mm512_loadu_si512(k1 + p * SIFT_KEY_BLOCK) : w0;
        __m512 w0o = _mm512_setzero_ps(), w0e = w0o, w1o = w0o, w1e = w0o;
        if (!hw) {
            w0o = odd_avx512(w0); w0e = even_avx512(w0);
            if (two) { w1o = odd_avx512(w1); w1e = even_avx512(w1); }
        }
        for (int r = 0; r < nr; r++) {
            __m512i qw = _mm512_setzero_si512();
            __m512 qo = _mm512_setzero_ps(), qe = qo;
            if (hw) qw = _mm512_set1_epi32((int)qp[(size_t)r * (d / 2) + p]);
            else { qo = _mm512_set1_ps(qf[(size_t)r * d + 2 * p + 1]); qe = _mm512_set1_ps(qf[(size_t)r * d + 2 * p]); }
            s0[r] = dot_pairs(hw, s0[r], w0, w0o, w0e, qw, qo, qe);
            if (two) s1[r] = dot_pairs(hw, s1[r], w1, w1o, w1e, qw, qo, qe);
        }
    }
}

/* One block's softmax step and PV for NR rows from their raw scores. */
ATT_BF16 void block_bf16_avx512(int hw, int nr, __m512 *s, size_t pos0, size_t b, kv16_view kv, size_t g, size_t d,
                                float scale, float *out, size_t out_stride, float *m, float *l) {
    float pf[8][16] __attribute__((aligned(64)));
    uint32_t pp[8][8] __attribute__((aligned(32)));
    float c[8];
    size_t vis[8], pairs = 0;
    int rescale = 0;
    __m512 x[8], ex[8];
    __mmask16 sees[8], any[8];
    float bm[8], sum[8], m_new[8];
    for (int r = 0; r < 8; r++) {
        vis[r] = r < nr ? visible_keys(pos0 + (size_t)r, b) : 0;
        if ((vis[r] + 1) / 2 > pairs) pairs = (vis[r] + 1) / 2;
        sees[r] = (__mmask16)(vis[r] >= 16 ? 0xFFFF : (1u << vis[r]) - 1);
        any[r] = vis[r] ? 0xFFFF : 0;
        x[r] = r < nr ? _mm512_mul_ps(s[r], _mm512_set1_ps(scale)) : _mm512_setzero_ps();
        ex[r] = _mm512_mask_blend_ps(sees[r], _mm512_set1_ps(-INFINITY), x[r]);
    }
    max8_avx512(ex, bm);
    for (int r = 0; r < 8; r++) {
        m_new[r] = vis[r] ? fmaxf(m[r], bm[r]) : 0.0f;
        c[r] = vis[r] ? correction(m[r], m_new[r]) : 1.0f;
        if (c[r] != 1.0f) rescale = 1;
        __m512 e = _mm512_maskz_mov_ps(sees[r], exp_avx512(_mm512_sub_ps(x[r], _mm512_set1_ps(m_new[r]))));
        __m512i rounded = bf16_round_avx512(e);
        ex[r] = _mm512_castsi512_ps(_mm512_slli_epi32(rounded, 16));
        _mm512_store_ps(pf[r], ex[r]);
        _mm256_store_si256((__m256i *)pp[r], _mm512_cvtepi32_epi16(rounded));
    }
    sum8_avx512(ex, sum);
    for (int r = 0; r < nr; r++) {
        if (vis[r] == 0) continue;
        l[r] = l[r] * c[r] + sum[r];
        m[r] = m_new[r];
    }
    /* PV, 32 dims at a time; a row that sees none of the block is masked out (left as it was);
     * pairs no row sees add zeros and are skipped (same bits), and a pair half past the last
     * row's position is zeroed (see rows_bf16_avx2). */
    const uint32_t *vp = value_pairs(kv, b, g, d);
    size_t half = vis[nr - 1] % 2 ? vis[nr - 1] / 2 : SIZE_MAX;
    const __m512i low = _mm512_set1_epi32(0xFFFF);
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
        for (size_t mp = 0; mp < pairs; mp++) {
            __m512i w0 = _mm512_loadu_si512(vp + mp * d + d0), w1 = _mm512_loadu_si512(vp + mp * d + d0 + 16);
            if (mp == half) { w0 = _mm512_and_si512(w0, low); w1 = _mm512_and_si512(w1, low); }
            __m512 w0o = _mm512_setzero_ps(), w0e = w0o, w1o = w0o, w1e = w0o;
            if (!hw) { w0o = odd_avx512(w0); w0e = even_avx512(w0); w1o = odd_avx512(w1); w1e = even_avx512(w1); }
            for (int r = 0; r < nr; r++) {
                __m512i pw = _mm512_setzero_si512();
                __m512 po = _mm512_setzero_ps(), pe = po;
                if (hw) pw = _mm512_set1_epi32((int)pp[r][mp]);
                else { po = _mm512_set1_ps(pf[r][2 * mp + 1]); pe = _mm512_set1_ps(pf[r][2 * mp]); }
                acc[r][0] = dot_pairs_masked(hw, acc[r][0], any[r], w0, w0o, w0e, pw, po, pe);
                acc[r][1] = dot_pairs_masked(hw, acc[r][1], any[r], w1, w1o, w1e, pw, po, pe);
            }
        }
        for (int r = 0; r < nr; r++) {
            _mm512_storeu_ps(out + r * out_stride + d0, acc[r][0]);
            _mm512_storeu_ps(out + r * out_stride + d0 + 16, acc[r][1]);
        }
    }
}

ATT_BF16 void rows_bf16_avx512(int hw, int nr, const uint32_t *qp, const float *qf, size_t pos0, size_t b0, size_t b1,
                               kv16_view kv, size_t g, size_t d, float scale, float *out, size_t out_stride, float *m, float *l) {
    size_t last = pos0 + (size_t)nr - 1;
    if (b0 * SIFT_KEY_BLOCK > last) return;
    size_t end = (last / SIFT_KEY_BLOCK + 1) < b1 ? last / SIFT_KEY_BLOCK + 1 : b1;
    size_t b = b0;
    __m512 s0[ATT_ROWS], s1[ATT_ROWS];
    for (; b + 2 <= end; b += 2) {
        scores_bf16_avx512(hw, nr, 1, qp, qf, d, key_pairs(kv, b, g, d), key_pairs(kv, b + 1, g, d), s0, s1);
        block_bf16_avx512(hw, nr, s0, pos0, b, kv, g, d, scale, out, out_stride, m, l);
        block_bf16_avx512(hw, nr, s1, pos0, b + 1, kv, g, d, scale, out, out_stride, m, l);
    }
    if (b < end) {
        scores_bf16_avx512(hw, nr, 0, qp, qf, d, key_pairs(kv, b, g, d), NULL, s0, s1);
        block_bf16_avx512(hw, nr, s0, pos0, b, kv, g, d, scale, out, out_stride, m, l);
    }
}

#define ATTENTION_BF16_AVX512(NAME, HW)                                                                       \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,fma,avx2")))                           \
    static void NAME(const uint32_t *qp, const float *qf, size_t rows, size_t first_pos, kv16_view kv, size_t g,   \
                     size_t d, float scale, float *out, size_t out_stride, float *m, float *l) {                 \
        size_t blocks = (first_pos + rows + SIFT_KEY_BLOCK - 1) / SIFT_KEY_BLOCK;                               \
        for (size_t b0 = 0; b0 < blocks; b0 += ATT_CHUNK) {                                                     \
            size_t b1 = b0 + ATT_CHUNK < blocks ? b0 + ATT_CHUNK : blocks;                                      \
            size_t r = 0;                                                                                       \
            for (; r + 8 <= rows; r += 8)                                                                       \
                rows_bf16_avx512(HW, 8, qp + r * (d / 2), qf + r * d, first_pos + r, b0, b1, kv, g, d, scale,    \
                                 out + r * out_stride, out_stride, m + r, l + r);                               \
            if (r + 4 <= rows) {                                                                                \
                rows_bf16_avx512(HW, 4, qp + r * (d / 2), qf + r * d, first_pos + r, b0, b1, kv, g, d, scale,    \
                                 out + r * out_stride, out_stride, m + r, l + r);                               \
                r += 4;                                                                                         \
            }                                                                                                   \
            if (r + 2 <= rows) {                                                                                \
                rows_bf16_avx512(HW, 2, qp + r * (d / 2), qf + r * d, first_pos + r, b0, b1, kv, g, d, scale,    \
                                 out + r * out_stride, out_stride, m + r, l + r);                               \
                r += 2;                                                                                         \
            }                                                                                                   \
            if (r < rows)                                                                                       \
                rows_bf16_avx512(HW, 1, qp + r * (d / 2), qf + r * d, first_pos + r, b0, b1, kv, g, d, scale,    \
                                 out + r * out_stride, out_stride, m + r, l + r);                               \
        }                                                                                                       \
        for (size_t r = 0; r < rows; r++) {                                                                     \
            __m512 inv = _mm512_set1_ps(1.0f / l[r]);                                                           \
            float *o = out + r * out_stride;                                                                    \
            for (size_t dd = 0; dd < d; dd += 16) _mm512_storeu_ps(o + dd, _mm512_mul_ps(_mm512_loadu_ps(o + dd), inv)); \
        }                                                                                                       \
    }
ATTENTION_BF16_AVX512(attention_bf16_avx512_hw, 1)
ATTENTION_BF16_AVX512(attention_bf16_avx512_fma, 0)
#undef ATTENTION_BF16_AVX512
#endif

static void attention_bf16(sift_simd level, int hw, const float *q, size_t q_stride, size_t rows, size_t first_pos,
                           kv16_view kv, size_t g, size_t d, float scale, float *out, size_t out_stride, float *scratch) {
#if SIFT_X86
        if (level >= SIFT_SIMD_AVX2 && d % 32 == 0 && d <= ATT_MAX_D) {
            /* The queries, rounded, side by side in the scratch: as pair words for `vdpbf16ps`,
             * as fp32 for the FMA twins; the outputs in a tile beside them (see sift_attention). */
            float *m = scratch, *l = scratch + rows, *qf = scratch + 2 * rows, *ot = qf + SIFT_ATTENTION_Q_FLOATS;
            uint32_t *qp = (uint32_t *)qf;
            size_t tile = SIFT_ATTENTION_Q_FLOATS / d;
            for (size_t r0 = 0; r0 < rows; r0 += tile) {
                size_t n = rows - r0 < tile ? rows - r0 : tile;
                for (size_t r = 0; r < n; r++) {
                    const float *qr = q + (r0 + r) * q_stride;
                    if (hw) {
                        for (size_t p = 0; p < d / 2; p++)
                            qp[r * (d / 2) + p] = (uint32_t)bf16_round(qr[2 * p]) | (uint32_t)bf16_round(qr[2 * p + 1]) << 16;
                    } else {
                        for (size_t dd = 0; dd < d; dd++) qf[r * d + dd] = bf16_f32(bf16_round(qr[dd]));
                    }
                    m[r0 + r] = -INFINITY;
                    l[r0 + r] = 0.0f;
                }
                memset(ot, 0, n * d * sizeof(float));
                if (hw)
                    attention_bf16_avx512_hw(qp, qf, n, first_pos + r0, kv, g, d, scale, ot, d, m + r0, l + r0);
                else if (level == SIFT_SIMD_AVX512)
                    attention_bf16_avx512_fma(qp, qf, n, first_pos + r0, kv, g, d, scale, ot, d, m + r0, l + r0);
                else
                    attention_bf16_avx2(qf, n, first_pos + r0, kv, g, d, scale, ot, d, m + r0, l + r0);
                for (size_t r = 0; r < n; r++) memcpy(out + (r0 + r) * out_stride, ot + r * d, d * sizeof(float));
            }
            return;
        }
#else
        (void)level; (void)hw; (void)scratch;
#endif
        attention_bf16_portable(q, q_stride, rows, first_pos, kv, g, d, scale, out, out_stride);
}

void sift_attention_bf16(sift_simd level, int dot, const float *q, size_t q_stride, size_t rows, size_t first_pos,
                         const uint16_t *const *blocks, size_t k_off, size_t v_off, size_t g, size_t d,
                         float scale, float *out, size_t out_stride, float *scratch) {
    kv16_view kv = {blocks, k_off, v_off};
    level = sift_simd_usable(level);
    int hw = dot && level == SIFT_SIMD_AVX512 && (sift_cpu_features() & SIFT_CPU_AVX512BF16);
    /* Denormals flushed (FTZ) and read as zero (DAZ) for the call, as `vdpbf16ps` always does. */
#if SIFT_X86
    unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u);
    attention_bf16(level, hw, q, q_stride, rows, first_pos, kv, g, d, scale, out, out_stride, scratch);
    _mm_setcsr(saved);
#elif defined(__aarch64__)
    uint64_t saved;   /* FPCR.FZ (bit 24) flushes denormal inputs and results, as FTZ + DAZ */
    __asm__ volatile("mrs %0, fpcr" : "=r"(saved));
    __asm__ volatile("msr fpcr, %0" : : "r"(saved | (1ull << 24)));
    attention_bf16(level, hw, q, q_stride, rows, first_pos, kv, g, d, scale, out, out_stride, scratch);
    __asm__ volatile("msr fpcr, %0" : : "r"(saved));
#else
#error "bf16 attention needs denormals flushed: add this architecture's control register"
#endif
}

/* ---- the bf16 dot peak ---------------------------------------------------------------------- */

enum { PEAK_CHAINS_BF16 = 12 };

#if SIFT_X86
__attribute__((target("avx512f,avx512bf16")))
static float bf16_peak512(size_t iters) {
    __m512 acc[PEAK_CHAINS_BF16];
    __m512bh a, b;
    __m512i ai = _mm512_set1_epi32(0x3F803F80), bi = _mm512_set1_epi32(0x33803380);  /* 1.0 pairs, 2^-24 pairs */
    memcpy(&a, &ai, 64);
    memcpy(&b, &bi, 64);
    for (int i = 0; i < PEAK_CHAINS_BF16; i++) acc[i] = _mm512_set1_ps((float)i);
    for (size_t it = 0; it < iters; it++) {
        for (int i = 0; i < PEAK_CHAINS_BF16; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    __m512 s = acc[0];
    for (int i = 1; i < PEAK_CHAINS_BF16; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}
#endif

float sift_bf16_peak_loop(size_t iters) {
#if SIFT_X86
    if (sift_cpu_features() & SIFT_CPU_AVX512BF16) return bf16_peak512(iters);
#endif
    (void)iters;
    return 0.0f;
}

size_t sift_bf16_peak_flops(size_t iters) {
    /* 16 lanes × 2 products × 2 operations (multiply, add) per instruction. */
    return (sift_cpu_features() & SIFT_CPU_AVX512BF16) ? iters * PEAK_CHAINS_BF16 * 16 * 2 * 2 : 0;
}
