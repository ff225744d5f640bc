// The recurrent op family's plain data, shared by cpu/rnn.h and cuda/rnn.cuh (their entry points: ops/rnn.inc).
// Plain data and header-only host helpers, so that nvcc compiles it as well as g++.
#pragma once
#include <cstdint>

namespace weightnorm {

// Which cell a recurrent layer runs, with PyTorch's gate order inside each [gates * hidden, ...] weight:
//   kLstm: i, f, g, o (4 gates)    c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c')
//   kGru:  r, z, n    (3 gates)    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h
enum class RnnCell { kLstm, kGru };

// One layer (one direction) run over a whole sequence. Every tensor is row-major and time-major:
//   x [steps, batch, input_size], h0 and c0 [batch, hidden_size],
//   w_ih [gates·hidden, input_size], w_hh [gates·hidden, hidden_size], b_ih and b_hh [gates·hidden].
struct RnnGeometry {
  RnnCell cell = RnnCell::kLstm;
  int64_t steps = 0;
  int64_t batch = 0;
  int64_t input_size = 0;
  int64_t hidden_size = 0;

  int64_t gates() const { return cell == RnnCell::kLstm ? 4 : 3; }
  int64_t gate_width() const { return gates() * hidden_size; }
  // Rows of y: the hidden state of every step, and for an LSTM one more row holding the final cell state.
  int64_t output_rows() const { return cell == RnnCell::kLstm ? steps + 1 : steps; }
  // Floats of the saved gates ([steps, batch, gates·hidden]) and of the saved per-step state ([steps, batch,
  // hidden]: the LSTM's cell state c_t, the GRU's W_hn h_{t-1} + b_hn), which the backward reads.
  int64_t saved_gate_floats() const { return steps * batch * gate_width(); }
  int64_t saved_state_floats() const { return steps * batch * hidden_size; }
  // Scratch floats the forward and backward need (the caller provides them; nothing is allocated inside). The LSTM
  // forward keeps b_ih + b_hh there (added once to the input projection, so the per-step recurrent GEMM accumulates
  // with no epilogue pass) and, on the CPU with a weight-normalized w_hh, one step's raw product h·vᵀ, which the
  // gate kernel scales and adds (instead of an epilogue pass over the gates); the GRU keeps one step's recurrent
  // projection (r scales its n part, so it cannot accumulate).
  int64_t forward_workspace_floats() const {
    return cell == RnnCell::kGru ? batch * gate_width() : gate_width() + batch * gate_width();
  }
  int64_t backward_workspace_floats() const {
    const int64_t input_side = steps * batch * gate_width();  // d(pre-activations) of the input projection
    const int64_t hidden_side = cell == RnnCell::kGru ? input_side : 0;  // GRU: d(W_hh h + b_hh) differs from it
    // + the carried dh and dc, + one step's recurrent gate gradients scaled by s_hh (read only when w_hh is
    // weight-normalized; 1/steps of the input side, so always reserved rather than a second size to agree on).
    return input_side + hidden_side + 2 * batch * hidden_size + batch * gate_width();
  }
};

// A layer's matrices and biases. A matrix weight-normalized with one norm per gate row (w = g·v/‖v‖, dim 0, the
// default) comes as v with its per-row scale s = g/‖v‖, as nn.Linear's does: the forward GEMMs run on v and apply s
// to their output columns in the GEMM epilogue, and the backward scales the gate gradients by s before the products
// that contract over the gate rows (dh_{t−1} and dx), so w = s ⊙ v is never formed (Salimans & Kingma 2016, §2:
// the forward is y = s ⊙ (v·x)). A null scale: the matrix is the plain w. Biases may be null (no bias).
struct RnnWeights {
  const float* w_ih = nullptr;      // [gates·hidden, input_size]: w, or v when scale_ih is set
  const float* w_hh = nullptr;      // [gates·hidden, hidden_size]: w, or v when scale_hh is set
  const float* scale_ih = nullptr;  // [gates·hidden] or null
  const float* scale_hh = nullptr;  // [gates·hidden] or null
  const float* b_ih = nullptr;      // [gates·hidden] or null
  const float* b_hh = nullptr;      // [gates·hidden] or null
};

// What a backward writes; a null pointer is not wanted. dw_ih and dw_hh are the gradients of the effective weights
// w = s ⊙ v (for a weight-normalized matrix the caller turns dw into dv and dg with the weight-norm backward: one
// pass that reduces Σ dw·v per row and projects, Salimans & Kingma 2016, §2.1).
struct RnnGradients {
  float* dx = nullptr;     // [steps, batch, input_size]
  float* dh0 = nullptr;    // [batch, hidden_size]
  float* dc0 = nullptr;    // [batch, hidden_size] (LSTM)
  float* dw_ih = nullptr;  // [gates·hidden, input_size]
  float* dw_hh = nullptr;  // [gates·hidden, hidden_size]
  float* db_ih = nullptr;  // [gates·hidden]
  float* db_hh = nullptr;  // [gates·hidden]

  // A backward over nothing (no step, batch row or unit) leaves every wanted gradient zero: the initial states
  // pass straight through to the final ones and no weight took part. zero(pointer, count) is the backend's fill
  // (it skips a null pointer); both backends call this, so they agree on which outputs that covers.
  template <class Zero>
  void zero_all(const RnnGeometry& geometry, Zero&& zero) const {
    const int64_t state = geometry.batch * geometry.hidden_size, width = geometry.gate_width();
    zero(dx, geometry.steps * geometry.batch * geometry.input_size);
    zero(dh0, state);
    zero(dc0, geometry.cell == RnnCell::kLstm ? state : 0);
    zero(dw_ih, width * geometry.input_size);
    zero(dw_hh, width * geometry.hidden_size);
    zero(db_ih, width);
    zero(db_hh, width);
  }
};

}  // namespace weightnorm
