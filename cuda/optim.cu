// CUDA fused optimizer steps (see optim.cuh): SGD (momentum, dampening, Nesterov, weight decay), Adam and Adamax,
// each one pass that reads grad and the state and writes the parameter and the state.
//
// Without a NormOutput: a grid-stride elementwise kernel (16-byte loads where every pointer is aligned).
// With one, norm[k] = max(||p_k||, eps) of the updated parameter:
//  outer == 1, rows <= 256 floats  one group of 1-32 lanes per channel row (like the rows kernel of
//                                   cuda/weightnorm.cu): each lane updates its elements, squares the new values,
//                                   and a butterfly over the group gives the norm. One kernel.
//  outer == 1, longer rows          one block per (row, chunk of kRowChunk floats) updates the chunk and writes
//                                   its sum of squares; a finalize kernel adds a row's chunks in order. Still one
//                                   pass over the parameter.
//  outer > 1                        the elementwise update, then cuda::channel_dot over the updated parameter.
// No atomics: every sum has a fixed order, so results are bitwise identical run to run on one GPU.
// Bias corrections are computed in double on the host once per step; the per-element arithmetic is float.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "check.cuh"
#include "launch.cuh"
#include "optim.cuh"
#include "runtime.cuh"
#include "weightnorm.cuh"

namespace weightnorm::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int kWarp = 32;
constexpr int64_t kShortRow = 256;        // rows up to this long get a group of at most one warp
constexpr int kItemsPerLane = 8;          // target elements per lane in the grouped rows kernel
constexpr int64_t kRowChunk = 8192;       // floats per block on long rows
constexpr int64_t kMaxChunks = 65535;     // grid.y limit

// a / b within 1 ulp for the normal-range b an optimizer divides by (Adamax's u, sqrt(v) + eps): the fast reciprocal
// and one Newton step. The IEEE division's slow path is a called subroutine around which ptxas spills registers
// in these loops (sm_80 to sm_89).
__device__ __forceinline__ float divide(float a, float b) {
  const float r = __fdividef(1.0f, b);
  const float q = a * r;
  return fmaf(fmaf(-q, b, a), r, q);
}

// Each rule maps (p, grad, state) to the new p, updating its state (s1, s2) in place. kStates: how many state
// tensors it reads and writes.
template <bool kMomentum>
struct SgdRule {
  static constexpr int kStates = kMomentum ? 1 : 0;
  float lr, momentum, keep, weight_decay;  // keep = 1 - dampening
  bool nesterov, first_step;
  __device__ __forceinline__ float operator()(float p, float grad, float& buffer, float&) const {
    const float g = weight_decay != 0.0f ? grad + weight_decay * p : grad;
    float direction = g;
    if constexpr (kMomentum) {
      buffer = first_step ? g : momentum * buffer + keep * g;
      direction = nesterov ? g + momentum * buffer : buffer;
    }
    return p - lr * direction;
  }
};

struct AdamRule {
  static constexpr int kStates = 2;
  float step_size, beta1, beta2, inv_sqrt_correction2, eps, weight_decay;  // lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)
  __device__ __forceinline__ float operator()(float p, float grad, float& m, float& v) const {
    const float g = weight_decay != 0.0f ? grad + weight_decay * p : grad;
    m = beta1 * m + (1.0f - beta1) * g;
    v = beta2 * v + (1.0f - beta2) * g * g;
    return p - step_size * divide(m, sqrtf(v) * inv_sqrt_correction2 + eps);
  }
};

struct AdamaxRule {
  static constexpr int kStates = 2;
  float step_size, beta1, beta2, eps, weight_decay;
  __device__ __forceinline__ float operator()(float p, float grad, float& m, float& u) const {
    const float g = weight_decay != 0.0f ? grad + weight_decay * p : grad;
    m = beta1 * m + (1.0f - beta1) * g;
    u = fmaxf(beta2 * u, fabsf(g) + eps);  // eps inside the max, as PyTorch has it
    return p - step_size * divide(m, u);
  }
};

struct Tensors {
  float* param;
  float* s1;  // state, as many as the rule has
  float* s2;
  const float* grad;
};

// Updates element i; returns the new parameter value.
template <class Rule>
__device__ __forceinline__ float step_element(const Rule& rule, const Tensors& t, int64_t i) {
  float a = Rule::kStates > 0 ? t.s1[i] : 0.0f;
  float b = Rule::kStates > 1 ? t.s2[i] : 0.0f;
  const float p = rule(t.param[i], t.grad[i], a, b);
  t.param[i] = p;
  if (Rule::kStates > 0) t.s1[i] = a;
  if (Rule::kStates > 1) t.s2[i] = b;
  return p;
}

template <class Rule>
__device__ __forceinline__ void step_vector(const Rule& rule, const Tensors& t, int64_t v) {
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float4 p = reinterpret_cast<const float4*>(t.param)[v];
  const float4 g = reinterpret_cast<const float4*>(t.grad)[v];
  float4 a = Rule::kStates > 0 ? reinterpret_cast<const float4*>(t.s1)[v] : zero;
  float4 b = Rule::kStates > 1 ? reinterpret_cast<const float4*>(t.s2)[v] : zero;
  p.x = rule(p.x, g.x, a.x, b.x);
  p.y = rule(p.y, g.y, a.y, b.y);
  p.z = rule(p.z, g.z, a.z, b.z);
  p.w = rule(p.w, g.w, a.w, b.w);
  reinterpret_cast<float4*>(t.param)[v] = p;
  if (Rule::kStates > 0) reinterpret_cast<float4*>(t.s1)[v] = a;
  if (Rule::kStates > 1) reinterpret_cast<float4*>(t.s2)[v] = b;
}

template <class Rule, bool kVector>
__global__ void __launch_bounds__(kBlock) optimizer_step_kernel(Rule rule, Tensors t, int64_t count) {
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  const int64_t first = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if constexpr (kVector) {
    const int64_t vectors = count / 4;
    for (int64_t v = first; v < vectors; v += stride) step_vector(rule, t, v);
    for (int64_t i = vectors * 4 + first; i < count; i += stride) step_element(rule, t, i);
  } else {
    for (int64_t i = first; i < count; i += stride) step_element(rule, t, i);
  }
}

// Butterfly over kGroup consecutive lanes: every lane of the group gets the same bits.
template <int kGroup>
__device__ __forceinline__ float group_sum(float value) {
#pragma unroll
  for (int offset = kGroup / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset, kGroup);
  return value;
}

// outer == 1, short rows: kGroup lanes per row.
template <class Rule, int kGroup>
__global__ void __launch_bounds__(kBlock)
    optimizer_step_rows_kernel(Rule rule, Tensors t, float* norm, int64_t rows, int64_t row_length, float eps) {
  const int64_t row = int64_t(blockIdx.x) * (kBlock / kGroup) + threadIdx.x / kGroup;
  const int lane = threadIdx.x % kGroup;
  const bool active = row < rows;
  float squares = 0.0f;
  if (active) {
    for (int64_t i = lane; i < row_length; i += kGroup) {
      const float p = step_element(rule, t, row * row_length + i);
      squares += p * p;
    }
  }
  squares = group_sum<kGroup>(squares);  // every lane takes part, active or not
  if (active && lane == 0) norm[row] = fmaxf(sqrtf(squares), eps);
}

// outer == 1, long rows: grid (rows, chunks); partial[row * chunks + chunk] = the chunk's sum of squares.
template <class Rule>
__global__ void __launch_bounds__(kBlock)
    optimizer_step_row_chunks_kernel(Rule rule, Tensors t, float* partial, int64_t row_length, int64_t chunk_length) {
  __shared__ float warp_sums[kBlock / kWarp];
  const int64_t row = blockIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
  const int64_t begin = chunk * chunk_length, end = min(row_length, begin + chunk_length);
  float squares = 0.0f;
  for (int64_t i = begin + threadIdx.x; i < end; i += kBlock) {
    const float p = step_element(rule, t, row * row_length + i);
    squares += p * p;
  }
  squares = group_sum<kWarp>(squares);
  if (threadIdx.x % kWarp == 0) warp_sums[threadIdx.x / kWarp] = squares;
  __syncthreads();
  if (threadIdx.x != 0) return;
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kBlock / kWarp; ++w) total += warp_sums[w];
  partial[row * chunks + chunk] = total;
}

// One warp per row adds its chunks in a fixed order.
__global__ void __launch_bounds__(kBlock)
    row_norm_finalize_kernel(float* norm, const float* partial, int64_t rows, int64_t chunks, float eps) {
  const int64_t row = (int64_t(blockIdx.x) * kBlock + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;  // the whole warp
  float sum = 0.0f;
  for (int64_t c = lane; c < chunks; c += kWarp) sum += partial[row * chunks + c];
  sum = group_sum<kWarp>(sum);
  if (lane == 0) norm[row] = fmaxf(sqrtf(sum), eps);
}

// norm[k] = max(sqrt(norm[k]), eps), after channel_dot wrote the sums of squares there.
__global__ void sqrt_floor_kernel(float* norm, int64_t channels, float eps) {
  const int64_t k = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (k < channels) norm[k] = fmaxf(sqrtf(norm[k]), eps);
}

template <class Rule, int kGroup>
void launch_rows_group(const Rule& rule, const Tensors& t, float* norm, int64_t rows, int64_t row_length, float eps) {
  const unsigned blocks = static_cast<unsigned>(ceil_div(rows, kBlock / kGroup));
  optimizer_step_rows_kernel<Rule, kGroup><<<blocks, kBlock, 0, library_stream()>>>(rule, t, norm, rows, row_length, eps);
  WN_CUDA_CHECK_LAUNCH();
}

template <class Rule>
void launch_fused_rows(const Rule& rule, const Tensors& t, float* norm, int64_t rows, int64_t row_length, float eps) {
  if (row_length <= kShortRow) {
    const int64_t lanes_wanted = ceil_div(row_length, kItemsPerLane);
    if (lanes_wanted <= 1) return launch_rows_group<Rule, 1>(rule, t, norm, rows, row_length, eps);
    if (lanes_wanted <= 2) return launch_rows_group<Rule, 2>(rule, t, norm, rows, row_length, eps);
    if (lanes_wanted <= 4) return launch_rows_group<Rule, 4>(rule, t, norm, rows, row_length, eps);
    if (lanes_wanted <= 8) return launch_rows_group<Rule, 8>(rule, t, norm, rows, row_length, eps);
    if (lanes_wanted <= 16) return launch_rows_group<Rule, 16>(rule, t, norm, rows, row_length, eps);
    return launch_rows_group<Rule, 32>(rule, t, norm, rows, row_length, eps);
  }
  const int64_t chunk_length = std::max(kRowChunk, ceil_div(row_length, kMaxChunks));
  const int64_t chunks = ceil_div(row_length, chunk_length);
  Scratch partial(rows * chunks * sizeof(float));
  cudaStream_t stream = library_stream();
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(chunks));
  optimizer_step_row_chunks_kernel<Rule><<<grid, kBlock, 0, stream>>>(rule, t, partial.floats(), row_length, chunk_length);
  WN_CUDA_CHECK_LAUNCH();
  const unsigned blocks = static_cast<unsigned>(ceil_div(rows * kWarp, kBlock));
  row_norm_finalize_kernel<<<blocks, kBlock, 0, stream>>>(norm, partial.floats(), rows, chunks, eps);
  WN_CUDA_CHECK_LAUNCH();
}

template <class Rule>
void run_step(const Rule& rule, const Tensors& t, int64_t count, const NormOutput* norm_output) {
  const bool want_norm = norm_output && norm_output->norm;
  if (want_norm && norm_output->layout.elements() != count)
    throw std::invalid_argument("optimizer step: norm_output layout does not cover the parameter's elements");
  if (want_norm && norm_output->layout.outer == 1) {
    if (norm_output->layout.channels <= 0) return;
    return launch_fused_rows(rule, t, norm_output->norm, norm_output->layout.channels, norm_output->layout.inner,
                             norm_output->eps);
  }
  cudaStream_t stream = library_stream();
  if (count > 0) {
    const bool aligned = aligned16(t.param) && aligned16(t.grad) && (Rule::kStates < 1 || aligned16(t.s1)) &&
                         (Rule::kStates < 2 || aligned16(t.s2));
    const unsigned blocks = grid_for(aligned ? count / 4 : count, kBlock);
    if (aligned) optimizer_step_kernel<Rule, true><<<blocks, kBlock, 0, stream>>>(rule, t, count);
    else optimizer_step_kernel<Rule, false><<<blocks, kBlock, 0, stream>>>(rule, t, count);
    WN_CUDA_CHECK_LAUNCH();
  }
  if (!want_norm || norm_output->layout.channels <= 0) return;
  const ChannelLayout& layout = norm_output->layout;
  channel_dot(norm_output->norm, t.param, t.param, layout);
  sqrt_floor_kernel<<<static_cast<unsigned>(ceil_div(layout.channels, kBlock)), kBlock, 0, stream>>>(
      norm_output->norm, layout.channels, norm_output->eps);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void sgd_step(float* param, float* velocity, const float* grad, int64_t count, const SgdOptions& options, int64_t step,
              const NormOutput* norm_output) {
  const Tensors t{param, velocity, nullptr, grad};
  if (options.momentum != 0.0f) {
    const SgdRule<true> rule{options.lr, options.momentum, 1.0f - options.dampening, options.weight_decay,
                             options.nesterov, step <= 1};
    return run_step(rule, t, count, norm_output);
  }
  const SgdRule<false> rule{options.lr, 0.0f, 1.0f, options.weight_decay, false, step <= 1};
  run_step(rule, t, count, norm_output);
}

void adam_step(float* param, float* m, float* v, const float* grad, int64_t count, const AdamOptions& options,
               int64_t step, const NormOutput* norm_output) {
  const AdamBiasCorrection correction = adam_bias_correction(options, step);
  const AdamRule rule{correction.step_size, options.beta1, options.beta2, correction.inv_sqrt_correction2,
                      options.eps, options.weight_decay};
  run_step(rule, Tensors{param, m, v, grad}, count, norm_output);
}

void adamax_step(float* param, float* m, float* u, const float* grad, int64_t count, const AdamOptions& options,
                 int64_t step, const NormOutput* norm_output) {
  const AdamaxRule rule{adam_bias_correction(options, step).step_size, options.beta1, options.beta2, options.eps,
                        options.weight_decay};
  run_step(rule, Tensors{param, m, u, grad}, count, norm_output);
}

// The multi-tensor steps launch each tensor's kernels in turn on the library stream: on the GPU a launch costs
// microseconds, not the host-side wake-ups and crossings the CPU backend saves by batching, and launching per
// tensor keeps every result bitwise the single-tensor step's. The norm output is checked for every tensor first,
// so a bad one throws before any parameter changes.
namespace {
void check_norm_outputs(const OptimizerTensors* tensors, int64_t tensor_count) {
  for (int64_t i = 0; i < tensor_count; ++i) {
    const NormOutput& n = tensors[i].norm_output;
    if (n.norm && n.layout.elements() != tensors[i].count)
      throw std::invalid_argument("optimizer step: norm_output layout does not cover the parameter's elements");
  }
}
const NormOutput* norm_of(const OptimizerTensors& t) { return t.norm_output.norm ? &t.norm_output : nullptr; }
}  // namespace

void sgd_step_many(const OptimizerTensors* tensors, int64_t tensor_count, const SgdOptions& options) {
  check_norm_outputs(tensors, tensor_count);
  for (int64_t i = 0; i < tensor_count; ++i) {
    const OptimizerTensors& t = tensors[i];
    sgd_step(t.param, t.state1, t.grad, t.count, options, t.step, norm_of(t));
  }
}

void adam_step_many(const OptimizerTensors* tensors, int64_t tensor_count, const AdamOptions& options) {
  check_norm_outputs(tensors, tensor_count);
  for (int64_t i = 0; i < tensor_count; ++i) {
    const OptimizerTensors& t = tensors[i];
    adam_step(t.param, t.state1, t.state2, t.grad, t.count, options, t.step, norm_of(t));
  }
}

void adamax_step_many(const OptimizerTensors* tensors, int64_t tensor_count, const AdamOptions& options) {
  check_norm_outputs(tensors, tensor_count);
  for (int64_t i = 0; i < tensor_count; ++i) {
    const OptimizerTensors& t = tensors[i];
    adamax_step(t.param, t.state1, t.state2, t.grad, t.count, options, t.step, norm_of(t));
  }
}

}  // namespace weightnorm::cuda
