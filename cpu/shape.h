// Shape ops (CPU): the entry points both backends declare from include/weightnorm/ops/shape.inc.
#pragma once
#include <cstdint>

#include "weightnorm/shape.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/shape.inc"

}  // namespace weightnorm::cpu
