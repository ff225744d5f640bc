// GEMM with a fused epilogue (CUDA). The epilogue and the gemm() overloads are declared once for both backends in
// include/weightnorm/gemm.h and ops/gemm.inc; below, what only CUDA has. All pointers are device memory; work runs
// on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/gemm.h"

namespace weightnorm::cuda {

#include "weightnorm/ops/gemm.inc"

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
