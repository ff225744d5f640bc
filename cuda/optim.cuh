// Fused optimizer steps: one pass over each parameter tensor (CUDA): the entry points both backends declare from
// include/weightnorm/ops/optim.inc. All pointers are device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/optim.h"

namespace weightnorm::cuda {

#include "weightnorm/ops/optim.inc"

}  // namespace weightnorm::cuda
