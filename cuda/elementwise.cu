#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "check.cuh"
#include "elementwise.cuh"
#include "runtime.cuh"

namespace weightnorm::cuda {
namespace {

constexpr int kBlock = 256;

// 16-byte loads and stores, grid-stride; the scalar tail (count % 4) is done by the first threads.
__global__ void __launch_bounds__(kBlock) scale_kernel(float* out, const float* x, float alpha, int64_t count) {
  const int64_t vectors = count / 4;
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  const int64_t first = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4* out4 = reinterpret_cast<float4*>(out);
  for (int64_t i = first; i < vectors; i += stride) {
    const float4 v = x4[i];
    out4[i] = make_float4(alpha * v.x, alpha * v.y, alpha * v.z, alpha * v.w);
  }
  for (int64_t i = vectors * 4 + first; i < count; i += stride) out[i] = alpha * x[i];
}

__global__ void __launch_bounds__(kBlock) scale_scalar_kernel(float* out, const float* x, float alpha, int64_t count) {
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < count; i += int64_t(gridDim.x) * kBlock)
    out[i] = alpha * x[i];
}

}  // namespace

void scale(float* out, const float* x, float alpha, int64_t count) {
  if (count == 0) return;
  const int sms = std::max(1, device_status().multiprocessors);
  const int64_t wanted = (count / 4 + kBlock - 1) / kBlock;
  const unsigned blocks = static_cast<unsigned>(std::clamp<int64_t>(wanted, 1, int64_t{sms} * 8));
  const bool aligned = ((reinterpret_cast<uintptr_t>(out) | reinterpret_cast<uintptr_t>(x)) & 15) == 0;
  if (aligned) scale_kernel<<<blocks, kBlock, 0, library_stream()>>>(out, x, alpha, count);
  else scale_scalar_kernel<<<blocks, kBlock, 0, library_stream()>>>(out, x, alpha, count);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace weightnorm::cuda
