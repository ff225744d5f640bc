// The recurrent op family's plain data, shared by cpu/rnn.h and cuda/rnn.cuh (their entry points: ops/rnn.inc).
// Plain data only, so that nvcc compiles it for device code as well as g++ for the host.
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
  // Scratch floats the forward and backward need (the caller provides them; nothing is allocated inside).
  int64_t forward_workspace_floats() const { return cell == RnnCell::kGru ? batch * gate_width() : 0; }
  int64_t backward_workspace_floats() const {
    const int64_t input_side = steps * batch * gate_width();  // d(pre-activations) of the input projection
    const int64_t hidden_side = cell == RnnCell::kGru ? input_side : 0;  // GRU: d(W_hh h + b_hh) differs from it
    return input_side + hidden_side + 2 * batch * hidden_size;  // + the carried dh and dc
  }
};

}  // namespace weightnorm
