// Elementwise kernels (CPU). Mirrors cuda/elementwise.cuh op by op.
#pragma once
#include <cstdint>

#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm::cpu {

// out = alpha * x. With alpha = 1 it is the copy the benchmarks use as the memory roofline (read N, write N).
void scale(float* out, const float* x, float alpha, int64_t count);
// out = a + b.
void add(float* out, const float* a, const float* b, int64_t count);
// out = a * b.
void multiply(float* out, const float* a, const float* b, int64_t count);
// y = alpha * x + beta * y (beta = 1: gradient accumulation; running statistics).
void axpby(float* y, float alpha, const float* x, float beta, int64_t count);
void fill(float* out, float value, int64_t count);
// y = x > 0 ? x : negative_slope * x (slope 0: ReLU). dx = dy * (x > 0 ? 1 : negative_slope).
void relu_forward(float* y, const float* x, float negative_slope, int64_t count);
void relu_backward(float* dx, const float* dy, const float* x, float negative_slope, int64_t count);
// y = tanh(x); dx = dy * (1 - y^2), from the saved output.
void tanh_forward(float* y, const float* x, int64_t count);
void tanh_backward(float* dx, const float* dy, const float* y, int64_t count);
// Inverted dropout: mask[i] = (u(seed, i) >= p) / (1 - p), y = x * mask. u is the counter-based uniform of
// cpu/random.h, so CPU and CUDA draw the same mask for the same seed. The backward is multiply(dx, dy, mask).
void dropout_forward(float* y, float* mask, const float* x, float p, uint64_t seed, int64_t count);
// y = x + std * n(seed, i), n the standard normal of fill_normal (same values on every device).
void gaussian_noise(float* y, const float* x, float std, uint64_t seed, int64_t count);
// out[o, k, i] = x[o, k, i] + bias[k] (Linear: [batch, features, 1]; conv: [batch, channels, height*width]).
void channel_bias_add(float* out, const float* x, const float* bias, const ChannelLayout& layout);

// Element type conversion: float32 -> bfloat16 rounds to nearest even (NaN stays NaN); bfloat16 -> float32 is exact.
void convert(bfloat16* out, const float* x, int64_t count);
void convert(float* out, const bfloat16* x, int64_t count);

}  // namespace weightnorm::cpu
