// Recurrent layers (CPU). One call runs a layer over all T steps: the input projection of every step is one GEMM
// (T·N rows), and each step is one recurrent GEMM plus one fused pointwise pass over the gates, so the time loop
// costs no JavaScript round trip. The backward mirrors it: one fused pointwise pass and one GEMM per step, then the
// weight gradients and dx as one GEMM each over all steps. That orchestration is weightnorm/ops/rnn_time_loop.inc,
// shared with cuda/rnn.cu; this file supplies its primitives. The GEMMs are cpu::gemm (multithreaded, deterministic);
// the pointwise passes split rows over the pool's threads, each element computed by one thread, so every result is
// the same for any thread count. A weight-normalized matrix runs as v with its row scale s = g/‖v‖ (RnnWeights):
// in the GEMM epilogue forward, on the gate gradients backward. Same math as cuda/rnn.cu, except that the gate
// activations here are this file's vectorizable exp/tanh (the CUDA kernels use the device's expf/tanhf): the two
// backends agree to a few ulps per activation, not bitwise.
#include "rnn.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gemm.h"
#include "weightnorm.h"
#include "weightnorm/rnn_cell.h"

namespace weightnorm::cpu {

namespace {

constexpr int64_t kParallelMinElements = int64_t{1} << 14;

// The gate activations. libm's expf and tanhf are calls the compiler cannot vectorize, and with five of them per
// hidden unit and step they took as long as the recurrent GEMMs (perf, LSTM hidden 256, batch 64, one thread). These
// are branch-free inline float code that the gate loops vectorize: exp by Cody–Waite range reduction (x = n·ln2 + r,
// |r| ≤ ln2/2) and Cephes' polynomial for e^r (degree 7), 2^n written into the exponent bits; tanh by Cephes' odd
// polynomial below |a| = 0.625 and 1 − 2/(e^{2|a|} + 1) above. Measured against double-precision libm over
// [−100, 100] in steps of 1e-4: exp ≤ 0.99 ulp, sigmoid ≤ 2.5 ulp (as 1/(1 + expf(−a)) with libm), tanh ≤ 1.2 ulp.
// always_inline: with five uses per loop iteration GCC's inliner kept them as calls, and a call is not vectorized.
[[gnu::always_inline]] inline float exp_bounded(float x) {
  // e^88 < FLT_MAX and e^−87 is still normal: n stays in [−126, 127], a valid exponent field.
  x = std::min(std::max(x, -87.0f), 88.0f);
  constexpr float kRoundToInteger = 12582912.0f;  // 1.5 · 2^23: adding and subtracting it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRoundToInteger) - kRoundToInteger;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln 2 split in two so that n·C1 is exact
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

[[gnu::always_inline]] inline float sigmoid_gate(float a) { return 1.0f / (1.0f + exp_bounded(-a)); }

[[gnu::always_inline]] inline float tanh_gate(float a) {
  const float magnitude = std::fabs(a), square = a * a;
  const float small = ((((-5.70498872745e-3f * square + 2.06390887954e-2f) * square - 5.37397155531e-2f) * square +
                        1.33314422036e-1f) * square - 3.33332819422e-1f) * square * a + a;
  const float large = 1.0f - 2.0f / (exp_bounded(2.0f * magnitude) + 1.0f);
  return magnitude < 0.625f ? small : std::copysign(large, a);
}

// The activations the cell equations (weightnorm/rnn_cell.h) use on the CPU.
struct Activations {
  [[gnu::always_inline]] static float sigmoid(float a) { return sigmoid_gate(a); }
  [[gnu::always_inline]] static float tanh(float a) { return tanh_gate(a); }
};

// Runs body(row) for each of `rows` rows of `width` elements, on the pool's threads when the work is large.
template <class Body>
void for_rows(int64_t rows, int64_t width, Body&& body) {
  const int threads = num_threads();
  const bool parallel = rows * width >= kParallelMinElements && threads > 1 && rows > 1;
  parallel_region(parallel, threads, [&] {
    for (const int64_t row : team_static(0, rows)) body(row);
  });
}

// A step's gate kernel runs on one thread below this many hidden units (batch · hidden) per step. It runs T times per
// direction, each time between two recurrent GEMMs, so a parallel region costs T wake-ups of a sleeping thread (the
// pool's threads sleep between regions whenever other processes use the cores: cpu/threads.h), and on a loaded host the
// woken thread waits for a core, up to a scheduler slice (4 ms). On the 2-core development host at load 3 to 5
// (bench/NOTES.md, 2026-12-02) a second thread made the LSTM step kernels no faster in almost every round, from 8192
// units (forward 90 µs on one thread) to 196608 (2.3 ms), and up to 0.1 ms slower per call; the common shapes (batch
// 64-100, hidden 128-256: 8192-25600 units, forward 90-290 µs) never open one. From 2^17 units one thread's forward
// takes ≥ 1.5 ms, enough for a second core, when one is free, to save more than a wake-up costs. A bound from the shape
// alone: each row is computed by the same code whatever the thread count, so the results are the same bits.
constexpr int64_t kStepParallelMinUnits = int64_t{1} << 17;

// body(n) for each batch row n of one step's gate kernel, on the pool's threads from kStepParallelMinUnits units.
template <class Body>
void for_step_rows(int64_t batch, int64_t hidden, Body&& body) {
  const int threads = num_threads();
  const bool parallel = threads > 1 && batch > 1 && batch * hidden >= kStepParallelMinUnits;
  parallel_region(parallel, threads, [&] {
    for (const int64_t n : team_static(0, batch)) body(n);
  });
}

// out = a + b over `count` floats (either may be null: no bias).
void sum_biases(float* out, const float* a, const float* b, int64_t count) {
  for (int64_t j = 0; j < count; ++j) out[j] = (a ? a[j] : 0.0f) + (b ? b[j] : 0.0f);
}

void zero_floats(float* out, int64_t count) {
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

// The gate loops are compiled twice, for the x86-64 baseline (SSE2: 4 floats per vector) and for AVX2 (8), and the
// loader picks one per process (GCC's target_clones, an ifunc): they were 15% of a 1-thread LSTM step on SSE2. Each
// element goes through the same operations in both (the AVX2 clone is not given FMA, so no multiply-add is
// contracted), so the results are bitwise equal.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define WN_GATE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define WN_GATE_CLONES
#endif

// The step kernels below work one batch row at a time through these row functions: their pointers are
// restrict-qualified (the rows of different arrays never overlap), which lets the compiler vectorize the loop over
// the hidden units without a run-time alias check per pointer pair (with five or more pointers it gave up).

// LSTM step: gates holds the pre-activations [batch, 4H] (input and recurrent projections and both biases), or,
// with kScaled (a weight-normalized w_hh), all but the recurrent product, which comes raw (h·vᵀ, [batch, 4H]) with
// its per-gate-row scale s = g/‖v‖: pre-activation = gate + s ⊙ raw, in this pass rather than in an epilogue pass of
// its own. gates is overwritten with the activated gates i, f, g, o, which the backward reads.
template <bool kScaled>
[[gnu::always_inline]] inline void lstm_forward_units(float* __restrict h, float* __restrict c,
                                                      float* __restrict gate, const float* __restrict c_prev,
                                                      const float* __restrict raw, const float* __restrict scale,
                                                      int64_t hidden) {
  const auto pre = [&](int64_t k) { return kScaled ? gate[k] + scale[k] * raw[k] : gate[k]; };
  for (int64_t j = 0; j < hidden; ++j) {
    rnn_cell::lstm_forward<Activations>(gate + j, hidden, pre(j), pre(hidden + j), pre(2 * hidden + j),
                                        pre(3 * hidden + j), c_prev[j], c[j], h[j]);
  }
}

WN_GATE_CLONES void lstm_forward_row(float* __restrict h, float* __restrict c, float* __restrict gate,
                                     const float* __restrict c_prev, const float* __restrict raw,
                                     const float* __restrict scale, int64_t hidden) {
  if (scale) lstm_forward_units<true>(h, c, gate, c_prev, raw, scale, hidden);
  else lstm_forward_units<false>(h, c, gate, c_prev, nullptr, nullptr, hidden);
}

// The time loop's backend trait (ops/rnn_time_loop.inc): a weight-normalized w_hh's product h·vᵀ comes raw and
// lstm_step_forward adds s_hh ⊙ raw while it reads the gates, instead of an epilogue pass over the gates that scales
// and accumulates it.
constexpr bool kLstmScalesRecurrentInGateKernel = true;

// raw and scale: null when the recurrent product is already in gates.
void lstm_step_forward(float* h, float* c, float* gates, const float* c_prev, const float* raw, const float* scale,
                       int64_t batch, int64_t hidden) {
  for_step_rows(batch, hidden, [&](int64_t n) {
    const int64_t e = n * hidden, row = n * 4 * hidden;
    lstm_forward_row(h + e, c + e, gates + row, c_prev + e, scale ? raw + row : nullptr, scale, hidden);
  });
}

// LSTM step backward, one row: from dh (the output's gradient plus the one carried from step t+1) and dc
// (carried), the gradients of the four pre-activations dgate [4H], and dc for step t−1 (in place in dc).
WN_GATE_CLONES void lstm_backward_row(float* __restrict dgate, float* __restrict dc, const float* __restrict dh_output,
                       const float* __restrict dh_carried, const float* __restrict gate, const float* __restrict c,
                       const float* __restrict c_prev, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    rnn_cell::lstm_backward(dgate + j, gate + j, hidden, tanh_gate(c[j]), c_prev[j], dh_output[j] + dh_carried[j], dc[j]);
  }
}

// scaled[r] = values[r] · scale[r]: a row of gate gradients times w_hh's row scale.
void scale_row(float* __restrict scaled, const float* __restrict values, const float* __restrict scale, int64_t count) {
  for (int64_t r = 0; r < count; ++r) scaled[r] = values[r] * scale[r];
}

// dgates [batch, 4H]. With a weight-normalized w_hh, drecurrent [batch, 4H] also gets dgates ⊙ s_hh (s_hh per gate
// row), the operand of dh_{t−1} = (dgates ⊙ s) · v, written by the same thread while the row is in cache.
void lstm_step_backward(float* dgates, float* drecurrent, float* dc, const float* dh_output, const float* dh_carried,
                        const float* gates, const float* c, const float* c_prev, const float* recurrent_scale,
                        int64_t batch, int64_t hidden) {
  for_step_rows(batch, hidden, [&](int64_t n) {
    const int64_t e = n * hidden, row = n * 4 * hidden;
    lstm_backward_row(dgates + row, dc + e, dh_output + e, dh_carried + e, gates + row, c + e, c_prev + e, hidden);
    if (recurrent_scale) scale_row(drecurrent + row, dgates + row, recurrent_scale, 4 * hidden);
  });
}

// GRU step, one row: gate holds the input projections [3H], recurrent the recurrent ones; hn_saved gets hn.
WN_GATE_CLONES void gru_forward_row(float* __restrict h, float* __restrict gate, float* __restrict hn_saved,
                     const float* __restrict recurrent, const float* __restrict h_prev, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) rnn_cell::gru_forward<Activations>(gate + j, recurrent + j, hidden, h_prev[j], hn_saved[j], h[j]);
}

void gru_step_forward(float* h, float* gates, float* hn_saved, const float* hidden_projection, const float* h_prev,
                      int64_t batch, int64_t hidden) {
  for_step_rows(batch, hidden, [&](int64_t n) {
    const int64_t e = n * hidden, row = n * 3 * hidden;
    gru_forward_row(h + e, gates + row, hn_saved + e, hidden_projection + row, h_prev + e, hidden);
  });
}

// GRU step backward, one row: di, dr [3H] (rnn_cell::gru_backward), and dh_next, which holds the carried dh and
// gets the direct part of dh_{t−1} (the caller adds dhidden · W_hh to it).
WN_GATE_CLONES void gru_backward_row(float* __restrict di, float* __restrict dr, float* __restrict dh_next,
                      const float* __restrict dh_output, const float* __restrict gate,
                      const float* __restrict hn_saved, const float* __restrict h_prev, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    dh_next[j] = rnn_cell::gru_backward(di + j, dr + j, gate + j, hidden, hn_saved[j], h_prev[j], dh_output[j] + dh_next[j]);
  }
}

// With a weight-normalized w_hh, drecurrent [batch, 3H] also gets dhidden ⊙ s_hh, as for the LSTM.
void gru_step_backward(float* dinput, float* dhidden, float* drecurrent, float* dh_next, const float* dh_output,
                       const float* gates, const float* hn_saved, const float* h_prev, const float* recurrent_scale,
                       int64_t batch, int64_t hidden) {
  for_step_rows(batch, hidden, [&](int64_t n) {
    const int64_t e = n * hidden, row = n * 3 * hidden;
    gru_backward_row(dinput + row, dhidden + row, dh_next + e, dh_output + e, gates + row, hn_saved + e, h_prev + e,
                     hidden);
    if (recurrent_scale) scale_row(drecurrent + row, dhidden + row, recurrent_scale, 3 * hidden);
  });
}

}  // namespace

#include "weightnorm/ops/rnn_time_loop.inc"

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
