// CUDA softmax cross-entropy (see loss.cuh).
// Forward: one warp per row finds the max, sums exp(x - max) (finite for any finite logits), writes the saved
// probs and the row's loss; then one block adds the rows' losses in a fixed order (no atomics) and writes the
// mean. An empty batch gives loss 0. Backward: elementwise, reading the upstream gradient from device memory, so
// nothing waits on the host.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "check.cuh"
#include "loss.cuh"
#include "runtime.cuh"

namespace weightnorm::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int kWarp = 32;
constexpr int kRowsPerBlock = kBlock / kWarp;

__device__ __forceinline__ float warp_max(float value) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

__device__ __forceinline__ float warp_sum(float value) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

__global__ void __launch_bounds__(kBlock)
    softmax_cross_entropy_rows_kernel(float* row_loss, float* probs, const float* logits, const float* labels,
                                      int64_t batch, int64_t classes) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= batch) return;  // the whole warp
  const float* x = logits + row * classes;
  float* p = probs + row * classes;
  float row_max = -INFINITY;
  for (int64_t c = lane; c < classes; c += kWarp) row_max = fmaxf(row_max, x[c]);
  row_max = warp_max(row_max);
  float sum = 0.0f;
  for (int64_t c = lane; c < classes; c += kWarp) sum += expf(x[c] - row_max);
  sum = warp_sum(sum);
  const float inv_sum = 1.0f / sum;
  for (int64_t c = lane; c < classes; c += kWarp) p[c] = expf(x[c] - row_max) * inv_sum;
  if (lane == 0) {
    const int64_t label = static_cast<int64_t>(labels[row]);
    row_loss[row] = logf(sum) - (x[label] - row_max);
  }
}

// One block: thread t adds rows t, t + kBlock, ...; then a fixed tree over the block.
__global__ void __launch_bounds__(kBlock) mean_loss_kernel(float* loss, const float* row_loss, int64_t batch) {
  __shared__ float sums[kBlock];
  float sum = 0.0f;
  for (int64_t row = threadIdx.x; row < batch; row += kBlock) sum += row_loss[row];
  sums[threadIdx.x] = sum;
  __syncthreads();
#pragma unroll
  for (int width = kBlock / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) sums[threadIdx.x] += sums[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) loss[0] = batch > 0 ? sums[0] / static_cast<float>(batch) : 0.0f;
}

__global__ void __launch_bounds__(kBlock)
    softmax_cross_entropy_backward_kernel(float* dlogits, const float* probs, const float* labels, const float* dloss,
                                          int64_t batch, int64_t classes) {
  const float scale = dloss[0] / static_cast<float>(batch);
  const int64_t count = batch * classes;
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < count; e += int64_t(gridDim.x) * kBlock) {
    const int64_t row = e / classes, c = e - row * classes;
    const int64_t label = static_cast<int64_t>(labels[row]);
    dlogits[e] = (probs[e] - (c == label ? 1.0f : 0.0f)) * scale;
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

void softmax_cross_entropy_forward(float* loss, float* probs, const float* logits, const float* labels, int64_t batch,
                                   int64_t classes) {
  cudaStream_t stream = library_stream();
  if (batch <= 0 || classes <= 0) {
    mean_loss_kernel<<<1, kBlock, 0, stream>>>(loss, nullptr, 0);
    WN_CUDA_CHECK_LAUNCH();
    return;
  }
  Scratch row_loss(batch * sizeof(float));
  softmax_cross_entropy_rows_kernel<<<static_cast<unsigned>(ceil_div(batch, kRowsPerBlock)), kBlock, 0, stream>>>(
      row_loss.floats(), probs, logits, labels, batch, classes);
  WN_CUDA_CHECK_LAUNCH();
  mean_loss_kernel<<<1, kBlock, 0, stream>>>(loss, row_loss.floats(), batch);
  WN_CUDA_CHECK_LAUNCH();
}

void softmax_cross_entropy_backward(float* dlogits, const float* probs, const float* labels, const float* dloss,
                                    int64_t batch, int64_t classes) {
  if (batch <= 0 || classes <= 0) return;
  const int sms = std::max(1, device_status().multiprocessors);
  const unsigned blocks = static_cast<unsigned>(std::clamp<int64_t>(ceil_div(batch * classes, kBlock), 1, 8 * sms));
  softmax_cross_entropy_backward_kernel<<<blocks, kBlock, 0, library_stream()>>>(dlogits, probs, labels, dloss, batch,
                                                                                 classes);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace weightnorm::cuda
