// Fused optimizer steps: one pass over each parameter tensor (CPU): the entry points both backends declare from
// include/weightnorm/ops/optim.inc.
#pragma once
#include <cstdint>

#include "weightnorm/optim.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/optim.inc"

}  // namespace weightnorm::cpu
