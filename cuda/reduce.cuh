// Reductions (CUDA): the entry points both backends declare from include/weightnorm/ops/reduce.inc. All pointers
// are device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/layout.h"
#include "weightnorm/reduce.h"

namespace weightnorm::cuda {

#include "weightnorm/ops/reduce.inc"

}  // namespace weightnorm::cuda
