// The optimizer family's plain data, shared by cpu/optim.h and cuda/optim.cuh (their entry points: ops/optim.inc).
// Plain data only (no host-only types), so that nvcc compiles it as well as g++.
#pragma once
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
// When a parameter is a weight-norm direction v, the step also writes norm[k] = max(|v_k|, eps) of the updated v
// (one norm per channel of `layout`), so the next forward need not read v for it. Fused into the update pass
// where the layout has outer == 1 (dim 0); otherwise a separate reduction.
struct NormOutput {
  float* norm = nullptr;
  ChannelLayout layout;
  float eps = 1e-12f;
};

}  // namespace weightnorm
