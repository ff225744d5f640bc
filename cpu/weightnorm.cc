// CPU weight norm (see weightnorm.h). Layout: v is [outer, channels, inner]; one norm per channel.
//
// Work is cut into chunks of consecutive channels sized so that a chunk stays in L2 between the reduction and the
// write pass: each element of v (and dw) comes from memory once, the write pass re-reads it from cache. When
// there are too few chunks to feed every thread (few long channels, dim = null), each chunk's reduction is also
// cut into parts of a fixed size; the parts' sums are added in a fixed order, so results never depend on the
// thread count. Sums are accumulated in float lanes over short blocks and folded into double.
#include "weightnorm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

namespace weightnorm::cpu {
namespace {

int g_requested_threads = 0;

// A chunk's bytes (per input array) that should still be in L2 when the write pass reads them again.
constexpr int64_t kChunkBytes = 512 * 1024;
// Reduction length of one part when a channel's reduction is split; a constant so summation order is fixed.
constexpr int64_t kPartElements = int64_t{1} << 16;
// Channels whose contiguous run (inner) is shorter than this are reduced column-wise across a chunk of channels,
// so the vector loop runs along the row instead of over a handful of elements.
constexpr int64_t kSegmentMinInner = 16;
// Widest run of columns (channels * inner) accumulated at once in the column-wise reduction.
constexpr int64_t kMaxColumnSpan = 512;
// Below this many elements a single thread is faster than waking the others.
constexpr int64_t kParallelMinElements = int64_t{1} << 15;

constexpr int kLanes = 16;
constexpr int64_t kFoldBlock = 1024;

// Sum of a[i]*b[i] (or a[i]^2) over a contiguous run: 16 float lanes over blocks of 1024, folded into double.
template <bool kSquare>
double run_dot(const float* a, const float* b, int64_t n) {
  double total = 0.0;
  int64_t i = 0;
  while (i < n) {
    const int64_t block_end = std::min(n, i + kFoldBlock);
    float lanes[kLanes] = {};
    for (; i + kLanes <= block_end; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) lanes[l] += kSquare ? a[i + l] * a[i + l] : a[i + l] * b[i + l];
    }
    for (; i < block_end; ++i) lanes[0] += kSquare ? a[i] * a[i] : a[i] * b[i];
    double block = 0.0;
    for (int l = 0; l < kLanes; ++l) block += lanes[l];
    total += block;
  }
  return total;
}

double dot_dispatch(const float* a, const float* b, int64_t n) {
  return a == b ? run_dot<true>(a, b, n) : run_dot<false>(a, b, n);
}

// One unit of work: channels [k_begin, k_end) and, of each channel's reduction domain (flattened as
// r = o * inner + i), the range [r_begin, r_end). In column mode the range is whole rows (multiples of inner).
struct Region {
  int64_t k_begin, k_end, r_begin, r_end;
};

struct Plan {
  bool column_mode = false;
  int64_t chunk_channels = 1;
  int64_t chunks = 1;
  int64_t parts = 1;        // parts per chunk
  int64_t part_length = 0;  // in r units (a multiple of inner in column mode)

  Region region(int64_t chunk, int64_t part, const ChannelLayout& layout) const {
    const int64_t k_begin = chunk * chunk_channels;
    const int64_t k_end = std::min(layout.channels, k_begin + chunk_channels);
    const int64_t r_begin = part * part_length;
    const int64_t r_end = std::min(layout.reduce_size(), r_begin + part_length);
    return {k_begin, k_end, r_begin, r_end};
  }
};

Plan make_plan(const ChannelLayout& layout, int threads) {
  Plan plan;
  const int64_t reduce = layout.reduce_size();
  const int64_t bytes_per_channel = std::max<int64_t>(1, reduce * int64_t{sizeof(float)});
  plan.column_mode = layout.inner > 0 && layout.inner < kSegmentMinInner;
  int64_t by_cache = std::max<int64_t>(1, kChunkBytes / bytes_per_channel);
  if (plan.column_mode) by_cache = std::min(by_cache, std::max<int64_t>(1, kMaxColumnSpan / layout.inner));
  plan.chunk_channels = std::min(layout.channels, by_cache);
  plan.chunks = (layout.channels + plan.chunk_channels - 1) / plan.chunk_channels;
  plan.part_length = reduce;
  plan.parts = 1;
  const bool enough_chunks = plan.chunks >= 2 * int64_t{threads};
  if (!enough_chunks && layout.elements() >= kParallelMinElements && reduce > kPartElements) {
    if (plan.column_mode) {
      const int64_t span = plan.chunk_channels * layout.inner;
      const int64_t rows = std::max<int64_t>(1, kPartElements / span);
      plan.part_length = rows * layout.inner;
    } else {
      plan.part_length = kPartElements;
    }
    plan.parts = (reduce + plan.part_length - 1) / plan.part_length;
  }
  return plan;
}

// Calls write(offset, length, j) for every contiguous run of the region (segment mode), j = channel - k_begin.
template <class Write>
void visit_runs(const ChannelLayout& layout, const Region& region, Write&& write) {
  if (region.r_begin >= region.r_end) return;
  const int64_t row_stride = layout.channels * layout.inner;
  const int64_t o_first = region.r_begin / layout.inner, i_first = region.r_begin % layout.inner;
  const int64_t o_last = (region.r_end - 1) / layout.inner, i_last_end = (region.r_end - 1) % layout.inner + 1;
  for (int64_t j = 0; j < region.k_end - region.k_begin; ++j) {
    const int64_t channel_offset = (region.k_begin + j) * layout.inner;
    for (int64_t o = o_first; o <= o_last; ++o) {
      const int64_t i_begin = o == o_first ? i_first : 0;
      const int64_t i_end = o == o_last ? i_last_end : layout.inner;
      write(o * row_stride + channel_offset + i_begin, i_end - i_begin, j);
    }
  }
}

// Column mode: calls write(offset, span, expanded) for each outer row of the region, where the span covers all of
// the region's channels and expanded(c) maps a column to its channel index j.
template <class Write>
void visit_rows(const ChannelLayout& layout, const Region& region, Write&& write) {
  const int64_t row_stride = layout.channels * layout.inner;
  const int64_t span = (region.k_end - region.k_begin) * layout.inner;
  for (int64_t o = region.r_begin / layout.inner; o < region.r_end / layout.inner; ++o)
    write(o * row_stride + region.k_begin * layout.inner, span);
}

// Per-column copies of per-channel coefficients, so the column-mode write loop is a plain vector loop.
void expand_columns(float* columns, const float* per_channel, const ChannelLayout& layout, const Region& region) {
  for (int64_t j = 0; j < region.k_end - region.k_begin; ++j)
    for (int64_t i = 0; i < layout.inner; ++i) columns[j * layout.inner + i] = per_channel[region.k_begin + j];
}

// out = a * scale[channel] over the region.
void scale_region(float* out, const float* a, const float* scale, const ChannelLayout& layout, const Region& region,
                  bool column_mode) {
  if (column_mode) {
    float s[kMaxColumnSpan];
    expand_columns(s, scale, layout, region);
    visit_rows(layout, region, [&](int64_t offset, int64_t span) {
      const float* src = a + offset;
      float* dst = out + offset;
      for (int64_t c = 0; c < span; ++c) dst[c] = src[c] * s[c];
    });
    return;
  }
  visit_runs(layout, region, [&](int64_t offset, int64_t len, int64_t j) {
    const float s = scale[region.k_begin + j];
    const float* src = a + offset;
    float* dst = out + offset;
    for (int64_t i = 0; i < len; ++i) dst[i] = src[i] * s;
  });
}

// out = c1[channel] * a - c2[channel] * b over the region.
void combine_region(float* out, const float* a, const float* b, const float* c1, const float* c2,
                    const ChannelLayout& layout, const Region& region, bool column_mode) {
  if (column_mode) {
    float s1[kMaxColumnSpan], s2[kMaxColumnSpan];
    expand_columns(s1, c1, layout, region);
    expand_columns(s2, c2, layout, region);
    visit_rows(layout, region, [&](int64_t offset, int64_t span) {
      const float* pa = a + offset;
      const float* pb = b + offset;
      float* dst = out + offset;
      for (int64_t c = 0; c < span; ++c) dst[c] = s1[c] * pa[c] - s2[c] * pb[c];
    });
    return;
  }
  visit_runs(layout, region, [&](int64_t offset, int64_t len, int64_t j) {
    const float s1 = c1[region.k_begin + j], s2 = c2[region.k_begin + j];
    const float* pa = a + offset;
    const float* pb = b + offset;
    float* dst = out + offset;
    for (int64_t i = 0; i < len; ++i) dst[i] = s1 * pa[i] - s2 * pb[i];
  });
}

// sums[k - k_begin] = sum over the region of a*b, for each channel of the region.
void reduce_region(double* sums, const float* a, const float* b, const ChannelLayout& layout, const Region& region,
                   bool column_mode) {
  const int64_t count = region.k_end - region.k_begin;
  const int64_t row_stride = layout.channels * layout.inner;
  if (column_mode) {
    const int64_t span = count * layout.inner;
    double columns[kMaxColumnSpan];
    std::fill(columns, columns + span, 0.0);
    const int64_t o_begin = region.r_begin / layout.inner, o_end = region.r_end / layout.inner;
    for (int64_t o = o_begin; o < o_end; ++o) {
      const int64_t base = o * row_stride + region.k_begin * layout.inner;
      const float* pa = a + base;
      const float* pb = b + base;
      for (int64_t c = 0; c < span; ++c) columns[c] += double(pa[c]) * double(pb[c]);
    }
    for (int64_t j = 0; j < count; ++j) {
      double s = 0.0;
      for (int64_t i = 0; i < layout.inner; ++i) s += columns[j * layout.inner + i];
      sums[j] = s;
    }
    return;
  }
  std::fill(sums, sums + count, 0.0);
  visit_runs(layout, region, [&](int64_t offset, int64_t len, int64_t j) { sums[j] += dot_dispatch(a + offset, b + offset, len); });
}

float floored_norm(double sum_of_squares, float eps) {
  return std::max(static_cast<float>(std::sqrt(sum_of_squares)), eps);
}

// Coefficients of the backward: dv = c1*dw - c2*v, with dg = dot / norm.
void backward_coefficients(float* dg, float* c1, float* c2, double dot, float g, float norm, float eps) {
  const double n = norm;
  dg[0] = static_cast<float>(dot / n);
  c1[0] = static_cast<float>(g / n);
  c2[0] = norm > eps ? static_cast<float>(g * dot / (n * n * n)) : 0.0f;
}

// The two-phase driver shared by forward and backward. finish(k_begin, count, sums) turns a chunk's channel sums
// into coefficients; apply(region) writes the outputs of a region.
template <class Finish, class Apply>
void run_fused(const float* a, const float* b, const ChannelLayout& layout, Finish&& finish, Apply&& apply) {
  if (layout.channels == 0) return;
  const int threads = num_threads();
  const Plan plan = make_plan(layout, threads);
  const bool parallel = layout.elements() >= kParallelMinElements && threads > 1;
  if (plan.parts == 1) {
    // Each chunk: reduce, finish, write, while the chunk is still in cache.
#pragma omp parallel for schedule(static, 1) num_threads(threads) if (parallel)
    for (int64_t chunk = 0; chunk < plan.chunks; ++chunk) {
      const Region region = plan.region(chunk, 0, layout);
      double sums[kMaxColumnSpan];
      std::vector<double> large;
      double* out = sums;
      const int64_t count = region.k_end - region.k_begin;
      if (count > kMaxColumnSpan) {
        large.resize(count);
        out = large.data();
      }
      reduce_region(out, a, b, layout, region, plan.column_mode);
      finish(region.k_begin, count, out);
      apply(region, plan.column_mode);
    }
    return;
  }
  // Split reduction: partial sums per (chunk, part), added in part order, then the write pass.
  const int64_t units = plan.chunks * plan.parts;
  std::vector<double> partial(units * plan.chunk_channels, 0.0);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t unit = 0; unit < units; ++unit) {
    const Region region = plan.region(unit / plan.parts, unit % plan.parts, layout);
    reduce_region(partial.data() + unit * plan.chunk_channels, a, b, layout, region, plan.column_mode);
  }
  std::vector<double> sums(plan.chunk_channels);
  for (int64_t chunk = 0; chunk < plan.chunks; ++chunk) {
    const Region whole = plan.region(chunk, 0, layout);
    const int64_t count = whole.k_end - whole.k_begin;
    std::fill(sums.begin(), sums.end(), 0.0);
    for (int64_t part = 0; part < plan.parts; ++part)
      for (int64_t j = 0; j < count; ++j) sums[j] += partial[(chunk * plan.parts + part) * plan.chunk_channels + j];
    finish(whole.k_begin, count, sums.data());
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t unit = 0; unit < units; ++unit)
    apply(plan.region(unit / plan.parts, unit % plan.parts, layout), plan.column_mode);
}

}  // namespace

void set_num_threads(int threads) { g_requested_threads = threads > 0 ? threads : 0; }

int num_threads() { return g_requested_threads > 0 ? g_requested_threads : omp_get_num_procs(); }

void weightnorm_forward(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                        float eps) {
  std::vector<float> scale(layout.channels);
  run_fused(
      v, v, layout,
      [&](int64_t k_begin, int64_t count, const double* sums) {
        for (int64_t j = 0; j < count; ++j) {
          const int64_t k = k_begin + j;
          norm[k] = floored_norm(sums[j], eps);
          scale[k] = g[k] / norm[k];
        }
      },
      [&](const Region& region, bool column_mode) { scale_region(w, v, scale.data(), layout, region, column_mode); });
}

void weightnorm_backward(float* dv, float* dg, const float* dw, const float* v, const float* g, const float* norm,
                         const ChannelLayout& layout, float eps) {
  std::vector<float> c1(layout.channels), c2(layout.channels);
  run_fused(
      dw, v, layout,
      [&](int64_t k_begin, int64_t count, const double* dots) {
        for (int64_t j = 0; j < count; ++j) {
          const int64_t k = k_begin + j;
          backward_coefficients(dg + k, c1.data() + k, c2.data() + k, dots[j], g[k], norm[k], eps);
        }
      },
      [&](const Region& region, bool column_mode) {
        combine_region(dv, dw, v, c1.data(), c2.data(), layout, region, column_mode);
      });
}

void channel_dot(float* out, const float* a, const float* b, const ChannelLayout& layout) {
  if (layout.channels == 0) return;
  const int threads = num_threads();
  const Plan plan = make_plan(layout, threads);
  const int64_t units = plan.chunks * plan.parts;
  std::vector<double> partial(units * plan.chunk_channels, 0.0);
  const bool parallel = layout.elements() >= kParallelMinElements && threads > 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (int64_t unit = 0; unit < units; ++unit) {
    const Region region = plan.region(unit / plan.parts, unit % plan.parts, layout);
    reduce_region(partial.data() + unit * plan.chunk_channels, a, b, layout, region, plan.column_mode);
  }
  for (int64_t k = 0; k < layout.channels; ++k) {
    const int64_t chunk = k / plan.chunk_channels, j = k % plan.chunk_channels;
    double s = 0.0;
    for (int64_t part = 0; part < plan.parts; ++part) s += partial[(chunk * plan.parts + part) * plan.chunk_channels + j];
    out[k] = static_cast<float>(s);
  }
}

void channel_scale(float* out, const float* x, const float* scale, const ChannelLayout& layout) {
  const int threads = num_threads();
  const int64_t rows = layout.outer * layout.channels;
  const bool parallel = layout.elements() >= kParallelMinElements && threads > 1;
  if (layout.inner == 1) {
    // Last-dim layout: each row of `channels` elements uses the whole scale vector.
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (int64_t o = 0; o < layout.outer; ++o) {
      const float* src = x + o * layout.channels;
      float* dst = out + o * layout.channels;
      for (int64_t k = 0; k < layout.channels; ++k) dst[k] = src[k] * scale[k];
    }
    return;
  }
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (int64_t row = 0; row < rows; ++row) {
    const float s = scale[row % layout.channels];
    const float* src = x + row * layout.inner;
    float* dst = out + row * layout.inner;
    for (int64_t i = 0; i < layout.inner; ++i) dst[i] = src[i] * s;
  }
}

void subtract(float* out, const float* a, const float* b, int64_t count) {
  const int threads = num_threads();
  const bool parallel = count >= kParallelMinElements && threads > 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (int64_t i = 0; i < count; ++i) out[i] = a[i] - b[i];
}

void weightnorm_forward_unfused(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                                float eps) {
  // Pass 1: squared norms. Pass 2 (tiny): norm and g / norm. Pass 3: w = v * scale.
  std::vector<float> sum_of_squares(layout.channels), scale(layout.channels);
  channel_dot(sum_of_squares.data(), v, v, layout);
  for (int64_t k = 0; k < layout.channels; ++k) {
    norm[k] = floored_norm(sum_of_squares[k], eps);
    scale[k] = g[k] / norm[k];
  }
  channel_scale(w, v, scale.data(), layout);
}

void weightnorm_backward_unfused(float* dv, float* dg, const float* dw, const float* v, const float* g,
                                 const float* norm, const ChannelLayout& layout, float eps) {
  // Pass 1: <dw, v> per channel. Then t1 = c1 * dw, t2 = c2 * v, dv = t1 - t2, each its own pass.
  const int64_t count = layout.elements();
  std::vector<float> dots(layout.channels), c1(layout.channels), c2(layout.channels);
  channel_dot(dots.data(), dw, v, layout);
  for (int64_t k = 0; k < layout.channels; ++k)
    backward_coefficients(dg + k, c1.data() + k, c2.data() + k, dots[k], g[k], norm[k], eps);
  // Intermediates come from a reused buffer, as from a caching allocator: the comparison with the fused kernel
  // then counts passes over memory, not page faults on fresh allocations.
  thread_local std::vector<float> intermediates;
  if (intermediates.size() < static_cast<size_t>(2 * count)) intermediates.resize(2 * count);
  float* scaled_dw = intermediates.data();
  float* scaled_v = scaled_dw + count;
  channel_scale(scaled_dw, dw, c1.data(), layout);
  channel_scale(scaled_v, v, c2.data(), layout);
  subtract(dv, scaled_dw, scaled_v, count);
}

}  // namespace weightnorm::cpu
