// Convolution (im2col + GEMM) and pooling, NCHW (CUDA): the entry points both backends declare from
// include/weightnorm/ops/conv.inc. All pointers are device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/conv.h"

namespace weightnorm::cuda {

#include "weightnorm/ops/conv.inc"

}  // namespace weightnorm::cuda
