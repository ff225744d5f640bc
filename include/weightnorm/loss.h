// The loss functions' plain data and their per-element maths, shared by cpu/loss.cc and cuda/loss.cu so that both
// backends compute each element with the same float32 expression (as torch.nn.functional defines it).
#pragma once
#include <cmath>
#include <cstdint>

#include "weightnorm/host_device.h"

namespace weightnorm {

// Losses computed element by element from (input, target): the regression losses and the binary cross-entropies.
enum class PointwiseLoss : int32_t {
  kMse = 0,              // (x − y)²
  kL1 = 1,               // |x − y|
  kHuber = 2,            // ½d² for |d| < δ, else δ(|d| − ½δ)             (parameter: δ)
  kSmoothL1 = 3,         // ½d²/β for |d| < β, else |d| − ½β; β = 0 is L1   (parameter: β)
  kBce = 4,              // −(y·max(log x, −100) + (1 − y)·max(log(1 − x), −100)), x a probability
  kBceWithLogits = 5,    // (1 − y)·x + (1 + (p − 1)·y)·softplus(−x), p the positive weight (1 without one)
};

// What a loss returns: PyTorch's reduction argument.
enum class LossReduction : int32_t { kNone = 0, kSum = 1, kMean = 2 };

// Optional per-element factors of a pointwise loss. Each is broadcast by repetition (element i reads
// values[i % count]): the caller has checked that its shape is a suffix of the input's (e.g. [classes] for
// [batch, classes]). values == nullptr means no factor.
struct LossFactor {
  const float* values = nullptr;
  int64_t count = 1;
};

struct PointwiseLossOptions {
  PointwiseLoss kind = PointwiseLoss::kMse;
  float parameter = 1.0f;  // Huber's δ or smooth L1's β
  LossFactor weight;       // multiplies each element's loss
  LossFactor pos_weight;   // binary cross-entropy with logits only: the weight of the positive term
};

// The class losses over PyTorch's [outer = N, classes = C, inner = d1·d2·…] layout (class axis 1), one label per
// (outer, inner) position stored as a float class index or ignore_index.
struct ClassLossOptions {
  int64_t outer = 0, classes = 0, inner = 1;
  int64_t ignore_index = -100;
  float label_smoothing = 0.0f;      // cross-entropy only
  const float* class_weight = nullptr;  // [classes] or nullptr (all 1)
  bool from_logits = true;           // true: input is logits (cross-entropy); false: log-probabilities (NLL)
};

namespace loss_math {

WN_HOST_DEVICE float factor(const LossFactor& f, int64_t i) { return f.values ? f.values[i % f.count] : 1.0f; }

WN_HOST_DEVICE float sign(float d) { return d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : 0.0f); }

// softplus(−x) = log(1 + e^−x), stable for any finite x: max(−x, 0) + log1p(e^−|x|).
WN_HOST_DEVICE float softplus_negative(float x) { return fmaxf(-x, 0.0f) + log1pf(expf(-fabsf(x))); }

WN_HOST_DEVICE float sigmoid(float x) {
  // Two branches so that e^(−|x|) never overflows.
  const float e = expf(-fabsf(x));
  return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

// The unweighted loss of one element.
WN_HOST_DEVICE float pointwise_value(const PointwiseLossOptions& o, float x, float y, float pos_weight) {
  const float d = x - y;
  switch (o.kind) {
    case PointwiseLoss::kMse: return d * d;
    case PointwiseLoss::kL1: return fabsf(d);
    case PointwiseLoss::kHuber: {
      const float a = fabsf(d);
      return a < o.parameter ? 0.5f * d * d : o.parameter * (a - 0.5f * o.parameter);
    }
    case PointwiseLoss::kSmoothL1: {
      const float a = fabsf(d);
      return a < o.parameter ? 0.5f * d * d / o.parameter : a - 0.5f * o.parameter;
    }
    case PointwiseLoss::kBce: {
      // PyTorch clamps each log at −100, so x = 0 or 1 gives a finite loss.
      const float log_x = fmaxf(logf(x), -100.0f);
      const float log_1mx = fmaxf(logf(1.0f - x), -100.0f);
      return -(y * log_x + (1.0f - y) * log_1mx);
    }
    case PointwiseLoss::kBceWithLogits: {
      const float log_weight = 1.0f + (pos_weight - 1.0f) * y;
      return (1.0f - y) * x + log_weight * softplus_negative(x);
    }
  }
  return 0.0f;
}

// d(loss)/dx of one element, unweighted.
WN_HOST_DEVICE float pointwise_gradient(const PointwiseLossOptions& o, float x, float y, float pos_weight) {
  const float d = x - y;
  switch (o.kind) {
    case PointwiseLoss::kMse: return 2.0f * d;
    case PointwiseLoss::kL1: return sign(d);
    case PointwiseLoss::kHuber: return fabsf(d) <= o.parameter ? d : o.parameter * sign(d);
    case PointwiseLoss::kSmoothL1: return fabsf(d) < o.parameter ? d / o.parameter : sign(d);
    case PointwiseLoss::kBce:
      // PyTorch's backward: (x − y) / max(x(1 − x), 1e-12).
      return d / fmaxf((1.0f - x) * x, 1e-12f);
    case PointwiseLoss::kBceWithLogits: {
      const float log_weight = 1.0f + (pos_weight - 1.0f) * y;
      return (1.0f - y) + log_weight * (sigmoid(x) - 1.0f);
    }
  }
  return 0.0f;
}

}  // namespace loss_math
}  // namespace weightnorm
