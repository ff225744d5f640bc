// Internal to the GEMM: the Hopper (sm_90a) tensor-core kernels of gemm_wgmma.cu (design in its header). gemm.cu
// decides when to use them, transposes a k-strided operand first, plans the split-k and owns the reduce.
#pragma once
#include <cstdint>

#include "gemm_common.cuh"

namespace weightnorm::cuda {

// A block computes kWgmmaTileM x kWgmmaTileN of out; k advances 128 bytes per pipeline stage (32 floats or 64
// bfloat16), so a split's k range must be a multiple of kWgmmaTileK.
constexpr int kWgmmaTileM = 128, kWgmmaTileN = 256;
template <typename T>
constexpr int kWgmmaTileK = 128 / int(sizeof(T));

// Whether the wgmma kernels may run in this process: a compute capability 9.0 device, the sm_90a code loads, and
// the kernel for T passed its self-check (run on the first call, once per process; on failure it stays disabled).
bool wgmma_enabled_float();
bool wgmma_enabled_bfloat16();
template <typename T>
bool wgmma_enabled() {
  if constexpr (sizeof(T) == 4) return wgmma_enabled_float();
  else return wgmma_enabled_bfloat16();
}
// "wgmma: self-check passed (tf32, bf16)", "wgmma: disabled: <reason>", "wgmma: not an sm_90 device (...)", ...
// Runs the self-checks if they have not run yet.
const char* wgmma_status();

// Shapes the kernels take: k a multiple of 16 bytes (the TMA row stride), every size below 2^31 (TMA coordinates).
template <typename T>
bool wgmma_shape_supported(int64_t m, int64_t n, int64_t k) {
  constexpr int64_t kLimit = int64_t{1} << 31;
  return k % (16 / int64_t(sizeof(T))) == 0 && m < kLimit && n < kLimit && k < kLimit;
}

// One launch over `tiles` output tiles (row-major order of kWgmmaTileM x kWgmmaTileN tiles) and `splits` k ranges
// of args.k_chunk each (a multiple of kWgmmaTileK); with args.partial set, raw sums go there as in launch_gemm_mma.
// Both operands k-contiguous: args.a is [m, k] and args.b is [n, k], row-major, 16-byte aligned, and the shape
// passes wgmma_shape_supported. float: TF32 (TMA rounds the operands to nearest), bfloat16: bf16; float32 sums.
// Returns false, launching nothing, when the driver cannot encode the TMA tensor maps.
bool launch_gemm_wgmma(const GemmArgsOf<float>& args, int64_t tiles, int splits);
bool launch_gemm_wgmma(const GemmArgsOf<bfloat16>& args, int64_t tiles, int splits);

// out[cols, rows] = in[rows, cols]ᵀ (both row-major, device memory, library stream): a k-strided operand becomes
// k-contiguous before the wgmma kernel reads it.
void transpose_for_wgmma(float* out, const float* in, int64_t rows, int64_t cols);
void transpose_for_wgmma(bfloat16* out, const bfloat16* in, int64_t rows, int64_t cols);

}  // namespace weightnorm::cuda
