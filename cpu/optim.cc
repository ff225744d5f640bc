// CPU fused optimizer steps (see optim.h): SGD (momentum, dampening, Nesterov, weight decay), Adam and Adamax,
// each one pass that reads grad and the state, and writes the parameter and the state.
//
// With a NormOutput the step also writes norm[k] = max(||p_k||, eps) of the updated parameter:
//  outer == 1  (dim 0: each channel a contiguous row) fused: a row is updated in blocks of kFoldBlock elements and
//              each block's squares are summed right after it is written, while it is in L1. A long row is cut
//              into parts of fixed length (kPartElements), so the summation order never depends on the thread
//              count.
//  otherwise   the update pass, then cpu::channel_dot (deterministic) over the updated parameter.
// Bias corrections are computed in double once per step; the per-element arithmetic is float.
#include "optim.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "weightnorm.h"

namespace weightnorm::cpu {
namespace {

constexpr int64_t kPartElements = int64_t{1} << 14;
constexpr int64_t kFoldBlock = 1024;
constexpr int kLanes = 16;
constexpr int64_t kParallelMinElements = int64_t{1} << 15;

// Each rule updates element i of the parameter and of its state.
struct SgdRule {
  float* param;
  float* velocity;
  const float* grad;
  float lr, momentum, keep, weight_decay;  // keep = 1 - dampening
  bool nesterov, first_step;

  void operator()(int64_t i) const {
    const float g = weight_decay != 0.0f ? grad[i] + weight_decay * param[i] : grad[i];
    float direction = g;
    if (momentum != 0.0f) {
      const float buffer = first_step ? g : momentum * velocity[i] + keep * g;
      velocity[i] = buffer;
      direction = nesterov ? g + momentum * buffer : buffer;
    }
    param[i] -= lr * direction;
  }
};

struct AdamRule {
  float* param;
  float* m;
  float* v;
  const float* grad;
  float step_size, beta1, beta2, inv_sqrt_correction2, eps, weight_decay;  // lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)

  void operator()(int64_t i) const {
    const float g = weight_decay != 0.0f ? grad[i] + weight_decay * param[i] : grad[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] -= step_size * mi / (std::sqrt(vi) * inv_sqrt_correction2 + eps);
  }
};

struct AdamaxRule {
  float* param;
  float* m;
  float* u;
  const float* grad;
  float step_size, beta1, beta2, eps, weight_decay;

  void operator()(int64_t i) const {
    const float g = weight_decay != 0.0f ? grad[i] + weight_decay * param[i] : grad[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    // eps inside the max, as PyTorch has it: u never falls below eps, and the division needs no other guard.
    const float ui = std::max(beta2 * u[i], std::fabs(g) + eps);
    m[i] = mi;
    u[i] = ui;
    param[i] -= step_size * mi / ui;
  }
};

// Sum of squares of a run (at most kFoldBlock long): kLanes float lanes, added in a fixed order.
float block_squares(const float* p, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += p[i + l] * p[i + l];
  for (; i < n; ++i) lanes[0] += p[i] * p[i];
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

template <class Rule>
void run_step(float* param, int64_t count, const NormOutput* norm_output, const Rule& rule) {
  const bool want_norm = norm_output && norm_output->norm;
  if (want_norm && norm_output->layout.elements() != count)
    throw std::invalid_argument("optimizer step: norm_output layout does not cover the parameter's elements");
  const int threads = num_threads();
  const bool parallel = count >= kParallelMinElements && threads > 1;

  if (!want_norm || norm_output->layout.outer != 1) {
    const int64_t blocks = (count + kPartElements - 1) / kPartElements;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t end = std::min(count, (b + 1) * kPartElements);
      for (int64_t i = b * kPartElements; i < end; ++i) rule(i);
    }
    if (!want_norm) return;
    const ChannelLayout& layout = norm_output->layout;
    float* norm = norm_output->norm;
    channel_dot(norm, param, param, layout);
    for (int64_t k = 0; k < layout.channels; ++k) norm[k] = std::max(std::sqrt(norm[k]), norm_output->eps);
    return;
  }

  // Fused: channel k is the row [k * inner, (k + 1) * inner).
  const int64_t rows = norm_output->layout.channels, row_length = norm_output->layout.inner;
  const int64_t parts = std::max<int64_t>(1, (row_length + kPartElements - 1) / kPartElements);
  std::vector<double> partial(rows * parts, 0.0);
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (int64_t unit = 0; unit < rows * parts; ++unit) {
    const int64_t row = unit / parts, part = unit % parts;
    const int64_t begin = row * row_length + part * kPartElements;
    const int64_t end = row * row_length + std::min(row_length, (part + 1) * kPartElements);
    double total = 0.0;
    for (int64_t block = begin; block < end; block += kFoldBlock) {
      const int64_t block_end = std::min(end, block + kFoldBlock);
      for (int64_t i = block; i < block_end; ++i) rule(i);
      total += block_squares(param + block, block_end - block);
    }
    partial[unit] = total;
  }
  for (int64_t k = 0; k < rows; ++k) {
    double sum = 0.0;
    for (int64_t part = 0; part < parts; ++part) sum += partial[k * parts + part];
    norm_output->norm[k] = std::max(static_cast<float>(std::sqrt(sum)), norm_output->eps);
  }
}

}  // namespace

void sgd_step(float* param, float* velocity, const float* grad, int64_t count, const SgdOptions& options, int64_t step,
              const NormOutput* norm_output) {
  const SgdRule rule{param, velocity, grad, options.lr, options.momentum, 1.0f - options.dampening,
                     options.weight_decay, options.nesterov, step <= 1};
  run_step(param, count, norm_output, rule);
}

void adam_step(float* param, float* m, float* v, const float* grad, int64_t count, const AdamOptions& options,
               int64_t step, const NormOutput* norm_output) {
  const AdamBiasCorrection correction = adam_bias_correction(options, step);
  const AdamRule rule{param, m, v, grad, correction.step_size, options.beta1, options.beta2,
                      correction.inv_sqrt_correction2, options.eps, options.weight_decay};
  run_step(param, count, norm_output, rule);
}

void adamax_step(float* param, float* m, float* u, const float* grad, int64_t count, const AdamOptions& options,
                 int64_t step, const NormOutput* norm_output) {
  const AdamaxRule rule{param, m, u, grad, adam_bias_correction(options, step).step_size, options.beta1, options.beta2,
                        options.eps, options.weight_decay};
  run_step(param, count, norm_output, rule);
}

}  // namespace weightnorm::cpu
