// CPU weight norm: the entry points both backends declare from include/weightnorm/ops/weightnorm.inc.
#pragma once
#include <cstdint>

#include "reduce.h"   // channel_dot, channel_scale, subtract: the unfused path is composed of them
#include "threads.h"  // the thread count; CPU sources and native tests have long reached it through this header
#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/weightnorm.inc"

// On the CPU the fused kernels read each channel while it is cache-resident; the bfloat16 overloads use the same
// kernels and plan as the float32 ones (so also bitwise identical for any thread count), a chunk holding twice the
// channels at the same bytes.

}  // namespace weightnorm::cpu
