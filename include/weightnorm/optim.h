// The optimizer family's plain data, shared by cpu/optim.h and cuda/optim.cuh (their entry points: ops/optim.inc).
// Plain data only (no host-only types), so that nvcc compiles it as well as g++.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "weightnorm/layout.h"

namespace weightnorm {

struct SgdOptions {
  float lr, momentum, dampening, weight_decay;
  bool nesterov;
};
struct AdamOptions {
  float lr, beta1, beta2, eps, weight_decay;
};
// Adam's and Adamax's bias corrections at `step` (counted from 1), computed in double as PyTorch does and rounded
// once: step_size = lr / (1 - beta1^t), and (Adam only) inv_sqrt_correction2 = 1 / sqrt(1 - beta2^t).
struct AdamBiasCorrection {
  float step_size;
  float inv_sqrt_correction2;
};

inline AdamBiasCorrection adam_bias_correction(const AdamOptions& options, int64_t step) {
  const double t = static_cast<double>(std::max<int64_t>(step, 1));
  const double correction1 = 1.0 - std::pow(double(options.beta1), t);
  const double correction2 = 1.0 - std::pow(double(options.beta2), t);
  return {static_cast<float>(options.lr / correction1), static_cast<float>(1.0 / std::sqrt(correction2))};
}

// When a parameter is a weight-norm direction v, the step also writes norm[k] = max(|v_k|, eps) of the updated v
// (one norm per channel of `layout`), so the next forward need not read v for it. Fused into the update pass
// where the layout has outer == 1 (dim 0); otherwise a separate reduction.
struct NormOutput {
  float* norm = nullptr;
  ChannelLayout layout;
  float eps = 1e-12f;
};

// One parameter of a multi-tensor step (all the parameters of a group in one call, as PyTorch's foreach and fused
// optimizers take them): its tensors, its element count, its own step count and, for a weight-norm direction v,
// where to write ‖v‖ (norm_output.norm null: nothing).
struct OptimizerTensors {
  float* param = nullptr;
  float* state1 = nullptr;  // SGD's momentum buffer (null without momentum), Adam's and Adamax's m
  float* state2 = nullptr;  // Adam's v, Adamax's u (unused by SGD)
  const float* grad = nullptr;
  int64_t count = 0;
  int64_t step = 1;
  NormOutput norm_output;
};

}  // namespace weightnorm
