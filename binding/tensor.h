// The native tensor handle: a shape and a shared Storage. ts/tensor.ts wraps it; nothing else in JS touches it.
#pragma once
#include <napi.h>

#include <initializer_list>
#include <memory>
#include <utility>
#include <string>
#include <vector>

#include "storage.h"
#include "weightnorm/bfloat16.h"
#include "weightnorm/dtype.h"
#include "weightnorm/layout.h"

namespace weightnorm::binding {

// Element types (weightnorm/dtype.h): float32 everywhere; bfloat16 for the per-element tensors of weightNorm,
// weightNormBackward and matmul (their norms, gains and epilogue vectors stay float32); int32 and bool for the
// tensor math ops (binding/pointwise.cc); any of them as the source or target of cast.
using weightnorm::DType;
using weightnorm::dtype_size;
const char* dtype_name(DType dtype);  // "float32" | "bfloat16" | "int32" | "bool"
// "float32" | "bfloat16" | "int32" | "bool"; undefined means float32.
DType parse_dtype(Napi::Env env, const Napi::Value& value, const char* parameter);

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static void Define(Napi::Env env, Napi::Object exports);
  // A new JS handle owning `storage`.
  static Napi::Object Create(Napi::Env env, std::shared_ptr<Storage> storage, std::vector<int64_t> shape,
                             DType dtype = DType::kFloat32);
  // The live float32 tensor behind `value`; a TypeError naming `parameter` when it is not a tensor or holds
  // another element type, an Error when disposed. Every op that only knows float32 takes its tensors from here,
  // so a bfloat16, int32 or bool tensor can never reach a float32 kernel.
  static TensorWrap& From(const Napi::Value& value, const char* parameter);
  // The same for ops that take float32 or bfloat16 (they dispatch on dtype()): int32 and bool are a TypeError.
  static TensorWrap& FromFloating(const Napi::Value& value, const char* parameter);
  // The same for ops that take any element type (cast, copies, the pointwise ops, which check it themselves).
  static TensorWrap& FromAnyType(const Napi::Value& value, const char* parameter);
  // The tensor behind `value` when it is a live float32 native tensor, else null (nothing thrown): callers on hot
  // paths try this first and build a parameter's name only to report an error through From().
  static TensorWrap* LiveFloat32(const Napi::Value& value);

  explicit TensorWrap(const Napi::CallbackInfo& info);

  // Frees the memory now, keeping the handle (an op that failed frees its outputs so; dispose() also deletes the
  // handle, see Dispose).
  void release_storage() {
    storage_.reset();
    companion_.reset();
  }
  // Memory an op attached to its output for that output's backward, freed with it: the weight-normalized Linear's
  // y carries t = x·vᵀ. One NativeTensor (a JS object, its wrap and its finalizer, ~2 us to make and free) less per
  // layer and step than returning t as its own tensor.
  void set_companion(std::shared_ptr<Storage> companion) { companion_ = std::move(companion); }
  const std::shared_ptr<Storage>& companion() const { return companion_; }

  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const;
  Device device() const { return storage_->device(); }
  DType dtype() const { return dtype_; }
  float* data() const { return storage_->data(); }
  bfloat16* bf16_data() const { return reinterpret_cast<bfloat16*>(storage_->data()); }
  int32_t* int32_data() const { return reinterpret_cast<int32_t*>(storage_->data()); }
  uint8_t* bool_data() const { return reinterpret_cast<uint8_t*>(storage_->data()); }  // 0 or 1 per element
  void* raw_data() const { return storage_->data(); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

 private:
  // The methods and accessors of NativeTensor.prototype. Static, each finding its handle itself (see Lookup): the
  // instance members of Napi::ObjectWrap throw an opaque "Invalid argument" once dispose() has removed the wrap.
  static Napi::Value ToArray(const Napi::CallbackInfo& info);
  static Napi::Value Data(const Napi::CallbackInfo& info);
  static Napi::Value To(const Napi::CallbackInfo& info);
  static Napi::Value Dispose(const Napi::CallbackInfo& info);
  static Napi::Value GetShape(const Napi::CallbackInfo& info);
  static Napi::Value GetDevice(const Napi::CallbackInfo& info);
  static Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  static Napi::Value GetDtype(const Napi::CallbackInfo& info);
  // What a JS value is to the binding: not a handle, a handle whose wrap dispose() removed, or a handle with its
  // wrap (whose storage may still be null: an op that failed released its outputs' memory, see OutputScope).
  struct Lookup {
    bool is_handle = false;
    TensorWrap* wrap = nullptr;  // null for a value that is not a handle, and for a disposed one
  };
  static Lookup Find(const Napi::Value& value);
  // `this` of a NativeTensor method: its wrap, null for a disposed handle (`disposed` and `device` answer for one),
  // a TypeError naming `member` when `this` is not a handle.
  static TensorWrap* SelfOrDisposed(const Napi::CallbackInfo& info, const char* member);
  // The same, with an Error naming `member` for a disposed handle.
  static TensorWrap& Self(const Napi::CallbackInfo& info, const char* member);

  std::shared_ptr<Storage> storage_;  // null once disposed
  std::shared_ptr<Storage> companion_;  // see set_companion; null if none, and once disposed
  std::vector<int64_t> shape_;
  DType dtype_ = DType::kFloat32;
};

// The tensors an op creates while it runs (every TensorWrap::Create inside it is recorded). If the op fails, the
// scope's destructor disposes them at once: without it their memory, GPU memory included, would wait for the JS
// garbage collector although no JS code can ever reach them. guarded() opens one per op; an op that succeeds
// commits, handing its tensors to the enclosing scope if there is one.
class OutputScope {
 public:
  OutputScope();
  ~OutputScope();
  OutputScope(const OutputScope&) = delete;
  OutputScope& operator=(const OutputScope&) = delete;
  void commit();
  static void record(TensorWrap* created);

 private:
  std::vector<TensorWrap*> created_;
  OutputScope* enclosing_;
  bool committed_ = false;
};

// A new tensor handle with fresh (uninitialized) storage.
Napi::Object new_tensor(Napi::Env env, Device device, std::vector<int64_t> shape, DType dtype = DType::kFloat32);
double number_argument(const Napi::CallbackInfo& info, size_t index, const char* parameter);
// A positional boolean argument: "parameter: expected a boolean, got ..." otherwise.
bool boolean_argument(const Napi::CallbackInfo& info, size_t index, const char* parameter);
// A plain JS object of named results, e.g. { w, norm }.
Napi::Object named_results(Napi::Env env, std::initializer_list<std::pair<const char*, Napi::Value>> fields);

// Parses a device name ("cpu" | "cuda"), checking that CUDA is usable when asked for.
Device parse_device(Napi::Env env, const Napi::Value& value, const char* parameter);
// Parses a shape (array of non-negative safe integers).
std::vector<int64_t> parse_shape(Napi::Env env, const Napi::Value& value, const char* parameter);
// The [outer, channels, inner] view for weight norm over all axes but `dim` (null: one norm for everything).
ChannelLayout layout_for(Napi::Env env, const std::vector<int64_t>& shape, const Napi::Value& dim_value);
int64_t element_count(const std::vector<int64_t>& shape);

// What a JS value is, for error messages: a string quoted ('relu'), a number or boolean as written, else its kind
// (null, undefined, an array, an object, a function).
std::string describe_value(const Napi::Value& value);
// An enum-like string argument: `value` if it is one of `accepted`, else a TypeError naming the function, the
// parameter, the accepted values and what came ("activation: kind: expected 'relu' or 'tanh', got 'gelu'").
std::string parse_kind(Napi::Env env, const Napi::Value& value, const char* function, const char* parameter,
                       const std::vector<const char*>& accepted);

// An enum-like string argument mapped to its enum value, with parse_kind()'s error: `choices` pairs each accepted
// name with its value.
template <class Enum>
Enum parse_choice(Napi::Env env, const Napi::Value& value, const char* function, const char* parameter,
                  std::initializer_list<std::pair<const char*, Enum>> choices);

// Reads the fields of one named options object, converting each once; every error names the function and the
// field ("optimizerStep: options.lr: expected a number, got undefined"). Optional fields may be absent, undefined
// or null.
class OptionsReader {
 public:
  // A TypeError when `value` is not a plain object. `path` is how the object is named in messages ("options").
  OptionsReader(Napi::Env env, const Napi::Value& value, std::string function, std::string path);
  Napi::Env env() const { return env_; }
  // "function: path.name", the prefix of every message about the field.
  std::string where(const char* name) const;
  // The raw field, for values with their own parser (shapes, tensor lists).
  Napi::Value value(const char* name) const { return object_.Get(name); }
  bool has(const char* name) const;
  // An enum-like string field, as parse_kind() checks it.
  std::string kind(const char* name, std::initializer_list<const char*> accepted) const;
  // An enum-like string field mapped to its enum value, as parse_choice() checks it.
  template <class Enum>
  Enum choice(const char* name, std::initializer_list<std::pair<const char*, Enum>> choices) const {
    return parse_choice(env_, value(name), function_.c_str(), (path_ + "." + name).c_str(), choices);
  }
  double number(const char* name) const;
  // A number rounded to float32, the kernels' parameter type.
  float float32(const char* name) const { return static_cast<float>(number(name)); }
  // A safe integer >= minimum.
  int64_t integer(const char* name, int64_t minimum) const;
  // A whole number of either sign (a TypeError for a fraction).
  int64_t whole_number(const char* name) const;
  // The view [outer, channels, inner] given as the integer fields outer, channels and inner.
  ChannelLayout channel_layout() const;
  bool boolean(const char* name) const;
  // A live float32 tensor.
  TensorWrap& tensor(const char* name) const;
  TensorWrap* optional_tensor(const char* name) const;
  // A nested options object (a TypeError naming it when absent: check has() first for an optional one).
  OptionsReader object(const char* name) const;

 private:
  [[noreturn]] void fail(const char* name, const char* expected) const;

  Napi::Env env_;
  Napi::Object object_;
  std::string function_;
  std::string path_;
};

template <class Enum>
Enum parse_choice(Napi::Env env, const Napi::Value& value, const char* function, const char* parameter,
                  std::initializer_list<std::pair<const char*, Enum>> choices) {
  std::vector<const char*> accepted;
  for (const auto& [name, choice] : choices) accepted.push_back(name);
  const std::string name = parse_kind(env, value, function, parameter, accepted);
  for (const auto& [candidate, choice] : choices)
    if (name == candidate) return choice;
  return choices.begin()->second;  // not reached: parse_kind accepted one of the names
}

std::string shape_string(const std::vector<int64_t>& shape);  // "[2, 3]"

// The checks and outputs every op binding shares; each error names the parameter it is about.

// A positional tensor argument that may be null or undefined (nullptr then).
TensorWrap* optional_tensor_argument(const Napi::Value& value, const char* parameter);
// A TypeError unless t is on `device`: "parameter: expected a tensor on cpu, got one on cuda".
void expect_device(Napi::Env env, const TensorWrap& t, Device device, const std::string& parameter);
// The device of the first tensor given; a TypeError (as expect_device) for the first one on another device. Null
// entries (absent optional tensors) are skipped; none at all gives the CPU.
Device common_device(Napi::Env env, std::initializer_list<std::pair<TensorWrap*, const char*>> tensors);
// A RangeError unless t holds `count` elements: "parameter: expected 6 elements, got [2, 2]".
void expect_count(Napi::Env env, const TensorWrap& t, int64_t count, const std::string& parameter);

// A new float32 tensor and its elements, for an op to write.
struct Output {
  Napi::Object object;
  float* data;
};
Output output(Napi::Env env, Device device, std::vector<int64_t> shape);

// The result object of a backward: one named float32 output per gradient asked for; add() gives nullptr for a
// gradient not asked for, which the kernels skip.
class GradientOutputs {
 public:
  GradientOutputs(Napi::Env env, Device device) : env_(env), device_(device), result_(Napi::Object::New(env)) {}
  float* add(bool wanted, const char* name, std::vector<int64_t> shape);
  Napi::Object result() const { return result_; }

 private:
  Napi::Env env_;
  Device device_;
  Napi::Object result_;
};

}  // namespace weightnorm::binding
