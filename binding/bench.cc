// The benchmark entry points: they time the kernels in a native loop with preallocated outputs, so the figures are
// the kernels' own (no JS call overhead, no output allocation). CPU: steady_clock per run; CUDA: events per run.
//
// benchmarkTimes(request, warmup, repeats) -> Float64Array of ms per run.
// benchmarkOutputs(request) -> { out, perChannel, backend }: one run on set 0, its outputs as float32 tensors
//   (bfloat16 outputs widened exactly), for the check before timing.
// request = { op, sets: NativeTensor[][], ... }; run i uses sets[i % sets.length] (rotating buffers keeps the
// inputs out of cache when the sets together exceed it). Every run writes the same output block (and per-channel
// block): in training a caching allocator hands each call the block of that size freed last (ours,
// cpu/host_allocator.cc; glibc or torch's for the PyTorch peer, which drops each result), so the outputs are as
// warm as the previous call left them. One block per set would write cold memory every call and understate the
// kernels against a peer that reuses its freed block. The ops:
//   'copy'                            sets [x]; no outputs to check.
//   'forward' | 'backward'            float32 weight norm, { fused, dim, eps }. Sets: [v, g] | [dw, v, g, norm].
//   'forward-bf16' | 'backward-bf16'  the bfloat16 overloads, { dim, eps }; sets as for forward/backward (float32
//                                     tensors: the per-element ones are converted to bfloat16 before timing).
//   'gemm'                            { gemm: { m, n, k, transposeA, transposeB, precision: 'fp32' | 'tf32' | 'bf16' } };
//                                     sets: [a, b] float32 (converted for bf16); no epilogue.
#include <napi.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cpu/elementwise.h"
#include "../cpu/gemm.h"
#include "../cpu/weightnorm.h"
#include "dispatch.h"
#include "errors.h"
#include "tensor.h"
#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/elementwise.cuh"
#include "../cuda/gemm.cuh"
#include "../cuda/runtime.cuh"
#include "../cuda/weightnorm.cuh"
#endif

namespace weightnorm::binding {

namespace {

struct Set {
  std::vector<float*> inputs;
  std::vector<std::shared_ptr<Storage>> bf16_inputs;  // bfloat16 copies of the per-element inputs (bf16 ops)
};

enum class Precision { kFp32, kTf32, kBf16 };

struct GemmSpec {
  GemmShape shape;
  Precision precision = Precision::kFp32;
};

// `o` names the spec in messages ("benchmarkTimes: request.gemm").
GemmSpec parse_gemm_spec(const OptionsReader& o) {
  GemmSpec spec;
  spec.shape.m = o.integer("m", 1);
  spec.shape.n = o.integer("n", 1);
  spec.shape.k = o.integer("k", 1);
  spec.shape.transpose_a = o.boolean("transposeA");
  spec.shape.transpose_b = o.boolean("transposeB");
  const std::string precision = o.kind("precision", {"fp32", "tf32", "bf16"});
  spec.precision = precision == "fp32" ? Precision::kFp32 : precision == "tf32" ? Precision::kTf32 : Precision::kBf16;
  return spec;
}

// One benchmark request, converted from either call form.
struct Request {
  std::string op;
  bool fused = true;
  GemmSpec gemm;
  Napi::Value sets;
  Napi::Value dim;  // null or undefined: one norm over everything
  float eps = 0.0f;
};

constexpr std::initializer_list<const char*> kOps = {"copy", "forward", "backward", "forward-bf16", "backward-bf16", "gemm"};

Request parse_request(Napi::Env env, const Napi::Value& value, const char* function) {
  const OptionsReader o(env, value, function, "request");
  Request request;
  request.op = o.kind("op", kOps);
  request.sets = o.value("sets");
  request.dim = o.value("dim");
  if (request.op == "gemm") request.gemm = parse_gemm_spec(o.object("gemm"));
  if (request.op == "forward" || request.op == "backward") request.fused = o.boolean("fused");
  if (request.op != "gemm" && request.op != "copy") request.eps = static_cast<float>(o.number("eps"));
  return request;
}

void convert_on(Device device, bfloat16* out, const float* x, int64_t count) {
  WN_DISPATCH(device, convert, out, x, count);
}

void widen_on(Device device, float* out, const bfloat16* x, int64_t count) {
  WN_DISPATCH(device, convert, out, x, count);
}

void copy_on(Device device, float* out, const float* x, int64_t count) {
  if (device == Device::kCpu) cpu::scale(out, x, 1.0f, count);
#ifdef WEIGHTNORM_WITH_CUDA
  else cuda::copy_device_to_device(out, x, static_cast<size_t>(count) * sizeof(float));
#endif
}

// Sets the CUDA GEMM precision for the lifetime of the guard and restores the previous one (also on a throw).
class PrecisionGuard {
 public:
  PrecisionGuard(Device device, Precision precision) {
#ifdef WEIGHTNORM_WITH_CUDA
    if (device == Device::kCuda && precision == Precision::kTf32) {
      previous_ = cuda::gemm_precision();
      cuda::set_gemm_precision(cuda::GemmPrecision::kTensorFloat32);
      active_ = true;
    }
#else
    (void)device;
    (void)precision;
#endif
  }
  ~PrecisionGuard() {
#ifdef WEIGHTNORM_WITH_CUDA
    if (active_) cuda::set_gemm_precision(previous_);
#endif
  }
  PrecisionGuard(const PrecisionGuard&) = delete;
  PrecisionGuard& operator=(const PrecisionGuard&) = delete;

 private:
#ifdef WEIGHTNORM_WITH_CUDA
  cuda::GemmPrecision previous_ = cuda::GemmPrecision::kFloat32;
#endif
  bool active_ = false;
};

const char* gemm_backend_on(Device device) {
  if (device == Device::kCpu) return cpu::gemm_backend();
#ifdef WEIGHTNORM_WITH_CUDA
  return cuda::gemm_backend();
#else
  return "none";
#endif
}

// Times `request` (warmup untimed runs, then `repeats` timed ones: a Float64Array of ms), or with outputs_only runs
// it once on set 0 and returns { out, perChannel, backend }.
Napi::Value run_benchmark(Napi::Env env, const char* function, const Request& request, int warmup, int repeats,
                          bool outputs_only) {
  const std::string& op = request.op;
  const bool is_gemm = op == "gemm";
  const bool bf16_op = op == "forward-bf16" || op == "backward-bf16";
  const bool forward = op == "forward" || op == "forward-bf16";
  const bool backward = op == "backward" || op == "backward-bf16";
  const bool fused = request.fused;
  const std::string prefix = std::string(function) + ": ";
  if (!request.sets.IsArray() || request.sets.As<Napi::Array>().Length() == 0)
    throw_type_error(env, prefix + "sets: expected a non-empty array of tensor arrays, got " + describe_value(request.sets));
  const size_t arity = forward ? 2 : backward ? 4 : op == "copy" ? 1 : 2;
  const GemmSpec& spec = request.gemm;
  const float eps = request.eps;

  Napi::Array set_array = request.sets.As<Napi::Array>();
  std::vector<Set> sets(set_array.Length());
  std::vector<int64_t> shape;
  Device device = Device::kCpu;
  for (uint32_t s = 0; s < set_array.Length(); ++s) {
    Napi::Value item = set_array.Get(s);
    if (!item.IsArray() || item.As<Napi::Array>().Length() != arity)
      throw_type_error(env, prefix + "sets[" + std::to_string(s) + "]: expected " + std::to_string(arity) + " tensors for '" + op + "'");
    for (uint32_t j = 0; j < arity; ++j) {
      TensorWrap& t = TensorWrap::From(item.As<Napi::Array>().Get(j), "sets[][]");
      if (s == 0 && j == 0) {
        shape = t.shape();
        device = t.device();
      }
      if (t.device() != device) throw_type_error(env, prefix + "sets: every tensor must be on one device");
      if (is_gemm && t.numel() != (j == 0 ? spec.shape.m * spec.shape.k : spec.shape.k * spec.shape.n))
        throw_range_error(env, std::string("sets[][") + std::to_string(j) + "]: expected " +
                                   std::to_string(j == 0 ? spec.shape.m * spec.shape.k : spec.shape.k * spec.shape.n) + " elements for " +
                                   (j == 0 ? "a" : "b"));
      sets[s].inputs.push_back(t.data());
    }
  }
  const ChannelLayout layout = is_gemm ? ChannelLayout{} : layout_for(env, shape, request.dim);
  const int64_t out_elements = is_gemm ? spec.shape.m * spec.shape.n : layout.elements();
  const int64_t per_channel_elements = is_gemm ? 0 : layout.channels;
  const bool bf16 = bf16_op || (is_gemm && spec.precision == Precision::kBf16);
  if (is_gemm && device == Device::kCpu && spec.precision == Precision::kTf32)
    throw_type_error(env, prefix + "precision 'tf32': TF32 is a CUDA tensor-core mode; the CPU GEMM has none");
  return guarded(env, [&]() -> Napi::Value {
    const size_t out_bytes = static_cast<size_t>(out_elements) * (bf16 ? sizeof(bfloat16) : sizeof(float));
    // Which inputs are per-element (converted to bfloat16): gemm a, b; forward v; backward dw, v.
    const size_t converted = !bf16 ? 0 : is_gemm || backward ? 2 : 1;
    // One output block for every set (see the top of this file).
    const std::shared_ptr<Storage> out_block = Storage::allocate(device, out_bytes);
    const std::shared_ptr<Storage> per_channel_block =
        Storage::allocate(device, static_cast<size_t>(per_channel_elements) * sizeof(float));
    for (Set& set : sets) {
      for (size_t j = 0; j < converted; ++j) {
        const int64_t count = is_gemm ? (j == 0 ? spec.shape.m * spec.shape.k : spec.shape.k * spec.shape.n) : layout.elements();
        set.bf16_inputs.push_back(Storage::allocate(device, static_cast<size_t>(count) * sizeof(bfloat16)));
        convert_on(device, reinterpret_cast<bfloat16*>(set.bf16_inputs.back()->data()), set.inputs[j], count);
      }
    }
    const bool cpu = device == Device::kCpu;
    auto half = [](const std::shared_ptr<Storage>& s) { return reinterpret_cast<bfloat16*>(s->data()); };
    auto run = [&](int i) {
      const Set& set = sets[static_cast<size_t>(i) % sets.size()];
      const auto& in = set.inputs;
      float* out = out_block->data();
      float* per_channel = per_channel_block->data();
      if (is_gemm) {
        if (spec.precision == Precision::kBf16)
          WN_DISPATCH(device, gemm, half(out_block), half(set.bf16_inputs[0]), half(set.bf16_inputs[1]), spec.shape,
                      GemmEpilogueBf16{});
        else
          WN_DISPATCH(device, gemm, out, in[0], in[1], spec.shape, GemmEpilogue{});
      } else if (op == "copy") {
        WN_DISPATCH(device, scale, out, in[0], 1.0f, layout.elements());
      } else if (op == "forward") {
        if (fused) WN_DISPATCH(device, weightnorm_forward, out, per_channel, in[0], in[1], layout, eps);
        else WN_DISPATCH(device, weightnorm_forward_unfused, out, per_channel, in[0], in[1], layout, eps);
      } else if (op == "backward") {
        if (fused) WN_DISPATCH(device, weightnorm_backward, out, per_channel, in[0], in[1], in[2], in[3], layout, eps);
        else WN_DISPATCH(device, weightnorm_backward_unfused, out, per_channel, in[0], in[1], in[2], in[3], layout, eps);
      } else if (op == "forward-bf16") {
        WN_DISPATCH(device, weightnorm_forward, half(out_block), per_channel, half(set.bf16_inputs[0]), in[1], layout, eps);
      } else {  // backward-bf16: dv, dg from dw, v (bfloat16) and g, norm (float32)
        WN_DISPATCH(device, weightnorm_backward, half(out_block), per_channel, half(set.bf16_inputs[0]),
                    half(set.bf16_inputs[1]), in[2], in[3], layout, eps);
      }
    };
    PrecisionGuard precision(device, spec.precision);
    if (outputs_only) {
      run(0);
      Napi::Object out_object = new_tensor(env, device, is_gemm ? std::vector<int64_t>{spec.shape.m, spec.shape.n} : shape);
      float* out = TensorWrap::From(out_object, "out").data();
      if (bf16) widen_on(device, out, half(out_block), out_elements);
      else copy_on(device, out, out_block->data(), out_elements);
      Napi::Value per_channel_object = env.Null();
      if (!is_gemm) {
        Napi::Object object = new_tensor(env, device, {per_channel_elements});
        copy_on(device, TensorWrap::From(object, "perChannel").data(), per_channel_block->data(), per_channel_elements);
        per_channel_object = object;
      }
      return named_results(env, {{"out", out_object},
                                 {"perChannel", per_channel_object},
                                 {"backend", Napi::String::New(env, is_gemm ? gemm_backend_on(device) : "")}});
    }
    std::vector<double> milliseconds;
    // At least one untimed run first: a kernel that throws (not implemented on this backend) does so before any
    // CUDA event exists.
    const int warm = (bf16 || is_gemm) ? std::max(warmup, 1) : warmup;
    if (cpu) {
      for (int i = 0; i < warm; ++i) run(i);
      for (int i = 0; i < repeats; ++i) {
        const auto start = std::chrono::steady_clock::now();
        run(warm + i);
        const auto stop = std::chrono::steady_clock::now();
        milliseconds.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
      }
    } else {
#ifdef WEIGHTNORM_WITH_CUDA
      milliseconds = cuda::time_on_stream(run, warm, repeats);
#endif
    }
    Napi::Float64Array result = Napi::Float64Array::New(env, milliseconds.size());
    for (size_t i = 0; i < milliseconds.size(); ++i) result[i] = milliseconds[i];
    return result;
  });
}

int count_argument(const Napi::CallbackInfo& info, size_t index, const char* function, const char* parameter, int minimum) {
  const Napi::Value value = info[index];
  const double d = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1.0;
  if (!(d >= minimum && d <= 2147483647.0) || d != static_cast<double>(static_cast<int>(d)))
    throw_range_error(info.Env(), std::string(function) + ": " + parameter + ": expected an integer >= " +
                                      std::to_string(minimum) + ", got " + describe_value(value));
  return static_cast<int>(d);
}

}  // namespace

// benchmarkTimes(request, warmup, repeats) -> Float64Array of ms per run
Napi::Value BenchmarkTimes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Request request = parse_request(env, info[0], "benchmarkTimes");
  const int warmup = count_argument(info, 1, "benchmarkTimes", "warmup", 0);
  const int repeats = count_argument(info, 2, "benchmarkTimes", "repeats", 1);
  return run_benchmark(env, "benchmarkTimes", request, warmup, repeats, false);
}

// benchmarkOutputs(request) -> { out, perChannel, backend }
Napi::Value BenchmarkOutputs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Request request = parse_request(env, info[0], "benchmarkOutputs");
  if (request.op == "copy")
    throw_type_error(env, "benchmarkOutputs: request.op: expected 'forward', 'backward', 'forward-bf16', "
                          "'backward-bf16' or 'gemm' (copy has no outputs to check), got 'copy'");
  return run_benchmark(env, "benchmarkOutputs", request, 0, 0, true);
}


}  // namespace weightnorm::binding
