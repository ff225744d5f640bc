// The per-hidden-unit equations of the recurrent cells, written once for cpu/rnn.cc and cuda/rnn.cu (each backend
// walks the units its own way and supplies its own sigmoid/tanh, the `Activations` policy). Gate order and layouts:
// weightnorm/rnn.h. Every pointer points at unit j of a batch row of gates [gates·H]: p[0] is the first gate's
// value for the unit, p[hidden] the second's, and so on.
#pragma once
#include <cstdint>

#include "weightnorm/host_device.h"

namespace weightnorm::rnn_cell {

// LSTM forward: the pre-activations of i, f, g, o -> the activated gates (written to gate, which the backward
// reads), c' = f ⊙ c + i ⊙ g and h' = o ⊙ tanh(c').
template <class Activations>
WN_HOST_DEVICE void lstm_forward(float* gate, int64_t hidden, float pre_i, float pre_f, float pre_g, float pre_o,
                                     float c_prev, float& c, float& h) {
  const float i = Activations::sigmoid(pre_i);
  const float f = Activations::sigmoid(pre_f);
  const float g = Activations::tanh(pre_g);
  const float o = Activations::sigmoid(pre_o);
  gate[0] = i;
  gate[hidden] = f;
  gate[2 * hidden] = g;
  gate[3 * hidden] = o;
  c = f * c_prev + i * g;
  h = o * Activations::tanh(c);
}

// LSTM backward: dh (the output's gradient plus the one carried from step t+1), dc (carried; replaced by dc for
// step t−1) and tanh(c_t) -> the gradients of the four pre-activations.
WN_HOST_DEVICE void lstm_backward(float* dgate, const float* gate, int64_t hidden, float tanh_c, float c_prev,
                                      float dh, float& dc) {
  const float i = gate[0], f = gate[hidden], g = gate[2 * hidden], o = gate[3 * hidden];
  const float dcell = dc + dh * o * (1.0f - tanh_c * tanh_c);
  dgate[0] = dcell * g * i * (1.0f - i);
  dgate[hidden] = dcell * c_prev * f * (1.0f - f);
  dgate[2 * hidden] = dcell * i * (1.0f - g * g);
  dgate[3 * hidden] = dh * tanh_c * o * (1.0f - o);
  dc = dcell * f;
}

// GRU forward: gate holds the input projections x·W_iᵀ + b_i, recurrent the recurrent ones h·W_hᵀ + b_h; gate is
// overwritten with r, z, n; hn (the recurrent n part, which r scales) is kept for the backward.
template <class Activations>
WN_HOST_DEVICE void gru_forward(float* gate, const float* recurrent, int64_t hidden, float h_prev, float& hn,
                                    float& h) {
  const float r = Activations::sigmoid(gate[0] + recurrent[0]);
  const float z = Activations::sigmoid(gate[hidden] + recurrent[hidden]);
  hn = recurrent[2 * hidden];
  const float candidate = Activations::tanh(gate[2 * hidden] + r * hn);
  gate[0] = r;
  gate[hidden] = z;
  gate[2 * hidden] = candidate;
  h = (1.0f - z) * candidate + z * h_prev;
}

// GRU backward: the gradients of the input projections (di) and of the recurrent ones (dr; they differ only in the n
// slot, where r scales the recurrent part), from dh (the output's gradient plus the carried one); returns the direct
// part of dh_{t−1}, z ⊙ dh (the caller adds dr · W_hh).
WN_HOST_DEVICE float gru_backward(float* di, float* dr, const float* gate, int64_t hidden, float hn, float h_prev,
                                      float dh) {
  const float r = gate[0], z = gate[hidden], candidate = gate[2 * hidden];
  const float dcandidate = dh * (1.0f - z) * (1.0f - candidate * candidate);
  const float dreset = dcandidate * hn * r * (1.0f - r);
  const float dupdate = dh * (h_prev - candidate) * z * (1.0f - z);
  di[0] = dr[0] = dreset;
  di[hidden] = dr[hidden] = dupdate;
  di[2 * hidden] = dcandidate;
  dr[2 * hidden] = dcandidate * r;
  return dh * z;
}

}  // namespace weightnorm::rnn_cell
