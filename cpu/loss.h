// Losses (CPU): the entry points both backends declare from include/weightnorm/ops/loss.inc.
#pragma once
#include <cstdint>

#include "weightnorm/layout.h"
#include "weightnorm/loss.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/loss.inc"

}  // namespace weightnorm::cpu
