// Module init and every exported function. Arguments are converted once here; compute code sees pointers and a
// ChannelLayout. Dispatch: one switch on the device per op.
#include <napi.h>

#include <cstring>
#include <string>

#include "../cpu/random.h"
#include "../cpu/weightnorm.h"
#include "errors.h"
#include "tensor.h"
#include "weightnorm/layout.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/runtime.cuh"
#include "../cuda/weightnorm.cuh"
#endif

namespace weightnorm::binding {

// The float32 overloads of the fused kernels (the names are overloaded for bfloat16 too).
using ForwardF32 = void (*)(float*, float*, const float*, const float*, const ChannelLayout&, float);
using BackwardF32 = void (*)(float*, float*, const float*, const float*, const float*, const float*,
                             const ChannelLayout&, float);

Napi::Value Benchmark(const Napi::CallbackInfo& info);  // bench.cc
void register_nn_ops(Napi::Env env, Napi::Object exports);  // nn.cc

namespace {

void expect_channel_vector(Napi::Env env, const TensorWrap& t, int64_t channels, const char* parameter) {
  if (t.shape().size() != 1 || t.shape()[0] != channels)
    throw_range_error(env, std::string(parameter) + ": expected shape [" + std::to_string(channels) + "], got " +
                               shape_string(t.shape()));
}

void expect_device(Napi::Env env, const TensorWrap& t, Device device, const char* parameter) {
  if (t.device() != device)
    throw_type_error(env, std::string(parameter) + ": expected a tensor on " + device_name(device) + ", got one on " +
                              device_name(t.device()));
}

Napi::Value FromArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw_type_error(env, "data: expected a Float32Array");
  Napi::Float32Array data = info[0].As<Napi::Float32Array>();
  std::vector<int64_t> shape = parse_shape(env, info[1], "shape");
  if (element_count(shape) != static_cast<int64_t>(data.ElementLength()))
    throw_range_error(env, "data: " + std::to_string(data.ElementLength()) + " values do not fill shape " +
                               shape_string(shape));
  const Device device = parse_device(env, info[2], "device");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = new_tensor(env, device, shape);
    TensorWrap& t = TensorWrap::From(object, "result");
    const size_t bytes = data.ElementLength() * sizeof(float);
    if (device == Device::kCpu) {
      if (bytes) std::memcpy(t.data(), data.Data(), bytes);
    } else {
#ifdef WEIGHTNORM_WITH_CUDA
      cuda::copy_to_device(t.data(), data.Data(), bytes);
#endif
    }
    return object;
  });
}

Napi::Value Zeros(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int64_t> shape = parse_shape(env, info[0], "shape");
  const Device device = parse_device(env, info[1], "device");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = new_tensor(env, device, shape);
    TensorWrap& t = TensorWrap::From(object, "result");
    const size_t bytes = static_cast<size_t>(t.numel()) * sizeof(float);
    if (device == Device::kCpu) {
      if (bytes) std::memset(t.data(), 0, bytes);
    } else {
#ifdef WEIGHTNORM_WITH_CUDA
      cuda::fill_zero(t.data(), bytes);
#endif
    }
    return object;
  });
}

// randn draws on the host (counter-based, so a seed gives the same values on every device) and uploads.
Napi::Value Randn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int64_t> shape = parse_shape(env, info[0], "shape");
  const double seed = number_argument(info, 1, "seed");
  if (seed < 0 || seed > 9007199254740991.0 || seed != static_cast<double>(static_cast<int64_t>(seed)))
    throw_range_error(env, "seed: expected a non-negative safe integer");
  const Device device = parse_device(env, info[2], "device");
  const float mean = static_cast<float>(number_argument(info, 3, "mean"));
  const float std = static_cast<float>(number_argument(info, 4, "std"));
  return guarded(env, [&]() -> Napi::Value {
    const int64_t count = element_count(shape);
    if (device == Device::kCpu) {
      Napi::Object object = new_tensor(env, device, shape);
      cpu::fill_normal(TensorWrap::From(object, "result").data(), count, static_cast<uint64_t>(seed), mean, std);
      return object;
    }
    auto host = Storage::allocate(Device::kCpu, static_cast<size_t>(count) * sizeof(float));
    cpu::fill_normal(host->data(), count, static_cast<uint64_t>(seed), mean, std);
    Napi::Object object = new_tensor(env, device, shape);
#ifdef WEIGHTNORM_WITH_CUDA
    cuda::copy_to_device(TensorWrap::From(object, "result").data(), host->data(), host->bytes());
#endif
    return object;
  });
}

// weightNorm(v, g, dim | null, eps, fused) -> { w, norm }
Napi::Value WeightNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& v = TensorWrap::From(info[0], "v");
  TensorWrap& g = TensorWrap::From(info[1], "g");
  const ChannelLayout layout = layout_for(env, v.shape(), info[2]);
  const float eps = static_cast<float>(number_argument(info, 3, "eps"));
  const bool fused = info[4].ToBoolean().Value();
  expect_device(env, g, v.device(), "g");
  expect_channel_vector(env, g, layout.channels, "g");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object w_object = new_tensor(env, v.device(), v.shape());
    Napi::Object norm_object = new_tensor(env, v.device(), {layout.channels});
    float* w = TensorWrap::From(w_object, "w").data();
    float* norm = TensorWrap::From(norm_object, "norm").data();
    if (v.device() == Device::kCpu) {
      (fused ? static_cast<ForwardF32>(cpu::weightnorm_forward) : cpu::weightnorm_forward_unfused)(w, norm, v.data(), g.data(), layout, eps);
    } else {
#ifdef WEIGHTNORM_WITH_CUDA
      (fused ? static_cast<ForwardF32>(cuda::weightnorm_forward) : cuda::weightnorm_forward_unfused)(w, norm, v.data(), g.data(), layout, eps);
#endif
    }
    return named_results(env, {{"w", w_object}, {"norm", norm_object}});
  });
}

// weightNormBackward(dw, v, g, norm, dim | null, eps, fused) -> { dv, dg }
Napi::Value WeightNormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& dw = TensorWrap::From(info[0], "dw");
  TensorWrap& v = TensorWrap::From(info[1], "v");
  TensorWrap& g = TensorWrap::From(info[2], "g");
  TensorWrap& norm = TensorWrap::From(info[3], "norm");
  const ChannelLayout layout = layout_for(env, v.shape(), info[4]);
  const float eps = static_cast<float>(number_argument(info, 5, "eps"));
  const bool fused = info[6].ToBoolean().Value();
  if (dw.shape() != v.shape())
    throw_range_error(env, "dw: expected the shape of v " + shape_string(v.shape()) + ", got " + shape_string(dw.shape()));
  expect_device(env, dw, v.device(), "dw");
  expect_device(env, g, v.device(), "g");
  expect_device(env, norm, v.device(), "norm");
  expect_channel_vector(env, g, layout.channels, "g");
  expect_channel_vector(env, norm, layout.channels, "norm");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object dv_object = new_tensor(env, v.device(), v.shape());
    Napi::Object dg_object = new_tensor(env, v.device(), {layout.channels});
    float* dv = TensorWrap::From(dv_object, "dv").data();
    float* dg = TensorWrap::From(dg_object, "dg").data();
    if (v.device() == Device::kCpu) {
      (fused ? static_cast<BackwardF32>(cpu::weightnorm_backward) : cpu::weightnorm_backward_unfused)(dv, dg, dw.data(), v.data(), g.data(),
                                                                           norm.data(), layout, eps);
    } else {
#ifdef WEIGHTNORM_WITH_CUDA
      (fused ? static_cast<BackwardF32>(cuda::weightnorm_backward) : cuda::weightnorm_backward_unfused)(dv, dg, dw.data(), v.data(), g.data(),
                                                                             norm.data(), layout, eps);
#endif
    }
    return named_results(env, {{"dv", dv_object}, {"dg", dg_object}});
  });
}

Napi::Value Backend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  Napi::Object cpu_info = Napi::Object::New(env);
  cpu_info.Set("threads", Napi::Number::New(env, cpu::num_threads()));
  result.Set("cpu", cpu_info);
  Napi::Object cuda_info = Napi::Object::New(env);
  cuda_info.Set("compiled", Napi::Boolean::New(env, cuda_compiled()));
  std::string reason;
  const bool usable = cuda_usable(&reason);
  cuda_info.Set("usable", Napi::Boolean::New(env, usable));
  if (!usable) cuda_info.Set("reason", Napi::String::New(env, reason));
#ifdef WEIGHTNORM_WITH_CUDA
  if (usable) {
    const auto& status = cuda::device_status();
    Napi::Object device = Napi::Object::New(env);
    device.Set("name", Napi::String::New(env, status.name));
    device.Set("computeCapability", Napi::String::New(env, std::to_string(status.compute_major) + "." +
                                                                std::to_string(status.compute_minor)));
    device.Set("multiprocessors", Napi::Number::New(env, status.multiprocessors));
    device.Set("totalBytes", Napi::Number::New(env, static_cast<double>(status.total_bytes)));
    device.Set("count", Napi::Number::New(env, status.device_count));
    cuda_info.Set("device", device);
  }
#endif
  result.Set("cuda", cuda_info);
  return result;
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  for (Device device : {Device::kCpu, Device::kCuda}) {
    const DeviceCounters c = counters(device);
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("tensors", Napi::Number::New(env, static_cast<double>(c.tensors)));
    entry.Set("bytes", Napi::Number::New(env, static_cast<double>(c.bytes)));
#ifdef WEIGHTNORM_WITH_CUDA
    if (device == Device::kCuda) {
      const cuda::MemoryStats stats = cuda::memory_stats();
      entry.Set("allocatorBytes", Napi::Number::New(env, static_cast<double>(stats.allocated_bytes)));
      entry.Set("cachedBytes", Napi::Number::New(env, static_cast<double>(stats.cached_bytes)));
    }
#endif
    result.Set(device_name(device), entry);
  }
  return result;
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  const double threads = number_argument(info, 0, "threads");
  if (threads < 0 || threads > 1024 || threads != static_cast<double>(static_cast<int>(threads)))
    throw_range_error(info.Env(), "threads: expected an integer in [0, 1024]");
  cpu::set_num_threads(static_cast<int>(threads));
  return info.Env().Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
#ifdef WEIGHTNORM_WITH_CUDA
    if (cuda_usable(nullptr)) cuda::synchronize();
#endif
    return info.Env().Undefined();
  });
}

Napi::Value ReleaseCachedMemory(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
#ifdef WEIGHTNORM_WITH_CUDA
    if (cuda_usable(nullptr)) cuda::release_cached();
#endif
    return info.Env().Undefined();
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  TensorWrap::Define(env, exports);
  exports.Set("fromArray", Napi::Function::New(env, FromArray));
  exports.Set("zeros", Napi::Function::New(env, Zeros));
  exports.Set("randn", Napi::Function::New(env, Randn));
  exports.Set("weightNorm", Napi::Function::New(env, WeightNorm));
  exports.Set("weightNormBackward", Napi::Function::New(env, WeightNormBackward));
  exports.Set("backend", Napi::Function::New(env, Backend));
  exports.Set("memory", Napi::Function::New(env, Memory));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize));
  exports.Set("releaseCachedMemory", Napi::Function::New(env, ReleaseCachedMemory));
  exports.Set("benchmark", Napi::Function::New(env, Benchmark));
  register_nn_ops(env, exports);
  return exports;
}

}  // namespace
}  // namespace weightnorm::binding

static Napi::Object InitWeightnorm(Napi::Env env, Napi::Object exports) {
  return weightnorm::binding::Init(env, exports);
}
NODE_API_MODULE(weightnorm, InitWeightnorm)
