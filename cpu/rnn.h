// Recurrent layers (LSTM, GRU) over whole sequences and the embedding lookup (CPU): the entry points both backends
// declare from include/weightnorm/ops/rnn.inc.
#pragma once
#include <cstdint>

#include "weightnorm/rnn.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/rnn.inc"

}  // namespace weightnorm::cpu
