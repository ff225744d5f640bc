// The CPU's thread count, shared by every CPU kernel (OpenMP).
#pragma once
#include <cstdint>

namespace weightnorm::cpu {

// Threads used by every CPU kernel. 0 restores the default (all cores).
void set_num_threads(int threads);
int num_threads();

}  // namespace weightnorm::cpu
