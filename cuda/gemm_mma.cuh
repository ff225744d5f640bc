// Internal to the GEMM: the tensor-core kernels of gemm_mma.cu (design in gemm.cu's header). gemm.cu plans the
// split-k and calls these; they launch on the library stream.
#pragma once
#include <cstdint>

#include "gemm_common.cuh"

namespace weightnorm::cuda {

// Output tile and k step of the tensor-core kernels: a block computes kMmaTileM x kMmaTileN of out per launch
// tile; k advances 128 bytes of each operand per pipeline stage (32 floats or 64 bfloat16).
constexpr int kMmaTileM = 128, kMmaTileN = 128;
template <typename T>
constexpr int kMmaTileK = 128 / int(sizeof(T));

// One launch over `tiles` output tiles (row-major order of kMmaTileM x kMmaTileN tiles) and `splits` k ranges of
// args.k_chunk each; with args.partial set, each split stores its raw sums there instead of applying the epilogue.
// float: operands rounded to TF32 (cvt.rna), m16n8k8; bfloat16: m16n8k16. Both accumulate in float32.
void launch_gemm_mma(const GemmArgsOf<float>& args, bool transpose_a, bool transpose_b, int64_t tiles, int splits);
void launch_gemm_mma(const GemmArgsOf<bfloat16>& args, bool transpose_a, bool transpose_b, int64_t tiles, int splits);

}  // namespace weightnorm::cuda
