#include "elementwise.h"

#include <omp.h>

#include "weightnorm.h"

namespace weightnorm::cpu {

void scale(float* out, const float* x, float alpha, int64_t count) {
  const bool parallel = count >= (int64_t{1} << 15) && num_threads() > 1;
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (parallel)
  for (int64_t i = 0; i < count; ++i) out[i] = alpha * x[i];
}

}  // namespace weightnorm::cpu
