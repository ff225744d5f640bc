// Launch geometry shared by the host code of the CUDA kernels (plain C++: no CUDA types).
#pragma once
#include <algorithm>
#include <cstdint>

#include "runtime.cuh"

namespace weightnorm::cuda {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Vector loads and stores of 16 bytes (float4) need 16-byte aligned addresses.
inline bool aligned16(const void* pointer) { return (reinterpret_cast<uintptr_t>(pointer) & 15) == 0; }

// The device's multiprocessors, at least 1 so that a grid sized from it is never empty (the status reports 0 when
// CUDA is unusable, and no kernel is launched then).
inline int64_t multiprocessors() { return std::max(1, device_status().multiprocessors); }

// Blocks of `block` threads for a grid-stride loop over `items`: one per `block` items, at least one, and at most
// `per_multiprocessor` per multiprocessor (enough to fill the GPU several times over; the loop covers the rest).
inline unsigned grid_for(int64_t items, int64_t block, int64_t per_multiprocessor = 8) {
  return static_cast<unsigned>(std::clamp<int64_t>(ceil_div(items, block), 1, per_multiprocessor * multiprocessors()));
}

}  // namespace weightnorm::cuda
