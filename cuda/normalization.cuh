// Batch normalization (full) and mean-only batch normalization (Salimans & Kingma, 2016, §4) on CUDA. Mirrors
// cpu/normalization.h op by op. All pointers are device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/layout.h"

namespace weightnorm::cuda {

// Statistics are per channel of the layout [batch, channels, spatial] (outer, channels, inner), over outer*inner.
// Training-mode forward: y = (x - mean) * invstd * gamma + beta, invstd = 1/sqrt(biased var + eps); saves mean and
// invstd. var is also written (biased) for the running statistics.
void batch_norm_forward(float* y, float* mean, float* var, float* invstd, const float* x, const float* gamma,
                        const float* beta, const ChannelLayout& layout, float eps);
void batch_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* mean,
                         const float* invstd, const float* gamma, const ChannelLayout& layout);
// Evaluation: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
void batch_norm_inference(float* y, const float* x, const float* running_mean, const float* running_var,
                          const float* gamma, const float* beta, const ChannelLayout& layout, float eps);
// Gradients of batch_norm_inference (the running statistics are constants): with invstd = 1/sqrt(running_var + eps),
// dx = dy * gamma * invstd, dgamma = sum dy * (x - running_mean) * invstd, dbeta = sum dy.
void batch_norm_inference_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                                   const float* running_mean, const float* running_var, const float* gamma,
                                   const ChannelLayout& layout, float eps);
// Mean-only: y = x - mean + bias (training; mean saved) or x - running_mean + bias (evaluation: pass it as mean
// with compute_mean false). Backward: dx = dy - channel mean of dy (the centred gradient), dbias = channel sum of dy.
void mean_only_batch_norm_forward(float* y, float* mean, const float* x, const float* bias, const ChannelLayout& layout,
                                  bool compute_mean);
void mean_only_batch_norm_backward(float* dx, float* dbias, const float* dy, const ChannelLayout& layout);

}  // namespace weightnorm::cuda
