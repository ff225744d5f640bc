// Elementwise CPU kernels. Mirrors cuda/elementwise.cuh.
#pragma once
#include <cstdint>

namespace weightnorm::cpu {

// out = alpha * x. With alpha = 1 it is the copy the benchmarks use as the memory roofline (read N, write N).
void scale(float* out, const float* x, float alpha, int64_t count);

}  // namespace weightnorm::cpu
