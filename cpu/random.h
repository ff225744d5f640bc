// Seeded random fills. Counter-based (each element's value depends only on seed and index), so a seed gives the
// same tensor whatever the thread count, and the CUDA side uploads exactly these values.
#pragma once
#include <cstdint>

namespace weightnorm::cpu {

// out[i] ~ N(mean, std^2), i in [0, count).
void fill_normal(float* out, int64_t count, uint64_t seed, float mean, float std);

}  // namespace weightnorm::cpu
