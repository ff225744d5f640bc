// Reductions (CPU): the entry points both backends declare from include/weightnorm/ops/reduce.inc.
#pragma once
#include <cstdint>

#include "weightnorm/layout.h"
#include "weightnorm/reduce.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/reduce.inc"

}  // namespace weightnorm::cpu
