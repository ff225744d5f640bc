// CPU softmax cross-entropy (see loss.h). Forward: per row, the max is subtracted before exp (finite for any
// finite logits), the sum of exponentials is taken in double, probs are saved for the backward; the batch mean
// adds the rows' losses in blocks of fixed size, in block order (independent of the thread count).
// An empty batch gives loss 0.
#include "loss.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "weightnorm.h"

namespace weightnorm::cpu {
namespace {

constexpr int64_t kRowsPerBlock = 256;
constexpr int64_t kParallelMinElements = int64_t{1} << 15;

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
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (int64_t b = 0; b < blocks; ++b) {
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
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (int64_t row = 0; row < batch; ++row) {
    const float* p = probs + row * classes;
    float* d = dlogits + row * classes;
    const int64_t label = static_cast<int64_t>(labels[row]);
    for (int64_t c = 0; c < classes; ++c) d[c] = (p[c] - (c == label ? 1.0f : 0.0f)) * scale;
  }
}

}  // namespace weightnorm::cpu
