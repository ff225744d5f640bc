// CUDA weight norm (see weightnorm.cuh). v is viewed as [outer, channels, inner]; one norm per channel. float32
// and bfloat16 storage share every kernel (templated on the load item: 1 element or 16 bytes); sums, norms and
// coefficients are float32 and each output element is rounded once.
//
// Routes, in the order the host tries them (percentages: predicted share of the copy roofline on an H200 for
// >= 4M float32 elements, forward / backward; the backward moves 3N bytes against the copy's 2N, so it can pass 100%):
//  cluster rows  outer == 1, rows over twice the rows kernel's registers (8192 floats / 16384 bf16), sm_90+, and
//                the cluster is resident (cudaOccupancyMaxActiveClusters > 0). A cluster of 1-16 blocks of 512
//                threads per row, each keeping ~64 KB (forward; 128 KB backward at 16 blocks) of the row on chip:
//                32 KB in registers, the rest in dynamic shared memory (<= 227 KB). Block sums are pushed to every
//                block of the cluster through distributed shared memory and added in rank order after one cluster
//                barrier. v (dw, v) read once, w (dv) written once. [64,512,512] dim 0: 16 blocks/row, 2 blocks/SM,
//                ~4 waves of clusters; 85-90% / 90-100% (the tail of the last wave and the load-sync-write phases of
//                each block cost what the rows kernel's 100% does not). Rows of 4097-16K floats take it with 1-2
//                blocks (Linear 4096x11008: no L2 re-read of the row's tail any more): ~90% / ~95%.
//  rows          outer == 1 otherwise (dim 0; dim null when small): a group of 1-256 lanes per row, one 16-byte
//                item per lane for rows up to a warp's worth (coalesced short rows), else up to kRowCache items per
//                lane in registers; longer rows (up to 8192 floats, or any before sm_90) re-read the rest. Measured
//                86-106% / 85-142% on dim-0 shapes; [262144,16]: 85-90% / 95% (one item per lane since 712dabd).
//  short columns outer <= 64 and inner <= 32: a block per 32 columns of whole channels walks every row; the write
//                pass re-reads the tile from L1. One kernel (small tensors only).
//  split         everything else: partial sums -> finalize (a warp per channel, a block where a channel has more
//                than 2048 partials) -> apply. outer > 1 uses the column view (see Route: split below): 16-byte
//                loads along contiguous view rows, a thread per item column, 8 rows in flight, 2 blocks per SM,
//                narrow rows side by side and folded into per-channel partials in the block. The apply pass walks
//                the data in the reverse order of the partial pass with evict-first loads and stores, so tensors up
//                to ~L2 size (50 MB) are re-read from L2, not memory. Last dim [4096,1024] (16 MB): 70-85% /
//                85-100%; [512,512,3,3] dim 3 (9.4 MB): 70-80% / 85-95% -- the three launches, not bytes, bound
//                these. outer == 1 (a row longer than a cluster holds: > 1M floats forward, > 512K backward; dim
//                null): chunk partials and a flat apply, same reverse order. Dim null [4096,4096] (64 MB, > L2):
//                65-75% / 70-80%. A deterministic single pass cannot exist there: the whole sum precedes the first
//                write and 64 MB exceeds everything on chip (~30 MB shared memory + ~33 MB registers, less in
//                practice), so v is read twice; the second read is from memory except for what L2 still holds, a
//                3N-byte route with a 2N/3N = 67% ceiling, raised by the L2 hits towards ~80%.
// No atomics: every sum is added in an order fixed by the launch shape, so results are bitwise identical run to
// run on one GPU. All indexing is 64-bit where an element offset is formed.
//
// Resources (nvcc -O3 -Xptxas -v; registers / static shared bytes per thread block; no spills, no stack, any
// kernel; the cluster kernel also takes its slice as dynamic shared memory):
//   kernel (float4 items; Bfloat16x8 alike within a few registers)      sm_80          sm_90
//   weightnorm_cluster_rows_kernel fwd / bwd (512 thr, 2 blocks/SM)       - (sm_90 only)  64 / 64, 128 B
//   weightnorm_rows_kernel<256 lanes> fwd / bwd                           37 / 58, 32 B   39 / 58, 32 B
//   weightnorm_columns_kernel<float> fwd / bwd                            32, 1184/1312 B 32, 1184/1312 B
//   channel_view_partial_kernel square / dot                              43 / 48, 5 KB   42 / 56, 5 KB (bf16 9 KB)
//   weightnorm_finalize_kernel (warp / block group)                       28 / 32         28 / 32
//   weightnorm_view_apply_kernel fwd / bwd                                60 / 80         58 / 80 (bf16 64 / 98)
//   channel_row_partial_kernel square / dot                               46 / 80, 32 B   44 / 78, 32 B
//   channel_apply_kernel (reverse) fwd / bwd                              19 / 28         26 / 32
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <utility>

#include "check.cuh"
#include "runtime.cuh"
#include "weightnorm.cuh"
#include "weightnorm/weightnorm_math.h"

namespace weightnorm::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kBlock = 256;
constexpr int kWarp = 32;
constexpr int kRowCache = 4;                // items per lane and input held in registers by the rows kernel
constexpr int kColumnTile = 32;             // columns per block in the short-column kernel (one warp wide)
constexpr int kColumnRows = 8;              // thread-rows per block in the short-column kernel
constexpr int64_t kShortColumns = 64;       // outer rows up to which the short-column kernel re-reads from L1
constexpr int64_t kRowChunk = 8192;         // elements per block when one row is split across blocks
constexpr int64_t kSplitMinRow = 16384;     // rows shorter than this are never split
constexpr int kViewUnroll = 8;              // view rows each thread has in flight in the view kernels
constexpr int kViewBlocksPerSm = 2;         // partial-pass blocks per SM: 2 x 256 threads x 8 x 16 B in flight
constexpr int64_t kViewMinRowsPerSplit = 8;
constexpr int64_t kFinalizeBlockTerms = 2048;  // channels with more partials than this get a whole block
constexpr int kClusterThreads = 512;
constexpr int kMaxClusterBlocks = 16;       // the non-portable cluster limit on sm_90
constexpr int64_t kClusterSliceBytes = 64 * 1024;  // on-chip bytes per cluster block aimed for (3 blocks/SM forward)
constexpr int kMaxGridY = 65535;

// kDot: only the per-row sum of a*b (the unfused path's reduction for rows).
enum class Pass { kForward, kBackward, kDot };
enum class Finish { kSum, kForward, kBackward };

// ---------------------------------------------------------------------------------------------------------------
// Element types. Every kernel is templated on its load unit ("item"): one element (float, bfloat16) or 16 bytes of
// them (float4, Bfloat16x8). Items are widened to float32 for all arithmetic and each output is rounded once.

struct alignas(16) Bfloat16x8 {
  uint4 bits;
};

template <class Item>
struct ItemTraits;
template <>
struct ItemTraits<float> {
  using Elem = float;
  static constexpr int kCount = 1;
};
template <>
struct ItemTraits<float4> {
  using Elem = float;
  static constexpr int kCount = 4;
};
template <>
struct ItemTraits<bfloat16> {
  using Elem = bfloat16;
  static constexpr int kCount = 1;
};
template <>
struct ItemTraits<Bfloat16x8> {
  using Elem = bfloat16;
  static constexpr int kCount = 8;
};
template <class Item>
using ElemOf = typename ItemTraits<Item>::Elem;
template <class Item>
constexpr int kCountOf = ItemTraits<Item>::kCount;

// The 16-byte item of an element type.
template <class Elem>
struct WideOf;
template <>
struct WideOf<float> {
  using type = float4;
};
template <>
struct WideOf<bfloat16> {
  using type = Bfloat16x8;
};

template <int N>
struct Floats {
  float v[N];
};

__device__ __forceinline__ float bfloat16_bits_to_float(uint32_t bits) { return __uint_as_float(bits << 16); }
__device__ __forceinline__ uint32_t float_to_bfloat16_bits(float x) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

__device__ __forceinline__ Floats<1> widen(float x) { return {{x}}; }
__device__ __forceinline__ Floats<4> widen(float4 x) { return {{x.x, x.y, x.z, x.w}}; }
__device__ __forceinline__ Floats<1> widen(bfloat16 x) { return {{bfloat16_bits_to_float(x.bits)}}; }
__device__ __forceinline__ Floats<8> widen(Bfloat16x8 x) {
  const uint32_t words[4] = {x.bits.x, x.bits.y, x.bits.z, x.bits.w};
  Floats<8> out;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out.v[2 * i] = __uint_as_float(words[i] << 16);
    out.v[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
  return out;
}

__device__ __forceinline__ void narrow(float& out, const Floats<1>& x) { out = x.v[0]; }
__device__ __forceinline__ void narrow(float4& out, const Floats<4>& x) {
  out = make_float4(x.v[0], x.v[1], x.v[2], x.v[3]);
}
__device__ __forceinline__ void narrow(bfloat16& out, const Floats<1>& x) {
  out.bits = static_cast<uint16_t>(float_to_bfloat16_bits(x.v[0]));
}
__device__ __forceinline__ void narrow(Bfloat16x8& out, const Floats<8>& x) {
  uint32_t words[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) words[i] = float_to_bfloat16_bits(x.v[2 * i]) | (float_to_bfloat16_bits(x.v[2 * i + 1]) << 16);
  out.bits = make_uint4(words[0], words[1], words[2], words[3]);
}

// Loads that are an input's last use, and stores of outputs this op will not read: evict-first in L2, so that the
// second pass of a split route finds more of its input still cached.
__device__ __forceinline__ float load_last_use(const float* p) { return __ldcs(p); }
__device__ __forceinline__ float4 load_last_use(const float4* p) { return __ldcs(p); }
__device__ __forceinline__ bfloat16 load_last_use(const bfloat16* p) {
  return bfloat16{__ldcs(reinterpret_cast<const unsigned short*>(p))};
}
__device__ __forceinline__ Bfloat16x8 load_last_use(const Bfloat16x8* p) {
  return Bfloat16x8{__ldcs(reinterpret_cast<const uint4*>(p))};
}
__device__ __forceinline__ void store_streaming(float* p, float x) { __stcs(p, x); }
__device__ __forceinline__ void store_streaming(float4* p, float4 x) { __stcs(p, x); }
__device__ __forceinline__ void store_streaming(bfloat16* p, bfloat16 x) {
  __stcs(reinterpret_cast<unsigned short*>(p), x.bits);
}
__device__ __forceinline__ void store_streaming(Bfloat16x8* p, Bfloat16x8 x) {
  __stcs(reinterpret_cast<uint4*>(p), x.bits);
}

template <class Item>
__device__ __forceinline__ float dot_of(Item a, Item b) {
  const auto x = widen(a), y = widen(b);
  float sum = x.v[0] * y.v[0];
#pragma unroll
  for (int i = 1; i < kCountOf<Item>; ++i) sum += x.v[i] * y.v[i];
  return sum;
}

// Per-component sums, for the view kernels whose item components belong to different columns.
template <class Item>
__device__ __forceinline__ void accumulate(Floats<kCountOf<Item>>& sum, Item a, Item b) {
  const auto x = widen(a), y = widen(b);
#pragma unroll
  for (int i = 0; i < kCountOf<Item>; ++i) sum.v[i] += x.v[i] * y.v[i];
}

// out = c1 * a (forward) or c1 * a - c2 * b (backward), per component.
template <class Item>
__device__ __forceinline__ Item scaled(Item a, const Floats<kCountOf<Item>>& c1) {
  auto x = widen(a);
#pragma unroll
  for (int i = 0; i < kCountOf<Item>; ++i) x.v[i] = x.v[i] * c1.v[i];
  Item out;
  narrow(out, x);
  return out;
}
template <class Item>
__device__ __forceinline__ Item combined(Item a, Item b, const Floats<kCountOf<Item>>& c1,
                                         const Floats<kCountOf<Item>>& c2) {
  auto x = widen(a);
  const auto y = widen(b);
#pragma unroll
  for (int i = 0; i < kCountOf<Item>; ++i) x.v[i] = c1.v[i] * x.v[i] - c2.v[i] * y.v[i];
  Item out;
  narrow(out, x);
  return out;
}
template <int N>
__device__ __forceinline__ Floats<N> splat(float x) {
  Floats<N> out;
#pragma unroll
  for (int i = 0; i < N; ++i) out.v[i] = x;
  return out;
}
template <class Item>
__device__ __forceinline__ Item scaled(Item a, float c1) {
  return scaled(a, splat<kCountOf<Item>>(c1));
}
template <class Item>
__device__ __forceinline__ Item combined(Item a, Item b, float c1, float c2) {
  return combined(a, b, splat<kCountOf<Item>>(c1), splat<kCountOf<Item>>(c2));
}

// ---------------------------------------------------------------------------------------------------------------
// Per-channel arithmetic, shared by every route. c1, c2: the write pass computes c1*a (forward) or c1*a - c2*b
// (backward); per_channel is norm (forward) or dg (backward).

struct Coefficients {
  float c1, c2, per_channel;
};

__device__ __forceinline__ Coefficients forward_coefficients(float sum_of_squares, float g, float eps) {
  const float norm = fmaxf(sqrtf(sum_of_squares), eps);
  return {g_over_norm(g, norm), 0.0f, norm};
}

__device__ __forceinline__ Coefficients backward_coefficients(float dot, float g, float norm, float eps) {
  const float dg = dot / norm;
  const float c2 = weightnorm_projection_active(norm, eps) ? weightnorm_projection_from_dg(g, dg, norm) : 0.0f;
  return {g_over_norm(g, norm), c2, dg};
}

// Sum over the kGroup consecutive lanes of a row. Every lane of the group gets the same bits (the butterfly adds
// the same pairs on both sides). kGroup > kWarp: the whole block of kGroup threads, through shared memory.
template <int kGroup>
__device__ __forceinline__ float group_sum(float value, float* warp_sums) {
#pragma unroll
  for (int offset = (kGroup < kWarp ? kGroup : kWarp) / 2; offset > 0; offset /= 2)
    value += __shfl_xor_sync(0xffffffffu, value, offset, kGroup < kWarp ? kGroup : kWarp);
  if constexpr (kGroup <= kWarp) {
    return value;
  } else {
    __syncthreads();  // warp_sums may still be read by a previous call
    if (threadIdx.x % kWarp == 0) warp_sums[threadIdx.x / kWarp] = value;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kGroup / kWarp; ++w) total += warp_sums[w];
    return total;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Route: rows (outer == 1). Item is 16 bytes when rows are a multiple of 16 bytes and aligned, else one element.

template <class Elem>
struct RowsArgs {
  Elem* out;                // w or dv
  float* per_channel_out;   // norm or dg
  const Elem* a;            // v or dw
  const Elem* b;            // v (backward only)
  const float* g;
  const float* norm;        // backward only
  int64_t rows, row_length;
  float eps;
};

template <class Item, int kGroup, Pass kPass>
__global__ void __launch_bounds__(kBlock) weightnorm_rows_kernel(RowsArgs<ElemOf<Item>> args) {
  __shared__ float warp_sums[kBlock / kWarp];
  constexpr int kGroupsPerBlock = kBlock / kGroup;
  const int64_t row = int64_t(blockIdx.x) * kGroupsPerBlock + threadIdx.x / kGroup;
  const int lane = threadIdx.x % kGroup;
  const bool active = row < args.rows;
  const int64_t items = args.row_length / kCountOf<Item>;
  const int64_t row_offset = (active ? row : 0) * args.row_length;
  const Item* a = reinterpret_cast<const Item*>(args.a + row_offset);
  const Item* b = reinterpret_cast<const Item*>(args.b + row_offset);

  Item cached_a[kRowCache];
  Item cached_b[kRowCache];
  float sum = 0.0f;
  if (active) {
#pragma unroll
    for (int c = 0; c < kRowCache; ++c) {
      const int64_t item = lane + int64_t(c) * kGroup;
      if (item < items) {
        cached_a[c] = a[item];
        if constexpr (kPass == Pass::kForward) {
          sum += dot_of(cached_a[c], cached_a[c]);
        } else {
          cached_b[c] = b[item];
          sum += dot_of(cached_a[c], cached_b[c]);
        }
      }
    }
#pragma unroll 1
    for (int64_t item = lane + int64_t(kRowCache) * kGroup; item < items; item += kGroup) {
      const Item x = a[item];
      sum += kPass == Pass::kForward ? dot_of(x, x) : dot_of(x, b[item]);
    }
  }
  sum = group_sum<kGroup>(sum, warp_sums);  // every lane takes part, active or not
  if (!active) return;
  if constexpr (kPass == Pass::kDot) {
    if (lane == 0) args.per_channel_out[row] = sum;
    return;
  } else {
    const Coefficients coef = kPass == Pass::kForward
                                  ? forward_coefficients(sum, args.g[row], args.eps)
                                  : backward_coefficients(sum, args.g[row], args.norm[row], args.eps);
    if (lane == 0) args.per_channel_out[row] = coef.per_channel;
    Item* out = reinterpret_cast<Item*>(args.out + row_offset);
#pragma unroll
    for (int c = 0; c < kRowCache; ++c) {
      const int64_t item = lane + int64_t(c) * kGroup;
      if (item < items) {
        if constexpr (kPass == Pass::kBackward) {
          out[item] = combined(cached_a[c], cached_b[c], coef.c1, coef.c2);
        } else {
          out[item] = scaled(cached_a[c], coef.c1);
        }
      }
    }
#pragma unroll 1
    for (int64_t item = lane + int64_t(kRowCache) * kGroup; item < items; item += kGroup) {
      if constexpr (kPass == Pass::kBackward) {
        out[item] = combined(a[item], b[item], coef.c1, coef.c2);
      } else {
        out[item] = scaled(a[item], coef.c1);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Route: cluster rows (outer == 1, rows longer than the rows kernel's registers; sm_90). A cluster of
// blocks_per_row blocks owns one row; each block keeps its slice on chip (the first items in registers, the rest in
// dynamic shared memory), pushes its partial sum into every block of the cluster through distributed shared
// memory, and after one cluster barrier each block adds the partials in rank order: v read once, w written once.

__host__ __device__ constexpr int cluster_register_items(Pass pass) { return pass == Pass::kBackward ? 2 : 4; }

template <class Elem>
struct ClusterRowsArgs {
  Elem* out;
  float* per_channel_out;
  const Elem* a;
  const Elem* b;
  const float* g;
  const float* norm;
  int64_t row_length;   // elements
  int slice_items;      // items per block; the last blocks of a row may hold fewer or none
  int blocks_per_row;   // the cluster size, 1 to kMaxClusterBlocks
  float eps;
};

template <class Item, Pass kPass>
__global__ void __launch_bounds__(kClusterThreads, 2) weightnorm_cluster_rows_kernel(ClusterRowsArgs<ElemOf<Item>> args) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kBackward = kPass == Pass::kBackward;
  constexpr int kRegisterItems = cluster_register_items(kPass);
  constexpr int kRegisterSpan = kRegisterItems * kClusterThreads;  // slice items held in registers
  constexpr int kBatch = 4;
  extern __shared__ __align__(16) unsigned char cluster_shared[];
  __shared__ float warp_sums[kClusterThreads / kWarp];
  __shared__ float block_sums[kMaxClusterBlocks];
  const int blocks = args.blocks_per_row;
  // A cluster of a 1-D grid is `blocks` consecutive blocks, and its rank is the block's place among them.
  const int rank = static_cast<int>(blockIdx.x % blocks);
  const int64_t row = blockIdx.x / blocks;
  if (blocks > 1) cg::this_cluster().barrier_arrive();  // waited on before the first remote write

  const int64_t items = args.row_length / kCountOf<Item>;
  const int64_t begin = int64_t(rank) * args.slice_items;
  const int count = static_cast<int>(max(int64_t{0}, min(items - begin, int64_t{args.slice_items})));
  const int shared_items = max(0, args.slice_items - kRegisterSpan);
  Item* shared_a = reinterpret_cast<Item*>(cluster_shared);
  Item* shared_b = shared_a + shared_items;
  const Item* a = reinterpret_cast<const Item*>(args.a + row * args.row_length) + begin;
  const Item* b = reinterpret_cast<const Item*>(args.b + row * args.row_length) + begin;
  const int t = threadIdx.x;

  Item cached_a[kRegisterItems];
  Item cached_b[kRegisterItems];
#pragma unroll
  for (int c = 0; c < kRegisterItems; ++c) {
    if (t + c * kClusterThreads < count) {
      cached_a[c] = a[t + c * kClusterThreads];
      if constexpr (kBackward) cached_b[c] = b[t + c * kClusterThreads];
    }
  }
  float sum = 0.0f;
#pragma unroll
  for (int c = 0; c < kRegisterItems; ++c)
    if (t + c * kClusterThreads < count) sum += dot_of(cached_a[c], kBackward ? cached_b[c] : cached_a[c]);

  // The rest of the slice goes to shared memory, kBatch loads per input in flight per thread.
  int local = kRegisterSpan + t;
  for (; local + (kBatch - 1) * kClusterThreads < count; local += kBatch * kClusterThreads) {
    Item xa[kBatch], xb[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      xa[u] = a[local + u * kClusterThreads];
      if constexpr (kBackward) xb[u] = b[local + u * kClusterThreads];
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int s = local + u * kClusterThreads - kRegisterSpan;
      shared_a[s] = xa[u];
      if constexpr (kBackward) shared_b[s] = xb[u];
      sum += dot_of(xa[u], kBackward ? xb[u] : xa[u]);
    }
  }
  for (; local < count; local += kClusterThreads) {
    const Item x = a[local];
    shared_a[local - kRegisterSpan] = x;
    if constexpr (kBackward) {
      const Item y = b[local];
      shared_b[local - kRegisterSpan] = y;
      sum += dot_of(x, y);
    } else {
      sum += dot_of(x, x);
    }
  }
  sum = group_sum<kClusterThreads>(sum, warp_sums);  // also orders this block's shared stores before the reads below

  float total = sum;
  if (blocks > 1) {
    cg::cluster_group cluster = cg::this_cluster();
    cluster.barrier_wait();  // every block of the cluster is running, so its shared memory may be written
    if (t < blocks) *cluster.map_shared_rank(&block_sums[rank], t) = sum;
    cluster.sync();  // the pushes are visible; nothing remote is touched after this, so blocks may exit freely
    total = 0.0f;
    for (int r = 0; r < blocks; ++r) total += block_sums[r];  // rank order: the same bits in every block
  }

  const Coefficients coef = kBackward ? backward_coefficients(total, args.g[row], args.norm[row], args.eps)
                                      : forward_coefficients(total, args.g[row], args.eps);
  if (rank == 0 && t == 0) args.per_channel_out[row] = coef.per_channel;
  Item* out = reinterpret_cast<Item*>(args.out + row * args.row_length) + begin;
#pragma unroll
  for (int c = 0; c < kRegisterItems; ++c) {
    if (t + c * kClusterThreads < count) {
      out[t + c * kClusterThreads] = kBackward ? combined(cached_a[c], cached_b[c], coef.c1, coef.c2)
                                               : scaled(cached_a[c], coef.c1);
    }
  }
#pragma unroll 4
  for (int item = kRegisterSpan + t; item < count; item += kClusterThreads) {
    const int s = item - kRegisterSpan;
    out[item] = kBackward ? combined(shared_a[s], shared_b[s], coef.c1, coef.c2) : scaled(shared_a[s], coef.c1);
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // pre-sm_90 code JIT-compiled for an sm_90 device (e.g. built for compute_80 only): fail, never skip the row
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// Route: short columns (outer <= kShortColumns, inner <= 32). A block owns channels_per_tile whole channels, 32
// columns wide and 8 thread-rows deep, walking all outer rows; the write pass re-reads the tile from L1. One kernel.

template <class Elem>
struct ColumnsArgs {
  Elem* out;
  float* per_channel_out;
  const Elem* a;
  const Elem* b;
  const float* g;
  const float* norm;
  int64_t outer, channels, inner;
  int channels_per_tile;
  float eps;
};

template <class Elem, Pass kPass>
__global__ void __launch_bounds__(kColumnTile* kColumnRows) weightnorm_columns_kernel(ColumnsArgs<Elem> args) {
  __shared__ float column_sums[kColumnRows][kColumnTile + 1];
  __shared__ float tile_c1[kColumnTile];
  __shared__ float tile_c2[kColumnTile];
  const int x = threadIdx.x, y = threadIdx.y;
  const int inner = static_cast<int>(args.inner);
  const int64_t k_begin = int64_t(blockIdx.x) * args.channels_per_tile;
  const int tile_channels = static_cast<int>(min(int64_t(args.channels_per_tile), args.channels - k_begin));
  const bool column_active = x < tile_channels * inner;
  const int64_t row_stride = args.channels * args.inner;
  const int64_t column_offset = k_begin * args.inner + x;

  float sum = 0.0f;
  if (column_active) {
    for (int64_t o = y; o < args.outer; o += kColumnRows) {
      const int64_t e = o * row_stride + column_offset;
      sum += kPass == Pass::kBackward ? dot_of(args.a[e], args.b[e]) : dot_of(args.a[e], args.a[e]);
    }
  }
  column_sums[y][x] = sum;
  __syncthreads();
  if (y == 0 && x < tile_channels) {
    float total = 0.0f;
    for (int i = 0; i < inner; ++i)
      for (int r = 0; r < kColumnRows; ++r) total += column_sums[r][x * inner + i];
    const int64_t k = k_begin + x;
    const Coefficients coef = kPass == Pass::kForward ? forward_coefficients(total, args.g[k], args.eps)
                                                      : backward_coefficients(total, args.g[k], args.norm[k], args.eps);
    args.per_channel_out[k] = coef.per_channel;
    tile_c1[x] = coef.c1;
    tile_c2[x] = coef.c2;
  }
  __syncthreads();
  if (!column_active) return;
  const float c1 = tile_c1[x / inner], c2 = tile_c2[x / inner];
  for (int64_t o = y; o < args.outer; o += kColumnRows) {
    const int64_t e = o * row_stride + column_offset;
    args.out[e] = kPass == Pass::kBackward ? combined(args.a[e], args.b[e], c1, c2) : scaled(args.a[e], c1);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Route: split (three kernels: partial sums, finalize, apply). Partials are laid out [splits][channels][per_split]
// so one finalize kernel serves every kind.
//
// outer > 1 uses the column view: the tensor read as rows of `width` contiguous elements, width a multiple of the
// layout's row (channels * inner) and of the item, so a thread owns one item column for the whole walk and every
// component of it stays in one channel (channel of element column j = (j / inner) % channels). Narrow layout rows
// (the last dim of [.., 3]) are laid side by side until a view row fills a block's columns; the last view row may
// be partial. The partial and apply kernels share the grid (tiles of kBlock item columns, splits of view rows).

struct ColumnView {
  int64_t channels, inner;
  int64_t width_items;   // items per view row
  int64_t repeat;        // layout rows per view row
  int64_t total_items;   // items in the tensor
  int64_t rows;          // view rows, the last one possibly partial
  int64_t rows_per_split, splits;
  int64_t tiles;
  bool fold;             // one tile spans the view row: the block folds its columns into channels
};

// View rows [begin, end) of one split that hold an item in this column.
struct RowRange {
  int64_t begin, end;
};
__device__ __forceinline__ RowRange view_rows(const ColumnView& view, int64_t split, int64_t column) {
  const int64_t full_rows = view.total_items / view.width_items;
  const int64_t column_rows = full_rows + (column < view.total_items % view.width_items ? 1 : 0);
  const int64_t begin = split * view.rows_per_split;
  return {begin, min(column_rows, begin + view.rows_per_split)};
}

template <class Item, bool kSquare>
__global__ void __launch_bounds__(kBlock)
    channel_view_partial_kernel(float* partial, const ElemOf<Item>* a, const ElemOf<Item>* b, ColumnView view) {
  constexpr int kCount = kCountOf<Item>;
  __shared__ float column_sums[kBlock * kCount];
  const int64_t column = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  const int64_t split = blockIdx.y;
  Floats<kCount> sum = splat<kCount>(0.0f);
  if (column < view.width_items) {
    const Item* a_items = reinterpret_cast<const Item*>(a) + column;
    const Item* b_items = reinterpret_cast<const Item*>(b) + column;
    const RowRange rows = view_rows(view, split, column);
    int64_t o = rows.begin;
    for (; o + kViewUnroll <= rows.end; o += kViewUnroll) {
      Item x[kViewUnroll], y[kViewUnroll];
#pragma unroll
      for (int u = 0; u < kViewUnroll; ++u) {
        x[u] = a_items[(o + u) * view.width_items];
        if constexpr (!kSquare) y[u] = b_items[(o + u) * view.width_items];
      }
#pragma unroll
      for (int u = 0; u < kViewUnroll; ++u) accumulate(sum, x[u], kSquare ? x[u] : y[u]);
    }
    for (; o < rows.end; ++o) {
      const Item x = a_items[o * view.width_items];
      accumulate(sum, x, kSquare ? x : b_items[o * view.width_items]);
    }
  }
  if (!view.fold) {
    if (column < view.width_items) {
#pragma unroll
      for (int c = 0; c < kCount; ++c) partial[split * view.width_items * kCount + column * kCount + c] = sum.v[c];
    }
    return;
  }
#pragma unroll
  for (int c = 0; c < kCount; ++c) column_sums[threadIdx.x * kCount + c] = sum.v[c];
  __syncthreads();
  // Channel k's columns are (r * channels + k) * inner + i, term m = r * inner + i. With few channels, `lanes`
  // threads share a channel's terms (strided), and their sums are added in lane order.
  const int64_t terms = view.repeat * view.inner;
  const int lanes = view.channels >= kBlock ? 1 : static_cast<int>(kBlock / view.channels);
  float lane_sum = 0.0f;
  for (int64_t k = threadIdx.x / lanes; k < view.channels; k += kBlock / lanes) {
    lane_sum = 0.0f;
    for (int64_t m = threadIdx.x % lanes; m < terms; m += lanes)
      lane_sum += column_sums[((m / view.inner) * view.channels + k) * view.inner + m % view.inner];
    if (lanes == 1) partial[split * view.channels + k] = lane_sum;
  }
  if (lanes == 1) return;
  __shared__ float lane_sums[kBlock];
  lane_sums[threadIdx.x] = lane_sum;  // threads past the last channel hold 0 and are never read
  __syncthreads();
  if (threadIdx.x < view.channels) {
    float total = 0.0f;
    for (int l = 0; l < lanes; ++l) total += lane_sums[threadIdx.x * lanes + l];
    partial[split * view.channels + threadIdx.x] = total;
  }
}

// out = c1[k] * a (forward) or c1[k] * a - c2[k] * b (backward) over the column view. Splits run in the reverse of
// the partial pass's order and each walks its rows backwards, so the first rows re-read are the last ones read.
template <class Item, Pass kPass>
__global__ void __launch_bounds__(kBlock)
    weightnorm_view_apply_kernel(ElemOf<Item>* out, const ElemOf<Item>* a, const ElemOf<Item>* b, const float* c1,
                                 const float* c2, ColumnView view) {
  constexpr int kCount = kCountOf<Item>;
  constexpr bool kBackward = kPass == Pass::kBackward;
  const int64_t column = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (column >= view.width_items) return;
  const int64_t split = int64_t(gridDim.y) - 1 - blockIdx.y;
  Floats<kCount> s1, s2;
#pragma unroll
  for (int c = 0; c < kCount; ++c) {
    const int64_t k = ((column * kCount + c) / view.inner) % view.channels;
    s1.v[c] = c1[k];
    s2.v[c] = kBackward ? c2[k] : 0.0f;
  }
  const Item* a_items = reinterpret_cast<const Item*>(a) + column;
  const Item* b_items = reinterpret_cast<const Item*>(b) + column;
  Item* out_items = reinterpret_cast<Item*>(out) + column;
  const RowRange rows = view_rows(view, split, column);
  int64_t o = rows.end;
  for (; o - kViewUnroll >= rows.begin; o -= kViewUnroll) {
    Item x[kViewUnroll], y[kViewUnroll];
#pragma unroll
    for (int u = 0; u < kViewUnroll; ++u) {
      x[u] = load_last_use(a_items + (o - 1 - u) * view.width_items);
      if constexpr (kBackward) y[u] = load_last_use(b_items + (o - 1 - u) * view.width_items);
    }
#pragma unroll
    for (int u = 0; u < kViewUnroll; ++u)
      store_streaming(out_items + (o - 1 - u) * view.width_items, kBackward ? combined(x[u], y[u], s1, s2) : scaled(x[u], s1));
  }
  for (; o > rows.begin; --o) {
    const Item x = load_last_use(a_items + (o - 1) * view.width_items);
    store_streaming(out_items + (o - 1) * view.width_items,
                    kBackward ? combined(x, load_last_use(b_items + (o - 1) * view.width_items), s1, s2) : scaled(x, s1));
  }
}

// Partial sums of a*b per (row, chunk of kRowChunk elements) for outer == 1: grid (rows, chunks).
template <class Item, bool kSquare>
__global__ void __launch_bounds__(kBlock)
    channel_row_partial_kernel(float* partial, const ElemOf<Item>* a, const ElemOf<Item>* b, int64_t row_length) {
  __shared__ float warp_sums[kBlock / kWarp];
  constexpr int64_t kChunkItems = kRowChunk / kCountOf<Item>;
  constexpr int kItemsPerThread = static_cast<int>(kChunkItems / kBlock);
  static_assert(kChunkItems % kBlock == 0, "a chunk is whole items per thread");
  const int64_t row = blockIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
  const int64_t items = row_length / kCountOf<Item>;
  const int64_t begin = chunk * kChunkItems + threadIdx.x;
  const Item* ra = reinterpret_cast<const Item*>(a + row * row_length);
  const Item* rb = reinterpret_cast<const Item*>(b + row * row_length);
  Item x[kItemsPerThread], y[kItemsPerThread];
#pragma unroll
  for (int u = 0; u < kItemsPerThread; ++u) {
    const int64_t item = begin + int64_t(u) * kBlock;
    if (item < items) {
      x[u] = ra[item];
      if constexpr (!kSquare) y[u] = rb[item];
    }
  }
  float sum = 0.0f;
#pragma unroll
  for (int u = 0; u < kItemsPerThread; ++u)
    if (begin + int64_t(u) * kBlock < items) sum += dot_of(x[u], kSquare ? x[u] : y[u]);
  sum = group_sum<kBlock>(sum, warp_sums);
  if (threadIdx.x == 0) partial[row * chunks + chunk] = sum;
}

struct FinalizeArgs {
  float* per_channel_out;  // sum, norm or dg
  float* c1;
  float* c2;
  const float* partial;
  const float* g;
  const float* norm;
  int64_t channels, splits, per_split;
  float eps;
};

// A group of kGroup threads per channel (a warp, or the whole block for channels with many partials) adds its
// splits * per_split partials in a fixed order.
template <Finish kFinish, int kGroup>
__global__ void __launch_bounds__(kBlock) weightnorm_finalize_kernel(FinalizeArgs args) {
  __shared__ float warp_sums[kBlock / kWarp];
  const int64_t k = int64_t(blockIdx.x) * (kBlock / kGroup) + threadIdx.x / kGroup;
  const int lane = threadIdx.x % kGroup;
  const int64_t terms = args.splits * args.per_split;
  float sum = 0.0f;
  if (k < args.channels) {
#pragma unroll 4
    for (int64_t t = lane; t < terms; t += kGroup) {
      const int64_t split = t / args.per_split, i = t % args.per_split;
      sum += args.partial[(split * args.channels + k) * args.per_split + i];
    }
  }
  sum = group_sum<kGroup>(sum, warp_sums);  // every thread takes part
  if (k >= args.channels || lane != 0) return;
  if constexpr (kFinish == Finish::kSum) {
    args.per_channel_out[k] = sum;
  } else {
    const Coefficients coef = kFinish == Finish::kForward
                                  ? forward_coefficients(sum, args.g[k], args.eps)
                                  : backward_coefficients(sum, args.g[k], args.norm[k], args.eps);
    args.per_channel_out[k] = coef.per_channel;
    args.c1[k] = coef.c1;
    if (args.c2) args.c2[k] = coef.c2;
  }
}

// out = c1[k] * a (forward) or c1[k] * a - c2[k] * b (backward) for the channel k of each element, over the flat
// tensor. A 16-byte Item needs inner % kCount == 0 (its elements then share one channel); Index is 32-bit when it
// can be, because the channel of an element costs two divisions. kReverse (the fused split route): the last items
// first, read and written evict-first, so the start of the walk finds the end of the partial pass's reads in L2.
template <class Item, typename Index, Pass kPass, bool kReverse>
__global__ void __launch_bounds__(kBlock)
    channel_apply_kernel(ElemOf<Item>* out, const ElemOf<Item>* a, const ElemOf<Item>* b, const float* c1,
                         const float* c2, Index count, Index channels, Index inner) {
  constexpr Index kCount = kCountOf<Item>;
  const Index items = count / kCount;
  const Item* a_items = reinterpret_cast<const Item*>(a);
  const Item* b_items = reinterpret_cast<const Item*>(b);
  Item* out_items = reinterpret_cast<Item*>(out);
  for (Index step = Index(blockIdx.x) * kBlock + threadIdx.x; step < items; step += Index(gridDim.x) * kBlock) {
    const Index item = kReverse ? items - 1 - step : step;
    const Index k = (item * kCount / inner) % channels;
    if constexpr (kReverse) {
      const Item x = load_last_use(a_items + item);
      store_streaming(out_items + item, kPass == Pass::kBackward ? combined(x, load_last_use(b_items + item), c1[k], c2[k])
                                                                 : scaled(x, c1[k]));
    } else if constexpr (kPass == Pass::kBackward) {
      out_items[item] = combined(a_items[item], b_items[item], c1[k], c2[k]);
    } else {
      out_items[item] = scaled(a_items[item], c1[k]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kBlock) subtract_kernel(float* out, const float* a, const float* b, int64_t items) {
  const T* a_items = reinterpret_cast<const T*>(a);
  const T* b_items = reinterpret_cast<const T*>(b);
  T* out_items = reinterpret_cast<T*>(out);
  for (int64_t item = int64_t(blockIdx.x) * kBlock + threadIdx.x; item < items; item += int64_t(gridDim.x) * kBlock)
    out_items[item] = combined(a_items[item], b_items[item], 1.0f, 1.0f);
}

// ---------------------------------------------------------------------------------------------------------------
// Host side.

int multiprocessors() { return std::max(1, device_status().multiprocessors); }

bool aligned16(const void* pointer) { return (reinterpret_cast<uintptr_t>(pointer) & 15) == 0; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Enough blocks to fill the GPU several times over for an elementwise grid-stride kernel, capped by the work.
unsigned elementwise_blocks(int64_t items) {
  const int64_t wanted = ceil_div(std::max<int64_t>(items, 1), kBlock);
  return static_cast<unsigned>(std::min<int64_t>(wanted, int64_t{multiprocessors()} * 8));
}

// --- rows

template <class Item, int kGroup, Pass kPass>
void launch_rows_group(const RowsArgs<ElemOf<Item>>& args) {
  constexpr int kGroupsPerBlock = kBlock / kGroup;
  const unsigned blocks = static_cast<unsigned>(ceil_div(args.rows, kGroupsPerBlock));
  weightnorm_rows_kernel<Item, kGroup, kPass><<<blocks, kBlock, 0, library_stream()>>>(args);
  WN_CUDA_CHECK_LAUNCH();
}

template <class Item, Pass kPass>
void launch_rows_typed(const RowsArgs<ElemOf<Item>>& args) {
  const int64_t items = args.row_length / kCountOf<Item>;
  // Rows up to a warp's worth of items: one item per lane, so that a warp's loads are contiguous. Longer rows: enough
  // lanes that the row fits in the register cache.
  const int64_t lanes_wanted = items <= kWarp ? items : ceil_div(items, kRowCache);
  if (lanes_wanted <= 1) return launch_rows_group<Item, 1, kPass>(args);
  if (lanes_wanted <= 2) return launch_rows_group<Item, 2, kPass>(args);
  if (lanes_wanted <= 4) return launch_rows_group<Item, 4, kPass>(args);
  if (lanes_wanted <= 8) return launch_rows_group<Item, 8, kPass>(args);
  if (lanes_wanted <= 16) return launch_rows_group<Item, 16, kPass>(args);
  if (lanes_wanted <= 32) return launch_rows_group<Item, 32, kPass>(args);
  return launch_rows_group<Item, kBlock, kPass>(args);
}

template <class Elem>
bool rows_vectorized(int64_t row_length, const void* out, const void* a, const void* b) {
  return row_length % kCountOf<typename WideOf<Elem>::type> == 0 && aligned16(a) && aligned16(b) &&
         (out == nullptr || aligned16(out));
}

template <class Elem, Pass kPass>
void launch_rows(const RowsArgs<Elem>& args) {
  if (rows_vectorized<Elem>(args.row_length, args.out, args.a, args.b))
    return launch_rows_typed<typename WideOf<Elem>::type, kPass>(args);
  launch_rows_typed<Elem, kPass>(args);
}

// Longest row the rows kernel holds in registers; longer rows re-read the rest.
template <class Elem>
int64_t rows_register_capacity() {
  return int64_t{kRowCache} * kBlock * kCountOf<typename WideOf<Elem>::type>;
}

// --- cluster rows

struct ClusterPlan {
  int blocks_per_row = 0;  // 0: the route does not fit
  int slice_items = 0;
  size_t shared_bytes = 0;
};

int shared_memory_optin() {
  static const int bytes = [] {
    int value = 0;
    if (cudaDeviceGetAttribute(&value, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) != cudaSuccess) {
      cudaGetLastError();
      value = 0;
    }
    return value;
  }();
  return bytes;
}

// Whether `blocks` blocks with `shared` dynamic bytes can be resident as one cluster (cached per configuration).
template <class Item, Pass kPass>
bool cluster_fits(int blocks, size_t shared) {
  static std::mutex mutex;
  static std::map<std::pair<int, size_t>, bool> fits;
  static bool attributes_set = false;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(blocks, shared);
  if (auto found = fits.find(key); found != fits.end()) return found->second;
  auto kernel = weightnorm_cluster_rows_kernel<Item, kPass>;
  bool ok = true;
  if (!attributes_set) {
    cudaFuncAttributes attributes{};
    ok = cudaFuncGetAttributes(&attributes, kernel) == cudaSuccess &&
         cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              shared_memory_optin() - static_cast<int>(attributes.sharedSizeBytes)) == cudaSuccess &&
         cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
    attributes_set = ok;
  }
  int clusters = 0;
  if (ok) {
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(static_cast<unsigned>(blocks));
    config.blockDim = dim3(kClusterThreads);
    config.dynamicSmemBytes = shared;
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeClusterDimension;
    attribute[0].val.clusterDim.x = static_cast<unsigned>(blocks);
    attribute[0].val.clusterDim.y = 1;
    attribute[0].val.clusterDim.z = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
    ok = cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) == cudaSuccess;
  }
  if (!ok) cudaGetLastError();  // a configuration the device refuses means the split route, not an error
  fits[key] = ok && clusters > 0;
  return fits[key];
}

// The smallest cluster whose blocks hold kClusterSliceBytes of the row each, capped at kMaxClusterBlocks; the
// route is off before sm_90 and where a slice's shared part exceeds the opt-in limit or no cluster can be resident.
template <class Item, Pass kPass>
ClusterPlan plan_cluster_rows(int64_t row_length) {
  const DeviceStatus& device = device_status();
  if (!device.usable || device.compute_major < 9) return {};
  constexpr int64_t kInputs = kPass == Pass::kBackward ? 2 : 1;
  const int64_t items = row_length / kCountOf<Item>;
  const int64_t row_bytes = items * int64_t{sizeof(Item)} * kInputs;
  const int blocks = static_cast<int>(std::clamp<int64_t>(ceil_div(row_bytes, kClusterSliceBytes), 1, kMaxClusterBlocks));
  const int64_t slice_items = ceil_div(items, blocks);
  const int64_t shared_items = std::max<int64_t>(0, slice_items - int64_t{cluster_register_items(kPass)} * kClusterThreads);
  const int64_t shared_bytes = shared_items * int64_t{sizeof(Item)} * kInputs;
  if (shared_bytes > shared_memory_optin() - 1024) return {};  // leaves room for the kernel's static arrays
  if (!cluster_fits<Item, kPass>(blocks, static_cast<size_t>(shared_bytes))) return {};
  return {blocks, static_cast<int>(slice_items), static_cast<size_t>(shared_bytes)};
}

// Up to twice the rows kernel's registers, its re-read of the rest (from L2, just read) costs less than a 512-thread
// block with only a few items per thread in flight.
template <class Elem>
bool cluster_rows_wanted(const ChannelLayout& layout) {
  return layout.outer == 1 && layout.inner > 2 * rows_register_capacity<Elem>();
}

template <class Item, Pass kPass>
bool try_cluster_rows(const ClusterRowsArgs<ElemOf<Item>>& base, int64_t rows) {
  const ClusterPlan plan = plan_cluster_rows<Item, kPass>(base.row_length);
  if (plan.blocks_per_row == 0) return false;
  ClusterRowsArgs<ElemOf<Item>> args = base;
  args.slice_items = plan.slice_items;
  args.blocks_per_row = plan.blocks_per_row;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(rows * plan.blocks_per_row));
  config.blockDim = dim3(kClusterThreads);
  config.dynamicSmemBytes = plan.shared_bytes;
  config.stream = library_stream();
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = static_cast<unsigned>(plan.blocks_per_row);
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  WN_CUDA_CHECK(cudaLaunchKernelEx(&config, weightnorm_cluster_rows_kernel<Item, kPass>, args));
  return true;
}

// Launches the cluster route when it fits; false: the caller takes another route.
template <class Elem, Pass kPass>
bool launch_cluster_rows(Elem* out, float* per_channel_out, const Elem* a, const Elem* b, const float* g,
                         const float* norm, const ChannelLayout& layout, float eps) {
  if (!cluster_rows_wanted<Elem>(layout)) return false;
  if (layout.channels * kMaxClusterBlocks > int64_t{0x7fffffff}) return false;
  const ClusterRowsArgs<Elem> args{out, per_channel_out, a, b, g, norm, layout.inner, 0, 0, eps};
  if (rows_vectorized<Elem>(layout.inner, out, a, b))
    return try_cluster_rows<typename WideOf<Elem>::type, kPass>(args, layout.channels);
  return try_cluster_rows<Elem, kPass>(args, layout.channels);
}

// --- split

struct PartialShape {
  int64_t splits, per_split;
};

int64_t row_chunks(const ChannelLayout& layout) { return ceil_div(layout.inner, kRowChunk); }

bool too_few_long_rows(const ChannelLayout& layout) {
  return layout.outer == 1 && layout.channels < multiprocessors() && layout.inner >= kSplitMinRow;
}

template <class Item>
ColumnView column_view(const ChannelLayout& layout) {
  constexpr int64_t kCount = kCountOf<Item>;
  ColumnView view;
  view.channels = layout.channels;
  view.inner = layout.inner;
  const int64_t row = layout.channels * layout.inner;
  const int64_t base = std::lcm(row, kCount);  // the shortest run of whole rows that is whole items
  // Narrow rows: as many runs side by side as fill a block's columns, so no thread idles on a short row.
  const int64_t width = base / kCount <= kBlock / 2 ? base * (kBlock / (base / kCount)) : base;
  view.width_items = width / kCount;
  view.repeat = width / row;
  view.total_items = layout.elements() / kCount;
  view.rows = ceil_div(view.total_items, view.width_items);
  view.tiles = ceil_div(view.width_items, kBlock);
  const int64_t wanted = ceil_div(int64_t{kViewBlocksPerSm} * multiprocessors(), view.tiles);
  const int64_t splits = std::clamp<int64_t>(wanted, 1, std::min<int64_t>(ceil_div(view.rows, kViewMinRowsPerSplit), kMaxGridY));
  view.rows_per_split = ceil_div(view.rows, splits);
  view.splits = ceil_div(view.rows, view.rows_per_split);
  view.fold = view.tiles == 1;
  return view;
}

int64_t view_partial_floats(const ColumnView& view, int64_t count) {
  return view.fold ? view.splits * view.channels : view.splits * view.width_items * count;
}

// Whether the column view can use 16-byte items: whole items and 16-byte aligned tensors.
template <class Elem>
bool view_vectorized(const ChannelLayout& layout, const void* out, const void* a, const void* b) {
  return layout.elements() % kCountOf<typename WideOf<Elem>::type> == 0 && aligned16(a) && aligned16(b) &&
         (out == nullptr || aligned16(out));
}

template <class Item>
PartialShape launch_view_partial(float* partial, const ElemOf<Item>* a, const ElemOf<Item>* b, const ColumnView& view) {
  const dim3 grid(static_cast<unsigned>(view.tiles), static_cast<unsigned>(view.splits));
  if (a == b) channel_view_partial_kernel<Item, true><<<grid, kBlock, 0, library_stream()>>>(partial, a, b, view);
  else channel_view_partial_kernel<Item, false><<<grid, kBlock, 0, library_stream()>>>(partial, a, b, view);
  WN_CUDA_CHECK_LAUNCH();
  if (view.fold) return {view.splits, 1};
  return {view.splits * view.repeat, view.inner};
}

template <class Item>
PartialShape launch_row_partial(float* partial, const ElemOf<Item>* a, const ElemOf<Item>* b, const ChannelLayout& layout) {
  const int64_t chunks = row_chunks(layout);
  if (chunks > kMaxGridY) throw std::runtime_error("cuda weight norm: a channel longer than 2^29 elements is not supported");
  const dim3 grid(static_cast<unsigned>(layout.channels), static_cast<unsigned>(chunks));
  if (a == b) channel_row_partial_kernel<Item, true><<<grid, kBlock, 0, library_stream()>>>(partial, a, b, layout.inner);
  else channel_row_partial_kernel<Item, false><<<grid, kBlock, 0, library_stream()>>>(partial, a, b, layout.inner);
  WN_CUDA_CHECK_LAUNCH();
  return {1, chunks};
}

template <Finish kFinish>
void launch_finalize(FinalizeArgs args, const PartialShape& shape) {
  args.splits = shape.splits;
  args.per_split = shape.per_split;
  if (shape.splits * shape.per_split > kFinalizeBlockTerms) {
    weightnorm_finalize_kernel<kFinish, kBlock><<<static_cast<unsigned>(args.channels), kBlock, 0, library_stream()>>>(args);
  } else {
    const unsigned blocks = static_cast<unsigned>(ceil_div(args.channels * kWarp, kBlock));
    weightnorm_finalize_kernel<kFinish, kWarp><<<blocks, kBlock, 0, library_stream()>>>(args);
  }
  WN_CUDA_CHECK_LAUNCH();
}

template <class Item, Pass kPass, bool kReverse>
void launch_flat_apply_typed(ElemOf<Item>* out, const ElemOf<Item>* a, const ElemOf<Item>* b, const float* c1,
                             const float* c2, const ChannelLayout& layout) {
  const int64_t count = layout.elements();
  const unsigned blocks = elementwise_blocks(count / kCountOf<Item>);
  cudaStream_t stream = library_stream();
  if (count < (int64_t{1} << 31))
    channel_apply_kernel<Item, uint32_t, kPass, kReverse><<<blocks, kBlock, 0, stream>>>(
        out, a, b, c1, c2, uint32_t(count), uint32_t(layout.channels), uint32_t(layout.inner));
  else
    channel_apply_kernel<Item, uint64_t, kPass, kReverse><<<blocks, kBlock, 0, stream>>>(
        out, a, b, c1, c2, uint64_t(count), uint64_t(layout.channels), uint64_t(layout.inner));
  WN_CUDA_CHECK_LAUNCH();
}

template <class Elem, Pass kPass, bool kReverse>
void launch_flat_apply(Elem* out, const Elem* a, const Elem* b, const float* c1, const float* c2,
                       const ChannelLayout& layout) {
  using Wide = typename WideOf<Elem>::type;
  const bool vectorized = layout.inner % kCountOf<Wide> == 0 && aligned16(out) && aligned16(a) && (!b || aligned16(b));
  if (vectorized) return launch_flat_apply_typed<Wide, kPass, kReverse>(out, a, b, c1, c2, layout);
  launch_flat_apply_typed<Elem, kPass, kReverse>(out, a, b, c1, c2, layout);
}

// Partial sums, finalize and apply for outer > 1 over the column view with items of type Item.
template <class Item, Pass kPass>
void run_view_split(ElemOf<Item>* out, float* per_channel_out, const ElemOf<Item>* a, const ElemOf<Item>* b,
                    const float* g, const float* norm, const ChannelLayout& layout, float eps) {
  const ColumnView view = column_view<Item>(layout);
  Scratch partial(view_partial_floats(view, kCountOf<Item>) * sizeof(float));
  Scratch coefficients(2 * layout.channels * sizeof(float));
  float* c1 = coefficients.floats();
  float* c2 = c1 + layout.channels;
  const PartialShape shape = launch_view_partial<Item>(partial.floats(), a, kPass == Pass::kForward ? a : b, view);
  constexpr Finish kFinish = kPass == Pass::kForward ? Finish::kForward : Finish::kBackward;
  launch_finalize<kFinish>({per_channel_out, c1, c2, partial.floats(), g, norm, layout.channels, 0, 0, eps}, shape);
  const dim3 grid(static_cast<unsigned>(view.tiles), static_cast<unsigned>(view.splits));
  weightnorm_view_apply_kernel<Item, kPass><<<grid, kBlock, 0, library_stream()>>>(out, a, b, c1, c2, view);
  WN_CUDA_CHECK_LAUNCH();
}

// Partial sums, finalize and apply for outer == 1 (rows too long for the other routes, dim null).
template <class Elem, Pass kPass>
void run_row_split(Elem* out, float* per_channel_out, const Elem* a, const Elem* b, const float* g, const float* norm,
                   const ChannelLayout& layout, float eps) {
  using Wide = typename WideOf<Elem>::type;
  Scratch partial(layout.channels * row_chunks(layout) * sizeof(float));
  Scratch coefficients(2 * layout.channels * sizeof(float));
  float* c1 = coefficients.floats();
  float* c2 = c1 + layout.channels;
  const Elem* second = kPass == Pass::kForward ? a : b;
  const PartialShape shape = layout.inner % kCountOf<Wide> == 0 && aligned16(a) && aligned16(second)
                                 ? launch_row_partial<Wide>(partial.floats(), a, second, layout)
                                 : launch_row_partial<Elem>(partial.floats(), a, second, layout);
  constexpr Finish kFinish = kPass == Pass::kForward ? Finish::kForward : Finish::kBackward;
  launch_finalize<kFinish>({per_channel_out, c1, c2, partial.floats(), g, norm, layout.channels, 0, 0, eps}, shape);
  launch_flat_apply<Elem, kPass, true>(out, a, kPass == Pass::kForward ? nullptr : b, c1, c2, layout);
}

enum class Route { kRows, kColumns, kSplit };

// The route the last fused call took (weightnorm_last_route()): tests check that the intended one runs.
const char* last_route = "none";

Route choose_route(const ChannelLayout& layout) {
  if (layout.outer == 1) return too_few_long_rows(layout) ? Route::kSplit : Route::kRows;
  if (layout.inner <= kColumnTile && layout.outer <= kShortColumns) return Route::kColumns;
  return Route::kSplit;
}

__global__ void fill_channels_kernel(float* out, float value, int64_t channels) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k < channels) out[k] = value;
}

template <class Elem, Pass kPass>
void run_fused(Elem* out, float* per_channel_out, const Elem* a, const Elem* b, const float* g, const float* norm,
               const ChannelLayout& layout, float eps) {
  using Wide = typename WideOf<Elem>::type;
  if (layout.channels == 0) return;
  if (layout.elements() == 0) {
    // Channels with nothing to reduce: the norm is the floor eps, and dg = <dw, v>/norm = 0 (as on the CPU).
    const unsigned blocks = static_cast<unsigned>(ceil_div(layout.channels, kBlock));
    fill_channels_kernel<<<blocks, kBlock, 0, library_stream()>>>(per_channel_out, kPass == Pass::kForward ? eps : 0.0f,
                                                                 layout.channels);
    WN_CUDA_CHECK_LAUNCH();
    return;
  }
  last_route = "cluster-rows";
  if (launch_cluster_rows<Elem, kPass>(out, per_channel_out, a, b, g, norm, layout, eps)) return;
  switch (choose_route(layout)) {
    case Route::kRows:
      last_route = "rows";
      launch_rows<Elem, kPass>({out, per_channel_out, a, b, g, norm, layout.channels, layout.inner, eps});
      return;
    case Route::kColumns: {
      last_route = "columns";
      const int channels_per_tile = kColumnTile / static_cast<int>(layout.inner);
      const ColumnsArgs<Elem> args{out, per_channel_out, a, b, g, norm, layout.outer, layout.channels, layout.inner,
                                   channels_per_tile, eps};
      const unsigned blocks = static_cast<unsigned>(ceil_div(layout.channels, channels_per_tile));
      weightnorm_columns_kernel<Elem, kPass><<<blocks, dim3(kColumnTile, kColumnRows), 0, library_stream()>>>(args);
      WN_CUDA_CHECK_LAUNCH();
      return;
    }
    case Route::kSplit:
      last_route = layout.outer == 1 ? "row-split" : "view-split";
      if (layout.outer == 1) return run_row_split<Elem, kPass>(out, per_channel_out, a, b, g, norm, layout, eps);
      if (view_vectorized<Elem>(layout, out, a, b))
        return run_view_split<Wide, kPass>(out, per_channel_out, a, b, g, norm, layout, eps);
      return run_view_split<Elem, kPass>(out, per_channel_out, a, b, g, norm, layout, eps);
  }
}

// Coefficients of the unfused passes, one thread per channel.
__global__ void weightnorm_forward_coefficients_kernel(float* norm, float* scale, const float* sum_of_squares,
                                                       const float* g, int64_t channels, float eps) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= channels) return;
  const Coefficients coef = forward_coefficients(sum_of_squares[k], g[k], eps);
  norm[k] = coef.per_channel;
  scale[k] = coef.c1;
}

__global__ void weightnorm_backward_coefficients_kernel(float* dg, float* c1, float* c2, const float* dots,
                                                        const float* g, const float* norm, int64_t channels,
                                                        float eps) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= channels) return;
  const Coefficients coef = backward_coefficients(dots[k], g[k], norm[k], eps);
  dg[k] = coef.per_channel;
  c1[k] = coef.c1;
  c2[k] = coef.c2;
}

__global__ void weightnorm_scale_kernel(float* scale, const float* g, const float* norm, int64_t channels) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k < channels) scale[k] = g_over_norm(g[k], norm[k]);
}

unsigned channel_blocks(int64_t channels) { return static_cast<unsigned>(ceil_div(std::max<int64_t>(channels, 1), kBlock)); }

}  // namespace

void weightnorm_forward(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                        float eps) {
  run_fused<float, Pass::kForward>(w, norm, v, v, g, nullptr, layout, eps);
}

void weightnorm_backward(float* dv, float* dg, const float* dw, const float* v, const float* g, const float* norm,
                         const ChannelLayout& layout, float eps) {
  run_fused<float, Pass::kBackward>(dv, dg, dw, v, g, norm, layout, eps);
}

void weightnorm_forward(bfloat16* w, float* norm, const bfloat16* v, const float* g, const ChannelLayout& layout,
                        float eps) {
  run_fused<bfloat16, Pass::kForward>(w, norm, v, v, g, nullptr, layout, eps);
}

void weightnorm_backward(bfloat16* dv, float* dg, const bfloat16* dw, const bfloat16* v, const float* g,
                         const float* norm, const ChannelLayout& layout, float eps) {
  run_fused<bfloat16, Pass::kBackward>(dv, dg, dw, v, g, norm, layout, eps);
}

void weightnorm_scale(float* scale, const float* g, const float* norm, int64_t channels) {
  if (channels == 0) return;
  weightnorm_scale_kernel<<<channel_blocks(channels), kBlock, 0, library_stream()>>>(scale, g, norm, channels);
  WN_CUDA_CHECK_LAUNCH();
}

void weightnorm_backward_coefficients(float* dg, float* c1, float* c2, const float* dot, const float* g,
                                      const float* norm, int64_t channels, float eps) {
  if (channels == 0) return;
  weightnorm_backward_coefficients_kernel<<<channel_blocks(channels), kBlock, 0, library_stream()>>>(
      dg, c1, c2, dot, g, norm, channels, eps);
  WN_CUDA_CHECK_LAUNCH();
}

// On CUDA the prologue is composed of the separate launches (each already one pass on the device); the per-call
// costs its fusion saves on the CPU are host-side costs here.
void weightnorm_linear_backward_prologue(float* dg, float* c1, float* c2, float* scaled_dy, float* dbias,
                                         const float* dy, const float* t, const float* g, const float* norm,
                                         int64_t batch, int64_t out_features, float eps) {
  if (out_features == 0) return;
  const ChannelLayout per_output{batch, out_features, 1};
  Scratch vectors(2 * out_features * sizeof(float));
  float* dot = vectors.floats();
  float* scale = dot + out_features;
  channel_dot(dot, dy, t, per_output);
  weightnorm_backward_coefficients(dg, c1, c2, dot, g, norm, out_features, eps);
  if (scaled_dy) {
    weightnorm_scale(scale, g, norm, out_features);
    channel_scale(scaled_dy, dy, scale, per_output);
  }
  if (dbias) channel_sum(dbias, dy, per_output);
}

void channel_dot(float* out, const float* a, const float* b, const ChannelLayout& layout) {
  if (layout.channels == 0) return;
  if (layout.elements() == 0) return fill_zero(out, layout.channels * sizeof(float));
  if (layout.outer == 1 && !too_few_long_rows(layout)) {
    // Rows that each fit a group of threads: one pass, no partials.
    return launch_rows<float, Pass::kDot>({nullptr, out, a, b, nullptr, nullptr, layout.channels, layout.inner, 0.0f});
  }
  PartialShape shape;
  if (layout.outer == 1) {
    Scratch partial(layout.channels * row_chunks(layout) * sizeof(float));
    shape = layout.inner % 4 == 0 && aligned16(a) && aligned16(b) ? launch_row_partial<float4>(partial.floats(), a, b, layout)
                                                                  : launch_row_partial<float>(partial.floats(), a, b, layout);
    launch_finalize<Finish::kSum>({out, nullptr, nullptr, partial.floats(), nullptr, nullptr, layout.channels, 0, 0, 0.0f}, shape);
    return;
  }
  const bool vectorized = view_vectorized<float>(layout, nullptr, a, b);
  const ColumnView view = vectorized ? column_view<float4>(layout) : column_view<float>(layout);
  Scratch partial(view_partial_floats(view, vectorized ? 4 : 1) * sizeof(float));
  shape = vectorized ? launch_view_partial<float4>(partial.floats(), a, b, view)
                     : launch_view_partial<float>(partial.floats(), a, b, view);
  launch_finalize<Finish::kSum>({out, nullptr, nullptr, partial.floats(), nullptr, nullptr, layout.channels, 0, 0, 0.0f}, shape);
}

void channel_scale(float* out, const float* x, const float* scale, const ChannelLayout& layout) {
  if (layout.elements() == 0) return;
  launch_flat_apply<float, Pass::kForward, false>(out, x, nullptr, scale, nullptr, layout);
}

void subtract(float* out, const float* a, const float* b, int64_t count) {
  if (count == 0) return;
  const bool vectorized = count % 4 == 0 && aligned16(out) && aligned16(a) && aligned16(b);
  const int64_t items = vectorized ? count / 4 : count;
  if (vectorized) subtract_kernel<float4><<<elementwise_blocks(items), kBlock, 0, library_stream()>>>(out, a, b, items);
  else subtract_kernel<float><<<elementwise_blocks(items), kBlock, 0, library_stream()>>>(out, a, b, items);
  WN_CUDA_CHECK_LAUNCH();
}

void weightnorm_forward_unfused(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                                float eps) {
  if (layout.channels == 0) return;
  Scratch vectors(2 * layout.channels * sizeof(float));
  float* sum_of_squares = vectors.floats();
  float* scale = sum_of_squares + layout.channels;
  channel_dot(sum_of_squares, v, v, layout);
  weightnorm_forward_coefficients_kernel<<<channel_blocks(layout.channels), kBlock, 0, library_stream()>>>(
      norm, scale, sum_of_squares, g, layout.channels, eps);
  WN_CUDA_CHECK_LAUNCH();
  channel_scale(w, v, scale, layout);
}

void weightnorm_backward_unfused(float* dv, float* dg, const float* dw, const float* v, const float* g,
                                 const float* norm, const ChannelLayout& layout, float eps) {
  if (layout.channels == 0) return;
  const int64_t count = layout.elements();
  Scratch vectors(3 * layout.channels * sizeof(float));
  float* dots = vectors.floats();
  float* c1 = dots + layout.channels;
  float* c2 = c1 + layout.channels;
  channel_dot(dots, dw, v, layout);
  weightnorm_backward_coefficients(dg, c1, c2, dots, g, norm, layout.channels, eps);
  Scratch scaled_dw(count * sizeof(float)), scaled_v(count * sizeof(float));
  channel_scale(scaled_dw.floats(), dw, c1, layout);
  channel_scale(scaled_v.floats(), v, c2, layout);
  subtract(dv, scaled_dw.floats(), scaled_v.floats(), count);
}

const char* weightnorm_last_route() { return last_route; }

}  // namespace weightnorm::cuda
