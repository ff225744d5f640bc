// Convolution (im2col + GEMM) and pooling, NCHW (CUDA). Mirrors cpu/conv.h op by op. All pointers are device memory; work runs on the library stream.
#pragma once
#include <cstdint>

#include "weightnorm/layout.h"

namespace weightnorm::cuda {

struct Conv2dGeometry {
  int64_t batch, in_channels, in_height, in_width;
  int64_t out_channels, kernel_height, kernel_width;
  int64_t stride, padding;
  int64_t out_height() const { return (in_height + 2 * padding - kernel_height) / stride + 1; }
  int64_t out_width() const { return (in_width + 2 * padding - kernel_width) / stride + 1; }
};

// y [batch, out_channels, OH, OW] = conv(x [batch, in_channels, H, W], w [out_channels, in_channels, kh, kw]) + bias
// (bias may be null).
void conv2d_forward(float* y, const float* x, const float* w, const float* bias, const Conv2dGeometry& geometry);
// Gradients of conv2d_forward; any output pointer may be null to skip it. dw and dbias are overwritten (not
// accumulated).
void conv2d_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w,
                     const Conv2dGeometry& geometry);

// Max pooling over planes [planes, height, width] (planes = batch * channels), square window `kernel`, `stride`,
// no padding; output [planes, (height - kernel)/stride + 1, (width - kernel)/stride + 1].
void max_pool2d_forward(float* y, const float* x, int64_t planes, int64_t height, int64_t width, int64_t kernel,
                        int64_t stride);
// dx (overwritten) gets each dy at the first position of its window that holds the maximum (recomputed from x).
void max_pool2d_backward(float* dx, const float* dy, const float* x, int64_t planes, int64_t height, int64_t width,
                         int64_t kernel, int64_t stride);
// y[p] = mean of plane p (plane_size elements); dx[p, :] = dy[p] / plane_size.
void global_avg_pool_forward(float* y, const float* x, int64_t planes, int64_t plane_size);
void global_avg_pool_backward(float* dx, const float* dy, int64_t planes, int64_t plane_size);

}  // namespace weightnorm::cuda
