import Qwen3

// OpenBLAS picks its kernels when it loads; re-exec with a fast core type before anything runs.
BLAS.ensureFastCore()
SiftCommand.main()
