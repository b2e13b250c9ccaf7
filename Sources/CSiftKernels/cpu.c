#include "sift_kernels.h"
#include "arch.h"

static unsigned detect(void) {
    unsigned f = 0;
#if SIFT_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f |= SIFT_CPU_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512cd")) f |= SIFT_CPU_AVX512;
    if ((f & SIFT_CPU_AVX512) && __builtin_cpu_supports("avx512vnni")) f |= SIFT_CPU_AVX512VNNI;
    if ((f & SIFT_CPU_AVX2) && __builtin_cpu_supports("avxvnni")) f |= SIFT_CPU_AVXVNNI;
    if ((f & SIFT_CPU_AVX512) && __builtin_cpu_supports("avx512bf16")) f |= SIFT_CPU_AVX512BF16;
#endif
    return f;
}

/* Detected once; every kernel asks on its hot path. (Racing first calls store the same value.) */
unsigned sift_cpu_features(void) {
    static unsigned cached = 0;   /* bit 31 marks "detected" */
    unsigned f = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (!(f & 0x80000000u)) {
        f = detect() | 0x80000000u;
        __atomic_store_n(&cached, f, __ATOMIC_RELAXED);
    }
    return f & 0x7FFFFFFFu;
}

sift_simd sift_simd_usable(sift_simd level) {
    unsigned f = sift_cpu_features();
    if (level >= SIFT_SIMD_AVX512 && (f & SIFT_CPU_AVX512)) return SIFT_SIMD_AVX512;
    if (level >= SIFT_SIMD_AVX2 && (f & SIFT_CPU_AVX2)) return SIFT_SIMD_AVX2;
    return SIFT_SIMD_PORTABLE;
}
