// Shared by cpu/ and cuda/: how a weight tensor is seen by the weight-norm kernels.
//
// Weight norm keeps one norm per index of the axis `dim` and reduces over every other axis. Any dim of a
// row-major tensor is therefore the 3-D view [outer, channels, inner]: outer = product of the axes before dim,
// channels = shape[dim], inner = product of the axes after it. dim 0 gives outer = 1 (each channel a contiguous
// row), the last dim gives inner = 1 (each channel a strided column), dim = null gives channels = 1. No kernel
// ever copies or transposes the tensor to get there.
#pragma once
#include <cstdint>

namespace weightnorm {

struct ChannelLayout {
  int64_t outer = 1;
  int64_t channels = 1;
  int64_t inner = 1;

  int64_t elements() const { return outer * channels * inner; }
  // Number of elements that share one channel (the length of the reduction).
  int64_t reduce_size() const { return outer * inner; }
};

// The floor applied to every norm: a zero row would otherwise give 0/0. Same value as TensorFlow and Flax.
constexpr float kDefaultNormEps = 1e-12f;

}  // namespace weightnorm
