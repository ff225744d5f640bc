// The GEMM, conv2d and pooling cases of the native test runner (backend_ops_test.cc, harness.h):
//  - GEMM on every CPU path (OpenBLAS when it can be loaded at run time, the blocked kernel with each micro-kernel
//    this CPU runs) and on CUDA when a GPU is usable, against the float64 values of test/reference/gemm.ts (every
//    element of small outputs, a sample of large ones): many shapes, all four transpose combinations, every
//    epilogue field alone and all together, beta accumulation; CPU results must be bitwise
//    identical with 1, 2, 3, 4 and 7 threads (more threads than this test machine's cores), CUDA results run to run.
//    How OpenBLAS is found (WEIGHTNORM_OPENBLAS=path|0, a path that does not load, a library that is not OpenBLAS)
//    is checked in child processes of this binary (--describe-gemm), and the automatic choice between the two paths
//    (cpu/gemm.h) in this one. The same checks for the bfloat16 overloads (CPU and
//    CUDA) and for CUDA's TF32 tensor-core path, each with its own error bound (GemmTolerance), plus k = 0, k = 3,
//    misaligned pointers and split-k shapes. On an sm_90 GPU the same checks for the wgmma kernels (forced), that
//    the shapes they do not take fall back to mma.sync, and that their self-check passed.
//  - conv2d forward and backward against the direct float64 convolution of test/reference/conv.ts, plus a
//    finite-difference spot check, and (CPU) the same bits with 1, 2, 3, 4 and 7 threads on each GEMM path.
//  - max pooling (overlapping windows, ties, NaNs) and global average pooling against test/reference/nn.ts.
//    The conv and pooling cases, their inputs' seeds and expected values are fixtures (test/fixtures/native_reference/
//    conv2d.bin, max_pool2d.bin, global_avg_pool.bin; node scripts/make_native_reference.mjs writes them): no copy of
//    those references lives here. Nor of the GEMM's: its problems (every shape any backend checks, float32 and
//    bfloat16) and their float64 results with each epilogue are gemm.bin, from test/reference/gemm.ts.
// Groups: gemm/cpu (with conv and pooling on the CPU) and gemm/cuda (with conv and pooling on CUDA).
// `weightnorm_backend_ops_test --perf [sizes]` instead prints GEMM GFLOP/s (1024^3 and 4096^3 by default) for each
// backend (on CUDA: SIMT, TF32 and bfloat16 tensor cores).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "../../cpu/conv.h"
#include "../../cpu/gemm.h"
#include "../../cpu/weightnorm.h"
#include "harness.h"
#include "op_fixture.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../../cuda/conv.cuh"
#include "../../cuda/gemm.cuh"
#include "../../cuda/runtime.cuh"
#endif

namespace cpu = weightnorm::cpu;
using weightnorm::Conv2dGeometry;
using weightnorm::GemmEpilogue;
using weightnorm::GemmEpilogueBf16;
using weightnorm::GemmShape;
using weightnorm::native_test::expect;
using weightnorm::native_test::format;
using weightnorm::native_test::OpCase;
using weightnorm::native_test::read_op_fixture;
using weightnorm::native_test::StoredElement;
using weightnorm::native_test::StoredOutput;

namespace {

std::mt19937 g_random(12345);

std::vector<float> random_vector(size_t count, float low = -1.0f, float high = 1.0f) {
  std::uniform_real_distribution<float> uniform(low, high);
  std::vector<float> v(count);
  for (float& x : v) x = uniform(g_random);
  return v;
}

// Float32 rounding: each product and each of the `terms` additions of a float32 sum can be off by one unit
// roundoff u = 2^-24 of the running magnitude, so |got - exact| <= terms * u * sum|term| (the classical bound,
// reached only by adversarial data). `extra` adds ulps for the epilogue's few operations.
constexpr double kUnitRoundoff = 1.0 / (1 << 24);
bool within_bound(double got, double want, double magnitude, int64_t terms, int extra = 8) {
  const double bound = double(terms + extra) * kUnitRoundoff * magnitude + 1e-30;
  return std::fabs(got - want) <= bound;  // false for NaN
}

// The float32 rounding bound of a sum of `terms` terms (within_bound's), as a normalized error: <= 1 passes.
struct ErrorReport : weightnorm::native_test::NormalizedError {
  void add_sum(double got, double want, double magnitude, int64_t terms, int extra = 8) {
    add(got, want, double(terms + extra) * kUnitRoundoff * magnitude + 1e-30);
  }
};

// How far a GEMM result may land from the float64 reference, as multiples of the element's magnitude (the sum of
// |terms| of the exact result, epilogue terms included):
//   float32 (SIMT, CPU): each of the terms + 8 float32 operations rounds to nearest, u = 2^-24 each.
//   TF32: cvt.rna rounds each operand to a 10-bit significand (relative error <= 2^-11), so a product is off by
//     at most 2^-10 + 2^-22 < 2^-9 of |a b|; the tensor cores' float32 adders may truncate instead of rounding,
//     so 2u per operation.
//   bfloat16: the inputs are bfloat16 values, products are exact in float32, sums as TF32's (2u); out and raw_out
//     are rounded once to an 8-bit significand: at most 2^-8 of |out|, and |out| <= magnitude (plus the tiny
//     float32 error).
struct GemmTolerance {
  double roundoff_per_operation;
  double operand_rounding;
  double output_rounding;
  double bound(double magnitude, int64_t terms, int extra = 8) const {
    return (double(terms + extra) * roundoff_per_operation + operand_rounding + output_rounding) * magnitude + 1e-30;
  }
};
constexpr GemmTolerance kFloat32Tolerance{kUnitRoundoff, 0.0, 0.0};
constexpr GemmTolerance kTf32Tolerance{2 * kUnitRoundoff, 1.0 / 512, 0.0};
constexpr GemmTolerance kBfloat16Tolerance{2 * kUnitRoundoff, 0.0, 1.0 / 256};

// ---------------------------------------------------------------------------------------------------------------
// GEMM


// The epilogue's inputs on the host; `fields` says which are passed.
enum Field : unsigned {
  kRowScale = 1, kColumnScale = 2, kRowBias = 4, kColumnBias = 8, kSubtract = 16, kSubtractNoCoefficient = 32,
  kBeta = 64,
};
struct EpilogueCase {
  const char* name;
  unsigned fields;
  float beta;
};
const EpilogueCase kEpilogueCases[] = {
    {"plain", 0, 0.0f},
    {"row_scale", kRowScale, 0.0f},
    {"column_scale", kColumnScale, 0.0f},
    {"row_bias", kRowBias, 0.0f},
    {"column_bias", kColumnBias, 0.0f},
    {"subtract", kSubtract, 0.0f},
    {"subtract(coef=1)", kSubtractNoCoefficient, 0.0f},
    {"beta=1", kBeta, 1.0f},
    {"all,beta=0.5", kRowScale | kColumnScale | kRowBias | kColumnBias | kSubtract | kBeta, 0.5f},
    {"scales,beta=1", kRowScale | kColumnScale | kBeta, 1.0f},
    // The weight-normalized Linear's two (the CPU finishes them in one pass of their own): its forward and its
    // v gradient.
    {"wn forward", kColumnScale | kColumnBias, 0.0f},
    {"wn v gradient", kRowScale | kSubtract, 0.0f},
};

struct GemmProblem {
  GemmShape shape;  // m, n, k and the transposes
  std::vector<float> a, b;  // as the layout stores them: op(a) = A [m, k], op(b) = B [k, n] of the fixture
  std::vector<float> row_scale, column_scale, row_bias, column_bias, subtract_coefficient, subtract_matrix, out0;
  const OpCase* fixture;  // outputs[e]: epilogue e of kEpilogueCases in float64, with each element's sum of |terms|
};

// The problems and their float64 results: test/fixtures/native_reference/gemm.bin, written from test/reference/gemm.ts
// (nativeGemmFixture in test/reference/native-kernel-fixtures.ts lists the shapes, float32 and bfloat16).
const std::vector<OpCase>& gemm_fixture() {
  static const std::vector<OpCase> cases = read_op_fixture("gemm.bin");
  return cases;
}

// The fixture's problem of shape s (bfloat16_inputs: its bfloat16 twin, whose A, B, subtract_matrix and out0 hold
// bfloat16 values, as what a bfloat16 GEMM receives), laid out as the transposes say. The four layouts of a shape
// share one problem: the reference is the same, only where the kernel reads it from changes.
GemmProblem make_problem(GemmShape s, bool ta, bool tb, bool bfloat16_inputs = false) {
  for (const OpCase& c : gemm_fixture()) {
    const std::vector<int64_t>& q = c.parameters;
    if (q[0] != s.m || q[1] != s.n || q[2] != s.k || (q[3] != 0) != bfloat16_inputs) continue;
    bool same_epilogues = q[4] == int64_t(std::size(kEpilogueCases));
    for (size_t e = 0; same_epilogues && e < std::size(kEpilogueCases); ++e)
      same_epilogues = q[5 + 2 * e] == kEpilogueCases[e].fields &&
                       weightnorm::native_test::float_parameter(q[6 + 2 * e]) == kEpilogueCases[e].beta;
    if (!same_epilogues) throw std::runtime_error("gemm.bin: its epilogues differ from kEpilogueCases (regenerate it)");
    GemmProblem p;
    p.shape = s;
    p.shape.transpose_a = ta;
    p.shape.transpose_b = tb;
    p.fixture = &c;
    auto input = [&](size_t i, bool rounded) {
      std::vector<float> v = c.inputs[i].values;
      if (rounded && bfloat16_inputs)
        for (float& x : v) x = weightnorm::bfloat16_to_float(weightnorm::float_to_bfloat16(x));
      return v;
    };
    auto around_one = [](std::vector<float> v) {  // 1 + v/4, as the fixture's writer derives the scales
      for (float& x : v) x = 1.0f + 0.25f * x;
      return v;
    };
    const std::vector<float> A = input(0, true), B = input(1, true);
    p.a = A;
    p.b = B;
    if (ta)
      for (int64_t i = 0; i < s.m; ++i)
        for (int64_t r = 0; r < s.k; ++r) p.a[r * s.m + i] = A[i * s.k + r];
    if (tb)
      for (int64_t r = 0; r < s.k; ++r)
        for (int64_t j = 0; j < s.n; ++j) p.b[j * s.k + r] = B[r * s.n + j];
    p.row_scale = around_one(input(2, false));
    p.column_scale = around_one(input(3, false));
    p.row_bias = input(4, false);
    p.column_bias = input(5, false);
    p.subtract_coefficient = input(6, false);
    p.subtract_matrix = input(7, true);
    p.out0 = input(8, true);
    return p;
  }
  throw std::runtime_error(format("gemm.bin has no %s problem %ldx%ldx%ld (add its shape to nativeGemmFixture)",
                                  bfloat16_inputs ? "bfloat16" : "float32", long(s.m), long(s.n), long(s.k)));
}

// A GEMM output against epilogue e's stored elements, each within the backend's bound for its magnitude.
ErrorReport compare_epilogue(const std::vector<float>& got, const GemmProblem& p, size_t e, const GemmTolerance& t) {
  ErrorReport report;
  const StoredOutput& want = p.fixture->outputs[e];
  if (int64_t(got.size()) != want.count) {
    report.add(NAN, 0.0, 1.0);
    return report;
  }
  for (const StoredElement& x : want.elements)
    report.add(got[size_t(x.index)], x.want, t.bound(x.magnitude, p.shape.k));
  return report;
}

// Runs one GEMM on some backend: pointers are host pointers; the backend moves them where it needs them.
using GemmFn = std::function<void(float* out, const float* a, const float* b, const GemmProblem& p,
                                  const GemmEpilogue& epilogue)>;
struct GemmBackend {
  std::string name;
  GemmFn run;
  bool check_thread_independence;  // CPU: same bits with 1, 2, 3, 4 and 7 threads
  GemmTolerance tolerance;
  bool bfloat16_inputs;  // a bfloat16 GEMM: the problem's inputs are bfloat16 values
  // The epilogue is exactly gemm.h's formula on the rounded product, one rounding per step, in its order (the
  // blocked kernel applies it in registers or through a tile buffer: either must give these bits).
  bool exact_epilogue = false;
};

GemmEpilogue host_epilogue(const GemmProblem& p, const EpilogueCase& e) {
  GemmEpilogue ep;
  if (e.fields & kRowScale) ep.row_scale = p.row_scale.data();
  if (e.fields & kColumnScale) ep.column_scale = p.column_scale.data();
  if (e.fields & kRowBias) ep.row_bias = p.row_bias.data();
  if (e.fields & kColumnBias) ep.column_bias = p.column_bias.data();
  if (e.fields & kSubtract) ep.subtract_coefficient = p.subtract_coefficient.data();
  if (e.fields & (kSubtract | kSubtractNoCoefficient)) ep.subtract_matrix = p.subtract_matrix.data();
  ep.beta = e.beta;
  return ep;
}

std::vector<float> run_gemm(const GemmBackend& backend, const GemmProblem& p, const EpilogueCase& e) {
  // Without beta the output starts as NaN: gemm must not read it.
  std::vector<float> out = (e.fields & kBeta) ? p.out0 : std::vector<float>(p.out0.size(), NAN);
  backend.run(out.data(), p.a.data(), p.b.data(), p, host_epilogue(p, e));
  return out;
}

void check_gemm_backend(const GemmBackend& backend, const std::vector<GemmShape>& shapes) {
  for (const GemmShape& s : shapes) {
    for (int t = 0; t < 4; ++t) {
      const GemmProblem p = make_problem(s, t & 1, t & 2, backend.bfloat16_inputs);
      for (size_t index = 0; index < std::size(kEpilogueCases); ++index) {
        const EpilogueCase& e = kEpilogueCases[index];
        const ErrorReport report = compare_epilogue(run_gemm(backend, p, e), p, index, backend.tolerance);
        expect(report.ok(), format("gemm %-16s %4ldx%4ldx%4ld %c%c %-16s worst %.3f of bound", backend.name.c_str(),
                                   long(s.m), long(s.n), long(s.k), p.shape.transpose_a ? 'T' : 'N',
                                   p.shape.transpose_b ? 'T' : 'N', e.name, report.worst));
      }
      if (backend.exact_epilogue) {
        const std::vector<float> product = run_gemm(backend, p, kEpilogueCases[0]);
        for (const EpilogueCase& e : kEpilogueCases) {
          const GemmEpilogue ep = host_epilogue(p, e);
          const int64_t m = p.shape.m, n = p.shape.n;
          std::vector<float> expected(product.size());
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              // volatile: each step rounded to float on its own, never contracted into an FMA.
              volatile float x = product[i * n + j];
              if (ep.row_scale) x = x * ep.row_scale[i];
              if (ep.column_scale) x = x * ep.column_scale[j];
              if (ep.row_bias) x = x + ep.row_bias[i];
              if (ep.column_bias) x = x + ep.column_bias[j];
              if (ep.subtract_matrix) {
                volatile float projection = (ep.subtract_coefficient ? ep.subtract_coefficient[i] : 1.0f) *
                                            ep.subtract_matrix[i * n + j];
                x = x - projection;
              }
              if (ep.beta != 0.0f) {
                volatile float old = ep.beta * p.out0[i * n + j];
                x = x + old;
              }
              expected[i * n + j] = x;
            }
          const std::vector<float> got = run_gemm(backend, p, e);
          expect(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0,
                 format("gemm %-16s %4ldx%4ldx%4ld %c%c %-16s the epilogue's formula on the product, bit for bit",
                        backend.name.c_str(), long(s.m), long(s.n), long(s.k), p.shape.transpose_a ? 'T' : 'N',
                        p.shape.transpose_b ? 'T' : 'N', e.name));
        }
      }
      {
        // raw_out: the plain product is stored alongside the full epilogue's output.
        std::vector<float> raw(p.out0.size(), NAN), out = p.out0;
        GemmEpilogue ep = host_epilogue(p, kEpilogueCases[8]);
        ep.raw_out = raw.data();
        backend.run(out.data(), p.a.data(), p.b.data(), p, ep);
        const ErrorReport report = compare_epilogue(raw, p, 0, backend.tolerance);
        expect(report.ok(), format("gemm %-16s %4ldx%4ldx%4ld %c%c raw_out          worst %.3f of bound",
                                   backend.name.c_str(), long(s.m), long(s.n), long(s.k), p.shape.transpose_a ? 'T' : 'N',
                                   p.shape.transpose_b ? 'T' : 'N', report.worst));
      }
      const EpilogueCase& e = kEpilogueCases[8];
      const std::vector<float> all = run_gemm(backend, p, e);
      expect(all == run_gemm(backend, p, e),
             format("gemm %-16s %4ldx%4ldx%4ld %c%c same bits run to run", backend.name.c_str(), long(s.m),
                    long(s.n), long(s.k), p.shape.transpose_a ? 'T' : 'N', p.shape.transpose_b ? 'T' : 'N'));
      if (backend.check_thread_independence) {
        // Every epilogue shape (plain, in place after sgemm, through a tile buffer) and raw_out, with 1, 2, 3
        // threads: the same bits as with the default count.
        for (const EpilogueCase& with : {kEpilogueCases[0], kEpilogueCases[4], kEpilogueCases[7], e}) {
          std::vector<float> raw_default(p.out0.size()), raw(p.out0.size());
          auto run_with_raw = [&](std::vector<float>& raw_out) {
            std::vector<float> out = (with.fields & kBeta) ? p.out0 : std::vector<float>(p.out0.size(), NAN);
            GemmEpilogue ep = host_epilogue(p, with);
            ep.raw_out = raw_out.data();
            backend.run(out.data(), p.a.data(), p.b.data(), p, ep);
            return out;
          };
          const std::vector<float> plain_default = run_gemm(backend, p, with), raw_default_out = run_with_raw(raw_default);
          // 4 and 7: thread grids of 2 x 2, and of 7 threads where the panels may leave some without a rectangle.
          for (const int threads : {1, 2, 3, 4, 7}) {
            cpu::set_num_threads(threads);
            const std::vector<float> plain = run_gemm(backend, p, with), raw_out = run_with_raw(raw);
            cpu::set_num_threads(0);
            const bool same = std::memcmp(plain.data(), plain_default.data(), plain.size() * sizeof(float)) == 0 &&
                              std::memcmp(raw_out.data(), raw_default_out.data(), raw.size() * sizeof(float)) == 0 &&
                              std::memcmp(raw.data(), raw_default.data(), raw.size() * sizeof(float)) == 0;
            expect(same, format("gemm %-16s %4ldx%4ldx%4ld %c%c %-16s same bits with %d thread(s) as with %d",
                                backend.name.c_str(), long(s.m), long(s.n), long(s.k), p.shape.transpose_a ? 'T' : 'N',
                                p.shape.transpose_b ? 'T' : 'N', with.name, threads, cpu::num_threads()));
          }
        }
      }
    }
  }
}

GemmFn cpu_gemm() {
  return [](float* out, const float* a, const float* b, const GemmProblem& p, const GemmEpilogue& ep) {
    cpu::gemm(out, a, b, p.shape, ep);
  };
}

// bfloat16 copies of float vectors (exact for the bfloat16 values of a bfloat16 problem; NaN stays NaN) and back.
using weightnorm::bfloat16;
std::vector<bfloat16> to_bfloat16(const float* x, int64_t count) {
  std::vector<bfloat16> v(count);
  for (int64_t i = 0; i < count; ++i) v[i] = weightnorm::float_to_bfloat16(x[i]);
  return v;
}
void widen(float* out, const std::vector<bfloat16>& x) {
  for (size_t i = 0; i < x.size(); ++i) out[i] = weightnorm::bfloat16_to_float(x[i]);
}
constexpr bfloat16 kBfloat16NaN{0x7fc0};

// The float32 vectors and beta of a float32 epilogue, for a bfloat16 GEMM (its matrices are set by the caller).
GemmEpilogueBf16 bfloat16_epilogue_vectors(const GemmEpilogue& ep) {
  GemmEpilogueBf16 e;
  e.row_scale = ep.row_scale;
  e.column_scale = ep.column_scale;
  e.row_bias = ep.row_bias;
  e.column_bias = ep.column_bias;
  e.subtract_coefficient = ep.subtract_coefficient;
  e.beta = ep.beta;
  return e;
}

// The bfloat16 overload behind the float interface of the checks: inputs go in as bfloat16, results come back
// widened (exactly) to float.
GemmFn cpu_gemm_bfloat16() {
  return [](float* out, const float* a, const float* b, const GemmProblem& p, const GemmEpilogue& ep) {
    const int64_t m = p.shape.m, n = p.shape.n, k = p.shape.k;
    const std::vector<bfloat16> a16 = to_bfloat16(a, m * k), b16 = to_bfloat16(b, k * n);
    std::vector<bfloat16> out16 = to_bfloat16(out, m * n), raw16(ep.raw_out ? m * n : 0, kBfloat16NaN);
    const std::vector<bfloat16> subtract16 =
        ep.subtract_matrix ? to_bfloat16(ep.subtract_matrix, m * n) : std::vector<bfloat16>();
    GemmEpilogueBf16 e = bfloat16_epilogue_vectors(ep);
    e.subtract_matrix = ep.subtract_matrix ? subtract16.data() : nullptr;
    e.raw_out = ep.raw_out ? raw16.data() : nullptr;
    cpu::gemm(out16.data(), a16.data(), b16.data(), p.shape, e);
    widen(out, out16);
    if (ep.raw_out) widen(ep.raw_out, raw16);
  };
}

const std::vector<GemmShape> kGemmShapes = {
    {1, 1, 1},      {7, 13, 5},      {33, 65, 17},   {16, 16, 16},  {257, 129, 300}, {130, 600, 520},
    {1000, 3, 7},   {3, 1000, 7},    {5, 7, 2000},   {64, 48, 1},   {1, 100, 37},    {100, 1, 37},
    {128, 128, 8},  {12, 32, 256},   {13, 33, 257},
};
// CPU only: large enough to be cut into many tiles / blocks (which is where the thread count could show): tall
// and skinny both ways, k much larger than the output, ragged edges beyond the largest OpenBLAS tile.
// Then the blocked kernel's edge micro-kernels (1 to 11 rows below its 12-row tile, one of its two 16-float
// vectors, part of a vector), its k cut into parts (k long against the output, with ragged edges), and a CNN
// training step's products (conv 32->64 3x3 on 14x14: forward, dx, dw; conv 1->32 on 28x28: forward, dw; Linear
// 3136->128 forward, the products the automatic choice runs on the blocked kernel here).
const std::vector<GemmShape> kCpuTiledShapes = {
    {1000, 24, 300}, {24, 1000, 300}, {64, 96, 5000}, {300, 257, 129}, {1100, 700, 40},
    {50, 40, 30},    {18, 200, 100},  {11, 17, 600},  {35, 50, 1200},  {64, 196, 288},
    {288, 196, 64},  {32, 9, 784},    {32, 784, 9},   {100, 128, 3136},
};

// ---------------------------------------------------------------------------------------------------------------
// conv2d

std::string describe(const Conv2dGeometry& g) {
  return format("n%ld c%ld %ldx%ld -> oc%ld k%ldx%ld s%ld p%ld", long(g.batch), long(g.in_channels), long(g.in_height),
                long(g.in_width), long(g.out_channels), long(g.kernel_height), long(g.kernel_width), long(g.stride),
                long(g.padding));
}

struct ConvData {
  std::vector<float> x, w, bias, dy;
};

// Terms in each float32 sum (im2col zeros included), for the rounding bound: y and dx sum over a patch / the output
// channels and the kernel positions; dw over every image and output position; dbias is summed in double and
// rounded once.
struct ConvTerms {
  int64_t y, dx, dw, dbias;
};
ConvTerms conv_terms(const Conv2dGeometry& g) {
  return {g.in_channels * g.kernel_height * g.kernel_width + 1, g.out_channels + g.kernel_height * g.kernel_width,
          g.batch * g.out_height() * g.out_width(), 1};
}

struct ConvOutputs {
  std::vector<float> y, dx, dw, dbias;
};

using ConvFn = std::function<ConvOutputs(const Conv2dGeometry& g, const ConvData& d, bool bias)>;

ConvOutputs cpu_conv(const Conv2dGeometry& g, const ConvData& d, bool bias) {
  ConvOutputs o;
  o.y.assign(g.batch * g.out_channels * g.out_height() * g.out_width(), NAN);
  o.dx.assign(d.x.size(), NAN);
  o.dw.assign(d.w.size(), NAN);
  o.dbias.assign(g.out_channels, NAN);
  cpu::conv2d_forward(o.y.data(), d.x.data(), d.w.data(), bias ? d.bias.data() : nullptr, g);
  cpu::conv2d_backward(o.dx.data(), o.dw.data(), o.dbias.data(), d.dy.data(), d.x.data(), d.w.data(), g);
  return o;
}

// The kernel's output against the fixture's stored elements (all of them, or a sample of a large output).
void check_against(const std::string& label, const std::vector<float>& got, const StoredOutput& want, int64_t terms) {
  ErrorReport report;
  const bool sizes = int64_t(got.size()) == want.count;
  for (size_t e = 0; sizes && e < want.elements.size(); ++e) {
    const StoredElement& element = want.elements[e];
    report.add_sum(got[size_t(element.index)], element.want, element.magnitude, terms);
  }
  expect(sizes && report.ok(), format("%s worst %.3f of bound", label.c_str(), report.worst));
}

// The cases and their float64 expected values: test/fixtures/native_reference/conv2d.bin, written from
// test/reference/conv.ts (nativeConv2dFixture in test/reference/native-op-fixtures.ts lists the cases). Parameters
// [batch, in channels, height, width, out channels, kernel height, kernel width, stride, padding, bias]; inputs
// x, w, bias, dy; outputs y, dx, dw, dbias.
const std::vector<OpCase>& conv2d_fixture() {
  static const std::vector<OpCase> cases = read_op_fixture("conv2d.bin");
  return cases;
}

void check_conv_backend(const std::string& name, const ConvFn& conv) {
  for (const OpCase& c : conv2d_fixture()) {
    const std::vector<int64_t>& p = c.parameters;
    Conv2dGeometry g{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]};
    const bool bias = p[9] != 0;
    const ConvData d{c.inputs[0].values, c.inputs[1].values, c.inputs[2].values, c.inputs[3].values};
    const ConvOutputs o = conv(g, d, bias);
    const ConvTerms terms = conv_terms(g);
    const std::string label = "conv2d " + name + " " + describe(g) + (bias ? " bias" : "");
    check_against(label + " y", o.y, c.outputs[0], terms.y);
    check_against(label + " dx", o.dx, c.outputs[1], terms.dx);
    check_against(label + " dw", o.dw, c.outputs[2], terms.dw);
    check_against(label + " dbias", o.dbias, c.outputs[3], terms.dbias);
  }
}

// conv2d forward and backward give the same bits with 1, 2 and 3 threads as with the default count, on whichever
// GEMM path is selected now. One geometry with several im2col groups (dw accumulates across them), one pointwise.
void check_conv_thread_independence(const std::string& name) {
  const Conv2dGeometry geometries[] = {{9, 64, 32, 32, 8, 3, 3, 1, 1}, {4, 48, 20, 20, 40, 1, 1, 1, 0},
                                            {6, 16, 15, 17, 24, 3, 3, 2, 1}};
  for (const Conv2dGeometry& g : geometries) {
    ConvData d{random_vector(g.batch * g.in_channels * g.in_height * g.in_width),
               random_vector(g.out_channels * g.in_channels * g.kernel_height * g.kernel_width),
               random_vector(g.out_channels),
               random_vector(g.batch * g.out_channels * g.out_height() * g.out_width())};
    const ConvOutputs reference = cpu_conv(g, d, true);
    for (const int threads : {1, 2, 3}) {
      cpu::set_num_threads(threads);
      const ConvOutputs o = cpu_conv(g, d, true);
      cpu::set_num_threads(0);
      auto same = [](const std::vector<float>& x, const std::vector<float>& y) {
        return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
      };
      expect(same(o.y, reference.y) && same(o.dx, reference.dx) && same(o.dw, reference.dw) &&
                 same(o.dbias, reference.dbias),
             format("conv2d cpu/%s %s: y, dx, dw, dbias same bits with %d thread(s) as with %d", name.c_str(),
                    describe(g).c_str(), threads, cpu::num_threads()));
    }
  }
}

// Each output alone (the others null) gives the same bits as all together.
void check_conv_null_outputs() {
  const Conv2dGeometry g{3, 4, 9, 8, 5, 3, 3, 2, 1};
  ConvData d{random_vector(g.batch * g.in_channels * g.in_height * g.in_width),
             random_vector(g.out_channels * g.in_channels * 9), random_vector(g.out_channels),
             random_vector(g.batch * g.out_channels * g.out_height() * g.out_width())};
  const ConvOutputs all = cpu_conv(g, d, true);
  std::vector<float> dx(d.x.size()), dw(d.w.size()), dbias(g.out_channels);
  cpu::conv2d_backward(dx.data(), nullptr, nullptr, d.dy.data(), d.x.data(), d.w.data(), g);
  cpu::conv2d_backward(nullptr, dw.data(), nullptr, d.dy.data(), d.x.data(), d.w.data(), g);
  cpu::conv2d_backward(nullptr, nullptr, dbias.data(), d.dy.data(), d.x.data(), d.w.data(), g);
  expect(dx == all.dx && dw == all.dw && dbias == all.dbias, "conv2d cpu backward with null outputs: same results");
}

// cpu/conv.cc's vector kernels (the direct convolution for one input channel per group with stride 1, 2x2 stride-2
// max pooling) are compiled for AVX-512, AVX2 and the x86-64 baseline, and give the same bits on each (no FMA
// contraction, the same operations in the same order): each one this CPU runs, forced, against the automatic
// choice, whose values test/conv-direct.test.ts (convolution) and the pooling fixture cases check against float64.
// Convolution geometries for every block width (16, 8, 4, 1 outputs per row step), channel group (8, 4, 2, 1) and
// tap group (9, 4, 3, 2, 1), plus the weight-norm forms: y with scale and raw product, dv with its epilogue.
// Pooling: rows of 16+, 8+, 4+ and fewer windows, an odd width, ties and NaNs, with and without the fused ReLU.
void check_conv_vector_isas() {
  struct DirectCase {
    int64_t batch, channels, out_channels, groups, height, width, kh, kw, padding, dilation;
  };
  const DirectCase cases[] = {{3, 1, 32, 1, 28, 28, 3, 3, 1, 1}, {2, 1, 5, 1, 13, 11, 3, 3, 1, 1},
                              {1, 1, 13, 1, 9, 17, 5, 5, 2, 2},  {2, 3, 6, 3, 7, 6, 1, 3, 0, 1},
                              {3, 2, 2, 2, 4, 3, 2, 1, 0, 1},    {2, 1, 3, 1, 6, 20, 1, 2, 1, 3}};
  for (const DirectCase& c : cases) {
    weightnorm::ConvGeometry g;
    g.batch = c.batch, g.in_channels = c.channels, g.out_channels = c.out_channels, g.groups = c.groups;
    g.in_height = c.height, g.in_width = c.width, g.kernel_height = c.kh, g.kernel_width = c.kw;
    g.padding_height = g.padding_width = c.padding, g.dilation_height = g.dilation_width = c.dilation;
    g.out_height = weightnorm::natural_out_size(c.height, c.kh, 1, c.padding, c.dilation);
    g.out_width = weightnorm::natural_out_size(c.width, c.kw, 1, c.padding, c.dilation);
    const size_t ys = size_t(g.batch * g.out_channels * g.out_spatial()), ws = size_t(g.out_channels * c.kh * c.kw);
    const std::vector<float> x = random_vector(size_t(g.batch * g.in_channels * g.in_spatial())), w = random_vector(ws);
    const std::vector<float> bias = random_vector(size_t(g.out_channels)), dy = random_vector(ys);
    const std::vector<float> scale = random_vector(size_t(g.out_channels), 0.5f, 2.0f);
    const std::vector<float> coefficient = random_vector(size_t(g.out_channels));
    // y, y scaled, its raw product, dw, dbias, dv.
    auto run = [&]() {
      std::vector<std::vector<float>> out{std::vector<float>(ys), std::vector<float>(ys), std::vector<float>(ys),
                                          std::vector<float>(ws), std::vector<float>(size_t(g.out_channels)),
                                          std::vector<float>(ws)};
      cpu::conv_forward(out[0].data(), x.data(), w.data(), bias.data(), g, {});
      cpu::conv_forward(out[1].data(), x.data(), w.data(), bias.data(), g, {scale.data(), out[2].data()});
      cpu::conv_backward(nullptr, out[3].data(), out[4].data(), dy.data(), x.data(), w.data(), g, {});
      cpu::conv_backward(nullptr, out[5].data(), nullptr, dy.data(), x.data(), w.data(), g,
                         {scale.data(), coefficient.data(), w.data()});
      return out;
    };
    const std::string automatic = cpu::conv_vector_isa();
    const auto reference = run();
    for (const char* isa : {"avx512", "avx2", "sse2"}) {
      if (!cpu::set_conv_vector_isa(isa)) continue;
      const bool forced = cpu::conv_vector_isa() == std::string(isa);
      const auto got = run();
      cpu::set_conv_vector_isa(nullptr);
      bool same = forced;
      for (size_t k = 0; k < got.size(); ++k)
        same = same && std::memcmp(got[k].data(), reference[k].data(), got[k].size() * sizeof(float)) == 0;
      expect(same, format("conv direct kernels %s: y, scaled y, raw product, dw, dbias, dv the same bits as %s "
                          "(n%ld c%ld oc%ld groups %ld %ldx%ld k%ldx%ld p%ld d%ld)",
                          isa, automatic.c_str(), long(c.batch), long(c.channels), long(c.out_channels),
                          long(c.groups), long(c.height), long(c.width), long(c.kh), long(c.kw), long(c.padding),
                          long(c.dilation)));
    }
  }
  struct PoolShape {
    int64_t planes, height, width;
  };
  for (const PoolShape& p : {PoolShape{3, 28, 40}, PoolShape{4, 14, 28}, PoolShape{5, 14, 15}, PoolShape{2, 6, 14},
                             PoolShape{3, 4, 7}, PoolShape{2, 5, 5}}) {
    const int64_t oh = p.height / 2, ow = p.width / 2;
    std::vector<float> x = random_vector(size_t(p.planes * p.height * p.width), -2.0f, 2.0f);
    // Ties (values rounded to a few levels) and NaNs, so the first-maximum and NaN rules are exercised.
    for (size_t e = 0; e < x.size(); ++e) x[e] = e % 13 == 0 ? NAN : std::round(x[e] * 2.0f) / 2.0f;
    const std::vector<float> dy = random_vector(size_t(p.planes * oh * ow));
    auto run = [&](bool relu) {
      std::vector<float> y(dy.size()), dx(x.size());
      cpu::max_pool2d_forward(y.data(), x.data(), p.planes, p.height, p.width, 2, 2, relu);
      cpu::max_pool2d_backward(dx.data(), dy.data(), x.data(), p.planes, p.height, p.width, 2, 2, relu);
      y.insert(y.end(), dx.begin(), dx.end());
      return y;
    };
    for (const bool relu : {false, true}) {
      const std::string automatic = cpu::conv_vector_isa();
      const std::vector<float> reference = run(relu);
      for (const char* isa : {"avx512", "avx2", "sse2"}) {
        if (!cpu::set_conv_vector_isa(isa)) continue;
        const std::vector<float> got = run(relu);
        cpu::set_conv_vector_isa(nullptr);
        expect(std::memcmp(got.data(), reference.data(), got.size() * sizeof(float)) == 0,
               format("max_pool2d 2x2%s %s: y and dx the same bits as %s (%ld planes of %ldx%ld)", relu ? " relu" : "",
                      isa, automatic.c_str(), long(p.planes), long(p.height), long(p.width)));
      }
    }
  }
  expect(!cpu::set_conv_vector_isa("avx1024"), "cpu conv vector kernels: an unknown instruction set is refused");
}

// Finite differences of L = sum(y * r) in float64 around x and w: the conv is linear in each, so central
// differences are exact up to the float32 rounding of y (h = 0.05; the tolerance covers that rounding).
void check_conv_finite_differences() {
  const Conv2dGeometry g{2, 3, 7, 6, 4, 3, 3, 2, 1};
  ConvData d{random_vector(g.batch * g.in_channels * g.in_height * g.in_width),
             random_vector(g.out_channels * g.in_channels * 9), random_vector(g.out_channels),
             random_vector(g.batch * g.out_channels * g.out_height() * g.out_width())};
  std::vector<float> y(d.dy.size()), dx(d.x.size()), dw(d.w.size()), dbias(g.out_channels);
  cpu::conv2d_backward(dx.data(), dw.data(), dbias.data(), d.dy.data(), d.x.data(), d.w.data(), g);
  auto loss = [&](const ConvData& at) {
    cpu::conv2d_forward(y.data(), at.x.data(), at.w.data(), at.bias.data(), g);
    double l = 0.0;
    for (size_t i = 0; i < y.size(); ++i) l += double(y[i]) * d.dy[i];
    return l;
  };
  const float h = 0.05f;
  double worst = 0.0;
  std::uniform_int_distribution<size_t> pick_x(0, d.x.size() - 1), pick_w(0, d.w.size() - 1);
  for (int trial = 0; trial < 24; ++trial) {
    const int which = trial % 3;  // x, w, bias
    const size_t index = which == 0 ? pick_x(g_random) : which == 1 ? pick_w(g_random) : trial % g.out_channels;
    std::vector<float>& param = which == 0 ? d.x : which == 1 ? d.w : d.bias;
    const float saved = param[index];
    param[index] = saved + h;
    const double plus = loss(d);
    param[index] = saved - h;
    const double minus = loss(d);
    param[index] = saved;
    const double numeric = (plus - minus) / (2.0 * double(h));
    const double analytic = which == 0 ? dx[index] : which == 1 ? dw[index] : dbias[index];
    worst = std::max(worst, std::fabs(numeric - analytic) / std::max(1.0, std::fabs(analytic)));
  }
  expect(worst < 2e-3, format("conv2d cpu finite differences (x, w, bias): worst relative error %.2e", worst));
}

// ---------------------------------------------------------------------------------------------------------------
// Pooling

struct PoolCase {
  int64_t planes, height, width, kernel, stride;
  bool ties;  // values in {0, 1, 2}: many windows hold their maximum twice or more
  bool nans;  // about one element in 12 is NaN: a NaN is a maximum, the first NaN of a window wins
};

// The cases and their float64 expected values: test/fixtures/native_reference/max_pool2d.bin and global_avg_pool.bin,
// written from test/reference/nn.ts (test/reference/native-op-fixtures.ts lists the cases and why each is there).
const std::vector<OpCase>& max_pool2d_fixture() {
  static const std::vector<OpCase> cases = read_op_fixture("max_pool2d.bin");
  return cases;
}
const std::vector<OpCase>& global_avg_pool_fixture() {
  static const std::vector<OpCase> cases = read_op_fixture("global_avg_pool.bin");
  return cases;
}

// The drawn input edited as maxPoolInput (native-op-fixtures.ts) edits it: comparisons and assignments only, exact.
std::vector<float> max_pool_input(std::vector<float> x, bool ties, bool nans) {
  if (ties)
    for (float& v : x) v = v < -0.5f ? 0.0f : v < 0.5f ? 1.0f : 2.0f;
  if (nans)
    for (size_t i = 0; i < x.size(); ++i)
      if ((i * 2654435761u) % 12 == 5) x[i] = NAN;
  return x;
}

using PoolFn = std::function<void(std::vector<float>& y, std::vector<float>& dx, const PoolCase& c,
                                  const std::vector<float>& x, const std::vector<float>& dy)>;

void check_pool_backend(const std::string& name, const PoolFn& pool) {
  for (const OpCase& f : max_pool2d_fixture()) {
    const std::vector<int64_t>& p = f.parameters;
    const PoolCase c{p[0], p[1], p[2], p[3], p[4], p[5] != 0, p[6] != 0};
    const std::vector<float> x = max_pool_input(f.inputs[0].values, c.ties, c.nans);
    const std::vector<float>& dy = f.inputs[1].values;
    std::vector<float> y(size_t(f.outputs[0].count), NAN), dx(x.size(), NAN);
    pool(y, dx, c, x, dy);
    bool y_ok = int64_t(y.size()) == f.outputs[0].count;
    for (const StoredElement& e : f.outputs[0].elements) {
      const float got = y[size_t(e.index)];
      y_ok = y_ok && (double(got) == e.want || (std::isnan(got) && std::isnan(e.want)));
    }
    // An element of dx adds the dy of at most ceil(kernel/stride)^2 windows.
    const int64_t overlap = (c.kernel + c.stride - 1) / c.stride;
    bool dx_ok = int64_t(dx.size()) == f.outputs[1].count;
    for (const StoredElement& e : f.outputs[1].elements)
      dx_ok = dx_ok && within_bound(dx[size_t(e.index)], e.want, e.magnitude, overlap * overlap, 0);
    expect(y_ok && dx_ok, format("max_pool2d %s planes %ld %ldx%ld k%ld s%ld%s%s: forward exact %s, backward %s",
                                 name.c_str(), long(c.planes), long(c.height), long(c.width), long(c.kernel),
                                 long(c.stride), c.ties ? " ties" : "", c.nans ? " NaNs" : "", y_ok ? "yes" : "NO",
                                 dx_ok ? "ok" : "WRONG"));
  }
}

using AvgPoolFn = std::function<void(std::vector<float>& y, std::vector<float>& dx, int64_t planes, int64_t size,
                                     const std::vector<float>& x, const std::vector<float>& dy)>;

void check_avg_pool_backend(const std::string& name, const AvgPoolFn& pool) {
  for (const OpCase& f : global_avg_pool_fixture()) {
    const int64_t planes = f.parameters[0], size = f.parameters[1];
    const std::vector<float>& x = f.inputs[0].values;
    const std::vector<float>& dy = f.inputs[1].values;
    std::vector<float> y(planes, NAN), dx(x.size(), NAN);
    pool(y, dx, planes, size, x, dy);
    // The forward is a float32 sum of `size` terms; the backward one division.
    ErrorReport fwd, bwd;
    for (const StoredElement& e : f.outputs[0].elements) fwd.add_sum(y[size_t(e.index)], e.want, e.magnitude, size);
    for (const StoredElement& e : f.outputs[1].elements) bwd.add_sum(dx[size_t(e.index)], e.want, e.magnitude, 1);
    expect(fwd.ok() && bwd.ok(), format("global_avg_pool %s planes %ld size %ld: forward %.3f, backward %.3f of bound",
                                        name.c_str(), long(planes), long(size), fwd.worst, bwd.worst));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// CUDA: host vectors in and out of device buffers.

#ifdef WEIGHTNORM_WITH_CUDA
namespace cu = weightnorm::cuda;

template <typename T>
class DeviceBufferOf {
 public:
  explicit DeviceBufferOf(size_t count, size_t offset = 0)
      : bytes_((count + offset) * sizeof(T)), base_(static_cast<T*>(cu::allocate(std::max<size_t>(bytes_, 4)))),
        data_(base_ + offset), count_(count) {}
  DeviceBufferOf(const std::vector<T>& host, size_t offset = 0) : DeviceBufferOf(host.size(), offset) {
    if (!host.empty()) cu::copy_to_device(data_, host.data(), host.size() * sizeof(T));
  }
  ~DeviceBufferOf() { cu::release(base_, std::max<size_t>(bytes_, 4)); }
  DeviceBufferOf(const DeviceBufferOf&) = delete;
  DeviceBufferOf& operator=(const DeviceBufferOf&) = delete;
  T* get() const { return data_; }
  std::vector<T> host() const {
    std::vector<T> v(count_);
    if (count_) cu::copy_to_host(v.data(), data_, count_ * sizeof(T));
    return v;
  }
  void copy_to(std::vector<T>& v) const { v = host(); }

 private:
  size_t bytes_;
  T* base_;
  T* data_;
  size_t count_;
};
using DeviceBuffer = DeviceBufferOf<float>;

// offset: every buffer starts that many floats past a 256-byte boundary (1 defeats the 16-byte vector loads).
GemmFn cuda_gemm(size_t offset) {
  return [offset](float* out, const float* a, const float* b, const GemmProblem& p, const GemmEpilogue& ep) {
    const int64_t m = p.shape.m, n = p.shape.n, k = p.shape.k;
    DeviceBuffer da(std::vector<float>(a, a + m * k), offset), db(std::vector<float>(b, b + k * n), offset);
    DeviceBuffer dout(std::vector<float>(out, out + m * n), offset);
    auto copy = [&](const float* host, int64_t count) {
      return host ? std::make_unique<DeviceBuffer>(std::vector<float>(host, host + count), offset) : nullptr;
    };
    auto rs = copy(ep.row_scale, m), cs = copy(ep.column_scale, n), rb = copy(ep.row_bias, m),
         cb = copy(ep.column_bias, n), sc = copy(ep.subtract_coefficient, m), sm = copy(ep.subtract_matrix, m * n);
    GemmEpilogue d = ep;  // beta; every pointer is replaced by its device copy below
    d.row_scale = rs ? rs->get() : nullptr;
    d.column_scale = cs ? cs->get() : nullptr;
    d.row_bias = rb ? rb->get() : nullptr;
    d.column_bias = cb ? cb->get() : nullptr;
    d.subtract_coefficient = sc ? sc->get() : nullptr;
    d.subtract_matrix = sm ? sm->get() : nullptr;
    auto raw = ep.raw_out ? std::make_unique<DeviceBuffer>(std::vector<float>(m * n, NAN), offset) : nullptr;
    d.raw_out = raw ? raw->get() : nullptr;
    cu::gemm(dout.get(), da.get(), db.get(), p.shape, d);
    const std::vector<float> result = dout.host();
    std::copy(result.begin(), result.end(), out);
    if (raw) {
      const std::vector<float> raw_host = raw->host();
      std::copy(raw_host.begin(), raw_host.end(), ep.raw_out);
    }
  };
}

// The bfloat16 overload on the device. offset (in elements) 1 breaks every alignment the kernels exploit (16-byte
// copies, 2-element stores); 2 keeps 4-byte alignment only.
GemmFn cuda_gemm_bfloat16(size_t offset) {
  return [offset](float* out, const float* a, const float* b, const GemmProblem& p, const GemmEpilogue& ep) {
    const int64_t m = p.shape.m, n = p.shape.n, k = p.shape.k;
    DeviceBufferOf<bfloat16> da(to_bfloat16(a, m * k), offset), db(to_bfloat16(b, k * n), offset),
        dout(to_bfloat16(out, m * n), offset);
    auto copy = [&](const float* host, int64_t count) {
      return host ? std::make_unique<DeviceBuffer>(std::vector<float>(host, host + count), offset) : nullptr;
    };
    auto rs = copy(ep.row_scale, m), cs = copy(ep.column_scale, n), rb = copy(ep.row_bias, m),
         cb = copy(ep.column_bias, n), sc = copy(ep.subtract_coefficient, m);
    auto sm = ep.subtract_matrix
                  ? std::make_unique<DeviceBufferOf<bfloat16>>(to_bfloat16(ep.subtract_matrix, m * n), offset)
                  : nullptr;
    auto raw = ep.raw_out
                   ? std::make_unique<DeviceBufferOf<bfloat16>>(std::vector<bfloat16>(m * n, kBfloat16NaN), offset)
                   : nullptr;
    GemmEpilogueBf16 d = bfloat16_epilogue_vectors(ep);
    d.row_scale = rs ? rs->get() : nullptr;
    d.column_scale = cs ? cs->get() : nullptr;
    d.row_bias = rb ? rb->get() : nullptr;
    d.column_bias = cb ? cb->get() : nullptr;
    d.subtract_coefficient = sc ? sc->get() : nullptr;
    d.subtract_matrix = sm ? sm->get() : nullptr;
    d.raw_out = raw ? raw->get() : nullptr;
    cu::gemm(dout.get(), da.get(), db.get(), p.shape, d);
    widen(out, dout.host());
    if (raw) widen(ep.raw_out, raw->host());
  };
}

ConvOutputs cuda_conv(const Conv2dGeometry& g, const ConvData& d, bool bias) {
  DeviceBuffer x(d.x), w(d.w), b(d.bias), dy(d.dy);
  DeviceBuffer y(std::vector<float>(g.batch * g.out_channels * g.out_height() * g.out_width(), NAN));
  DeviceBuffer dx(std::vector<float>(d.x.size(), NAN)), dw(std::vector<float>(d.w.size(), NAN)),
      dbias(std::vector<float>(g.out_channels, NAN));
  cu::conv2d_forward(y.get(), x.get(), w.get(), bias ? b.get() : nullptr, g);
  cu::conv2d_backward(dx.get(), dw.get(), dbias.get(), dy.get(), x.get(), w.get(), g);
  return {y.host(), dx.host(), dw.host(), dbias.host()};
}

void check_cuda_determinism() {
  // GEMM (SIMT, TF32, bfloat16; one plain shape and one split-k shape) and conv backward twice: bitwise equal (no
  // atomics anywhere).
  for (const cu::GemmPrecision precision : {cu::GemmPrecision::kFloat32, cu::GemmPrecision::kTensorFloat32}) {
    cu::set_gemm_precision(precision);
    for (const GemmShape shape : {GemmShape{300, 257, 129}, GemmShape{64, 96, 5000}}) {
      for (const bool bfloat16_gemm : {false, true}) {
        const GemmProblem p = make_problem(shape, true, false, bfloat16_gemm);
        const GemmBackend backend{"cuda", bfloat16_gemm ? cuda_gemm_bfloat16(0) : cuda_gemm(0), false,
                                  kFloat32Tolerance, bfloat16_gemm};
        const std::vector<float> first = run_gemm(backend, p, kEpilogueCases[8]);
        const std::vector<float> second = run_gemm(backend, p, kEpilogueCases[8]);
        expect(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0,
               format("gemm cuda %s %ldx%ldx%ld: two runs give the same bits",
                      bfloat16_gemm ? "bfloat16" : cu::gemm_backend(), long(shape.m), long(shape.n), long(shape.k)));
      }
    }
  }
  cu::set_gemm_precision(cu::GemmPrecision::kFloat32);
  const Conv2dGeometry g{4, 8, 12, 12, 6, 3, 3, 2, 1};
  ConvData d{random_vector(g.batch * g.in_channels * g.in_height * g.in_width),
             random_vector(g.out_channels * g.in_channels * 9), random_vector(g.out_channels),
             random_vector(g.batch * g.out_channels * g.out_height() * g.out_width())};
  const ConvOutputs a = cuda_conv(g, d, true), b = cuda_conv(g, d, true);
  expect(a.y == b.y && a.dx == b.dx && a.dw == b.dw && a.dbias == b.dbias, "conv2d cuda: two runs give the same bits");
}

// Runs a GEMM and records which tensor-core kernel ran it.
GemmFn recording_kernel(GemmFn run, std::set<std::string>* kernels) {
  return [run, kernels](float* out, const float* a, const float* b, const GemmProblem& p, const GemmEpilogue& ep) {
    run(out, a, b, p, ep);
    kernels->insert(cu::gemm_last_tensor_core_kernel());
  };
}

std::string joined(const std::set<std::string>& names) {
  std::string s;
  for (const std::string& name : names) s += (s.empty() ? "" : ", ") + name;
  return s;
}

// The Hopper wgmma kernels (sm_90 only), forced with set_gemm_tensor_core_kernel(kWgmma): TF32 and bfloat16 against
// the float64 reference with the tensor-core bounds (the TMA rounds TF32 operands to nearest, as cvt.rna does for
// mma.sync), over tile edges in m and n, k tails (k a multiple of 8 but not of the 32- or 64-element k step), the
// stage ring wrapping, split-k, every epilogue, all four transposes (k-strided operands transposed first), and the
// same bits run to run; then shapes it does not take (k % 4 != 0, misaligned operands) must fall back to mma.sync
// and stay correct, and kAuto must pick wgmma for a large enough NT product and mma.sync for a small NN one.
void check_cuda_wgmma(const cu::DeviceStatus& status) {
  const std::string state = cu::gemm_tensor_core_status();
  std::printf("tensor-core status: %s\n", state.c_str());
  if (status.compute_major != 9 || status.compute_minor != 0) {
    expect(state.find("not an sm_90 device") != std::string::npos,
           format("gemm_tensor_core_status on sm_%d%d says wgmma is not used: %s", status.compute_major,
                  status.compute_minor, state.c_str()));
    return;
  }
  expect(state == "wgmma: self-check passed (tf32, bf16)", "wgmma self-check on this sm_90 device: " + state);
  if (state != "wgmma: self-check passed (tf32, bf16)") return;

  const std::vector<GemmShape> shapes = {
      {128, 256, 64},   // exactly one tile
      {200, 136, 72},   // edge tiles in m and n, a k tail of 8
      {257, 513, 136},  // one row and one column past whole tiles; TF32 wraps the 4-stage ring
      {130, 260, 1000}, // 32 TF32 / 16 bfloat16 k steps in one split
      {64, 96, 5000},   // split-k through the ordered reduce
      {1, 1, 8},        // one element
      {3, 1000, 24},    // k shorter than one k step
  };
  cu::set_gemm_tensor_core_kernel(cu::GemmTensorCoreKernel::kWgmma);
  cu::set_gemm_precision(cu::GemmPrecision::kTensorFloat32);
  expect(std::string(cu::gemm_backend()) == "tf32-wgmma",
         format("set_gemm_tensor_core_kernel(kWgmma) on sm_90 selects %s", cu::gemm_backend()));
  const std::set<std::string> wgmma_kernels = {"wgmma", "wgmma (after transposing an operand)"};
  for (const bool bfloat16_gemm : {false, true}) {
    const char* name = bfloat16_gemm ? "bf16" : "tf32";
    std::set<std::string> kernels;
    const GemmFn run = recording_kernel(bfloat16_gemm ? cuda_gemm_bfloat16(0) : cuda_gemm(0), &kernels);
    check_gemm_backend({format("cuda/%s-wgmma", name), run, false,
                        bfloat16_gemm ? kBfloat16Tolerance : kTf32Tolerance, bfloat16_gemm},
                       shapes);
    expect(kernels == wgmma_kernels,
           format("gemm cuda/%s-wgmma: every layout ran on wgmma (ran: %s)", name, joined(kernels).c_str()));

    // k not a multiple of 16 bytes, and operands 4 (float) / 2 (bfloat16) bytes off alignment: mma.sync.
    std::set<std::string> fallback;
    const GemmFn unaligned_k = recording_kernel(bfloat16_gemm ? cuda_gemm_bfloat16(0) : cuda_gemm(0), &fallback);
    check_gemm_backend({format("cuda/%s-wgmma/k%%8", name), unaligned_k, false,
                        bfloat16_gemm ? kBfloat16Tolerance : kTf32Tolerance, bfloat16_gemm},
                       {{33, 65, 17}, {200, 136, bfloat16_gemm ? 76 : 74}});
    expect(fallback == std::set<std::string>{"mma.sync"},
           format("gemm cuda/%s-wgmma: k not a multiple of 16 bytes falls back to mma.sync (ran: %s)", name,
                  joined(fallback).c_str()));
    fallback.clear();
    const GemmFn misaligned = recording_kernel(bfloat16_gemm ? cuda_gemm_bfloat16(1) : cuda_gemm(1), &fallback);
    check_gemm_backend({format("cuda/%s-wgmma/misaligned", name), misaligned, false,
                        bfloat16_gemm ? kBfloat16Tolerance : kTf32Tolerance, bfloat16_gemm},
                       {{200, 136, 72}});
    // NN, NT and TT read a misaligned operand in place: mma.sync; TN transposes both into aligned scratch: wgmma.
    expect(fallback.count("mma.sync") == 1,
           format("gemm cuda/%s-wgmma: misaligned operands fall back to mma.sync (ran: %s)", name,
                  joined(fallback).c_str()));
  }

  // kAuto: a large NT product runs on wgmma, a small NN one (not worth transposing b) on mma.sync.
  cu::set_gemm_tensor_core_kernel(cu::GemmTensorCoreKernel::kAuto);
  for (const auto& [shape, transpose_b, want] : {std::make_tuple(GemmShape{1024, 512, 64}, true, "wgmma"),
                                                 std::make_tuple(GemmShape{200, 136, 72}, false, "mma.sync")}) {
    const GemmProblem p = make_problem(shape, false, transpose_b);
    const std::vector<float> got = run_gemm({"cuda", cuda_gemm(0), false, kTf32Tolerance, false}, p, kEpilogueCases[0]);
    const ErrorReport report = compare_epilogue(got, p, 0, kTf32Tolerance);
    expect(report.ok() && std::string(cu::gemm_last_tensor_core_kernel()) == want,
           format("gemm cuda/tf32 kAuto %ldx%ldx%ld N%c runs on %s (ran %s), worst %.3f of bound", long(shape.m),
                  long(shape.n), long(shape.k), transpose_b ? 'T' : 'N', want, cu::gemm_last_tensor_core_kernel(),
                  report.worst));
  }
  cu::set_gemm_precision(cu::GemmPrecision::kFloat32);
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// --perf: GEMM GFLOP/s per backend.

double seconds_of(const std::function<void()>& body, int repeats) {
  body();  // warm-up (packing buffers, thread pools, caches)
  double best = INFINITY;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    body();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

void bench(const std::vector<int64_t>& sizes) {
  std::printf("GEMM GFLOP/s (best of runs), %d CPU threads\n", cpu::num_threads());
  for (int64_t s : sizes) {
    const std::vector<float> a = random_vector(s * s), b = random_vector(s * s);
    std::vector<float> c(s * s);
    const double flops = 2.0 * double(s) * double(s) * double(s);
    const int repeats = s >= 4096 ? 2 : 5;
    auto run_cpu = [&](const std::string& label) {
      const double t = seconds_of([&] { cpu::gemm(c.data(), a.data(), b.data(), GemmShape{s, s, s}, {}); }, repeats);
      std::printf("  %5ld^3  cpu %-16s %8.1f GFLOP/s  (%.3f s)\n", long(s), label.c_str(), flops / t / 1e9, t);
      std::fflush(stdout);
    };
    cpu::set_gemm_prefer_blas(true);
    if (std::string(cpu::gemm_backend()) == "openblas") run_cpu("openblas");
    cpu::set_gemm_prefer_blas(false);
    for (const char* isa : {"avx512", "avx2", "sse2"}) {
      if (!cpu::set_gemm_blocked_isa(isa)) continue;
      if (s >= 4096 && std::string(isa) != "avx512" && cpu::set_gemm_blocked_isa("avx512")) continue;
      cpu::set_gemm_blocked_isa(isa);
      run_cpu(std::string("blocked/") + isa);
    }
    cpu::set_gemm_blocked_isa(nullptr);
    cpu::set_gemm_implementation(cpu::GemmImplementation::kAutomatic);
#ifdef WEIGHTNORM_WITH_CUDA
    if (cu::device_status().usable) {
      for (const bool ta : {false, true}) {
        DeviceBuffer da(a), db(b), dc(c);
        const std::vector<double> ms = cu::time_on_stream(
            [&](int) {
              const GemmShape shape = ta ? GemmShape{s, s, s}.transposing_a() : GemmShape{s, s, s};
              cu::gemm(dc.get(), da.get(), db.get(), shape, {});
            },
            2, 10);
        const double best = *std::min_element(ms.begin(), ms.end()) / 1e3;
        std::printf("  %5ld^3  cuda %-15s %8.1f GFLOP/s  (%.3f ms)\n", long(s), ta ? "simt (a^T)" : "simt",
                    flops / best / 1e9, best * 1e3);
      }
      if (cu::device_status().compute_major >= 8) {
        DeviceBuffer da(a), db(b), dc(c);
        cu::set_gemm_precision(cu::GemmPrecision::kTensorFloat32);
        const std::vector<double> tf32_ms = cu::time_on_stream(
            [&](int) { cu::gemm(dc.get(), da.get(), db.get(), GemmShape{s, s, s}, {}); }, 2, 10);
        cu::set_gemm_precision(cu::GemmPrecision::kFloat32);
        DeviceBufferOf<bfloat16> ha(to_bfloat16(a.data(), s * s)), hb(to_bfloat16(b.data(), s * s)),
            hc(to_bfloat16(c.data(), s * s));
        const std::vector<double> bf16_ms = cu::time_on_stream(
            [&](int) { cu::gemm(hc.get(), ha.get(), hb.get(), GemmShape{s, s, s}, {}); }, 2, 10);
        for (const auto& [label, ms] : {std::make_pair("tf32-mma", tf32_ms), std::make_pair("bf16-mma", bf16_ms)}) {
          const double best = *std::min_element(ms.begin(), ms.end()) / 1e3;
          std::printf("  %5ld^3  cuda %-15s %8.1f GFLOP/s  (%.3f ms)\n", long(s), label, flops / best / 1e9,
                      best * 1e3);
        }
      }
    }
#endif
  }
}

// This binary run with WEIGHTNORM_OPENBLAS=<setting> (a child process: OpenBLAS is looked for once per process):
// its first output line, "<gemm_backend()>|<gemm_backend_description()>|<whether a small product is right>".
std::string describe_gemm_with(const std::string& setting) {
  char self[4096];
  const ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
  if (length <= 0) return "(cannot find this binary)";
  self[length] = '\0';
  const std::string command = "WEIGHTNORM_OPENBLAS='" + setting + "' '" + self + "' --describe-gemm";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return "(popen failed)";
  char line[4096] = "";
  if (!std::fgets(line, sizeof line, pipe)) line[0] = '\0';
  pclose(pipe);
  std::string text(line);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

int describe_gemm() {
  // 3x2 = [3x4][4x2] with small integers: exact in float32 on any path.
  const float a[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, b[8] = {1, -1, 2, 0, 0, 3, -2, 1};
  const float want[6] = {-3, 12, 1, 24, 5, 36};
  float out[6];
  cpu::gemm(out, a, b, GemmShape{3, 2, 4}, {});
  const bool right = std::memcmp(out, want, sizeof out) == 0;
  std::printf("%s|%s|%s\n", cpu::gemm_backend(), cpu::gemm_backend_description().c_str(), right ? "right" : "wrong");
  return right ? 0 : 1;
}

// How OpenBLAS is found and reported (in child processes), and that a miss falls back to the blocked kernel.
void check_openblas_loading() {
  auto starts_with = [](const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; };
  const std::string disabled = describe_gemm_with("0");
  expect(starts_with(disabled, "blocked|blocked (hand-written): OpenBLAS disabled by WEIGHTNORM_OPENBLAS=0|right"),
         "WEIGHTNORM_OPENBLAS=0: " + disabled);
  const std::string missing = describe_gemm_with("/nonexistent/libopenblas.so.0");
  expect(starts_with(missing, "blocked|blocked (hand-written): WEIGHTNORM_OPENBLAS=/nonexistent/libopenblas.so.0 "
                              "could not be used: ") &&
             missing.find("No such file") != std::string::npos && missing.find("|right") != std::string::npos,
         "WEIGHTNORM_OPENBLAS=<missing file>: " + missing);
  // A real shared library that is not OpenBLAS.
  const std::string not_blas = describe_gemm_with("libm.so.6");
  expect(starts_with(not_blas, "blocked|") && not_blas.find("has no cblas_sgemm (not OpenBLAS)") != std::string::npos &&
             not_blas.find("|right") != std::string::npos,
         "WEIGHTNORM_OPENBLAS=libm.so.6: " + not_blas);
  const std::string automatic = describe_gemm_with("");
  expect(automatic.find("|right") != std::string::npos &&
             starts_with(automatic, std::string(cpu::gemm_backend()) + "|" + cpu::gemm_backend_description()),
         "WEIGHTNORM_OPENBLAS unset: the same choice as this process: " + automatic);
  // The automatic choice (cpu/gemm.h): the blocked kernel over OpenBLAS exactly where its AVX-512 micro-kernel runs
  // and OpenBLAS's kernels lack AVX-512, saying so.
  const std::string core = cpu::gemm_blas_core();
  if (!core.empty()) {
    const bool avx512_core = core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
    const bool blocked_wins = std::string(cpu::gemm_blocked_isa()) == "avx512" && !avx512_core;
    expect(std::string(cpu::gemm_backend()) == (blocked_wins ? "blocked" : "openblas"),
           format("automatic choice with OpenBLAS's %s kernels and the %s micro-kernel: %s (%s)", core.c_str(),
                  cpu::gemm_blocked_isa(), cpu::gemm_backend(), cpu::gemm_backend_description().c_str()));
    if (blocked_wins)
      expect(starts_with(cpu::gemm_backend_description(), "blocked (hand-written, avx512 micro-kernel): chosen over "
                                                          "OpenBLAS, whose " + core + " kernels do not use AVX-512"),
             "the blocked kernel's description says why: " + cpu::gemm_backend_description());
  }
  cpu::set_gemm_implementation(cpu::GemmImplementation::kOpenBlas);
  if (std::string(cpu::gemm_backend()) == "openblas") {
    // The file this process loaded, named explicitly: the same library and the same choice.
    const std::string description = cpu::gemm_backend_description();
    const size_t from = description.find("loaded at run time from ") + 24;
    const std::string path = description.substr(from, description.find_first_of(" ;", from) - from);
    const std::string chosen = describe_gemm_with(path);
    expect(starts_with(chosen, automatic.substr(0, automatic.find('|') + 1)) &&
               chosen.find("OpenBLAS (") != std::string::npos && chosen.find("from " + path) != std::string::npos &&
               chosen.find("|right") != std::string::npos,
           "WEIGHTNORM_OPENBLAS=" + path + ": " + chosen);
  }
  cpu::set_gemm_implementation(cpu::GemmImplementation::kAutomatic);
}

// GEMM on OpenBLAS (when it can be loaded) and on the blocked kernel with each micro-kernel this CPU can run; conv
// and pooling.
void check_cpu() {
  std::printf("cpu gemm backend: %s, blocked micro-kernel: %s, %d threads\n", cpu::gemm_backend(),
              cpu::gemm_blocked_isa(), cpu::num_threads());
  std::printf("cpu gemm: %s\n", cpu::gemm_backend_description().c_str());
  check_openblas_loading();
  std::vector<GemmShape> cpu_shapes = kGemmShapes;
  cpu_shapes.insert(cpu_shapes.end(), kCpuTiledShapes.begin(), kCpuTiledShapes.end());
  cpu::set_gemm_implementation(cpu::GemmImplementation::kOpenBlas);
  if (std::string(cpu::gemm_backend()) == "openblas") {
    check_gemm_backend({"cpu/openblas", cpu_gemm(), true, kFloat32Tolerance, false}, cpu_shapes);
  } else {
    std::printf("OpenBLAS not loaded: only the blocked kernel is checked\n");
  }
  cpu::set_gemm_prefer_blas(false);
  expect(std::string(cpu::gemm_backend()) == "blocked", "set_gemm_prefer_blas(false) selects the blocked kernel");
  for (const char* isa : {"avx512", "avx2", "sse2"}) {
    if (!cpu::set_gemm_blocked_isa(isa)) {
      std::printf("blocked micro-kernel %s: not supported on this CPU, skipped\n", isa);
      continue;
    }
    check_gemm_backend({std::string("cpu/blocked/") + isa, cpu_gemm(), true, kFloat32Tolerance, false, true}, cpu_shapes);
  }
  cpu::set_gemm_blocked_isa(nullptr);
  cpu::set_gemm_implementation(cpu::GemmImplementation::kAutomatic);

  // bfloat16 on the default float32 path, plus k = 0 and k = 3.
  std::vector<GemmShape> bfloat16_shapes = kGemmShapes;
  bfloat16_shapes.push_back({20, 30, 0});
  bfloat16_shapes.push_back({33, 17, 3});
  check_gemm_backend({std::string("cpu/bf16/") + cpu::gemm_backend(), cpu_gemm_bfloat16(), false,
                      kBfloat16Tolerance, true},
                     bfloat16_shapes);

  // Conv and pooling on the CPU, with the default GEMM and with the blocked one.
  for (const bool blas : {true, false}) {
    cpu::set_gemm_prefer_blas(blas);
    if (blas && std::string(cpu::gemm_backend()) != "openblas") continue;
    check_conv_backend(std::string("cpu/") + cpu::gemm_backend(), cpu_conv);
    check_conv_thread_independence(cpu::gemm_backend());
  }
  cpu::set_gemm_implementation(cpu::GemmImplementation::kAutomatic);
  check_conv_null_outputs();
  check_conv_finite_differences();
  check_conv_vector_isas();
  check_pool_backend("cpu", [](std::vector<float>& y, std::vector<float>& dx, const PoolCase& c,
                               const std::vector<float>& x, const std::vector<float>& dy) {
    cpu::max_pool2d_forward(y.data(), x.data(), c.planes, c.height, c.width, c.kernel, c.stride);
    cpu::max_pool2d_backward(dx.data(), dy.data(), x.data(), c.planes, c.height, c.width, c.kernel, c.stride);
  });
  check_avg_pool_backend("cpu", [](std::vector<float>& y, std::vector<float>& dx, int64_t planes, int64_t size,
                                   const std::vector<float>& x, const std::vector<float>& dy) {
    cpu::global_avg_pool_forward(y.data(), x.data(), planes, size);
    cpu::global_avg_pool_backward(dx.data(), dy.data(), planes, size);
  });

}

int perf_mode(int argc, char** argv) {
  std::vector<int64_t> sizes;
  for (int j = 1; j < argc; ++j) sizes.push_back(std::atol(argv[j]));
  if (sizes.empty()) sizes = {1024, 4096};
  bench(sizes);
  return 0;
}

int describe_gemm_mode(int, char**) { return describe_gemm(); }

#ifdef WEIGHTNORM_WITH_CUDA
// GEMM (float32 SIMT, TF32 and bfloat16 tensor cores, wgmma on sm_90), conv and pooling on CUDA.
void check_cuda() {
  const cu::DeviceStatus& status = cu::device_status();
  std::printf("cuda device: %s (sm_%d%d), gemm backend: %s\n", status.name.c_str(), status.compute_major,
              status.compute_minor, cu::gemm_backend());
  std::vector<GemmShape> shapes = kGemmShapes;
  shapes.push_back({300, 257, 129});
  shapes.push_back({256, 192, 64});
  shapes.push_back({129, 260, 33});
  shapes.push_back({64, 96, 5000});     // split-k
  shapes.push_back({7, 13, 3001});      // split-k, scalar loads
  shapes.push_back({1537, 1539, 33});   // the 128x128 tile, ragged edges
  shapes.push_back({1536, 1536, 40});   // the 128x128 tile, vector loads
  shapes.push_back({20, 30, 0});        // k = 0: the epilogue of a zero product
  shapes.push_back({33, 17, 3});        // k shorter than one 16-byte chunk
  const std::vector<GemmShape> misaligned_shapes = {
      {16, 16, 16}, {128, 128, 8}, {256, 192, 64}, {33, 65, 17}, {1536, 1536, 24}, {130, 600, 520}};
  check_gemm_backend({"cuda", cuda_gemm(0), false, kFloat32Tolerance, false}, shapes);
  check_gemm_backend({"cuda/misaligned", cuda_gemm(1), false, kFloat32Tolerance, false}, misaligned_shapes);

  // These check mma.sync; check_cuda_wgmma checks the Hopper kernels.
  cu::set_gemm_tensor_core_kernel(cu::GemmTensorCoreKernel::kMmaSync);
  cu::set_gemm_precision(cu::GemmPrecision::kTensorFloat32);
  const bool tf32 = std::string(cu::gemm_backend()) == "tf32-mma";
  expect(tf32 == (status.compute_major >= 8),
         format("set_gemm_precision(kTensorFloat32) on sm_%d%d selects %s", status.compute_major,
                status.compute_minor, cu::gemm_backend()));
  if (tf32) {
    check_gemm_backend({"cuda/tf32", cuda_gemm(0), false, kTf32Tolerance, false}, shapes);
    check_gemm_backend({"cuda/tf32/misaligned", cuda_gemm(1), false, kTf32Tolerance, false}, misaligned_shapes);
  }
  cu::set_gemm_precision(cu::GemmPrecision::kFloat32);
  expect(std::string(cu::gemm_backend()) == "simt", "set_gemm_precision(kFloat32) selects simt");
  if (status.compute_major >= 8) {
    check_gemm_backend({"cuda/bf16", cuda_gemm_bfloat16(0), false, kBfloat16Tolerance, true}, shapes);
    check_gemm_backend({"cuda/bf16/misaligned", cuda_gemm_bfloat16(1), false, kBfloat16Tolerance, true},
                       misaligned_shapes);
    check_gemm_backend({"cuda/bf16/4-byte", cuda_gemm_bfloat16(2), false, kBfloat16Tolerance, true},
                       {{33, 65, 17}, {256, 192, 64}, {64, 96, 5000}});
  }
  cu::set_gemm_tensor_core_kernel(cu::GemmTensorCoreKernel::kAuto);
  check_cuda_wgmma(status);
  check_cuda_determinism();
  check_conv_backend("cuda", cuda_conv);
  check_pool_backend("cuda", [](std::vector<float>& y, std::vector<float>& dx, const PoolCase& c,
                                const std::vector<float>& x, const std::vector<float>& dy) {
    DeviceBuffer dx_d(dx), y_d(y), x_d(x), dy_d(dy);
    cu::max_pool2d_forward(y_d.get(), x_d.get(), c.planes, c.height, c.width, c.kernel, c.stride);
    cu::max_pool2d_backward(dx_d.get(), dy_d.get(), x_d.get(), c.planes, c.height, c.width, c.kernel, c.stride);
    y_d.copy_to(y);
    dx_d.copy_to(dx);
  });
  check_avg_pool_backend("cuda", [](std::vector<float>& y, std::vector<float>& dx, int64_t planes, int64_t size,
                                    const std::vector<float>& x, const std::vector<float>& dy) {
    DeviceBuffer dx_d(dx), y_d(y), x_d(x), dy_d(dy);
    cu::global_avg_pool_forward(y_d.get(), x_d.get(), planes, size);
    cu::global_avg_pool_backward(dx_d.get(), dy_d.get(), planes, size);
    y_d.copy_to(y);
    dx_d.copy_to(dx);
  });
}
#endif

WEIGHTNORM_NATIVE_TEST_GROUP("gemm/cpu", check_cpu);
#ifdef WEIGHTNORM_WITH_CUDA
WEIGHTNORM_NATIVE_TEST_GROUP("gemm/cuda", check_cuda);
#endif
WEIGHTNORM_NATIVE_TEST_MODE("--perf", perf_mode);
WEIGHTNORM_NATIVE_TEST_MODE("--describe-gemm", describe_gemm_mode);

}  // namespace
