/* Umbrella header of the CSiftKernels module. */
#include "sift_kernels.h"
#include "sift_q8.h"
