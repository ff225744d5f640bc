#include "random.h"

#include <omp.h>

#include "weightnorm.h"
#include "weightnorm/random.h"

namespace weightnorm::cpu {

void fill_normal(float* out, int64_t count, uint64_t seed, float mean, float std) {
  const uint64_t stream = random::stream_of(seed, random::kPurposeRandn);
  parallel_region(count >= (int64_t{1} << 16), num_threads(), [&] {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<float>(mean + std * random::normal(stream, uint64_t(i)));
  });
}

}  // namespace weightnorm::cpu
