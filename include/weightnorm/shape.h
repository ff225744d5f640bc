// Shared by cpu/ and cuda/: the geometry of the shape ops' kernels (include/weightnorm/ops/shape.inc).
//
// Every copy-like shape op (transpose, permute, contiguous, slice with a step, narrow, split, chunk, flip, concat,
// stack and their backwards) is one strided copy: walk an index space `sizes`, read the source element at
// in_offset + sum(i[d] * in_strides[d]) and write it at out_offset + sum(i[d] * out_strides[d]). Strides count
// elements and may be negative (flip) or zero; elements are moved as raw bytes, so one kernel serves every dtype.
// The binding merges dims that walk contiguously in both tensors and drops size-1 dims before it builds one, so
// kMaxShapeRank bounds the dims that remain, not the tensors' rank.
#pragma once
#include <cstdint>
#include <stdexcept>

#include "weightnorm/host_device.h"

namespace weightnorm {

constexpr int kMaxShapeRank = 8;

struct StridedCopy {
  int rank = 0;  // 0: a single element
  int64_t sizes[kMaxShapeRank] = {};
  int64_t in_strides[kMaxShapeRank] = {};
  int64_t out_strides[kMaxShapeRank] = {};
  int64_t in_offset = 0;
  int64_t out_offset = 0;
  int element_bytes = 4;  // 1, 2, 4 or 8

  int64_t elements() const {
    int64_t count = 1;
    for (int d = 0; d < rank; ++d) count *= sizes[d];
    return count;
  }
};

// Where a position of a strided copy's walk starts in x (in) and in out.
struct CopyOffsets {
  int64_t in;
  int64_t out;
};

// The offsets of element `index` of a row-major walk over the copy's dims [0, end) with dim `skip` left out (-1:
// none): a whole walk (end = rank), the rows of the last dim (end = rank - 1), or the planes of a tiled copy.
WN_HOST_DEVICE CopyOffsets copy_offsets(const StridedCopy& copy, int end, int skip, int64_t index) {
  CopyOffsets at{copy.in_offset, copy.out_offset};
  for (int d = end - 1; d >= 0; --d) {
    if (d == skip) continue;
    const int64_t i = index % copy.sizes[d];
    index /= copy.sizes[d];
    at.in += i * copy.in_strides[d];
    at.out += i * copy.out_strides[d];
  }
  return at;
}

// A transpose-like copy (the walk's last dim contiguous in out but strided in x, a dim `a` contiguous in x, both
// at least 8 long) is copied in tiles of the (a, last) plane, so that reads and writes both go along contiguous
// memory; this is that a, or -1 when the copy is not transpose-like.
inline int tiled_dim(const StridedCopy& copy) {
  const int last = copy.rank - 1;
  if (copy.rank < 2 || copy.in_strides[last] == 1 || copy.out_strides[last] != 1 || copy.sizes[last] < 8) return -1;
  for (int a = 0; a < last; ++a)
    if (copy.in_strides[a] == 1 && copy.sizes[a] >= 8) return a;
  return -1;
}

// The unsigned integer an element of kBytes bytes is moved as: the shape kernels copy raw bits, whatever the dtype.
// (8 bytes: unsigned long long, the 64-bit type CUDA's intrinsics are declared for.)
template <int kBytes> struct RawElement;
template <> struct RawElement<1> { using type = uint8_t; };
template <> struct RawElement<2> { using type = uint16_t; };
template <> struct RawElement<4> { using type = uint32_t; };
template <> struct RawElement<8> { using type = unsigned long long; };

// Calls body(RawElement<element_bytes>{}) (host code: the kernels are instantiated once per element size, and the
// caller takes the type as typename decltype(element)::type).
template <class Body>
void by_element_size(int element_bytes, Body&& body) {
  switch (element_bytes) {
    case 1: return body(RawElement<1>{});
    case 2: return body(RawElement<2>{});
    case 4: return body(RawElement<4>{});
    case 8: return body(RawElement<8>{});
    default: throw std::invalid_argument("shape kernels: element size must be 1, 2, 4 or 8 bytes");
  }
}

// index_select and its backward, index_add, on x seen as [outer, dim_size, inner] (dim the indexed axis) and the
// result as [outer, count, inner]: out[o, j, r] = x[o, index[j], r].
struct IndexLayout {
  int64_t outer = 1;
  int64_t dim_size = 1;
  int64_t count = 0;  // the number of indices
  int64_t inner = 1;
};

// gather and scatter_add along `dim`, as torch.gather / torch.scatter_add: the index space is the index tensor's
// shape (contiguous); element i reads or writes x at sum over d != dim of i[d] * x_strides[d] plus
// index[i] * x_strides[dim], and scatter_add reads src at sum of i[d] * src_strides[d] (src may be larger than index
// in every dim). All strides are those of contiguous tensors, in elements.
struct GatherLayout {
  int rank = 1;
  int dim = 0;
  int64_t index_sizes[kMaxShapeRank] = {};
  int64_t x_strides[kMaxShapeRank] = {};
  int64_t src_strides[kMaxShapeRank] = {};
  int64_t x_dim_size = 0;

  int64_t elements() const {
    int64_t count = 1;
    for (int d = 0; d < rank; ++d) count *= index_sizes[d];
    return count;
  }
};

}  // namespace weightnorm
