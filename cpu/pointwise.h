// Pointwise kernels (CPU): the entry points both backends declare from include/weightnorm/ops/pointwise.inc.
#pragma once
#include <cstdint>

#include "weightnorm/dtype.h"
#include "weightnorm/pointwise.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/pointwise.inc"

}  // namespace weightnorm::cpu
