// CPU GEMM with a fused epilogue (see gemm.h). Two implementations behind one entry point, both giving every
// output element the same bits for any thread count (and run to run):
//
//  openblas  OpenBLAS's cblas_sgemm, loaded with dlopen on first use (never linked, so the addon loads where it
//            is absent; see load_openblas for the search order and WEIGHTNORM_OPENBLAS). The output is cut into
//            tiles whose size depends on the shape alone (blas_tiles); our pool's loop hands them out, and each
//            is one single-threaded sgemm over the whole of k followed by the epilogue on that tile while it is
//            in cache. beta goes to sgemm itself unless a scale must multiply the product alone; then the tile's
//            product goes to a per-thread buffer first. A small output with a long k (too few tiles to share)
//            also cuts k into parts fixed by the shape (blas_k_split), summed in part order.
//  blocked   the hand-written kernel (always built; chosen automatically where it beats OpenBLAS's kernels, see
//            gemm.h, and when OpenBLAS is absent or disabled; forced with set_gemm_implementation):
//            1. pack op(a) into panels of MR rows and op(b) into panels of NR columns, each panel k-major, so
//               the micro-kernel reads both operands contiguously whatever the transposes (zero-padded edges; a
//               row-major operand is transposed in registers on AVX-512, pack_rows_avx512);
//            2. cut the output into blocks of MC x NC, computed one after another: for each KC slice of k, for
//               each NR panel (stays in L1), for each MR panel of the block (the MC x KC slice of a stays in L2):
//               micro-kernel on an MR x NR tile, or on the smaller tile left at the bottom and right edges by a
//               copy of the micro-kernel sized for it. With several threads, each owns one rectangle of the output
//               (a grid of row bands by column bands, thread_grid), packs the panels its rectangle needs itself and
//               computes its blocks: a panel one core packs and another reads would move between their caches;
//            3. partial sums of a block live in a per-thread buffer between k slices; in the last slice the
//               micro-kernel applies the epilogue to the tile in its registers as it stores it to out (the lines
//               the epilogue reads and writes requested a tile ahead, prefetch_epilogue_tile); a tile at the right
//               edge narrower than its vectors goes through the buffer and epilogue_rows instead, with the same
//               bits. Without an epilogue, out itself holds the sums and whole tiles are stored there directly.
//            A small output over a long k (blocked_k_parts) instead cuts k into parts fixed by the shape: each
//            part is one task that packs its own slices of a and b, and the parts' products are added in part
//            order before the epilogue.
//            The micro-kernel keeps the MR x NR tile in vector registers and is plain C++ on GCC vector types:
//            the compiler emits SSE2, AVX2+FMA or AVX-512 from the same source, one copy per instruction set
//            (function target attributes), and the one this CPU supports is picked at run time, so the binary
//            still runs on any x86-64 machine (no -march=native).
//            Deterministic: every output element is summed by one thread per k part in a fixed order (k slices
//            in order, k ascending within a slice, parts in order) that depends on neither the thread count nor
//            the schedule; the thread grid only decides which thread sums an element, not how.
// bfloat16 gemm(): operands (and out when beta != 0, and subtract_matrix) widened exactly to float32 temporaries,
// the float32 gemm() above with the same epilogue, then out (and raw_out) rounded once to bfloat16, as on CUDA.
#include "gemm.h"

#include <dlfcn.h>
#include <sys/mman.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "weightnorm.h"

namespace weightnorm::cpu {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// The epilogue's steps (GemmEpilogueOf's order), as flags: each combination gets its own loop with no tests inside
// (compiled from epilogue_rows below), so a bias-only epilogue costs one add per element instead of six passes over
// a temporary. Skipping an absent scale (a multiplication by 1) or coefficient is exact: the same bits as the full
// formula.
enum EpilogueStep : unsigned {
  kScaleRows = 1,
  kScaleColumns = 2,
  kAddRowBias = 4,
  kAddColumnBias = 8,
  kSubtractMatrix = 16,
  kAddBetaOut = 32,
  kEpilogueStepCombinations = 64,
};

unsigned epilogue_steps(const GemmEpilogue& e) {
  return (e.row_scale ? kScaleRows : 0u) | (e.column_scale ? kScaleColumns : 0u) | (e.row_bias ? kAddRowBias : 0u) |
         (e.column_bias ? kAddColumnBias : 0u) | (e.subtract_matrix ? kSubtractMatrix : 0u) |
         (e.beta != 0.0f ? kAddBetaOut : 0u);
}

// acc may be out itself (the OpenBLAS path runs the steps in place): each element is read before it is written.
template <unsigned Steps>
void epilogue_rows(float* out, int64_t n, const float* acc, int64_t acc_stride, int64_t i0, int64_t rows, int64_t j0,
                   int64_t cols, const GemmEpilogue& e) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    const float* a = acc + r * acc_stride;
    float* o = out + i * n + j0;
    if (e.raw_out && e.raw_out + i * n + j0 != a) std::memcpy(e.raw_out + i * n + j0, a, sizeof(float) * cols);
    const float row_scale = (Steps & kScaleRows) ? e.row_scale[i] : 1.0f;
    const float row_bias = (Steps & kAddRowBias) ? e.row_bias[i] : 0.0f;
    const float coefficient = e.subtract_coefficient ? e.subtract_coefficient[i] : 1.0f;
    const float* column_scale = (Steps & kScaleColumns) ? e.column_scale + j0 : nullptr;
    const float* column_bias = (Steps & kAddColumnBias) ? e.column_bias + j0 : nullptr;
    const float* subtract = (Steps & kSubtractMatrix) ? e.subtract_matrix + i * n + j0 : nullptr;
    const float beta = e.beta;
    for (int64_t c = 0; c < cols; ++c) {
      float x = a[c];
      if (Steps & kScaleRows) x *= row_scale;
      if (Steps & kScaleColumns) x *= column_scale[c];
      if (Steps & kAddRowBias) x += row_bias;
      if (Steps & kAddColumnBias) x += column_bias[c];
      if (Steps & kSubtractMatrix) x -= coefficient * subtract[c];
      if (Steps & kAddBetaOut) x += beta * o[c];
      o[c] = x;
    }
  }
}

using EpilogueRowsFn = void (*)(float* out, int64_t n, const float* acc, int64_t acc_stride, int64_t i0, int64_t rows,
                                int64_t j0, int64_t cols, const GemmEpilogue& e);
template <size_t... Steps>
constexpr std::array<EpilogueRowsFn, sizeof...(Steps)> epilogue_table(std::index_sequence<Steps...>) {
  return {{&epilogue_rows<unsigned(Steps)>...}};
}
constexpr auto kEpilogueRows = epilogue_table(std::make_index_sequence<kEpilogueStepCombinations>());

// Epilogue, applied to a block of accumulators `acc` (row stride acc_stride) that lands at out[i0.., j0..].
void apply_epilogue(float* out, int64_t n, const float* acc, int64_t acc_stride, int64_t i0, int64_t rows,
                    int64_t j0, int64_t cols, const GemmEpilogue& e) {
  kEpilogueRows[epilogue_steps(e)](out, n, acc, acc_stride, i0, rows, j0, cols, e);
}

// Below this many multiply-adds a single thread is faster than waking the others.
constexpr int64_t kParallelMinFlops = int64_t{1} << 18;

// k == 0: the product is all zeros, only the epilogue remains.
void epilogue_of_zero(float* out, int64_t m, int64_t n, const GemmEpilogue& e) {
  const std::vector<float> zeros(n, 0.0f);
  const int threads = num_threads();
  parallel_region(m * n >= kParallelMinFlops, threads, [&] {
    for (const int64_t i : team_static(0, m)) apply_epilogue(out, n, zeros.data(), 0, i, 1, 0, n, e);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// 64-byte aligned scratch. Buffers up to kCachedBytes are kept per thread and reused (no allocation, no page faults
// on repeated small calls, e.g. conv's per-group GEMMs); larger ones are allocated for the call.

constexpr size_t kCachedBytes = size_t{32} << 20;

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};
using AlignedPointer = std::unique_ptr<float, AlignedFree>;

// Large buffers are 2 MiB aligned and marked for transparent huge pages: a fresh 100 MB packing buffer then costs
// a few dozen page faults instead of tens of thousands.
constexpr size_t kHugePage = size_t{2} << 20;

AlignedPointer allocate_floats(size_t count) {
  const size_t alignment = count * sizeof(float) >= 4 * kHugePage ? kHugePage : 64;
  const size_t bytes = std::max(alignment, (count * sizeof(float) + alignment - 1) / alignment * alignment);
  void* p = std::aligned_alloc(alignment, bytes);
  if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (alignment == kHugePage) madvise(p, bytes, MADV_HUGEPAGE);  // advisory: failure changes nothing
#endif
  return AlignedPointer(static_cast<float*>(p));
}

class Workspace {
 public:
  float* get(size_t count) {
    if (count * sizeof(float) > kCachedBytes) {
      oversized_ = allocate_floats(count);
      return oversized_.get();
    }
    if (count > capacity_) {
      cached_ = allocate_floats(count);
      capacity_ = count;
    }
    return cached_.get();
  }
  void release_oversized() { oversized_.reset(); }

 private:
  AlignedPointer cached_, oversized_;
  size_t capacity_ = 0;
};

// ---------------------------------------------------------------------------------------------------------------
// Micro-kernels: tile[ROWS][VECS*W] = init + sum over p < kc of a[p][0..ROWS) outer b[p][0..VECS*W), with a and b
// packed k-major (a: MR floats per p, b: NR = NV*W floats per p, both 64-byte aligned; W floats per vector register);
// init and the stored tile have their own row strides (either may be out itself, unaligned; see TileTarget), and the
// stored tile may go through the epilogue first. The full MR x NR tile is the fast case; the
// tiles at the bottom and right edges run a copy of the same loop with fewer rows and vectors instead of multiplying
// the packing's zero padding (with MR = 12 and NR = 32 a conv's per-image 64 x 196 product would otherwise cost as
// much as a 72 x 224 one, 29% more; a 32 x 9 weight gradient, 3.6 times its own work). Every copy sums each element
// in the same order (k ascending from the tile's starting value), so which copy runs never changes a result.

template <int W>
struct VectorOf {
  typedef float type __attribute__((vector_size(W * sizeof(float)), aligned(W * sizeof(float))));
};

// Returns x * y rounded, opaque to the optimizer: the product cannot be fused with an addition that follows into
// one FMA (GCC contracts across statements), which would round once where epilogue_rows rounds twice.
template <class V>
[[gnu::always_inline]] inline void multiply_rounded(V& x, const V& y) {
  x *= y;
  asm("" : "+x"(x));
}

// Where a micro-kernel's sums start and go. init: the sums so far (row stride ld_init), or nullptr to start from
// zero; out: where the tile is stored (row stride ld_out). epilogue: applied in registers as the tile is stored
// (the last k slice of a tile whose columns are whole vectors), with the tile at out[i0.., j0..] of an output of
// row stride ld_out; nullptr: the sums are stored as they are.
struct TileTarget {
  const float* init;
  int64_t ld_init;
  float* out;
  int64_t ld_out;
  const GemmEpilogue* epilogue;
  int64_t i0, j0;
};

template <int MR, int NV, int W, int ROWS, int VECS>
[[gnu::always_inline]] inline void micro_kernel_body(int64_t kc, const float* __restrict a, const float* __restrict b,
                                                     const TileTarget& target) {
  typedef typename VectorOf<W>::type V;
  constexpr int NR = NV * W;
  V c[ROWS][VECS];
  const float* init = target.init;
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < VECS; ++v) {
      c[i][v] = V{};
      if (init) std::memcpy(&c[i][v], init + i * target.ld_init + v * W, sizeof(V));  // unaligned load
    }
  for (int64_t p = 0; p < kc; ++p) {
    V bv[VECS];
#pragma GCC unroll 4
    for (int v = 0; v < VECS; ++v) bv[v] = *reinterpret_cast<const V*>(b + p * NR + v * W);
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      const V ai = a[p * MR + i] - V{};  // broadcast (x - 0 is exactly x, so no add is emitted)
#pragma GCC unroll 4
      for (int v = 0; v < VECS; ++v) c[i][v] += ai * bv[v];
    }
  }
  float* out = target.out;
  const int64_t ld = target.ld_out;
  if (!target.epilogue) {
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < VECS; ++v) std::memcpy(out + i * ld + v * W, &c[i][v], sizeof(V));  // unaligned store
    return;
  }
  // epilogue_rows' steps in its order, each skipped when absent, on whole vectors (the same bits). The fields are
  // copied out first: stores to out could alias them as far as the compiler knows, and it would reload each one
  // for every vector.
  const GemmEpilogue& e = *target.epilogue;
  const int64_t i0 = target.i0, j0 = target.j0;
  float* const raw = e.raw_out ? e.raw_out + i0 * ld + j0 : nullptr;
  const float* const subtract = e.subtract_matrix ? e.subtract_matrix + i0 * ld + j0 : nullptr;
  const float* const row_scale = e.row_scale ? e.row_scale + i0 : nullptr;
  const float* const row_bias = e.row_bias ? e.row_bias + i0 : nullptr;
  const float* const coefficient = e.subtract_coefficient ? e.subtract_coefficient + i0 : nullptr;
  const float* const column_scale = e.column_scale ? e.column_scale + j0 : nullptr;
  const float* const column_bias = e.column_bias ? e.column_bias + j0 : nullptr;
  const float beta = e.beta;
  // One pass over the tile per step, each behind a single test: tested per element instead (seven tests for each
  // of the 24 vectors of a 12 x 32 tile, unrolled), the epilogue took a fifth of a k = 100 weight gradient's time.
  // Every element still goes through the steps in epilogue_rows' order.
  if (raw) {
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < VECS; ++v) std::memcpy(raw + i * ld + v * W, &c[i][v], sizeof(V));
  }
  if (row_scale) {
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      const V scale_i = row_scale[i] - V{};
#pragma GCC unroll 4
      for (int v = 0; v < VECS; ++v) multiply_rounded(c[i][v], scale_i);
    }
  }
  if (column_scale) {
#pragma GCC unroll 4
    for (int v = 0; v < VECS; ++v) {
      V scale_v;
      std::memcpy(&scale_v, column_scale + v * W, sizeof(V));
#pragma GCC unroll 16
      for (int i = 0; i < ROWS; ++i) multiply_rounded(c[i][v], scale_v);
    }
  }
  if (row_bias) {
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      const V bias_i = row_bias[i] - V{};
#pragma GCC unroll 4
      for (int v = 0; v < VECS; ++v) c[i][v] = c[i][v] + bias_i;
    }
  }
  if (column_bias) {
#pragma GCC unroll 4
    for (int v = 0; v < VECS; ++v) {
      V bias_v;
      std::memcpy(&bias_v, column_bias + v * W, sizeof(V));
#pragma GCC unroll 16
      for (int i = 0; i < ROWS; ++i) c[i][v] = c[i][v] + bias_v;
    }
  }
  if (subtract) {
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      const V coefficient_i = (coefficient ? coefficient[i] : 1.0f) - V{};
#pragma GCC unroll 4
      for (int v = 0; v < VECS; ++v) {
        V s;
        std::memcpy(&s, subtract + i * ld + v * W, sizeof(V));
        multiply_rounded(s, coefficient_i);
        c[i][v] = c[i][v] - s;
      }
    }
  }
  if (beta != 0.0f) {
    const V beta_v = beta - V{};
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < VECS; ++v) {
        V old;
        std::memcpy(&old, out + i * ld + v * W, sizeof(V));
        multiply_rounded(old, beta_v);
        c[i][v] = c[i][v] + old;
      }
  }
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < VECS; ++v) std::memcpy(out + i * ld + v * W, &c[i][v], sizeof(V));
}

using MicroKernelFn = void (*)(int64_t kc, const float* a, const float* b, const TileTarget& target);
// Packs rows [r0, r0 + width) of a row-major matrix (row stride ld; rows from r0 + valid on are zeros), k columns,
// into a k-major panel (see pack_panel).
using PackRowsFn = void (*)(float* dst, const float* x, int64_t ld, int64_t k, int64_t r0, int valid, int width);

// Every copy of one micro-kernel, [rows - 1][vectors - 1] flattened: K<rows, vectors>::run.
template <template <int, int> class K, int NV, size_t... I>
constexpr std::array<MicroKernelFn, sizeof...(I)> micro_kernel_table(std::index_sequence<I...>) {
  return {{&K<int(I) / NV + 1, int(I) % NV + 1>::run...}};
}

struct MicroKernel {
  const char* isa;
  int mr, nr, width;          // tile rows, tile columns, floats per vector (nr = vectors per row x width)
  const MicroKernelFn* copies;  // micro_kernel_table: copy (rows, vectors) at [(rows - 1) * nr / width + vectors - 1]
  PackRowsFn pack_rows;       // a vectorized pack_panel for row-contiguous operands; nullptr: the portable loop
  // Cache blocking: the longest k slice (an NR panel's slice stays in L1), rows and columns of a task's output block
  // (its MC x KC slice of a and MC x NC partial sums stay in L2). Chosen by measurement at 4096^3 on 2 cores.
  int64_t kc, mc, nc;
  // The copy for a tile of `rows` x `cols` (cols rounded up to whole vectors: the padding columns are zeros).
  MicroKernelFn copy_for(int64_t rows, int64_t cols) const {
    return copies[(rows - 1) * (nr / width) + (cols + width - 1) / width - 1];
  }
};

// Baseline: 6 x 8 tile in 12 of the 16 SSE registers (4 floats each). Also the portable fallback elsewhere.
template <int ROWS, int VECS>
struct BaselineCopy {
  static void run(int64_t kc, const float* a, const float* b, const TileTarget& target) {
    micro_kernel_body<6, 2, 4, ROWS, VECS>(kc, a, b, target);
  }
};
constexpr auto kBaselineCopies = micro_kernel_table<BaselineCopy, 2>(std::make_index_sequence<6 * 2>());
constexpr MicroKernel kBaseline{
#if defined(__x86_64__)
    "sse2",
#else
    "generic",
#endif
    6, 8, 4, kBaselineCopies.data(), nullptr, 256, 288, 512};

#if defined(__x86_64__) && defined(__GNUC__)
#define WEIGHTNORM_GEMM_MULTIVERSION 1
// 6 x 16 tile in 12 of the 16 AVX registers (8 floats each).
template <int ROWS, int VECS>
struct Avx2Copy {
  __attribute__((target("avx2,fma"))) static void run(int64_t kc, const float* a, const float* b,
                                                      const TileTarget& target) {
    micro_kernel_body<6, 2, 8, ROWS, VECS>(kc, a, b, target);
  }
};
// 12 x 32 tile in 24 of the 32 AVX-512 registers (16 floats each).
template <int ROWS, int VECS>
struct Avx512Copy {
  __attribute__((target("avx512f,avx2,fma"))) static void run(int64_t kc, const float* a, const float* b,
                                                              const TileTarget& target) {
    micro_kernel_body<12, 2, 16, ROWS, VECS>(kc, a, b, target);
  }
};
constexpr auto kAvx2Copies = micro_kernel_table<Avx2Copy, 2>(std::make_index_sequence<6 * 2>());
constexpr auto kAvx512Copies = micro_kernel_table<Avx512Copy, 2>(std::make_index_sequence<12 * 2>());

// The 16 x 16 block in r, transposed in registers: four rounds of two-register shuffles (pairs of rows, pairs of
// pairs, then 128-bit lanes twice), 64 shuffles for 256 floats, against one scattered 4-byte store per float in the
// portable packer, which made packing an operand read along its rows (a weight gradient's col^T, a Linear's w^T)
// cost about a fifth of a conv-sized product. GCC's __builtin_shuffle, not the intrinsics: GCC 12 reports the
// unpack and lane-shuffle intrinsics' placeholder source as possibly uninitialized.
typedef VectorOf<16>::type Floats16;
typedef int Indices16 __attribute__((vector_size(64)));

// Lanes 0, 2 of x then of y into `even`; lanes 1, 3 into `odd`.
__attribute__((target("avx512f"), always_inline)) inline void split_lanes(Floats16& even, Floats16& odd,
                                                                          const Floats16& x, const Floats16& y) {
  constexpr Indices16 kEvenLanes = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
  constexpr Indices16 kOddLanes = {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
  even = __builtin_shuffle(x, y, kEvenLanes);
  odd = __builtin_shuffle(x, y, kOddLanes);
}

__attribute__((target("avx512f"), always_inline)) inline void transpose_16x16(Floats16 r[16]) {
  // Per 128-bit lane: unpacklo/unpackhi of floats, of float pairs; then whole lanes twice (split_lanes).
  constexpr Indices16 kLowFloats = {0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29};
  constexpr Indices16 kHighFloats = {2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31};
  constexpr Indices16 kLowPairs = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
  constexpr Indices16 kHighPairs = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31};
  Floats16 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = __builtin_shuffle(r[2 * i], r[2 * i + 1], kLowFloats);
    t[2 * i + 1] = __builtin_shuffle(r[2 * i], r[2 * i + 1], kHighFloats);
  }
  // Each 128-bit lane l of r[4i + j] then holds rows 4i..4i+3 of column 4l + j.
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = __builtin_shuffle(t[4 * i], t[4 * i + 2], kLowPairs);
    r[4 * i + 1] = __builtin_shuffle(t[4 * i], t[4 * i + 2], kHighPairs);
    r[4 * i + 2] = __builtin_shuffle(t[4 * i + 1], t[4 * i + 3], kLowPairs);
    r[4 * i + 3] = __builtin_shuffle(t[4 * i + 1], t[4 * i + 3], kHighPairs);
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    split_lanes(t[j], t[4 + j], r[j], r[4 + j]);
    split_lanes(t[8 + j], t[12 + j], r[8 + j], r[12 + j]);
  }
  // Then t[j] holds columns j and 8 + j of rows 0-7 (t[8 + j]: of rows 8-15), t[4 + j] columns 4 + j and 12 + j;
  // the last round gathers each column's four lanes.
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    split_lanes(r[j], r[8 + j], t[j], t[8 + j]);
    split_lanes(r[4 + j], r[12 + j], t[4 + j], t[12 + j]);
  }
}

// pack_panel for a row-major operand on AVX-512: 16 k positions of 16 rows at a time, transposed in registers
// (rows beyond the matrix are zeros). Masked loads and stores take the last k positions and a panel narrower than
// 16 rows (the 12-row panels of a), never a variable-length copy.
__attribute__((target("avx512f"))) void pack_rows_avx512(float* __restrict dst, const float* __restrict x, int64_t ld,
                                                         int64_t k, int64_t r0, int valid, int width) {
  for (int64_t q0 = 0; q0 < k; q0 += 16) {
    const int count = int(std::min<int64_t>(16, k - q0));
    const __mmask16 load_mask = __mmask16((1u << count) - 1);
    for (int g = 0; g < width; g += 16) {
      const __mmask16 store_mask = __mmask16((1u << std::min(16, width - g)) - 1);
      float* d = dst + q0 * width + g;
      if (g >= valid) {  // only padding rows: zeros
        for (int q = 0; q < count; ++q) _mm512_mask_storeu_ps(d + q * width, store_mask, _mm512_setzero_ps());
        continue;
      }
      Floats16 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i)
        r[i] = g + i >= valid ? Floats16{}
               : count == 16  ? Floats16(_mm512_loadu_ps(x + (r0 + g + i) * ld + q0))
                              : Floats16(_mm512_maskz_loadu_ps(load_mask, x + (r0 + g + i) * ld + q0));
      transpose_16x16(r);
      if (count == 16) {
#pragma GCC unroll 16
        for (int q = 0; q < 16; ++q) _mm512_mask_storeu_ps(d + q * width, store_mask, __m512(r[q]));
      } else {
        for (int q = 0; q < count; ++q) _mm512_mask_storeu_ps(d + q * width, store_mask, __m512(r[q]));
      }
    }
  }
}

constexpr MicroKernel kAvx2{"avx2", 6, 16, 8, kAvx2Copies.data(), nullptr, 256, 288, 512};
constexpr MicroKernel kAvx512{"avx512", 12, 32, 16, kAvx512Copies.data(), pack_rows_avx512, 256, 288, 512};
#endif

bool isa_supported(const MicroKernel& kernel) {
#ifdef WEIGHTNORM_GEMM_MULTIVERSION
  __builtin_cpu_init();
  if (&kernel == &kAvx512) return __builtin_cpu_supports("avx512f");
  if (&kernel == &kAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return &kernel == &kBaseline;
}

const MicroKernel& best_micro_kernel() {
#ifdef WEIGHTNORM_GEMM_MULTIVERSION
  if (isa_supported(kAvx512)) return kAvx512;
  if (isa_supported(kAvx2)) return kAvx2;
#endif
  return kBaseline;
}

const MicroKernel* g_forced_kernel = nullptr;  // set_gemm_blocked_isa; nullptr: best_micro_kernel()
GemmImplementation g_implementation = GemmImplementation::kAutomatic;  // set_gemm_implementation

const MicroKernel& micro_kernel() { return g_forced_kernel ? *g_forced_kernel : best_micro_kernel(); }

// ---------------------------------------------------------------------------------------------------------------
// Packing. Panel p of op(a) holds rows [p*MR, p*MR + MR) as k-major MR-float groups: packed[(p*k + q)*MR + r] =
// op(a)[p*MR + r, q], zero beyond m. Panel p of op(b) likewise holds columns [p*NR, p*NR + NR).

// op(x) is [rows, kc]: element (r, q) is x[r*ld + q], or x[q*ld + r] when transposed (x points at op(x)[0, 0]: a
// slice of k may start anywhere).
void pack_panel(const MicroKernel& kernel, float* __restrict dst, const float* __restrict x, int64_t ld, int64_t rows,
                int64_t kc, bool transposed, int64_t r0, int width) {
  const int valid = int(std::min<int64_t>(width, rows - r0));
  if (transposed) {
    for (int64_t q = 0; q < kc; ++q) {
      const float* src = x + q * ld + r0;
      float* d = dst + q * width;
      for (int r = 0; r < valid; ++r) d[r] = src[r];
      for (int r = valid; r < width; ++r) d[r] = 0.0f;
    }
    return;
  }
  if (kernel.pack_rows) return kernel.pack_rows(dst, x, ld, kc, r0, valid, width);
  // Rows are contiguous in x: read a strip of each row, write it strided into the panel, strip by strip so the
  // panel slice being written stays in L1.
  constexpr int64_t kStrip = 64;
  for (int64_t q0 = 0; q0 < kc; q0 += kStrip) {
    const int64_t q1 = std::min(kc, q0 + kStrip);
    for (int r = 0; r < width; ++r) {
      if (r < valid) {
        const float* src = x + (r0 + r) * ld;
        for (int64_t q = q0; q < q1; ++q) dst[q * width + r] = src[q];
      } else {
        for (int64_t q = q0; q < q1; ++q) dst[q * width + r] = 0.0f;
      }
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool has_epilogue(const GemmEpilogue& e) {
  return e.row_scale || e.column_scale || e.row_bias || e.column_bias || e.subtract_matrix || e.raw_out;
}

// A product whose k is long against its output (a Linear's forward x·wᵀ: 100 x 128 outputs over k = 3136 inputs)
// has its k cut into parts, fixed by the shape alone, of at least kMinKPart: each part's product goes to its own
// buffer, and the parts are added in part order (0, 1, 2, ...) for every element before the epilogue. Cutting its
// small output into ever smaller blocks instead (to give every thread work) makes each block stream its rows of a
// and columns of b from memory again: 2 threads then ran such a product at 1.1 times one thread's speed.
constexpr int64_t kMinKPart = 512;
constexpr int64_t kMaxKParts = 8;
constexpr int64_t kMaxPartialFloats = int64_t{1} << 22;  // the parts' products: at most 16 MiB

int64_t blocked_k_parts(int64_t m, int64_t n, int64_t k) {
  if (m * n * k < kParallelMinFlops || k < 4 * std::max(m, n)) return 1;
  return std::max<int64_t>(1, std::min({kMaxKParts, k / kMinKPart, kMaxPartialFloats / (m * n)}));
}

// An operand as the packer sees it: op(x) = [rows, k], transposed or not (see pack_panel), from column q on.
struct PackSource {
  const float* x;
  int64_t rows, k;
  bool transposed;
  int64_t ld() const { return transposed ? rows : k; }
  const float* from(int64_t q) const { return transposed ? x + q * rows : x + q; }
  // Panels [first, first + count) of `width` rows, k columns [q0, q0 + kc), panel after panel (kc*width floats each).
  void pack(const MicroKernel& kernel, float* dst, int64_t first, int64_t count, int width, int64_t q0, int64_t kc) const {
    for (int64_t p = 0; p < count; ++p)
      pack_panel(kernel, dst + p * width * kc, from(q0), ld(), rows, kc, transposed, (first + p) * width, width);
  }
};

// Requests the lines a tile's epilogue reads (a weight-norm gradient's v, out for beta) and writes (out, raw_out):
// tile rows are a whole output row apart (often 4 KB or more, where the hardware prefetcher stops), so without this
// every row of the stores after the k loop waits on memory. Issued one tile ahead, they arrive during the k loop of
// the tile before (issued just before the tile's own k loop, a k = 100 loop was too short to hide them). Issued
// inside the micro-kernel they cost it a spilled register in that loop.
void prefetch_epilogue_tile(const GemmEpilogue& e, float* out, int64_t n, int64_t i0, int64_t rows, int64_t j0,
                            int64_t cols) {
  for (int64_t i = i0; i < i0 + rows; ++i) {
    const int64_t first = i * n + j0, last = first + cols - 1;
    if (e.subtract_matrix) {
      __builtin_prefetch(e.subtract_matrix + first, 0, 3);
      __builtin_prefetch(e.subtract_matrix + last, 0, 3);
    }
    if (e.raw_out) {
      __builtin_prefetch(e.raw_out + first, 1, 3);
      __builtin_prefetch(e.raw_out + last, 1, 3);
    }
    __builtin_prefetch(out + first, 1, 3);
    __builtin_prefetch(out + last, 1, 3);
  }
}

// Below this many multiply-adds the blocked kernel runs on one thread: a conv's per-image 64 x 196 x 288 product
// (3.6M, 50 us on one Zen 5 core) ran 1.4 times slower on 2 threads (when the threads still shared one packing:
// waking the second thread and the packing barrier cost more than half the work saves); 100 x 256 x 256 (6.5M)
// runs 1.24 times faster on 2 threads than on 1, each packing its own panels.
constexpr int64_t kBlockedParallelMinMacs = int64_t{1} << 22;

// The threads of a parallel product as a grid of row_bands x column_bands, each thread owning one rectangle of the
// output and packing the rows of a and columns of b it needs: as many threads as the panels allow (a band is at
// least one panel), and among those grids the one that packs the least, m x column_bands + n x row_bands elements
// per k position (each row of a is packed once per column band, each column of b once per row band).
struct ThreadGrid {
  int64_t row_bands = 1, column_bands = 1;
};

// thread_grid chooses that grid, except when the epilogue reads a matrix of the output's shape (subtract_matrix: weight
// norm's v in the gradient dv = c1 * (dy^T x) - c2 * v): then the threads take whole rows (row bands). In column bands
// both cores read part of every row of v, and the optimizer step that follows updates v by contiguous ranges of rows on
// each core, so its stores had to take lines back from the other core's cache: on a 2-core EPYC VM the
// weight-normalized demo MLP's Adam step took 180-200 us after column-banded dv products and 130 us after row-banded
// ones (the plain MLP's 115-125 us), and its whole training step 5-10% less.
ThreadGrid thread_grid(int threads, int64_t a_panels, int64_t b_panels, int64_t m, int64_t n, bool whole_rows) {
  if (whole_rows && a_panels >= threads) return {threads, 1};
  ThreadGrid best;
  for (int64_t rows = 1; rows <= std::min<int64_t>(threads, a_panels); ++rows) {
    const int64_t columns = std::min<int64_t>(threads / rows, b_panels);
    const int64_t used = rows * columns, best_used = best.row_bands * best.column_bands;
    const bool better = used > best_used || (used == best_used && m * columns + n * rows < m * best.column_bands + n * best.row_bands);
    if (better) best = {rows, columns};
  }
  return best;
}

void gemm_blocked(float* out, const float* a, const float* b, int64_t m, int64_t n, int64_t k, bool transpose_a,
                  bool transpose_b, const GemmEpilogue& epilogue) {
  const MicroKernel& kernel = micro_kernel();
  const int64_t mr = kernel.mr, nr = kernel.nr;
  const int64_t a_panels = ceil_div(m, mr), b_panels = ceil_div(n, nr);
  // op(b) is [k, n]; as "rows" of the packer it is op(b)^T = [n, k], transposed exactly when b is not.
  const PackSource a_source{a, m, k, transpose_a}, b_source{b, n, k, !transpose_b};
  const int64_t parts = blocked_k_parts(m, n, k), part_length = ceil_div(k, parts);
  const int threads = num_threads();
  const bool parallel = threads > 1 && m * n * k >= kBlockedParallelMinMacs;
  const int64_t mc = std::min(kernel.mc, a_panels * mr), nc = std::min(kernel.nc, b_panels * nr);
  // Each part's k in equal slices of at most kernel.kc (288 = 144 + 144, not 256 + a short 32 that costs a whole
  // pass over the tiles' sums for little work).
  const int64_t slices = ceil_div(part_length, kernel.kc), kc_max = ceil_div(part_length, slices);
  const bool single_slice = slices == 1;

  // How the work is shared between threads:
  //  - k in parts: each part is one task that packs its own slices of a and b (they stay in its core's cache, and
  //    no panel is packed twice: a part's task covers the whole output), and the parts' products are added after;
  //  - otherwise each thread owns one rectangle of the output (the threads as a grid of row bands by column bands,
  //    see thread_grid; on one thread, the whole output) and packs the panels of a and b its rectangle needs
  //    itself, then computes the rectangle in MC x NC blocks. A panel packed by one core and
  //    read by another moves between their caches, and across a 2-core EPYC VM that cost more than packing it twice:
  //    with both operands packed once and shared, 400 x 784 x 256 ran at 1.1x one thread's speed and
  //    100 x 784 x 256 at 0.75x; each thread packing its own, 1.5x and 1.2x.
  // Where the tasks' products go: out with the epilogue, or (k in parts) each part's buffer with none.
  static thread_local Workspace parts_workspace;
  float* part_products = parts > 1 ? parts_workspace.get(size_t(parts * m * n)) : nullptr;
  const GemmEpilogue task_epilogue = parts > 1 ? GemmEpilogue{} : epilogue;
  // Without an epilogue, the destination itself holds a tile's sums between k slices and the whole tiles are
  // written straight there; only edge tiles narrower than their vectors go through a buffer. (Storing a float and
  // loading it back is exact: the same bits as through the buffer.)
  const bool plain = !has_epilogue(task_epilogue) && task_epilogue.beta == 0.0f;

  // One output block, rows [i_begin, i_end) by columns [j_begin, j_end), summed over k [k_begin, k_end) into
  // destination. block_a and block_b point at the block's first panels of a and b, each panel_length k positions
  // long starting at k position panel_start. Every element is summed in the same order whatever the block sizes.
  const auto compute_block = [&](float* destination, int64_t i_begin, int64_t i_end, int64_t j_begin, int64_t j_end, int64_t k_begin,
                                 int64_t k_end, const float* block_a, const float* block_b, int64_t panel_length, int64_t panel_start,
                                 float* partial) {
    const int64_t block_a_panels = ceil_div(i_end - i_begin, mr), block_b_panels = ceil_div(j_end - j_begin, nr);
    for (int64_t q0 = k_begin; q0 < k_end; q0 += kc_max) {
      const int64_t kc = std::min(kc_max, k_end - q0);
      const bool first = q0 == k_begin, last = q0 + kc == k_end;
      for (int64_t jp = 0; jp < block_b_panels; ++jp) {
        const int64_t j0 = j_begin + jp * nr, cols = std::min(nr, n - j0);
        const bool whole_vectors = cols % kernel.width == 0;
        const bool straight = plain && whole_vectors;
        const float* b_slice = block_b + jp * nr * panel_length + (q0 - panel_start) * nr;
        for (int64_t ip = 0; ip < block_a_panels; ++ip) {
          const int64_t i0 = i_begin + ip * mr, rows = std::min(mr, m - i0);
          const float* a_slice = block_a + ip * mr * panel_length + (q0 - panel_start) * mr;
          const MicroKernelFn run = kernel.copy_for(rows, cols);
          float* here = destination + i0 * n + j0;
          if (straight) {
            run(kc, a_slice, b_slice, TileTarget{first ? nullptr : here, n, here, n, nullptr, 0, 0});
            continue;
          }
          float* tile = single_slice ? partial : partial + (jp * block_a_panels + ip) * mr * nr;
          const float* sums_so_far = first ? nullptr : tile;
          if (last && whole_vectors) {
            // The block's first tile asks for its own lines; every tile asks for the next one's.
            if (jp == 0 && ip == 0) prefetch_epilogue_tile(task_epilogue, destination, n, i0, rows, j0, cols);
            {
              const int64_t next_ip = ip + 1 < block_a_panels ? ip + 1 : 0;
              const int64_t next_jp = ip + 1 < block_a_panels ? jp : jp + 1;
              if (next_jp < block_b_panels) {
                const int64_t ni0 = i_begin + next_ip * mr, nj0 = j_begin + next_jp * nr;
                prefetch_epilogue_tile(task_epilogue, destination, n, ni0, std::min(mr, m - ni0), nj0, std::min(nr, n - nj0));
              }
            }
            run(kc, a_slice, b_slice, TileTarget{sums_so_far, nr, here, n, &task_epilogue, i0, j0});
            continue;
          }
          run(kc, a_slice, b_slice, TileTarget{sums_so_far, nr, tile, nr, nullptr, 0, 0});
          if (last) apply_epilogue(destination, n, tile, nr, i0, rows, j0, cols, task_epilogue);
        }
      }
    }
  };
  // Every MC x NC block of rows [i_first, i_last) by columns [j_first, j_last) over k [k_begin, k_end), into
  // destination, from this thread's packing: a's panels from row i_first and b's from column j_first, each over
  // that range of k (64-byte aligned: a's part is rounded up to whole lines).
  const auto pack_and_compute = [&](float* destination, int64_t i_first, int64_t i_last, int64_t j_first, int64_t j_last,
                                    int64_t k_begin, int64_t k_end, float* partial) {
    static thread_local Workspace pack_workspace;
    const int64_t length = k_end - k_begin;
    const int64_t a_panel_first = i_first / mr, a_panel_count = ceil_div(i_last - i_first, mr);
    const int64_t b_panel_first = j_first / nr, b_panel_count = ceil_div(j_last - j_first, nr);
    const int64_t own_a_floats = (a_panel_count * mr * length + 15) / 16 * 16;
    float* own_a = pack_workspace.get(size_t(own_a_floats + b_panel_count * nr * length));
    float* own_b = own_a + own_a_floats;
    a_source.pack(kernel, own_a, a_panel_first, a_panel_count, int(mr), k_begin, length);
    b_source.pack(kernel, own_b, b_panel_first, b_panel_count, int(nr), k_begin, length);
    for (int64_t i_begin = i_first; i_begin < i_last; i_begin += mc)
      for (int64_t j_begin = j_first; j_begin < j_last; j_begin += nc)
        compute_block(destination, i_begin, std::min(i_last, i_begin + mc), j_begin, std::min(j_last, j_begin + nc), k_begin, k_end,
                      own_a + ((i_begin - i_first) / mr) * mr * length, own_b + ((j_begin - j_first) / nr) * nr * length, length,
                      k_begin, partial);
    pack_workspace.release_oversized();
  };

  parallel_region(parallel, threads, [&] {
    // Partial sums of one output block between k slices, tile-major; a single slice needs only one tile.
    static thread_local Workspace partial_workspace;
    float* partial = partial_workspace.get(single_slice ? size_t(mr * nr) : size_t(mc * nc));
    if (parts == 1) {
      // This thread's rectangle of the grid, in whole panels (outside a team: the whole output).
      const int team = team_size(), me = team_index();
      const ThreadGrid grid = thread_grid(team, a_panels, b_panels, m, n, epilogue.subtract_matrix != nullptr);
      if (me < grid.row_bands * grid.column_bands) {
        const int64_t band = me / grid.column_bands, column_band = me % grid.column_bands;
        const int64_t a_first = band * a_panels / grid.row_bands, a_last = (band + 1) * a_panels / grid.row_bands;
        const int64_t b_first = column_band * b_panels / grid.column_bands, b_last = (column_band + 1) * b_panels / grid.column_bands;
        pack_and_compute(out, a_first * mr, std::min(m, a_last * mr), b_first * nr, std::min(n, b_last * nr), 0, k, partial);
      }
      return;
    }
    team_for_dynamic(0, parts, [&](int64_t part) {
      const int64_t k_begin = part * part_length, k_end = std::min(k, k_begin + part_length);
      pack_and_compute(part_products + part * m * n, 0, m, 0, n, k_begin, k_end, partial);
    });
    // The parts' products added in part order, then the epilogue, row by row.
    team_for_static(0, m, [&](int64_t i) {
      float* sum = part_products + i * n;
      for (int64_t part = 1; part < parts; ++part) {
        const float* add = part_products + part * m * n + i * n;
        for (int64_t j = 0; j < n; ++j) sum[j] += add[j];
      }
      apply_epilogue(out, n, sum, n, i, 1, 0, n, epilogue);
    });
  });
  parts_workspace.release_oversized();
}

// ---------------------------------------------------------------------------------------------------------------
// OpenBLAS, loaded at run time (never linked: the addon must load on machines without it). Only cblas_sgemm and
// openblas_set_num_threads are used; their C signatures and the CBLAS enum values are fixed by the CBLAS standard
// and OpenBLAS's API, so no cblas.h is needed.

using CblasSgemm = void (*)(int order, int transpose_a, int transpose_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);
constexpr int kCblasRowMajor = 101, kCblasNoTrans = 111, kCblasTrans = 112;

struct OpenBlas {
  CblasSgemm sgemm = nullptr;  // null: not loaded, the blocked kernel is used
  std::string description;     // what backend() reports: where it was loaded from, or why it was not
  std::string core;            // the kernels OpenBLAS chose (openblas_get_corename), e.g. "SkylakeX"; "" if unknown
  // OpenBLAS's OpenMP build keeps its work buffers by OpenMP thread number, so two threads of our pool (not OpenMP
  // threads: both are number 0 to it) calling it at once would share one buffer. Its calls are then made one at a
  // time. The pthread build, preferred below, needs no such care.
  bool one_call_at_a_time = false;
};


#ifdef WEIGHTNORM_LOAD_OPENBLAS

#if defined(__x86_64__)
#define WEIGHTNORM_MULTIARCH "x86_64-linux-gnu"
#elif defined(__aarch64__)
#define WEIGHTNORM_MULTIARCH "aarch64-linux-gnu"
#elif defined(__powerpc64__) && defined(__LITTLE_ENDIAN__)
#define WEIGHTNORM_MULTIARCH "powerpc64le-linux-gnu"
#endif

// Debian's pthread build first: every call runs on one thread (below), so its own thread pool stays idle, and our
// pool's threads may call it at once. Then whatever the system's default libopenblas.so.0 is, then the OpenMP build
// (its calls serialized: see OpenBlas::one_call_at_a_time).
std::vector<std::string> openblas_candidates() {
  std::vector<std::string> paths;
#ifdef WEIGHTNORM_MULTIARCH
  paths.push_back("/usr/lib/" WEIGHTNORM_MULTIARCH "/openblas-pthread/libopenblas.so.0");
#endif
  paths.push_back("libopenblas.so.0");
#ifdef WEIGHTNORM_MULTIARCH
  paths.push_back("/usr/lib/" WEIGHTNORM_MULTIARCH "/openblas-openmp/libopenblas.so.0");
#endif
  return paths;
}

// Opens one candidate and checks it is a usable OpenBLAS; on failure returns null and says why in `why`.
void* open_openblas(const std::string& path, std::string& why) {
  dlerror();
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* error = dlerror();
    why = error ? error : "dlopen failed";
    return nullptr;
  }
  const char* missing = !dlsym(handle, "cblas_sgemm")                ? "cblas_sgemm"
                        : !dlsym(handle, "openblas_set_num_threads") ? "openblas_set_num_threads"
                                                                     : nullptr;
  if (missing) {
    why = path + " has no " + missing + " (not OpenBLAS)";
    dlclose(handle);
    return nullptr;
  }
  // An ILP64 build takes 64-bit integers: calling it with int would read garbage sizes.
  using GetConfig = const char* (*)();
  const auto get_config = reinterpret_cast<GetConfig>(dlsym(handle, "openblas_get_config"));
  if (get_config && std::strstr(get_config(), "USE64BITINT")) {
    why = path + " is a 64-bit-integer (ILP64) build";
    dlclose(handle);
    return nullptr;
  }
  return handle;
}

OpenBlas load_openblas() {
  const char* setting = std::getenv("WEIGHTNORM_OPENBLAS");
  const bool chosen = setting && *setting;
  if (chosen && std::string(setting) == "0")
    return {nullptr, "blocked (hand-written): OpenBLAS disabled by WEIGHTNORM_OPENBLAS=0", ""};
  const std::vector<std::string> candidates = chosen ? std::vector<std::string>{setting} : openblas_candidates();
  std::string tried;
  for (const std::string& path : candidates) {
    std::string why;
    void* handle = open_openblas(path, why);
    if (!handle) {
      tried += (tried.empty() ? "" : "; ") + why;
      continue;
    }
    // Never closed: the library stays loaded for the life of the process.
    OpenBlas blas;
    blas.sgemm = reinterpret_cast<CblasSgemm>(dlsym(handle, "cblas_sgemm"));
    // Every call runs on one thread, inside our own loop over fixed tiles: OpenBLAS's own threading would split
    // the work by the thread count (different bits for different counts) and keep a second pool of workers busy
    // beside ours.
    reinterpret_cast<void (*)(int)>(dlsym(handle, "openblas_set_num_threads"))(1);
    std::string where = path;
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(blas.sgemm), &info) && info.dli_fname && *info.dli_fname)
      where = info.dli_fname;
    if (char* real = realpath(where.c_str(), nullptr)) {
      if (where != real) where += std::string(" = ") + real;
      std::free(real);
    }
    using GetConfig = const char* (*)();
    const auto get_config = reinterpret_cast<GetConfig>(dlsym(handle, "openblas_get_config"));
    using GetParallel = int (*)();
    const auto get_parallel = reinterpret_cast<GetParallel>(dlsym(handle, "openblas_get_parallel"));
    const int parallel = get_parallel ? get_parallel() : -1;
    const char* build = parallel == 0 ? ", sequential build" : parallel == 1 ? ", pthread build"
                        : parallel == 2                      ? ", OpenMP build"
                                                             : "";
    using GetCoreName = const char* (*)();
    const auto get_core_name = reinterpret_cast<GetCoreName>(dlsym(handle, "openblas_get_corename"));
    blas.core = get_core_name ? get_core_name() : "";
    // OpenBLAS picks its kernels once, as it loads, from the CPU (or from OPENBLAS_CORETYPE when that is set).
    const std::string core = blas.core.empty() ? "" : "; kernels for " + blas.core;
    blas.one_call_at_a_time = parallel == 2;
    blas.description = std::string("OpenBLAS (") + (get_config ? get_config() : "version unknown") + build + core +
                       "; loaded at run time from " + where + "; 1 thread per tile" +
                       (blas.one_call_at_a_time
                            ? ", one tile at a time: the OpenMP build is unsafe from several of our threads at once)"
                            : ")");
    return blas;
  }
  if (chosen) return {nullptr, "blocked (hand-written): WEIGHTNORM_OPENBLAS=" + std::string(setting) +
                                   " could not be used: " + tried, ""};
  return {nullptr, "blocked (hand-written): OpenBLAS not found (" + tried + ")", ""};
}

#else

OpenBlas load_openblas() {
  return {nullptr, "blocked (hand-written): built with WEIGHTNORM_USE_BLAS=OFF (OpenBLAS is never loaded)", ""};
}

#endif

// Loaded once, on first use (thread-safe static initialization).
const OpenBlas& openblas() {
  static const OpenBlas loaded = load_openblas();
  return loaded;
}

bool fits_blas_int(int64_t x) { return x <= int64_t(std::numeric_limits<int>::max()); }

// The OpenBLAS path cuts the work into pieces whose size depends on the shape alone, never on the thread count;
// each piece is one single-threaded cblas_sgemm, whichever thread runs it, so every output element gets the same
// bits for any thread count.
//   - Output tiles: none larger than kBlasTileMax in either dimension (a tile's operands stay cache-sized; large
//     products get many tiles); smaller products are cut further, towards kBlasTargetTiles tiles, as long as a
//     tile keeps at least kBlasMinTileMacs multiply-adds (OpenBLAS's per-call cost stays small) and
//     kBlasMinTileSide rows and columns (or the whole dimension). Sides are multiples of 16 (OpenBLAS's
//     micro-kernels work on such panels), except at the edges.
//   - Where a small output still leaves fewer than kBlasTargetTiles pieces and k is long (conv weight gradients,
//     k = batch x positions), k is cut into fixed parts too, of at least kBlasMinKPart: each (tile, part) product
//     goes to its own buffer and the parts are then added in part order, 0, 1, 2, ..., for every element.
// Each call packs its slices of both operands, so every extra tile packs a slice of the other operand again: a
// few pieces per thread balance the load, more cost more packing than they gain (with 16 instead of 8, a
// 64x1024x4096 product ran ~15% slower on 2 cores).
constexpr int64_t kBlasTileMax = 512;
constexpr int64_t kBlasTargetTiles = 8;
constexpr int64_t kBlasMinTileMacs = int64_t{1} << 20;
constexpr int64_t kBlasMinTileSide = 32;
constexpr int64_t kBlasMinKPart = 256;
constexpr int64_t kBlasMaxPartialFloats = int64_t{1} << 22;  // the k parts' products: at most 16 MiB

struct TileGrid {
  int64_t rows, cols;  // tile size (the last row / column of tiles may be smaller)
};

// A side of `length` cut into `parts`: the tile side, rounded up to a multiple of 16.
int64_t tile_side(int64_t length, int64_t parts) { return std::min(length, ceil_div(ceil_div(length, parts), 16) * 16); }

TileGrid blas_tiles(int64_t m, int64_t n, int64_t k) {
  if (m * n * k < kParallelMinFlops) return {m, n};
  int64_t row_parts = ceil_div(m, kBlasTileMax), col_parts = ceil_div(n, kBlasTileMax);
  auto tile_count = [&] { return ceil_div(m, tile_side(m, row_parts)) * ceil_div(n, tile_side(n, col_parts)); };
  while (tile_count() < kBlasTargetTiles) {
    const int64_t rows = tile_side(m, row_parts), cols = tile_side(n, col_parts);
    if (rows * cols * k < 2 * kBlasMinTileMacs) break;
    const bool rows_can = rows >= 2 * kBlasMinTileSide, cols_can = cols >= 2 * kBlasMinTileSide;
    if (rows_can && (rows >= cols || !cols_can)) ++row_parts;
    else if (cols_can) ++col_parts;
    else break;
  }
  return {tile_side(m, row_parts), tile_side(n, col_parts)};
}

// How many parts k is cut into (1: not cut) for output tiles `tiles`, and the length of each (the last may be
// shorter).
struct KSplit {
  int64_t parts, length;
};

KSplit blas_k_split(int64_t m, int64_t n, int64_t k, const TileGrid& tiles) {
  const int64_t count = ceil_div(m, tiles.rows) * ceil_div(n, tiles.cols);
  int64_t parts = 1;
  if (m * n * k >= kParallelMinFlops)
    while (count * parts < kBlasTargetTiles && k / (parts + 1) >= kBlasMinKPart &&
           tiles.rows * tiles.cols * (k / (parts + 1)) >= kBlasMinTileMacs && (parts + 1) * m * n <= kBlasMaxPartialFloats)
      ++parts;
  const int64_t length = std::min(k, ceil_div(ceil_div(k, parts), 16) * 16);
  return {ceil_div(k, length), length};
}

void gemm_openblas(CblasSgemm sgemm, float* out, const float* a, const float* b, int64_t m, int64_t n, int64_t k,
                   bool transpose_a, bool transpose_b, const GemmEpilogue& epilogue) {
  const TileGrid tiles = blas_tiles(m, n, k);
  const int64_t row_tiles = ceil_div(m, tiles.rows), col_tiles = ceil_div(n, tiles.cols);
  const KSplit split = blas_k_split(m, n, k, tiles);
  const int threads = num_threads();
  // Rows i0.. and columns j0.. of op(a) op(b), over k from q0 on for kc, into c (row stride ldc).
  auto product = [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, int64_t q0, int64_t kc, float beta, float* c,
                     int64_t ldc) {
    const float* a_tile = transpose_a ? a + q0 * m + i0 : a + i0 * k + q0;
    const float* b_tile = transpose_b ? b + j0 * k + q0 : b + q0 * n + j0;
    static std::mutex one_at_a_time;
    std::unique_lock<std::mutex> lock(one_at_a_time, std::defer_lock);
    if (openblas().one_call_at_a_time) lock.lock();
    sgemm(kCblasRowMajor, transpose_a ? kCblasTrans : kCblasNoTrans, transpose_b ? kCblasTrans : kCblasNoTrans,
          int(rows), int(cols), int(kc), 1.0f, a_tile, int(transpose_a ? m : k), b_tile, int(transpose_b ? k : n), beta,
          c, int(ldc));
  };
  if (split.parts > 1) {
    // Each part's product over all of out, then per element the parts in order and the epilogue.
    static thread_local Workspace partial_workspace;
    float* partial = partial_workspace.get(size_t(split.parts * m * n));
    parallel_region(threads > 1, threads, [&] {
        for (const int64_t item : team_dynamic(0, row_tiles * col_tiles * split.parts)) {
          const int64_t t = item / split.parts, part = item % split.parts;
          const int64_t i0 = (t / col_tiles) * tiles.rows, j0 = (t % col_tiles) * tiles.cols, q0 = part * split.length;
          product(i0, std::min(tiles.rows, m - i0), j0, std::min(tiles.cols, n - j0), q0, std::min(split.length, k - q0),
                  0.0f, partial + part * m * n + i0 * n + j0, n);
        }
        for (const int64_t i : team_static(0, m)) {
          float* sum = partial + i * n;
          for (int64_t part = 1; part < split.parts; ++part) {
            const float* add = partial + part * m * n + i * n;
            for (int64_t j = 0; j < n; ++j) sum[j] += add[j];
          }
          apply_epilogue(out, n, sum, n, i, 1, 0, n, epilogue);
        }
    });
    partial_workspace.release_oversized();
    return;
  }
  // Where each tile's product lands, so that the epilogue reads it once and nothing is copied:
  //   raw_out wanted: into raw_out (it must hold the product alone), and the epilogue writes out from there;
  //   a scale with beta != 0: into a per-thread buffer (the scale multiplies the product alone, and the old out
  //     must still be there to be added);
  //   otherwise into out itself, sgemm adding beta * out when there is no scale, and the remaining steps run in
  //     place on the tile while it is in cache (each element is read before it is written, so in place is safe).
  // The weight-normalized Linear's products (scale and raw_out, or scale with beta == 0) thus skip a buffer pass.
  const bool scaled = epilogue.row_scale || epilogue.column_scale;
  const bool into_raw = epilogue.raw_out != nullptr;
  const bool buffered = !into_raw && scaled && epilogue.beta != 0.0f;
  GemmEpilogue in_place = epilogue;
  in_place.beta = 0.0f;
  const bool in_place_steps = !buffered && !into_raw && has_epilogue(epilogue);
  parallel_region(threads > 1 && row_tiles * col_tiles > 1, threads, [&] {
    static thread_local Workspace tile_workspace;
    float* tile_buffer = buffered ? tile_workspace.get(size_t(tiles.rows * tiles.cols)) : nullptr;
    for (const int64_t t : team_dynamic(0, row_tiles * col_tiles)) {
      const int64_t i0 = (t / col_tiles) * tiles.rows, j0 = (t % col_tiles) * tiles.cols;
      const int64_t rows = std::min(tiles.rows, m - i0), cols = std::min(tiles.cols, n - j0);
      float* c = buffered ? tile_buffer : (into_raw ? epilogue.raw_out : out) + i0 * n + j0;
      const int64_t ldc = buffered ? cols : n;
      product(i0, rows, j0, cols, 0, k, buffered || into_raw ? 0.0f : epilogue.beta, c, ldc);
      if (buffered || into_raw) apply_epilogue(out, n, c, ldc, i0, rows, j0, cols, epilogue);
      else if (in_place_steps) apply_epilogue(out, n, c, ldc, i0, rows, j0, cols, in_place);
    }
  });
}

// OpenBLAS's kernel families with AVX-512 (openblas_get_corename's names for x86-64; compared ignoring case).
bool blas_core_has_avx512(const std::string& core) {
  std::string name;
  for (const char c : core) name += char(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return name == "skylakex" || name == "cooperlake" || name == "sapphirerapids";
}

// The automatic choice (see gemm.h): the blocked kernel where its AVX-512 micro-kernel runs and OpenBLAS's kernels
// do not use AVX-512. It depends on the CPU and OpenBLAS's kernels alone, never on the shape, the thread count or a
// timing, so a process computes every product of a given shape the same way, run after run.
bool blocked_beats_openblas() {
#ifdef WEIGHTNORM_GEMM_MULTIVERSION
  return &best_micro_kernel() == &kAvx512 && !blas_core_has_avx512(openblas().core);
#else
  return false;
#endif
}

bool uses_openblas() {
  if (!openblas().sgemm || g_implementation == GemmImplementation::kBlocked) return false;
  return g_implementation == GemmImplementation::kOpenBlas || !blocked_beats_openblas();
}

}  // namespace

void gemm(float* out, const float* a, const float* b, const GemmShape& shape, const GemmEpilogue& epilogue) {
  const int64_t m = shape.m, n = shape.n, k = shape.k;
  const bool transpose_a = shape.transpose_a, transpose_b = shape.transpose_b;
  if (gemm_writes_nothing(shape)) return;
  if (k == 0) return epilogue_of_zero(out, m, n, epilogue);
  if (uses_openblas() && fits_blas_int(m) && fits_blas_int(n) && fits_blas_int(k) && fits_blas_int(m * k) &&
      fits_blas_int(k * n) && fits_blas_int(m * n))
    return gemm_openblas(openblas().sgemm, out, a, b, m, n, k, transpose_a, transpose_b, epilogue);
  gemm_blocked(out, a, b, m, n, k, transpose_a, transpose_b, epilogue);
}

const char* gemm_backend() { return uses_openblas() ? "openblas" : "blocked"; }

std::string gemm_backend_description() {
  if (!openblas().sgemm || uses_openblas()) return openblas().description;
  if (g_implementation == GemmImplementation::kBlocked)
    return "blocked (hand-written): OpenBLAS loaded but set aside by set_gemm_implementation(kBlocked)";
  return std::string("blocked (hand-written, ") + micro_kernel().isa + " micro-kernel): chosen over OpenBLAS, whose " +
         openblas().core + " kernels do not use AVX-512; " +
         openblas().description;
}

std::string gemm_blas_core() { return openblas().core; }

void set_gemm_implementation(GemmImplementation implementation) { g_implementation = implementation; }

void set_gemm_prefer_blas(bool prefer) {
  set_gemm_implementation(prefer ? GemmImplementation::kOpenBlas : GemmImplementation::kBlocked);
}

const char* gemm_blocked_isa() { return micro_kernel().isa; }

bool set_gemm_blocked_isa(const char* isa) {
  if (!isa || !*isa) {
    g_forced_kernel = nullptr;
    return true;
  }
  const std::string name(isa);
  const MicroKernel* candidates[] = {
#ifdef WEIGHTNORM_GEMM_MULTIVERSION
      &kAvx512, &kAvx2,
#endif
      &kBaseline};
  for (const MicroKernel* candidate : candidates) {
    if (name == candidate->isa && isa_supported(*candidate)) {
      g_forced_kernel = candidate;
      return true;
    }
  }
  return false;
}

}  // namespace weightnorm::cpu

// ---------------------------------------------------------------------------------------------------------------
// bfloat16: the float32 path on widened copies (widening is exact), the epilogue in float32 on the accumulator,
// then one rounding of out (and raw_out) to bfloat16, as on CUDA.
namespace weightnorm::cpu {
namespace {

AlignedPointer widened(const bfloat16* x, int64_t count) {
  AlignedPointer wide = allocate_floats(size_t(std::max<int64_t>(count, 1)));
  float* w = wide.get();
  const int threads = num_threads();
  parallel_region(count >= kParallelMinFlops, threads, [&] {
    for (const int64_t i : team_static(0, count)) w[i] = bfloat16_to_float(x[i]);
  });
  return wide;
}

void narrow(bfloat16* out, const float* x, int64_t count) {
  const int threads = num_threads();
  parallel_region(count >= kParallelMinFlops, threads, [&] {
    for (const int64_t i : team_static(0, count)) out[i] = float_to_bfloat16(x[i]);
  });
}

}  // namespace

void gemm(bfloat16* out, const bfloat16* a, const bfloat16* b, const GemmShape& shape,
          const GemmEpilogueBf16& epilogue) {
  const int64_t m = shape.m, n = shape.n, k = shape.k;
  if (gemm_writes_nothing(shape)) return;
  const AlignedPointer a_wide = widened(a, m * k), b_wide = widened(b, k * n);
  // With beta == 0 out is not read (it may hold NaN), as in the float32 path.
  const AlignedPointer out_wide = epilogue.beta != 0.0f ? widened(out, m * n) : allocate_floats(size_t(m * n));
  const AlignedPointer subtract_wide = epilogue.subtract_matrix ? widened(epilogue.subtract_matrix, m * n) : nullptr;
  const AlignedPointer raw_wide = epilogue.raw_out ? allocate_floats(size_t(m * n)) : nullptr;
  GemmEpilogue wide;
  wide.row_scale = epilogue.row_scale;
  wide.column_scale = epilogue.column_scale;
  wide.row_bias = epilogue.row_bias;
  wide.column_bias = epilogue.column_bias;
  wide.subtract_coefficient = epilogue.subtract_coefficient;
  wide.subtract_matrix = subtract_wide.get();
  wide.beta = epilogue.beta;
  wide.raw_out = raw_wide.get();
  gemm(out_wide.get(), a_wide.get(), b_wide.get(), shape, wide);
  narrow(out, out_wide.get(), m * n);
  if (epilogue.raw_out) narrow(epilogue.raw_out, raw_wide.get(), m * n);
}

}  // namespace weightnorm::cpu
