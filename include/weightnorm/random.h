// The counter-based generator shared by cpu/ and cuda/: value i of a stream depends only on (seed, i), so any
// element can be drawn by any thread on any device. Uniforms are exact functions of integer bits (identical on
// CPU and GPU, so dropout masks match bit for bit); normals go through log/sqrt/cos, which may differ in the last
// bit between the host's and the device's math libraries.
#pragma once
#include <cmath>
#include <cstdint>

#include "weightnorm/host_device.h"

namespace weightnorm::random {

// SplitMix64's finalizer: a bijective 64-bit mix with good avalanche.
WN_HOST_DEVICE uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The stream of a seed; `purpose` separates streams drawn from the same user seed (randn, dropout, noise).
WN_HOST_DEVICE uint64_t stream_of(uint64_t seed, uint64_t purpose) { return mix64(seed ^ mix64(purpose)); }

// Uniform in (0, 1] from 53 random bits (never 0, so log() is finite).
WN_HOST_DEVICE double uniform(uint64_t stream, uint64_t index) {
  return static_cast<double>((mix64(stream + index) >> 11) + 1) * (1.0 / 9007199254740992.0);
}

// Standard normal number `index` of the stream (Box-Muller; pairs share their two uniforms).
WN_HOST_DEVICE double normal(uint64_t stream, uint64_t index) {
  const uint64_t pair = index / 2;
  const double u1 = uniform(stream, 2 * pair), u2 = uniform(stream, 2 * pair + 1);
  const double radius = sqrt(-2.0 * log(u1));
  const double angle = 6.283185307179586 * u2;
  return (index & 1) ? radius * sin(angle) : radius * cos(angle);
}

constexpr uint64_t kPurposeRandn = 1, kPurposeDropout = 2, kPurposeNoise = 3;

}  // namespace weightnorm::random
