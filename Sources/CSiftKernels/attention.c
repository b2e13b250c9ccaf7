#include "sift_kernels.h"
#include "sift_q8.h"
#include <math.h>
#include <string.h>
#include <immintrin.h>

/* Causal attention of one query head against one KV head.
 *
 * Keys are stored transposed in blocks of 16 positions (SIFT_KEY_BLOCK): block b of KV head g
 * is a (head_dim × 16) panel at kt + ((b · kv_heads + g) · head_dim) · 16, so 16 keys are
 * scored with one vector FMA per dimension. Values are rows: v + pos · v_stride + g · head_dim.
 *
 * Row r (position first_pos + r) sees keys 0 ... first_pos + r. For every row the work is the
 * same fixed sequence, whatever the other rows: score = fma over d in order, times scale;
 * softmax over exactly its visible keys; out = fma over keys in order. So a row's output does
 * not depend on how rows are tiled, chunked or batched, and the portable and AVX-512 paths
 * (same operations, one lane per key or dimension) agree bit for bit. */

static void scores_portable(const float *q, size_t q_stride, size_t rows, size_t keys, const float *kt,
                            size_t kv_heads, size_t g, size_t d, float scale, float *s, size_t s_stride) {
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < keys; j++) {
            const float *panel = kt + ((j / SIFT_KEY_BLOCK) * kv_heads + g) * d * SIFT_KEY_BLOCK;
            float acc = 0.0f;
            for (size_t dd = 0; dd < d; dd++) acc = fmaf(q[r * q_stride + dd], panel[dd * SIFT_KEY_BLOCK + j % SIFT_KEY_BLOCK], acc);
            s[r * s_stride + j] = acc * scale;
        }
}

static void pv_portable(const float *p, size_t visible, const float *v, size_t v_stride, size_t g, size_t d, float *out) {
    for (size_t dd = 0; dd < d; dd++) {
        float acc = 0.0f;
        for (size_t j = 0; j < visible; j++) acc = fmaf(p[j], v[j * v_stride + g * d + dd], acc);
        out[dd] = acc;
    }
}

enum { ROWS512 = 16, PV_ROWS = 4 };

/* NR rows × 16 keys per step; NR is a compile-time constant at every call, so the
 * accumulators stay in registers. */
__attribute__((target("avx512f"), always_inline))
static inline void scores_rows(int nr, const float *q, size_t q_stride, size_t keys, const float *kt,
                               size_t kv_heads, size_t g, size_t d, float scale, float *s, size_t s_stride) {
    size_t blocks = (keys + SIFT_KEY_BLOCK - 1) / SIFT_KEY_BLOCK;
    __m512 vscale = _mm512_set1_ps(scale);
    for (size_t b = 0; b < blocks; b++) {
        const float *panel = kt + (b * kv_heads + g) * d * SIFT_KEY_BLOCK;
        __m512 acc[ROWS512];
        for (int r = 0; r < nr; r++) acc[r] = _mm512_setzero_ps();
        for (size_t dd = 0; dd < d; dd++) {
            __m512 k = _mm512_loadu_ps(panel + dd * SIFT_KEY_BLOCK);
            for (int r = 0; r < nr; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r * q_stride + dd]), k, acc[r]);
        }
        /* Key positions past `keys` hold stale data: store only the valid lanes. */
        size_t valid = keys - b * SIFT_KEY_BLOCK;
        __mmask16 mask = valid >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << valid) - 1);
        for (int r = 0; r < nr; r++) _mm512_mask_storeu_ps(s + r * s_stride + b * SIFT_KEY_BLOCK, mask, _mm512_mul_ps(acc[r], vscale));
    }
}

__attribute__((target("avx512f")))
static void scores_avx512(const float *q, size_t q_stride, size_t rows, size_t keys, const float *kt,
                          size_t kv_heads, size_t g, size_t d, float scale, float *s, size_t s_stride) {
    size_t r = 0;
#define SCORES(NR) scores_rows(NR, q + r * q_stride, q_stride, keys, kt, kv_heads, g, d, scale, s + r * s_stride, s_stride)
    for (; r + 16 <= rows; r += 16) SCORES(16);
    if (r + 8 <= rows) { SCORES(8); r += 8; }
    if (r + 4 <= rows) { SCORES(4); r += 4; }
    if (r + 2 <= rows) { SCORES(2); r += 2; }
    if (r < rows) { SCORES(1); r += 1; }
#undef SCORES
}

/* PV for up to PV_ROWS rows at once: every V load feeds all of them. Row r's probabilities are
 * zero past its visible keys (softmax leaves them so), and adding fma(0, v, acc) changes no
 * accumulator, so each row still gets exactly its own sequential sum. */
__attribute__((target("avx512f"), always_inline))
static inline void pv_rows_avx512(int nr, const float *p, size_t p_stride, size_t keys, const float *v, size_t v_stride,
                           size_t g, size_t d, float *out, size_t out_stride) {
    for (size_t d0 = 0; d0 < d; d0 += 64) {
        __m512 acc[PV_ROWS][4];
        for (int r = 0; r < nr; r++)
            for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
        const float *vb = v + g * d + d0;
        for (size_t j = 0; j < keys; j++) {
            __m512 vj[4];
            for (int c = 0; c < 4; c++) vj[c] = _mm512_loadu_ps(vb + j * v_stride + c * 16);
            for (int r = 0; r < nr; r++) {
                __m512 pj = _mm512_set1_ps(p[r * p_stride + j]);
                for (int c = 0; c < 4; c++) acc[r][c] = _mm512_fmadd_ps(pj, vj[c], acc[r][c]);
            }
        }
        for (int r = 0; r < nr; r++)
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(out + r * out_stride + d0 + c * 16, acc[r][c]);
    }
}

__attribute__((target("avx512f")))
static void pv_avx512(const float *p, size_t s_stride, size_t rows, size_t first_pos, const float *v,
                      size_t v_stride, size_t g, size_t d, float *out, size_t out_stride) {
    size_t r = 0;
#define PV(NR) pv_rows_avx512(NR, p + r * s_stride, s_stride, first_pos + r + NR, v, v_stride, g, d, out + r * out_stride, out_stride)
    for (; r + 4 <= rows; r += 4) PV(4);
    if (r + 2 <= rows) { PV(2); r += 2; }
    if (r < rows) { PV(1); r += 1; }
#undef PV
}

void sift_attention(int use_simd, const float *q, size_t q_stride, size_t rows, size_t first_pos,
                    const float *kt, const float *v, size_t v_stride, size_t kv_heads, size_t g, size_t d,
                    float scale, float *out, size_t out_stride, float *scratch) {
    int simd = use_simd && (sift_cpu_features() & SIFT_CPU_AVX512) && d % 64 == 0;
    size_t keys = first_pos + rows;   /* keys visible to the last row */
    size_t s_stride = (keys + SIFT_KEY_BLOCK - 1) / SIFT_KEY_BLOCK * SIFT_KEY_BLOCK;
    if (simd) scores_avx512(q, q_stride, rows, keys, kt, kv_heads, g, d, scale, scratch, s_stride);
    else scores_portable(q, q_stride, rows, keys, kt, kv_heads, g, d, scale, scratch, s_stride);
    for (size_t r = 0; r < rows; r++) {
        float *p = scratch + r * s_stride;
        size_t visible = first_pos + r + 1;
        sift_softmax_row(p, visible);
        for (size_t j = visible; j < keys; j++) p[j] = 0.0f;
    }
    if (simd) {
        pv_avx512(scratch, s_stride, rows, first_pos, v, v_stride, g, d, out, out_stride);
    } else {
        for (size_t r = 0; r < rows; r++)
            pv_portable(scratch + r * s_stride, first_pos + r + 1, v, v_stride, g, d, out + r * out_stride);
    }
}
