// The loss ops: pointwise losses (regression, binary cross-entropy) and class losses (cross-entropy, NLL) over
// PyTorch's [N, C, d1, ...] layout. Arguments are converted once from a named options object; ts/losses.ts has
// validated shapes and labels with friendlier messages, this re-checks sizes cheaply and dispatches to cpu:: or
// cuda::.
#include <napi.h>

#include <memory>
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

LossReduction parse_reduction(const OptionsReader& options) {
  return options.choice<LossReduction>(
      "reduction", {{"none", LossReduction::kNone}, {"sum", LossReduction::kSum}, {"mean", LossReduction::kMean}});
}

// A broadcast factor (weight, posWeight): its element count must divide the input's (a suffix shape, checked in ts/).
LossFactor parse_factor(const OptionsReader& options, const char* name, int64_t count, Device device) {
  TensorWrap* t = options.optional_tensor(name);
  if (!t) return {};
  expect_device(options.env(), *t, device, options.where(name));
  if (t->numel() == 0 || count % t->numel() != 0)
    throw_range_error(options.env(), options.where(name) + ": expected an element count dividing " + std::to_string(count) +
                                         ", got " + shape_string(t->shape()));
  return {t->data(), t->numel()};
}

PointwiseLossOptions parse_pointwise(Napi::Env env, const Napi::Value& kind_value, const OptionsReader& options,
                                     int64_t count, Device device, const char* function) {
  PointwiseLossOptions parsed;
  parsed.kind = parse_choice<PointwiseLoss>(env, kind_value, function, "kind",
                                            {{"mse", PointwiseLoss::kMse},
                                             {"l1", PointwiseLoss::kL1},
                                             {"huber", PointwiseLoss::kHuber},
                                             {"smoothL1", PointwiseLoss::kSmoothL1},
                                             {"bce", PointwiseLoss::kBce},
                                             {"bceWithLogits", PointwiseLoss::kBceWithLogits}});
  parsed.parameter = options.float32("parameter");
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
  expect_device(env, target, device, "pointwiseLoss: target");
  expect_count(env, target, input.numel(), "pointwiseLoss: target");
  const PointwiseLossOptions parsed = parse_pointwise(env, info[0], options, input.numel(), device, "pointwiseLoss");
  const LossReduction reduction = parse_reduction(options);
  return guarded(env, [&]() -> Napi::Value {
    const Output loss = output(env, device, input.shape());
    const Output reduced = output(env, device, {1});
    WN_DISPATCH(device, pointwise_loss_forward, loss.data, reduced.data, input.data(), target.data(), input.numel(), parsed,
                reduction);
    return named_results(env, {{"loss", loss.object}, {"reduced", reduced.object}});
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
  expect_device(env, target, device, "pointwiseLossBackward: target");
  expect_device(env, dloss, device, "pointwiseLossBackward: dloss");
  expect_count(env, target, input.numel(), "pointwiseLossBackward: target");
  if (dloss.numel() != 1) expect_count(env, dloss, input.numel(), "pointwiseLossBackward: dloss");
  const PointwiseLossOptions parsed = parse_pointwise(env, info[0], options, input.numel(), device, "pointwiseLossBackward");
  const float scale = options.float32("scale");
  return guarded(env, [&]() -> Napi::Value {
    const Output dinput = output(env, device, input.shape());
    WN_DISPATCH(device, pointwise_loss_backward, dinput.data, dloss.data(), dloss.numel(), scale, input.data(),
                target.data(), input.numel(), parsed);
    return dinput.object;
  });
}

ClassLossOptions parse_class(const OptionsReader& options, Device device) {
  ClassLossOptions parsed;
  parsed.outer = options.integer("outer", 0);
  parsed.classes = options.integer("classes", 1);
  parsed.inner = options.integer("inner", 0);
  parsed.ignore_index = options.whole_number("ignoreIndex");
  parsed.label_smoothing = options.float32("labelSmoothing");
  parsed.from_logits = options.boolean("fromLogits");
  TensorWrap* class_weight = options.optional_tensor("classWeight");
  if (class_weight) {
    expect_device(options.env(), *class_weight, device, options.where("classWeight"));
    expect_count(options.env(), *class_weight, parsed.classes, options.where("classWeight"));
  }
  parsed.class_weight = class_weight ? class_weight->data() : nullptr;
  return parsed;
}

// classLoss(input [outer·classes·inner], labels [outer·inner], { outer, classes, inner, ignoreIndex, labelSmoothing,
// classWeight?, fromLogits, reduction }) -> { positionLoss [outer·inner] ('none') | null, reduced [1] (sum, mean) |
// null, weightTotal [1] (mean: its backward divides by it) | null, saved (logits: the softmax) | null }.
// Only what the caller keeps becomes a tensor; the rest is scratch for the call: each returned tensor costs a JS
// object, its wrap and its finalizer, which on a training step's logits (100×10) cost more than the kernel.
Napi::Value ClassLossForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& input = TensorWrap::From(info[0], "input");
  TensorWrap& labels = TensorWrap::From(info[1], "labels");
  const OptionsReader options(env, info[2], "classLoss", "options");
  const Device device = input.device();
  expect_device(env, labels, device, "classLoss: labels");
  const ClassLossOptions parsed = parse_class(options, device);
  const LossReduction reduction = parse_reduction(options);
  const int64_t positions = parsed.outer * parsed.inner;
  expect_count(env, input, positions * parsed.classes, "classLoss: input");
  expect_count(env, labels, positions, "classLoss: labels");
  const bool per_position = reduction == LossReduction::kNone, mean = reduction == LossReduction::kMean;
  return guarded(env, [&]() -> Napi::Value {
    // Scratch: [position losses, position weights, reduced, weight total], for those not returned.
    const std::shared_ptr<Storage> scratch =
        Storage::allocate(device, static_cast<size_t>(2 * positions + 2) * sizeof(float));
    float* const scratch_reduced = scratch->data() + 2 * positions;
    const auto optional_output = [&](bool wanted, std::vector<int64_t> shape) {
      return wanted ? output(env, device, std::move(shape)) : Output{Napi::Object(), nullptr};
    };
    const Output position_loss = optional_output(per_position, {positions});
    const Output reduced = optional_output(!per_position, {1});
    const Output weight_total = optional_output(mean, {1});
    const Output saved = optional_output(parsed.from_logits, input.shape());
    WN_DISPATCH(device, class_loss_forward, per_position ? position_loss.data : scratch->data(),
                scratch->data() + positions, per_position ? scratch_reduced : reduced.data,
                mean ? weight_total.data : scratch_reduced + 1, saved.data, input.data(), labels.data(), parsed,
                reduction);
    const auto value = [&](const Output& o) { return o.data ? Napi::Value(o.object) : env.Null(); };
    return named_results(env, {{"positionLoss", value(position_loss)}, {"reduced", value(reduced)},
                               {"weightTotal", value(weight_total)}, {"saved", value(saved)}});
  });
}

// classLossBackward(saved | null, labels, dloss ([1] or [outer·inner]), weightTotal | null, options as classLoss,
//                   shape?) -> dinput, of `shape` (the input's, outer·classes·inner elements; default
//                   [outer, classes, inner]), so that the caller need not make a view of it.
Napi::Value ClassLossBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap* saved = optional_tensor_argument(info[0], "saved");
  TensorWrap& labels = TensorWrap::From(info[1], "labels");
  TensorWrap& dloss = TensorWrap::From(info[2], "dloss");
  TensorWrap* weight_total = optional_tensor_argument(info[3], "weightTotal");
  const OptionsReader options(env, info[4], "classLossBackward", "options");
  const Device device = labels.device();
  if (saved) expect_device(env, *saved, device, "classLossBackward: saved");
  expect_device(env, dloss, device, "classLossBackward: dloss");
  if (weight_total) expect_device(env, *weight_total, device, "classLossBackward: weightTotal");
  const ClassLossOptions parsed = parse_class(options, device);
  const int64_t positions = parsed.outer * parsed.inner;
  expect_count(env, labels, positions, "classLossBackward: labels");
  if (dloss.numel() != 1) expect_count(env, dloss, positions, "classLossBackward: dloss");
  if (weight_total) expect_count(env, *weight_total, 1, "classLossBackward: weightTotal");
  if (parsed.from_logits && !saved) throw_type_error(env, "classLossBackward: saved: expected the softmax saved by classLoss");
  if (saved) expect_count(env, *saved, positions * parsed.classes, "classLossBackward: saved");
  std::vector<int64_t> shape{parsed.outer, parsed.classes, parsed.inner};
  if (info.Length() > 5 && !info[5].IsUndefined()) {
    shape = parse_shape(env, info[5], "classLossBackward: shape");
    if (element_count(shape) != positions * parsed.classes)
      throw_range_error(env, "classLossBackward: shape: expected " + std::to_string(positions * parsed.classes) +
                                 " elements (outer·classes·inner), got " + shape_string(shape));
  }
  return guarded(env, [&]() -> Napi::Value {
    const Output dinput = output(env, device, shape);
    WN_DISPATCH(device, class_loss_backward, dinput.data, saved ? saved->data() : nullptr, labels.data(), dloss.data(),
                dloss.numel(), weight_total ? weight_total->data() : nullptr, parsed);
    return dinput.object;
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
