// Shared by cpu/ and cuda/: bfloat16 storage. Weights and activations may be stored as bfloat16 (8-bit exponent
// like float32, 8-bit significand); norms, per-channel coefficients and every accumulation stay float32.
// The struct has the layout of CUDA's __nv_bfloat16 (device code reinterprets it to use the intrinsics) and is
// usable from host and device code alike.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define WEIGHTNORM_HOST_DEVICE __host__ __device__
#else
#define WEIGHTNORM_HOST_DEVICE
#endif

namespace weightnorm {

struct bfloat16 {
  uint16_t bits;
};
static_assert(sizeof(bfloat16) == 2, "bfloat16 must be 2 bytes");

// Exact: a bfloat16 is the top half of a float32.
WEIGHTNORM_HOST_DEVICE inline float bfloat16_to_float(bfloat16 value) {
  uint32_t word = static_cast<uint32_t>(value.bits) << 16;
  float out;
  memcpy(&out, &word, sizeof(out));
  return out;
}

// Round to nearest, ties to even (what __float2bfloat16_rn does). NaN stays NaN (quiet); infinities and overflow
// to infinity follow IEEE rounding.
WEIGHTNORM_HOST_DEVICE inline bfloat16 float_to_bfloat16(float value) {
  uint32_t word;
  memcpy(&word, &value, sizeof(word));
  if ((word & 0x7fffffffu) > 0x7f800000u) return bfloat16{static_cast<uint16_t>((word >> 16) | 0x0040u)};
  uint32_t rounding = 0x7fffu + ((word >> 16) & 1u);
  return bfloat16{static_cast<uint16_t>((word + rounding) >> 16)};
}

}  // namespace weightnorm
