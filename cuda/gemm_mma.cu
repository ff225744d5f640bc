// Tensor-core GEMM kernels, mma.sync (sm_80 and newer): TF32 for float32 operands (cvt.rna, m16n8k8) and bfloat16
// (m16n8k16, fragments by ldmatrix), float32 accumulation. The design, resource usage and expected speed are
// described at the top of gemm.cu, which plans the launches (tiles, split-k) and owns the split-k reduce.
#include <cuda_runtime.h>

#include <cstdint>

#include "check.cuh"
#include "gemm_mma.cuh"
#include "runtime.cuh"

namespace weightnorm::cuda {
namespace {

constexpr int kThreads = 256;  // 8 warps: 2 along m x 4 along n, each a 64 x 32 piece of the 128 x 128 tile
constexpr int kStages = 3;     // cp.async pipeline depth: two k steps in flight while one is multiplied
constexpr int kWarpTileM = 64, kWarpTileN = 32;
constexpr int kFragmentsM = kWarpTileM / 16, kFragmentsN = kWarpTileN / 8;
constexpr int kChunkBytes = 16;
// One operand's tile per stage is 16 KB whatever the element type and transpose: 128 rows (m or n) of 128 bytes of
// k when k is contiguous, or BK rows (k) of 128 elements when k is strided.
constexpr int kOperandChunks = 128 * 128 / kChunkBytes;
constexpr int kOperandBytes = kOperandChunks * kChunkBytes;
constexpr int kChunksPerThread = kOperandChunks / kThreads;
constexpr int kStageBytes = 2 * kOperandBytes;
constexpr int kSharedBytes = kStages * kStageBytes;
static_assert(kMmaTileM == 2 * kWarpTileM && kMmaTileN == 4 * kWarpTileN, "8 warps as 2 x 4");
static_assert(kOperandChunks % kThreads == 0, "whole chunks per thread");

template <typename T>
constexpr int kElementsPerChunk = kChunkBytes / int(sizeof(T));
template <typename T>
constexpr int kChunksPerStridedRow = kMmaTileM / kElementsPerChunk<T>;

// Shared layout, as the 16-byte chunk index within an operand's tile. XOR swizzles instead of padding keep three
// stages in 96 KB (sm_86/89 allow 99 KB per block) and make every fragment read bank-conflict-free (checked at
// compile time below).
// k-contiguous tile (a [m, k], b [n, k]): row r (an m or n) holds 8 chunks of k; chunk c is stored at c ^ (r % 8).
__host__ __device__ constexpr int contiguous_chunk(int row, int chunk) { return row * 8 + (chunk ^ (row & 7)); }
// k-strided tile (a [k, m], b [k, n]): row q (a k) holds 128 elements of m or n; chunk c is stored at
// c ^ swizzle(q): a TF32 fragment read touches 4 consecutive k rows (XOR by 0, 2, 4, 6 spreads them over the
// banks), a bfloat16 ldmatrix 8 (XOR by 0..7).
template <typename T>
__host__ __device__ constexpr int strided_chunk(int k_row, int chunk) {
  const int swizzle = sizeof(T) == 4 ? (k_row & 3) << 1 : k_row & 7;
  return k_row * kChunksPerStridedRow<T> + (chunk ^ swizzle);
}
// Element offset of (k, other) in a float tile (other = m for a, n for b).
template <bool kKContiguous>
__host__ __device__ constexpr int float_offset(int k, int other) {
  return kKContiguous ? contiguous_chunk(other, k >> 2) * 4 + (k & 3) : strided_chunk<float>(k, other >> 2) * 4 + (other & 3);
}

// --- compile-time proof that the fragment reads are free of bank conflicts ----------------------------------------
// TF32: one 32-bit load per lane; lane = 4 * g + t reads (k = k8 + t (+4), other = base + g (+8)) for the A
// fragment and (k = k8 + t (+4), other = base + g) for B: the 32 lanes must hit 32 different banks.
template <bool kKContiguous>
constexpr bool tf32_reads_conflict_free() {
  for (int k8 = 0; k8 < 32; k8 += 8)
    for (int k_half = 0; k_half < 8; k_half += 4)
      for (int base = 0; base < 128; base += 8) {
        bool used[32] = {};
        for (int lane = 0; lane < 32; ++lane) {
          const int bank = float_offset<kKContiguous>(k8 + k_half + lane % 4, base + lane / 4) % 32;
          if (used[bank]) return false;
          used[bank] = true;
        }
      }
  return true;
}
// bfloat16 ldmatrix: each 8 x 8 matrix is read as 8 rows of one 16-byte chunk; the 8 chunks must lie in different
// 16-byte bank groups (chunk index mod 8).
constexpr bool ldmatrix_reads_conflict_free() {
  for (int base = 0; base < 128; base += 8) {
    for (int chunk = 0; chunk < 8; ++chunk) {  // a [m, k] / b [n, k]: 8 rows of m or n, one chunk of k
      bool used[8] = {};
      for (int r = 0; r < 8; ++r) {
        const int c = contiguous_chunk(base + r, chunk) % 8;
        if (used[c]) return false;
        used[c] = true;
      }
    }
    for (int chunk = 0; base < 64 && chunk < 16; ++chunk) {  // a [k, m] / b [k, n]: 8 of the 64 k rows
      bool used[8] = {};
      for (int r = 0; r < 8; ++r) {
        const int c = strided_chunk<bfloat16>(base + r, chunk) % 8;
        if (used[c]) return false;
        used[c] = true;
      }
    }
  }
  return true;
}
static_assert(tf32_reads_conflict_free<true>() && tf32_reads_conflict_free<false>(), "TF32 fragment bank conflicts");
static_assert(ldmatrix_reads_conflict_free(), "ldmatrix bank conflicts");

// --- PTX wrappers ----------------------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// src_bytes < 16 (0 or 16 here) zero-fills the rest: edge tiles and k beyond the end come out as zeros.
__device__ __forceinline__ void copy_async16(uint32_t destination, const void* source, int source_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(destination), "l"(source), "r"(source_bytes)
               : "memory");
}
__device__ __forceinline__ void copy_async4(uint32_t destination, const void* source, int source_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(destination), "l"(source), "r"(source_bytes)
               : "memory");
}
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

template <bool kTranspose>
__device__ __forceinline__ void load_matrix_x4(uint32_t (&d)[4], uint32_t address) {
  if constexpr (kTranspose)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(address));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(address));
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// --- global -> shared ---------------------------------------------------------------------------------------------

// This thread's chunks of one operand's tile for the k step starting k_step (relative to the split). The storage x
// is row-major with row length ld, already offset to (the split's first k, the tile's first m or n); k runs along
// ld when kKContiguous, else down the rows. k_left: k positions left in the split from k_step; other_left: rows
// (m or n) left in the operand from the tile's first. vector: 16-byte copies (ld a multiple of one chunk and x
// 16-byte aligned, so a chunk is wholly inside or outside); otherwise element by element.
template <typename T, bool kKContiguous>
__device__ __forceinline__ void load_operand_tile(unsigned char* tile, const T* x, int64_t ld, int k_step, int k_left,
                                                  int other_left, bool vector, int tid) {
  constexpr int E = kElementsPerChunk<T>;
#pragma unroll
  for (int i = 0; i < kChunksPerThread; ++i) {
    const int c = tid + i * kThreads;
    int chunk_index, k_available, other_available;  // elements of the chunk inside k and inside m / n
    const T* source;
    if constexpr (kKContiguous) {
      const int row = c / 8, chunk = c % 8;
      chunk_index = contiguous_chunk(row, chunk);
      source = x + int64_t(row) * ld + (k_step + chunk * E);
      k_available = k_left - chunk * E;
      other_available = row < other_left ? E : 0;
    } else {
      const int k_row = c / kChunksPerStridedRow<T>, chunk = c % kChunksPerStridedRow<T>;
      chunk_index = strided_chunk<T>(k_row, chunk);
      source = x + int64_t(k_step + k_row) * ld + chunk * E;
      k_available = k_row < k_left ? E : 0;
      other_available = other_left - chunk * E;
    }
    const int available = min(k_available, other_available);
    unsigned char* destination = tile + chunk_index * kChunkBytes;
    if (vector) {
      copy_async16(shared_address(destination), available > 0 ? source : x, available > 0 ? 16 : 0);
    } else if constexpr (sizeof(T) == 4) {
#pragma unroll
      for (int e = 0; e < E; ++e)
        copy_async4(shared_address(destination + 4 * e), e < available ? source + e : x, e < available ? 4 : 0);
    } else {
      // 2-byte elements are below cp.async's smallest copy: guarded loads and one 16-byte shared store. The store is
      // ordered like the copies: the stage is read only after the __syncthreads of a later k step.
      uint16_t bits[E];
#pragma unroll
      for (int e = 0; e < E; ++e) bits[e] = e < available ? source[e].bits : uint16_t(0);
      uint4 packed;
      packed.x = bits[0] | uint32_t(bits[1]) << 16;
      packed.y = bits[2] | uint32_t(bits[3]) << 16;
      packed.z = bits[4] | uint32_t(bits[5]) << 16;
      packed.w = bits[6] | uint32_t(bits[7]) << 16;
      *reinterpret_cast<uint4*>(destination) = packed;
    }
  }
}

// --- shared -> fragments -> mma -----------------------------------------------------------------------------------

// One stage: acc += the tile's op(a) [wm.., k] x op(b) [k, wn..]. Fragment layouts of the PTX ISA: for m16n8k8
// TF32, lane = 4 g + t holds A (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4) and B (k t, n g), (k t + 4, n g); for
// m16n8k16 bfloat16 the same with pairs of k (2t, 2t + 1) and the second half 8 further along k.
template <typename T, bool kTransA, bool kTransB>
__device__ __forceinline__ void multiply_stage(float (&acc)[kFragmentsM][kFragmentsN][4], const unsigned char* a_tile,
                                               const unsigned char* b_tile, int wm, int wn, int lane) {
  if constexpr (sizeof(T) == 4) {
    const float* as = reinterpret_cast<const float*>(a_tile);
    const float* bs = reinterpret_cast<const float*>(b_tile);
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int k8 = 0; k8 < kMmaTileK<T>; k8 += 8) {
      uint32_t af[kFragmentsM][4], bf[kFragmentsN][2];
#pragma unroll
      for (int i = 0; i < kFragmentsM; ++i) {
        const int row = wm + i * 16 + g;
        af[i][0] = to_tf32(as[float_offset<!kTransA>(k8 + t, row)]);
        af[i][1] = to_tf32(as[float_offset<!kTransA>(k8 + t, row + 8)]);
        af[i][2] = to_tf32(as[float_offset<!kTransA>(k8 + t + 4, row)]);
        af[i][3] = to_tf32(as[float_offset<!kTransA>(k8 + t + 4, row + 8)]);
      }
#pragma unroll
      for (int j = 0; j < kFragmentsN; ++j) {
        const int column = wn + j * 8 + g;
        bf[j][0] = to_tf32(bs[float_offset<kTransB>(k8 + t, column)]);
        bf[j][1] = to_tf32(bs[float_offset<kTransB>(k8 + t + 4, column)]);
      }
#pragma unroll
      for (int i = 0; i < kFragmentsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragmentsN; ++j) mma_tf32(acc[i][j], af[i], bf[j]);
    }
  } else {
    // ldmatrix.x4: lane l gives the address of row l % 8 of matrix l / 8. A's matrices in register order are
    // (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15); .trans when a is stored [k, m].
    // B's x4 covers two n fragments: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15); .trans
    // when b is stored [k, n].
    const uint32_t a_base = shared_address(a_tile), b_base = shared_address(b_tile);
    const int q = lane / 8, r = lane % 8;
#pragma unroll
    for (int k16 = 0; k16 < kMmaTileK<T>; k16 += 16) {
      uint32_t af[kFragmentsM][4], bf[kFragmentsN][2];
#pragma unroll
      for (int i = 0; i < kFragmentsM; ++i) {
        const int m = wm + i * 16 + (q & 1) * 8, k = k16 + (q >> 1) * 8;
        const int chunk = kTransA ? strided_chunk<bfloat16>(k + r, m / 8) : contiguous_chunk(m + r, k / 8);
        load_matrix_x4<kTransA>(af[i], a_base + chunk * kChunkBytes);
      }
#pragma unroll
      for (int j = 0; j < kFragmentsN; j += 2) {
        const int n = wn + (j + (q >> 1)) * 8, k = k16 + (q & 1) * 8;
        const int chunk = kTransB ? contiguous_chunk(n + r, k / 8) : strided_chunk<bfloat16>(k + r, n / 8);
        uint32_t d[4];
        load_matrix_x4<!kTransB>(d, b_base + chunk * kChunkBytes);
        bf[j][0] = d[0];
        bf[j][1] = d[1];
        bf[j + 1][0] = d[2];
        bf[j + 1][1] = d[3];
      }
#pragma unroll
      for (int i = 0; i < kFragmentsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragmentsN; ++j) mma_bf16(acc[i][j], af[i], bf[j]);
    }
  }
}

// --- the kernel ----------------------------------------------------------------------------------------------------

// One 128 x 128 tile of out (blockIdx.x, row-major over tiles) for k split blockIdx.z.
template <typename T, bool kTransA, bool kTransB>
__global__ void __launch_bounds__(kThreads, 1) gemm_mma_kernel(GemmArgsOf<T> args) {
  constexpr int BK = kMmaTileK<T>;
  extern __shared__ __align__(128) unsigned char shared[];

  const int64_t tiles_n = (args.n + kMmaTileN - 1) / kMmaTileN;
  const int64_t m0 = int64_t(blockIdx.x) / tiles_n * kMmaTileM, n0 = int64_t(blockIdx.x) % tiles_n * kMmaTileN;
  const int split = blockIdx.z;
  const int64_t k_begin = int64_t(split) * args.k_chunk;
  const int k_length = int(min(args.k - k_begin, args.k_chunk));
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / 4 * kWarpTileM, wn = warp % 4 * kWarpTileN;

  // op(a) [m, k]: a stored [m, k] is k-contiguous, [k, m] k-strided; op(b) [k, n]: b stored [n, k] is
  // k-contiguous, [k, n] k-strided. Each pointer is moved to (the split's first k, the tile's first m / n).
  const int64_t lda = kTransA ? args.m : args.k, ldb = kTransB ? args.k : args.n;
  const T* a_tile = kTransA ? args.a + k_begin * lda + m0 : args.a + m0 * lda + k_begin;
  const T* b_tile = kTransB ? args.b + n0 * ldb + k_begin : args.b + k_begin * ldb + n0;
  const int a_rows_left = int(min(args.m - m0, int64_t(kMmaTileM)));
  const int b_rows_left = int(min(args.n - n0, int64_t(kMmaTileN)));

  const int k_steps = (k_length + BK - 1) / BK;
  // Every call commits one group (empty past the last step), so wait_copies<kStages - 2> always means "step s
  // has landed" at step s.
  auto load_step = [&](int step) {
    if (step < k_steps) {
      unsigned char* stage = shared + (step % kStages) * kStageBytes;
      const int k_step = step * BK;
      load_operand_tile<T, !kTransA>(stage, a_tile, lda, k_step, k_length - k_step, a_rows_left, args.vector_a, tid);
      load_operand_tile<T, kTransB>(stage + kOperandBytes, b_tile, ldb, k_step, k_length - k_step, b_rows_left,
                                    args.vector_b, tid);
    }
    commit_copies();
  };

  float acc[kFragmentsM][kFragmentsN][4];
#pragma unroll
  for (int i = 0; i < kFragmentsM; ++i)
#pragma unroll
    for (int j = 0; j < kFragmentsN; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;

#pragma unroll
  for (int step = 0; step < kStages - 1; ++step) load_step(step);
#pragma unroll 1
  for (int step = 0; step < k_steps; ++step) {
    wait_copies<kStages - 2>();
    // Everyone's copies for this step have landed, and everyone is done with the stage the next load overwrites
    // (the one multiplied at step - 1).
    __syncthreads();
    load_step(step + kStages - 1);
    const unsigned char* stage = shared + (step % kStages) * kStageBytes;
    multiply_stage<T, kTransA, kTransB>(acc, stage, stage + kOperandBytes, wm, wn, lane);
  }
  wait_copies<0>();

  // Accumulator fragment (i, j): lane = 4 g + t holds rows g and g + 8, columns 2t and 2t + 1.
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < kFragmentsM; ++i) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t row = m0 + wm + i * 16 + half * 8 + g;
      if (row >= args.m) continue;
      const RowTerms terms = args.partial ? RowTerms{1.0f, 0.0f, 0.0f} : row_terms(args.epilogue, row);
#pragma unroll
      for (int j = 0; j < kFragmentsN; ++j) {
        const int64_t column = n0 + wn + j * 8 + 2 * t;
        if (column >= args.n) continue;
        store_products(args, row, column, terms, acc[i][j][2 * half], acc[i][j][2 * half + 1], split);
      }
    }
  }
}

template <typename T, bool kTransA, bool kTransB>
void launch(const GemmArgsOf<T>& args, int64_t tiles, int splits) {
  auto* kernel = gemm_mma_kernel<T, kTransA, kTransB>;
  // Above 48 KB of dynamic shared memory needs an opt-in; the carveout asks for all of L1 as shared memory. One
  // block per SM whatever the shared memory: 146 to 190 registers x 256 threads exceed half the register file.
  // Once per kernel (per process, not per device).
  static const bool configured = [kernel] {
    WN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes));
    WN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                       int(cudaSharedmemCarveoutMaxShared)));
    return true;
  }();
  (void)configured;
  const dim3 grid(unsigned(tiles), 1, unsigned(splits));
  kernel<<<grid, kThreads, kSharedBytes, library_stream()>>>(args);
  WN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_any(const GemmArgsOf<T>& args, bool transpose_a, bool transpose_b, int64_t tiles, int splits) {
  if (!transpose_a && !transpose_b) launch<T, false, false>(args, tiles, splits);
  if (transpose_a && !transpose_b) launch<T, true, false>(args, tiles, splits);
  if (!transpose_a && transpose_b) launch<T, false, true>(args, tiles, splits);
  if (transpose_a && transpose_b) launch<T, true, true>(args, tiles, splits);
}

}  // namespace

void launch_gemm_mma(const GemmArgsOf<float>& args, bool transpose_a, bool transpose_b, int64_t tiles, int splits) {
  launch_any(args, transpose_a, transpose_b, tiles, splits);
}
void launch_gemm_mma(const GemmArgsOf<bfloat16>& args, bool transpose_a, bool transpose_b, int64_t tiles,
                     int splits) {
  launch_any(args, transpose_a, transpose_b, tiles, splits);
}

}  // namespace weightnorm::cuda
