// Pointwise kernels (CUDA): the entry points both backends declare from include/weightnorm/ops/pointwise.inc.
// All pointers are device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/dtype.h"
#include "weightnorm/pointwise.h"

namespace weightnorm::cuda {

#include "weightnorm/ops/pointwise.inc"

}  // namespace weightnorm::cuda
