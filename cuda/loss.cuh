// Losses (CUDA): the entry points both backends declare from include/weightnorm/ops/loss.inc. All pointers are
// device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/layout.h"
#include "weightnorm/loss.h"

namespace weightnorm::cuda {

#include "weightnorm/ops/loss.inc"

}  // namespace weightnorm::cuda
