// Native kernel test, runnable without Node (and under compute-sanitizer on a GPU machine):
//  - the CPU fused and unfused kernels against a float64 reference, every layout route;
//  - where a GPU is usable, every CUDA kernel (fused and unfused, forward and backward) against the same reference,
//    and two runs of each fused CUDA kernel compared bit for bit (the reductions use no atomics);
//  - the bfloat16 fused kernels (CPU, and CUDA where a GPU is usable) against the same reference computed from the
//    bfloat16 inputs, every route, CPU results bitwise equal for 1 and 2 threads, CUDA runs bitwise equal.
// Exit status 0 when every check passes; prints one line per case and a summary.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
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
  // Error scales per channel. A scale over the whole tensor would let an error in one channel hide behind another
  // channel's large values (a zero channel's dv is g/eps·dw, ~1e12). w: the channel's largest |w|. dv: its largest
  // term, since the two terms cancel (a 1-element channel gives dv = 0). dg: ‖dw_k‖, which bounds |dg| and the
  // rounding of its float32 sum (Cauchy-Schwarz). norm: itself.
  std::vector<double> w_scale, dv_scale, dg_scale;
};

// Float64 reference of weight norm (Salimans & Kingma, 2016, §2) with the eps floor.
Reference reference(const std::vector<float>& v, const std::vector<float>& g, const std::vector<float>& dw,
                    const ChannelLayout& l, double eps) {
  Reference r;
  r.w.resize(v.size());
  r.dv.resize(v.size());
  r.norm.assign(l.channels, 0.0);
  r.dg.assign(l.channels, 0.0);
  r.w_scale.assign(l.channels, 0.0);
  r.dv_scale.assign(l.channels, 0.0);
  r.dg_scale.assign(l.channels, 0.0);
  std::vector<double> dot(l.channels, 0.0);
  auto index = [&](int64_t o, int64_t k, int64_t i) { return (o * l.channels + k) * l.inner + i; };
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t k = 0; k < l.channels; ++k)
      for (int64_t i = 0; i < l.inner; ++i) {
        const double x = v[index(o, k, i)];
        r.norm[k] += x * x;
        dot[k] += double(dw[index(o, k, i)]) * x;
        r.dg_scale[k] += double(dw[index(o, k, i)]) * dw[index(o, k, i)];
      }
  for (int64_t k = 0; k < l.channels; ++k) {
    const double raw = std::sqrt(r.norm[k]);
    r.norm[k] = std::max(raw, eps);
    r.dg[k] = dot[k] / r.norm[k];
    r.dg_scale[k] = std::sqrt(r.dg_scale[k]);
  }
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t k = 0; k < l.channels; ++k)
      for (int64_t i = 0; i < l.inner; ++i) {
        const int64_t e = index(o, k, i);
        const double n = r.norm[k];
        r.w[e] = double(v[e]) * g[k] / n;
        r.w_scale[k] = std::max(r.w_scale[k], std::fabs(r.w[e]));
        const double c2 = n > eps ? g[k] * r.dg[k] / (n * n) : 0.0;
        r.dv[e] = g[k] / n * dw[e] - c2 * v[e];
        r.dv_scale[k] = std::max({r.dv_scale[k], std::fabs(g[k] / n * dw[e]), std::fabs(c2 * v[e])});
      }
  return r;
}

// Largest error relative to its channel's scale: |got - want| / max(scale[k], tiny), k the element's channel
// (per_element: one value per channel, as norm and dg are).
double scaled_error(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& scale,
                    const ChannelLayout& l, bool per_element) {
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const int64_t k = per_element ? int64_t(i) : (int64_t(i) / l.inner) % l.channels;
    const double e = std::fabs(double(got[i]) - want[i]) / std::max(scale[k], 1e-30);
    if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
  }
  return worst;
}

// float32 kernels vs float64: a few ulps per element plus sum rounding; 2e-5 of the channel's scale is generous
// for the row lengths used here and far below any real bug (which shows up as O(1) in the channel it hits).
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

void check_outputs(const std::string& label, const Outputs& got, const Reference& want, const ChannelLayout& l) {
  const double ew = scaled_error(got.w, want.w, want.w_scale, l, false);
  const double en = scaled_error(got.norm, want.norm, want.norm, l, true);
  const double edv = scaled_error(got.dv, want.dv, want.dv_scale, l, false);
  const double edg = scaled_error(got.dg, want.dg, want.dg_scale, l, true);
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

// ---------------------------------------------------------------------------------------------------------------
// bfloat16 storage: v, w, dw and dv are bfloat16; g, norm and dg stay float32. The reference is the same float64
// one, computed from the bfloat16 inputs widened (exactly) to float.

using weightnorm::bfloat16;
using Bfloat16s = std::vector<bfloat16>;

Bfloat16s rounded_to_bfloat16(const std::vector<float>& x) {
  Bfloat16s out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = weightnorm::float_to_bfloat16(x[i]);
  return out;
}

std::vector<float> widened(const Bfloat16s& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = weightnorm::bfloat16_to_float(x[i]);
  return out;
}

bool same_bits(const Bfloat16s& a, const Bfloat16s& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(bfloat16)) == 0);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

struct Bfloat16Outputs {
  Bfloat16s w, dv;
  std::vector<float> norm, dg;
  bool operator==(const Bfloat16Outputs& o) const {
    return same_bits(w, o.w) && same_bits(dv, o.dv) && same_bits(norm, o.norm) && same_bits(dg, o.dg);
  }
};

Bfloat16Outputs run_cpu_bfloat16(const Bfloat16s& v, const std::vector<float>& g, const Bfloat16s& dw,
                                 const ChannelLayout& l, float eps) {
  Bfloat16Outputs out{Bfloat16s(v.size()), Bfloat16s(v.size()), std::vector<float>(l.channels),
                      std::vector<float>(l.channels)};
  weightnorm::cpu::weightnorm_forward(out.w.data(), out.norm.data(), v.data(), g.data(), l, eps);
  weightnorm::cpu::weightnorm_backward(out.dv.data(), out.dg.data(), dw.data(), v.data(), g.data(),
                                       out.norm.data(), l, eps);
  return out;
}

// A bfloat16 output is a float32 result rounded once to nearest even: off by at most half a bfloat16 ulp, 2^-8 of
// its magnitude. On top of that comes the float32 error of the sums and coefficients (kTolerance, as above).
constexpr double kBfloat16Rounding = 1.0 / 256;

// Worst |got - want| / allowed over the elements (<= 1 passes; 0/0 counts as 0, anything else over 0 as inf).
struct WorstRatio {
  double worst = 0.0;
  void add(double got, double want, double allowed) {
    const double error = std::fabs(got - want);
    const double ratio = error == 0.0 ? 0.0 : allowed > 0.0 ? error / allowed : INFINITY;
    if (!(ratio <= worst)) worst = std::isnan(ratio) ? INFINITY : ratio;
  }
};

// Per element: w within 2^-8 + kTolerance of itself; norm within kTolerance of itself; dv within 2^-8 of itself
// plus kTolerance of its channel's largest term (its two terms cancel); dg within kTolerance of ||dw_k||, the
// bound of |dg| (Cauchy-Schwarz) and the scale of its float32 sum's rounding.
void check_bfloat16_outputs(const std::string& label, const Bfloat16Outputs& got, const Reference& want,
                            const std::vector<float>& v, const std::vector<float>& g, const std::vector<float>& dw,
                            const ChannelLayout& l, double eps) {
  std::vector<double> term_scale(l.channels, 0.0), dw_norm(l.channels, 0.0);
  const std::vector<float> w = widened(got.w), dv = widened(got.dv);
  auto for_each_element = [&](auto&& body) {
    for (int64_t o = 0; o < l.outer; ++o)
      for (int64_t k = 0; k < l.channels; ++k)
        for (int64_t i = 0; i < l.inner; ++i) body((o * l.channels + k) * l.inner + i, k);
  };
  for_each_element([&](int64_t e, int64_t k) {
    const double n = want.norm[k];
    const double c2 = n > eps ? g[k] * want.dg[k] / (n * n) : 0.0;
    term_scale[k] = std::max({term_scale[k], std::fabs(g[k] / n * dw[e]), std::fabs(c2 * v[e])});
    dw_norm[k] += double(dw[e]) * dw[e];
  });
  WorstRatio ew, en, edv, edg;
  for_each_element([&](int64_t e, int64_t k) {
    ew.add(w[e], want.w[e], (kBfloat16Rounding + kTolerance) * std::fabs(want.w[e]));
    edv.add(dv[e], want.dv[e], kBfloat16Rounding * std::fabs(want.dv[e]) + kTolerance * term_scale[k]);
  });
  for (int64_t k = 0; k < l.channels; ++k) {
    en.add(got.norm[k], want.norm[k], kTolerance * want.norm[k]);
    edg.add(got.dg[k], want.dg[k], kTolerance * std::sqrt(dw_norm[k]));
  }
  char line[256];
  std::snprintf(line, sizeof line, "%-14s error / tolerance: w %.2f norm %.2f dv %.2f dg %.2f", label.c_str(),
                ew.worst, en.worst, edv.worst, edg.worst);
  expect(ew.worst <= 1 && en.worst <= 1 && edv.worst <= 1 && edg.worst <= 1, line);
}

#ifdef WEIGHTNORM_WITH_CUDA
template <class T>
struct DeviceArray {
  explicit DeviceArray(size_t count)
      : count(count), bytes(count * sizeof(T)), data(static_cast<T*>(cu::allocate(bytes))) {}
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    cu::copy_to_device(data, host.data(), bytes);
  }
  ~DeviceArray() { cu::release(data, bytes); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  std::vector<T> download() const {
    std::vector<T> host(count);
    cu::copy_to_host(host.data(), data, bytes);
    return host;
  }
  size_t count, bytes;
  T* data;
};

Bfloat16Outputs run_cuda_bfloat16(const Bfloat16s& v, const std::vector<float>& g, const Bfloat16s& dw,
                                  const ChannelLayout& l, float eps) {
  DeviceArray<bfloat16> device_v(v), device_dw(dw), device_w(v.size()), device_dv(v.size());
  DeviceArray<float> device_g(g), device_norm(l.channels), device_dg(l.channels);
  cu::weightnorm_forward(device_w.data, device_norm.data, device_v.data, device_g.data, l, eps);
  cu::weightnorm_backward(device_dv.data, device_dg.data, device_dw.data, device_v.data, device_g.data,
                          device_norm.data, l, eps);
  cu::synchronize();
  return {device_w.download(), device_dv.download(), device_norm.download(), device_dg.download()};
}
#endif

// One case in bfloat16: CPU against the reference, w rounded once, 1 and 2 threads bitwise equal; CUDA (where a
// GPU is usable) against the same reference, two runs bitwise equal.
void check_bfloat16_case(const Case& c, std::mt19937& rng, float eps) {
  const ChannelLayout l = layout_of(c);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v_values(l.elements()), dw_values(l.elements()), g(l.channels);
  for (auto& x : v_values) x = normal(rng);
  for (auto& x : dw_values) x = normal(rng);
  for (auto& x : g) x = normal(rng);
  if (l.channels > 3 && l.reduce_size() > 0) {
    // Channel 1 all zero, channel 2 scaled to norm eps/2: the floor is active in both, so w = v * g / eps and the
    // second term of dv is 0 (in channel 2 it would otherwise be about 1/sqrt(reduce) of the first: visible).
    double channel_2_squares = 0.0;
    for (int64_t o = 0; o < l.outer; ++o)
      for (int64_t i = 0; i < l.inner; ++i) {
        const double x = v_values[(o * l.channels + 2) * l.inner + i];
        channel_2_squares += x * x;
      }
    const float to_half_eps = static_cast<float>(0.5 * eps / std::sqrt(channel_2_squares));
    for (int64_t o = 0; o < l.outer; ++o)
      for (int64_t i = 0; i < l.inner; ++i) {
        v_values[(o * l.channels + 1) * l.inner + i] = 0.0f;
        v_values[(o * l.channels + 2) * l.inner + i] *= to_half_eps;
      }
  }
  const Bfloat16s v = rounded_to_bfloat16(v_values), dw = rounded_to_bfloat16(dw_values);
  const std::vector<float> v_exact = widened(v), dw_exact = widened(dw);
  const Reference want = reference(v_exact, g, dw_exact, l, eps);
  std::printf("%s bfloat16\n", describe(c).c_str());

  weightnorm::cpu::set_num_threads(1);
  const Bfloat16Outputs one_thread = run_cpu_bfloat16(v, g, dw, l, eps);
  weightnorm::cpu::set_num_threads(2);
  const Bfloat16Outputs two_threads = run_cpu_bfloat16(v, g, dw, l, eps);
  weightnorm::cpu::set_num_threads(0);
  check_bfloat16_outputs("cpu bf16", one_thread, want, v_exact, g, dw_exact, l, eps);
  expect(one_thread == two_threads, "cpu bf16: 1 and 2 threads differ bitwise for " + describe(c));
  // w is v * (g/norm) in float32, rounded once: the same bits as rounding that product here.
  bool rounded_once = true;
  for (int64_t e = 0; e < l.elements(); ++e) {
    const int64_t k = (e / l.inner) % l.channels;
    const float product = v_exact[e] * (g[k] / one_thread.norm[k]);
    rounded_once = rounded_once && one_thread.w[e].bits == weightnorm::float_to_bfloat16(product).bits;
  }
  expect(rounded_once, "cpu bf16: w is not the float32 product rounded once for " + describe(c));
#ifdef WEIGHTNORM_WITH_CUDA
  if (cu::device_status().usable) {
    // A throwing kernel is one failed check, not the end of the run: the other cases still report.
    try {
      const Bfloat16Outputs first = run_cuda_bfloat16(v, g, dw, l, eps);
      check_bfloat16_outputs("cuda bf16", first, want, v_exact, g, dw_exact, l, eps);
      expect(first == run_cuda_bfloat16(v, g, dw, l, eps), "cuda bf16: two runs differ bitwise for " + describe(c));
    } catch (const std::exception& error) {
      expect(false, "cuda bf16 threw for " + describe(c) + ": " + error.what());
    }
  }
#endif
}

// A NaN g (forward) or norm (backward) whose payload fills the low half (0x7fffffff): its channel's outputs are
// all NaN, the other channels' all numbers. Rounding such a NaN by the plain increment would carry it into -0.
void check_bfloat16_nan_coefficient(const Case& c) {
  const ChannelLayout l = layout_of(c);
  float payload_nan;
  const uint32_t payload_bits = 0x7fffffffu;
  std::memcpy(&payload_nan, &payload_bits, sizeof payload_nan);
  const Bfloat16s v = rounded_to_bfloat16(std::vector<float>(l.elements(), 0.75f));
  std::vector<float> g(l.channels, 1.5f), norm(l.channels), dg(l.channels);
  g[0] = payload_nan;
  Bfloat16s w(v.size()), dv(v.size());
  weightnorm::cpu::weightnorm_forward(w.data(), norm.data(), v.data(), g.data(), l, weightnorm::kDefaultNormEps);
  norm[0] = payload_nan;
  g[0] = 1.5f;
  weightnorm::cpu::weightnorm_backward(dv.data(), dg.data(), v.data(), v.data(), g.data(), norm.data(), l,
                                       weightnorm::kDefaultNormEps);
  auto nan_in_channel_0_only = [&](const Bfloat16s& w_got, const Bfloat16s& dv_got) {
    bool as_expected = true;
    for (int64_t e = 0; e < l.elements(); ++e) {
      const bool in_nan_channel = (e / l.inner) % l.channels == 0;
      as_expected = as_expected && std::isnan(weightnorm::bfloat16_to_float(w_got[e])) == in_nan_channel &&
                    std::isnan(weightnorm::bfloat16_to_float(dv_got[e])) == in_nan_channel;
    }
    return as_expected;
  };
  expect(nan_in_channel_0_only(w, dv),
         "cpu bf16: a NaN g / norm gives NaN outputs in its channel only, for " + describe(c));
#ifdef WEIGHTNORM_WITH_CUDA
  if (cu::device_status().usable) {
    try {
      std::vector<float> g_nan(l.channels, 1.5f);
      g_nan[0] = payload_nan;
      DeviceArray<bfloat16> device_v(v), device_w(v.size()), device_dv(v.size());
      DeviceArray<float> device_g_nan(g_nan), device_g(g), device_norm_out(l.channels), device_norm(norm),
          device_dg(l.channels);
      cu::weightnorm_forward(device_w.data, device_norm_out.data, device_v.data, device_g_nan.data, l,
                             weightnorm::kDefaultNormEps);
      cu::weightnorm_backward(device_dv.data, device_dg.data, device_v.data, device_v.data, device_g.data,
                              device_norm.data, l, weightnorm::kDefaultNormEps);
      cu::synchronize();
      expect(nan_in_channel_0_only(device_w.download(), device_dv.download()),
             "cuda bf16: a NaN g / norm gives NaN outputs in its channel only, for " + describe(c));
    } catch (const std::exception& error) {
      expect(false, "cuda bf16 threw for " + describe(c) + ": " + error.what());
    }
  }
#endif
}

}  // namespace

int main() {
  const std::vector<Case> cases = {
      {{1}, 0},          {{7}, 0},           {{7}, -1},            {{5, 1}, 0},          {{3, 1023}, 0},
      {{2, 4097}, 0},    {{64, 16}, 0},      {{1000, 16}, 0},      {{33, 7}, 0},         {{4, 12}, 1},
      {{300, 7}, 1},     {{513, 65}, 1},     {{8, 9, 5}, 1},       {{6, 40, 3}, 1},      {{5, 3, 100}, 1},
      {{3, 4, 5, 6}, 2}, {{16, 8, 3, 3}, 3}, {{16, 8, 3, 3}, 0},   {{2, 3, 40000}, 1},   {{3, 70000}, 0},
      {{4, 33000}, -1},  {{70, 300}, 1},     {{5000, 40}, 1},      {{40, 5000}, 0},      {{2, 20000, 3}, 2},
      {{1, 1, 1}, 1},    {{0, 5}, 1},        {{4, 0}, 0},
      // Routes and their edges (CUDA on sm_90; the CPU checks the same shapes). Rows kernel at 8192 floats (the
      // cluster threshold), cluster rows just above it (one block) and with 5/9 and 16-block clusters, a row count
      // of 13 and odd lengths (1-element items); the largest forward slice (1M floats, 16 x 250 KB) whose backward
      // falls back to the split route, and dim null the same way.
      {{7, 8192}, 0},    {{3, 8196}, 0},     {{2, 262144}, 0},     {{13, 65537}, 0},     {{1, 1000000}, 0},
      {{3, 200000}, -1}, {{20000, 16}, 0},
      // Column view (split route, outer > 1): last dims with 1, 2 and 3 channels, aligned and odd element counts,
      // a very tall last dim, 1024 channels (one tile), 1025 (five tiles, rows repeated to whole 16-byte items),
      // folded middle dims, many partials per channel (the finalize's whole-block group), and outer 64/65 on
      // either side of the short-column kernel.
      {{4099, 1}, 1},    {{65536, 1}, 1},    {{50001, 2}, 1},      {{65536, 2}, 1},      {{100003, 3}, 1},
      {{131072, 3}, 1},  {{700001, 3}, 1},   {{3000, 1024}, 1},    {{2000, 1025}, 1},    {{4096, 300}, 1},
      {{200, 6, 5}, 1},  {{70, 64, 40}, 1},  {{20, 4, 3000}, 1},   {{64, 33, 3}, 1},     {{65, 33, 3}, 1},
      // CPU short rows (outer 1, rows under 32: groups of four channels, expanded blocks, chunk edges, streamed
      // when >= 4 MB, a group of 1-3 at the end) and the last dim of a tall matrix split into row parts.
      {{40001, 1}, 0},   {{40001, 2}, 0},    {{40001, 3}, 0},      {{40001, 5}, 0},      {{40001, 13}, 0},
      {{40001, 16}, 0},  {{40001, 27}, 0},   {{40001, 31}, 0},     {{300007, 13}, 0},    {{262147, 16}, 0},
      {{4097, 1000}, 1}, {{4096, 1024}, 1},  {{8, 512, 9}, 1},
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
    check_outputs("cpu fused", run_cpu(weightnorm::cpu::weightnorm_forward, weightnorm::cpu::weightnorm_backward, v, g, dw, l, eps), want, l);
    check_outputs("cpu unfused", run_cpu(weightnorm::cpu::weightnorm_forward_unfused, weightnorm::cpu::weightnorm_backward_unfused, v, g, dw, l, eps), want, l);
#ifdef WEIGHTNORM_WITH_CUDA
    if (gpu) {
      // A throwing kernel (a refused launch) is one failed check: the other cases still report.
      try {
        const Outputs first = run_cuda(cu::weightnorm_forward, cu::weightnorm_backward, v, g, dw, l, eps);
        check_outputs("cuda fused", first, want, l);
        check_outputs("cuda unfused", run_cuda(cu::weightnorm_forward_unfused, cu::weightnorm_backward_unfused, v, g, dw, l, eps), want, l);
        const Outputs second = run_cuda(cu::weightnorm_forward, cu::weightnorm_backward, v, g, dw, l, eps);
        const bool identical = first.w == second.w && first.norm == second.norm && first.dv == second.dv && first.dg == second.dg;
        expect(identical, "cuda fused: two runs differ bitwise for " + describe(c));
      } catch (const std::exception& error) {
        expect(false, "cuda threw for " + describe(c) + ": " + error.what());
      }
    }
#endif
  }
  // bfloat16 storage: the same routes, plus a column-mode reduction split into parts and outputs large enough
  // (>= 4 MB) for the streaming stores, aligned and not.
  std::vector<Case> bfloat16_cases = cases;
  bfloat16_cases.insert(bfloat16_cases.end(), {{{100000, 3}, 1}, {{70000, 2, 5}, 1}, {{16, 140000}, 0},
                                               {{1500, 1401}, 0}, {{262144, 16}, 0}, {{262144, 8}, 1}});
  for (int64_t inner = 1; inner < 32; ++inner) bfloat16_cases.push_back({{40001, inner}, 0});
  for (const Case& c : bfloat16_cases) check_bfloat16_case(c, rng, eps);
  for (const Case& c : std::vector<Case>{{{4, 64}, 0}, {{64, 4}, 1}, {{2, 4, 40}, 1}}) check_bfloat16_nan_coefficient(c);
#ifdef WEIGHTNORM_WITH_CUDA
  // The intended route runs (a route that silently falls back still passes every check above): long rows take the
  // cluster route on sm_90 (and never below it), short rows the rows kernel, a tall last dim the column view.
  if (weightnorm::cuda::device_status().usable) {
    const bool sm90 = weightnorm::cuda::device_status().compute_major == 9;
    const struct {
      Case c;
      const char* route;  // nullptr: any route but the cluster one (a device below sm_90)
    } expected_routes[] = {{{{13, 65537}, 0}, sm90 ? "cluster-rows" : nullptr},
                           {{{64, 262144}, 0}, sm90 ? "cluster-rows" : nullptr},
                           {{{262144, 16}, 0}, "rows"},
                           {{{4096, 1024}, 1}, "view-split"},
                           {{{512 * 512 * 3, 3}, 1}, "view-split"}};
    for (const auto& e : expected_routes) {
      const ChannelLayout l = layout_of(e.c);
      std::vector<float> v(l.elements(), 0.5f), dw(l.elements(), 0.25f), g(l.channels, 1.0f);
      run_cuda(cu::weightnorm_forward, cu::weightnorm_backward, v, g, dw, l, eps);
      const std::string route = cu::weightnorm_last_route();
      const bool ok = e.route ? route == e.route : route != "cluster-rows";
      expect(ok, describe(e.c) + ": expected the " + (e.route ? e.route : "non-cluster") + " route, took " + route);
    }
  }
  // Hand the caching allocator's blocks back, so compute-sanitizer's leak check sees no memory still held.
  if (weightnorm::cuda::device_status().usable) weightnorm::cuda::release_cached();
#endif
  std::printf("%d passed, %d failed\n", g_checks - g_failures, g_failures);
  return g_failures == 0 ? 0 : 1;
}
