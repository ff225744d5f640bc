// CPU fused optimizer steps (see optim.h): SGD (momentum, dampening, Nesterov, weight decay), Adam and Adamax,
// each one pass that reads grad and the state, and writes the parameter and the state.
//
// With a NormOutput the step also writes norm[k] = max(||p_k||, eps) of the updated parameter:
//  outer == 1  (dim 0: each channel a contiguous row) fused: a row is updated in blocks of kFoldBlock elements and
//              each block's squares are summed right after it is written, while it is in L1. A long row is cut
//              into parts of fixed length (kPartElements), so the summation order never depends on the thread
//              count.
//  otherwise   the update pass, then cpu::channel_dot (deterministic) over the updated parameter.
// The single-tensor steps are the multi-tensor ones (sgd_step_many, ...) with one tensor, so both give the same
// bits by construction.
// Bias corrections are computed in double once per step; the per-element arithmetic is float.
#include "optim.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "weightnorm.h"

namespace weightnorm::cpu {
namespace {

constexpr int64_t kPartElements = int64_t{1} << 14;
constexpr int64_t kFoldBlock = 1024;
constexpr int kLanes = 16;
constexpr int64_t kParallelMinElements = int64_t{1} << 15;

// The update loops are vectorized: scalar, Adam's pass over the parameters cost as much as the GEMMs of the demo
// MLP's step (the rule reloaded its fields and pointers for every element, and sqrt kept its errno path, which
// blocks vectorization). Every element still goes through the same float operations in the same order, with no
// multiply-add contracted (FMA is never enabled for these functions) and sqrt and division exact at any width, so
// the results are bitwise those of the scalar loops. SGD and Adamax are plain loops compiled twice, for the x86-64
// baseline (SSE2, 4 floats) and AVX2 (8), the loader picking one (GCC's target_clones, an ifunc); Adam's sqrt needs
// the intrinsics (no errno path), in an SSE2 and an AVX2 version chosen once per process.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define WN_OPTIM_X86 1
#define WN_OPTIM_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define WN_OPTIM_X86 0
#define WN_OPTIM_CLONES
#endif

// Each rule updates elements [begin, end) of the parameter and of its state. The loops take the tensors as
// restrict-qualified parameters (the tensors of one parameter never overlap), so they vectorize without alias
// checks.
struct SgdRule {
  float* param;
  float* velocity;
  const float* grad;
  float lr, momentum, keep, weight_decay;  // keep = 1 - dampening
  bool nesterov, first_step;

  void operator()(int64_t begin, int64_t end) const;
};

WN_OPTIM_CLONES void sgd_range(float* __restrict param, float* __restrict velocity, const float* __restrict grad,
                               const SgdRule& rule, int64_t begin, int64_t end) {
  const float lr = rule.lr, momentum = rule.momentum, keep = rule.keep, weight_decay = rule.weight_decay;
  const bool nesterov = rule.nesterov, first_step = rule.first_step;
  for (int64_t i = begin; i < end; ++i) {
    const float g = weight_decay != 0.0f ? grad[i] + weight_decay * param[i] : grad[i];
    float direction = g;
    if (momentum != 0.0f) {
      const float buffer = first_step ? g : momentum * velocity[i] + keep * g;
      velocity[i] = buffer;
      direction = nesterov ? g + momentum * buffer : buffer;
    }
    param[i] -= lr * direction;
  }
}

void SgdRule::operator()(int64_t begin, int64_t end) const { sgd_range(param, velocity, grad, *this, begin, end); }

struct AdamRule {
  float* param;
  float* m;
  float* v;
  const float* grad;
  float step_size, beta1, beta2, inv_sqrt_correction2, eps, weight_decay;  // lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)

  // The reference form of one element; the vector loops below do exactly this per lane.
  void element(int64_t i) const {
    const float g = weight_decay != 0.0f ? grad[i] + weight_decay * param[i] : grad[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] -= step_size * mi / (std::sqrt(vi) * inv_sqrt_correction2 + eps);
  }
  void operator()(int64_t begin, int64_t end) const;
  // Updates `rows` (at most 4) runs of n elements (run r starts at begin + r * n) and writes the sum of squares of each run's
  // updated elements to sums[r], with rows_squares' additions (same bits), while the values are still in registers:
  // a weight-norm direction's step then reads its parameters once instead of twice.
  void update_with_squares(int64_t begin, int64_t rows, int64_t n, float* sums) const;
};

// The sum of squares of a run of n elements, as rows_squares computes it: element i of the run goes to lane
// i % kLanes for the whole groups of kLanes and the rest to lane 0 in order, then the lanes are added as a tree
// (lane l + lane l + 8 for l < 8, then l + 4, l + 2, l + 1): the order a 16-float vector register's halves fold in,
// so the vector loops finish a run in registers (storing the lanes and adding them one by one from memory cost
// about 60 cycles per row, a third of a 256-float row's update). Every width folds in this order.
inline float fold_lanes(float* lanes) {
  for (int width = kLanes / 2; width >= 1; width /= 2)
    for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
}

// The end of it for up to 4 runs of n elements from `first`, lanes[r] holding run r's whole groups' sums: the tails,
// then the fold.
inline void finish_squares(float (*lanes)[kLanes], const float* first, int64_t rows, int64_t n, float* sums) {
  const int64_t whole = n - n % kLanes;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = whole; j < n; ++j) lanes[r][0] += first[r * n + j] * first[r * n + j];
    sums[r] = fold_lanes(lanes[r]);
  }
}

#if WN_OPTIM_X86
// One vector loop for every width: V is __m128 (SSE2), __m256 (AVX2) or __m512 (AVX-512F), W its lanes, then its
// intrinsics. Each function is a template on whether weight decay is on, so the test is not repeated per vector,
// and takes the rule's pointers into restrict locals: through the rule's fields GCC reloaded every pointer after
// each store (a float store might have changed them, as far as it could tell), six extra loads per vector.
#define WN_ADAM_VECTOR_SETUP(V, SET1)                                                                   \
  float* __restrict const param = rule.param;                                                          \
  float* __restrict const exp_avg = rule.m;                                                            \
  float* __restrict const exp_avg_sq = rule.v;                                                         \
  const float* __restrict const grad = rule.grad;                                                      \
  const V beta1 = SET1(rule.beta1), keep1 = SET1(1.0f - rule.beta1);                                   \
  const V beta2 = SET1(rule.beta2), keep2 = SET1(1.0f - rule.beta2);                                   \
  const V step_size = SET1(rule.step_size), correction2 = SET1(rule.inv_sqrt_correction2);             \
  const V eps = SET1(rule.eps), weight_decay = SET1(rule.weight_decay);                                \
  (void)weight_decay;
// Inside a training step Adam's four streams are rarely in this core's cache: the backward just wrote the gradient
// (part of it on the other core) and evicted the rest. Requesting each stream's line 1 KiB ahead, once per 16
// elements from the start of the run, took 1-8 us off the demo MLP's Adam per step on the 2-core VM, plain and
// weight-normalized alike (in-process alternation), against ~1.5 us more on a warm 200k-element tensor. A prefetch
// never faults, so reading past the end of a tensor is harmless; it changes no result.
constexpr int64_t kAdamPrefetchFloats = 256;
#define WN_ADAM_PREFETCH(i)                                                                             \
  _mm_prefetch(reinterpret_cast<const char*>(param + (i) + kAdamPrefetchFloats), _MM_HINT_T0);         \
  _mm_prefetch(reinterpret_cast<const char*>(grad + (i) + kAdamPrefetchFloats), _MM_HINT_T0);          \
  _mm_prefetch(reinterpret_cast<const char*>(exp_avg + (i) + kAdamPrefetchFloats), _MM_HINT_T0);       \
  _mm_prefetch(reinterpret_cast<const char*>(exp_avg_sq + (i) + kAdamPrefetchFloats), _MM_HINT_T0);
// Updates the W elements at i; `updated` is the new parameter vector.
#define WN_ADAM_VECTOR_STEP(V, i, updated, LOAD, STORE, ADD, SUB, MUL, DIV, SQRT)                       \
  const V p = LOAD(param + (i));                                                                       \
  V g = LOAD(grad + (i));                                                                              \
  if constexpr (kDecay) g = ADD(g, MUL(weight_decay, p));                                              \
  const V mi = ADD(MUL(beta1, LOAD(exp_avg + (i))), MUL(keep1, g));                                    \
  const V vi = ADD(MUL(beta2, LOAD(exp_avg_sq + (i))), MUL(MUL(keep2, g), g));                         \
  STORE(exp_avg + (i), mi);                                                                            \
  STORE(exp_avg_sq + (i), vi);                                                                         \
  const V denominator = ADD(MUL(SQRT(vi), correction2), eps);                                          \
  const V updated = SUB(p, DIV(MUL(step_size, mi), denominator));                                      \
  STORE(param + (i), updated);
#define WN_ADAM_VECTOR_LOOP(V, W, SET1, LOAD, STORE, ADD, SUB, MUL, DIV, SQRT)                          \
  WN_ADAM_VECTOR_SETUP(V, SET1)                                                                        \
  int64_t i = begin;                                                                                   \
  for (; i + (W) <= end; i += (W)) {                                                                   \
    if (((i - begin) & 15) == 0) { WN_ADAM_PREFETCH(i) }                                               \
    WN_ADAM_VECTOR_STEP(V, i, updated, LOAD, STORE, ADD, SUB, MUL, DIV, SQRT)                          \
  }                                                                                                    \
  for (; i < end; ++i) rule.element(i);
// The runs' squares accumulate in kLanes / W vectors, vector q holding lanes [q * W, (q + 1) * W): the lanes of
// rows_squares, each with the same additions in the same order (multiply, then add: never contracted).
#define WN_ADAM_SQUARES_LOOP(V, W, SET1, LOAD, STORE, ADD, SUB, MUL, DIV, SQRT, ZERO, FOLD)             \
  WN_ADAM_VECTOR_SETUP(V, SET1)                                                                        \
  constexpr int kVectors = kLanes / (W);                                                               \
  float lanes[4][kLanes];                                                                              \
  for (int64_t r = 0; r < rows; ++r) {                                                                 \
    const int64_t first = begin + r * n;                                                               \
    V squares[kVectors];                                                                               \
    for (int q = 0; q < kVectors; ++q) squares[q] = ZERO();                                            \
    int64_t i = 0;                                                                                     \
    for (; i + kLanes <= n; i += kLanes) {                                                             \
      WN_ADAM_PREFETCH(first + i)                                                                      \
      for (int q = 0; q < kVectors; ++q) {                                                             \
        WN_ADAM_VECTOR_STEP(V, first + i + q * (W), updated, LOAD, STORE, ADD, SUB, MUL, DIV, SQRT)    \
        squares[q] = ADD(squares[q], MUL(updated, updated));                                           \
      }                                                                                                \
    }                                                                                                  \
    for (int64_t j = i; j < n; ++j) rule.element(first + j);                                           \
    if (n % kLanes == 0) {                                                                             \
      sums[r] = FOLD(squares);                                                                         \
    } else {                                                                                           \
      for (int q = 0; q < kVectors; ++q) STORE(lanes[r] + q * (W), squares[q]);                        \
      finish_squares(lanes + r, rule.param + first, 1, n, sums + r);                                   \
    }                                                                                                  \
  }

// AVX-512F brings FMA instructions with it, and GCC contracts a multiply and an add written as vector arithmetic
// (as these intrinsics are) into one when the target has them: contraction is switched off for that version, or
// its results would differ in the last bit from the other widths'.
#define WN_AVX512_ADAM __attribute__((target("avx512f"), optimize("fp-contract=off")))
#define WN_AVX512_ARGS _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps, \
                       _mm512_div_ps, wn_sqrt512
#define WN_AVX2_ARGS _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, \
                     _mm256_div_ps, _mm256_sqrt_ps
// Expands the argument lists below before the loop macro splits its arguments at their commas.
#define WN_EXPAND(LOOP, ...) LOOP(__VA_ARGS__)
#define WN_SSE2_ARGS _mm_set1_ps, _mm_loadu_ps, _mm_storeu_ps, _mm_add_ps, _mm_sub_ps, _mm_mul_ps, _mm_div_ps, _mm_sqrt_ps

// _mm512_sqrt_ps merges into an undefined vector, which GCC 12 reports as maybe uninitialized; the zero-masking
// form with every lane selected is the same instruction without that.
WN_AVX512_ADAM inline __m512 wn_sqrt512(__m512 x) { return _mm512_maskz_sqrt_ps(0xFFFF, x); }

// fold_lanes in registers, for the 16 lanes of one AVX-512 vector, two AVX2 or four SSE2 vectors: each step adds
// the same pairs of lanes as fold_lanes does (float addition is commutative, so either operand order gives the
// same bits). The AVX-512 steps stay in 512-bit registers with zero-masking shuffles: GCC 12's plain forms, and its
// 512-to-256-bit cast, merge into an undefined vector that it reports as maybe uninitialized (as with wn_sqrt512).
inline float fold4_sse(__m128 x) {
  const __m128 two = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
}
WN_AVX512_ADAM inline float fold_lanes_avx512(const __m512* lanes) {
  constexpr __mmask16 kAll = 0xFFFF;
  __m512 x = lanes[0];
  x = _mm512_add_ps(x, _mm512_maskz_shuffle_f32x4(kAll, x, x, _MM_SHUFFLE(1, 0, 3, 2)));  // l + (l + 8)
  x = _mm512_add_ps(x, _mm512_maskz_shuffle_f32x4(kAll, x, x, _MM_SHUFFLE(2, 3, 0, 1)));  // + (l + 4)
  x = _mm512_add_ps(x, _mm512_maskz_shuffle_ps(kAll, x, x, _MM_SHUFFLE(1, 0, 3, 2)));     // + (l + 2)
  x = _mm512_add_ps(x, _mm512_maskz_shuffle_ps(kAll, x, x, _MM_SHUFFLE(2, 3, 0, 1)));     // + (l + 1)
  return _mm512_cvtss_f32(x);
}
__attribute__((target("avx2"))) inline float fold_lanes_avx2(const __m256* lanes) {
  const __m256 x = _mm256_add_ps(lanes[0], lanes[1]);
  return fold4_sse(_mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1)));
}
inline float fold_lanes_sse2(const __m128* lanes) {
  return fold4_sse(_mm_add_ps(_mm_add_ps(lanes[0], lanes[2]), _mm_add_ps(lanes[1], lanes[3])));
}

template <bool kDecay>
WN_AVX512_ADAM void adam_range_avx512(const AdamRule& rule, int64_t begin, int64_t end) {
  WN_EXPAND(WN_ADAM_VECTOR_LOOP, __m512, 16, WN_AVX512_ARGS)
}

template <bool kDecay>
__attribute__((target("avx2"))) void adam_range_avx2(const AdamRule& rule, int64_t begin, int64_t end) {
  WN_EXPAND(WN_ADAM_VECTOR_LOOP, __m256, 8, WN_AVX2_ARGS)
}

template <bool kDecay>
void adam_range_sse2(const AdamRule& rule, int64_t begin, int64_t end) {
  WN_EXPAND(WN_ADAM_VECTOR_LOOP, __m128, 4, WN_SSE2_ARGS)
}

template <bool kDecay>
WN_AVX512_ADAM void adam_squares_avx512(const AdamRule& rule, int64_t begin, int64_t rows, int64_t n, float* sums) {
  WN_EXPAND(WN_ADAM_SQUARES_LOOP, __m512, 16, WN_AVX512_ARGS, _mm512_setzero_ps, fold_lanes_avx512)
}

template <bool kDecay>
__attribute__((target("avx2"))) void adam_squares_avx2(const AdamRule& rule, int64_t begin, int64_t rows, int64_t n,
                                                       float* sums) {
  WN_EXPAND(WN_ADAM_SQUARES_LOOP, __m256, 8, WN_AVX2_ARGS, _mm256_setzero_ps, fold_lanes_avx2)
}

template <bool kDecay>
void adam_squares_sse2(const AdamRule& rule, int64_t begin, int64_t rows, int64_t n, float* sums) {
  WN_EXPAND(WN_ADAM_SQUARES_LOOP, __m128, 4, WN_SSE2_ARGS, _mm_setzero_ps, fold_lanes_sse2)
}
#undef WN_EXPAND
#undef WN_SSE2_ARGS
#undef WN_AVX2_ARGS
#undef WN_AVX512_ARGS
#undef WN_AVX512_ADAM
#undef WN_ADAM_SQUARES_LOOP
#undef WN_ADAM_VECTOR_LOOP
#undef WN_ADAM_VECTOR_STEP
#undef WN_ADAM_VECTOR_SETUP

// Adam's widest version, chosen once per process. Every width gives the same bits (see above); AVX-512 halves the
// instructions per element of a loop whose vector square roots and divisions issue no faster per element.
enum class AdamWidth { kSse2, kAvx2, kAvx512 };
AdamWidth adam_width() {
  static const AdamWidth width = __builtin_cpu_supports("avx512f") ? AdamWidth::kAvx512
                                 : __builtin_cpu_supports("avx2")  ? AdamWidth::kAvx2
                                                                   : AdamWidth::kSse2;
  return width;
}

template <bool kDecay>
void adam_range(const AdamRule& rule, int64_t begin, int64_t end) {
  switch (adam_width()) {
    case AdamWidth::kAvx512: return adam_range_avx512<kDecay>(rule, begin, end);
    case AdamWidth::kAvx2: return adam_range_avx2<kDecay>(rule, begin, end);
    case AdamWidth::kSse2: return adam_range_sse2<kDecay>(rule, begin, end);
  }
}

template <bool kDecay>
void adam_squares(const AdamRule& rule, int64_t begin, int64_t rows, int64_t n, float* sums) {
  switch (adam_width()) {
    case AdamWidth::kAvx512: return adam_squares_avx512<kDecay>(rule, begin, rows, n, sums);
    case AdamWidth::kAvx2: return adam_squares_avx2<kDecay>(rule, begin, rows, n, sums);
    case AdamWidth::kSse2: return adam_squares_sse2<kDecay>(rule, begin, rows, n, sums);
  }
}

void AdamRule::operator()(int64_t begin, int64_t end) const {
  if (weight_decay != 0.0f) adam_range<true>(*this, begin, end);
  else adam_range<false>(*this, begin, end);
}

void AdamRule::update_with_squares(int64_t begin, int64_t rows, int64_t n, float* sums) const {
  if (weight_decay != 0.0f) adam_squares<true>(*this, begin, rows, n, sums);
  else adam_squares<false>(*this, begin, rows, n, sums);
}
#else
void AdamRule::operator()(int64_t begin, int64_t end) const {
  for (int64_t i = begin; i < end; ++i) element(i);
}

void AdamRule::update_with_squares(int64_t begin, int64_t rows, int64_t n, float* sums) const {
  float lanes[4][kLanes] = {};
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t first = begin + r * n;
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
      for (int l = 0; l < kLanes; ++l) {
        element(first + i + l);
        lanes[r][l] += param[first + i + l] * param[first + i + l];
      }
    for (int64_t j = i; j < n; ++j) element(first + j);
  }
  finish_squares(lanes, param + begin, rows, n, sums);
}
#endif

struct AdamaxRule {
  float* param;
  float* m;
  float* u;
  const float* grad;
  float step_size, beta1, beta2, eps, weight_decay;

  void operator()(int64_t begin, int64_t end) const;
};

WN_OPTIM_CLONES void adamax_range(float* __restrict param, float* __restrict m, float* __restrict u,
                                  const float* __restrict grad, const AdamaxRule& rule, int64_t begin, int64_t end) {
  const float step_size = rule.step_size, beta1 = rule.beta1, beta2 = rule.beta2, eps = rule.eps;
  const float weight_decay = rule.weight_decay;
  for (int64_t i = begin; i < end; ++i) {
    const float g = weight_decay != 0.0f ? grad[i] + weight_decay * param[i] : grad[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    // eps inside the max, as PyTorch has it: u never falls below eps, and the division needs no other guard.
    const float ui = std::max(beta2 * u[i], std::fabs(g) + eps);
    m[i] = mi;
    u[i] = ui;
    param[i] -= step_size * mi / ui;
  }
}

void AdamaxRule::operator()(int64_t begin, int64_t end) const { adamax_range(param, m, u, grad, *this, begin, end); }

// Sums of squares of kRows consecutive runs of n floats each (n at most kFoldBlock; run r starts at first + r * n).
// A run's sum has kLanes float lanes, element i going to lane i % kLanes for the whole groups of kLanes and the rest
// to lane 0 in order, then the lanes folded (fold_lanes): the same additions whatever the vector width, so the SSE2 and
// AVX2 clones give the same bits, and a run's sum does not depend on how many runs are summed beside it. Several runs
// at once keep their independent chains of additions side by side instead of one run's latency at a time; the lanes
// are vector variables (8 floats each, two per run): as a float array GCC kept them in memory, and every addition
// then waited on the store of the one before.
typedef float Lanes8 __attribute__((vector_size(32)));
static_assert(kLanes == 16, "rows_squares holds a run's lanes in two Lanes8");
template <int kRows>
WN_OPTIM_CLONES void rows_squares(float* out, const float* first, int64_t n) {
  Lanes8 low[kRows] = {}, high[kRows] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      Lanes8 x, y;
      std::memcpy(&x, first + r * n + i, sizeof x);
      std::memcpy(&y, first + r * n + i + 8, sizeof y);
      low[r] += x * x;
      high[r] += y * y;
    }
  static_assert(kRows <= 4, "finish_squares takes at most 4 runs");
  float lanes[kRows][kLanes];
  for (int r = 0; r < kRows; ++r) {
    std::memcpy(lanes[r], &low[r], sizeof low[r]);
    std::memcpy(lanes[r] + 8, &high[r], sizeof high[r]);
  }
  finish_squares(lanes, first, kRows, n, out);
}

// Updates `rows` (1 or 4) runs of n elements from begin with `rule`, then writes each run's sum of squares of the
// updated parameter to sums (Adam does both in one pass, update_with_squares, with the same bits).
template <class Rule>
void update_and_square(const Rule& rule, const float* param, int64_t begin, int64_t rows, int64_t n, float* sums) {
  rule(begin, begin + rows * n);
  if (rows == 4) rows_squares<4>(sums, param + begin, n);
  else rows_squares<1>(sums, param + begin, n);
}

void update_and_square(const AdamRule& rule, const float*, int64_t begin, int64_t rows, int64_t n, float* sums) {
  rule.update_with_squares(begin, rows, n, sums);
}

// A piece of the work: elements [begin, end) of tensor `tensor`. With a fused norm a unit is whole rows (several
// short ones of at most kFoldBlock elements, or one of at most kPartElements) and writes their norms itself, or one
// part of a longer row and writes that part's sum of squares to partial[partial_index]; partial_index is kWholeRows
// for the former and kNoNorm without a norm.
constexpr int64_t kNoNorm = -1, kWholeRows = -2;
struct Unit {
  int64_t tensor, begin, end, partial_index;
};

// Checks one tensor's norm output before anything is written (a multi-tensor step is all or nothing).
void check_norm_output(const OptimizerTensors& t) {
  if (t.norm_output.norm && t.norm_output.layout.elements() != t.count)
    throw std::invalid_argument("optimizer step: norm_output layout does not cover the parameter's elements");
}

bool fused_norm(const OptimizerTensors& t) { return t.norm_output.norm && t.norm_output.layout.outer == 1; }

// A row's norm from its sum of squares (its parts' sums added in order): max(sqrt, eps) in float.
inline float row_norm(double sum_of_squares, float eps) {
  return std::max(static_cast<float>(std::sqrt(sum_of_squares)), eps);
}

// Which of `threads` shares runs each unit: every tensor is split among the threads by its own elements, each thread
// taking the units whose middle falls in its slice. Where a weight's gradient was written in row bands (the
// weight-normalized Linear's always is, and its v was read the same way), each thread then updates the rows its own
// band wrote. Splitting the concatenation of all the tensors instead (contiguous runs of total / threads elements)
// gave one thread all of a layer whose gradient the other had half written, and the lines moved between the cores:
// on the 2-core VM the demo MLP's whole step ran 4-6% slower that way, plain and weight-normalized alike. A tensor of
// one unit goes to the thread with the fewest elements so far. Which thread runs a unit never changes its results.
void owners_by_tensor(std::vector<int>& owner, const std::vector<Unit>& units, int threads) {
  static thread_local std::vector<int64_t> load_scratch;  // per thread and kept, as run_steps keeps its lists
  std::vector<int64_t>& load = load_scratch;
  load.assign(static_cast<size_t>(threads), 0);
  const int64_t unit_count = static_cast<int64_t>(units.size());
  owner.assign(static_cast<size_t>(unit_count), 0);
  for (int64_t first = 0; first < unit_count;) {
    int64_t last = first;
    while (last < unit_count && units[last].tensor == units[first].tensor) ++last;
    const int64_t begin = units[first].begin, elements = units[last - 1].end - begin;
    for (int64_t u = first; u < last; ++u) {
      int share = 0;
      if (last - first == 1 || elements == 0) {
        for (int t = 1; t < threads; ++t)
          if (load[static_cast<size_t>(t)] < load[static_cast<size_t>(share)]) share = t;
      } else {
        const int64_t twice_middle = units[u].begin + units[u].end - 2 * begin;
        share = static_cast<int>(std::min<int64_t>(threads - 1, twice_middle * threads / (2 * elements)));
      }
      owner[static_cast<size_t>(u)] = share;
      load[static_cast<size_t>(share)] += units[u].end - units[u].begin;
    }
    first = last;
  }
}

// Updates every tensor, rules[i] being tensor i's update. The work is cut into units that do not depend on the
// thread count (blocks of kPartElements; with a fused norm, parts of kPartElements of each row), so each element
// and each partial sum is computed the same way whichever thread runs it and however many tensors share the call:
// one tensor alone (sgd_step, ...) and the same tensor among others (sgd_step_many, ...) give the same bits. All
// the units of all the tensors go to one parallel region: each region costs a wake-up of the pool's threads, which
// for the small tensors of a training step was worth more than their arithmetic.
template <class Rule>
void run_steps(const OptimizerTensors* tensors, int64_t tensor_count, const std::vector<Rule>& rules) {
  for (int64_t i = 0; i < tensor_count; ++i) check_norm_output(tensors[i]);
  // Kept per thread between steps: a fresh vector of a few KiB each step made glibc consolidate its fast bins (the
  // JS side frees many small blocks between two steps), 10-15 us per weight-normalized MLP step on the 2-core VM.
  // (Named through local references: the region's other threads must reach the caller's vectors, not their own.)
  static thread_local std::vector<Unit> unit_scratch;
  static thread_local std::vector<double> partial_scratch;
  std::vector<Unit>& units = unit_scratch;
  std::vector<double>& partial = partial_scratch;
  units.clear();
  partial.clear();
  int64_t total = 0;
  for (int64_t i = 0; i < tensor_count; ++i) {
    const OptimizerTensors& t = tensors[i];
    total += t.count;
    if (!fused_norm(t)) {
      for (int64_t begin = 0; begin < t.count; begin += kPartElements)
        units.push_back({i, begin, std::min(t.count, begin + kPartElements), kNoNorm});
      continue;
    }
    // Fused: channel k is the row [k * inner, (k + 1) * inner), cut into parts of kPartElements. Rows of at most
    // kFoldBlock elements are grouped, whole, into units of about kPartElements (a unit per short row cost more in
    // calls than the row's update).
    const int64_t rows = t.norm_output.layout.channels, row_length = t.norm_output.layout.inner;
    if (row_length == 0) {  // empty rows: no work, and every norm is the eps floor
      for (int64_t k = 0; k < rows; ++k) t.norm_output.norm[k] = row_norm(0.0, t.norm_output.eps);
      continue;
    }
    if (row_length <= kFoldBlock) {
      // A power of two of rows per unit: a tensor's share per thread then ends on a row that is a multiple of a
      // power of two, where the weight-gradient GEMM's row bands also end (see owners_by_tensor).
      int64_t rows_per_unit = 1;
      while (rows_per_unit * 2 * row_length <= kPartElements) rows_per_unit *= 2;
      for (int64_t row = 0; row < rows; row += rows_per_unit) {
        const int64_t row_end = std::min(rows, row + rows_per_unit);
        units.push_back({i, row * row_length, row_end * row_length, kWholeRows});
      }
      continue;
    }
    const int64_t parts = std::max<int64_t>(1, (row_length + kPartElements - 1) / kPartElements);
    if (parts == 1) {
      for (int64_t row = 0; row < rows; ++row)
        units.push_back({i, row * row_length, (row + 1) * row_length, kWholeRows});
      continue;
    }
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t part = 0; part < parts; ++part) {
        const int64_t begin = row * row_length + part * kPartElements;
        const int64_t end = row * row_length + std::min(row_length, (part + 1) * kPartElements);
        units.push_back({i, begin, end, static_cast<int64_t>(partial.size())});
        partial.push_back(0.0);
      }
  }

  auto run_unit = [&](const Unit& unit) {
    const Rule& rule = rules[unit.tensor];
    if (unit.partial_index == kNoNorm) {
      rule(unit.begin, unit.end);
      return;
    }
    const OptimizerTensors& t = tensors[unit.tensor];
    const int64_t row_length = t.norm_output.layout.inner;  // > 0: empty rows make no units
    if (row_length <= kFoldBlock) {
      // Whole short rows, four at a time: update them (elementwise: the same bits however the range is cut), then
      // their squares while they are still in L1.
      // A row of at most kFoldBlock elements is one block: its sum is that block's float sum, widened. The unit
      // writes the rows' norms itself: on the thread that has them, and no serial pass over every row after the
      // parallel region.
      const int64_t count = (unit.end - unit.begin) / row_length;
      float* norm = t.norm_output.norm + unit.begin / row_length;
      float block[4];
      for (int64_t r = 0; r < count;) {
        const int64_t rows = count - r >= 4 ? 4 : 1;
        const int64_t begin = unit.begin + r * row_length;
        update_and_square(rule, t.param, begin, rows, row_length, block);
        for (int64_t j = 0; j < rows; ++j) norm[r + j] = row_norm(block[j], t.norm_output.eps);
        r += rows;
      }
      return;
    }
    double sum = 0.0;
    for (int64_t block = unit.begin; block < unit.end; block += kFoldBlock) {
      const int64_t block_end = std::min(unit.end, block + kFoldBlock);
      float block_sum = 0.0f;
      update_and_square(rule, t.param, block, 1, block_end - block, &block_sum);
      sum += block_sum;
    }
    if (unit.partial_index == kWholeRows) t.norm_output.norm[unit.begin / row_length] = row_norm(sum, t.norm_output.eps);
    else partial[unit.partial_index] = sum;
  };

  const int threads = num_threads();
  const int64_t unit_count = static_cast<int64_t>(units.size());
  if (total >= kParallelMinElements && threads > 1 && unit_count > 1) {
    static thread_local std::vector<int> owner_scratch;
    std::vector<int>& owner = owner_scratch;
    owners_by_tensor(owner, units, threads);
    parallel_region(true, threads, [&] {
      // The team may be smaller than asked for (nested: the caller alone): its threads share the shares then.
      for (int share = team_index(); share < threads; share += team_size())
        for (int64_t u = 0; u < unit_count; ++u)
          if (owner[u] == share) run_unit(units[u]);
    });
  } else {
    for (const Unit& unit : units) run_unit(unit);
  }

  for (int64_t i = 0; i < tensor_count; ++i) {
    const OptimizerTensors& t = tensors[i];
    if (!t.norm_output.norm) continue;
    const ChannelLayout& layout = t.norm_output.layout;
    float* norm = t.norm_output.norm;
    if (!fused_norm(t)) {
      channel_dot(norm, t.param, t.param, layout);
      for (int64_t k = 0; k < layout.channels; ++k) norm[k] = std::max(std::sqrt(norm[k]), t.norm_output.eps);
    }
  }
  // The fused norms of rows cut into parts: each row's parts added in order (the partial sums are in row-major order
  // of the units). Whole rows wrote theirs in their units.
  int64_t next_partial = 0;
  for (int64_t i = 0; i < tensor_count; ++i) {
    const OptimizerTensors& t = tensors[i];
    if (!fused_norm(t)) continue;
    const int64_t rows = t.norm_output.layout.channels, row_length = t.norm_output.layout.inner;
    const int64_t parts = (row_length + kPartElements - 1) / kPartElements;
    if (row_length <= kFoldBlock || parts <= 1) continue;
    for (int64_t k = 0; k < rows; ++k) {
      double sum = 0.0;
      for (int64_t part = 0; part < parts; ++part) sum += partial[next_partial++];
      t.norm_output.norm[k] = row_norm(sum, t.norm_output.eps);
    }
  }
  // A very large model's lists are not kept between steps (the cost above is per step, not per byte).
  constexpr size_t kKeptEntries = size_t{1} << 16;
  if (units.capacity() > kKeptEntries) std::vector<Unit>().swap(units);
  if (partial.capacity() > kKeptEntries) std::vector<double>().swap(partial);
}

OptimizerTensors single(float* param, float* state1, float* state2, const float* grad, int64_t count, int64_t step,
                        const NormOutput* norm_output) {
  OptimizerTensors t;
  t.param = param;
  t.state1 = state1;
  t.state2 = state2;
  t.grad = grad;
  t.count = count;
  t.step = step;
  if (norm_output && norm_output->norm) t.norm_output = *norm_output;
  return t;
}

SgdRule sgd_rule(const OptimizerTensors& t, const SgdOptions& options) {
  return SgdRule{t.param, t.state1, t.grad, options.lr, options.momentum, 1.0f - options.dampening,
                 options.weight_decay, options.nesterov, t.step <= 1};
}

AdamRule adam_rule(const OptimizerTensors& t, const AdamOptions& options) {
  const AdamBiasCorrection correction = adam_bias_correction(options, t.step);
  return AdamRule{t.param, t.state1, t.state2, t.grad, correction.step_size, options.beta1, options.beta2,
                  correction.inv_sqrt_correction2, options.eps, options.weight_decay};
}

AdamaxRule adamax_rule(const OptimizerTensors& t, const AdamOptions& options) {
  return AdamaxRule{t.param, t.state1, t.state2, t.grad, adam_bias_correction(options, t.step).step_size,
                    options.beta1, options.beta2, options.eps, options.weight_decay};
}

template <class Rule, class Options, class MakeRule>
void run_many(const OptimizerTensors* tensors, int64_t tensor_count, const Options& options, MakeRule make_rule) {
  std::vector<Rule> rules;
  rules.reserve(static_cast<size_t>(tensor_count));
  for (int64_t i = 0; i < tensor_count; ++i) rules.push_back(make_rule(tensors[i], options));
  run_steps(tensors, tensor_count, rules);
}

}  // namespace

void sgd_step(float* param, float* velocity, const float* grad, int64_t count, const SgdOptions& options, int64_t step,
              const NormOutput* norm_output) {
  const OptimizerTensors t = single(param, velocity, nullptr, grad, count, step, norm_output);
  sgd_step_many(&t, 1, options);
}

void adam_step(float* param, float* m, float* v, const float* grad, int64_t count, const AdamOptions& options,
               int64_t step, const NormOutput* norm_output) {
  const OptimizerTensors t = single(param, m, v, grad, count, step, norm_output);
  adam_step_many(&t, 1, options);
}

void adamax_step(float* param, float* m, float* u, const float* grad, int64_t count, const AdamOptions& options,
                 int64_t step, const NormOutput* norm_output) {
  const OptimizerTensors t = single(param, m, u, grad, count, step, norm_output);
  adamax_step_many(&t, 1, options);
}

void sgd_step_many(const OptimizerTensors* tensors, int64_t tensor_count, const SgdOptions& options) {
  run_many<SgdRule>(tensors, tensor_count, options, sgd_rule);
}

void adam_step_many(const OptimizerTensors* tensors, int64_t tensor_count, const AdamOptions& options) {
  run_many<AdamRule>(tensors, tensor_count, options, adam_rule);
}

void adamax_step_many(const OptimizerTensors* tensors, int64_t tensor_count, const AdamOptions& options) {
  run_many<AdamaxRule>(tensors, tensor_count, options, adamax_rule);
}

}  // namespace weightnorm::cpu
