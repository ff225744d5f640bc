// WN_HOST_DEVICE marks the small functions in this folder that both backends call from their kernels: compiled for
// the host and, under nvcc, for the device too, and always inlined on both (they sit in the kernels' inner loops; the
// CPU's loops vectorize only with the whole body in the loop, and GCC's inliner kept some as calls otherwise).
#pragma once

#if defined(__CUDACC__)
#define WN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define WN_HOST_DEVICE __attribute__((always_inline)) inline
#endif
