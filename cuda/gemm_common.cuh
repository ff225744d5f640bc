// Internal to the GEMM kernels (gemm.cu, gemm_mma.cu): the launch arguments and the epilogue arithmetic that every
// kernel and the split-k reduce share, so that all of them round the same way.
#pragma once
#include <cstdint>

#include "gemm.cuh"

namespace weightnorm::cuda {

// T is the element type of a, b, out, subtract_matrix and raw_out (float or bfloat16).
template <typename T>
struct GemmArgsOf {
  T* out;
  const T* a;
  const T* b;
  int64_t m, n, k;
  GemmEpilogueOf<T> epilogue;
  float* partial;    // split-k: raw partial products [splits, m, n]; nullptr: apply the epilogue and store to out
  int64_t k_chunk;   // k range of one split (a multiple of the kernel's BK)
  bool vector_a;     // op(a)'s contiguous dimension is a multiple of 16 bytes and a is 16-byte aligned
  bool vector_b;
  bool vector_out;   // SIMT: n % 4 == 0 and out (subtract_matrix, raw_out) 16-byte aligned
  bool pair_out;     // tensor cores: n even and out (subtract_matrix, raw_out) aligned to two elements
};
using GemmArgs = GemmArgsOf<float>;

__device__ __forceinline__ float element_to_float(float x) { return x; }
__device__ __forceinline__ float element_to_float(bfloat16 x) { return bfloat16_to_float(x); }
template <typename T>
__device__ __forceinline__ T element_from_float(float x) {
  if constexpr (sizeof(T) == 2) return float_to_bfloat16(x);
  else return x;
}

struct RowTerms {
  float scale, bias, coefficient;
};

template <typename T>
__device__ __forceinline__ RowTerms row_terms(const GemmEpilogueOf<T>& e, int64_t i) {
  return {e.row_scale ? e.row_scale[i] : 1.0f, e.row_bias ? e.row_bias[i] : 0.0f,
          e.subtract_coefficient ? e.subtract_coefficient[i] : 1.0f};
}

// out value of element (i, j) from its product acc, in float32; `subtract` is subtract_matrix[i, j] and
// `previous` out[i, j] (read only when beta != 0), both already widened to float.
template <typename T>
__device__ __forceinline__ float epilogue_value(const GemmEpilogueOf<T>& e, const RowTerms& row, float acc, int64_t j,
                                                float subtract, float previous) {
  float v = acc * row.scale;
  if (e.column_scale) v *= e.column_scale[j];
  if (e.row_bias) v += row.bias;
  if (e.column_bias) v += e.column_bias[j];
  if (e.subtract_matrix) v -= row.coefficient * subtract;
  if (e.beta != 0.0f) v += e.beta * previous;
  return v;
}

// Two consecutive elements (j, j + 1) of one row; `pair`: both exist and one aligned 2-element access is allowed.
template <typename T>
__device__ __forceinline__ void load_two(const T* p, bool pair, bool both, float (&v)[2]) {
  if (pair) {
    if constexpr (sizeof(T) == 4) {
      const float2 x = *reinterpret_cast<const float2*>(p);
      v[0] = x.x;
      v[1] = x.y;
    } else {
      const uint32_t x = *reinterpret_cast<const uint32_t*>(p);
      v[0] = bfloat16_to_float(bfloat16{uint16_t(x & 0xffffu)});
      v[1] = bfloat16_to_float(bfloat16{uint16_t(x >> 16)});
    }
    return;
  }
  v[0] = element_to_float(p[0]);
  v[1] = both ? element_to_float(p[1]) : 0.0f;
}
template <typename T>
__device__ __forceinline__ void store_two(T* p, bool pair, bool both, float v0, float v1) {
  if (pair) {
    if constexpr (sizeof(T) == 4) {
      *reinterpret_cast<float2*>(p) = make_float2(v0, v1);
    } else {
      *reinterpret_cast<uint32_t*>(p) = float_to_bfloat16(v0).bits | uint32_t(float_to_bfloat16(v1).bits) << 16;
    }
    return;
  }
  p[0] = element_from_float<T>(v0);
  if (both) p[1] = element_from_float<T>(v1);
}

// Products acc0, acc1 of out (i, j) and (i, j + 1) (j + 1 may lie beyond n): the epilogue and the stores, or the
// raw partial sums for split-k. Shared by the tensor-core kernels (mma.sync and wgmma), which hold their
// accumulators as pairs of adjacent columns.
template <typename T>
__device__ __forceinline__ void store_products(const GemmArgsOf<T>& args, int64_t i, int64_t j, const RowTerms& row,
                                               float acc0, float acc1, int split) {
  const int64_t n = args.n;
  const bool both = j + 1 < n;
  if (args.partial) {
    // j is even, so with n even the pair is 8-byte aligned in the (aligned) scratch.
    store_two(args.partial + (int64_t(split) * args.m + i) * n + j, both && n % 2 == 0, both, acc0, acc1);
    return;
  }
  const GemmEpilogueOf<T>& e = args.epilogue;
  const int64_t x = i * n + j;
  const bool pair = args.pair_out && both;
  float previous[2] = {0.0f, 0.0f}, subtract[2] = {0.0f, 0.0f};
  if (e.beta != 0.0f) load_two(args.out + x, pair, both, previous);
  if (e.subtract_matrix) load_two(e.subtract_matrix + x, pair, both, subtract);
  if (e.raw_out) store_two(e.raw_out + x, pair, both, acc0, acc1);
  const float v0 = epilogue_value(e, row, acc0, j, subtract[0], previous[0]);
  const float v1 = both ? epilogue_value(e, row, acc1, j + 1, subtract[1], previous[1]) : 0.0f;
  store_two(args.out + x, pair, both, v0, v1);
}

}  // namespace weightnorm::cuda
