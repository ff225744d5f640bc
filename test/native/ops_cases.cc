// The elementwise, reduce, loss, normalization, optimizer and conversion cases of the native test runner
// (backend_ops_test.cc, harness.h):
//  - every CPU op against a float64 reference written here from the contracts in cpu/*.h;
//  - where a GPU is usable, every CUDA op against the same reference, and against the CPU result (bitwise where
//    both sides do the same IEEE operations, else with a stated tolerance);
//  - determinism: CPU reductions bitwise equal for 1, 2 and 3 threads; CUDA reductions bitwise equal run to run;
//  - statistics: the dropout keep rate within a binomial bound, the noise mean and variance;
//  - float32 <-> bfloat16 conversion against an IEEE rounding reference written here (ties to even, overflow,
//    subnormals, signed zeros, NaN), every bfloat16 value widened and round-tripped.
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
using weightnorm::native_test::format;
using weightnorm::bfloat16;
using weightnorm::AdamOptions;
using weightnorm::ChannelLayout;
using weightnorm::NormOutput;
using weightnorm::SgdOptions;
using weightnorm::ClassLossOptions;
using weightnorm::LossReduction;
using weightnorm::PointwiseLoss;
using weightnorm::PointwiseLossOptions;
using Vec = std::vector<float>;
using Bf16Vec = std::vector<bfloat16>;
using Ref = std::vector<double>;

// ---------------------------------------------------------------------------------------------------------------
// Checks.

std::string describe(const ChannelLayout& l) {
  return "[" + std::to_string(l.outer) + "," + std::to_string(l.channels) + "," + std::to_string(l.inner) + "]";
}

// Largest |got - want| / scale_i with scale_i = max(|want_i|, floor) (or scales[i] when given); NaN counts as inf.
double max_error(const Vec& got, const Ref& want, double floor, const Ref* scales = nullptr) {
  if (got.size() != want.size()) return INFINITY;
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double scale = std::max(scales ? (*scales)[i] : std::fabs(want[i]), floor);
    const double e = std::fabs(double(got[i]) - want[i]) / scale;
    if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
  }
  return worst;
}

double max_abs(const Ref& values) {
  double m = 0.0;
  for (double v : values) m = std::max(m, std::fabs(v));
  return m;
}

Ref widen(const Vec& v) { return Ref(v.begin(), v.end()); }

// Relative error per element (floor: where |want| is smaller, the error is taken relative to floor instead).
void check_close(const std::string& what, const Vec& got, const Ref& want, double tol, double floor) {
  const double e = max_error(got, want, floor);
  expect(e <= tol, what + format(" err %.2e (tol %.0e)", e, tol));
}

// Error relative to the tensor's largest value: for outputs whose small elements come from cancellation.
void check_scaled(const std::string& what, const Vec& got, const Ref& want, double tol) {
  check_close(what, got, want, tol, std::max(max_abs(want), 1e-30));
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
// Inputs.

std::mt19937 g_rng(20261128u);

Vec normal_values(size_t n, float mean = 0.0f, float std = 1.0f) {
  std::normal_distribution<float> normal(mean, std);
  Vec v(n);
  for (auto& x : v) x = normal(g_rng);
  return v;
}

// Small integers: every partial sum of a float reduction is exact, so any summation order gives the exact sum
// and a missing or doubled element cannot hide under rounding.
Vec integer_values(size_t n) {
  std::uniform_int_distribution<int> pick(-2, 3);
  Vec v(n);
  for (auto& x : v) x = float(pick(g_rng));
  return v;
}

int64_t channel_of(const ChannelLayout& l, int64_t e) { return (e / l.inner) % l.channels; }

// Layouts exercising every route: outer 1 / inner 1, short and long runs (segments / columns), many channels,
// the parallel CPU paths, and empty tensors.
const std::vector<ChannelLayout> kLayouts = {
    {1, 1, 1},     {1, 5, 1},    {7, 1, 1},      {7, 3, 1},     {64, 16, 1},    {1000, 10, 1},   {5, 3000, 1},
    {2, 5, 31},    {3, 4, 5},    {4, 3, 33},     {8, 16, 49},   {1, 3, 1000},   {2, 3, 40000},   {1, 2, 70001},
    {300, 70, 1},  {4096, 8, 1}, {32, 64, 64},   {0, 3, 4},     {3, 0, 4},      {2, 3, 0},
};

// ---------------------------------------------------------------------------------------------------------------
// Elementwise.

void test_elementwise(const Backend& b) {
  const std::string tag = std::string(b.name) + " ";
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{5}, int64_t{1001}, int64_t{65537}}) {
    for (const size_t offset : {size_t{0}, size_t{1}}) {
      if (n < 5 && offset) continue;
      const std::string what = tag + "n=" + std::to_string(n) + (offset ? " unaligned " : " ");
      Vec a = normal_values(n), c = normal_values(n);
      for (int64_t i = 0; i < n; i += 7) a[i] = 0.0f;  // relu's kink: x = 0 takes the negative branch
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

      // axpby: alpha*x + beta*y; a fused multiply-add on the GPU may round once instead of twice, so the error is
      // a few ulps of |alpha x| + |beta y|, not of the (possibly cancelling) result.
      {
        const float alpha = 0.75f, beta = -1.25f;
        Buf y(b, c, offset);
        b.axpby(y.p(), alpha, da.p(), beta, n);
        Ref ref(n), scale(n);
        for (int64_t i = 0; i < n; ++i) {
          ref[i] = double(alpha) * a[i] + double(beta) * c[i];
          scale[i] = std::fabs(double(alpha) * a[i]) + std::fabs(double(beta) * c[i]);
        }
        const double e = max_error(y.get(), ref, 1e-30, &scale);
        expect(e <= 3e-7, what + "axpby" + format(" err %.2e (tol %.0e)", e, 3e-7));
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

      // tanh: glibc's tanhf and CUDA's are within 2 ulps (2.4e-7); 1e-6 relative leaves room, a bug is O(1).
      b.tanh_forward(out.p(), da.p(), n);
      Ref ref(n);
      for (int64_t i = 0; i < n; ++i) ref[i] = std::tanh(double(a[i]));
      check_close(what + "tanh_forward", out.get(), ref, 1e-6, 1e-30);
      record(what + "tanh_forward", out.get(), 1e-6);
      const Vec y = out.get();
      Buf dy(b, y, offset);
      b.tanh_backward(out.p(), dc.p(), dy.p(), n);
      Ref scale(n);
      for (int64_t i = 0; i < n; ++i) {
        ref[i] = double(c[i]) * (1.0 - double(y[i]) * y[i]);
        scale[i] = std::fabs(double(c[i])) * (1.0 + double(y[i]) * y[i]);
      }
      const double e = max_error(out.get(), ref, 1e-30, &scale);
      expect(e <= 3e-7, what + "tanh_backward" + format(" err %.2e (tol %.0e)", e, 3e-7));
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
    const uint64_t stream = random::stream_of(seed, random::kPurposeNoise);
    Ref ref(n);
    for (int64_t i = 0; i < n; ++i) ref[i] = double(x[i]) + double(std) * random::normal(stream, uint64_t(i));
    // One float rounding of y (6e-8 relative) plus the device's log/sin/cos differing in the last double bit.
    check_close(tag + (offset ? "unaligned " : "") + "y = x + std * n(seed, i)", got, ref, 2e-7, std);
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
  for (const ChannelLayout& l : kLayouts) {
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
// Reductions.

Ref channel_sums_reference(const Vec& x, const ChannelLayout& l) {
  Ref sums(l.channels, 0.0);
  for (int64_t e = 0; e < l.elements(); ++e) sums[channel_of(l, e)] += x[e];
  return sums;
}

Ref channel_abs_sums(const Vec& x, const ChannelLayout& l) {
  Ref sums(l.channels, 0.0);
  for (int64_t e = 0; e < l.elements(); ++e) sums[channel_of(l, e)] += std::fabs(x[e]);
  return sums;
}

void test_reduce(const Backend& b) {
  const std::string tag = std::string(b.name) + " ";
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{31}, int64_t{32}, int64_t{1000}, (int64_t{1} << 20) + 7}) {
    const std::string what = tag + "sum_all n=" + std::to_string(n);
    const Vec integers = integer_values(n);
    Buf dx(b, integers), out = Buf::output(b, 1);
    b.sum_all(out.p(), dx.p(), n);
    double exact = 0.0;
    for (float v : integers) exact += v;
    check_bitwise(what + " of small integers is exact", out.get(), Vec{float(exact)});
    // Random values: float accumulators over short runs folded into double (CPU) or fixed trees (CUDA); the error
    // is ~sqrt(run) ulps of sum |x|, 1e-6 of it is generous (a wrong element shows in the integer case).
    const Vec x = normal_values(n, 0.5f, 1.0f);
    Buf dr(b, x);
    b.sum_all(out.p(), dr.p(), n);
    double sum = 0.0, abs_sum = 0.0;
    for (float v : x) {
      sum += v;
      abs_sum += std::fabs(v);
    }
    const double e = std::fabs(double(out.get()[0]) - sum) / std::max(abs_sum, 1e-30);
    expect(e <= 1e-6, what + format(" random: err / sum|x| %.2e (tol %.0e)", e, 1e-6));
    record(what + " random", out.get(), 1e-6);
  }
  for (const ChannelLayout& l : kLayouts) {
    const std::string what = tag + "channel_sum " + describe(l);
    const int64_t n = l.elements();
    const Vec integers = integer_values(n);
    Buf di(b, integers), out = Buf::output(b, l.channels);
    b.channel_sum(out.p(), di.p(), l);
    const Ref exact = channel_sums_reference(integers, l);
    check_bitwise(what + " of small integers is exact", out.get(), Vec(exact.begin(), exact.end()));
    record(what + " integers", out.get(), 0.0);
    const Vec x = normal_values(n, 0.5f, 1.0f);
    Buf dx(b, x);
    b.channel_sum(out.p(), dx.p(), l);
    const Ref abs_sums = channel_abs_sums(x, l);
    const double e = max_error(out.get(), channel_sums_reference(x, l), 1e-30, &abs_sums);
    expect(e <= 1e-6, what + format(" random: err / sum|x| %.2e (tol %.0e)", e, 1e-6));
    record(what + " random", out.get(), 1e-6);
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
// Softmax cross-entropy.

void test_loss(const Backend& b) {
  struct Case {
    int64_t batch, classes;
    float logit_scale;
  };
  const std::vector<Case> cases = {{0, 10, 1.0f},  {1, 1, 1.0f},   {7, 10, 1.0f},  {300, 37, 3.0f},
                                   {64, 1000, 2.0f}, {16, 10, 1e4f}, {5, 3, 1e4f}};
  for (const Case& c : cases) {
    const std::string what = std::string(b.name) + " softmax_cross_entropy batch " + std::to_string(c.batch) +
                             " classes " + std::to_string(c.classes) + " logits*" + format("%g", c.logit_scale);
    const int64_t n = c.batch * c.classes;
    const Vec logits = normal_values(n, 0.0f, c.logit_scale);
    Vec labels(c.batch);
    std::uniform_int_distribution<int64_t> pick(0, std::max<int64_t>(c.classes - 1, 0));
    for (auto& label : labels) label = float(pick(g_rng));
    Buf dlogits_in(b, logits), dlabels(b, labels), loss = Buf::output(b, 1), probs = Buf::output(b, n);
    b.softmax_cross_entropy_forward(loss.p(), probs.p(), dlogits_in.p(), dlabels.p(), c.batch, c.classes);

    Ref want_probs(n);
    double want_loss = 0.0;
    for (int64_t i = 0; i < c.batch; ++i) {
      const float* x = logits.data() + i * c.classes;
      const double m = *std::max_element(x, x + c.classes);
      double sum = 0.0;
      for (int64_t k = 0; k < c.classes; ++k) sum += std::exp(double(x[k]) - m);
      for (int64_t k = 0; k < c.classes; ++k) want_probs[i * c.classes + k] = std::exp(double(x[k]) - m) / sum;
      want_loss += m + std::log(sum) - x[int64_t(labels[i])];
    }
    if (c.batch > 0) want_loss /= double(c.batch);
    const float got_loss = loss.get()[0];
    // Loss: float exp/log and a float or double sum of batch terms: 1e-5 relative (floor 1) covers them; with
    // logits of 1e4 the row terms are ~1e4 and must come out finite, not inf - inf.
    const double loss_error = std::fabs(got_loss - want_loss) / std::max(std::fabs(want_loss), 1.0);
    expect(std::isfinite(got_loss) && loss_error <= 1e-5,
           what + format(" loss %.6g, err %.2e (tol 1e-5)", got_loss, loss_error));
    // probs: |error| <= 1e-6 absolute (they are at most 1; the float exp is within a few ulps).
    check_close(what + " probs", probs.get(), want_probs, 1e-6, 1.0);
    record(what + " loss", loss.get(), 1e-5);
    record(what + " probs", probs.get(), 1e-6);

    const float upstream = 0.7f;
    Buf dloss(b, Vec{upstream}), dlogits = Buf::output(b, n);
    b.softmax_cross_entropy_backward(dlogits.p(), probs.p(), dlabels.p(), dloss.p(), c.batch, c.classes);
    Ref want_grad(n);
    for (int64_t i = 0; i < c.batch; ++i)
      for (int64_t k = 0; k < c.classes; ++k)
        want_grad[i * c.classes + k] =
            (want_probs[i * c.classes + k] - (k == int64_t(labels[i]) ? 1.0 : 0.0)) * upstream / double(c.batch);
    // dlogits = (probs - onehot) * dloss / batch: the probs' 1e-6 error scaled by dloss / batch.
    check_close(what + " dlogits", dlogits.get(), want_grad, 2e-6, n ? upstream / double(c.batch) : 1.0);
  }
}

// Cross-entropy over [outer, classes, inner] with ignored positions, class weights and label smoothing (weighted
// mean), and binary cross-entropy on logits of magnitude 1e4, against float64 references of PyTorch's formulas.
void test_class_and_pointwise_losses(const Backend& b) {
  const int64_t outer = 6, classes = 5, inner = 4, positions = outer * inner;
  for (const float scale : {1.0f, 1e4f}) {
    const std::string what = std::string(b.name) + " class_loss logits*" + format("%g", double(scale));
    const Vec logits = normal_values(positions * classes, 0.0f, scale);
    const Vec weight = {0.5f, 1.0f, 1.5f, 2.0f, 3.0f};
    Vec labels(positions);
    std::uniform_int_distribution<int64_t> pick(0, classes - 1);
    for (int64_t p = 0; p < positions; ++p) labels[p] = p % 5 == 0 ? -100.0f : float(pick(g_rng));
    ClassLossOptions o;
    o.outer = outer, o.classes = classes, o.inner = inner, o.ignore_index = -100, o.label_smoothing = 0.2f;
    Buf din(b, logits), dlabels(b, labels), dweight(b, weight), position_loss = Buf::output(b, positions),
        position_weight = Buf::output(b, positions), reduced = Buf::output(b, 1), total = Buf::output(b, 1),
        saved = Buf::output(b, positions * classes);
    o.class_weight = dweight.p();
    b.class_loss_forward(position_loss.p(), position_weight.p(), reduced.p(), total.p(), saved.p(), din.p(), dlabels.p(), o,
                         LossReduction::kMean);
    Ref want_loss(positions, 0.0), want_grad(positions * classes, 0.0);
    double loss_sum = 0.0, weight_sum = 0.0;
    std::vector<Ref> log_probs(positions, Ref(classes));
    for (int64_t p = 0; p < positions; ++p) {
      const int64_t n = p / inner, k = p % inner;
      double m = -INFINITY, sum = 0.0;
      for (int64_t c = 0; c < classes; ++c) m = std::max(m, double(logits[(n * classes + c) * inner + k]));
      for (int64_t c = 0; c < classes; ++c) sum += std::exp(double(logits[(n * classes + c) * inner + k]) - m);
      for (int64_t c = 0; c < classes; ++c) log_probs[p][c] = double(logits[(n * classes + c) * inner + k]) - m - std::log(sum);
      if (labels[p] == -100.0f) continue;
      const int64_t y = int64_t(labels[p]);
      double smooth = 0.0;
      for (int64_t c = 0; c < classes; ++c) smooth -= weight[c] * log_probs[p][c];
      want_loss[p] = -(1.0 - 0.2) * weight[y] * log_probs[p][y] + 0.2 / classes * smooth;
      loss_sum += want_loss[p];
      weight_sum += weight[y];
    }
    const double want_mean = loss_sum / weight_sum;
    // float exp/log per class, double sums: 1e-5 relative to the loss (floor 1); with logits of 1e4 still finite.
    const double error = std::fabs(reduced.get()[0] - want_mean) / std::max(std::fabs(want_mean), 1.0);
    expect(std::isfinite(reduced.get()[0]) && error <= 1e-5, what + format(" mean %.6g, err %.2e (tol 1e-5)", reduced.get()[0], error));
    check_close(what + " position losses", position_loss.get(), want_loss, 1e-5, std::max(1.0, double(scale)));
    record(what + " mean", reduced.get(), 1e-5);

    const float upstream = 0.7f;
    Buf dloss(b, Vec{upstream}), dinput = Buf::output(b, positions * classes);
    b.class_loss_backward(dinput.p(), saved.p(), dlabels.p(), dloss.p(), 1, total.p(), o);
    double weights_all = 0.0;
    for (float w : weight) weights_all += w;
    for (int64_t p = 0; p < positions; ++p) {
      if (labels[p] == -100.0f) continue;
      const int64_t n = p / inner, k = p % inner, y = int64_t(labels[p]);
      for (int64_t c = 0; c < classes; ++c) {
        const double prob = std::exp(log_probs[p][c]);
        const double g = (1.0 - 0.2) * weight[y] * (prob - (c == y ? 1.0 : 0.0)) + 0.2 / classes * (prob * weights_all - weight[c]);
        want_grad[(n * classes + c) * inner + k] = upstream * g / weight_sum;
      }
    }
    // Gradients: a few float roundings on terms of size up to ~w·upstream/Σw.
    check_close(what + " dlogits", dinput.get(), want_grad, 1e-5, 3.0 * upstream / weight_sum);
    record(what + " dlogits", dinput.get(), 1e-5);
  }
  {
    const std::string what = std::string(b.name) + " pointwise bce_with_logits";
    const Vec x = {1e4f, -1e4f, 80.0f, -80.0f, 0.5f, -2.0f, 1e4f, -1e4f};
    const Vec y = {1.0f, 0.0f, 1.0f, 0.0f, 0.3f, 1.0f, 0.0f, 1.0f};
    const Vec pos_weight = {2.0f, 0.5f};
    Buf dx(b, x), dy(b, y), dpos(b, pos_weight), loss = Buf::output(b, x.size()), reduced = Buf::output(b, 1);
    PointwiseLossOptions o;
    o.kind = PointwiseLoss::kBceWithLogits;
    o.pos_weight = {dpos.p(), 2};
    b.pointwise_loss_forward(loss.p(), reduced.p(), dx.p(), dy.p(), int64_t(x.size()), o, LossReduction::kSum);
    Ref want(x.size()), want_grad(x.size());
    double want_sum = 0.0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double p = pos_weight[i % 2], lw = 1.0 + (p - 1.0) * y[i], xi = x[i];
      const double softplus_neg = std::max(-xi, 0.0) + std::log1p(std::exp(-std::fabs(xi)));
      want[i] = (1.0 - y[i]) * xi + lw * softplus_neg;
      want_sum += want[i];
      want_grad[i] = 0.5 * ((1.0 - y[i]) + lw * (1.0 / (1.0 + std::exp(-xi)) - 1.0));
    }
    check_close(what + " elements", loss.get(), want, 1e-6, 1.0);
    const double error = std::fabs(reduced.get()[0] - want_sum) / std::max(std::fabs(want_sum), 1.0);
    expect(error <= 1e-6, what + format(" sum err %.2e (tol 1e-6)", error));
    Buf dloss(b, Vec{0.5f}), dinput = Buf::output(b, x.size());
    b.pointwise_loss_backward(dinput.p(), dloss.p(), 1, 1.0f, dx.p(), dy.p(), int64_t(x.size()), o);
    check_close(what + " dinput", dinput.get(), want_grad, 1e-6, 1.0);
    record(what + " elements", loss.get(), 1e-6);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Batch normalization, float64 reference.

struct BatchNormRef {
  Ref y, mean, var, invstd;
};

BatchNormRef batch_norm_reference(const Ref& x, const Vec* gamma, const Vec* beta, const ChannelLayout& l, double eps) {
  BatchNormRef r;
  const int64_t n = l.reduce_size();
  r.mean.assign(l.channels, 0.0);
  r.var.assign(l.channels, 0.0);
  r.invstd.assign(l.channels, 0.0);
  r.y.assign(x.size(), 0.0);
  for (int64_t e = 0; e < l.elements(); ++e) r.mean[channel_of(l, e)] += x[e];
  for (auto& m : r.mean) m = n ? m / n : 0.0;
  for (int64_t e = 0; e < l.elements(); ++e) {
    const double d = x[e] - r.mean[channel_of(l, e)];
    r.var[channel_of(l, e)] += d * d;
  }
  for (int64_t k = 0; k < l.channels; ++k) {
    r.var[k] = n ? r.var[k] / n : 0.0;
    r.invstd[k] = 1.0 / std::sqrt(r.var[k] + eps);
  }
  for (int64_t e = 0; e < l.elements(); ++e) {
    const int64_t k = channel_of(l, e);
    r.y[e] = (x[e] - r.mean[k]) * r.invstd[k] * (gamma ? (*gamma)[k] : 1.0) + (beta ? (*beta)[k] : 0.0);
  }
  return r;
}

struct BatchNormGrads {
  Ref dx, dgamma, dbeta;
};

BatchNormGrads batch_norm_backward_reference(const Ref& dy, const Ref& x, const Vec* gamma, const ChannelLayout& l,
                                             double eps) {
  const BatchNormRef f = batch_norm_reference(x, nullptr, nullptr, l, eps);  // f.y = xhat
  BatchNormGrads g;
  const int64_t n = l.reduce_size();
  g.dx.assign(x.size(), 0.0);
  g.dgamma.assign(l.channels, 0.0);
  g.dbeta.assign(l.channels, 0.0);
  for (int64_t e = 0; e < l.elements(); ++e) {
    g.dbeta[channel_of(l, e)] += dy[e];
    g.dgamma[channel_of(l, e)] += dy[e] * f.y[e];
  }
  for (int64_t e = 0; e < l.elements(); ++e) {
    const int64_t k = channel_of(l, e);
    const double gk = gamma ? (*gamma)[k] : 1.0;
    g.dx[e] = gk * f.invstd[k] * (dy[e] - g.dbeta[k] / n - f.y[e] * g.dgamma[k] / n);
  }
  return g;
}

// Central differences of L = sum w * y over x, gamma, beta, evaluated in float64 (h = 1e-4: truncation ~h^2,
// rounding ~1e-16 / h, both far below the float32 kernels' error).
BatchNormGrads batch_norm_finite_differences(const Ref& w, const Ref& x, const Vec& gamma, const Vec& beta,
                                             const ChannelLayout& l, double eps) {
  auto loss = [&](const Ref& xs, const Vec& gs, const Vec& bs) {
    const BatchNormRef f = batch_norm_reference(xs, &gs, &bs, l, eps);
    double total = 0.0;
    for (size_t e = 0; e < xs.size(); ++e) total += w[e] * f.y[e];
    return total;
  };
  const double h = 1e-4;
  BatchNormGrads g;
  for (size_t e = 0; e < x.size(); ++e) {
    Ref plus = x, minus = x;
    plus[e] += h;
    minus[e] -= h;
    g.dx.push_back((loss(plus, gamma, beta) - loss(minus, gamma, beta)) / (2 * h));
  }
  for (int64_t k = 0; k < l.channels; ++k) {
    // gamma and beta are float vectors: step them by a float-representable amount and divide by the real step.
    const float hf = 1.0f / 1024.0f;
    Vec gp = gamma, gm = gamma, bp = beta, bm = beta;
    gp[k] += hf;
    gm[k] -= hf;
    bp[k] += hf;
    bm[k] -= hf;
    g.dgamma.push_back((loss(x, gp, beta) - loss(x, gm, beta)) / (double(gp[k]) - gm[k]));
    g.dbeta.push_back((loss(x, gamma, bp) - loss(x, gamma, bm)) / (double(bp[k]) - bm[k]));
  }
  return g;
}

Vec per_channel_offset_values(const ChannelLayout& l) {
  // x ~ N(2 + k % 8, 1.5): a mean well away from 0 checks the centring; the spread differs from 1.
  Vec x = normal_values(l.elements(), 0.0f, 1.5f);
  for (int64_t e = 0; e < l.elements(); ++e) x[e] += 2.0f + float(channel_of(l, e) % 8);
  return x;
}

void test_batch_norm(const Backend& b) {
  const float eps = 1e-5f;
  for (const ChannelLayout& l : kLayouts) {
    if (l.elements() > (int64_t{1} << 20)) continue;
    for (const bool affine : {true, false}) {
      if (!affine && l.elements() > 5000) continue;
      const std::string what = std::string(b.name) + " batch_norm " + describe(l) + (affine ? "" : " no affine");
      const int64_t n = l.elements(), c = l.channels;
      const Vec x = per_channel_offset_values(l), dy = normal_values(n);
      const Vec gamma = normal_values(c, 1.0f, 0.2f), beta = normal_values(c);
      Buf dx(b, x), dgamma_in(b, gamma), dbeta_in(b, beta), ddy(b, dy);
      Buf y = Buf::output(b, n), mean = Buf::output(b, c), var = Buf::output(b, c), invstd = Buf::output(b, c);
      b.batch_norm_forward(y.p(), mean.p(), var.p(), invstd.p(), dx.p(), affine ? dgamma_in.p() : nullptr,
                           affine ? dbeta_in.p() : nullptr, l, eps);
      const BatchNormRef want = batch_norm_reference(widen(x), affine ? &gamma : nullptr, affine ? &beta : nullptr, l, eps);
      // Statistics: float inputs summed with float accumulators over short runs; 2e-6 relative (floor 1 for the
      // mean, whose scale is the data's spread) and 1e-5 for the variance, a second pass around the rounded mean.
      check_close(what + " mean", mean.get(), want.mean, 2e-6, 1.0);
      check_close(what + " var (biased)", var.get(), want.var, 1e-5, 1e-30);
      check_close(what + " invstd", invstd.get(), want.invstd, 1e-5, 1e-30);
      // y: each element a few float operations from the statistics above: 1e-5 of the largest |y|.
      check_scaled(what + " y", y.get(), want.y, 1e-5);
      record(what + " y", y.get(), 1e-5);
      record(what + " var", var.get(), 1e-5);

      Buf dxo = Buf::output(b, n), dgamma = Buf::output(b, c), dbeta = Buf::output(b, c);
      b.batch_norm_backward(dxo.p(), dgamma.p(), dbeta.p(), ddy.p(), dx.p(), mean.p(), invstd.p(),
                            affine ? dgamma_in.p() : nullptr, l);
      const BatchNormGrads grads = batch_norm_backward_reference(widen(dy), widen(x), affine ? &gamma : nullptr, l, eps);
      if (l.reduce_size() > 1) {
        // dx cancels three terms of size |gamma| * invstd * |dy|: 1e-5 of the largest term.
        check_scaled(what + " dx", dxo.get(), grads.dx, 2e-5);
        record(what + " dx", dxo.get(), 2e-5);
      }
      // Sums over the channel: 1e-5 of sum |dy| (and of sum |dy * xhat| for dgamma).
      Ref abs_dy(c, 0.0), abs_dyx(c, 0.0);
      for (int64_t e = 0; e < n; ++e) {
        const int64_t k = channel_of(l, e);
        abs_dy[k] += std::fabs(dy[e]);
        abs_dyx[k] += std::fabs(dy[e] * (x[e] - want.mean[k]) * want.invstd[k]);
      }
      const double eb = max_error(dbeta.get(), grads.dbeta, 1e-30, &abs_dy);
      const double eg = max_error(dgamma.get(), grads.dgamma, 1e-30, &abs_dyx);
      expect(eb <= 1e-5 && eg <= 1e-5, what + format(" dbeta err %.2e, dgamma err %.2e (tol 1e-5 of sum |term|)", eb, eg));

      Buf running_mean(b, normal_values(c)), running_var(b, normal_values(c, 2.0f, 0.3f));
      const Vec rm = running_mean.get(), rv = running_var.get();
      b.batch_norm_inference(y.p(), dx.p(), running_mean.p(), running_var.p(), affine ? dgamma_in.p() : nullptr,
                             affine ? dbeta_in.p() : nullptr, l, eps);
      Ref want_y(n);
      for (int64_t e = 0; e < n; ++e) {
        const int64_t k = channel_of(l, e);
        want_y[e] = (x[e] - double(rm[k])) / std::sqrt(double(rv[k]) + eps) * (affine ? gamma[k] : 1.0) +
                    (affine ? beta[k] : 0.0);
      }
      check_scaled(what + " inference y", y.get(), want_y, 1e-5);
    }
  }

  // Backward against finite differences of the float64 forward (the derivation itself, not only the formula).
  for (const ChannelLayout& l : {ChannelLayout{4, 3, 5}, ChannelLayout{2, 3, 7}, ChannelLayout{16, 2, 1}}) {
    const std::string what = std::string(b.name) + " batch_norm backward vs finite differences " + describe(l);
    const int64_t n = l.elements(), c = l.channels;
    const Vec x = per_channel_offset_values(l), w = normal_values(n);
    const Vec gamma = normal_values(c, 1.0f, 0.2f), beta = normal_values(c);
    Buf dx(b, x), dgamma_in(b, gamma), dbeta_in(b, beta), dw(b, w);
    Buf y = Buf::output(b, n), mean = Buf::output(b, c), var = Buf::output(b, c), invstd = Buf::output(b, c);
    b.batch_norm_forward(y.p(), mean.p(), var.p(), invstd.p(), dx.p(), dgamma_in.p(), dbeta_in.p(), l, eps);
    Buf dxo = Buf::output(b, n), dgamma = Buf::output(b, c), dbeta = Buf::output(b, c);
    b.batch_norm_backward(dxo.p(), dgamma.p(), dbeta.p(), dw.p(), dx.p(), mean.p(), invstd.p(), dgamma_in.p(), l);
    const BatchNormGrads fd = batch_norm_finite_differences(widen(w), widen(x), gamma, beta, l, eps);
    // float32 kernels (~1e-6) against float64 differences (~1e-8): 1e-4 of the largest gradient.
    check_scaled(what + " dx", dxo.get(), fd.dx, 1e-4);
    check_scaled(what + " dgamma", dgamma.get(), fd.dgamma, 1e-4);
    check_scaled(what + " dbeta", dbeta.get(), fd.dbeta, 1e-4);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Mean-only batch normalization (Salimans & Kingma, 2016, §4).

void test_mean_only_batch_norm(const Backend& b) {
  for (const ChannelLayout& l : kLayouts) {
    const std::string what = std::string(b.name) + " mean_only_batch_norm " + describe(l);
    const int64_t n = l.elements(), c = l.channels, count = l.reduce_size();
    const Vec x = per_channel_offset_values(l), bias = normal_values(c), dy = normal_values(n, 0.3f, 1.0f);
    Buf dx(b, x), dbias_in(b, bias), ddy(b, dy), y = Buf::output(b, n), mean = Buf::output(b, c);
    b.mean_only_batch_norm_forward(y.p(), mean.p(), dx.p(), dbias_in.p(), l, true);
    const Ref sums = channel_sums_reference(x, l);
    Ref want_mean(c), want_y(n), scale(n);
    for (int64_t k = 0; k < c; ++k) want_mean[k] = count ? sums[k] / count : 0.0;
    for (int64_t e = 0; e < n; ++e) {
      const int64_t k = channel_of(l, e);
      want_y[e] = x[e] - want_mean[k] + bias[k];
      scale[e] = std::fabs(x[e]) + std::fabs(want_mean[k]) + std::fabs(bias[k]);
    }
    check_close(what + " mean", mean.get(), want_mean, 2e-6, 1.0);
    // y = x - mean + bias: two float roundings of terms as large as |x| + |mean| + |bias|, plus the mean's error.
    double e = max_error(y.get(), want_y, 1e-30, &scale);
    expect(e <= 3e-6, what + format(" y = x - batch mean + bias, err %.2e (tol %.0e of |x|+|mean|+|bias|)", e, 3e-6));
    record(what + " y", y.get(), 1e-5);

    // Evaluation: the given (running) mean is used and left as it is.
    const Vec running = normal_values(c);
    Buf drunning(b, running);
    b.mean_only_batch_norm_forward(y.p(), drunning.p(), dx.p(), dbias_in.p(), l, false);
    Vec want_eval(n);
    for (int64_t i = 0; i < n; ++i) want_eval[i] = x[i] - running[channel_of(l, i)] + bias[channel_of(l, i)];
    check_bitwise(what + " evaluation y = x - running mean + bias", y.get(), want_eval);
    check_bitwise(what + " evaluation leaves the running mean", drunning.get(), running);

    Buf dxo = Buf::output(b, n), dbias = Buf::output(b, c);
    b.mean_only_batch_norm_backward(dxo.p(), dbias.p(), ddy.p(), l);
    const Ref dy_sums = channel_sums_reference(dy, l), dy_abs = channel_abs_sums(dy, l);
    Ref want_dx(n), dx_scale(n);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = channel_of(l, i);
      want_dx[i] = dy[i] - dy_sums[k] / count;
      dx_scale[i] = std::fabs(dy[i]) + dy_abs[k] / count;
    }
    e = max_error(dbias.get(), dy_sums, 1e-30, &dy_abs);
    expect(e <= 1e-6, what + format(" dbias = sum dy, err %.2e (tol %.0e of sum |dy|)", e, 1e-6));
    e = max_error(dxo.get(), want_dx, 1e-30, &dx_scale);
    expect(e <= 1e-6, what + format(" dx = dy - channel mean of dy, err %.2e (tol %.0e)", e, 1e-6));
    // The centred gradient sums to zero over each channel (to the float rounding of its elements).
    const Vec got_dx = dxo.get();
    const Ref centred = channel_sums_reference(got_dx, l);
    double worst = 0.0;
    for (int64_t k = 0; k < c; ++k) worst = std::max(worst, std::fabs(centred[k]) / std::max(dy_abs[k], 1e-30));
    expect(worst <= 1e-6, what + format(" channel sums of dx vanish: %.2e of sum |dy| (tol %.0e)", worst, 1e-6));
    record(what + " dx", got_dx, 1e-5);
  }

  // The paper's backward of mean-only batch norm: it equals the centred gradient, checked against finite differences of
  // L = sum w * y(x), y = x - mean(x) + bias, in float64.
  const ChannelLayout l{6, 3, 4};
  const int64_t n = l.elements();
  const Vec x = per_channel_offset_values(l), w = normal_values(n), bias = normal_values(l.channels);
  Buf dw(b, w), dxo = Buf::output(b, n), dbias = Buf::output(b, l.channels);
  b.mean_only_batch_norm_backward(dxo.p(), dbias.p(), dw.p(), l);
  auto loss = [&](const Ref& xs) {
    Ref mean(l.channels, 0.0);
    for (int64_t e = 0; e < n; ++e) mean[channel_of(l, e)] += xs[e] / l.reduce_size();
    double total = 0.0;
    for (int64_t e = 0; e < n; ++e) total += w[e] * (xs[e] - mean[channel_of(l, e)] + bias[channel_of(l, e)]);
    return total;
  };
  Ref fd(n);
  const Ref xd = widen(x);
  for (int64_t e = 0; e < n; ++e) {
    Ref plus = xd, minus = xd;
    plus[e] += 1e-3;
    minus[e] -= 1e-3;
    fd[e] = (loss(plus) - loss(minus)) / 2e-3;  // L is linear in x: central differences are exact up to rounding
  }
  check_scaled(std::string(b.name) + " mean_only_batch_norm backward vs finite differences " + describe(l), dxo.get(),
               fd, 1e-5);
}

// ---------------------------------------------------------------------------------------------------------------
// Optimizers: a few steps against float64 arithmetic of the same update rules.

enum class Optimizer { kSgd, kAdam, kAdamax };

struct OptimCase {
  std::string name;
  Optimizer kind;
  SgdOptions sgd;
  AdamOptions adam;
};

struct OptimState {
  Ref p, s1, s2;
};

void reference_step(OptimState& st, const Vec& grad, const OptimCase& c, int64_t step) {
  for (size_t i = 0; i < st.p.size(); ++i) {
    if (c.kind == Optimizer::kSgd) {
      const SgdOptions& o = c.sgd;
      const double g = grad[i] + double(o.weight_decay) * st.p[i];
      double d = g;
      if (o.momentum != 0.0f) {
        st.s1[i] = step == 1 ? g : double(o.momentum) * st.s1[i] + (1.0 - double(o.dampening)) * g;
        d = o.nesterov ? g + double(o.momentum) * st.s1[i] : st.s1[i];
      }
      st.p[i] -= double(o.lr) * d;
    } else {
      const AdamOptions& o = c.adam;
      const double g = grad[i] + double(o.weight_decay) * st.p[i];
      const double b1 = o.beta1, b2 = o.beta2;
      st.s1[i] = b1 * st.s1[i] + (1.0 - b1) * g;
      const double c1 = 1.0 - std::pow(b1, double(step));
      if (c.kind == Optimizer::kAdam) {
        st.s2[i] = b2 * st.s2[i] + (1.0 - b2) * g * g;
        const double c2 = 1.0 - std::pow(b2, double(step));
        st.p[i] -= double(o.lr) / c1 * st.s1[i] / (std::sqrt(st.s2[i] / c2) + double(o.eps));
      } else {
        // PyTorch's Adamax: eps inside the max.
        st.s2[i] = std::max(b2 * st.s2[i], std::fabs(g) + double(o.eps));
        st.p[i] -= double(o.lr) / c1 * st.s1[i] / st.s2[i];
      }
    }
  }
}

void test_optimizers(const Backend& b) {
  std::vector<OptimCase> cases;
  cases.push_back({"sgd", Optimizer::kSgd, {0.1f, 0.0f, 0.0f, 0.0f, false}, {}});
  cases.push_back({"sgd momentum+dampening+weight decay", Optimizer::kSgd, {0.05f, 0.9f, 0.1f, 1e-2f, false}, {}});
  cases.push_back({"sgd nesterov+weight decay", Optimizer::kSgd, {0.05f, 0.9f, 0.0f, 5e-4f, true}, {}});
  cases.push_back({"adam", Optimizer::kAdam, {}, {1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f}});
  cases.push_back({"adam weight decay", Optimizer::kAdam, {}, {3e-3f, 0.8f, 0.99f, 1e-8f, 1e-2f}});
  cases.push_back({"adamax", Optimizer::kAdamax, {}, {2e-3f, 0.9f, 0.999f, 1e-8f, 0.0f}});
  cases.push_back({"adamax weight decay", Optimizer::kAdamax, {}, {2e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f}});
  // A large eps and a fast-decaying u: where eps sits (inside the max or added after it) changes the update by ~lr.
  cases.push_back({"adamax large eps", Optimizer::kAdamax, {}, {5e-2f, 0.9f, 0.5f, 0.5f, 0.0f}});

  struct NormCase {
    bool with_norm;
    ChannelLayout layout;
    const char* route;
  };
  const std::vector<NormCase> norm_cases = {
      {false, {1, 1, 1001}, "no norm"},
      {true, {1, 7, 9}, "fused rows, outer 1"},
      {true, {1, 5, 200}, "fused rows, outer 1, 200 per row"},
      {true, {1, 3, 20000}, "fused long rows, outer 1"},
      {true, {1, 1, 70001}, "fused, dim null"},
      {true, {5, 6, 7}, "second pass, outer > 1"},
      {true, {64, 10, 1}, "second pass, inner 1"},
      {true, {1, 3, 0}, "empty rows"},
      {false, {1, 1, 0}, "count 0"},
  };
  const int steps = 4;
  for (const OptimCase& c : cases) {
    for (const NormCase& nc : norm_cases) {
      const ChannelLayout& l = nc.layout;
      const int64_t count = l.elements();
      const std::string what = std::string(b.name) + " " + c.name + " " + nc.route + " " + describe(l);
      Vec p = normal_values(count);
      // One all-zero channel with zero gradients: it stays zero and its norm is the eps floor.
      const bool zero_channel = nc.with_norm && l.channels > 2;
      auto zero_row = [&](Vec& v) {
        if (!zero_channel) return;
        for (int64_t o = 0; o < l.outer; ++o)
          for (int64_t i = 0; i < l.inner; ++i) v[(o * l.channels + 1) * l.inner + i] = 0.0f;
      };
      zero_row(p);
      const Vec initial_s2 = Vec(count, 0.0f);
      Buf dp(b, p), s1(b, Vec(count, 0.0f)), s2(b, initial_s2), norm = Buf::output(b, l.channels);
      OptimState ref{widen(p), Ref(count, 0.0), Ref(count, 0.0)};
      NormOutput norm_output;
      norm_output.norm = norm.p();
      norm_output.layout = l;
      norm_output.eps = 1e-12f;
      const bool use_velocity = c.kind != Optimizer::kSgd || c.sgd.momentum != 0.0f;
      for (int step = 1; step <= steps; ++step) {
        Vec grad = normal_values(count);
        zero_row(grad);
        Buf dg(b, grad);
        const NormOutput* no = nc.with_norm ? &norm_output : nullptr;
        if (c.kind == Optimizer::kSgd) b.sgd_step(dp.p(), use_velocity ? s1.p() : nullptr, dg.p(), count, c.sgd, step, no);
        else if (c.kind == Optimizer::kAdam) b.adam_step(dp.p(), s1.p(), s2.p(), dg.p(), count, c.adam, step, no);
        else b.adamax_step(dp.p(), s1.p(), s2.p(), dg.p(), count, c.adam, step, no);
        reference_step(ref, grad, c, step);
      }
      // Each step rounds p once (2^-24 |p|) and computes an update of size ~lr with a few ulps of error: after 4
      // steps the error is below 1e-6 of |p| + lr * steps; 4e-6 leaves room, a wrong rule term is >= 1e-3.
      const double lr = c.kind == Optimizer::kSgd ? c.sgd.lr : c.adam.lr;
      Ref scale(count);
      for (int64_t i = 0; i < count; ++i) scale[i] = std::fabs(ref.p[i]) + lr * steps;
      const Vec got = dp.get();
      double e = max_error(got, ref.p, 1e-30, &scale);
      expect(e <= 4e-6, what + format(" param after %g steps, err %.2e (tol 4e-6 of |p| + lr*steps)", double(steps), e));
      record(what + " param", got, 4e-6);
      if (use_velocity) check_scaled(what + " state 1 (velocity / m)", s1.get(), ref.s1, 1e-5);
      if (c.kind != Optimizer::kSgd) check_scaled(what + " state 2 (v / u)", s2.get(), ref.s2, 1e-5);
      if (!nc.with_norm) continue;
      // The norm of the updated parameter the kernel holds, in float64: float accumulation, 1e-5 relative.
      Ref want_norm(l.channels, 0.0);
      for (int64_t e2 = 0; e2 < count; ++e2) want_norm[channel_of(l, e2)] += double(got[e2]) * got[e2];
      for (auto& v : want_norm) v = std::max(std::sqrt(v), 1e-12);
      check_close(what + " norm of the updated parameter", norm.get(), want_norm, 1e-5, 1e-30);
      if (zero_channel) expect(norm.get()[1] == 1e-12f, what + " zero channel's norm is the eps floor");
    }
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

// The IEEE rounding of a finite or infinite float32 to bfloat16, from the definition rather than the bit trick of
// bfloat16.h: the nearer of the two bfloat16 neighbours of |x| (truncated, and one ulp above), ties to the even
// one. Past the largest finite bfloat16 the next value is 2^128: IEEE rounds to infinity from the midpoint up.
uint16_t reference_bfloat16_bits(float x) {
  const uint16_t truncated = static_cast<uint16_t>(bits_of(x) >> 16);
  if (std::isinf(x)) return truncated;
  const uint16_t above = truncated + 1;  // |x| < 2^128: the magnitude bits stay below the sign bit
  const double magnitude = std::fabs(double(x));
  const double low = std::fabs(double(float_of_bits(uint32_t{truncated} << 16)));
  const double high = (above & 0x7fff) == 0x7f80 ? std::ldexp(1.0, 128)
                                                  : std::fabs(double(float_of_bits(uint32_t{above} << 16)));
  // Differences of floats this close are exact in double.
  if (magnitude - low != high - magnitude) return magnitude - low < high - magnitude ? truncated : above;
  return (truncated & 1) ? above : truncated;
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
  // Hand-picked cases (float32 bits -> bfloat16 bits), each checked against the reference too.
  struct Known {
    uint32_t in;
    uint16_t out;
    const char* what;
  };
  const Known known[] = {
      {0x3f800000, 0x3f80, "1"},
      {0x3f808000, 0x3f80, "1 + 2^-8 (a tie) rounds down to even 1"},
      {0x3f818000, 0x3f82, "1 + 3*2^-8 (a tie) rounds up to even 1 + 2^-6"},
      {0x3f808001, 0x3f81, "just above a tie rounds up"},
      {0x3f807fff, 0x3f80, "just below a tie rounds down"},
      {0xbf818000, 0xbf82, "-(1 + 3*2^-8) rounds to even, away from 0"},
      {0x00000000, 0x0000, "+0"},
      {0x80000000, 0x8000, "-0 keeps its sign"},
      {0x7f800000, 0x7f80, "+inf"},
      {0xff800000, 0xff80, "-inf"},
      {0x7f7f0000, 0x7f7f, "the largest finite bfloat16"},
      {0x7f7f7fff, 0x7f7f, "just below the overflow threshold stays finite"},
      {0x7f7f8000, 0x7f80, "the overflow threshold (a tie, odd below) overflows to inf"},
      {0x7f7fffff, 0x7f80, "FLT_MAX overflows to inf"},
      {0xff7fffff, 0xff80, "-FLT_MAX overflows to -inf"},
      {0x00000001, 0x0000, "the smallest subnormal rounds to +0"},
      {0x80000001, 0x8000, "the smallest negative subnormal rounds to -0"},
      {0x00010000, 0x0001, "the smallest bfloat16 subnormal is exact"},
      {0x00008000, 0x0000, "half the smallest bfloat16 subnormal (a tie) rounds to even 0"},
      {0x00018000, 0x0002, "a subnormal tie with odd below rounds up"},
      {0x007fffff, 0x0080, "the largest subnormal rounds up to the smallest normal"},
      {0x80418000, 0x8042, "a negative subnormal tie rounds to even"},
  };
  // NaNs whose high half alone looks like inf (0x7f800001, 0x7f808000) or would carry into the sign (0x7fffffff)
  // under a plain add-and-truncate.
  const uint32_t nans[] = {0x7fc00000, 0x7f800001, 0x7f808000, 0x7fffffff, 0xffc00000, 0xff800001, 0xff8fffff};
  {
    const size_t count = std::size(known) + std::size(nans);
    Vec input;
    for (const Known& k : known) input.push_back(float_of_bits(k.in));
    for (const uint32_t n : nans) input.push_back(float_of_bits(n));
    Buf in(b, input);
    Buffer<bfloat16> out = Buffer<bfloat16>::output(b, count);
    b.convert_to_bfloat16(out.p(), in.p(), count);
    const Bf16Vec got = out.get();
    for (size_t i = 0; i < std::size(known); ++i) {
      const Known& k = known[i];
      expect(got[i].bits == k.out && reference_bfloat16_bits(float_of_bits(k.in)) == k.out,
             tag + "to bfloat16 " + hex(k.in, 8) + " -> " + hex(got[i].bits, 4) + " (want " + hex(k.out, 4) +
                 "): " + k.what);
    }
    for (size_t i = 0; i < std::size(nans); ++i) {
      const uint16_t bits = got[std::size(known) + i].bits;
      expect(is_bfloat16_nan(bits) && (bits >> 15) == (nans[i] >> 31) && bits != unwritten<bfloat16>().bits,
             tag + "to bfloat16 NaN " + hex(nans[i], 8) + " -> " + hex(bits, 4) + " stays NaN with its sign");
    }
  }
  // Random inputs against the reference: uniform bit patterns (every exponent, subnormals included; NaNs
  // skipped), normal values, and values on a tie or one bit off one. Aligned and not; recorded for the
  // CPU-vs-CUDA comparison.
  const int64_t n = (int64_t{1} << 20) + 3;
  Vec input(n);
  std::uniform_int_distribution<uint32_t> any_bits;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits = any_bits(g_rng);
    if (i % 3 == 1) bits = bits_of(normal(g_rng));
    if (i % 3 == 2) bits = (bits & 0xffff0000u) | (0x8000u + (bits & 3) - 1);  // 0x7fff, 0x8000, 0x8001, 0x8002
    if ((bits & 0x7fffffffu) > 0x7f800000u) bits &= ~0x00800000u;  // a NaN pattern becomes a finite one
    input[i] = float_of_bits(bits);
  }
  for (const size_t offset : {size_t{0}, size_t{1}}) {
    const std::string what = tag + (offset ? "unaligned " : "");
    Buf in(b, input, offset);
    Buffer<bfloat16> out = Buffer<bfloat16>::output(b, n, offset);
    b.convert_to_bfloat16(out.p(), in.p(), n);
    const Bf16Vec got = out.get();
    int64_t wrong = 0, first_wrong = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (got[i].bits == reference_bfloat16_bits(input[i])) continue;
      if (wrong++ == 0) first_wrong = i;
    }
    expect(wrong == 0, what + "to bfloat16, " + std::to_string(n) + " random values vs the IEEE reference: " +
                           std::to_string(wrong) + " differ" +
                           (wrong ? " (first " + hex(bits_of(input[first_wrong]), 8) + " -> " +
                                        hex(got[first_wrong].bits, 4) + ")"
                                  : std::string()));
    record(what + "to bfloat16 random values", widened_bits(got), 0.0);
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
      check_scaled(what, cuda_result.values, widen(found->second.values), cuda_result.tol);
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
