// CUDA batch normalization (full) and mean-only batch normalization (Salimans & Kingma, 2016, §4); see
// normalization.cuh.
//
// Each op is: per-channel sums from the deterministic reductions of cuda/reduce.cu (no atomics), a one-thread-per-
// channel kernel that turns them into the saved statistics and the coefficients of the output, and one
// elementwise pass that writes the output (16-byte loads where inner % 4 == 0 and aligned). The variance is a
// second pass around the saved mean (no E[x^2] - E[x]^2 cancellation); the backward's two sums (dy and
// dy * (x - mean)) share one pass.
// gamma / beta / bias may be null (no affine part: 1 and 0); dgamma / dbeta / dbias may be null (not wanted).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "check.cuh"
#include "launch.cuh"
#include "normalization.cuh"
#include "reduce.cuh"
#include "runtime.cuh"

namespace weightnorm::cuda {
namespace detail {
// Defined in cuda/reduce.cu: per-channel sum (x - shift[k])^2; sum dy and sum (x - shift[k]) * dy.
void channel_centered_squares(float* sums, const float* x, const float* shift, const ChannelLayout& layout);
void channel_sums_and_centered_dots(float* sums_of_dy, float* dots, const float* x, const float* shift,
                                    const float* dy, const ChannelLayout& layout);
}  // namespace detail

namespace {

constexpr int kBlock = 256;

// ---------------------------------------------------------------------------------------------------------------
// Per-channel kernels (one thread per channel): statistics and output coefficients, computed in double.

__device__ __forceinline__ double inverse_count(int64_t n) { return n > 0 ? 1.0 / double(n) : 0.0; }

__global__ void channel_mean_kernel(float* mean, const float* sums, int64_t channels, int64_t n) {
  const int64_t k = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (k < channels) mean[k] = static_cast<float>(double(sums[k]) * inverse_count(n));
}

__global__ void batch_norm_statistics_kernel(float* var, float* invstd, float* scale, const float* squares,
                                             const float* gamma, int64_t channels, int64_t n, float eps) {
  const int64_t k = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (k >= channels) return;
  const double variance = double(squares[k]) * inverse_count(n);
  const float s = static_cast<float>(1.0 / sqrt(variance + double(eps)));
  var[k] = static_cast<float>(variance);
  invstd[k] = s;
  scale[k] = s * (gamma ? gamma[k] : 1.0f);
}

// dx = c_dy * dy - c_x * (x - mean) - c_0 (see the CPU kernel for the derivation).
__global__ void batch_norm_backward_coefficients_kernel(float* dgamma, float* dbeta, float* c_dy, float* c_x,
                                                        float* c_0, const float* sums, const float* dots,
                                                        const float* invstd, const float* gamma, int64_t channels,
                                                        int64_t n) {
  const int64_t k = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (k >= channels) return;
  const double g = gamma ? gamma[k] : 1.0f, s = invstd[k], inv_n = inverse_count(n);
  if (dbeta) dbeta[k] = sums[k];
  if (dgamma) dgamma[k] = static_cast<float>(double(dots[k]) * s);
  c_dy[k] = static_cast<float>(g * s);
  c_x[k] = static_cast<float>(g * s * s * s * double(dots[k]) * inv_n);
  c_0[k] = static_cast<float>(g * s * double(sums[k]) * inv_n);
}

__global__ void batch_norm_inference_scale_kernel(float* scale, const float* running_var, const float* gamma,
                                                  int64_t channels, float eps) {
  const int64_t k = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (k < channels)
    scale[k] = static_cast<float>((gamma ? gamma[k] : 1.0f) / sqrt(double(running_var[k]) + double(eps)));
}

// dbeta = sum dy, dgamma = sum dy * (x - running_mean) * invstd (the sums were taken around the running mean).
__global__ void batch_norm_inference_backward_coefficients_kernel(float* dgamma, float* dbeta, const float* sums,
                                                                  const float* dots, const float* running_var,
                                                                  int64_t channels, float eps) {
  const int64_t k = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (k >= channels) return;
  if (dbeta) dbeta[k] = sums[k];
  if (dgamma) dgamma[k] = static_cast<float>(double(dots[k]) / sqrt(double(running_var[k]) + double(eps)));
}

__global__ void mean_only_backward_coefficients_kernel(float* dbias, float* mean_dy, const float* sums,
                                                       int64_t channels, int64_t n) {
  const int64_t k = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (k >= channels) return;
  if (dbias) dbias[k] = sums[k];
  mean_dy[k] = static_cast<float>(double(sums[k]) * inverse_count(n));
}

// ---------------------------------------------------------------------------------------------------------------
// The elementwise pass: out = op(a, b, k) for the channel k of each element (b null: 0 is passed).

struct AffineOp {  // (x - shift) * scale + offset: forward, evaluation
  const float* shift;
  const float* scale;
  const float* offset;  // may be null
  template <typename Index>
  __device__ float operator()(float x, float, Index k) const {
    return (x - shift[k]) * scale[k] + (offset ? offset[k] : 0.0f);
  }
};

struct MeanOnlyOp {  // x - mean + bias
  const float* mean;
  const float* bias;  // may be null
  template <typename Index>
  __device__ float operator()(float x, float, Index k) const {
    return x - mean[k] + (bias ? bias[k] : 0.0f);
  }
};

struct CenterOp {  // dy - mean(dy)
  const float* mean;
  template <typename Index>
  __device__ float operator()(float dy, float, Index k) const {
    return dy - mean[k];
  }
};

struct ScaleOp {  // dy * scale: the evaluation-mode dx
  const float* scale;
  template <typename Index>
  __device__ float operator()(float dy, float, Index k) const {
    return dy * scale[k];
  }
};

struct BatchNormBackwardOp {  // a = dy, b = x
  const float* c_dy;
  const float* c_x;
  const float* c_0;
  const float* mean;
  template <typename Index>
  __device__ float operator()(float dy, float x, Index k) const {
    return c_dy[k] * dy - c_x[k] * (x - mean[k]) - c_0[k];
  }
};

// kVector needs inner % 4 == 0 (the 4 floats share a channel) and 16-byte aligned pointers. Index is 32-bit when
// the count allows: the channel of an element costs two divisions.
template <class Op, typename Index, bool kVector>
__global__ void __launch_bounds__(kBlock) channel_map_kernel(Op op, float* out, const float* a, const float* b,
                                                             Index count, Index channels, Index inner) {
  const Index stride = Index(gridDim.x) * kBlock;
  const Index first = Index(blockIdx.x) * kBlock + threadIdx.x;
  if constexpr (kVector) {
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    float4* out4 = reinterpret_cast<float4*>(out);
    for (Index v = first; v < count / 4; v += stride) {
      const Index k = (v * 4 / inner) % channels;
      const float4 x = a4[v];
      const float4 y = b ? b4[v] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      out4[v] = make_float4(op(x.x, y.x, k), op(x.y, y.y, k), op(x.z, y.z, k), op(x.w, y.w, k));
    }
  } else {
    for (Index i = first; i < count; i += stride) out[i] = op(a[i], b ? b[i] : 0.0f, (i / inner) % channels);
  }
}

unsigned channel_blocks(int64_t channels) { return static_cast<unsigned>(ceil_div(std::max<int64_t>(channels, 1), kBlock)); }

template <class Op>
void launch_channel_map(const Op& op, float* out, const float* a, const float* b, const ChannelLayout& l) {
  const int64_t count = l.elements();
  if (count <= 0) return;
  const bool vectorized = l.inner % 4 == 0 && aligned16(out) && aligned16(a) && aligned16(b);
  const unsigned blocks = grid_for(vectorized ? count / 4 : count, kBlock);
  cudaStream_t stream = library_stream();
  if (count < (int64_t{1} << 31)) {
    const uint32_t n = uint32_t(count), c = uint32_t(l.channels), i = uint32_t(l.inner);
    if (vectorized) channel_map_kernel<Op, uint32_t, true><<<blocks, kBlock, 0, stream>>>(op, out, a, b, n, c, i);
    else channel_map_kernel<Op, uint32_t, false><<<blocks, kBlock, 0, stream>>>(op, out, a, b, n, c, i);
  } else {
    const uint64_t n = uint64_t(count), c = uint64_t(l.channels), i = uint64_t(l.inner);
    if (vectorized) channel_map_kernel<Op, uint64_t, true><<<blocks, kBlock, 0, stream>>>(op, out, a, b, n, c, i);
    else channel_map_kernel<Op, uint64_t, false><<<blocks, kBlock, 0, stream>>>(op, out, a, b, n, c, i);
  }
  WN_CUDA_CHECK_LAUNCH();
}

void launch_channel_mean(float* mean, const float* x, const ChannelLayout& l) {
  Scratch sums(l.channels * sizeof(float));
  channel_sum(sums.floats(), x, l);
  channel_mean_kernel<<<channel_blocks(l.channels), kBlock, 0, library_stream()>>>(mean, sums.floats(), l.channels,
                                                                                  l.reduce_size());
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void batch_norm_forward(float* y, float* mean, float* var, float* invstd, const float* x, const float* gamma,
                        const float* beta, const ChannelLayout& layout, float eps) {
  const int64_t channels = layout.channels;
  if (channels <= 0) return;
  launch_channel_mean(mean, x, layout);
  Scratch vectors(2 * channels * sizeof(float));
  float* squares = vectors.floats();
  float* scale = squares + channels;
  detail::channel_centered_squares(squares, x, mean, layout);
  batch_norm_statistics_kernel<<<channel_blocks(channels), kBlock, 0, library_stream()>>>(
      var, invstd, scale, squares, gamma, channels, layout.reduce_size(), eps);
  WN_CUDA_CHECK_LAUNCH();
  launch_channel_map(AffineOp{mean, scale, beta}, y, x, nullptr, layout);
}

void batch_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* mean,
                         const float* invstd, const float* gamma, const ChannelLayout& layout) {
  const int64_t channels = layout.channels;
  if (channels <= 0) return;
  Scratch vectors(5 * channels * sizeof(float));
  float* sums = vectors.floats();
  float* dots = sums + channels;
  float* c_dy = dots + channels;
  float* c_x = c_dy + channels;
  float* c_0 = c_x + channels;
  detail::channel_sums_and_centered_dots(sums, dots, x, mean, dy, layout);
  batch_norm_backward_coefficients_kernel<<<channel_blocks(channels), kBlock, 0, library_stream()>>>(
      dgamma, dbeta, c_dy, c_x, c_0, sums, dots, invstd, gamma, channels, layout.reduce_size());
  WN_CUDA_CHECK_LAUNCH();
  if (dx) launch_channel_map(BatchNormBackwardOp{c_dy, c_x, c_0, mean}, dx, dy, x, layout);
}

void batch_norm_inference(float* y, const float* x, const float* running_mean, const float* running_var,
                          const float* gamma, const float* beta, const ChannelLayout& layout, float eps) {
  const int64_t channels = layout.channels;
  if (channels <= 0 || layout.elements() == 0) return;
  Scratch scale(channels * sizeof(float));
  batch_norm_inference_scale_kernel<<<channel_blocks(channels), kBlock, 0, library_stream()>>>(
      scale.floats(), running_var, gamma, channels, eps);
  WN_CUDA_CHECK_LAUNCH();
  launch_channel_map(AffineOp{running_mean, scale.floats(), beta}, y, x, nullptr, layout);
}

void batch_norm_inference_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                                   const float* running_mean, const float* running_var, const float* gamma,
                                   const ChannelLayout& layout, float eps) {
  const int64_t channels = layout.channels;
  if (channels <= 0) return;
  if (dgamma || dbeta) {
    Scratch vectors(2 * channels * sizeof(float));
    float* sums = vectors.floats();
    float* dots = sums + channels;
    detail::channel_sums_and_centered_dots(sums, dots, x, running_mean, dy, layout);
    batch_norm_inference_backward_coefficients_kernel<<<channel_blocks(channels), kBlock, 0, library_stream()>>>(
        dgamma, dbeta, sums, dots, running_var, channels, eps);
    WN_CUDA_CHECK_LAUNCH();
  }
  if (!dx || layout.elements() == 0) return;
  // The forward's own per-channel factor: dx is dy scaled exactly as x was.
  Scratch scale(channels * sizeof(float));
  batch_norm_inference_scale_kernel<<<channel_blocks(channels), kBlock, 0, library_stream()>>>(
      scale.floats(), running_var, gamma, channels, eps);
  WN_CUDA_CHECK_LAUNCH();
  launch_channel_map(ScaleOp{scale.floats()}, dx, dy, nullptr, layout);
}

void mean_only_batch_norm_forward(float* y, float* mean, const float* x, const float* bias, const ChannelLayout& layout,
                                  bool compute_mean) {
  if (layout.channels <= 0) return;
  if (compute_mean) launch_channel_mean(mean, x, layout);
  launch_channel_map(MeanOnlyOp{mean, bias}, y, x, nullptr, layout);
}

void mean_only_batch_norm_backward(float* dx, float* dbias, const float* dy, const ChannelLayout& layout) {
  const int64_t channels = layout.channels;
  if (channels <= 0) return;
  Scratch vectors(2 * channels * sizeof(float));
  float* sums = vectors.floats();
  float* mean_dy = sums + channels;
  channel_sum(sums, dy, layout);
  mean_only_backward_coefficients_kernel<<<channel_blocks(channels), kBlock, 0, library_stream()>>>(
      dbias, mean_dy, sums, channels, layout.reduce_size());
  WN_CUDA_CHECK_LAUNCH();
  if (dx) launch_channel_map(CenterOp{mean_dy}, dx, dy, nullptr, layout);
}

}  // namespace weightnorm::cuda
