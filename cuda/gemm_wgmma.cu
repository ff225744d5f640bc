// Hopper GEMM (sm_90a only): wgmma tensor-core kernels fed by TMA, for the float32 gemm() in TF32 and the bfloat16
// gemm(), with the fused epilogue of gemm.cuh; gemm.cu chooses them on compute capability 9.0 devices after their
// self-check passed (bottom of this file), and uses mma.sync (gemm_mma.cu) everywhere else.
//
// gemm_wgmma_kernel<T>: out[m, n] = a [m, k] · b [n, k]ᵀ, both operands k-contiguous (wgmma reads TF32 only
// k-major from shared memory; gemm.cu first transposes a k-strided operand into scratch with transpose_kernel).
//   - A block computes a 128 x 256 tile of out with 384 threads = 3 warpgroups. Warpgroup 0 is the producer: one
//     thread issues, per k step, two TMA loads (cp.async.bulk.tensor.2d) of 128 rows of a and 256 rows of b by 128
//     bytes of k (32 floats / 64 bfloat16), 48 KB, 128-byte swizzled by the TMA unit into the layout wgmma's
//     descriptors name (8-row atoms of 1024 bytes; a k step of 32 bytes moves the descriptor's start address).
//     Out-of-range rows and k come in as zeros, so edge tiles and k tails need no code. float is loaded as
//     TFLOAT32: the TMA unit rounds each operand to TF32 (to nearest), as cvt.rna does for mma.sync.
//   - 4 stages (192 KB + barriers) in a ring with two mbarriers per stage: "full" (the producer's arrive.expect_tx
//     of 48 KB, completed by the TMA bytes) and "empty" (one arrive per consumer warp). Waits are bounded: after 10 s
//     a wait gives up and records the launch, so a protocol bug shows in the self-check instead of hanging.
//   - Warpgroups 1 and 2 are consumers, rows 0-63 and 64-127 of the tile: per k step, after the full barrier,
//     wgmma.fence, 4 x wgmma.mma_async m64n256k8 .tf32 (or m64n256k16 .bf16) on the stage, commit_group, then
//     wait_group 1 (the previous step's wgmmas are done) and release the previous stage. 128 float32 accumulators
//     per thread; the producer is three stages ahead.
//   - Epilogue straight from the accumulators (wgmma's m64nN layout: lane 4g + t holds rows g, g + 8 of its warp's
//     16 and column pairs 8j + 2t), through gemm_common.cuh's row_terms / epilogue_value in the same order as the
//     mma.sync kernels; pairs of columns as one 8-byte (float) or 4-byte (bfloat16) access where aligned. Split-k
//     writes raw float32 partials and gemm.cu's ordered reduce adds them: no atomics, bitwise reproducible.
// Resources (nvcc 13.0, -Xptxas -v, sm_90a; __launch_bounds__(384, 1)): TF32 164 registers, bfloat16 166; 0 spills,
//   0 stack; 197696 B dynamic shared memory (4 x 48 KB + 64 B of barriers + 1 KB of alignment slack), no static;
//   one block per SM. transpose_kernel: 32 registers, 4224 (float) / 2112 (bfloat16) B static shared memory.
// PTX (no SASS disassembler here): the consumer loop per k step is one mbarrier.try_wait loop, wgmma.fence, 4
//   wgmma.mma_async, commit_group, wait_group 1, one mbarrier.arrive per warp and ~40 integer instructions for the
//   descriptors; no ld.shared, no local memory. The producer loop: try_wait, arrive.expect_tx, 2 cp.async.bulk.tensor.
//   ptxas gives no "wgmma serialized" advisory.
// Expected on an H200 at 4096^3 (not measured yet): 2048 flop/clock/SM of dense TF32 (495 TFLOP/s at 1.83 GHz);
//   per k step the block multiplies 2 Mflop (1024 clocks at peak) from 48 KB, so the peak needs 48 B/clock/SM from
//   L2, ~11.6 TB/s over 132 SMs, beyond what H100-class L2 delivers (roughly 7 to 10 TB/s measured): the kernel is
//   likely L2-bound near 60 to 75% of peak. With wave quantization (512 tiles on 132 SMs: 97%) and the
//   epilogue not overlapped: 260 to 330 TFLOP/s for a k-contiguous b (NT), 240 to 310 for NN after transposing b
//   (64 MB through HBM, ~30 µs of ~0.5 ms), i.e. 55 to 85% of cuBLAS TF32 (350 to 450). bfloat16 moves the same
//   bytes per step for twice the flop: 550 to 700 TFLOP/s. Next steps if short: 2-block clusters with TMA
//   multicast (halves one operand's L2 traffic), a persistent grid overlapping the epilogue with the next mainloop.
// Unverified until it runs on an H200: that the TMA box / swizzle / descriptor settings agree (the self-check's
//   exact integer problems would catch a mismatch and disable the path), that TFLOAT32 TMA loads round rather than
//   pass the float through (wgmma would then truncate to TF32: products within 2^-9 + 2^-20 instead of 2^-10 of
//   |a b|), the speed, and the 10 s wait bound never firing under time-slicing with other processes.
#include <cuda.h>  // CUtensorMap and its enums only: the driver function comes from cudaGetDriverEntryPoint*
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include "check.cuh"
#include "gemm_wgmma.cuh"
#include "runtime.cuh"

namespace weightnorm::cuda {
namespace {

constexpr int kConsumerWarpgroups = 2;                     // each owns 64 rows x all 256 columns of the tile
constexpr int kThreads = 128 * (1 + kConsumerWarpgroups);  // warpgroup 0 issues the TMA loads
constexpr int kStages = 4;                                 // 4 x 48 KB: three k steps in flight, one multiplied
constexpr int kRowBytes = 128;                             // one tile row (an m or n) per stage: 128 bytes of k
constexpr int kTileABytes = kWgmmaTileM * kRowBytes;       // 16 KB
constexpr int kTileBBytes = kWgmmaTileN * kRowBytes;       // 32 KB
constexpr int kStageBytes = kTileABytes + kTileBBytes;
constexpr int kBarrierBytes = 2 * kStages * 8;             // a "full" and an "empty" mbarrier per stage
constexpr int kSwizzleAlignment = 1024;                    // 128-byte swizzle repeats every 8 rows of 128 bytes
constexpr int kSharedBytes = kStages * kStageBytes + kBarrierBytes + kSwizzleAlignment;
constexpr int kConsumerWarps = 4 * kConsumerWarpgroups;    // each arrives once on a stage's empty barrier
constexpr int kWgmmaK = 32;                                // bytes of k per wgmma (k8 tf32, k16 bf16)
constexpr int kAccumulators = kWgmmaTileN / 2;             // m64n256: 64 x 256 floats over 128 threads
constexpr int kWarpgroupRows = kWgmmaTileM / kConsumerWarpgroups;
static_assert(kWarpgroupRows == 64, "one m64 wgmma per consumer warpgroup");
static_assert(kTileABytes % kSwizzleAlignment == 0 && kStageBytes % kSwizzleAlignment == 0,
              "tiles keep the swizzle phase");
static_assert(kSharedBytes <= 227 * 1024, "sm_90 allows 227 KB of shared memory per block");

// The number of the last launch in which a pipeline wait gave up after kWaitTimeoutNs (its blocks then finish with
// wrong tiles instead of hanging the process), and whether a kernel without sm_90a code ran; the self-check reads
// both. Launch numbers keep one launch's failure from cutting short the waits of later launches.
__device__ int wgmma_timed_out_launch;
__device__ int wgmma_missing_code;
constexpr uint64_t kWaitTimeoutNs = 10000000000ull;

// --- PTX wrappers (sm_90a) -------------------------------------------------------------------------------------------
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ void barrier_init(uint32_t barrier, int arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(barrier), "r"(arrivals) : "memory");
}
__device__ __forceinline__ bool barrier_try_wait(uint32_t barrier, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(barrier), "r"(parity)
      : "memory");
  return done != 0;
}
// Waits for the phase of `parity` to complete; gives up (and records `launch`) after kWaitTimeoutNs, or at once when
// another wait of the same launch gave up, so a protocol bug costs seconds, not a hung process.
__device__ __forceinline__ void barrier_wait(uint32_t barrier, uint32_t parity, int launch) {
  if (barrier_try_wait(barrier, parity)) return;
  const uint64_t start = global_timer_ns();
  for (uint32_t spins = 1;; ++spins) {
    if (barrier_try_wait(barrier, parity)) return;
    if (spins % 64 == 0) {
      if (*static_cast<volatile int*>(&wgmma_timed_out_launch) == launch) return;
      if (global_timer_ns() - start > kWaitTimeoutNs) {
        atomicExch(&wgmma_timed_out_launch, launch);
        return;
      }
    }
  }
}
__device__ __forceinline__ void barrier_arrive(uint32_t barrier) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(barrier) : "memory");
}
__device__ __forceinline__ void barrier_arrive_expect_bytes(uint32_t barrier, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(barrier), "r"(bytes) : "memory");
}

// TMA: the box at (k, row) of the tensor map lands swizzled at `destination`; out-of-range elements are zeros and
// still count toward the barrier's bytes.
__device__ __forceinline__ void tma_load_tile(uint32_t destination, const CUtensorMap* map, uint32_t barrier, int k,
                                              int row) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          destination),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(k), "r"(row), "r"(barrier)
      : "memory");
}
__device__ __forceinline__ void tma_prefetch_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Shared-memory matrix descriptor of a k-contiguous tile in the 128-byte swizzle: rows of 128 bytes, groups of 8 rows
// 1024 bytes apart (stride byte offset); the leading byte offset is unused for this layout (1 by convention). A k
// step inside the 128-byte row moves the start address; the swizzle follows the address bits, as TMA wrote it.
__device__ __forceinline__ uint64_t smem_descriptor(uint32_t address) {
  return uint64_t((address & 0x3ffff) >> 4) | uint64_t(1) << 16 | uint64_t(1024 >> 4) << 32 | uint64_t(1) << 62;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Keeps the compiler from moving accumulator reads or writes across the asynchronous wgmma window.
__device__ __forceinline__ void fence_accumulators(float (&d)[kAccumulators]) {
#pragma unroll
  for (int i = 0; i < kAccumulators; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define WN_WGMMA_D_REGISTERS \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define WN_WGMMA_D_OPERANDS \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), \
  "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
  "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
  "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
  "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
  "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
  "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
  "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
  "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
// d (64 x 256 per warpgroup) += A (64 x k-step, descriptor a) * B (256 x k-step, descriptor b)ᵀ, both k-major.
#define WN_WGMMA_M64N256(SHAPE_AND_TYPES, TRANSPOSE_FLAGS)                                                       \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"                                                    \
               "wgmma.mma_async.sync.aligned." SHAPE_AND_TYPES " {" WN_WGMMA_D_REGISTERS "}, %128, %129, p, 1, 1" \
               TRANSPOSE_FLAGS ";\n}\n"                                                                           \
               : WN_WGMMA_D_OPERANDS                                                                             \
               : "l"(a), "l"(b), "r"(1))

template <typename T>
__device__ __forceinline__ void wgmma_m64n256(float (&d)[kAccumulators], uint64_t a, uint64_t b) {
  if constexpr (sizeof(T) == 4) WN_WGMMA_M64N256("m64n256k8.f32.tf32.tf32", "");
  else WN_WGMMA_M64N256("m64n256k16.f32.bf16.bf16", ", 0, 0");
}
#undef WN_WGMMA_M64N256
#undef WN_WGMMA_D_OPERANDS
#undef WN_WGMMA_D_REGISTERS

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// --- the kernel ----------------------------------------------------------------------------------------------------

// One 128 x 256 tile of out (blockIdx.x, row-major over tiles) for k split blockIdx.z. Warpgroup 0: one thread
// issues the TMA loads of each stage; warpgroups 1 and 2: wgmma on rows 0-63 and 64-127 of the tile, then the
// epilogue from their accumulators.
template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_wgmma_kernel(const __grid_constant__ CUtensorMap a_map, const __grid_constant__ CUtensorMap b_map,
                      GemmArgsOf<T> args, int launch) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int BK = kWgmmaTileK<T>;
  extern __shared__ unsigned char shared_raw[];
  const uint32_t shared = (shared_address(shared_raw) + kSwizzleAlignment - 1) & ~uint32_t(kSwizzleAlignment - 1);
  const uint32_t full_barriers = shared + kStages * kStageBytes;  // stage s: full_barriers + 8 s
  const uint32_t empty_barriers = full_barriers + kStages * 8;

  const int64_t tiles_n = (args.n + kWgmmaTileN - 1) / kWgmmaTileN;
  const int m0 = int(int64_t(blockIdx.x) / tiles_n * kWgmmaTileM);
  const int n0 = int(int64_t(blockIdx.x) % tiles_n * kWgmmaTileN);
  const int split = blockIdx.z;
  const int64_t k_begin = int64_t(split) * args.k_chunk;
  const int k_length = int(min(args.k - k_begin, args.k_chunk));
  const int k_tiles = (k_length + BK - 1) / BK;
  const int warpgroup = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      barrier_init(full_barriers + 8 * s, 1);  // the producer's arrive, plus the TMA bytes
      barrier_init(empty_barriers + 8 * s, kConsumerWarps);
    }
    // The barriers' initialization must be visible to the TMA unit (the async proxy) before it completes on them.
    asm volatile("fence.mbarrier_init.release.cluster;\nfence.proxy.async.shared::cta;\n" ::: "memory");
    tma_prefetch_map(&a_map);
    tma_prefetch_map(&b_map);
  }
  __syncthreads();

  if (warpgroup == 0) {
    if (threadIdx.x == 0) {
      for (int t = 0; t < k_tiles; ++t) {
        const int s = t % kStages;
        // The stage's previous tile (t - kStages) must be released; a fresh barrier passes parity 1 at once.
        barrier_wait(empty_barriers + 8 * s, ((t / kStages) & 1) ^ 1, launch);
        barrier_arrive_expect_bytes(full_barriers + 8 * s, kStageBytes);
        const int k = int(k_begin) + t * BK;
        tma_load_tile(shared + s * kStageBytes, &a_map, full_barriers + 8 * s, k, m0);
        tma_load_tile(shared + s * kStageBytes + kTileABytes, &b_map, full_barriers + 8 * s, k, n0);
      }
    }
    return;  // no block-wide barrier follows
  }

  const int consumer = warpgroup - 1, lane = threadIdx.x % 32, warp = threadIdx.x / 32 % 4;
  float acc[kAccumulators];
#pragma unroll
  for (int i = 0; i < kAccumulators; ++i) acc[i] = 0.0f;

#pragma unroll 1
  for (int t = 0; t < k_tiles; ++t) {
    const int s = t % kStages;
    barrier_wait(full_barriers + 8 * s, (t / kStages) & 1, launch);
    __syncwarp();  // wgmma is .sync.aligned: the warp must be converged after the divergent wait loop
    const uint32_t a_tile = shared + s * kStageBytes + consumer * kWarpgroupRows * kRowBytes;
    const uint32_t b_tile = shared + s * kStageBytes + kTileABytes;
    fence_accumulators(acc);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kRowBytes / kWgmmaK; ++kk)
      wgmma_m64n256<T>(acc, smem_descriptor(a_tile + kk * kWgmmaK), smem_descriptor(b_tile + kk * kWgmmaK));
    wgmma_commit();
    // This tile's wgmmas may still run; the previous tile's are done, so its stage goes back to the producer.
    wgmma_wait<1>();
    fence_accumulators(acc);
    if (t > 0 && lane == 0) barrier_arrive(empty_barriers + 8 * ((t - 1) % kStages));
  }
  wgmma_wait<0>();
  fence_accumulators(acc);

  // Accumulator layout of m64nN: warp w of the warpgroup holds rows 16 w + g and 16 w + g + 8 (lane = 4 g + t4);
  // acc[4 j + 2 h + c] is row 16 w + g + 8 h, column 8 j + 2 t4 + c.
  const int g = lane / 4, t4 = lane % 4;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = int64_t(m0) + consumer * kWarpgroupRows + warp * 16 + h * 8 + g;
    if (row >= args.m) continue;
    const RowTerms terms = args.partial ? RowTerms{1.0f, 0.0f, 0.0f} : row_terms(args.epilogue, row);
#pragma unroll
    for (int j = 0; j < kWgmmaTileN / 8; ++j) {
      const int64_t column = int64_t(n0) + j * 8 + 2 * t4;
      if (column >= args.n) continue;
      store_products(args, row, column, terms, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1], split);
    }
  }
#elif defined(__CUDA_ARCH__)
  // Built for an architecture without wgmma: never selected there; say so if it runs anyway.
  if (threadIdx.x == 0 && blockIdx.x == 0) wgmma_missing_code = launch;
#endif
}

// out[cols, rows] = in[rows, cols]ᵀ through a 32 x 33 shared tile (coalesced reads and writes); block rows loop so
// any row count fits the grid.
template <typename T>
__global__ void __launch_bounds__(256) transpose_kernel(T* out, const T* in, int64_t rows, int64_t cols) {
  __shared__ T tile[32][33];
  const int64_t c0 = int64_t(blockIdx.x) * 32, row_blocks = (rows + 31) / 32;
  for (int64_t block_row = blockIdx.y; block_row < row_blocks; block_row += gridDim.y) {
    const int64_t r0 = block_row * 32;
    for (int y = threadIdx.y; y < 32; y += 8) {
      const int64_t r = r0 + y, c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[y][threadIdx.x] = in[r * cols + c];
    }
    __syncthreads();
    for (int y = threadIdx.y; y < 32; y += 8) {
      const int64_t c = c0 + y, r = r0 + threadIdx.x;
      if (c < cols && r < rows) out[c * rows + r] = tile[threadIdx.x][y];
    }
    __syncthreads();
  }
}

template <typename T>
void transpose(T* out, const T* in, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  const int64_t column_blocks = (cols + 31) / 32;
  if (column_blocks > int64_t{0x7fffffff}) throw std::invalid_argument("gemm: operand too large to transpose");
  const dim3 grid(unsigned(column_blocks), unsigned(std::min<int64_t>((rows + 31) / 32, 65535)));
  transpose_kernel<T><<<grid, dim3(32, 8), 0, library_stream()>>>(out, in, rows, cols);
  WN_CUDA_CHECK_LAUNCH();
}

// --- host: tensor maps and launch -----------------------------------------------------------------------------------

// cuTensorMapEncodeTiled from the driver the runtime already loaded (no libcuda link); null when unavailable.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
    const cudaError_t error =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &function, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t error = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &function, cudaEnableDefault, &found);
#endif
    if (error != cudaSuccess || found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      function = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(function);
  }();
  return encoder;
}

// x stored [rows, k] row-major, read in boxes of `box_rows` rows x 128 bytes of k, 128-byte swizzled; out-of-range
// rows and k read as zeros. float goes in as TFLOAT32: the TMA unit rounds it to TF32 (nearest) on the way in.
template <typename T>
bool encode_operand_map(CUtensorMap* map, const T* x, int64_t rows, int64_t k, int box_rows) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (!encode) return false;
  const cuuint64_t dims[2] = {cuuint64_t(k), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(k) * sizeof(T)};
  const cuuint32_t box[2] = {cuuint32_t(kWgmmaTileK<T>), cuuint32_t(box_rows)};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUtensorMapDataType type = sizeof(T) == 4 ? CU_TENSOR_MAP_DATA_TYPE_TFLOAT32 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  return encode(map, type, 2, const_cast<T*>(x), dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Launch numbers 1 .. 2^30, wrapping (0 means "none" in the failure records).
int next_launch_number() {
  static std::atomic<int> count{0};
  return (count.fetch_add(1) & 0x3fffffff) + 1;
}

template <typename T>
bool launch(const GemmArgsOf<T>& args, int64_t tiles, int splits, int launch_number = next_launch_number()) {
  CUtensorMap a_map, b_map;
  if (!encode_operand_map(&a_map, args.a, args.m, args.k, kWgmmaTileM) ||
      !encode_operand_map(&b_map, args.b, args.n, args.k, kWgmmaTileN))
    return false;
  auto* kernel = gemm_wgmma_kernel<T>;
  static const bool configured = [kernel] {
    WN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes));
    return true;
  }();
  (void)configured;
  const dim3 grid(unsigned(tiles), 1, unsigned(splits));
  kernel<<<grid, kThreads, kSharedBytes, library_stream()>>>(a_map, b_map, args, launch_number);
  WN_CUDA_CHECK_LAUNCH();
  return true;
}

// --- self-check ------------------------------------------------------------------------------------------------------

// Small integers in [-16, 15] from a position: exact in TF32 and bfloat16, and every sum of their products is
// exact in float32, so the raw product must match the host's to the bit; the pattern is irregular, so a wrong
// layout, a lost k step or a misplaced tile cannot cancel out.
float small_integer(uint32_t seed, uint64_t index) {
  uint64_t x = (index + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t(seed) << 32);
  x ^= x >> 29;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 32;
  return float(int(x & 31) - 16);
}

template <typename T>
T to_element(float x) {
  if constexpr (sizeof(T) == 2) return float_to_bfloat16(x);
  else return x;
}
float from_element(float x) { return x; }
float from_element(bfloat16 x) { return bfloat16_to_float(x); }

template <typename X>
struct DeviceCopy {
  Scratch memory;
  explicit DeviceCopy(const std::vector<X>& host) : memory(host.size() * sizeof(X)) {
    copy_to_device(memory.floats(), host.data(), host.size() * sizeof(X));
  }
  X* get() const { return reinterpret_cast<X*>(memory.floats()); }
  std::vector<X> host(size_t count) const {
    std::vector<X> out(count);
    copy_to_host(out.data(), memory.floats(), count * sizeof(X));
    return out;
  }
};

// One problem through the kernel; "" when every output is within `relative` of the host's float64 result
// (relative to the sum of the magnitudes of its terms), else what differed.
//   with_epilogue: every epilogue term plus raw_out, one k range; else raw partial sums over k ranges of k_chunk,
//   added in split order on the host (what the reduce kernel does), which must be exact.
template <typename T>
std::string check_problem(int64_t m, int64_t n, int64_t k, bool with_epilogue, int64_t k_chunk, double relative) {
  std::vector<T> a(m * k), b(n * k);
  std::vector<double> ad(m * k), bd(n * k);
  for (int64_t x = 0; x < m * k; ++x) ad[x] = small_integer(1, x), a[x] = to_element<T>(float(ad[x]));
  for (int64_t x = 0; x < n * k; ++x) bd[x] = small_integer(2, x), b[x] = to_element<T>(float(bd[x]));
  std::vector<double> product(m * n, 0.0), magnitude(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t q = 0; q < k; ++q) {
        product[i * n + j] += ad[i * k + q] * bd[j * k + q];
        magnitude[i * n + j] += std::fabs(ad[i * k + q] * bd[j * k + q]);
      }

  std::vector<float> row_scale(m), column_scale(n), row_bias(m), column_bias(n), coefficient(m);
  std::vector<T> subtract(m * n), previous(m * n), nan_filled(m * n, to_element<T>(NAN));
  for (int64_t i = 0; i < m; ++i) {
    row_scale[i] = 0.5f + 0.25f * float(i % 5);
    row_bias[i] = small_integer(3, i) / 8;
    coefficient[i] = small_integer(4, i) / 16;
  }
  for (int64_t j = 0; j < n; ++j) {
    column_scale[j] = 0.75f + 0.125f * float(j % 7);
    column_bias[j] = small_integer(5, j) / 4;
  }
  for (int64_t x = 0; x < m * n; ++x)
    subtract[x] = to_element<T>(small_integer(6, x) * 2), previous[x] = to_element<T>(small_integer(7, x) * 4);
  const float beta = 0.5f;

  const DeviceCopy<T> da(a), db(b), out(with_epilogue ? previous : nan_filled), raw(nan_filled), sub(subtract);
  const DeviceCopy<float> rs(row_scale), cs(column_scale), rb(row_bias), cb(column_bias), co(coefficient);
  const int64_t tiles = ((m + kWgmmaTileM - 1) / kWgmmaTileM) * ((n + kWgmmaTileN - 1) / kWgmmaTileN);
  const int splits = with_epilogue ? 1 : int((k + k_chunk - 1) / k_chunk);
  const DeviceCopy<float> partial(std::vector<float>(size_t(splits) * m * n, NAN));

  GemmArgsOf<T> args{out.get(), da.get(), db.get(), m, n, k, GemmEpilogueOf<T>{}, nullptr, with_epilogue ? k : k_chunk,
                     true, true, false, n % 2 == 0};
  if (with_epilogue) {
    args.epilogue = {rs.get(), cs.get(), rb.get(), cb.get(), co.get(), sub.get(), beta, raw.get()};
  } else {
    args.partial = partial.get();
  }
  int timed_out = 0, missing_code = 0;
  WN_CUDA_CHECK(cudaMemcpyToSymbol(wgmma_timed_out_launch, &timed_out, sizeof timed_out));
  WN_CUDA_CHECK(cudaMemcpyToSymbol(wgmma_missing_code, &missing_code, sizeof missing_code));
  const int launch_number = next_launch_number();
  if (!launch(args, tiles, splits, launch_number)) return "cuTensorMapEncodeTiled unavailable or refused the operands";
  WN_CUDA_CHECK(cudaStreamSynchronize(library_stream()));
  WN_CUDA_CHECK(cudaMemcpyFromSymbol(&timed_out, wgmma_timed_out_launch, sizeof timed_out));
  WN_CUDA_CHECK(cudaMemcpyFromSymbol(&missing_code, wgmma_missing_code, sizeof missing_code));
  if (timed_out == launch_number) return "a pipeline wait timed out";
  if (missing_code != 0) return "the kernel image has no sm_90a code";

  char what[200];
  auto mismatch = [&](const char* name, int64_t x, double got, double want) {
    std::snprintf(what, sizeof what, "%ldx%ldx%ld: %s[%ld, %ld] = %.9g, expected %.9g", long(m), long(n), long(k), name,
                  long(x / n), long(x % n), got, want);
    return std::string(what);
  };
  if (!with_epilogue) {
    const std::vector<float> sums = partial.host(size_t(splits) * m * n);
    for (int64_t x = 0; x < m * n; ++x) {
      float sum = 0.0f;
      for (int s = 0; s < splits; ++s) sum += sums[s * m * n + x];
      if (!(double(sum) == product[x])) return mismatch("split-k sum", x, sum, product[x]);
    }
    return "";
  }
  const std::vector<T> got = out.host(m * n), got_raw = raw.host(m * n);
  for (int64_t x = 0; x < m * n; ++x) {
    const int64_t i = x / n, j = x % n;
    const double scale = double(row_scale[i]) * column_scale[j];
    const double terms[] = {product[x] * scale, double(row_bias[i]), double(column_bias[j]),
                            -double(coefficient[i]) * from_element(subtract[x]),
                            double(beta) * from_element(previous[x])};
    double want = 0.0, size = 0.0;
    for (double term : terms) want += term, size += std::fabs(term);
    if (!(std::fabs(from_element(got_raw[x]) - product[x]) <= relative * magnitude[x]))
      return mismatch("raw_out", x, from_element(got_raw[x]), product[x]);
    if (!(std::fabs(from_element(got[x]) - want) <= relative * (size + magnitude[x] * scale)))
      return mismatch("out", x, from_element(got[x]), want);
  }
  return "";
}

struct SelfCheck {
  bool passed = false;
  std::string reason;  // why not, when !passed
};

// On first use: 200 x 136 x 72 with every epilogue term (edge tiles in m and n, a k tail of 8, fewer k steps than
// stages) and 130 x 263 x 520 as split-k partials (edges again, odd n, the stage ring wrapping several times).
// Tolerances: out and raw_out of float are the exact products through a few float32 operations (2^-16 is loose);
// bfloat16 rounds them once more (2^-8 of their size, 2^-7 allowed).
template <typename T>
SelfCheck run_self_check() {
  SelfCheck result;
  const DeviceStatus& device = device_status();
  if (!device.usable) {
    result.reason = "no usable CUDA device";
    return result;
  }
  if (device.compute_major != 9 || device.compute_minor != 0) {
    result.reason = "not an sm_90 device (sm_" + std::to_string(device.compute_major) +
                    std::to_string(device.compute_minor) + ")";
    return result;
  }
  try {
    const double relative = sizeof(T) == 4 ? 1.0 / 65536 : 1.0 / 128;
    result.reason = check_problem<T>(200, 136, 72, true, 0, relative);
    if (result.reason.empty()) result.reason = check_problem<T>(130, 263, 520, false, 320, relative);
  } catch (const std::exception& error) {
    result.reason = error.what();
  }
  cudaGetLastError();
  result.passed = result.reason.empty();
  return result;
}

const SelfCheck& self_check_float() {
  static const SelfCheck check = run_self_check<float>();
  return check;
}
const SelfCheck& self_check_bfloat16() {
  static const SelfCheck check = run_self_check<bfloat16>();
  return check;
}

}  // namespace

bool wgmma_enabled_float() { return self_check_float().passed; }
bool wgmma_enabled_bfloat16() { return self_check_bfloat16().passed; }

const char* wgmma_status() {
  static const std::string status = [] {
    const SelfCheck& tf32 = self_check_float();
    const SelfCheck& bf16 = self_check_bfloat16();
    if (tf32.passed && bf16.passed) return std::string("wgmma: self-check passed (tf32, bf16)");
    const DeviceStatus& device = device_status();
    if (!device.usable || device.compute_major != 9 || device.compute_minor != 0) return "wgmma: " + tf32.reason;
    std::string s = "wgmma: disabled:";
    s += tf32.passed ? " tf32 passed;" : " tf32: " + tf32.reason + ";";
    s += bf16.passed ? " bf16 passed" : " bf16: " + bf16.reason;
    return s;
  }();
  return status.c_str();
}

bool launch_gemm_wgmma(const GemmArgsOf<float>& args, int64_t tiles, int splits) { return launch(args, tiles, splits); }
bool launch_gemm_wgmma(const GemmArgsOf<bfloat16>& args, int64_t tiles, int splits) {
  return launch(args, tiles, splits);
}

void transpose_for_wgmma(float* out, const float* in, int64_t rows, int64_t cols) { transpose(out, in, rows, cols); }
void transpose_for_wgmma(bfloat16* out, const bfloat16* in, int64_t rows, int64_t cols) {
  transpose(out, in, rows, cols);
}

}  // namespace weightnorm::cuda
