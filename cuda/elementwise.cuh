// Elementwise CUDA kernels. Mirrors cpu/elementwise.h.
#pragma once
#include <cstdint>

namespace weightnorm::cuda {

// out = alpha * x. With alpha = 1 it is the copy the benchmarks use as the memory roofline (read N, write N).
void scale(float* out, const float* x, float alpha, int64_t count);

}  // namespace weightnorm::cuda
