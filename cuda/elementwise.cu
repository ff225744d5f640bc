// CUDA elementwise kernels (see elementwise.cuh): copy/scale (the memory roofline the benchmarks compare
// against), arithmetic, activations and their backwards, dropout and Gaussian noise from the counter-based
// generator of weightnorm/random.h (element i's draw depends only on (seed, i): the same masks as the CPU), and
// the per-channel bias add. Grid-stride loops; 16-byte loads and stores when every pointer is 16-byte aligned,
// the count % 4 tail done by the first threads.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "check.cuh"
#include "launch.cuh"
#include "elementwise.cuh"
#include "runtime.cuh"
#include "weightnorm/random.h"

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

// ---------------------------------------------------------------------------------------------------------------
// The other elementwise ops: a functor op with scalar(i) (element i) and vector(v) (elements 4v..4v+3, pointers
// 16-byte aligned), run by one grid-stride kernel.

__device__ __forceinline__ float4 load4(const float* p, int64_t v) { return reinterpret_cast<const float4*>(p)[v]; }
__device__ __forceinline__ void store4(float* p, int64_t v, float4 value) { reinterpret_cast<float4*>(p)[v] = value; }

template <class Op, bool kVector>
__global__ void __launch_bounds__(kBlock) map_kernel(Op op, int64_t count) {
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  const int64_t first = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if constexpr (kVector) {
    const int64_t vectors = count / 4;
    for (int64_t v = first; v < vectors; v += stride) op.vector(v);
    for (int64_t i = vectors * 4 + first; i < count; i += stride) op.scalar(i);
  } else {
    for (int64_t i = first; i < count; i += stride) op.scalar(i);
  }
}

// out = f(a, b); a null reads 0, b null reads 0 (fill has neither, axpby with beta 0 does not read y).
template <class F>
struct BinaryOp {
  float* out;
  const float* a;
  const float* b;
  F f;
  __device__ void scalar(int64_t i) const { out[i] = f(a ? a[i] : 0.0f, b ? b[i] : 0.0f); }
  __device__ void vector(int64_t v) const {
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float4 x = a ? load4(a, v) : zero, y = b ? load4(b, v) : zero;
    store4(out, v, make_float4(f(x.x, y.x), f(x.y, y.y), f(x.z, y.z), f(x.w, y.w)));
  }
};

struct AddF {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct MultiplyF {
  __device__ float operator()(float a, float b) const { return a * b; }
};
struct AxpbyF {  // a = x, b = y
  float alpha, beta;
  __device__ float operator()(float x, float y) const { return alpha * x + beta * y; }
};
struct ScaleF {  // axpby with beta = 0: y is not read
  float alpha;
  __device__ float operator()(float x, float) const { return alpha * x; }
};
struct FillF {
  float value;
  __device__ float operator()(float, float) const { return value; }
};
struct ReluF {
  float slope;
  // slope 0 gives exactly 0 for x <= 0 (0 * -inf would be NaN); NaN stays NaN. Mirrors cpu/elementwise.cc.
  __device__ float operator()(float x, float) const {
    return x > 0.0f ? x : x <= 0.0f ? (slope == 0.0f ? 0.0f : slope * x) : x;
  }
};
struct ReluBackwardF {  // a = dy, b = x
  float slope;
  __device__ float operator()(float dy, float x) const { return dy * (x > 0.0f ? 1.0f : slope); }
};
struct TanhF {
  __device__ float operator()(float x, float) const { return tanhf(x); }
};
struct TanhBackwardF {  // a = dy, b = y
  __device__ float operator()(float dy, float y) const { return dy * (1.0f - y * y); }
};

struct DropoutOp {
  float* y;
  float* mask;  // may be null
  const float* x;
  uint64_t stream;
  double threshold;
  float keep_scale;
  __device__ float mask_of(int64_t i) const {
    return random::uniform(stream, uint64_t(i)) >= threshold ? keep_scale : 0.0f;
  }
  __device__ void scalar(int64_t i) const {
    const float m = mask_of(i);
    if (mask) mask[i] = m;
    y[i] = x[i] * m;
  }
  __device__ void vector(int64_t v) const {
    const float4 m = make_float4(mask_of(4 * v), mask_of(4 * v + 1), mask_of(4 * v + 2), mask_of(4 * v + 3));
    if (mask) store4(mask, v, m);
    const float4 value = load4(x, v);
    store4(y, v, make_float4(value.x * m.x, value.y * m.y, value.z * m.z, value.w * m.w));
  }
};

struct NoiseOp {
  float* y;
  const float* x;
  uint64_t stream;
  double sigma;
  __device__ float noisy(float value, int64_t i) const {
    return static_cast<float>(double(value) + sigma * random::normal(stream, uint64_t(i)));
  }
  __device__ void scalar(int64_t i) const { y[i] = noisy(x[i], i); }
  __device__ void vector(int64_t v) const {
    const float4 value = load4(x, v);
    store4(y, v,
           make_float4(noisy(value.x, 4 * v), noisy(value.y, 4 * v + 1), noisy(value.z, 4 * v + 2),
                       noisy(value.w, 4 * v + 3)));
  }
};

// out = x + bias[k], k = (e / inner) % channels. kVector needs inner % 4 == 0 (4 floats share a channel). Index is
// 32-bit when the count allows: the channel of an element costs two divisions.
template <typename Index, bool kVector>
__global__ void __launch_bounds__(kBlock)
    channel_bias_add_kernel(float* out, const float* x, const float* bias, Index count, Index channels, Index inner) {
  const Index stride = Index(gridDim.x) * kBlock;
  const Index first = Index(blockIdx.x) * kBlock + threadIdx.x;
  if constexpr (kVector) {
    for (Index v = first; v < count / 4; v += stride) {
      const float b = bias[(v * 4 / inner) % channels];
      const float4 value = load4(x, v);
      store4(out, v, make_float4(value.x + b, value.y + b, value.z + b, value.w + b));
    }
  } else {
    for (Index i = first; i < count; i += stride) out[i] = x[i] + bias[(i / inner) % channels];
  }
}

// Element type conversion, one element per thread step (2-byte elements: the loads coalesce without vectors).
template <class To, class From>
__global__ void __launch_bounds__(kBlock) convert_kernel(To* out, const From* x, int64_t count) {
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < count; i += int64_t(gridDim.x) * kBlock) {
    if constexpr (sizeof(To) == 2) out[i] = float_to_bfloat16(x[i]);
    else out[i] = bfloat16_to_float(x[i]);
  }
}


// aligned: every pointer the op touches is 16-byte aligned (null pointers count as aligned).
template <class Op>
void launch_map(const Op& op, int64_t count, bool aligned) {
  if (count <= 0) return;
  if (aligned) map_kernel<Op, true><<<grid_for(count / 4, kBlock), kBlock, 0, library_stream()>>>(op, count);
  else map_kernel<Op, false><<<grid_for(count, kBlock), kBlock, 0, library_stream()>>>(op, count);
  WN_CUDA_CHECK_LAUNCH();
}

template <class F>
void launch_binary(float* out, const float* a, const float* b, F f, int64_t count) {
  const bool aligned = aligned16(out) && aligned16(a) && aligned16(b);
  launch_map(BinaryOp<F>{out, a, b, f}, count, aligned);
}

}  // namespace

void scale(float* out, const float* x, float alpha, int64_t count) {
  if (count == 0) return;
  const unsigned blocks = grid_for(count / 4, kBlock);
  const bool aligned = ((reinterpret_cast<uintptr_t>(out) | reinterpret_cast<uintptr_t>(x)) & 15) == 0;
  if (aligned) scale_kernel<<<blocks, kBlock, 0, library_stream()>>>(out, x, alpha, count);
  else scale_scalar_kernel<<<blocks, kBlock, 0, library_stream()>>>(out, x, alpha, count);
  WN_CUDA_CHECK_LAUNCH();
}

void add(float* out, const float* a, const float* b, int64_t count) { launch_binary(out, a, b, AddF{}, count); }

void multiply(float* out, const float* a, const float* b, int64_t count) {
  launch_binary(out, a, b, MultiplyF{}, count);
}

// beta == 0 does not read y (it may be uninitialized memory), as BLAS does.
void axpby(float* y, float alpha, const float* x, float beta, int64_t count) {
  if (beta == 0.0f) return launch_binary(y, x, nullptr, ScaleF{alpha}, count);
  launch_binary(y, x, y, AxpbyF{alpha, beta}, count);
}

void fill(float* out, float value, int64_t count) { launch_binary(out, nullptr, nullptr, FillF{value}, count); }

void relu_forward(float* y, const float* x, float negative_slope, int64_t count) {
  launch_binary(y, x, nullptr, ReluF{negative_slope}, count);
}

void relu_backward(float* dx, const float* dy, const float* x, float negative_slope, int64_t count) {
  launch_binary(dx, dy, x, ReluBackwardF{negative_slope}, count);
}

void tanh_forward(float* y, const float* x, int64_t count) { launch_binary(y, x, nullptr, TanhF{}, count); }

void tanh_backward(float* dx, const float* dy, const float* y, int64_t count) {
  launch_binary(dx, dy, y, TanhBackwardF{}, count);
}

// The same threshold and scale as cpu::dropout_forward: p >= 1 drops everything (mask 0, not 0 * inf).
void dropout_forward(float* y, float* mask, const float* x, float p, uint64_t seed, int64_t count) {
  const float keep_scale = p < 1.0f ? static_cast<float>(1.0 / (1.0 - double(p))) : 0.0f;
  const DropoutOp op{y, mask, x, random::stream_of(seed, random::kPurposeDropout), double(p), keep_scale};
  launch_map(op, count, aligned16(y) && aligned16(mask) && aligned16(x));
}

void gaussian_noise(float* y, const float* x, float std, uint64_t seed, int64_t count) {
  const NoiseOp op{y, x, random::stream_of(seed, random::kPurposeNoise), double(std)};
  launch_map(op, count, aligned16(y) && aligned16(x));
}

void channel_bias_add(float* out, const float* x, const float* bias, const ChannelLayout& layout) {
  const int64_t count = layout.elements();
  if (count <= 0) return;
  const bool vectorized = layout.inner % 4 == 0 && aligned16(out) && aligned16(x);
  const unsigned blocks = grid_for(vectorized ? count / 4 : count, kBlock);
  cudaStream_t stream = library_stream();
  if (count < (int64_t{1} << 31)) {
    const uint32_t n = uint32_t(count), c = uint32_t(layout.channels), i = uint32_t(layout.inner);
    if (vectorized) channel_bias_add_kernel<uint32_t, true><<<blocks, kBlock, 0, stream>>>(out, x, bias, n, c, i);
    else channel_bias_add_kernel<uint32_t, false><<<blocks, kBlock, 0, stream>>>(out, x, bias, n, c, i);
  } else {
    const uint64_t n = uint64_t(count), c = uint64_t(layout.channels), i = uint64_t(layout.inner);
    if (vectorized) channel_bias_add_kernel<uint64_t, true><<<blocks, kBlock, 0, stream>>>(out, x, bias, n, c, i);
    else channel_bias_add_kernel<uint64_t, false><<<blocks, kBlock, 0, stream>>>(out, x, bias, n, c, i);
  }
  WN_CUDA_CHECK_LAUNCH();
}

void convert(bfloat16* out, const float* x, int64_t count) {
  if (count <= 0) return;
  convert_kernel<<<grid_for(count, kBlock), kBlock, 0, library_stream()>>>(out, x, count);
  WN_CUDA_CHECK_LAUNCH();
}

void convert(float* out, const bfloat16* x, int64_t count) {
  if (count <= 0) return;
  convert_kernel<<<grid_for(count, kBlock), kBlock, 0, library_stream()>>>(out, x, count);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace weightnorm::cuda
