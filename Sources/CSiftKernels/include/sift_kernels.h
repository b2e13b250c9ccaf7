#ifndef SIFT_KERNELS_H
#define SIFT_KERNELS_H
/* Sift's numeric kernels. Plain C, no allocation, no threads: callers own every buffer.
 * Every float reduction runs in a fixed order per row so results never depend on batch
 * composition (see docs/ARCHITECTURE.md, "batch invariance"). */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- CPU features (CPUID, checked at run time) ------------------------------------------ */
enum {
    SIFT_CPU_AVX2 = 1u << 0,        /* AVX2 + FMA */
    SIFT_CPU_AVX512 = 1u << 1,      /* AVX-512 F, BW, DQ, VL, CD */
    SIFT_CPU_AVX512VNNI = 1u << 2,  /* zmm vpdpbusd */
    SIFT_CPU_AVXVNNI = 1u << 3,     /* ymm vpdpbusd (VEX) */
    SIFT_CPU_AVX512BF16 = 1u << 4,  /* zmm vdpbf16ps */
};
unsigned sift_cpu_features(void);

/* Vector width a kernel runs at. Every level computes the same IEEE operations in the same
 * order, so all levels give the same bits; callers pass the level explicitly (the model's
 * kernel path), so the portable twins run, and are tested, on any CPU. A level this CPU lacks
 * falls back to the best one it has below it. */
typedef enum {
    SIFT_SIMD_PORTABLE = 0,
    SIFT_SIMD_AVX2 = 1,      /* AVX2 + FMA, 8 lanes */
    SIFT_SIMD_AVX512 = 2,    /* AVX-512 F/BW/DQ/VL, 16 lanes */
} sift_simd;
/* `level`, or the best level below it that this CPU runs. */
sift_simd sift_simd_usable(sift_simd level);

/* The CPU's spin-wait hint (x86 `pause`): a spinning thread yields pipeline resources to the
 * other hyperthread and saves power while it waits. */
static inline void sift_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* ---- conversions ---------------------------------------------------------------------- */
void sift_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
void sift_f16_to_f32(const uint16_t *src, float *dst, size_t n);

/* ---- per-row elementwise / normalisation ---------------------------------------------- */
/* y[r,:] = x[r,:] * rsqrt(mean(x[r,:]^2) + eps) * w, for `rows` rows of `n` (may alias). */
void sift_rmsnorm(const float *x, const float *w, float *y, size_t rows, size_t n,
                  size_t x_stride, size_t y_stride, float eps);
/* Rotary embedding (rotate-half layout) on `heads` heads of `dim` for one token in place,
 * with precomputed cos/sin of length dim/2 for its position. */
void sift_rope(float *x, size_t heads, size_t dim, const float *cos, const float *sin);
/* out[i] = silu(gate[i]) * up[i] */
void sift_silu_mul(sift_simd level, const float *gate, const float *up, float *out, size_t n);
/* y[i] += x[i] */
void sift_add_inplace(float *y, const float *x, size_t n);
/* exp(x) as the kernels compute it (portable; the SIMD twins agree bit for bit). */
float sift_exp(float x);
/* ---- attention -------------------------------------------------------------------------- */
enum { SIFT_KEY_BLOCK = 16 };  /* keys are stored transposed in blocks of this many positions */
/* Floats of a call's query copy and of its output tile in its scratch (128 KB each: 256 rows of
 * head_dim 128, kept in L2; in place, rows a token apart fall into the same cache sets). */
enum { SIFT_ATTENTION_Q_FLOATS = 32768, SIFT_ATTENTION_OUT_FLOATS = 32768 };
/* The floats of scratch an attention call of `rows` rows needs. */
static inline size_t sift_attention_scratch_floats(size_t rows) {
    return 2 * rows + SIFT_ATTENTION_Q_FLOATS + SIFT_ATTENTION_OUT_FLOATS;
}
/* Causal attention of `rows` query rows (positions first_pos...) of one head against KV head
 * `g`: out[r, 0..d) = softmax(q_r · K[0..pos_r]ᵀ · scale) · V[0..pos_r], fused (flash-style: no
 * row of scores is stored; see attention.c for the exact operations). KV memory is paged in
 * blocks of 16 positions: blocks[b] is the block of positions 16b..16b+15; its keys
 * (transposed, [kv_head][d][16]) start at + k_off, its values ([kv_head][16][d]) at + v_off.
 * `scratch` holds sift_attention_scratch_floats(rows) floats. Every level gives the same bits,
 * and a row's result does not depend on the other rows of the call. */
void sift_attention(sift_simd level, const float *q, size_t q_stride, size_t rows, size_t first_pos,
                    const float *const *blocks, size_t k_off, size_t v_off, size_t g, size_t d,
                    float scale, float *out, size_t out_stride, float *scratch);

/* The same attention with K, V, Q and the probabilities in bf16 (attention_bf16.c gives the
 * exact operations): KV blocks hold bf16 pairs — KV head g's keys as (head_dim/2 × 16) words
 * of (k[2p], k[2p+1]) at blocks[b] + k_off + g · head_dim · 16, its values as (8 × head_dim)
 * words of (v_{2m}[dd], v_{2m+1}[dd]) at blocks[b] + v_off + g · 16 · head_dim (offsets in bf16
 * elements). `dot` 1: use `vdpbf16ps` where the CPU has it (0: its FMA twin, for tests). Every
 * level, with or without the instruction, gives the same bits. */
void sift_attention_bf16(sift_simd level, int dot, const float *q, size_t q_stride, size_t rows, size_t first_pos,
                         const uint16_t *const *blocks, size_t k_off, size_t v_off, size_t g, size_t d,
                         float scale, float *out, size_t out_stride, float *scratch);
/* Writes position `slot` of a block: key and value rows (kv_dim floats each, all KV heads of
 * head_dim d) rounded to bf16 (nearest even; denormals to zero) into the layer's key and value
 * areas, in the layout above. */
void sift_kv_store_bf16(const float *key, const float *value, size_t kv_dim, size_t d,
                        uint16_t *keys, uint16_t *values, size_t slot);
/* The same attention with K and V in int8, a scale per token and KV head, and Q and the
 * probabilities quantized per row (attention_i8.c gives the exact operations): KV head g's keys
 * as (head_dim/4 × 16) words of four dimensions at blocks[b] + k_off + g · head_dim · 16, its
 * values as (4 × head_dim) words of four positions at blocks[b] + v_off + g · 16 · head_dim, its
 * 16 key scales, 16 key sums (int32) and 16 value scales at blocks[b] + s_off + g · 192 (offsets
 * in bytes). The dot products run on `vpdpbusd` where the CPU has AVX-512 VNNI, on AVX2's exact
 * maddubs/madd sequence below it; every level gives the same bits. */
void sift_attention_i8(sift_simd level, const float *q, size_t q_stride, size_t rows, size_t first_pos,
                       const int8_t *const *blocks, size_t k_off, size_t v_off, size_t s_off, size_t g, size_t d,
                       float scale, float *out, size_t out_stride, float *scratch);
/* Writes position `slot` of a block in the int8 layout above: each KV head's key and value
 * rows quantized with their own scale (max|x| / 127, round to nearest even); the same bits at
 * every level. Other positions of the block may be written at the same time. */
void sift_kv_store_i8(sift_simd level, const float *key, const float *value, size_t kv_dim, size_t d,
                      int8_t *keys, int8_t *values, float *scales, size_t slot);
/* The bf16 dot peak (`vdpbf16ps`; 0 on CPUs without it), as the FMA peak below. */
float sift_bf16_peak_loop(size_t iters);
size_t sift_bf16_peak_flops(size_t iters);

/* The fp32 FMA peak at a level: a register-only loop of independent FMAs. Returns a value so
 * the work is not optimised away; `sift_fma_peak_flops` is the floating-point operations (2 per
 * FMA lane) of one call. */
float sift_fma_peak_loop(sift_simd level, size_t iters);
size_t sift_fma_peak_flops(sift_simd level, size_t iters);

/* Fast non-cryptographic 64-bit checksum (for .sift files). */
uint64_t sift_checksum64(const void *data, size_t len, uint64_t seed);

/* Dot product accumulated in double (fixed order). */
double sift_dot_f64(const float *a, const float *b, size_t n);

#ifdef __cplusplus
}
#endif
#endif
