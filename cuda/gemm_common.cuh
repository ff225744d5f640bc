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

}  // namespace weightnorm::cuda
