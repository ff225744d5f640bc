// GEMM with a fused epilogue (CUDA). Mirrors cpu/gemm.h op by op. All pointers are device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm::cuda {

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

// The float32 GEMM's arithmetic, like torch.backends.cuda.matmul.allow_tf32: kFloat32 (the default) multiplies in
// full float32 (SIMT kernel); kTensorFloat32 rounds the operands to TF32 (10-bit significand) and multiplies on the
// tensor cores (sm_80 and newer), accumulating in float32. Process-wide; bfloat16 GEMMs always use tensor cores.
enum class GemmPrecision { kFloat32, kTensorFloat32 };
void set_gemm_precision(GemmPrecision precision);
GemmPrecision gemm_precision();

// Which implementation the float32 gemm() uses now: "simt" (the hand-written FP32 shared-memory kernel), or with
// kTensorFloat32 "tf32-wgmma" (Hopper wgmma + TMA, on sm_90 after its self-check passed; mma.sync still runs the
// shapes it does not take: k not a multiple of 4, misaligned operands, small transposed problems) or "tf32-mma".
// On an sm_90 device the first call with kTensorFloat32 may run the wgmma self-check (see below).
const char* gemm_backend();

// The Hopper tensor-core kernels' state, for backend reports: "wgmma: self-check passed (tf32, bf16)",
// "wgmma: disabled: <reason>", "wgmma: not an sm_90 device (sm_86)" or "wgmma: no usable CUDA device". On an sm_90
// device the first call runs the self-checks (a few small GEMMs against exact host results, once per process);
// a kernel that fails its check is never used in this process.
const char* gemm_tensor_core_status();

// Tests and benchmarks: which tensor-core kernel family tensor-core gemm() calls may use. kAuto (the default): wgmma
// where it passed its self-check and the shape suits it, mma.sync otherwise. kMmaSync: mma.sync only. kWgmma: wgmma
// whenever it can run at all, small transposed problems included (still mma.sync where it cannot).
enum class GemmTensorCoreKernel { kAuto, kMmaSync, kWgmma };
void set_gemm_tensor_core_kernel(GemmTensorCoreKernel kernel);
// The kernel the last tensor-core gemm() ran: "wgmma", "wgmma (after transposing an operand)", "mma.sync", or ""
// before the first.
const char* gemm_last_tensor_core_kernel();

}  // namespace weightnorm::cuda
