#include "attention_common.h"
#include <stdint.h>
#include <string.h>

/* Attention with K and V in int8: a quarter of the fp32 KV memory, and on CPUs with AVX-512 VNNI
 * its dot products run on `vpdpbusd` (64 products per instruction where an fp32 FMA does 16).
 * Defined by its operations, which every path performs with the same integers and the same
 * float operations in the same order:
 *
 *  - stored K and V: per token and KV head, a = max|x|, scale a / 127, x8 = rne(x · (127 / a))
 *    clamped to ±127 (all 0, scale 0, when a is 0); per key also ksum = Σ k8;
 *  - a query row, the same with its own a: q8 and qs; qsc = qs · scale;
 *  - score of key j: i_j = Σ q8·k8_j (exact, int32), x_j = (float)i_j · (ks_j · qsc);
 *  - keys in steps of 32 (two blocks: positions 32t … 32t + 31), each step as one block of the
 *    fp32 kernel: the running max, correction and e_j = exp(x_j − m') (0 for keys the row does
 *    not see), l = l·c + tree16(e_j + e_{j+16});
 *  - probabilities: w_j = e_j · vs_j (the value scale folded in; 0 for keys not seen), pm = the
 *    step's max w_j, u_j = rne(w_j · (255 / pm)) in 0…255 (0 when pm is 0), sp = pm / 255;
 *    o[dd] = fma(sp, (float)Σ_j u_j·v8_j[dd], o[dd]·c) (the sum exact, int32);
 *  - finally o · (1/l).
 * Steps of 32 keys halve the per-key softmax and output bookkeeping of 16-key steps, which with
 * dot products this cheap is what the time goes to.
 * A row's result depends only on its position and its keys, as in the other kernels.
 *
 * Layout in a KV block (bytes): KV head g's keys are (head_dim/4 × 16) quads — quad p of key j,
 * k[4p…4p+3], is the 32-bit word j of row p, so one 64-byte load holds four dimensions of 16 keys;
 * its values are (4 × head_dim) quads — word dd of row m holds (v_{4m}[dd], …, v_{4m+3}[dd]), so
 * one load holds 16 dimensions of four keys; then per head 16 key scales, 16 key sums (int32)
 * and 16 value scales. */

typedef struct {
    const int8_t *const *blocks;
    size_t k_off, v_off, s_off;  /* bytes */
} kv8_view;

static inline const int8_t *key_quads(kv8_view kv, size_t b, size_t g, size_t d) {
    return kv.blocks[b] + kv.k_off + g * d * SIFT_KEY_BLOCK;
}

static inline const int8_t *value_quads(kv8_view kv, size_t b, size_t g, size_t d) {
    return kv.blocks[b] + kv.v_off + g * SIFT_KEY_BLOCK * d;
}

/* Head g's key scales [0, 16), key sums [16, 32) (int32) and value scales [32, 48). */
static inline const float *head_scales(kv8_view kv, size_t b, size_t g) {
    return (const float *)(const void *)(kv.blocks[b] + kv.s_off) + g * 3 * SIFT_KEY_BLOCK;
}

/* ---- quantizing ------------------------------------------------------------------------------
 * The scalar definition below; the AVX-512 and AVX2 twins give its bits for every input: max|x|
 * ignores NaN in both (fmaxf; vmaxps returns its second operand, the running max, when the first
 * is NaN), and x · (127 / a) is within ±127.0001, ±inf or NaN, which lrintf and vcvtps2dq round
 * alike (both modes round to nearest even; inf and NaN give the negative "indefinite" integer,
 * −127 once clamped). */

static inline float amax(const float *x, size_t n) {
    float a = 0.0f;
    for (size_t i = 0; i < n; i++) a = fmaxf(a, fabsf(x[i]));
    return a;
}

static inline int8_t s8(float x) {
    long r = lrintf(x);
    return (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
}

/* Head g's scales and key sum for position `slot` (see head_scales). */
static inline void store_head_scales(float *scales, size_t g, size_t slot, float ka, int32_t ksum, float va) {
    float *s = scales + g * 3 * SIFT_KEY_BLOCK;
    s[slot] = ka / 127.0f;
    memcpy(s + SIFT_KEY_BLOCK + slot, &ksum, 4);
    s[2 * SIFT_KEY_BLOCK + slot] = va / 127.0f;
}

#if SIFT_X86

/* A head's quantized key (d bytes in order) into its block as d/4 words, 16 words apart (the
   SIMD stores quantize a whole key first; the portable loop below writes byte by byte). */
static inline void store_key_words(int8_t *kh, const int8_t *kq, size_t d, size_t slot) {
    for (size_t p = 0; p < d / 4; p++) memcpy(kh + (p * SIFT_KEY_BLOCK + slot) * 4, kq + 4 * p, 4);
}
#define I8Q_512 __attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline

I8Q_512 float amax_avx512(const float *x, size_t n) {
    __m512 a = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) a = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), a);
    return _mm512_reduce_max_ps(a);
}

I8Q_512 __m512i s8_avx512(const float *x, __m512 inv) {
    __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x), inv));
    return _mm512_max_epi32(_mm512_min_epi32(r, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
}

/* sift_kv_store_i8 for d a multiple of 16. Values are written with byte-masked stores: the other
 * three positions of each word may be written at the same time by another thread. */
__attribute__((target("avx512f,avx512bw,avx512vl")))
static void kv_store_i8_avx512(const float *key, const float *value, size_t kv_dim, size_t d,
                               int8_t *keys, int8_t *values, float *scales, size_t slot) {
    const __mmask64 lane = 0x1111111111111111ull << (slot % 4);
    const __m128i shift = _mm_cvtsi32_si128((int)(8 * (slot % 4)));
    for (size_t g = 0; g < kv_dim / d; g++) {
        const float *k = key + g * d, *v = value + g * d;
        float ka = amax_avx512(k, d), va = amax_avx512(v, d);
        __m512 kinv = _mm512_set1_ps(ka > 0.0f ? 127.0f / ka : 0.0f), vinv = _mm512_set1_ps(va > 0.0f ? 127.0f / va : 0.0f);
        int8_t *kh = keys + g * d * SIFT_KEY_BLOCK, *vh = values + g * SIFT_KEY_BLOCK * d + (slot / 4) * d * 4;
        int8_t kq[ATT_MAX_D] __attribute__((aligned(64)));
        __m512i ksum = _mm512_setzero_si512();
        for (size_t d0 = 0; d0 < d; d0 += 16) {
            __m512i k8 = s8_avx512(k + d0, kinv);
            ksum = _mm512_add_epi32(ksum, k8);
            _mm_store_si128((__m128i *)(kq + d0), _mm512_cvtepi32_epi8(k8));
            __m512i v8 = _mm512_sll_epi32(_mm512_and_si512(s8_avx512(v + d0, vinv), _mm512_set1_epi32(0xFF)), shift);
            _mm512_mask_storeu_epi8(vh + d0 * 4, lane, v8);
        }
        store_key_words(kh, kq, d, slot);
        store_head_scales(scales, g, slot, ka, _mm512_reduce_add_epi32(ksum), va);
    }
}

/* quantize_query for d a multiple of 16. */
__attribute__((target("avx512f,avx512bw,avx512vl")))
static void quantize_query_avx512(const float *q, size_t d, float scale, int8_t *q8, float *qsc) {
    float a = amax_avx512(q, d);
    __m512 inv = _mm512_set1_ps(a > 0.0f ? 127.0f / a : 0.0f);
    for (size_t d0 = 0; d0 < d; d0 += 16) _mm_storeu_si128((__m128i *)(q8 + d0), _mm512_cvtepi32_epi8(s8_avx512(q + d0, inv)));
    *qsc = (a / 127.0f) * scale;
}

#define I8Q_AVX2 __attribute__((target("avx2"), always_inline)) static inline

I8Q_AVX2 float amax_avx2(const float *x, size_t n) {
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 a = _mm256_setzero_ps();
    for (size_t i = 0; i < n; i += 8) a = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), magnitude), a);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
}

/* 16 values quantized (as s8_avx512) into 16 bytes in order; their sum added to *sum if given. */
I8Q_AVX2 __m128i s8x16_avx2(const float *x, __m256 inv, __m256i *sum) {
    const __m256i hi = _mm256_set1_epi32(127), lo = _mm256_set1_epi32(-127);
    __m256i a = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), inv)), hi), lo);
    __m256i b = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), inv)), hi), lo);
    if (sum) *sum = _mm256_add_epi32(*sum, _mm256_add_epi32(a, b));
    __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);   /* int16 in order */
    return _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

/* sift_kv_store_i8 for d a multiple of 16: quantized with AVX2, written byte by byte. */
__attribute__((target("avx2")))
static void kv_store_i8_avx2(const float *key, const float *value, size_t kv_dim, size_t d,
                             int8_t *keys, int8_t *values, float *scales, size_t slot) {
    for (size_t g = 0; g < kv_dim / d; g++) {
        const float *k = key + g * d, *v = value + g * d;
        float ka = amax_avx2(k, d), va = amax_avx2(v, d);
        __m256 kinv = _mm256_set1_ps(ka > 0.0f ? 127.0f / ka : 0.0f), vinv = _mm256_set1_ps(va > 0.0f ? 127.0f / va : 0.0f);
        int8_t *kh = keys + g * d * SIFT_KEY_BLOCK, *vh = values + g * SIFT_KEY_BLOCK * d + (slot / 4) * d * 4 + slot % 4;
        int8_t kq[ATT_MAX_D] __attribute__((aligned(32))), vq[ATT_MAX_D] __attribute__((aligned(32)));
        __m256i ksum = _mm256_setzero_si256();
        for (size_t d0 = 0; d0 < d; d0 += 16) {
            _mm_store_si128((__m128i *)(kq + d0), s8x16_avx2(k + d0, kinv, &ksum));
            _mm_store_si128((__m128i *)(vq + d0), s8x16_avx2(v + d0, vinv, NULL));
        }
        store_key_words(kh, kq, d, slot);
        for (size_t dd = 0; dd < d; dd++) vh[dd * 4] = vq[dd];
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(ksum), _mm256_extracti128_si256(ksum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        store_head_scales(scales, g, slot, ka, _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1))), va);
    }
}

/* quantize_query for d a multiple of 16. */
__attribute__((target("avx2")))
static void quantize_query_avx2(const float *q, size_t d, float scale, int8_t *q8, float *qsc) {
    float a = amax_avx2(q, d);
    __m256 inv = _mm256_set1_ps(a > 0.0f ? 127.0f / a : 0.0f);
    for (size_t d0 = 0; d0 < d; d0 += 16) _mm_storeu_si128((__m128i *)(q8 + d0), s8x16_avx2(q + d0, inv, NULL));
    *qsc = (a / 127.0f) * scale;
}
#endif

void sift_kv_store_i8(sift_simd level, const float *key, const float *value, size_t kv_dim, size_t d,
                      int8_t *keys, int8_t *values, float *scales, size_t slot) {
#if SIFT_X86
    level = sift_simd_usable(level);
    if (level >= SIFT_SIMD_AVX2 && d % 16 == 0 && d <= ATT_MAX_D) {
        if (level == SIFT_SIMD_AVX512) kv_store_i8_avx512(key, value, kv_dim, d, keys, values, scales, slot);
        else kv_store_i8_avx2(key, value, kv_dim, d, keys, values, scales, slot);
        return;
    }
#endif
    for (size_t g = 0; g < kv_dim / d; g++) {
        const float *k = key + g * d, *v = value + g * d;
        float ka = amax(k, d), va = amax(v, d);
        float kinv = ka > 0.0f ? 127.0f / ka : 0.0f, vinv = va > 0.0f ? 127.0f / va : 0.0f;
        int8_t *kh = keys + g * d * SIFT_KEY_BLOCK, *vh = values + g * SIFT_KEY_BLOCK * d;
        int32_t ksum = 0;
        for (size_t dd = 0; dd < d; dd++) {
            int8_t kq = s8(k[dd] * kinv);
            kh[((dd / 4) * SIFT_KEY_BLOCK + slot) * 4 + dd % 4] = kq;
            ksum += kq;
            vh[((slot / 4) * d + dd) * 4 + slot % 4] = s8(v[dd] * vinv);
        }
        store_head_scales(scales, g, slot, ka, ksum, va);
    }
}

/* Row r of the queries as s8 quads (d/4 words) and its qsc. */
static void quantize_query(const float *q, size_t d, float scale, int8_t *q8, float *qsc) {
    float a = amax(q, d);
    float inv = a > 0.0f ? 127.0f / a : 0.0f;
    for (size_t dd = 0; dd < d; dd++) q8[dd] = s8(q[dd] * inv);
    *qsc = (a / 127.0f) * scale;
}

/* u_j from w_j (pm their max): the same expression on every path. */
static inline float prob_inverse(float pm) { return pm > 0.0f ? 255.0f / pm : 0.0f; }

/* Keys of step t (blocks 2t and 2t + 1: positions 32t ... 32t + 31) a row at `pos` sees. */
enum { STEP_KEYS = 2 * SIFT_KEY_BLOCK };
static inline size_t step_keys(size_t pos, size_t t) {
    size_t first = t * STEP_KEYS;
    if (pos < first) return 0;
    size_t n = pos - first + 1;
    return n < STEP_KEYS ? n : STEP_KEYS;
}

/* ---- portable ------------------------------------------------------------------------------ */

static void attention_i8_portable(const int8_t *q8, const float *qsc, size_t rows, size_t first_pos, kv8_view kv,
                                  size_t g, size_t d, float *out, size_t out_stride, float *m_out, float *l_out) {
    for (size_t r = 0; r < rows; r++) {
        size_t pos = first_pos + r;
        const int8_t *qr = q8 + r * d;
        float *o = out + r * out_stride;
        float m = -INFINITY, l = 0.0f;
        for (size_t t = 0; t * STEP_KEYS <= pos; t++) {
            size_t visible = step_keys(pos, t);
            float x[STEP_KEYS], bm = -INFINITY;
            for (size_t j = 0; j < visible; j++) {
                size_t b = 2 * t + j / SIFT_KEY_BLOCK, slot = j % SIFT_KEY_BLOCK;
                const int8_t *kq = key_quads(kv, b, g, d);
                int32_t acc = 0;
                for (size_t dd = 0; dd < d; dd++) acc += (int32_t)qr[dd] * kq[((dd / 4) * SIFT_KEY_BLOCK + slot) * 4 + dd % 4];
                x[j] = (float)acc * (head_scales(kv, b, g)[slot] * qsc[r]);
                bm = fmaxf(bm, x[j]);
            }
            float m_new = fmaxf(m, bm);
            float c = correction(m, m_new);
            float e[STEP_KEYS], w[STEP_KEYS], pm = 0.0f;
            for (size_t j = 0; j < STEP_KEYS; j++) {
                e[j] = j < visible ? exp_portable(x[j] - m_new) : 0.0f;
                w[j] = j < visible ? e[j] * head_scales(kv, 2 * t + j / SIFT_KEY_BLOCK, g)[2 * SIFT_KEY_BLOCK + j % SIFT_KEY_BLOCK] : 0.0f;
                pm = fmaxf(pm, w[j]);
            }
            float folded[16];
            for (size_t j = 0; j < 16; j++) folded[j] = e[j] + e[j + 16];
            l = l * c + sum16_tree(folded);
            m = m_new;
            float inv = prob_inverse(pm), sp = pm / 255.0f;
            int32_t u[STEP_KEYS];
            for (size_t j = 0; j < STEP_KEYS; j++) u[j] = (int32_t)lrintf(w[j] * inv);
            for (size_t dd = 0; dd < d; dd++) {
                int32_t acc = 0;
                /* Keys the row does not see have u 0: skipped, so data past the end is never read. */
                for (size_t j = 0; j < visible; j++) {
                    size_t slot = j % SIFT_KEY_BLOCK;
                    acc += u[j] * value_quads(kv, 2 * t + j / SIFT_KEY_BLOCK, g, d)[((slot / 4) * d + dd) * 4 + slot % 4];
                }
                o[dd] = fmaf(sp, (float)acc, o[dd] * c);
            }
        }
        m_out[r] = m;
        l_out[r] = l;
    }
}

#if SIFT_X86
/* ---- AVX2 (8 lanes; no VNNI: exact with maddubs/madd as the int8 GEMM's AVX2 path) ------------ */

/* NR (≤ 4) rows, one step: scores by maddubs(|k|, sign(q, k)) (|q|, |k| ≤ 127: a pair of
 * products never saturates) and madd with ones; PV on int16 (u up to 255) by madd. */
ATT_AVX2 void step_i8_avx2(int nr, const int8_t *q8, const float *qsc, size_t pos0, size_t t, kv8_view kv,
                           size_t g, size_t d, float *out, size_t out_stride, float *m, float *l) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i ones = _mm256_set1_epi16(1);
    /* hadd of two madds leaves dimensions in the order 0 1 4 5 2 3 6 7 */
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    const __m256 minus_inf = _mm256_set1_ps(-INFINITY);
    size_t last = pos0 + (size_t)nr - 1;
    int halves = last >= t * STEP_KEYS + SIFT_KEY_BLOCK ? 2 : 1;   /* blocks some row sees */
    __m256i acc[4][4];
    for (int r = 0; r < nr; r++)
        for (int k = 0; k < 4; k++) acc[r][k] = _mm256_setzero_si256();
    for (int h = 0; h < halves; h++) {
        const int8_t *kq = key_quads(kv, 2 * t + h, g, d);
        for (size_t p = 0; p < d / 4; p++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(kq + p * 64));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(kq + p * 64 + 32));
            __m256i a0 = _mm256_abs_epi8(w0), a1 = _mm256_abs_epi8(w1);
            for (int r = 0; r < nr; r++) {
                int32_t word;
                memcpy(&word, q8 + (size_t)r * d + 4 * p, 4);
                __m256i qb = _mm256_set1_epi32(word);
                acc[r][2 * h] = _mm256_add_epi32(acc[r][2 * h], _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(qb, w0)), ones));
                acc[r][2 * h + 1] = _mm256_add_epi32(acc[r][2 * h + 1], _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(qb, w1)), ones));
            }
        }
    }
    const float *sc[2] = {head_scales(kv, 2 * t, g), head_scales(kv, 2 * t + halves - 1, g)};
    float c[4], sp[4];
    size_t vis[4], quads[2] = {0, 0};
    uint64_t upat[4][8];
    for (int r = 0; r < nr; r++) {
        vis[r] = step_keys(pos0 + (size_t)r, t);
        c[r] = 1.0f;
        sp[r] = 0.0f;
        if (vis[r] == 0) continue;
        for (int h = 0; h < 2; h++) {
            size_t in_block = vis[r] > (size_t)h * 16 ? vis[r] - (size_t)h * 16 : 0;
            if (in_block > 16) in_block = 16;
            if ((in_block + 3) / 4 > quads[h]) quads[h] = (in_block + 3) / 4;
        }
        __m256 x[4], see[4], qs = _mm256_set1_ps(qsc[r]);
        for (int k = 0; k < 4; k++) {
            see[k] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)vis[r] - 8 * k), lanes));
            x[k] = k < 2 * halves ? _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][k]), _mm256_mul_ps(_mm256_loadu_ps(sc[k / 2] + 8 * (k % 2)), qs))
                                  : _mm256_setzero_ps();
        }
        float bm = max16_avx2(_mm256_max_ps(_mm256_blendv_ps(minus_inf, x[0], see[0]), _mm256_blendv_ps(minus_inf, x[2], see[2])),
                              _mm256_max_ps(_mm256_blendv_ps(minus_inf, x[1], see[1]), _mm256_blendv_ps(minus_inf, x[3], see[3])));
        float m_new = fmaxf(m[r], bm);
        c[r] = correction(m[r], m_new);
        __m256 vm = _mm256_set1_ps(m_new), e[4], w[4];
        for (int k = 0; k < 4; k++) {
            e[k] = _mm256_and_ps(exp_avx2(_mm256_sub_ps(x[k], vm)), see[k]);
            w[k] = k < 2 * halves ? _mm256_and_ps(_mm256_mul_ps(e[k], _mm256_loadu_ps(sc[k / 2] + 32 + 8 * (k % 2))), see[k])
                                  : _mm256_setzero_ps();
        }
        l[r] = l[r] * c[r] + sum16_tree_avx2(_mm256_add_ps(e[0], e[2]), _mm256_add_ps(e[1], e[3]));
        m[r] = m_new;
        float pm = fmaxf(0.0f, max16_avx2(_mm256_max_ps(w[0], w[2]), _mm256_max_ps(w[1], w[3])));
        __m256 inv = _mm256_set1_ps(prob_inverse(pm));
        sp[r] = pm / 255.0f;
        int32_t u[32] __attribute__((aligned(32)));
        for (int k = 0; k < 4; k++) _mm256_store_si256((__m256i *)(u + 8 * k), _mm256_cvtps_epi32(_mm256_mul_ps(w[k], inv)));
        for (int mq = 0; mq < 8; mq++)
            upat[r][mq] = (uint64_t)(uint16_t)u[4 * mq] | (uint64_t)(uint16_t)u[4 * mq + 1] << 16 |
                          (uint64_t)(uint16_t)u[4 * mq + 2] << 32 | (uint64_t)(uint16_t)u[4 * mq + 3] << 48;
    }
    /* PV, 8 dimensions at a time: four keys' values sign-extended to int16, multiplied by
     * their u and summed in pairs (madd), the pairs of pairs by hadd. Quads no row sees are
     * skipped (they would add zeros). */
    for (size_t d0 = 0; d0 < d; d0 += 8) {
        __m256i ia[4];
        for (int r = 0; r < nr; r++) ia[r] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            if (quads[h] == 0) continue;
            const int8_t *vq = value_quads(kv, 2 * t + (size_t)h, g, d);
            for (size_t mq = 0; mq < quads[h]; mq++) {
                __m256i raw = _mm256_loadu_si256((const __m256i *)(vq + (mq * d + d0) * 4));
                __m256i lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(raw));
                __m256i hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(raw, 1));
                for (int r = 0; r < nr; r++) {
                    if (vis[r] == 0) continue;
                    __m256i up = _mm256_set1_epi64x((long long)upat[r][4 * h + mq]);
                    ia[r] = _mm256_add_epi32(ia[r], _mm256_hadd_epi32(_mm256_madd_epi16(lo, up), _mm256_madd_epi16(hi, up)));
                }
            }
        }
        for (int r = 0; r < nr; r++) {
            if (vis[r] == 0) continue;
            float *o = out + (size_t)r * out_stride + d0;
            __m256 ov = _mm256_mul_ps(_mm256_loadu_ps(o), _mm256_set1_ps(c[r]));
            __m256 sums = _mm256_cvtepi32_ps(_mm256_permutevar8x32_epi32(ia[r], order));
            _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_set1_ps(sp[r]), sums, ov));
        }
    }
}

/* The walk every SIMD path makes: key steps in chunks (a chunk's keys stay in L1 across its row
 * groups), rows in groups of MAX, then 4, 2, 1 — each group's count a constant, so STEP's loops
 * are unrolled for it. */
#define I8_ROWS(STEP, NR)                                                                                     \
    for (size_t t = t0; t < t1 && t * STEP_KEYS <= first_pos + r + (NR) - 1; t++)                              \
        STEP(NR, q + r * d, qsc + r, first_pos + r, t, kv, g, d, out + r * out_stride, out_stride, m + r, l + r)
#define I8_DRIVER(NAME, TARGET, STEP, QT, MAX)                                                                \
    __attribute__((target(TARGET)))                                                                           \
    static void NAME(const QT *q, const float *qsc, size_t rows, size_t first_pos, kv8_view kv, size_t g,      \
                     size_t d, float *out, size_t out_stride, float *m, float *l) {                            \
        size_t steps = (first_pos + rows + STEP_KEYS - 1) / STEP_KEYS, chunk = ATT_CHUNK / 2;                  \
        for (size_t t0 = 0; t0 < steps; t0 += chunk) {                                                         \
            size_t t1 = t0 + chunk < steps ? t0 + chunk : steps, r = 0;                                        \
            for (; r + (MAX) <= rows; r += (MAX)) { I8_ROWS(STEP, MAX); }                                      \
            if ((MAX) > 4 && r + 4 <= rows) { I8_ROWS(STEP, 4); r += 4; }                                      \
            if (r + 2 <= rows) { I8_ROWS(STEP, 2); r += 2; }                                                   \
            if (r < rows) { I8_ROWS(STEP, 1); r += 1; }                                                        \
        }                                                                                                      \
    }
I8_DRIVER(attention_i8_avx2, "avx2,fma", step_i8_avx2, int8_t, 4)

/* ---- AVX-512 VNNI ------------------------------------------------------------------------------ */

#define ATT_VNNI __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512vnni,fma,avx2"), always_inline)) static inline

/* One step (two blocks) for NR (≤ 8) rows: scores by vpdpbusd on the queries as u8 (q8 + 128,
 * flipped once by the caller) less 128·ksum, the softmax step, and PV by vpdpbusd on the u8
 * probabilities. The eight rows' maxima and sums are reduced together (the trees of
 * attention_common.h), their scale divisions in one vector. */
ATT_VNNI void step_i8_avx512(int nr, const uint8_t *qu, const float *qsc, size_t pos0, size_t t, kv8_view kv, size_t g,
                             size_t d, float *out, size_t out_stride, float *m, float *l) {
    size_t last = pos0 + (size_t)nr - 1;
    int two = last >= t * STEP_KEYS + SIFT_KEY_BLOCK;   /* some row sees the second block */
    const int8_t *kq0 = key_quads(kv, 2 * t, g, d), *kq1 = two ? key_quads(kv, 2 * t + 1, g, d) : kq0;
    __m512i acc0[8], acc1[8];
    for (int r = 0; r < nr; r++) acc0[r] = acc1[r] = _mm512_setzero_si512();
    for (size_t p = 0; p < d / 4; p++) {
        __m512i w0 = _mm512_loadu_si512(kq0 + p * 64);
        __m512i w1 = two ? _mm512_loadu_si512(kq1 + p * 64) : w0;
        for (int r = 0; r < nr; r++) {
            int32_t word;
            memcpy(&word, qu + (size_t)r * d + 4 * p, 4);
            __m512i qb = _mm512_set1_epi32(word);
            acc0[r] = _mm512_dpbusd_epi32(acc0[r], qb, w0);
            if (two) acc1[r] = _mm512_dpbusd_epi32(acc1[r], qb, w1);
        }
    }
    const float *sc0 = head_scales(kv, 2 * t, g), *sc1 = two ? head_scales(kv, 2 * t + 1, g) : sc0;
    __m512i bias0 = _mm512_slli_epi32(_mm512_loadu_si512(sc0 + SIFT_KEY_BLOCK), 7);
    __m512i bias1 = _mm512_slli_epi32(_mm512_loadu_si512(sc1 + SIFT_KEY_BLOCK), 7);
    __m512 ks0 = _mm512_loadu_ps(sc0), ks1 = _mm512_loadu_ps(sc1);
    __m512 vs0 = _mm512_loadu_ps(sc0 + 2 * SIFT_KEY_BLOCK), vs1 = _mm512_loadu_ps(sc1 + 2 * SIFT_KEY_BLOCK);
    float c[8], bm[8], sum[8], m_new[8], pm[8] __attribute__((aligned(32)));
    size_t vis[8], quads0 = 0, quads1 = 0;
    __mmask16 sees0[8], sees1[8];
    __m512 x0[8], x1[8], t8[8];
    for (int r = 0; r < 8; r++) {
        vis[r] = r < nr ? step_keys(pos0 + (size_t)r, t) : 0;
        size_t v0 = vis[r] < 16 ? vis[r] : 16, v1 = vis[r] > 16 ? vis[r] - 16 : 0;
        if ((v0 + 3) / 4 > quads0) quads0 = (v0 + 3) / 4;
        if ((v1 + 3) / 4 > quads1) quads1 = (v1 + 3) / 4;
        sees0[r] = (__mmask16)(v0 >= 16 ? 0xFFFF : (1u << v0) - 1);
        sees1[r] = (__mmask16)(v1 >= 16 ? 0xFFFF : (1u << v1) - 1);
        __m512 qs = _mm512_set1_ps(r < nr ? qsc[r] : 0.0f);
        x0[r] = v0 ? _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc0[r], bias0)), _mm512_mul_ps(ks0, qs)) : _mm512_setzero_ps();
        x1[r] = v1 ? _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc1[r], bias1)), _mm512_mul_ps(ks1, qs)) : _mm512_setzero_ps();
        t8[r] = _mm512_max_ps(_mm512_mask_blend_ps(sees0[r], _mm512_set1_ps(-INFINITY), x0[r]),
                              _mm512_mask_blend_ps(sees1[r], _mm512_set1_ps(-INFINITY), x1[r]));
    }
    max8_avx512(t8, bm);
    float wf[8][STEP_KEYS] __attribute__((aligned(64)));
    int rescale = 0;
    for (int r = 0; r < 8; r++) {
        m_new[r] = vis[r] ? fmaxf(m[r], bm[r]) : 0.0f;
        c[r] = vis[r] ? correction(m[r], m_new[r]) : 1.0f;
        if (c[r] != 1.0f) rescale = 1;
        __m512 mv = _mm512_set1_ps(m_new[r]);
        __m512 e0 = _mm512_maskz_mov_ps(sees0[r], exp_avx512(_mm512_sub_ps(x0[r], mv)));
        __m512 e1 = sees1[r] ? _mm512_maskz_mov_ps(sees1[r], exp_avx512(_mm512_sub_ps(x1[r], mv))) : _mm512_setzero_ps();
        __m512 w0 = _mm512_maskz_mul_ps(sees0[r], e0, vs0), w1 = _mm512_maskz_mul_ps(sees1[r], e1, vs1);
        _mm512_store_ps(wf[r], w0);
        _mm512_store_ps(wf[r] + 16, w1);
        x0[r] = _mm512_add_ps(e0, e1);   /* the folded exponentials, for the sum */
        t8[r] = _mm512_max_ps(w0, w1);
    }
    max8_avx512(t8, pm);
    sum8_avx512(x0, sum);
    /* prob_inverse and pm / 255 for the eight rows at once (IEEE division: the scalar's bits). */
    __m256 pmv = _mm256_load_ps(pm);
    __m256 positive = _mm256_cmp_ps(pmv, _mm256_setzero_ps(), _CMP_GT_OQ);
    float inv[8] __attribute__((aligned(32))), sp[8] __attribute__((aligned(32)));
    _mm256_store_ps(inv, _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(255.0f), pmv), positive));
    _mm256_store_ps(sp, _mm256_div_ps(pmv, _mm256_set1_ps(255.0f)));
    uint32_t pq[8][8] __attribute__((aligned(32)));
    for (int r = 0; r < nr; r++) {
        __m512 iv = _mm512_set1_ps(inv[r]);
        _mm_store_si128((__m128i *)pq[r], _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(wf[r]), iv))));
        _mm_store_si128((__m128i *)(pq[r] + 4), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(wf[r] + 16), iv))));
        if (vis[r] == 0) continue;
        l[r] = l[r] * c[r] + sum[r];
        m[r] = m_new[r];
    }
    const int8_t *vq0 = value_quads(kv, 2 * t, g, d), *vq1 = quads1 ? value_quads(kv, 2 * t + 1, g, d) : vq0;
    for (size_t d0 = 0; d0 < d; d0 += 16) {
        __m512i ia[8];
        for (int r = 0; r < nr; r++) ia[r] = _mm512_setzero_si512();
        for (size_t mq = 0; mq < quads0; mq++) {
            __m512i v = _mm512_loadu_si512(vq0 + (mq * d + d0) * 4);
            for (int r = 0; r < nr; r++) ia[r] = _mm512_dpbusd_epi32(ia[r], _mm512_set1_epi32((int)pq[r][mq]), v);
        }
        for (size_t mq = 0; mq < quads1; mq++) {
            __m512i v = _mm512_loadu_si512(vq1 + (mq * d + d0) * 4);
            for (int r = 0; r < nr; r++) ia[r] = _mm512_dpbusd_epi32(ia[r], _mm512_set1_epi32((int)pq[r][4 + mq]), v);
        }
        for (int r = 0; r < nr; r++) {
            if (vis[r] == 0) continue;
            float *o = out + (size_t)r * out_stride + d0;
            __m512 ov = _mm512_loadu_ps(o);
            if (rescale) ov = _mm512_mul_ps(ov, _mm512_set1_ps(c[r]));
            _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_set1_ps(sp[r]), _mm512_cvtepi32_ps(ia[r]), ov));
        }
    }
}

I8_DRIVER(attention_i8_avx512, "avx512f,avx512dq,avx512bw,avx512vl,avx512vnni,fma,avx2", step_i8_avx512, uint8_t, 8)
#undef I8_DRIVER
#undef I8_ROWS
#endif

void sift_attention_i8(sift_simd level, const float *q, size_t q_stride, size_t rows, size_t first_pos,
                       const int8_t *const *blocks, size_t k_off, size_t v_off, size_t s_off, size_t g, size_t d,
                       float scale, float *out, size_t out_stride, float *scratch) {
    kv8_view kv = {blocks, k_off, v_off, s_off};
    level = sift_simd_usable(level);
    if (d % 16 != 0 || d > ATT_MAX_D) level = SIFT_SIMD_PORTABLE;
    /* The scratch: m and l per row, then a tile of quantized rows (d bytes each) and their qsc,
     * and the tile's outputs side by side (see sift_attention). */
    float *m = scratch, *l = scratch + rows, *ot = scratch + 2 * rows + SIFT_ATTENTION_Q_FLOATS;
    size_t tile = SIFT_ATTENTION_Q_FLOATS / (d / 4 + 1);
    if (tile > SIFT_ATTENTION_OUT_FLOATS / d) tile = SIFT_ATTENTION_OUT_FLOATS / d;
    int8_t *q8 = (int8_t *)(void *)(scratch + 2 * rows);
    float *qsc = scratch + 2 * rows + tile * (d / 4);
    for (size_t r0 = 0; r0 < rows; r0 += tile) {
        size_t n = rows - r0 < tile ? rows - r0 : tile;
        for (size_t r = 0; r < n; r++) {
#if SIFT_X86
            if (level == SIFT_SIMD_AVX512) quantize_query_avx512(q + (r0 + r) * q_stride, d, scale, q8 + r * d, qsc + r);
            else if (level == SIFT_SIMD_AVX2) quantize_query_avx2(q + (r0 + r) * q_stride, d, scale, q8 + r * d, qsc + r);
            else
#endif
                quantize_query(q + (r0 + r) * q_stride, d, scale, q8 + r * d, qsc + r);
            m[r0 + r] = -INFINITY;
            l[r0 + r] = 0.0f;
        }
        memset(ot, 0, n * d * sizeof(float));
#if SIFT_X86
        int vnni = level == SIFT_SIMD_AVX512 && (sift_cpu_features() & SIFT_CPU_AVX512VNNI);
        if (vnni) {
            /* vpdpbusd's unsigned operand: q8 + 128, a flip of the sign bit. */
            uint8_t *qu = (uint8_t *)q8;
            for (size_t i = 0; i < n * d; i++) qu[i] ^= 0x80u;
            attention_i8_avx512(qu, qsc, n, first_pos + r0, kv, g, d, ot, d, m + r0, l + r0);
        }
        else if (level >= SIFT_SIMD_AVX2)
            attention_i8_avx2(q8, qsc, n, first_pos + r0, kv, g, d, ot, d, m + r0, l + r0);
        else
#endif
            attention_i8_portable(q8, qsc, n, first_pos + r0, kv, g, d, ot, d, m + r0, l + r0);
        for (size_t r = 0; r < n; r++) {
            float inv = 1.0f / l[r0 + r], *dst = out + (r0 + r) * out_stride;
            for (size_t dd = 0; dd < d; dd++) dst[dd] = ot[r * d + dd] * inv;
        }
    }
}
