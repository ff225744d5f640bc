// Fused optimizer steps: one pass over each parameter tensor (CUDA). Mirrors cpu/optim.h op by op. All pointers are device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/layout.h"

namespace weightnorm::cuda {

struct SgdOptions {
  float lr, momentum, dampening, weight_decay;
  bool nesterov;
};
struct AdamOptions {
  float lr, beta1, beta2, eps, weight_decay;
};
// When a parameter is a weight-norm direction v, the step also writes norm[k] = max(|v_k|, eps) of the updated v
// (one norm per channel of `layout`), so the next forward need not read v for it. Fused into the update pass
// where the layout has outer == 1 (dim 0); otherwise a separate reduction.
struct NormOutput {
  float* norm = nullptr;
  ChannelLayout layout;
  float eps = 1e-12f;
};

// In each step function `step` is the parameter's own count of updates, from 1 (PyTorch's state['step']): a
// parameter first updated late starts its momentum and bias correction then.
// g' = grad + weight_decay * p; momentum: buf = momentum * buf + (1 - dampening) * g' (buf = g' on step 1),
// d = nesterov ? g' + momentum * buf : buf; p -= lr * d. velocity may be null when momentum == 0.
void sgd_step(float* param, float* velocity, const float* grad, int64_t count, const SgdOptions& options, int64_t step,
              const NormOutput* norm_output);
// Adam (Kingma & Ba), bias-corrected, L2 weight decay added to the gradient.
void adam_step(float* param, float* m, float* v, const float* grad, int64_t count, const AdamOptions& options,
               int64_t step, const NormOutput* norm_output);
// Adamax, as PyTorch defines it: u = max(beta2 * u, |g'| + eps), p -= lr / (1 - beta1^step) * m / u.
void adamax_step(float* param, float* m, float* u, const float* grad, int64_t count, const AdamOptions& options,
                 int64_t step, const NormOutput* norm_output);

}  // namespace weightnorm::cuda
