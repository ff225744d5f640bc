// Recurrent layers (CUDA), the same computation as cpu/rnn.cc: one call per layer runs all T steps. The input
// projection of every step is one GEMM; each step is one recurrent GEMM (cuda::gemm, the bias in its epilogue) and
// ONE fused pointwise kernel over the gates (lstm_step_forward_kernel / gru_step_forward_kernel). The backward runs
// one fused pointwise kernel and one GEMM per step, then dx and the weight gradients as one GEMM each over all
// steps, and the bias gradients as column sums in a fixed order (no atomics: the same result run to run). That
// orchestration is weightnorm/ops/rnn_time_loop.inc, shared with cpu/rnn.cc; this file supplies its primitives as
// kernel launches on the library stream.
// Every kernel is a grid-stride loop over its elements: each element is read and written by one thread only.
// A weight-normalized matrix runs as v with its row scale s = g/‖v‖ (RnnWeights): in the GEMM epilogue forward, on
// the gate gradients backward.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "check.cuh"
#include "gemm.cuh"
#include "rnn.cuh"
#include "runtime.cuh"
#include "weightnorm/rnn_cell.h"

namespace weightnorm::cuda {
namespace {

constexpr int kBlock = 256;

unsigned blocks_for(int64_t items) {
  return static_cast<unsigned>(std::clamp<int64_t>((items + kBlock - 1) / kBlock, 1, 65535));
}

// The activations the cell equations (weightnorm/rnn_cell.h) use on the device.
struct Activations {
  __host__ __device__ static float sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }
  __host__ __device__ static float tanh(float a) { return tanhf(a); }
};

// Elements e = n·hidden + j of [batch, hidden]; gates of row n at [n, gate·hidden + j]. raw and scale: a raw
// recurrent product [batch, 4H] to add as scale ⊙ raw, or null when the gates already hold it (this backend's path:
// kLstmScalesRecurrentInGateKernel is false, so the time loop always passes null).
__global__ void __launch_bounds__(kBlock) lstm_step_forward_kernel(float* h, float* c, float* gates,
                                                                   const float* c_prev, const float* raw,
                                                                   const float* scale, int64_t batch, int64_t hidden) {
  const int64_t count = batch * hidden;
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < count; e += int64_t(gridDim.x) * kBlock) {
    const int64_t n = e / hidden, j = e % hidden;
    float* gate = gates + n * 4 * hidden + j;
    const float* raw_gate = raw ? raw + n * 4 * hidden + j : nullptr;
    const float* scale_gate = raw ? scale + j : nullptr;
    const auto pre = [&](int64_t k) { return raw_gate ? gate[k] + scale_gate[k] * raw_gate[k] : gate[k]; };
    rnn_cell::lstm_forward<Activations>(gate, hidden, pre(0), pre(hidden), pre(2 * hidden), pre(3 * hidden),
                                        c_prev[e], c[e], h[e]);
  }
}

// One unit's recurrent gate gradients times w_hh's row scale, for each of the `gates` gates (pointers at unit j of
// the first gate): scaled = dgate ⊙ s_hh, the operand of dh_{t−1} = (dgates ⊙ s) · v.
__device__ void scale_unit_gates(float* scaled, const float* dgate, const float* scale, int gates, int64_t hidden) {
  for (int gate = 0; gate < gates; ++gate) scaled[gate * hidden] = dgate[gate * hidden] * scale[gate * hidden];
}

// drecurrent (with a weight-normalized w_hh, else unused): dgates ⊙ s_hh (scale_unit_gates).
__global__ void __launch_bounds__(kBlock) lstm_step_backward_kernel(float* dgates, float* drecurrent, float* dc,
                                                                    const float* dh_output, const float* dh_carried,
                                                                    const float* gates, const float* c,
                                                                    const float* c_prev, const float* recurrent_scale,
                                                                    int64_t batch, int64_t hidden) {
  const int64_t count = batch * hidden;
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < count; e += int64_t(gridDim.x) * kBlock) {
    const int64_t n = e / hidden, j = e % hidden;
    const float* gate = gates + n * 4 * hidden;
    float* dgate = dgates + n * 4 * hidden;
    rnn_cell::lstm_backward(dgate + j, gate + j, hidden, Activations::tanh(c[e]), c_prev[e], dh_output[e] + dh_carried[e],
                            dc[e]);
    if (recurrent_scale) scale_unit_gates(drecurrent + n * 4 * hidden + j, dgate + j, recurrent_scale + j, 4, hidden);
  }
}

__global__ void __launch_bounds__(kBlock) gru_step_forward_kernel(float* h, float* gates, float* hn_saved,
                                                                  const float* hidden_projection, const float* h_prev,
                                                                  int64_t batch, int64_t hidden) {
  const int64_t count = batch * hidden;
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < count; e += int64_t(gridDim.x) * kBlock) {
    const int64_t n = e / hidden, j = e % hidden;
    const int64_t row = n * 3 * hidden + j;
    rnn_cell::gru_forward<Activations>(gates + row, hidden_projection + row, hidden, h_prev[e], hn_saved[e], h[e]);
  }
}

__global__ void __launch_bounds__(kBlock) gru_step_backward_kernel(float* dinput, float* dhidden, float* drecurrent,
                                                                   float* dh_next, const float* dh_output,
                                                                   const float* gates, const float* hn_saved,
                                                                   const float* h_prev, const float* recurrent_scale,
                                                                   int64_t batch, int64_t hidden) {
  const int64_t count = batch * hidden;
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < count; e += int64_t(gridDim.x) * kBlock) {
    const int64_t n = e / hidden, j = e % hidden;
    const int64_t row = n * 3 * hidden + j;
    dh_next[e] = rnn_cell::gru_backward(dinput + row, dhidden + row, gates + row, hidden, hn_saved[e], h_prev[e],
                                        dh_output[e] + dh_next[e]);
    if (recurrent_scale) scale_unit_gates(drecurrent + row, dhidden + row, recurrent_scale + j, 3, hidden);
  }
}

// out = a + b (either may be null): the LSTM's two biases, added once to the input projection as on the CPU.
__global__ void __launch_bounds__(kBlock) summed_biases_kernel(float* out, const float* a, const float* b,
                                                               int64_t count) {
  for (int64_t j = int64_t(blockIdx.x) * kBlock + threadIdx.x; j < count; j += int64_t(gridDim.x) * kBlock) {
    out[j] = (a ? a[j] : 0.0f) + (b ? b[j] : 0.0f);
  }
}

// matrix[row, j] *= scale[j] for [rows, columns]: the gate gradients times a weight-normalized matrix's row scale,
// before dx = (dgates ⊙ s) · v.
__global__ void __launch_bounds__(kBlock) scale_columns_kernel(float* matrix, const float* scale, int64_t rows,
                                                               int64_t columns) {
  const int64_t count = rows * columns;
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < count; e += int64_t(gridDim.x) * kBlock) {
    matrix[e] *= scale[e % columns];
  }
}

// out[j] = Σ_rows matrix[row, j], one thread per column summing the rows in order (coalesced across the warp).
__global__ void __launch_bounds__(kBlock) column_sum_kernel(float* out, const float* matrix, int64_t rows,
                                                            int64_t columns) {
  for (int64_t j = int64_t(blockIdx.x) * kBlock + threadIdx.x; j < columns; j += int64_t(gridDim.x) * kBlock) {
    float sum = 0.0f;
    for (int64_t row = 0; row < rows; ++row) sum += matrix[row * columns + j];
    out[j] = sum;
  }
}

__global__ void __launch_bounds__(kBlock) embedding_forward_kernel(float* out, const float* indices,
                                                                   const float* weight, int64_t count, int64_t dim) {
  const int64_t total = count * dim;
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < total; e += int64_t(gridDim.x) * kBlock) {
    const int64_t i = e / dim, j = e % dim;
    out[e] = weight[static_cast<int64_t>(indices[i]) * dim + j];
  }
}

// One thread per column j adds the rows of dout in index order: a fixed order, so no atomics and the same sums run
// to run; dweight is zeroed before.
__global__ void __launch_bounds__(kBlock) embedding_backward_kernel(float* dweight, const float* indices,
                                                                    const float* dout, int64_t count, int64_t dim,
                                                                    int64_t padding_idx) {
  for (int64_t j = int64_t(blockIdx.x) * kBlock + threadIdx.x; j < dim; j += int64_t(gridDim.x) * kBlock) {
    for (int64_t i = 0; i < count; ++i) {
      const int64_t row = static_cast<int64_t>(indices[i]);
      if (row != padding_idx) dweight[row * dim + j] += dout[i * dim + j];
    }
  }
}

__global__ void __launch_bounds__(kBlock) swap_leading_axes_kernel(float* out, const float* x, int64_t a, int64_t b,
                                                                   int64_t inner) {
  const int64_t total = a * b * inner;
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < total; e += int64_t(gridDim.x) * kBlock) {
    const int64_t k = e % inner, row = e / inner, i = row % a, j = row / a;  // e indexes out [b, a, inner]
    out[e] = x[(i * b + j) * inner + k];
  }
}

void zero_floats(float* out, int64_t count) {
  if (out && count > 0) fill_zero(out, static_cast<size_t>(count) * sizeof(float));
}

// The time loop's primitives (ops/rnn_time_loop.inc), with cpu/rnn.cc's signatures.

// The time loop's backend trait: a weight-normalized w_hh's s_hh is applied in the recurrent GEMM's epilogue, which
// accumulates into the gates (the device GEMM's epilogue is fused into its stores, not a pass of its own).
constexpr bool kLstmScalesRecurrentInGateKernel = false;

void sum_biases(float* out, const float* a, const float* b, int64_t count) {
  summed_biases_kernel<<<blocks_for(count), kBlock, 0, library_stream()>>>(out, a, b, count);
  WN_CUDA_CHECK_LAUNCH();
}

void lstm_step_forward(float* h, float* c, float* gates, const float* c_prev, const float* raw, const float* scale,
                       int64_t batch, int64_t hidden) {
  lstm_step_forward_kernel<<<blocks_for(batch * hidden), kBlock, 0, library_stream()>>>(h, c, gates, c_prev, raw,
                                                                                       scale, batch, hidden);
  WN_CUDA_CHECK_LAUNCH();
}

void lstm_step_backward(float* dgates, float* drecurrent, float* dc, const float* dh_output, const float* dh_carried,
                        const float* gates, const float* c, const float* c_prev, const float* recurrent_scale,
                        int64_t batch, int64_t hidden) {
  lstm_step_backward_kernel<<<blocks_for(batch * hidden), kBlock, 0, library_stream()>>>(
      dgates, drecurrent, dc, dh_output, dh_carried, gates, c, c_prev, recurrent_scale, batch, hidden);
  WN_CUDA_CHECK_LAUNCH();
}

void gru_step_forward(float* h, float* gates, float* hn_saved, const float* hidden_projection, const float* h_prev,
                      int64_t batch, int64_t hidden) {
  gru_step_forward_kernel<<<blocks_for(batch * hidden), kBlock, 0, library_stream()>>>(h, gates, hn_saved,
                                                                                      hidden_projection, h_prev, batch,
                                                                                      hidden);
  WN_CUDA_CHECK_LAUNCH();
}

void gru_step_backward(float* dinput, float* dhidden, float* drecurrent, float* dh_next, const float* dh_output,
                       const float* gates, const float* hn_saved, const float* h_prev, const float* recurrent_scale,
                       int64_t batch, int64_t hidden) {
  gru_step_backward_kernel<<<blocks_for(batch * hidden), kBlock, 0, library_stream()>>>(
      dinput, dhidden, drecurrent, dh_next, dh_output, gates, hn_saved, h_prev, recurrent_scale, batch, hidden);
  WN_CUDA_CHECK_LAUNCH();
}

void column_sum(float* out, const float* matrix, int64_t rows, int64_t columns) {
  column_sum_kernel<<<blocks_for(columns), kBlock, 0, library_stream()>>>(out, matrix, rows, columns);
  WN_CUDA_CHECK_LAUNCH();
}

void scale_columns(float* matrix, const float* scale, int64_t rows, int64_t columns) {
  scale_columns_kernel<<<blocks_for(rows * columns), kBlock, 0, library_stream()>>>(matrix, scale, rows, columns);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace

#include "weightnorm/ops/rnn_time_loop.inc"

void embedding_forward(float* out, const float* indices, const float* weight, int64_t count, int64_t num_embeddings,
                       int64_t embedding_dim) {
  (void)num_embeddings;
  if (count == 0 || embedding_dim == 0) return;
  embedding_forward_kernel<<<blocks_for(count * embedding_dim), kBlock, 0, library_stream()>>>(out, indices, weight,
                                                                                               count, embedding_dim);
  WN_CUDA_CHECK_LAUNCH();
}

void embedding_backward(float* dweight, const float* indices, const float* dout, int64_t count, int64_t num_embeddings,
                        int64_t embedding_dim, int64_t padding_idx) {
  zero_floats(dweight, num_embeddings * embedding_dim);
  if (count == 0 || embedding_dim == 0) return;
  embedding_backward_kernel<<<blocks_for(embedding_dim), kBlock, 0, library_stream()>>>(dweight, indices, dout, count,
                                                                                        embedding_dim, padding_idx);
  WN_CUDA_CHECK_LAUNCH();
}

void copy_floats(float* out, const float* x, int64_t count) {
  if (count > 0) copy_device_to_device(out, x, static_cast<size_t>(count) * sizeof(float));
}

void swap_leading_axes(float* out, const float* x, int64_t a, int64_t b, int64_t inner) {
  if (a * b * inner == 0) return;
  swap_leading_axes_kernel<<<blocks_for(a * b * inner), kBlock, 0, library_stream()>>>(out, x, a, b, inner);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace weightnorm::cuda
