// CPU weight norm: the entry points both backends declare from include/weightnorm/ops/weightnorm.inc, and the CPU's
// thread count.
#pragma once
#include <cstdint>

#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm::cpu {

// Threads used by every CPU kernel (OpenMP). 0 restores the default (all cores).
void set_num_threads(int threads);
int num_threads();

#include "weightnorm/ops/weightnorm.inc"

// On the CPU the fused kernels read each channel while it is cache-resident; the bfloat16 overloads use the same
// kernels and plan as the float32 ones (so also bitwise identical for any thread count), a chunk holding twice the
// channels at the same bytes.

}  // namespace weightnorm::cpu
