// CPU softmax cross-entropy (see loss.h). Forward: per row, the max is subtracted before exp (finite for any
// finite logits), the sum of exponentials is taken in double, probs are saved for the backward; the batch mean
// adds the rows' losses in blocks of fixed size, in block order (independent of the thread count).
// An empty batch gives loss 0.
// The pointwise and class losses (weightnorm/loss.h) follow the same pattern: per-element (per-position) values in
// parallel, then the reduction adds fixed blocks in block order, in double.
#include "loss.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "weightnorm.h"

namespace weightnorm::cpu {
namespace {

constexpr int64_t kRowsPerBlock = 256;
constexpr int64_t kParallelMinElements = int64_t{1} << 15;

// Σ values[0..count) in blocks of fixed size added in block order: the same bits for any thread count.
double deterministic_sum(const float* values, int64_t count) {
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (count + kBlock - 1) / kBlock;
  std::vector<double> block_sum(static_cast<size_t>(std::max<int64_t>(blocks, 0)), 0.0);
  const int threads = num_threads();
  parallel_region(count >= kParallelMinElements && threads > 1, threads, [&] {
    for (const int64_t b : team_static(0, blocks)) {
      double total = 0.0;
      const int64_t end = std::min(count, (b + 1) * kBlock);
      for (int64_t i = b * kBlock; i < end; ++i) total += values[i];
      block_sum[b] = total;
    }
  });
  double total = 0.0;
  for (double block : block_sum) total += block;
  return total;
}

}  // namespace

void softmax_cross_entropy_forward(float* loss, float* probs, const float* logits, const float* labels, int64_t batch,
                                   int64_t classes) {
  if (batch <= 0 || classes <= 0) {
    loss[0] = 0.0f;
    return;
  }
  const int64_t blocks = (batch + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<double> block_loss(blocks, 0.0);
  const int threads = num_threads();
  const bool parallel = batch * classes >= kParallelMinElements && threads > 1;
  parallel_region(parallel, threads, [&] {
    for (const int64_t b : team_static(0, blocks)) {
      double total = 0.0;
      const int64_t row_end = std::min(batch, (b + 1) * kRowsPerBlock);
      for (int64_t row = b * kRowsPerBlock; row < row_end; ++row) {
        const float* x = logits + row * classes;
        float* p = probs + row * classes;
        const float row_max = *std::max_element(x, x + classes);
        double sum = 0.0;
        for (int64_t c = 0; c < classes; ++c) sum += std::exp(double(x[c] - row_max));
        const double inv_sum = 1.0 / sum;
        for (int64_t c = 0; c < classes; ++c) p[c] = static_cast<float>(std::exp(double(x[c] - row_max)) * inv_sum);
        const int64_t label = static_cast<int64_t>(labels[row]);
        total += std::log(sum) - double(x[label] - row_max);
      }
      block_loss[b] = total;
    }
  });
  double total = 0.0;
  for (double block : block_loss) total += block;
  loss[0] = static_cast<float>(total / double(batch));
}

void softmax_cross_entropy_backward(float* dlogits, const float* probs, const float* labels, const float* dloss,
                                    int64_t batch, int64_t classes) {
  if (batch <= 0 || classes <= 0) return;
  const float scale = dloss[0] / static_cast<float>(batch);
  const int threads = num_threads();
  const bool parallel = batch * classes >= kParallelMinElements && threads > 1;
  parallel_region(parallel, threads, [&] {
    for (const int64_t row : team_static(0, batch)) {
      const float* p = probs + row * classes;
      float* d = dlogits + row * classes;
      const int64_t label = static_cast<int64_t>(labels[row]);
      for (int64_t c = 0; c < classes; ++c) d[c] = (p[c] - (c == label ? 1.0f : 0.0f)) * scale;
    }
  });
}

void pointwise_loss_forward(float* element_loss, float* reduced, const float* input, const float* target,
                            int64_t count, const PointwiseLossOptions& options, LossReduction reduction) {
  const int threads = num_threads();
  parallel_region(count >= kParallelMinElements && threads > 1, threads, [&] {
    for (const int64_t i : team_static(0, count)) {
      const float pos_weight = loss_math::factor(options.pos_weight, i);
      element_loss[i] = loss_math::factor(options.weight, i) * loss_math::pointwise_value(options, input[i], target[i], pos_weight);
    }
  });
  const double total = deterministic_sum(element_loss, count);
  // The mean of nothing is NaN, as in PyTorch.
  reduced[0] = static_cast<float>(reduction == LossReduction::kMean ? total / double(count) : total);
}

void pointwise_loss_backward(float* dinput, const float* dloss, int64_t dloss_count, float scale, const float* input,
                             const float* target, int64_t count, const PointwiseLossOptions& options) {
  const int threads = num_threads();
  parallel_region(count >= kParallelMinElements && threads > 1, threads, [&] {
    for (const int64_t i : team_static(0, count)) {
      const float upstream = dloss[dloss_count == 1 ? 0 : i] * scale;
      const float pos_weight = loss_math::factor(options.pos_weight, i);
      dinput[i] = upstream * loss_math::factor(options.weight, i) *
                  loss_math::pointwise_gradient(options, input[i], target[i], pos_weight);
    }
  });
}

void class_loss_forward(float* position_loss, float* position_weight, float* reduced, float* weight_total, float* saved,
                        const float* input, const float* labels, const ClassLossOptions& options,
                        LossReduction reduction) {
  const int64_t outer = options.outer, classes = options.classes, inner = options.inner;
  const int64_t positions = outer * inner;
  const float smoothing = options.label_smoothing;
  const int threads = num_threads();
  parallel_region(positions * classes >= kParallelMinElements && threads > 1, threads, [&] {
    for (const int64_t p : team_static(0, positions)) {
      const int64_t n = p / inner, k = p - n * inner;
      const float* x = input + n * classes * inner + k;  // class c at x[c * inner]
      // log-probabilities: logits − logsumexp for cross-entropy (the max subtracted first), the input itself for NLL.
      double log_sum = 0.0;
      float row_max = 0.0f;
      if (options.from_logits) {
        row_max = -INFINITY;
        for (int64_t c = 0; c < classes; ++c) row_max = std::max(row_max, x[c * inner]);
        double sum = 0.0;
        for (int64_t c = 0; c < classes; ++c) sum += std::exp(double(x[c * inner] - row_max));
        log_sum = std::log(sum);
        float* s = saved + n * classes * inner + k;
        for (int64_t c = 0; c < classes; ++c) s[c * inner] = static_cast<float>(std::exp(double(x[c * inner] - row_max) - log_sum));
      }
      const auto log_prob = [&](int64_t c) { return double(x[c * inner] - row_max) - log_sum; };
      const int64_t label = static_cast<int64_t>(labels[p]);
      if (label == options.ignore_index) {
        position_loss[p] = 0.0f;
        position_weight[p] = 0.0f;
        continue;
      }
      const auto weight_of = [&](int64_t c) { return options.class_weight ? double(options.class_weight[c]) : 1.0; };
      double loss = -(1.0 - smoothing) * weight_of(label) * log_prob(label);
      if (smoothing != 0.0f) {
        double smooth = 0.0;
        for (int64_t c = 0; c < classes; ++c) smooth -= weight_of(c) * log_prob(c);
        loss += double(smoothing) / double(classes) * smooth;
      }
      position_loss[p] = static_cast<float>(loss);
      position_weight[p] = static_cast<float>(weight_of(label));
    }
  });
  const double total = deterministic_sum(position_loss, positions);
  const double weights = deterministic_sum(position_weight, positions);
  weight_total[0] = static_cast<float>(weights);
  // A mean over no (non-ignored) position is 0/0 = NaN, as in PyTorch.
  reduced[0] = static_cast<float>(reduction == LossReduction::kMean ? total / weights : total);
}

void class_loss_backward(float* dinput, const float* saved, const float* labels, const float* dloss,
                         int64_t dloss_count, const float* weight_total, const ClassLossOptions& options) {
  const int64_t outer = options.outer, classes = options.classes, inner = options.inner;
  const int64_t positions = outer * inner;
  const float smoothing = options.label_smoothing;
  const float divisor = weight_total ? weight_total[0] : 1.0f;
  const int threads = num_threads();
  parallel_region(positions * classes >= kParallelMinElements && threads > 1, threads, [&] {
    for (const int64_t p : team_static(0, positions)) {
      const int64_t n = p / inner, k = p - n * inner;
      float* d = dinput + n * classes * inner + k;
      const int64_t label = static_cast<int64_t>(labels[p]);
      if (label == options.ignore_index) {
        for (int64_t c = 0; c < classes; ++c) d[c * inner] = 0.0f;
        continue;
      }
      const float upstream = dloss[dloss_count == 1 ? 0 : p] / divisor;
      const auto weight_of = [&](int64_t c) { return options.class_weight ? options.class_weight[c] : 1.0f; };
      const float label_weight = (1.0f - smoothing) * weight_of(label);
      const float smooth_scale = smoothing / static_cast<float>(classes);
      if (options.from_logits) {
        // d/dx_c of −w_y·logp_y is w_y(p_c − [c = y]); of −Σ_k w_k·logp_k it is p_c·Σ_k w_k − w_c.
        const float* s = saved + n * classes * inner + k;
        float weight_sum = 0.0f;
        if (smoothing != 0.0f) for (int64_t c = 0; c < classes; ++c) weight_sum += weight_of(c);
        for (int64_t c = 0; c < classes; ++c) {
          const float prob = s[c * inner];
          float g = label_weight * (prob - (c == label ? 1.0f : 0.0f));
          if (smoothing != 0.0f) g += smooth_scale * (prob * weight_sum - weight_of(c));
          d[c * inner] = upstream * g;
        }
      } else {
        for (int64_t c = 0; c < classes; ++c) {
          float g = c == label ? -label_weight : 0.0f;
          if (smoothing != 0.0f) g -= smooth_scale * weight_of(c);
          d[c * inner] = upstream * g;
        }
      }
    }
  });
}

}  // namespace weightnorm::cpu
