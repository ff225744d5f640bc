// CUDA softmax cross-entropy (see loss.cuh).
// Forward: one warp per row finds the max, sums exp(x - max) (finite for any finite logits), writes the saved
// probs and the row's loss; then one block adds the rows' losses in a fixed order (no atomics) and writes the
// mean. An empty batch gives loss 0. Backward: elementwise, reading the upstream gradient from device memory, so
// nothing waits on the host.
// Pointwise losses (weightnorm/loss.h): one grid-stride pass writes each element's loss, then one block adds them
// in a fixed order (in double, as the CPU does). Class losses: one thread per (outer, inner) position walks its
// classes (stride inner), writes the position's loss and weight (and the softmax it saves); the same one-block
// sums give the totals. Backwards are one thread per element or position, reading dloss from device memory.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "check.cuh"
#include "launch.cuh"
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

// One block: thread t adds values t, t + kBlock, ... in Sum (float or double); then a fixed tree. sums[0] ends
// with the total.
template <class Sum>
__device__ Sum block_sum_fixed_order(const float* values, int64_t count, Sum* sums) {
  Sum sum = 0;
  for (int64_t i = threadIdx.x; i < count; i += kBlock) sum += values[i];
  sums[threadIdx.x] = sum;
  __syncthreads();
#pragma unroll
  for (int width = kBlock / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) sums[threadIdx.x] += sums[threadIdx.x + width];
    __syncthreads();
  }
  return sums[0];
}

// The mean of the rows' losses, summed in float in a fixed order.
__global__ void __launch_bounds__(kBlock) mean_loss_kernel(float* loss, const float* row_loss, int64_t batch) {
  __shared__ float sums[kBlock];
  const float total = block_sum_fixed_order(row_loss, batch, sums);
  if (threadIdx.x == 0) loss[0] = batch > 0 ? total / static_cast<float>(batch) : 0.0f;
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



__global__ void __launch_bounds__(kBlock)
    pointwise_loss_forward_kernel(float* element_loss, const float* input, const float* target, int64_t count,
                                  PointwiseLossOptions options) {
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < count; i += int64_t(gridDim.x) * kBlock) {
    const float pos_weight = loss_math::factor(options.pos_weight, i);
    element_loss[i] = loss_math::factor(options.weight, i) * loss_math::pointwise_value(options, input[i], target[i], pos_weight);
  }
}

__global__ void __launch_bounds__(kBlock)
    pointwise_loss_reduce_kernel(float* reduced, const float* element_loss, int64_t count, LossReduction reduction) {
  __shared__ double sums[kBlock];
  const double total = block_sum_fixed_order(element_loss, count, sums);
  // The mean of nothing is NaN, as in PyTorch (and the CPU).
  if (threadIdx.x == 0) reduced[0] = static_cast<float>(reduction == LossReduction::kMean ? total / double(count) : total);
}

__global__ void __launch_bounds__(kBlock)
    pointwise_loss_backward_kernel(float* dinput, const float* dloss, int64_t dloss_count, float scale,
                                   const float* input, const float* target, int64_t count, PointwiseLossOptions options) {
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < count; i += int64_t(gridDim.x) * kBlock) {
    const float upstream = dloss[dloss_count == 1 ? 0 : i] * scale;
    const float pos_weight = loss_math::factor(options.pos_weight, i);
    dinput[i] = upstream * loss_math::factor(options.weight, i) *
                loss_math::pointwise_gradient(options, input[i], target[i], pos_weight);
  }
}

__device__ __forceinline__ float class_weight_of(const ClassLossOptions& o, int64_t c) {
  return o.class_weight ? o.class_weight[c] : 1.0f;
}

__global__ void __launch_bounds__(kBlock)
    class_loss_positions_kernel(float* position_loss, float* position_weight, float* saved, const float* input,
                                const float* labels, ClassLossOptions o) {
  const int64_t positions = o.outer * o.inner;
  for (int64_t p = int64_t(blockIdx.x) * kBlock + threadIdx.x; p < positions; p += int64_t(gridDim.x) * kBlock) {
    const int64_t n = p / o.inner, k = p - n * o.inner;
    const float* x = input + n * o.classes * o.inner + k;
    double log_sum = 0.0;
    float row_max = 0.0f;
    if (o.from_logits) {
      row_max = -INFINITY;
      for (int64_t c = 0; c < o.classes; ++c) row_max = fmaxf(row_max, x[c * o.inner]);
      double sum = 0.0;
      for (int64_t c = 0; c < o.classes; ++c) sum += exp(double(x[c * o.inner] - row_max));
      log_sum = log(sum);
      float* s = saved + n * o.classes * o.inner + k;
      for (int64_t c = 0; c < o.classes; ++c) s[c * o.inner] = static_cast<float>(exp(double(x[c * o.inner] - row_max) - log_sum));
    }
    const int64_t label = static_cast<int64_t>(labels[p]);
    if (label == o.ignore_index) {
      position_loss[p] = 0.0f;
      position_weight[p] = 0.0f;
      continue;
    }
    const double label_weight = class_weight_of(o, label);
    double loss = -(1.0 - o.label_smoothing) * label_weight * (double(x[label * o.inner] - row_max) - log_sum);
    if (o.label_smoothing != 0.0f) {
      double smooth = 0.0;
      for (int64_t c = 0; c < o.classes; ++c) smooth -= double(class_weight_of(o, c)) * (double(x[c * o.inner] - row_max) - log_sum);
      loss += double(o.label_smoothing) / double(o.classes) * smooth;
    }
    position_loss[p] = static_cast<float>(loss);
    position_weight[p] = static_cast<float>(label_weight);
  }
}

__global__ void __launch_bounds__(kBlock)
    class_loss_reduce_kernel(float* reduced, float* weight_total, const float* position_loss,
                             const float* position_weight, int64_t positions, LossReduction reduction) {
  __shared__ double sums[kBlock];
  const double total = block_sum_fixed_order(position_loss, positions, sums);
  __syncthreads();  // every thread has read sums[0] before the second sum reuses the array
  const double weights = block_sum_fixed_order(position_weight, positions, sums);
  if (threadIdx.x == 0) {
    weight_total[0] = static_cast<float>(weights);
    reduced[0] = static_cast<float>(reduction == LossReduction::kMean ? total / weights : total);
  }
}

__global__ void __launch_bounds__(kBlock)
    class_loss_backward_kernel(float* dinput, const float* saved, const float* labels, const float* dloss,
                               int64_t dloss_count, const float* weight_total, ClassLossOptions o) {
  const int64_t positions = o.outer * o.inner;
  const float smoothing = o.label_smoothing;
  for (int64_t p = int64_t(blockIdx.x) * kBlock + threadIdx.x; p < positions; p += int64_t(gridDim.x) * kBlock) {
    const int64_t n = p / o.inner, k = p - n * o.inner;
    float* d = dinput + n * o.classes * o.inner + k;
    const int64_t label = static_cast<int64_t>(labels[p]);
    if (label == o.ignore_index) {
      for (int64_t c = 0; c < o.classes; ++c) d[c * o.inner] = 0.0f;
      continue;
    }
    const float upstream = dloss[dloss_count == 1 ? 0 : p] / (weight_total ? weight_total[0] : 1.0f);
    const float label_weight = (1.0f - smoothing) * class_weight_of(o, label);
    const float smooth_scale = smoothing / static_cast<float>(o.classes);
    if (o.from_logits) {
      const float* s = saved + n * o.classes * o.inner + k;
      float weight_sum = 0.0f;
      if (smoothing != 0.0f) for (int64_t c = 0; c < o.classes; ++c) weight_sum += class_weight_of(o, c);
      for (int64_t c = 0; c < o.classes; ++c) {
        const float prob = s[c * o.inner];
        float g = label_weight * (prob - (c == label ? 1.0f : 0.0f));
        if (smoothing != 0.0f) g += smooth_scale * (prob * weight_sum - class_weight_of(o, c));
        d[c * o.inner] = upstream * g;
      }
    } else {
      for (int64_t c = 0; c < o.classes; ++c) {
        float g = c == label ? -label_weight : 0.0f;
        if (smoothing != 0.0f) g -= smooth_scale * class_weight_of(o, c);
        d[c * o.inner] = upstream * g;
      }
    }
  }
}

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
  const unsigned blocks = grid_for(batch * classes, kBlock);
  softmax_cross_entropy_backward_kernel<<<blocks, kBlock, 0, library_stream()>>>(dlogits, probs, labels, dloss, batch,
                                                                                 classes);
  WN_CUDA_CHECK_LAUNCH();
}

void pointwise_loss_forward(float* element_loss, float* reduced, const float* input, const float* target,
                            int64_t count, const PointwiseLossOptions& options, LossReduction reduction) {
  cudaStream_t stream = library_stream();
  if (count > 0) {
    pointwise_loss_forward_kernel<<<grid_for(count, kBlock), kBlock, 0, stream>>>(element_loss, input, target, count,
                                                                                 options);
    WN_CUDA_CHECK_LAUNCH();
  }
  pointwise_loss_reduce_kernel<<<1, kBlock, 0, stream>>>(reduced, element_loss, count, reduction);
  WN_CUDA_CHECK_LAUNCH();
}

void pointwise_loss_backward(float* dinput, const float* dloss, int64_t dloss_count, float scale, const float* input,
                             const float* target, int64_t count, const PointwiseLossOptions& options) {
  if (count <= 0) return;
  pointwise_loss_backward_kernel<<<grid_for(count, kBlock), kBlock, 0, library_stream()>>>(
      dinput, dloss, dloss_count, scale, input, target, count, options);
  WN_CUDA_CHECK_LAUNCH();
}

void class_loss_forward(float* position_loss, float* position_weight, float* reduced, float* weight_total, float* saved,
                        const float* input, const float* labels, const ClassLossOptions& options,
                        LossReduction reduction) {
  cudaStream_t stream = library_stream();
  const int64_t positions = options.outer * options.inner;
  if (positions > 0) {
    class_loss_positions_kernel<<<grid_for(positions, kBlock), kBlock, 0, stream>>>(position_loss, position_weight, saved,
                                                                                   input, labels, options);
    WN_CUDA_CHECK_LAUNCH();
  }
  class_loss_reduce_kernel<<<1, kBlock, 0, stream>>>(reduced, weight_total, position_loss, position_weight, positions,
                                                     reduction);
  WN_CUDA_CHECK_LAUNCH();
}

void class_loss_backward(float* dinput, const float* saved, const float* labels, const float* dloss,
                         int64_t dloss_count, const float* weight_total, const ClassLossOptions& options) {
  const int64_t positions = options.outer * options.inner;
  if (positions <= 0) return;
  class_loss_backward_kernel<<<grid_for(positions, kBlock), kBlock, 0, library_stream()>>>(
      dinput, saved, labels, dloss, dloss_count, weight_total, options);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace weightnorm::cuda
