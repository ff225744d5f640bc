// CPU weight norm (see weightnorm.h). Layout: v is [outer, channels, inner]; one norm per channel.
//
// The plan (chunks, parts, the three walks below and their constants) is the one CPU reduction planner,
// cpu/reduction_plan.h, shared with every CPU reduction; the per-channel scalar maths is weightnorm/weightnorm_math.h,
// shared with CUDA.
//
// Work is cut into chunks of consecutive channels. When a chunk fits in L2, one thread reduces it, turns the sums
// into coefficients and writes the outputs while the chunk is still cached: each input element comes from memory
// once. Long rows (outer == 1) up to a few MB that are many enough to share out are not cut either: one thread
// reduces and writes a row while it is in L2/L3. When a chunk does not fit, or there are too few chunks to keep
// every thread busy (few very long channels, dim = null, the last dim of a tall matrix), each chunk's reduction is
// cut into parts of a fixed size, reduced in parallel, added in part order, and a second parallel pass writes the
// outputs, each thread first the parts it reduced itself (they are in its own caches). Part sizes never depend on
// the thread count, so neither does the summation order: results are bitwise identical for any number of threads.
//
// Two ways to walk a chunk:
//  segments  inner >= 32: each channel is a set of contiguous runs (whole rows for dim 0); the vector loop runs
//            along a run.
//  columns   inner < 32 (last dim, small middle dims): a run is too short to vectorize, so the loop runs along
//            the row across a chunk's channels, accumulating one sum per column; when the chunk spans whole rows
//            (all channels), consecutive rows are contiguous and several are folded into one wide row. A chunk
//            that does not fit (the last dim of a tall matrix is one chunk) is split into parts of whole rows.
//  short rows  outer == 1, inner < 32: a chunk is one contiguous run of short channels; four channels are reduced
//            side by side and the outputs are written as one run against per-element coefficients. A channel's
//            sum does not depend on the chunking here, so chunks are sized to whole output cache lines. Rows of
//            exactly 16 floats (embedding-like [N, 16]) go through one-pass AVX-512 / AVX2 kernels instead, eight
//            rows at a time, bitwise equal to this walk (see "Rows of 16 floats" below).
//  long rows  outer == 1, inner >= 32, a plan of one part, on AVX-512 CPUs: no chunks at all; each thread takes a
//            contiguous block of rows and reduces and writes one row at a time ("Long rows" below).
// On AVX-512 CPUs the inner loops of the column and short-rows walks also run AVX-512 code; every AVX-512 path
// computes the SSE2 code's expressions in the same order (same bits with or without AVX-512).
// Sums accumulate in float over at most 64-1024 products, then fold into double. Large outputs are written with
// non-temporal (streaming) stores: they bypass the cache, so the write neither evicts the cached chunk nor pays
// a read-for-ownership of the destination.
//
// Element types: every kernel below is a template on the stored element type T (float or bfloat16). A bfloat16 is
// widened to float32 as it is loaded and each output is rounded once to bfloat16 as it is stored; sums,
// coefficients and the plan are the same code for both, so bfloat16 keeps the fixed summation order too.
#include "weightnorm.h"

#include "reduction_plan.h"
#include "weightnorm/weightnorm_math.h"

#if defined(__SSE2__)
// GCC 12's AVX-512 intrinsics start from a self-initialized "undefined" register (__m512 __Y = __Y), which
// -Wmaybe-uninitialized reports wherever they are inlined into a target("avx512f") function; the diagnostic is
// decided at the header's lines, so it is silenced for the header alone.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace weightnorm::cpu {
namespace {

// How the work is cut (chunks, parts, the three walks) and its constants: reduction_plan.h.

// Element access. Widening is exact (a bfloat16 is the top half of a float32); rounding is to nearest even.
inline float widen(float x) { return x; }
inline float widen(bfloat16 x) { return bfloat16_to_float(x); }
template <class T>
T round_to(float x);
template <>
inline float round_to<float>(float x) { return x; }
template <>
inline bfloat16 round_to<bfloat16>(float x) { return float_to_bfloat16(x); }

#if defined(__SSE2__)
using Vec4 = __m128;
inline Vec4 load4(const float* p) { return _mm_loadu_ps(p); }
// Four bfloat16 into the high halves of four 32-bit lanes: the exact float32 values.
inline Vec4 load4(const bfloat16* p) {
  const __m128i halves = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), halves));
}
inline Vec4 broadcast4(float x) { return _mm_set1_ps(x); }
inline Vec4 mul4(Vec4 a, Vec4 b) { return _mm_mul_ps(a, b); }
inline Vec4 sub4(Vec4 a, Vec4 b) { return _mm_sub_ps(a, b); }

// float_to_bfloat16 on four lanes, bit for bit: add 0x7fff + lsb and keep the high half; a NaN instead gets its
// quiet bit set and no increment (which could carry it into infinity or the sign). The high half comes out
// sign-extended (arithmetic shift), so the signed-saturating pack keeps its 16 bits as they are.
// kPayloadNans false: the caller knows every NaN lane is quiet with a zero low half, and for those and every
// number the plain increment is already exact, so the NaN test is skipped.
template <bool kPayloadNans>
inline __m128i round_to_bfloat16_halves(Vec4 x) {
  __m128i word = _mm_castps_si128(x);
  const __m128i lsb = _mm_and_si128(_mm_srli_epi32(word, 16), _mm_set1_epi32(1));
  __m128i increment = _mm_add_epi32(lsb, _mm_set1_epi32(0x7fff));
  if constexpr (kPayloadNans) {
    const __m128i is_nan = _mm_castps_si128(_mm_cmpunord_ps(x, x));
    increment = _mm_andnot_si128(is_nan, increment);
    word = _mm_or_si128(word, _mm_and_si128(is_nan, _mm_set1_epi32(0x00400000)));
  }
  return _mm_srai_epi32(_mm_add_epi32(word, increment), 16);
}
template <bool kPayloadNans>
inline __m128i round_to_bfloat16x8(Vec4 low, Vec4 high) {
  return _mm_packs_epi32(round_to_bfloat16_halves<kPayloadNans>(low), round_to_bfloat16_halves<kPayloadNans>(high));
}
#endif

// Sum of a[i]*b[i] (or a[i]^2) over a contiguous run: 16 float lanes over blocks of 1024, folded into double.
template <bool kSquare, class T>
double run_dot(const T* a, const T* b, int64_t n) {
#if defined(__SSE2__)
  if (n < 4 * kLanes) {
    // Short runs (a channel of a few dozen elements): one 4-wide accumulator, so that consecutive channels' chains
    // overlap instead of each paying a long scalar dependency chain.
    __m128 acc = _mm_setzero_ps();
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      const __m128 x = load4(a + i);
      acc = _mm_add_ps(acc, _mm_mul_ps(x, kSquare ? x : load4(b + i)));
    }
    float lanes[4];
    _mm_storeu_ps(lanes, acc);
    float s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; i < n; ++i) s += kSquare ? widen(a[i]) * widen(a[i]) : widen(a[i]) * widen(b[i]);
    return s;
  }
#endif
  double total = 0.0;
  int64_t i = 0;
  while (i < n) {
    const int64_t block_end = std::min(n, i + kFoldBlock);
    float lanes[kLanes] = {};
    for (; i + kLanes <= block_end; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const float x = widen(a[i + l]);
        lanes[l] += kSquare ? x * x : x * widen(b[i + l]);
      }
    }
    for (; i < block_end; ++i) lanes[0] += kSquare ? widen(a[i]) * widen(a[i]) : widen(a[i]) * widen(b[i]);
    double block = 0.0;
    for (int l = 0; l < kLanes; ++l) block += lanes[l];
    total += block;
  }
  return total;
}

template <class T>
double dot_dispatch(const T* a, const T* b, int64_t n) {
  return a == b ? run_dot<true>(a, b, n) : run_dot<false>(a, b, n);
}

// dst[i] = scalar(i) for i < n. With kStream, the aligned body goes through non-temporal 16-byte stores of
// vector4(i) (4 outputs at once), and each 64-byte line written prefetches the line `prefetch_distance` elements
// ahead in the inputs (the next chunk this thread will reduce), so its reads overlap these writes.
// numeric_coefficients: unused here (float outputs are not rounded); see the bfloat16 overload.
template <bool kStream, class Vector4, class Scalar>
inline void store_run(float* dst, int64_t n, Vector4&& vector4, Scalar&& scalar, const float* prefetch_a,
                      const float* prefetch_b, bool /*numeric_coefficients*/) {
  int64_t i = 0;
#if defined(__SSE2__)
  if constexpr (kStream) {
    for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 15) != 0; ++i) dst[i] = scalar(i);
    for (; i + 4 <= n; i += 4) {
      if (prefetch_a && (i & 15) == 0) {
        _mm_prefetch(reinterpret_cast<const char*>(prefetch_a + i), _MM_HINT_T0);
        if (prefetch_b) _mm_prefetch(reinterpret_cast<const char*>(prefetch_b + i), _MM_HINT_T0);
      }
      _mm_stream_ps(dst + i, vector4(i));
    }
  }
#else
  (void)vector4;
  (void)prefetch_a;
  (void)prefetch_b;
#endif
  for (; i < n; ++i) dst[i] = scalar(i);
}

// The same for bfloat16 outputs: each float32 result rounded once. The vector body always runs (the compiler does
// not vectorize the rounding), 8 outputs per 16-byte store from vector4(i) and vector4(i + 4).
// numeric_coefficients: no coefficient of the run is NaN. Then every NaN result is quiet with a zero low half: it
// is a bfloat16 input's NaN (widened, then quieted by the arithmetic) or the default NaN. Only a NaN coefficient
// (from a NaN g or norm with any payload) can carry other bits, and only then is the NaN test needed.
template <bool kStream, class Vector4, class Scalar>
inline void store_run(bfloat16* dst, int64_t n, Vector4&& vector4, Scalar&& scalar, const bfloat16* prefetch_a,
                      const bfloat16* prefetch_b, bool numeric_coefficients) {
  int64_t i = 0;
#if defined(__SSE2__)
  if constexpr (kStream) {
    for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 15) != 0; ++i) dst[i] = float_to_bfloat16(scalar(i));
  }
  auto vector_body = [&](auto payload_nans) {
    for (; i + 8 <= n; i += 8) {
      __m128i* out = reinterpret_cast<__m128i*>(dst + i);
      const __m128i packed = round_to_bfloat16x8<decltype(payload_nans)::value>(vector4(i), vector4(i + 4));
      if constexpr (kStream) {
        if (prefetch_a && (i & 31) == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(prefetch_a + i), _MM_HINT_T0);
          if (prefetch_b) _mm_prefetch(reinterpret_cast<const char*>(prefetch_b + i), _MM_HINT_T0);
        }
        _mm_stream_si128(out, packed);
      } else {
        _mm_storeu_si128(out, packed);
      }
    }
  };
  if (numeric_coefficients) {
    vector_body(std::false_type{});
  } else {
    vector_body(std::true_type{});
  }
#else
  (void)numeric_coefficients;
  (void)vector4;
  (void)prefetch_a;
  (void)prefetch_b;
#endif
  for (; i < n; ++i) dst[i] = float_to_bfloat16(scalar(i));
}

inline void prefetch(const void* p) {
#if defined(__SSE2__)
  _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
#else
  (void)p;
#endif
}

// Streaming stores are weakly ordered: fence before another thread (or the caller) may read the outputs.
inline void finish_streaming() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// AVX-512 building blocks (x86-64 with GCC or Clang; the kernels run only where the CPU has AVX-512F). Each computes
// the same expression, in the same order, as the SSE2 / scalar code it stands in for, so the results do not depend
// on which one runs.

#if defined(__x86_64__) && defined(__GNUC__)
#define WEIGHTNORM_X86_KERNELS 1
// AVX-512F and AVX2 imply FMA to GCC, which would then contract c1 * dw - c2 * v into one fused operation (other
// bits than the general walk's): contraction stays off in these functions. Clang contracts only within one source
// expression, never across the intrinsics' calls, and has no optimize attribute.
#if defined(__clang__)
#define WN_AVX512 __attribute__((target("avx512f")))
#define WN_AVX2 __attribute__((target("avx2")))
#else
#define WN_AVX512 __attribute__((target("avx512f"), optimize("fp-contract=off")))
#define WN_AVX2 __attribute__((target("avx2"), optimize("fp-contract=off")))
#endif
#endif

// Whether the long-rows kernels run: on AVX-512 CPUs, unless set_weightnorm_vector_isa forced "none".
bool g_avx512_forced_off = false;

bool avx512_supported() {
#ifdef WEIGHTNORM_X86_KERNELS
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return supported;
#else
  return false;
#endif
}

bool avx512_enabled() { return avx512_supported() && !g_avx512_forced_off; }

#ifdef WEIGHTNORM_X86_KERNELS
WN_AVX512 inline __m512 load16_avx512(const float* p) { return _mm512_loadu_ps(p); }
// Sixteen bfloat16 into the high halves of sixteen 32-bit lanes: the exact float32 values.
WN_AVX512 inline __m512 load16_avx512(const bfloat16* p) {
  const __m512i halves = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(halves, 16));
}

// sum + x * y, one lane, never contracted.
WN_AVX512 inline float add_product(float sum, float x, float y) {
  return _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(sum), _mm_mul_ss(_mm_set_ss(x), _mm_set_ss(y))));
}

// Output i of a row: c1 * a[i] (kBackward false) or c1 * a[i] - c2 * b[i], never contracted, rounded to T.
template <bool kBackward, class T>
WN_AVX512 inline T row_element(const T* a, const T* b, float c1, float c2, int64_t i) {
  const __m128 first = _mm_mul_ss(_mm_set_ss(c1), _mm_set_ss(widen(a[i])));
  if (!kBackward) return round_to<T>(_mm_cvtss_f32(first));
  return round_to<T>(_mm_cvtss_f32(_mm_sub_ss(first, _mm_mul_ss(_mm_set_ss(c2), _mm_set_ss(widen(b[i]))))));
}

// run_dot on AVX-512 (kSquare: b is a), bitwise equal.
template <bool kSquare, class T>
WN_AVX512 double run_dot_avx512(const T* a, const T* b, int64_t n) {
  static_assert(kLanes == 16, "one AVX-512 register holds run_dot's lanes");
  if (n < 4 * kLanes) return run_dot<kSquare>(a, b, n);
  alignas(64) float lanes[kLanes];
  double total = 0.0;
  int64_t i = 0;
  while (i < n) {
    const int64_t block_end = std::min(n, i + kFoldBlock);
    __m512 sums = _mm512_setzero_ps();
    for (; i + kLanes <= block_end; i += kLanes) {
      const __m512 x = load16_avx512(a + i);
      sums = _mm512_add_ps(sums, _mm512_mul_ps(x, kSquare ? x : load16_avx512(b + i)));
    }
    _mm512_store_ps(lanes, sums);
    for (; i < block_end; ++i) lanes[0] = add_product(lanes[0], widen(a[i]), widen(kSquare ? a[i] : b[i]));
    double block = 0.0;
    for (int l = 0; l < kLanes; ++l) block += lanes[l];
    total += block;
  }
  return total;
}

// float_to_bfloat16 on sixteen lanes, bit for bit (NaNs quieted, never incremented).
WN_AVX512 inline __m256i round_to_bfloat16x16(__m512 x) {
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __m512i word = _mm512_mask_or_epi32(_mm512_castps_si512(x), nan, _mm512_castps_si512(x),
                                            _mm512_set1_epi32(0x00400000));
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(word, 16), _mm512_set1_epi32(1));
  const __m512i increment = _mm512_maskz_add_epi32(static_cast<__mmask16>(~nan), lsb, _mm512_set1_epi32(0x7fff));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_add_epi32(word, increment), 16));
}

// c1 * a (kBackward false) or c1 * a - c2 * b on sixteen elements.
template <bool kBackward, class T>
WN_AVX512 inline __m512 combine16_avx512(const T* a, const T* b, __m512 c1, __m512 c2) {
  const __m512 first = _mm512_mul_ps(c1, load16_avx512(a));
  return kBackward ? _mm512_sub_ps(first, _mm512_mul_ps(c2, load16_avx512(b))) : first;
}

// out[i] = c1 * a[i] (kBackward false) or c1 * a[i] - c2 * b[i] for i < n, one 64-byte line per step; stream:
// non-temporal stores, after single elements up to the first line boundary. next (or nullptr): the input of the row
// this thread does next, prefetched a line per line written, so that its reads overlap these writes (the hardware
// prefetchers stop at each 4 KB page, and a row of a Linear is often one page). The forward passes it; the backward
// does not (see backward_long_rows_avx512).
template <bool kBackward, class T>
WN_AVX512 void write_row_avx512(T* out, const T* a, const T* b, float c1, float c2, int64_t n, bool stream,
                                const T* next) {
  constexpr int64_t kLine = 64 / sizeof(T);
  int64_t i = 0;
  if (stream)
    for (; i < n && (reinterpret_cast<uintptr_t>(out + i) & 63) != 0; ++i) out[i] = row_element<kBackward>(a, b, c1, c2, i);
  const __m512 k1 = _mm512_set1_ps(c1), k2 = _mm512_set1_ps(c2);
  for (; i + kLine <= n; i += kLine) {
    if (next) _mm_prefetch(reinterpret_cast<const char*>(next + i), _MM_HINT_T0);
    __m512 line;
    if constexpr (std::is_same_v<T, float>) {
      line = combine16_avx512<kBackward>(a + i, b + i, k1, k2);
    } else {
      const __m256i low = round_to_bfloat16x16(combine16_avx512<kBackward>(a + i, b + i, k1, k2));
      const __m256i high = round_to_bfloat16x16(combine16_avx512<kBackward>(a + i + 16, b + i + 16, k1, k2));
      line = _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1));
    }
    if (stream) _mm512_stream_ps(reinterpret_cast<float*>(out + i), line);
    else _mm512_storeu_ps(reinterpret_cast<float*>(out + i), line);
  }
  for (; i < n; ++i) out[i] = row_element<kBackward>(a, b, c1, c2, i);
}

// partial[c] += a[c] * b[c] (kSquare: a[c]^2) for c < length: reduce_columns' step over one wide row, prefetching
// kPrefetchBytes ahead once per cache line of input.
template <bool kSquare, class T>
WN_AVX512 void accumulate_columns_avx512(float* partial, const T* a, const T* b, int64_t length) {
  constexpr int64_t kLine = 64 / sizeof(T), kAhead = kPrefetchBytes / sizeof(T);
  int64_t c = 0;
  for (; c + 16 <= length; c += 16) {
    if (c % kLine == 0) {
      _mm_prefetch(reinterpret_cast<const char*>(a + c + kAhead), _MM_HINT_T0);
      if (!kSquare) _mm_prefetch(reinterpret_cast<const char*>(b + c + kAhead), _MM_HINT_T0);
    }
    const __m512 x = load16_avx512(a + c);
    const __m512 y = kSquare ? x : load16_avx512(b + c);
    _mm512_storeu_ps(partial + c, _mm512_add_ps(_mm512_loadu_ps(partial + c), _mm512_mul_ps(x, y)));
  }
  for (; c < length; ++c) partial[c] = add_product(partial[c], widen(a[c]), widen(kSquare ? a[c] : b[c]));
}

// s1 * a (kBackward false) or s1 * a - s2 * b on sixteen elements with their own coefficients.
template <bool kBackward, class T>
WN_AVX512 inline __m512 expanded16_avx512(const T* a, const T* b, const float* s1, const float* s2) {
  const __m512 first = _mm512_mul_ps(_mm512_loadu_ps(s1), load16_avx512(a));
  if constexpr (kBackward) return _mm512_sub_ps(first, _mm512_mul_ps(_mm512_loadu_ps(s2), load16_avx512(b)));
  return first;
}

// store_expanded_run on AVX-512: out[c] = s1[c] * a[c] (- s2[c] * b[c]) for c < length, one 64-byte line per step;
// stream: non-temporal stores after single elements up to the first line boundary, and the lines of next_a (and
// next_b) at the same offsets prefetched as each line is written.
template <bool kBackward, class T>
WN_AVX512 void store_expanded_run_avx512(T* out, int64_t length, const float* s1, const float* s2, const T* a,
                                         const T* b, const T* next_a, const T* next_b, bool stream) {
  constexpr int64_t kLine = 64 / sizeof(T);
  int64_t c = 0;
  auto element = [&](int64_t i) { return row_element<kBackward>(a + i, b + i, s1[i], kBackward ? s2[i] : 0.0f, 0); };
  if (stream)
    for (; c < length && (reinterpret_cast<uintptr_t>(out + c) & 63) != 0; ++c) out[c] = element(c);
  for (; c + kLine <= length; c += kLine) {
    if (stream && next_a) {
      _mm_prefetch(reinterpret_cast<const char*>(next_a + c), _MM_HINT_T0);
      if (next_b) _mm_prefetch(reinterpret_cast<const char*>(next_b + c), _MM_HINT_T0);
    }
    __m512 line;
    if constexpr (std::is_same_v<T, float>) {
      line = expanded16_avx512<kBackward>(a + c, b + c, s1 + c, s2 + c);
    } else {
      const __m256i low = round_to_bfloat16x16(expanded16_avx512<kBackward>(a + c, b + c, s1 + c, s2 + c));
      const __m256i high =
          round_to_bfloat16x16(expanded16_avx512<kBackward>(a + c + 16, b + c + 16, s1 + c + 16, s2 + c + 16));
      line = _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1));
    }
    if (stream) _mm512_stream_ps(reinterpret_cast<float*>(out + c), line);
    else _mm512_storeu_ps(reinterpret_cast<float*>(out + c), line);
  }
  for (; c < length; ++c) out[c] = element(c);
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// Segment mode walks runs (visit_runs), column mode wide rows (visit_wide_rows): reduction_plan.h.

bool no_nan(const float* values, int64_t count) {
  bool numbers = true;
  for (int64_t i = 0; i < count; ++i) numbers &= values[i] == values[i];
  return numbers;
}

// The coefficient of each column of a wide row (nested loops: no division per column).
void expand_columns(float* columns, const float* per_channel, const ChannelLayout& layout, const Region& region,
                    const ColumnWalk& walk) {
  int64_t c = 0;
  for (int64_t row = 0; row < walk.width / walk.span; ++row)
    for (int64_t j = 0; j < region.channels(); ++j)
      for (int64_t i = 0; i < layout.inner; ++i) columns[c++] = per_channel[region.k_begin + j];
}

// sums[j] = sum over the region of a*b for channel k_begin + j.
template <bool kSquare, class T>
void reduce_columns(double* sums, const T* a, const T* b, const ChannelLayout& layout, const Region& region) {
  const ColumnWalk walk = column_walk(layout, region);
  // Aligned: the AVX-512 step loads and stores a whole cache line of partial sums per input line, and a store split
  // across two lines costs twice (an unaligned stack array made the column reduction 10-15% slower).
  alignas(64) float partial[kMaxColumns];
  alignas(64) double total[kMaxColumns];
  std::fill(partial, partial + walk.width, 0.0f);
  std::fill(total, total + walk.width, 0.0);
  int64_t rows_in_partial = 0;
  visit_wide_rows(layout, region, walk, [&](int64_t offset, int64_t length) {
    const T* pa = a + offset;
    const T* pb = b + offset;
    // One cache line per step, each prefetching the line kPrefetchBytes ahead: a lone read pass over memory is
    // latency-bound on two cores without it.
    constexpr int64_t kLine = 64 / sizeof(T);
    constexpr int64_t kAhead = kPrefetchBytes / sizeof(T);
    int64_t c = 0;
#ifdef WEIGHTNORM_X86_KERNELS
    if (avx512_enabled()) {
      accumulate_columns_avx512<kSquare>(partial, pa, pb, length);
      c = length;
    }
#endif
    for (; c + kLine <= length; c += kLine) {
      prefetch(pa + c + kAhead);
      if (!kSquare) prefetch(pb + c + kAhead);
#if defined(__SSE2__)
      for (int64_t l = c; l < c + kLine; l += 4) {
        const Vec4 x = load4(pa + l);
        _mm_storeu_ps(partial + l, _mm_add_ps(_mm_loadu_ps(partial + l), mul4(x, kSquare ? x : load4(pb + l))));
      }
#else
      for (int64_t l = c; l < c + kLine; ++l) {
        const float x = widen(pa[l]);
        partial[l] += kSquare ? x * x : x * widen(pb[l]);
      }
#endif
    }
    for (; c < length; ++c) {
      const float x = widen(pa[c]);
      partial[c] += kSquare ? x * x : x * widen(pb[c]);
    }
    if (++rows_in_partial == kFoldRows) {
      for (int64_t c = 0; c < walk.width; ++c) total[c] += partial[c];
      std::fill(partial, partial + walk.width, 0.0f);
      rows_in_partial = 0;
    }
  });
  for (int64_t c = 0; c < walk.width; ++c) total[c] += partial[c];
  std::fill(sums, sums + region.channels(), 0.0);
  int64_t c = 0;
  for (int64_t row = 0; row < walk.width / walk.span; ++row)
    for (int64_t j = 0; j < region.channels(); ++j)
      for (int64_t i = 0; i < layout.inner; ++i) sums[j] += total[c++];
}

// ---------------------------------------------------------------------------------------------------------------
// Short rows: outer == 1 and inner < kSegmentMinInner, so a region is one contiguous run of many short channels
// (an embedding-like [N, 16] with dim 0). Per-run calls would cost more than the run's arithmetic; instead four
// channels are reduced side by side, and the outputs are written as one run against coefficients expanded per
// element, as in column mode.

// sums[j] = sum of a*b over channel k_begin + j (inner elements from (k_begin + j) * inner). A channel's sum is
// the same expression wherever it falls in a group of four: lane l of its 4-wide accumulator takes elements
// l, l + 4, ...; the lanes add as (l0 + l2) + (l1 + l3); the inner % 4 trailing products follow in order.
template <bool kSquare, class T>
void reduce_short_rows(double* sums, const T* a, const T* b, int64_t inner, const Region& region) {
  const int64_t count = region.channels();
  const int64_t body = inner / 4 * 4;
  const T* pa = a + region.k_begin * inner;
  const T* pb = b + region.k_begin * inner;
  for (int64_t j0 = 0; j0 < count; j0 += 4) {
    const int64_t group = std::min<int64_t>(4, count - j0);
    float s[4];
#if defined(__SSE2__)
    Vec4 acc[4];
    for (int64_t l = 0; l < 4; ++l) {
      acc[l] = _mm_setzero_ps();
      if (l >= group) continue;
      const T* x = pa + (j0 + l) * inner;
      const T* y = pb + (j0 + l) * inner;
      for (int64_t i = 0; i < body; i += 4) {
        const Vec4 xv = load4(x + i);
        acc[l] = _mm_add_ps(acc[l], mul4(xv, kSquare ? xv : load4(y + i)));
      }
    }
    // Transpose so that lane l holds channel j0 + l: [a0+a2, b0+b2, c0+c2, d0+d2] + [a1+a3, b1+b3, c1+c3, d1+d3].
    const Vec4 ab = _mm_add_ps(_mm_unpacklo_ps(acc[0], acc[1]), _mm_unpackhi_ps(acc[0], acc[1]));
    const Vec4 cd = _mm_add_ps(_mm_unpacklo_ps(acc[2], acc[3]), _mm_unpackhi_ps(acc[2], acc[3]));
    _mm_storeu_ps(s, _mm_add_ps(_mm_movelh_ps(ab, cd), _mm_movehl_ps(cd, ab)));
#else
    for (int64_t l = 0; l < group; ++l) {
      const T* x = pa + (j0 + l) * inner;
      const T* y = pb + (j0 + l) * inner;
      float lanes[4] = {};
      for (int64_t i = 0; i < body; i += 4)
        for (int q = 0; q < 4; ++q) lanes[q] += kSquare ? widen(x[i + q]) * widen(x[i + q]) : widen(x[i + q]) * widen(y[i + q]);
      s[l] = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
    }
#endif
    for (int64_t l = 0; l < group; ++l) {
      const T* x = pa + (j0 + l) * inner;
      const T* y = pb + (j0 + l) * inner;
      float sum = s[l];
      for (int64_t i = body; i < inner; ++i) sum += kSquare ? widen(x[i]) * widen(x[i]) : widen(x[i]) * widen(y[i]);
      sums[j0 + l] = sum;
    }
  }
}

// columns[e] = per_channel[k_begin + e / inner] for the block's elements; each channel is written as whole 4-wide
// broadcasts (the overhang is overwritten by the next channel; columns has 4 floats of slack).
void expand_short_rows(float* columns, const float* per_channel, int64_t inner, int64_t k_begin, int64_t count) {
  for (int64_t j = 0; j < count; ++j) {
    float* out = columns + j * inner;
#if defined(__SSE2__)
    const Vec4 value = broadcast4(per_channel[k_begin + j]);
    for (int64_t i = 0; i < inner; i += 4) _mm_storeu_ps(out + i, value);
#else
    for (int64_t i = 0; i < inner; ++i) out[i] = per_channel[k_begin + j];
#endif
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Both modes.

template <class T>
void reduce_region(double* sums, const T* a, const T* b, const ChannelLayout& layout, const Region& region,
                   const ReductionPlan& plan) {
  if (plan.column_mode) {
    if (a == b) return reduce_columns<true>(sums, a, b, layout, region);
    return reduce_columns<false>(sums, a, b, layout, region);
  }
  if (plan.short_rows) {
    if (a == b) return reduce_short_rows<true>(sums, a, b, layout.inner, region);
    return reduce_short_rows<false>(sums, a, b, layout.inner, region);
  }
  std::fill(sums, sums + region.channels(), 0.0);
  visit_runs(layout, region, [&](int64_t offset, int64_t len, int64_t j) { sums[j] += dot_dispatch(a + offset, b + offset, len); });
}

// out[c] = s1[c] * a[c] (kBackward false) or s1[c] * a[c] - s2[c] * b[c] for c < length: a run written against
// coefficients already expanded to one per element (short rows and column mode). next_a, next_b: prefetch targets.
template <bool kBackward, bool kStream, class T>
void store_expanded_run(T* out, int64_t length, const float* s1, const float* s2, const T* pa, const T* pb,
                        const T* next_a, const T* next_b, bool numeric_coefficients) {
#ifdef WEIGHTNORM_X86_KERNELS
  if (avx512_enabled())
    return store_expanded_run_avx512<kBackward>(out, length, s1, s2, pa, pb, next_a, next_b, kStream);
#endif
  if constexpr (kBackward) {
    store_run<kStream>(
        out, length,
#if defined(__SSE2__)
        [&](int64_t c) { return sub4(mul4(load4(s1 + c), load4(pa + c)), mul4(load4(s2 + c), load4(pb + c))); },
#else
        0,
#endif
        [&](int64_t c) { return s1[c] * widen(pa[c]) - s2[c] * widen(pb[c]); }, next_a, next_b,
        numeric_coefficients);
  } else {
    store_run<kStream>(
        out, length,
#if defined(__SSE2__)
        [&](int64_t c) { return mul4(load4(s1 + c), load4(pa + c)); },
#else
        0,
#endif
        [&](int64_t c) { return s1[c] * widen(pa[c]); }, next_a, nullptr, numeric_coefficients);
  }
}

// write_region for short rows: blocks of channels written as one run against expanded coefficients.
template <bool kBackward, bool kStream, class T>
void write_short_rows(T* out, const T* a, const T* b, const float* c1, const float* c2, const ChannelLayout& layout,
                      const Region& region, int64_t prefetch_distance) {
  constexpr bool kRoundsOutputs = sizeof(T) == 2;
  const int64_t block = short_rows_block(layout.inner);
  alignas(64) float s1[kMaxColumns], s2[kMaxColumns];
  for (int64_t k = region.k_begin; k < region.k_end; k += block) {
    const int64_t count = std::min(block, region.k_end - k);
    expand_short_rows(s1, c1, layout.inner, k, count);
    if (kBackward) expand_short_rows(s2, c2, layout.inner, k, count);
    const bool numeric_coefficients = kRoundsOutputs && no_nan(c1 + k, count) && (!kBackward || no_nan(c2 + k, count));
    const int64_t offset = k * layout.inner;
    const T* pa = a + offset;
    const T* pb = b + offset;
    const T* next_a = prefetch_distance ? pa + prefetch_distance : nullptr;
    const T* next_b = prefetch_distance && kBackward ? pb + prefetch_distance : nullptr;
    store_expanded_run<kBackward, kStream>(out + offset, count * layout.inner, s1, s2, pa, pb, next_a, next_b,
                                           numeric_coefficients);
  }
}

// out = c1[channel] * a (kBackward false) or c1[channel] * a - c2[channel] * b (kBackward true) over the region.
// prefetch_distance: elements from a run to the same place in this thread's next chunk (0: no prefetch).
template <bool kBackward, bool kStream, class T>
void write_region(T* out, const T* a, const T* b, const float* c1, const float* c2, const ChannelLayout& layout,
                  const Region& region, bool short_rows, bool column_mode, int64_t prefetch_distance) {
  constexpr bool kRoundsOutputs = sizeof(T) == 2;
  if (short_rows) {
    write_short_rows<kBackward, kStream>(out, a, b, c1, c2, layout, region, prefetch_distance);
  } else if (column_mode) {
    const ColumnWalk walk = column_walk(layout, region);
    // Aligned like reduce_columns' sums: one whole line of coefficients per line of output.
    alignas(64) float s1[kMaxColumns], s2[kMaxColumns];
    expand_columns(s1, c1, layout, region, walk);
    if (kBackward) expand_columns(s2, c2, layout, region, walk);
    const bool numeric_coefficients = kRoundsOutputs && no_nan(c1 + region.k_begin, region.channels()) &&
                                      (!kBackward || no_nan(c2 + region.k_begin, region.channels()));
    visit_wide_rows(layout, region, walk, [&](int64_t offset, int64_t length) {
      const T* pa = a + offset;
      const T* pb = b + offset;
      const T* next_a = prefetch_distance ? pa + prefetch_distance : nullptr;
      const T* next_b = prefetch_distance && kBackward ? pb + prefetch_distance : nullptr;
      // The wide row starts at a column-0 boundary, so output c uses coefficient c.
      store_expanded_run<kBackward, kStream>(out + offset, length, s1, s2, pa, pb, next_a, next_b,
                                             numeric_coefficients);
    });
  } else {
    visit_runs(layout, region, [&](int64_t offset, int64_t len, int64_t j) {
      const float k1 = c1[region.k_begin + j];
      const T* pa = a + offset;
      const T* pb = b + offset;
      const T* next_a = prefetch_distance ? pa + prefetch_distance : nullptr;
      const T* next_b = prefetch_distance && kBackward ? pb + prefetch_distance : nullptr;
      if constexpr (kBackward) {
        const float k2 = c2[region.k_begin + j];
        store_run<kStream>(
            out + offset, len,
#if defined(__SSE2__)
            [&, v1 = broadcast4(k1), v2 = broadcast4(k2)](int64_t i) {
              return sub4(mul4(v1, load4(pa + i)), mul4(v2, load4(pb + i)));
            },
#else
            0,
#endif
            [&](int64_t i) { return k1 * widen(pa[i]) - k2 * widen(pb[i]); }, next_a, next_b,
            !std::isnan(k1) && !std::isnan(k2));
      } else {
        store_run<kStream>(
            out + offset, len,
#if defined(__SSE2__)
            [&, v1 = broadcast4(k1)](int64_t i) { return mul4(v1, load4(pa + i)); },
#else
            0,
#endif
            [&](int64_t i) { return k1 * widen(pa[i]); }, next_a, nullptr, !std::isnan(k1));
      }
    });
  }
  if (kStream) finish_streaming();
}

template <bool kBackward, class T>
void write_region(T* out, const T* a, const T* b, const float* c1, const float* c2, const ChannelLayout& layout,
                  const Region& region, const ReductionPlan& plan) {
  if (plan.streaming)
    return write_region<kBackward, true>(out, a, b, c1, c2, layout, region, plan.short_rows, plan.column_mode,
                                                plan.prefetch_distance);
  write_region<kBackward, false>(out, a, b, c1, c2, layout, region, plan.short_rows, plan.column_mode, 0);
}

float floored_norm(double sum_of_squares, float eps) {
  return std::max(static_cast<float>(std::sqrt(sum_of_squares)), eps);
}

// floored_norm and g / norm for a chunk's channels; two lanes of the same double sqrt and float division at once
// (max(eps, x) keeps a NaN x, as std::max(x, eps) does).
void forward_coefficients(float* norm, float* scale, const double* sums, const float* g, int64_t count, float eps) {
  int64_t k = 0;
#if defined(__SSE2__)
  const __m128 floor = _mm_set1_ps(eps);
  for (; k + 4 <= count; k += 4) {
    const __m128 low = _mm_cvtpd_ps(_mm_sqrt_pd(_mm_loadu_pd(sums + k)));
    const __m128 high = _mm_cvtpd_ps(_mm_sqrt_pd(_mm_loadu_pd(sums + k + 2)));
    const __m128 floored = _mm_max_ps(floor, _mm_movelh_ps(low, high));
    _mm_storeu_ps(norm + k, floored);
    _mm_storeu_ps(scale + k, _mm_div_ps(_mm_loadu_ps(g + k), floored));
  }
#endif
  for (; k < count; ++k) {
    norm[k] = floored_norm(sums[k], eps);
    scale[k] = g_over_norm(g[k], norm[k]);
  }
}

// Coefficients of the backward: dv = c1*dw - c2*v, with dg = dot / norm.
void backward_coefficients(float* dg, float* c1, float* c2, double dot, float g, float norm, float eps) {
  const double n = norm;
  dg[0] = static_cast<float>(dot / n);
  c1[0] = g_over_norm(g, norm);
  c2[0] = weightnorm_projection_active(norm, eps) ? static_cast<float>(weightnorm_projection_from_dot(g, dot, n)) : 0.0f;
}

// backward_coefficients for a chunk's channels, two lanes of the same double arithmetic at once.
void backward_chunk_coefficients(float* dg, float* c1, float* c2, const double* dots, const float* g,
                                 const float* norm, int64_t count, float eps) {
  int64_t k = 0;
#if defined(__SSE2__)
  auto load2 = [](const float* p) { return _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); };
  auto store2 = [](float* p, __m128 x) { _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_castps_si128(x)); };
  const __m128 floor = _mm_set1_ps(eps);
  for (; k + 2 <= count; k += 2) {
    const __m128 norm_f = load2(norm + k);
    const __m128d n = _mm_cvtps_pd(norm_f), gd = _mm_cvtps_pd(load2(g + k)), dot = _mm_loadu_pd(dots + k);
    store2(dg + k, _mm_cvtpd_ps(_mm_div_pd(dot, n)));
    store2(c1 + k, _mm_cvtpd_ps(_mm_div_pd(gd, n)));
    const __m128 second = _mm_cvtpd_ps(_mm_div_pd(_mm_mul_pd(gd, dot), _mm_mul_pd(_mm_mul_pd(n, n), n)));
    store2(c2 + k, _mm_and_ps(_mm_cmpgt_ps(norm_f, floor), second));
  }
#endif
  for (; k < count; ++k) backward_coefficients(dg + k, c1 + k, c2 + k, dots[k], g[k], norm[k], eps);
}

// ---------------------------------------------------------------------------------------------------------------
// Rows of 16 floats (outer == 1, inner == 16: embedding-like tables, [N, 16] with dim 0), one pass. A row is one
// AVX-512 register or two AVX2 ones, so eight rows are loaded, reduced together with vector shuffles, turned into
// eight coefficients at once and written (from registers, or from L1 where registers run out) with one broadcast
// coefficient per row: each element comes from memory once, where the general short-rows walk above re-reads its
// chunk from L2, works out the coefficients two at a time and expands them per element. The sums are the same
// expressions, in the same order, as reduce_short_rows; the coefficients the same double maths as
// forward_coefficients and backward_chunk_coefficients; the outputs the same products as store_expanded_run, with
// no FMA contraction (see WN_AVX512): the results are bitwise those of the general walk, whichever path a row
// takes, on any CPU.

constexpr int64_t kRows16 = 16;      // inner of the rows these kernels take
constexpr int64_t kRows16Group = 8;  // rows per step: eight sums fill one register of float lanes

// One instruction set's kernels over rows [0, count) (count a multiple of kRows16Group); stream: non-temporal
// stores (out 64-byte aligned).
struct Rows16Kernels {
  const char* isa;
  void (*forward)(float* w, float* norm, const float* v, const float* g, int64_t count, float eps, bool stream);
  void (*backward)(float* dv, float* dg, const float* dw, const float* v, const float* g, const float* norm,
                   int64_t count, float eps, bool stream);
};

#ifdef WEIGHTNORM_X86_KERNELS

// Eight rows' coefficients from their sums (in row order), four double lanes at a time: forward_coefficients'
// norm = max(eps, sqrt(sum)) and scale = g / norm.
WN_AVX2 inline void forward_coefficients8(float* norm, float* scale, __m256 sums, const float* g, float eps) {
  const __m128 low = _mm256_cvtpd_ps(_mm256_sqrt_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(sums))));
  const __m128 high = _mm256_cvtpd_ps(_mm256_sqrt_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(sums, 1))));
  const __m256 floored = _mm256_max_ps(_mm256_set1_ps(eps), _mm256_insertf128_ps(_mm256_castps128_ps256(low), high, 1));
  _mm256_storeu_ps(norm, floored);
  _mm256_storeu_ps(scale, _mm256_div_ps(_mm256_loadu_ps(g), floored));
}

// backward_chunk_coefficients on eight rows: dg = dot / norm, c1 = g / norm, c2 = g * dot / norm^3 (0 where
// norm <= eps), in double.
WN_AVX2 inline void backward_coefficients8(float* dg, float* c1, float* c2, __m256 dots, const float* g,
                                           const float* norm, float eps) {
  const __m256 norm_f = _mm256_loadu_ps(norm), g_f = _mm256_loadu_ps(g);
  __m256d dot[2], n[2], gd[2];  // low and high four lanes, widened (lambdas would not inherit the target)
  dot[0] = _mm256_cvtps_pd(_mm256_castps256_ps128(dots)), dot[1] = _mm256_cvtps_pd(_mm256_extractf128_ps(dots, 1));
  n[0] = _mm256_cvtps_pd(_mm256_castps256_ps128(norm_f)), n[1] = _mm256_cvtps_pd(_mm256_extractf128_ps(norm_f, 1));
  gd[0] = _mm256_cvtps_pd(_mm256_castps256_ps128(g_f)), gd[1] = _mm256_cvtps_pd(_mm256_extractf128_ps(g_f, 1));
  for (int h = 0; h < 2; ++h) {
    _mm_storeu_ps(dg + 4 * h, _mm256_cvtpd_ps(_mm256_div_pd(dot[h], n[h])));
    _mm_storeu_ps(c1 + 4 * h, _mm256_cvtpd_ps(_mm256_div_pd(gd[h], n[h])));
    _mm_storeu_ps(c2 + 4 * h, _mm256_cvtpd_ps(_mm256_div_pd(_mm256_mul_pd(gd[h], dot[h]),
                                                            _mm256_mul_pd(_mm256_mul_pd(n[h], n[h]), n[h]))));
  }
  const __m256 active = _mm256_cmp_ps(norm_f, _mm256_set1_ps(eps), _CMP_GT_OQ);
  _mm256_storeu_ps(c2, _mm256_and_ps(active, _mm256_loadu_ps(c2)));
}

// Four rows of products p0..p3 summed as reduce_short_rows adds them: quarter q of a row is lanes 4q..4q+3; lane l
// sums ((q0 + q1) + q2) + q3, and the row's sum is (l0 + l2) + (l1 + l3), in lane 0 of its 128-bit block.
WN_AVX512 inline __m512 row_sums4_avx512(__m512 p0, __m512 p1, __m512 p2, __m512 p3) {
  const __m512 low01 = _mm512_shuffle_f32x4(p0, p1, _MM_SHUFFLE(1, 0, 1, 0));   // p0.q0 p0.q1 p1.q0 p1.q1
  const __m512 high01 = _mm512_shuffle_f32x4(p0, p1, _MM_SHUFFLE(3, 2, 3, 2));  // p0.q2 p0.q3 p1.q2 p1.q3
  const __m512 low23 = _mm512_shuffle_f32x4(p2, p3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m512 high23 = _mm512_shuffle_f32x4(p2, p3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m512 q0 = _mm512_shuffle_f32x4(low01, low23, _MM_SHUFFLE(2, 0, 2, 0));  // p0.q0 p1.q0 p2.q0 p3.q0
  const __m512 q1 = _mm512_shuffle_f32x4(low01, low23, _MM_SHUFFLE(3, 1, 3, 1));
  const __m512 q2 = _mm512_shuffle_f32x4(high01, high23, _MM_SHUFFLE(2, 0, 2, 0));
  const __m512 q3 = _mm512_shuffle_f32x4(high01, high23, _MM_SHUFFLE(3, 1, 3, 1));
  const __m512 lanes = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(q0, q1), q2), q3);
  const __m512 pairs = _mm512_add_ps(lanes, _mm512_permute_ps(lanes, _MM_SHUFFLE(1, 0, 3, 2)));  // l0+l2, l1+l3
  return _mm512_add_ps(pairs, _mm512_permute_ps(pairs, _MM_SHUFFLE(2, 3, 0, 1)));
}

// The eight sums of rows p[0..7], in row order.
WN_AVX512 inline __m256 row_sums8_avx512(const __m512* p) {
  const __m512 first = row_sums4_avx512(p[0], p[1], p[2], p[3]);
  const __m512 second = row_sums4_avx512(p[4], p[5], p[6], p[7]);
  const __m512i lane0s = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_castps512_ps256(_mm512_permutex2var_ps(first, lane0s, second));
}

WN_AVX512 inline void store_row_avx512(float* out, __m512 row, bool stream) {
  if (stream) _mm512_stream_ps(out, row);
  else _mm512_storeu_ps(out, row);
}

WN_AVX512 void forward_rows16_avx512(float* w, float* norm, const float* v, const float* g, int64_t count, float eps,
                                     bool stream) {
  alignas(32) float scale[kRows16Group];
  for (int64_t r = 0; r < count; r += kRows16Group) {
    __m512 x[kRows16Group], squares[kRows16Group];
    for (int j = 0; j < kRows16Group; ++j) {
      x[j] = _mm512_loadu_ps(v + (r + j) * kRows16);
      squares[j] = _mm512_mul_ps(x[j], x[j]);
    }
    forward_coefficients8(norm + r, scale, row_sums8_avx512(squares), g + r, eps);
    for (int j = 0; j < kRows16Group; ++j)
      store_row_avx512(w + (r + j) * kRows16, _mm512_mul_ps(_mm512_set1_ps(scale[j]), x[j]), stream);
  }
}

WN_AVX512 void backward_rows16_avx512(float* dv, float* dg, const float* dw, const float* v, const float* g,
                                      const float* norm, int64_t count, float eps, bool stream) {
  alignas(32) float c1[kRows16Group], c2[kRows16Group];
  for (int64_t r = 0; r < count; r += kRows16Group) {
    __m512 d[kRows16Group], x[kRows16Group], products[kRows16Group];
    for (int j = 0; j < kRows16Group; ++j) {
      d[j] = _mm512_loadu_ps(dw + (r + j) * kRows16);
      x[j] = _mm512_loadu_ps(v + (r + j) * kRows16);
      products[j] = _mm512_mul_ps(d[j], x[j]);
    }
    backward_coefficients8(dg + r, c1, c2, row_sums8_avx512(products), g + r, norm + r, eps);
    for (int j = 0; j < kRows16Group; ++j)
      store_row_avx512(dv + (r + j) * kRows16,
                       _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(c1[j]), d[j]),
                                     _mm512_mul_ps(_mm512_set1_ps(c2[j]), x[j])),
                       stream);
  }
}

// Two rows, each two registers (quarters q0 q1 | q2 q3), summed as above: row 0's sum in lane 0, row 1's in lane 4.
WN_AVX2 inline __m256 row_sums2_avx2(__m256 low0, __m256 high0, __m256 low1, __m256 high1) {
  const __m256 q0 = _mm256_permute2f128_ps(low0, low1, 0x20), q1 = _mm256_permute2f128_ps(low0, low1, 0x31);
  const __m256 q2 = _mm256_permute2f128_ps(high0, high1, 0x20), q3 = _mm256_permute2f128_ps(high0, high1, 0x31);
  const __m256 lanes = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(q0, q1), q2), q3);
  const __m256 pairs = _mm256_add_ps(lanes, _mm256_permute_ps(lanes, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm256_add_ps(pairs, _mm256_permute_ps(pairs, _MM_SHUFFLE(2, 3, 0, 1)));
}

// The sums of a*b over eight rows from `row` on (a == b: squares), in row order.
WN_AVX2 inline __m256 row_sums8_avx2(const float* a, const float* b) {
  __m256 pair_sums[kRows16Group / 2];
  for (int pair = 0; pair < kRows16Group / 2; ++pair) {
    __m256 half[4];
    for (int h = 0; h < 4; ++h) {  // row 2 * pair + h / 2, its low or high eight elements
      const int64_t e = (2 * pair + h / 2) * kRows16 + (h % 2) * 8;
      const __m256 x = _mm256_loadu_ps(a + e);
      half[h] = _mm256_mul_ps(x, a == b ? x : _mm256_loadu_ps(b + e));
    }
    pair_sums[pair] = row_sums2_avx2(half[0], half[1], half[2], half[3]);
  }
  const __m256 rows0213 = _mm256_unpacklo_ps(pair_sums[0], pair_sums[1]);  // r0 r2 . . | r1 r3 . .
  const __m256 rows4657 = _mm256_unpacklo_ps(pair_sums[2], pair_sums[3]);  // r4 r6 . . | r5 r7 . .
  const __m256 mixed = _mm256_shuffle_ps(rows0213, rows4657, _MM_SHUFFLE(1, 0, 1, 0));  // r0 r2 r4 r6 | r1 r3 r5 r7
  return _mm256_permutevar8x32_ps(mixed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// out = c1[row] * a (- c2[row] * b, when c2) over eight rows; the rows are read again, from L1.
WN_AVX2 inline void write_rows8_avx2(float* out, const float* a, const float* b, const float* c1, const float* c2,
                                     bool stream) {
  for (int64_t e = 0; e < kRows16Group * kRows16; e += 8) {
    __m256 y = _mm256_mul_ps(_mm256_set1_ps(c1[e / kRows16]), _mm256_loadu_ps(a + e));
    if (c2) y = _mm256_sub_ps(y, _mm256_mul_ps(_mm256_set1_ps(c2[e / kRows16]), _mm256_loadu_ps(b + e)));
    if (stream) _mm256_stream_ps(out + e, y);
    else _mm256_storeu_ps(out + e, y);
  }
}

WN_AVX2 void forward_rows16_avx2(float* w, float* norm, const float* v, const float* g, int64_t count, float eps,
                                 bool stream) {
  alignas(32) float scale[kRows16Group];
  for (int64_t r = 0; r < count; r += kRows16Group) {
    const int64_t e = r * kRows16;
    forward_coefficients8(norm + r, scale, row_sums8_avx2(v + e, v + e), g + r, eps);
    write_rows8_avx2(w + e, v + e, nullptr, scale, nullptr, stream);
  }
}

WN_AVX2 void backward_rows16_avx2(float* dv, float* dg, const float* dw, const float* v, const float* g,
                                  const float* norm, int64_t count, float eps, bool stream) {
  alignas(32) float c1[kRows16Group], c2[kRows16Group];
  for (int64_t r = 0; r < count; r += kRows16Group) {
    const int64_t e = r * kRows16;
    backward_coefficients8(dg + r, c1, c2, row_sums8_avx2(dw + e, v + e), g + r, norm + r, eps);
    write_rows8_avx2(dv + e, dw + e, v + e, c1, c2, stream);
  }
}

constexpr Rows16Kernels kRows16Avx512{"avx512", forward_rows16_avx512, backward_rows16_avx512};
constexpr Rows16Kernels kRows16Avx2{"avx2", forward_rows16_avx2, backward_rows16_avx2};

bool rows16_supported(const Rows16Kernels& kernels) {
  __builtin_cpu_init();
  if (&kernels == &kRows16Avx512) return __builtin_cpu_supports("avx512f");
  return __builtin_cpu_supports("avx2");
}

const Rows16Kernels* best_rows16_kernels() {
  if (rows16_supported(kRows16Avx512)) return &kRows16Avx512;
  if (rows16_supported(kRows16Avx2)) return &kRows16Avx2;
  return nullptr;
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// Long rows (outer == 1, inner >= kSegmentMinInner, a plan of one part: dim 0 of a Linear or convolution weight
// whose rows fit in cache), AVX-512. Each thread takes one contiguous block of rows; each row is reduced, turned into
// its coefficients and written at once, while it is still in L1/L2, with 64-byte stores (non-temporal ones for
// large outputs). The general walk reduces a 128 KB chunk, then writes it with 16-byte stores (all SSE2 has): on
// this project's Zen 5 host that pure-read phase followed by a pure-write phase, and above all the 16-byte
// non-temporal stores, made it 1.2-1.7x slower than one row at a time with full-line stores (bench/NOTES.md).
// The sums are run_dot's expression in run_dot's order (16 float lanes, each product added without FMA, the tail
// into lane 0, the lanes folded into double in lane order every kFoldBlock elements; runs shorter than 4 * kLanes
// take run_dot itself), the coefficients the same scalar maths as the chunk walk, and the outputs the same products,
// rounded the same way for bfloat16: the results are bitwise the general walk's, on any CPU and for any thread count.
// Scalar arithmetic goes through one-lane intrinsics, which no compiler contracts into FMA.
#ifdef WEIGHTNORM_X86_KERNELS
template <class T>
WN_AVX512 void forward_long_rows_avx512(T* w, float* norm, const T* v, const float* g, int64_t inner, int64_t begin,
                                        int64_t end, float eps, bool stream) {
  for (int64_t k = begin; k < end; ++k) {
    const int64_t e = k * inner;
    norm[k] = floored_norm(run_dot_avx512<true>(v + e, v + e, inner), eps);
    const T* next = k + 1 < end ? v + e + inner : nullptr;
    write_row_avx512<false>(w + e, v + e, v + e, g_over_norm(g[k], norm[k]), 0.0f, inner, stream, next);
  }
}

template <class T>
WN_AVX512 void backward_long_rows_avx512(T* dv, float* dg, const T* dw, const T* v, const float* g,
                                         const float* norm, int64_t inner, int64_t begin, int64_t end, float eps,
                                         bool stream) {
  for (int64_t k = begin; k < end; ++k) {
    const int64_t e = k * inner;
    // dot_dispatch's choice: the same pointer twice is reduced as squares (the same products).
    const double dot = dw == v ? run_dot_avx512<true>(v + e, v + e, inner) : run_dot_avx512<false>(dw + e, v + e, inner);
    float c1, c2;
    backward_coefficients(dg + k, &c1, &c2, dot, g[k], norm[k], eps);
    // No prefetch of the next row's dw and v (the forward prefetches its one input): with two inputs it slowed the
    // backward, by 13% on a 512 x 4608 convolution weight and 5% on a 1024 x 1024 Linear (2-core Zen 5 VM, rotated
    // inputs; into L2 instead of L1 it was slower still), and the hardware prefetchers alone keep up.
    write_row_avx512<true>(dv + e, dw + e, v + e, c1, c2, inner, stream, static_cast<const T*>(nullptr));
  }
}
#endif

// The long-rows kernels take the whole layout when it is rows of a plan of one part that are long enough for the
// segment walk.
bool long_rows_apply(const ChannelLayout& layout, const ReductionPlan& plan) {
  return avx512_enabled() && layout.outer == 1 && plan.parts == 1 && !plan.column_mode && !plan.short_rows;
}

template <class T>
void forward_long_rows(T* w, float* norm, const T* v, const float* g, const ChannelLayout& layout, int64_t begin,
                       int64_t end, const ReductionPlan& plan, float eps) {
#ifdef WEIGHTNORM_X86_KERNELS
  forward_long_rows_avx512(w, norm, v, g, layout.inner, begin, end, eps, plan.streaming);
  if (plan.streaming) finish_streaming();
#else
  (void)w, (void)norm, (void)v, (void)g, (void)layout, (void)begin, (void)end, (void)plan, (void)eps;
#endif
}

template <class T>
void backward_long_rows(T* dv, float* dg, const T* dw, const T* v, const float* g, const float* norm,
                        const ChannelLayout& layout, int64_t begin, int64_t end, const ReductionPlan& plan, float eps) {
#ifdef WEIGHTNORM_X86_KERNELS
  backward_long_rows_avx512(dv, dg, dw, v, g, norm, layout.inner, begin, end, eps, plan.streaming);
  if (plan.streaming) finish_streaming();
#else
  (void)dv, (void)dg, (void)dw, (void)v, (void)g, (void)norm, (void)layout, (void)begin, (void)end, (void)plan, (void)eps;
#endif
}

// The kernels in use: the best this CPU runs (nullptr: none, the general walk takes every row), or the ones
// set_weightnorm_rows16_isa forced.
const Rows16Kernels* g_forced_rows16 = nullptr;
bool g_rows16_forced = false;

const Rows16Kernels* rows16_kernels() {
  if (g_rows16_forced) return g_forced_rows16;
#ifdef WEIGHTNORM_X86_KERNELS
  static const Rows16Kernels* const best = best_rows16_kernels();
  return best;
#else
  return nullptr;
#endif
}

// The rows-of-16 kernels on a region's leading whole groups of rows; returns how many channels they took (0 where
// they do not apply: bfloat16 storage, other layouts, no kernels for this CPU).
template <class T>
int64_t rows16_count(const ChannelLayout& layout, const Region& region) {
  if (!std::is_same_v<T, float> || !rows16_kernels() || layout.outer != 1 || layout.inner != kRows16) return 0;
  return region.channels() / kRows16Group * kRows16Group;
}

bool rows16_stream(const void* out, const ReductionPlan& plan) {
  return plan.streaming && (reinterpret_cast<uintptr_t>(out) & 63) == 0;
}

template <class T>
int64_t forward_rows16(T* w, float* norm, const T* v, const float* g, const ChannelLayout& layout,
                       const Region& region, const ReductionPlan& plan, float eps) {
  const int64_t count = rows16_count<T>(layout, region);
  if constexpr (std::is_same_v<T, float>) {
    if (count == 0) return 0;
    const int64_t k = region.k_begin, e = k * kRows16;
    const bool stream = rows16_stream(w, plan);
    rows16_kernels()->forward(w + e, norm + k, v + e, g + k, count, eps, stream);
    if (stream) finish_streaming();
  }
  return count;
}

template <class T>
int64_t backward_rows16(T* dv, float* dg, const T* dw, const T* v, const float* g, const float* norm,
                        const ChannelLayout& layout, const Region& region, const ReductionPlan& plan, float eps) {
  const int64_t count = rows16_count<T>(layout, region);
  if constexpr (std::is_same_v<T, float>) {
    if (count == 0) return 0;
    const int64_t k = region.k_begin, e = k * kRows16;
    const bool stream = rows16_stream(dv, plan);
    rows16_kernels()->backward(dv + e, dg + k, dw + e, v + e, g + k, norm + k, count, eps, stream);
    if (stream) finish_streaming();
  }
  return count;
}

// The driver shared by forward and backward. one_pass(region, plan) runs a one-pass kernel on the region's leading
// channels where one applies and returns how many it took (only short rows have one, and their plans are never
// split, so only the unsplit branch asks); finish(k_begin, count, sums) turns a chunk's channel sums into
// coefficients; write(region, plan) writes the outputs of a region.
template <class T, class LongRows, class OnePass, class Finish, class Write>
void run_fused(const T* a, const T* b, const ChannelLayout& layout, int inputs, LongRows&& long_rows,
               OnePass&& one_pass, Finish&& finish, Write&& write) {
  if (layout.channels == 0) return;
  const int threads = num_threads();
  const ReductionPlan plan = plan_reduction(layout, inputs, sizeof(T));
  const bool parallel = worth_parallel(layout.elements(), threads);
  if (long_rows_apply(layout, plan)) {
    // One contiguous block of rows per thread: each row's sum is the same whatever block it falls in.
    parallel_region(parallel, threads, [&] {
      const int64_t thread = team_index(), team = team_size();
      long_rows(layout.channels * thread / team, layout.channels * (thread + 1) / team, plan);
    });
    return;
  }
  if (plan.parts == 1) {
    // Each chunk: reduce, finish, write, while the chunk is still in cache. Contiguous blocks of chunks per
    // thread, so the next chunk a thread reduces is the one its write pass prefetches.
    parallel_region(parallel, threads, [&] {
      for (const int64_t chunk : team_static(0, plan.chunks)) {
        Region region = plan.region(chunk, 0, layout);
        region.k_begin += one_pass(region, plan);
        if (region.channels() == 0) continue;
        // A buffer kept per thread, zeroed here: a fresh one per chunk was a heap allocation of up to a few KiB,
        // which after the JS side's many small frees makes glibc consolidate its fast bins (cpu/optim.cc).
        static thread_local std::vector<double> chunk_sums;
        double* sums = scratch(chunk_sums, region.channels());
        std::fill_n(sums, region.channels(), 0.0);
        reduce_region(sums, a, b, layout, region, plan);
        finish(region.k_begin, region.channels(), sums);
        write(region, plan);
      }
    });
    return;
  }
  // Split: the parts reduced in parallel, then written in parallel, each thread first writing the parts it reduced
  // (reduce_and_write_units: the two cores of the reference VM do not share a last-level cache).
  reduce_and_write_units<1>(
      layout, plan, [&](double* sums, const Region& region) { reduce_region(sums, a, b, layout, region, plan); },
      finish, [&](int64_t unit) { write(plan.unit_region(unit, layout), plan); });
}

template <class T>
void fused_forward(T* w, float* norm, const T* v, const float* g, const ChannelLayout& layout, float eps) {
  thread_local std::vector<float> scale_buffer;
  float* scale = scratch(scale_buffer, layout.channels);
  run_fused(
      v, v, layout, 1,
      [&](int64_t begin, int64_t end, const ReductionPlan& plan) {
        forward_long_rows(w, norm, v, g, layout, begin, end, plan, eps);
      },
      [&](const Region& region, const ReductionPlan& plan) {
        return forward_rows16(w, norm, v, g, layout, region, plan, eps);
      },
      [&](int64_t k_begin, int64_t count, const double* sums) {
        forward_coefficients(norm + k_begin, scale + k_begin, sums, g + k_begin, count, eps);
      },
      [&](const Region& region, const ReductionPlan& plan) {
        // The column walk's forward reads v again right after the reduction, much of it from L3. When v and w
        // together fit in L3, w goes through the cache (regular stores measured 2-4% faster there: bfloat16 last
        // dim of 4096x1024 and 768x48x128); when they do not, cached stores of w evict the v the pass is about to
        // read, and non-temporal ones measured 10-15% faster (float32, same shapes; bench/NOTES.md). The backward
        // reads twice as much and always streams.
        ReductionPlan write_plan = plan;
        const bool fits_last_level = 2 * layout.elements() * static_cast<int64_t>(sizeof(T)) < kLastLevelCacheBytes;
        if (plan.column_mode && fits_last_level) write_plan.streaming = false;
        write_region<false>(w, v, v, scale, nullptr, layout, region, write_plan);
      });
}

template <class T>
void fused_backward(T* dv, float* dg, const T* dw, const T* v, const float* g, const float* norm,
                    const ChannelLayout& layout, float eps) {
  thread_local std::vector<float> coefficient_buffer;
  float* c1 = scratch(coefficient_buffer, 2 * layout.channels);
  float* c2 = c1 + layout.channels;
  run_fused(
      dw, v, layout, 2,
      [&](int64_t begin, int64_t end, const ReductionPlan& plan) {
        backward_long_rows(dv, dg, dw, v, g, norm, layout, begin, end, plan, eps);
      },
      [&](const Region& region, const ReductionPlan& plan) {
        return backward_rows16(dv, dg, dw, v, g, norm, layout, region, plan, eps);
      },
      [&](int64_t k_begin, int64_t count, const double* dots) {
        backward_chunk_coefficients(dg + k_begin, c1 + k_begin, c2 + k_begin, dots, g + k_begin, norm + k_begin, count,
                                    eps);
      },
      [&](const Region& region, const ReductionPlan& plan) {
        write_region<true>(dv, dw, v, c1, c2, layout, region, plan);
      });
}

}  // namespace

void weightnorm_forward(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                        float eps) {
  fused_forward(w, norm, v, g, layout, eps);
}

void weightnorm_forward(bfloat16* w, float* norm, const bfloat16* v, const float* g, const ChannelLayout& layout,
                        float eps) {
  fused_forward(w, norm, v, g, layout, eps);
}

void weightnorm_backward(float* dv, float* dg, const float* dw, const float* v, const float* g, const float* norm,
                         const ChannelLayout& layout, float eps) {
  fused_backward(dv, dg, dw, v, g, norm, layout, eps);
}

void weightnorm_backward(bfloat16* dv, float* dg, const bfloat16* dw, const bfloat16* v, const float* g,
                         const float* norm, const ChannelLayout& layout, float eps) {
  fused_backward(dv, dg, dw, v, g, norm, layout, eps);
}

const char* weightnorm_rows16_isa() {
  const Rows16Kernels* kernels = rows16_kernels();
  return kernels ? kernels->isa : "none";
}

bool set_weightnorm_rows16_isa(const char* isa) {
  if (!isa || !*isa) {
    g_rows16_forced = false;
    return true;
  }
  const Rows16Kernels* chosen = nullptr;
  if (std::strcmp(isa, "none") != 0) {
#ifdef WEIGHTNORM_X86_KERNELS
    for (const Rows16Kernels* kernels : {&kRows16Avx512, &kRows16Avx2})
      if (std::strcmp(isa, kernels->isa) == 0) chosen = kernels;
    if (!chosen || !rows16_supported(*chosen)) return false;
#else
    return false;
#endif
  }
  g_forced_rows16 = chosen;
  g_rows16_forced = true;
  return true;
}

const char* weightnorm_vector_isa() { return avx512_enabled() ? "avx512" : "none"; }

bool set_weightnorm_vector_isa(const char* isa) {
  if (!isa || !*isa) {
    g_avx512_forced_off = false;
    return true;
  }
  if (std::strcmp(isa, "none") == 0) {
    g_avx512_forced_off = true;
    return true;
  }
  if (std::strcmp(isa, "avx512") != 0 || !avx512_supported()) return false;
  g_avx512_forced_off = false;
  return true;
}

void weightnorm_scale(float* scale, const float* g, const float* norm, int64_t channels) {
  for (int64_t k = 0; k < channels; ++k) scale[k] = g_over_norm(g[k], norm[k]);
}

void weightnorm_backward_coefficients(float* dg, float* c1, float* c2, const float* dot, const float* g,
                                      const float* norm, int64_t channels, float eps) {
  for (int64_t k = 0; k < channels; ++k) backward_coefficients(dg + k, c1 + k, c2 + k, dot[k], g[k], norm[k], eps);
}

// ---------------------------------------------------------------------------------------------------------------
// The weight-normalized Linear's backward prologue. Before, it was four passes (channel_dot of dy and t, the
// coefficients, channel_scale of dy, channel_sum for the bias), each with its own reduction plan and its own read of
// dy: on the demo MLP's [100, 256] layers those fixed costs, not the arithmetic, were most of the weight-norm
// backward's extra time. Here one pass reads each row of dy and t once. The work is cut into tiles of
// kPrologueRows rows by kPrologueColumns columns, fixed by the shape; a tile sums its rows in order, in double
// (a product of two floats is exact in double, so an FMA and a multiply-then-add give the same bits), and the
// tiles of a column are added in row order after. Every vector width and thread count gives the same bits.
namespace {

constexpr int64_t kPrologueRows = 1024;
// 1,024 floats: each row of a tile is one 4 KB run of dy, t and dy ⊙ scale. With 256 (1 KB runs) a [8192, 4096]
// dy was walked in 1 KB pieces 16 KB apart, a TLB miss and a cold start for the prefetcher per piece: the prologue
// took ~300 ms of a 700 ms backward (2 threads, 2-core EPYC VM), against ~20 ms for its 400 MB. The width does not
// change any result: a column's sum is over the same rows in the same order whatever the tiles' width.
constexpr int64_t kPrologueColumns = 1024;

// Rows [row_begin, row_end) of columns [k0, k0 + width): dot and bias partials (width doubles each), and the
// scaled rows of dy.
template <bool kScaled, bool kBias>
__attribute__((always_inline)) inline void prologue_tile_body(double* __restrict dot, double* __restrict bias,
                                                              float* __restrict scaled_dy, const float* __restrict dy,
                                                              const float* __restrict t, const float* __restrict scale,
                                                              int64_t out, int64_t row_begin, int64_t row_end,
                                                              int64_t k0, int64_t width) {
  for (int64_t j = 0; j < width; ++j) dot[j] = 0.0;
  if (kBias)
    for (int64_t j = 0; j < width; ++j) bias[j] = 0.0;
  for (int64_t b = row_begin; b < row_end; ++b) {
    const float* dy_row = dy + b * out + k0;
    const float* t_row = t + b * out + k0;
    float* scaled_row = kScaled ? scaled_dy + b * out + k0 : nullptr;
    for (int64_t j = 0; j < width; ++j) {
      const float d = dy_row[j];
      dot[j] += static_cast<double>(d) * static_cast<double>(t_row[j]);
      if (kBias) bias[j] += static_cast<double>(d);
      if (kScaled) scaled_row[j] = d * scale[j];
    }
  }
}

template <bool kScaled, bool kBias>
void prologue_tile(double* dot, double* bias, float* scaled_dy, const float* dy, const float* t, const float* scale,
                   int64_t out, int64_t row_begin, int64_t row_end, int64_t k0, int64_t width) {
  prologue_tile_body<kScaled, kBias>(dot, bias, scaled_dy, dy, t, scale, out, row_begin, row_end, k0, width);
}

#ifdef WEIGHTNORM_X86_KERNELS
template <bool kScaled, bool kBias>
WN_AVX512 void prologue_tile_avx512(double* dot, double* bias, float* scaled_dy, const float* dy, const float* t,
                                    const float* scale, int64_t out, int64_t row_begin, int64_t row_end, int64_t k0,
                                    int64_t width) {
  prologue_tile_body<kScaled, kBias>(dot, bias, scaled_dy, dy, t, scale, out, row_begin, row_end, k0, width);
}

// 16 * kBlocks columns from k0 over every row of the tile, the columns' sums held in registers (a column's products
// widened to double and added in row order, as prologue_tile_body does: the same bits). The row-by-row walk above
// loads and stores each column's two double sums once per row; converting the floats to double, not memory, then
// bounds the loop, and this form is about 1.25x faster (the demo MLP's [100, 256] dy: 4.9 -> 3.9 us, one thread).
template <int kBlocks, bool kScaled, bool kBias>
WN_AVX512 inline void prologue_column_block_avx512(double* __restrict dot, double* __restrict bias,
                                                   float* __restrict scaled_dy, const float* __restrict dy,
                                                   const float* __restrict t, const float* __restrict scale,
                                                   int64_t out, int64_t row_begin, int64_t row_end, int64_t k0) {
  __m512d dots[2 * kBlocks], sums[2 * kBlocks];
  __m512 scales[kBlocks];
  for (int q = 0; q < 2 * kBlocks; ++q) dots[q] = sums[q] = _mm512_setzero_pd();
  for (int q = 0; q < kBlocks; ++q) scales[q] = kScaled ? _mm512_loadu_ps(scale + 16 * q) : _mm512_setzero_ps();
  for (int64_t b = row_begin; b < row_end; ++b) {
    const float* dy_row = dy + b * out + k0;
    const float* t_row = t + b * out + k0;
    for (int q = 0; q < kBlocks; ++q) {
      const __m512 d = _mm512_loadu_ps(dy_row + 16 * q), x = _mm512_loadu_ps(t_row + 16 * q);
      const __m512d d_low = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
      const __m512d d_high = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
      const __m512d x_low = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
      const __m512d x_high = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
      // A product of two floats is exact in double, so the fused multiply-add rounds once, as the product-then-add does.
      dots[2 * q] = _mm512_fmadd_pd(d_low, x_low, dots[2 * q]);
      dots[2 * q + 1] = _mm512_fmadd_pd(d_high, x_high, dots[2 * q + 1]);
      if (kBias) {
        sums[2 * q] = _mm512_add_pd(sums[2 * q], d_low);
        sums[2 * q + 1] = _mm512_add_pd(sums[2 * q + 1], d_high);
      }
      if (kScaled) _mm512_storeu_ps(scaled_dy + b * out + k0 + 16 * q, _mm512_mul_ps(d, scales[q]));
    }
  }
  for (int q = 0; q < 2 * kBlocks; ++q) {
    _mm512_storeu_pd(dot + 8 * q, dots[q]);
    if (kBias) _mm512_storeu_pd(bias + 8 * q, sums[q]);
  }
}

template <bool kScaled, bool kBias>
WN_AVX512 void prologue_tile_columns_avx512(double* dot, double* bias, float* scaled_dy, const float* dy,
                                            const float* t, const float* scale, int64_t out, int64_t row_begin,
                                            int64_t row_end, int64_t k0, int64_t width) {
  int64_t j = 0;
  for (; j + 64 <= width; j += 64)
    prologue_column_block_avx512<4, kScaled, kBias>(dot + j, bias + j, scaled_dy, dy, t, kScaled ? scale + j : nullptr,
                                                    out, row_begin, row_end, k0 + j);
  for (; j + 16 <= width; j += 16)
    prologue_column_block_avx512<1, kScaled, kBias>(dot + j, bias + j, scaled_dy, dy, t, kScaled ? scale + j : nullptr,
                                                    out, row_begin, row_end, k0 + j);
  if (j < width)
    prologue_tile_body<kScaled, kBias>(dot + j, bias + j, scaled_dy, dy, t, kScaled ? scale + j : nullptr, out,
                                       row_begin, row_end, k0 + j, width - j);
}
#endif

using PrologueTile = void (*)(double*, double*, float*, const float*, const float*, const float*, int64_t, int64_t,
                              int64_t, int64_t, int64_t);

// The tile walks: row by row, and (AVX-512 only) column block by column block.
struct PrologueTiles {
  PrologueTile rows;
  PrologueTile columns;
};

template <bool kScaled, bool kBias>
PrologueTiles prologue_tiles_for_cpu() {
#ifdef WEIGHTNORM_X86_KERNELS
  if (avx512_enabled()) return {prologue_tile_avx512<kScaled, kBias>, prologue_tile_columns_avx512<kScaled, kBias>};
#endif
  return {prologue_tile<kScaled, kBias>, nullptr};
}

PrologueTiles choose_prologue_tiles(bool scaled, bool bias) {
  if (scaled) return bias ? prologue_tiles_for_cpu<true, true>() : prologue_tiles_for_cpu<true, false>();
  return bias ? prologue_tiles_for_cpu<false, true>() : prologue_tiles_for_cpu<false, false>();
}

// The column-block walk strides down the rows of dy, t and dy ⊙ scale: it pays while those rows are less than a
// 4 KB page apart (out < 1,024 floats). At 1,024 (a 64-column block's rows then all fall in the same L1 sets and
// each on its own page) it took 1.4-2.5x the row walk's time; below, 0.65-0.95x of it, at every batch measured
// (100 to 4,096 rows; 1 thread, AMD EPYC Zen 5).
constexpr int64_t kPrologueColumnWalkMaxOut = 1023;

// From this many elements of dy (and with more than one thread) the column walk is cut into one band per thread.
constexpr int64_t kPrologueBandedMinElements = int64_t{1} << 13;

}  // namespace

void weightnorm_linear_backward_prologue(float* dg, float* c1, float* c2, float* scaled_dy, float* dbias,
                                         const float* dy, const float* t, const float* g, const float* norm,
                                         int64_t batch, int64_t out_features, float eps) {
  const int64_t out = out_features;
  if (out == 0) return;
  const int64_t row_tiles = std::max<int64_t>(1, (batch + kPrologueRows - 1) / kPrologueRows);
  const PrologueTiles walks = choose_prologue_tiles(scaled_dy != nullptr, dbias != nullptr);
  const bool column_walk = walks.columns && out <= kPrologueColumnWalkMaxOut;
  const int threads = num_threads();
  // In a training step dy and t come from GEMMs whose threads each wrote a band of columns (the next layer's dx, this
  // layer's forward), and dv's GEMM then reads c1 and c2 in the same bands: one tile per thread, in column order,
  // keeps most of what each core reads and writes in its own cache. On the main thread alone, perf put the demo
  // MLP's two [100, 256] prologues at ~23 us per step against ~8 us warm in a loop; banded, that step's WN/plain went
  // from 1.027-1.030 to 1.017-1.021 in two of three in-process comparisons (level in the third; 2-core EPYC VM). In a
  // loop over warm data the bands cost more than they save (3.9 -> 6.9 us): their gain is the other core's lines.
  const bool banded = column_walk && threads > 1 && row_tiles == 1 && batch * out >= kPrologueBandedMinElements;
  const int64_t columns = banded ? ((out + threads - 1) / threads + 15) / 16 * 16 : kPrologueColumns;
  const int64_t column_tiles = (out + columns - 1) / columns;
  // Per row tile, out dot partials then out bias partials; kept by the thread across calls (see scratch).
  thread_local std::vector<double> partial_buffer;
  thread_local std::vector<float> scale_buffer;
  double* partial = scratch(partial_buffer, row_tiles * 2 * out);
  float* scale = nullptr;
  if (scaled_dy) {
    scale = scratch(scale_buffer, out);
    weightnorm_scale(scale, g, norm, out);
  }
  // dbias and the coefficients of columns [k0, k0 + width) from their complete sums in the first row tile's partials.
  auto finish_columns = [&](int64_t k0, int64_t width) {
    if (dbias)
      for (int64_t k = k0; k < k0 + width; ++k) dbias[k] = static_cast<float>(partial[out + k]);
    backward_chunk_coefficients(dg + k0, c1 + k0, c2 + k0, partial + k0, g + k0, norm + k0, width, eps);
  };
  auto run_tile = [&](int64_t i) {
    const int64_t r = i / column_tiles, k0 = (i % column_tiles) * columns;
    const int64_t row_begin = r * kPrologueRows, row_end = std::min(batch, (r + 1) * kPrologueRows);
    const int64_t width = std::min(columns, out - k0);
    double* dot = partial + r * 2 * out;
    (column_walk ? walks.columns : walks.rows)(dot + k0, dot + out + k0, scaled_dy, dy, t, scale ? scale + k0 : nullptr,
                                               out, row_begin, row_end, k0, width);
    if (row_tiles == 1) finish_columns(k0, width);  // complete: written by the thread that has their sums
  };
  const int64_t tiles = row_tiles * column_tiles;
  if (banded) {
    parallel_region(true, threads, [&] {
      for (const int64_t i : team_static(0, tiles)) run_tile(i);
    });
  } else {
    parallel_region(worth_parallel(batch * out, threads) && tiles > 1, threads, [&] {
      for (const int64_t i : team_dynamic(0, tiles)) run_tile(i);
    });
  }
  if (row_tiles == 1) return;
  // The row tiles' partials, added in row order into the first tile's.
  for (int64_t r = 1; r < row_tiles; ++r)
    for (int64_t j = 0; j < 2 * out; ++j) partial[j] += partial[r * 2 * out + j];
  finish_columns(0, out);
}

void channel_dot(float* out, const float* a, const float* b, const ChannelLayout& layout) {
  if (layout.channels == 0) return;
  // Always the split form: a reduction on its own has no write pass to keep in cache for.
  const ReductionPlan plan = plan_reduction(layout, a == b ? 1 : 2, sizeof(float));
  reduce_units<1>(
      layout, plan, [&](double* sums, const Region& region) { reduce_region(sums, a, b, layout, region, plan); },
      [&](int64_t k_begin, int64_t count, const double* sums) {
        for (int64_t k = k_begin; k < k_begin + count; ++k) out[k] = static_cast<float>(sums[k - k_begin]);
      });
}

void weightnorm_forward_unfused(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                                float eps) {
  // Pass 1: squared norms. Pass 2 (tiny): norm and g / norm. Pass 3: w = v * scale.
  std::vector<float> sum_of_squares(layout.channels), scale(layout.channels);
  channel_dot(sum_of_squares.data(), v, v, layout);
  for (int64_t k = 0; k < layout.channels; ++k) {
    norm[k] = floored_norm(sum_of_squares[k], eps);
    scale[k] = g_over_norm(g[k], norm[k]);
  }
  channel_scale(w, v, scale.data(), layout);
}

void weightnorm_backward_unfused(float* dv, float* dg, const float* dw, const float* v, const float* g,
                                 const float* norm, const ChannelLayout& layout, float eps) {
  // Pass 1: <dw, v> per channel. Then t1 = c1 * dw, t2 = c2 * v, dv = t1 - t2, each its own pass.
  const int64_t count = layout.elements();
  std::vector<float> dots(layout.channels), c1(layout.channels), c2(layout.channels);
  channel_dot(dots.data(), dw, v, layout);
  for (int64_t k = 0; k < layout.channels; ++k)
    backward_coefficients(dg + k, c1.data() + k, c2.data() + k, dots[k], g[k], norm[k], eps);
  // Intermediates come from a reused buffer, as from a caching allocator: the comparison with the fused kernel
  // then counts passes over memory, not page faults on fresh allocations.
  thread_local std::vector<float> intermediates;
  if (intermediates.size() < static_cast<size_t>(2 * count)) intermediates.resize(2 * count);
  float* scaled_dw = intermediates.data();
  float* scaled_v = scaled_dw + count;
  channel_scale(scaled_dw, dw, c1.data(), layout);
  channel_scale(scaled_v, v, c2.data(), layout);
  subtract(dv, scaled_dw, scaled_v, count);
}

}  // namespace weightnorm::cpu

