// The convolution family's plain data, shared by cpu/conv.h and cuda/conv.cuh (their entry points: ops/conv.inc).
// Plain data only (no host-only types), so that nvcc compiles it as well as g++.
#pragma once
#include <cstdint>

namespace weightnorm {

struct Conv2dGeometry {
  int64_t batch, in_channels, in_height, in_width;
  int64_t out_channels, kernel_height, kernel_width;
  int64_t stride, padding;
  int64_t out_height() const { return (in_height + 2 * padding - kernel_height) / stride + 1; }
  int64_t out_width() const { return (in_width + 2 * padding - kernel_width) / stride + 1; }
};

}  // namespace weightnorm
