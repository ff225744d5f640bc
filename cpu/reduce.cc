// CPU reductions (see reduce.h), and the per-channel sums the batch-norm kernels (cpu/normalization.cc) build on.
//
// Determinism: the reduction domain is cut into units whose sizes depend only on the layout, never on the thread
// count; each unit is summed in a fixed order (float accumulators over at most 64-1024 terms, folded into
// double), and the units' partial sums are added in unit order. Results are bitwise identical for any number
// of threads.
//
// Two ways to walk a channel, as in cpu/weightnorm.cc:
//  segments  inner >= 32, or outer == 1: a channel is a set of contiguous runs; a unit is one channel and a fixed
//            slice (kPartElements) of its reduction domain r = o * inner + i.
//  columns   inner < 32 with outer > 1 (Linear [batch, features], small spatial sizes): a run is too short to
//            vectorize, so the loop runs along the row across a chunk of channels, one accumulator per column;
//            a unit is a chunk of channels and a fixed slice of rows. When the chunk spans whole rows, several
//            consecutive rows (contiguous in memory) are walked as one wide row.
#include "reduce.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "weightnorm.h"

namespace weightnorm::cpu {
namespace {

// Reduction length of one segment-mode unit (r units) and the rows of a column-mode unit (times its width).
constexpr int64_t kPartElements = int64_t{1} << 15;
constexpr int64_t kSegmentMinInner = 32;
// Most columns a column-mode chunk spans, and the width wide rows are folded up to.
constexpr int64_t kMaxColumns = 2048;
constexpr int64_t kWideColumns = 1024;
// Float accumulators take this many rows (columns) or terms per lane (segments) before folding into double.
constexpr int64_t kFoldRows = 64;
constexpr int kLanes = 16;
constexpr int64_t kFoldBlock = kLanes * 64;
constexpr int64_t kParallelMinElements = int64_t{1} << 15;

// kPlain: s0 = sum a.  kCenteredSquare: s0 = sum (a - shift[k])^2.  kSumAndCenteredDot: s0 = sum b,
// s1 = sum (a - shift[k]) * b (the batch-norm backward's two sums from one pass over x and dy).
enum class Kind { kPlain, kCenteredSquare, kSumAndCenteredDot };

template <Kind K>
constexpr int kSums = K == Kind::kSumAndCenteredDot ? 2 : 1;

struct Inputs {
  const float* a;
  const float* b;
  const float* shift;  // per channel; null for kPlain
};

template <Kind K>
inline void accumulate(float& s0, float& s1, const float* a, const float* b, int64_t i, float shift) {
  if constexpr (K == Kind::kPlain) {
    s0 += a[i];
    (void)s1, (void)b, (void)shift;
  } else if constexpr (K == Kind::kCenteredSquare) {
    const float d = a[i] - shift;
    s0 += d * d;
    (void)s1, (void)b;
  } else {
    s0 += b[i];
    s1 += (a[i] - shift) * b[i];
  }
}

// t[n] += the sums of a contiguous run of n elements: kLanes float lanes over blocks of kFoldBlock, folded to double.
template <Kind K>
void run_sums(double* t, const float* a, const float* b, float shift, int64_t n) {
  int64_t i = 0;
  while (i < n) {
    const int64_t block_end = std::min(n, i + kFoldBlock);
    float l0[kLanes] = {}, l1[kLanes] = {};
    for (; i + kLanes <= block_end; i += kLanes)
      for (int l = 0; l < kLanes; ++l) accumulate<K>(l0[l], l1[l], a, b, i + l, shift);
    for (; i < block_end; ++i) accumulate<K>(l0[0], l1[0], a, b, i, shift);
    double b0 = 0.0, b1 = 0.0;
    for (int l = 0; l < kLanes; ++l) {
      b0 += l0[l];
      b1 += l1[l];
    }
    t[0] += b0;
    if constexpr (kSums<K> == 2) t[1] += b1;
  }
}

struct Plan {
  bool columns = false;
  int64_t chunk_channels = 1;  // channels per unit
  int64_t chunks = 0;
  int64_t parts = 1;        // units per chunk
  int64_t part_length = 1;  // rows (columns mode) or r units (segments)
};

Plan make_plan(const ChannelLayout& l) {
  Plan plan;
  const int64_t reduce = l.reduce_size();
  plan.columns = l.inner > 0 && l.inner < kSegmentMinInner && l.outer > 1;
  if (plan.columns) {
    plan.chunk_channels = std::min(l.channels, std::max<int64_t>(1, kMaxColumns / l.inner));
    const int64_t span = plan.chunk_channels * l.inner;
    plan.part_length = std::max<int64_t>(kFoldRows, kPartElements / span);
    plan.parts = (l.outer + plan.part_length - 1) / plan.part_length;
  } else {
    plan.chunk_channels = 1;
    plan.part_length = kPartElements;
    plan.parts = std::max<int64_t>(1, (reduce + kPartElements - 1) / kPartElements);
  }
  plan.chunks = (l.channels + plan.chunk_channels - 1) / plan.chunk_channels;
  return plan;
}

// sums[j * N + n] = sum n of channel k_begin + j over rows [o_begin, o_end).
template <Kind K>
void reduce_columns(double* sums, const Inputs& in, const ChannelLayout& l, int64_t k_begin, int64_t k_end,
                    int64_t o_begin, int64_t o_end) {
  constexpr int N = kSums<K>;
  const int64_t span = (k_end - k_begin) * l.inner;
  const int64_t row_stride = l.channels * l.inner;
  const bool whole_rows = span == row_stride;
  const int64_t rows_per_wide = whole_rows ? std::max<int64_t>(1, kWideColumns / span) : 1;
  const int64_t width = span * rows_per_wide;
  float shift[kMaxColumns];
  float p0[kMaxColumns], p1[kMaxColumns];
  double t0[kMaxColumns], t1[kMaxColumns];
  for (int64_t c = 0; c < width; ++c) shift[c] = in.shift ? in.shift[k_begin + (c % span) / l.inner] : 0.0f;
  std::fill(p0, p0 + width, 0.0f);
  std::fill(p1, p1 + width, 0.0f);
  std::fill(t0, t0 + width, 0.0);
  std::fill(t1, t1 + width, 0.0);
  int64_t rows_in_partial = 0;
  for (int64_t o = o_begin; o < o_end; o += rows_per_wide) {
    const int64_t offset = o * row_stride + k_begin * l.inner;
    const int64_t length = std::min(rows_per_wide, o_end - o) * span;
    const float* a = in.a + offset;
    const float* b = in.b ? in.b + offset : nullptr;
    for (int64_t c = 0; c < length; ++c) accumulate<K>(p0[c], p1[c], a, b, c, shift[c]);
    if (++rows_in_partial == kFoldRows) {
      for (int64_t c = 0; c < width; ++c) {
        t0[c] += p0[c];
        t1[c] += p1[c];
      }
      std::fill(p0, p0 + width, 0.0f);
      std::fill(p1, p1 + width, 0.0f);
      rows_in_partial = 0;
    }
  }
  const int64_t channels = k_end - k_begin;
  std::fill(sums, sums + channels * N, 0.0);
  for (int64_t c = 0; c < width; ++c) {
    const int64_t j = (c % span) / l.inner;
    sums[j * N] += t0[c] + p0[c];
    if constexpr (N == 2) sums[j * N + 1] += t1[c] + p1[c];
  }
}

// sums[0..N) = the sums of channel k over r in [r_begin, r_end).
template <Kind K>
void reduce_segments(double* sums, const Inputs& in, const ChannelLayout& l, int64_t k, int64_t r_begin,
                     int64_t r_end) {
  const float shift = in.shift ? in.shift[k] : 0.0f;
  for (int64_t r = r_begin; r < r_end;) {
    const int64_t o = r / l.inner, i = r % l.inner;
    const int64_t length = std::min(l.inner - i, r_end - r);
    const int64_t offset = (o * l.channels + k) * l.inner + i;
    run_sums<K>(sums, in.a + offset, in.b ? in.b + offset : nullptr, shift, length);
    r += length;
  }
}

// out0[k] (and out1[k]) = the channel sums of kind K, in double.
template <Kind K>
void channel_sums(double* out0, double* out1, const Inputs& in, const ChannelLayout& l) {
  constexpr int N = kSums<K>;
  if (l.channels <= 0) return;
  const Plan plan = make_plan(l);
  const int64_t units = plan.chunks * plan.parts;
  const int64_t unit_floats = plan.chunk_channels * N;
  std::vector<double> partial(units * unit_floats, 0.0);
  const int threads = num_threads();
  const bool parallel = l.elements() >= kParallelMinElements && threads > 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t chunk = unit / plan.parts, part = unit % plan.parts;
    const int64_t k_begin = chunk * plan.chunk_channels;
    const int64_t k_end = std::min(l.channels, k_begin + plan.chunk_channels);
    double* sums = partial.data() + unit * unit_floats;
    if (plan.columns) {
      const int64_t o_begin = part * plan.part_length;
      reduce_columns<K>(sums, in, l, k_begin, k_end, o_begin, std::min(l.outer, o_begin + plan.part_length));
    } else {
      const int64_t r_begin = part * plan.part_length;
      reduce_segments<K>(sums, in, l, k_begin, r_begin, std::min(l.reduce_size(), r_begin + plan.part_length));
    }
  }
  for (int64_t k = 0; k < l.channels; ++k) {
    const int64_t chunk = k / plan.chunk_channels, j = k % plan.chunk_channels;
    double s0 = 0.0, s1 = 0.0;
    for (int64_t part = 0; part < plan.parts; ++part) {
      const double* sums = partial.data() + (chunk * plan.parts + part) * unit_floats + j * N;
      s0 += sums[0];
      if constexpr (N == 2) s1 += sums[1];
    }
    out0[k] = s0;
    if constexpr (N == 2) out1[k] = s1;
  }
}

}  // namespace

void sum_all(float* out, const float* x, int64_t count) {
  double total = 0.0;
  if (count > 0) channel_sums<Kind::kPlain>(&total, nullptr, {x, nullptr, nullptr}, ChannelLayout{1, 1, count});
  out[0] = static_cast<float>(total);
}

void channel_sum(float* out, const float* x, const ChannelLayout& layout) {
  std::vector<double> sums(std::max<int64_t>(layout.channels, 0));
  channel_sums<Kind::kPlain>(sums.data(), nullptr, {x, nullptr, nullptr}, layout);
  for (int64_t k = 0; k < layout.channels; ++k) out[k] = static_cast<float>(sums[k]);
}

// The batch-norm statistics, in double, with the same determinism. Not in reduce.h (its contract is the float
// ops); cpu/normalization.cc declares them where it uses them.
namespace detail {

void channel_sums_f64(double* sums, const float* x, const ChannelLayout& layout) {
  cpu::channel_sums<Kind::kPlain>(sums, nullptr, {x, nullptr, nullptr}, layout);
}

void channel_centered_squares(double* sums, const float* x, const float* shift, const ChannelLayout& layout) {
  cpu::channel_sums<Kind::kCenteredSquare>(sums, nullptr, {x, nullptr, shift}, layout);
}

void channel_sums_and_centered_dots(double* sums_of_dy, double* dots, const float* x, const float* shift,
                                    const float* dy, const ChannelLayout& layout) {
  cpu::channel_sums<Kind::kSumAndCenteredDot>(sums_of_dy, dots, {x, dy, shift}, layout);
}

}  // namespace detail
}  // namespace weightnorm::cpu
