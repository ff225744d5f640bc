// The recurrent-layer ops: a whole LSTM/GRU layer's forward and backward through time (one call each), the
// embedding lookup and its scatter-add gradient, and the row copies the sequence layers slice and stack states
// with. Arguments are converted once and re-checked cheaply (ts/rnn.ts validates first with friendlier messages);
// scratch memory is a Storage that lives for the call; the compute code (cpu/rnn.cc, cuda/rnn.cu) allocates nothing.
#include <napi.h>

#include <array>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "../cpu/rnn.h"
#include "dispatch.h"
#include "errors.h"
#include "storage.h"
#include "tensor.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/rnn.cuh"
#endif

namespace weightnorm::binding {
namespace {

TensorWrap* optional_tensor(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  return &TensorWrap::From(info[i], name);
}

float* data_or_null(TensorWrap* t) { return t ? t->data() : nullptr; }

void expect_shape(Napi::Env env, const char* function, const TensorWrap* t, const std::vector<int64_t>& shape,
                  const char* name) {
  if (t && t->shape() != shape)
    throw_range_error(env, std::string(function) + ": " + name + ": expected " + shape_string(shape) + ", got " +
                               shape_string(t->shape()));
}

Device same_device(Napi::Env env, const char* function, std::initializer_list<std::pair<TensorWrap*, const char*>> tensors) {
  const TensorWrap* first = nullptr;
  for (const auto& [t, name] : tensors) {
    if (!t) continue;
    if (!first) first = t;
    else if (t->device() != first->device())
      throw_type_error(env, std::string(function) + ": " + name + ": expected a tensor on " +
                                device_name(first->device()) + ", got one on " + device_name(t->device()));
  }
  return first ? first->device() : Device::kCpu;
}

struct Made {
  Napi::Object object;
  float* data;
};

Made make(Napi::Env env, Device device, std::vector<int64_t> shape) {
  Napi::Object object = new_tensor(env, device, std::move(shape));
  return {object, TensorWrap::From(object, "output").data()};
}

// Scratch for one call (nothing when floats is 0).
std::shared_ptr<Storage> scratch(Device device, int64_t floats) {
  return floats > 0 ? Storage::allocate(device, static_cast<size_t>(floats) * sizeof(float)) : nullptr;
}

// The geometry of x [steps, batch, input], w_ih [gates·hidden, input], w_hh [gates·hidden, hidden], checked.
RnnGeometry geometry_of(Napi::Env env, const char* function, const std::string& cell, const TensorWrap& x,
                        const TensorWrap& w_ih, const TensorWrap& w_hh) {
  RnnGeometry g;
  g.cell = cell == "lstm" ? RnnCell::kLstm : RnnCell::kGru;
  if (x.shape().size() != 3) throw_range_error(env, std::string(function) + ": x: expected [steps, batch, input], got " + shape_string(x.shape()));
  g.steps = x.shape()[0];
  g.batch = x.shape()[1];
  g.input_size = x.shape()[2];
  if (w_hh.shape().size() != 2 || w_hh.shape()[0] != g.gates() * w_hh.shape()[1])
    throw_range_error(env, std::string(function) + ": weights.wHh: expected [" + std::to_string(g.gates()) +
                               "·hidden, hidden], got " + shape_string(w_hh.shape()));
  g.hidden_size = w_hh.shape()[1];
  expect_shape(env, function, &w_ih, {g.gate_width(), g.input_size}, "weights.wIh");
  return g;
}

// The weights object { wIh, wHh, scaleIh?, scaleHh?, bIh?, bHh? } of rnnForward and rnnBackward (RnnWeights: with a
// scale, the matrix is a weight-normalized v and the scale its g/‖v‖ per gate row), read and checked together.
struct LayerWeights {
  TensorWrap* w_ih;
  TensorWrap* w_hh;
  TensorWrap* scale_ih;
  TensorWrap* scale_hh;
  TensorWrap* b_ih;
  TensorWrap* b_hh;

  LayerWeights(Napi::Env env, const Napi::Value& value, const char* function) {
    const OptionsReader weights(env, value, function, "weights");
    w_ih = &weights.tensor("wIh");
    w_hh = &weights.tensor("wHh");
    scale_ih = weights.optional_tensor("scaleIh");
    scale_hh = weights.optional_tensor("scaleHh");
    b_ih = weights.optional_tensor("bIh");
    b_hh = weights.optional_tensor("bHh");
  }

  // The vectors are [gates·hidden], one per gate row.
  void check_vectors(Napi::Env env, const char* function, const RnnGeometry& g) const {
    expect_shape(env, function, scale_ih, {g.gate_width()}, "weights.scaleIh");
    expect_shape(env, function, scale_hh, {g.gate_width()}, "weights.scaleHh");
    expect_shape(env, function, b_ih, {g.gate_width()}, "weights.bIh");
    expect_shape(env, function, b_hh, {g.gate_width()}, "weights.bHh");
  }

  std::array<std::pair<TensorWrap*, const char*>, 6> named() const {
    return {{{w_ih, "weights.wIh"}, {w_hh, "weights.wHh"}, {scale_ih, "weights.scaleIh"}, {scale_hh, "weights.scaleHh"},
            {b_ih, "weights.bIh"}, {b_hh, "weights.bHh"}}};
  }

  RnnWeights data() const {
    return RnnWeights{w_ih->data(), w_hh->data(), data_or_null(scale_ih), data_or_null(scale_hh), data_or_null(b_ih),
                      data_or_null(b_hh)};
  }
};

// Every tensor of the call on one device (the first one's).
Device same_device(Napi::Env env, const char* function, std::initializer_list<std::pair<TensorWrap*, const char*>> tensors,
                   const LayerWeights& weights) {
  const Device device = same_device(env, function, tensors);
  for (const auto& [t, name] : weights.named()) {
    if (t && t->device() != device)
      throw_type_error(env, std::string(function) + ": " + name + ": expected a tensor on " + device_name(device) +
                                ", got one on " + device_name(t->device()));
  }
  return device;
}

// rnnForward(cell, x [T, N, I], h0 [N, H], c0 [N, H] | null, weights)
//   -> { y [T (+1 for an LSTM), N, H], savedGates [T, N, gates·H], savedState [T, N, H] }
Napi::Value RnnForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* function = "rnnForward";
  const std::string cell = parse_kind(env, info[0], function, "cell", {"lstm", "gru"});
  TensorWrap& x = TensorWrap::From(info[1], "x");
  TensorWrap& h0 = TensorWrap::From(info[2], "h0");
  TensorWrap* c0 = optional_tensor(info, 3, "c0");
  const LayerWeights weights(env, info[4], function);
  const Device device = same_device(env, function, {{&x, "x"}, {&h0, "h0"}, {c0, "c0"}}, weights);
  const RnnGeometry g = geometry_of(env, function, cell, x, *weights.w_ih, *weights.w_hh);
  expect_shape(env, function, &h0, {g.batch, g.hidden_size}, "h0");
  if (g.cell == RnnCell::kLstm && !c0) throw_type_error(env, std::string(function) + ": c0: expected a tensor for an LSTM, got null");
  expect_shape(env, function, c0, {g.batch, g.hidden_size}, "c0");
  weights.check_vectors(env, function, g);
  return guarded(env, [&]() -> Napi::Value {
    Made y = make(env, device, {g.output_rows(), g.batch, g.hidden_size});
    Made gates = make(env, device, {g.steps, g.batch, g.gate_width()});
    Made state = make(env, device, {g.steps, g.batch, g.hidden_size});
    const std::shared_ptr<Storage> workspace = scratch(device, g.forward_workspace_floats());
    WN_DISPATCH(device, rnn_forward, y.data, gates.data, state.data, workspace ? workspace->data() : nullptr, x.data(),
                h0.data(), data_or_null(c0), weights.data(), g);
    return named_results(env, {{"y", y.object}, {"savedGates", gates.object}, {"savedState", state.object}});
  });
}

// rnnBackward(cell, dy, x, h0, c0 | null, weights, y, savedGates, savedState,
//             { wantDx, wantDh0, wantDc0, wantDwIh, wantDwHh, wantDbIh, wantDbHh })
//   -> { dx?, dh0?, dc0?, dwIh?, dwHh?, dbIh?, dbHh? }: dwIh and dwHh are the gradients of the effective weights.
Napi::Value RnnBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* function = "rnnBackward";
  const std::string cell = parse_kind(env, info[0], function, "cell", {"lstm", "gru"});
  TensorWrap& dy = TensorWrap::From(info[1], "dy");
  TensorWrap& x = TensorWrap::From(info[2], "x");
  TensorWrap& h0 = TensorWrap::From(info[3], "h0");
  TensorWrap* c0 = optional_tensor(info, 4, "c0");
  const LayerWeights weights(env, info[5], function);
  TensorWrap& y = TensorWrap::From(info[6], "y");
  TensorWrap& saved_gates = TensorWrap::From(info[7], "savedGates");
  TensorWrap& saved_state = TensorWrap::From(info[8], "savedState");
  const OptionsReader options(env, info[9], function, "options");
  const bool want_dx = options.boolean("wantDx"), want_dh0 = options.boolean("wantDh0"),
             want_dc0 = options.boolean("wantDc0"), want_dw_ih = options.boolean("wantDwIh"),
             want_dw_hh = options.boolean("wantDwHh"), want_db_ih = options.boolean("wantDbIh"),
             want_db_hh = options.boolean("wantDbHh");
  const Device device = same_device(env, function, {{&dy, "dy"}, {&x, "x"}, {&h0, "h0"}, {c0, "c0"}, {&y, "y"}, {&saved_gates, "savedGates"}, {&saved_state, "savedState"}}, weights);
  const RnnGeometry g = geometry_of(env, function, cell, x, *weights.w_ih, *weights.w_hh);
  const std::vector<int64_t> state_shape{g.batch, g.hidden_size};
  expect_shape(env, function, &h0, state_shape, "h0");
  if (g.cell == RnnCell::kLstm && !c0) throw_type_error(env, std::string(function) + ": c0: expected a tensor for an LSTM, got null");
  expect_shape(env, function, c0, state_shape, "c0");
  weights.check_vectors(env, function, g);
  expect_shape(env, function, &y, {g.output_rows(), g.batch, g.hidden_size}, "y");
  expect_shape(env, function, &dy, {g.output_rows(), g.batch, g.hidden_size}, "dy");
  expect_shape(env, function, &saved_gates, {g.steps, g.batch, g.gate_width()}, "savedGates");
  expect_shape(env, function, &saved_state, {g.steps, g.batch, g.hidden_size}, "savedState");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object result = Napi::Object::New(env);
    auto wanted = [&](bool want, const char* name, std::vector<int64_t> shape) -> float* {
      if (!want) return nullptr;
      Made made = make(env, device, std::move(shape));
      result.Set(name, made.object);
      return made.data;
    };
    RnnGradients grads;
    grads.dx = wanted(want_dx, "dx", x.shape());
    grads.dh0 = wanted(want_dh0, "dh0", state_shape);
    grads.dc0 = wanted(want_dc0 && g.cell == RnnCell::kLstm, "dc0", state_shape);
    grads.dw_ih = wanted(want_dw_ih, "dwIh", weights.w_ih->shape());
    grads.dw_hh = wanted(want_dw_hh, "dwHh", weights.w_hh->shape());
    grads.db_ih = wanted(want_db_ih, "dbIh", {g.gate_width()});
    grads.db_hh = wanted(want_db_hh, "dbHh", {g.gate_width()});
    const std::shared_ptr<Storage> workspace = scratch(device, g.backward_workspace_floats());
    WN_DISPATCH(device, rnn_backward, grads, workspace ? workspace->data() : nullptr, dy.data(), x.data(), h0.data(),
                data_or_null(c0), weights.data(), y.data(), saved_gates.data(), saved_state.data(), g);
    return result;
  });
}

// embedding(indices [...] (integers as floats, checked by ts/), weight [num, dim]) -> [..., dim]
Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& indices = TensorWrap::From(info[0], "indices");
  TensorWrap& weight = TensorWrap::From(info[1], "weight");
  const Device device = same_device(env, "embedding", {{&indices, "indices"}, {&weight, "weight"}});
  if (weight.shape().size() != 2) throw_range_error(env, "embedding: weight: expected [numEmbeddings, embeddingDim], got " + shape_string(weight.shape()));
  return guarded(env, [&]() -> Napi::Value {
    std::vector<int64_t> shape = indices.shape();
    shape.push_back(weight.shape()[1]);
    Made out = make(env, device, std::move(shape));
    WN_DISPATCH(device, embedding_forward, out.data, indices.data(), weight.data(), indices.numel(), weight.shape()[0],
                weight.shape()[1]);
    return out.object;
  });
}

// embeddingBackward(dout [..., dim], indices [...], numEmbeddings, paddingIdx (-1: none)) -> dweight [num, dim]
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& dout = TensorWrap::From(info[0], "dout");
  TensorWrap& indices = TensorWrap::From(info[1], "indices");
  const double num = number_argument(info, 2, "numEmbeddings");
  const double padding = number_argument(info, 3, "paddingIdx");
  const Device device = same_device(env, "embeddingBackward", {{&dout, "dout"}, {&indices, "indices"}});
  const int64_t count = indices.numel();
  if (!(num >= 1)) throw_range_error(env, "embeddingBackward: numEmbeddings: expected an integer >= 1");
  const int64_t dim = dout.shape().empty() ? 0 : dout.shape().back();
  if (dout.numel() != count * dim) throw_range_error(env, "embeddingBackward: dout: expected one row per index, got " + shape_string(dout.shape()));
  return guarded(env, [&]() -> Napi::Value {
    Made dweight = make(env, device, {static_cast<int64_t>(num), dim});
    WN_DISPATCH(device, embedding_backward, dweight.data, indices.data(), dout.data(), count, static_cast<int64_t>(num),
                dim, static_cast<int64_t>(padding));
    return dweight.object;
  });
}

// copyRows(out, outRow, x, xRow, rows): out's rows [outRow, outRow + rows) = x's rows [xRow, xRow + rows), in place;
// a row is everything after the first axis (both tensors have the same row size).
Napi::Value CopyRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& out = TensorWrap::From(info[0], "out");
  const double out_row = number_argument(info, 1, "outRow");
  TensorWrap& x = TensorWrap::From(info[2], "x");
  const double x_row = number_argument(info, 3, "xRow");
  const double rows = number_argument(info, 4, "rows");
  const Device device = same_device(env, "copyRows", {{&out, "out"}, {&x, "x"}});
  if (out.shape().empty() || x.shape().empty()) throw_range_error(env, "copyRows: expected tensors with at least one axis");
  const int64_t row_size = out.shape()[0] == 0 ? 0 : out.numel() / out.shape()[0];
  const int64_t x_row_size = x.shape()[0] == 0 ? 0 : x.numel() / x.shape()[0];
  if (row_size != x_row_size && rows > 0)
    throw_range_error(env, "copyRows: x: expected rows of " + std::to_string(row_size) + " elements, got " + shape_string(x.shape()));
  if (!(out_row >= 0 && x_row >= 0 && rows >= 0) || out_row + rows > static_cast<double>(out.shape()[0]) ||
      x_row + rows > static_cast<double>(x.shape()[0]))
    throw_range_error(env, "copyRows: the rows are out of range");
  return guarded(env, [&]() -> Napi::Value {
    WN_DISPATCH(device, copy_floats, out.data() + static_cast<int64_t>(out_row) * row_size,
                x.data() + static_cast<int64_t>(x_row) * row_size, static_cast<int64_t>(rows) * row_size);
    return env.Undefined();
  });
}

// swapLeadingAxes(x [a, b, ...]) -> [b, a, ...]
Napi::Value SwapLeadingAxes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& x = TensorWrap::From(info[0], "x");
  if (x.shape().size() < 2) throw_range_error(env, "swapLeadingAxes: x: expected at least two axes, got " + shape_string(x.shape()));
  return guarded(env, [&]() -> Napi::Value {
    std::vector<int64_t> shape = x.shape();
    std::swap(shape[0], shape[1]);
    const int64_t a = x.shape()[0], b = x.shape()[1];
    const int64_t inner = a * b == 0 ? 0 : x.numel() / (a * b);
    Made out = make(env, x.device(), std::move(shape));
    WN_DISPATCH(x.device(), swap_leading_axes, out.data, x.data(), a, b, inner);
    return out.object;
  });
}

}  // namespace

void register_rnn_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("rnnForward", Napi::Function::New(env, RnnForward));
  exports.Set("rnnBackward", Napi::Function::New(env, RnnBackward));
  exports.Set("embedding", Napi::Function::New(env, Embedding));
  exports.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward));
  exports.Set("copyRows", Napi::Function::New(env, CopyRows));
  exports.Set("swapLeadingAxes", Napi::Function::New(env, SwapLeadingAxes));
}

}  // namespace weightnorm::binding
