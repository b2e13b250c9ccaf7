#include "sift_kernels.h"


unsigned sift_cpu_features(void) {
    unsigned f = 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f |= SIFT_CPU_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512cd")) f |= SIFT_CPU_AVX512;
    if ((f & SIFT_CPU_AVX512) && __builtin_cpu_supports("avx512vnni")) f |= SIFT_CPU_AVX512VNNI;
    if ((f & SIFT_CPU_AVX2) && __builtin_cpu_supports("avxvnni")) f |= SIFT_CPU_AVXVNNI;
    return f;
}
