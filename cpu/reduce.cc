// CPU reductions (see reduce.h), and the per-channel sums the batch-norm kernels (cpu/normalization.cc) build on.
//
// Every per-channel sum runs on the one CPU reduction planner (cpu/reduction_plan.h): the domain is cut into units
// whose sizes depend only on the layout, never on the thread count; each unit is summed in a fixed order (float
// accumulators over at most 64-1024 terms, folded into double), and the units' partial sums are added in unit
// order. Results are bitwise identical for any number of threads. Segments and short rows walk each channel's
// contiguous runs; column mode walks wide rows with one accumulator per column.
#include "reduce.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "reduction_plan.h"
#include "threads.h"

namespace weightnorm::cpu {
namespace {

template <ChannelSumKind K>
inline void accumulate(float& s0, float& s1, const float* a, const float* b, int64_t i, float shift) {
  if constexpr (K == ChannelSumKind::kPlain) {
    s0 += a[i];
    (void)s1, (void)b, (void)shift;
  } else if constexpr (K == ChannelSumKind::kCenteredSquare) {
    const float d = a[i] - shift;
    s0 += d * d;
    (void)s1, (void)b;
  } else {
    s0 += b[i];
    s1 += (a[i] - shift) * b[i];
  }
}

// t[n] += the sums of a contiguous run of n elements: kLanes float lanes over blocks of kFoldBlock, folded to double.
template <ChannelSumKind K>
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
    if constexpr (kChannelSums<K> == 2) t[1] += b1;
  }
}

// sums[j * N + n] = sum n of channel k_begin + j over the region: wide rows, one float accumulator per column,
// folded into double every kFoldRows wide rows.
template <ChannelSumKind K>
void reduce_columns(double* sums, const ChannelSumInputs& in, const ChannelLayout& l, const Region& region) {
  constexpr int N = kChannelSums<K>;
  const ColumnWalk walk = column_walk(l, region);
  // The columns any wide row reaches: a region of fewer rows than a wide row holds (a [1, 10] bias gradient) leaves
  // the rest untouched, and clearing and folding all kMaxColumns of them cost more than the sum itself. Skipping
  // them skips only additions of +0.0, which leave every sum as it is (a sum that starts at +0.0 is never -0.0).
  const int64_t region_columns = (region.r_end / l.inner - region.r_begin / l.inner) * walk.span;
  const int64_t used = std::min(walk.width, region_columns);
  float shift[kMaxColumns];
  float p0[kMaxColumns], p1[kMaxColumns];
  double t0[kMaxColumns], t1[kMaxColumns];
  // Column c of a wide row belongs to channel k_begin + (c % span) / inner: nested loops instead of a division
  // per column (at 1,024 columns the divisions cost more than summing a [100, 256] gradient).
  const auto for_each_column = [&](auto&& visit) {
    for (int64_t row = 0; row < used; row += walk.span)
      for (int64_t j = 0; j < region.channels(); ++j)
        for (int64_t i = 0; i < l.inner; ++i) visit(row + j * l.inner + i, j);
  };
  for_each_column([&](int64_t c, int64_t j) { shift[c] = in.shift ? in.shift[region.k_begin + j] : 0.0f; });
  std::fill(p0, p0 + used, 0.0f);
  std::fill(p1, p1 + used, 0.0f);
  std::fill(t0, t0 + used, 0.0);
  std::fill(t1, t1 + used, 0.0);
  int64_t rows_in_partial = 0;
  visit_wide_rows(l, region, walk, [&](int64_t offset, int64_t length) {
    const float* a = in.a + offset;
    const float* b = in.b ? in.b + offset : nullptr;
    for (int64_t c = 0; c < length; ++c) accumulate<K>(p0[c], p1[c], a, b, c, shift[c]);
    if (++rows_in_partial == kFoldRows) {
      for (int64_t c = 0; c < used; ++c) {
        t0[c] += p0[c];
        t1[c] += p1[c];
      }
      std::fill(p0, p0 + used, 0.0f);
      std::fill(p1, p1 + used, 0.0f);
      rows_in_partial = 0;
    }
  });
  // Each channel's columns are added in increasing c, as a single loop over c would.
  std::fill(sums, sums + region.channels() * N, 0.0);
  for_each_column([&](int64_t c, int64_t j) {
    sums[j * N] += t0[c] + p0[c];
    if constexpr (N == 2) sums[j * N + 1] += t1[c] + p1[c];
  });
}

// The same over contiguous runs (segments and short rows).
template <ChannelSumKind K>
void reduce_runs(double* sums, const ChannelSumInputs& in, const ChannelLayout& l, const Region& region) {
  constexpr int N = kChannelSums<K>;
  std::fill(sums, sums + region.channels() * N, 0.0);
  visit_runs(l, region, [&](int64_t offset, int64_t length, int64_t j) {
    const float shift = in.shift ? in.shift[region.k_begin + j] : 0.0f;
    run_sums<K>(sums + j * N, in.a + offset, in.b ? in.b + offset : nullptr, shift, length);
  });
}

// out0[k] (and out1[k]) = the channel sums of kind K, in double.
template <ChannelSumKind K>
void channel_sums(double* out0, double* out1, const ChannelSumInputs& in, const ChannelLayout& l) {
  constexpr int N = kChannelSums<K>;
  if (l.channels <= 0) return;
  const ReductionPlan plan = plan_reduction(l, /*inputs=*/N, sizeof(float), ReductionUse::kSumsOnly);
  reduce_units<N>(
      l, plan,
      [&](double* sums, const Region& region) {
        if (plan.column_mode) return reduce_columns<K>(sums, in, l, region);
        reduce_runs<K>(sums, in, l, region);
      },
      [&](int64_t k_begin, int64_t count, const double* sums) {
        for (int64_t j = 0; j < count; ++j) {
          out0[k_begin + j] = sums[j * N];
          if constexpr (N == 2) out1[k_begin + j] = sums[j * N + 1];
        }
      });
}

}  // namespace

void sum_all(float* out, const float* x, int64_t count) {
  double total = 0.0;
  if (count > 0)
    channel_sums<ChannelSumKind::kPlain>(&total, nullptr, {x, nullptr, nullptr}, ChannelLayout{1, 1, count});
  out[0] = static_cast<float>(total);
}

void channel_sum(float* out, const float* x, const ChannelLayout& layout) {
  thread_local std::vector<double> sums_buffer;
  double* sums = scratch(sums_buffer, std::max<int64_t>(layout.channels, 0));
  channel_sums<ChannelSumKind::kPlain>(sums, nullptr, {x, nullptr, nullptr}, layout);
  for (int64_t k = 0; k < layout.channels; ++k) out[k] = static_cast<float>(sums[k]);
}

// Plain stores, as an ordinary elementwise tensor op has.
void channel_scale(float* out, const float* x, const float* scale, const ChannelLayout& layout) {
  const int threads = num_threads();
  const bool parallel = layout.elements() >= kParallelMinElements && threads > 1;
  if (layout.inner == 1) {
    // Last-dim layout: each row of `channels` elements uses the whole scale vector.
    parallel_region(parallel, threads, [&] {
      for (const int64_t o : team_static(0, layout.outer)) {
        const float* src = x + o * layout.channels;
        float* dst = out + o * layout.channels;
        for (int64_t k = 0; k < layout.channels; ++k) dst[k] = src[k] * scale[k];
      }
    });
    return;
  }
  const int64_t rows = layout.outer * layout.channels;
  parallel_region(parallel, threads, [&] {
    for (const int64_t row : team_static(0, rows)) {
      const float s = scale[row % layout.channels];
      const float* src = x + row * layout.inner;
      float* dst = out + row * layout.inner;
      for (int64_t i = 0; i < layout.inner; ++i) dst[i] = src[i] * s;
    }
  });
}

void subtract(float* out, const float* a, const float* b, int64_t count) {
  const int threads = num_threads();
  const bool parallel = count >= kParallelMinElements && threads > 1;
  parallel_region(parallel, threads, [&] {
    for (const int64_t i : team_static(0, count)) out[i] = a[i] - b[i];
  });
}

// The batch-norm statistics, in double, with the same determinism. Not in reduce.h (its contract is the float
// ops); cpu/normalization.cc declares them where it uses them.
namespace detail {

void channel_sums_f64(double* sums, const float* x, const ChannelLayout& layout) {
  cpu::channel_sums<ChannelSumKind::kPlain>(sums, nullptr, {x, nullptr, nullptr}, layout);
}

void channel_centered_squares(double* sums, const float* x, const float* shift, const ChannelLayout& layout) {
  cpu::channel_sums<ChannelSumKind::kCenteredSquare>(sums, nullptr, {x, nullptr, shift}, layout);
}

void channel_sums_and_centered_dots(double* sums_of_dy, double* dots, const float* x, const float* shift,
                                    const float* dy, const ChannelLayout& layout) {
  cpu::channel_sums<ChannelSumKind::kSumAndCenteredDot>(sums_of_dy, dots, {x, dy, shift}, layout);
}

}  // namespace detail
}  // namespace weightnorm::cpu
