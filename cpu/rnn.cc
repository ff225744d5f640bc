// Recurrent layers (CPU). One call runs a layer over all T steps: the input projection of every step is one GEMM
// (T·N rows), and each step is one recurrent GEMM plus one fused pointwise pass over the gates, so the time loop
// costs no JavaScript round trip. The backward mirrors it: one fused pointwise pass and one GEMM per step, then the
// weight gradients and dx as one GEMM each over all steps. The GEMMs are cpu::gemm (multithreaded, deterministic);
// the pointwise passes split rows over the OpenMP threads, each element computed by one thread, so every result is
// the same for any thread count. A weight-normalized matrix runs as v with its row scale s = g/‖v‖ (RnnWeights):
// in the GEMM epilogue forward, on the gate gradients backward. Same math as cuda/rnn.cu.
#include "rnn.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gemm.h"
#include "weightnorm.h"

namespace weightnorm::cpu {

namespace {

constexpr int64_t kParallelMinElements = int64_t{1} << 14;

float sigmoid(float a) { return 1.0f / (1.0f + std::exp(-a)); }

// Runs body(row) for each of `rows` rows of `width` elements, on the OpenMP threads when the work is large.
template <class Body>
void for_rows(int64_t rows, int64_t width, Body&& body) {
  const int threads = num_threads();
  const bool parallel = rows * width >= kParallelMinElements && threads > 1 && rows > 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (int64_t row = 0; row < rows; ++row) body(row);
}

// The epilogue of a product by a layer matrix: its row scale s (null: a plain w) on the output's columns, which are
// the gate rows, then the bias, then beta · out.
GemmEpilogue projection(const float* scale, const float* column_bias, float beta = 0.0f) {
  GemmEpilogue epilogue;
  epilogue.column_scale = scale;
  epilogue.column_bias = column_bias;
  epilogue.beta = beta;
  return epilogue;
}

GemmEpilogue accumulating() { return projection(nullptr, nullptr, 1.0f); }

void zero(float* out, int64_t count) {
  if (out && count > 0) std::memset(out, 0, static_cast<size_t>(count) * sizeof(float));
}

// matrix[row, j] *= scale[j] for [rows, columns]: the gate gradients times a weight-normalized matrix's row scale,
// before dx = (dgates ⊙ s) · v.
void scale_columns(float* matrix, const float* scale, int64_t rows, int64_t columns) {
  for_rows(rows, columns, [&](int64_t row) {
    float* values = matrix + row * columns;
    for (int64_t j = 0; j < columns; ++j) values[j] *= scale[j];
  });
}

// out[j] = Σ_rows matrix[row, j], rows summed in order (a fixed order: deterministic), columns split over threads.
void column_sum(float* out, const float* matrix, int64_t rows, int64_t columns) {
  constexpr int64_t kColumnBlock = 64;
  const int64_t blocks = (columns + kColumnBlock - 1) / kColumnBlock;
  for_rows(blocks, rows * kColumnBlock, [&](int64_t block) {
    const int64_t first = block * kColumnBlock;
    const int64_t width = std::min(kColumnBlock, columns - first);
    float sums[kColumnBlock] = {};
    for (int64_t row = 0; row < rows; ++row) {
      const float* values = matrix + row * columns + first;
      for (int64_t j = 0; j < width; ++j) sums[j] += values[j];
    }
    std::memcpy(out + first, sums, static_cast<size_t>(width) * sizeof(float));
  });
}

// LSTM step: gates holds the pre-activations [batch, 4H] (input and recurrent projections and both biases);
// it is overwritten with the activated gates i, f, g, o, which the backward reads.
void lstm_step_forward(float* h, float* c, float* gates, const float* c_prev, int64_t batch, int64_t hidden) {
  for_rows(batch, 4 * hidden, [&](int64_t n) {
    float* gate = gates + n * 4 * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
      const float i = sigmoid(gate[j]);
      const float f = sigmoid(gate[hidden + j]);
      const float g = std::tanh(gate[2 * hidden + j]);
      const float o = sigmoid(gate[3 * hidden + j]);
      const float cell = f * c_prev[n * hidden + j] + i * g;
      gate[j] = i;
      gate[hidden + j] = f;
      gate[2 * hidden + j] = g;
      gate[3 * hidden + j] = o;
      c[n * hidden + j] = cell;
      h[n * hidden + j] = o * std::tanh(cell);
    }
  });
}

// LSTM step backward: from dh (the output's gradient plus the one carried from step t+1) and dc (carried), the
// gradients of the four pre-activations, and dc for step t−1 (in place in dc). dgates [batch, 4H]. With a
// weight-normalized w_hh, drecurrent [batch, 4H] also gets dgates ⊙ s_hh (s_hh per gate row), the operand of
// dh_{t−1} = (dgates ⊙ s) · v, written in the same pass while the values are in registers.
void lstm_step_backward(float* dgates, float* drecurrent, float* dc, const float* dh_output, const float* dh_carried,
                        const float* gates, const float* c, const float* c_prev, const float* recurrent_scale,
                        int64_t batch, int64_t hidden) {
  for_rows(batch, 4 * hidden, [&](int64_t n) {
    const float* gate = gates + n * 4 * hidden;
    float* dgate = dgates + n * 4 * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t e = n * hidden + j;
      const float i = gate[j], f = gate[hidden + j], g = gate[2 * hidden + j], o = gate[3 * hidden + j];
      const float tanh_c = std::tanh(c[e]);
      const float dh = dh_output[e] + dh_carried[e];
      const float dcell = dc[e] + dh * o * (1.0f - tanh_c * tanh_c);
      dgate[j] = dcell * g * i * (1.0f - i);
      dgate[hidden + j] = dcell * c_prev[e] * f * (1.0f - f);
      dgate[2 * hidden + j] = dcell * i * (1.0f - g * g);
      dgate[3 * hidden + j] = dh * tanh_c * o * (1.0f - o);
      dc[e] = dcell * f;
    }
    if (recurrent_scale) {
      float* scaled = drecurrent + n * 4 * hidden;
      for (int64_t r = 0; r < 4 * hidden; ++r) scaled[r] = dgate[r] * recurrent_scale[r];
    }
  });
}

// GRU step: gates holds the input projections x·W_iᵀ + b_i [batch, 3H], hidden the recurrent ones h·W_hᵀ + b_h.
// gates is overwritten with r, z, n; hn (the recurrent n part, which r scales) is saved for the backward.
void gru_step_forward(float* h, float* gates, float* hn_saved, const float* hidden_projection, const float* h_prev,
                      int64_t batch, int64_t hidden) {
  for_rows(batch, 3 * hidden, [&](int64_t n) {
    float* gate = gates + n * 3 * hidden;
    const float* recurrent = hidden_projection + n * 3 * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t e = n * hidden + j;
      const float r = sigmoid(gate[j] + recurrent[j]);
      const float z = sigmoid(gate[hidden + j] + recurrent[hidden + j]);
      const float hn = recurrent[2 * hidden + j];
      const float candidate = std::tanh(gate[2 * hidden + j] + r * hn);
      gate[j] = r;
      gate[hidden + j] = z;
      gate[2 * hidden + j] = candidate;
      hn_saved[e] = hn;
      h[e] = (1.0f - z) * candidate + z * h_prev[e];
    }
  });
}

// GRU step backward: the gradients of the input projections (dinput [batch, 3H]) and of the recurrent projections
// (dhidden [batch, 3H]; they differ only in the n slot, where r scales the recurrent part), and the direct part of
// dh_{t−1} (z ⊙ dh), written into dh_next; the caller adds dhidden · W_hh to it. With a weight-normalized w_hh,
// drecurrent [batch, 3H] also gets dhidden ⊙ s_hh, as for the LSTM.
void gru_step_backward(float* dinput, float* dhidden, float* drecurrent, float* dh_next, const float* dh_output,
                       const float* gates, const float* hn_saved, const float* h_prev, const float* recurrent_scale,
                       int64_t batch, int64_t hidden) {
  for_rows(batch, 3 * hidden, [&](int64_t n) {
    const float* gate = gates + n * 3 * hidden;
    float* di = dinput + n * 3 * hidden;
    float* dr = dhidden + n * 3 * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t e = n * hidden + j;
      const float r = gate[j], z = gate[hidden + j], candidate = gate[2 * hidden + j];
      const float dh = dh_output[e] + dh_next[e];
      const float dcandidate = dh * (1.0f - z) * (1.0f - candidate * candidate);
      const float dreset = dcandidate * hn_saved[e] * r * (1.0f - r);
      const float dupdate = dh * (h_prev[e] - candidate) * z * (1.0f - z);
      di[j] = dr[j] = dreset;
      di[hidden + j] = dr[hidden + j] = dupdate;
      di[2 * hidden + j] = dcandidate;
      dr[2 * hidden + j] = dcandidate * r;
      dh_next[e] = dh * z;
    }
    if (recurrent_scale) {
      float* scaled = drecurrent + n * 3 * hidden;
      for (int64_t r = 0; r < 3 * hidden; ++r) scaled[r] = dr[r] * recurrent_scale[r];
    }
  });
}

}  // namespace

void rnn_forward(float* y, float* saved_gates, float* saved_state, float* workspace, const float* x, const float* h0,
                 const float* c0, const RnnWeights& weights, const RnnGeometry& geometry) {
  const int64_t steps = geometry.steps, batch = geometry.batch, hidden = geometry.hidden_size;
  const int64_t width = geometry.gate_width(), step_gates = batch * width, step_state = batch * hidden;
  if (steps == 0 || batch == 0 || hidden == 0) return;
  // Every step's input projection at once: saved_gates = (x · w_ihᵀ) ⊙ s_ih + b_ih, [steps·batch, gates·hidden].
  gemm(saved_gates, x, weights.w_ih, GemmShape{steps * batch, width, geometry.input_size}.transposing_b(),
       projection(weights.scale_ih, weights.b_ih));
  const GemmShape recurrent = GemmShape{batch, width, hidden}.transposing_b();
  for (int64_t t = 0; t < steps; ++t) {
    const float* h_prev = t == 0 ? h0 : y + (t - 1) * step_state;
    float* gates = saved_gates + t * step_gates;
    float* h = y + t * step_state;
    if (geometry.cell == RnnCell::kLstm) {
      // The recurrent projection accumulates into the input projection (beta = 1): gates holds the pre-activations.
      gemm(gates, h_prev, weights.w_hh, recurrent, projection(weights.scale_hh, weights.b_hh, 1.0f));
      const float* c_prev = t == 0 ? c0 : saved_state + (t - 1) * step_state;
      lstm_step_forward(h, saved_state + t * step_state, gates, c_prev, batch, hidden);
    } else {
      gemm(workspace, h_prev, weights.w_hh, recurrent, projection(weights.scale_hh, weights.b_hh));
      gru_step_forward(h, gates, saved_state + t * step_state, workspace, h_prev, batch, hidden);
    }
  }
  if (geometry.cell == RnnCell::kLstm) {
    std::memcpy(y + steps * step_state, saved_state + (steps - 1) * step_state, static_cast<size_t>(step_state) * sizeof(float));
  }
}

void rnn_backward(const RnnGradients& grads, float* workspace, const float* dy, const float* x, const float* h0,
                  const float* c0, const RnnWeights& weights, const float* y, const float* saved_gates,
                  const float* saved_state, const RnnGeometry& geometry) {
  const int64_t steps = geometry.steps, batch = geometry.batch, hidden = geometry.hidden_size;
  const int64_t input_size = geometry.input_size;
  const int64_t width = geometry.gate_width(), step_gates = batch * width, step_state = batch * hidden;
  const bool lstm = geometry.cell == RnnCell::kLstm;
  if (steps == 0 || batch == 0 || hidden == 0) {
    grads.zero_all(geometry, zero);  // T = 0 is refused above this layer; batch 0 is not
    return;
  }
  float* dinput = workspace;                                            // [steps·batch, width]
  float* dhidden = lstm ? dinput : dinput + steps * step_gates;         // GRU: its own [steps·batch, width]
  float* dh = (lstm ? dinput : dhidden) + steps * step_gates;           // [batch, hidden], carried to step t−1
  float* dc = dh + step_state;                                          // [batch, hidden] (LSTM)
  float* drecurrent = dc + step_state;                                  // [batch, width]: dhidden_t ⊙ s_hh
  zero(dh, step_state);
  if (lstm) std::memcpy(dc, dy + steps * step_state, static_cast<size_t>(step_state) * sizeof(float));
  for (int64_t t = steps - 1; t >= 0; --t) {
    const float* h_prev = t == 0 ? h0 : y + (t - 1) * step_state;
    const float* gates = saved_gates + t * step_gates;
    float* dgates_input = dinput + t * step_gates;
    float* dgates_hidden = dhidden + t * step_gates;
    // dh_{t−1} += dgates · w_hh ([batch, G·H] · [G·H, H]); with w_hh = s ⊙ v that is (dgates ⊙ s) · v.
    const float* recurrent_operand = weights.scale_hh ? drecurrent : dgates_hidden;
    if (lstm) {
      const float* c_prev = t == 0 ? c0 : saved_state + (t - 1) * step_state;
      lstm_step_backward(dgates_input, drecurrent, dc, dy + t * step_state, dh, gates, saved_state + t * step_state,
                         c_prev, weights.scale_hh, batch, hidden);
      gemm(dh, recurrent_operand, weights.w_hh, GemmShape{batch, hidden, width}, GemmEpilogue{});
    } else {
      gru_step_backward(dgates_input, dgates_hidden, drecurrent, dh, dy + t * step_state, gates,
                        saved_state + t * step_state, h_prev, weights.scale_hh, batch, hidden);
      gemm(dh, recurrent_operand, weights.w_hh, GemmShape{batch, hidden, width}, accumulating());
    }
  }
  if (grads.dh0) std::memcpy(grads.dh0, dh, static_cast<size_t>(step_state) * sizeof(float));
  if (grads.dc0 && lstm) std::memcpy(grads.dc0, dc, static_cast<size_t>(step_state) * sizeof(float));
  const int64_t rows = steps * batch;
  // The weight and bias gradients first: they read the unscaled gate gradients, which dx may scale in place below.
  if (grads.dw_ih) gemm(grads.dw_ih, dinput, x, GemmShape{width, input_size, rows}.transposing_a(), GemmEpilogue{});
  if (grads.dw_hh) {
    // Σ_t dgates_tᵀ · h_{t−1}: steps 1.. read h_1..h_{T−1} (rows of y, contiguous), step 0 reads h0.
    gemm(grads.dw_hh, dhidden, h0, GemmShape{width, hidden, batch}.transposing_a(), GemmEpilogue{});
    if (steps > 1) gemm(grads.dw_hh, dhidden + step_gates, y, GemmShape{width, hidden, (steps - 1) * batch}.transposing_a(), accumulating());
  }
  if (grads.db_ih) column_sum(grads.db_ih, dinput, rows, width);
  if (grads.db_hh) column_sum(grads.db_hh, dhidden, rows, width);
  if (grads.dx) {
    // dx = dgates · w_ih; with w_ih = s ⊙ v that is (dgates ⊙ s) · v.
    if (weights.scale_ih) scale_columns(dinput, weights.scale_ih, rows, width);
    gemm(grads.dx, dinput, weights.w_ih, GemmShape{rows, input_size, width}, GemmEpilogue{});
  }
}

void embedding_forward(float* out, const float* indices, const float* weight, int64_t count, int64_t num_embeddings,
                       int64_t embedding_dim) {
  (void)num_embeddings;
  for_rows(count, embedding_dim, [&](int64_t i) {
    const int64_t row = static_cast<int64_t>(indices[i]);
    std::memcpy(out + i * embedding_dim, weight + row * embedding_dim, static_cast<size_t>(embedding_dim) * sizeof(float));
  });
}

void embedding_backward(float* dweight, const float* indices, const float* dout, int64_t count, int64_t num_embeddings,
                        int64_t embedding_dim, int64_t padding_idx) {
  std::memset(dweight, 0, static_cast<size_t>(num_embeddings * embedding_dim) * sizeof(float));
  // Columns split over threads; within a column the indices are added in order: deterministic, no atomics.
  constexpr int64_t kColumnBlock = 64;
  const int64_t blocks = (embedding_dim + kColumnBlock - 1) / kColumnBlock;
  for_rows(blocks, count * kColumnBlock, [&](int64_t block) {
    const int64_t first = block * kColumnBlock;
    const int64_t width = std::min(kColumnBlock, embedding_dim - first);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t row = static_cast<int64_t>(indices[i]);
      if (row == padding_idx) continue;
      float* target = dweight + row * embedding_dim + first;
      const float* source = dout + i * embedding_dim + first;
      for (int64_t j = 0; j < width; ++j) target[j] += source[j];
    }
  });
}

void copy_floats(float* out, const float* x, int64_t count) {
  if (count > 0) std::memcpy(out, x, static_cast<size_t>(count) * sizeof(float));
}

void swap_leading_axes(float* out, const float* x, int64_t a, int64_t b, int64_t inner) {
  for_rows(b, a * inner, [&](int64_t j) {
    for (int64_t i = 0; i < a; ++i) copy_floats(out + (j * a + i) * inner, x + (i * b + j) * inner, inner);
  });
}

}  // namespace weightnorm::cpu
