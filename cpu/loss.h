// Losses (CPU). Mirrors cuda/loss.cuh op by op.
#pragma once
#include <cstdint>

#include "weightnorm/layout.h"

namespace weightnorm::cpu {

// Mean softmax cross-entropy over a batch. logits [batch, classes]; labels [batch] holds class indices as
// floats (validated by the caller to be integers in [0, classes)). loss[0] = mean_i(logsumexp(logits_i) -
// logits_i[label_i]), computed stably (max subtracted); probs = softmax(logits), saved for the backward.
void softmax_cross_entropy_forward(float* loss, float* probs, const float* logits, const float* labels, int64_t batch,
                                   int64_t classes);
// dlogits = (probs - onehot(labels)) * dloss[0] / batch. dloss is one float in device memory (no host sync).
void softmax_cross_entropy_backward(float* dlogits, const float* probs, const float* labels, const float* dloss,
                                    int64_t batch, int64_t classes);

}  // namespace weightnorm::cpu
