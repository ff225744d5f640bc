// benchmark(): times the kernels in a native loop with preallocated outputs, so the figures are the kernels'
// own (no JS call overhead, no output allocation). CPU: steady_clock per run; CUDA: events per run.
#include <napi.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "../cpu/elementwise.h"
#include "../cpu/weightnorm.h"
#include "errors.h"
#include "tensor.h"
#include "weightnorm/layout.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/elementwise.cuh"
#include "../cuda/runtime.cuh"
#include "../cuda/weightnorm.cuh"
#endif

namespace weightnorm::binding {

// The float32 overloads of the fused kernels (the names are overloaded for bfloat16 too).
using ForwardF32 = void (*)(float*, float*, const float*, const float*, const ChannelLayout&, float);
using BackwardF32 = void (*)(float*, float*, const float*, const float*, const float*, const float*,
                             const ChannelLayout&, float);
namespace {

struct Set {
  std::vector<float*> inputs;
  std::shared_ptr<Storage> out, per_channel;
};

}  // namespace

// benchmark(op: 'forward' | 'backward' | 'copy', fused, sets: NativeTensor[][], dim, eps, warmup, repeats)
// -> Float64Array of milliseconds per run. Run i uses input set i % sets.length (rotating buffers keeps the
// inputs out of cache when the sets together exceed it).
Napi::Value Benchmark(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  const bool fused = info[1].ToBoolean().Value();
  if (!info[2].IsArray() || info[2].As<Napi::Array>().Length() == 0)
    throw_type_error(env, "sets: expected a non-empty array of tensor arrays");
  const size_t arity = op == "forward" ? 2 : op == "backward" ? 4 : op == "copy" ? 1 : 0;
  if (arity == 0) throw_type_error(env, "op: expected 'forward', 'backward' or 'copy'");
  const int warmup = info[5].ToNumber().Int32Value(), repeats = info[6].ToNumber().Int32Value();
  if (warmup < 0 || repeats < 1) throw_range_error(env, "warmup >= 0 and repeats >= 1 expected");
  const float eps = info[4].ToNumber().FloatValue();

  Napi::Array set_array = info[2].As<Napi::Array>();
  std::vector<Set> sets(set_array.Length());
  std::vector<int64_t> shape;
  Device device = Device::kCpu;
  for (uint32_t s = 0; s < set_array.Length(); ++s) {
    Napi::Value item = set_array.Get(s);
    if (!item.IsArray() || item.As<Napi::Array>().Length() != arity)
      throw_type_error(env, "sets[" + std::to_string(s) + "]: expected " + std::to_string(arity) + " tensors");
    for (uint32_t j = 0; j < arity; ++j) {
      TensorWrap& t = TensorWrap::From(item.As<Napi::Array>().Get(j), "sets[][]");
      if (s == 0 && j == 0) {
        shape = t.shape();
        device = t.device();
      }
      if (t.device() != device) throw_type_error(env, "sets: every tensor must be on one device");
      sets[s].inputs.push_back(t.data());
    }
  }
  const ChannelLayout layout = layout_for(env, shape, info[3]);
  return guarded(env, [&]() -> Napi::Value {
    const size_t bytes = static_cast<size_t>(layout.elements()) * sizeof(float);
    for (Set& set : sets) {
      set.out = Storage::allocate(device, bytes);
      set.per_channel = Storage::allocate(device, static_cast<size_t>(layout.channels) * sizeof(float));
    }
    const bool cpu = device == Device::kCpu;
    auto run = [&](int i) {
      const Set& set = sets[static_cast<size_t>(i) % sets.size()];
      const auto& in = set.inputs;
      float* out = set.out->data();
      float* per_channel = set.per_channel->data();
      if (op == "copy") {
        if (cpu) cpu::scale(out, in[0], 1.0f, layout.elements());
#ifdef WEIGHTNORM_WITH_CUDA
        else cuda::scale(out, in[0], 1.0f, layout.elements());
#endif
      } else if (op == "forward") {
        if (cpu) (fused ? static_cast<ForwardF32>(cpu::weightnorm_forward) : cpu::weightnorm_forward_unfused)(out, per_channel, in[0], in[1], layout, eps);
#ifdef WEIGHTNORM_WITH_CUDA
        else (fused ? static_cast<ForwardF32>(cuda::weightnorm_forward) : cuda::weightnorm_forward_unfused)(out, per_channel, in[0], in[1], layout, eps);
#endif
      } else {
        if (cpu) (fused ? static_cast<BackwardF32>(cpu::weightnorm_backward) : cpu::weightnorm_backward_unfused)(out, per_channel, in[0], in[1], in[2], in[3], layout, eps);
#ifdef WEIGHTNORM_WITH_CUDA
        else (fused ? static_cast<BackwardF32>(cuda::weightnorm_backward) : cuda::weightnorm_backward_unfused)(out, per_channel, in[0], in[1], in[2], in[3], layout, eps);
#endif
      }
    };
    std::vector<double> milliseconds;
    if (cpu) {
      for (int i = 0; i < warmup; ++i) run(i);
      for (int i = 0; i < repeats; ++i) {
        const auto start = std::chrono::steady_clock::now();
        run(warmup + i);
        const auto stop = std::chrono::steady_clock::now();
        milliseconds.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
      }
    } else {
#ifdef WEIGHTNORM_WITH_CUDA
      milliseconds = cuda::time_on_stream(run, warmup, repeats);
#endif
    }
    Napi::Float64Array result = Napi::Float64Array::New(env, milliseconds.size());
    for (size_t i = 0; i < milliseconds.size(); ++i) result[i] = milliseconds[i];
    return result;
  });
}

}  // namespace weightnorm::binding
