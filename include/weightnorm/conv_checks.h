// The checks both convolution backends make at their entry points, and the geometry questions both ask, written once.
// Host code only (they throw). The TypeScript layer gives users the clear errors; these keep the raw binding and the
// native tests from handing a kernel a geometry it would read or write out of bounds with.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "weightnorm/conv.h"

namespace weightnorm {

inline void check_conv_geometry(const ConvGeometry& g) {
  if (!is_valid_geometry(g))
    throw std::invalid_argument(
        "conv: invalid geometry (sizes must be positive, groups must divide both channel counts and the dilated "
        "kernel must fit the padded input)");
}

// A 1×1 convolution with stride 1 and no padding: the input already is the im2col matrix of each image.
inline bool is_pointwise_conv(const ConvGeometry& g) {
  return g.kernel_height == 1 && g.kernel_width == 1 && g.stride_height == 1 && g.stride_width == 1 &&
         g.padding_height == 0 && g.padding_width == 0 && g.out_height == g.in_height && g.out_width == g.in_width;
}

// How many images one im2col block holds when the block may take `col_budget` floats (at least one image).
inline int64_t im2col_batch(const ConvGeometry& g, int64_t col_budget) {
  if (is_pointwise_conv(g)) return 1;
  const int64_t per_image = g.in_channels * g.kernel_height * g.kernel_width * g.out_spatial();
  return std::clamp<int64_t>(col_budget / std::max<int64_t>(per_image, 1), 1, std::max<int64_t>(g.batch, 1));
}

inline void check_pad_geometry(const PadGeometry& g) {
  const bool mirrored = g.mode != PadMode::kConstant;
  const bool valid = g.planes >= 0 && g.height > 0 && g.width > 0 && g.out_height() > 0 && g.out_width() > 0 &&
                     (!mirrored || (g.top >= 0 && g.bottom >= 0 && g.left >= 0 && g.right >= 0)) &&
                     (g.mode != PadMode::kReflect ||
                      (g.top < g.height && g.bottom < g.height && g.left < g.width && g.right < g.width));
  if (!valid) throw std::invalid_argument("pad: invalid geometry");
}

inline void check_upsample_geometry(const UpsampleGeometry& g) {
  if (g.planes < 0 || g.height <= 0 || g.width <= 0 || g.scale_height <= 0 || g.scale_width <= 0)
    throw std::invalid_argument("upsample_nearest: invalid geometry");
}

inline void check_pool_geometry(int64_t planes, int64_t height, int64_t width, int64_t kernel, int64_t stride) {
  if (planes < 0 || kernel <= 0 || stride <= 0 || height < kernel || width < kernel)
    throw std::invalid_argument("max_pool2d: invalid geometry (kernel and stride must be positive, kernel <= size)");
}

}  // namespace weightnorm
