// CUDA weight norm (see weightnorm.cuh). v is viewed as [outer, channels, inner]; one norm per channel.
//
// The host picks one of three routes per layout:
//  rows     outer == 1 (dim 0; dim null when small): a group of threads per channel row, 1 to 32 lanes for short
//           rows, the whole block for long ones. Each lane keeps its first kRowCache 16-byte items in registers,
//           so a row up to 4096 floats is read once, reduced, and written from registers: one kernel.
//  columns  outer > 1 and inner <= 32 (last dim, small middle dims): one block per tile of whole channels,
//           32 columns wide and 8 thread-rows deep, walking down all outer rows; the write pass re-reads the
//           tile while it is still in L1/L2. One kernel.
//  split    everything else, and layouts with too few rows or tiles to fill the GPU: partial sums per
//           (split, column) or per row chunk, a finalize kernel that adds them in a fixed order, then an
//           elementwise apply kernel. Three kernels.
// No atomics: every sum is added in an order fixed by the launch shape, so results are bitwise identical run to
// run on one GPU. All indexing is 64-bit where an element offset is formed.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "check.cuh"
#include "runtime.cuh"
#include "weightnorm.cuh"

namespace weightnorm::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int kWarp = 32;
constexpr int kRowCache = 4;                // items per lane and input held in registers by the rows kernel
constexpr int kColumnTile = 32;             // columns per block in the column kernels (one warp wide)
constexpr int kColumnRows = 8;              // thread-rows per block in the column kernels
constexpr int64_t kRowChunk = 8192;         // floats per block when one row is split across blocks
constexpr int64_t kSplitMinRow = 16384;     // rows shorter than this are never split
constexpr int kMaxGridY = 65535;

// kDot: only the per-row sum of a*b (the unfused path's reduction for rows).
enum class Pass { kForward, kBackward, kDot };
enum class Finish { kSum, kForward, kBackward };

// ---------------------------------------------------------------------------------------------------------------
// Per-channel arithmetic, shared by every route. c1, c2: the write pass computes c1*a (forward) or c1*a - c2*b
// (backward); per_channel is norm (forward) or dg (backward).

struct Coefficients {
  float c1, c2, per_channel;
};

__device__ __forceinline__ Coefficients forward_coefficients(float sum_of_squares, float g, float eps) {
  const float norm = fmaxf(sqrtf(sum_of_squares), eps);
  return {g / norm, 0.0f, norm};
}

__device__ __forceinline__ Coefficients backward_coefficients(float dot, float g, float norm, float eps) {
  const float dg = dot / norm;
  // Below the eps floor the norm is a constant, so the projection term vanishes.
  const float c2 = norm > eps ? g * dg / (norm * norm) : 0.0f;
  return {g / norm, c2, dg};
}

__device__ __forceinline__ float dot_of(float x, float y) { return x * y; }
__device__ __forceinline__ float dot_of(float4 x, float4 y) { return x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w; }
__device__ __forceinline__ float scaled(float x, float s) { return x * s; }
__device__ __forceinline__ float4 scaled(float4 x, float s) { return make_float4(x.x * s, x.y * s, x.z * s, x.w * s); }
__device__ __forceinline__ float combined(float a, float b, float c1, float c2) { return c1 * a - c2 * b; }
__device__ __forceinline__ float4 combined(float4 a, float4 b, float c1, float c2) {
  return make_float4(c1 * a.x - c2 * b.x, c1 * a.y - c2 * b.y, c1 * a.z - c2 * b.z, c1 * a.w - c2 * b.w);
}

// Sum over the kGroup consecutive lanes of a row. Every lane of the group gets the same bits (the butterfly adds
// the same pairs on both sides). kGroup == kBlock: the whole block, through shared memory.
template <int kGroup>
__device__ __forceinline__ float group_sum(float value, float* warp_sums) {
  if constexpr (kGroup <= kWarp) {
#pragma unroll
    for (int offset = kGroup / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset, kGroup);
    return value;
  } else {
    static_assert(kGroup == kBlock, "a group is at most one warp or the whole block");
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
    __syncthreads();  // warp_sums may still be read by a previous call
    if (threadIdx.x % kWarp == 0) warp_sums[threadIdx.x / kWarp] = value;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kBlock / kWarp; ++w) total += warp_sums[w];
    return total;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Route 1: rows (outer == 1). T is float4 when rows are a multiple of 4 floats and 16-byte aligned, else float.

struct RowsArgs {
  float* out;               // w or dv
  float* per_channel_out;   // norm or dg
  const float* a;           // v or dw
  const float* b;           // v (backward only)
  const float* g;
  const float* norm;        // backward only
  int64_t rows, row_length;
  float eps;
};

template <typename T, int kGroup, Pass kPass>
__global__ void __launch_bounds__(kBlock) weightnorm_rows_kernel(RowsArgs args) {
  __shared__ float warp_sums[kBlock / kWarp];
  constexpr int kGroupsPerBlock = kBlock / kGroup;
  constexpr int kFloatsPerItem = sizeof(T) / sizeof(float);
  const int64_t row = int64_t(blockIdx.x) * kGroupsPerBlock + threadIdx.x / kGroup;
  const int lane = threadIdx.x % kGroup;
  const bool active = row < args.rows;
  const int64_t items = args.row_length / kFloatsPerItem;
  const int64_t row_offset = (active ? row : 0) * args.row_length;
  const T* a = reinterpret_cast<const T*>(args.a + row_offset);
  const T* b = reinterpret_cast<const T*>(args.b + row_offset);

  T cached_a[kRowCache];
  T cached_b[kRowCache];
  float sum = 0.0f;
  if (active) {
#pragma unroll
    for (int c = 0; c < kRowCache; ++c) {
      const int64_t item = lane + int64_t(c) * kGroup;
      if (item < items) {
        cached_a[c] = a[item];
        if constexpr (kPass == Pass::kForward) {
          sum += dot_of(cached_a[c], cached_a[c]);
        } else {
          cached_b[c] = b[item];
          sum += dot_of(cached_a[c], cached_b[c]);
        }
      }
    }
#pragma unroll 1
    for (int64_t item = lane + int64_t(kRowCache) * kGroup; item < items; item += kGroup) {
      const T x = a[item];
      sum += kPass == Pass::kForward ? dot_of(x, x) : dot_of(x, b[item]);
    }
  }
  sum = group_sum<kGroup>(sum, warp_sums);  // every lane takes part, active or not
  if (!active) return;
  if constexpr (kPass == Pass::kDot) {
    if (lane == 0) args.per_channel_out[row] = sum;
    return;
  }

  const Coefficients coef = kPass == Pass::kForward
                                ? forward_coefficients(sum, args.g[row], args.eps)
                                : backward_coefficients(sum, args.g[row], args.norm[row], args.eps);
  if (lane == 0) args.per_channel_out[row] = coef.per_channel;
  T* out = reinterpret_cast<T*>(args.out + row_offset);
#pragma unroll
  for (int c = 0; c < kRowCache; ++c) {
    const int64_t item = lane + int64_t(c) * kGroup;
    if (item < items) {
      if constexpr (kPass == Pass::kBackward) {
        out[item] = combined(cached_a[c], cached_b[c], coef.c1, coef.c2);
      } else {
        out[item] = scaled(cached_a[c], coef.c1);
      }
    }
  }
#pragma unroll 1
  for (int64_t item = lane + int64_t(kRowCache) * kGroup; item < items; item += kGroup) {
    if constexpr (kPass == Pass::kBackward) {
      out[item] = combined(a[item], b[item], coef.c1, coef.c2);
    } else {
      out[item] = scaled(a[item], coef.c1);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Route 2: columns (outer > 1, inner <= 32). A block owns channels_per_tile whole channels.

struct ColumnsArgs {
  float* out;
  float* per_channel_out;
  const float* a;
  const float* b;
  const float* g;
  const float* norm;
  int64_t outer, channels, inner;
  int channels_per_tile;
  float eps;
};

template <Pass kPass>
__global__ void __launch_bounds__(kColumnTile* kColumnRows) weightnorm_columns_kernel(ColumnsArgs args) {
  __shared__ float column_sums[kColumnRows][kColumnTile + 1];
  __shared__ float tile_c1[kColumnTile];
  __shared__ float tile_c2[kColumnTile];
  const int x = threadIdx.x, y = threadIdx.y;
  const int inner = static_cast<int>(args.inner);
  const int64_t k_begin = int64_t(blockIdx.x) * args.channels_per_tile;
  const int tile_channels = static_cast<int>(min(int64_t(args.channels_per_tile), args.channels - k_begin));
  const bool column_active = x < tile_channels * inner;
  const int64_t row_stride = args.channels * args.inner;
  const int64_t column_offset = k_begin * args.inner + x;

  float sum = 0.0f;
  if (column_active) {
    for (int64_t o = y; o < args.outer; o += kColumnRows) {
      const int64_t e = o * row_stride + column_offset;
      const float value = args.a[e];
      sum += kPass == Pass::kBackward ? value * args.b[e] : value * value;
    }
  }
  column_sums[y][x] = sum;
  __syncthreads();
  if (y == 0 && x < tile_channels) {
    float total = 0.0f;
    for (int i = 0; i < inner; ++i)
      for (int r = 0; r < kColumnRows; ++r) total += column_sums[r][x * inner + i];
    const int64_t k = k_begin + x;
    const Coefficients coef = kPass == Pass::kForward ? forward_coefficients(total, args.g[k], args.eps)
                                                      : backward_coefficients(total, args.g[k], args.norm[k], args.eps);
    args.per_channel_out[k] = coef.per_channel;
    tile_c1[x] = coef.c1;
    tile_c2[x] = coef.c2;
  }
  __syncthreads();
  if (!column_active) return;
  const float c1 = tile_c1[x / inner], c2 = tile_c2[x / inner];
  for (int64_t o = y; o < args.outer; o += kColumnRows) {
    const int64_t e = o * row_stride + column_offset;
    args.out[e] = kPass == Pass::kBackward ? combined(args.a[e], args.b[e], c1, c2) : scaled(args.a[e], c1);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Route 3: split. Partials are laid out [splits][channels][per_split] so one finalize kernel serves both kinds.

// Partial sums of a*b per (row split, column) over rows of `columns` floats (column = k * inner + i, or, in the
// wide view of short rows, several whole rows side by side); elements at or past `total` do not exist.
template <bool kSquare>
__global__ void __launch_bounds__(kColumnTile* kColumnRows)
    channel_column_partial_kernel(float* partial, const float* a, const float* b, int64_t outer, int64_t columns,
                                  int64_t rows_per_split, int64_t total) {
  __shared__ float sums[kColumnRows][kColumnTile + 1];
  const int x = threadIdx.x, y = threadIdx.y;
  const int64_t column = int64_t(blockIdx.x) * kColumnTile + x;
  const int64_t o_begin = int64_t(blockIdx.y) * rows_per_split;
  const int64_t o_end = min(outer, o_begin + rows_per_split);
  float sum = 0.0f;
  if (column < columns) {
    for (int64_t o = o_begin + y; o < o_end; o += kColumnRows) {
      const int64_t e = o * columns + column;
      if (e >= total) break;
      const float value = a[e];
      sum += kSquare ? value * value : value * b[e];
    }
  }
  sums[y][x] = sum;
  __syncthreads();
  if (y == 0 && column < columns) {
    float total = 0.0f;
#pragma unroll
    for (int r = 0; r < kColumnRows; ++r) total += sums[r][x];
    partial[int64_t(blockIdx.y) * columns + column] = total;
  }
}

// Partial sums of a*b per (row, chunk of kRowChunk floats) for outer == 1: grid (rows, chunks).
template <typename T, bool kSquare>
__global__ void __launch_bounds__(kBlock)
    channel_row_partial_kernel(float* partial, const float* a, const float* b, int64_t row_length) {
  __shared__ float warp_sums[kBlock / kWarp];
  constexpr int kFloatsPerItem = sizeof(T) / sizeof(float);
  const int64_t row = blockIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
  const int64_t items = row_length / kFloatsPerItem;
  const int64_t chunk_items = kRowChunk / kFloatsPerItem;
  const int64_t begin = chunk * chunk_items, end = min(items, begin + chunk_items);
  const T* ra = reinterpret_cast<const T*>(a + row * row_length);
  const T* rb = reinterpret_cast<const T*>(b + row * row_length);
  float sum = 0.0f;
  for (int64_t item = begin + threadIdx.x; item < end; item += kBlock) {
    const T x = ra[item];
    sum += kSquare ? dot_of(x, x) : dot_of(x, rb[item]);
  }
  sum = group_sum<kBlock>(sum, warp_sums);
  if (threadIdx.x == 0) partial[row * chunks + chunk] = sum;
}

struct FinalizeArgs {
  float* per_channel_out;  // sum, norm or dg
  float* c1;
  float* c2;
  const float* partial;
  const float* g;
  const float* norm;
  int64_t channels, splits, per_split;
  float eps;
};

// One warp per channel adds its splits * per_split partials in a fixed order.
template <Finish kFinish>
__global__ void __launch_bounds__(kBlock) weightnorm_finalize_kernel(FinalizeArgs args) {
  const int64_t k = (int64_t(blockIdx.x) * kBlock + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t terms = args.splits * args.per_split;
  float sum = 0.0f;
  if (k < args.channels) {
    for (int64_t t = lane; t < terms; t += kWarp) {
      const int64_t split = t / args.per_split, i = t % args.per_split;
      sum += args.partial[(split * args.channels + k) * args.per_split + i];
    }
  }
  sum = group_sum<kWarp>(sum, nullptr);
  if (k >= args.channels || lane != 0) return;
  if constexpr (kFinish == Finish::kSum) {
    args.per_channel_out[k] = sum;
  } else {
    const Coefficients coef = kFinish == Finish::kForward
                                  ? forward_coefficients(sum, args.g[k], args.eps)
                                  : backward_coefficients(sum, args.g[k], args.norm[k], args.eps);
    args.per_channel_out[k] = coef.per_channel;
    args.c1[k] = coef.c1;
    if (args.c2) args.c2[k] = coef.c2;
  }
}

// out = c1[k] * a (forward) or c1[k] * a - c2[k] * b (backward) for the channel k of each element.
// T = float4 needs inner % 4 == 0 (the 4 floats then share one channel); Index is 32-bit when it can be, because
// the channel of an element costs two divisions.
template <typename T, typename Index, Pass kPass>
__global__ void __launch_bounds__(kBlock)
    channel_apply_kernel(float* out, const float* a, const float* b, const float* c1, const float* c2, Index count,
                         Index channels, Index inner) {
  constexpr int kFloatsPerItem = sizeof(T) / sizeof(float);
  const Index items = count / kFloatsPerItem;
  const T* a_items = reinterpret_cast<const T*>(a);
  const T* b_items = reinterpret_cast<const T*>(b);
  T* out_items = reinterpret_cast<T*>(out);
  for (Index item = Index(blockIdx.x) * kBlock + threadIdx.x; item < items; item += Index(gridDim.x) * kBlock) {
    const Index k = (item * kFloatsPerItem / inner) % channels;
    if constexpr (kPass == Pass::kBackward) {
      out_items[item] = combined(a_items[item], b_items[item], c1[k], c2[k]);
    } else {
      out_items[item] = scaled(a_items[item], c1[k]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kBlock) subtract_kernel(float* out, const float* a, const float* b, int64_t items) {
  const T* a_items = reinterpret_cast<const T*>(a);
  const T* b_items = reinterpret_cast<const T*>(b);
  T* out_items = reinterpret_cast<T*>(out);
  for (int64_t item = int64_t(blockIdx.x) * kBlock + threadIdx.x; item < items; item += int64_t(gridDim.x) * kBlock)
    out_items[item] = combined(a_items[item], b_items[item], 1.0f, 1.0f);
}

// ---------------------------------------------------------------------------------------------------------------
// Host side.

int multiprocessors() { return std::max(1, device_status().multiprocessors); }

bool aligned16(const void* pointer) { return (reinterpret_cast<uintptr_t>(pointer) & 15) == 0; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Enough blocks to fill the GPU several times over for an elementwise grid-stride kernel, capped by the work.
unsigned elementwise_blocks(int64_t items) {
  const int64_t wanted = ceil_div(std::max<int64_t>(items, 1), kBlock);
  return static_cast<unsigned>(std::min<int64_t>(wanted, int64_t{multiprocessors()} * 8));
}

template <typename T, int kGroup, Pass kPass>
void launch_rows_group(const RowsArgs& args) {
  constexpr int kGroupsPerBlock = kBlock / kGroup;
  const unsigned blocks = static_cast<unsigned>(ceil_div(args.rows, kGroupsPerBlock));
  weightnorm_rows_kernel<T, kGroup, kPass><<<blocks, kBlock, 0, library_stream()>>>(args);
  WN_CUDA_CHECK_LAUNCH();
}

template <typename T, Pass kPass>
void launch_rows_typed(const RowsArgs& args) {
  const int64_t items = args.row_length / static_cast<int64_t>(sizeof(T) / sizeof(float));
  // Rows up to a warp's worth of items: one item per lane, so that a warp's loads are contiguous. Longer rows: enough
  // lanes that the row fits in the register cache.
  const int64_t lanes_wanted = items <= kWarp ? items : ceil_div(items, kRowCache);
  if (lanes_wanted <= 1) return launch_rows_group<T, 1, kPass>(args);
  if (lanes_wanted <= 2) return launch_rows_group<T, 2, kPass>(args);
  if (lanes_wanted <= 4) return launch_rows_group<T, 4, kPass>(args);
  if (lanes_wanted <= 8) return launch_rows_group<T, 8, kPass>(args);
  if (lanes_wanted <= 16) return launch_rows_group<T, 16, kPass>(args);
  if (lanes_wanted <= 32) return launch_rows_group<T, 32, kPass>(args);
  return launch_rows_group<T, kBlock, kPass>(args);
}

template <Pass kPass>
void launch_rows(const RowsArgs& args) {
  const bool vectorized = args.row_length % 4 == 0 && aligned16(args.a) && aligned16(args.b) &&
                          (kPass == Pass::kDot || aligned16(args.out));
  if (vectorized) return launch_rows_typed<float4, kPass>(args);
  launch_rows_typed<float, kPass>(args);
}

// Partial sums of a*b per channel into `partial`, laid out [splits][channels][per_split]; returns (splits, per_split).
struct PartialShape {
  int64_t splits, per_split;
};

int64_t row_chunks(const ChannelLayout& layout) { return ceil_div(layout.inner, kRowChunk); }

bool too_few_long_rows(const ChannelLayout& layout) {
  return layout.outer == 1 && layout.channels < multiprocessors() && layout.inner >= kSplitMinRow;
}

// How the column partial kernel sees an outer > 1 layout: rows of `width` columns. A row of the layout shorter than
// a warp (channels * inner < 32, e.g. the last dim of [.., 3]) would leave most lanes idle, so `repeat` consecutive
// rows are laid side by side into one wide row; its partials are then [splits * repeat][channels][inner], which the
// finalize kernel adds like any other splits.
struct ColumnView {
  int64_t width, rows, repeat, splits;
};

ColumnView column_view(const ChannelLayout& layout) {
  const int64_t row = layout.channels * layout.inner;
  ColumnView view;
  view.repeat = row < kColumnTile ? kColumnTile / row : 1;
  view.width = row * view.repeat;
  view.rows = ceil_div(layout.outer, view.repeat);
  const int64_t tiles = ceil_div(view.width, kColumnTile);
  const int64_t wanted = ceil_div(int64_t{4} * multiprocessors(), tiles);
  view.splits = std::clamp<int64_t>(wanted, 1, std::min<int64_t>(ceil_div(view.rows, kColumnRows), kMaxGridY));
  return view;
}

int64_t partial_floats(const ChannelLayout& layout) {
  if (layout.outer == 1) return layout.channels * row_chunks(layout);
  const ColumnView view = column_view(layout);
  return view.splits * view.width;
}

PartialShape launch_partial(float* partial, const float* a, const float* b, const ChannelLayout& layout) {
  const bool square = a == b;
  if (layout.outer == 1) {
    const int64_t chunks = row_chunks(layout);
    const dim3 grid(static_cast<unsigned>(layout.channels), static_cast<unsigned>(chunks));
    const bool vectorized = layout.inner % 4 == 0 && aligned16(a) && aligned16(b);
    if (vectorized) {
      if (square) channel_row_partial_kernel<float4, true><<<grid, kBlock, 0, library_stream()>>>(partial, a, b, layout.inner);
      else channel_row_partial_kernel<float4, false><<<grid, kBlock, 0, library_stream()>>>(partial, a, b, layout.inner);
    } else {
      if (square) channel_row_partial_kernel<float, true><<<grid, kBlock, 0, library_stream()>>>(partial, a, b, layout.inner);
      else channel_row_partial_kernel<float, false><<<grid, kBlock, 0, library_stream()>>>(partial, a, b, layout.inner);
    }
    WN_CUDA_CHECK_LAUNCH();
    return {1, chunks};
  }
  const ColumnView view = column_view(layout);
  const int64_t rows_per_split = ceil_div(view.rows, view.splits);
  const int64_t total = layout.elements();
  const dim3 grid(static_cast<unsigned>(ceil_div(view.width, kColumnTile)), static_cast<unsigned>(view.splits));
  const dim3 block(kColumnTile, kColumnRows);
  if (square)
    channel_column_partial_kernel<true><<<grid, block, 0, library_stream()>>>(partial, a, b, view.rows, view.width,
                                                                              rows_per_split, total);
  else
    channel_column_partial_kernel<false><<<grid, block, 0, library_stream()>>>(partial, a, b, view.rows, view.width,
                                                                               rows_per_split, total);
  WN_CUDA_CHECK_LAUNCH();
  return {view.splits * view.repeat, layout.inner};
}

template <Finish kFinish>
void launch_finalize(FinalizeArgs args, const PartialShape& shape) {
  args.splits = shape.splits;
  args.per_split = shape.per_split;
  const unsigned blocks = static_cast<unsigned>(ceil_div(args.channels * kWarp, kBlock));
  weightnorm_finalize_kernel<kFinish><<<blocks, kBlock, 0, library_stream()>>>(args);
  WN_CUDA_CHECK_LAUNCH();
}

template <Pass kPass>
void launch_apply(float* out, const float* a, const float* b, const float* c1, const float* c2,
                  const ChannelLayout& layout) {
  const int64_t count = layout.elements();
  const bool vectorized = layout.inner % 4 == 0 && aligned16(out) && aligned16(a) && (!b || aligned16(b));
  const bool small_index = count < (int64_t{1} << 31);
  const unsigned blocks = elementwise_blocks(vectorized ? count / 4 : count);
  cudaStream_t stream = library_stream();
  if (vectorized && small_index)
    channel_apply_kernel<float4, uint32_t, kPass><<<blocks, kBlock, 0, stream>>>(
        out, a, b, c1, c2, uint32_t(count), uint32_t(layout.channels), uint32_t(layout.inner));
  else if (vectorized)
    channel_apply_kernel<float4, uint64_t, kPass><<<blocks, kBlock, 0, stream>>>(
        out, a, b, c1, c2, uint64_t(count), uint64_t(layout.channels), uint64_t(layout.inner));
  else if (small_index)
    channel_apply_kernel<float, uint32_t, kPass><<<blocks, kBlock, 0, stream>>>(
        out, a, b, c1, c2, uint32_t(count), uint32_t(layout.channels), uint32_t(layout.inner));
  else
    channel_apply_kernel<float, uint64_t, kPass><<<blocks, kBlock, 0, stream>>>(
        out, a, b, c1, c2, uint64_t(count), uint64_t(layout.channels), uint64_t(layout.inner));
  WN_CUDA_CHECK_LAUNCH();
}

enum class Route { kRows, kColumns, kSplit };

Route choose_route(const ChannelLayout& layout) {
  const int64_t sms = multiprocessors();
  if (layout.outer == 1) return too_few_long_rows(layout) ? Route::kSplit : Route::kRows;
  if (layout.inner <= kColumnTile) {
    const int64_t tiles = ceil_div(layout.channels, kColumnTile / layout.inner);
    const bool short_columns = layout.outer <= 8 * kColumnRows;
    return tiles >= sms || short_columns ? Route::kColumns : Route::kSplit;
  }
  return Route::kSplit;
}

__global__ void fill_channels_kernel(float* out, float value, int64_t channels) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k < channels) out[k] = value;
}

template <Pass kPass>
void run_fused(float* out, float* per_channel_out, const float* a, const float* b, const float* g, const float* norm,
               const ChannelLayout& layout, float eps) {
  if (layout.channels == 0) return;
  if (layout.elements() == 0) {
    // Channels with nothing to reduce: the norm is the floor eps, and dg = <dw, v>/norm = 0 (as on the CPU).
    const unsigned blocks = static_cast<unsigned>(ceil_div(layout.channels, kBlock));
    fill_channels_kernel<<<blocks, kBlock, 0, library_stream()>>>(per_channel_out, kPass == Pass::kForward ? eps : 0.0f,
                                                                 layout.channels);
    WN_CUDA_CHECK_LAUNCH();
    return;
  }
  switch (choose_route(layout)) {
    case Route::kRows:
      launch_rows<kPass>({out, per_channel_out, a, b, g, norm, layout.channels, layout.inner, eps});
      return;
    case Route::kColumns: {
      const int channels_per_tile = kColumnTile / static_cast<int>(layout.inner);
      const ColumnsArgs args{out, per_channel_out, a, b, g, norm, layout.outer, layout.channels, layout.inner,
                             channels_per_tile, eps};
      const unsigned blocks = static_cast<unsigned>(ceil_div(layout.channels, channels_per_tile));
      weightnorm_columns_kernel<kPass><<<blocks, dim3(kColumnTile, kColumnRows), 0, library_stream()>>>(args);
      WN_CUDA_CHECK_LAUNCH();
      return;
    }
    case Route::kSplit: {
      Scratch partial(partial_floats(layout) * sizeof(float));
      Scratch coefficients(2 * layout.channels * sizeof(float));
      float* c1 = coefficients.floats();
      float* c2 = c1 + layout.channels;
      const PartialShape shape = launch_partial(partial.floats(), a, kPass == Pass::kForward ? a : b, layout);
      constexpr Finish kFinish = kPass == Pass::kForward ? Finish::kForward : Finish::kBackward;
      launch_finalize<kFinish>({per_channel_out, c1, c2, partial.floats(), g, norm, layout.channels, 0, 0, eps}, shape);
      launch_apply<kPass>(out, a, kPass == Pass::kForward ? nullptr : b, c1, c2, layout);
      return;
    }
  }
}

// Coefficients of the unfused passes, one thread per channel.
__global__ void weightnorm_forward_coefficients_kernel(float* norm, float* scale, const float* sum_of_squares,
                                                       const float* g, int64_t channels, float eps) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= channels) return;
  const Coefficients coef = forward_coefficients(sum_of_squares[k], g[k], eps);
  norm[k] = coef.per_channel;
  scale[k] = coef.c1;
}

__global__ void weightnorm_backward_coefficients_kernel(float* dg, float* c1, float* c2, const float* dots,
                                                        const float* g, const float* norm, int64_t channels,
                                                        float eps) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= channels) return;
  const Coefficients coef = backward_coefficients(dots[k], g[k], norm[k], eps);
  dg[k] = coef.per_channel;
  c1[k] = coef.c1;
  c2[k] = coef.c2;
}

__global__ void weightnorm_scale_kernel(float* scale, const float* g, const float* norm, int64_t channels) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k < channels) scale[k] = g[k] / norm[k];
}

unsigned channel_blocks(int64_t channels) { return static_cast<unsigned>(ceil_div(std::max<int64_t>(channels, 1), kBlock)); }

}  // namespace

void weightnorm_forward(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                        float eps) {
  run_fused<Pass::kForward>(w, norm, v, v, g, nullptr, layout, eps);
}

void weightnorm_backward(float* dv, float* dg, const float* dw, const float* v, const float* g, const float* norm,
                         const ChannelLayout& layout, float eps) {
  run_fused<Pass::kBackward>(dv, dg, dw, v, g, norm, layout, eps);
}

void weightnorm_scale(float* scale, const float* g, const float* norm, int64_t channels) {
  if (channels == 0) return;
  weightnorm_scale_kernel<<<channel_blocks(channels), kBlock, 0, library_stream()>>>(scale, g, norm, channels);
  WN_CUDA_CHECK_LAUNCH();
}

void weightnorm_backward_coefficients(float* dg, float* c1, float* c2, const float* dot, const float* g,
                                      const float* norm, int64_t channels, float eps) {
  if (channels == 0) return;
  weightnorm_backward_coefficients_kernel<<<channel_blocks(channels), kBlock, 0, library_stream()>>>(
      dg, c1, c2, dot, g, norm, channels, eps);
  WN_CUDA_CHECK_LAUNCH();
}

void channel_dot(float* out, const float* a, const float* b, const ChannelLayout& layout) {
  if (layout.channels == 0) return;
  if (layout.elements() == 0) return fill_zero(out, layout.channels * sizeof(float));
  if (layout.outer == 1 && !too_few_long_rows(layout)) {
    // Rows that each fit a group of threads: one pass, no partials.
    return launch_rows<Pass::kDot>({nullptr, out, a, b, nullptr, nullptr, layout.channels, layout.inner, 0.0f});
  }
  Scratch partial(partial_floats(layout) * sizeof(float));
  const PartialShape shape = launch_partial(partial.floats(), a, b, layout);
  launch_finalize<Finish::kSum>({out, nullptr, nullptr, partial.floats(), nullptr, nullptr, layout.channels, 0, 0, 0.0f},
                                shape);
}

void channel_scale(float* out, const float* x, const float* scale, const ChannelLayout& layout) {
  if (layout.elements() == 0) return;
  launch_apply<Pass::kForward>(out, x, nullptr, scale, nullptr, layout);
}

void subtract(float* out, const float* a, const float* b, int64_t count) {
  if (count == 0) return;
  const bool vectorized = count % 4 == 0 && aligned16(out) && aligned16(a) && aligned16(b);
  const int64_t items = vectorized ? count / 4 : count;
  if (vectorized) subtract_kernel<float4><<<elementwise_blocks(items), kBlock, 0, library_stream()>>>(out, a, b, items);
  else subtract_kernel<float><<<elementwise_blocks(items), kBlock, 0, library_stream()>>>(out, a, b, items);
  WN_CUDA_CHECK_LAUNCH();
}

void weightnorm_forward_unfused(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                                float eps) {
  if (layout.channels == 0) return;
  Scratch vectors(2 * layout.channels * sizeof(float));
  float* sum_of_squares = vectors.floats();
  float* scale = sum_of_squares + layout.channels;
  channel_dot(sum_of_squares, v, v, layout);
  weightnorm_forward_coefficients_kernel<<<channel_blocks(layout.channels), kBlock, 0, library_stream()>>>(
      norm, scale, sum_of_squares, g, layout.channels, eps);
  WN_CUDA_CHECK_LAUNCH();
  channel_scale(w, v, scale, layout);
}

void weightnorm_backward_unfused(float* dv, float* dg, const float* dw, const float* v, const float* g,
                                 const float* norm, const ChannelLayout& layout, float eps) {
  if (layout.channels == 0) return;
  const int64_t count = layout.elements();
  Scratch vectors(3 * layout.channels * sizeof(float));
  float* dots = vectors.floats();
  float* c1 = dots + layout.channels;
  float* c2 = c1 + layout.channels;
  channel_dot(dots, dw, v, layout);
  weightnorm_backward_coefficients(dg, c1, c2, dots, g, norm, layout.channels, eps);
  Scratch scaled_dw(count * sizeof(float)), scaled_v(count * sizeof(float));
  channel_scale(scaled_dw.floats(), dw, c1, layout);
  channel_scale(scaled_v.floats(), v, c2, layout);
  subtract(dv, scaled_dw.floats(), scaled_v.floats(), count);
}

}  // namespace weightnorm::cuda

// --- contract stubs: filled in by the bfloat16 work (issue 7) -----------------------------------------------------
namespace weightnorm::cuda {
void weightnorm_forward(bfloat16*, float*, const bfloat16*, const float*, const ChannelLayout&, float) {
  throw std::runtime_error("cuda::weightnorm_forward(bfloat16): not implemented yet");
}
void weightnorm_backward(bfloat16*, float*, const bfloat16*, const bfloat16*, const float*, const float*,
                         const ChannelLayout&, float) {
  throw std::runtime_error("cuda::weightnorm_backward(bfloat16): not implemented yet");
}
}  // namespace weightnorm::cuda
