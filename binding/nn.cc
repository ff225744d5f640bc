// The training-stack ops: elementwise, reductions, loss, GEMM, convolution, pooling, normalization, optimizers.
// Each function converts its arguments once, re-checks devices and sizes cheaply (ts/ has validated them with
// friendlier messages), allocates outputs and calls cpu:: or cuda::. In-place ops (axpby, optimizer steps) write
// into the tensors they are given and return undefined.
#include <napi.h>

#include <cmath>
#include <initializer_list>
#include <memory>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include "../cpu/conv.h"
#include "../cpu/elementwise.h"
#include "../cpu/gemm.h"
#include "../cpu/loss.h"
#include "../cpu/normalization.h"
#include "../cpu/optim.h"
#include "../cpu/reduce.h"
#include "../cpu/weightnorm.h"
#include "dispatch.h"
#include "errors.h"
#include "tensor.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/conv.cuh"
#include "../cuda/elementwise.cuh"
#include "../cuda/gemm.cuh"
#include "../cuda/loss.cuh"
#include "../cuda/normalization.cuh"
#include "../cuda/optim.cuh"
#include "../cuda/reduce.cuh"
#include "../cuda/weightnorm.cuh"
#endif

namespace weightnorm::binding {
namespace {

class Args {
 public:
  explicit Args(const Napi::CallbackInfo& info) : info_(info), env_(info.Env()) {}
  Napi::Env env() const { return env_; }
  TensorWrap& tensor(size_t i, const char* name) const { return TensorWrap::From(info_[i], name); }
  TensorWrap* optional_tensor(size_t i, const char* name) const { return optional_tensor_argument(info_[i], name); }
  float number(size_t i, const char* name) const { return static_cast<float>(number_argument(info_, i, name)); }
  int64_t count(size_t i, const char* name) const {
    const double d = number_argument(info_, i, name);
    if (!(d >= 0) || d != static_cast<double>(static_cast<int64_t>(d)))
      throw_range_error(env_, std::string(name) + ": expected a non-negative integer");
    return static_cast<int64_t>(d);
  }
  uint64_t seed(size_t i, const char* name) const { return static_cast<uint64_t>(count(i, name)); }
  bool flag(size_t i) const { return info_[i].ToBoolean().Value(); }
  ChannelLayout layout(size_t i) const {
    ChannelLayout l;
    l.outer = count(i, "outer");
    l.channels = count(i + 1, "channels");
    l.inner = count(i + 2, "inner");
    return l;
  }

 private:
  const Napi::CallbackInfo& info_;
  Napi::Env env_;
};

float* data_of(TensorWrap* t) { return t ? t->data() : nullptr; }

// The elements of an optional tensor as T (float or bfloat16; the caller has checked the tensor's dtype).
template <class T>
T* typed_data(TensorWrap* t) {
  if (!t) return nullptr;
  if constexpr (std::is_same_v<T, float>) return t->data();
  else return t->bf16_data();
}

// ----------------------------------------------------------------------------------------------------------------
// Elementwise.

// binary(op: 'add' | 'multiply', a, b) -> a + b or a * b (same element count; the result has a's shape)
Napi::Value Binary(const Napi::CallbackInfo& info) {
  Args args(info);
  const std::string op = parse_kind(args.env(), info[0], "binary", "op", {"add", "multiply"});
  TensorWrap& a = args.tensor(1, "a");
  TensorWrap& b = args.tensor(2, "b");
  const Device device = common_device(args.env(), {{&a, "a"}, {&b, "b"}});
  expect_count(args.env(), b, a.numel(), "b");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output out = output(args.env(), device, a.shape());
    if (op == "add") WN_DISPATCH(device, add, out.data, a.data(), b.data(), a.numel());
    else WN_DISPATCH(device, multiply, out.data, a.data(), b.data(), a.numel());
    return out.object;
  });
}

// scale(x, alpha) -> alpha * x
Napi::Value Scale(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  const float alpha = args.number(1, "alpha");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output out = output(args.env(), x.device(), x.shape());
    WN_DISPATCH(x.device(), scale, out.data, x.data(), alpha, x.numel());
    return out.object;
  });
}

// axpby(y, alpha, x, beta): y = alpha * x + beta * y, in place.
Napi::Value Axpby(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& y = args.tensor(0, "y");
  const float alpha = args.number(1, "alpha");
  TensorWrap& x = args.tensor(2, "x");
  const float beta = args.number(3, "beta");
  const Device device = common_device(args.env(), {{&y, "y"}, {&x, "x"}});
  expect_count(args.env(), x, y.numel(), "x");
  return guarded(args.env(), [&]() -> Napi::Value {
    WN_DISPATCH(device, axpby, y.data(), alpha, x.data(), beta, y.numel());
    return args.env().Undefined();
  });
}

// ownsStorageAlone(x) -> boolean: whether no other live handle (a view, an alias) shares x's storage. The backward
// engine (ts/autograd.ts) then makes a leaf's gradient its .grad as it is instead of copying it: .grad is changed
// in place later (accumulation, gradient clipping), and that must not reach any other tensor.
Napi::Value OwnsStorageAlone(const Napi::CallbackInfo& info) {
  const TensorWrap& x = TensorWrap::FromAnyType(info[0], "x");
  return Napi::Boolean::New(info.Env(), x.storage().use_count() == 1);
}

// full(shape, value, device)
Napi::Value Full(const Napi::CallbackInfo& info) {
  Args args(info);
  std::vector<int64_t> shape = parse_shape(args.env(), info[0], "shape");
  const float value = args.number(1, "value");
  const Device device = parse_device(args.env(), info[2], "device");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output out = output(args.env(), device, shape);
    WN_DISPATCH(device, fill, out.data, value, element_count(shape));
    return out.object;
  });
}

// reshape(x, shape) -> a new handle on the same storage (a view)
Napi::Value Reshape(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  std::vector<int64_t> shape = parse_shape(args.env(), info[1], "shape");
  if (element_count(shape) != x.numel())
    throw_range_error(args.env(), "shape: " + shape_string(shape) + " does not have the " +
                                      std::to_string(x.numel()) + " elements of " + shape_string(x.shape()));
  return TensorWrap::Create(args.env(), x.storage(), std::move(shape));
}

// activation(kind: 'relu' | 'tanh', x, negativeSlope) -> y
Napi::Value Activation(const Napi::CallbackInfo& info) {
  Args args(info);
  const std::string kind = parse_kind(args.env(), info[0], "activation", "kind", {"relu", "tanh"});
  TensorWrap& x = args.tensor(1, "x");
  const float slope = args.number(2, "negativeSlope");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output out = output(args.env(), x.device(), x.shape());
    if (kind == "tanh") WN_DISPATCH(x.device(), tanh_forward, out.data, x.data(), x.numel());
    else WN_DISPATCH(x.device(), relu_forward, out.data, x.data(), slope, x.numel());
    return out.object;
  });
}

// activationBackward(kind, dy, saved, negativeSlope) -> dx; saved is x for relu, y for tanh
Napi::Value ActivationBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  const std::string kind = parse_kind(args.env(), info[0], "activationBackward", "kind", {"relu", "tanh"});
  TensorWrap& dy = args.tensor(1, "dy");
  TensorWrap& saved = args.tensor(2, "saved");
  const float slope = args.number(3, "negativeSlope");
  const Device device = common_device(args.env(), {{&dy, "dy"}, {&saved, "saved"}});
  expect_count(args.env(), saved, dy.numel(), "saved");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output out = output(args.env(), device, dy.shape());
    if (kind == "tanh") WN_DISPATCH(device, tanh_backward, out.data, dy.data(), saved.data(), dy.numel());
    else WN_DISPATCH(device, relu_backward, out.data, dy.data(), saved.data(), slope, dy.numel());
    return out.object;
  });
}

// dropout(x, p, seed) -> { y, mask }
Napi::Value Dropout(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  const float p = args.number(1, "p");
  const uint64_t seed = args.seed(2, "seed");
  if (!(p >= 0.0f && p < 1.0f)) throw_range_error(args.env(), "p: expected a probability in [0, 1)");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output y = output(args.env(), x.device(), x.shape());
    Output mask = output(args.env(), x.device(), x.shape());
    WN_DISPATCH(x.device(), dropout_forward, y.data, mask.data, x.data(), p, seed, x.numel());
    return named_results(args.env(), {{"y", y.object}, {"mask", mask.object}});
  });
}

// gaussianNoise(x, std, seed) -> y
Napi::Value GaussianNoise(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  const float std = args.number(1, "std");
  const uint64_t seed = args.seed(2, "seed");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output y = output(args.env(), x.device(), x.shape());
    WN_DISPATCH(x.device(), gaussian_noise, y.data, x.data(), std, seed, x.numel());
    return y.object;
  });
}

// channelOp(op: 'biasAdd' | 'scale', x, perChannel, outer, channels, inner) -> x + b[k] or x * s[k]
Napi::Value ChannelOp(const Napi::CallbackInfo& info) {
  Args args(info);
  const std::string op = parse_kind(args.env(), info[0], "channelOp", "op", {"biasAdd", "scale"});
  TensorWrap& x = args.tensor(1, "x");
  TensorWrap& per_channel = args.tensor(2, "perChannel");
  const ChannelLayout layout = args.layout(3);
  const Device device = common_device(args.env(), {{&x, "x"}, {&per_channel, "perChannel"}});
  expect_count(args.env(), x, layout.elements(), "x");
  expect_count(args.env(), per_channel, layout.channels, "perChannel");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output out = output(args.env(), device, x.shape());
    if (op == "scale") WN_DISPATCH(device, channel_scale, out.data, x.data(), per_channel.data(), layout);
    else WN_DISPATCH(device, channel_bias_add, out.data, x.data(), per_channel.data(), layout);
    return out.object;
  });
}

// ----------------------------------------------------------------------------------------------------------------
// Reductions and loss.

// sumAll(x) -> [1]
Napi::Value SumAll(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output out = output(args.env(), x.device(), {1});
    WN_DISPATCH(x.device(), sum_all, out.data, x.data(), x.numel());
    return out.object;
  });
}

// channelReduce(op: 'sum' | 'dot', a, b | null, outer, channels, inner) -> [channels]
Napi::Value ChannelReduce(const Napi::CallbackInfo& info) {
  Args args(info);
  const std::string op = parse_kind(args.env(), info[0], "channelReduce", "op", {"sum", "dot"});
  TensorWrap& a = args.tensor(1, "a");
  TensorWrap* b = args.optional_tensor(2, "b");
  const ChannelLayout layout = args.layout(3);
  const Device device = common_device(args.env(), {{&a, "a"}, {b, "b"}});
  expect_count(args.env(), a, layout.elements(), "a");
  if (op == "dot" && !b) throw_type_error(args.env(), "b: expected a tensor for 'dot'");
  if (b) expect_count(args.env(), *b, layout.elements(), "b");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output out = output(args.env(), device, {layout.channels});
    if (op == "dot") WN_DISPATCH(device, channel_dot, out.data, a.data(), b->data(), layout);
    else WN_DISPATCH(device, channel_sum, out.data, a.data(), layout);
    return out.object;
  });
}

// softmaxCrossEntropy(logits [batch, classes], labels [batch]) -> { loss [1], probs }
Napi::Value SoftmaxCrossEntropy(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& logits = args.tensor(0, "logits");
  TensorWrap& labels = args.tensor(1, "labels");
  const Device device = common_device(args.env(), {{&logits, "logits"}, {&labels, "labels"}});
  if (logits.shape().size() != 2) throw_range_error(args.env(), "logits: expected [batch, classes]");
  const int64_t batch = logits.shape()[0], classes = logits.shape()[1];
  expect_count(args.env(), labels, batch, "labels");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output loss = output(args.env(), device, {1});
    Output probs = output(args.env(), device, logits.shape());
    WN_DISPATCH(device, softmax_cross_entropy_forward, loss.data, probs.data, logits.data(), labels.data(), batch, classes);
    return named_results(args.env(), {{"loss", loss.object}, {"probs", probs.object}});
  });
}

// softmaxCrossEntropyBackward(probs, labels, dloss [1]) -> dlogits
Napi::Value SoftmaxCrossEntropyBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& probs = args.tensor(0, "probs");
  TensorWrap& labels = args.tensor(1, "labels");
  TensorWrap& dloss = args.tensor(2, "dloss");
  const Device device = common_device(args.env(), {{&probs, "probs"}, {&labels, "labels"}, {&dloss, "dloss"}});
  if (probs.shape().size() != 2) throw_range_error(args.env(), "probs: expected [batch, classes]");
  const int64_t batch = probs.shape()[0], classes = probs.shape()[1];
  expect_count(args.env(), labels, batch, "labels");
  expect_count(args.env(), dloss, 1, "dloss");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output dlogits = output(args.env(), device, probs.shape());
    WN_DISPATCH(device, softmax_cross_entropy_backward, dlogits.data, probs.data(), labels.data(), dloss.data(), batch,
                classes);
    return dlogits.object;
  });
}

// ----------------------------------------------------------------------------------------------------------------
// GEMM.

// Named options are closed: a misspelled field ("transposeb") would otherwise be dropped without a word and the
// product computed untransposed.
void expect_known_fields(Napi::Env env, const Napi::Object& object, const std::string& where,
                         std::initializer_list<const char*> known) {
  const Napi::Array names = object.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); ++i) {
    const std::string name = names.Get(i).ToString().Utf8Value();
    bool found = false;
    for (const char* candidate : known) found = found || name == candidate;
    if (found) continue;
    std::string expected;
    size_t index = 0;
    for (const char* candidate : known) {
      if (index > 0) expected += index + 1 == known.size() ? " or " : ", ";
      expected += candidate;
      ++index;
    }
    throw_type_error(env, where + ": unknown field '" + name + "' (expected " + expected + ")");
  }
}

// gemm(a, b, { m, n, k, transposeA?, transposeB?, epilogue? }) -> out [m, n]: out = op(a)·op(b) through the
// epilogue { rowScale?, columnScale?, rowBias?, columnBias?, subtractCoefficient?, subtractMatrix?, beta?, out?,
// rawOut? } (out: accumulate into this tensor when beta != 0, else write it). a and b are both float32 or both
// bfloat16; out, subtractMatrix and rawOut have their element type, the per-row and per-column vectors are float32.
// Unknown fields in either object are TypeErrors.
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Args args(info);
  Napi::Env env = args.env();
  TensorWrap& a = TensorWrap::FromFloating(info[0], "gemm: a");
  TensorWrap& b = TensorWrap::FromFloating(info[1], "gemm: b");
  const DType dtype = a.dtype();
  if (b.dtype() != dtype)
    throw_type_error(env, std::string("gemm: b: expected a's element type ") + dtype_name(dtype) + ", got " +
                              dtype_name(b.dtype()));
  const OptionsReader options(env, info[2], "gemm", "options");
  expect_known_fields(env, info[2].As<Napi::Object>(), "gemm: options",
                      {"m", "n", "k", "transposeA", "transposeB", "epilogue"});
  const int64_t m = options.integer("m", 0), n = options.integer("n", 0), k = options.integer("k", 0);
  GemmShape shape{m, n, k};
  shape.transpose_a = options.has("transposeA") && options.boolean("transposeA");
  shape.transpose_b = options.has("transposeB") && options.boolean("transposeB");
  const bool has_epilogue = options.has("epilogue");
  const Napi::Object no_epilogue = Napi::Object::New(env);
  const OptionsReader e = has_epilogue ? options.object("epilogue") : OptionsReader(env, no_epilogue, "gemm", "options.epilogue");
  if (has_epilogue)
    expect_known_fields(env, options.value("epilogue").As<Napi::Object>(), "gemm: options.epilogue",
                        {"rowScale", "columnScale", "rowBias", "columnBias", "subtractCoefficient", "subtractMatrix",
                         "beta", "out", "rawOut"});
  // Vectors are float32; matrices the size of out have out's element type.
  auto field = [&](const char* name, bool matrix) -> TensorWrap* {
    if (!e.has(name)) return nullptr;
    if (!matrix) return &e.tensor(name);
    TensorWrap& t = TensorWrap::FromFloating(e.value(name), e.where(name).c_str());
    if (t.dtype() != dtype)
      throw_type_error(env, e.where(name) + ": expected the operands' element type " + dtype_name(dtype) + ", got " +
                                dtype_name(t.dtype()));
    return &t;
  };
  TensorWrap* row_scale = field("rowScale", false);
  TensorWrap* column_scale = field("columnScale", false);
  TensorWrap* row_bias = field("rowBias", false);
  TensorWrap* column_bias = field("columnBias", false);
  TensorWrap* subtract_coefficient = field("subtractCoefficient", false);
  TensorWrap* subtract_matrix = field("subtractMatrix", true);
  TensorWrap* into = field("out", true);
  TensorWrap* raw_out = field("rawOut", true);
  const float beta = e.has("beta") ? e.float32("beta") : 0.0f;
  const Device device = common_device(env, {{&a, "gemm: a"},
                                            {&b, "gemm: b"},
                                            {row_scale, "gemm: rowScale"},
                                            {column_scale, "gemm: columnScale"},
                                            {row_bias, "gemm: rowBias"},
                                            {column_bias, "gemm: columnBias"},
                                            {subtract_coefficient, "gemm: subtractCoefficient"},
                                            {subtract_matrix, "gemm: subtractMatrix"},
                                            {into, "gemm: out"},
                                            {raw_out, "gemm: rawOut"}});
  expect_count(env, a, m * k, "gemm: a");
  expect_count(env, b, k * n, "gemm: b");
  if (row_scale) expect_count(env, *row_scale, m, "gemm: rowScale");
  if (row_bias) expect_count(env, *row_bias, m, "gemm: rowBias");
  if (column_scale) expect_count(env, *column_scale, n, "gemm: columnScale");
  if (column_bias) expect_count(env, *column_bias, n, "gemm: columnBias");
  if (subtract_coefficient) expect_count(env, *subtract_coefficient, m, "gemm: subtractCoefficient");
  if (subtract_matrix) expect_count(env, *subtract_matrix, m * n, "gemm: subtractMatrix");
  if (!subtract_coefficient != !subtract_matrix)
    throw_type_error(env, "gemm: options.epilogue: subtractCoefficient and subtractMatrix go together");
  if (into) expect_count(env, *into, m * n, "gemm: out");
  if (raw_out) expect_count(env, *raw_out, m * n, "gemm: rawOut");
  if (beta != 0.0f && !into)
    throw_type_error(env, "gemm: options.epilogue.out: expected a tensor to accumulate into when beta != 0");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object out_object = into ? e.value("out").As<Napi::Object>() : new_tensor(env, device, {m, n}, dtype);
    TensorWrap& out = TensorWrap::FromAnyType(out_object, "out");
    // The same call for float32 and bfloat16 out (T); both backends take the same epilogue struct.
    auto run = [&](auto* out_data, const auto* a_data, const auto* b_data) {
      using T = std::remove_pointer_t<decltype(out_data)>;
      GemmEpilogueOf<T> epilogue;
      epilogue.row_scale = data_of(row_scale);
      epilogue.column_scale = data_of(column_scale);
      epilogue.row_bias = data_of(row_bias);
      epilogue.column_bias = data_of(column_bias);
      epilogue.subtract_coefficient = data_of(subtract_coefficient);
      epilogue.subtract_matrix = typed_data<T>(subtract_matrix);
      epilogue.raw_out = typed_data<T>(raw_out);
      epilogue.beta = beta;
      WN_DISPATCH(device, gemm, out_data, a_data, b_data, shape, epilogue);
    };
    if (dtype == DType::kFloat32) run(out.data(), a.data(), b.data());
    else run(out.bf16_data(), a.bf16_data(), b.bf16_data());
    return out_object;
  });
}

// ----------------------------------------------------------------------------------------------------------------
// Convolution and pooling.

Conv2dGeometry conv_geometry(const TensorWrap& x, const TensorWrap& w, int64_t stride, int64_t padding) {
  Conv2dGeometry g{};
  g.batch = x.shape()[0];
  g.in_channels = x.shape()[1];
  g.in_height = x.shape()[2];
  g.in_width = x.shape()[3];
  g.out_channels = w.shape()[0];
  g.kernel_height = w.shape()[2];
  g.kernel_width = w.shape()[3];
  g.stride = stride;
  g.padding = padding;
  return g;
}

void check_conv(Napi::Env env, const TensorWrap& x, const TensorWrap& w, int64_t stride, int64_t padding) {
  if (x.shape().size() != 4) throw_range_error(env, "x: expected [batch, channels, height, width], got " + shape_string(x.shape()));
  if (w.shape().size() != 4 || w.shape()[1] != x.shape()[1])
    throw_range_error(env, "w: expected [outChannels, " + std::to_string(x.shape()[1]) + ", kh, kw], got " +
                               shape_string(w.shape()));
  if (stride < 1) throw_range_error(env, "stride: expected >= 1");
  if (x.shape()[2] + 2 * padding < w.shape()[2] || x.shape()[3] + 2 * padding < w.shape()[3])
    throw_range_error(env, "w: the kernel is larger than the padded input " + shape_string(x.shape()));
}

// conv2d(x, w, bias | null, stride, padding) -> y
Napi::Value Conv2d(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  TensorWrap& w = args.tensor(1, "w");
  TensorWrap* bias = args.optional_tensor(2, "bias");
  const int64_t stride = args.count(3, "stride"), padding = args.count(4, "padding");
  const Device device = common_device(args.env(), {{&x, "x"}, {&w, "w"}, {bias, "bias"}});
  check_conv(args.env(), x, w, stride, padding);
  if (bias) expect_count(args.env(), *bias, w.shape()[0], "bias");
  return guarded(args.env(), [&]() -> Napi::Value {
    const Conv2dGeometry g = conv_geometry(x, w, stride, padding);
    Output y = output(args.env(), device, {g.batch, g.out_channels, g.out_height(), g.out_width()});
    WN_DISPATCH(device, conv2d_forward, y.data, x.data(), w.data(), data_of(bias), g);
    return y.object;
  });
}

// Which gradients a convolution backward is asked for ({ wantDx, wantDw, wantDbias }).
struct WantedGradients {
  bool dx, dw, dbias;
};

WantedGradients wanted_gradients(const OptionsReader& options) {
  return {options.boolean("wantDx"), options.boolean("wantDw"), options.boolean("wantDbias")};
}

// conv2dBackward(dy, x, w, { stride, padding, wantDx, wantDw, wantDbias }) -> { dx?, dw?, dbias? }
Napi::Value Conv2dBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dy = args.tensor(0, "dy");
  TensorWrap& x = args.tensor(1, "x");
  TensorWrap& w = args.tensor(2, "w");
  const OptionsReader options(args.env(), info[3], "conv2dBackward", "options");
  const int64_t stride = options.integer("stride", 0), padding = options.integer("padding", 0);
  const WantedGradients want = wanted_gradients(options);
  const Device device = common_device(args.env(), {{&dy, "dy"}, {&x, "x"}, {&w, "w"}});
  check_conv(args.env(), x, w, stride, padding);
  return guarded(args.env(), [&]() -> Napi::Value {
    const Conv2dGeometry g = conv_geometry(x, w, stride, padding);
    expect_count(args.env(), dy, g.batch * g.out_channels * g.out_height() * g.out_width(), "dy");
    GradientOutputs gradients(args.env(), device);
    float* dx = gradients.add(want.dx, "dx", x.shape());
    float* dw = gradients.add(want.dw, "dw", w.shape());
    float* dbias = gradients.add(want.dbias, "dbias", {g.out_channels});
    WN_DISPATCH(device, conv2d_backward, dx, dw, dbias, dy.data(), x.data(), w.data(), g);
    return gradients.result();
  });
}

// The general convolution family: x and w are 4-D (ts/ views a 1-D convolution as height 1); per-axis options are
// [height, width] pairs.

struct AxisPair {
  int64_t height, width;
};

AxisPair axis_pair(const OptionsReader& options, const char* name, int64_t minimum) {
  const Napi::Value field = options.value(name);
  auto fail = [&]() {
    throw_type_error(options.env(), options.where(name) + ": expected [height, width], integers >= " +
                                        std::to_string(minimum));
  };
  if (!field.IsArray()) fail();
  const Napi::Array array = field.As<Napi::Array>();
  if (array.Length() != 2) fail();
  int64_t values[2];
  for (uint32_t i = 0; i < 2; ++i) {
    const Napi::Value item = array.Get(i);
    if (!item.IsNumber()) fail();
    const double d = item.As<Napi::Number>().DoubleValue();
    if (!(d >= double(minimum) && d <= 9007199254740991.0) || d != double(int64_t(d))) fail();
    values[i] = int64_t(d);
  }
  return {values[0], values[1]};
}

// The direct convolution's geometry from the options, x's batch and the two spatial sizes it maps between.
ConvGeometry general_geometry(const OptionsReader& options, int64_t batch, int64_t in_channels, int64_t out_channels,
                              const std::vector<int64_t>& w_shape, AxisPair in_size, AxisPair out_size) {
  ConvGeometry g;
  const AxisPair stride = axis_pair(options, "stride", 1), padding = axis_pair(options, "padding", 0);
  const AxisPair dilation = axis_pair(options, "dilation", 1);
  g.batch = batch;
  g.in_channels = in_channels;
  g.out_channels = out_channels;
  g.groups = options.integer("groups", 1);
  g.in_height = in_size.height;
  g.in_width = in_size.width;
  g.out_height = out_size.height;
  g.out_width = out_size.width;
  g.kernel_height = w_shape[2];
  g.kernel_width = w_shape[3];
  g.stride_height = stride.height;
  g.stride_width = stride.width;
  g.padding_height = padding.height;
  g.padding_width = padding.width;
  g.dilation_height = dilation.height;
  g.dilation_width = dilation.width;
  return g;
}

void check_general_geometry(Napi::Env env, const ConvGeometry& g) {
  if (g.in_channels <= 0 || g.out_channels <= 0 || g.in_channels % g.groups != 0 || g.out_channels % g.groups != 0)
    throw_range_error(env, "groups: expected a divisor of both channel counts (" + std::to_string(g.in_channels) +
                               ", " + std::to_string(g.out_channels) + "), got " + std::to_string(g.groups));
  if (g.in_height <= 0 || g.in_width <= 0 || g.out_height <= 0 || g.out_width <= 0 ||
      g.out_height > natural_out_size(g.in_height, g.kernel_height, g.stride_height, g.padding_height,
                                      g.dilation_height) ||
      g.out_width > natural_out_size(g.in_width, g.kernel_width, g.stride_width, g.padding_width, g.dilation_width))
    throw_range_error(env, "w: the dilated kernel does not fit the padded input");
}

void check_rank4(Napi::Env env, const TensorWrap& t, const char* name) {
  if (t.shape().size() != 4)
    throw_range_error(env, std::string(name) + ": expected 4 dimensions, got " + shape_string(t.shape()));
}


// conv(x [N, C, H, W], w [OC, C/groups, kh, kw], bias | null, { stride, padding, dilation, groups, channelScale?,
// rawOut? }) -> y [N, OC, OH, OW]; with channelScale [OC], y = channelScale ⊙ conv(x, w) + bias and rawOut (like y,
// optional) receives conv(x, w).
Napi::Value Conv(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  TensorWrap& w = args.tensor(1, "w");
  TensorWrap* bias = args.optional_tensor(2, "bias");
  const OptionsReader options(args.env(), info[3], "conv", "options");
  TensorWrap* channel_scale = options.optional_tensor("channelScale");
  TensorWrap* raw_out = options.optional_tensor("rawOut");
  const Device device = common_device(args.env(), {{&x, "x"}, {&w, "w"}, {bias, "bias"}, {channel_scale, "channelScale"}, {raw_out, "rawOut"}});
  check_rank4(args.env(), x, "x");
  check_rank4(args.env(), w, "w");
  const AxisPair stride = axis_pair(options, "stride", 1), padding = axis_pair(options, "padding", 0);
  const AxisPair dilation = axis_pair(options, "dilation", 1);
  const AxisPair out_size{
      natural_out_size(x.shape()[2], w.shape()[2], stride.height, padding.height, dilation.height),
      natural_out_size(x.shape()[3], w.shape()[3], stride.width, padding.width, dilation.width)};
  const ConvGeometry g = general_geometry(options, x.shape()[0], x.shape()[1], w.shape()[0], w.shape(),
                                          {x.shape()[2], x.shape()[3]}, out_size);
  check_general_geometry(args.env(), g);
  if (w.shape()[1] != g.in_channels_per_group())
    throw_range_error(args.env(), "w: expected " + std::to_string(g.in_channels_per_group()) +
                                      " input channels per group, got " + shape_string(w.shape()));
  if (bias) expect_count(args.env(), *bias, g.out_channels, "bias");
  if (channel_scale) expect_count(args.env(), *channel_scale, g.out_channels, "channelScale");
  if (raw_out && !channel_scale)
    throw_type_error(args.env(), "conv: options.rawOut: expected options.channelScale with it (the raw product of a scaled convolution)");
  if (raw_out) expect_count(args.env(), *raw_out, g.batch * g.out_channels * g.out_spatial(), "rawOut");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output y = output(args.env(), device, {g.batch, g.out_channels, g.out_height, g.out_width});
    ConvOutputScale scale;
    scale.channel_scale = data_of(channel_scale);
    scale.raw_out = data_of(raw_out);
    if (g.batch > 0) WN_DISPATCH(device, conv_forward, y.data, x.data(), w.data(), data_of(bias), g, scale);
    return y.object;
  });
}

// convBackward(dy, x, w, { stride, padding, dilation, groups, wantDx, wantDw, wantDbias, dwScale?,
// dwSubtractCoefficient?, dwSubtractMatrix? }) -> { dx?, dw?, dbias? }; with dwScale, dw = dwScale ⊙ (dy x col^T)
// - dwSubtractCoefficient ⊙ dwSubtractMatrix (the weight-normalized v gradient).
Napi::Value ConvBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dy = args.tensor(0, "dy");
  TensorWrap& x = args.tensor(1, "x");
  TensorWrap& w = args.tensor(2, "w");
  const OptionsReader options(args.env(), info[3], "convBackward", "options");
  const WantedGradients want = wanted_gradients(options);
  TensorWrap* dw_scale = options.optional_tensor("dwScale");
  TensorWrap* dw_coefficient = options.optional_tensor("dwSubtractCoefficient");
  TensorWrap* dw_matrix = options.optional_tensor("dwSubtractMatrix");
  const Device device = common_device(args.env(), {{&dy, "dy"}, {&x, "x"}, {&w, "w"}, {dw_scale, "dwScale"},
                                                   {dw_coefficient, "dwSubtractCoefficient"}, {dw_matrix, "dwSubtractMatrix"}});
  check_rank4(args.env(), dy, "dy");
  check_rank4(args.env(), x, "x");
  check_rank4(args.env(), w, "w");
  const ConvGeometry g = general_geometry(options, x.shape()[0], x.shape()[1], w.shape()[0], w.shape(),
                                          {x.shape()[2], x.shape()[3]}, {dy.shape()[2], dy.shape()[3]});
  check_general_geometry(args.env(), g);
  if (w.shape()[1] != g.in_channels_per_group()) throw_range_error(args.env(), "w: wrong input channels per group");
  if (dy.shape()[0] != g.batch || dy.shape()[1] != g.out_channels)
    throw_range_error(args.env(), "dy: expected the batch of x and the output channels of w, got " + shape_string(dy.shape()));
  if ((dw_scale == nullptr) != (dw_coefficient == nullptr) || (dw_scale == nullptr) != (dw_matrix == nullptr))
    throw_type_error(args.env(), "convBackward: options.dwScale, dwSubtractCoefficient, dwSubtractMatrix: expected all or none");
  if (dw_scale) {
    expect_count(args.env(), *dw_scale, g.out_channels, "dwScale");
    expect_count(args.env(), *dw_coefficient, g.out_channels, "dwSubtractCoefficient");
    expect_count(args.env(), *dw_matrix, w.numel(), "dwSubtractMatrix");
  }
  return guarded(args.env(), [&]() -> Napi::Value {
    GradientOutputs gradients(args.env(), device);
    float* dx = gradients.add(want.dx, "dx", x.shape());
    float* dw = gradients.add(want.dw, "dw", w.shape());
    float* dbias = gradients.add(want.dbias, "dbias", {g.out_channels});
    ConvWeightGradientEpilogue epilogue;
    epilogue.channel_scale = data_of(dw_scale);
    epilogue.subtract_coefficient = data_of(dw_coefficient);
    epilogue.subtract_matrix = data_of(dw_matrix);
    WN_DISPATCH(device, conv_backward, dx, dw, dbias, dy.data(), x.data(), w.data(), g, epilogue);
    return gradients.result();
  });
}

// convTranspose(x [N, C, H, W], w [C, OC/groups, kh, kw], bias | null, { stride, padding, dilation, groups,
// outputSize: [OH, OW] }) -> y [N, OC, OH, OW] (the adjoint of the direct convolution from [OH, OW] to [H, W]).
Napi::Value ConvTranspose(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  TensorWrap& w = args.tensor(1, "w");
  TensorWrap* bias = args.optional_tensor(2, "bias");
  const OptionsReader options(args.env(), info[3], "convTranspose", "options");
  const Device device = common_device(args.env(), {{&x, "x"}, {&w, "w"}, {bias, "bias"}});
  check_rank4(args.env(), x, "x");
  check_rank4(args.env(), w, "w");
  const AxisPair output_size = axis_pair(options, "outputSize", 1);
  const int64_t groups = options.integer("groups", 1);
  if (w.shape()[0] != x.shape()[1])
    throw_range_error(args.env(), "w: expected " + std::to_string(x.shape()[1]) + " input channels, got " + shape_string(w.shape()));
  const ConvGeometry g = general_geometry(options, x.shape()[0], w.shape()[1] * groups, x.shape()[1], w.shape(),
                                          output_size, {x.shape()[2], x.shape()[3]});
  check_general_geometry(args.env(), g);
  if (bias) expect_count(args.env(), *bias, g.in_channels, "bias");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output y = output(args.env(), device, {g.batch, g.in_channels, g.in_height, g.in_width});
    if (g.batch > 0) WN_DISPATCH(device, conv_transpose_forward, y.data, x.data(), w.data(), data_of(bias), g);
    return y.object;
  });
}

// convTransposeBackward(dy, x, w, { stride, padding, dilation, groups, wantDx, wantDw, wantDbias }) -> { dx?, dw?, dbias? }
Napi::Value ConvTransposeBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dy = args.tensor(0, "dy");
  TensorWrap& x = args.tensor(1, "x");
  TensorWrap& w = args.tensor(2, "w");
  const OptionsReader options(args.env(), info[3], "convTransposeBackward", "options");
  const WantedGradients want = wanted_gradients(options);
  const Device device = common_device(args.env(), {{&dy, "dy"}, {&x, "x"}, {&w, "w"}});
  check_rank4(args.env(), dy, "dy");
  check_rank4(args.env(), x, "x");
  check_rank4(args.env(), w, "w");
  const int64_t groups = options.integer("groups", 1);
  if (w.shape()[0] != x.shape()[1]) throw_range_error(args.env(), "w: wrong input channels");
  const ConvGeometry g = general_geometry(options, x.shape()[0], w.shape()[1] * groups, x.shape()[1], w.shape(),
                                          {dy.shape()[2], dy.shape()[3]}, {x.shape()[2], x.shape()[3]});
  check_general_geometry(args.env(), g);
  if (dy.shape()[0] != g.batch || dy.shape()[1] != g.in_channels)
    throw_range_error(args.env(), "dy: expected the batch of x and the output channels of w, got " + shape_string(dy.shape()));
  return guarded(args.env(), [&]() -> Napi::Value {
    GradientOutputs gradients(args.env(), device);
    float* dx = gradients.add(want.dx, "dx", x.shape());
    float* dw = gradients.add(want.dw, "dw", w.shape());
    float* dbias = gradients.add(want.dbias, "dbias", {g.in_channels});
    WN_DISPATCH(device, conv_transpose_backward, dx, dw, dbias, dy.data(), x.data(), w.data(), g);
    return gradients.result();
  });
}

PadGeometry pad_geometry(const OptionsReader& options, const std::vector<int64_t>& shape) {
  PadGeometry g;
  const int64_t rank = int64_t(shape.size());
  g.height = shape[rank - 2];
  g.width = shape[rank - 1];
  g.planes = 1;
  for (int64_t d = 0; d < rank - 2; ++d) g.planes *= shape[d];
  g.mode = options.choice<PadMode>("mode", {{"constant", PadMode::kConstant}, {"reflect", PadMode::kReflect},
                                            {"replicate", PadMode::kReplicate}});
  g.value = options.float32("value");
  g.top = options.whole_number("top");
  g.bottom = options.whole_number("bottom");
  g.left = options.whole_number("left");
  g.right = options.whole_number("right");
  return g;
}

void check_pad_geometry(Napi::Env env, const PadGeometry& g) {
  const bool mirrored = g.mode != PadMode::kConstant;
  if (g.height <= 0 || g.width <= 0 || g.out_height() <= 0 || g.out_width() <= 0)
    throw_range_error(env, "pad: expected a non-empty input and output");
  if (mirrored && (g.top < 0 || g.bottom < 0 || g.left < 0 || g.right < 0))
    throw_range_error(env, "pad: reflect and replicate need non-negative pads");
  if (g.mode == PadMode::kReflect && (g.top >= g.height || g.bottom >= g.height || g.left >= g.width || g.right >= g.width))
    throw_range_error(env, "pad: reflect needs pads smaller than the padded axis");
}

// pad(x [..., H, W] (rank >= 2), { top, bottom, left, right, mode, value }) -> y [..., OH, OW]
Napi::Value Pad(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  const OptionsReader options(args.env(), info[1], "pad", "options");
  if (x.shape().size() < 2) throw_range_error(args.env(), "x: expected at least 2 dimensions");
  const PadGeometry g = pad_geometry(options, x.shape());
  check_pad_geometry(args.env(), g);
  return guarded(args.env(), [&]() -> Napi::Value {
    std::vector<int64_t> shape = x.shape();
    shape[shape.size() - 2] = g.out_height();
    shape[shape.size() - 1] = g.out_width();
    Output y = output(args.env(), x.device(), shape);
    if (g.planes > 0) WN_DISPATCH(x.device(), pad_forward, y.data, x.data(), g);
    return y.object;
  });
}

// padBackward(dy, inputShape, { top, bottom, left, right, mode, value }) -> dx [inputShape]
Napi::Value PadBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dy = args.tensor(0, "dy");
  const std::vector<int64_t> shape = parse_shape(args.env(), info[1], "inputShape");
  const OptionsReader options(args.env(), info[2], "padBackward", "options");
  if (shape.size() < 2) throw_range_error(args.env(), "inputShape: expected at least 2 dimensions");
  const PadGeometry g = pad_geometry(options, shape);
  check_pad_geometry(args.env(), g);
  expect_count(args.env(), dy, g.planes * g.out_height() * g.out_width(), "dy");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output dx = output(args.env(), dy.device(), shape);
    if (g.planes > 0) WN_DISPATCH(dy.device(), pad_backward, dx.data, dy.data(), g);
    return dx.object;
  });
}

UpsampleGeometry upsample_geometry(Napi::Env env, const std::vector<int64_t>& shape, const Napi::CallbackInfo& info, size_t first) {
  Args args(info);
  if (shape.size() < 2) throw_range_error(env, "x: expected at least 2 dimensions");
  UpsampleGeometry g;
  g.height = shape[shape.size() - 2];
  g.width = shape[shape.size() - 1];
  g.planes = 1;
  for (size_t d = 0; d + 2 < shape.size(); ++d) g.planes *= shape[d];
  g.scale_height = args.count(first, "scaleHeight");
  g.scale_width = args.count(first + 1, "scaleWidth");
  if (g.height <= 0 || g.width <= 0 || g.scale_height <= 0 || g.scale_width <= 0)
    throw_range_error(env, "upsampleNearest: expected a non-empty input and positive scale factors");
  return g;
}

// upsampleNearest(x [..., H, W], scaleHeight, scaleWidth) -> y [..., H * scaleHeight, W * scaleWidth]
Napi::Value UpsampleNearest(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  const UpsampleGeometry g = upsample_geometry(args.env(), x.shape(), info, 1);
  return guarded(args.env(), [&]() -> Napi::Value {
    std::vector<int64_t> shape = x.shape();
    shape[shape.size() - 2] = g.out_height();
    shape[shape.size() - 1] = g.out_width();
    Output y = output(args.env(), x.device(), shape);
    if (g.planes > 0) WN_DISPATCH(x.device(), upsample_nearest_forward, y.data, x.data(), g);
    return y.object;
  });
}

// upsampleNearestBackward(dy, inputShape, scaleHeight, scaleWidth) -> dx [inputShape]
Napi::Value UpsampleNearestBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dy = args.tensor(0, "dy");
  const std::vector<int64_t> shape = parse_shape(args.env(), info[1], "inputShape");
  const UpsampleGeometry g = upsample_geometry(args.env(), shape, info, 2);
  expect_count(args.env(), dy, g.planes * g.out_height() * g.out_width(), "dy");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output dx = output(args.env(), dy.device(), shape);
    if (g.planes > 0) WN_DISPATCH(dy.device(), upsample_nearest_backward, dx.data, dy.data(), g);
    return dx.object;
  });
}

// maxPool2d(x [N, C, H, W], kernel, stride, relu) -> y (relu: pool relu(x), the ReLU fused; false when omitted)
Napi::Value MaxPool2d(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  const int64_t kernel = args.count(1, "kernel"), stride = args.count(2, "stride");
  const bool relu = args.flag(3);
  if (x.shape().size() != 4) throw_range_error(args.env(), "x: expected [batch, channels, height, width]");
  const int64_t height = x.shape()[2], width = x.shape()[3];
  if (kernel < 1 || stride < 1 || kernel > height || kernel > width)
    throw_range_error(args.env(), "kernel: expected 1 <= kernel <= the input's height and width, stride >= 1");
  return guarded(args.env(), [&]() -> Napi::Value {
    const int64_t planes = x.shape()[0] * x.shape()[1];
    Output y = output(args.env(), x.device(),
                      {x.shape()[0], x.shape()[1], (height - kernel) / stride + 1, (width - kernel) / stride + 1});
    WN_DISPATCH(x.device(), max_pool2d_forward, y.data, x.data(), planes, height, width, kernel, stride, relu);
    return y.object;
  });
}

// maxPool2dBackward(dy, x, kernel, stride, relu) -> dx (relu: x is the fused ReLU's input, dx its gradient)
Napi::Value MaxPool2dBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dy = args.tensor(0, "dy");
  TensorWrap& x = args.tensor(1, "x");
  const int64_t kernel = args.count(2, "kernel"), stride = args.count(3, "stride");
  const bool relu = args.flag(4);
  const Device device = common_device(args.env(), {{&dy, "dy"}, {&x, "x"}});
  if (x.shape().size() != 4 || kernel < 1 || stride < 1 || kernel > x.shape()[2] || kernel > x.shape()[3])
    throw_range_error(args.env(), "x, kernel: invalid pooling geometry");
  const int64_t planes = x.shape()[0] * x.shape()[1], height = x.shape()[2], width = x.shape()[3];
  expect_count(args.env(), dy, planes * ((height - kernel) / stride + 1) * ((width - kernel) / stride + 1), "dy");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output dx = output(args.env(), device, x.shape());
    WN_DISPATCH(device, max_pool2d_backward, dx.data, dy.data(), x.data(), planes, height, width, kernel, stride, relu);
    return dx.object;
  });
}

// globalAvgPool(x [N, C, H, W]) -> [N, C]
Napi::Value GlobalAvgPool(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  if (x.shape().size() != 4) throw_range_error(args.env(), "x: expected [batch, channels, height, width]");
  return guarded(args.env(), [&]() -> Napi::Value {
    const int64_t planes = x.shape()[0] * x.shape()[1];
    Output y = output(args.env(), x.device(), {x.shape()[0], x.shape()[1]});
    WN_DISPATCH(x.device(), global_avg_pool_forward, y.data, x.data(), planes, x.shape()[2] * x.shape()[3]);
    return y.object;
  });
}

// globalAvgPoolBackward(dy [N, C], inputShape) -> dx
Napi::Value GlobalAvgPoolBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dy = args.tensor(0, "dy");
  std::vector<int64_t> shape = parse_shape(args.env(), info[1], "inputShape");
  if (shape.size() != 4) throw_range_error(args.env(), "inputShape: expected 4 dimensions");
  expect_count(args.env(), dy, shape[0] * shape[1], "dy");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output dx = output(args.env(), dy.device(), shape);
    WN_DISPATCH(dy.device(), global_avg_pool_backward, dx.data, dy.data(), shape[0] * shape[1], shape[2] * shape[3]);
    return dx.object;
  });
}

// ----------------------------------------------------------------------------------------------------------------
// Normalization.

// batchNorm(x, gamma, beta, outer, channels, inner, eps) -> { y, mean, var, invstd }
Napi::Value BatchNorm(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  TensorWrap& gamma = args.tensor(1, "gamma");
  TensorWrap& beta = args.tensor(2, "beta");
  const ChannelLayout layout = args.layout(3);
  const float eps = args.number(6, "eps");
  const Device device = common_device(args.env(), {{&x, "x"}, {&gamma, "gamma"}, {&beta, "beta"}});
  expect_count(args.env(), x, layout.elements(), "x");
  expect_count(args.env(), gamma, layout.channels, "gamma");
  expect_count(args.env(), beta, layout.channels, "beta");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output y = output(args.env(), device, x.shape());
    Output mean = output(args.env(), device, {layout.channels});
    Output var = output(args.env(), device, {layout.channels});
    Output invstd = output(args.env(), device, {layout.channels});
    WN_DISPATCH(device, batch_norm_forward, y.data, mean.data, var.data, invstd.data, x.data(), gamma.data(), beta.data(),
                layout, eps);
    return named_results(args.env(),
                         {{"y", y.object}, {"mean", mean.object}, {"var", var.object}, {"invstd", invstd.object}});
  });
}

// batchNormBackward(dy, x, mean, invstd, gamma, outer, channels, inner) -> { dx, dgamma, dbeta }
Napi::Value BatchNormBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dy = args.tensor(0, "dy");
  TensorWrap& x = args.tensor(1, "x");
  TensorWrap& mean = args.tensor(2, "mean");
  TensorWrap& invstd = args.tensor(3, "invstd");
  TensorWrap& gamma = args.tensor(4, "gamma");
  const ChannelLayout layout = args.layout(5);
  const Device device = common_device(
      args.env(), {{&dy, "dy"}, {&x, "x"}, {&mean, "mean"}, {&invstd, "invstd"}, {&gamma, "gamma"}});
  expect_count(args.env(), dy, layout.elements(), "dy");
  expect_count(args.env(), x, layout.elements(), "x");
  for (auto [t, name] : {std::pair{&mean, "mean"}, {&invstd, "invstd"}, {&gamma, "gamma"}})
    expect_count(args.env(), *t, layout.channels, name);
  return guarded(args.env(), [&]() -> Napi::Value {
    Output dx = output(args.env(), device, x.shape());
    Output dgamma = output(args.env(), device, {layout.channels});
    Output dbeta = output(args.env(), device, {layout.channels});
    WN_DISPATCH(device, batch_norm_backward, dx.data, dgamma.data, dbeta.data, dy.data(), x.data(), mean.data(),
                invstd.data(), gamma.data(), layout);
    return named_results(args.env(), {{"dx", dx.object}, {"dgamma", dgamma.object}, {"dbeta", dbeta.object}});
  });
}

// batchNormInference(x, runningMean, runningVar, gamma, beta, outer, channels, inner, eps) -> y
Napi::Value BatchNormInference(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  TensorWrap& running_mean = args.tensor(1, "runningMean");
  TensorWrap& running_var = args.tensor(2, "runningVar");
  TensorWrap& gamma = args.tensor(3, "gamma");
  TensorWrap& beta = args.tensor(4, "beta");
  const ChannelLayout layout = args.layout(5);
  const float eps = args.number(8, "eps");
  const Device device = common_device(args.env(), {{&x, "x"},
                                                   {&running_mean, "runningMean"},
                                                   {&running_var, "runningVar"},
                                                   {&gamma, "gamma"},
                                                   {&beta, "beta"}});
  expect_count(args.env(), x, layout.elements(), "x");
  for (auto [t, name] : {std::pair{&running_mean, "runningMean"}, {&running_var, "runningVar"}, {&gamma, "gamma"},
                         {&beta, "beta"}})
    expect_count(args.env(), *t, layout.channels, name);
  return guarded(args.env(), [&]() -> Napi::Value {
    Output y = output(args.env(), device, x.shape());
    WN_DISPATCH(device, batch_norm_inference, y.data, x.data(), running_mean.data(), running_var.data(), gamma.data(),
                beta.data(), layout, eps);
    return y.object;
  });
}

// batchNormInferenceBackward(dy, x, runningMean, runningVar, gamma,
//                            { outer, channels, inner, eps, wantDx, wantDgamma, wantDbeta }) -> { dx?, dgamma?, dbeta? }
Napi::Value BatchNormInferenceBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dy = args.tensor(0, "dy");
  TensorWrap& x = args.tensor(1, "x");
  TensorWrap& running_mean = args.tensor(2, "runningMean");
  TensorWrap& running_var = args.tensor(3, "runningVar");
  TensorWrap& gamma = args.tensor(4, "gamma");
  const OptionsReader options(args.env(), info[5], "batchNormInferenceBackward", "options");
  const ChannelLayout layout = options.channel_layout();
  const float eps = options.float32("eps");
  const bool want_dx = options.boolean("wantDx"), want_dgamma = options.boolean("wantDgamma"),
             want_dbeta = options.boolean("wantDbeta");
  const Device device = common_device(args.env(), {{&dy, "dy"},
                                                   {&x, "x"},
                                                   {&running_mean, "runningMean"},
                                                   {&running_var, "runningVar"},
                                                   {&gamma, "gamma"}});
  expect_count(args.env(), dy, layout.elements(), "dy");
  expect_count(args.env(), x, layout.elements(), "x");
  for (auto [t, name] : {std::pair{&running_mean, "runningMean"}, {&running_var, "runningVar"}, {&gamma, "gamma"}})
    expect_count(args.env(), *t, layout.channels, name);
  return guarded(args.env(), [&]() -> Napi::Value {
    GradientOutputs gradients(args.env(), device);
    float* dx = gradients.add(want_dx, "dx", x.shape());
    float* dgamma = gradients.add(want_dgamma, "dgamma", {layout.channels});
    float* dbeta = gradients.add(want_dbeta, "dbeta", {layout.channels});
    WN_DISPATCH(device, batch_norm_inference_backward, dx, dgamma, dbeta, dy.data(), x.data(), running_mean.data(),
                running_var.data(), gamma.data(), layout, eps);
    return gradients.result();
  });
}

// meanOnlyBatchNorm(x, bias, runningMean | null, outer, channels, inner) -> { y, mean }
// With runningMean (evaluation) the batch mean is not computed and `mean` is that tensor's copy.
Napi::Value MeanOnlyBatchNorm(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  TensorWrap& bias = args.tensor(1, "bias");
  TensorWrap* running_mean = args.optional_tensor(2, "runningMean");
  const ChannelLayout layout = args.layout(3);
  const Device device = common_device(args.env(), {{&x, "x"}, {&bias, "bias"}, {running_mean, "runningMean"}});
  expect_count(args.env(), x, layout.elements(), "x");
  expect_count(args.env(), bias, layout.channels, "bias");
  if (running_mean) expect_count(args.env(), *running_mean, layout.channels, "runningMean");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output y = output(args.env(), device, x.shape());
    Output mean = output(args.env(), device, {layout.channels});
    if (running_mean) WN_DISPATCH(device, scale, mean.data, running_mean->data(), 1.0f, layout.channels);
    WN_DISPATCH(device, mean_only_batch_norm_forward, y.data, mean.data, x.data(), bias.data(), layout, !running_mean);
    return named_results(args.env(), {{"y", y.object}, {"mean", mean.object}});
  });
}

// meanOnlyBatchNormBackward(dy, outer, channels, inner) -> { dx, dbias }
Napi::Value MeanOnlyBatchNormBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dy = args.tensor(0, "dy");
  const ChannelLayout layout = args.layout(1);
  expect_count(args.env(), dy, layout.elements(), "dy");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output dx = output(args.env(), dy.device(), dy.shape());
    Output dbias = output(args.env(), dy.device(), {layout.channels});
    WN_DISPATCH(dy.device(), mean_only_batch_norm_backward, dx.data, dbias.data, dy.data(), layout);
    return named_results(args.env(), {{"dx", dx.object}, {"dbias", dbias.object}});
  });
}

// ----------------------------------------------------------------------------------------------------------------
// Weight-norm coefficients for layers that keep a saved norm.

// weightNormScale(g, norm) -> g / norm
Napi::Value WeightNormScale(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& g = args.tensor(0, "g");
  TensorWrap& norm = args.tensor(1, "norm");
  const Device device = common_device(args.env(), {{&g, "g"}, {&norm, "norm"}});
  expect_count(args.env(), norm, g.numel(), "norm");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output scale = output(args.env(), device, g.shape());
    WN_DISPATCH(device, weightnorm_scale, scale.data, g.data(), norm.data(), g.numel());
    return scale.object;
  });
}

// weightNormCoefficients(dot, g, norm, eps) -> { dg, c1, c2 }
Napi::Value WeightNormCoefficients(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dot = args.tensor(0, "dot");
  TensorWrap& g = args.tensor(1, "g");
  TensorWrap& norm = args.tensor(2, "norm");
  const float eps = args.number(3, "eps");
  const Device device = common_device(args.env(), {{&dot, "dot"}, {&g, "g"}, {&norm, "norm"}});
  expect_count(args.env(), g, dot.numel(), "g");
  expect_count(args.env(), norm, dot.numel(), "norm");
  return guarded(args.env(), [&]() -> Napi::Value {
    const int64_t channels = dot.numel();
    Output dg = output(args.env(), device, g.shape());
    Output c1 = output(args.env(), device, {channels});
    Output c2 = output(args.env(), device, {channels});
    WN_DISPATCH(device, weightnorm_backward_coefficients, dg.data, c1.data, c2.data, dot.data(), g.data(), norm.data(),
                channels, eps);
    return named_results(args.env(), {{"dg", dg.object}, {"c1", c1.object}, {"c2", c2.object}});
  });
}

// ----------------------------------------------------------------------------------------------------------------
// The weight-normalized Linear (dim 0), one call per direction: the demo MLP's layers are small enough that the
// per-call cost (argument conversion, one JS object per intermediate) was most of weight norm's overhead per step.
// Each entry runs the same kernels in the same order as the separate calls did, so results are bit-identical.

// The sizes of a weight-normalized Linear, x [batch, in] and v [out, in] with g and norm [out], checked.
struct WeightNormLinearSizes {
  int64_t batch, out_features, in_features;
};
WeightNormLinearSizes weight_norm_linear_sizes(Napi::Env env, const char* function, const TensorWrap& x,
                                               const TensorWrap& v, const TensorWrap& g, const TensorWrap& norm) {
  if (x.shape().size() != 2 || v.shape().size() != 2 || x.shape()[1] != v.shape()[1])
    throw_range_error(env, std::string(function) + ": expected x [batch, in] and v [out, in], got " +
                               shape_string(x.shape()) + " and " + shape_string(v.shape()));
  const WeightNormLinearSizes sizes{x.shape()[0], v.shape()[0], v.shape()[1]};
  expect_count(env, g, sizes.out_features, "g");
  expect_count(env, norm, sizes.out_features, "norm");
  return sizes;
}

// weightNormLinear(x [batch, in], v [out, in], g [out], norm [out], bias [out] | null, keepForBackward) -> y:
//   scale = g / norm, t = x·vᵀ, y = t ⊙ scale + bias in one GEMM (w is never materialized). t is what the backward
//   needs besides the parameters; y carries it (TensorWrap::set_companion), freed with y, rather than as a tensor of
//   its own: a returned tensor costs a JS object, its wrap and its finalizer (~2-3 us to make and free), and on the
//   2-core EPYC VM the demo MLP's weight-normalized step was ~1% faster without the three per step. For the same
//   reason the backward recomputes the [out] scale rather than keep it. keepForBackward false (no backward can run:
//   inference, noGrad): t is not written at all.
Napi::Value WeightNormLinear(const Napi::CallbackInfo& info) {
  Args args(info);
  Napi::Env env = args.env();
  TensorWrap& x = args.tensor(0, "x");
  TensorWrap& v = args.tensor(1, "v");
  TensorWrap& g = args.tensor(2, "g");
  TensorWrap& norm = args.tensor(3, "norm");
  TensorWrap* bias = args.optional_tensor(4, "bias");
  const bool keep_for_backward = boolean_argument(info, 5, "weightNormLinear: keepForBackward");
  const Device device = common_device(env, {{&x, "x"}, {&v, "v"}, {&g, "g"}, {&norm, "norm"}, {bias, "bias"}});
  const WeightNormLinearSizes sizes = weight_norm_linear_sizes(env, "weightNormLinear", x, v, g, norm);
  const int64_t batch = sizes.batch, out_features = sizes.out_features, in_features = sizes.in_features;
  if (bias) expect_count(env, *bias, out_features, "bias");
  return guarded(env, [&]() -> Napi::Value {
    const std::shared_ptr<Storage> scale = Storage::allocate(device, static_cast<size_t>(out_features) * sizeof(float));
    // The GEMM writes every element of t.
    std::shared_ptr<Storage> t =
        keep_for_backward ? Storage::allocate(device, static_cast<size_t>(batch * out_features) * sizeof(float)) : nullptr;
    Output y = output(env, device, {batch, out_features});
    WN_DISPATCH(device, weightnorm_scale, scale->data(), g.data(), norm.data(), out_features);
    GemmEpilogue epilogue;
    epilogue.column_scale = scale->data();
    epilogue.column_bias = data_of(bias);
    epilogue.raw_out = t ? t->data() : nullptr;
    WN_DISPATCH(device, gemm, y.data, x.data(), v.data(), GemmShape{batch, out_features, in_features}.transposing_b(),
                epilogue);
    if (t) Napi::ObjectWrap<TensorWrap>::Unwrap(y.object)->set_companion(std::move(t));
    return y.object;
  });
}

// weightNormLinearBackward(dy, x, v, g, norm, y, { eps, wantDx, wantDv, wantDg, wantDbias })
//   -> { dx?, dv?, dg?, dbias? } (only the gradients asked for; y is the forward's output, which carries t), named options like
//   batchNormInferenceBackward's. weightnorm_linear_backward_prologue makes one pass over dy and t for
//   dot = Σ_batch dy ⊙ t per output, (dg, c1, c2) from dot (Salimans & Kingma 2016, §2.1), dy ⊙ scale (scale = g / norm
//   with the forward's arithmetic) and dbias = Σ_batch dy; then dx = (dy ⊙ scale)·v, and dv = c1 ⊙ (dyᵀ·x) − c2 ⊙ v in
//   the weight-gradient GEMM's epilogue. c1, c2 and dy ⊙ scale are scratch that lives for the call.
Napi::Value WeightNormLinearBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  Napi::Env env = args.env();
  TensorWrap& dy = args.tensor(0, "dy");
  TensorWrap& x = args.tensor(1, "x");
  TensorWrap& v = args.tensor(2, "v");
  TensorWrap& g = args.tensor(3, "g");
  TensorWrap& norm = args.tensor(4, "norm");
  TensorWrap& y = args.tensor(5, "y");
  const OptionsReader options(env, info[6], "weightNormLinearBackward", "options");
  const float eps = options.float32("eps");
  const bool want_dx = options.boolean("wantDx"), want_dv = options.boolean("wantDv"),
             want_dg = options.boolean("wantDg"), want_dbias = options.boolean("wantDbias");
  const Device device =
      common_device(env, {{&dy, "dy"}, {&x, "x"}, {&v, "v"}, {&g, "g"}, {&norm, "norm"}, {&y, "y"}});
  const WeightNormLinearSizes sizes = weight_norm_linear_sizes(env, "weightNormLinearBackward", x, v, g, norm);
  const int64_t batch = sizes.batch, out_features = sizes.out_features, in_features = sizes.in_features;
  expect_count(env, dy, batch * out_features, "dy");
  expect_count(env, y, batch * out_features, "y");
  const std::shared_ptr<Storage> t = y.companion();
  if (!t)  // weightNormLinear sizes t as y, whose count is checked above
    throw_type_error(env, "weightNormLinearBackward: y: expected the output of weightNormLinear with these x and v "
                          "(it carries t = x·vᵀ for the backward), got another tensor");
  return guarded(env, [&]() -> Napi::Value {
    GradientOutputs gradients(env, device);
    float* dx = gradients.add(want_dx, "dx", {batch, in_features});
    float* dv = gradients.add(want_dv, "dv", {out_features, in_features});
    float* dg = gradients.add(want_dg, "dg", g.shape());
    float* dbias = gradients.add(want_dbias, "dbias", {out_features});
    // [c1, c2, dg when not asked for (c2 needs it)], then dy ⊙ scale when dx is asked for.
    const int64_t scratch_floats = 3 * out_features + (dx ? batch * out_features : 0);
    const std::shared_ptr<Storage> scratch =
        Storage::allocate(device, static_cast<size_t>(scratch_floats) * sizeof(float));
    float* c1 = scratch->data();
    float* c2 = c1 + out_features;
    if (!dg) dg = c2 + out_features;
    float* scaled_dy = dx ? c2 + 2 * out_features : nullptr;
    WN_DISPATCH(device, weightnorm_linear_backward_prologue, dg, c1, c2, scaled_dy, dbias, dy.data(), t->data(),
                g.data(), norm.data(), batch, out_features, eps);
    // dv before dx: dv's epilogue reads v row by row, each thread its own rows, and dx's GEMM then packs v while
    // part of it is still in cache (the other order read v from memory twice: ~0.5% of the demo MLP's step).
    if (dv) {
      GemmEpilogue epilogue;
      epilogue.row_scale = c1;
      epilogue.subtract_coefficient = c2;
      epilogue.subtract_matrix = v.data();
      WN_DISPATCH(device, gemm, dv, dy.data(), x.data(), GemmShape{out_features, in_features, batch}.transposing_a(),
                  epilogue);
    }
    if (dx)
      WN_DISPATCH(device, gemm, dx, scaled_dy, v.data(), GemmShape{batch, in_features, out_features}, GemmEpilogue{});
    return gradients.result();
  });
}

// ----------------------------------------------------------------------------------------------------------------
// Optimizers (in place).

// The hyperparameters of a step (optimizerStep) or a group (optimizerSteps): lr and weightDecay, then SGD's
// momentum, dampening and nesterov, or Adam's and Adamax's beta1, beta2 and eps, each a TypeError naming it.
struct StepHyperparameters {
  SgdOptions sgd{};
  AdamOptions adam{};
};

StepHyperparameters read_hyperparameters(const OptionsReader& options, bool sgd) {
  StepHyperparameters h;
  const float lr = options.float32("lr");
  const float weight_decay = options.float32("weightDecay");
  // Braced lists are evaluated left to right, so the fields are read (and reported) in the order written.
  if (sgd)
    h.sgd = SgdOptions{lr, options.float32("momentum"), options.float32("dampening"), weight_decay,
                       options.boolean("nesterov")};
  else
    h.adam = AdamOptions{lr, options.float32("beta1"), options.float32("beta2"), options.float32("eps"), weight_decay};
  return h;
}

// optimizerStep(kind: 'sgd' | 'adam' | 'adamax', options): one in-place update of `param`. options:
//   every kind   { param, grad, step (>= 1, the parameter's own update count), lr, weightDecay,
//                  normOutput?: { norm, outer, channels, inner, eps } (also write ‖param‖ per channel into norm) }
//   'sgd'        + { momentum, dampening, nesterov, momentumBuffer: tensor | null (needed when momentum != 0) }
//   'adam'       + { beta1, beta2, eps, expAvg, expAvgSq }
//   'adamax'     + { beta1, beta2, eps, expAvg, expInf }
Napi::Value OptimizerStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string kind = parse_kind(env, info[0], "optimizerStep", "kind", {"sgd", "adam", "adamax"});
  const OptionsReader options(env, info[1], "optimizerStep", "options");
  TensorWrap& param = options.tensor("param");
  TensorWrap& grad = options.tensor("grad");
  const int64_t step = options.integer("step", 1);
  const bool sgd = kind == "sgd";
  // The optimizer's state: SGD's momentum buffer (optional), or Adam's / Adamax's two moments (both required).
  const char* state1_name = sgd ? "momentumBuffer" : "expAvg";
  const char* state2_name = kind == "adam" ? "expAvgSq" : "expInf";
  TensorWrap* state1 = sgd ? options.optional_tensor(state1_name) : &options.tensor(state1_name);
  TensorWrap* state2 = sgd ? nullptr : &options.tensor(state2_name);
  TensorWrap* norm = nullptr;
  ChannelLayout layout;
  float norm_eps = 0.0f;
  if (options.has("normOutput")) {
    const OptionsReader norm_output = options.object("normOutput");
    norm = &norm_output.tensor("norm");
    layout = norm_output.channel_layout();
    norm_eps = norm_output.float32("eps");
  }
  const StepHyperparameters h = read_hyperparameters(options, sgd);
  if (sgd && h.sgd.momentum != 0.0f && !state1)
    throw_type_error(env, options.where("momentumBuffer") + ": expected a tensor when momentum != 0, got " +
                              describe_value(info[1].As<Napi::Object>().Get("momentumBuffer")));
  const Device device = common_device(
      env, {{&param, "param"}, {&grad, "grad"}, {state1, state1_name}, {state2, state2_name}, {norm, "normOutput.norm"}});
  const int64_t count = param.numel();
  expect_count(env, grad, count, "grad");
  if (state1) expect_count(env, *state1, count, state1_name);
  if (state2) expect_count(env, *state2, count, state2_name);
  if (norm) {
    expect_count(env, param, layout.elements(), "param");
    expect_count(env, *norm, layout.channels, "normOutput.norm");
  }
  return guarded(env, [&]() -> Napi::Value {
    const NormOutput norm_output{data_of(norm), layout, norm_eps};
    const NormOutput* norm_pointer = norm ? &norm_output : nullptr;
    if (sgd) {
      WN_DISPATCH(device, sgd_step, param.data(), data_of(state1), grad.data(), count, h.sgd, step, norm_pointer);
      return env.Undefined();
    }
    if (kind == "adam")
      WN_DISPATCH(device, adam_step, param.data(), state1->data(), state2->data(), grad.data(), count, h.adam, step,
                  norm_pointer);
    else
      WN_DISPATCH(device, adamax_step, param.data(), state1->data(), state2->data(), grad.data(), count, h.adam, step,
                  norm_pointer);
    return env.Undefined();
  });
}

// optimizerSteps(kind, options): the multi-tensor form of optimizerStep, every parameter of a group in one call
// (PyTorch's foreach / fused optimizers), each updated with the same bits as its own optimizerStep. options: the
// group's { lr, weightDecay } and the kind's hyperparameters as above, and one entry per parameter in the arrays
//   params, grads, steps (each parameter's own count, >= 1), normOutputs ({ norm, outer, channels, inner, eps } or
//   null), and the state: 'sgd' momentumBuffers (tensor | null), 'adam' expAvgs and expAvgSqs, 'adamax' expAvgs and
//   expInfs. Everything is checked before the first parameter changes.
Napi::Value OptimizerSteps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* function = "optimizerSteps";
  const std::string kind = parse_kind(env, info[0], function, "kind", {"sgd", "adam", "adamax"});
  const OptionsReader options(env, info[1], function, "options");
  const bool sgd = kind == "sgd";
  const char* state1_name = sgd ? "momentumBuffers" : "expAvgs";
  const char* state2_name = kind == "adam" ? "expAvgSqs" : "expInfs";
  // Each per-parameter field is an array with one entry per parameter.
  auto array_of = [&](const char* name) {
    const Napi::Value value = options.value(name);
    if (!value.IsArray()) throw_type_error(env, options.where(name) + ": expected an array, got " + describe_value(value));
    return value.As<Napi::Array>();
  };
  const Napi::Array params = array_of("params");
  const uint32_t count = params.Length();
  std::vector<std::pair<const char*, Napi::Array>> fields{{"grads", array_of("grads")},
                                                          {"steps", array_of("steps")},
                                                          {"normOutputs", array_of("normOutputs")},
                                                          {state1_name, array_of(state1_name)}};
  if (!sgd) fields.emplace_back(state2_name, array_of(state2_name));
  for (const auto& [name, array] : fields)
    if (array.Length() != count)
      throw_range_error(env, options.where(name) + ": expected " + std::to_string(count) +
                                 " entries (one per parameter), got " + std::to_string(array.Length()));
  const Napi::Array grads = fields[0].second, steps = fields[1].second, norm_outputs = fields[2].second;
  const Napi::Array states1 = fields[3].second;
  const Napi::Array states2 = sgd ? Napi::Array() : fields[4].second;

  const StepHyperparameters h = read_hyperparameters(options, sgd);

  std::vector<OptimizerTensors> tensors(count);
  Device device = Device::kCpu;
  for (uint32_t i = 0; i < count; ++i) {
    // The texts of the errors name the entry ("optimizerSteps: options.grads[2]"). They are built only for an
    // error: this loop runs for every parameter of every step, and building them cost more than the update of a
    // bias.
    auto name = [&](const char* field) { return options.where(field) + "[" + std::to_string(i) + "]"; };
    auto tensor_entry = [&](const Napi::Value& value, const char* field) -> TensorWrap& {
      if (TensorWrap* wrap = TensorWrap::LiveFloat32(value)) return *wrap;
      return TensorWrap::From(value, name(field).c_str());  // throws
    };
    TensorWrap& param = tensor_entry(params.Get(i), "params");
    TensorWrap& grad = tensor_entry(grads.Get(i), "grads");
    const Napi::Value step_value = steps.Get(i);
    if (!step_value.IsNumber())
      throw_type_error(env, name("steps") + ": expected a number, got " + describe_value(step_value));
    const double step = step_value.As<Napi::Number>().DoubleValue();
    if (!(step >= 1.0 && step <= 9007199254740991.0) || step != std::floor(step))
      throw_range_error(env, name("steps") + ": expected an integer >= 1, got " + describe_value(step_value));
    const Napi::Value state1_value = states1.Get(i);
    TensorWrap* state1 =
        sgd && (state1_value.IsNull() || state1_value.IsUndefined()) ? nullptr : &tensor_entry(state1_value, state1_name);
    if (sgd && h.sgd.momentum != 0.0f && !state1)
      throw_type_error(env, name(state1_name) + ": expected a tensor when momentum != 0, got " +
                                describe_value(state1_value));
    TensorWrap* state2 = sgd ? nullptr : &tensor_entry(states2.Get(i), state2_name);
    TensorWrap* norm = nullptr;
    OptimizerTensors& t = tensors[i];
    const Napi::Value norm_value = norm_outputs.Get(i);
    if (!norm_value.IsNull() && !norm_value.IsUndefined()) {
      const OptionsReader norm_output(env, norm_value, function, "options.normOutputs[" + std::to_string(i) + "]");
      norm = &norm_output.tensor("norm");
      t.norm_output.layout = norm_output.channel_layout();
      t.norm_output.eps = norm_output.float32("eps");
    }
    // Every tensor of the entry on the parameter's device, and the parameter on the first one's.
    const Device here = param.device();
    auto on_device = [&](TensorWrap* other, const char* field, const char* suffix) {
      if (other && other->device() != here) expect_device(env, *other, here, name(field) + suffix);
    };
    on_device(&grad, "grads", "");
    on_device(state1, state1_name, "");
    on_device(state2, state2_name, "");
    on_device(norm, "normOutputs", ".norm");
    if (i == 0) device = here;
    else if (here != device) expect_device(env, param, device, name("params"));
    t.count = param.numel();
    auto holds = [&](const TensorWrap* other, int64_t elements, const char* field, const char* suffix) {
      if (other && other->numel() != elements) expect_count(env, *other, elements, name(field) + suffix);
    };
    holds(&grad, t.count, "grads", "");
    holds(state1, t.count, state1_name, "");
    holds(state2, t.count, state2_name, "");
    if (norm) {
      holds(&param, t.norm_output.layout.elements(), "params", "");
      holds(norm, t.norm_output.layout.channels, "normOutputs", ".norm");
      t.norm_output.norm = norm->data();
    }
    t.param = param.data();
    t.grad = grad.data();
    t.state1 = data_of(state1);
    t.state2 = data_of(state2);
    t.step = static_cast<int64_t>(step);
  }
  return guarded(env, [&]() -> Napi::Value {
    if (count == 0) return env.Undefined();
    if (sgd) WN_DISPATCH(device, sgd_step_many, tensors.data(), count, h.sgd);
    else if (kind == "adam") WN_DISPATCH(device, adam_step_many, tensors.data(), count, h.adam);
    else WN_DISPATCH(device, adamax_step_many, tensors.data(), count, h.adam);
    return env.Undefined();
  });
}

// ----------------------------------------------------------------------------------------------------------------
// Axis reductions and softmax over the view [outer, reduce, inner] (weightnorm/reduce.h). Outputs are flat
// [outer * inner] (reductions) or x's shape (softmax, backwards); ts/reduce.ts gives them their shapes.

AxisLayout axis_layout(const Args& args, size_t i) {
  return AxisLayout{args.count(i, "outer"), args.count(i + 1, "reduce"), args.count(i + 2, "inner")};
}

// axisReduce(op, x, outer, reduce, inner, correction) -> [outer * inner]
Napi::Value AxisReduce(const Napi::CallbackInfo& info) {
  Args args(info);
  const AxisReduceOp kind = parse_choice<AxisReduceOp>(
      args.env(), info[0], "axisReduce", "op",
      {{"sum", AxisReduceOp::kSum}, {"mean", AxisReduceOp::kMean}, {"max", AxisReduceOp::kMax}, {"min", AxisReduceOp::kMin},
       {"logsumexp", AxisReduceOp::kLogSumExp}, {"var", AxisReduceOp::kVar}, {"std", AxisReduceOp::kStd}});
  TensorWrap& x = args.tensor(1, "x");
  const AxisLayout layout = axis_layout(args, 2);
  const double correction = number_argument(info, 5, "correction");
  expect_count(args.env(), x, layout.elements(), "x");
  if ((kind == AxisReduceOp::kMax || kind == AxisReduceOp::kMin) && layout.reduce == 0)
    throw_range_error(args.env(), std::string("x: expected a non-empty reduced axis for ") +
                                      (kind == AxisReduceOp::kMax ? "max" : "min"));
  return guarded(args.env(), [&]() -> Napi::Value {
    Output out = output(args.env(), x.device(), {layout.outputs()});
    WN_DISPATCH(x.device(), axis_reduce, out.data, x.data(), layout, kind, correction);
    return out.object;
  });
}

// axisArgReduce(x, { largest, outer, reduce, inner, shape }) -> { values (float32), indices (int32) }, both of `shape`
// (outer * inner elements). Unknown fields are TypeErrors; largest must be a boolean (not any truthy value).
Napi::Value AxisArgReduce(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "axisArgReduce: x");
  const OptionsReader options(args.env(), info[1], "axisArgReduce", "options");
  expect_known_fields(args.env(), info[1].As<Napi::Object>(), "axisArgReduce: options",
                      {"largest", "outer", "reduce", "inner", "shape"});
  const bool largest = options.boolean("largest");
  AxisLayout layout;
  layout.outer = options.integer("outer", 0);
  layout.reduce = options.integer("reduce", 0);
  layout.inner = options.integer("inner", 0);
  std::vector<int64_t> shape = parse_shape(args.env(), options.value("shape"), "axisArgReduce: options.shape");
  expect_count(args.env(), x, layout.elements(), "axisArgReduce: x");
  if (layout.reduce == 0) throw_range_error(args.env(), "axisArgReduce: x: expected a non-empty reduced axis");
  if (element_count(shape) != layout.outputs())
    throw_range_error(args.env(), "axisArgReduce: options.shape: expected " + std::to_string(layout.outputs()) +
                                      " elements, got " + shape_string(shape));
  return guarded(args.env(), [&]() -> Napi::Value {
    Output values = output(args.env(), x.device(), shape);
    Napi::Object indices = new_tensor(args.env(), x.device(), shape, DType::kInt32);
    int32_t* index_data = TensorWrap::FromAnyType(indices, "indices").int32_data();
    WN_DISPATCH(x.device(), axis_arg_reduce, values.data, index_data, x.data(), layout, largest);
    Napi::Object result = Napi::Object::New(args.env());
    result.Set("values", values.object);
    result.Set("indices", indices);
    return result;
  });
}

// softmax(x, outer, reduce, inner, log) -> y
Napi::Value Softmax(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& x = args.tensor(0, "x");
  const AxisLayout layout = axis_layout(args, 1);
  const bool log = args.flag(4);
  expect_count(args.env(), x, layout.elements(), "x");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output y = output(args.env(), x.device(), x.shape());
    WN_DISPATCH(x.device(), softmax_forward, y.data, x.data(), layout, log);
    return y.object;
  });
}

// softmaxBackward(dy, y, outer, reduce, inner, log) -> dx
Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  TensorWrap& dy = args.tensor(0, "dy");
  TensorWrap& y = args.tensor(1, "y");
  const AxisLayout layout = axis_layout(args, 2);
  const bool log = args.flag(5);
  const Device device = common_device(args.env(), {{&dy, "dy"}, {&y, "y"}});
  expect_count(args.env(), dy, layout.elements(), "dy");
  expect_count(args.env(), y, layout.elements(), "y");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output dx = output(args.env(), device, y.shape());
    WN_DISPATCH(device, softmax_backward, dx.data, dy.data(), y.data(), layout, log);
    return dx.object;
  });
}

// axisReduceBackward(op, dy [outer * inner], x | null, y | null, outer, reduce, inner, scalar) -> dx, flat.
// op 'broadcast' (scalar = alpha), 'extremum' (x, y), 'argmax' / 'argmin' (x), 'logsumexp' (x),
// 'var' (x; scalar = correction), 'std' (x, y = std; scalar = correction).
Napi::Value AxisReduceBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  const std::string op = parse_kind(args.env(), info[0], "axisReduceBackward", "op",
                                    {"broadcast", "extremum", "argmax", "argmin", "logsumexp", "var", "std"});
  TensorWrap& dy = args.tensor(1, "dy");
  TensorWrap* x = args.optional_tensor(2, "x");
  TensorWrap* y = args.optional_tensor(3, "y");
  const AxisLayout layout = axis_layout(args, 4);
  const double scalar = number_argument(info, 7, "scalar");
  const Device device = common_device(args.env(), {{&dy, "dy"}, {x, "x"}, {y, "y"}});
  expect_count(args.env(), dy, layout.outputs(), "dy");
  const bool needs_x = op != "broadcast";
  const bool needs_y = op == "extremum" || op == "std";
  if (needs_x && !x) throw_type_error(args.env(), "x: expected a tensor for '" + op + "'");
  if (needs_y && !y) throw_type_error(args.env(), "y: expected a tensor for '" + op + "'");
  if (x) expect_count(args.env(), *x, layout.elements(), "x");
  if (y) expect_count(args.env(), *y, layout.outputs(), "y");
  return guarded(args.env(), [&]() -> Napi::Value {
    Output dx = output(args.env(), device, {layout.elements()});
    if (op == "broadcast") WN_DISPATCH(device, axis_broadcast, dx.data, dy.data(), layout, static_cast<float>(scalar));
    else if (op == "extremum") WN_DISPATCH(device, axis_extremum_backward, dx.data, dy.data(), x->data(), y->data(), layout);
    else if (op == "argmax" || op == "argmin")
      WN_DISPATCH(device, axis_arg_backward, dx.data, dy.data(), x->data(), layout, op == "argmax");
    else if (op == "logsumexp") WN_DISPATCH(device, axis_logsumexp_backward, dx.data, dy.data(), x->data(), layout);
    else WN_DISPATCH(device, axis_var_backward, dx.data, dy.data(), x->data(), data_of(y), layout, scalar);
    return dx.object;
  });
}

}  // namespace

void register_nn_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("binary", Napi::Function::New(env, Binary));
  exports.Set("scale", Napi::Function::New(env, Scale));
  exports.Set("axpby", Napi::Function::New(env, Axpby));
  exports.Set("ownsStorageAlone", Napi::Function::New(env, OwnsStorageAlone));
  exports.Set("full", Napi::Function::New(env, Full));
  exports.Set("reshape", Napi::Function::New(env, Reshape));
  exports.Set("activation", Napi::Function::New(env, Activation));
  exports.Set("activationBackward", Napi::Function::New(env, ActivationBackward));
  exports.Set("dropout", Napi::Function::New(env, Dropout));
  exports.Set("gaussianNoise", Napi::Function::New(env, GaussianNoise));
  exports.Set("channelOp", Napi::Function::New(env, ChannelOp));
  exports.Set("sumAll", Napi::Function::New(env, SumAll));
  exports.Set("channelReduce", Napi::Function::New(env, ChannelReduce));
  exports.Set("softmaxCrossEntropy", Napi::Function::New(env, SoftmaxCrossEntropy));
  exports.Set("softmaxCrossEntropyBackward", Napi::Function::New(env, SoftmaxCrossEntropyBackward));
  exports.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("conv2d", Napi::Function::New(env, Conv2d));
  exports.Set("conv2dBackward", Napi::Function::New(env, Conv2dBackward));
  exports.Set("conv", Napi::Function::New(env, Conv));
  exports.Set("convBackward", Napi::Function::New(env, ConvBackward));
  exports.Set("convTranspose", Napi::Function::New(env, ConvTranspose));
  exports.Set("convTransposeBackward", Napi::Function::New(env, ConvTransposeBackward));
  exports.Set("pad", Napi::Function::New(env, Pad));
  exports.Set("padBackward", Napi::Function::New(env, PadBackward));
  exports.Set("upsampleNearest", Napi::Function::New(env, UpsampleNearest));
  exports.Set("upsampleNearestBackward", Napi::Function::New(env, UpsampleNearestBackward));
  exports.Set("maxPool2d", Napi::Function::New(env, MaxPool2d));
  exports.Set("maxPool2dBackward", Napi::Function::New(env, MaxPool2dBackward));
  exports.Set("globalAvgPool", Napi::Function::New(env, GlobalAvgPool));
  exports.Set("globalAvgPoolBackward", Napi::Function::New(env, GlobalAvgPoolBackward));
  exports.Set("batchNorm", Napi::Function::New(env, BatchNorm));
  exports.Set("batchNormBackward", Napi::Function::New(env, BatchNormBackward));
  exports.Set("batchNormInference", Napi::Function::New(env, BatchNormInference));
  exports.Set("batchNormInferenceBackward", Napi::Function::New(env, BatchNormInferenceBackward));
  exports.Set("meanOnlyBatchNorm", Napi::Function::New(env, MeanOnlyBatchNorm));
  exports.Set("meanOnlyBatchNormBackward", Napi::Function::New(env, MeanOnlyBatchNormBackward));
  exports.Set("weightNormScale", Napi::Function::New(env, WeightNormScale));
  exports.Set("weightNormCoefficients", Napi::Function::New(env, WeightNormCoefficients));
  exports.Set("weightNormLinear", Napi::Function::New(env, WeightNormLinear));
  exports.Set("weightNormLinearBackward", Napi::Function::New(env, WeightNormLinearBackward));
  exports.Set("optimizerStep", Napi::Function::New(env, OptimizerStep));
  exports.Set("optimizerSteps", Napi::Function::New(env, OptimizerSteps));
  exports.Set("axisReduce", Napi::Function::New(env, AxisReduce));
  exports.Set("axisArgReduce", Napi::Function::New(env, AxisArgReduce));
  exports.Set("softmax", Napi::Function::New(env, Softmax));
  exports.Set("softmaxBackward", Napi::Function::New(env, SoftmaxBackward));
  exports.Set("axisReduceBackward", Napi::Function::New(env, AxisReduceBackward));
}

}  // namespace weightnorm::binding
