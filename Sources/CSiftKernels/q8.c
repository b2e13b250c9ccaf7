#include "sift_q8.h"
#include "sift_kernels.h"
#include <math.h>
#include <string.h>
#include "arch.h"

/* No implicit FMA contraction (as -ffp-contract=off, but part of the file, so it holds however
 * the package is built): scalar and SIMD twins of a kernel perform the same IEEE operations and
 * agree bit for bit. */
#pragma clang fp contract(off)

size_t sift_q8_packed_size(size_t n, size_t k) { return n * k; }

void sift_q8_pack(const int8_t *w, size_t n, size_t k, int8_t *packed) {
    size_t k4 = k / 4;
    for (size_t t = 0; t < n / SIFT_Q8_TILE; t++)
        for (size_t kk = 0; kk < k4; kk++)
            for (size_t r = 0; r < SIFT_Q8_TILE; r++)
                memcpy(packed + ((t * k4 + kk) * SIFT_Q8_TILE + r) * 4,
                       w + (t * SIFT_Q8_TILE + r) * k + kk * 4, 4);
}

void sift_q8_quantize_weights(const float *w, size_t n, size_t k, size_t group, int8_t *q, float *scale, int32_t *rowsum) {
    size_t groups = sift_q8_groups(k, group), G = groups == 1 ? k : group;
    for (size_t r = 0; r < n; r++) {
        for (size_t g = 0; g < groups; g++) {
            size_t k0 = g * G, k1 = k0 + G < k ? k0 + G : k;
            const float *wr = w + r * k;
            float amax = 0.0f;
            for (size_t i = k0; i < k1; i++) amax = fmaxf(amax, fabsf(wr[i]));
            float s = amax / 127.0f;
            float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
            int32_t sum = 0;
            for (size_t i = k0; i < k1; i++) {
                int v = (int)lrintf(wr[i] * inv);
                v = v > 127 ? 127 : (v < -127 ? -127 : v);
                q[r * k + i] = (int8_t)v;
                sum += v;
            }
            scale[g * n + r] = s;
            rowsum[g * n + r] = sum;
        }
    }
}

/* ---- activation quantization ------------------------------------------------------------- */
/* Each element: u8 = clamp(nearbyint(x · inv), -127, 127) + 128 with inv = 127 / amax, the
 * same IEEE operations on every path, so scalar and vector code agree bit for bit. */

static void quantize_row_portable(const float *x, size_t k, uint8_t *q, float inv) {
    for (size_t i = 0; i < k; i++) {
        float v = nearbyintf(x[i] * inv);
        v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
        q[i] = (uint8_t)((int)v + 128);
    }
}

static float amax_portable(const float *x, size_t k) {
    float m = 0.0f;
    for (size_t i = 0; i < k; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

#if SIFT_X86
__attribute__((target("avx512f,avx512bw")))
static float amax_avx512(const float *x, size_t k) {
    __m512 m = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= k; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
    float r = _mm512_reduce_max_ps(m);
    for (; i < k; i++) r = fmaxf(r, fabsf(x[i]));
    return r;
}

__attribute__((target("avx512f,avx512bw")))
static void quantize_row_avx512(const float *x, size_t k, uint8_t *q, float inv) {
    __m512 vinv = _mm512_set1_ps(inv);
    __m512 hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
    __m512i off = _mm512_set1_epi32(128);
    size_t i = 0;
    for (; i + 16 <= k; i += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), vinv);
        v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        __m512i iv = _mm512_add_epi32(_mm512_cvtps_epi32(v), off);
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtepi32_epi8(iv));
    }
    quantize_row_portable(x + i, k - i, q + i, inv);
}

__attribute__((target("avx2,fma")))
static float amax_avx2(const float *x, size_t k) {
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 m = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= k; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + i), magnitude));
    float lanes[8];
    _mm256_storeu_ps(lanes, m);
    float r = 0.0f;
    for (int j = 0; j < 8; j++) r = fmaxf(r, lanes[j]);
    for (; i < k; i++) r = fmaxf(r, fabsf(x[i]));
    return r;
}

__attribute__((target("avx2,fma")))
static inline __m256i quantize8_avx2(const float *x, __m256 vinv) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x), vinv);
    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    return _mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(128));
}

__attribute__((target("avx2,fma")))
static void quantize_row_avx2(const float *x, size_t k, uint8_t *q, float inv) {
    __m256 vinv = _mm256_set1_ps(inv);
    /* The packs interleave 128-bit lanes; this permutation puts the 32 bytes back in order. */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= k; i += 32) {
        __m256i a = quantize8_avx2(x + i, vinv), b = quantize8_avx2(x + i + 8, vinv);
        __m256i c = quantize8_avx2(x + i + 16, vinv), d = quantize8_avx2(x + i + 24, vinv);
        __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(bytes, order));
    }
    quantize_row_portable(x + i, k - i, q + i, inv);
}

#endif

/* Largest |x| over [k0, k1) except the outlier channels (sorted): the max of the segments
 * between them. A max is exact in any order, so every level finds the same value. */
static float amax_except(sift_simd level, const float *x, size_t k0, size_t k1, const int32_t *sorted, size_t no) {
    float m = 0.0f;
    size_t from = k0;
    for (size_t j = 0; j <= no; j++) {
        size_t to = j < no ? (size_t)sorted[j] : k1;
        if (to < k0) continue;
        if (to > k1) to = k1;
        if (to > from) {
#if SIFT_X86
            float s = level == SIFT_SIMD_AVX512 ? amax_avx512(x + from, to - from)
                    : level == SIFT_SIMD_AVX2 ? amax_avx2(x + from, to - from) : amax_portable(x + from, to - from);
#else
            float s = amax_portable(x + from, to - from);
#endif
            m = fmaxf(m, s);
        }
        from = to + 1;
        if (from >= k1) break;
    }
    return m;
}

void sift_q8_quantize_rows(sift_simd level, const float *x, size_t m, size_t k, size_t group, size_t x_stride,
                           const int32_t *outliers, size_t n_outliers, uint8_t *xq, float *scale, float *xo) {
    level = sift_simd_usable(level);
    size_t no = n_outliers < SIFT_Q8_MAX_OUTLIERS ? n_outliers : SIFT_Q8_MAX_OUTLIERS;
    int32_t sorted[SIFT_Q8_MAX_OUTLIERS];
    for (size_t j = 0; j < no; j++) {   /* insertion sort: a few to a few hundred channels */
        int32_t v = outliers[j];
        size_t p = j;
        for (; p > 0 && sorted[p - 1] > v; p--) sorted[p] = sorted[p - 1];
        sorted[p] = v;
    }
    size_t groups = sift_q8_groups(k, group), G = groups == 1 ? k : group;
    for (size_t r = 0; r < m; r++) {
        const float *xr = x + r * x_stride;
        uint8_t *qr = xq + r * k;
        for (size_t g = 0; g < groups; g++) {
            size_t k0 = g * G, k1 = k0 + G < k ? k0 + G : k;
            float amax = amax_except(level, xr, k0, k1, sorted, no);
            float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
            scale[r * groups + g] = amax / 127.0f;
            switch (level) {
#if SIFT_X86
            case SIFT_SIMD_AVX512: quantize_row_avx512(xr + k0, k1 - k0, qr + k0, inv); break;
            case SIFT_SIMD_AVX2: quantize_row_avx2(xr + k0, k1 - k0, qr + k0, inv); break;
#endif
            default: quantize_row_portable(xr + k0, k1 - k0, qr + k0, inv); break;
            }
        }
        /* Outlier channels are computed in fp32 beside the GEMM: zero (128) in the int8 part. */
        for (size_t j = 0; j < no; j++) {
            xo[r * n_outliers + j] = xr[outliers[j]];
            qr[outliers[j]] = 128;
        }
    }
}

/* ---- GEMM: portable ---------------------------------------------------------------------- */
/* Per output: for each group, its exact integer sum (started at −128·rowsum, which removes the
 * u8 offset), converted once, scaled by xscale · wscale and added with one fma — in group order.
 * Every path performs these operations in this order. */

static void gemm_portable(const uint8_t *xq, size_t m, size_t k, size_t G, const float *xs, const float *xo, size_t no,
                          const int8_t *packed, const int32_t *rowsum, const float *ws, const float *wo,
                          size_t n_total, size_t n0, size_t n1, float *y, size_t ys) {
    size_t k4 = k / 4, groups = sift_q8_groups(k, G);
    if (groups == 1) G = k;
    for (size_t n = n0; n < n1; n++) {
        const int8_t *tile = packed + (n / SIFT_Q8_TILE) * k4 * SIFT_Q8_TILE * 4 + (n % SIFT_Q8_TILE) * 4;
        for (size_t i = 0; i < m; i++) {
            const uint8_t *xr = xq + i * k;
            float v = 0.0f;
            for (size_t g = 0; g < groups; g++) {
                size_t q0 = g * G / 4, q1 = (g + 1) * G / 4 < k4 ? (g + 1) * G / 4 : k4;
                int32_t acc = -128 * rowsum[g * n_total + n];
                for (size_t kk = q0; kk < q1; kk++) {
                    const int8_t *w = tile + kk * SIFT_Q8_TILE * 4;
                    const uint8_t *a = xr + kk * 4;
                    acc += (int32_t)a[0] * w[0] + (int32_t)a[1] * w[1] + (int32_t)a[2] * w[2] + (int32_t)a[3] * w[3];
                }
                float s = xs[i * groups + g] * ws[g * n_total + n];
                v = fmaf((float)acc, s, v);
            }
            for (size_t j = 0; j < no; j++) v = fmaf(xo[i * no + j], wo[j * n_total + n], v);
            y[i * ys + n] = v;
        }
    }
}

#if SIFT_X86
/* ---- GEMM: AVX-512 VNNI (zmm vpdpbusd) ---------------------------------------------------- */
/* Micro-kernel: MR (≤ 6) rows × NT (≤ 2) tiles of 16 outputs over the whole K, a group at a
 * time: per group the exact integer sums (12 zmm), then each output's running fp32 value (12
 * zmm) takes the group's scaled sum with one fma — so both stay in registers, with the two
 * weight vectors and the broadcast. One zmm of weights holds 16 outputs × 4 k. */

#define Q8_TARGET_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"), always_inline)) static inline

Q8_TARGET_512 void kernel512(int mr, int nt, const uint8_t *xq, size_t xq_stride, size_t k, size_t G, const float *xs, size_t groups,
                             const float *xo, size_t no, const int8_t *tiles, size_t tile_stride,
                             const int32_t *rowsum, const float *ws, const float *wo, size_t n_total, float *y, size_t ys) {
    __m512 v[6][2];
    for (int r = 0; r < mr; r++)
        for (int t = 0; t < nt; t++) v[r][t] = _mm512_setzero_ps();
    size_t k4 = k / 4;
    for (size_t g = 0; g < groups; g++) {
        __m512i acc[6][2];
        for (int t = 0; t < nt; t++) {
            /* Starting at −128·rowsum removes the u8 offset exactly. */
            __m512i start = _mm512_mullo_epi32(_mm512_loadu_si512((const void *)(rowsum + g * n_total + t * 16)), _mm512_set1_epi32(-128));
            for (int r = 0; r < mr; r++) acc[r][t] = start;
        }
        size_t q0 = g * G / 4, q1 = (g + 1) * G / 4 < k4 ? (g + 1) * G / 4 : k4;
        for (size_t kk = q0; kk < q1; kk++) {
            __m512i w[2];
            for (int t = 0; t < nt; t++) w[t] = _mm512_loadu_si512((const void *)(tiles + t * tile_stride + kk * 64));
            for (int r = 0; r < mr; r++) {
                int32_t a;
                memcpy(&a, xq + r * xq_stride + kk * 4, 4);
                __m512i b = _mm512_set1_epi32(a);
                for (int t = 0; t < nt; t++) acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], b, w[t]);
            }
        }
        for (int t = 0; t < nt; t++) {
            __m512 wsv = _mm512_loadu_ps(ws + g * n_total + t * 16);
            for (int r = 0; r < mr; r++) {
                __m512 scale = _mm512_mul_ps(_mm512_set1_ps(xs[r * groups + g]), wsv);
                v[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][t]), scale, v[r][t]);
            }
        }
    }
    /* Outlier channels outermost: the mr·nt outputs are independent chains, so the fmas overlap
     * (one tile at a time, each chain waited on its previous fma). Same fmas per output, same order. */
    for (size_t j = 0; j < no; j++) {
        __m512 wj[2];
        for (int t = 0; t < nt; t++) wj[t] = _mm512_loadu_ps(wo + j * n_total + t * 16);
        for (int r = 0; r < mr; r++) {
            __m512 x = _mm512_set1_ps(xo[r * no + j]);
            for (int t = 0; t < nt; t++) v[r][t] = _mm512_fmadd_ps(x, wj[t], v[r][t]);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + r * ys + t * 16, v[r][t]);
}

/* Blocking: rows in blocks of Q8_MB (a multiple of 6), columns in panels of 32: a panel's
 * weights (32 × K bytes) stay in L2 while every micro-tile of the row block streams them. */
#ifndef Q8_MB
#define Q8_MB 96
#endif

#define K512(MR, NT) kernel512(MR, NT, xq + i * k, k, k, G, xs + i * groups, groups, xo + i * no, no, tiles, tile_stride, \
                               rowsum + n, ws + n, wo + n, n_total, y + i * ys + n, ys)

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
static void gemm_avx512(const uint8_t *xq, size_t m, size_t k, size_t G, const float *xs, const float *xo, size_t no,
                        const int8_t *packed, const int32_t *rowsum, const float *ws, const float *wo,
                        size_t n_total, size_t n0, size_t n1, float *y, size_t ys) {
    size_t tile_stride = k * SIFT_Q8_TILE, groups = sift_q8_groups(k, G);
    if (groups == 1) G = k;
    for (size_t i0 = 0; i0 < m; i0 += Q8_MB) {
        size_t i1 = i0 + Q8_MB < m ? i0 + Q8_MB : m;
        for (size_t n = n0; n < n1; n += 32) {
            int nt = n1 - n >= 32 ? 2 : 1;
            const int8_t *tiles = packed + (n / SIFT_Q8_TILE) * tile_stride;
            size_t i = i0;
            for (; i + 6 <= i1; i += 6) {
                if (nt == 2) K512(6, 2); else K512(6, 1);
            }
            for (; i < i1; i++) {
                if (nt == 2) K512(1, 2); else K512(1, 1);
            }
        }
    }
}

/* ---- GEMM: 256-bit outlier epilogue ------------------------------------------------------- */
/* v[r][h] += Σ_j xo[r, j] · wo[j, 16 outputs], one fma per channel in channel order (as every
 * path). The channel loop is outside the rows, so the 2·mr accumulators are independent chains
 * and the fmas overlap; with the rows outside, each chain waited for its previous fma. */
__attribute__((target("avx2,fma"), always_inline)) static inline
void outlier_epilogue_avx2(int mr, __m256 v[4][2], const float *xo, size_t no, const float *wo, size_t n_total) {
    for (size_t j = 0; j < no; j++) {
        __m256 w0 = _mm256_loadu_ps(wo + j * n_total), w1 = _mm256_loadu_ps(wo + j * n_total + 8);
        for (int r = 0; r < mr; r++) {
            __m256 x = _mm256_set1_ps(xo[r * no + j]);
            v[r][0] = _mm256_fmadd_ps(x, w0, v[r][0]);
            v[r][1] = _mm256_fmadd_ps(x, w1, v[r][1]);
        }
    }
}

/* One group's integer sums added to the running outputs v (in memory: the integer
 * accumulators take the registers), as the other paths do. */
__attribute__((target("avx2,fma"), always_inline)) static inline
void group_epilogue_avx2(int mr, __m256i acc[4][2], const float *xs, size_t groups, const float *ws, float v[4][16]) {
    for (int h = 0; h < 2; h++) {
        __m256 wsv = _mm256_loadu_ps(ws + h * 8);
        for (int r = 0; r < mr; r++) {
            __m256 scale = _mm256_mul_ps(_mm256_set1_ps(xs[r * groups]), wsv);
            _mm256_storeu_ps(v[r] + h * 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][h]), scale, _mm256_loadu_ps(v[r] + h * 8)));
        }
    }
}

/* ---- GEMM: AVX-VNNI (ymm vpdpbusd, VEX) -------------------------------------------------- */
/* One 16-output tile = two ymm halves; MR = 4 rows; K a group at a time. */

#define Q8_TARGET_VNNI __attribute__((target("avx2,fma,avxvnni"), always_inline)) static inline

Q8_TARGET_VNNI void kernel256(int mr, const uint8_t *xq, size_t k, size_t G, const float *xs, const float *xo, size_t no,
                              const int8_t *tile, const int32_t *rowsum, const float *ws, const float *wo,
                              size_t n_total, float *y, size_t ys) {
    size_t groups = sift_q8_groups(k, G), k4 = k / 4;
    if (groups == 1) G = k;
    float v[4][16] = {{0}};
    for (size_t g = 0; g < groups; g++) {
        __m256i acc[4][2];
        for (int h = 0; h < 2; h++) {
            __m256i start = _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(rowsum + g * n_total + h * 8)), _mm256_set1_epi32(-128));
            for (int r = 0; r < mr; r++) acc[r][h] = start;
        }
        size_t q0 = g * G / 4, q1 = (g + 1) * G / 4 < k4 ? (g + 1) * G / 4 : k4;
        for (size_t kk = q0; kk < q1; kk++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(tile + kk * 64));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(tile + kk * 64 + 32));
            for (int r = 0; r < mr; r++) {
                int32_t a;
                memcpy(&a, xq + r * k + kk * 4, 4);
                __m256i b = _mm256_set1_epi32(a);
                acc[r][0] = _mm256_dpbusd_avx_epi32(acc[r][0], b, w0);
                acc[r][1] = _mm256_dpbusd_avx_epi32(acc[r][1], b, w1);
            }
        }
        group_epilogue_avx2(mr, acc, xs + g, groups, ws + g * n_total, v);
    }
    __m256 out[4][2];
    for (int r = 0; r < mr; r++) { out[r][0] = _mm256_loadu_ps(v[r]); out[r][1] = _mm256_loadu_ps(v[r] + 8); }
    outlier_epilogue_avx2(mr, out, xo, no, wo, n_total);
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(y + r * ys + h * 8, out[r][h]);
}

__attribute__((target("avx2,fma,avxvnni")))
static void gemm_avxvnni(const uint8_t *xq, size_t m, size_t k, size_t G, const float *xs, const float *xo, size_t no,
                         const int8_t *packed, const int32_t *rowsum, const float *ws, const float *wo,
                         size_t n_total, size_t n0, size_t n1, float *y, size_t ys) {
    size_t tile_stride = k * SIFT_Q8_TILE, groups = sift_q8_groups(k, G);
    for (size_t n = n0; n < n1; n += 16) {
        const int8_t *tile = packed + (n / SIFT_Q8_TILE) * tile_stride;
        size_t i = 0;
        for (; i + 4 <= m; i += 4)
            kernel256(4, xq + i * k, k, G, xs + i * groups, xo + i * no, no, tile, rowsum + n, ws + n, wo + n, n_total, y + i * ys + n, ys);
        for (; i < m; i++)
            kernel256(1, xq + i * k, k, G, xs + i * groups, xo + i * no, no, tile, rowsum + n, ws + n, wo + n, n_total, y + i * ys + n, ys);
    }
}

/* ---- GEMM: AVX2 (no VNNI) ----------------------------------------------------------------- */
/* vpdpbusd emulated exactly: with x_s8 = xq − 128 (xq ^ 0x80) and |x|, |w| ≤ 127,
 * maddubs(|w|, sign(x, w)) sums two products per int16 lane without saturating (≤ 2·127² =
 * 32258), and madd with ones adds the pairs into int32: Σ w·x_s8 = Σ w·xq − 128·rowsum, the same
 * integer the other paths form (per group), so the same float epilogue gives the same bits. */

#define Q8_TARGET_AVX2 __attribute__((target("avx2,fma"), always_inline)) static inline

Q8_TARGET_AVX2 void kernel_avx2(int mr, const uint8_t *xq, size_t k, size_t G, const float *xs, const float *xo, size_t no,
                                const int8_t *tile, const float *ws, const float *wo, size_t n_total,
                                float *y, size_t ys) {
    size_t groups = sift_q8_groups(k, G), k4 = k / 4;
    if (groups == 1) G = k;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    float v[4][16] = {{0}};
    for (size_t g = 0; g < groups; g++) {
        __m256i acc[4][2];
        for (int r = 0; r < mr; r++) { acc[r][0] = _mm256_setzero_si256(); acc[r][1] = _mm256_setzero_si256(); }
        size_t q0 = g * G / 4, q1 = (g + 1) * G / 4 < k4 ? (g + 1) * G / 4 : k4;
        for (size_t kk = q0; kk < q1; kk++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(tile + kk * 64));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(tile + kk * 64 + 32));
            __m256i a0 = _mm256_abs_epi8(w0), a1 = _mm256_abs_epi8(w1);
            for (int r = 0; r < mr; r++) {
                /* Broadcast, then flip to x_s8 = xq ^ 0x80 in the vector: the broadcast can come
                 * straight from memory (a load), instead of a move from a general register and a shuffle. */
                int32_t a;
                memcpy(&a, xq + r * k + kk * 4, 4);
                __m256i b = _mm256_xor_si256(_mm256_set1_epi32(a), flip);
                __m256i p0 = _mm256_maddubs_epi16(a0, _mm256_sign_epi8(b, w0));
                __m256i p1 = _mm256_maddubs_epi16(a1, _mm256_sign_epi8(b, w1));
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(p0, ones));
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(p1, ones));
            }
        }
        group_epilogue_avx2(mr, acc, xs + g, groups, ws + g * n_total, v);
    }
    __m256 out[4][2];
    for (int r = 0; r < mr; r++) { out[r][0] = _mm256_loadu_ps(v[r]); out[r][1] = _mm256_loadu_ps(v[r] + 8); }
    outlier_epilogue_avx2(mr, out, xo, no, wo, n_total);
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(y + r * ys + h * 8, out[r][h]);
}

__attribute__((target("avx2,fma")))
static void gemm_avx2(const uint8_t *xq, size_t m, size_t k, size_t G, const float *xs, const float *xo, size_t no,
                      const int8_t *packed, const float *ws, const float *wo,
                      size_t n_total, size_t n0, size_t n1, float *y, size_t ys) {
    size_t tile_stride = k * SIFT_Q8_TILE, groups = sift_q8_groups(k, G);
    for (size_t n = n0; n < n1; n += 16) {
        const int8_t *tile = packed + (n / SIFT_Q8_TILE) * tile_stride;
        size_t i = 0;
        for (; i + 4 <= m; i += 4)
            kernel_avx2(4, xq + i * k, k, G, xs + i * groups, xo + i * no, no, tile, ws + n, wo + n, n_total, y + i * ys + n, ys);
        for (; i < m; i++)
            kernel_avx2(1, xq + i * k, k, G, xs + i * groups, xo + i * no, no, tile, ws + n, wo + n, n_total, y + i * ys + n, ys);
    }
}

#endif

void sift_q8_gemm(sift_path path, const uint8_t *xq, size_t m, size_t k, size_t group, const float *xscale,
                  const float *xo, size_t n_outliers, const int8_t *packed, const int32_t *rowsum,
                  const float *wscale, const float *wo, size_t n_total, size_t n0, size_t n1,
                  float *y, size_t y_stride) {
    switch (path) {
#if SIFT_X86
    case SIFT_PATH_AVX512VNNI:
        gemm_avx512(xq, m, k, group, xscale, xo, n_outliers, packed, rowsum, wscale, wo, n_total, n0, n1, y, y_stride);
        break;
    case SIFT_PATH_AVXVNNI:
        gemm_avxvnni(xq, m, k, group, xscale, xo, n_outliers, packed, rowsum, wscale, wo, n_total, n0, n1, y, y_stride);
        break;
    case SIFT_PATH_AVX2:
        gemm_avx2(xq, m, k, group, xscale, xo, n_outliers, packed, wscale, wo, n_total, n0, n1, y, y_stride);
        break;
#endif
    default:
        gemm_portable(xq, m, k, group, xscale, xo, n_outliers, packed, rowsum, wscale, wo, n_total, n0, n1, y, y_stride);
        break;
    }
}

/* ---- peak measurement ------------------------------------------------------------------- */

#if SIFT_X86
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static int32_t peak512(size_t iters) {
    __m512i a[16];
    __m512i b = _mm512_set1_epi32(0x01010101), c = _mm512_set1_epi32(0x01FF0102);
    for (int i = 0; i < 16; i++) a[i] = _mm512_set1_epi32(i);
    for (size_t it = 0; it < iters; it++) {
        for (int i = 0; i < 16; i++) a[i] = _mm512_dpbusd_epi32(a[i], b, c);
        __asm__ volatile("" : "+v"(a[0]), "+v"(a[1]), "+v"(a[2]), "+v"(a[3]), "+v"(a[4]), "+v"(a[5]), "+v"(a[6]), "+v"(a[7]));
    }
    __m512i s = a[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_epi32(s, a[i]);
    return _mm512_reduce_add_epi32(s);
}

__attribute__((target("avx2,avxvnni")))
static int32_t peak256(size_t iters) {
    __m256i a[12];
    __m256i b = _mm256_set1_epi32(0x01010101), c = _mm256_set1_epi32(0x01FF0102);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_epi32(i);
    for (size_t it = 0; it < iters; it++) {
        for (int i = 0; i < 12; i++) a[i] = _mm256_dpbusd_avx_epi32(a[i], b, c);
        __asm__ volatile("" : "+x"(a[0]), "+x"(a[1]), "+x"(a[2]), "+x"(a[3]));
    }
    __m256i s = a[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_epi32(s, a[i]);
    int32_t out[8];
    _mm256_storeu_si256((__m256i *)out, s);
    return out[0] + out[7];
}

/* The AVX2 kernel's inner sequence for 4 rows × 2 halves: sign, maddubs, madd, add per 32
 * multiply-adds. The activations are made opaque every iteration (as loads are in the kernel),
 * so nothing is hoisted out of the loop. */
__attribute__((target("avx2")))
static int32_t peak_avx2(size_t iters) {
    __m256i acc[4][2];
    const __m256i w[2] = {_mm256_set1_epi32(0x01FF0102), _mm256_set1_epi32(0x7F81037D)};
    const __m256i aw[2] = {_mm256_abs_epi8(w[0]), _mm256_abs_epi8(w[1])};
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i b[4];
    for (int r = 0; r < 4; r++) {
        b[r] = _mm256_set1_epi32(0x01020304 * (r + 1));
        acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    }
    for (size_t it = 0; it < iters; it++) {
        __asm__ volatile("" : "+x"(b[0]), "+x"(b[1]), "+x"(b[2]), "+x"(b[3]));
        for (int r = 0; r < 4; r++)
            for (int h = 0; h < 2; h++)
                acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(_mm256_maddubs_epi16(aw[h], _mm256_sign_epi8(b[r], w[h])), ones));
    }
    __m256i s = _mm256_setzero_si256();
    for (int r = 0; r < 4; r++) s = _mm256_add_epi32(s, _mm256_add_epi32(acc[r][0], acc[r][1]));
    int32_t out[8];
    _mm256_storeu_si256((__m256i *)out, s);
    return out[0] + out[7];
}
#endif

int32_t sift_int8_peak_loop(sift_path path, size_t iters) {
    switch (path) {
#if SIFT_X86
    case SIFT_PATH_AVX512VNNI: return peak512(iters);
    case SIFT_PATH_AVXVNNI: return peak256(iters);
    case SIFT_PATH_AVX2: return peak_avx2(iters);
#endif
    default: return 0;
    }
}

size_t sift_int8_peak_ops(sift_path path, size_t iters) {
    switch (path) {
    case SIFT_PATH_AVX512VNNI: return iters * 16 * 64 * 2;   /* 16 zmm dots of 64 products */
    case SIFT_PATH_AVXVNNI: return iters * 12 * 32 * 2;      /* 12 ymm dots of 32 products */
    case SIFT_PATH_AVX2: return iters * 8 * 32 * 2;          /* 8 emulated dots of 32 products */
    default: return 0;
    }
}
