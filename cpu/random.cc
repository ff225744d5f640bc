#include "random.h"

#include <omp.h>

#include <cmath>

#include "weightnorm.h"

namespace weightnorm::cpu {
namespace {

// SplitMix64's finalizer: a bijective 64-bit mix with good avalanche, enough for a counter-based generator.
uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in (0, 1]: 53 random bits, never 0 so that log() is finite.
double unit_open_zero(uint64_t bits) { return (double((bits >> 11) + 1)) * 0x1.0p-53; }

}  // namespace

void fill_normal(float* out, int64_t count, uint64_t seed, float mean, float std) {
  const uint64_t stream = mix64(seed ^ 0x6A09E667F3BCC909ull);
  const int64_t pairs = (count + 1) / 2;
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (count >= (int64_t{1} << 16))
  for (int64_t p = 0; p < pairs; ++p) {
    // Box-Muller on one counter: two normals per pair of uniforms.
    const double u1 = unit_open_zero(mix64(stream + 2 * uint64_t(p)));
    const double u2 = unit_open_zero(mix64(stream + 2 * uint64_t(p) + 1));
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = 6.283185307179586 * u2;
    out[2 * p] = static_cast<float>(mean + std * radius * std::cos(angle));
    if (2 * p + 1 < count) out[2 * p + 1] = static_cast<float>(mean + std * radius * std::sin(angle));
  }
}

}  // namespace weightnorm::cpu
