// Elementwise kernels (CPU): the entry points both backends declare from include/weightnorm/ops/elementwise.inc.
#pragma once
#include <cstdint>

#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/elementwise.inc"

}  // namespace weightnorm::cpu
