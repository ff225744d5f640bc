// The loss ops: pointwise losses (regression, binary cross-entropy) and class losses (cross-entropy, NLL) over
// PyTorch's [N, C, d1, ...] layout. Arguments are converted once from a named options object; ts/losses.ts has
// validated shapes and labels with friendlier messages, this re-checks sizes cheaply and dispatches to cpu:: or
// cuda::.
#include <napi.h>

#include <string>
#include <vector>

#include "../cpu/loss.h"
#include "dispatch.h"
#include "errors.h"
#include "tensor.h"
#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/loss.cuh"
#endif

namespace weightnorm::binding {
namespace {

Napi::Object new_output(Napi::Env env, Device device, std::vector<int64_t> shape, float** data) {
  Napi::Object object = new_tensor(env, device, std::move(shape));
  *data = TensorWrap::From(object, "output").data();
  return object;
}

void expect_elements(Napi::Env env, const TensorWrap& t, int64_t count, const std::string& name) {
  if (t.numel() != count)
    throw_range_error(env, name + ": expected " + std::to_string(count) + " elements, got " + shape_string(t.shape()));
}

void expect_device(Napi::Env env, const TensorWrap* t, Device device, const std::string& name) {
  if (t && t->device() != device)
    throw_type_error(env, name + ": expected a tensor on " + device_name(device) + ", got one on " + device_name(t->device()));
}

LossReduction parse_reduction(const OptionsReader& options) {
  const std::string reduction = options.kind("reduction", {"none", "sum", "mean"});
  return reduction == "none" ? LossReduction::kNone : reduction == "sum" ? LossReduction::kSum : LossReduction::kMean;
}

// A broadcast factor (weight, posWeight): its element count must divide the input's (a suffix shape, checked in ts/).
LossFactor parse_factor(const OptionsReader& options, const char* name, int64_t count, Device device) {
  TensorWrap* t = options.optional_tensor(name);
  if (!t) return {};
  expect_device(options.env(), t, device, options.where(name));
  if (t->numel() == 0 || count % t->numel() != 0)
    throw_range_error(options.env(), options.where(name) + ": expected an element count dividing " + std::to_string(count) +
                                         ", got " + shape_string(t->shape()));
  return {t->data(), t->numel()};
}

PointwiseLossOptions parse_pointwise(Napi::Env env, const Napi::Value& kind_value, const OptionsReader& options,
                                     int64_t count, Device device, const char* function) {
  const std::string kind =
      parse_kind(env, kind_value, function, "kind", {"mse", "l1", "huber", "smoothL1", "bce", "bceWithLogits"});
  PointwiseLossOptions parsed;
  parsed.kind = kind == "mse"       ? PointwiseLoss::kMse
                : kind == "l1"      ? PointwiseLoss::kL1
                : kind == "huber"   ? PointwiseLoss::kHuber
                : kind == "smoothL1" ? PointwiseLoss::kSmoothL1
                : kind == "bce"     ? PointwiseLoss::kBce
                                    : PointwiseLoss::kBceWithLogits;
  parsed.parameter = static_cast<float>(options.number("parameter"));
  parsed.weight = parse_factor(options, "weight", count, device);
  parsed.pos_weight = parse_factor(options, "posWeight", count, device);
  return parsed;
}

// pointwiseLoss(kind, input, target, { parameter, weight?, posWeight?, reduction }) -> { loss (input's shape), reduced [1] }
Napi::Value PointwiseLossForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& input = TensorWrap::From(info[1], "input");
  TensorWrap& target = TensorWrap::From(info[2], "target");
  const OptionsReader options(env, info[3], "pointwiseLoss", "options");
  const Device device = input.device();
  expect_device(env, &target, device, "pointwiseLoss: target");
  expect_elements(env, target, input.numel(), "pointwiseLoss: target");
  const PointwiseLossOptions parsed = parse_pointwise(env, info[0], options, input.numel(), device, "pointwiseLoss");
  const LossReduction reduction = parse_reduction(options);
  return guarded(env, [&]() -> Napi::Value {
    float *loss = nullptr, *reduced = nullptr;
    Napi::Object loss_object = new_output(env, device, input.shape(), &loss);
    Napi::Object reduced_object = new_output(env, device, {1}, &reduced);
    WN_DISPATCH(device, pointwise_loss_forward, loss, reduced, input.data(), target.data(), input.numel(), parsed, reduction);
    return named_results(env, {{"loss", loss_object}, {"reduced", reduced_object}});
  });
}

// pointwiseLossBackward(kind, dloss ([1] or input's count), input, target, { parameter, weight?, posWeight?, scale }) -> dinput
Napi::Value PointwiseLossBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& dloss = TensorWrap::From(info[1], "dloss");
  TensorWrap& input = TensorWrap::From(info[2], "input");
  TensorWrap& target = TensorWrap::From(info[3], "target");
  const OptionsReader options(env, info[4], "pointwiseLossBackward", "options");
  const Device device = input.device();
  expect_device(env, &target, device, "pointwiseLossBackward: target");
  expect_device(env, &dloss, device, "pointwiseLossBackward: dloss");
  expect_elements(env, target, input.numel(), "pointwiseLossBackward: target");
  if (dloss.numel() != 1) expect_elements(env, dloss, input.numel(), "pointwiseLossBackward: dloss");
  const PointwiseLossOptions parsed = parse_pointwise(env, info[0], options, input.numel(), device, "pointwiseLossBackward");
  const float scale = static_cast<float>(options.number("scale"));
  return guarded(env, [&]() -> Napi::Value {
    float* dinput = nullptr;
    Napi::Object dinput_object = new_output(env, device, input.shape(), &dinput);
    WN_DISPATCH(device, pointwise_loss_backward, dinput, dloss.data(), dloss.numel(), scale, input.data(), target.data(),
                input.numel(), parsed);
    return dinput_object;
  });
}

ClassLossOptions parse_class(const OptionsReader& options, Device device) {
  ClassLossOptions parsed;
  parsed.outer = options.integer("outer", 0);
  parsed.classes = options.integer("classes", 1);
  parsed.inner = options.integer("inner", 0);
  const double ignore_index = options.number("ignoreIndex");
  if (ignore_index != static_cast<double>(static_cast<int64_t>(ignore_index)))
    throw_type_error(options.env(), options.where("ignoreIndex") + ": expected an integer");
  parsed.ignore_index = static_cast<int64_t>(ignore_index);
  parsed.label_smoothing = static_cast<float>(options.number("labelSmoothing"));
  parsed.from_logits = options.boolean("fromLogits");
  TensorWrap* class_weight = options.optional_tensor("classWeight");
  expect_device(options.env(), class_weight, device, options.where("classWeight"));
  if (class_weight) expect_elements(options.env(), *class_weight, parsed.classes, options.where("classWeight"));
  parsed.class_weight = class_weight ? class_weight->data() : nullptr;
  return parsed;
}

// classLoss(input [outer·classes·inner], labels [outer·inner], { outer, classes, inner, ignoreIndex, labelSmoothing,
// classWeight?, fromLogits, reduction }) -> { positionLoss [outer·inner], reduced [1], weightTotal [1], saved | null }
Napi::Value ClassLossForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& input = TensorWrap::From(info[0], "input");
  TensorWrap& labels = TensorWrap::From(info[1], "labels");
  const OptionsReader options(env, info[2], "classLoss", "options");
  const Device device = input.device();
  expect_device(env, &labels, device, "classLoss: labels");
  const ClassLossOptions parsed = parse_class(options, device);
  const LossReduction reduction = parse_reduction(options);
  const int64_t positions = parsed.outer * parsed.inner;
  expect_elements(env, input, positions * parsed.classes, "classLoss: input");
  expect_elements(env, labels, positions, "classLoss: labels");
  return guarded(env, [&]() -> Napi::Value {
    float *position_loss = nullptr, *position_weight = nullptr, *reduced = nullptr, *weight_total = nullptr;
    float* saved = nullptr;
    Napi::Object loss_object = new_output(env, device, {positions}, &position_loss);
    Napi::Object weight_object = new_output(env, device, {positions}, &position_weight);
    Napi::Object reduced_object = new_output(env, device, {1}, &reduced);
    Napi::Object total_object = new_output(env, device, {1}, &weight_total);
    Napi::Value saved_value = env.Null();
    if (parsed.from_logits) saved_value = new_output(env, device, input.shape(), &saved);
    WN_DISPATCH(device, class_loss_forward, position_loss, position_weight, reduced, weight_total, saved, input.data(),
                labels.data(), parsed, reduction);
    // Only its sum (weightTotal) is needed after the forward.
    TensorWrap::From(weight_object, "positionWeight").release_storage();
    return named_results(env, {{"positionLoss", loss_object}, {"reduced", reduced_object}, {"weightTotal", total_object},
                               {"saved", saved_value}});
  });
}

// classLossBackward(saved | null, labels, dloss ([1] or [outer·inner]), weightTotal | null, options as classLoss) -> dinput
Napi::Value ClassLossBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap* saved = (info[0].IsNull() || info[0].IsUndefined()) ? nullptr : &TensorWrap::From(info[0], "saved");
  TensorWrap& labels = TensorWrap::From(info[1], "labels");
  TensorWrap& dloss = TensorWrap::From(info[2], "dloss");
  TensorWrap* weight_total = (info[3].IsNull() || info[3].IsUndefined()) ? nullptr : &TensorWrap::From(info[3], "weightTotal");
  const OptionsReader options(env, info[4], "classLossBackward", "options");
  const Device device = labels.device();
  expect_device(env, saved, device, "classLossBackward: saved");
  expect_device(env, &dloss, device, "classLossBackward: dloss");
  expect_device(env, weight_total, device, "classLossBackward: weightTotal");
  const ClassLossOptions parsed = parse_class(options, device);
  const int64_t positions = parsed.outer * parsed.inner;
  expect_elements(env, labels, positions, "classLossBackward: labels");
  if (dloss.numel() != 1) expect_elements(env, dloss, positions, "classLossBackward: dloss");
  if (weight_total) expect_elements(env, *weight_total, 1, "classLossBackward: weightTotal");
  if (parsed.from_logits && !saved) throw_type_error(env, "classLossBackward: saved: expected the softmax saved by classLoss");
  if (saved) expect_elements(env, *saved, positions * parsed.classes, "classLossBackward: saved");
  return guarded(env, [&]() -> Napi::Value {
    float* dinput = nullptr;
    Napi::Object dinput_object = new_output(env, device, {parsed.outer, parsed.classes, parsed.inner}, &dinput);
    WN_DISPATCH(device, class_loss_backward, dinput, saved ? saved->data() : nullptr, labels.data(), dloss.data(),
                dloss.numel(), weight_total ? weight_total->data() : nullptr, parsed);
    return dinput_object;
  });
}

}  // namespace

void register_loss_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("pointwiseLoss", Napi::Function::New(env, PointwiseLossForward));
  exports.Set("pointwiseLossBackward", Napi::Function::New(env, PointwiseLossBackward));
  exports.Set("classLoss", Napi::Function::New(env, ClassLossForward));
  exports.Set("classLossBackward", Napi::Function::New(env, ClassLossBackward));
}

}  // namespace weightnorm::binding
