#include "sift_kernels.h"
#include "exp_twins.h"
#include <math.h>
#include <string.h>
#include "arch.h"

/* No implicit FMA contraction (as -ffp-contract=off, but part of the file, so it holds however
 * the package is built): scalar and SIMD twins of a kernel perform the same IEEE operations and
 * agree bit for bit. */
#pragma clang fp contract(off)

void sift_bf16_to_f32(const uint16_t *src, float *dst, size_t n) {
    uint32_t *d = (uint32_t *)dst;
    for (size_t i = 0; i < n; i++) d[i] = (uint32_t)src[i] << 16;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { e++; mant <<= 1; } while ((mant & 0x400) == 0);
            mant &= 0x3ff;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void sift_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = half_to_float(src[i]);
}

/* Four lanes as the compiler's vector extension (SSE on x86-64, NEON on arm64): the same IEEE
 * operations lane by lane on every target. */
typedef float f32x4 __attribute__((vector_size(16)));
static inline f32x4 load4(const float *p) { f32x4 v; memcpy(&v, p, sizeof v); return v; }
static inline void store4(float *p, f32x4 v) { memcpy(p, &v, sizeof v); }

void sift_rmsnorm(const float *x, const float *w, float *y, size_t rows, size_t n,
                  size_t x_stride, size_t y_stride, float eps) {
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        /* 8 partial sums in a fixed order (lanes 0-3 in lo, 4-7 in hi), then a fixed tree:
         * deterministic. Written as vectors because the plain loop vectorised poorly (the
         * partial sums shuffled), and in place (y == x, the q/k norms) the scaling loop below
         * failed the compiler's overlap check and ran one float at a time. */
        f32x4 lo = {0, 0, 0, 0}, hi = {0, 0, 0, 0};
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            f32x4 a = load4(xr + i), b = load4(xr + i + 4);
            lo += a * a;
            hi += b * b;
        }
        f32x4 s = lo + hi;
        float ss = (s[0] + s[1]) + (s[2] + s[3]);
        for (; i < n; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)n + eps);
        f32x4 vinv = {inv, inv, inv, inv};
        size_t k = 0;
        for (; k + 4 <= n; k += 4) store4(yr + k, load4(w + k) * (load4(xr + k) * vinv));
        for (; k < n; k++) yr[k] = w[k] * (xr[k] * inv);
    }
}

void sift_rope(float *x, size_t heads, size_t dim, const float *cos, const float *sin) {
    size_t half = dim / 2;
    for (size_t h = 0; h < heads; h++) {
        float *v = x + h * dim;
        for (size_t i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cos[i] - b * sin[i];
            v[i + half] = b * cos[i] + a * sin[i];
        }
    }
}

float sift_exp(float x) { return exp_portable(x); }

static void silu_mul_portable(const float *gate, const float *up, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = (g / (1.0f + exp_portable(-g))) * up[i];
    }
}

#if SIFT_X86
__attribute__((target("avx512f")))
static void silu_mul_avx512(const float *gate, const float *up, float *out, size_t n) {
    size_t i = 0;
    __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 g = _mm512_loadu_ps(gate + i);
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), g));
        __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, e));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(s, _mm512_loadu_ps(up + i)));
    }
    silu_mul_portable(gate + i, up + i, out + i, n - i);
}

__attribute__((target("avx2,fma")))
static void silu_mul_avx2(const float *gate, const float *up, float *out, size_t n) {
    size_t i = 0;
    __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g));
        __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
    }
    silu_mul_portable(gate + i, up + i, out + i, n - i);
}
#endif

void sift_silu_mul(sift_simd level, const float *gate, const float *up, float *out, size_t n) {
    switch (sift_simd_usable(level)) {
#if SIFT_X86
    case SIFT_SIMD_AVX512: silu_mul_avx512(gate, up, out, n); break;
    case SIFT_SIMD_AVX2: silu_mul_avx2(gate, up, out, n); break;
#endif
    default: silu_mul_portable(gate, up, out, n); break;
    }
}

void sift_add_inplace(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

double sift_dot_f64(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

/* 64-bit checksum of a byte range: four independent multiply-rotate lanes over 8-byte words
 * (fast enough to verify gigabytes at load), then a final mix. Not cryptographic. */
static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t sift_checksum64(const void *data, size_t len, uint64_t seed) {
    const uint64_t CK1 = 0x9E3779B185EBCA87ull, CK2 = 0xC2B2AE3D27D4EB4Full;
    const unsigned char *p = data;
    uint64_t a = seed + CK1, b = seed ^ CK2, c = seed, d = seed - CK1;
    size_t i = 0;
    for (; i + 32 <= len; i += 32) {
        uint64_t w[4];
        memcpy(w, p + i, 32);
        a = rotl64(a + w[0] * CK2, 31) * CK1;
        b = rotl64(b + w[1] * CK2, 31) * CK1;
        c = rotl64(c + w[2] * CK2, 31) * CK1;
        d = rotl64(d + w[3] * CK2, 31) * CK1;
    }
    uint64_t h = rotl64(a, 1) + rotl64(b, 7) + rotl64(c, 12) + rotl64(d, 18) + (uint64_t)len;
    for (; i < len; i++) h = rotl64(h ^ (p[i] * CK1), 11) * CK2;
    h ^= h >> 33; h *= CK2; h ^= h >> 29; h *= CK1; h ^= h >> 32;
    return h;
}
