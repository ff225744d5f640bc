// The GEMM family's plain data, shared by cpu/gemm.h and cuda/gemm.cuh (their entry points: ops/gemm.inc). Plain
// data only (no host-only types), so that nvcc compiles it for device code as well as g++ for the host.
#pragma once
#include <cstdint>
#include <stdexcept>

#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm {

// The shape of one gemm() call, out[m, n] = op(a) op(b), all row-major: op(a) is [m, k] (a is [m, k], or [k, m]
// when transpose_a), op(b) is [k, n] (b is [k, n], or [n, k] when transpose_b). Named fields rather than five
// positional scalars, so a call site says which operand is transposed: GemmShape{m, n, k}.transposing_b().
struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
  bool transpose_a = false;
  bool transpose_b = false;
  constexpr GemmShape transposing_a() const {
    GemmShape shape = *this;
    shape.transpose_a = true;
    return shape;
  }
  constexpr GemmShape transposing_b() const {
    GemmShape shape = *this;
    shape.transpose_b = true;
    return shape;
  }
};

// How every backend's gemm() starts: a negative size is an error, and with m or n zero there is nothing to write
// (true: return at once).
inline bool gemm_writes_nothing(const GemmShape& shape) {
  if (shape.m < 0 || shape.n < 0 || shape.k < 0) throw std::invalid_argument("gemm: negative size");
  return shape.m == 0 || shape.n == 0;
}

// What happens to each output element after the product, in this order (null pointers skip a step):
//   out[i,j] = acc[i,j] * row_scale[i] * column_scale[j] + row_bias[i] + column_bias[j]
//              - subtract_coefficient[i] * subtract_matrix[i,j] + beta * out[i,j]
// The subtraction happens when subtract_matrix is set (a null subtract_coefficient counts as 1). With beta == 0
// out is not read (it may hold garbage or NaN), as in BLAS.
// Weight-normalized Linear forward: column_scale = g/|v|, column_bias = b (w is never materialized).
// Its v gradient: row_scale = g/|v|, subtract_coefficient = g*dg/|v|^2, subtract_matrix = v.
// Conv: row_bias = b. Gradient accumulation: beta = 1.
// T is the element type of out (float or bfloat16); the per-row and per-column vectors are always float32.
template <typename T>
struct GemmEpilogueOf {
  const float* row_scale = nullptr;
  const float* column_scale = nullptr;
  const float* row_bias = nullptr;
  const float* column_bias = nullptr;
  const float* subtract_coefficient = nullptr;
  const T* subtract_matrix = nullptr;  // [m, n], row-major like out
  float beta = 0.0f;
  // If set, the raw product acc[i,j] (before any epilogue step) is also stored here, [m, n] row-major: the
  // weight-normalized Linear keeps t = x·vᵀ for its backward while the same GEMM writes y = s ⊙ t + b.
  T* raw_out = nullptr;
};
using GemmEpilogue = GemmEpilogueOf<float>;
using GemmEpilogueBf16 = GemmEpilogueOf<bfloat16>;

// The epilogue of a product by a layer matrix stored as [outputs, inputs] (x · wᵀ): the matrix's per-row scale s
// (null: a plain w; with weight norm s = g/|v| and the product runs on v) on the output's columns, then the bias,
// then beta · out.
inline GemmEpilogue layer_product_epilogue(const float* scale, const float* column_bias, float beta = 0.0f) {
  GemmEpilogue epilogue;
  epilogue.column_scale = scale;
  epilogue.column_bias = column_bias;
  epilogue.beta = beta;
  return epilogue;
}

// out += the product (beta = 1, nothing else): gradient and projection accumulation.
inline GemmEpilogue accumulating_epilogue() { return layer_product_epilogue(nullptr, nullptr, 1.0f); }

}  // namespace weightnorm
