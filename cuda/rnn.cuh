// Recurrent layers (LSTM, GRU) over whole sequences and the embedding lookup (CUDA): the entry points both backends
// declare from include/weightnorm/ops/rnn.inc. All pointers are device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/rnn.h"

namespace weightnorm::cuda {

#include "weightnorm/ops/rnn.inc"

}  // namespace weightnorm::cuda
