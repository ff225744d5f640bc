// CPU shape kernels (see shape.h): the strided copy behind every copy-like shape op, the index check, and the index
// ops. Elements move as raw bytes of their size (one instantiation per size), so every dtype shares them. The sums
// (index_add, scatter_add) give each output element's terms in a fixed order, whatever the thread count.
#include "shape.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "weightnorm.h"

namespace weightnorm::cpu {
namespace {

// Below this many elements one thread is faster than waking the others.
constexpr int64_t kParallelMinElements = int64_t{1} << 15;

bool parallel_for(int64_t elements) { return elements >= kParallelMinElements && num_threads() > 1; }

// A transpose-like copy: the walk's last dim is contiguous in out but strided in x, while dim `a` is contiguous in
// x. Walking rows of the last dim would read one element per cache line; instead the (a, last) plane is copied in
// kTile x kTile tiles, whose source lines stay in cache while the tile's output rows are written.
template <class T>
void tiled_copy(T* out, const T* x, const StridedCopy& copy, int a) {
  constexpr int64_t kTile = 32;
  const int last = copy.rank - 1;
  const int64_t rows = copy.sizes[a], columns = copy.sizes[last];
  const int64_t row_tiles = (rows + kTile - 1) / kTile, column_tiles = (columns + kTile - 1) / kTile;
  int64_t planes = 1;  // every combination of the other dims
  for (int d = 0; d < last; ++d)
    if (d != a) planes *= copy.sizes[d];
  const int64_t units = planes * row_tiles * column_tiles;
  const int64_t in_row = copy.in_strides[a], in_column = copy.in_strides[last];
  const int64_t out_row = copy.out_strides[a], out_column = copy.out_strides[last];
  parallel_region(parallel_for(copy.elements()), num_threads(), [&] {
    for (const int64_t unit : team_static(0, units)) {
      const int64_t column_tile = unit % column_tiles, row_tile = (unit / column_tiles) % row_tiles;
      const CopyOffsets plane = copy_offsets(copy, last, a, unit / (column_tiles * row_tiles));
      const int64_t row_end = std::min(rows, (row_tile + 1) * kTile);
      const int64_t column_begin = column_tile * kTile, column_end = std::min(columns, column_begin + kTile);
      for (int64_t r = row_tile * kTile; r < row_end; ++r)
        for (int64_t c = column_begin; c < column_end; ++c)
          out[plane.out + r * out_row + c * out_column] = x[plane.in + r * in_row + c * in_column];
    }
  });
}

// The copy walks rows of the last dim; each row's start is decoded from its row number (rows are independent, so
// they are spread over the threads in any order).
template <class T>
void strided_copy_typed(T* out, const T* x, const StridedCopy& copy) {
  if (copy.rank == 0) {
    out[copy.out_offset] = x[copy.in_offset];
    return;
  }
  const int last = copy.rank - 1;
  if (copy.elements() == 0) return;
  if (const int a = tiled_dim(copy); a >= 0) return tiled_copy(out, x, copy, a);
  const int64_t row_length = copy.sizes[last];
  const int64_t total = copy.elements();
  if (total == 0) return;
  const int64_t rows = total / row_length;
  const int64_t in_step = copy.in_strides[last], out_step = copy.out_strides[last];
  parallel_region(parallel_for(total), num_threads(), [&] {
    for (const int64_t row : team_static(0, rows)) {
      const CopyOffsets at = copy_offsets(copy, last, -1, row);
      if (in_step == 1 && out_step == 1) {
        std::memcpy(out + at.out, x + at.in, static_cast<size_t>(row_length) * sizeof(T));
      } else {
        for (int64_t k = 0; k < row_length; ++k) out[at.out + k * out_step] = x[at.in + k * in_step];
      }
    }
  });
}

// Contiguous strides of the index tensor (its shape is the gather's index space).
void index_strides(const GatherLayout& layout, int64_t* strides) {
  int64_t stride = 1;
  for (int d = layout.rank - 1; d >= 0; --d) {
    strides[d] = stride;
    stride *= layout.index_sizes[d];
  }
}

}  // namespace

void strided_copy(void* out, const void* x, const StridedCopy& copy) {
  by_element_size(copy.element_bytes, [&](auto element) {
    using T = typename decltype(element)::type;
    strided_copy_typed(static_cast<T*>(out), static_cast<const T*>(x), copy);
  });
}

int64_t first_index_out_of_range(const int32_t* index, int64_t count, int64_t limit) {
  for (int64_t i = 0; i < count; ++i)
    if (index[i] < 0 || index[i] >= limit) return i;
  return -1;
}

void index_select(void* out, const void* x, const int32_t* index, const IndexLayout& layout, int element_bytes) {
  const int64_t rows = layout.outer * layout.count;
  const size_t row_bytes = static_cast<size_t>(layout.inner) * static_cast<size_t>(element_bytes);
  if (rows == 0 || row_bytes == 0) return;
  auto* destination = static_cast<unsigned char*>(out);
  const auto* source = static_cast<const unsigned char*>(x);
  parallel_region(parallel_for(rows * layout.inner), num_threads(), [&] {
    for (const int64_t row : team_static(0, rows)) {
      const int64_t o = row / layout.count, j = row % layout.count;
      const int64_t from = o * layout.dim_size + index[j];
      std::memcpy(destination + static_cast<size_t>(row) * row_bytes, source + static_cast<size_t>(from) * row_bytes, row_bytes);
    }
  });
}

void index_add(float* out, const float* src, const int32_t* index, const IndexLayout& layout) {
  // A unit is one outer slice and a fixed run of inner positions; it adds every j in increasing order, so each
  // output element sees its terms in the same order for any thread count. Units write disjoint elements.
  constexpr int64_t kInnerChunk = 1024;
  const int64_t chunks = (layout.inner + kInnerChunk - 1) / kInnerChunk;
  const int64_t units = layout.outer * chunks;
  if (units == 0 || layout.count == 0) return;
  parallel_region(parallel_for(layout.outer * layout.count * layout.inner), num_threads(), [&] {
    for (const int64_t unit : team_static(0, units)) {
      const int64_t o = unit / chunks;
      const int64_t begin = (unit % chunks) * kInnerChunk, end = std::min(layout.inner, begin + kInnerChunk);
      for (int64_t j = 0; j < layout.count; ++j) {
        float* row = out + (o * layout.dim_size + index[j]) * layout.inner;
        const float* from = src + (o * layout.count + j) * layout.inner;
        for (int64_t r = begin; r < end; ++r) row[r] += from[r];
      }
    }
  });
}

void gather(void* out, const void* x, const int32_t* index, const GatherLayout& layout, int element_bytes) {
  const int64_t total = layout.elements();
  if (total == 0) return;
  const int last = layout.rank - 1;
  const int64_t row_length = layout.index_sizes[last];
  const int64_t rows = total / row_length;
  const int64_t step = last == layout.dim ? 0 : layout.x_strides[last];
  const int64_t dim_stride = layout.x_strides[layout.dim];
  by_element_size(element_bytes, [&](auto element) {
    using T = typename decltype(element)::type;
    T* destination = static_cast<T*>(out);
    const T* source = static_cast<const T*>(x);
    parallel_region(parallel_for(total), num_threads(), [&] {
      for (const int64_t row : team_static(0, rows)) {
        int64_t base = 0, rest = row;
        for (int d = last - 1; d >= 0; --d) {
          const int64_t i = rest % layout.index_sizes[d];
          rest /= layout.index_sizes[d];
          if (d != layout.dim) base += i * layout.x_strides[d];
        }
        const int64_t first = row * row_length;
        for (int64_t k = 0; k < row_length; ++k)
          destination[first + k] = source[base + k * step + int64_t{index[first + k]} * dim_stride];
      }
    });
  });
}

void scatter_add(float* out, const float* src, const int32_t* index, const GatherLayout& layout) {
  // A line is every index position with the same coordinates outside `dim`; it writes one line of out (the
  // coordinates outside dim are kept), so lines run in parallel, and each adds its terms in increasing i[dim].
  const int64_t total = layout.elements();
  if (total == 0) return;
  int64_t strides[kMaxShapeRank];
  index_strides(layout, strides);
  const int64_t length = layout.index_sizes[layout.dim];
  const int64_t lines = total / length;
  parallel_region(parallel_for(total), num_threads(), [&] {
    for (const int64_t line : team_static(0, lines)) {
      int64_t position = 0, source = 0, target = 0, rest = line;
      for (int d = layout.rank - 1; d >= 0; --d) {
        if (d == layout.dim) continue;
        const int64_t i = rest % layout.index_sizes[d];
        rest /= layout.index_sizes[d];
        position += i * strides[d];
        source += i * layout.src_strides[d];
        target += i * layout.x_strides[d];
      }
      for (int64_t k = 0; k < length; ++k) {
        const int64_t at = position + k * strides[layout.dim];
        out[target + int64_t{index[at]} * layout.x_strides[layout.dim]] += src[source + k * layout.src_strides[layout.dim]];
      }
    }
  });
}

}  // namespace weightnorm::cpu
