// CUDA GEMM with a fused epilogue (see gemm.cuh): out[m, n] = op(a) op(b), then the epilogue, row-major.
//
// gemm_simt_kernel: FP32 SIMT, shared-memory tiles with register blocking. A block computes a BM x BN tile of
// out; each thread a TM x TN sub-tile, as TM/4 x TN/4 groups of 4 x 4 spread BM/(TM/4) rows and BN/(TN/4)
// columns apart, so that a warp's shared-memory reads are 16-byte vectors without bank conflicts. Per k step of
// BK: every thread fetches one 4-float group of op(a) and one of op(b) from global memory (a 16-byte load when
// the contiguous dimension is a multiple of 4 and the pointer aligned, else 4 guarded scalar loads), the next
// step's loads are in flight while the current step's tiles are multiplied out of the other shared buffer
// (double buffering, one __syncthreads per step). Shared tiles are k-major (As[k][m], Bs[k][n]); an operand
// whose storage is contiguous along k is transposed on the way in (rows padded by 4 floats against bank
// conflicts). Edge tiles are zero-filled on load and guarded on store, so any m, n, k works; element offsets
// are 64-bit. The epilogue is applied as each thread stores its outputs (16-byte stores where aligned).
//   Two configurations: 128x128x8 with 8x8 per thread (large outputs) and 64x64x16 with 4x4 per thread (fewer
//   than one wave of 128-tiles); both 256 threads. Template parameters: the configuration and the transposes.
// Split-k: when even the small tiles leave SMs idle and k is long (conv's weight gradient: a small output,
// k = batch * pixels), k is cut into `splits` ranges; each writes its raw partial tile to scratch, and
// gemm_split_reduce_kernel adds the partials in split order and applies the epilogue. No atomics anywhere:
// results are bitwise identical run to run. k == 0 goes through the reduce kernel with no partials.
//
// Tensor cores (gemm_mma.cu; sm_80 and newer): the float32 gemm() when gemm_precision() is kTensorFloat32
// (gemm_backend() "tf32-mma"), and every bfloat16 gemm(). One kernel template for both element types:
//   - 128 x 128 output tile per block, 256 threads = 8 warps as 2 (m) x 4 (n), each warp 64 x 32 = 4 x 4 mma tiles
//     with 64 float32 accumulators per thread. TF32: mma.sync m16n8k8 .tf32, operands rounded by cvt.rna.tf32.f32
//     as they leave shared memory (one 32-bit ld.shared per fragment register). bfloat16: mma.sync m16n8k16
//     .bf16, fragments by ldmatrix.x4 (.trans where the operand is stored k-strided).
//   - A k step moves 128 bytes of k per row: BK = 32 floats or 64 bfloat16, 16 KB per operand per stage, in a
//     3-stage cp.async pipeline (96 KB dynamic shared memory; two steps in flight while one is multiplied, one
//     __syncthreads per step). Each thread copies 4 chunks of 16 bytes per operand per step; 16-byte cp.async
//     (zero-filled past the edges via src-size 0) when the operand's contiguous dimension is a multiple of 16
//     bytes and the pointer 16-byte aligned, else element-wise: 4-byte cp.async for float, guarded loads plus one
//     16-byte shared store for bfloat16 (2 bytes is below cp.async's smallest size).
//   - Shared tiles keep the operand's storage order (k-contiguous: [128 rows][128 bytes of k]; k-strided:
//     [BK rows][128 elements]), so all four transposes are plain 16-byte copies; XOR swizzles of the 16-byte chunk
//     index instead of padding make every fragment read bank-conflict-free (static_asserts in gemm_mma.cu prove it
//     for the TF32 lane pattern and for ldmatrix) and keep 3 stages within sm_86/89's 99 KB.
//   - Epilogue straight from the accumulator registers: each lane holds pairs of adjacent columns, stored as one
//     8-byte (float) or 4-byte (bfloat16) access where n is even and the pointers aligned, else element-wise; the
//     float32 epilogue value is rounded once to bfloat16. Split-k as for SIMT (small outputs, long k): raw float32
//     partials and the same ordered reduce kernel, so results are bitwise reproducible.
// Hopper (gemm_wgmma.cu, built for sm_90a only): on compute capability 9.0 the tensor-core gemm() prefers a
// wgmma kernel fed by TMA (128 x 256 tiles, 4 mbarrier stages, two consumer warpgroups; gemm_backend()
// "tf32-wgmma"), once it has passed a one-time self-check in this process (gemm_tensor_core_status() says which
// and why not). Shapes or alignments it does not take, and any failure of the self-check, go to mma.sync.
// Resource usage, tensor-core kernels (registers per thread for NN/TN/NT/TT; 98304 B dynamic shared memory, no
// static; 0 spills everywhere), __launch_bounds__(256, 1):
//     sm_90   TF32 169 / 168 / 158 / 178; bfloat16 184 / 168 / 173 / 190
//     sm_80   TF32 170 / 146 / 147 / 164; bfloat16 181 / 168 / 168 / 188   (sm_86/89 alike)
//   With (256, 2) ptxas caps at 128 and spills 8 to 52 bytes in half the variants, so one 8-warp block per SM.
// Instructions (PTX of one k step per kernel; no SASS disassembler on the build machine, so the HMMA/LDGSTS counts
// of the SASS are still to be read on a machine with cuobjdump): 64 mma.sync per step per warp (16 per k8 / k16
// slice), 8 cp.async.cg (16-byte) per thread per step; TF32: 96 ld.shared.b32 + 96 cvt.rna; bfloat16: 24
// ldmatrix.x4. All shared reads are ld.shared (no generic loads).
// Expected on an H200 (not measured yet), 4096^3: per warp and k8 slice the TF32 kernel reads 3 KB of fragments
// from shared memory for 16 mma of 2048 flop; at 128 B/clock per SM that caps it near 1365 flop/clock/SM, about
// 350 TFLOP/s at 1.98 GHz, and mma.sync on Hopper tops out near 60% of the 495 TFLOP/s wgmma peak (~300). With one
// 8-warp block per SM, cvt overhead and the per-step barrier: 180 to 250 TFLOP/s predicted, 45 to 65% of cuBLAS
// TF32 (350 to 450). bfloat16 moves the same bytes per 2x the flop: 350 to 500 TFLOP/s predicted. Reaching 60% of
// cuBLAS reliably likely needs wgmma (sm_90a) with TMA loads.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <stdexcept>

#include "check.cuh"
#include "gemm.cuh"
#include "gemm_common.cuh"
#include "gemm_mma.cuh"
#include "gemm_wgmma.cuh"
#include "runtime.cuh"

namespace weightnorm::cuda {
namespace {

// Stores 4 consecutive products of row i starting at column j (some may lie beyond n).
__device__ __forceinline__ void store_group(const GemmArgs& args, int64_t i, int64_t j, const RowTerms& row,
                                            const float (&acc)[4], int split) {
  const int64_t n = args.n;
  if (args.partial) {
    float* p = args.partial + (int64_t(split) * args.m + i) * n + j;
    if (args.vector_out && j + 3 < n) {
      *reinterpret_cast<float4*>(p) = make_float4(acc[0], acc[1], acc[2], acc[3]);
    } else {
#pragma unroll
      for (int c = 0; c < 4; ++c)
        if (j + c < n) p[c] = acc[c];
    }
    return;
  }
  const GemmEpilogue& e = args.epilogue;
  float* o = args.out + i * n + j;
  if (e.raw_out) {
    float* raw = e.raw_out + i * n + j;
    if (args.vector_out && j + 3 < n) {
      *reinterpret_cast<float4*>(raw) = make_float4(acc[0], acc[1], acc[2], acc[3]);
    } else {
#pragma unroll
      for (int c = 0; c < 4; ++c)
        if (j + c < n) raw[c] = acc[c];
    }
  }
  if (args.vector_out && j + 3 < n) {
    float4 previous = make_float4(0.0f, 0.0f, 0.0f, 0.0f), subtract = previous;
    if (e.beta != 0.0f) previous = *reinterpret_cast<const float4*>(o);
    if (e.subtract_matrix) subtract = *reinterpret_cast<const float4*>(e.subtract_matrix + i * n + j);
    float4 v;
    v.x = epilogue_value(e, row, acc[0], j, subtract.x, previous.x);
    v.y = epilogue_value(e, row, acc[1], j + 1, subtract.y, previous.y);
    v.z = epilogue_value(e, row, acc[2], j + 2, subtract.z, previous.z);
    v.w = epilogue_value(e, row, acc[3], j + 3, subtract.w, previous.w);
    *reinterpret_cast<float4*>(o) = v;
    return;
  }
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    if (j + c >= n) break;
    const float previous = e.beta != 0.0f ? o[c] : 0.0f;
    const float subtract = e.subtract_matrix ? e.subtract_matrix[i * n + j + c] : 0.0f;
    o[c] = epilogue_value(e, row, acc[c], j + c, subtract, previous);
  }
}

// One thread's 4-float load group of an operand, walking down k one BK step at a time. The group is 4
// consecutive floats of the operand's storage: along k when kKContiguous (a stored [m, k], b stored [n, k]), else
// along m or n (a [k, m], b [k, n]). k positions are relative to the split's first k and fit 32 bits (the host
// keeps a split's k range below 2^30).
template <bool kKContiguous>
struct GroupLoader {
  const float* p;  // first float of the group at the current step
  int k_position;  // k of the group's first float at the current step, relative to the split's first k
  int valid;       // floats of the group inside m / n (k strided), or 4 / 0 for a row in / out of range;
                   // plus kVectorFlag when 16-byte loads are allowed
  static constexpr int kVectorFlag = 8;

  __device__ __forceinline__ float4 load(int k_length) const {
    const int other = valid & 7;
    const int count = kKContiguous ? min(other, max(k_length - k_position, 0)) : (k_position < k_length ? other : 0);
    if ((valid & kVectorFlag) && count == 4) return *reinterpret_cast<const float4*>(p);
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (count > 0) v.x = p[0];
    if (count > 1) v.y = p[1];
    if (count > 2) v.z = p[2];
    if (count > 3) v.w = p[3];
    return v;
  }
  // ld: the storage's row length (only used when k is strided: one step is BK rows down).
  __device__ __forceinline__ void next(int bk, int64_t ld) {
    p += kKContiguous ? int64_t(bk) : int64_t(bk) * ld;
    k_position += bk;
  }
};

// x stored [outer, ld] row-major; the group starts at k = k_begin + k_offset (the outer index when k is strided,
// the inner one when contiguous) and at `other` on the other axis, which ends at other_end.
template <bool kKContiguous>
__device__ __forceinline__ GroupLoader<kKContiguous> make_loader(const float* x, int64_t ld, int64_t k_begin,
                                                                 int k_offset, int64_t other, int64_t other_end,
                                                                 bool vector) {
  GroupLoader<kKContiguous> l;
  l.k_position = k_offset;
  if (kKContiguous) {
    l.p = x + other * ld + (k_begin + k_offset);
    l.valid = other < other_end ? 4 : 0;
  } else {
    l.p = x + (k_begin + k_offset) * ld + other;
    const int64_t available = other_end - other;
    l.valid = available <= 0 ? 0 : available >= 4 ? 4 : int(available);
  }
  if (vector) l.valid |= GroupLoader<kKContiguous>::kVectorFlag;
  return l;
}

template <int BM, int BN, int BK, int TM, int TN, int kMinBlocksPerSM>
struct Config {
  static constexpr int kBM = BM, kBN = BN, kBK = BK, kTM = TM, kTN = TN, kMinBlocks = kMinBlocksPerSM;
  static constexpr int kThreadsN = BN / TN, kThreadsM = BM / TM, kThreads = kThreadsN * kThreadsM;
  static constexpr int kGroupsM = TM / 4, kGroupsN = TN / 4;
  static constexpr int kStrideM = BM / kGroupsM, kStrideN = BN / kGroupsN;  // distance between a thread's groups
  static constexpr int kPad = 4;
  static_assert(TM % 4 == 0 && TN % 4 == 0 && BK % 4 == 0, "4-float groups");
  static_assert(BM * BK / 4 == kThreads && BN * BK / 4 == kThreads, "one load group per thread per operand");
};
// Two resident blocks per SM (16 warps) for the large tile: at most 128 registers per thread.
using LargeTile = Config<128, 128, 8, 8, 8, 2>;
using SmallTile = Config<64, 64, 16, 4, 4, 2>;

template <typename C, bool kTransA, bool kTransB>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks) gemm_simt_kernel(GemmArgs args) {
  constexpr int BM = C::kBM, BN = C::kBN, BK = C::kBK;
  __shared__ __align__(16) float As[2][BK][BM + C::kPad];
  __shared__ __align__(16) float Bs[2][BK][BN + C::kPad];

  const int64_t tiles_n = (args.n + BN - 1) / BN;
  const int64_t m0 = int64_t(blockIdx.x) / tiles_n * BM, n0 = int64_t(blockIdx.x) % tiles_n * BN;
  const int split = blockIdx.z;
  const int64_t k_begin = int64_t(split) * args.k_chunk;
  const int k_length = int(min(args.k - k_begin, args.k_chunk));
  const int tid = threadIdx.x, tx = tid % C::kThreadsN, ty = tid / C::kThreadsN;

  // This thread's load group of each operand: (strided, contiguous) within the tile.
  // op(a) [m, k]: a stored [m, k] is contiguous along k (groups of 4 k for one row); [k, m] along m.
  const int a_strided = kTransA ? tid / (BM / 4) : tid / (BK / 4);
  const int a_contiguous = kTransA ? tid % (BM / 4) * 4 : tid % (BK / 4) * 4;
  // op(b) [k, n]: b stored [k, n] is contiguous along n; [n, k] along k.
  const int b_strided = kTransB ? tid / (BK / 4) : tid / (BN / 4);
  const int b_contiguous = kTransB ? tid % (BK / 4) * 4 : tid % (BN / 4) * 4;

  // op(a) [m, k]: a stored [m, k] is k-contiguous, [k, m] k-strided; op(b) [k, n]: b stored [n, k] is
  // k-contiguous, [k, n] k-strided.
  GroupLoader<!kTransA> loader_a = [&] {
    if constexpr (kTransA)
      return make_loader<false>(args.a, args.m, k_begin, a_strided, m0 + a_contiguous, args.m, args.vector_a);
    else
      return make_loader<true>(args.a, args.k, k_begin, a_contiguous, m0 + a_strided, args.m, args.vector_a);
  }();
  GroupLoader<kTransB> loader_b = [&] {
    if constexpr (kTransB)
      return make_loader<true>(args.b, args.k, k_begin, b_contiguous, n0 + b_strided, args.n, args.vector_b);
    else
      return make_loader<false>(args.b, args.n, k_begin, b_strided, n0 + b_contiguous, args.n, args.vector_b);
  }();
  auto store_tiles = [&](int buffer, const float4& ga, const float4& gb) {
    if (kTransA) {
      *reinterpret_cast<float4*>(&As[buffer][a_strided][a_contiguous]) = ga;
    } else {
      As[buffer][a_contiguous + 0][a_strided] = ga.x;
      As[buffer][a_contiguous + 1][a_strided] = ga.y;
      As[buffer][a_contiguous + 2][a_strided] = ga.z;
      As[buffer][a_contiguous + 3][a_strided] = ga.w;
    }
    if (kTransB) {
      Bs[buffer][b_contiguous + 0][b_strided] = gb.x;
      Bs[buffer][b_contiguous + 1][b_strided] = gb.y;
      Bs[buffer][b_contiguous + 2][b_strided] = gb.z;
      Bs[buffer][b_contiguous + 3][b_strided] = gb.w;
    } else {
      *reinterpret_cast<float4*>(&Bs[buffer][b_strided][b_contiguous]) = gb;
    }
  };

  float acc[C::kTM][C::kTN];
#pragma unroll
  for (int i = 0; i < C::kTM; ++i)
#pragma unroll
    for (int j = 0; j < C::kTN; ++j) acc[i][j] = 0.0f;

  const int steps = (k_length + BK - 1) / BK;
  if (steps > 0) store_tiles(0, loader_a.load(k_length), loader_b.load(k_length));
  __syncthreads();
#pragma unroll 1
  for (int step = 0; step < steps; ++step) {
    const int buffer = int(step & 1);
    // The next step's loads go out now and land while this step computes (past the split's k they read nothing).
    loader_a.next(BK, args.m);  // a stored [k, m] when k is strided
    loader_b.next(BK, args.n);  // b stored [k, n] when k is strided
    const float4 next_a = loader_a.load(k_length);
    const float4 next_b = loader_b.load(k_length);
#pragma unroll 2  // see the resource note at the top
    for (int kk = 0; kk < BK; ++kk) {
      float fa[C::kTM], fb[C::kTN];
#pragma unroll
      for (int g = 0; g < C::kGroupsM; ++g) {
        const float4 t = *reinterpret_cast<const float4*>(&As[buffer][kk][g * C::kStrideM + ty * 4]);
        fa[g * 4 + 0] = t.x;
        fa[g * 4 + 1] = t.y;
        fa[g * 4 + 2] = t.z;
        fa[g * 4 + 3] = t.w;
      }
#pragma unroll
      for (int h = 0; h < C::kGroupsN; ++h) {
        const float4 t = *reinterpret_cast<const float4*>(&Bs[buffer][kk][h * C::kStrideN + tx * 4]);
        fb[h * 4 + 0] = t.x;
        fb[h * 4 + 1] = t.y;
        fb[h * 4 + 2] = t.z;
        fb[h * 4 + 3] = t.w;
      }
#pragma unroll
      for (int i = 0; i < C::kTM; ++i)
#pragma unroll
        for (int j = 0; j < C::kTN; ++j) acc[i][j] = fmaf(fa[i], fb[j], acc[i][j]);
    }
    store_tiles(buffer ^ 1, next_a, next_b);  // the other buffer: every thread finished reading it last step
    __syncthreads();
  }

#pragma unroll
  for (int g = 0; g < C::kGroupsM; ++g) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t i = m0 + g * C::kStrideM + ty * 4 + r;
      if (i >= args.m) continue;
      const RowTerms row = args.partial ? RowTerms{1.0f, 0.0f, 0.0f} : row_terms(args.epilogue, i);
#pragma unroll
      for (int h = 0; h < C::kGroupsN; ++h) {
        const int64_t j = n0 + h * C::kStrideN + tx * 4;
        if (j >= args.n) continue;
        const float group[4] = {acc[g * 4 + r][h * 4 + 0], acc[g * 4 + r][h * 4 + 1], acc[g * 4 + r][h * 4 + 2],
                                acc[g * 4 + r][h * 4 + 3]};
        store_group(args, i, j, row, group, split);
      }
    }
  }
}

// out[i, j] = epilogue(sum over splits s, in order, of partial[s, i, j]); splits == 0 gives the epilogue of 0.
// Shared by the SIMT and tensor-core kernels; for bfloat16 out the float32 result is rounded once.
template <typename T>
__global__ void gemm_split_reduce_kernel(GemmArgsOf<T> args, int splits) {
  const int64_t count = args.m * args.n;
  for (int64_t x = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; x < count; x += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s) acc += args.partial[int64_t(s) * count + x];
    const int64_t i = x / args.n, j = x % args.n;
    const GemmEpilogueOf<T>& e = args.epilogue;
    const float previous = e.beta != 0.0f ? element_to_float(args.out[x]) : 0.0f;
    const float subtract = e.subtract_matrix ? element_to_float(e.subtract_matrix[x]) : 0.0f;
    if (e.raw_out) e.raw_out[x] = element_from_float<T>(acc);
    args.out[x] = element_from_float<T>(epilogue_value(e, row_terms(e, i), acc, j, subtract, previous));
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int multiprocessors() { return std::max(1, device_status().multiprocessors); }

// Split-k only when a split keeps at least this much of k.
constexpr int64_t kMinSplitK = 512;
constexpr int kMaxSplits = 32;
constexpr int64_t kMaxSplitK = int64_t{1} << 30;

template <typename C, bool kTransA, bool kTransB>
void launch_simt(const GemmArgs& args, int64_t tiles, int splits) {
  const dim3 grid(unsigned(tiles), 1, unsigned(splits));
  gemm_simt_kernel<C, kTransA, kTransB><<<grid, C::kThreads, 0, library_stream()>>>(args);
  WN_CUDA_CHECK_LAUNCH();
}

template <typename C>
void launch_simt(const GemmArgs& args, bool transpose_a, bool transpose_b, int64_t tiles, int splits) {
  if (!transpose_a && !transpose_b) launch_simt<C, false, false>(args, tiles, splits);
  if (transpose_a && !transpose_b) launch_simt<C, true, false>(args, tiles, splits);
  if (!transpose_a && transpose_b) launch_simt<C, false, true>(args, tiles, splits);
  if (transpose_a && transpose_b) launch_simt<C, true, true>(args, tiles, splits);
}

template <typename T>
void launch_reduce(const GemmArgsOf<T>& args, int splits) {
  const int64_t count = args.m * args.n;
  const int64_t blocks = std::min<int64_t>((count + 255) / 256, int64_t{multiprocessors()} * 16);
  gemm_split_reduce_kernel<T><<<unsigned(std::max<int64_t>(blocks, 1)), 256, 0, library_stream()>>>(args, splits);
  WN_CUDA_CHECK_LAUNCH();
}

// k range of one split (a multiple of bk): enough splits to fill the GPU when `tiles` output tiles do not and k is
// long, and always enough to keep a split's k below 2^30 (the kernels count k within a split in 32 bits).
int64_t split_k_chunk(int64_t k, int64_t tiles, int64_t bk) {
  const int sms = multiprocessors();
  int64_t wanted = 1;
  if (tiles < sms && k >= 2 * kMinSplitK)
    wanted = std::min<int64_t>({(2 * sms + tiles - 1) / tiles, k / kMinSplitK, kMaxSplits});
  wanted = std::max(wanted, (k + kMaxSplitK - 1) / kMaxSplitK);
  return ((k + wanted - 1) / wanted + bk - 1) / bk * bk;
}

bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <typename T>
GemmArgsOf<T> make_args(T* out, const T* a, const T* b, int64_t m, int64_t n, int64_t k, bool transpose_a,
                        bool transpose_b, const GemmEpilogueOf<T>& epilogue) {
  GemmArgsOf<T> args{out, a, b, m, n, k, epilogue, nullptr, k, false, false, false, false};
  constexpr int64_t kPerVector = 16 / sizeof(T);
  args.vector_a = aligned16(a) && (transpose_a ? m : k) % kPerVector == 0;
  args.vector_b = aligned16(b) && (transpose_b ? k : n) % kPerVector == 0;
  auto all_aligned = [&](size_t bytes) {
    return aligned_to(out, bytes) && (!epilogue.subtract_matrix || aligned_to(epilogue.subtract_matrix, bytes)) &&
           (!epilogue.raw_out || aligned_to(epilogue.raw_out, bytes));
  };
  args.vector_out = n % 4 == 0 && all_aligned(4 * sizeof(T));
  args.pair_out = n % 2 == 0 && all_aligned(2 * sizeof(T));
  return args;
}

bool tensor_cores_available() { return device_status().compute_major >= 8; }

GemmPrecision precision_setting = GemmPrecision::kFloat32;
GemmTensorCoreKernel tensor_core_kernel_setting = GemmTensorCoreKernel::kAuto;
const char* last_tensor_core_kernel = "";

// wgmma and TMA exist in sm_90a code only, which runs on compute capability 9.0 exactly.
bool wgmma_device() {
  const DeviceStatus& device = device_status();
  return device.usable && device.compute_major == 9 && device.compute_minor == 0;
}

// In kAuto, a k-strided operand is transposed for the wgmma kernel only when every element of it feeds at least this
// many outputs (m for b, n for a): the copy then costs under ~10% of the product at 4096.
constexpr int64_t kWgmmaTransposeMinReuse = 1024;

// The wgmma path (gemm_wgmma.cu) when it applies: on an sm_90 device whose kernels passed their self-check, k a
// multiple of 16 bytes, operands read in place 16-byte aligned. The kernel reads both operands k-contiguous (a
// [m, k], b [n, k]); another layout is first transposed into scratch. Returns false (nothing launched, or only
// transposes) to leave the product to mma.sync.
template <typename T>
bool gemm_wgmma(const GemmArgsOf<T>& args, bool transpose_a, bool transpose_b) {
  if (tensor_core_kernel_setting == GemmTensorCoreKernel::kMmaSync || !wgmma_device()) return false;
  if (!wgmma_shape_supported<T>(args.m, args.n, args.k)) return false;
  if ((!transpose_a && !aligned16(args.a)) || (transpose_b && !aligned16(args.b))) return false;
  if (tensor_core_kernel_setting == GemmTensorCoreKernel::kAuto &&
      ((transpose_a && args.n < kWgmmaTransposeMinReuse) || (!transpose_b && args.m < kWgmmaTransposeMinReuse)))
    return false;
  if (!wgmma_enabled<T>()) return false;
  const int64_t tiles = ((args.m + kWgmmaTileM - 1) / kWgmmaTileM) * ((args.n + kWgmmaTileN - 1) / kWgmmaTileN);
  if (tiles > int64_t{0x7fffffff}) return false;

  GemmArgsOf<T> k_major = args;
  std::optional<Scratch> a_copy, b_copy;
  if (transpose_a) {  // a [k, m] -> [m, k]
    a_copy.emplace(size_t(args.m) * size_t(args.k) * sizeof(T));
    T* a = reinterpret_cast<T*>(a_copy->floats());
    transpose_for_wgmma(a, args.a, args.k, args.m);
    k_major.a = a;
  }
  if (!transpose_b) {  // b [k, n] -> [n, k]
    b_copy.emplace(size_t(args.n) * size_t(args.k) * sizeof(T));
    T* b = reinterpret_cast<T*>(b_copy->floats());
    transpose_for_wgmma(b, args.b, args.k, args.n);
    k_major.b = b;
  }
  k_major.k_chunk = split_k_chunk(args.k, tiles, kWgmmaTileK<T>);
  const int splits = int((args.k + k_major.k_chunk - 1) / k_major.k_chunk);
  if (splits == 1) {
    if (!launch_gemm_wgmma(k_major, tiles, 1)) return false;
  } else {
    Scratch partial(size_t(splits) * size_t(args.m) * size_t(args.n) * sizeof(float));
    k_major.partial = partial.floats();
    if (!launch_gemm_wgmma(k_major, tiles, splits)) return false;
    GemmArgsOf<T> reduce_args = args;
    reduce_args.partial = partial.floats();
    launch_reduce(reduce_args, splits);
  }
  last_tensor_core_kernel = transpose_a || !transpose_b ? "wgmma (after transposing an operand)" : "wgmma";
  return true;
}

// The tensor-core path: wgmma where it applies, else mma.sync with one 128 x 128 tile size; split-k through the
// shared reduce kernel.
template <typename T>
void gemm_tensor_cores(const GemmArgsOf<T>& args, bool transpose_a, bool transpose_b) {
  if (gemm_wgmma(args, transpose_a, transpose_b)) return;
  last_tensor_core_kernel = "mma.sync";
  const int64_t tiles = ((args.m + kMmaTileM - 1) / kMmaTileM) * ((args.n + kMmaTileN - 1) / kMmaTileN);
  if (tiles > int64_t{0x7fffffff}) throw std::invalid_argument("gemm: output too large for one launch");
  GemmArgsOf<T> split_args = args;
  split_args.k_chunk = split_k_chunk(args.k, tiles, kMmaTileK<T>);
  const int splits = int((args.k + split_args.k_chunk - 1) / split_args.k_chunk);
  if (splits == 1) return launch_gemm_mma(split_args, transpose_a, transpose_b, tiles, 1);
  Scratch partial(size_t(splits) * size_t(args.m) * size_t(args.n) * sizeof(float));
  split_args.partial = partial.floats();
  launch_gemm_mma(split_args, transpose_a, transpose_b, tiles, splits);
  GemmArgsOf<T> reduce_args = args;
  reduce_args.partial = partial.floats();
  launch_reduce(reduce_args, splits);
}

}  // namespace

void gemm(float* out, const float* a, const float* b, const GemmShape& shape, const GemmEpilogue& epilogue) {
  const int64_t m = shape.m, n = shape.n, k = shape.k;
  const bool transpose_a = shape.transpose_a, transpose_b = shape.transpose_b;
  if (gemm_writes_nothing(shape)) return;
  GemmArgs args = make_args(out, a, b, m, n, k, transpose_a, transpose_b, epilogue);
  if (k == 0) return launch_reduce(args, 0);
  if (precision_setting == GemmPrecision::kTensorFloat32 && tensor_cores_available())
    return gemm_tensor_cores(args, transpose_a, transpose_b);

  const int sms = multiprocessors();
  auto tile_count = [&](int64_t bm, int64_t bn) { return ((m + bm - 1) / bm) * ((n + bn - 1) / bn); };
  const bool large = tile_count(LargeTile::kBM, LargeTile::kBN) >= sms;
  const int64_t tiles = large ? tile_count(LargeTile::kBM, LargeTile::kBN) : tile_count(SmallTile::kBM, SmallTile::kBN);
  if (tiles > int64_t{0x7fffffff}) throw std::invalid_argument("gemm: output too large for one launch");
  args.k_chunk = split_k_chunk(k, tiles, large ? LargeTile::kBK : SmallTile::kBK);
  const int splits = int((k + args.k_chunk - 1) / args.k_chunk);
  if (splits == 1) {
    if (large) launch_simt<LargeTile>(args, transpose_a, transpose_b, tiles, 1);
    else launch_simt<SmallTile>(args, transpose_a, transpose_b, tiles, 1);
    return;
  }
  Scratch partial(size_t(splits) * size_t(m) * size_t(n) * sizeof(float));
  args.partial = partial.floats();
  // The partials are written raw and read back by the reduce kernel: vector stores need only n % 4 == 0.
  GemmArgs split_args = args;
  split_args.vector_out = n % 4 == 0;
  if (large) launch_simt<LargeTile>(split_args, transpose_a, transpose_b, tiles, splits);
  else launch_simt<SmallTile>(split_args, transpose_a, transpose_b, tiles, splits);
  launch_reduce(args, splits);
}

void gemm(bfloat16* out, const bfloat16* a, const bfloat16* b, const GemmShape& shape,
          const GemmEpilogueBf16& epilogue) {
  const int64_t m = shape.m, n = shape.n, k = shape.k;
  const bool transpose_a = shape.transpose_a, transpose_b = shape.transpose_b;
  if (gemm_writes_nothing(shape)) return;
  GemmArgsOf<bfloat16> args = make_args(out, a, b, m, n, k, transpose_a, transpose_b, epilogue);
  if (k == 0) return launch_reduce(args, 0);
  if (!tensor_cores_available()) throw std::runtime_error("gemm(bfloat16): needs a GPU of compute capability 8.0 or newer");
  gemm_tensor_cores(args, transpose_a, transpose_b);
}

void set_gemm_precision(GemmPrecision precision) { precision_setting = precision; }
GemmPrecision gemm_precision() { return precision_setting; }

const char* gemm_backend() {
  if (precision_setting != GemmPrecision::kTensorFloat32 || !tensor_cores_available()) return "simt";
  const bool wgmma = tensor_core_kernel_setting != GemmTensorCoreKernel::kMmaSync && wgmma_device() &&
                     wgmma_enabled<float>();
  return wgmma ? "tf32-wgmma" : "tf32-mma";
}

const char* gemm_tensor_core_status() { return wgmma_status(); }

void set_gemm_tensor_core_kernel(GemmTensorCoreKernel kernel) { tensor_core_kernel_setting = kernel; }
const char* gemm_last_tensor_core_kernel() { return last_tensor_core_kernel; }

}  // namespace weightnorm::cuda
