// CPU batch normalization (full) and mean-only batch normalization (Salimans & Kingma, 2016, §4); see
// normalization.h.
//
// Statistics come from the deterministic per-channel sums of cpu/reduce.cc (double accumulation, order
// independent of the thread count). The variance is a second pass around the saved mean, so there is no
// E[x^2] - E[x]^2 cancellation; the backward's two sums (dy, dy * (x - mean)) share one pass. Each op then
// writes its output in one elementwise pass with per-channel coefficients.
// gamma / beta / bias may be null (no affine part: 1 and 0); dgamma / dbeta / dbias may be null (not wanted).
#include "normalization.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "weightnorm.h"

namespace weightnorm::cpu {
namespace detail {
// Defined in cpu/reduce.cc: per-channel sums in double (sum x; sum (x - shift[k])^2; sum dy and
// sum (x - shift[k]) * dy).
void channel_sums_f64(double* sums, const float* x, const ChannelLayout& layout);
void channel_centered_squares(double* sums, const float* x, const float* shift, const ChannelLayout& layout);
void channel_sums_and_centered_dots(double* sums_of_dy, double* dots, const float* x, const float* shift,
                                    const float* dy, const ChannelLayout& layout);
}  // namespace detail

namespace {

constexpr int64_t kParallelMinElements = int64_t{1} << 15;

// out[e] = row_op(k)(a[e], b[e]) for the channel k of element e (b null: 0 is passed). row_op(k) returns the
// element function with channel k's coefficients captured by value, so they stay in registers along a row.
template <class RowOp>
void channel_map(float* out, const float* a, const float* b, const ChannelLayout& l, RowOp&& row_op) {
  if (l.elements() == 0) return;
  const int threads = num_threads();
  const bool parallel = l.elements() >= kParallelMinElements && threads > 1;
  if (l.inner == 1) {
    parallel_region(parallel, threads, [&] {
      for (const int64_t o : team_static(0, l.outer)) {
        const int64_t base = o * l.channels;
        for (int64_t k = 0; k < l.channels; ++k) out[base + k] = row_op(k)(a[base + k], b ? b[base + k] : 0.0f);
      }
    });
    return;
  }
  const int64_t rows = l.outer * l.channels;
  parallel_region(parallel, threads, [&] {
    for (const int64_t row : team_static(0, rows)) {
      const auto op = row_op(row % l.channels);
      const int64_t base = row * l.inner;
      if (b) {
        for (int64_t i = 0; i < l.inner; ++i) out[base + i] = op(a[base + i], b[base + i]);
      } else {
        for (int64_t i = 0; i < l.inner; ++i) out[base + i] = op(a[base + i], 0.0f);
      }
    }
  });
}

// y = (x - shift[k]) * scale[k] + offset[k]: the forward, evaluation and mean-only outputs.
void affine_apply(float* y, const float* x, const float* shift, const float* scale, const float* offset,
                  const ChannelLayout& l) {
  channel_map(y, x, nullptr, l, [&](int64_t k) {
    const float m = shift[k], s = scale[k], t = offset ? offset[k] : 0.0f;
    return [=](float value, float) { return (value - m) * s + t; };
  });
}

void channel_means(float* mean, const float* x, const ChannelLayout& l) {
  const int64_t n = l.reduce_size();
  std::vector<double> sums(l.channels);
  detail::channel_sums_f64(sums.data(), x, l);
  for (int64_t k = 0; k < l.channels; ++k) mean[k] = n > 0 ? static_cast<float>(sums[k] / double(n)) : 0.0f;
}

}  // namespace

void batch_norm_forward(float* y, float* mean, float* var, float* invstd, const float* x, const float* gamma,
                        const float* beta, const ChannelLayout& layout, float eps) {
  const int64_t channels = layout.channels, n = layout.reduce_size();
  if (channels <= 0) return;
  channel_means(mean, x, layout);
  std::vector<double> squares(channels);
  detail::channel_centered_squares(squares.data(), x, mean, layout);
  std::vector<float> scale(channels);
  for (int64_t k = 0; k < channels; ++k) {
    const double variance = n > 0 ? squares[k] / double(n) : 0.0;
    var[k] = static_cast<float>(variance);
    invstd[k] = static_cast<float>(1.0 / std::sqrt(variance + double(eps)));
    scale[k] = invstd[k] * (gamma ? gamma[k] : 1.0f);
  }
  affine_apply(y, x, mean, scale.data(), beta, layout);
}

// With xhat = (x - mean) * invstd: dbeta = sum dy, dgamma = sum dy * xhat,
// dx = gamma * invstd * (dy - dbeta / n - xhat * dgamma / n) = c_dy * dy - c_x * (x - mean) - c_0.
void batch_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* mean,
                         const float* invstd, const float* gamma, const ChannelLayout& layout) {
  const int64_t channels = layout.channels, n = layout.reduce_size();
  if (channels <= 0) return;
  std::vector<double> sums(channels), dots(channels);
  detail::channel_sums_and_centered_dots(sums.data(), dots.data(), x, mean, dy, layout);
  std::vector<float> c_dy(channels), c_x(channels), c_0(channels);
  for (int64_t k = 0; k < channels; ++k) {
    const double g = gamma ? gamma[k] : 1.0f, s = invstd[k];
    if (dbeta) dbeta[k] = static_cast<float>(sums[k]);
    if (dgamma) dgamma[k] = static_cast<float>(dots[k] * s);
    const double inv_n = n > 0 ? 1.0 / double(n) : 0.0;
    c_dy[k] = static_cast<float>(g * s);
    c_x[k] = static_cast<float>(g * s * s * s * dots[k] * inv_n);
    c_0[k] = static_cast<float>(g * s * sums[k] * inv_n);
  }
  if (!dx) return;
  channel_map(dx, dy, x, layout, [&](int64_t k) {
    const float a = c_dy[k], b = c_x[k], c = c_0[k], m = mean[k];
    return [=](float dy_value, float x_value) { return a * dy_value - b * (x_value - m) - c; };
  });
}

void batch_norm_inference(float* y, const float* x, const float* running_mean, const float* running_var,
                          const float* gamma, const float* beta, const ChannelLayout& layout, float eps) {
  const int64_t channels = layout.channels;
  if (channels <= 0) return;
  std::vector<float> scale(channels);
  for (int64_t k = 0; k < channels; ++k)
    scale[k] = static_cast<float>((gamma ? gamma[k] : 1.0f) / std::sqrt(double(running_var[k]) + double(eps)));
  affine_apply(y, x, running_mean, scale.data(), beta, layout);
}

// The one-pass sums of the training backward, shifted by the running mean; dx needs no statistic of dy.
void batch_norm_inference_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                                   const float* running_mean, const float* running_var, const float* gamma,
                                   const ChannelLayout& layout, float eps) {
  const int64_t channels = layout.channels;
  if (channels <= 0) return;
  std::vector<double> invstd(channels);
  for (int64_t k = 0; k < channels; ++k) invstd[k] = 1.0 / std::sqrt(double(running_var[k]) + double(eps));
  if (dgamma || dbeta) {
    std::vector<double> sums(channels), dots(channels);
    detail::channel_sums_and_centered_dots(sums.data(), dots.data(), x, running_mean, dy, layout);
    for (int64_t k = 0; k < channels; ++k) {
      if (dbeta) dbeta[k] = static_cast<float>(sums[k]);
      if (dgamma) dgamma[k] = static_cast<float>(dots[k] * invstd[k]);
    }
  }
  if (!dx) return;
  // The forward's own per-channel factor: dx is dy scaled exactly as x was.
  std::vector<float> scale(channels);
  for (int64_t k = 0; k < channels; ++k)
    scale[k] = static_cast<float>((gamma ? gamma[k] : 1.0f) / std::sqrt(double(running_var[k]) + double(eps)));
  channel_map(dx, dy, nullptr, layout, [&](int64_t k) {
    const float s = scale[k];
    return [=](float value, float) { return value * s; };
  });
}

void mean_only_batch_norm_forward(float* y, float* mean, const float* x, const float* bias, const ChannelLayout& layout,
                                  bool compute_mean) {
  const int64_t channels = layout.channels;
  if (channels <= 0) return;
  if (compute_mean) channel_means(mean, x, layout);
  channel_map(y, x, nullptr, layout, [&](int64_t k) {
    const float m = mean[k], b = bias ? bias[k] : 0.0f;
    return [=](float value, float) { return value - m + b; };
  });
}

void mean_only_batch_norm_backward(float* dx, float* dbias, const float* dy, const ChannelLayout& layout) {
  const int64_t channels = layout.channels, n = layout.reduce_size();
  if (channels <= 0) return;
  std::vector<double> sums(channels);
  detail::channel_sums_f64(sums.data(), dy, layout);
  std::vector<float> mean_dy(channels);
  for (int64_t k = 0; k < channels; ++k) {
    if (dbias) dbias[k] = static_cast<float>(sums[k]);
    mean_dy[k] = n > 0 ? static_cast<float>(sums[k] / double(n)) : 0.0f;
  }
  if (!dx) return;
  channel_map(dx, dy, nullptr, layout, [&](int64_t k) {
    const float m = mean_dy[k];
    return [=](float value, float) { return value - m; };
  });
}

}  // namespace weightnorm::cpu
