// CPU axis reductions over the view [outer, reduce, inner] (weightnorm/reduce.h), softmax, and their backwards.
//
// sum and mean are per-channel sums in disguise and run on the reduction planner (cpu/reduction_plan.h, through
// cpu/reduce.cc's channel sums): inner == 1 is the layout [1, outer, reduce] (each output one contiguous run), and
// otherwise each outer slice is the layout [reduce, inner, 1] (column mode: one accumulator per output).
// The other ops keep per-output state (a running max, a double sum) and walk r in order for a block of up to
// kColumnBlock consecutive outputs of one outer row: along a row of x those outputs are contiguous, so the inner
// loop is a vectorizable pass over memory. Units (o, block) never depend on the thread count; each output is
// reduced by one thread in r order: results are bitwise identical for any number of threads.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "reduce.h"
#include "reduction_plan.h"
#include "threads.h"

namespace weightnorm::cpu {
namespace detail {
void channel_sums_f64(double* sums, const float* x, const ChannelLayout& layout);  // cpu/reduce.cc
}  // namespace detail

namespace {

// Outputs per unit of work when inner > 1 (the state arrays of one unit stay in L1).
constexpr int64_t kColumnBlock = 256;

// body(o, i_begin, i_end) for every unit, in parallel when the tensor is large enough.
template <class Body>
void for_each_unit(const AxisLayout& l, Body&& body) {
  const int64_t blocks = (l.inner + kColumnBlock - 1) / kColumnBlock;
  const int64_t units = l.outer * blocks;
  const int threads = num_threads();
  parallel_region(worth_parallel(l.elements(), threads), threads, [&] {
    for (const int64_t unit : team_static(0, units)) {
      const int64_t o = unit / blocks, block = unit % blocks;
      const int64_t i_begin = block * kColumnBlock;
      body(o, i_begin, std::min(l.inner, i_begin + kColumnBlock));
    }
  });
}

inline const float* row_of(const float* x, const AxisLayout& l, int64_t o, int64_t r) {
  return x + (o * l.reduce + r) * l.inner;
}
inline float* row_of(float* x, const AxisLayout& l, int64_t o, int64_t r) { return x + (o * l.reduce + r) * l.inner; }

// Does v replace best as the max (largest) or min? Strict comparison: the first of equal values stays; a NaN
// replaces any number and is never replaced (NaN propagates, the first NaN's index is kept).
inline bool replaces(float v, float best, bool largest) {
  if (v != v) return best == best;
  return largest ? v > best : v < best;
}

// Sums over r per output, in double, on the planner.
void axis_sums(double* sums, const float* x, const AxisLayout& l) {
  if (l.inner == 1) return detail::channel_sums_f64(sums, x, ChannelLayout{1, l.outer, l.reduce});
  const ChannelLayout slice{l.reduce, l.inner, 1};
  const int threads = num_threads();
  // Small slices: one thread per slice (each slice's sums are the same whoever computes them).
  const bool parallel_slices = l.reduce * l.inner < kParallelMinElements && worth_parallel(l.elements(), threads);
  parallel_region(parallel_slices, threads, [&] {
    for (const int64_t o : team_static(0, l.outer))
      detail::channel_sums_f64(sums + o * l.inner, x + o * l.reduce * l.inner, slice);
  });
}

// The max of each output of the unit into best[0, n) (NaN if any is NaN); reduce > 0.
void unit_max(float* best, const float* x, const AxisLayout& l, int64_t o, int64_t i_begin, int64_t n) {
  const float* first = row_of(x, l, o, 0) + i_begin;
  std::copy(first, first + n, best);
  for (int64_t r = 1; r < l.reduce; ++r) {
    const float* row = row_of(x, l, o, r) + i_begin;
    for (int64_t j = 0; j < n; ++j) best[j] = replaces(row[j], best[j], true) ? row[j] : best[j];
  }
}

// sum over r of exp(x - m) per output of the unit, in double.
void unit_exp_sums(double* sums, const float* x, const float* m, const AxisLayout& l, int64_t o, int64_t i_begin,
                   int64_t n) {
  std::fill(sums, sums + n, 0.0);
  for (int64_t r = 0; r < l.reduce; ++r) {
    const float* row = row_of(x, l, o, r) + i_begin;
    for (int64_t j = 0; j < n; ++j) sums[j] += std::exp(row[j] - m[j]);
  }
}

// Per-output means in double over the unit.
void unit_means(double* mean, const float* x, const AxisLayout& l, int64_t o, int64_t i_begin, int64_t n) {
  std::fill(mean, mean + n, 0.0);
  for (int64_t r = 0; r < l.reduce; ++r) {
    const float* row = row_of(x, l, o, r) + i_begin;
    for (int64_t j = 0; j < n; ++j) mean[j] += row[j];
  }
  for (int64_t j = 0; j < n; ++j) mean[j] /= static_cast<double>(l.reduce);
}

double degrees_of_freedom(const AxisLayout& l, double correction) {
  return std::max(static_cast<double>(l.reduce) - correction, 0.0);
}

}  // namespace

void axis_reduce(float* out, const float* x, const AxisLayout& l, AxisReduceOp op, double correction) {
  if (l.outputs() == 0) return;
  if (op == AxisReduceOp::kSum || op == AxisReduceOp::kMean) {
    std::vector<double> sums(l.outputs());
    axis_sums(sums.data(), x, l);
    const double divisor = op == AxisReduceOp::kMean ? static_cast<double>(l.reduce) : 1.0;
    for (int64_t k = 0; k < l.outputs(); ++k) out[k] = static_cast<float>(sums[k] / divisor);
    return;
  }
  if (l.reduce == 0) {
    // max/min: the caller refuses an empty axis; logsumexp of nothing is log 0; var is 0/0.
    const float value = op == AxisReduceOp::kLogSumExp ? -std::numeric_limits<float>::infinity()
                                                       : std::numeric_limits<float>::quiet_NaN();
    std::fill(out, out + l.outputs(), value);
    return;
  }
  for_each_unit(l, [&](int64_t o, int64_t i_begin, int64_t i_end) {
    const int64_t n = i_end - i_begin;
    float* y = out + o * l.inner + i_begin;
    float best[kColumnBlock];
    double sums[kColumnBlock];
    switch (op) {
      case AxisReduceOp::kMax:
      case AxisReduceOp::kMin: {
        const bool largest = op == AxisReduceOp::kMax;
        const float* first = row_of(x, l, o, 0) + i_begin;
        std::copy(first, first + n, y);
        for (int64_t r = 1; r < l.reduce; ++r) {
          const float* row = row_of(x, l, o, r) + i_begin;
          for (int64_t j = 0; j < n; ++j) y[j] = replaces(row[j], y[j], largest) ? row[j] : y[j];
        }
        break;
      }
      case AxisReduceOp::kLogSumExp: {
        unit_max(best, x, l, o, i_begin, n);
        // An infinite (or NaN) max is the result: exp(x - m) would be NaN for x = m = +-inf.
        float shift[kColumnBlock];
        for (int64_t j = 0; j < n; ++j) shift[j] = std::isfinite(best[j]) ? best[j] : 0.0f;
        unit_exp_sums(sums, x, shift, l, o, i_begin, n);
        for (int64_t j = 0; j < n; ++j)
          y[j] = std::isfinite(best[j]) ? static_cast<float>(shift[j] + std::log(sums[j])) : best[j];
        break;
      }
      case AxisReduceOp::kVar:
      case AxisReduceOp::kStd: {
        double mean[kColumnBlock];
        unit_means(mean, x, l, o, i_begin, n);
        std::fill(sums, sums + n, 0.0);
        for (int64_t r = 0; r < l.reduce; ++r) {
          const float* row = row_of(x, l, o, r) + i_begin;
          for (int64_t j = 0; j < n; ++j) {
            const double d = row[j] - mean[j];
            sums[j] += d * d;
          }
        }
        const double dof = degrees_of_freedom(l, correction);
        if (op == AxisReduceOp::kStd) {
          for (int64_t j = 0; j < n; ++j) y[j] = static_cast<float>(std::sqrt(sums[j] / dof));
        } else {
          for (int64_t j = 0; j < n; ++j) y[j] = static_cast<float>(sums[j] / dof);
        }
        break;
      }
      default:
        break;
    }
  });
}

void axis_arg_reduce(float* values, int32_t* indices, const float* x, const AxisLayout& l, bool largest) {
  if (l.outputs() == 0 || l.reduce == 0) return;
  for_each_unit(l, [&](int64_t o, int64_t i_begin, int64_t i_end) {
    const int64_t n = i_end - i_begin;
    float* best = values + o * l.inner + i_begin;
    int32_t* index = indices + o * l.inner + i_begin;
    const float* first = row_of(x, l, o, 0) + i_begin;
    std::copy(first, first + n, best);
    std::fill(index, index + n, 0);
    for (int64_t r = 1; r < l.reduce; ++r) {
      const float* row = row_of(x, l, o, r) + i_begin;
      for (int64_t j = 0; j < n; ++j) {
        if (replaces(row[j], best[j], largest)) {
          best[j] = row[j];
          index[j] = static_cast<int32_t>(r);
        }
      }
    }
  });
}

void softmax_forward(float* y, const float* x, const AxisLayout& l, bool log) {
  if (l.elements() == 0) return;
  for_each_unit(l, [&](int64_t o, int64_t i_begin, int64_t i_end) {
    const int64_t n = i_end - i_begin;
    float m[kColumnBlock];
    double sums[kColumnBlock];
    unit_max(m, x, l, o, i_begin, n);
    unit_exp_sums(sums, x, m, l, o, i_begin, n);
    float log_sum[kColumnBlock], inverse[kColumnBlock];
    for (int64_t j = 0; j < n; ++j) {
      log_sum[j] = static_cast<float>(std::log(sums[j]));
      inverse[j] = static_cast<float>(1.0 / sums[j]);
    }
    for (int64_t r = 0; r < l.reduce; ++r) {
      const float* in = row_of(x, l, o, r) + i_begin;
      float* out = row_of(y, l, o, r) + i_begin;
      if (log) {
        for (int64_t j = 0; j < n; ++j) out[j] = (in[j] - m[j]) - log_sum[j];
      } else {
        for (int64_t j = 0; j < n; ++j) out[j] = std::exp(in[j] - m[j]) * inverse[j];
      }
    }
  });
}

void softmax_backward(float* dx, const float* dy, const float* y, const AxisLayout& l, bool log) {
  if (l.elements() == 0) return;
  for_each_unit(l, [&](int64_t o, int64_t i_begin, int64_t i_end) {
    const int64_t n = i_end - i_begin;
    double sums[kColumnBlock];
    std::fill(sums, sums + n, 0.0);
    for (int64_t r = 0; r < l.reduce; ++r) {
      const float* g = row_of(dy, l, o, r) + i_begin;
      const float* p = row_of(y, l, o, r) + i_begin;
      for (int64_t j = 0; j < n; ++j) sums[j] += log ? static_cast<double>(g[j]) : static_cast<double>(g[j]) * p[j];
    }
    float total[kColumnBlock];
    for (int64_t j = 0; j < n; ++j) total[j] = static_cast<float>(sums[j]);
    for (int64_t r = 0; r < l.reduce; ++r) {
      const float* g = row_of(dy, l, o, r) + i_begin;
      const float* p = row_of(y, l, o, r) + i_begin;
      float* out = row_of(dx, l, o, r) + i_begin;
      if (log) {
        for (int64_t j = 0; j < n; ++j) out[j] = g[j] - std::exp(p[j]) * total[j];
      } else {
        for (int64_t j = 0; j < n; ++j) out[j] = p[j] * (g[j] - total[j]);
      }
    }
  });
}

void axis_broadcast(float* dx, const float* dy, const AxisLayout& l, float alpha) {
  if (l.elements() == 0) return;
  for_each_unit(l, [&](int64_t o, int64_t i_begin, int64_t i_end) {
    const float* g = dy + o * l.inner + i_begin;
    for (int64_t r = 0; r < l.reduce; ++r) {
      float* out = row_of(dx, l, o, r) + i_begin;
      for (int64_t j = 0; j < i_end - i_begin; ++j) out[j] = alpha * g[j];
    }
  });
}

void axis_extremum_backward(float* dx, const float* dy, const float* x, const float* y, const AxisLayout& l) {
  if (l.elements() == 0) return;
  for_each_unit(l, [&](int64_t o, int64_t i_begin, int64_t i_end) {
    const int64_t n = i_end - i_begin;
    const float* g = dy + o * l.inner + i_begin;
    const float* extreme = y + o * l.inner + i_begin;
    float count[kColumnBlock] = {};
    for (int64_t r = 0; r < l.reduce; ++r) {
      const float* in = row_of(x, l, o, r) + i_begin;
      for (int64_t j = 0; j < n; ++j) count[j] += in[j] == extreme[j] ? 1.0f : 0.0f;
    }
    float share[kColumnBlock];
    for (int64_t j = 0; j < n; ++j) share[j] = g[j] / count[j];
    for (int64_t r = 0; r < l.reduce; ++r) {
      const float* in = row_of(x, l, o, r) + i_begin;
      float* out = row_of(dx, l, o, r) + i_begin;
      for (int64_t j = 0; j < n; ++j) out[j] = in[j] == extreme[j] ? share[j] : 0.0f;
    }
  });
}

void axis_arg_backward(float* dx, const float* dy, const float* x, const AxisLayout& l, bool largest) {
  if (l.elements() == 0) return;
  for_each_unit(l, [&](int64_t o, int64_t i_begin, int64_t i_end) {
    const int64_t n = i_end - i_begin;
    const float* g = dy + o * l.inner + i_begin;
    float best[kColumnBlock];
    int64_t index[kColumnBlock] = {};
    const float* first = row_of(x, l, o, 0) + i_begin;
    std::copy(first, first + n, best);
    for (int64_t r = 1; r < l.reduce; ++r) {
      const float* row = row_of(x, l, o, r) + i_begin;
      for (int64_t j = 0; j < n; ++j) {
        if (replaces(row[j], best[j], largest)) {
          best[j] = row[j];
          index[j] = r;
        }
      }
    }
    for (int64_t r = 0; r < l.reduce; ++r) {
      float* out = row_of(dx, l, o, r) + i_begin;
      for (int64_t j = 0; j < n; ++j) out[j] = index[j] == r ? g[j] : 0.0f;
    }
  });
}

void axis_logsumexp_backward(float* dx, const float* dy, const float* x, const AxisLayout& l) {
  if (l.elements() == 0) return;
  for_each_unit(l, [&](int64_t o, int64_t i_begin, int64_t i_end) {
    const int64_t n = i_end - i_begin;
    const float* g = dy + o * l.inner + i_begin;
    float m[kColumnBlock];
    double sums[kColumnBlock];
    unit_max(m, x, l, o, i_begin, n);
    unit_exp_sums(sums, x, m, l, o, i_begin, n);
    float scale[kColumnBlock];
    for (int64_t j = 0; j < n; ++j) scale[j] = static_cast<float>(g[j] / sums[j]);
    for (int64_t r = 0; r < l.reduce; ++r) {
      const float* in = row_of(x, l, o, r) + i_begin;
      float* out = row_of(dx, l, o, r) + i_begin;
      for (int64_t j = 0; j < n; ++j) out[j] = std::exp(in[j] - m[j]) * scale[j];
    }
  });
}

void axis_var_backward(float* dx, const float* dy, const float* x, const float* standard_deviation, const AxisLayout& l,
                       double correction) {
  if (l.elements() == 0) return;
  const double dof = degrees_of_freedom(l, correction);
  for_each_unit(l, [&](int64_t o, int64_t i_begin, int64_t i_end) {
    const int64_t n = i_end - i_begin;
    double mean[kColumnBlock], factor[kColumnBlock];
    unit_means(mean, x, l, o, i_begin, n);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = o * l.inner + i_begin + j;
      const double g = standard_deviation ? dy[k] / (2.0 * standard_deviation[k]) : dy[k];
      factor[j] = 2.0 * g / dof;
    }
    for (int64_t r = 0; r < l.reduce; ++r) {
      const float* in = row_of(x, l, o, r) + i_begin;
      float* out = row_of(dx, l, o, r) + i_begin;
      for (int64_t j = 0; j < n; ++j) out[j] = static_cast<float>(factor[j] * (in[j] - mean[j]));
    }
  });
}

}  // namespace weightnorm::cpu
