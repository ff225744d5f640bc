// Reductions (deterministic: fixed summation order, no atomics) (CUDA). Mirrors cpu/reduce.h op by op. All pointers are device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/layout.h"

namespace weightnorm::cuda {

// out[0] = sum of x.
void sum_all(float* out, const float* x, int64_t count);
// out[k] = sum of x over channel k of the layout (bias gradients, batch-norm statistics).
void channel_sum(float* out, const float* x, const ChannelLayout& layout);

}  // namespace weightnorm::cuda
