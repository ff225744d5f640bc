// CUDA axis reductions over the view [outer, reduce, inner] (weightnorm/reduce.h), softmax, and their backwards:
// the entry points cpu/reduce_axis.cc also defines, with the same math (double sums, float32 exp/log per element).
//
// One block-reduction kernel family: a block owns whole outputs and walks their r in a fixed order, so every pass
// (a max, a sum, the write of softmax) runs inside one kernel without partials or atomics, and results are
// bitwise identical run to run. Two block shapes:
//  rows     inner == 1: a block of 1 x 256 threads (1 x 32 for rows of at most 64) per output row (contiguous
//           along r); each thread takes r = y, y + blockDim.y, ...; the states combine by warp shuffles (a fixed
//           butterfly), then the warps' results in warp order.
// Not yet tuned: the columns shape leaves threads idle when inner < 32, and no shape splits one huge output (a
// full reduction of a large tensor runs on one block).
//  columns  inner > 1: a block of 32 x 8 threads for 32 consecutive outputs of one outer row (coalesced along i);
//           thread (x, y) takes r = y, y + 8, ...; the 8 states of a column combine in y order through shared
//           memory.
// Ties in max/min/argmax: states compare as (value, index), so the first index wins whatever the partition; a NaN
// beats every number (the first NaN's index), as on the CPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "check.cuh"
#include "reduce.cuh"
#include "runtime.cuh"

namespace weightnorm::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kColumns = 32;           // outputs per block in the columns shape
constexpr int kColumnRows = kThreads / kColumns;
constexpr int64_t kMaxBlocks = 65536;  // grid-stride beyond this

// An extremum and where it is; index < 0: no element yet (loses to every element).
struct Extremum {
  float value;
  int64_t index;
};

template <bool kLargest>
__device__ __forceinline__ Extremum better(Extremum a, Extremum b) {
  if (a.index < 0) return b;
  if (b.index < 0) return a;
  const bool a_nan = a.value != a.value, b_nan = b.value != b.value;
  if (a_nan || b_nan) {
    if (a_nan && b_nan) return a.index < b.index ? a : b;
    return a_nan ? a : b;
  }
  if (a.value != b.value) return (kLargest ? a.value > b.value : a.value < b.value) ? a : b;
  return a.index < b.index ? a : b;
}

__device__ __forceinline__ double shuffle_xor(double v, int offset) { return __shfl_xor_sync(0xffffffffu, v, offset); }
__device__ __forceinline__ Extremum shuffle_xor(Extremum v, int offset) {
  return {__shfl_xor_sync(0xffffffffu, v.value, offset),
          static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(v.index), offset))};
}

// Shared scratch for one combine: a state per thread, as raw storage (States have no trivial default here).
struct alignas(16) Slot {
  unsigned char bytes[16];
};
static_assert(sizeof(Extremum) <= sizeof(Slot) && sizeof(double) <= sizeof(Slot), "a state fits a slot");

// Combines the states of the threads that share an output (see the file comment); every thread of the block must
// call it (it synchronizes) and gets its output's combined state.
template <class State, class Combine>
__device__ State block_combine(State v, Combine combine, Slot* slots) {
  State* shared = reinterpret_cast<State*>(slots);
  const int x = threadIdx.x, y = threadIdx.y;
  if (blockDim.x == 1) {
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) v = combine(v, shuffle_xor(v, offset));
    const int warp = y / kWarp, warps = blockDim.y / kWarp;
    if (y % kWarp == 0) shared[warp] = v;
    __syncthreads();
    if (y == 0) {
      State total = shared[0];
      for (int w = 1; w < warps; ++w) total = combine(total, shared[w]);
      shared[kThreads] = total;  // past the per-warp entries: no thread still reads those
    }
    __syncthreads();
    const State result = shared[kThreads];
    __syncthreads();
    return result;
  }
  shared[y * kColumns + x] = v;
  __syncthreads();
  if (y == 0) {
    State total = shared[x];
    for (int row = 1; row < static_cast<int>(blockDim.y); ++row) total = combine(total, shared[row * kColumns + x]);
    shared[kThreads + x] = total;
  }
  __syncthreads();
  const State result = shared[kThreads + x];
  __syncthreads();
  return result;
}

constexpr int kSlots = kThreads + kColumns;

struct AddDouble {
  __device__ __forceinline__ double operator()(double a, double b) const { return a + b; }
};
template <bool kLargest>
struct PickExtremum {
  __device__ __forceinline__ Extremum operator()(Extremum a, Extremum b) const { return better<kLargest>(a, b); }
};

// The unit a block works on: output column i of outer row o (active: i < inner), and where element r lives.
struct Unit {
  int64_t o, i;
  bool active;
  __device__ __forceinline__ int64_t element(const AxisLayout& v, int64_t r) const { return (o * v.reduce + r) * v.inner + i; }
  __device__ __forceinline__ int64_t output(const AxisLayout& v) const { return o * v.inner + i; }
};

__device__ __forceinline__ int64_t units_of(const AxisLayout& v) {
  return v.inner == 1 ? v.outer : v.outer * ((v.inner + kColumns - 1) / kColumns);
}

__device__ __forceinline__ Unit unit_at(const AxisLayout& v, int64_t unit) {
  if (v.inner == 1) return {unit, 0, true};
  const int64_t blocks = (v.inner + kColumns - 1) / kColumns;
  const int64_t i = (unit % blocks) * kColumns + threadIdx.x;
  return {unit / blocks, i, i < v.inner};
}

// This thread's share of r, in order.
#define WN_FOR_MY_R(v, r) for (int64_t r = threadIdx.y; r < (v).reduce; r += blockDim.y)

template <bool kLargest>
__device__ Extremum extremum_of(const float* x, const AxisLayout& v, const Unit& u, Slot* slots) {
  Extremum e{0.0f, -1};
  if (u.active) WN_FOR_MY_R(v, r) e = better<kLargest>(e, Extremum{x[u.element(v, r)], r});
  return block_combine(e, PickExtremum<kLargest>{}, slots);
}

__device__ float max_of(const float* x, const AxisLayout& v, const Unit& u, Slot* slots) {
  return extremum_of<true>(x, v, u, slots).value;
}

// sum over r of exp(x - m), in double.
__device__ double exp_sum_of(const float* x, float m, const AxisLayout& v, const Unit& u, Slot* slots) {
  double s = 0.0;
  if (u.active) WN_FOR_MY_R(v, r) s += expf(x[u.element(v, r)] - m);
  return block_combine(s, AddDouble{}, slots);
}

__device__ double mean_of(const float* x, const AxisLayout& v, const Unit& u, Slot* slots) {
  double s = 0.0;
  if (u.active) WN_FOR_MY_R(v, r) s += x[u.element(v, r)];
  return block_combine(s, AddDouble{}, slots) / static_cast<double>(v.reduce);
}

// The kernels: one grid-stride loop over units; the loop bound is the same for every thread of a block, so all
// reach each __syncthreads.
#define WN_FOR_EACH_UNIT(v, u) \
  for (int64_t unit_index = blockIdx.x; unit_index < units_of(v); unit_index += gridDim.x) \
    if (const Unit u = unit_at(v, unit_index); true)

__global__ void __launch_bounds__(kThreads)
    axis_reduce_kernel(float* out, const float* x, AxisLayout v, AxisReduceOp op, double correction) {
  __shared__ Slot slots[kSlots];
  WN_FOR_EACH_UNIT(v, u) {
    float result = 0.0f;
    if (op == AxisReduceOp::kSum || op == AxisReduceOp::kMean) {
      double s = 0.0;
      if (u.active) WN_FOR_MY_R(v, r) s += x[u.element(v, r)];
      s = block_combine(s, AddDouble{}, slots);
      result = static_cast<float>(op == AxisReduceOp::kMean ? s / static_cast<double>(v.reduce) : s);
    } else if (op == AxisReduceOp::kMax) {
      result = extremum_of<true>(x, v, u, slots).value;
    } else if (op == AxisReduceOp::kMin) {
      result = extremum_of<false>(x, v, u, slots).value;
    } else if (op == AxisReduceOp::kLogSumExp) {
      const float m = max_of(x, v, u, slots);
      const bool finite = isfinite(m);
      const float shift = finite ? m : 0.0f;
      const double s = exp_sum_of(x, shift, v, u, slots);
      result = finite ? static_cast<float>(shift + log(s)) : m;
    } else {  // kVar, kStd
      const double mean = mean_of(x, v, u, slots);
      double s = 0.0;
      if (u.active) {
        WN_FOR_MY_R(v, r) {
          const double d = x[u.element(v, r)] - mean;
          s += d * d;
        }
      }
      s = block_combine(s, AddDouble{}, slots);
      const double var = s / fmax(static_cast<double>(v.reduce) - correction, 0.0);
      result = static_cast<float>(op == AxisReduceOp::kStd ? sqrt(var) : var);
    }
    if (u.active && threadIdx.y == 0) out[u.output(v)] = result;
  }
}

template <bool kLargest>
__global__ void __launch_bounds__(kThreads) axis_arg_reduce_kernel(float* values, int32_t* indices, const float* x, AxisLayout v) {
  __shared__ Slot slots[kSlots];
  WN_FOR_EACH_UNIT(v, u) {
    const Extremum e = extremum_of<kLargest>(x, v, u, slots);
    if (u.active && threadIdx.y == 0) {
      values[u.output(v)] = e.value;
      indices[u.output(v)] = static_cast<int32_t>(e.index);
    }
  }
}

__global__ void __launch_bounds__(kThreads) softmax_forward_kernel(float* y, const float* x, AxisLayout v, bool take_log) {
  __shared__ Slot slots[kSlots];
  WN_FOR_EACH_UNIT(v, u) {
    const float m = max_of(x, v, u, slots);
    const double s = exp_sum_of(x, m, v, u, slots);
    const float log_sum = static_cast<float>(log(s));
    const float inverse = static_cast<float>(1.0 / s);
    if (u.active) {
      WN_FOR_MY_R(v, r) {
        const int64_t e = u.element(v, r);
        y[e] = take_log ? (x[e] - m) - log_sum : expf(x[e] - m) * inverse;
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    softmax_backward_kernel(float* dx, const float* dy, const float* y, AxisLayout v, bool take_log) {
  __shared__ Slot slots[kSlots];
  WN_FOR_EACH_UNIT(v, u) {
    double s = 0.0;
    if (u.active) {
      WN_FOR_MY_R(v, r) {
        const int64_t e = u.element(v, r);
        s += take_log ? static_cast<double>(dy[e]) : static_cast<double>(dy[e]) * y[e];
      }
    }
    const float total = static_cast<float>(block_combine(s, AddDouble{}, slots));
    if (u.active) {
      WN_FOR_MY_R(v, r) {
        const int64_t e = u.element(v, r);
        dx[e] = take_log ? dy[e] - expf(y[e]) * total : y[e] * (dy[e] - total);
      }
    }
  }
}

__global__ void axis_broadcast_kernel(float* dx, const float* dy, AxisLayout v, float alpha) {
  const int64_t count = v.outer * v.reduce * v.inner;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e % v.inner, o = e / (v.reduce * v.inner);
    dx[e] = alpha * dy[o * v.inner + i];
  }
}

__global__ void __launch_bounds__(kThreads)
    axis_extremum_backward_kernel(float* dx, const float* dy, const float* x, const float* y, AxisLayout v) {
  __shared__ Slot slots[kSlots];
  WN_FOR_EACH_UNIT(v, u) {
    const float extreme = u.active ? y[u.output(v)] : 0.0f;
    double count = 0.0;
    if (u.active) WN_FOR_MY_R(v, r) count += x[u.element(v, r)] == extreme ? 1.0 : 0.0;
    count = block_combine(count, AddDouble{}, slots);
    if (u.active) {
      const float share = dy[u.output(v)] / static_cast<float>(count);
      WN_FOR_MY_R(v, r) {
        const int64_t e = u.element(v, r);
        dx[e] = x[e] == extreme ? share : 0.0f;
      }
    }
  }
}

template <bool kLargest>
__global__ void __launch_bounds__(kThreads) axis_arg_backward_kernel(float* dx, const float* dy, const float* x, AxisLayout v) {
  __shared__ Slot slots[kSlots];
  WN_FOR_EACH_UNIT(v, u) {
    const Extremum e = extremum_of<kLargest>(x, v, u, slots);
    if (u.active) {
      const float g = dy[u.output(v)];
      WN_FOR_MY_R(v, r) dx[u.element(v, r)] = r == e.index ? g : 0.0f;
    }
  }
}

__global__ void __launch_bounds__(kThreads) axis_logsumexp_backward_kernel(float* dx, const float* dy, const float* x, AxisLayout v) {
  __shared__ Slot slots[kSlots];
  WN_FOR_EACH_UNIT(v, u) {
    const float m = max_of(x, v, u, slots);
    const double s = exp_sum_of(x, m, v, u, slots);
    if (u.active) {
      const float scale = static_cast<float>(dy[u.output(v)] / s);
      WN_FOR_MY_R(v, r) {
        const int64_t e = u.element(v, r);
        dx[e] = expf(x[e] - m) * scale;
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    axis_var_backward_kernel(float* dx, const float* dy, const float* x, const float* standard_deviation, AxisLayout v,
                             double correction) {
  __shared__ Slot slots[kSlots];
  const double dof = fmax(static_cast<double>(v.reduce) - correction, 0.0);
  WN_FOR_EACH_UNIT(v, u) {
    const double mean = mean_of(x, v, u, slots);
    if (u.active) {
      const int64_t k = u.output(v);
      const double g = standard_deviation ? dy[k] / (2.0 * standard_deviation[k]) : dy[k];
      const double factor = 2.0 * g / dof;
      WN_FOR_MY_R(v, r) {
        const int64_t e = u.element(v, r);
        dx[e] = static_cast<float>(factor * (x[e] - mean));
      }
    }
  }
}

// Launch shapes.
// Rows of at most 64 elements (softmax over a few classes) take one warp per row: 256 threads would mostly idle.
dim3 block_of(const AxisLayout& v) {
  if (v.inner > 1) return dim3(kColumns, kColumnRows);
  return dim3(1, v.reduce <= 2 * kWarp ? kWarp : kThreads);
}
unsigned grid_of(const AxisLayout& v) {
  const int64_t units = v.inner == 1 ? v.outer : v.outer * ((v.inner + kColumns - 1) / kColumns);
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(units, 1), kMaxBlocks));
}
unsigned elementwise_grid(int64_t count) {
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>((count + kThreads - 1) / kThreads, 1), kMaxBlocks));
}

}  // namespace

void axis_reduce(float* out, const float* x, const AxisLayout& l, AxisReduceOp op, double correction) {
  if (l.outputs() == 0) return;
  axis_reduce_kernel<<<grid_of(l), block_of(l), 0, library_stream()>>>(out, x, l, op, correction);
  WN_CUDA_CHECK_LAUNCH();
}

void axis_arg_reduce(float* values, int32_t* indices, const float* x, const AxisLayout& l, bool largest) {
  if (l.outputs() == 0 || l.reduce == 0) return;
  if (largest) axis_arg_reduce_kernel<true><<<grid_of(l), block_of(l), 0, library_stream()>>>(values, indices, x, l);
  else axis_arg_reduce_kernel<false><<<grid_of(l), block_of(l), 0, library_stream()>>>(values, indices, x, l);
  WN_CUDA_CHECK_LAUNCH();
}

void softmax_forward(float* y, const float* x, const AxisLayout& l, bool log) {
  if (l.elements() == 0) return;
  softmax_forward_kernel<<<grid_of(l), block_of(l), 0, library_stream()>>>(y, x, l, log);
  WN_CUDA_CHECK_LAUNCH();
}

void softmax_backward(float* dx, const float* dy, const float* y, const AxisLayout& l, bool log) {
  if (l.elements() == 0) return;
  softmax_backward_kernel<<<grid_of(l), block_of(l), 0, library_stream()>>>(dx, dy, y, l, log);
  WN_CUDA_CHECK_LAUNCH();
}

void axis_broadcast(float* dx, const float* dy, const AxisLayout& l, float alpha) {
  if (l.elements() == 0) return;
  axis_broadcast_kernel<<<elementwise_grid(l.elements()), kThreads, 0, library_stream()>>>(dx, dy, l, alpha);
  WN_CUDA_CHECK_LAUNCH();
}

void axis_extremum_backward(float* dx, const float* dy, const float* x, const float* y, const AxisLayout& l) {
  if (l.elements() == 0) return;
  axis_extremum_backward_kernel<<<grid_of(l), block_of(l), 0, library_stream()>>>(dx, dy, x, y, l);
  WN_CUDA_CHECK_LAUNCH();
}

void axis_arg_backward(float* dx, const float* dy, const float* x, const AxisLayout& l, bool largest) {
  if (l.elements() == 0) return;
  if (largest) axis_arg_backward_kernel<true><<<grid_of(l), block_of(l), 0, library_stream()>>>(dx, dy, x, l);
  else axis_arg_backward_kernel<false><<<grid_of(l), block_of(l), 0, library_stream()>>>(dx, dy, x, l);
  WN_CUDA_CHECK_LAUNCH();
}

void axis_logsumexp_backward(float* dx, const float* dy, const float* x, const AxisLayout& l) {
  if (l.elements() == 0) return;
  axis_logsumexp_backward_kernel<<<grid_of(l), block_of(l), 0, library_stream()>>>(dx, dy, x, l);
  WN_CUDA_CHECK_LAUNCH();
}

void axis_var_backward(float* dx, const float* dy, const float* x, const float* standard_deviation,
                       const AxisLayout& l, double correction) {
  if (l.elements() == 0) return;
  axis_var_backward_kernel<<<grid_of(l), block_of(l), 0, library_stream()>>>(dx, dy, x, standard_deviation, l,
                                                                            correction);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace weightnorm::cuda
