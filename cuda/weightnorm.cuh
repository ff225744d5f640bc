// CUDA weight norm: the entry points both backends declare from include/weightnorm/ops/weightnorm.inc. All pointers
// are device memory from cuda::allocate; work is queued on the library stream. Plain C++ API: no CUDA types here.
#pragma once
#include <cstdint>

#include "reduce.cuh"  // channel_dot, channel_scale, subtract: the unfused path is composed of them
#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm::cuda {

#include "weightnorm/ops/weightnorm.inc"

// On CUDA the fused forward and backward are bitwise deterministic run to run; their routes (cluster rows on sm_90,
// rows, short columns, split) are described in weightnorm.cu. The bfloat16 overloads use 16-byte loads of 8 values
// where rows (or the whole tensor, for outer > 1) are whole 8-value items and 16-byte aligned, else one value at a
// time.

// Diagnostics for tests and benchmarks: the route the last fused forward or backward took ("cluster-rows", "rows",
// "columns", "row-split", "view-split"; "none" before the first call).
const char* weightnorm_last_route();

}  // namespace weightnorm::cuda
