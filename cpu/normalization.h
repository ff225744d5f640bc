// Batch normalization and mean-only batch normalization (CPU): the entry points both backends declare from
// include/weightnorm/ops/normalization.inc.
#pragma once
#include <cstdint>

#include "weightnorm/layout.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/normalization.inc"

}  // namespace weightnorm::cpu
