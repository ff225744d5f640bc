// GEMM with a fused epilogue (CPU). Mirrors cuda/gemm.cuh op by op.
#pragma once
#include <cstdint>
#include <string>

#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm::cpu {

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

// out[m, n] = op(a) op(b) (+ epilogue), all row-major. op(a) is [m, k]: a is [m, k], or [k, m] when transpose_a.
// op(b) is [k, n]: b is [k, n], or [n, k] when transpose_b.
void gemm(float* out, const float* a, const float* b, int64_t m, int64_t n, int64_t k, bool transpose_a,
          bool transpose_b, const GemmEpilogue& epilogue);
// bfloat16 operands and output, float32 accumulation; the epilogue runs in float32 on the accumulator and the
// result is rounded once to bfloat16 (beta reads the old bfloat16 out).
void gemm(bfloat16* out, const bfloat16* a, const bfloat16* b, int64_t m, int64_t n, int64_t k, bool transpose_a,
          bool transpose_b, const GemmEpilogueBf16& epilogue);

// Both implementations give bitwise identical results for any thread count (each output element is computed by
// one thread in an order fixed by the shape alone), and run to run.
//
// Which implementation gemm() uses now: "openblas" (OpenBLAS's cblas_sgemm, loaded at run time, on fixed output
// tiles, plus the epilogue) or "blocked" (the hand-written packed, cache-blocked kernel). The first call loads
// OpenBLAS if it can: WEIGHTNORM_OPENBLAS=<path> loads that file only, WEIGHTNORM_OPENBLAS=0 never loads it;
// otherwise /usr/lib/<multiarch>/openblas-openmp/libopenblas.so.0, then libopenblas.so.0 from the library search
// path, then /usr/lib/<multiarch>/openblas-pthread/libopenblas.so.0. Builds with WEIGHTNORM_USE_BLAS=OFF never
// load it. When none loads, the blocked kernel is used.
const char* gemm_backend();
// What backend() reports: e.g. "OpenBLAS (OpenBLAS 0.3.21 ... ; loaded at run time from <path>; 1 thread per
// tile)" or "blocked (hand-written): OpenBLAS not found (<why, per candidate>)".
std::string gemm_backend_description();
// CPU only. false forces the blocked kernel even where OpenBLAS is loaded (tests run both); true (the default)
// uses OpenBLAS when it could be loaded.
void set_gemm_prefer_blas(bool prefer);
// CPU only. The instruction set the blocked kernel's micro-kernel was compiled for and picked at run time from
// what this CPU supports: "avx512", "avx2" (with FMA) or "sse2" (x86-64 baseline; "generic" elsewhere).
const char* gemm_blocked_isa();
// CPU only, for tests and benchmarks: force one micro-kernel ("avx512", "avx2", "sse2"), or nullptr / "" for the
// automatic choice. Returns false (and changes nothing) when this CPU or build cannot run that one.
bool set_gemm_blocked_isa(const char* isa);

}  // namespace weightnorm::cpu
