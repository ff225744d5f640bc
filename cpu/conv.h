// Convolution (im2col + GEMM) and pooling, NCHW (CPU): the entry points both backends declare from
// include/weightnorm/ops/conv.inc.
#pragma once
#include <cstdint>

#include "weightnorm/conv.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/conv.inc"

}  // namespace weightnorm::cpu
