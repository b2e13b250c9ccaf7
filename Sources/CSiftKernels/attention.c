#include "sift_kernels.h"
#include "sift_q8.h"
#include <math.h>
#include <string.h>
#include <immintrin.h>

/* No implicit FMA contraction (as -ffp-contract=off, but part of the file, so it holds however
 * the package is built): scalar and SIMD twins of a kernel perform the same IEEE operations and
 * agree bit for bit. */
#pragma clang fp contract(off)

/* Causal attention of one query head against one KV head.
 *
 * KV memory is paged in blocks of 16 positions (SIFT_KEY_BLOCK); blocks[b] is the base of the
 * block holding positions 16b ... 16b + 15. Within it, keys are transposed: KV head g's panel
 * is (head_dim × 16) floats at blocks[b] + k_off + g · head_dim · 16, so 16 keys are scored
 * with one vector FMA per dimension; values are rows of v_stride floats at
 * blocks[b] + v_off + (pos % 16) · v_stride, head g at + g · head_dim.
 *
 * Row r (position first_pos + r) sees keys 0 ... first_pos + r. For every row the work is the
 * same fixed sequence, whatever the other rows: score = fma over d in order, times scale;
 * softmax over exactly its visible keys; out = fma over keys in order. So a row's output does
 * not depend on how rows are tiled, chunked or batched, and the portable and AVX-512 paths
 * (same operations, one lane per key or dimension) agree bit for bit. */

typedef struct {
    const float *const *blocks;
    size_t k_off, v_off, v_stride;
} kv_view;

static inline const float *key_panel(kv_view kv, size_t b, size_t g, size_t d) {
    return kv.blocks[b] + kv.k_off + g * d * SIFT_KEY_BLOCK;
}
static inline const float *value_row(kv_view kv, size_t pos) {
    return kv.blocks[pos / SIFT_KEY_BLOCK] + kv.v_off + (pos % SIFT_KEY_BLOCK) * kv.v_stride;
}

static void scores_portable(const float *q, size_t q_stride, size_t rows, size_t keys, kv_view kv,
                            size_t g, size_t d, float scale, float *s, size_t s_stride) {
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < keys; j++) {
            const float *panel = key_panel(kv, j / SIFT_KEY_BLOCK, g, d);
            float acc = 0.0f;
            for (size_t dd = 0; dd < d; dd++) acc = fmaf(q[r * q_stride + dd], panel[dd * SIFT_KEY_BLOCK + j % SIFT_KEY_BLOCK], acc);
            s[r * s_stride + j] = acc * scale;
        }
}

static void pv_portable(const float *p, size_t visible, kv_view kv, size_t g, size_t d, float *out) {
    for (size_t dd = 0; dd < d; dd++) {
        float acc = 0.0f;
        for (size_t j = 0; j < visible; j++) acc = fmaf(p[j], value_row(kv, j)[g * d + dd], acc);
        out[dd] = acc;
    }
}

enum { ROWS512 = 16, PV_ROWS = 4 };

/* NR rows × 16 keys per step; NR is a compile-time constant at every call, so the
 * accumulators stay in registers. */
/* NR rows × the 16·NB keys of blocks b ... b+NB-1; NR and NB are compile-time constants at
 * every call, so the NR·NB accumulators stay in registers. One broadcast of q feeds NB FMAs. */
__attribute__((target("avx512f"), always_inline))
static inline void scores_blocks(int nr, int nb, const float *q, size_t q_stride, size_t b, size_t keys, kv_view kv,
                                 size_t g, size_t d, float scale, float *s, size_t s_stride) {
    const float *panel[2];
    for (int k = 0; k < nb; k++) panel[k] = key_panel(kv, b + k, g, d);
    __m512 acc[8][2];
    for (int r = 0; r < nr; r++)
        for (int k = 0; k < nb; k++) acc[r][k] = _mm512_setzero_ps();
    for (size_t dd = 0; dd < d; dd++) {
        __m512 kv16[2];
        for (int k = 0; k < nb; k++) kv16[k] = _mm512_loadu_ps(panel[k] + dd * SIFT_KEY_BLOCK);
        for (int r = 0; r < nr; r++) {
            __m512 qr = _mm512_set1_ps(q[r * q_stride + dd]);
            for (int k = 0; k < nb; k++) acc[r][k] = _mm512_fmadd_ps(qr, kv16[k], acc[r][k]);
        }
    }
    __m512 vscale = _mm512_set1_ps(scale);
    for (int k = 0; k < nb; k++) {
        /* Key positions past `keys` hold stale data: store only the valid lanes. */
        size_t valid = keys - (b + k) * SIFT_KEY_BLOCK;
        __mmask16 mask = valid >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << valid) - 1);
        for (int r = 0; r < nr; r++)
            _mm512_mask_storeu_ps(s + r * s_stride + (b + k) * SIFT_KEY_BLOCK, mask, _mm512_mul_ps(acc[r][k], vscale));
    }
}

/* Keys in chunks of KEY_CHUNK blocks (32 keys: 16 KB of K for head_dim 128; with a 64-row tile of q, 32 KB, this stays in L1) on
 * the outside, row groups inside: each key is read from beyond L1 once per call, not once per
 * row group. Every score is its own dot product, so the order of these loops changes nothing. */
enum { KEY_CHUNK = 2 };

__attribute__((target("avx512f")))
static void scores_avx512(const float *q, size_t q_stride, size_t rows, size_t keys, kv_view kv,
                          size_t g, size_t d, float scale, float *s, size_t s_stride) {
    size_t blocks = (keys + SIFT_KEY_BLOCK - 1) / SIFT_KEY_BLOCK;
    for (size_t b0 = 0; b0 < blocks; b0 += KEY_CHUNK) {
        size_t b1 = b0 + KEY_CHUNK < blocks ? b0 + KEY_CHUNK : blocks;
        size_t r = 0;
#define SCORES(NR) do { size_t b = b0; \
            for (; b + 2 <= b1; b += 2) scores_blocks(NR, 2, q + r * q_stride, q_stride, b, keys, kv, g, d, scale, s + r * s_stride, s_stride); \
            if (b < b1) scores_blocks(NR, 1, q + r * q_stride, q_stride, b, keys, kv, g, d, scale, s + r * s_stride, s_stride); \
        } while (0)
        for (; r + 8 <= rows; r += 8) SCORES(8);
        if (r + 4 <= rows) { SCORES(4); r += 4; }
        if (r + 2 <= rows) { SCORES(2); r += 2; }
        if (r < rows) { SCORES(1); r += 1; }
#undef SCORES
    }
}

/* PV for NR rows (compile-time) over keys [j0, j1), d in 64-wide chunks: the accumulators
 * start from `out` (zero for the first key chunk) and go back to it, so each element still sums
 * its keys one by one in increasing order. Row r's probabilities are zero past its visible keys
 * (the caller zero-fills them), and fma(0, v, acc) leaves acc unchanged. */
__attribute__((target("avx512f"), always_inline))
static inline void pv_rows_avx512(int nr, const float *p, size_t p_stride, size_t j0, size_t j1, kv_view kv,
                                  size_t g, size_t d, float *out, size_t out_stride, int first) {
    for (size_t d0 = 0; d0 < d; d0 += 64) {
        __m512 acc[PV_ROWS][4];
        for (int r = 0; r < nr; r++)
            for (int c = 0; c < 4; c++)
                acc[r][c] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(out + r * out_stride + d0 + c * 16);
        for (size_t j = j0; j < j1; j++) {
            const float *vb = value_row(kv, j) + g * d + d0;
            __m512 vj[4];
            for (int c = 0; c < 4; c++) vj[c] = _mm512_loadu_ps(vb + c * 16);
            for (int r = 0; r < nr; r++) {
                __m512 pj = _mm512_set1_ps(p[r * p_stride + j]);
                for (int c = 0; c < 4; c++) acc[r][c] = _mm512_fmadd_ps(pj, vj[c], acc[r][c]);
            }
        }
        for (int r = 0; r < nr; r++)
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(out + r * out_stride + d0 + c * 16, acc[r][c]);
    }
}

/* Keys in chunks of 64 outside (their values stay in L1), rows in groups of 4 inside. Row
 * group r sees keys up to first_pos + r + 4; chunks past that are skipped for it. */
__attribute__((target("avx512f")))
static void pv_avx512(const float *p, size_t s_stride, size_t rows, size_t first_pos, kv_view kv,
                      size_t g, size_t d, float *out, size_t out_stride) {
    size_t keys = first_pos + rows, chunk = KEY_CHUNK * SIFT_KEY_BLOCK;
    for (size_t j0 = 0; j0 < keys; j0 += chunk) {
        size_t r = 0;
#define PV(NR) do { \
            size_t limit = first_pos + r + NR; \
            if (j0 < limit) pv_rows_avx512(NR, p + r * s_stride, s_stride, j0, j0 + chunk < limit ? j0 + chunk : limit, kv, g, d, \
                                           out + r * out_stride, out_stride, j0 == 0); \
        } while (0)
        for (; r + 4 <= rows; r += 4) PV(4);
        if (r + 2 <= rows) { PV(2); r += 2; }
        if (r < rows) { PV(1); r += 1; }
#undef PV
    }
}

/* ---- AVX2 twins (8 lanes): the same operations per lane as the portable and AVX-512 code --- */

/* NR rows × the 16 keys of block b, as two halves of 8. */
__attribute__((target("avx2,fma"), always_inline))
static inline void scores_block_avx2(int nr, const float *q, size_t q_stride, size_t b, size_t keys, kv_view kv,
                                     size_t g, size_t d, float scale, float *s, size_t s_stride) {
    const float *panel = key_panel(kv, b, g, d);
    __m256 acc[4][2];
    for (int r = 0; r < nr; r++) { acc[r][0] = _mm256_setzero_ps(); acc[r][1] = _mm256_setzero_ps(); }
    for (size_t dd = 0; dd < d; dd++) {
        __m256 k0 = _mm256_loadu_ps(panel + dd * SIFT_KEY_BLOCK), k1 = _mm256_loadu_ps(panel + dd * SIFT_KEY_BLOCK + 8);
        for (int r = 0; r < nr; r++) {
            __m256 qr = _mm256_set1_ps(q[r * q_stride + dd]);
            acc[r][0] = _mm256_fmadd_ps(qr, k0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(qr, k1, acc[r][1]);
        }
    }
    /* Key positions past `keys` hold stale data: store only the valid lanes. */
    size_t valid = keys - b * SIFT_KEY_BLOCK;
    if (valid > SIFT_KEY_BLOCK) valid = SIFT_KEY_BLOCK;
    __m256 vscale = _mm256_set1_ps(scale);
    for (int r = 0; r < nr; r++) {
        float tmp[16];
        _mm256_storeu_ps(tmp, _mm256_mul_ps(acc[r][0], vscale));
        _mm256_storeu_ps(tmp + 8, _mm256_mul_ps(acc[r][1], vscale));
        memcpy(s + r * s_stride + b * SIFT_KEY_BLOCK, tmp, valid * sizeof(float));
    }
}

__attribute__((target("avx2,fma")))
static void scores_avx2(const float *q, size_t q_stride, size_t rows, size_t keys, kv_view kv,
                        size_t g, size_t d, float scale, float *s, size_t s_stride) {
    size_t blocks = (keys + SIFT_KEY_BLOCK - 1) / SIFT_KEY_BLOCK;
    for (size_t b = 0; b < blocks; b++) {
        size_t r = 0;
        for (; r + 4 <= rows; r += 4) scores_block_avx2(4, q + r * q_stride, q_stride, b, keys, kv, g, d, scale, s + r * s_stride, s_stride);
        for (; r < rows; r++) scores_block_avx2(1, q + r * q_stride, q_stride, b, keys, kv, g, d, scale, s + r * s_stride, s_stride);
    }
}

/* PV for NR rows over keys [j0, j1), d in 16-wide chunks, accumulating in `out` as the
 * AVX-512 code does: each element sums its keys one by one in increasing order. */
__attribute__((target("avx2,fma"), always_inline))
static inline void pv_rows_avx2(int nr, const float *p, size_t p_stride, size_t j0, size_t j1, kv_view kv,
                                size_t g, size_t d, float *out, size_t out_stride, int first) {
    for (size_t d0 = 0; d0 < d; d0 += 16) {
        __m256 acc[PV_ROWS][2];
        for (int r = 0; r < nr; r++)
            for (int c = 0; c < 2; c++)
                acc[r][c] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(out + r * out_stride + d0 + c * 8);
        for (size_t j = j0; j < j1; j++) {
            const float *vb = value_row(kv, j) + g * d + d0;
            __m256 v0 = _mm256_loadu_ps(vb), v1 = _mm256_loadu_ps(vb + 8);
            for (int r = 0; r < nr; r++) {
                __m256 pj = _mm256_set1_ps(p[r * p_stride + j]);
                acc[r][0] = _mm256_fmadd_ps(pj, v0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(pj, v1, acc[r][1]);
            }
        }
        for (int r = 0; r < nr; r++)
            for (int c = 0; c < 2; c++) _mm256_storeu_ps(out + r * out_stride + d0 + c * 8, acc[r][c]);
    }
}

__attribute__((target("avx2,fma")))
static void pv_avx2(const float *p, size_t s_stride, size_t rows, size_t first_pos, kv_view kv,
                    size_t g, size_t d, float *out, size_t out_stride) {
    size_t keys = first_pos + rows, chunk = KEY_CHUNK * SIFT_KEY_BLOCK;
    for (size_t j0 = 0; j0 < keys; j0 += chunk) {
        size_t r = 0;
#define PV(NR) do { \
            size_t limit = first_pos + r + NR; \
            if (j0 < limit) pv_rows_avx2(NR, p + r * s_stride, s_stride, j0, j0 + chunk < limit ? j0 + chunk : limit, kv, g, d, \
                                         out + r * out_stride, out_stride, j0 == 0); \
        } while (0)
        for (; r + 4 <= rows; r += 4) PV(4);
        if (r + 2 <= rows) { PV(2); r += 2; }
        if (r < rows) { PV(1); r += 1; }
#undef PV
    }
}

void sift_attention(sift_simd level, const float *q, size_t q_stride, size_t rows, size_t first_pos,
                    const float *const *blocks, size_t k_off, size_t v_off, size_t v_stride, size_t g, size_t d,
                    float scale, float *out, size_t out_stride, float *scratch) {
    level = sift_simd_usable(level);
    int avx512 = level == SIFT_SIMD_AVX512 && d % 64 == 0;
    int avx2 = !avx512 && level >= SIFT_SIMD_AVX2 && d % 16 == 0;
    kv_view kv = {blocks, k_off, v_off, v_stride};
    size_t keys = first_pos + rows;   /* keys visible to the last row */
    size_t s_stride = (keys + SIFT_KEY_BLOCK - 1) / SIFT_KEY_BLOCK * SIFT_KEY_BLOCK;
    if (avx512) scores_avx512(q, q_stride, rows, keys, kv, g, d, scale, scratch, s_stride);
    else if (avx2) scores_avx2(q, q_stride, rows, keys, kv, g, d, scale, scratch, s_stride);
    else scores_portable(q, q_stride, rows, keys, kv, g, d, scale, scratch, s_stride);
    for (size_t r = 0; r < rows; r++) {
        float *p = scratch + r * s_stride;
        size_t visible = first_pos + r + 1;
        sift_softmax_row(level, p, visible);
        for (size_t j = visible; j < keys; j++) p[j] = 0.0f;
    }
    if (avx512) {
        pv_avx512(scratch, s_stride, rows, first_pos, kv, g, d, out, out_stride);
    } else if (avx2) {
        pv_avx2(scratch, s_stride, rows, first_pos, kv, g, d, out, out_stride);
    } else {
        for (size_t r = 0; r < rows; r++)
            pv_portable(scratch + r * s_stride, first_pos + r + 1, kv, g, d, out + r * out_stride);
    }
}
