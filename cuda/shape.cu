// CUDA shape kernels (see shape.cuh), the same ops as cpu/shape.cc: the strided copy behind every copy-like shape
// op, the index check, and the index ops. One thread per output element in grid-stride loops, each decoding its
// multi-index; elements move as raw integers of their size, so every dtype shares the kernels. The writes of the
// copies are contiguous (or as the output's strides say); reads follow the source's strides, except that a
// transpose-like walk goes through shared-memory tiles so that both its reads and its writes are coalesced. The
// sums index_add and scatter_add use atomicAdd, so the order in which an element's terms are added, and its last
// bits, can vary run to run (the CPU's are fixed).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "check.cuh"
#include "launch.cuh"
#include "runtime.cuh"
#include "shape.cuh"

namespace weightnorm::cuda {
namespace {

constexpr int kBlock = 256;


template <class T>
__global__ void __launch_bounds__(kBlock) strided_copy_kernel(T* out, const T* x, StridedCopy copy, int64_t total) {
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < total; e += int64_t(gridDim.x) * kBlock) {
    const CopyOffsets at = copy_offsets(copy, copy.rank, -1, e);
    out[at.out] = x[at.in];
  }
}

// A transpose-like copy (the walk's last dim contiguous in out, strided in x; dim `a` contiguous in x), as the CPU
// does it in tiles: a block stages a kTile x kTile tile of the (a, last) plane in shared memory, reading it along a
// (coalesced in x) and writing it along last (coalesced in out). The tile's rows are padded by one element so that
// the column-wise accesses fall in different banks. Units (plane, row tile, column tile) are spread grid-stride;
// every thread of a block runs the same units, so the barriers are reached by all of them.
constexpr int kTile = 32;
constexpr int kTileRows = kBlock / kTile;  // threadIdx.y range: each thread moves kTile / kTileRows elements

template <class T>
__global__ void __launch_bounds__(kBlock) tiled_copy_kernel(T* out, const T* x, StridedCopy copy, int a, int64_t units) {
  __shared__ T tile[kTile][kTile + 1];
  const int last = copy.rank - 1;
  const int64_t rows = copy.sizes[a], columns = copy.sizes[last];
  const int64_t row_tiles = (rows + kTile - 1) / kTile, column_tiles = (columns + kTile - 1) / kTile;
  for (int64_t unit = blockIdx.x; unit < units; unit += gridDim.x) {
    const int64_t column_tile = unit % column_tiles, row_tile = (unit / column_tiles) % row_tiles;
    const CopyOffsets plane = copy_offsets(copy, last, a, unit / (column_tiles * row_tiles));
    const int64_t row0 = row_tile * kTile, column0 = column_tile * kTile;
    // Load: threadIdx.x runs along a (x's contiguous dim).
    const int64_t load_row = row0 + threadIdx.x;
    for (int c = threadIdx.y; c < kTile; c += kTileRows) {
      const int64_t column = column0 + c;
      if (load_row < rows && column < columns)
        tile[c][threadIdx.x] = x[plane.in + load_row * copy.in_strides[a] + column * copy.in_strides[last]];
    }
    __syncthreads();
    // Store: threadIdx.x runs along last (out's contiguous dim).
    const int64_t store_column = column0 + threadIdx.x;
    for (int r = threadIdx.y; r < kTile; r += kTileRows) {
      const int64_t row = row0 + r;
      if (row < rows && store_column < columns)
        out[plane.out + row * copy.out_strides[a] + store_column * copy.out_strides[last]] = tile[threadIdx.x][r];
    }
    __syncthreads();  // the next unit overwrites the tile
  }
}

// The smallest position whose value is outside [0, limit), by atomicMin on the position.
__global__ void __launch_bounds__(kBlock)
    first_out_of_range_kernel(unsigned long long* first, const int32_t* index, int64_t count, int64_t limit) {
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < count; i += int64_t(gridDim.x) * kBlock) {
    const int64_t value = index[i];
    if (value < 0 || value >= limit) atomicMin(first, static_cast<unsigned long long>(i));
  }
}

template <class T>
__global__ void __launch_bounds__(kBlock)
    index_select_kernel(T* out, const T* x, const int32_t* index, IndexLayout layout, int64_t total) {
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < total; e += int64_t(gridDim.x) * kBlock) {
    const int64_t r = e % layout.inner, row = e / layout.inner;
    const int64_t j = row % layout.count, o = row / layout.count;
    out[e] = x[(o * layout.dim_size + index[j]) * layout.inner + r];
  }
}

__global__ void __launch_bounds__(kBlock)
    index_add_kernel(float* out, const float* src, const int32_t* index, IndexLayout layout, int64_t total) {
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < total; e += int64_t(gridDim.x) * kBlock) {
    const int64_t r = e % layout.inner, row = e / layout.inner;
    const int64_t j = row % layout.count, o = row / layout.count;
    atomicAdd(out + (o * layout.dim_size + index[j]) * layout.inner + r, src[e]);
  }
}

// x's offset for index position e (the index's contiguous shape), and src's for scatter_add.
struct GatherOffsets {
  int64_t x;
  int64_t src;
};

__device__ GatherOffsets gather_offsets(const GatherLayout& layout, const int32_t* index, int64_t e) {
  GatherOffsets at{0, 0};
  int64_t rest = e;
  for (int d = layout.rank - 1; d >= 0; --d) {
    const int64_t i = rest % layout.index_sizes[d];
    rest /= layout.index_sizes[d];
    if (d != layout.dim) at.x += i * layout.x_strides[d];
    at.src += i * layout.src_strides[d];
  }
  at.x += int64_t(index[e]) * layout.x_strides[layout.dim];
  return at;
}

template <class T>
__global__ void __launch_bounds__(kBlock)
    gather_kernel(T* out, const T* x, const int32_t* index, GatherLayout layout, int64_t total) {
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < total; e += int64_t(gridDim.x) * kBlock)
    out[e] = x[gather_offsets(layout, index, e).x];
}

__global__ void __launch_bounds__(kBlock)
    scatter_add_kernel(float* out, const float* src, const int32_t* index, GatherLayout layout, int64_t total) {
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < total; e += int64_t(gridDim.x) * kBlock) {
    const GatherOffsets at = gather_offsets(layout, index, e);
    atomicAdd(out + at.x, src[at.src]);
  }
}

}  // namespace

void strided_copy(void* out, const void* x, const StridedCopy& copy) {
  const int64_t total = copy.elements();
  if (total == 0) return;
  const int a = tiled_dim(copy);
  by_element_size(copy.element_bytes, [&](auto element) {
    using T = typename decltype(element)::type;
    if (a >= 0) {
      const int last = copy.rank - 1;
      const int64_t tiles = ((copy.sizes[a] + kTile - 1) / kTile) * ((copy.sizes[last] + kTile - 1) / kTile);
      const int64_t units = total / (copy.sizes[a] * copy.sizes[last]) * tiles;
      const unsigned blocks = grid_for(units, 1, 16);  // one block per unit
      tiled_copy_kernel<T><<<blocks, dim3(kTile, kTileRows), 0, library_stream()>>>(static_cast<T*>(out),
                                                                                   static_cast<const T*>(x), copy, a, units);
    } else {
      strided_copy_kernel<T><<<grid_for(total, kBlock), kBlock, 0, library_stream()>>>(
          static_cast<T*>(out), static_cast<const T*>(x), copy, total);
    }
  });
  WN_CUDA_CHECK_LAUNCH();
}

int64_t first_index_out_of_range(const int32_t* index, int64_t count, int64_t limit) {
  if (count == 0) return -1;
  Scratch scratch(sizeof(unsigned long long));
  auto* first = reinterpret_cast<unsigned long long*>(scratch.floats());
  WN_CUDA_CHECK(cudaMemsetAsync(first, 0xff, sizeof(unsigned long long), library_stream()));  // "none found"
  first_out_of_range_kernel<<<grid_for(count, kBlock), kBlock, 0, library_stream()>>>(first, index, count, limit);
  WN_CUDA_CHECK_LAUNCH();
  unsigned long long position = 0;
  copy_to_host(&position, first, sizeof(position));
  return position == ~0ull ? -1 : static_cast<int64_t>(position);
}

void index_select(void* out, const void* x, const int32_t* index, const IndexLayout& layout, int element_bytes) {
  const int64_t total = layout.outer * layout.count * layout.inner;
  if (total == 0) return;
  by_element_size(element_bytes, [&](auto element) {
    using T = typename decltype(element)::type;
    index_select_kernel<T><<<grid_for(total, kBlock), kBlock, 0, library_stream()>>>(
        static_cast<T*>(out), static_cast<const T*>(x), index, layout, total);
  });
  WN_CUDA_CHECK_LAUNCH();
}

void index_add(float* out, const float* src, const int32_t* index, const IndexLayout& layout) {
  const int64_t total = layout.outer * layout.count * layout.inner;
  if (total == 0) return;
  index_add_kernel<<<grid_for(total, kBlock), kBlock, 0, library_stream()>>>(out, src, index, layout, total);
  WN_CUDA_CHECK_LAUNCH();
}

void gather(void* out, const void* x, const int32_t* index, const GatherLayout& layout, int element_bytes) {
  const int64_t total = layout.elements();
  if (total == 0) return;
  by_element_size(element_bytes, [&](auto element) {
    using T = typename decltype(element)::type;
    gather_kernel<T><<<grid_for(total, kBlock), kBlock, 0, library_stream()>>>(
        static_cast<T*>(out), static_cast<const T*>(x), index, layout, total);
  });
  WN_CUDA_CHECK_LAUNCH();
}

void scatter_add(float* out, const float* src, const int32_t* index, const GatherLayout& layout) {
  const int64_t total = layout.elements();
  if (total == 0) return;
  scatter_add_kernel<<<grid_for(total, kBlock), kBlock, 0, library_stream()>>>(out, src, index, layout, total);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace weightnorm::cuda
