// CUDA convolution (im2col + GEMM), padding, upsampling and pooling, NCHW (see conv.cuh). Same plan as cpu/conv.cc:
//   col [C*kh*kw, G*OH*OW]  im2col of a batch of G images side by side (one thread per col element), dilation and
//             per-axis stride and padding included; with groups, group gi uses the row block gi of col.
//   forward   y_g [OC, G*OH*OW] = w x col on the GEMM (one GEMM per group), bias as its row_bias (weight norm:
//             g/||v|| as its row_scale, the raw product kept); scattered to NCHW when G > 1.
//   dw        dw += dy_g x col^T (GEMM per group, beta = 1 from the second batch on; split-k inside the GEMM keeps
//             a small dw busy). The weight-norm dv epilogue subtracts its projection in the first batch only.
//   dx        dcol = w^T x dy_g, then col2im as a gather: one thread per dx element adds the dcol entries that
//             came from it in a fixed (i, j) order, so no atomics.
//   dbias     one block per channel, a fixed-shape tree over batch and space.
// The transposed convolution is the adjoint: forward = the dx path (its bias as col2im's starting value), its dx =
// the direct forward of dy, its dw = the direct dw with x and dy swapped.
// Padding and upsampling backward are gathers too (pad_output_ranges, shared with the CPU).
// Pooling: max_pool2d_backward is a gather too (one thread per input element, visiting the windows that contain
// it in row-major order and taking dy from those whose first maximum it is), or, when windows cannot overlap
// (stride >= kernel), one thread per window writing its whole window. Every result is bitwise identical run to
// run. All element offsets are 64-bit.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "check.cuh"
#include "conv.cuh"
#include "gemm.cuh"
#include "runtime.cuh"
#include "weightnorm/conv_checks.h"

namespace weightnorm::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int64_t kColBudget = int64_t{1} << 24;  // floats (64 MiB) of im2col scratch per batch of images

int multiprocessors() { return std::max(1, device_status().multiprocessors); }

// Grid for a grid-stride loop over `count` items.
unsigned blocks_for(int64_t count) {
  return unsigned(std::clamp<int64_t>((count + kBlock - 1) / kBlock, 1, int64_t{multiprocessors()} * 32));
}

// col[(c*kh + i)*kw + j, image*OHW + oh*OW + ow] = x[image, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw], 0 outside.
__global__ void im2col_kernel(float* __restrict__ col, const float* __restrict__ x, int64_t images, ConvGeometry g) {
  const int64_t spatial = g.out_height * g.out_width, width = images * spatial;
  const int64_t count = g.in_channels * g.kernel_height * g.kernel_width * width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = e / width, column = e % width;
    const int64_t image = column / spatial, position = column % spatial;
    const int64_t oh = position / g.out_width, ow = position % g.out_width;
    const int64_t j = row % g.kernel_width, i = (row / g.kernel_width) % g.kernel_height;
    const int64_t c = row / (g.kernel_width * g.kernel_height);
    const int64_t h = oh * g.stride_height - g.padding_height + i * g.dilation_height;
    const int64_t w = ow * g.stride_width - g.padding_width + j * g.dilation_width;
    col[e] = (h >= 0 && h < g.in_height && w >= 0 && w < g.in_width)
                 ? x[((image * g.in_channels + c) * g.in_height + h) * g.in_width + w]
                 : 0.0f;
  }
}

// dx[image, c, h, w] = start[c] (0 when null) + the sum over (i, j), ascending, of
// dcol[(c*kh + i)*kw + j, image*OHW + oh*OW + ow] for the output position (oh, ow) that read x[h, w] through kernel
// tap (i, j), if any.
__global__ void col2im_kernel(float* __restrict__ dx, const float* __restrict__ dcol, const float* __restrict__ start,
                              int64_t images, ConvGeometry g) {
  const int64_t spatial = g.out_height * g.out_width, width = images * spatial;
  const int64_t count = images * g.in_channels * g.in_height * g.in_width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = e % g.in_width, h = (e / g.in_width) % g.in_height;
    const int64_t c = (e / (g.in_width * g.in_height)) % g.in_channels;
    const int64_t image = e / (g.in_width * g.in_height * g.in_channels);
    float sum = start ? start[c] : 0.0f;
    for (int64_t i = 0; i < g.kernel_height; ++i) {
      const int64_t top = h + g.padding_height - i * g.dilation_height;  // oh * stride
      if (top < 0 || top % g.stride_height != 0 || top / g.stride_height >= g.out_height) continue;
      const int64_t oh = top / g.stride_height;
      for (int64_t j = 0; j < g.kernel_width; ++j) {
        const int64_t left = w + g.padding_width - j * g.dilation_width;
        if (left < 0 || left % g.stride_width != 0 || left / g.stride_width >= g.out_width) continue;
        const int64_t ow = left / g.stride_width;
        const int64_t row = (c * g.kernel_height + i) * g.kernel_width + j;
        sum += dcol[row * width + image * spatial + oh * g.out_width + ow];
      }
    }
    dx[e] = sum;
  }
}

// [C, images*spatial] (image blocks side by side) -> [images, C, spatial] (to_images), or back.
__global__ void regroup_kernel(float* __restrict__ out, const float* __restrict__ in, int64_t images,
                               int64_t channels, int64_t spatial, bool to_images) {
  const int64_t count = images * channels * spatial;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    // e indexes the [images, C, spatial] layout.
    const int64_t s = e % spatial, c = (e / spatial) % channels, image = e / (spatial * channels);
    const int64_t grouped = (c * images + image) * spatial + s;
    if (to_images) out[e] = in[grouped];
    else out[grouped] = in[e];
  }
}

// dbias[c] = sum over images and space of dy[image, c, :]: one block per channel; each thread sums a fixed
// strided subset, then a fixed tree across the block.
__global__ void __launch_bounds__(kBlock) bias_grad_kernel(float* __restrict__ dbias, const float* __restrict__ dy,
                                                           int64_t images, int64_t channels, int64_t spatial) {
  __shared__ float partial[kBlock];
  const int64_t c = blockIdx.x;
  const int64_t count = images * spatial;
  float sum = 0.0f;
  for (int64_t e = threadIdx.x; e < count; e += kBlock) {
    const int64_t image = e / spatial, s = e % spatial;
    sum += dy[(image * channels + c) * spatial + s];
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
#pragma unroll
  for (int half = kBlock / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) dbias[c] = partial[0];
}

__global__ void fill_kernel(float* __restrict__ out, float value, int64_t count) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x)
    out[e] = value;
}

void fill(float* out, float value, int64_t count) {
  if (count == 0) return;
  fill_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(out, value, count);
  WN_CUDA_CHECK_LAUNCH();
}

void im2col(float* col, const float* x, int64_t images, const ConvGeometry& g) {
  const int64_t count = g.in_channels * g.kernel_height * g.kernel_width * images * g.out_spatial();
  im2col_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(col, x, images, g);
  WN_CUDA_CHECK_LAUNCH();
}

void col2im(float* dx, const float* dcol, const float* start, int64_t images, const ConvGeometry& g) {
  const int64_t count = images * g.in_channels * g.in_spatial();
  col2im_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(dx, dcol, start, images, g);
  WN_CUDA_CHECK_LAUNCH();
}

void regroup(float* out, const float* in, int64_t images, int64_t channels, int64_t spatial, bool to_images) {
  const int64_t count = images * channels * spatial;
  regroup_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(out, in, images, channels, spatial, to_images);
  WN_CUDA_CHECK_LAUNCH();
}

void channel_sums(float* dbias, const float* dy, int64_t batch, int64_t channels, int64_t spatial) {
  if (channels == 0) return;
  bias_grad_kernel<<<unsigned(channels), kBlock, 0, library_stream()>>>(dbias, dy, batch, channels, spatial);
  WN_CUDA_CHECK_LAUNCH();
}

// dcol [C*kh*kw, n] = w^T x dys, per group (n = the batch's images * OH*OW).
void weight_transpose_product(float* dcol, const float* w, const float* dys, int64_t n, const ConvGeometry& g) {
  const int64_t patch = g.patch(), ocg = g.out_channels_per_group();
  for (int64_t gi = 0; gi < g.groups; ++gi)
    gemm(dcol + gi * patch * n, w + gi * ocg * patch, dys + gi * ocg * n, GemmShape{patch, n, ocg}.transposing_a(), GemmEpilogue{});
}

const float* offset_or_null(const float* p, int64_t offset) { return p ? p + offset : nullptr; }

}  // namespace

void conv_forward(float* y, const float* x, const float* w, const float* bias, const ConvGeometry& g,
                  const ConvOutputScale& scale) {
  check_conv_geometry(g);
  if (g.batch == 0) return;
  const int64_t spatial = g.out_spatial(), in_spatial = g.in_spatial();
  const int64_t patch = g.patch(), ocg = g.out_channels_per_group();
  const int64_t batch = im2col_batch(g, kColBudget);
  const bool keeps_raw = scale.channel_scale != nullptr && scale.raw_out != nullptr;
  Scratch col(is_pointwise_conv(g) ? 0 : size_t(g.groups * patch * batch * spatial) * sizeof(float));
  Scratch product(batch > 1 ? size_t(g.out_channels * batch * spatial) * sizeof(float) : 0);
  Scratch raw_product(batch > 1 && keeps_raw ? size_t(g.out_channels * batch * spatial) * sizeof(float) : 0);
  for (int64_t first = 0; first < g.batch; first += batch) {
    const int64_t images = std::min(batch, g.batch - first), n = images * spatial;
    const float* x_images = x + first * g.in_channels * in_spatial;
    float* y_images = y + first * g.out_channels * spatial;
    float* raw_images = keeps_raw ? scale.raw_out + first * g.out_channels * spatial : nullptr;
    const float* cols = x_images;
    if (!is_pointwise_conv(g)) {
      im2col(col.floats(), x_images, images, g);
      cols = col.floats();
    }
    float* target = images > 1 ? product.floats() : y_images;
    float* raw_target = images > 1 ? raw_product.floats() : raw_images;
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      GemmEpilogue epilogue;
      epilogue.row_bias = offset_or_null(bias, gi * ocg);
      epilogue.row_scale = offset_or_null(scale.channel_scale, gi * ocg);
      epilogue.raw_out = keeps_raw ? raw_target + gi * ocg * n : nullptr;
      gemm(target + gi * ocg * n, w + gi * ocg * patch, cols + gi * patch * n, GemmShape{ocg, n, patch}, epilogue);
    }
    if (images > 1) {
      regroup(y_images, target, images, g.out_channels, spatial, true);
      if (keeps_raw) regroup(raw_images, raw_target, images, g.out_channels, spatial, true);
    }
  }
}

void conv_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w,
                   const ConvGeometry& g, const ConvWeightGradientEpilogue& dw_epilogue) {
  check_conv_geometry(g);
  const int64_t spatial = g.out_spatial(), in_spatial = g.in_spatial();
  const int64_t patch = g.patch(), ocg = g.out_channels_per_group();
  if (dbias) channel_sums(dbias, dy, g.batch, g.out_channels, spatial);
  if (!dw && !dx) return;
  if (g.batch == 0) {
    // No data: dw is 0, and so is dv (its subtracted term is proportional to dg, which is 0 too).
    if (dw) fill(dw, 0.0f, g.out_channels * patch);
    return;
  }
  const int64_t batch = im2col_batch(g, kColBudget);
  Scratch col(is_pointwise_conv(g) ? 0 : size_t(g.groups * patch * batch * spatial) * sizeof(float));
  Scratch dy_regrouped(batch > 1 ? size_t(g.out_channels * batch * spatial) * sizeof(float) : 0);
  for (int64_t first = 0; first < g.batch; first += batch) {
    const int64_t images = std::min(batch, g.batch - first), n = images * spatial;
    const float* dy_images = dy + first * g.out_channels * spatial;
    const float* dys = dy_images;
    if (images > 1) {
      regroup(dy_regrouped.floats(), dy_images, images, g.out_channels, spatial, false);
      dys = dy_regrouped.floats();
    }
    if (dw) {
      const float* cols = x + first * g.in_channels * in_spatial;
      if (!is_pointwise_conv(g)) {
        im2col(col.floats(), cols, images, g);
        cols = col.floats();
      }
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        // Every batch of images adds its scaled product; the first also subtracts the projection onto v.
        GemmEpilogue epilogue;
        epilogue.beta = first == 0 ? 0.0f : 1.0f;
        epilogue.row_scale = offset_or_null(dw_epilogue.channel_scale, gi * ocg);
        if (first == 0 && dw_epilogue.channel_scale) {
          epilogue.subtract_coefficient = offset_or_null(dw_epilogue.subtract_coefficient, gi * ocg);
          epilogue.subtract_matrix = offset_or_null(dw_epilogue.subtract_matrix, gi * ocg * patch);
        }
        gemm(dw + gi * ocg * patch, dys + gi * ocg * n, cols + gi * patch * n, GemmShape{ocg, patch, n}.transposing_b(), epilogue);
      }
    }
    if (dx) {
      float* dx_images = dx + first * g.in_channels * in_spatial;
      if (is_pointwise_conv(g)) {
        weight_transpose_product(dx_images, w, dys, n, g);
      } else {
        weight_transpose_product(col.floats(), w, dys, n, g);
        col2im(dx_images, col.floats(), nullptr, images, g);
      }
    }
  }
}

void conv_transpose_forward(float* y, const float* x, const float* w, const float* bias, const ConvGeometry& g) {
  check_conv_geometry(g);
  if (g.batch == 0) return;
  const int64_t spatial = g.out_spatial(), in_spatial = g.in_spatial();
  const int64_t patch = g.patch(), ocg = g.out_channels_per_group();
  const int64_t batch = im2col_batch(g, kColBudget);
  Scratch col(is_pointwise_conv(g) ? 0 : size_t(g.groups * patch * batch * spatial) * sizeof(float));
  Scratch x_regrouped(batch > 1 ? size_t(g.out_channels * batch * spatial) * sizeof(float) : 0);
  for (int64_t first = 0; first < g.batch; first += batch) {
    const int64_t images = std::min(batch, g.batch - first), n = images * spatial;
    const float* x_images = x + first * g.out_channels * spatial;
    float* y_images = y + first * g.in_channels * in_spatial;
    const float* xs = x_images;
    if (images > 1) {
      regroup(x_regrouped.floats(), x_images, images, g.out_channels, spatial, false);
      xs = x_regrouped.floats();
    }
    if (is_pointwise_conv(g)) {
      // One image: y [C, spatial] = w^T x x, the bias per row.
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        GemmEpilogue epilogue;
        epilogue.row_bias = offset_or_null(bias, gi * patch);
        gemm(y_images + gi * patch * n, w + gi * ocg * patch, xs + gi * ocg * n, GemmShape{patch, n, ocg}.transposing_a(), epilogue);
      }
    } else {
      weight_transpose_product(col.floats(), w, xs, n, g);
      col2im(y_images, col.floats(), bias, images, g);
    }
  }
}

#include "weightnorm/ops/conv_composed.inc"

// ---------------------------------------------------------------------------------------------------------------
// Padding and upsampling: one thread per output (forward) or input (backward, a gather) element.

namespace {

__global__ void pad_forward_kernel(float* __restrict__ y, const float* __restrict__ x, PadGeometry g) {
  const int64_t oh_count = g.out_height(), ow_count = g.out_width(), count = g.planes * oh_count * ow_count;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = e % ow_count, oh = (e / ow_count) % oh_count, p = e / (ow_count * oh_count);
    const int64_t h = pad_source_index(oh, g.top, g.height, g.mode), w = pad_source_index(ow, g.left, g.width, g.mode);
    y[e] = (h < 0 || w < 0) ? g.value : x[(p * g.height + h) * g.width + w];
  }
}

__global__ void pad_backward_kernel(float* __restrict__ dx, const float* __restrict__ dy, PadGeometry g) {
  const int64_t oh_count = g.out_height(), ow_count = g.out_width(), count = g.planes * g.height * g.width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = e % g.width, h = (e / g.width) % g.height, p = e / (g.width * g.height);
    const PadRanges rows = pad_output_ranges(h, g.top, g.height, oh_count, g.mode);
    const PadRanges columns = pad_output_ranges(w, g.left, g.width, ow_count, g.mode);
    const float* grad = dy + p * oh_count * ow_count;
    float sum = 0.0f;
    for (int r = 0; r < rows.count; ++r)
      for (int64_t oh = rows.begin[r]; oh < rows.end[r]; ++oh)
        for (int c = 0; c < columns.count; ++c)
          for (int64_t ow = columns.begin[c]; ow < columns.end[c]; ++ow) sum += grad[oh * ow_count + ow];
    dx[e] = sum;
  }
}

__global__ void upsample_nearest_forward_kernel(float* __restrict__ y, const float* __restrict__ x, UpsampleGeometry g) {
  const int64_t oh_count = g.out_height(), ow_count = g.out_width(), count = g.planes * oh_count * ow_count;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = e % ow_count, oh = (e / ow_count) % oh_count, p = e / (ow_count * oh_count);
    y[e] = x[(p * g.height + oh / g.scale_height) * g.width + ow / g.scale_width];
  }
}

__global__ void upsample_nearest_backward_kernel(float* __restrict__ dx, const float* __restrict__ dy, UpsampleGeometry g) {
  const int64_t ow_count = g.out_width(), count = g.planes * g.height * g.width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = e % g.width, h = (e / g.width) % g.height, p = e / (g.width * g.height);
    const float* grad = dy + p * g.out_height() * ow_count;
    float sum = 0.0f;
    for (int64_t a = 0; a < g.scale_height; ++a)
      for (int64_t b = 0; b < g.scale_width; ++b) sum += grad[(h * g.scale_height + a) * ow_count + w * g.scale_width + b];
    dx[e] = sum;
  }
}

}  // namespace

void pad_forward(float* y, const float* x, const PadGeometry& g) {
  check_pad_geometry(g);
  const int64_t count = g.planes * g.out_height() * g.out_width();
  if (count == 0) return;
  pad_forward_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(y, x, g);
  WN_CUDA_CHECK_LAUNCH();
}

void pad_backward(float* dx, const float* dy, const PadGeometry& g) {
  check_pad_geometry(g);
  const int64_t count = g.planes * g.height * g.width;
  if (count == 0) return;
  pad_backward_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(dx, dy, g);
  WN_CUDA_CHECK_LAUNCH();
}

void upsample_nearest_forward(float* y, const float* x, const UpsampleGeometry& g) {
  check_upsample_geometry(g);
  const int64_t count = g.planes * g.out_height() * g.out_width();
  if (count == 0) return;
  upsample_nearest_forward_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(y, x, g);
  WN_CUDA_CHECK_LAUNCH();
}

void upsample_nearest_backward(float* dx, const float* dy, const UpsampleGeometry& g) {
  check_upsample_geometry(g);
  const int64_t count = g.planes * g.height * g.width;
  if (count == 0) return;
  upsample_nearest_backward_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(dx, dy, g);
  WN_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------------------------------------------
// Pooling

namespace {

struct PoolGeometry {
  int64_t planes, height, width, kernel, stride, out_height, out_width;
  bool relu;  // x is a ReLU's input (see max_pool2d_forward/backward)
};

// Plane offset of the first maximum of window (oh, ow), rows then columns; a NaN counts as a maximum (the first
// one wins), as on the CPU.
__device__ __forceinline__ int64_t window_argmax(const float* __restrict__ plane, const PoolGeometry& g, int64_t oh,
                                                 int64_t ow) {
  int64_t best = oh * g.stride * g.width + ow * g.stride;
  float best_value = plane[best];
  for (int64_t i = 0; i < g.kernel; ++i) {
    const int64_t row = (oh * g.stride + i) * g.width + ow * g.stride;
    for (int64_t j = 0; j < g.kernel; ++j) {
      const float v = plane[row + j];
      if (v > best_value || (isnan(v) && !isnan(best_value))) {
        best_value = v;
        best = row + j;
      }
    }
  }
  return best;
}

// With g.relu (x the ReLU's input), as on the CPU: forward, the pointwise ReLU's rule on the window maximum (+0 for
// v <= 0, NaN kept); backward, the window's dy at x's first maximum, +0 when that maximum is not positive (the ReLU
// then passes nothing in the window).
__device__ __forceinline__ bool relu_keeps(float v) { return v > 0.0f || isnan(v); }
__device__ __forceinline__ float relu_window_gradient(const PoolGeometry& g, float window_max, float dy) {
  return !g.relu || window_max > 0.0f ? dy : 0.0f;
}

__global__ void max_pool2d_forward_kernel(float* __restrict__ y, const float* __restrict__ x, PoolGeometry g) {
  const int64_t count = g.planes * g.out_height * g.out_width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = e % g.out_width, oh = (e / g.out_width) % g.out_height, p = e / (g.out_width * g.out_height);
    const float* plane = x + p * g.height * g.width;
    const float best = plane[window_argmax(plane, g, oh, ow)];
    y[e] = !g.relu || relu_keeps(best) ? best : 0.0f;
  }
}

// Overlapping windows: one thread per input element; the windows containing (h, w) have oh in
// [ceil((h - kernel + 1) / stride), floor(h / stride)], visited in row-major order as on the CPU.
__global__ void max_pool2d_backward_gather_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                                  const float* __restrict__ x, PoolGeometry g) {
  const int64_t count = g.planes * g.height * g.width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = e % g.width, h = (e / g.width) % g.height, p = e / (g.width * g.height);
    const float* plane = x + p * g.height * g.width;
    const float* grad = dy + p * g.out_height * g.out_width;
    const int64_t self = h * g.width + w;
    const int64_t oh_first = h >= g.kernel ? (h - g.kernel) / g.stride + 1 : 0;
    const int64_t oh_last = min(h / g.stride, g.out_height - 1);
    const int64_t ow_first = w >= g.kernel ? (w - g.kernel) / g.stride + 1 : 0;
    const int64_t ow_last = min(w / g.stride, g.out_width - 1);
    float sum = 0.0f;
    for (int64_t oh = oh_first; oh <= oh_last; ++oh)
      for (int64_t ow = ow_first; ow <= ow_last; ++ow)
        if (window_argmax(plane, g, oh, ow) == self) sum += relu_window_gradient(g, plane[self], grad[oh * g.out_width + ow]);
    dx[e] = sum;
  }
}

// Windows that cannot overlap (stride >= kernel): one thread per window writes its whole window (0 except at the
// first maximum); positions outside every window were zeroed beforehand.
__global__ void max_pool2d_backward_window_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                                  const float* __restrict__ x, PoolGeometry g) {
  const int64_t count = g.planes * g.out_height * g.out_width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = e % g.out_width, oh = (e / g.out_width) % g.out_height, p = e / (g.out_width * g.out_height);
    const float* plane = x + p * g.height * g.width;
    float* out = dx + p * g.height * g.width;
    const int64_t best = window_argmax(plane, g, oh, ow);
    const float grad = relu_window_gradient(g, plane[best], dy[e]);
    for (int64_t i = 0; i < g.kernel; ++i) {
      const int64_t row = (oh * g.stride + i) * g.width + ow * g.stride;
      for (int64_t j = 0; j < g.kernel; ++j) out[row + j] = row + j == best ? grad : 0.0f;
    }
  }
}

// One warp per plane: lanes take a fixed strided subset, then a fixed butterfly.
__global__ void global_avg_pool_forward_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t planes,
                                               int64_t plane_size) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t p = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; p < planes; p += warps) {
    const float* plane = x + p * plane_size;
    float sum = 0.0f;
    for (int64_t i = lane; i < plane_size; i += 32) sum += plane[i];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) y[p] = sum / float(plane_size);
  }
}

__global__ void global_avg_pool_backward_kernel(float* __restrict__ dx, const float* __restrict__ dy, int64_t planes,
                                                int64_t plane_size) {
  const int64_t count = planes * plane_size;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x)
    dx[e] = dy[e / plane_size] / float(plane_size);
}

PoolGeometry pool_geometry(int64_t planes, int64_t height, int64_t width, int64_t kernel, int64_t stride, bool relu) {
  check_pool_geometry(planes, height, width, kernel, stride);
  return {planes, height, width, kernel, stride, (height - kernel) / stride + 1, (width - kernel) / stride + 1, relu};
}

}  // namespace

void max_pool2d_forward(float* y, const float* x, int64_t planes, int64_t height, int64_t width, int64_t kernel,
                        int64_t stride, bool relu) {
  const PoolGeometry g = pool_geometry(planes, height, width, kernel, stride, relu);
  const int64_t count = planes * g.out_height * g.out_width;
  if (count == 0) return;
  max_pool2d_forward_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(y, x, g);
  WN_CUDA_CHECK_LAUNCH();
}

void max_pool2d_backward(float* dx, const float* dy, const float* x, int64_t planes, int64_t height, int64_t width,
                         int64_t kernel, int64_t stride, bool relu) {
  const PoolGeometry g = pool_geometry(planes, height, width, kernel, stride, relu);
  if (planes == 0) return;
  if (stride >= kernel) {
    // Windows tile the plane exactly when stride == kernel and the size divides; otherwise some positions lie in
    // no window and must be zeroed first.
    const bool covered = stride == kernel && height % kernel == 0 && width % kernel == 0;
    if (!covered) fill(dx, 0.0f, planes * height * width);
    const int64_t count = planes * g.out_height * g.out_width;
    max_pool2d_backward_window_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(dx, dy, x, g);
  } else {
    const int64_t count = planes * height * width;
    max_pool2d_backward_gather_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(dx, dy, x, g);
  }
  WN_CUDA_CHECK_LAUNCH();
}

void global_avg_pool_forward(float* y, const float* x, int64_t planes, int64_t plane_size) {
  if (planes < 0 || plane_size <= 0) throw std::invalid_argument("global_avg_pool: plane_size must be positive");
  if (planes == 0) return;
  const int64_t warps_per_block = kBlock / 32;
  const unsigned blocks = unsigned(std::clamp<int64_t>((planes + warps_per_block - 1) / warps_per_block, 1,
                                                       int64_t{multiprocessors()} * 32));
  global_avg_pool_forward_kernel<<<blocks, kBlock, 0, library_stream()>>>(y, x, planes, plane_size);
  WN_CUDA_CHECK_LAUNCH();
}

void global_avg_pool_backward(float* dx, const float* dy, int64_t planes, int64_t plane_size) {
  if (planes < 0 || plane_size <= 0) throw std::invalid_argument("global_avg_pool: plane_size must be positive");
  const int64_t count = planes * plane_size;
  if (count == 0) return;
  global_avg_pool_backward_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(dx, dy, planes, plane_size);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace weightnorm::cuda
