/* Private to CSiftKernels: what the fp32 and bf16 attention kernels share — the block
 * geometry, the correction of the running output, and the fixed reduction trees (8-lane and
 * 8-rows-at-once 16-lane), so both give every row the same bits on every path. */
#ifndef SIFT_ATTENTION_COMMON_H
#define SIFT_ATTENTION_COMMON_H
#include "sift_kernels.h"
#include "exp_twins.h"
#include <math.h>
#include "arch.h"

#pragma clang fp contract(off)

#define ATT_AVX2 __attribute__((target("avx2,fma"), always_inline)) static inline
#define ATT_512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx2"), always_inline)) static inline

enum { ATT_CHUNK = 8, ATT_ROWS = 8, ATT_MAX_D = 256 };
/* The fp32 and bf16 entries tile rows by the query copy; each tile's outputs must fit beside it. */
_Static_assert(SIFT_ATTENTION_OUT_FLOATS >= SIFT_ATTENTION_Q_FLOATS, "attention output tile smaller than the query tile");

/* Keys of block b a row at position `pos` sees (0 ... 16). */
static inline size_t visible_keys(size_t pos, size_t b) {
    size_t first = b * SIFT_KEY_BLOCK;
    if (pos < first) return 0;
    size_t n = pos - first + 1;
    return n < SIFT_KEY_BLOCK ? n : SIFT_KEY_BLOCK;
}

/* exp(m − m'), the running output's correction; exp_portable(0) is 1 exactly, and most blocks
 * leave the max where it was, so the SIMD kernels skip the scalar exp then (same bits). */
static inline float correction(float m, float m_new) {
    float dm = m - m_new;
    return dm == 0.0f ? 1.0f : exp_portable(dm);
}

#if SIFT_X86
/* sum16_tree of the lanes e0 (0-7) and e1 (8-15), in registers: the same additions in the
 * same order (j + 8, then j + 4, j + 2, j + 1). */
ATT_AVX2 float sum16_tree_avx2(__m256 e0, __m256 e1) {
    __m256 s8 = _mm256_add_ps(e0, e1);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
    return _mm_cvtss_f32(s1);
}

/* The largest of 16 lanes (exact in any order). */
ATT_AVX2 float max16_avx2(__m256 a, __m256 b) {
    __m256 m8 = _mm256_max_ps(a, b);
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    __m128 m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    return _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
}

/* Eight rows' 16-lane maxima (MAX) or fixed-tree sums (ADD) at once: the same pairs as
 * sum16_tree (lane j with j + 8, then j + 4, j + 2, j + 1), combined across rows by shuffles, so
 * each row's result is the bits the one-row reduction gives. out[r] is row r's. */
#define TREE8_AVX512(NAME, OP)                                                                        \
    ATT_512 void NAME(const __m512 v[8], float out[8]) {                                              \
        __m512 y[4], z[2];                                                                            \
        for (int i = 0; i < 4; i++) /* chunks 0-1: row 2i's lanes j ⊕ j+8; 2-3: row 2i+1's */          \
            y[i] = OP(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),          \
                      _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));         \
        for (int i = 0; i < 2; i++) /* chunk k: row 4i+k's lanes j ⊕ j+4 */                            \
            z[i] = OP(_mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),          \
                      _mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));         \
        /* j ⊕ j+2 (rows k and k+4 interleaved), then j ⊕ j+1 */                                     \
        __m512 u = OP(_mm512_unpacklo_ps(z[0], z[1]), _mm512_unpackhi_ps(z[0], z[1]));               \
        __m512 w = OP(u, _mm512_permute_ps(u, _MM_SHUFFLE(1, 0, 3, 2)));                              \
        float lanes[16] __attribute__((aligned(64)));                                                 \
        _mm512_store_ps(lanes, w);                                                                    \
        for (int k = 0; k < 4; k++) { out[k] = lanes[4 * k]; out[k + 4] = lanes[4 * k + 1]; }          \
    }
_Static_assert(ATT_ROWS == 8, "the AVX-512 kernel reduces eight rows together");
TREE8_AVX512(max8_avx512, _mm512_max_ps)
TREE8_AVX512(sum8_avx512, _mm512_add_ps)
#undef TREE8_AVX512
#endif

#endif
