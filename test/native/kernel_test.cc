// Native kernel test, runnable without Node (and under compute-sanitizer on a GPU machine):
//  - the CPU fused and unfused kernels against a float64 reference, every layout route;
//  - where a GPU is usable, every CUDA kernel (fused and unfused, forward and backward) against the same reference,
//    and two runs of each fused CUDA kernel compared bit for bit (the reductions use no atomics).
// Exit status 0 when every check passes; prints one line per case and a summary.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../cpu/weightnorm.h"
#include "weightnorm/layout.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../../cuda/runtime.cuh"
#include "../../cuda/weightnorm.cuh"
#endif

using weightnorm::ChannelLayout;

namespace {

struct Case {
  std::vector<int64_t> shape;
  int dim;  // -1: null (one norm)
};

ChannelLayout layout_of(const Case& c) {
  ChannelLayout layout;
  if (c.dim < 0) {
    for (int64_t d : c.shape) layout.inner *= d;
    return layout;
  }
  for (int i = 0; i < c.dim; ++i) layout.outer *= c.shape[i];
  layout.channels = c.shape[c.dim];
  for (size_t i = c.dim + 1; i < c.shape.size(); ++i) layout.inner *= c.shape[i];
  return layout;
}

std::string describe(const Case& c) {
  std::string s = "[";
  for (size_t i = 0; i < c.shape.size(); ++i) s += (i ? "," : "") + std::to_string(c.shape[i]);
  return s + "] dim " + (c.dim < 0 ? std::string("null") : std::to_string(c.dim));
}

struct Reference {
  std::vector<double> w, norm, dv, dg;
  double dv_scale = 0.0;  // largest term of dv: its two terms cancel (a 1-element channel gives dv = 0)
};

// Float64 reference of PAPER.md §1 with the eps floor.
Reference reference(const std::vector<float>& v, const std::vector<float>& g, const std::vector<float>& dw,
                    const ChannelLayout& l, double eps) {
  Reference r;
  r.w.resize(v.size());
  r.dv.resize(v.size());
  r.norm.assign(l.channels, 0.0);
  r.dg.assign(l.channels, 0.0);
  std::vector<double> dot(l.channels, 0.0);
  auto index = [&](int64_t o, int64_t k, int64_t i) { return (o * l.channels + k) * l.inner + i; };
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t k = 0; k < l.channels; ++k)
      for (int64_t i = 0; i < l.inner; ++i) {
        const double x = v[index(o, k, i)];
        r.norm[k] += x * x;
        dot[k] += double(dw[index(o, k, i)]) * x;
      }
  for (int64_t k = 0; k < l.channels; ++k) {
    const double raw = std::sqrt(r.norm[k]);
    r.norm[k] = std::max(raw, eps);
    r.dg[k] = dot[k] / r.norm[k];
  }
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t k = 0; k < l.channels; ++k)
      for (int64_t i = 0; i < l.inner; ++i) {
        const int64_t e = index(o, k, i);
        const double n = r.norm[k];
        r.w[e] = double(v[e]) * g[k] / n;
        const double c2 = n > eps ? g[k] * r.dg[k] / (n * n) : 0.0;
        r.dv[e] = g[k] / n * dw[e] - c2 * v[e];
        r.dv_scale = std::max({r.dv_scale, std::fabs(g[k] / n * dw[e]), std::fabs(c2 * v[e])});
      }
  return r;
}

// Largest error relative to the tensor's scale: |got - want| / max(|want|_inf, tiny).
double scaled_error(const std::vector<float>& got, const std::vector<double>& want, double scale = 1e-30) {
  double worst = 0.0;
  scale = std::max(scale, 1e-30);
  for (double x : want) scale = std::max(scale, std::fabs(x));
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(double(got[i]) - want[i]);
    if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
  }
  return worst / scale;
}

// float32 kernels vs float64: a few ulps per element plus sum rounding; 2e-5 of the largest value is generous
// for the row lengths used here and far below any real bug (which shows up as O(1)).
constexpr double kTolerance = 2e-5;
int g_failures = 0, g_checks = 0;

void expect(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

struct Outputs {
  std::vector<float> w, norm, dv, dg;
};

using ForwardFn = void (*)(float*, float*, const float*, const float*, const ChannelLayout&, float);
using BackwardFn = void (*)(float*, float*, const float*, const float*, const float*, const float*,
                            const ChannelLayout&, float);

void check_outputs(const std::string& label, const Outputs& got, const Reference& want) {
  const double ew = scaled_error(got.w, want.w), en = scaled_error(got.norm, want.norm);
  const double edv = scaled_error(got.dv, want.dv, want.dv_scale), edg = scaled_error(got.dg, want.dg);
  char line[256];
  std::snprintf(line, sizeof line, "%-10s w %.2e norm %.2e dv %.2e dg %.2e", label.c_str(), ew, en, edv, edg);
  expect(ew < kTolerance && en < kTolerance && edv < kTolerance && edg < kTolerance, line);
}

Outputs run_cpu(ForwardFn forward, BackwardFn backward, const std::vector<float>& v, const std::vector<float>& g,
                const std::vector<float>& dw, const ChannelLayout& l, float eps) {
  Outputs out{std::vector<float>(v.size()), std::vector<float>(l.channels), std::vector<float>(v.size()),
              std::vector<float>(l.channels)};
  forward(out.w.data(), out.norm.data(), v.data(), g.data(), l, eps);
  backward(out.dv.data(), out.dg.data(), dw.data(), v.data(), g.data(), out.norm.data(), l, eps);
  return out;
}

#ifdef WEIGHTNORM_WITH_CUDA
namespace cu = weightnorm::cuda;

struct DeviceBuffer {
  explicit DeviceBuffer(size_t floats) : bytes(floats * sizeof(float)), data(static_cast<float*>(cu::allocate(bytes))) {}
  ~DeviceBuffer() { cu::release(data, bytes); }
  size_t bytes;
  float* data;
};

std::vector<float> download(const DeviceBuffer& buffer) {
  std::vector<float> host(buffer.bytes / sizeof(float));
  cu::copy_to_host(host.data(), buffer.data, buffer.bytes);
  return host;
}

Outputs run_cuda(ForwardFn forward, BackwardFn backward, const std::vector<float>& v, const std::vector<float>& g,
                 const std::vector<float>& dw, const ChannelLayout& l, float eps) {
  DeviceBuffer dv_in(v.size()), dg_in(g.size()), ddw(dw.size()), dwout(v.size()), dnorm(l.channels),
      ddv(v.size()), ddg(l.channels);
  cu::copy_to_device(dv_in.data, v.data(), dv_in.bytes);
  cu::copy_to_device(dg_in.data, g.data(), dg_in.bytes);
  cu::copy_to_device(ddw.data, dw.data(), ddw.bytes);
  forward(dwout.data, dnorm.data, dv_in.data, dg_in.data, l, eps);
  backward(ddv.data, ddg.data, ddw.data, dv_in.data, dg_in.data, dnorm.data, l, eps);
  cu::synchronize();
  return {download(dwout), download(dnorm), download(ddv), download(ddg)};
}
#endif

}  // namespace

int main() {
  const std::vector<Case> cases = {
      {{1}, 0},          {{7}, 0},           {{7}, -1},            {{5, 1}, 0},          {{3, 1023}, 0},
      {{2, 4097}, 0},    {{64, 16}, 0},      {{1000, 16}, 0},      {{33, 7}, 0},         {{4, 12}, 1},
      {{300, 7}, 1},     {{513, 65}, 1},     {{8, 9, 5}, 1},       {{6, 40, 3}, 1},      {{5, 3, 100}, 1},
      {{3, 4, 5, 6}, 2}, {{16, 8, 3, 3}, 3}, {{16, 8, 3, 3}, 0},   {{2, 3, 40000}, 1},   {{3, 70000}, 0},
      {{4, 33000}, -1},  {{70, 300}, 1},     {{5000, 40}, 1},      {{40, 5000}, 0},      {{2, 20000, 3}, 2},
      {{1, 1, 1}, 1},    {{0, 5}, 1},        {{4, 0}, 0},
  };
  std::mt19937 rng(20261128u);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float eps = weightnorm::kDefaultNormEps;

#ifdef WEIGHTNORM_WITH_CUDA
  const bool gpu = cu::device_status().usable;
  if (!gpu) std::printf("CUDA kernels compiled, but no GPU is usable (%s): checking the CPU kernels only\n",
                        cu::device_status().reason.c_str());
  else std::printf("GPU: %s\n", cu::device_status().name.c_str());
#else
  std::printf("CPU-only build: checking the CPU kernels only\n");
#endif

  for (const Case& c : cases) {
    const ChannelLayout l = layout_of(c);
    const int64_t n = l.elements();
    std::vector<float> v(n), dw(n), g(l.channels);
    for (auto& x : v) x = normal(rng);
    for (auto& x : dw) x = normal(rng);
    for (auto& x : g) x = normal(rng);
    if (l.channels > 2 && l.reduce_size() > 0) {
      // One all-zero channel: the eps floor must keep every output finite.
      for (int64_t o = 0; o < l.outer; ++o)
        for (int64_t i = 0; i < l.inner; ++i) v[(o * l.channels + 1) * l.inner + i] = 0.0f;
    }
    const Reference want = reference(v, g, dw, l, eps);
    std::printf("%s\n", describe(c).c_str());
    check_outputs("cpu fused", run_cpu(weightnorm::cpu::weightnorm_forward, weightnorm::cpu::weightnorm_backward, v, g, dw, l, eps), want);
    check_outputs("cpu unfused", run_cpu(weightnorm::cpu::weightnorm_forward_unfused, weightnorm::cpu::weightnorm_backward_unfused, v, g, dw, l, eps), want);
#ifdef WEIGHTNORM_WITH_CUDA
    if (gpu) {
      const Outputs first = run_cuda(cu::weightnorm_forward, cu::weightnorm_backward, v, g, dw, l, eps);
      check_outputs("cuda fused", first, want);
      check_outputs("cuda unfused", run_cuda(cu::weightnorm_forward_unfused, cu::weightnorm_backward_unfused, v, g, dw, l, eps), want);
      const Outputs second = run_cuda(cu::weightnorm_forward, cu::weightnorm_backward, v, g, dw, l, eps);
      const bool identical = first.w == second.w && first.norm == second.norm && first.dv == second.dv && first.dg == second.dg;
      expect(identical, "cuda fused: two runs differ bitwise for " + describe(c));
    }
#endif
  }
#ifdef WEIGHTNORM_WITH_CUDA
  // Hand the caching allocator's blocks back, so compute-sanitizer's leak check sees no memory still held.
  if (weightnorm::cuda::device_status().usable) weightnorm::cuda::release_cached();
#endif
  std::printf("%d passed, %d failed\n", g_checks - g_failures, g_failures);
  return g_failures == 0 ? 0 : 1;
}
