/* Private to CSiftKernels: x86 SIMD code is compiled only on x86. Elsewhere (aarch64) the CPU
 * reports no x86 features, every dispatch falls to its portable twin, and the results are the
 * same bits, as on an x86 CPU forced to the portable path. */
#ifndef SIFT_ARCH_H
#define SIFT_ARCH_H
#if defined(__x86_64__) || defined(__i386__)
#define SIFT_X86 1
#include <immintrin.h>
#else
#define SIFT_X86 0
#endif
#endif
