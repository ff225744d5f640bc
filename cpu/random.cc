#include "random.h"

#include "weightnorm.h"
#include "weightnorm/random.h"

namespace weightnorm::cpu {

void fill_normal(float* out, int64_t count, uint64_t seed, float mean, float std) {
  const uint64_t stream = random::stream_of(seed, random::kPurposeRandn);
  parallel_region(count >= (int64_t{1} << 16), num_threads(), [&] {
    for (const int64_t i : team_static(0, count))
      out[i] = static_cast<float>(mean + std * random::normal(stream, uint64_t(i)));
  });
}

}  // namespace weightnorm::cpu
