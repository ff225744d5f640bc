// The weight-norm cases of the native test runner (backend_ops_test.cc, harness.h), groups weightnorm/cpu and
// weightnorm/cuda:
//  - every kernel (fused and unfused, forward and backward, float32 and bfloat16 storage, every layout route)
//    against the float64 values of the TypeScript reference (test/reference/weightnorm.ts), which
//    scripts/make_native_reference.mjs writes to test/fixtures/native_reference/weightnorm.bin with the cases
//    themselves (test/reference/native-fixtures.ts: shapes, seeds, the format). No second copy of the reference maths
//    lives here: this file draws the same inputs (cpu::fill_normal, the library's randn) and compares.
//  - Cases up to 4096 elements have every output in the fixture. Larger ones (routes and their edges, up to millions
//    of elements) have a few whole channels (norm, dg) and a few elements of each; every element of every output is
//    then also compared with the CPU's separate-pass path (weightnorm_*_unfused: a norm reduction, a scale, a
//    multiply, itself checked against the fixture), at twice the tolerance (both sides round).
//  - CUDA (where a GPU is usable): fused CUDA runs bitwise equal run to run (the reductions use no atomics), and
//    each route taken where it should be. CPU bfloat16: bitwise equal for 1 and 2 threads, w rounded once.
//  - A NaN gain or norm gives NaN outputs in its channel only (bfloat16 rounding must not carry a NaN into -0).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "../../cpu/random.h"
#include "../../cpu/weightnorm.h"
#include "harness.h"
#include "op_fixture.h"
#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../../cuda/runtime.cuh"
#include "../../cuda/weightnorm.cuh"
#endif

namespace {

using weightnorm::bfloat16;
using weightnorm::ChannelLayout;
using weightnorm::native_test::expect;
using weightnorm::native_test::format;
using weightnorm::native_test::NormalizedError;
using weightnorm::native_test::FixtureReader;
using weightnorm::native_test::open_fixture;
using weightnorm::native_test::Tolerance;
using Floats = std::vector<float>;
using Bfloat16s = std::vector<bfloat16>;

constexpr Tolerance kFloat32Tolerance{
    2e-5,
    "float32 kernels vs float64: a few ulps per element plus the sums' rounding, relative to the channel's scale; "
    "generous for these row lengths and far below a real bug (O(1) in the channel it hits)"};
// Two float32 results of the same op (fused vs separate passes): each within kFloat32Tolerance of the exact value.
constexpr Tolerance kPathsTolerance{2 * kFloat32Tolerance.relative, "two float32 paths, each within 2e-5"};
// A bfloat16 output is a float32 result rounded once to nearest even: off by at most half a bfloat16 ulp, 2^-8 of
// its magnitude, on top of the float32 error.
constexpr double kBfloat16Rounding = 1.0 / 256;

// ---------------------------------------------------------------------------------------------------------------
// The fixture (format: test/reference/native-fixtures.ts).

struct ChannelExpectation {
  int64_t k;
  double norm, dg, w_scale, dv_scale, dg_scale;
};
struct ElementExpectation {
  int64_t index;
  double w, dv;
};
struct FixtureCase {
  std::vector<int64_t> shape;
  int dim;  // -1: null (one norm)
  bool bfloat16, every_output;
  uint64_t seed;
  int64_t zeroed_channel, scaled_channel;
  float scale;
  float eps;
  double input_checksum;
  std::vector<ChannelExpectation> channels;
  std::vector<ElementExpectation> elements;
};

std::vector<FixtureCase> read_fixture() {
  const std::string path = "weightnorm.bin";
  FixtureReader in = open_fixture(path);
  if (in.ascii(8) != "WNREF001") throw std::runtime_error(path + ": not a WNREF001 file");
  std::vector<FixtureCase> cases(in.next<uint32_t>());
  for (FixtureCase& c : cases) {
    c.shape.resize(in.next<uint32_t>());
    for (int64_t& d : c.shape) d = in.next<int64_t>();
    c.dim = in.next<int32_t>();
    const uint32_t flags = in.next<uint32_t>();
    c.bfloat16 = flags & 1;
    c.every_output = flags & 2;
    c.seed = in.next<uint64_t>();
    c.zeroed_channel = in.next<int64_t>();
    c.scaled_channel = in.next<int64_t>();
    c.scale = in.next<float>();
    c.eps = static_cast<float>(in.next<double>());
    c.input_checksum = in.next<double>();
    c.channels.resize(in.next<uint32_t>());
    for (ChannelExpectation& e : c.channels) {
      e.k = in.next<uint32_t>();
      e.norm = in.next<double>();
      e.dg = in.next<double>();
      e.w_scale = in.next<double>();
      e.dv_scale = in.next<double>();
      e.dg_scale = in.next<double>();
    }
    c.elements.resize(in.next<uint32_t>());
    for (ElementExpectation& e : c.elements) {
      e.index = in.next<uint32_t>();
      e.w = in.next<double>();
      e.dv = in.next<double>();
    }
  }
  if (!in.done()) throw std::runtime_error(path + ": bytes after the last case");
  return cases;
}

const std::vector<FixtureCase>& fixture() {
  static const std::vector<FixtureCase> cases = read_fixture();
  return cases;
}

ChannelLayout layout_of(const std::vector<int64_t>& shape, int dim) {
  ChannelLayout layout;
  if (dim < 0) {
    for (int64_t d : shape) layout.inner *= d;
    return layout;
  }
  for (int i = 0; i < dim; ++i) layout.outer *= shape[i];
  layout.channels = shape[dim];
  for (size_t i = dim + 1; i < shape.size(); ++i) layout.inner *= shape[i];
  return layout;
}

std::string describe(const std::vector<int64_t>& shape, int dim) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "] dim " + (dim < 0 ? std::string("null") : std::to_string(dim));
}

int64_t channel_of(const ChannelLayout& l, int64_t e) { return (e / l.inner) % l.channels; }

// ---------------------------------------------------------------------------------------------------------------
// Inputs: the fixture's seeds through the library's generator, edited as the fixture says.

struct Inputs {
  Floats v, dw, g;  // float32 cases: the inputs; bfloat16 cases: the bfloat16 inputs widened (exactly)
  Bfloat16s v16, dw16;
};

Inputs inputs_of(const FixtureCase& c, const ChannelLayout& l) {
  Inputs in{Floats(l.elements()), Floats(l.elements()), Floats(l.channels), {}, {}};
  weightnorm::cpu::fill_normal(in.v.data(), l.elements(), c.seed, 0.0f, 1.0f);
  weightnorm::cpu::fill_normal(in.dw.data(), l.elements(), c.seed + 1, 0.0f, 1.0f);
  weightnorm::cpu::fill_normal(in.g.data(), l.channels, c.seed + 2, 0.0f, 1.0f);
  for (int64_t e = 0; e < l.elements(); ++e) {
    const int64_t k = channel_of(l, e);
    if (k == c.zeroed_channel) in.v[e] = 0.0f;
    if (k == c.scaled_channel) in.v[e] *= c.scale;
  }
  if (c.bfloat16) {
    in.v16.resize(in.v.size());
    in.dw16.resize(in.dw.size());
    for (size_t e = 0; e < in.v.size(); ++e) {
      in.v16[e] = weightnorm::float_to_bfloat16(in.v[e]);
      in.dw16[e] = weightnorm::float_to_bfloat16(in.dw[e]);
      in.v[e] = weightnorm::bfloat16_to_float(in.v16[e]);
      in.dw[e] = weightnorm::bfloat16_to_float(in.dw16[e]);
    }
  }
  return in;
}

// The fixture's checksum of its inputs (inputChecksum in native-fixtures.ts), summed in the same order.
double input_checksum(const Inputs& in) {
  double sum = 0.0;
  for (size_t i = 0; i < in.v.size(); ++i) sum += double(in.v[i]) * double(1 + i % 7);
  for (size_t i = 0; i < in.dw.size(); ++i) sum += double(in.dw[i]) * double(1 + i % 5);
  for (size_t k = 0; k < in.g.size(); ++k) sum += double(in.g[k]) * double(1 + k % 3);
  return sum;
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs of one backend, widened to float; and their errors.

struct Outputs {
  Floats w, norm, dv, dg;
};

Floats widened(const Bfloat16s& x) {
  Floats out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = weightnorm::bfloat16_to_float(x[i]);
  return out;
}

// Each output's worst error / allowed against the fixture (<= 1 passes). bfloat16 outputs (w, dv) also get half a
// bfloat16 ulp of their own magnitude.
struct Errors {
  NormalizedError w, norm, dv, dg;
  bool ok() const { return w.ok() && norm.ok() && dv.ok() && dg.ok(); }
  std::string text() const {
    return format("w %.3f norm %.3f dv %.3f dg %.3f", w.worst, norm.worst, dv.worst, dg.worst);
  }
};

Errors errors_against_fixture(const Outputs& got, const FixtureCase& c, const ChannelLayout& l) {
  const double tol = kFloat32Tolerance.relative, rounding = c.bfloat16 ? kBfloat16Rounding : 0.0;
  Errors errors;
  std::vector<const ChannelExpectation*> by_channel(l.channels, nullptr);
  for (const ChannelExpectation& e : c.channels) {
    by_channel[e.k] = &e;
    errors.norm.add(got.norm[e.k], e.norm, tol * e.norm);
    errors.dg.add(got.dg[e.k], e.dg, tol * e.dg_scale);
  }
  for (const ElementExpectation& e : c.elements) {
    const ChannelExpectation* channel = by_channel[channel_of(l, e.index)];
    if (!channel) throw std::runtime_error("weightnorm.bin: an element outside the stored channels");
    errors.w.add(got.w[e.index], e.w, c.bfloat16 ? (rounding + tol) * std::fabs(e.w) : tol * channel->w_scale);
    errors.dv.add(got.dv[e.index], e.dv, rounding * std::fabs(e.dv) + tol * channel->dv_scale);
  }
  return errors;
}

// Every element against another path's float32 results on the same inputs. Scales per channel, from the
// reference path: w: its largest |w|; norm: itself; dg: ‖dw_k‖ (Cauchy-Schwarz bound of |dg|); dv: its largest
// |dv| or |g_k|/norm_k · |dw| (dv's first term), whichever is larger: its two terms may cancel, and where they do
// the first is as large as the second.
Errors errors_against_path(const Outputs& got, const Outputs& want, const Inputs& in, const ChannelLayout& l,
                           bool bfloat16) {
  const double tol = kPathsTolerance.relative, rounding = bfloat16 ? kBfloat16Rounding : 0.0;
  std::vector<double> w_scale(l.channels, 0.0), dv_scale(l.channels, 0.0), dw_norm(l.channels, 0.0);
  for (int64_t e = 0; e < l.elements(); ++e) {
    const int64_t k = channel_of(l, e);
    const double first_term = std::fabs(double(in.g[k])) / want.norm[k] * std::fabs(double(in.dw[e]));
    w_scale[k] = std::max(w_scale[k], std::fabs(double(want.w[e])));
    dv_scale[k] = std::max({dv_scale[k], std::fabs(double(want.dv[e])), first_term});
    dw_norm[k] += double(in.dw[e]) * in.dw[e];
  }
  for (double& x : dw_norm) x = std::sqrt(x);
  Errors errors;
  for (int64_t k = 0; k < l.channels; ++k) {
    errors.norm.add(got.norm[k], want.norm[k], tol * want.norm[k]);
    errors.dg.add(got.dg[k], want.dg[k], tol * dw_norm[k]);
  }
  for (int64_t e = 0; e < l.elements(); ++e) {
    const int64_t k = channel_of(l, e);
    errors.w.add(got.w[e], want.w[e], rounding * std::fabs(double(want.w[e])) + tol * w_scale[k]);
    errors.dv.add(got.dv[e], want.dv[e], rounding * std::fabs(double(want.dv[e])) + tol * dv_scale[k]);
  }
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------
// Runs.

using ForwardFn = void (*)(float*, float*, const float*, const float*, const ChannelLayout&, float);
using BackwardFn = void (*)(float*, float*, const float*, const float*, const float*, const float*,
                            const ChannelLayout&, float);

Outputs run_cpu(ForwardFn forward, BackwardFn backward, const Inputs& in, const ChannelLayout& l, float eps) {
  Outputs out{Floats(in.v.size(), NAN), Floats(l.channels, NAN), Floats(in.v.size(), NAN), Floats(l.channels, NAN)};
  forward(out.w.data(), out.norm.data(), in.v.data(), in.g.data(), l, eps);
  backward(out.dv.data(), out.dg.data(), in.dw.data(), in.v.data(), in.g.data(), out.norm.data(), l, eps);
  return out;
}

struct Bfloat16Outputs {
  Bfloat16s w, dv;
  Floats norm, dg;
  Outputs widened() const { return {::widened(w), norm, ::widened(dv), dg}; }
  bool operator==(const Bfloat16Outputs& o) const {
    auto same = [](const auto& a, const auto& b) {
      return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
    };
    return same(w, o.w) && same(dv, o.dv) && same(norm, o.norm) && same(dg, o.dg);
  }
};

Bfloat16Outputs run_cpu_bfloat16(const Inputs& in, const ChannelLayout& l, float eps) {
  Bfloat16Outputs out{Bfloat16s(in.v.size()), Bfloat16s(in.v.size()), Floats(l.channels, NAN),
                      Floats(l.channels, NAN)};
  weightnorm::cpu::weightnorm_forward(out.w.data(), out.norm.data(), in.v16.data(), in.g.data(), l, eps);
  weightnorm::cpu::weightnorm_backward(out.dv.data(), out.dg.data(), in.dw16.data(), in.v16.data(), in.g.data(),
                                       out.norm.data(), l, eps);
  return out;
}

#ifdef WEIGHTNORM_WITH_CUDA
namespace cu = weightnorm::cuda;

template <class T>
struct DeviceArray {
  explicit DeviceArray(size_t count)
      : count(count), bytes(std::max<size_t>(count, 1) * sizeof(T)), data(static_cast<T*>(cu::allocate(bytes))) {}
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    if (!host.empty()) cu::copy_to_device(data, host.data(), host.size() * sizeof(T));
  }
  ~DeviceArray() { cu::release(data, bytes); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  std::vector<T> download() const {
    std::vector<T> host(count);
    if (count) cu::copy_to_host(host.data(), data, count * sizeof(T));
    return host;
  }
  size_t count, bytes;
  T* data;
};

Outputs run_cuda(ForwardFn forward, BackwardFn backward, const Inputs& in, const ChannelLayout& l, float eps) {
  DeviceArray<float> v(in.v), g(in.g), dw(in.dw), w(in.v.size()), norm(l.channels), dv(in.v.size()),
      dg(l.channels);
  forward(w.data, norm.data, v.data, g.data, l, eps);
  backward(dv.data, dg.data, dw.data, v.data, g.data, norm.data, l, eps);
  cu::synchronize();
  return {w.download(), norm.download(), dv.download(), dg.download()};
}

Bfloat16Outputs run_cuda_bfloat16(const Inputs& in, const ChannelLayout& l, float eps) {
  DeviceArray<bfloat16> v(in.v16), dw(in.dw16), w(in.v.size()), dv(in.v.size());
  DeviceArray<float> g(in.g), norm(l.channels), dg(l.channels);
  cu::weightnorm_forward(w.data, norm.data, v.data, g.data, l, eps);
  cu::weightnorm_backward(dv.data, dg.data, dw.data, v.data, g.data, norm.data, l, eps);
  cu::synchronize();
  return {w.download(), dv.download(), norm.download(), dg.download()};
}
#endif

// One path's outputs against the fixture and, for a case stored in part, every element against the CPU's
// separate-pass path (`paths`; null when `got` is that path).
void check_outputs(const std::string& label, const Outputs& got, const FixtureCase& c, const ChannelLayout& l,
                   const Inputs& in, const Outputs* paths) {
  const Errors fixture_errors = errors_against_fixture(got, c, l);
  std::string line = format("%-14s %s: error / tolerance vs the reference: %s", label.c_str(),
                            describe(c.shape, c.dim).c_str(), fixture_errors.text().c_str());
  bool ok = fixture_errors.ok();
  if (!c.every_output && paths) {
    const Errors path_errors = errors_against_path(got, *paths, in, l, c.bfloat16);
    line += "; every element vs cpu unfused: " + path_errors.text();
    ok = ok && path_errors.ok();
  }
  if (!ok) line += std::string(" (") + kFloat32Tolerance.reason + ")";
  expect(ok, line);
}

// The inputs of a case, checked against the fixture's checksum (so both sides compare the same problem).
Inputs checked_inputs(const FixtureCase& c, const ChannelLayout& l) {
  Inputs in = inputs_of(c, l);
  const double sum = input_checksum(in);
  expect(std::fabs(sum - c.input_checksum) <= 1e-12 * (std::fabs(c.input_checksum) + 1.0),
         format("%s%s: inputs drawn here match the fixture's (checksum %.17g, fixture %.17g)",
                describe(c.shape, c.dim).c_str(), c.bfloat16 ? " bfloat16" : "", sum, c.input_checksum));
  return in;
}

void check_cpu_case(const FixtureCase& c) {
  const ChannelLayout l = layout_of(c.shape, c.dim);
  const Inputs in = checked_inputs(c, l);
  namespace cpu = weightnorm::cpu;
  // The separate-pass outputs: checked themselves (float32), and the comparison for a case stored in part.
  const Outputs unfused = !c.bfloat16 || !c.every_output
                              ? run_cpu(cpu::weightnorm_forward_unfused, cpu::weightnorm_backward_unfused, in, l, c.eps)
                              : Outputs{};
  if (!c.bfloat16) {
    check_outputs("cpu fused", run_cpu(cpu::weightnorm_forward, cpu::weightnorm_backward, in, l, c.eps), c, l, in,
                  &unfused);
    check_outputs("cpu unfused", unfused, c, l, in, nullptr);
    return;
  }
  cpu::set_num_threads(1);
  const Bfloat16Outputs one_thread = run_cpu_bfloat16(in, l, c.eps);
  cpu::set_num_threads(2);
  const Bfloat16Outputs two_threads = run_cpu_bfloat16(in, l, c.eps);
  cpu::set_num_threads(0);
  check_outputs("cpu bf16", one_thread.widened(), c, l, in, &unfused);
  expect(one_thread == two_threads, "cpu bf16: 1 and 2 threads give the same bits for " + describe(c.shape, c.dim));
  // w is v * (g/norm) in float32, rounded once: the same bits as rounding that product here.
  bool rounded_once = true;
  for (int64_t e = 0; e < l.elements(); ++e) {
    const int64_t k = channel_of(l, e);
    const float product = in.v[e] * (in.g[k] / one_thread.norm[k]);
    rounded_once = rounded_once && one_thread.w[e].bits == weightnorm::float_to_bfloat16(product).bits;
  }
  expect(rounded_once, "cpu bf16: w is the float32 product rounded once for " + describe(c.shape, c.dim));
}

#ifdef WEIGHTNORM_WITH_CUDA
void check_cuda_case(const FixtureCase& c) {
  const ChannelLayout l = layout_of(c.shape, c.dim);
  const Inputs in = checked_inputs(c, l);
  // Only a case stored in part compares every element with the CPU's separate passes.
  const Outputs unfused = c.every_output ? Outputs{}
                                         : run_cpu(weightnorm::cpu::weightnorm_forward_unfused,
                                                   weightnorm::cpu::weightnorm_backward_unfused, in, l, c.eps);
  const std::string shape = describe(c.shape, c.dim);
  // A throwing kernel (a refused launch) is one failed check: the other cases still report.
  try {
    if (!c.bfloat16) {
      const Outputs first = run_cuda(cu::weightnorm_forward, cu::weightnorm_backward, in, l, c.eps);
      check_outputs("cuda fused", first, c, l, in, &unfused);
      check_outputs("cuda unfused", run_cuda(cu::weightnorm_forward_unfused, cu::weightnorm_backward_unfused, in, l,
                                             c.eps),
                    c, l, in, &unfused);
      const Outputs second = run_cuda(cu::weightnorm_forward, cu::weightnorm_backward, in, l, c.eps);
      const bool identical =
          first.w == second.w && first.norm == second.norm && first.dv == second.dv && first.dg == second.dg;
      expect(identical, "cuda fused: two runs give the same bits for " + shape);
    } else {
      const Bfloat16Outputs first = run_cuda_bfloat16(in, l, c.eps);
      check_outputs("cuda bf16", first.widened(), c, l, in, &unfused);
      expect(first == run_cuda_bfloat16(in, l, c.eps), "cuda bf16: two runs give the same bits for " + shape);
    }
  } catch (const std::exception& error) {
    expect(false, std::string("cuda") + (c.bfloat16 ? " bf16" : "") + " threw for " + shape + ": " + error.what());
  }
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// A NaN g (forward) or norm (backward) whose payload fills the low half (0x7fffffff): its channel's outputs are all
// NaN, the other channels' all numbers. Rounding such a NaN by the plain increment would carry it into -0.

struct NanCase {
  std::vector<int64_t> shape;
  int dim;
};
const NanCase kNanCases[] = {{{4, 64}, 0}, {{64, 4}, 1}, {{2, 4, 40}, 1}};

float payload_nan() {
  const uint32_t payload_bits = 0x7fffffffu;
  float x;
  std::memcpy(&x, &payload_bits, sizeof x);
  return x;
}

bool nan_in_channel_0_only(const Bfloat16s& w, const Bfloat16s& dv, const ChannelLayout& l) {
  bool as_expected = true;
  for (int64_t e = 0; e < l.elements(); ++e) {
    const bool in_nan_channel = channel_of(l, e) == 0;
    as_expected = as_expected && std::isnan(weightnorm::bfloat16_to_float(w[e])) == in_nan_channel &&
                  std::isnan(weightnorm::bfloat16_to_float(dv[e])) == in_nan_channel;
  }
  return as_expected;
}

void check_cpu_nan_coefficient(const NanCase& c) {
  const ChannelLayout l = layout_of(c.shape, c.dim);
  const Bfloat16s v(l.elements(), weightnorm::float_to_bfloat16(0.75f));
  Floats g(l.channels, 1.5f), norm(l.channels), dg(l.channels);
  g[0] = payload_nan();
  Bfloat16s w(v.size()), dv(v.size());
  weightnorm::cpu::weightnorm_forward(w.data(), norm.data(), v.data(), g.data(), l, weightnorm::kDefaultNormEps);
  norm[0] = payload_nan();
  g[0] = 1.5f;
  weightnorm::cpu::weightnorm_backward(dv.data(), dg.data(), v.data(), v.data(), g.data(), norm.data(), l,
                                       weightnorm::kDefaultNormEps);
  expect(nan_in_channel_0_only(w, dv, l),
         "cpu bf16: a NaN g / norm gives NaN outputs in its channel only, for " + describe(c.shape, c.dim));
}

#ifdef WEIGHTNORM_WITH_CUDA
void check_cuda_nan_coefficient(const NanCase& c) {
  const ChannelLayout l = layout_of(c.shape, c.dim);
  const Bfloat16s v(l.elements(), weightnorm::float_to_bfloat16(0.75f));
  Floats g(l.channels, 1.5f), g_nan(l.channels, 1.5f), norm(l.channels, 1.0f);
  g_nan[0] = payload_nan();
  norm[0] = payload_nan();
  try {
    DeviceArray<bfloat16> device_v(v), device_w(v.size()), device_dv(v.size());
    DeviceArray<float> device_g_nan(g_nan), device_g(g), device_norm_out(l.channels), device_norm(norm),
        device_dg(l.channels);
    cu::weightnorm_forward(device_w.data, device_norm_out.data, device_v.data, device_g_nan.data, l,
                           weightnorm::kDefaultNormEps);
    cu::weightnorm_backward(device_dv.data, device_dg.data, device_v.data, device_v.data, device_g.data,
                            device_norm.data, l, weightnorm::kDefaultNormEps);
    cu::synchronize();
    expect(nan_in_channel_0_only(device_w.download(), device_dv.download(), l),
           "cuda bf16: a NaN g / norm gives NaN outputs in its channel only, for " + describe(c.shape, c.dim));
  } catch (const std::exception& error) {
    expect(false, "cuda bf16 threw for " + describe(c.shape, c.dim) + ": " + error.what());
  }
}

// The intended route runs (a route that silently falls back still passes every check above): long rows take the
// cluster route on sm_90 (and never below it), short rows the rows kernel, a tall last dim the column view.
void check_cuda_routes() {
  const bool sm90 = cu::device_status().compute_major == 9;
  const struct {
    NanCase c;
    const char* route;  // nullptr: any route but the cluster one (a device below sm_90)
  } expected_routes[] = {{{{13, 65537}, 0}, sm90 ? "cluster-rows" : nullptr},
                         {{{64, 262144}, 0}, sm90 ? "cluster-rows" : nullptr},
                         {{{262144, 16}, 0}, "rows"},
                         {{{4096, 1024}, 1}, "view-split"},
                         {{{512 * 512 * 3, 3}, 1}, "view-split"}};
  for (const auto& e : expected_routes) {
    const ChannelLayout l = layout_of(e.c.shape, e.c.dim);
    const Inputs in{Floats(l.elements(), 0.5f), Floats(l.elements(), 0.25f), Floats(l.channels, 1.0f), {}, {}};
    run_cuda(cu::weightnorm_forward, cu::weightnorm_backward, in, l, weightnorm::kDefaultNormEps);
    const std::string route = cu::weightnorm_last_route();
    const bool ok = e.route ? route == e.route : route != "cluster-rows";
    expect(ok, describe(e.c.shape, e.c.dim) + ": expected the " + (e.route ? e.route : "non-cluster") +
                   " route, took " + route);
  }
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// Rows of 16 floats with dim 0 have one-pass kernels on AVX-512 and AVX2 CPUs (cpu/weightnorm.cc) that compute
// the same expressions in the same order as the general walk, which the separate-pass path shares (the same row
// sums, the same coefficient maths, no FMA): so they agree bit for bit on every element, with each instruction set
// this CPU runs ("none": the general walk itself). A different summation order, a contracted multiply-subtract or
// a wrong coefficient lane differs in the last bits of many elements (a wrong lane by far more). Fresh random
// inputs each run (the seed is in the message); zero rows put the eps floor on some channels; 70001 rows span
// several chunks, end in a partial group of rows (the general walk's share) and are large enough for streaming
// stores; an output one float off 64-byte alignment takes the kernels' other store.

bool same_bits(const Floats& a, const float* b) {
  return std::memcmp(a.data(), b, a.size() * sizeof(float)) == 0;
}

void check_cpu_rows16_paths() {
  namespace cpu = weightnorm::cpu;
  const uint64_t seed = (static_cast<uint64_t>(getpid()) << 32) ^ static_cast<uint64_t>(time(nullptr));
  for (const char* isa : {"avx512", "avx2", "none"}) {
    if (!cpu::set_weightnorm_rows16_isa(isa)) continue;  // this CPU or build cannot run it
    expect(std::string(cpu::weightnorm_rows16_isa()) == isa, std::string("rows of 16: forced ") + isa + ", runs " +
                                                                 cpu::weightnorm_rows16_isa());
    for (const int64_t rows : {int64_t{13}, int64_t{70001}}) {
      const ChannelLayout l{1, rows, 16};
      Inputs in{Floats(l.elements()), Floats(l.elements()), Floats(l.channels), {}, {}};
      cpu::fill_normal(in.v.data(), l.elements(), seed, 0.0f, 1.0f);
      cpu::fill_normal(in.dw.data(), l.elements(), seed + 1, 0.0f, 1.0f);
      cpu::fill_normal(in.g.data(), l.channels, seed + 2, 0.0f, 1.0f);
      for (const int64_t zero_row : {int64_t{1}, rows - 3}) std::fill_n(in.v.begin() + zero_row * 16, 16, 0.0f);
      const float eps = weightnorm::kDefaultNormEps;
      const Outputs fused = run_cpu(cpu::weightnorm_forward, cpu::weightnorm_backward, in, l, eps);
      const Outputs unfused = run_cpu(cpu::weightnorm_forward_unfused, cpu::weightnorm_backward_unfused, in, l, eps);
      const std::string what = "cpu rows of 16 (" + std::string(isa) + "), " + std::to_string(rows) + " rows, seed " +
                               std::to_string(seed) + ": ";
      expect(same_bits(unfused.w, fused.w.data()) && same_bits(unfused.norm, fused.norm.data()),
             what + "fused forward bitwise equal to the separate passes");
      expect(same_bits(unfused.dv, fused.dv.data()) && same_bits(unfused.dg, fused.dg.data()),
             what + "fused backward bitwise equal to the separate passes");
      Floats shifted(l.elements() + 16), norm(l.channels), dg(l.channels);
      float* out = shifted.data() + 1;
      cpu::weightnorm_forward(out, norm.data(), in.v.data(), in.g.data(), l, eps);
      expect(same_bits(fused.w, out), what + "forward into an output off 64-byte alignment: the same bits");
      cpu::weightnorm_backward(out, dg.data(), in.dw.data(), in.v.data(), in.g.data(), fused.norm.data(), l, eps);
      expect(same_bits(fused.dv, out), what + "backward into an output off 64-byte alignment: the same bits");
    }
  }
  cpu::set_weightnorm_rows16_isa(nullptr);
}

// ---------------------------------------------------------------------------------------------------------------
// On AVX-512 CPUs the walks run AVX-512 code (cpu/weightnorm.cc): long rows (dim 0, rows of at least 32 elements)
// are reduced and written one row at a time with run_dot's summation order and the general walk's coefficient maths
// and products; the column walk (outer > 1, inner < 32) and the short-rows walk (outer == 1, inner < 32) reduce and
// write 16 elements per instruction. Each must agree with the SSE2 code (forced "none") bit for bit, in float32 and
// bfloat16 storage, forward and backward. Fresh random inputs each run (the seed is in the message). Long rows
// straddle the short-run cutoff (64), the 16-lane body (a tail of 1 to 15) and the 1024-element fold blocks; one row
// alone; rows longer than a chunk but many enough to stay whole (reduced and written by one thread); column layouts of every width class (a wide row folded from short rows, a chunk narrower than the row, a
// tall matrix split into parts); short rows not a multiple of 4 or 16. A zero channel puts the eps floor on it;
// the largest cases are over 4 MB, so the outputs are streamed; an output one element off 64-byte alignment takes
// the scalar head first; and dw == v (the same pointer) is reduced as squares.

template <class T>
struct VectorRun {
  std::vector<T> w, dv, w_shifted, dv_same;
  Floats norm, dg, dg_same;
  bool operator==(const VectorRun& o) const {
    auto same = [](const auto& a, const auto& b) {
      return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
    };
    return same(w, o.w) && same(dv, o.dv) && same(w_shifted, o.w_shifted) && same(dv_same, o.dv_same) &&
           same(norm, o.norm) && same(dg, o.dg) && same(dg_same, o.dg_same);
  }
};

template <class T>
VectorRun<T> run_both_ways(const std::vector<T>& v, const std::vector<T>& dw, const Floats& g,
                             const ChannelLayout& l) {
  namespace cpu = weightnorm::cpu;
  const float eps = weightnorm::kDefaultNormEps;
  const size_t n = static_cast<size_t>(l.elements());
  VectorRun<T> r{std::vector<T>(n), std::vector<T>(n), std::vector<T>(n + 1), std::vector<T>(n),
                   Floats(l.channels), Floats(l.channels), Floats(l.channels)};
  cpu::weightnorm_forward(r.w.data(), r.norm.data(), v.data(), g.data(), l, eps);
  cpu::weightnorm_backward(r.dv.data(), r.dg.data(), dw.data(), v.data(), g.data(), r.norm.data(), l, eps);
  Floats norm(l.channels);
  cpu::weightnorm_forward(r.w_shifted.data() + 1, norm.data(), v.data(), g.data(), l, eps);
  r.w_shifted.erase(r.w_shifted.begin());
  cpu::weightnorm_backward(r.dv_same.data(), r.dg_same.data(), v.data(), v.data(), g.data(), r.norm.data(), l, eps);
  return r;
}

// Fresh normal v, dw and g for a layout (the seed mixed with the layout, so each layout draws its own), and v, dw
// rounded to bfloat16. eps_floor_channel: channel 1 (of more than 2) all zeros, so the eps floor applies to it.
struct RandomInputs {
  Floats v, dw, g;
  Bfloat16s v16, dw16;
  uint64_t seed;
};

RandomInputs random_inputs(const ChannelLayout& l, uint64_t seed, bool eps_floor_channel) {
  namespace cpu = weightnorm::cpu;
  RandomInputs in{Floats(l.elements()), Floats(l.elements()), Floats(l.channels), {}, {},
                  seed + static_cast<uint64_t>(l.outer * 1000003 + l.channels * 1009 + l.inner)};
  cpu::fill_normal(in.v.data(), l.elements(), in.seed, 0.0f, 1.0f);
  cpu::fill_normal(in.dw.data(), l.elements(), in.seed + 1, 0.0f, 1.0f);
  cpu::fill_normal(in.g.data(), l.channels, in.seed + 2, 0.0f, 1.0f);
  if (eps_floor_channel && l.channels > 2)
    for (int64_t e = 0; e < l.elements(); ++e)
      if (channel_of(l, e) == 1) in.v[e] = 0.0f;
  for (const float x : in.v) in.v16.push_back(weightnorm::float_to_bfloat16(x));
  for (const float x : in.dw) in.dw16.push_back(weightnorm::float_to_bfloat16(x));
  return in;
}

void check_cpu_vector_paths() {
  namespace cpu = weightnorm::cpu;
  if (!cpu::set_weightnorm_vector_isa("avx512")) return;  // this CPU or build has no AVX-512 kernels
  expect(std::string(cpu::weightnorm_vector_isa()) == "avx512",
         "vector kernels: forced avx512, runs " + std::string(cpu::weightnorm_vector_isa()));
  const uint64_t seed = (static_cast<uint64_t>(getpid()) << 32) ^ static_cast<uint64_t>(time(nullptr)) ^ 0x5eed;
  const ChannelLayout layouts[] = {
      // long rows: {1, rows, inner}
      {1, 3, 32}, {1, 5, 33}, {1, 7, 63}, {1, 9, 64}, {1, 11, 65}, {1, 4, 79}, {1, 6, 1000}, {1, 1, 5000},
      {1, 2, 1024 + 1031}, {1, 300, 4100}, {1, 600, 4100}, {1, 17, 70001},
      // columns: {rows, channels, inner < 32}
      {37, 129, 1}, {300, 3, 1}, {41, 5, 7}, {64, 3000, 1}, {4096, 1024, 1}, {1500, 700, 3},
      // short rows: {1, channels, inner < 32}
      {1, 1000, 7}, {1, 513, 31}, {1, 70001, 16}, {1, 200003, 5}};
  for (const ChannelLayout& l : layouts) {
    const RandomInputs in = random_inputs(l, seed, /*eps_floor_channel=*/true);
    cpu::set_weightnorm_vector_isa("avx512");
    const VectorRun<float> fast = run_both_ways(in.v, in.dw, in.g, l);
    const VectorRun<bfloat16> fast16 = run_both_ways(in.v16, in.dw16, in.g, l);
    cpu::set_weightnorm_vector_isa("none");
    const VectorRun<float> general = run_both_ways(in.v, in.dw, in.g, l);
    const VectorRun<bfloat16> general16 = run_both_ways(in.v16, in.dw16, in.g, l);
    const std::string what = format("cpu vector kernels (avx512 vs none), outer %lld channels %lld inner %lld, seed %llu: ",
                                    static_cast<long long>(l.outer), static_cast<long long>(l.channels),
                                    static_cast<long long>(l.inner), static_cast<unsigned long long>(in.seed));
    expect(fast == general, what + "float32 forward and backward bitwise equal (aligned, shifted, dw == v)");
    expect(fast16 == general16, what + "bfloat16 forward and backward bitwise equal (aligned, shifted, dw == v)");
  }
  cpu::set_weightnorm_vector_isa(nullptr);
}

// ---------------------------------------------------------------------------------------------------------------
// The weight-normalized Linear's backward prologue: its column sums are each column's products (and dy itself, for
// the bias) widened to double and added in row order within tiles of 1,024 rows, the tiles then added in order. On
// AVX-512 it walks column blocks of 64 and 16 with the sums in registers (out < 1,024; on several threads one band of
// columns each) or rows (wider), elsewhere rows: the outputs must be bitwise those of that order whichever walk,
// instruction set or thread count runs.
// The shapes: a tail narrower than 16 columns alone and after 64- and 16-column blocks, the demo MLP's [100, 256],
// two row tiles, and widths of 1,024 and more (the row walk, two column tiles).

struct PrologueRun {
  Floats dg, c1, c2, scaled_dy, dbias;
  bool operator==(const PrologueRun& o) const {
    return dg == o.dg && c1 == o.c1 && c2 == o.c2 && scaled_dy == o.scaled_dy && dbias == o.dbias;
  }
};

PrologueRun run_prologue(const Floats& dy, const Floats& t, const Floats& g, const Floats& norm, int64_t batch,
                         int64_t out, bool scaled, bool bias) {
  PrologueRun r{Floats(out), Floats(out), Floats(out), Floats(scaled ? batch * out : 0), Floats(bias ? out : 0)};
  weightnorm::cpu::weightnorm_linear_backward_prologue(r.dg.data(), r.c1.data(), r.c2.data(),
                                                       scaled ? r.scaled_dy.data() : nullptr,
                                                       bias ? r.dbias.data() : nullptr, dy.data(), t.data(), g.data(),
                                                       norm.data(), batch, out, 1e-12f);
  return r;
}

void check_cpu_linear_prologue() {
  namespace cpu = weightnorm::cpu;
  const uint64_t seed = (static_cast<uint64_t>(getpid()) << 32) ^ static_cast<uint64_t>(time(nullptr)) ^ 0x9a1e;
  const std::pair<int64_t, int64_t> shapes[] = {{5, 15}, {37, 83}, {100, 256}, {3, 1}, {2100, 300}, {50, 1024}, {7, 1030}};
  const bool avx512 = cpu::set_weightnorm_vector_isa("avx512");
  cpu::set_weightnorm_vector_isa(nullptr);
  for (const auto& [batch, out] : shapes) {
    const uint64_t case_seed = seed + static_cast<uint64_t>(batch * 7919 + out);
    Floats dy(batch * out), t(batch * out), g(out), norm(out);
    cpu::fill_normal(dy.data(), batch * out, case_seed, 0.0f, 1.0f);
    cpu::fill_normal(t.data(), batch * out, case_seed + 1, 0.0f, 3.0f);
    cpu::fill_normal(g.data(), out, case_seed + 2, 1.0f, 0.5f);
    cpu::fill_normal(norm.data(), out, case_seed + 3, 4.0f, 1.0f);
    for (float& n : norm) n = std::fabs(n) + 0.5f;
    // The documented order, written out: dbias and scaled_dy from it exactly, and dot for the coefficients.
    std::vector<double> dot(out), sum(out);
    Floats scale(out);
    cpu::weightnorm_scale(scale.data(), g.data(), norm.data(), out);
    for (int64_t k = 0; k < out; ++k)
      for (int64_t tile = 0; tile < batch; tile += 1024) {
        double tile_dot = 0.0, tile_sum = 0.0;
        for (int64_t b = tile; b < std::min(batch, tile + 1024); ++b) {
          tile_dot += static_cast<double>(dy[b * out + k]) * static_cast<double>(t[b * out + k]);
          tile_sum += static_cast<double>(dy[b * out + k]);
        }
        dot[k] = tile == 0 ? tile_dot : dot[k] + tile_dot;
        sum[k] = tile == 0 ? tile_sum : sum[k] + tile_sum;
      }
    for (const bool scaled : {true, false})
      for (const bool bias : {true, false}) {
        const std::string what = format("linear backward prologue [%lld, %lld]%s%s, seed %llu: ",
                                        static_cast<long long>(batch), static_cast<long long>(out),
                                        scaled ? " scaled" : "", bias ? " bias" : "",
                                        static_cast<unsigned long long>(case_seed));
        cpu::set_num_threads(1);
        const PrologueRun automatic = run_prologue(dy, t, g, norm, batch, out, scaled, bias);
        bool exact = true;
        for (int64_t k = 0; k < out && bias; ++k) exact = exact && automatic.dbias[k] == static_cast<float>(sum[k]);
        for (int64_t e = 0; e < batch * out && scaled; ++e)
          exact = exact && automatic.scaled_dy[e] == dy[e] * scale[e % out];
        expect(exact, what + "dbias and scaled_dy bitwise those of the documented order");
        double worst = 0.0;
        for (int64_t k = 0; k < out; ++k) {
          const double expected = dot[k] / norm[k];
          worst = std::max(worst, std::fabs(automatic.dg[k] - expected) / std::max(1.0, std::fabs(expected)));
        }
        // dg = float(dot) / norm rounds twice in float32: a few ulps of the exactly ordered double sum.
        expect(worst < 1e-6, what + format("dg within 1e-6 of the ordered double sum / norm (worst %.3g)", worst));
        if (avx512) {
          cpu::set_weightnorm_vector_isa("none");
          const PrologueRun general = run_prologue(dy, t, g, norm, batch, out, scaled, bias);
          cpu::set_weightnorm_vector_isa(nullptr);
          expect(automatic == general, what + "the AVX-512 walks give the general walk's bits");
        }
        cpu::set_num_threads(3);
        expect(run_prologue(dy, t, g, norm, batch, out, scaled, bias) == automatic, what + "3 threads give 1 thread's bits");
      }
  }
  cpu::set_num_threads(0);
}

// ---------------------------------------------------------------------------------------------------------------
// The plans that share a reduction between threads give the same bits for any thread count: a tall last dim split
// into parts (one chunk; two chunks side by side), one channel split into parts (dim = null), rows longer than a
// chunk kept whole, each run with 1 thread and with 2, 3 and 7 (more threads than some plans have parts), float32
// and bfloat16, forward and backward. A part size that followed the thread count, or a thread whose sums rounded
// differently, differs in the last bits of many elements.

void check_cpu_thread_counts() {
  namespace cpu = weightnorm::cpu;
  const uint64_t seed = (static_cast<uint64_t>(getpid()) << 32) ^ static_cast<uint64_t>(time(nullptr)) ^ 0x7e3d;
  const ChannelLayout layouts[] = {{4096, 1024, 1}, {9216, 128, 1}, {64, 3000, 1}, {1, 1, 300001}, {1, 17, 70001}};
  for (const ChannelLayout& l : layouts) {
    const RandomInputs in = random_inputs(l, seed, /*eps_floor_channel=*/false);
    cpu::set_num_threads(1);
    const VectorRun<float> one = run_both_ways(in.v, in.dw, in.g, l);
    const VectorRun<bfloat16> one16 = run_both_ways(in.v16, in.dw16, in.g, l);
    for (const int threads : {2, 3, 7}) {
      cpu::set_num_threads(threads);
      const std::string what = format("cpu threads (%d vs 1), outer %lld channels %lld inner %lld, seed %llu: ", threads,
                                      static_cast<long long>(l.outer), static_cast<long long>(l.channels),
                                      static_cast<long long>(l.inner), static_cast<unsigned long long>(in.seed));
      expect(run_both_ways(in.v, in.dw, in.g, l) == one, what + "float32 forward and backward bitwise equal");
      expect(run_both_ways(in.v16, in.dw16, in.g, l) == one16, what + "bfloat16 forward and backward bitwise equal");
    }
  }
  cpu::set_num_threads(0);
}

// ---------------------------------------------------------------------------------------------------------------
// Groups.

void check_cpu_weightnorm() {
  for (const FixtureCase& c : fixture()) check_cpu_case(c);
  for (const NanCase& c : kNanCases) check_cpu_nan_coefficient(c);
  check_cpu_rows16_paths();
  check_cpu_vector_paths();
  check_cpu_linear_prologue();
  check_cpu_thread_counts();
}
WEIGHTNORM_NATIVE_TEST_GROUP("weightnorm/cpu", check_cpu_weightnorm);

#ifdef WEIGHTNORM_WITH_CUDA
void check_cuda_weightnorm() {
  for (const FixtureCase& c : fixture()) check_cuda_case(c);
  for (const NanCase& c : kNanCases) check_cuda_nan_coefficient(c);
  check_cuda_routes();
}
WEIGHTNORM_NATIVE_TEST_GROUP("weightnorm/cuda", check_cuda_weightnorm);
#endif

}  // namespace
