// The elementwise, reduce, loss, normalization, optimizer and conversion cases of the native test runner
// (backend_ops_test.cc, harness.h):
//  - every CPU op against the float64 values of its one TypeScript reference (test/reference/optim.ts, nn.ts,
//    reduce.ts, elementwise.ts), read from test/fixtures/native_reference/ (native-kernel-fixtures.ts writes the
//    cases, their inputs' seeds, the expected values and the scale each tolerance multiplies); ops whose float32
//    result is exact (add, multiply, fill, ReLU, the bias add) bitwise against the same float32 operation;
//  - where a GPU is usable, every CUDA op against the same fixtures, and against the CPU result (bitwise where
//    both sides do the same IEEE operations, else with a stated tolerance);
//  - determinism: CPU reductions bitwise equal for 1, 2 and 3 threads; CUDA reductions bitwise equal run to run;
//  - statistics: the dropout keep rate within a binomial bound, the noise mean and variance;
//  - float32 -> bfloat16 conversion bit for bit against the bits of the TypeScript reference (bfloat16.ts) for the
//    stored inputs of test/fixtures/native_reference/bfloat16.bin (ties to even, overflow, subnormals, signed zeros,
//    NaN, a random sample); every bfloat16 value widened and round-tripped.
// Outputs are prefilled with NaN, so an element a kernel forgets to write fails its check.
// Groups: ops/cpu, and ops/cuda (which also compares its outputs with the CPU's, running ops/cpu first if needed).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../../cpu/elementwise.h"
#include "../../cpu/loss.h"
#include "../../cpu/normalization.h"
#include "../../cpu/optim.h"
#include "../../cpu/reduce.h"
#include "../../cpu/weightnorm.h"
#include "weightnorm/layout.h"
#include "weightnorm/random.h"
#include "harness.h"
#include "op_fixture.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../../cuda/elementwise.cuh"
#include "../../cuda/loss.cuh"
#include "../../cuda/normalization.cuh"
#include "../../cuda/optim.cuh"
#include "../../cuda/reduce.cuh"
#include "../../cuda/runtime.cuh"
#endif

namespace {

namespace cpu = weightnorm::cpu;
namespace random = weightnorm::random;
using weightnorm::native_test::expect;
using weightnorm::native_test::compare_stored;
using weightnorm::native_test::float_parameter;
using weightnorm::native_test::format;
using weightnorm::native_test::NormalizedError;
using weightnorm::native_test::OpCase;
using weightnorm::native_test::read_op_fixture;
using weightnorm::native_test::StoredElement;
using weightnorm::native_test::StoredOutput;
using weightnorm::bfloat16;
using weightnorm::AdamOptions;
using weightnorm::ChannelLayout;
using weightnorm::NormOutput;
using weightnorm::OptimizerTensors;
using weightnorm::SgdOptions;
using weightnorm::ClassLossOptions;
using weightnorm::LossReduction;
using weightnorm::PointwiseLoss;
using weightnorm::PointwiseLossOptions;
using Vec = std::vector<float>;
using Bf16Vec = std::vector<bfloat16>;

// ---------------------------------------------------------------------------------------------------------------
// Checks.

std::string describe(const ChannelLayout& l) {
  return "[" + std::to_string(l.outer) + "," + std::to_string(l.channels) + "," + std::to_string(l.inner) + "]";
}

// A kernel's output against the fixture's float64 values: every stored element within tol times its magnitude,
// the scale the fixture's writer names for that output (native-kernel-fixtures.ts); `reason` says why tol is enough.
void check_stored(const std::string& what, const Vec& got, const StoredOutput& want, double tol, const char* reason) {
  const NormalizedError e = compare_stored(got, want, tol);
  expect(e.ok(), what + format(" worst %.3f of tol %.0e (%s)", e.worst, tol, reason));
}

bool bitwise_equal(const Vec& a, const Vec& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

void check_bitwise(const std::string& what, const Vec& got, const Vec& want) {
  expect(bitwise_equal(got, want), what + " (bitwise)");
}

// ---------------------------------------------------------------------------------------------------------------
// Backends: the same op table for cpu:: and cuda::, and a buffer that lives on the backend's side.

struct Backend {
  const char* name;
  bool device;
  void (*add)(float*, const float*, const float*, int64_t);
  void (*multiply)(float*, const float*, const float*, int64_t);
  void (*axpby)(float*, float, const float*, float, int64_t);
  void (*fill)(float*, float, int64_t);
  void (*relu_forward)(float*, const float*, float, int64_t);
  void (*relu_backward)(float*, const float*, const float*, float, int64_t);
  void (*tanh_forward)(float*, const float*, int64_t);
  void (*tanh_backward)(float*, const float*, const float*, int64_t);
  void (*dropout_forward)(float*, float*, const float*, float, uint64_t, int64_t);
  void (*gaussian_noise)(float*, const float*, float, uint64_t, int64_t);
  void (*channel_bias_add)(float*, const float*, const float*, const ChannelLayout&);
  void (*sum_all)(float*, const float*, int64_t);
  void (*channel_sum)(float*, const float*, const ChannelLayout&);
  void (*softmax_cross_entropy_forward)(float*, float*, const float*, const float*, int64_t, int64_t);
  void (*softmax_cross_entropy_backward)(float*, const float*, const float*, const float*, int64_t, int64_t);
  void (*pointwise_loss_forward)(float*, float*, const float*, const float*, int64_t, const PointwiseLossOptions&,
                                 LossReduction);
  void (*pointwise_loss_backward)(float*, const float*, int64_t, float, const float*, const float*, int64_t,
                                  const PointwiseLossOptions&);
  void (*class_loss_forward)(float*, float*, float*, float*, float*, const float*, const float*,
                             const ClassLossOptions&, LossReduction);
  void (*class_loss_backward)(float*, const float*, const float*, const float*, int64_t, const float*,
                              const ClassLossOptions&);
  void (*batch_norm_forward)(float*, float*, float*, float*, const float*, const float*, const float*,
                             const ChannelLayout&, float);
  void (*batch_norm_backward)(float*, float*, float*, const float*, const float*, const float*, const float*,
                              const float*, const ChannelLayout&);
  void (*batch_norm_inference)(float*, const float*, const float*, const float*, const float*, const float*,
                               const ChannelLayout&, float);
  void (*mean_only_batch_norm_forward)(float*, float*, const float*, const float*, const ChannelLayout&, bool);
  void (*mean_only_batch_norm_backward)(float*, float*, const float*, const ChannelLayout&);
  void (*sgd_step)(float*, float*, const float*, int64_t, const SgdOptions&, int64_t, const NormOutput*);
  void (*adam_step)(float*, float*, float*, const float*, int64_t, const AdamOptions&, int64_t,
                    const NormOutput*);
  void (*adamax_step)(float*, float*, float*, const float*, int64_t, const AdamOptions&, int64_t,
                      const NormOutput*);
  void (*sgd_step_many)(const OptimizerTensors*, int64_t, const SgdOptions&);
  void (*adam_step_many)(const OptimizerTensors*, int64_t, const AdamOptions&);
  void (*adamax_step_many)(const OptimizerTensors*, int64_t, const AdamOptions&);
  void (*convert_to_bfloat16)(bfloat16*, const float*, int64_t);
  void (*convert_to_float)(float*, const bfloat16*, int64_t);
};

// Both namespaces declare the same entry points (include/weightnorm/ops/*.inc), so one list fills either table.
#define WN_BIND_OPS(backend, ns)                                             \
  backend.add = ns::add;                                                     \
  backend.multiply = ns::multiply;                                           \
  backend.axpby = ns::axpby;                                                 \
  backend.fill = ns::fill;                                                   \
  backend.relu_forward = ns::relu_forward;                                   \
  backend.relu_backward = ns::relu_backward;                                 \
  backend.tanh_forward = ns::tanh_forward;                                   \
  backend.tanh_backward = ns::tanh_backward;                                 \
  backend.dropout_forward = ns::dropout_forward;                             \
  backend.gaussian_noise = ns::gaussian_noise;                               \
  backend.channel_bias_add = ns::channel_bias_add;                           \
  backend.sum_all = ns::sum_all;                                             \
  backend.channel_sum = ns::channel_sum;                                     \
  backend.softmax_cross_entropy_forward = ns::softmax_cross_entropy_forward; \
  backend.softmax_cross_entropy_backward = ns::softmax_cross_entropy_backward; \
  backend.pointwise_loss_forward = ns::pointwise_loss_forward;               \
  backend.pointwise_loss_backward = ns::pointwise_loss_backward;             \
  backend.class_loss_forward = ns::class_loss_forward;                       \
  backend.class_loss_backward = ns::class_loss_backward;                     \
  backend.batch_norm_forward = ns::batch_norm_forward;                       \
  backend.batch_norm_backward = ns::batch_norm_backward;                     \
  backend.batch_norm_inference = ns::batch_norm_inference;                   \
  backend.mean_only_batch_norm_forward = ns::mean_only_batch_norm_forward;   \
  backend.mean_only_batch_norm_backward = ns::mean_only_batch_norm_backward; \
  backend.sgd_step = ns::sgd_step;                                           \
  backend.adam_step = ns::adam_step;                                         \
  backend.adamax_step = ns::adamax_step;                                     \
  backend.sgd_step_many = ns::sgd_step_many;                                 \
  backend.adam_step_many = ns::adam_step_many;                               \
  backend.adamax_step_many = ns::adamax_step_many;                           \
  backend.convert_to_bfloat16 = ns::convert;                                 \
  backend.convert_to_float = ns::convert

Backend cpu_backend() {
  Backend b{};
  b.name = "cpu";
  b.device = false;
  WN_BIND_OPS(b, cpu);
  return b;
}

#ifdef WEIGHTNORM_WITH_CUDA
namespace cu = weightnorm::cuda;

Backend cuda_backend() {
  Backend b{};
  b.name = "cuda";
  b.device = true;
  WN_BIND_OPS(b, cu);
  return b;
}
#endif

// What an output is prefilled with, so that an element that is never written fails its check: NaN (for bfloat16,
// a NaN payload that no input here rounds to, and that the NaN checks reject).
template <class T>
T unwritten();
template <>
float unwritten<float>() { return std::numeric_limits<float>::quiet_NaN(); }
template <>
bfloat16 unwritten<bfloat16>() { return bfloat16{0x7fa5}; }

// A tensor of T on the backend's side. `offset` elements of padding in front: offset 1 makes the data pointer
// sizeof(T) bytes off 16-byte alignment, which sends the CUDA kernels down their scalar paths.
template <class T>
class Buffer {
 public:
  Buffer(const Backend& backend, const std::vector<T>& values, size_t offset = 0)
      : device_(backend.device), size_(values.size()), offset_(offset) {
    const size_t elements = offset + std::max<size_t>(size_, 1);
    if (!device_) {
      host_.assign(elements, T{});
      std::copy(values.begin(), values.end(), host_.begin() + offset);
      return;
    }
#ifdef WEIGHTNORM_WITH_CUDA
    bytes_ = elements * sizeof(T);
    device_data_ = static_cast<T*>(cu::allocate(bytes_));
    if (size_) cu::copy_to_device(device_data_ + offset, values.data(), size_ * sizeof(T));
#endif
  }
  static Buffer output(const Backend& backend, size_t size, size_t offset = 0) {
    return Buffer(backend, std::vector<T>(size, unwritten<T>()), offset);
  }
  Buffer(Buffer&& other) noexcept
      : device_(other.device_), size_(other.size_), offset_(other.offset_), host_(std::move(other.host_)),
        device_data_(other.device_data_), bytes_(other.bytes_) {
    other.device_data_ = nullptr;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
#ifdef WEIGHTNORM_WITH_CUDA
    if (device_data_) cu::release(device_data_, bytes_);
#endif
  }

  T* p() { return (device_ ? device_data_ : host_.data()) + offset_; }
  std::vector<T> get() const {
    if (!device_) return std::vector<T>(host_.begin() + offset_, host_.begin() + offset_ + size_);
    std::vector<T> values(size_);
#ifdef WEIGHTNORM_WITH_CUDA
    if (size_) cu::copy_to_host(values.data(), device_data_ + offset_, size_ * sizeof(T));
#endif
    return values;
  }

 private:
  bool device_;
  size_t size_, offset_;
  std::vector<T> host_;
  T* device_data_ = nullptr;
  size_t bytes_ = 0;
};
using Buf = Buffer<float>;

// CPU-vs-CUDA comparison: each backend records named outputs; after both ran, every name both recorded is
// compared (tol 0: bitwise; else the error relative to the CPU tensor's largest value).
struct Recorded {
  Vec values;
  double tol;
};
std::map<std::string, Recorded> g_recorded[2];
int g_backend_index = 0;

// name starts with the backend's name, which is not part of the key.
void record(const std::string& name, const Vec& values, double tol_vs_other_backend) {
  g_recorded[g_backend_index][name.substr(name.find(' ') + 1)] = {values, tol_vs_other_backend};
}

// ---------------------------------------------------------------------------------------------------------------
// Inputs: the fixtures' (test/fixtures/native_reference/, written by scripts/make_native_reference.mjs from the
// TypeScript references) for every check against a float64 value; the generator below for the rest (exact checks,
// statistics, determinism), reseeded per backend so that the CPU and CUDA runs see the same numbers.

std::mt19937 g_rng(20261128u);

Vec normal_values(size_t n, float mean = 0.0f, float std = 1.0f) {
  std::normal_distribution<float> normal(mean, std);
  Vec v(n);
  for (auto& x : v) x = normal(g_rng);
  return v;
}

const std::vector<OpCase>& fixture(const char* file) {
  static std::map<std::string, std::vector<OpCase>> read;
  auto found = read.find(file);
  if (found == read.end()) found = read.emplace(file, read_op_fixture(file)).first;
  return found->second;
}

int64_t channel_of(const ChannelLayout& l, int64_t e) { return (e / l.inner) % l.channels; }
ChannelLayout layout_of(const std::vector<int64_t>& p, size_t at) { return {p[at], p[at + 1], p[at + 2]}; }

// The channel layouts of the normalization and reduction cases (nativeLayouts in native-kernel-fixtures.ts, which
// says why each is there): reduce.bin's channel_sum cases.
std::vector<ChannelLayout> fixture_layouts() {
  std::vector<ChannelLayout> layouts;
  for (const OpCase& c : fixture("reduce.bin"))
    if (c.parameters[0] == 1) layouts.push_back(layout_of(c.parameters, 1));
  return layouts;
}

// The fixtures' derived inputs, as their writer derives them from the drawn normals (each a float32 operation
// that rounds once, or none: the same numbers on both sides).
Vec offset_values(const Vec& drawn, const ChannelLayout& l) {  // offsetValues: 2v + 2 + k % 8
  Vec x(drawn.size());
  for (size_t e = 0; e < x.size(); ++e) x[e] = 2.0f * drawn[e] + float(2 + channel_of(l, int64_t(e)) % 8);
  return x;
}
Vec around(const Vec& drawn, float center) {  // center + v/4
  Vec x(drawn.size());
  for (size_t e = 0; e < x.size(); ++e) x[e] = center + 0.25f * drawn[e];
  return x;
}
Vec labels_from(const Vec& drawn, int64_t classes) {  // labelsFrom: floor(|u|·1000) mod classes
  Vec labels(drawn.size());
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = float(int64_t(std::fabs(drawn[i]) * 1000.0f) % classes);
  return labels;
}

// ---------------------------------------------------------------------------------------------------------------
// Elementwise: add, multiply, fill and ReLU bitwise against the same float32 operation; axpby and the tanh pair
// against elementwise.bin (test/reference/elementwise.ts).

void test_elementwise(const Backend& b) {
  const std::string tag = std::string(b.name) + " ";
  for (const OpCase& f : fixture("elementwise.bin")) {
    const int64_t n = f.parameters[0];
    const float alpha = float_parameter(f.parameters[1]), beta = float_parameter(f.parameters[2]);
    Vec a = f.inputs[0].values;
    for (int64_t i = 0; i < n; i += 7) a[i] = 0.0f;  // relu's kink: x = 0 takes the negative branch (reluKinkInput)
    const Vec& c = f.inputs[1].values;
    Vec t(n);  // a saved tanh output for the backward: v/4, exact
    for (int64_t i = 0; i < n; ++i) t[i] = 0.25f * f.inputs[2].values[i];
    for (const size_t offset : {size_t{0}, size_t{1}}) {
      if (n < 5 && offset) continue;
      const std::string what = tag + "n=" + std::to_string(n) + (offset ? " unaligned " : " ");
      Buf da(b, a, offset), dc(b, c, offset);

      Vec want(n);
      Buf out = Buf::output(b, n, offset);
      b.add(out.p(), da.p(), dc.p(), n);
      for (int64_t i = 0; i < n; ++i) want[i] = a[i] + c[i];
      check_bitwise(what + "add", out.get(), want);
      record(what + "add", out.get(), 0.0);

      b.multiply(out.p(), da.p(), dc.p(), n);
      for (int64_t i = 0; i < n; ++i) want[i] = a[i] * c[i];
      check_bitwise(what + "multiply", out.get(), want);

      {
        Buf y(b, c, offset);
        b.axpby(y.p(), alpha, da.p(), beta, n);
        check_stored(what + "axpby", y.get(), f.outputs[0], 3e-7,
                     "a few ulps of |alpha x| + |beta y|: a fused multiply-add may round once instead of twice");
        record(what + "axpby", y.get(), 1e-6);
        // beta = 0 must not read y: it holds NaN here.
        Buf y0 = Buf::output(b, n, offset);
        b.axpby(y0.p(), alpha, da.p(), 0.0f, n);
        for (int64_t i = 0; i < n; ++i) want[i] = alpha * a[i];
        check_bitwise(what + "axpby beta=0 ignores y (NaN there)", y0.get(), want);
      }

      b.fill(out.p(), -2.5f, n);
      check_bitwise(what + "fill", out.get(), Vec(n, -2.5f));

      for (const float slope : {0.0f, 0.01f}) {
        const std::string s = " slope " + std::to_string(slope).substr(0, 4);
        b.relu_forward(out.p(), da.p(), slope, n);
        // ReLU (slope 0) gives exactly +0 for x <= 0, also for -inf where slope * x would be NaN.
        for (int64_t i = 0; i < n; ++i) want[i] = a[i] > 0.0f ? a[i] : slope == 0.0f ? 0.0f : slope * a[i];
        check_bitwise(what + "relu_forward" + s, out.get(), want);
        b.relu_backward(out.p(), dc.p(), da.p(), slope, n);
        for (int64_t i = 0; i < n; ++i) want[i] = c[i] * (a[i] > 0.0f ? 1.0f : slope);
        check_bitwise(what + "relu_backward" + s, out.get(), want);
      }

      b.tanh_forward(out.p(), da.p(), n);
      check_stored(what + "tanh_forward", out.get(), f.outputs[1], 1e-6,
                   "relative: glibc's tanhf and CUDA's are within 2 ulps (2.4e-7); a bug is O(1)");
      record(what + "tanh_forward", out.get(), 1e-6);
      Buf dt(b, t, offset);
      b.tanh_backward(out.p(), dc.p(), dt.p(), n);
      check_stored(what + "tanh_backward", out.get(), f.outputs[2], 3e-7,
                   "a few ulps of |dy|·(1 + y²), the terms before the subtraction");
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Dropout and noise: exact against the generator, plus statistics.

Vec dropout_mask_reference(float p, uint64_t seed, int64_t n) {
  const uint64_t stream = random::stream_of(seed, random::kPurposeDropout);
  const float keep = p < 1.0f ? float(1.0 / (1.0 - double(p))) : 0.0f;
  Vec mask(n);
  for (int64_t i = 0; i < n; ++i) mask[i] = random::uniform(stream, uint64_t(i)) >= double(p) ? keep : 0.0f;
  return mask;
}

void test_dropout(const Backend& b) {
  const std::string tag = std::string(b.name) + " dropout ";
  const int64_t n = (int64_t{1} << 20) + 3;
  const Vec x = normal_values(n);
  for (const float p : {0.0f, 0.3f, 0.9f, 1.0f}) {
    for (const size_t offset : {size_t{0}, size_t{1}}) {
      const std::string what = tag + "p=" + std::to_string(p).substr(0, 3) + (offset ? " unaligned" : "");
      const uint64_t seed = 1234;
      Buf dx(b, x, offset), y = Buf::output(b, n, offset), mask = Buf::output(b, n, offset);
      b.dropout_forward(y.p(), mask.p(), dx.p(), p, seed, n);
      const Vec want_mask = dropout_mask_reference(p, seed, n);
      const Vec got_mask = mask.get();
      check_bitwise(what + " mask = (u >= p) / (1 - p)", got_mask, want_mask);
      Vec want_y(n);
      for (int64_t i = 0; i < n; ++i) want_y[i] = x[i] * want_mask[i];
      check_bitwise(what + " y = x * mask", y.get(), want_y);
      if (offset) continue;
      record(what + " mask", got_mask, 0.0);
      // Keep rate: binomial, sd = sqrt(p (1-p) / n) (4.5e-4 at p = 0.3); 5 sd never trips for a fair generator
      // with this fixed seed, while a wrong threshold or a biased generator is off by far more.
      int64_t kept = 0;
      for (float m : got_mask) kept += m != 0.0f;
      const double rate = double(kept) / double(n), sd = std::sqrt(double(p) * (1.0 - p) / double(n));
      const double bound = 5.0 * sd + 1e-12;
      expect(std::fabs(rate - (1.0 - p)) <= bound,
             what + format(" keep rate %.5f, |rate - (1-p)| <= %.1e (5 binomial sd)", rate, bound));
      if (p <= 0.0f || p >= 1.0f) continue;
      // Same seed: same mask; another seed: about 2 p (1-p) of the elements differ.
      Buf again = Buf::output(b, n), other = Buf::output(b, n);
      b.dropout_forward(y.p(), again.p(), dx.p(), p, seed, n);
      b.dropout_forward(y.p(), other.p(), dx.p(), p, seed + 1, n);
      check_bitwise(what + " same seed, same mask", again.get(), got_mask);
      const Vec other_mask = other.get();
      int64_t differ = 0;
      for (int64_t i = 0; i < n; ++i) differ += other_mask[i] != got_mask[i];
      const double expected = 2.0 * p * (1.0 - p);
      expect(std::fabs(double(differ) / n - expected) < 0.01,
             what + format(" another seed: %.4f of the mask differs (expected %.4f)", double(differ) / n, expected));
    }
  }
  // Without a mask output (evaluation-free inference path): y alone.
  Buf dx(b, x), y = Buf::output(b, n);
  b.dropout_forward(y.p(), nullptr, dx.p(), 0.5f, 77, n);
  const Vec mask = dropout_mask_reference(0.5f, 77, n);
  Vec want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = x[i] * mask[i];
  check_bitwise(tag + "null mask pointer: y only", y.get(), want);
  Buf empty = Buf::output(b, 0);
  b.dropout_forward(empty.p(), empty.p(), empty.p(), 0.5f, 1, 0);
  expect(true, tag + "count 0 runs");
}

void test_noise(const Backend& b) {
  const std::string tag = std::string(b.name) + " gaussian_noise ";
  const int64_t n = (int64_t{1} << 20) + 1;
  const Vec x = normal_values(n);
  const float std = 0.5f;
  const uint64_t seed = 99;
  for (const size_t offset : {size_t{0}, size_t{1}}) {
    Buf dx(b, x, offset), y = Buf::output(b, n, offset);
    b.gaussian_noise(y.p(), dx.p(), std, seed, n);
    const Vec got = y.get();
    // Exact against the generator's definition (weightnorm/random.h), not a reference of the op's maths: one float
    // rounding of y (6e-8 relative) plus the device's log/sin/cos differing in the last double bit.
    const uint64_t stream = random::stream_of(seed, random::kPurposeNoise);
    NormalizedError error;
    for (int64_t i = 0; i < n; ++i) {
      const double want = double(x[i]) + double(std) * random::normal(stream, uint64_t(i));
      error.add(got[i], want, 2e-7 * std::max(std::fabs(want), double(std)));
    }
    expect(error.ok(), tag + (offset ? "unaligned " : "") +
                           format("y = x + std * n(seed, i) worst %.3f of tol 2e-7 (of max(|y|, std))", error.worst));
    if (offset) continue;
    record(tag + "y", got, 1e-6);
    // n(seed, i) is standard normal: the sample mean has sd 1/sqrt(n) = 1e-3 and the sample variance
    // sqrt(2/n) = 1.4e-3; 5 sd bounds.
    double sum = 0.0, squares = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double z = (double(got[i]) - x[i]) / std;
      sum += z;
      squares += z * z;
    }
    const double mean = sum / n, var = squares / n - mean * mean;
    expect(std::fabs(mean) < 5e-3 && std::fabs(var - 1.0) < 7e-3,
           tag + format("noise mean %.2e, variance %.4f (5 sd: 5e-3, 7e-3)", mean, var));
  }
  Buf dx(b, x), y = Buf::output(b, n);
  b.gaussian_noise(y.p(), dx.p(), 0.0f, seed, n);
  check_bitwise(tag + "std 0 leaves x", y.get(), x);
}

void test_channel_bias_add(const Backend& b) {
  for (const ChannelLayout& l : fixture_layouts()) {
    for (const size_t offset : {size_t{0}, size_t{1}}) {
      if (offset && l.elements() < 4) continue;
      const std::string what = std::string(b.name) + " channel_bias_add " + describe(l) + (offset ? " unaligned" : "");
      const int64_t n = l.elements();
      const Vec x = normal_values(n), bias = normal_values(l.channels);
      Buf dx(b, x, offset), dbias(b, bias), out = Buf::output(b, n, offset);
      b.channel_bias_add(out.p(), dx.p(), dbias.p(), l);
      Vec want(n);
      for (int64_t e = 0; e < n; ++e) want[e] = x[e] + bias[channel_of(l, e)];
      check_bitwise(what, out.get(), want);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Reductions against reduce.bin (test/reference/reduce.ts): of small integers exactly (every partial sum is exact,
// so any order gives the exact sum and a missing or doubled element cannot hide under rounding), of random values
// within the float32 bound.

void test_reduce(const Backend& b) {
  const std::string tag = std::string(b.name) + " ";
  // Random values: float accumulators over short runs folded into double (CPU) or fixed trees (CUDA); the error is
  // ~sqrt(run) ulps of sum |x|, 1e-6 of it is generous (a wrong element shows in the integer case).
  const char* reason = "of sum |x|: ~sqrt(run) ulps of float32 partial sums";
  for (const OpCase& f : fixture("reduce.bin")) {
    const ChannelLayout l = layout_of(f.parameters, 1);
    const bool all = f.parameters[0] == 0;
    const int64_t n = l.elements();
    Vec integers(n), x(n);
    for (int64_t i = 0; i < n; ++i) {
      integers[i] = std::min(std::max(std::floor(2.0f * f.inputs[0].values[i]), -2.0f), 3.0f);  // integerValues
      x[i] = f.inputs[1].values[i] + 0.5f;
    }
    Buf di(b, integers), dx(b, x), out = Buf::output(b, l.channels);
    if (all) {
      const std::string what = tag + "sum_all n=" + std::to_string(n);
      b.sum_all(out.p(), di.p(), n);
      check_stored(what + " of small integers", out.get(), f.outputs[0], 1.0, "magnitude 0: exact");
      b.sum_all(out.p(), dx.p(), n);
      check_stored(what + " random", out.get(), f.outputs[1], 1e-6, reason);
      record(what + " random", out.get(), 1e-6);
    } else {
      const std::string what = tag + "channel_sum " + describe(l);
      b.channel_sum(out.p(), di.p(), l);
      check_stored(what + " of small integers", out.get(), f.outputs[0], 1.0, "magnitude 0: exact");
      record(what + " integers", out.get(), 0.0);
      b.channel_sum(out.p(), dx.p(), l);
      check_stored(what + " random", out.get(), f.outputs[1], 1e-6, reason);
      record(what + " random", out.get(), 1e-6);
    }
  }
}

// Bitwise reproducibility: CPU results do not depend on the thread count; CUDA results do not change run to run.
void test_determinism(const Backend& b) {
  const std::vector<ChannelLayout> layouts = {{4096, 8, 1}, {32, 64, 64}, {2, 3, 40000}, {1, 1, 3000000}, {1000, 300, 1}};
  for (const ChannelLayout& l : layouts) {
    const Vec x = normal_values(l.elements(), 0.3f, 1.0f), dy = normal_values(l.elements());
    Buf dx(b, x), ddy(b, dy);
    auto run = [&]() {
      Buf sums = Buf::output(b, l.channels), total = Buf::output(b, 1);
      Buf y = Buf::output(b, l.elements()), mean = Buf::output(b, l.channels), var = Buf::output(b, l.channels),
          invstd = Buf::output(b, l.channels), dxo = Buf::output(b, l.elements()),
          dgamma = Buf::output(b, l.channels), dbeta = Buf::output(b, l.channels);
      b.channel_sum(sums.p(), dx.p(), l);
      b.sum_all(total.p(), dx.p(), l.elements());
      b.batch_norm_forward(y.p(), mean.p(), var.p(), invstd.p(), dx.p(), nullptr, nullptr, l, 1e-5f);
      b.batch_norm_backward(dxo.p(), dgamma.p(), dbeta.p(), ddy.p(), dx.p(), mean.p(), invstd.p(), nullptr, l);
      Vec all = sums.get();
      for (const Vec& part : {total.get(), var.get(), dgamma.get(), dbeta.get(), dxo.get()})
        all.insert(all.end(), part.begin(), part.end());
      return all;
    };
    if (!b.device) {
      cpu::set_num_threads(1);
      const Vec one = run();
      cpu::set_num_threads(2);
      const Vec two = run();
      cpu::set_num_threads(3);
      const Vec three = run();
      cpu::set_num_threads(0);
      expect(bitwise_equal(one, two) && bitwise_equal(one, three),
             std::string("cpu reductions (channel_sum, sum_all, batch norm) bitwise equal for 1, 2, 3 threads ") +
                 describe(l));
    } else {
      const Vec first = run(), second = run();
      expect(bitwise_equal(first, second),
             std::string("cuda reductions (channel_sum, sum_all, batch norm) bitwise equal run to run ") + describe(l));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Losses against softmax_cross_entropy.bin, class_loss.bin and bce_with_logits.bin (test/reference/nn.ts).

void test_loss(const Backend& b) {
  for (const OpCase& f : fixture("softmax_cross_entropy.bin")) {
    const int64_t batch = f.parameters[0], classes = f.parameters[1];
    const float logit_scale = float_parameter(f.parameters[2]), upstream = float_parameter(f.parameters[3]);
    const std::string what = std::string(b.name) + " softmax_cross_entropy batch " + std::to_string(batch) +
                             " classes " + std::to_string(classes) + " logits*" + format("%g", logit_scale);
    const int64_t n = batch * classes;
    Vec logits(n);
    for (int64_t i = 0; i < n; ++i) logits[i] = f.inputs[0].values[i] * logit_scale;
    const Vec labels = labels_from(f.inputs[1].values, classes);
    Buf dlogits_in(b, logits), dlabels(b, labels), loss = Buf::output(b, 1), probs = Buf::output(b, n);
    b.softmax_cross_entropy_forward(loss.p(), probs.p(), dlogits_in.p(), dlabels.p(), batch, classes);
    const Vec got_loss = loss.get();
    // Loss: float exp/log and a float or double sum of batch terms; with logits of 1e4 the row terms are ~1e4 and
    // must come out finite, not inf - inf.
    const NormalizedError loss_error = compare_stored(got_loss, f.outputs[0], 1e-5);
    expect(std::isfinite(got_loss[0]) && loss_error.ok(),
           what + format(" loss %.6g finite, worst %.3f of tol 1e-5 (of max(|loss|, 1): float exp/log, the batch sum)",
                         got_loss[0], loss_error.worst));
    check_stored(what + " probs", probs.get(), f.outputs[1], 1e-6,
                 "absolute: probs are at most 1, float exp within a few ulps");
    record(what + " loss", got_loss, 1e-5);
    record(what + " probs", probs.get(), 1e-6);

    Buf dloss(b, Vec{upstream}), dlogits = Buf::output(b, n);
    b.softmax_cross_entropy_backward(dlogits.p(), probs.p(), dlabels.p(), dloss.p(), batch, classes);
    check_stored(what + " dlogits", dlogits.get(), f.outputs[2], 2e-6,
                 "of max(|g|, dloss/batch): the probs' 1e-6 error scaled by dloss/batch");
  }
}

// Cross-entropy over [outer, classes, inner] with ignored positions, class weights and label smoothing (weighted
// mean), and binary cross-entropy on logits of magnitude 1e4, against PyTorch's formulas in float64.
void test_class_and_pointwise_losses(const Backend& b) {
  for (const OpCase& f : fixture("class_loss.bin")) {
    const std::vector<int64_t>& p = f.parameters;
    ClassLossOptions o;
    o.outer = p[0], o.classes = p[1], o.inner = p[2], o.ignore_index = p[3], o.label_smoothing = float_parameter(p[4]);
    const float upstream = float_parameter(p[5]), scale = float_parameter(p[6]);
    Vec weight(o.classes);
    for (int64_t c = 0; c < o.classes; ++c) weight[c] = float_parameter(p[7 + c]);
    const int64_t positions = o.outer * o.inner;
    const std::string what = std::string(b.name) + " class_loss logits*" + format("%g", double(scale));
    Vec logits(positions * o.classes);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = f.inputs[0].values[i] * scale;
    Vec labels = labels_from(f.inputs[1].values, o.classes);
    for (int64_t q = 0; q < positions; q += 5) labels[q] = float(o.ignore_index);
    Buf din(b, logits), dlabels(b, labels), dweight(b, weight), position_loss = Buf::output(b, positions),
        position_weight = Buf::output(b, positions), reduced = Buf::output(b, 1), total = Buf::output(b, 1),
        saved = Buf::output(b, positions * o.classes);
    o.class_weight = dweight.p();
    b.class_loss_forward(position_loss.p(), position_weight.p(), reduced.p(), total.p(), saved.p(), din.p(),
                         dlabels.p(), o, LossReduction::kMean);
    const Vec mean = reduced.get();
    // float exp/log per class, double sums: 1e-5 relative to the loss (floor 1); with logits of 1e4 still finite.
    const NormalizedError mean_error = compare_stored(mean, f.outputs[1], 1e-5);
    expect(std::isfinite(mean[0]) && mean_error.ok(),
           what + format(" mean %.6g finite, worst %.3f of tol 1e-5 (of max(|mean|, 1))", mean[0], mean_error.worst));
    check_stored(what + " position losses", position_loss.get(), f.outputs[0], 1e-5,
                 "of max(|loss|, 1, logit scale): float exp/log of logits that large");
    record(what + " mean", mean, 1e-5);

    Buf dloss(b, Vec{upstream}), dinput = Buf::output(b, positions * o.classes);
    b.class_loss_backward(dinput.p(), saved.p(), dlabels.p(), dloss.p(), 1, total.p(), o);
    check_stored(what + " dlogits", dinput.get(), f.outputs[2], 1e-5,
                 "of max(|g|, 3 upstream/sum w): a few float roundings of terms up to w·upstream/sum w");
    record(what + " dlogits", dinput.get(), 1e-5);
  }
  for (const OpCase& f : fixture("bce_with_logits.bin")) {
    const std::string what = std::string(b.name) + " pointwise bce_with_logits";
    const std::vector<int64_t>& p = f.parameters;
    const int64_t count = p[0], pos_count = p[1 + 2 * count];
    Vec x(count), y(count), pos_weight(pos_count);
    for (int64_t i = 0; i < count; ++i) x[i] = float_parameter(p[1 + i]), y[i] = float_parameter(p[1 + count + i]);
    for (int64_t i = 0; i < pos_count; ++i) pos_weight[i] = float_parameter(p[2 + 2 * count + i]);
    const float upstream = float_parameter(p[2 + 2 * count + pos_count]);
    Buf dx(b, x), dy(b, y), dpos(b, pos_weight), loss = Buf::output(b, count), reduced = Buf::output(b, 1);
    PointwiseLossOptions o;
    o.kind = PointwiseLoss::kBceWithLogits;
    o.pos_weight = {dpos.p(), pos_count};
    b.pointwise_loss_forward(loss.p(), reduced.p(), dx.p(), dy.p(), count, o, LossReduction::kSum);
    const char* reason = "of max(|value|, 1): float exp/log1p within a few ulps";
    check_stored(what + " elements", loss.get(), f.outputs[0], 1e-6, reason);
    check_stored(what + " sum", reduced.get(), f.outputs[1], 1e-6, reason);
    Buf dloss(b, Vec{upstream}), dinput = Buf::output(b, count);
    b.pointwise_loss_backward(dinput.p(), dloss.p(), 1, 1.0f, dx.p(), dy.p(), count, o);
    check_stored(what + " dinput", dinput.get(), f.outputs[2], 1e-6, reason);
    record(what + " elements", loss.get(), 1e-6);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Batch normalization against batch_norm.bin (test/reference/nn.ts: batchNormForward, batchNormBackward,
// batchNormInference, and finite differences of the float64 forward).

void test_batch_norm(const Backend& b) {
  for (const OpCase& f : fixture("batch_norm.bin")) {
    const ChannelLayout l = layout_of(f.parameters, 0);
    const bool affine = f.parameters[3] != 0, finite_differences = f.parameters[5] != 0;
    const float eps = float_parameter(f.parameters[4]);
    const int64_t n = l.elements(), c = l.channels;
    const Vec x = offset_values(f.inputs[0].values, l);
    const Vec& dy = f.inputs[1].values;  // finite differences: the weights w of L = sum w * y
    const Vec gamma = around(f.inputs[2].values, 1.0f);
    const Vec& beta = f.inputs[3].values;
    Buf dx(b, x), dgamma_in(b, gamma), dbeta_in(b, beta), ddy(b, dy);
    Buf y = Buf::output(b, n), mean = Buf::output(b, c), var = Buf::output(b, c), invstd = Buf::output(b, c);
    b.batch_norm_forward(y.p(), mean.p(), var.p(), invstd.p(), dx.p(), affine ? dgamma_in.p() : nullptr,
                         affine ? dbeta_in.p() : nullptr, l, eps);
    Buf dxo = Buf::output(b, n), dgamma = Buf::output(b, c), dbeta = Buf::output(b, c);
    b.batch_norm_backward(dxo.p(), dgamma.p(), dbeta.p(), ddy.p(), dx.p(), mean.p(), invstd.p(),
                          affine ? dgamma_in.p() : nullptr, l);
    if (finite_differences) {
      // The backward against central differences of the float64 forward (the derivation itself, not only the
      // formula): float32 kernels (~1e-6) against float64 differences (~1e-8).
      const std::string what = std::string(b.name) + " batch_norm backward vs finite differences " + describe(l);
      const char* reason = "of the largest gradient: float32 kernels against float64 differences";
      check_stored(what + " dx", dxo.get(), f.outputs[0], 1e-4, reason);
      check_stored(what + " dgamma", dgamma.get(), f.outputs[1], 1e-4, reason);
      check_stored(what + " dbeta", dbeta.get(), f.outputs[2], 1e-4, reason);
      continue;
    }
    const std::string what = std::string(b.name) + " batch_norm " + describe(l) + (affine ? "" : " no affine");
    // Statistics: float inputs summed with float accumulators over short runs; the variance is a second pass
    // around the rounded mean.
    check_stored(what + " mean", mean.get(), f.outputs[0], 2e-6, "of max(|mean|, 1): float sums over short runs");
    check_stored(what + " var (biased)", var.get(), f.outputs[1], 1e-5,
                 "relative: a second pass around the rounded mean");
    check_stored(what + " invstd", invstd.get(), f.outputs[2], 1e-5, "relative: from the variance");
    check_stored(what + " y", y.get(), f.outputs[3], 1e-5,
                 "of the largest |y|: a few float operations from the statistics");
    record(what + " y", y.get(), 1e-5);
    record(what + " var", var.get(), 1e-5);
    if (l.reduce_size() > 1) {
      check_stored(what + " dx", dxo.get(), f.outputs[4], 2e-5,
                   "of the largest |dx|: three terms of size |gamma|·invstd·|dy| cancel");
      record(what + " dx", dxo.get(), 2e-5);
    }
    // Sums over the channel: 1e-5 of sum |dy| (and of sum |dy * xhat| for dgamma).
    const NormalizedError eb = compare_stored(dbeta.get(), f.outputs[5], 1e-5);
    const NormalizedError eg = compare_stored(dgamma.get(), f.outputs[6], 1e-5);
    expect(eb.ok() && eg.ok(), what + format(" dbeta worst %.3f, dgamma worst %.3f of tol 1e-5 (of sum |term|)",
                                             eb.worst, eg.worst));

    Buf running_mean(b, f.inputs[4].values), running_var(b, around(f.inputs[5].values, 2.0f));
    b.batch_norm_inference(y.p(), dx.p(), running_mean.p(), running_var.p(), affine ? dgamma_in.p() : nullptr,
                           affine ? dbeta_in.p() : nullptr, l, eps);
    check_stored(what + " inference y", y.get(), f.outputs[7], 1e-5, "of the largest |y|: a few float operations");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Mean-only batch normalization (Salimans & Kingma, 2016, §4) against mean_only_batch_norm.bin
// (test/reference/nn.ts: meanOnlyBatchNormForward, meanOnlyBatchNormBackward, finite differences).

void test_mean_only_batch_norm(const Backend& b) {
  for (const OpCase& f : fixture("mean_only_batch_norm.bin")) {
    const ChannelLayout l = layout_of(f.parameters, 0);
    const int64_t n = l.elements(), c = l.channels;
    const Vec x = offset_values(f.inputs[0].values, l);
    if (f.parameters[3] != 0) {
      // The paper's backward equals the centred gradient: against central differences of L = sum w * y(x) in
      // float64 (L is linear in x: exact up to rounding).
      const Vec& w = f.inputs[1].values;
      Buf dw(b, w), dxo = Buf::output(b, n), dbias = Buf::output(b, c);
      b.mean_only_batch_norm_backward(dxo.p(), dbias.p(), dw.p(), l);
      check_stored(std::string(b.name) + " mean_only_batch_norm backward vs finite differences " + describe(l),
                   dxo.get(), f.outputs[0], 1e-5, "of the largest gradient: float32 roundings of dy and its mean");
      continue;
    }
    const std::string what = std::string(b.name) + " mean_only_batch_norm " + describe(l);
    const Vec& bias = f.inputs[1].values;
    Vec dy(n);
    for (int64_t e = 0; e < n; ++e) dy[e] = f.inputs[2].values[e] + 0.25f;
    Buf dx(b, x), dbias_in(b, bias), ddy(b, dy), y = Buf::output(b, n), mean = Buf::output(b, c);
    b.mean_only_batch_norm_forward(y.p(), mean.p(), dx.p(), dbias_in.p(), l, true);
    check_stored(what + " mean", mean.get(), f.outputs[0], 2e-6, "of max(|mean|, 1): float sums over short runs");
    check_stored(what + " y = x - batch mean + bias", y.get(), f.outputs[1], 3e-6,
                 "of |x|+|mean|+|bias|: two float roundings of terms that large, plus the mean's error");
    record(what + " y", y.get(), 1e-5);

    // Evaluation: the given (running) mean is used and left as it is: the same float32 operations, bitwise.
    const Vec running = normal_values(c);
    Buf drunning(b, running);
    b.mean_only_batch_norm_forward(y.p(), drunning.p(), dx.p(), dbias_in.p(), l, false);
    Vec want_eval(n);
    for (int64_t i = 0; i < n; ++i) want_eval[i] = x[i] - running[channel_of(l, i)] + bias[channel_of(l, i)];
    check_bitwise(what + " evaluation y = x - running mean + bias", y.get(), want_eval);
    check_bitwise(what + " evaluation leaves the running mean", drunning.get(), running);

    Buf dxo = Buf::output(b, n), dbias = Buf::output(b, c);
    b.mean_only_batch_norm_backward(dxo.p(), dbias.p(), ddy.p(), l);
    check_stored(what + " dbias = sum dy", dbias.get(), f.outputs[2], 1e-6, "of sum |dy|: float partial sums");
    check_stored(what + " dx = dy - channel mean of dy", dxo.get(), f.outputs[3], 1e-6,
                 "of |dy| + sum |dy| / n: one subtraction after the sum");
    // A property, not a reference: the centred gradient sums to zero over each channel, to the float rounding of
    // its elements (sum |dy| per channel bounds it).
    const Vec got_dx = dxo.get();
    std::vector<double> centred(c, 0.0), dy_abs(c, 0.0);
    for (int64_t e = 0; e < n; ++e) {
      centred[channel_of(l, e)] += got_dx[e];
      dy_abs[channel_of(l, e)] += std::fabs(dy[e]);
    }
    double worst = 0.0;
    for (int64_t k = 0; k < c; ++k) worst = std::max(worst, std::fabs(centred[k]) / std::max(dy_abs[k], 1e-30));
    expect(worst <= 1e-6, what + format(" channel sums of dx vanish: %.2e of sum |dy| (tol %.0e)", worst, 1e-6));
    record(what + " dx", got_dx, 1e-5);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Optimizers: a few steps against optim.bin (test/reference/optim.ts: PyTorch's SGD, Adam and Adamax rules in
// float64, with the norm of the updated parameter where it is a weight-norm direction).

void test_optimizers(const Backend& b) {
  for (const OpCase& f : fixture("optim.bin")) {
    const std::vector<int64_t>& q = f.parameters;
    const int64_t kind = q[0];  // 0 SGD, 1 Adam, 2 Adamax
    const float lr = float_parameter(q[1]), first = float_parameter(q[2]), second = float_parameter(q[3]),
                weight_decay = float_parameter(q[4]), eps = float_parameter(q[5]);
    const bool nesterov = q[6] != 0, with_norm = q[7] != 0;
    const ChannelLayout l = layout_of(q, 8);
    const int64_t steps = q[11], count = l.elements();
    const SgdOptions sgd{lr, first, second, weight_decay, nesterov};
    const AdamOptions adam{lr, first, second, eps, weight_decay};
    const char* names[] = {"sgd", "adam", "adamax"};
    const std::string what = std::string(b.name) + " " + names[kind] +
                             format(" lr %g %g %g wd %g eps %g%s", lr, first, second, weight_decay, eps,
                                    nesterov ? " nesterov" : "") +
                             (with_norm ? " norm " : " ") + describe(l);
    // One all-zero channel with zero gradients (zeroChannel): it stays zero and its norm is the eps floor.
    const bool zero_channel = with_norm && l.channels > 2;
    auto zeroed = [&](Vec v) {
      if (zero_channel)
        for (int64_t e = 0; e < count; ++e)
          if (channel_of(l, e) == 1) v[e] = 0.0f;
      return v;
    };
    Buf dp(b, zeroed(f.inputs[0].values)), s1(b, Vec(count, 0.0f)), s2(b, Vec(count, 0.0f)),
        norm = Buf::output(b, l.channels);
    NormOutput norm_output;
    norm_output.norm = norm.p();
    norm_output.layout = l;
    norm_output.eps = 1e-12f;
    const bool use_velocity = kind != 0 || sgd.momentum != 0.0f;
    for (int64_t step = 1; step <= steps; ++step) {
      Buf dg(b, zeroed(f.inputs[size_t(step)].values));
      const NormOutput* no = with_norm ? &norm_output : nullptr;
      if (kind == 0) b.sgd_step(dp.p(), use_velocity ? s1.p() : nullptr, dg.p(), count, sgd, step, no);
      else if (kind == 1) b.adam_step(dp.p(), s1.p(), s2.p(), dg.p(), count, adam, step, no);
      else b.adamax_step(dp.p(), s1.p(), s2.p(), dg.p(), count, adam, step, no);
    }
    // Each step rounds p once (2^-24 |p|) and computes an update of size ~lr with a few ulps of error: after 4
    // steps the error is below 1e-6 of |p| + lr * steps; 4e-6 leaves room, a wrong rule term is >= 1e-3.
    const Vec got = dp.get();
    check_stored(what + " param", got, f.outputs[0], 4e-6,
                 "of |p| + lr*steps: a rounding of p and a few ulps of lr per step");
    record(what + " param", got, 4e-6);
    if (use_velocity)
      check_stored(what + " state 1 (velocity / m)", s1.get(), f.outputs[1], 1e-5, "of its largest value");
    if (kind != 0) check_stored(what + " state 2 (v / u)", s2.get(), f.outputs[2], 1e-5, "of its largest value");
    if (!with_norm) continue;
    check_stored(what + " norm of the updated parameter", norm.get(), f.outputs[3], 5e-6,
                 "of norm + lr*steps*sqrt(n): the parameter's 4e-6 summed over the channel, and a float sum");
    if (zero_channel) expect(norm.get()[1] == 1e-12f, what + " zero channel's norm is the eps floor");
  }
}

// The multi-tensor steps on each fixture case's parameter together with a second parameter (the same values at a
// later step count, without a norm output), against the single-tensor step on each: bit for bit, since every
// parameter of a group call must be updated exactly as it would be alone.
void test_optimizer_groups(const Backend& b) {
  for (const OpCase& f : fixture("optim.bin")) {
    const std::vector<int64_t>& q = f.parameters;
    const int64_t kind = q[0];
    const float lr = float_parameter(q[1]), first = float_parameter(q[2]), second = float_parameter(q[3]),
                weight_decay = float_parameter(q[4]), eps = float_parameter(q[5]);
    const bool with_norm = q[7] != 0;
    const ChannelLayout l = layout_of(q, 8);
    const int64_t steps = q[11], count = l.elements(), later = 3;
    const SgdOptions sgd{lr, first, second, weight_decay, q[6] != 0};
    const AdamOptions adam{lr, first, second, eps, weight_decay};
    const std::string what = std::string(b.name) + " group of 2, kind " + std::to_string(kind) +
                             (with_norm ? " norm " : " ") + describe(l);
    const bool use_velocity = kind != 0 || sgd.momentum != 0.0f;
    // [0]: the group's two parameters; [1]: the same two, stepped one at a time.
    struct Side {
      std::vector<Buf> p, s1, s2, norm;
    };
    Side sides[2];
    for (Side& side : sides)
      for (int j = 0; j < 2; ++j) {
        side.p.emplace_back(b, f.inputs[0].values);
        side.s1.emplace_back(b, Vec(count, 0.0f));
        side.s2.emplace_back(b, Vec(count, 0.0f));
        side.norm.push_back(Buf::output(b, l.channels));
      }
    for (int64_t step = 1; step <= steps; ++step) {
      Buf dg(b, f.inputs[size_t(step)].values);
      OptimizerTensors tensors[2];
      for (int j = 0; j < 2; ++j) {
        OptimizerTensors& t = tensors[j];
        t.param = sides[0].p[j].p();
        t.state1 = use_velocity ? sides[0].s1[j].p() : nullptr;
        t.state2 = sides[0].s2[j].p();
        t.grad = dg.p();
        t.count = count;
        t.step = step + (j == 1 ? later : 0);
        if (with_norm && j == 0) t.norm_output = NormOutput{sides[0].norm[j].p(), l, 1e-12f};
      }
      if (kind == 0) b.sgd_step_many(tensors, 2, sgd);
      else if (kind == 1) b.adam_step_many(tensors, 2, adam);
      else b.adamax_step_many(tensors, 2, adam);
      for (int j = 0; j < 2; ++j) {
        Side& one = sides[1];
        NormOutput norm_output{one.norm[j].p(), l, 1e-12f};
        const NormOutput* no = with_norm && j == 0 ? &norm_output : nullptr;
        const int64_t at = step + (j == 1 ? later : 0);
        float* s1 = use_velocity ? one.s1[j].p() : nullptr;
        if (kind == 0) b.sgd_step(one.p[j].p(), s1, dg.p(), count, sgd, at, no);
        else if (kind == 1) b.adam_step(one.p[j].p(), s1, one.s2[j].p(), dg.p(), count, adam, at, no);
        else b.adamax_step(one.p[j].p(), s1, one.s2[j].p(), dg.p(), count, adam, at, no);
      }
    }
    const auto same_bits = [](const Vec& a, const Vec& c) {
      return a.size() == c.size() && std::memcmp(a.data(), c.data(), a.size() * sizeof(float)) == 0;
    };
    for (int j = 0; j < 2; ++j) {
      const std::string which = what + (j == 0 ? " first" : " second (later step)");
      expect(same_bits(sides[0].p[j].get(), sides[1].p[j].get()), which + " param: group step equals the single step");
      expect(same_bits(sides[0].s1[j].get(), sides[1].s1[j].get()), which + " state 1: the same");
      expect(same_bits(sides[0].s2[j].get(), sides[1].s2[j].get()), which + " state 2: the same");
    }
    if (with_norm) expect(same_bits(sides[0].norm[0].get(), sides[1].norm[0].get()), what + " norm: the same");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Element type conversion: float32 <-> bfloat16.

uint32_t bits_of(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

float float_of_bits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

bool is_bfloat16_nan(uint16_t bits) { return (bits & 0x7f80) == 0x7f80 && (bits & 0x007f) != 0; }

// The conversion's stored inputs and their expected bits, by class (test/reference/native-bfloat16-fixture.ts
// documents the format; bfloat16.ts is the one reference).
struct ConvertClass {
  std::string name;
  std::vector<uint32_t> inputs;
  std::vector<uint16_t> expected;
};

std::vector<ConvertClass> read_convert_fixture() {
  weightnorm::native_test::FixtureReader in = weightnorm::native_test::open_fixture("bfloat16.bin");
  if (in.ascii(8) != "WNBF1601") throw std::runtime_error("bfloat16.bin: not a WNBF1601 file");
  std::vector<ConvertClass> classes(in.next<uint32_t>());
  for (ConvertClass& c : classes) {
    c.name = in.ascii(in.next<uint32_t>());
    const uint32_t count = in.next<uint32_t>();
    for (uint32_t i = 0; i < count; ++i) {
      c.inputs.push_back(in.next<uint32_t>());
      c.expected.push_back(in.next<uint16_t>());
    }
  }
  if (!in.done()) throw std::runtime_error("bfloat16.bin: bytes after the last class");
  return classes;
}

// Bit for bit, except that an expected NaN stands for any quiet NaN of its sign: IEEE 754 only recommends keeping
// a payload (bfloat16.ts, bfloat16BitsOf).
bool converted_as_expected(uint16_t got, uint16_t expected) {
  if (!is_bfloat16_nan(expected)) return got == expected;
  return is_bfloat16_nan(got) && (got & 0x0040) && (got >> 15) == (expected >> 15);
}

std::string hex(uint32_t bits, int digits) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%0*x", digits, bits);
  return text;
}

Vec widened_bits(const Bf16Vec& x) {
  Vec out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = float_of_bits(uint32_t{x[i].bits} << 16);
  return out;
}

void test_convert(const Backend& b) {
  const std::string tag = std::string(b.name) + " convert ";
  // The stored inputs of every class (hand-picked, every exponent around a tie, zeros and infinities, NaNs, a seeded
  // random sample) in one buffer, aligned and not, against the TypeScript reference's bits; recorded (NaNs left
  // out) for the CPU-vs-CUDA comparison.
  const std::vector<ConvertClass> classes = read_convert_fixture();
  Vec input;
  for (const ConvertClass& c : classes)
    for (const uint32_t bits : c.inputs) input.push_back(float_of_bits(bits));
  expect(input.size() > 20000, tag + "bfloat16.bin holds " + std::to_string(input.size()) + " stored inputs");
  for (const size_t offset : {size_t{0}, size_t{1}}) {
    const std::string what = tag + (offset ? "unaligned " : "");
    Buf in(b, input, offset);
    Buffer<bfloat16> out = Buffer<bfloat16>::output(b, input.size(), offset);
    b.convert_to_bfloat16(out.p(), in.p(), input.size());
    const Bf16Vec got = out.get();
    size_t at = 0;
    Bf16Vec finite;
    for (const ConvertClass& c : classes) {
      int64_t wrong = 0;
      std::string first;
      for (size_t i = 0; i < c.inputs.size(); ++i, ++at) {
        if (!is_bfloat16_nan(c.expected[i])) finite.push_back(got[at]);
        if (converted_as_expected(got[at].bits, c.expected[i])) continue;
        if (wrong++ == 0)
          first = " (first " + hex(c.inputs[i], 8) + " -> " + hex(got[at].bits, 4) + ", want " + hex(c.expected[i], 4) + ")";
      }
      expect(wrong == 0, what + "to bfloat16, " + c.name + ": " + std::to_string(wrong) + " of " +
                             std::to_string(c.inputs.size()) + " differ from the reference" + first);
    }
    record(what + "to bfloat16 stored inputs", widened_bits(finite), 0.0);
  }
  // Every bfloat16 value: widening is exact (the bits move to the high half; a NaN stays a NaN of the same sign),
  // and rounding the widened value gives the same bfloat16 back.
  Bf16Vec all(1 << 16);
  for (uint32_t bits = 0; bits < all.size(); ++bits) all[bits].bits = static_cast<uint16_t>(bits);
  for (const size_t offset : {size_t{0}, size_t{1}}) {
    const std::string what = tag + (offset ? "unaligned " : "");
    Buffer<bfloat16> in(b, all, offset);
    Buf wide = Buf::output(b, all.size(), offset);
    b.convert_to_float(wide.p(), in.p(), all.size());
    const Vec widened = wide.get();
    Buf wide_in(b, widened, offset);
    Buffer<bfloat16> back = Buffer<bfloat16>::output(b, all.size(), offset);
    b.convert_to_bfloat16(back.p(), wide_in.p(), all.size());
    const Bf16Vec round_trip = back.get();
    int64_t inexact = 0, not_returned = 0;
    Vec finite_widened;
    for (uint32_t bits = 0; bits < all.size(); ++bits) {
      const uint32_t word = bits_of(widened[bits]);
      const bool nan = is_bfloat16_nan(static_cast<uint16_t>(bits));
      if (nan ? !(std::isnan(widened[bits]) && (word >> 31) == (bits >> 15)) : word != bits << 16) ++inexact;
      if (nan ? !(is_bfloat16_nan(round_trip[bits].bits) && (round_trip[bits].bits >> 15) == (bits >> 15))
              : round_trip[bits].bits != bits)
        ++not_returned;
      if (!nan) finite_widened.push_back(widened[bits]);
    }
    expect(inexact == 0, what + "to float, all 65536 bfloat16 values exact: " + std::to_string(inexact) + " not");
    expect(not_returned == 0, what + "bfloat16 -> float -> bfloat16 returns all 65536 values: " +
                                  std::to_string(not_returned) + " not");
    record(what + "to float, every non-NaN bfloat16", finite_widened, 0.0);
  }
  // count 0 writes nothing.
  Buffer<bfloat16> untouched = Buffer<bfloat16>::output(b, 4);
  Buf source(b, Vec{1.0f, 2.0f, 3.0f, 4.0f});
  b.convert_to_bfloat16(untouched.p(), source.p(), 0);
  const Bf16Vec after = untouched.get();
  expect(std::all_of(after.begin(), after.end(), [](bfloat16 x) { return x.bits == unwritten<bfloat16>().bits; }),
         tag + "count 0 writes nothing");
}

// ---------------------------------------------------------------------------------------------------------------

void run_all(const Backend& b) {
  const std::pair<const char*, void (*)(const Backend&)> suites[] = {
      {"elementwise", test_elementwise},
      {"dropout", test_dropout},
      {"gaussian_noise", test_noise},
      {"channel_bias_add", test_channel_bias_add},
      {"reduce", test_reduce},
      {"determinism", test_determinism},
      {"softmax_cross_entropy", test_loss},
      {"class and pointwise losses", test_class_and_pointwise_losses},
      {"batch_norm", test_batch_norm},
      {"mean_only_batch_norm", test_mean_only_batch_norm},
      {"optimizers", test_optimizers},
      {"optimizer groups", test_optimizer_groups},
      {"convert", test_convert},
  };
  for (const auto& [name, suite] : suites) {
    std::printf("== %s %s\n", b.name, name);
    try {
      suite(b);
    } catch (const std::exception& error) {
      expect(false, std::string(b.name) + " " + name + " threw: " + error.what());
    }
  }
}

#ifdef WEIGHTNORM_WITH_CUDA
void compare_backends() {
  std::printf("== cpu vs cuda\n");
  int compared = 0;
  for (const auto& [name, cuda_result] : g_recorded[1]) {
    const auto found = g_recorded[0].find(name);
    if (found == g_recorded[0].end()) continue;
    ++compared;
    const std::string what = "cpu vs cuda: " + name;
    if (cuda_result.tol == 0.0) {
      check_bitwise(what, cuda_result.values, found->second.values);
    } else {
      // Against the CPU tensor's largest value.
      const Vec& cpu_values = found->second.values;
      double largest = 1e-30;
      for (const float v : cpu_values) largest = std::max(largest, double(std::fabs(v)));
      NormalizedError error;
      if (cpu_values.size() != cuda_result.values.size()) error.add(NAN, 0.0, 1.0);
      for (size_t i = 0; i < cpu_values.size() && i < cuda_result.values.size(); ++i)
        error.add(cuda_result.values[i], cpu_values[i], cuda_result.tol * largest);
      expect(error.ok(), what + format(" worst %.3f of tol %.0e", error.worst, cuda_result.tol));
    }
  }
  expect(compared > 0, "cpu vs cuda: " + std::to_string(compared) + " outputs compared");
}
#endif

void check_cpu_ops() {
  g_backend_index = 0;
  g_rng.seed(20261128u);
  run_all(cpu_backend());
}

#ifdef WEIGHTNORM_WITH_CUDA
void check_cuda_ops() {
  // The CPU-vs-CUDA comparison needs the CPU outputs: run the CPU checks first when this process has not (a
  // --filter ops/cuda run).
  if (g_recorded[0].empty()) check_cpu_ops();
  g_backend_index = 1;
  g_rng.seed(20261128u);  // the same inputs as the CPU run, so the outputs can be compared
  run_all(cuda_backend());
  compare_backends();
}
#endif

WEIGHTNORM_NATIVE_TEST_GROUP("ops/cpu", check_cpu_ops);
#ifdef WEIGHTNORM_WITH_CUDA
WEIGHTNORM_NATIVE_TEST_GROUP("ops/cuda", check_cuda_ops);
#endif

}  // namespace
