// The pointwise op family (tensor math with broadcasting): argument conversion, broadcast layouts from shapes, and
// dispatch to cpu::/cuda:: (cpu/pointwise.h, cuda/pointwise.cuh). ts/pointwise.ts validates, promotes element
// types (both operands arrive with one dtype) and records the gradients; this file re-checks cheaply.
#include <napi.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../cpu/pointwise.h"
#include "dispatch.h"
#include "errors.h"
#include "tensor.h"
#include "weightnorm/pointwise.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/pointwise.cuh"
#endif

namespace weightnorm::binding {
namespace {

// The op named by `value` in `ops`; else a TypeError "op: expected <expected>, got ...".
template <class Op, size_t kCount>
Op parse_op(Napi::Env env, const Napi::Value& value, const std::pair<const char*, Op> (&ops)[kCount],
            const char* expected) {
  const std::string name = value.IsString() ? value.As<Napi::String>().Utf8Value() : "";
  for (const auto& [candidate, op] : ops)
    if (name == candidate) return op;
  throw_type_error(env, std::string("op: expected ") + expected + ", got " + describe_value(value));
}

BinaryOp parse_binary_op(Napi::Env env, const Napi::Value& value) {
  static const std::pair<const char*, BinaryOp> kOps[] = {
      {"add", BinaryOp::kAdd},         {"sub", BinaryOp::kSub},         {"mul", BinaryOp::kMul},
      {"div", BinaryOp::kDiv},         {"pow", BinaryOp::kPow},         {"minimum", BinaryOp::kMinimum},
      {"maximum", BinaryOp::kMaximum}, {"eq", BinaryOp::kEq},           {"ne", BinaryOp::kNe},
      {"lt", BinaryOp::kLt},           {"le", BinaryOp::kLe},           {"gt", BinaryOp::kGt},
      {"ge", BinaryOp::kGe},           {"logicalAnd", BinaryOp::kLogicalAnd}, {"logicalOr", BinaryOp::kLogicalOr}};
  return parse_op(env, value, kOps,
                  "a binary op name (add, sub, mul, div, pow, minimum, maximum, eq, ne, lt, le, gt, ge, logicalAnd, "
                  "logicalOr)");
}

UnaryOp parse_unary_op(Napi::Env env, const Napi::Value& value) {
  static const std::pair<const char*, UnaryOp> kOps[] = {
      {"neg", UnaryOp::kNeg},         {"exp", UnaryOp::kExp},           {"log", UnaryOp::kLog},
      {"sqrt", UnaryOp::kSqrt},       {"rsqrt", UnaryOp::kRsqrt},       {"abs", UnaryOp::kAbs},
      {"sign", UnaryOp::kSign},       {"clamp", UnaryOp::kClamp},       {"sigmoid", UnaryOp::kSigmoid},
      {"tanh", UnaryOp::kTanh},       {"relu", UnaryOp::kRelu},         {"leakyRelu", UnaryOp::kLeakyRelu},
      {"elu", UnaryOp::kElu},         {"softplus", UnaryOp::kSoftplus}, {"gelu", UnaryOp::kGelu},
      {"geluTanh", UnaryOp::kGeluTanh}, {"silu", UnaryOp::kSilu},      {"logicalNot", UnaryOp::kLogicalNot}};
  return parse_op(env, value, kOps, "a unary op name");
}

bool int32_arithmetic(BinaryOp op) {
  return op == BinaryOp::kAdd || op == BinaryOp::kSub || op == BinaryOp::kMul || op == BinaryOp::kMinimum ||
         op == BinaryOp::kMaximum;
}

// NumPy broadcasting: shapes aligned at the last dimension; each pair of sizes equal or one of them 1.
std::vector<int64_t> broadcast_shape(Napi::Env env, const std::vector<const std::vector<int64_t>*>& shapes,
                                     const char* function) {
  size_t rank = 0;
  for (const auto* shape : shapes) rank = std::max(rank, shape->size());
  std::vector<int64_t> out(rank, 1);
  for (const auto* shape : shapes) {
    const size_t pad = rank - shape->size();
    for (size_t d = 0; d < shape->size(); ++d) {
      const int64_t size = (*shape)[d];
      int64_t& target = out[pad + d];
      if (size == target || size == 1) continue;
      if (target == 1) {
        target = size;
        continue;
      }
      std::string all;
      for (size_t i = 0; i < shapes.size(); ++i) all += (i ? " and " : "") + shape_string(*shapes[i]);
      throw_range_error(env, std::string(function) + ": shapes " + all + " do not broadcast (dimension " +
                                 std::to_string(pad + d) + ")");
    }
  }
  return out;
}

// The strided view of each operand over `out`: size-1 dimensions dropped, dimensions contiguous in every operand
// merged (equal shapes become rank 1 with unit strides).
BroadcastLayout broadcast_layout(Napi::Env env, const std::vector<int64_t>& out,
                                 const std::vector<const std::vector<int64_t>*>& operands) {
  const int rank = static_cast<int>(out.size());
  const int count = static_cast<int>(operands.size());
  // Each operand's contiguous strides, right-aligned with out, 0 where it is broadcast.
  std::vector<std::vector<int64_t>> strides(count, std::vector<int64_t>(rank, 0));
  for (int k = 0; k < count; ++k) {
    const auto& shape = *operands[k];
    const int pad = rank - static_cast<int>(shape.size());
    int64_t stride = 1;
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
      strides[k][pad + d] = shape[d] == 1 ? 0 : stride;
      stride *= shape[d];
    }
  }
  BroadcastLayout layout;
  layout.count = element_count(out);
  std::vector<int64_t> sizes;
  std::vector<std::vector<int64_t>> merged(count);
  for (int d = 0; d < rank; ++d) {
    if (out[d] == 1) continue;
    bool joins = !sizes.empty();
    for (int k = 0; k < count && joins; ++k) joins = merged[k].back() == strides[k][d] * out[d];
    if (joins) {
      sizes.back() *= out[d];
      for (int k = 0; k < count; ++k) merged[k].back() = strides[k][d];
    } else {
      sizes.push_back(out[d]);
      for (int k = 0; k < count; ++k) merged[k].push_back(strides[k][d]);
    }
  }
  if (sizes.size() > static_cast<size_t>(BroadcastLayout::kMaxRank))
    throw_range_error(env, "broadcast: " + shape_string(out) + " needs more than " +
                               std::to_string(BroadcastLayout::kMaxRank) + " strided dimensions");
  layout.rank = static_cast<int>(sizes.size());
  for (int d = 0; d < layout.rank; ++d) {
    layout.shape[d] = sizes[d];
    for (int k = 0; k < count; ++k) layout.strides[k][d] = merged[k][d];
  }
  return layout;
}

void expect_dtype(Napi::Env env, const TensorWrap& t, DType dtype, const char* parameter) {
  if (t.dtype() != dtype)
    throw_type_error(env, std::string(parameter) + ": expected a " + dtype_name(dtype) + " tensor, got a " +
                              dtype_name(t.dtype()) + " one");
}

double optional_number(const Napi::Value& value) { return value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : 0.0; }

// pointwiseBinary(op, a, b, alpha) -> a (op) b with broadcasting. a and b share one dtype: float32 (every op),
// int32 (add, sub, mul, minimum, maximum and the comparisons) or bool (comparisons, logicalAnd/Or).
Napi::Value PointwiseBinary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BinaryOp op = parse_binary_op(env, info[0]);
  TensorWrap& a = TensorWrap::FromAnyType(info[1], "a");
  TensorWrap& b = TensorWrap::FromAnyType(info[2], "b");
  const double alpha = info[3].IsNumber() ? info[3].As<Napi::Number>().DoubleValue() : 1.0;
  expect_device(env, b, a.device(), "b");
  expect_dtype(env, b, a.dtype(), "b");
  const DType dtype = a.dtype();
  const bool comparison = pointwise::is_comparison(op);
  if (dtype == DType::kBFloat16 || (dtype == DType::kInt32 && !comparison && !int32_arithmetic(op)) ||
      (dtype == DType::kBool && !comparison))
    throw_type_error(env, std::string("a: this op does not take ") + dtype_name(dtype) + " tensors");
  const std::vector<int64_t> shape = broadcast_shape(env, {&a.shape(), &b.shape()}, "pointwiseBinary");
  const BroadcastLayout layout = broadcast_layout(env, shape, {&a.shape(), &b.shape()});
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = new_tensor(env, a.device(), shape, comparison ? DType::kBool : dtype);
    TensorWrap& out = TensorWrap::FromAnyType(object, "result");
    if (layout.count == 0) return object;
    if (comparison) {
      if (dtype == DType::kFloat32) WN_DISPATCH(a.device(), compare, out.bool_data(), a.data(), b.data(), op, layout);
      else if (dtype == DType::kInt32) WN_DISPATCH(a.device(), compare, out.bool_data(), a.int32_data(), b.int32_data(), op, layout);
      else WN_DISPATCH(a.device(), compare, out.bool_data(), a.bool_data(), b.bool_data(), op, layout);
    } else if (dtype == DType::kFloat32) {
      WN_DISPATCH(a.device(), binary, out.data(), a.data(), b.data(), op, static_cast<float>(alpha), layout);
    } else {
      WN_DISPATCH(a.device(), binary, out.int32_data(), a.int32_data(), b.int32_data(), op, static_cast<int32_t>(alpha), layout);
    }
    return object;
  });
}

// pointwiseBinaryBackward(op, operand, dy, a, b, alpha) -> the gradient of operand 0 (a) or 1 (b) at every element
// of the output (dy's shape), before the sum over broadcast dimensions (sumTo). float32 only.
Napi::Value PointwiseBinaryBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BinaryOp op = parse_binary_op(env, info[0]);
  const double operand = number_argument(info, 1, "operand");
  if (operand != 0 && operand != 1) throw_range_error(env, "operand: expected 0 or 1");
  TensorWrap& dy = TensorWrap::From(info[2], "dy");
  TensorWrap& a = TensorWrap::From(info[3], "a");
  TensorWrap& b = TensorWrap::From(info[4], "b");
  const float alpha = info[5].IsNumber() ? static_cast<float>(info[5].As<Napi::Number>().DoubleValue()) : 1.0f;
  expect_device(env, a, dy.device(), "a");
  expect_device(env, b, dy.device(), "b");
  const std::vector<int64_t> shape = broadcast_shape(env, {&a.shape(), &b.shape()}, "pointwiseBinaryBackward");
  if (shape != dy.shape())
    throw_range_error(env, "dy: expected the broadcast shape " + shape_string(shape) + ", got " + shape_string(dy.shape()));
  const BroadcastLayout layout = broadcast_layout(env, shape, {&dy.shape(), &a.shape(), &b.shape()});
  return guarded(env, [&]() -> Napi::Value {
    const Output out = output(env, dy.device(), shape);
    if (layout.count == 0) return out.object;
    WN_DISPATCH(dy.device(), binary_backward, out.data, dy.data(), a.data(), b.data(), op, static_cast<int>(operand),
                alpha, layout);
    return out.object;
  });
}

// where(cond, a, b) -> cond ? a : b with broadcasting over all three; cond bool, a and b one dtype (not bfloat16).
Napi::Value Where(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& cond = TensorWrap::FromAnyType(info[0], "condition");
  TensorWrap& a = TensorWrap::FromAnyType(info[1], "a");
  TensorWrap& b = TensorWrap::FromAnyType(info[2], "b");
  expect_dtype(env, cond, DType::kBool, "condition");
  expect_dtype(env, b, a.dtype(), "b");
  if (a.dtype() == DType::kBFloat16) throw_type_error(env, "a: where does not take bfloat16 tensors");
  expect_device(env, a, cond.device(), "a");
  expect_device(env, b, cond.device(), "b");
  const std::vector<int64_t> shape = broadcast_shape(env, {&cond.shape(), &a.shape(), &b.shape()}, "where");
  const BroadcastLayout layout = broadcast_layout(env, shape, {&cond.shape(), &a.shape(), &b.shape()});
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = new_tensor(env, cond.device(), shape, a.dtype());
    TensorWrap& out = TensorWrap::FromAnyType(object, "result");
    if (layout.count == 0) return object;
    if (a.dtype() == DType::kBool) {
      WN_DISPATCH(cond.device(), where, out.bool_data(), cond.bool_data(), a.bool_data(), b.bool_data(), layout);
    } else {
      WN_DISPATCH(cond.device(), where, static_cast<uint32_t*>(out.raw_data()), cond.bool_data(),
                  static_cast<const uint32_t*>(a.raw_data()), static_cast<const uint32_t*>(b.raw_data()), layout);
    }
    return object;
  });
}

// sumTo(x, shape) -> x summed over the dimensions that broadcasting added or stretched to reach x's shape from
// `shape` (the gradient of a broadcast operand). float32.
Napi::Value SumTo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& x = TensorWrap::From(info[0], "x");
  const std::vector<int64_t> target = parse_shape(env, info[1], "shape");
  const std::vector<int64_t>& shape = x.shape();
  if (target.size() > shape.size())
    throw_range_error(env, "shape: " + shape_string(target) + " has more dimensions than x " + shape_string(shape));
  const size_t pad = shape.size() - target.size();
  SumToLayout layout;
  layout.out_count = element_count(target);
  layout.reduced_count = 1;
  // x is contiguous: consecutive dimensions of one kind (kept or reduced) merge into one.
  enum Kind { kNone, kKept, kReduced } previous = kNone;
  int64_t stride = 1;
  std::vector<int64_t> strides(shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    strides[d] = stride;
    stride *= shape[d];
  }
  std::vector<std::pair<int64_t, int64_t>> kept, reduced;  // (size, stride), outer to inner
  for (size_t d = 0; d < shape.size(); ++d) {
    const int64_t wanted = d < pad ? 1 : target[d - pad];
    if (wanted != shape[d] && wanted != 1)
      throw_range_error(env, "shape: " + shape_string(target) + " does not broadcast to x's " + shape_string(shape));
    if (shape[d] == 1) continue;
    const Kind kind = wanted == shape[d] ? kKept : kReduced;
    auto& list = kind == kKept ? kept : reduced;
    if (kind == previous) {
      list.back().first *= shape[d];
      list.back().second = strides[d];
    } else {
      list.emplace_back(shape[d], strides[d]);
    }
    previous = kind;
    if (kind == kReduced) layout.reduced_count *= shape[d];
  }
  if (kept.size() > static_cast<size_t>(SumToLayout::kMaxRank) || reduced.size() > static_cast<size_t>(SumToLayout::kMaxRank))
    throw_range_error(env, "sumTo: " + shape_string(shape) + " to " + shape_string(target) + " needs too many strided dimensions");
  layout.kept_rank = static_cast<int>(kept.size());
  layout.reduced_rank = static_cast<int>(reduced.size());
  for (size_t i = 0; i < kept.size(); ++i) {
    layout.kept_shape[i] = kept[i].first;
    layout.kept_strides[i] = kept[i].second;
  }
  for (size_t i = 0; i < reduced.size(); ++i) {
    layout.reduced_shape[i] = reduced[i].first;
    layout.reduced_strides[i] = reduced[i].second;
  }
  if (element_count(shape) == 0) layout.reduced_count = 0;  // an empty x sums to zeros
  return guarded(env, [&]() -> Napi::Value {
    const Output out = output(env, x.device(), target);
    if (layout.out_count == 0) return out.object;
    WN_DISPATCH(x.device(), sum_to, out.data, x.data(), layout);
    return out.object;
  });
}

// pointwiseUnary(op, x, first, second) -> f(x) elementwise. float32 for every op; int32 for neg, abs, sign, relu
// and clamp; bool for logicalNot.
Napi::Value PointwiseUnary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const UnaryOp op = parse_unary_op(env, info[0]);
  TensorWrap& x = TensorWrap::FromAnyType(info[1], "x");
  const UnaryParams params{optional_number(info[2]), optional_number(info[3])};
  const DType dtype = x.dtype();
  const bool int_op = op == UnaryOp::kNeg || op == UnaryOp::kAbs || op == UnaryOp::kSign || op == UnaryOp::kRelu ||
                      op == UnaryOp::kClamp;
  if (dtype == DType::kBFloat16 || (dtype == DType::kInt32 && !int_op) ||
      (dtype == DType::kBool && op != UnaryOp::kLogicalNot) || (dtype != DType::kBool && op == UnaryOp::kLogicalNot))
    throw_type_error(env, std::string("x: this op does not take ") + dtype_name(dtype) + " tensors");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = new_tensor(env, x.device(), x.shape(), dtype);
    TensorWrap& y = TensorWrap::FromAnyType(object, "result");
    const int64_t count = x.numel();
    if (count == 0) return object;
    if (dtype == DType::kFloat32) WN_DISPATCH(x.device(), unary, y.data(), x.data(), op, params, count);
    else if (dtype == DType::kInt32) WN_DISPATCH(x.device(), unary, y.int32_data(), x.int32_data(), op, params, count);
    else WN_DISPATCH(x.device(), unary, y.bool_data(), x.bool_data(), op, params, count);
    return object;
  });
}

// pointwiseUnaryBackward(op, dy, x, y, first, second) -> dx = dy · f'(x), y the forward's output. float32.
Napi::Value PointwiseUnaryBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const UnaryOp op = parse_unary_op(env, info[0]);
  TensorWrap& dy = TensorWrap::From(info[1], "dy");
  TensorWrap& x = TensorWrap::From(info[2], "x");
  TensorWrap& y = TensorWrap::From(info[3], "y");
  const UnaryParams params{optional_number(info[4]), optional_number(info[5])};
  for (const auto& [t, name] : {std::pair<TensorWrap*, const char*>{&x, "x"}, {&y, "y"}}) {
    expect_device(env, *t, dy.device(), name);
    if (t->shape() != dy.shape())
      throw_range_error(env, std::string(name) + ": expected dy's shape " + shape_string(dy.shape()) + ", got " +
                                 shape_string(t->shape()));
  }
  return guarded(env, [&]() -> Napi::Value {
    const Output dx = output(env, dy.device(), dy.shape());
    const int64_t count = dy.numel();
    if (count == 0) return dx.object;
    WN_DISPATCH(dy.device(), unary_backward, dx.data, dy.data(), x.data(), y.data(), op, params, count);
    return dx.object;
  });
}

}  // namespace

void register_pointwise_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("pointwiseBinary", Napi::Function::New(env, PointwiseBinary));
  exports.Set("pointwiseBinaryBackward", Napi::Function::New(env, PointwiseBinaryBackward));
  exports.Set("where", Napi::Function::New(env, Where));
  exports.Set("sumTo", Napi::Function::New(env, SumTo));
  exports.Set("pointwiseUnary", Napi::Function::New(env, PointwiseUnary));
  exports.Set("pointwiseUnaryBackward", Napi::Function::New(env, PointwiseUnaryBackward));
}

}  // namespace weightnorm::binding
