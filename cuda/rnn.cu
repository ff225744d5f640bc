// Recurrent layers (CUDA), the same computation as cpu/rnn.cc: one call per layer runs all T steps. The input
// projection of every step is one GEMM; each step is one recurrent GEMM (cuda::gemm, the bias in its epilogue) and
// ONE fused pointwise kernel over the gates (lstm_step_forward_kernel / gru_step_forward_kernel). The backward runs
// one fused pointwise kernel and one GEMM per step, then dx and the weight gradients as one GEMM each over all
// steps, and the bias gradients as column sums in a fixed order (no atomics: the same result run to run).
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

// Elements e = n·hidden + j of [batch, hidden]; gates of row n at [n, gate·hidden + j].
__global__ void __launch_bounds__(kBlock) lstm_step_forward_kernel(float* h, float* c, float* gates,
                                                                   const float* c_prev, int64_t batch, int64_t hidden) {
  const int64_t count = batch * hidden;
  for (int64_t e = int64_t(blockIdx.x) * kBlock + threadIdx.x; e < count; e += int64_t(gridDim.x) * kBlock) {
    const int64_t n = e / hidden, j = e % hidden;
    float* gate = gates + n * 4 * hidden + j;
    rnn_cell::lstm_forward<Activations>(gate, hidden, gate[0], gate[hidden], gate[2 * hidden], gate[3 * hidden],
                                        c_prev[e], c[e], h[e]);
  }
}

// drecurrent (with a weight-normalized w_hh, else unused): dgates ⊙ s_hh, the operand of dh_{t−1} = (dgates ⊙ s) · v.
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
    if (recurrent_scale) {
      float* scaled = drecurrent + n * 4 * hidden;
      for (int gate_index = 0; gate_index < 4; ++gate_index) {
        const int64_t r = gate_index * hidden + j;
        scaled[r] = dgate[r] * recurrent_scale[r];
      }
    }
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
    float* dr = dhidden + n * 3 * hidden;
    const int64_t row = n * 3 * hidden + j;
    dh_next[e] = rnn_cell::gru_backward(dinput + row, dhidden + row, gates + row, hidden, hn_saved[e], h_prev[e],
                                        dh_output[e] + dh_next[e]);
    if (recurrent_scale) {
      float* scaled = drecurrent + n * 3 * hidden;
      for (int gate_index = 0; gate_index < 3; ++gate_index) {
        const int64_t k = gate_index * hidden + j;
        scaled[k] = dr[k] * recurrent_scale[k];
      }
    }
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

void copy_on_stream(float* out, const float* x, int64_t count) {
  if (count > 0) copy_device_to_device(out, x, static_cast<size_t>(count) * sizeof(float));
}

void zero_on_stream(float* out, int64_t count) {
  if (out && count > 0) fill_zero(out, static_cast<size_t>(count) * sizeof(float));
}

}  // namespace

void rnn_forward(float* y, float* saved_gates, float* saved_state, float* workspace, const float* x, const float* h0,
                 const float* c0, const RnnWeights& weights, const RnnGeometry& geometry) {
  const int64_t steps = geometry.steps, batch = geometry.batch, hidden = geometry.hidden_size;
  const int64_t width = geometry.gate_width(), step_gates = batch * width, step_state = batch * hidden;
  if (steps == 0 || batch == 0 || hidden == 0) return;
  cudaStream_t stream = library_stream();
  const unsigned blocks = blocks_for(step_state);
  const bool lstm = geometry.cell == RnnCell::kLstm;
  // LSTM: b_ih + b_hh (in the workspace) go into the input projection once, as on the CPU (same rounding).
  const float* input_bias = weights.b_ih;
  const float* recurrent_bias = weights.b_hh;
  if (lstm && (weights.b_ih || weights.b_hh)) {
    summed_biases_kernel<<<blocks_for(width), kBlock, 0, stream>>>(workspace, weights.b_ih, weights.b_hh, width);
    WN_CUDA_CHECK_LAUNCH();
    input_bias = workspace;
  }
  if (lstm) recurrent_bias = nullptr;
  gemm(saved_gates, x, weights.w_ih, GemmShape{steps * batch, width, geometry.input_size}.transposing_b(),
       layer_product_epilogue(weights.scale_ih, input_bias));
  const GemmShape recurrent = GemmShape{batch, width, hidden}.transposing_b();
  for (int64_t t = 0; t < steps; ++t) {
    const float* h_prev = t == 0 ? h0 : y + (t - 1) * step_state;
    float* gates = saved_gates + t * step_gates;
    float* h = y + t * step_state;
    if (lstm) {
      gemm(gates, h_prev, weights.w_hh, recurrent, layer_product_epilogue(weights.scale_hh, recurrent_bias, 1.0f));
      const float* c_prev = t == 0 ? c0 : saved_state + (t - 1) * step_state;
      lstm_step_forward_kernel<<<blocks, kBlock, 0, stream>>>(h, saved_state + t * step_state, gates, c_prev, batch,
                                                              hidden);
    } else {
      gemm(workspace, h_prev, weights.w_hh, recurrent, layer_product_epilogue(weights.scale_hh, recurrent_bias));
      gru_step_forward_kernel<<<blocks, kBlock, 0, stream>>>(h, gates, saved_state + t * step_state, workspace, h_prev,
                                                             batch, hidden);
    }
    WN_CUDA_CHECK_LAUNCH();
  }
  if (lstm) copy_on_stream(y + steps * step_state, saved_state + (steps - 1) * step_state, step_state);
}

void rnn_backward(const RnnGradients& grads, float* workspace, const float* dy, const float* x, const float* h0,
                  const float* c0, const RnnWeights& weights, const float* y, const float* saved_gates,
                  const float* saved_state, const RnnGeometry& geometry) {
  const int64_t steps = geometry.steps, batch = geometry.batch, hidden = geometry.hidden_size;
  const int64_t input_size = geometry.input_size;
  const int64_t width = geometry.gate_width(), step_gates = batch * width, step_state = batch * hidden;
  const bool lstm = geometry.cell == RnnCell::kLstm;
  if (steps == 0 || batch == 0 || hidden == 0) {
    grads.zero_all(geometry, zero_on_stream);
    return;
  }
  cudaStream_t stream = library_stream();
  const unsigned blocks = blocks_for(step_state);
  float* dinput = workspace;
  float* dhidden = lstm ? dinput : dinput + steps * step_gates;
  float* dh = (lstm ? dinput : dhidden) + steps * step_gates;
  float* dc = dh + step_state;
  float* drecurrent = dc + step_state;  // [batch, width]: dhidden_t ⊙ s_hh
  zero_on_stream(dh, step_state);
  if (lstm) copy_on_stream(dc, dy + steps * step_state, step_state);
  for (int64_t t = steps - 1; t >= 0; --t) {
    const float* h_prev = t == 0 ? h0 : y + (t - 1) * step_state;
    const float* gates = saved_gates + t * step_gates;
    float* dgates_input = dinput + t * step_gates;
    float* dgates_hidden = dhidden + t * step_gates;
    const float* recurrent_operand = weights.scale_hh ? drecurrent : dgates_hidden;
    if (lstm) {
      const float* c_prev = t == 0 ? c0 : saved_state + (t - 1) * step_state;
      lstm_step_backward_kernel<<<blocks, kBlock, 0, stream>>>(dgates_input, drecurrent, dc, dy + t * step_state, dh,
                                                               gates, saved_state + t * step_state, c_prev,
                                                               weights.scale_hh, batch, hidden);
      WN_CUDA_CHECK_LAUNCH();
      gemm(dh, recurrent_operand, weights.w_hh, GemmShape{batch, hidden, width}, GemmEpilogue{});
    } else {
      gru_step_backward_kernel<<<blocks, kBlock, 0, stream>>>(dgates_input, dgates_hidden, drecurrent, dh,
                                                              dy + t * step_state, gates, saved_state + t * step_state,
                                                              h_prev, weights.scale_hh, batch, hidden);
      WN_CUDA_CHECK_LAUNCH();
      gemm(dh, recurrent_operand, weights.w_hh, GemmShape{batch, hidden, width}, accumulating_epilogue());
    }
  }
  if (grads.dh0) copy_on_stream(grads.dh0, dh, step_state);
  if (grads.dc0 && lstm) copy_on_stream(grads.dc0, dc, step_state);
  const int64_t rows = steps * batch;
  // The weight and bias gradients first: they read the unscaled gate gradients, which dx may scale in place below.
  if (grads.dw_ih) gemm(grads.dw_ih, dinput, x, GemmShape{width, input_size, rows}.transposing_a(), GemmEpilogue{});
  if (grads.dw_hh) {
    gemm(grads.dw_hh, dhidden, h0, GemmShape{width, hidden, batch}.transposing_a(), GemmEpilogue{});
    if (steps > 1) gemm(grads.dw_hh, dhidden + step_gates, y, GemmShape{width, hidden, (steps - 1) * batch}.transposing_a(), accumulating_epilogue());
  }
  if (grads.db_ih) {
    column_sum_kernel<<<blocks_for(width), kBlock, 0, stream>>>(grads.db_ih, dinput, rows, width);
    WN_CUDA_CHECK_LAUNCH();
  }
  if (grads.db_hh) {
    // LSTM: both biases enter the same pre-activations, so their gradients are the same column sums.
    if (lstm && grads.db_ih) {
      copy_on_stream(grads.db_hh, grads.db_ih, width);
    } else {
      column_sum_kernel<<<blocks_for(width), kBlock, 0, stream>>>(grads.db_hh, dhidden, rows, width);
      WN_CUDA_CHECK_LAUNCH();
    }
  }
  if (grads.dx) {
    if (weights.scale_ih) {
      scale_columns_kernel<<<blocks_for(rows * width), kBlock, 0, stream>>>(dinput, weights.scale_ih, rows, width);
      WN_CUDA_CHECK_LAUNCH();
    }
    gemm(grads.dx, dinput, weights.w_ih, GemmShape{rows, input_size, width}, GemmEpilogue{});
  }
}

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
  zero_on_stream(dweight, num_embeddings * embedding_dim);
  if (count == 0 || embedding_dim == 0) return;
  embedding_backward_kernel<<<blocks_for(embedding_dim), kBlock, 0, library_stream()>>>(dweight, indices, dout, count,
                                                                                        embedding_dim, padding_idx);
  WN_CUDA_CHECK_LAUNCH();
}

void copy_floats(float* out, const float* x, int64_t count) { copy_on_stream(out, x, count); }

void swap_leading_axes(float* out, const float* x, int64_t a, int64_t b, int64_t inner) {
  if (a * b * inner == 0) return;
  swap_leading_axes_kernel<<<blocks_for(a * b * inner), kBlock, 0, library_stream()>>>(out, x, a, b, inner);
  WN_CUDA_CHECK_LAUNCH();
}

}  // namespace weightnorm::cuda
