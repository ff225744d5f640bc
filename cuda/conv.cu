// CUDA convolution (im2col + GEMM) and pooling, NCHW (see conv.cuh). Same plan as cpu/conv.cc:
//   col [C*kh*kw, G*OH*OW]  im2col of a group of G images side by side (one thread per col element)
//   forward   y_g [OC, G*OH*OW] = w x col on the GEMM, bias as its row_bias; scattered to NCHW when G > 1.
//   dw        dw += dy_g x col^T (GEMM, beta = 1 from the second group on; split-k inside the GEMM keeps a
//             small dw busy).
//   dx        dcol = w^T x dy_g, then col2im as a gather: one thread per dx element adds the dcol entries that
//             came from it in a fixed (i, j) order, so no atomics.
//   dbias     one block per channel, a fixed-shape tree over batch and space.
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

namespace weightnorm::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int64_t kColBudget = int64_t{1} << 24;  // floats (64 MiB) of im2col scratch per group

int multiprocessors() { return std::max(1, device_status().multiprocessors); }

// Grid for a grid-stride loop over `count` items.
unsigned blocks_for(int64_t count) {
  return unsigned(std::clamp<int64_t>((count + kBlock - 1) / kBlock, 1, int64_t{multiprocessors()} * 32));
}

struct Geometry {
  int64_t channels, height, width, kernel_height, kernel_width, stride, padding, out_height, out_width;
};

Geometry device_geometry(const Conv2dGeometry& g) {
  return {g.in_channels, g.in_height, g.in_width, g.kernel_height, g.kernel_width, g.stride, g.padding,
          g.out_height(), g.out_width()};
}

void check_geometry(const Conv2dGeometry& g) {
  if (g.batch < 0 || g.in_channels <= 0 || g.in_height <= 0 || g.in_width <= 0 || g.out_channels <= 0 ||
      g.kernel_height <= 0 || g.kernel_width <= 0 || g.stride <= 0 || g.padding < 0 || g.out_height() <= 0 ||
      g.out_width() <= 0)
    throw std::invalid_argument("conv2d: invalid geometry (sizes must be positive and the kernel must fit)");
}

bool is_pointwise(const Conv2dGeometry& g) {
  return g.kernel_height == 1 && g.kernel_width == 1 && g.stride == 1 && g.padding == 0;
}

int64_t group_size(const Conv2dGeometry& g) {
  if (is_pointwise(g)) return 1;
  const int64_t per_image = g.in_channels * g.kernel_height * g.kernel_width * g.out_height() * g.out_width();
  return std::clamp<int64_t>(kColBudget / std::max<int64_t>(per_image, 1), 1, std::max<int64_t>(g.batch, 1));
}

// col[(c*kh + i)*kw + j, image*OHW + oh*OW + ow] = x[image, c, oh*s - p + i, ow*s - p + j], 0 outside.
__global__ void im2col_kernel(float* __restrict__ col, const float* __restrict__ x, int64_t images, Geometry g) {
  const int64_t spatial = g.out_height * g.out_width, width = images * spatial;
  const int64_t count = g.channels * g.kernel_height * g.kernel_width * width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = e / width, column = e % width;
    const int64_t image = column / spatial, position = column % spatial;
    const int64_t oh = position / g.out_width, ow = position % g.out_width;
    const int64_t j = row % g.kernel_width, i = (row / g.kernel_width) % g.kernel_height;
    const int64_t c = row / (g.kernel_width * g.kernel_height);
    const int64_t h = oh * g.stride - g.padding + i, w = ow * g.stride - g.padding + j;
    col[e] = (h >= 0 && h < g.height && w >= 0 && w < g.width)
                 ? x[((image * g.channels + c) * g.height + h) * g.width + w]
                 : 0.0f;
  }
}

// dx[image, c, h, w] = sum over (i, j), ascending, of dcol[(c*kh + i)*kw + j, image*OHW + oh*OW + ow] for the
// output position (oh, ow) that read x[h, w] through kernel tap (i, j), if any.
__global__ void col2im_kernel(float* __restrict__ dx, const float* __restrict__ dcol, int64_t images, Geometry g) {
  const int64_t spatial = g.out_height * g.out_width, width = images * spatial;
  const int64_t count = images * g.channels * g.height * g.width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = e % g.width, h = (e / g.width) % g.height;
    const int64_t c = (e / (g.width * g.height)) % g.channels, image = e / (g.width * g.height * g.channels);
    float sum = 0.0f;
    for (int64_t i = 0; i < g.kernel_height; ++i) {
      const int64_t top = h + g.padding - i;  // oh * stride
      if (top < 0 || top % g.stride != 0 || top / g.stride >= g.out_height) continue;
      const int64_t oh = top / g.stride;
      for (int64_t j = 0; j < g.kernel_width; ++j) {
        const int64_t left = w + g.padding - j;
        if (left < 0 || left % g.stride != 0 || left / g.stride >= g.out_width) continue;
        const int64_t ow = left / g.stride;
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

void im2col(float* col, const float* x, int64_t images, const Conv2dGeometry& g) {
  const int64_t count = g.in_channels * g.kernel_height * g.kernel_width * images * g.out_height() * g.out_width();
  im2col_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(col, x, images, device_geometry(g));
  WN_CUDA_CHECK_LAUNCH();
}

void regroup(float* out, const float* in, int64_t images, int64_t channels, int64_t spatial, bool to_images) {
  const int64_t count = images * channels * spatial;
  regroup_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(out, in, images, channels, spatial, to_images);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void conv2d_forward(float* y, const float* x, const float* w, const float* bias, const Conv2dGeometry& g) {
  check_geometry(g);
  if (g.batch == 0) return;
  const int64_t spatial = g.out_height() * g.out_width(), in_spatial = g.in_height * g.in_width;
  const int64_t patch = g.in_channels * g.kernel_height * g.kernel_width;
  const int64_t group = group_size(g);
  Scratch col(is_pointwise(g) ? 0 : size_t(patch * group * spatial) * sizeof(float));
  Scratch product(group > 1 ? size_t(g.out_channels * group * spatial) * sizeof(float) : 0);
  GemmEpilogue epilogue;
  epilogue.row_bias = bias;
  for (int64_t first = 0; first < g.batch; first += group) {
    const int64_t images = std::min(group, g.batch - first);
    const float* x_group = x + first * g.in_channels * in_spatial;
    float* y_group = y + first * g.out_channels * spatial;
    const float* cols = x_group;
    if (!is_pointwise(g)) {
      im2col(col.floats(), x_group, images, g);
      cols = col.floats();
    }
    float* target = images > 1 ? product.floats() : y_group;
    gemm(target, w, cols, GemmShape{g.out_channels, images * spatial, patch}, epilogue);
    if (images > 1) regroup(y_group, target, images, g.out_channels, spatial, true);
  }
}

void conv2d_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w,
                     const Conv2dGeometry& g) {
  check_geometry(g);
  const int64_t spatial = g.out_height() * g.out_width(), in_spatial = g.in_height * g.in_width;
  const int64_t patch = g.in_channels * g.kernel_height * g.kernel_width;
  if (dbias) {
    bias_grad_kernel<<<unsigned(g.out_channels), kBlock, 0, library_stream()>>>(dbias, dy, g.batch, g.out_channels,
                                                                               spatial);
    WN_CUDA_CHECK_LAUNCH();
  }
  if (!dw && !dx) return;
  if (g.batch == 0) {
    if (dw) fill(dw, 0.0f, g.out_channels * patch);
    return;
  }
  const int64_t group = group_size(g);
  Scratch col(is_pointwise(g) ? 0 : size_t(patch * group * spatial) * sizeof(float));
  Scratch dy_group(group > 1 ? size_t(g.out_channels * group * spatial) * sizeof(float) : 0);
  for (int64_t first = 0; first < g.batch; first += group) {
    const int64_t images = std::min(group, g.batch - first);
    const float* dy_images = dy + first * g.out_channels * spatial;
    const float* dys = dy_images;
    if (images > 1) {
      regroup(dy_group.floats(), dy_images, images, g.out_channels, spatial, false);
      dys = dy_group.floats();
    }
    if (dw) {
      const float* cols = x + first * g.in_channels * in_spatial;
      if (!is_pointwise(g)) {
        im2col(col.floats(), cols, images, g);
        cols = col.floats();
      }
      GemmEpilogue accumulate;
      accumulate.beta = first == 0 ? 0.0f : 1.0f;
      gemm(dw, dys, cols, GemmShape{g.out_channels, patch, images * spatial}.transposing_b(), accumulate);
    }
    if (dx) {
      float* dx_images = dx + first * g.in_channels * in_spatial;
      if (is_pointwise(g)) {
        gemm(dx_images, w, dys, GemmShape{patch, spatial, g.out_channels}.transposing_a(), GemmEpilogue{});
      } else {
        gemm(col.floats(), w, dys, GemmShape{patch, images * spatial, g.out_channels}.transposing_a(), GemmEpilogue{});
        const int64_t count = images * in_spatial * g.in_channels;
        col2im_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(dx_images, col.floats(), images,
                                                                          device_geometry(g));
        WN_CUDA_CHECK_LAUNCH();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Pooling

namespace {

struct PoolGeometry {
  int64_t planes, height, width, kernel, stride, out_height, out_width;
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

__global__ void max_pool2d_forward_kernel(float* __restrict__ y, const float* __restrict__ x, PoolGeometry g) {
  const int64_t count = g.planes * g.out_height * g.out_width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = e % g.out_width, oh = (e / g.out_width) % g.out_height, p = e / (g.out_width * g.out_height);
    const float* plane = x + p * g.height * g.width;
    y[e] = plane[window_argmax(plane, g, oh, ow)];
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
        if (window_argmax(plane, g, oh, ow) == self) sum += grad[oh * g.out_width + ow];
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
    for (int64_t i = 0; i < g.kernel; ++i) {
      const int64_t row = (oh * g.stride + i) * g.width + ow * g.stride;
      for (int64_t j = 0; j < g.kernel; ++j) out[row + j] = row + j == best ? dy[e] : 0.0f;
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

PoolGeometry pool_geometry(int64_t planes, int64_t height, int64_t width, int64_t kernel, int64_t stride) {
  if (planes < 0 || kernel <= 0 || stride <= 0 || height < kernel || width < kernel)
    throw std::invalid_argument("max_pool2d: invalid geometry (kernel and stride must be positive, kernel <= size)");
  return {planes, height, width, kernel, stride, (height - kernel) / stride + 1, (width - kernel) / stride + 1};
}

}  // namespace

void max_pool2d_forward(float* y, const float* x, int64_t planes, int64_t height, int64_t width, int64_t kernel,
                        int64_t stride) {
  const PoolGeometry g = pool_geometry(planes, height, width, kernel, stride);
  const int64_t count = planes * g.out_height * g.out_width;
  if (count == 0) return;
  max_pool2d_forward_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(y, x, g);
  WN_CUDA_CHECK_LAUNCH();
}

void max_pool2d_backward(float* dx, const float* dy, const float* x, int64_t planes, int64_t height, int64_t width,
                         int64_t kernel, int64_t stride) {
  const PoolGeometry g = pool_geometry(planes, height, width, kernel, stride);
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
