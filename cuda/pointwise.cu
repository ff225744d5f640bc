// CUDA pointwise kernels (see pointwise.cuh), the same maths as cpu/pointwise.cc (weightnorm/pointwise.h):
//   cast_kernel               any element type to any other
//   broadcast_binary_kernel   out[i] = f(a[offset_a(i)], b[offset_b(i)]): arithmetic, comparisons, logical and/or
//   binary_backward_kernel    the elementwise gradient of a binary op for one operand (dy, a, b through the layout)
//   where_kernel              out[i] = cond ? a : b over three broadcast operands
//   sum_to_kernel             one block per output element: the sum over the broadcast dimensions, in a fixed order
//                             (per-thread double sums, then a shared-memory tree), so results repeat run to run
//   unary_kernel, unary_backward_kernel   contiguous maps
// One strided kernel per op class, not one per shape: each thread turns its output index into operand offsets with
// the layout's shape and strides; equal shapes arrive as rank 1 with unit strides (plain indexing, coalesced).
// Grid-stride loops with 64-bit indices; every launch is checked.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "check.cuh"
#include "launch.cuh"
#include "pointwise.cuh"
#include "runtime.cuh"

namespace weightnorm::cuda {
namespace {

constexpr int kBlock = 256;


__device__ __forceinline__ int64_t first_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

__device__ __forceinline__ int64_t operand_offset(const BroadcastLayout& layout, int operand, int64_t i) {
  return layout.rank == 1 ? i * layout.strides[operand][0] : pointwise::broadcast_offset(layout, operand, i);
}

// The op functors: the op code is a kernel argument, the same for every thread (no divergence).
template <class T>
struct ArithmeticOp {
  BinaryOp op;
  T alpha;
  __device__ T operator()(T a, T b) const { return pointwise::arithmetic<T>(op, a, b, alpha); }
};

struct WrappingOp {
  BinaryOp op;
  int32_t alpha;
  __device__ int32_t operator()(int32_t a, int32_t b) const { return pointwise::wrapping(op, a, b, alpha); }
};

template <class T>
struct CompareOp {
  BinaryOp op;
  __device__ uint8_t operator()(T a, T b) const { return pointwise::compare<T>(op, a, b); }
};

__global__ void __launch_bounds__(kBlock) cast_kernel(void* out, DType out_type, const void* x, DType x_type, int64_t count) {
  for (int64_t i = first_index(); i < count; i += grid_stride())
    pointwise::store_from_double(out, out_type, i, pointwise::load_as_double(x, x_type, i));
}

template <class Out, class In, class F>
__global__ void __launch_bounds__(kBlock) broadcast_binary_kernel(Out* out, const In* a, const In* b, BroadcastLayout layout, F f) {
  for (int64_t i = first_index(); i < layout.count; i += grid_stride())
    out[i] = f(a[operand_offset(layout, 0, i)], b[operand_offset(layout, 1, i)]);
}

__global__ void __launch_bounds__(kBlock) binary_backward_kernel(float* out, const float* dy, const float* a, const float* b,
                                                                 BinaryOp op, int operand, float alpha, BroadcastLayout layout) {
  for (int64_t i = first_index(); i < layout.count; i += grid_stride()) {
    out[i] = pointwise::binary_gradient(op, operand, dy[operand_offset(layout, 0, i)], a[operand_offset(layout, 1, i)],
                                        b[operand_offset(layout, 2, i)], alpha);
  }
}

template <class T>
__global__ void __launch_bounds__(kBlock) where_kernel(T* out, const uint8_t* cond, const T* a, const T* b, BroadcastLayout layout) {
  for (int64_t i = first_index(); i < layout.count; i += grid_stride())
    out[i] = cond[operand_offset(layout, 0, i)] ? a[operand_offset(layout, 1, i)] : b[operand_offset(layout, 2, i)];
}

__global__ void __launch_bounds__(kBlock) sum_to_kernel(float* out, const float* x, SumToLayout layout) {
  __shared__ double partial[kBlock];
  for (int64_t k = blockIdx.x; k < layout.out_count; k += gridDim.x) {
    const int64_t base = pointwise::walk_offset(layout.kept_rank, layout.kept_shape, layout.kept_strides, k);
    double total = 0.0;
    for (int64_t r = threadIdx.x; r < layout.reduced_count; r += kBlock)
      total += x[base + pointwise::walk_offset(layout.reduced_rank, layout.reduced_shape, layout.reduced_strides, r)];
    partial[threadIdx.x] = total;
    __syncthreads();
    for (int half = kBlock / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) out[k] = static_cast<float>(partial[0]);
    __syncthreads();  // partial[0] is read before the next output's sums overwrite it
  }
}

template <class T>
__global__ void __launch_bounds__(kBlock) unary_kernel(T* y, const T* x, UnaryOp op, UnaryParams params, int64_t count) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) y[i] = pointwise::unary(op, x[i], params);
}

__global__ void __launch_bounds__(kBlock) logical_not_kernel(uint8_t* y, const uint8_t* x, int64_t count) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) y[i] = x[i] == 0;
}

__global__ void __launch_bounds__(kBlock) unary_backward_kernel(float* dx, const float* dy, const float* x, const float* y,
                                                                UnaryOp op, UnaryParams params, int64_t count) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) dx[i] = pointwise::unary_gradient(op, dy[i], x[i], y[i], params);
}

template <class Out, class In, class F>
void launch_binary(Out* out, const In* a, const In* b, const BroadcastLayout& layout, F f) {
  if (layout.count <= 0) return;
  broadcast_binary_kernel<<<grid_for(layout.count, kBlock), kBlock, 0, library_stream()>>>(out, a, b, layout, f);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void cast(void* out, DType out_type, const void* x, DType x_type, int64_t count) {
  if (count <= 0) return;
  cast_kernel<<<grid_for(count, kBlock), kBlock, 0, library_stream()>>>(out, out_type, x, x_type, count);
  WN_CUDA_CHECK_LAUNCH();
}

void binary(float* out, const float* a, const float* b, BinaryOp op, float alpha, const BroadcastLayout& layout) {
  launch_binary(out, a, b, layout, ArithmeticOp<float>{op, alpha});
}

void binary(int32_t* out, const int32_t* a, const int32_t* b, BinaryOp op, int32_t alpha, const BroadcastLayout& layout) {
  launch_binary(out, a, b, layout, WrappingOp{op, alpha});
}

void compare(uint8_t* out, const float* a, const float* b, BinaryOp op, const BroadcastLayout& layout) {
  launch_binary(out, a, b, layout, CompareOp<float>{op});
}

void compare(uint8_t* out, const int32_t* a, const int32_t* b, BinaryOp op, const BroadcastLayout& layout) {
  launch_binary(out, a, b, layout, CompareOp<int32_t>{op});
}

void compare(uint8_t* out, const uint8_t* a, const uint8_t* b, BinaryOp op, const BroadcastLayout& layout) {
  launch_binary(out, a, b, layout, CompareOp<uint8_t>{op});
}

void binary_backward(float* out, const float* dy, const float* a, const float* b, BinaryOp op, int operand,
                     float alpha, const BroadcastLayout& layout) {
  if (layout.count <= 0) return;
  binary_backward_kernel<<<grid_for(layout.count, kBlock), kBlock, 0, library_stream()>>>(out, dy, a, b, op, operand,
                                                                                          alpha, layout);
  WN_CUDA_CHECK_LAUNCH();
}

void where(uint32_t* out, const uint8_t* cond, const uint32_t* a, const uint32_t* b, const BroadcastLayout& layout) {
  if (layout.count <= 0) return;
  where_kernel<<<grid_for(layout.count, kBlock), kBlock, 0, library_stream()>>>(out, cond, a, b, layout);
  WN_CUDA_CHECK_LAUNCH();
}

void where(uint8_t* out, const uint8_t* cond, const uint8_t* a, const uint8_t* b, const BroadcastLayout& layout) {
  if (layout.count <= 0) return;
  where_kernel<<<grid_for(layout.count, kBlock), kBlock, 0, library_stream()>>>(out, cond, a, b, layout);
  WN_CUDA_CHECK_LAUNCH();
}

void sum_to(float* out, const float* x, const SumToLayout& layout) {
  if (layout.out_count <= 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(layout.out_count, 65535));
  sum_to_kernel<<<blocks, kBlock, 0, library_stream()>>>(out, x, layout);
  WN_CUDA_CHECK_LAUNCH();
}

void unary(float* y, const float* x, UnaryOp op, UnaryParams params, int64_t count) {
  if (count <= 0) return;
  unary_kernel<<<grid_for(count, kBlock), kBlock, 0, library_stream()>>>(y, x, op, params, count);
  WN_CUDA_CHECK_LAUNCH();
}

void unary(int32_t* y, const int32_t* x, UnaryOp op, UnaryParams params, int64_t count) {
  if (count <= 0) return;
  unary_kernel<<<grid_for(count, kBlock), kBlock, 0, library_stream()>>>(y, x, op, params, count);
  WN_CUDA_CHECK_LAUNCH();
}

void unary(uint8_t* y, const uint8_t* x, UnaryOp, UnaryParams, int64_t count) {
  if (count <= 0) return;  // only logical not reaches bool tensors
  logical_not_kernel<<<grid_for(count, kBlock), kBlock, 0, library_stream()>>>(y, x, count);
  WN_CUDA_CHECK_LAUNCH();
}

void unary_backward(float* dx, const float* dy, const float* x, const float* y, UnaryOp op, UnaryParams params,
                    int64_t count) {
  if (count <= 0) return;
  unary_backward_kernel<<<grid_for(count, kBlock), kBlock, 0, library_stream()>>>(dx, dy, x, y, op, params, count);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace weightnorm::cuda
