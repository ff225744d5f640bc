// CUDA reductions (see reduce.cuh), and the per-channel sums the batch-norm kernels (cuda/normalization.cu) use.
//
// Every sum is a partial kernel and a finalize kernel, no atomics: each partial is added in an order fixed by the
// launch shape (which depends only on the layout and the GPU's SM count), so results are bitwise identical run to
// run on one GPU. Two partial routes for a layout [outer, channels, inner]:
//  columns   inner < 32 (Linear [batch, features], small spatial sizes, sum_all of fewer than 32 floats): a block
//            of 32 columns x 8 thread-rows walks a slice of the outer rows; one partial per (slice, column).
//  segments  inner >= 32 (conv feature maps, sum_all): one warp per (channel, slice of the channel's reduction
//            domain r = o * inner + i), lanes along r; one partial per (slice, channel).
// The finalize kernel gives each channel one warp, which adds its partials in a fixed order and a butterfly.
// sum_all is channel_sum of the layout [1, 1, count].
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "check.cuh"
#include "launch.cuh"
#include "reduce.cuh"
#include "runtime.cuh"

namespace weightnorm::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = kBlock / kWarp;
constexpr int kColumnTile = 32;
constexpr int kColumnRows = 8;
constexpr int64_t kSegmentMinInner = 32;
constexpr int64_t kMinSegmentSlice = 1024;  // floats per warp at least, when a channel is split
// Most terms one float accumulator takes: rows per thread (columns), floats per warp (segments). Bounds the
// rounding error of huge reductions; the extra partials are a negligible fraction of the input.
constexpr int64_t kMaxColumnRowsPerThread = 2048;
constexpr int64_t kMaxSegmentSlice = int64_t{32} * 2048;
constexpr int kMaxGridY = 65535;

template <ChannelSumKind K>
__device__ __forceinline__ void accumulate(float (&s)[kChannelSums<K>], const ChannelSumInputs& in, int64_t e,
                                           float shift) {
  if constexpr (K == ChannelSumKind::kPlain) {
    s[0] += in.a[e];
  } else if constexpr (K == ChannelSumKind::kCenteredSquare) {
    const float d = in.a[e] - shift;
    s[0] += d * d;
  } else {
    const float dy = in.b[e];
    s[0] += dy;
    s[1] += (in.a[e] - shift) * dy;
  }
}

__device__ __forceinline__ float warp_sum(float value) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// Partials laid out [sum n][split][channels][per_split]; here per_split = inner and column = k * inner + i.
template <ChannelSumKind K>
__global__ void __launch_bounds__(kColumnTile* kColumnRows)
    channel_columns_partial_kernel(float* partial, ChannelSumInputs in, int64_t outer, int64_t columns, int64_t inner,
                                   int64_t rows_per_split) {
  constexpr int N = kChannelSums<K>;
  __shared__ float sums[N][kColumnRows][kColumnTile + 1];
  const int x = threadIdx.x, y = threadIdx.y;
  const int64_t column = int64_t(blockIdx.x) * kColumnTile + x;
  const int64_t o_begin = int64_t(blockIdx.y) * rows_per_split;
  const int64_t o_end = min(outer, o_begin + rows_per_split);
  float s[N] = {};
  if (column < columns) {
    const float shift = in.shift ? in.shift[column / inner] : 0.0f;
    for (int64_t o = o_begin + y; o < o_end; o += kColumnRows) accumulate<K>(s, in, o * columns + column, shift);
  }
#pragma unroll
  for (int n = 0; n < N; ++n) sums[n][y][x] = s[n];
  __syncthreads();
  if (y != 0 || column >= columns) return;
#pragma unroll
  for (int n = 0; n < N; ++n) {
    float total = 0.0f;
#pragma unroll
    for (int r = 0; r < kColumnRows; ++r) total += sums[n][r][x];
    partial[(int64_t(n) * gridDim.y + blockIdx.y) * columns + column] = total;
  }
}

// Partials laid out [sum n][split][channels] (per_split = 1). One warp per (channel, split).
template <ChannelSumKind K>
__global__ void __launch_bounds__(kBlock)
    channel_segments_partial_kernel(float* partial, ChannelSumInputs in, int64_t channels, int64_t inner,
                                    int64_t reduce_size, int64_t splits, int64_t split_length) {
  constexpr int N = kChannelSums<K>;
  const int64_t unit = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (unit >= channels * splits) return;  // the whole warp: the butterfly below stays full
  const int64_t k = unit / splits, split = unit % splits;
  const int64_t r_begin = split * split_length;
  const int64_t r_end = min(r_begin + split_length, reduce_size);
  float s[N] = {};
  const float shift = in.shift ? in.shift[k] : 0.0f;
  int64_t r = r_begin + lane;
  if (r < r_end) {
    // (o, i) of r, advanced incrementally: inner >= 32, so one step of 32 wraps at most once.
    int64_t o = r / inner, i = r - o * inner;
    for (; r < r_end; r += kWarp) {
      accumulate<K>(s, in, (o * channels + k) * inner + i, shift);
      i += kWarp;
      while (i >= inner) {
        i -= inner;
        ++o;
      }
    }
  }
#pragma unroll
  for (int n = 0; n < N; ++n) {
    const float total = warp_sum(s[n]);
    if (lane == 0) partial[(n * splits + split) * channels + k] = total;
  }
}

// One warp per channel adds its splits * per_split partials in a fixed order.
template <int N>
__global__ void __launch_bounds__(kBlock)
    channel_finalize_kernel(float* out0, float* out1, const float* partial, int64_t channels, int64_t splits,
                            int64_t per_split) {
  const int64_t k = (int64_t(blockIdx.x) * kBlock + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (k >= channels) return;  // the whole warp
  const int64_t terms = splits * per_split;
#pragma unroll
  for (int n = 0; n < N; ++n) {
    float sum = 0.0f;
    for (int64_t t = lane; t < terms; t += kWarp) {
      const int64_t split = t / per_split, i = t - split * per_split;
      sum += partial[((n * splits + split) * channels + k) * per_split + i];
    }
    sum = warp_sum(sum);
    if (lane == 0) (n == 0 ? out0 : out1)[k] = sum;
  }
}

// out0[k] (and out1[k]) = the channel sums of kind K.
template <ChannelSumKind K>
void channel_sums(float* out0, float* out1, const ChannelSumInputs& in, const ChannelLayout& l) {
  constexpr int N = kChannelSums<K>;
  if (l.channels <= 0) return;
  if (l.reduce_size() == 0) {
    fill_zero(out0, l.channels * sizeof(float));
    if (N == 2) fill_zero(out1, l.channels * sizeof(float));
    return;
  }
  const int64_t sms = multiprocessors();
  cudaStream_t stream = library_stream();
  int64_t splits = 1, per_split = 1;
  if (l.inner < kSegmentMinInner) {
    const int64_t columns = l.channels * l.inner;
    const int64_t tiles = ceil_div(columns, kColumnTile);
    const int64_t wanted = std::max(ceil_div(4 * sms, tiles), ceil_div(l.outer, kColumnRows * kMaxColumnRowsPerThread));
    splits = std::clamp<int64_t>(wanted, 1, std::min<int64_t>(ceil_div(l.outer, kColumnRows), kMaxGridY));
    per_split = l.inner;
    Scratch partial(N * splits * columns * sizeof(float));
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(splits));
    channel_columns_partial_kernel<K><<<grid, dim3(kColumnTile, kColumnRows), 0, stream>>>(
        partial.floats(), in, l.outer, columns, l.inner, ceil_div(l.outer, splits));
    WN_CUDA_CHECK_LAUNCH();
    const unsigned blocks = static_cast<unsigned>(ceil_div(l.channels * kWarp, kBlock));
    channel_finalize_kernel<N><<<blocks, kBlock, 0, stream>>>(out0, out1, partial.floats(), l.channels, splits, per_split);
    WN_CUDA_CHECK_LAUNCH();
    return;
  }
  const int64_t reduce = l.reduce_size();
  // About 64 warps per SM in all, each with at least kMinSegmentSlice floats and at most kMaxSegmentSlice.
  const int64_t wanted = std::max(ceil_div(64 * sms, l.channels), ceil_div(reduce, kMaxSegmentSlice));
  splits = std::clamp<int64_t>(wanted, 1, std::max<int64_t>(1, reduce / kMinSegmentSlice));
  const int64_t split_length = ceil_div(reduce, splits);
  splits = ceil_div(reduce, split_length);  // no empty split
  Scratch partial(N * splits * l.channels * sizeof(float));
  const unsigned blocks = static_cast<unsigned>(ceil_div(l.channels * splits, kWarpsPerBlock));
  channel_segments_partial_kernel<K><<<blocks, kBlock, 0, stream>>>(partial.floats(), in, l.channels, l.inner, reduce,
                                                                    splits, split_length);
  WN_CUDA_CHECK_LAUNCH();
  const unsigned finalize_blocks = static_cast<unsigned>(ceil_div(l.channels * kWarp, kBlock));
  channel_finalize_kernel<N><<<finalize_blocks, kBlock, 0, stream>>>(out0, out1, partial.floats(), l.channels, splits, 1);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void sum_all(float* out, const float* x, int64_t count) {
  channel_sums<ChannelSumKind::kPlain>(out, nullptr, {x, nullptr, nullptr},
                                       ChannelLayout{1, 1, std::max<int64_t>(count, 0)});
}

void channel_sum(float* out, const float* x, const ChannelLayout& layout) {
  channel_sums<ChannelSumKind::kPlain>(out, nullptr, {x, nullptr, nullptr}, layout);
}

// The batch-norm statistics. Not in reduce.cuh (its contract is the plain ops); cuda/normalization.cu declares
// them where it uses them.
namespace detail {

void channel_centered_squares(float* sums, const float* x, const float* shift, const ChannelLayout& layout) {
  cuda::channel_sums<ChannelSumKind::kCenteredSquare>(sums, nullptr, {x, nullptr, shift}, layout);
}

void channel_sums_and_centered_dots(float* sums_of_dy, float* dots, const float* x, const float* shift,
                                    const float* dy, const ChannelLayout& layout) {
  cuda::channel_sums<ChannelSumKind::kSumAndCenteredDot>(sums_of_dy, dots, {x, dy, shift}, layout);
}

}  // namespace detail
}  // namespace weightnorm::cuda
