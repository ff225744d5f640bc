// Module init and every exported function. Arguments are converted once here; compute code sees pointers and a
// ChannelLayout. Dispatch: one switch on the device per op.
#include <napi.h>

#include <cstring>
#include <string>

#include "../cpu/elementwise.h"
#include "../cpu/gemm.h"
#include "../cpu/host_allocator.h"
#include "../cpu/pointwise.h"
#include "../cpu/random.h"
#include "../cpu/weightnorm.h"
#include "dispatch.h"
#include "errors.h"
#include "tensor.h"
#include "weightnorm/layout.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/elementwise.cuh"
#include "../cuda/gemm.cuh"
#include "../cuda/pointwise.cuh"
#include "../cuda/runtime.cuh"
#include "../cuda/weightnorm.cuh"
#endif

namespace weightnorm::binding {

#ifdef WEIGHTNORM_WITH_BENCHMARK
// bench.cc, in the development build only
Napi::Value BenchmarkTimes(const Napi::CallbackInfo& info);
Napi::Value BenchmarkOutputs(const Napi::CallbackInfo& info);
#endif
void register_nn_ops(Napi::Env env, Napi::Object exports);  // nn.cc
void register_loss_ops(Napi::Env env, Napi::Object exports);  // loss.cc
void register_pointwise_ops(Napi::Env env, Napi::Object exports);  // pointwise.cc
void register_shape_ops(Napi::Env env, Napi::Object exports);  // shape.cc
void register_rnn_ops(Napi::Env env, Napi::Object exports);  // rnn.cc

namespace {

#ifndef WEIGHTNORM_WITH_CUDA
// Only remembered (and reported back): the CPU GEMM is always full float32.
std::string matmul_precision_without_cuda = "highest";
#endif

void expect_channel_vector(Napi::Env env, const TensorWrap& t, int64_t channels, const char* parameter) {
  if (t.shape().size() != 1 || t.shape()[0] != channels)
    throw_range_error(env, std::string(parameter) + ": expected shape [" + std::to_string(channels) + "], got " +
                               shape_string(t.shape()));
}

// Copies `bytes` host bytes into storage on `device`.
void copy_from_host(void* destination, Device device, const void* host, size_t bytes) {
  if (device == Device::kCpu) {
    std::memcpy(destination, host, bytes);
  } else {
#ifdef WEIGHTNORM_WITH_CUDA
    cuda::copy_to_device(destination, host, bytes);
#endif
  }
}

// A new tensor of `dtype` on `device` holding the host floats `values` (rounded once when the dtype is bfloat16).
Napi::Object upload(Napi::Env env, const float* values, const std::vector<int64_t>& shape, Device device, DType dtype) {
  Napi::Object object = new_tensor(env, device, shape, dtype);
  TensorWrap& t = TensorWrap::FromAnyType(object, "result");
  const int64_t count = t.numel();
  if (count == 0) return object;
  const size_t bytes = static_cast<size_t>(count) * dtype_size(dtype);
  std::vector<bfloat16> rounded;
  const void* host = values;
  if (dtype == DType::kBFloat16) {
    if (device == Device::kCpu) {
      cpu::convert(t.bf16_data(), values, count);
      return object;
    }
    rounded.resize(static_cast<size_t>(count));
    cpu::convert(rounded.data(), values, count);
    host = rounded.data();
  }
  copy_from_host(t.data(), device, host, bytes);
  return object;
}

// fromArray(data, shape, device, dtype): a Float32Array for float32 and bfloat16 (rounded once), an Int32Array for
// int32, a Uint8Array of 0s and 1s for bool.
Napi::Value FromArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const DType dtype = parse_dtype(env, info[3], "dtype");
  const napi_typedarray_type expected = dtype == DType::kInt32  ? napi_int32_array
                                        : dtype == DType::kBool ? napi_uint8_array
                                                                : napi_float32_array;
  const char* expected_name = dtype == DType::kInt32 ? "an Int32Array" : dtype == DType::kBool ? "a Uint8Array" : "a Float32Array";
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != expected)
    throw_type_error(env, std::string("data: expected ") + expected_name + " for dtype " + dtype_name(dtype));
  Napi::TypedArray data = info[0].As<Napi::TypedArray>();
  std::vector<int64_t> shape = parse_shape(env, info[1], "shape");
  if (element_count(shape) != static_cast<int64_t>(data.ElementLength()))
    throw_range_error(env, "data: " + std::to_string(data.ElementLength()) + " values do not fill shape " +
                               shape_string(shape));
  const Device device = parse_device(env, info[2], "device");
  if (dtype == DType::kBool) {
    const auto* bytes = static_cast<const uint8_t*>(data.ArrayBuffer().Data()) + data.ByteOffset();
    for (size_t i = 0; i < data.ElementLength(); ++i)
      if (bytes[i] > 1) throw_range_error(env, "data: a bool tensor holds 0 or 1, got " + std::to_string(bytes[i]) + " at index " + std::to_string(i));
  }
  return guarded(env, [&]() -> Napi::Value {
    if (dtype == DType::kFloat32 || dtype == DType::kBFloat16)
      return upload(env, data.As<Napi::Float32Array>().Data(), shape, device, dtype);
    Napi::Object object = new_tensor(env, device, shape, dtype);
    TensorWrap& t = TensorWrap::FromAnyType(object, "result");
    const size_t bytes = static_cast<size_t>(t.numel()) * dtype_size(dtype);
    const void* host = static_cast<const uint8_t*>(data.ArrayBuffer().Data()) + data.ByteOffset();
    if (bytes > 0) copy_from_host(t.raw_data(), device, host, bytes);
    return object;
  });
}

Napi::Value Zeros(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int64_t> shape = parse_shape(env, info[0], "shape");
  const Device device = parse_device(env, info[1], "device");
  const DType dtype = parse_dtype(env, info[2], "dtype");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = new_tensor(env, device, shape, dtype);
    TensorWrap& t = TensorWrap::FromAnyType(object, "result");
    const size_t bytes = static_cast<size_t>(t.numel()) * dtype_size(dtype);  // all-zero bits: 0 in both types
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

// empty(shape, device) -> an uninitialized float32 tensor, for outputs a kernel overwrites in full (a GEMM's
// rawOut). Internal: the public API never hands out uninitialized memory.
Napi::Value Empty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int64_t> shape = parse_shape(env, info[0], "shape");
  const Device device = parse_device(env, info[1], "device");
  return guarded(env, [&]() -> Napi::Value { return new_tensor(env, device, shape); });
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
  const DType dtype = parse_dtype(env, info[5], "dtype");
  if (dtype != DType::kFloat32 && dtype != DType::kBFloat16)
    throw_type_error(env, std::string("dtype: expected 'float32' or 'bfloat16' for normal samples, got '") + dtype_name(dtype) + "'");
  return guarded(env, [&]() -> Napi::Value {
    const int64_t count = element_count(shape);
    if (dtype != DType::kFloat32) {
      // The float32 draws rounded once: a bfloat16 randn holds the same samples as the float32 one, rounded.
      std::vector<float> host(static_cast<size_t>(count));
      cpu::fill_normal(host.data(), count, static_cast<uint64_t>(seed), mean, std);
      return upload(env, host.data(), shape, device, dtype);
    }
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

// weightNorm(v, g, dim | null, eps, fused) -> { w, norm }. v (and so w) float32 or bfloat16; g and norm float32.
Napi::Value WeightNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& v = TensorWrap::FromFloating(info[0], "v");
  TensorWrap& g = TensorWrap::From(info[1], "g");
  const ChannelLayout layout = layout_for(env, v.shape(), info[2]);
  const float eps = static_cast<float>(number_argument(info, 3, "eps"));
  const bool fused = info[4].ToBoolean().Value();
  expect_device(env, g, v.device(), "g");
  expect_channel_vector(env, g, layout.channels, "g");
  const bool bf16 = v.dtype() == DType::kBFloat16;
  if (bf16 && !fused) throw_type_error(env, "fused: the unfused path is float32 only; v is bfloat16");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object w_object = new_tensor(env, v.device(), v.shape(), v.dtype());
    const Output norm = output(env, v.device(), {layout.channels});
    TensorWrap& w = TensorWrap::FromAnyType(w_object, "w");
    if (bf16) WN_DISPATCH(v.device(), weightnorm_forward, w.bf16_data(), norm.data, v.bf16_data(), g.data(), layout, eps);
    else if (fused) WN_DISPATCH(v.device(), weightnorm_forward, w.data(), norm.data, v.data(), g.data(), layout, eps);
    else WN_DISPATCH(v.device(), weightnorm_forward_unfused, w.data(), norm.data, v.data(), g.data(), layout, eps);
    return named_results(env, {{"w", w_object}, {"norm", norm.object}});
  });
}

// weightNormBackward(dw, v, g, norm, dim | null, eps, fused) -> { dv, dg }. dw, v (and dv) share one element type,
// float32 or bfloat16; g, norm and dg are float32.
Napi::Value WeightNormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& dw = TensorWrap::FromFloating(info[0], "dw");
  TensorWrap& v = TensorWrap::FromFloating(info[1], "v");
  TensorWrap& g = TensorWrap::From(info[2], "g");
  TensorWrap& norm = TensorWrap::From(info[3], "norm");
  const ChannelLayout layout = layout_for(env, v.shape(), info[4]);
  const float eps = static_cast<float>(number_argument(info, 5, "eps"));
  const bool fused = info[6].ToBoolean().Value();
  if (dw.shape() != v.shape())
    throw_range_error(env, "dw: expected the shape of v " + shape_string(v.shape()) + ", got " + shape_string(dw.shape()));
  if (dw.dtype() != v.dtype())
    throw_type_error(env, std::string("dw: expected v's element type ") + dtype_name(v.dtype()) + ", got " +
                              dtype_name(dw.dtype()));
  expect_device(env, dw, v.device(), "dw");
  expect_device(env, g, v.device(), "g");
  expect_device(env, norm, v.device(), "norm");
  expect_channel_vector(env, g, layout.channels, "g");
  expect_channel_vector(env, norm, layout.channels, "norm");
  const bool bf16 = v.dtype() == DType::kBFloat16;
  if (bf16 && !fused) throw_type_error(env, "fused: the unfused path is float32 only; v is bfloat16");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object dv_object = new_tensor(env, v.device(), v.shape(), v.dtype());
    const Output dg = output(env, v.device(), {layout.channels});
    TensorWrap& dv = TensorWrap::FromAnyType(dv_object, "dv");
    if (bf16) {
      WN_DISPATCH(v.device(), weightnorm_backward, dv.bf16_data(), dg.data, dw.bf16_data(), v.bf16_data(), g.data(),
                  norm.data(), layout, eps);
    } else if (fused) {
      WN_DISPATCH(v.device(), weightnorm_backward, dv.data(), dg.data, dw.data(), v.data(), g.data(), norm.data(),
                  layout, eps);
    } else {
      WN_DISPATCH(v.device(), weightnorm_backward_unfused, dv.data(), dg.data, dw.data(), v.data(), g.data(),
                  norm.data(), layout, eps);
    }
    return named_results(env, {{"dv", dv_object}, {"dg", dg.object}});
  });
}

// cast(t, dtype) -> a new tensor of `dtype` on t's device (float32 -> bfloat16 rounds to nearest even; the other
// way is exact; the same type is a copy; the int32 and bool conversions are weightnorm/pointwise.h's).
Napi::Value Cast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& t = TensorWrap::FromAnyType(info[0], "tensor");
  const DType dtype = parse_dtype(env, info[1], "dtype");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = new_tensor(env, t.device(), t.shape(), dtype);
    TensorWrap& out = TensorWrap::FromAnyType(object, "result");
    const int64_t count = t.numel();
    if (dtype == t.dtype()) {
      const size_t bytes = static_cast<size_t>(count) * dtype_size(dtype);
      if (t.device() == Device::kCpu) {
        if (bytes) std::memcpy(out.data(), t.data(), bytes);
      } else {
#ifdef WEIGHTNORM_WITH_CUDA
        cuda::copy_device_to_device(out.data(), t.data(), bytes);
#endif
      }
    } else if (dtype == DType::kBFloat16 && t.dtype() == DType::kFloat32) {
      WN_DISPATCH(t.device(), convert, out.bf16_data(), t.data(), count);
    } else if (dtype == DType::kFloat32 && t.dtype() == DType::kBFloat16) {
      WN_DISPATCH(t.device(), convert, out.data(), t.bf16_data(), count);
    } else {
      WN_DISPATCH(t.device(), cast, out.raw_data(), dtype, t.raw_data(), t.dtype(), count);
    }
    return object;
  });
}

// tensorCoreStatus() -> what the CUDA GEMM's tensor-core path is (e.g. whether the Hopper kernel passed its
// self-check). On an sm_90 device the first call runs that one-time self-check (a few small GEMMs), which is why
// backend() does not include it.
Napi::Value TensorCoreStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
#ifdef WEIGHTNORM_WITH_CUDA
    if (cuda_usable(nullptr)) return Napi::String::New(env, cuda::gemm_tensor_core_status());
#endif
    return Napi::String::New(env, "no usable CUDA device");
  });
}

// weightNormRoute() -> the CUDA route the last fused weight-norm call took (for tests and benchmarks).
Napi::Value WeightNormRoute(const Napi::CallbackInfo& info) {
#ifdef WEIGHTNORM_WITH_CUDA
  return Napi::String::New(info.Env(), cuda::weightnorm_last_route());
#else
  return Napi::String::New(info.Env(), "cpu");
#endif
}

// setMatmulPrecision('highest' | 'high'): float32 GEMMs on CUDA in full float32 (SIMT) or TF32 on tensor cores.
Napi::Value SetMatmulPrecision(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string name = parse_kind(env, info[0], "setMatmulPrecision", "precision", {"highest", "high"});
#ifdef WEIGHTNORM_WITH_CUDA
  cuda::set_gemm_precision(name == "high" ? cuda::GemmPrecision::kTensorFloat32 : cuda::GemmPrecision::kFloat32);
#else
  matmul_precision_without_cuda = name;
#endif
  return env.Undefined();
}

Napi::Value GetMatmulPrecision(const Napi::CallbackInfo& info) {
#ifdef WEIGHTNORM_WITH_CUDA
  return Napi::String::New(info.Env(), cuda::gemm_precision() == cuda::GemmPrecision::kTensorFloat32 ? "high" : "highest");
#else
  return Napi::String::New(info.Env(), matmul_precision_without_cuda);
#endif
}

Napi::Value Backend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  Napi::Object cpu_info = Napi::Object::New(env);
  const cpu::ThreadChoice threads = cpu::thread_choice();
  cpu_info.Set("threads", Napi::Number::New(env, threads.threads));
  cpu_info.Set("threadSource", Napi::String::New(env, threads.source == cpu::ThreadSource::kSet           ? "setNumThreads"
                                                      : threads.source == cpu::ThreadSource::kEnvironment ? "OMP_NUM_THREADS"
                                                                                                          : "automatic"));
  cpu_info.Set("cores", Napi::Number::New(env, threads.cores));
  if (threads.other_busy_cores >= 0) cpu_info.Set("otherBusyCores", Napi::Number::New(env, threads.other_busy_cores));
  cpu_info.Set("waitPolicy", Napi::String::New(env, cpu::pool_wait_policy()));
  cpu_info.Set("gemm", Napi::String::New(env, cpu::gemm_backend_description()));
  const std::string blas_core = cpu::gemm_blas_core();
  if (!blas_core.empty()) cpu_info.Set("blasCore", Napi::String::New(env, blas_core));
  result.Set("cpu", cpu_info);
  Napi::Object cuda_info = Napi::Object::New(env);
  cuda_info.Set("compiled", Napi::Boolean::New(env, cuda_compiled()));
  std::string reason;
  const bool usable = cuda_usable(&reason);
  cuda_info.Set("usable", Napi::Boolean::New(env, usable));
  if (!usable) cuda_info.Set("reason", Napi::String::New(env, reason));
#ifdef WEIGHTNORM_WITH_CUDA
  cuda_info.Set("gemm", Napi::String::New(env, cuda::gemm_backend()));
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
    if (device == Device::kCpu) {
      const cpu::HostMemoryStats stats = cpu::host_allocator().stats();
      entry.Set("allocatorBytes", Napi::Number::New(env, static_cast<double>(stats.allocated_bytes)));
      entry.Set("cachedBytes", Napi::Number::New(env, static_cast<double>(stats.cached_bytes)));
      entry.Set("cacheLimitBytes", Napi::Number::New(env, static_cast<double>(stats.limit_bytes)));
    }
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

// The address of a CUDA tensor's memory, once the library stream has finished the work queued so far: for the
// data-parallel module (weightnorm_distributed.node), whose NCCL collectives run on a stream of their own.
Napi::Value CudaAddress(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    TensorWrap& tensor = TensorWrap::FromAnyType(info[0], "tensor");
    if (tensor.device() != Device::kCuda) throw_range_error(info.Env(), "tensor: expected a CUDA tensor, received one on 'cpu'");
#ifdef WEIGHTNORM_WITH_CUDA
    cuda::synchronize();
#endif
    return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(tensor.raw_data())));
  });
}

Napi::Value ReleaseCachedMemory(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    cpu::host_allocator().release_cached();
#ifdef WEIGHTNORM_WITH_CUDA
    if (cuda_usable(nullptr)) cuda::release_cached();
#endif
    return info.Env().Undefined();
  });
}

Napi::Value SetCpuCacheLimit(const Napi::CallbackInfo& info) {
  const double bytes = number_argument(info, 0, "bytes");
  if (!(bytes >= 0) || bytes > 9007199254740991.0 || bytes != static_cast<double>(static_cast<int64_t>(bytes)))
    throw_range_error(info.Env(), "bytes: expected a non-negative safe integer");
  cpu::host_allocator().set_limit(static_cast<size_t>(bytes));
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  TensorWrap::Define(env, exports);
  exports.Set("fromArray", Napi::Function::New(env, FromArray));
  exports.Set("zeros", Napi::Function::New(env, Zeros));
  exports.Set("empty", Napi::Function::New(env, Empty));
  exports.Set("randn", Napi::Function::New(env, Randn));
  exports.Set("weightNorm", Napi::Function::New(env, WeightNorm));
  exports.Set("weightNormBackward", Napi::Function::New(env, WeightNormBackward));
  exports.Set("cast", Napi::Function::New(env, Cast));
  exports.Set("setMatmulPrecision", Napi::Function::New(env, SetMatmulPrecision));
  exports.Set("matmulPrecision", Napi::Function::New(env, GetMatmulPrecision));
  exports.Set("tensorCoreStatus", Napi::Function::New(env, TensorCoreStatus));
  exports.Set("weightNormRoute", Napi::Function::New(env, WeightNormRoute));
  exports.Set("backend", Napi::Function::New(env, Backend));
  exports.Set("memory", Napi::Function::New(env, Memory));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize));
  exports.Set("cudaAddress", Napi::Function::New(env, CudaAddress));
  exports.Set("releaseCachedMemory", Napi::Function::New(env, ReleaseCachedMemory));
  exports.Set("setCpuCacheLimit", Napi::Function::New(env, SetCpuCacheLimit));
#ifdef WEIGHTNORM_WITH_BENCHMARK
  exports.Set("benchmarkTimes", Napi::Function::New(env, BenchmarkTimes));
  exports.Set("benchmarkOutputs", Napi::Function::New(env, BenchmarkOutputs));
#endif
  register_nn_ops(env, exports);
  register_loss_ops(env, exports);
  register_pointwise_ops(env, exports);
  register_shape_ops(env, exports);
  register_rnn_ops(env, exports);
  return exports;
}

}  // namespace
}  // namespace weightnorm::binding

static Napi::Object InitWeightnorm(Napi::Env env, Napi::Object exports) {
  return weightnorm::binding::Init(env, exports);
}
NODE_API_MODULE(weightnorm, InitWeightnorm)
