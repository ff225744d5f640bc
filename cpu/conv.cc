// CPU convolution (im2col + GEMM), padding, upsampling and pooling, NCHW (see conv.h).
//
// A convolution works on batches of G images so that each GEMM is large enough to use every thread. With groups,
// the im2col matrix of all channels is the same as without (its rows are channel-major), and group gi uses its
// row block: one GEMM per group on the slices of w, col and y (a grouped conv is per-group GEMMs).
//   col [C*kh*kw, G*OH*OW]  im2col of the batch's images, side by side (one column block per image)
//   forward   y_g [OC, G*OH*OW] = w [OC, C/groups*kh*kw] x col (per group), bias as the GEMM's row_bias (and,
//             for weight norm, g/||v|| as its row_scale, the raw product kept); when G > 1 the result goes to a
//             scratch buffer and is scattered to NCHW (image-major) order.
//   dw        dw [OC, C/groups*kh*kw] += dy_g x col^T (beta = 1 from the second batch of images on).
//   dx        dcol = w^T x dy_g, then col2im: each dx element gathers the dcol entries that came from it, in a
//             fixed order (no scatter races, deterministic for any thread count).
//   dbias     per channel, the sum of dy over batch and space in double, in a fixed order.
// The transposed convolution is the adjoint with the same pieces: forward = dx's path (w^T x x, col2im, the bias
// as col2im's starting value), its dx = the direct forward of dy, its dw = the direct dw with x and dy swapped.
// A 1x1 kernel with stride 1 and no padding needs no im2col: col is the image itself (G = 1).
// G is the largest batch whose col buffer stays within kColBudget floats.
//
// Per-image path (direct convolutions whose output plane has at least kPerImageMinSpatial positions, the common
// training case of a batch of small images): one image at a time, its im2col block [C*kh*kw, OH*OW] (a few hundred
// KiB: stays in L2) feeds one GEMM per group whose [OC, OH*OW] output IS the image's NCHW block, so the regroup
// copies of the batched path disappear, and the im2col block is read back from cache instead of memory. With at least
// kPerImageMinImagesPerThread images per thread the images are spread over the threads (each GEMM single-threaded:
// regions do not nest); with fewer, the images go one after another and each GEMM uses every thread. Both give the
// same bits: the GEMMs' shapes, and so their summation orders, are those of one image either way. Images (and dw
// chunks) are handed out dynamically: on a shared machine a thread that loses its core for a scheduler slice
// leaves its share to the others instead of holding up the whole op (the result does not depend on who computes
// what).
//   dx  per image: dcol = w^T x dy_n (dy_n is already [OC, OH*OW]), col2im into dx_n.
//   dw  the images are cut into chunks fixed by the shape alone (about kDwChunkColumns columns each); a chunk's
//       partial dw is one thread's sum of its images' dy_n x col_n^T (GEMMs with beta = 1), and dw is the sum of
//       the partials in chunk order, then the epilogue: bitwise the same for any thread count. Used while the
//       partials stay small (OC*C/groups*kh*kw <= kPerImageMaxWeight floats each).
#include "conv.h"

#include <algorithm>
#include <atomic>
#include <utility>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "gemm.h"
#include "weightnorm.h"
#include "weightnorm/conv_checks.h"

namespace weightnorm::cpu {
namespace {

constexpr int64_t kColBudget = int64_t{1} << 22;  // floats (16 MiB) of im2col scratch per batch of images
constexpr int64_t kParallelMinElements = int64_t{1} << 15;
// The per-image path (see the top of this file). Below 64 output positions a per-image GEMM is too narrow to run
// near the GEMM's peak, and the batched path's wider GEMMs win.
constexpr int64_t kPerImageMinSpatial = 64;
constexpr int64_t kPerImageMinImagesPerThread = 2;
constexpr int64_t kDwChunkColumns = 1024;
constexpr int64_t kDwMaxChunks = 64;
constexpr int64_t kPerImageMaxWeight = int64_t{1} << 16;

// Also only while one image's im2col block fits kColBudget: each thread then holds one (a long 1-D signal's block,
// thousands of channels × taps × positions, goes the batched way, which holds one in all).
bool per_image(const ConvGeometry& g) {
  return !is_pointwise_conv(g) && g.out_spatial() >= kPerImageMinSpatial &&
         g.groups * g.patch() * g.out_spatial() <= kColBudget;
}

bool per_image_weight_gradient(const ConvGeometry& g) {
  return per_image(g) && g.out_channels * g.patch() <= kPerImageMaxWeight;
}

// Whether the images are spread over the threads (else each image's GEMMs use all of them); the bits are the same.
bool images_in_parallel(const ConvGeometry& g) {
  return num_threads() > 1 && g.batch >= kPerImageMinImagesPerThread * num_threads();
}

// dst[oh*width + ow] = value for the rows [first, last) and the columns outside [begin, end): column by column
// (a column or two, |the tap's offset| of them), each a strided loop down the rows, rather than two loops of zero
// to two iterations per row, whose overhead was most of a shifted plane's cost on a 14-wide image.
void fill_columns_outside(float* dst, int64_t first, int64_t last, int64_t begin, int64_t end, int64_t width, float value) {
  for (int64_t ow = 0; ow < begin; ++ow)
    for (int64_t oh = first; oh < last; ++oh) dst[oh * width + ow] = value;
  for (int64_t ow = end; ow < width; ++ow)
    for (int64_t oh = first; oh < last; ++oh) dst[oh * width + ow] = value;
}

// One tap's im2col rows when the stride is 1 and the output rows are as wide as the input's:
// dst[oh*W + ow] = plane[(oh + dh)*W + ow + dw], 0 where that falls outside the plane. The valid output rows read one
// contiguous span of the plane (a single long copy instead of one short copy per row); the columns whose reads
// wrapped into a neighbouring row, and the rows above and below the plane, are zeroed after (in loops that stay
// loops: those runs are a float or two).
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void shifted_plane(float* dst, const float* plane, int64_t dh, int64_t dw, const ConvGeometry& g) {
  const int64_t width = g.in_width, oh_count = g.out_height;
  const int64_t first = std::clamp<int64_t>(-dh, 0, oh_count), last = std::clamp<int64_t>(g.in_height - dh, first, oh_count);
  const int64_t begin = std::clamp<int64_t>(-dw, 0, width), end = std::clamp<int64_t>(width - dw, begin, width);
  std::fill(dst, dst + first * width, 0.0f);
  if (first < last && begin < end) {
    // From row `first`, column `begin` to row `last - 1`, column `end`: reads stay inside the plane.
    const int64_t from = first * width + begin, to = (last - 1) * width + end;
    std::copy(plane + from + dh * width + dw, plane + to + dh * width + dw, dst + from);
  }
  fill_columns_outside(dst, first, last, begin, end, width, 0.0f);
  std::fill(dst + last * width, dst + oh_count * width, 0.0f);
}

// col[(c*kh + i)*kw + j, image*OHW + oh*OW + ow] = x[image, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw] (0 outside).
// Otherwise its copies are plain loops kept from becoming memset/memmove calls (the attribute): a run is one output
// row, tens of floats, where a library call costs more than the copy, and there is one per tap and row.
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void im2col(float* col, const float* x, int64_t images, const ConvGeometry& g) {
  const int64_t oh_count = g.out_height, ow_count = g.out_width, spatial = g.out_spatial();
  const int64_t rows = g.in_channels * g.kernel_height * g.kernel_width, width = images * spatial;
  const int threads = num_threads();
  // Stride 1 and output rows as wide as the input's (a "same" convolution): a tap's rows are one shifted plane.
  const bool shifted_rows = g.stride_height == 1 && g.stride_width == 1 && g.out_width == g.in_width;
  // One loop over (row, image) pairs, rows major: the iterations and their static split of collapse(2).
  parallel_region(rows * width >= kParallelMinElements, threads, [&] {
    team_for_static(0, rows * images, [&](int64_t pair) {
      const int64_t row = pair / images, image = pair % images;
      const int64_t c = row / (g.kernel_height * g.kernel_width);
      const int64_t i = (row / g.kernel_width) % g.kernel_height, j = row % g.kernel_width;
      const float* plane = x + (image * g.in_channels + c) * g.in_spatial();
      float* dst = col + row * width + image * spatial;
      if (shifted_rows) {
        shifted_plane(dst, plane, i * g.dilation_height - g.padding_height, j * g.dilation_width - g.padding_width, g);
        return;
      }
      for (int64_t oh = 0; oh < oh_count; ++oh) {
        const int64_t h = oh * g.stride_height - g.padding_height + i * g.dilation_height;
        float* d = dst + oh * ow_count;
        if (h < 0 || h >= g.in_height) {
          for (int64_t ow = 0; ow < ow_count; ++ow) d[ow] = 0.0f;
          continue;
        }
        const float* src = plane + h * g.in_width;
        const int64_t offset = j * g.dilation_width - g.padding_width;
        if (g.stride_width == 1) {
          // Contiguous run: zeros left and right of the image, a copy in between.
          const int64_t begin = std::clamp<int64_t>(-offset, 0, ow_count);
          const int64_t end = std::clamp<int64_t>(g.in_width - offset, begin, ow_count);
          for (int64_t ow = 0; ow < begin; ++ow) d[ow] = 0.0f;
          for (int64_t ow = begin; ow < end; ++ow) d[ow] = src[ow + offset];
          for (int64_t ow = end; ow < ow_count; ++ow) d[ow] = 0.0f;
        } else {
          for (int64_t ow = 0; ow < ow_count; ++ow) {
            const int64_t w = ow * g.stride_width + offset;
            d[ow] = (w >= 0 && w < g.in_width) ? src[w] : 0.0f;
          }
        }
      }
    });
  });
}

// One tap's dcol rows added into a plane when the stride is 1 and the output rows are as wide as the input's (the
// adjoint of shifted_plane): out[(oh + dh)*W + ow + dw] += src[oh*W + ow] wherever that is inside the plane. The
// entries whose column falls outside it (a float or two per row) are set to -0 in src first, which makes the valid
// rows one contiguous span that adds in a single loop instead of one short loop per row; adding -0 leaves every
// float as it was (x + -0 = x, also for x = -0), so the sums keep the bits of the per-row loops. src is clobbered.
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void add_shifted_plane(float* out, float* src, int64_t dh, int64_t dw, const ConvGeometry& g) {
  const int64_t width = g.in_width, oh_count = g.out_height;
  const int64_t first = std::clamp<int64_t>(-dh, 0, oh_count), last = std::clamp<int64_t>(g.in_height - dh, first, oh_count);
  const int64_t begin = std::clamp<int64_t>(-dw, 0, width), end = std::clamp<int64_t>(width - dw, begin, width);
  if (first >= last || begin >= end) return;
  fill_columns_outside(src, first, last, begin, end, width, -0.0f);
  const int64_t from = first * width + begin, to = (last - 1) * width + end, shift = dh * width + dw;
  float* target = out + shift;
  for (int64_t q = from; q < to; ++q) target[q] += src[q];
}

// dx[image, c, h, w] = start[c] (0 when start is null) + the sum of dcol over the (i, j, oh, ow) with
// oh*sh - ph + i*dh = h and ow*sw - pw + j*dw = w, taken in ascending (i, j) order. dcol is scratch: the
// stride-1 "same-width" case clobbers entries it does not use (add_shifted_plane).
void col2im(float* dx, float* dcol, int64_t images, const ConvGeometry& g, const float* start) {
  const int64_t oh_count = g.out_height, ow_count = g.out_width, spatial = g.out_spatial();
  const int64_t width = images * spatial, kh = g.kernel_height, kw = g.kernel_width;
  const int threads = num_threads();
  const int64_t planes = images * g.in_channels;
  const bool shifted_rows = g.stride_height == 1 && g.stride_width == 1 && g.out_width == g.in_width;
  parallel_region(planes * g.in_spatial() >= kParallelMinElements, threads, [&] {
    team_for_static(0, planes, [&](int64_t plane) {
      const int64_t image = plane / g.in_channels, c = plane % g.in_channels;
      float* out = dx + plane * g.in_spatial();
      std::fill(out, out + g.in_spatial(), start ? start[c] : 0.0f);
      for (int64_t i = 0; i < kh; ++i) {
        for (int64_t j = 0; j < kw; ++j) {
          float* src = dcol + ((c * kh + i) * kw + j) * width + image * spatial;
          const int64_t offset = j * g.dilation_width - g.padding_width;
          if (shifted_rows) {
            add_shifted_plane(out, src, i * g.dilation_height - g.padding_height, offset, g);
            continue;
          }
          for (int64_t oh = 0; oh < oh_count; ++oh) {
            const int64_t h = oh * g.stride_height - g.padding_height + i * g.dilation_height;
            if (h < 0 || h >= g.in_height) continue;
            float* row = out + h * g.in_width;
            const float* s = src + oh * ow_count;
            if (g.stride_width == 1) {
              const int64_t begin = std::clamp<int64_t>(-offset, 0, ow_count);
              const int64_t end = std::clamp<int64_t>(g.in_width - offset, begin, ow_count);
              for (int64_t ow = begin; ow < end; ++ow) row[ow + offset] += s[ow];
            } else {
              for (int64_t ow = 0; ow < ow_count; ++ow) {
                const int64_t w = ow * g.stride_width + offset;
                if (w >= 0 && w < g.in_width) row[w] += s[ow];
              }
            }
          }
        }
      }
    });
  });
}

// [C, images*spatial] (image blocks side by side) <-> [images, C, spatial].
void channels_major_to_images(float* y, const float* t, int64_t images, int64_t channels, int64_t spatial) {
  const int threads = num_threads();
  parallel_region(images * channels * spatial >= kParallelMinElements, threads, [&] {
    // The (image, channel) pairs as one loop, shared as a collapse(2) loop would be.
    for (const int64_t pair : team_static(0, images * channels)) {
      const int64_t image = pair / channels, c = pair % channels;
      std::copy_n(t + (c * images + image) * spatial, spatial, y + (image * channels + c) * spatial);
    }
  });
}
void images_to_channels_major(float* t, const float* y, int64_t images, int64_t channels, int64_t spatial) {
  const int threads = num_threads();
  parallel_region(images * channels * spatial >= kParallelMinElements, threads, [&] {
    // The (image, channel) pairs as one loop, shared as a collapse(2) loop would be.
    for (const int64_t pair : team_static(0, images * channels)) {
      const int64_t image = pair / channels, c = pair % channels;
      std::copy_n(y + (image * channels + c) * spatial, spatial, t + (c * images + image) * spatial);
    }
  });
}

// Scratch for the im2col columns and the regrouped products, kept per thread between calls and never zeroed
// (every element is written before it is read). A fresh std::vector per call zero-filled up to 16 MiB and took
// page faults on every page, a large part of a small network's training step. Holds at most the largest request
// seen (bounded by kColBudget per buffer). Slots: 0 columns, 1 regrouped product or dy, 2 regrouped raw product.
float* scratch(int slot, int64_t count) {
  thread_local std::unique_ptr<float[]> buffers[3];
  thread_local int64_t capacity[3] = {0, 0, 0};
  if (capacity[slot] < count) {
    buffers[slot].reset();  // free first: old and new need not both fit
    buffers[slot].reset(new float[static_cast<size_t>(count)]);
    capacity[slot] = count;
  }
  return buffers[slot].get();
}

// dbias[c] = sum of dy[image, c, :] over images and space, in double, in a fixed order: position s of every plane
// goes to lane s % kSumLanes, the lanes are added in order at the end. Independent lanes let the compiler vectorize
// the loop (a single running sum cannot be reordered, and ran at one add per cycle latency).
constexpr int64_t kSumLanes = 8;
void add_to_lanes(double* lanes, const float* plane, int64_t spatial) {
  int64_t s = 0;
  for (; s + kSumLanes <= spatial; s += kSumLanes)
    for (int64_t j = 0; j < kSumLanes; ++j) lanes[j] += plane[s + j];
  for (int64_t j = 0; s < spatial; ++s, ++j) lanes[j] += plane[s];
}
double lanes_sum(const double* lanes) {
  double sum = 0.0;
  for (int64_t j = 0; j < kSumLanes; ++j) sum += lanes[j];
  return sum;
}
void channel_sums(float* dbias, const float* dy, int64_t batch, int64_t channels, int64_t spatial) {
  const int threads = num_threads();
  parallel_region(batch * channels * spatial >= kParallelMinElements, threads, [&] {
    for (const int64_t c : team_static(0, channels)) {
      double lanes[kSumLanes] = {};
      for (int64_t image = 0; image < batch; ++image) add_to_lanes(lanes, dy + (image * channels + c) * spatial, spatial);
      dbias[c] = float(lanes_sum(lanes));
    }
  });
}

// dcol [C*kh*kw, n] = w^T x dys, per group (n = the batch's images * OH*OW).
void weight_transpose_product(float* dcol, const float* w, const float* dys, int64_t n, const ConvGeometry& g) {
  const int64_t patch = g.patch(), ocg = g.out_channels_per_group();
  for (int64_t gi = 0; gi < g.groups; ++gi)
    gemm(dcol + gi * patch * n, w + gi * ocg * patch, dys + gi * ocg * n, GemmShape{patch, n, ocg}.transposing_a(), GemmEpilogue{});
}

const float* offset_or_null(const float* p, int64_t offset) { return p ? p + offset : nullptr; }

void conv_forward_per_image(float* y, const float* x, const float* w, const float* bias, const ConvGeometry& g,
                            const ConvOutputScale& scale) {
  const int64_t spatial = g.out_spatial(), patch = g.patch(), ocg = g.out_channels_per_group();
  const bool keeps_raw = scale.channel_scale != nullptr && scale.raw_out != nullptr;
  const int threads = num_threads();
  parallel_region(images_in_parallel(g), threads, [&] {
    for (const int64_t image : team_dynamic(0, g.batch)) {
      float* col = scratch(0, g.groups * patch * spatial);
      im2col(col, x + image * g.in_channels * g.in_spatial(), 1, g);
      float* y_image = y + image * g.out_channels * spatial;
      float* raw_image = keeps_raw ? scale.raw_out + image * g.out_channels * spatial : nullptr;
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        GemmEpilogue epilogue;
        float* y_group = y_image + gi * ocg * spatial;
        if (bias && !scale.channel_scale) {
          // The bias as the GEMM's starting value (beta = 1): one pass writing it, instead of the BLAS zeroing the
          // output and the epilogue adding the bias in a second pass over it.
          for (int64_t o = 0; o < ocg; ++o) std::fill(y_group + o * spatial, y_group + (o + 1) * spatial, bias[gi * ocg + o]);
          epilogue.beta = 1.0f;
        } else {
          epilogue.row_bias = offset_or_null(bias, gi * ocg);
          epilogue.row_scale = offset_or_null(scale.channel_scale, gi * ocg);
          epilogue.raw_out = keeps_raw ? raw_image + gi * ocg * spatial : nullptr;
        }
        gemm(y_group, w + gi * ocg * patch, col + gi * patch * spatial, GemmShape{ocg, spatial, patch}, epilogue);
      }
    }
  });
}

void conv_input_gradient_per_image(float* dx, const float* dy, const float* w, const ConvGeometry& g) {
  const int64_t spatial = g.out_spatial();
  const int threads = num_threads();
  parallel_region(images_in_parallel(g), threads, [&] {
    for (const int64_t image : team_dynamic(0, g.batch)) {
      float* col = scratch(0, g.groups * g.patch() * spatial);
      weight_transpose_product(col, w, dy + image * g.out_channels * spatial, spatial, g);
      col2im(dx + image * g.in_channels * g.in_spatial(), col, 1, g, nullptr);
    }
  });
}

// Images per chunk of a weight gradient that sums per-chunk partials (about kDwChunkColumns output positions each,
// at most kDwMaxChunks chunks): fixed by the shape alone, so the partials and their sum are the same bits for any
// thread count.
int64_t images_per_chunk(const ConvGeometry& g) {
  const int64_t spatial = g.out_spatial();
  return std::max((kDwChunkColumns + spatial - 1) / spatial, (g.batch + kDwMaxChunks - 1) / kDwMaxChunks);
}

// Element `index` (of output channel o) of dw from its summed product, or with weight norm dv = scale * sum -
// coefficient * v: the weight-gradient GEMM epilogue's steps and order (the projection is subtracted with weight
// norm only, its coefficient 1 when null).
float weight_gradient_element(const ConvWeightGradientEpilogue& e, int64_t o, int64_t index, float sum) {
  if (!e.channel_scale) return sum;
  const float coefficient = e.subtract_coefficient ? e.subtract_coefficient[o] : 1.0f;
  return e.subtract_matrix ? e.channel_scale[o] * sum - coefficient * e.subtract_matrix[index] : e.channel_scale[o] * sum;
}

// dbias (may be null) is summed here too, from each image's dy while the GEMM has just brought it into cache
// (a separate channel_sums pass reads all of dy from memory again): per chunk and channel in double, with
// channel_sums' lanes, then the chunks in chunk order; fixed by the shape, so the same bits for any thread count.
void conv_weight_gradient_per_image(float* dw, float* dbias, const float* dy, const float* x, const ConvGeometry& g,
                                    const ConvWeightGradientEpilogue& epilogue) {
  const int64_t spatial = g.out_spatial(), patch = g.patch(), ocg = g.out_channels_per_group();
  const int64_t weights = g.out_channels * patch;
  const int64_t chunk = images_per_chunk(g), chunks = (g.batch + chunk - 1) / chunk;
  // The partials outlive the parallel region: one shared buffer, the calling thread's slot 2 (the per-image
  // forward and input gradient use slot 0 only, per thread).
  float* partials = scratch(2, chunks * weights);
  std::vector<double> bias_partials(dbias ? static_cast<size_t>(chunks * g.out_channels) : 0);
  const int threads = num_threads();
  parallel_region(threads > 1 && chunks > 1, threads, [&] {
    for (const int64_t c : team_dynamic(0, chunks)) {
      float* col = scratch(0, g.groups * patch * spatial);
      float* partial = partials + c * weights;
      for (int64_t image = c * chunk; image < std::min(g.batch, (c + 1) * chunk); ++image) {
        im2col(col, x + image * g.in_channels * g.in_spatial(), 1, g);
        const float* dy_image = dy + image * g.out_channels * spatial;
        for (int64_t gi = 0; gi < g.groups; ++gi) {
          GemmEpilogue accumulate;
          accumulate.beta = image == c * chunk ? 0.0f : 1.0f;
          gemm(partial + gi * ocg * patch, dy_image + gi * ocg * spatial, col + gi * patch * spatial,
               GemmShape{ocg, patch, spatial}.transposing_b(), accumulate);
        }
        if (dbias)
          for (int64_t o = 0; o < g.out_channels; ++o) {
            double lanes[kSumLanes] = {};
            add_to_lanes(lanes, dy_image + o * spatial, spatial);
            bias_partials[static_cast<size_t>(c * g.out_channels + o)] += lanes_sum(lanes);
          }
      }
    }
  });
  if (dbias)
    for (int64_t o = 0; o < g.out_channels; ++o) {
      double sum = 0.0;
      for (int64_t c = 0; c < chunks; ++c) sum += bias_partials[static_cast<size_t>(c * g.out_channels + o)];
      dbias[o] = float(sum);
    }
  // dw (or dv) = scale ⊙ (the partials summed in chunk order) − coefficient ⊙ v, per output channel o.
  parallel_region(weights * chunks >= kParallelMinElements, threads, [&] {
    for (const int64_t o : team_static(0, g.out_channels)) {
      // The row summed in place in chunk 0's partial, chunk after chunk (contiguous rows, the same order per element).
      float* sum = partials + o * patch;
      for (int64_t c = 1; c < chunks; ++c) {
        const float* add = partials + c * weights + o * patch;
        for (int64_t j = 0; j < patch; ++j) sum[j] += add[j];
      }
      for (int64_t j = 0; j < patch; ++j) dw[o * patch + j] = weight_gradient_element(epilogue, o, o * patch + j, sum[j]);
    }
  });
}


// ---------------------------------------------------------------------------------------------------------------
// Direct path: one input channel per group and stride 1 (a grayscale network's first convolution, depthwise ones).
// Its im2col matrix has only kh*kw rows, so the GEMM path packs and walks a k of 9 (3x3): the packing and the
// epilogue's extra pass over y cost more than the product. Here each output is computed where it is written:
//   forward  y[o, oh, ow] = (sum over taps t = (i, j), in order, of w[o, t] * xp[oh + i*dh, ow + j*dw]) * scale[o]
//            + bias[o] (the GEMM epilogue's order), xp the image's plane with its zero padding around it (a small
//            copy per image, so the inner loops need no bounds tests); kLanes outputs of a row at a time for
//            kChannels output channels, each x load shared by the channels;
//   dw       per image and output channel, the kh*kw dot products of dy's plane with the shifted padded planes,
//            kTaps taps at a time (one load of dy for each), in float lanes per image, then added in double to the
//            image's chunk (images_per_chunk); the chunks in order, then weight_gradient_element. dbias with it,
//            from each dy plane while it is in cache (channel_sums' lanes, per chunk). Bits fixed by the shape:
//            the same for any thread count.
// A row's last block of kLanes outputs starts at OW - kLanes (it may overlap the one before it: the overlapped
// outputs are computed again with the same operations and written with the same bits; the weight gradient masks
// them out of its sums). The loops are written once on GCC vector types and compiled for AVX-512, AVX2 and the x86-64
// baseline (SSE2), the best this CPU runs picked at run time; all three give the same bits (see WN_VECTOR_KERNELS).
// dx (an input that needs its gradient, as in a depthwise layer) keeps the GEMM path.
constexpr int64_t kDirectMaxTaps = 64;

bool direct_single_channel(const ConvGeometry& g) {
  const int64_t rows = g.out_height + g.dilation_height * (g.kernel_height - 1);
  const int64_t cols = g.out_width + g.dilation_width * (g.kernel_width - 1);
  return g.in_channels_per_group() == 1 && g.stride_height == 1 && g.stride_width == 1 &&
         g.kernel_height * g.kernel_width <= kDirectMaxTaps && rows * cols <= kColBudget;
}

// The padded plane the direct kernels read, [rows, cols]: exactly the rows and columns some output reads.
struct PaddedPlane {
  int64_t rows, cols;
  int64_t offsets[kDirectMaxTaps];  // tap t = i*kw + j reads xp[oh*cols + ow + offsets[t]]
};

PaddedPlane padded_plane(const ConvGeometry& g) {
  PaddedPlane p;
  p.rows = g.out_height + g.dilation_height * (g.kernel_height - 1);
  p.cols = g.out_width + g.dilation_width * (g.kernel_width - 1);
  for (int64_t i = 0; i < g.kernel_height; ++i)
    for (int64_t j = 0; j < g.kernel_width; ++j)
      p.offsets[i * g.kernel_width + j] = i * g.dilation_height * p.cols + j * g.dilation_width;
  return p;
}

// xp[r, c] = plane[r - padding_h, c - padding_w], 0 outside the plane.
void pad_plane(float* xp, const float* plane, const PaddedPlane& p, const ConvGeometry& g) {
  for (int64_t r = 0; r < p.rows; ++r) {
    float* row = xp + r * p.cols;
    const int64_t h = r - g.padding_height;
    if (h < 0 || h >= g.in_height) {
      std::fill(row, row + p.cols, 0.0f);
      continue;
    }
    const int64_t begin = std::clamp<int64_t>(g.padding_width, 0, p.cols);
    const int64_t end = std::clamp<int64_t>(g.padding_width + g.in_width, begin, p.cols);
    std::fill(row, row + begin, 0.0f);
    std::copy(plane + h * g.in_width, plane + h * g.in_width + (end - begin), row + begin);
    std::fill(row + end, row + p.cols, 0.0f);
  }
}

template <int kLanes>
struct Lanes {
  typedef float type __attribute__((vector_size(kLanes * sizeof(float))));
  typedef int32_t mask __attribute__((vector_size(kLanes * sizeof(int32_t))));
};
template <>
struct Lanes<1> {  // a plain float: GCC keeps one-element vectors on the stack
  typedef float type;
  typedef int32_t mask;
};

// (By reference, not returned: a returned vector wider than the baseline's registers draws -Wpsabi.)
template <class V>
[[gnu::always_inline]] inline void load_lanes(V& v, const float* p) {
  std::memcpy(&v, p, sizeof v);
}
template <class V>
[[gnu::always_inline]] inline void store_lanes(float* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}

// One image's (and group's) forward: output channels [begin, end) of the group, rows of out_width.
struct DirectForward {
  float* y;             // the group's first output plane of the image, [ocg, OH, OW]
  float* raw;           // like y: the product before scale and bias (weight norm keeps it), or null
  const float* xp;      // the padded plane
  const float* w;       // the group's weights [ocg, taps]
  const float* bias;    // the group's, or null
  const float* scale;   // the group's, or null
  const PaddedPlane* plane;
  int64_t taps, out_height, out_width;
};

template <int kLanes, int kChannels>
[[gnu::always_inline]] inline void direct_forward_channels(const DirectForward& a, int64_t o0) {
  using V = typename Lanes<kLanes>::type;
  const int64_t spatial = a.out_height * a.out_width;
  for (int64_t oh = 0; oh < a.out_height; ++oh) {
    const float* row = a.xp + oh * a.plane->cols;
    for (int64_t ow = 0; ow < a.out_width; ow += kLanes) {
      const int64_t at = std::min(ow, a.out_width - kLanes);
      V acc[kChannels] = {};
      for (int64_t t = 0; t < a.taps; ++t) {
        V x;
        load_lanes(x, row + a.plane->offsets[t] + at);
        for (int c = 0; c < kChannels; ++c) acc[c] += a.w[(o0 + c) * a.taps + t] * x;
      }
      for (int c = 0; c < kChannels; ++c) {
        const int64_t o = o0 + c, index = o * spatial + oh * a.out_width + at;
        V out = acc[c];
        if (a.raw) store_lanes(a.raw + index, out);
        if (a.scale) out *= a.scale[o];
        if (a.bias) out += a.bias[o];
        store_lanes(a.y + index, out);
      }
    }
  }
}

// Channels [begin, end) in groups of kChannels, the last group overlapping the one before (same bits again).
// (Functions, not lambdas, all the way down: a lambda is compiled for the baseline, not for the target of the
// function it is inlined into.)
template <int kLanes, int kChannels>
[[gnu::always_inline]] inline void direct_forward_groups(const DirectForward& a, int64_t begin, int64_t end) {
  for (int64_t o = begin; o < end; o += kChannels) direct_forward_channels<kLanes, kChannels>(a, std::min(o, end - kChannels));
}

template <int kLanes>
[[gnu::always_inline]] inline void direct_forward_lanes(const DirectForward& a, int64_t begin, int64_t end) {
  const int64_t count = end - begin;
  if (count >= 8) return direct_forward_groups<kLanes, 8>(a, begin, end);
  if (count >= 4) return direct_forward_groups<kLanes, 4>(a, begin, end);
  if (count >= 2) return direct_forward_groups<kLanes, 2>(a, begin, end);
  direct_forward_groups<kLanes, 1>(a, begin, end);
}

// The widest block of a row that fits it (kLanes <= out_width): fixed by the geometry, so are the weight gradient's
// lane sums.
int direct_lanes(int64_t out_width) { return out_width >= 16 ? 16 : out_width >= 8 ? 8 : out_width >= 4 ? 4 : 1; }

[[gnu::always_inline]] inline void direct_forward_range(const DirectForward& a, int64_t begin, int64_t end) {
  switch (direct_lanes(a.out_width)) {
    case 16: return direct_forward_lanes<16>(a, begin, end);
    case 8: return direct_forward_lanes<8>(a, begin, end);
    case 4: return direct_forward_lanes<4>(a, begin, end);
    default: return direct_forward_lanes<1>(a, begin, end);
  }
}

// One image's and output channel's tap sums: sums[t] = sum over (oh, ow) of dy[oh, ow] * xp[oh*cols + ow + offsets[t]].
struct DirectTaps {
  const float* dy;  // [OH, OW]
  const float* xp;
  const PaddedPlane* plane;
  int64_t taps, out_height, out_width;
};

template <int kLanes, int kTaps>
[[gnu::always_inline]] inline void direct_tap_sums(float* sums, const DirectTaps& a, int64_t t0) {
  using V = typename Lanes<kLanes>::type;
  using M = typename Lanes<kLanes>::mask;
  V acc[kTaps] = {};
  const int64_t tail = a.out_width % kLanes, at = a.out_width - kLanes;
  M keep{};  // the last block's lanes not in the block before it
  if constexpr (kLanes > 1)
    for (int l = 0; l < kLanes; ++l) keep[l] = l >= kLanes - tail ? -1 : 0;
  for (int64_t oh = 0; oh < a.out_height; ++oh) {
    const float* d = a.dy + oh * a.out_width;
    const float* row = a.xp + oh * a.plane->cols;
    int64_t ow = 0;
    for (; ow + kLanes <= a.out_width; ow += kLanes) {
      V g, x[kTaps];
      load_lanes(g, d + ow);
      for (int k = 0; k < kTaps; ++k) load_lanes(x[k], row + a.plane->offsets[t0 + k] + ow);
      for (int k = 0; k < kTaps; ++k) acc[k] += g * x[k];
    }
    if constexpr (kLanes > 1) {
      if (tail) {
        // The products masked, not dy: 0 * inf would put a NaN where the sum has none.
        V g, x[kTaps];
        load_lanes(g, d + at);
        for (int k = 0; k < kTaps; ++k) load_lanes(x[k], row + a.plane->offsets[t0 + k] + at);
        for (int k = 0; k < kTaps; ++k) acc[k] += (V)((M)(g * x[k]) & keep);
      }
    }
  }
  for (int k = 0; k < kTaps; ++k) {
    if constexpr (kLanes > 1) {
      float sum = 0.0f;
      for (int l = 0; l < kLanes; ++l) sum += acc[k][l];
      sums[t0 + k] = sum;
    } else {
      sums[t0 + k] = acc[k];
    }
  }
}

// All taps, kTaps at a time (the last group overlapping the one before: its sums are written again, same bits).
// Each group reads dy's plane once: a 3x3 kernel's nine taps go in one group (nine accumulators and dy fit the
// registers), other counts in groups of 4 or 3 that divide them where they can.
template <int kLanes, int kTaps>
[[gnu::always_inline]] inline void direct_tap_sums_groups(float* sums, const DirectTaps& a) {
  for (int64_t t = 0; t < a.taps; t += kTaps) direct_tap_sums<kLanes, kTaps>(sums, a, std::min(t, a.taps - kTaps));
}

template <int kLanes>
[[gnu::always_inline]] inline void direct_tap_sums_lanes(float* sums, const DirectTaps& a) {
  if (a.taps == 9) return direct_tap_sums_groups<kLanes, 9>(sums, a);
  if (a.taps % 4 != 0 && a.taps % 3 == 0) return direct_tap_sums_groups<kLanes, 3>(sums, a);
  if (a.taps >= 4) return direct_tap_sums_groups<kLanes, 4>(sums, a);
  if (a.taps == 3) return direct_tap_sums_groups<kLanes, 3>(sums, a);
  if (a.taps == 2) return direct_tap_sums_groups<kLanes, 2>(sums, a);
  direct_tap_sums_groups<kLanes, 1>(sums, a);
}

[[gnu::always_inline]] inline void direct_tap_sums_all(float* sums, const DirectTaps& a) {
  switch (direct_lanes(a.out_width)) {
    case 16: return direct_tap_sums_lanes<16>(sums, a);
    case 8: return direct_tap_sums_lanes<8>(sums, a);
    case 4: return direct_tap_sums_lanes<4>(sums, a);
    default: return direct_tap_sums_lanes<1>(sums, a);
  }
}

// cpu/conv.cc's vector kernels for one instruction set (defined with the pooling ones, below).
struct VectorKernels {
  const char* isa;
  void (*forward)(const DirectForward& a, int64_t begin, int64_t end);
  void (*tap_sums)(float* sums, const DirectTaps& a);
  void (*pool2x2_forward)(float* out, const float* plane, int64_t oh_count, int64_t ow_count, int64_t width, bool relu);
  void (*pool2x2_backward)(float* dx, const float* plane, const float* grad, int64_t oh_count, int64_t ow_count,
                           int64_t width, bool relu);
};
const VectorKernels& vector_kernels();

// How many parts a group's output channels are cut into so that `items` (images x groups, or chunks x groups)
// give every thread work: a batch of one long 1-D signal would otherwise run on one thread. Each output channel is
// computed the same way in any part, so the bits do not depend on it.
int64_t channel_parts(int64_t items, int64_t channels_per_group) {
  const int64_t wanted = 4 * num_threads();
  return std::clamp<int64_t>((wanted + items - 1) / std::max<int64_t>(items, 1), 1, channels_per_group);
}

void conv_forward_direct(float* y, const float* x, const float* w, const float* bias, const ConvGeometry& g,
                         const ConvOutputScale& scale) {
  const VectorKernels& kernels = vector_kernels();
  const PaddedPlane plane = padded_plane(g);
  const int64_t taps = g.kernel_height * g.kernel_width, ocg = g.out_channels_per_group(), spatial = g.out_spatial();
  const bool keeps_raw = scale.channel_scale != nullptr && scale.raw_out != nullptr;
  const int64_t parts = channel_parts(g.batch * g.groups, ocg), per_part = (ocg + parts - 1) / parts;
  const int64_t items = g.batch * g.groups * parts;
  const int threads = num_threads();
  parallel_region(threads > 1 && items > 1 && g.batch * g.out_channels * spatial * taps >= kParallelMinElements, threads, [&] {
    for (const int64_t item : team_dynamic(0, items)) {
      const int64_t image = item / (g.groups * parts), gi = item / parts % g.groups, part = item % parts;
      const int64_t begin = part * per_part, end = std::min(ocg, begin + per_part);
      if (begin >= end) continue;
      float* xp = scratch(0, plane.rows * plane.cols);
      pad_plane(xp, x + (image * g.in_channels + gi) * g.in_spatial(), plane, g);
      const int64_t first = (image * g.out_channels + gi * ocg) * spatial;
      DirectForward a{y + first, keeps_raw ? scale.raw_out + first : nullptr, xp, w + gi * ocg * taps,
                      offset_or_null(bias, gi * ocg), offset_or_null(scale.channel_scale, gi * ocg), &plane, taps,
                      g.out_height, g.out_width};
      kernels.forward(a, begin, end);
    }
  });
}

void conv_weight_gradient_direct(float* dw, float* dbias, const float* dy, const float* x, const ConvGeometry& g,
                                 const ConvWeightGradientEpilogue& epilogue) {
  const VectorKernels& kernels = vector_kernels();
  const PaddedPlane plane = padded_plane(g);
  const int64_t taps = g.kernel_height * g.kernel_width, ocg = g.out_channels_per_group(), spatial = g.out_spatial();
  const int64_t chunk = images_per_chunk(g), chunks = (g.batch + chunk - 1) / chunk;
  const int64_t parts = channel_parts(chunks * g.groups, ocg), per_part = (ocg + parts - 1) / parts;
  const int64_t items = chunks * g.groups * parts;
  // Per chunk and output channel: the tap sums and the bias sum, in double.
  std::vector<double> partials(static_cast<size_t>(chunks * g.out_channels * taps), 0.0);
  std::vector<double> bias_partials(dbias ? static_cast<size_t>(chunks * g.out_channels) : 0, 0.0);
  const int threads = num_threads();
  parallel_region(threads > 1 && items > 1 && g.batch * g.out_channels * spatial * taps >= kParallelMinElements, threads, [&] {
    for (const int64_t item : team_dynamic(0, items)) {
      const int64_t c = item / (g.groups * parts), gi = item / parts % g.groups, part = item % parts;
      const int64_t begin = gi * ocg + part * per_part, end = std::min((gi + 1) * ocg, begin + per_part);
      if (begin >= end) continue;
      float* xp = scratch(0, plane.rows * plane.cols);
      float sums[kDirectMaxTaps];
      for (int64_t image = c * chunk; image < std::min(g.batch, (c + 1) * chunk); ++image) {
        pad_plane(xp, x + (image * g.in_channels + gi) * g.in_spatial(), plane, g);
        for (int64_t o = begin; o < end; ++o) {
          const float* dy_plane = dy + (image * g.out_channels + o) * spatial;
          kernels.tap_sums(sums, DirectTaps{dy_plane, xp, &plane, taps, g.out_height, g.out_width});
          double* partial = partials.data() + (c * g.out_channels + o) * taps;
          for (int64_t t = 0; t < taps; ++t) partial[t] += sums[t];
          if (dbias) {
            double lanes[kSumLanes] = {};
            add_to_lanes(lanes, dy_plane, spatial);
            bias_partials[static_cast<size_t>(c * g.out_channels + o)] += lanes_sum(lanes);
          }
        }
      }
    }
  });
  for (int64_t o = 0; o < g.out_channels; ++o) {
    for (int64_t t = 0; t < taps; ++t) {
      double sum = 0.0;
      for (int64_t c = 0; c < chunks; ++c) sum += partials[static_cast<size_t>((c * g.out_channels + o) * taps + t)];
      dw[o * taps + t] = weight_gradient_element(epilogue, o, o * taps + t, float(sum));
    }
    if (dbias) {
      double sum = 0.0;
      for (int64_t c = 0; c < chunks; ++c) sum += bias_partials[static_cast<size_t>(c * g.out_channels + o)];
      dbias[o] = float(sum);
    }
  }
}

}  // namespace

void conv_forward(float* y, const float* x, const float* w, const float* bias, const ConvGeometry& g,
                  const ConvOutputScale& scale) {
  check_conv_geometry(g);
  if (direct_single_channel(g)) return conv_forward_direct(y, x, w, bias, g, scale);
  if (per_image(g)) return conv_forward_per_image(y, x, w, bias, g, scale);
  const int64_t spatial = g.out_spatial(), in_spatial = g.in_spatial();
  const int64_t patch = g.patch(), ocg = g.out_channels_per_group();
  const int64_t batch = im2col_batch(g, kColBudget);
  const bool keeps_raw = scale.channel_scale != nullptr && scale.raw_out != nullptr;
  float* col = is_pointwise_conv(g) ? nullptr : scratch(0, g.groups * patch * batch * spatial);
  float* product = batch > 1 ? scratch(1, g.out_channels * batch * spatial) : nullptr;
  float* raw_product = batch > 1 && keeps_raw ? scratch(2, g.out_channels * batch * spatial) : nullptr;
  for (int64_t first = 0; first < g.batch; first += batch) {
    const int64_t images = std::min(batch, g.batch - first), n = images * spatial;
    const float* x_images = x + first * g.in_channels * in_spatial;
    float* y_images = y + first * g.out_channels * spatial;
    float* raw_images = keeps_raw ? scale.raw_out + first * g.out_channels * spatial : nullptr;
    const float* cols = x_images;
    if (!is_pointwise_conv(g)) {
      im2col(col, x_images, images, g);
      cols = col;
    }
    float* target = images > 1 ? product : y_images;
    float* raw_target = images > 1 ? raw_product : raw_images;
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      GemmEpilogue epilogue;
      epilogue.row_bias = offset_or_null(bias, gi * ocg);
      epilogue.row_scale = offset_or_null(scale.channel_scale, gi * ocg);
      epilogue.raw_out = keeps_raw ? raw_target + gi * ocg * n : nullptr;
      gemm(target + gi * ocg * n, w + gi * ocg * patch, cols + gi * patch * n, GemmShape{ocg, n, patch}, epilogue);
    }
    if (images > 1) {
      channels_major_to_images(y_images, target, images, g.out_channels, spatial);
      if (keeps_raw) channels_major_to_images(raw_images, raw_target, images, g.out_channels, spatial);
    }
  }
}

void conv_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w,
                   const ConvGeometry& g, const ConvWeightGradientEpilogue& dw_epilogue) {
  check_conv_geometry(g);
  if (dw && g.batch > 0 && direct_single_channel(g)) {
    // dbias comes with dw; dx (if wanted) below.
    conv_weight_gradient_direct(dw, dbias, dy, x, g, dw_epilogue);
    dw = dbias = nullptr;
    if (!dx) return;
  }
  const int64_t spatial = g.out_spatial(), in_spatial = g.in_spatial();
  const int64_t patch = g.patch(), ocg = g.out_channels_per_group();
  // The per-image weight gradient sums dbias itself, from dy while it is in cache.
  const bool bias_with_weight_gradient = dbias && dw && g.batch > 0 && per_image_weight_gradient(g);
  if (dbias && !bias_with_weight_gradient) channel_sums(dbias, dy, g.batch, g.out_channels, spatial);
  if (!dw && !dx) return;
  if (g.batch == 0) {
    // No data: dw is 0, and so is dv (its subtracted term is proportional to dg, which is 0 too).
    if (dw) std::fill(dw, dw + g.out_channels * patch, 0.0f);
    return;
  }
  if (per_image(g)) {
    if (dx) conv_input_gradient_per_image(dx, dy, w, g);
    if (dw && per_image_weight_gradient(g))
      return conv_weight_gradient_per_image(dw, bias_with_weight_gradient ? dbias : nullptr, dy, x, g, dw_epilogue);
    if (!dw) return;
    dx = nullptr;  // done above; the batched path below computes dw only
  }

  const int64_t batch = im2col_batch(g, kColBudget);
  float* col = is_pointwise_conv(g) ? nullptr : scratch(0, g.groups * patch * batch * spatial);
  float* dy_regrouped = batch > 1 ? scratch(1, g.out_channels * batch * spatial) : nullptr;
  for (int64_t first = 0; first < g.batch; first += batch) {
    const int64_t images = std::min(batch, g.batch - first), n = images * spatial;
    const float* dy_images = dy + first * g.out_channels * spatial;
    const float* dys = dy_images;
    if (images > 1) {
      images_to_channels_major(dy_regrouped, dy_images, images, g.out_channels, spatial);
      dys = dy_regrouped;
    }
    if (dw) {
      const float* cols = x + first * g.in_channels * in_spatial;
      if (!is_pointwise_conv(g)) {
        im2col(col, cols, images, g);
        cols = col;
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
        weight_transpose_product(col, w, dys, n, g);
        col2im(dx_images, col, images, g, nullptr);
      }
    }
  }
}

void conv_transpose_forward(float* y, const float* x, const float* w, const float* bias, const ConvGeometry& g) {
  check_conv_geometry(g);
  const int64_t spatial = g.out_spatial(), in_spatial = g.in_spatial();
  const int64_t batch = im2col_batch(g, kColBudget);
  float* col = is_pointwise_conv(g) ? nullptr : scratch(0, g.groups * g.patch() * batch * spatial);
  float* x_regrouped = batch > 1 ? scratch(1, g.out_channels * batch * spatial) : nullptr;
  for (int64_t first = 0; first < g.batch; first += batch) {
    const int64_t images = std::min(batch, g.batch - first), n = images * spatial;
    const float* x_images = x + first * g.out_channels * spatial;
    float* y_images = y + first * g.in_channels * in_spatial;
    const float* xs = x_images;
    if (images > 1) {
      images_to_channels_major(x_regrouped, x_images, images, g.out_channels, spatial);
      xs = x_regrouped;
    }
    if (is_pointwise_conv(g)) {
      // One image: y [C, spatial] = w^T x x, the bias per row.
      const int64_t patch = g.patch(), ocg = g.out_channels_per_group();
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        GemmEpilogue epilogue;
        epilogue.row_bias = offset_or_null(bias, gi * patch);
        gemm(y_images + gi * patch * n, w + gi * ocg * patch, xs + gi * ocg * n, GemmShape{patch, n, ocg}.transposing_a(), epilogue);
      }
    } else {
      weight_transpose_product(col, w, xs, n, g);
      col2im(y_images, col, images, g, bias);
    }
  }
}

#include "weightnorm/ops/conv_composed.inc"

// ---------------------------------------------------------------------------------------------------------------
// Padding and upsampling.

void pad_forward(float* y, const float* x, const PadGeometry& g) {
  check_pad_geometry(g);
  const int64_t oh_count = g.out_height(), ow_count = g.out_width();
  const int threads = num_threads();
  parallel_region(g.planes * oh_count * ow_count >= kParallelMinElements, threads, [&] {
    for (const int64_t p : team_static(0, g.planes)) {
      const float* plane = x + p * g.height * g.width;
      float* out = y + p * oh_count * ow_count;
      for (int64_t oh = 0; oh < oh_count; ++oh) {
        const int64_t h = pad_source_index(oh, g.top, g.height, g.mode);
        for (int64_t ow = 0; ow < ow_count; ++ow) {
          const int64_t w = pad_source_index(ow, g.left, g.width, g.mode);
          out[oh * ow_count + ow] = (h < 0 || w < 0) ? g.value : plane[h * g.width + w];
        }
      }
    }
  });
}

void pad_backward(float* dx, const float* dy, const PadGeometry& g) {
  check_pad_geometry(g);
  const int64_t oh_count = g.out_height(), ow_count = g.out_width();
  const int threads = num_threads();
  parallel_region(g.planes * g.height * g.width >= kParallelMinElements, threads, [&] {
    for (const int64_t p : team_static(0, g.planes)) {
      const float* grad = dy + p * oh_count * ow_count;
      float* out = dx + p * g.height * g.width;
      for (int64_t h = 0; h < g.height; ++h) {
        PadRanges rows = pad_output_ranges(h, g.top, g.height, oh_count, g.mode);
        for (int64_t w = 0; w < g.width; ++w) {
          PadRanges columns = pad_output_ranges(w, g.left, g.width, ow_count, g.mode);
          float sum = 0.0f;
          for (int r = 0; r < rows.count; ++r)
            for (int64_t oh = rows.begin[r]; oh < rows.end[r]; ++oh)
              for (int c = 0; c < columns.count; ++c)
                for (int64_t ow = columns.begin[c]; ow < columns.end[c]; ++ow) sum += grad[oh * ow_count + ow];
          out[h * g.width + w] = sum;
        }
      }
    }
  });
}

void upsample_nearest_forward(float* y, const float* x, const UpsampleGeometry& g) {
  check_upsample_geometry(g);
  const int64_t oh_count = g.out_height(), ow_count = g.out_width();
  const int threads = num_threads();
  parallel_region(g.planes * oh_count * ow_count >= kParallelMinElements, threads, [&] {
    for (const int64_t p : team_static(0, g.planes)) {
      const float* plane = x + p * g.height * g.width;
      float* out = y + p * oh_count * ow_count;
      for (int64_t oh = 0; oh < oh_count; ++oh) {
        const float* src = plane + (oh / g.scale_height) * g.width;
        for (int64_t ow = 0; ow < ow_count; ++ow) out[oh * ow_count + ow] = src[ow / g.scale_width];
      }
    }
  });
}

void upsample_nearest_backward(float* dx, const float* dy, const UpsampleGeometry& g) {
  check_upsample_geometry(g);
  const int64_t ow_count = g.out_width();
  const int threads = num_threads();
  parallel_region(g.planes * g.height * g.width >= kParallelMinElements, threads, [&] {
    for (const int64_t p : team_static(0, g.planes)) {
      const float* grad = dy + p * g.out_height() * ow_count;
      float* out = dx + p * g.height * g.width;
      for (int64_t h = 0; h < g.height; ++h)
        for (int64_t w = 0; w < g.width; ++w) {
          float sum = 0.0f;
          for (int64_t a = 0; a < g.scale_height; ++a)
            for (int64_t b = 0; b < g.scale_width; ++b) sum += grad[(h * g.scale_height + a) * ow_count + w * g.scale_width + b];
          out[h * g.width + w] = sum;
        }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Pooling.

namespace {

// The first maximum of a window and its index within the plane, scanning rows then columns from `first` (the
// window's top-left index). A NaN is a maximum (the first NaN wins), so NaN propagates as in the other frameworks.
// The update is written as selects, not a branch: on real activations "is this larger" is a coin flip, and
// mispredicted branches made pooling several times slower than the memory it touches. kKernel > 0 fixes the window
// size at compile time (2 and 3 are the common ones) so the loops unroll; 0 reads it from `kernel`.
struct WindowMax {
  float value;
  int64_t index;
};

template <int kKernel>
inline WindowMax window_max(const float* plane, int64_t width, int64_t kernel, int64_t first) {
  const int64_t size = kKernel > 0 ? kKernel : kernel;
  WindowMax best{plane[first], first};
  for (int64_t i = 0; i < size; ++i) {
    for (int64_t j = 0; j < size; ++j) {
      const int64_t index = first + i * width + j;
      const float v = plane[index];
      // Bitwise | and &, and the update as integer masks: with ?: or ||, GCC emits branches again.
      const bool take = (v > best.value) | ((v != v) & (best.value == best.value));
      const uint32_t keep_mask = uint32_t(take) - 1u;  // all ones: keep best, zero: take v
      uint32_t best_bits, v_bits;
      std::memcpy(&best_bits, &best.value, sizeof best_bits);
      std::memcpy(&v_bits, &v, sizeof v_bits);
      best_bits = (best_bits & keep_mask) | (v_bits & ~keep_mask);
      std::memcpy(&best.value, &best_bits, sizeof best_bits);
      const int64_t take_mask = -int64_t(take);
      best.index = (best.index & ~take_mask) | (index & take_mask);
    }
  }
  return best;
}

// Where disjoint windows are written whole: dy's bits at the window's maximum, +0 elsewhere (masks, not ?:, which
// compiles to a branch here).
template <int kKernel>
inline void write_window_gradient(float* out, int64_t width, int64_t kernel, int64_t first, int64_t best, float dy) {
  const int64_t size = kKernel > 0 ? kKernel : kernel;
  uint32_t dy_bits;
  std::memcpy(&dy_bits, &dy, sizeof dy_bits);
  for (int64_t i = 0; i < size; ++i)
    for (int64_t j = 0; j < size; ++j) {
      const int64_t index = first + i * width + j;
      const uint32_t bits = dy_bits & (0u - uint32_t(index == best));
      std::memcpy(&out[index], &bits, sizeof bits);
    }
}

// The ReLU fused into max pooling (relu flag), bitwise as F.relu then max pooling. Forward: relu(v) as the pointwise
// ReLU computes it (+0 for v <= 0, NaN kept). Backward: the ReLU passes dy where its input is > 0 and +0 elsewhere.
// relu(x)'s first maximum is x's first maximum wherever that maximum is positive (relu only zeroes non-positive
// values), and where it is not, every position of the window gets +0 whichever one the pooling picked; so the pooling
// of x routes dy, masked to +0 when the window maximum is not positive. With overlapping windows, the positions that
// receive a positive window's dy are the positive ones, which the ReLU passes unchanged: the same sums.
inline float relu_value(float v) { return ((v > 0.0f) | (v != v)) ? v : 0.0f; }
inline float relu_window_gradient(float window_max, float dy) { return window_max > 0.0f ? dy : 0.0f; }

// Kernel 2, stride 2 (the common pooling), a plane's rows of windows: a b over c d, the winner chosen by
// window_max's rule (a later element wins only if strictly greater, or NaN over non-NaN); dy goes to the winner, +0
// to the other three. kLanes windows per step (GCC does not vectorize the stride-2 selects itself), the last group
// overlapping the one before (its windows are recomputed by the same rule and written with the same values; cheaper
// than a scalar tail: a 14-wide plane has 7 windows), rows of fewer than 4 windows one at a time with the same rule.
// Written once on GCC vector types and compiled with the direct convolution kernels for AVX-512, AVX2 and SSE2 (see
// WN_VECTOR_KERNELS): pure selects and masks, so every build gives the same bits.
template <int kLanes, size_t... I>
[[gnu::always_inline]] inline void deinterleave(typename Lanes<kLanes>::type& even, typename Lanes<kLanes>::type& odd,
                                                const float* p, std::index_sequence<I...>) {
  typename Lanes<kLanes>::type low, high;
  load_lanes(low, p);
  load_lanes(high, p + kLanes);
  even = __builtin_shufflevector(low, high, (2 * I)...);
  odd = __builtin_shufflevector(low, high, (2 * I + 1)...);
}

// p[0 .. 2*kLanes) = even[0], odd[0], even[1], odd[1], ...
template <int kLanes, size_t... I>
[[gnu::always_inline]] inline void store_interleaved(float* p, const typename Lanes<kLanes>::type& even,
                                                     const typename Lanes<kLanes>::type& odd, std::index_sequence<I...>) {
  const typename Lanes<kLanes>::type low = __builtin_shufflevector(even, odd, ((I % 2 ? kLanes : 0) + I / 2)...);
  const typename Lanes<kLanes>::type high =
      __builtin_shufflevector(even, odd, (((I + kLanes) % 2 ? kLanes : 0) + (I + kLanes) / 2)...);
  store_lanes(p, low);
  store_lanes(p + kLanes, high);
}

// The four positions of kLanes windows, the masks of where the winner moved (b over a, c over the best of a b, d
// over the best of a b c: window_max's scan order) and the window maxima.
template <int kLanes>
struct Windows {
  using V = typename Lanes<kLanes>::type;
  using M = typename Lanes<kLanes>::mask;
  V a, b, c, d, best;
  M take_b, take_c, take_d;
};

template <int kLanes>
[[gnu::always_inline]] inline void load_windows(Windows<kLanes>& w, const float* top, const float* bottom) {
  deinterleave<kLanes>(w.a, w.b, top, std::make_index_sequence<kLanes>{});
  deinterleave<kLanes>(w.c, w.d, bottom, std::make_index_sequence<kLanes>{});
  // take: later > best, or later is NaN and best is not.
  w.take_b = (w.b > w.a) | ((w.b != w.b) & (w.a == w.a));
  w.best = w.take_b ? w.b : w.a;
  w.take_c = (w.c > w.best) | ((w.c != w.c) & (w.best == w.best));
  w.best = w.take_c ? w.c : w.best;
  w.take_d = (w.d > w.best) | ((w.d != w.d) & (w.best == w.best));
  w.best = w.take_d ? w.d : w.best;
}

template <int kLanes>
[[gnu::always_inline]] inline void pool2x2_forward_row(float* out, const float* top, const float* bottom, int64_t windows,
                                                       bool relu) {
  using V = typename Lanes<kLanes>::type;
  for (int64_t w = 0; w < windows; w += kLanes) {
    const int64_t at = std::min(w, windows - kLanes);
    Windows<kLanes> win;
    load_windows(win, top + 2 * at, bottom + 2 * at);
    // relu_value kLanes at a time: kept where positive or NaN, else +0.
    if (relu) win.best = ((win.best > 0.0f) | (win.best != win.best)) ? win.best : V{};
    store_lanes(out + at, win.best);
  }
}

template <int kLanes>
[[gnu::always_inline]] inline void pool2x2_backward_row(float* out_top, float* out_bottom, const float* top,
                                                        const float* bottom, const float* dy, int64_t windows, bool relu) {
  using V = typename Lanes<kLanes>::type;
  using M = typename Lanes<kLanes>::mask;
  for (int64_t w = 0; w < windows; w += kLanes) {
    const int64_t at = std::min(w, windows - kLanes);
    Windows<kLanes> win;
    load_windows(win, top + 2 * at, bottom + 2 * at);
    V g;
    load_lanes(g, dy + at);
    // relu_window_gradient kLanes windows at a time: +0 where the window maximum is not positive.
    if (relu) g = (V)((M)g & (win.best > 0.0f));
    const M later = win.take_c | win.take_d, bits = (M)g;
    const V at_a = (V)(~(win.take_b | later) & bits), at_b = (V)(win.take_b & ~later & bits);
    const V at_c = (V)(win.take_c & ~win.take_d & bits), at_d = (V)(win.take_d & bits);
    store_interleaved<kLanes>(out_top + 2 * at, at_a, at_b, std::make_index_sequence<kLanes>{});
    store_interleaved<kLanes>(out_bottom + 2 * at, at_c, at_d, std::make_index_sequence<kLanes>{});
  }
}

// Rows of fewer than 4 windows.
[[gnu::always_inline]] inline void pool2x2_forward_row_scalar(float* out, const float* top, const float* bottom,
                                                              int64_t windows, bool relu) {
  for (int64_t w = 0; w < windows; ++w) {
    const float best = window_max<2>(top, bottom - top, 2, 2 * w).value;
    out[w] = relu ? relu_value(best) : best;
  }
}

[[gnu::always_inline]] inline void pool2x2_backward_row_scalar(float* out_top, float* out_bottom, const float* top,
                                                               const float* bottom, const float* dy, int64_t windows,
                                                               bool relu) {
  for (int64_t w = 0; w < windows; ++w) {
    const int64_t first = 2 * w;
    const WindowMax best = window_max<2>(top, bottom - top, 2, first);
    const float g = relu ? relu_window_gradient(best.value, dy[w]) : dy[w];
    out_top[first] = best.index == first ? g : 0.0f;
    out_top[first + 1] = best.index == first + 1 ? g : 0.0f;
    out_bottom[first] = best.index == first + (bottom - top) ? g : 0.0f;
    out_bottom[first + 1] = best.index == first + (bottom - top) + 1 ? g : 0.0f;
  }
}

// One plane [height, width] pooled to [oh_count, ow_count] (forward), or its gradient (backward: dx's plane whole,
// as the windows tile it; the rows and columns past the last window are the caller's).
[[gnu::always_inline]] inline void pool2x2_forward_plane(float* out, const float* plane, int64_t oh_count,
                                                         int64_t ow_count, int64_t width, bool relu) {
  for (int64_t oh = 0; oh < oh_count; ++oh) {
    float* o = out + oh * ow_count;
    const float* top = plane + 2 * oh * width;
    if (ow_count >= 16) pool2x2_forward_row<16>(o, top, top + width, ow_count, relu);
    else if (ow_count >= 8) pool2x2_forward_row<8>(o, top, top + width, ow_count, relu);
    else if (ow_count >= 4) pool2x2_forward_row<4>(o, top, top + width, ow_count, relu);
    else pool2x2_forward_row_scalar(o, top, top + width, ow_count, relu);
  }
}

[[gnu::always_inline]] inline void pool2x2_backward_plane(float* dx, const float* plane, const float* grad,
                                                          int64_t oh_count, int64_t ow_count, int64_t width, bool relu) {
  for (int64_t oh = 0; oh < oh_count; ++oh) {
    const int64_t top = 2 * oh * width;
    float* out_top = dx + top;
    const float* dy = grad + oh * ow_count;
    if (ow_count >= 16) pool2x2_backward_row<16>(out_top, out_top + width, plane + top, plane + top + width, dy, ow_count, relu);
    else if (ow_count >= 8) pool2x2_backward_row<8>(out_top, out_top + width, plane + top, plane + top + width, dy, ow_count, relu);
    else if (ow_count >= 4) pool2x2_backward_row<4>(out_top, out_top + width, plane + top, plane + top + width, dy, ow_count, relu);
    else pool2x2_backward_row_scalar(out_top, out_top + width, plane + top, plane + top + width, dy, ow_count, relu);
  }
}

#define WN_VECTOR_KERNELS(name, attribute)                                                                        \
  attribute void direct_forward_##name(const DirectForward& a, int64_t begin, int64_t end) {                     \
    direct_forward_range(a, begin, end);                                                                          \
  }                                                                                                               \
  attribute void direct_tap_sums_##name(float* sums, const DirectTaps& a) { direct_tap_sums_all(sums, a); }       \
  attribute void pool2x2_forward_##name(float* out, const float* plane, int64_t oh_count, int64_t ow_count,       \
                                        int64_t width, bool relu) {                                               \
    pool2x2_forward_plane(out, plane, oh_count, ow_count, width, relu);                                           \
  }                                                                                                               \
  attribute void pool2x2_backward_##name(float* dx, const float* plane, const float* grad, int64_t oh_count,      \
                                         int64_t ow_count, int64_t width, bool relu) {                            \
    pool2x2_backward_plane(dx, plane, grad, oh_count, ow_count, width, relu);                                     \
  }                                                                                                               \
  constexpr VectorKernels kVector_##name{#name, direct_forward_##name, direct_tap_sums_##name,                    \
                                         pool2x2_forward_##name, pool2x2_backward_##name};

WN_VECTOR_KERNELS(sse2, )
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// Contraction off: GCC fuses a * b + c into one FMA in some of the inlined loop variants and not in others (and the
// baseline has no FMA), which would make an output's bits depend on which channel group or which instruction set
// computed it. Without it the three builds give the same bits.
WN_VECTOR_KERNELS(avx2, __attribute__((target("avx2"), optimize("fp-contract=off"))))
WN_VECTOR_KERNELS(avx512, __attribute__((target("avx512f"), optimize("fp-contract=off"))))
#define WN_VECTOR_KERNELS_X86 1
#endif
#undef WN_VECTOR_KERNELS

const VectorKernels* best_vector_kernels() {
#if defined(WN_VECTOR_KERNELS_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return &kVector_avx512;
  if (__builtin_cpu_supports("avx2")) return &kVector_avx2;
#endif
  return &kVector_sse2;
}

// The kernels in use (set_conv_vector_isa may force one, for the tests).
std::atomic<const VectorKernels*> g_vector_kernels{nullptr};
const VectorKernels& vector_kernels() {
  const VectorKernels* k = g_vector_kernels.load(std::memory_order_acquire);
  if (!k) {
    k = best_vector_kernels();
    g_vector_kernels.store(k, std::memory_order_release);
  }
  return *k;
}

// body(std::integral_constant<int, K>) with K the kernel size where it is a common one (2, 3), else 0 (read at run
// time): the window loops unroll for the common sizes.
template <class Body>
void with_kernel_size(int64_t kernel, Body&& body) {
  if (kernel == 2) return body(std::integral_constant<int, 2>{});
  if (kernel == 3) return body(std::integral_constant<int, 3>{});
  body(std::integral_constant<int, 0>{});
}

}  // namespace

void max_pool2d_forward(float* y, const float* x, int64_t planes, int64_t height, int64_t width, int64_t kernel,
                        int64_t stride, bool relu) {
  check_pool_geometry(planes, height, width, kernel, stride);
  const int64_t oh_count = (height - kernel) / stride + 1, ow_count = (width - kernel) / stride + 1;
  const int threads = num_threads();
  const VectorKernels& kernels = vector_kernels();
  with_kernel_size(kernel, [&](auto size) {
    constexpr int K = decltype(size)::value;
    parallel_region(planes * height * width >= kParallelMinElements, threads, [&] {
      for (const int64_t p : team_static(0, planes)) {
        const float* plane = x + p * height * width;
        float* out = y + p * oh_count * ow_count;
        if (K == 2 && stride == 2) {
          kernels.pool2x2_forward(out, plane, oh_count, ow_count, width, relu);
          continue;
        }
        for (int64_t oh = 0; oh < oh_count; ++oh)
          for (int64_t ow = 0; ow < ow_count; ++ow) {
            const float best = window_max<K>(plane, width, kernel, oh * stride * width + ow * stride).value;
            out[oh * ow_count + ow] = relu ? relu_value(best) : best;
          }
      }
    });
  });
}

void max_pool2d_backward(float* dx, const float* dy, const float* x, int64_t planes, int64_t height, int64_t width,
                         int64_t kernel, int64_t stride, bool relu) {
  check_pool_geometry(planes, height, width, kernel, stride);
  const int64_t oh_count = (height - kernel) / stride + 1, ow_count = (width - kernel) / stride + 1;
  const int threads = num_threads();
  const VectorKernels& kernels = vector_kernels();
  const bool overlapping = stride < kernel;
  // The windows cover the plane exactly (nothing left to zero) when they are disjoint, adjacent and fit it.
  const bool tiled = stride == kernel && height % kernel == 0 && width % kernel == 0;
  with_kernel_size(kernel, [&](auto size) {
    constexpr int K = decltype(size)::value;
    parallel_region(planes * height * width >= kParallelMinElements, threads, [&] {
      for (const int64_t p : team_static(0, planes)) {
        const float* plane = x + p * height * width;
        const float* grad = dy + p * oh_count * ow_count;
        float* out = dx + p * height * width;
        if (overlapping || !tiled) std::fill(out, out + height * width, 0.0f);
        if (overlapping) {
          // Windows in row-major order: where windows overlap, an element's contributions add up in that order.
          for (int64_t oh = 0; oh < oh_count; ++oh)
            for (int64_t ow = 0; ow < ow_count; ++ow) {
              const int64_t first = oh * stride * width + ow * stride;
              const WindowMax best = window_max<K>(plane, width, kernel, first);
              const float g = grad[oh * ow_count + ow];
              out[best.index] += relu ? relu_window_gradient(best.value, g) : g;
            }
        } else if (K == 2 && stride == 2) {
          kernels.pool2x2_backward(out, plane, grad, oh_count, ow_count, width, relu);
        } else {
          // Disjoint windows: each writes its whole window (dy at its maximum, 0 elsewhere), no read-modify-write.
          for (int64_t oh = 0; oh < oh_count; ++oh)
            for (int64_t ow = 0; ow < ow_count; ++ow) {
              const int64_t first = oh * stride * width + ow * stride;
              const WindowMax best = window_max<K>(plane, width, kernel, first);
              const float g = grad[oh * ow_count + ow];
              write_window_gradient<K>(out, width, kernel, first, best.index, relu ? relu_window_gradient(best.value, g) : g);
            }
        }
      }
    });
  });
}

void global_avg_pool_forward(float* y, const float* x, int64_t planes, int64_t plane_size) {
  if (planes < 0 || plane_size <= 0) throw std::invalid_argument("global_avg_pool: plane_size must be positive");
  const int threads = num_threads();
  parallel_region(planes * plane_size >= kParallelMinElements, threads, [&] {
    for (const int64_t p : team_static(0, planes)) {
      const float* plane = x + p * plane_size;
      double sum = 0.0;
      for (int64_t i = 0; i < plane_size; ++i) sum += plane[i];
      y[p] = float(sum / double(plane_size));
    }
  });
}

void global_avg_pool_backward(float* dx, const float* dy, int64_t planes, int64_t plane_size) {
  if (planes < 0 || plane_size <= 0) throw std::invalid_argument("global_avg_pool: plane_size must be positive");
  const int threads = num_threads();
  parallel_region(planes * plane_size >= kParallelMinElements, threads, [&] {
    for (const int64_t p : team_static(0, planes)) {
      const float value = dy[p] / float(plane_size);
      std::fill(dx + p * plane_size, dx + (p + 1) * plane_size, value);
    }
  });
}

const char* conv_vector_isa() { return vector_kernels().isa; }

bool set_conv_vector_isa(const char* isa) {
  if (!isa || !*isa) {
    g_vector_kernels.store(best_vector_kernels(), std::memory_order_release);
    return true;
  }
  const VectorKernels* candidates[] = {
#if defined(WN_VECTOR_KERNELS_X86)
      &kVector_avx512, &kVector_avx2,
#endif
      &kVector_sse2};
  for (const VectorKernels* k : candidates) {
    if (std::strcmp(k->isa, isa) != 0) continue;
#if defined(WN_VECTOR_KERNELS_X86)
    __builtin_cpu_init();
    if (k == &kVector_avx512 && !__builtin_cpu_supports("avx512f")) return false;
    if (k == &kVector_avx2 && !__builtin_cpu_supports("avx2")) return false;
#endif
    g_vector_kernels.store(k, std::memory_order_release);
    return true;
  }
  return false;
}

}  // namespace weightnorm::cpu
