// Elementwise kernels (CUDA): the entry points both backends declare from include/weightnorm/ops/elementwise.inc.
// All pointers are device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm::cuda {

#include "weightnorm/ops/elementwise.inc"

}  // namespace weightnorm::cuda
