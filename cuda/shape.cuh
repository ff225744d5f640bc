// Shape ops (CUDA): the entry points both backends declare from include/weightnorm/ops/shape.inc. All pointers are
// device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/shape.h"

namespace weightnorm::cuda {

#include "weightnorm/ops/shape.inc"

}  // namespace weightnorm::cuda
