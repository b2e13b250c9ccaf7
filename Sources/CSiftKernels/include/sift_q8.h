#ifndef SIFT_Q8_H
#define SIFT_Q8_H
/* int8 linear layers: y = x · wᵀ with K cut into groups of `group` inputs (Sift's scheme:
 * SIFT_Q8_GROUP; K itself, one group: the per-row scheme of Sift before 0.8, kept to measure
 * against), and
 *   weights     s8, one fp32 scale per output row and group (symmetric),
 *   activations u8 = round(x / s) + 128, one fp32 scale per token (row) and group, except a few
 *               static outlier channels, which are computed in fp32 beside the GEMM.
 * Accumulation within a group is exact (int32); each group's sum is scaled and added in fp32 in
 * one fixed order on every path, so the AVX-512 VNNI, AVX-VNNI, AVX2 and portable paths give
 * bit-identical outputs. */
#include <stddef.h>
#include <stdint.h>
#include "sift_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { SIFT_Q8_TILE = 16 };   /* output rows per packed tile */
enum { SIFT_Q8_GROUP = 128 }; /* inputs per scale group (the last group of a K not a multiple is shorter) */
enum { SIFT_Q8_MAX_OUTLIERS = 256 };  /* outlier channels per layer, at most */

typedef enum {
    SIFT_PATH_PORTABLE = 0,
    SIFT_PATH_AVXVNNI = 1,
    SIFT_PATH_AVX512VNNI = 2,
    SIFT_PATH_AVX2 = 3,          /* no VNNI: vpdpbusd emulated exactly with maddubs/madd */
} sift_path;

/* Bytes of packed weights for n outputs (multiple of 16) × k inputs (multiple of 4). */
size_t sift_q8_packed_size(size_t n, size_t k);

/* Packs row-major s8 weights (n × k) into tiles of 16 rows: [n/16][k/4][16][4]. */
void sift_q8_pack(const int8_t *w, size_t n, size_t k, int8_t *packed);

/* Groups of `group` inputs (a multiple of 4; 0: all of K) in a K: ceil(k / group). */
static inline size_t sift_q8_groups(size_t k, size_t group) { return group == 0 || group >= k ? 1 : (k + group - 1) / group; }

/* Quantizes a row-major fp32 matrix (n × k) to s8 with one scale per row and group:
 * scale[g·n + r] = max|w[r, group g]| / 127, rowsum[g·n + r] = Σ_{k in g} q[r,k] (for the u8
 * offset). Both are group-major: a group's scales of 16 consecutive rows are one vector. */
void sift_q8_quantize_weights(const float *w, size_t n, size_t k, size_t group, int8_t *q, float *scale, int32_t *rowsum);

/* Quantizes activation rows: x (m × k, row stride x_stride) -> xq (m × k, u8, offset 128),
 * scale[i·groups + g] = amax / 127 over the non-outlier channels of row i in group g; outlier
 * channels (distinct, in [0, k), at most SIFT_Q8_MAX_OUTLIERS) get 128 (zero) and their fp32
 * values are gathered into xo (m × n_outliers). x is only read. Every level gives the same bits. */
void sift_q8_quantize_rows(sift_simd level, const float *x, size_t m, size_t k, size_t group, size_t x_stride,
                           const int32_t *outliers, size_t n_outliers, uint8_t *xq, float *scale, float *xo);

/* y[i, n] for n in [n0, n1) (multiples of 16), all i < m, in this order on every path:
 *   v = 0; for each group g in order:
 *     s = xscale[i·groups + g] · wscale[g·n_total + n];
 *     v = fma((float)(Σ_{k in g} xq[i,k]·w[n,k] − 128·rowsum[g·n_total + n]), s, v)
 *   for j in 0..<n_outliers: v = fma(xo[i, j], wo[j, n], v)
 * wo is (n_outliers × n_total) fp32: the weight columns of the outlier channels. */
void sift_q8_gemm(sift_path path, const uint8_t *xq, size_t m, size_t k, size_t group, const float *xscale,
                  const float *xo, size_t n_outliers, const int8_t *packed, const int32_t *rowsum,
                  const float *wscale, const float *wo, size_t n_total, size_t n0, size_t n1,
                  float *y, size_t y_stride);

/* The machine's int8 peak for a path: a register-only loop of the dot-product instructions its
 * GEMM uses (vpdpbusd on zmm or ymm; on AVX2 the sign/maddubs/madd/add sequence that emulates
 * it). Returns a value so the work is not optimised away; `sift_int8_peak_ops` is the number
 * of integer operations (2 per multiply-add) one call performs. 0 for the portable path. */
int32_t sift_int8_peak_loop(sift_path path, size_t iters);
size_t sift_int8_peak_ops(sift_path path, size_t iters);

#ifdef __cplusplus
}
#endif
#endif
