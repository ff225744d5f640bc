// The convolution family's plain data, shared by cpu/conv.h and cuda/conv.cuh (their entry points: ops/conv.inc).
// Plain data only (no host-only types), so that nvcc compiles it as well as g++.
#pragma once
#include <cstdint>

#include "weightnorm/host_device.h"

namespace weightnorm {

// A direct convolution, NCHW, with grouped channels: x [batch, in_channels, in_height, in_width] and
// w [out_channels, in_channels / groups, kernel_height, kernel_width] give y [batch, out_channels, out_height,
// out_width], y[n, o, oh, ow] = sum over the in_channels / groups channels c of o's group and the taps (i, j) of
// w[o, c, i, j] * x[n, group(o) * in_channels / groups + c, oh * stride_h - padding_h + i * dilation_h,
// ow * stride_w - padding_w + j * dilation_w] (0 outside x). A 1-D convolution is the height-1 case.
// out_height and out_width are stored, not derived: at most natural_out_size(...); a transposed convolution whose
// output padding exceeds its stride (allowed by a larger dilation) maps onto a direct one with an output one
// position shorter than the natural size.
// The transposed convolution with the same geometry is this map's adjoint: [batch, out_channels, out_height,
// out_width] -> [batch, in_channels, in_height, in_width], with the same w (PyTorch's ConvTranspose layout
// [its in channels, its out channels / groups, k...] is exactly w here).
struct ConvGeometry {
  int64_t batch = 0, in_channels = 0, out_channels = 0, groups = 1;
  int64_t in_height = 1, in_width = 1, out_height = 1, out_width = 1;
  int64_t kernel_height = 1, kernel_width = 1;
  int64_t stride_height = 1, stride_width = 1;
  int64_t padding_height = 0, padding_width = 0;
  int64_t dilation_height = 1, dilation_width = 1;

  WN_HOST_DEVICE int64_t in_channels_per_group() const { return in_channels / groups; }
  WN_HOST_DEVICE int64_t out_channels_per_group() const { return out_channels / groups; }
  // Rows of one group's im2col matrix (and columns of its weight matrix).
  WN_HOST_DEVICE int64_t patch() const { return in_channels_per_group() * kernel_height * kernel_width; }
  WN_HOST_DEVICE int64_t in_spatial() const { return in_height * in_width; }
  WN_HOST_DEVICE int64_t out_spatial() const { return out_height * out_width; }
};

// The output size of a direct convolution along one axis (<= 0 when the dilated kernel does not fit).
WN_HOST_DEVICE int64_t natural_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation) {
  return (in + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1;
}

// Whether both backends can run the geometry: positive sizes, groups dividing both channel counts, and stored output
// sizes within what the dilated kernel over the padded input allows. Checked by each backend's entry points.
inline bool is_valid_geometry(const ConvGeometry& g) {
  return g.batch >= 0 && g.in_channels > 0 && g.out_channels > 0 && g.groups > 0 && g.in_channels % g.groups == 0 &&
         g.out_channels % g.groups == 0 && g.in_height > 0 && g.in_width > 0 && g.kernel_height > 0 &&
         g.kernel_width > 0 && g.stride_height > 0 && g.stride_width > 0 && g.padding_height >= 0 &&
         g.padding_width >= 0 && g.dilation_height > 0 && g.dilation_width > 0 && g.out_height > 0 &&
         g.out_width > 0 &&
         g.out_height <= natural_out_size(g.in_height, g.kernel_height, g.stride_height, g.padding_height,
                                          g.dilation_height) &&
         g.out_width <= natural_out_size(g.in_width, g.kernel_width, g.stride_width, g.padding_width, g.dilation_width);
}

// Weight norm over dim 0 of a direct convolution without materializing w = s * v (s = g/||v|| per output channel):
// the forward GEMM runs on v and scales its rows by s in the epilogue, optionally also keeping the raw product
// t = conv(x, v) for the backward (null pointers: a plain convolution; null raw_out: t is not kept).
struct ConvOutputScale {
  const float* channel_scale = nullptr;  // [out_channels]
  float* raw_out = nullptr;              // like y; written only when channel_scale is set
};

// The matching weight gradient: dv = channel_scale * (dy x col^T) - subtract_coefficient * v, written in the
// weight-gradient GEMM's epilogue (null channel_scale: plain dw).
struct ConvWeightGradientEpilogue {
  const float* channel_scale = nullptr;         // [out_channels]
  const float* subtract_coefficient = nullptr;  // [out_channels]
  const float* subtract_matrix = nullptr;       // v, like w
};

// The original square-kernel 2-D geometry (kept for its callers): the ConvGeometry with groups 1, dilation 1 and
// the same stride and padding on both axes.
struct Conv2dGeometry {
  int64_t batch, in_channels, in_height, in_width;
  int64_t out_channels, kernel_height, kernel_width;
  int64_t stride, padding;
  WN_HOST_DEVICE int64_t out_height() const { return (in_height + 2 * padding - kernel_height) / stride + 1; }
  WN_HOST_DEVICE int64_t out_width() const { return (in_width + 2 * padding - kernel_width) / stride + 1; }
  ConvGeometry general() const {
    ConvGeometry g;
    g.batch = batch;
    g.in_channels = in_channels;
    g.out_channels = out_channels;
    g.in_height = in_height;
    g.in_width = in_width;
    g.out_height = out_height();
    g.out_width = out_width();
    g.kernel_height = kernel_height;
    g.kernel_width = kernel_width;
    g.stride_height = g.stride_width = stride;
    g.padding_height = g.padding_width = padding;
    return g;
  }
};

// Padding of the last two axes of [planes, height, width] (a 1-D pad is height 1, top = bottom = 0): y is
// [planes, top + height + bottom, left + width + right]. Negative pads crop. Constant fills `value`; reflect
// mirrors without repeating the edge (needs pad < size); replicate repeats the edge.
enum class PadMode : int32_t { kConstant = 0, kReflect = 1, kReplicate = 2 };
struct PadGeometry {
  int64_t planes = 0, height = 1, width = 1;
  int64_t top = 0, bottom = 0, left = 0, right = 0;
  PadMode mode = PadMode::kConstant;
  float value = 0.0f;
  WN_HOST_DEVICE int64_t out_height() const { return height + top + bottom; }
  WN_HOST_DEVICE int64_t out_width() const { return width + left + right; }
};

// The input index that output index `o` reads along one padded axis (`before` positions added in front of `size`),
// or -1 for the constant fill. Reflect needs before, after < size (one reflection is enough).
WN_HOST_DEVICE int64_t pad_source_index(int64_t o, int64_t before, int64_t size, PadMode mode) {
  const int64_t i = o - before;
  if (i >= 0 && i < size) return i;
  if (mode == PadMode::kConstant) return -1;
  if (mode == PadMode::kReflect) return i < 0 ? -i : 2 * (size - 1) - i;
  return i < 0 ? 0 : size - 1;
}

// The output indices that read input index i along one padded axis, as up to three ascending ranges [begin, end):
// the mirrored or replicated ones before the input, the direct one, those after it. The backward gathers over
// them (no scatter), in ascending output order.
struct PadRanges {
  int count = 0;
  int64_t begin[3], end[3];
};
WN_HOST_DEVICE void pad_add_range(PadRanges& r, int64_t begin, int64_t end, int64_t out_size) {
  begin = begin < 0 ? 0 : begin;
  end = end > out_size ? out_size : end;
  if (begin < end) {
    r.begin[r.count] = begin;
    r.end[r.count] = end;
    ++r.count;
  }
}
WN_HOST_DEVICE PadRanges pad_output_ranges(int64_t i, int64_t before, int64_t size, int64_t out_size,
                                                PadMode mode) {
  PadRanges r;
  if (mode == PadMode::kReflect && i >= 1) pad_add_range(r, before - i, before - i + 1, out_size);
  if (mode == PadMode::kReplicate && i == 0) pad_add_range(r, 0, before, out_size);
  pad_add_range(r, i + before, i + before + 1, out_size);
  if (mode == PadMode::kReflect && i <= size - 2) {
    const int64_t o = before + 2 * (size - 1) - i;
    pad_add_range(r, o, o + 1, out_size);
  }
  if (mode == PadMode::kReplicate && i == size - 1) pad_add_range(r, before + size, out_size, out_size);
  return r;
}

// Nearest-neighbour upsampling of [planes, height, width] by whole factors: y [planes, height * scale_height,
// width * scale_width], y[p, oh, ow] = x[p, oh / scale_height, ow / scale_width].
struct UpsampleGeometry {
  int64_t planes = 0, height = 1, width = 1, scale_height = 1, scale_width = 1;
  WN_HOST_DEVICE int64_t out_height() const { return height * scale_height; }
  WN_HOST_DEVICE int64_t out_width() const { return width * scale_width; }
};

}  // namespace weightnorm
