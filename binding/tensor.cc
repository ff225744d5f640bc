#include "tensor.h"

#include <cstring>
#include <string>

#include "errors.h"
#include "weightnorm/layout.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/runtime.cuh"
#endif

namespace weightnorm::binding {
namespace {

// Only Create() may construct a handle: JS code calling `new NativeTensor()` gets an error. A flag set around
// Create()'s own call rather than a token argument: a Napi::External per tensor cost an allocation and a weak
// handle that the garbage collector had to process for every tensor ever made.
thread_local bool t_creating = false;

// What Dispose marks a handle with when it removes its wrap: a type tag is a private property that JS code cannot
// set, so a disposed handle and an object that only has NativeTensor's prototype stay apart (Find).
constexpr napi_type_tag kDisposedTag = {0x7765696768746e6fULL, 0x726d2d646973706fULL};

struct AddonData {
  Napi::FunctionReference tensor_constructor;
  // NativeTensor.prototype: a handle is an object with exactly this prototype (see TensorWrap::Find).
  Napi::ObjectReference tensor_prototype;
};

void copy_between(const Storage& destination, const Storage& source, size_t bytes) {
  if (bytes == 0) return;
  if (source.device() == Device::kCpu && destination.device() == Device::kCpu) {
    std::memcpy(destination.data(), source.data(), bytes);
    return;
  }
#ifdef WEIGHTNORM_WITH_CUDA
  if (source.device() == Device::kCpu) return cuda::copy_to_device(destination.data(), source.data(), bytes);
  if (destination.device() == Device::kCpu) return cuda::copy_to_host(destination.data(), source.data(), bytes);
  return cuda::copy_device_to_device(destination.data(), source.data(), bytes);
#else
  throw std::logic_error("CUDA copy in a CPU-only build");
#endif
}

// Raw bytes of `storage` into host memory (waits for pending GPU work).
void read_bytes(void* host, const Storage& storage, size_t bytes) {
  if (bytes == 0) return;
  if (storage.device() == Device::kCpu) {
    std::memcpy(host, storage.data(), bytes);
  } else {
#ifdef WEIGHTNORM_WITH_CUDA
    cuda::copy_to_host(host, storage.data(), bytes);
#endif
  }
}

// Host elements of a float dtype widened to float32 (a plain copy for float32).
void widen_to_float(float* out, const void* elements, DType dtype, size_t count) {
  if (dtype == DType::kFloat32) {
    if (count) std::memcpy(out, elements, count * sizeof(float));
    return;
  }
  const auto* values = static_cast<const bfloat16*>(elements);
  for (size_t i = 0; i < count; ++i) out[i] = bfloat16_to_float(values[i]);
}

// The JS array for `count` host elements of `dtype`: Float32Array for float32 and bfloat16 (widened exactly),
// Int32Array for int32, Uint8Array (0 or 1) for bool.
Napi::TypedArray host_array(Napi::Env env, const void* elements, DType dtype, size_t count) {
  if (dtype == DType::kInt32) {
    Napi::Int32Array array = Napi::Int32Array::New(env, count);
    if (count) std::memcpy(array.Data(), elements, count * sizeof(int32_t));
    return array;
  }
  if (dtype == DType::kBool) {
    Napi::Uint8Array array = Napi::Uint8Array::New(env, count);
    if (count) std::memcpy(array.Data(), elements, count);
    return array;
  }
  Napi::Float32Array array = Napi::Float32Array::New(env, count);
  widen_to_float(array.Data(), elements, dtype, count);
  return array;
}

}  // namespace

namespace {
// One op runs at a time per thread (the JS thread); nested guarded() calls nest scopes.
thread_local OutputScope* active_scope = nullptr;
}  // namespace

OutputScope::OutputScope() : enclosing_(active_scope) { active_scope = this; }

OutputScope::~OutputScope() {
  active_scope = enclosing_;
  if (committed_) return;
  // The JS objects stay alive until the garbage collector finds them; only their memory goes now.
  for (TensorWrap* wrap : created_) wrap->release_storage();
}

void OutputScope::commit() {
  committed_ = true;
  if (enclosing_) enclosing_->created_.insert(enclosing_->created_.end(), created_.begin(), created_.end());
}

void OutputScope::record(TensorWrap* created) {
  if (active_scope) active_scope->created_.push_back(created);
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kBFloat16: return "bfloat16";
    case DType::kInt32: return "int32";
    case DType::kBool: return "bool";
  }
  return "unknown";
}

DType parse_dtype(Napi::Env env, const Napi::Value& value, const char* parameter) {
  if (value.IsUndefined()) return DType::kFloat32;
  const std::string name = value.IsString() ? value.As<Napi::String>().Utf8Value() : "";
  if (name == "float32") return DType::kFloat32;
  if (name == "bfloat16") return DType::kBFloat16;
  if (name == "int32") return DType::kInt32;
  if (name == "bool") return DType::kBool;
  throw_type_error(env, std::string(parameter) + ": expected 'float32', 'bfloat16', 'int32' or 'bool', got " +
                            describe_value(value));
}

namespace {

// A NativeTensor member as an N-API callback; a Napi::Error it throws becomes the JS exception.
template <Napi::Value (*Member)(const Napi::CallbackInfo&)>
napi_value member_callback(napi_env env, napi_callback_info raw) {
  try {
    const Napi::CallbackInfo info(env, raw);
    return Member(info);
  } catch (const Napi::Error& error) {
    error.ThrowAsJavaScriptException();
    return nullptr;
  }
}

template <Napi::Value (*Member)(const Napi::CallbackInfo&)>
napi_property_descriptor method(const char* name) {
  return {name, nullptr, member_callback<Member>, nullptr, nullptr, nullptr, napi_default, nullptr};
}

template <Napi::Value (*Getter)(const Napi::CallbackInfo&)>
napi_property_descriptor getter(const char* name) {
  return {name, nullptr, nullptr, member_callback<Getter>, nullptr, nullptr, napi_default, nullptr};
}

}  // namespace

// The members are given to the class itself (its prototype template), not defined on the prototype afterwards, so
// V8 checks that `this` is an instance of the class before calling them ("Illegal invocation" otherwise).
void TensorWrap::Define(Napi::Env env, Napi::Object exports) {
  Napi::Function constructor = DefineClass(env, "NativeTensor",
                                           {
                                               method<&TensorWrap::ToArray>("toArray"),
                                               method<&TensorWrap::Data>("data"),
                                               method<&TensorWrap::To>("to"),
                                               method<&TensorWrap::Dispose>("dispose"),
                                               getter<&TensorWrap::GetShape>("shape"),
                                               getter<&TensorWrap::GetDevice>("device"),
                                               getter<&TensorWrap::GetDisposed>("disposed"),
                                               getter<&TensorWrap::GetDtype>("dtype"),
                                           });
  auto* data = new AddonData();
  data->tensor_constructor = Napi::Persistent(constructor);
  data->tensor_prototype = Napi::Persistent(constructor.Get("prototype").As<Napi::Object>());
  env.SetInstanceData(data);
  exports.Set("NativeTensor", constructor);
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {
  const bool from_native = t_creating;
  t_creating = false;
  if (!from_native) throw_type_error(info.Env(), "NativeTensor cannot be constructed directly; use tensor(), zeros() or randn()");
}

// A handle is recognized by its prototype, then unwrapped. V8 answers `instanceof` through a generic walk (a
// Symbol.hasInstance lookup, then the chain), about as long as the rest of an argument's checks: a prototype read
// and one comparison do it for the handles only Create() makes (the constructor refuses any other caller, so no
// subclass instance exists). A handle without a wrap is a disposed one when Dispose tagged it so; an object made
// with Object.create(NativeTensor.prototype) has neither and is no handle.
TensorWrap::Lookup TensorWrap::Find(const Napi::Value& value) {
  const napi_env env = value.Env();
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_object) return {};
  napi_value prototype;
  bool same = false;
  const auto* data = Napi::Env(env).GetInstanceData<AddonData>();
  if (napi_get_prototype(env, value, &prototype) != napi_ok ||
      napi_strict_equals(env, prototype, data->tensor_prototype.Value(), &same) != napi_ok || !same)
    return {};
  void* unwrapped = nullptr;
  if (napi_unwrap(env, value, &unwrapped) == napi_ok) return {true, static_cast<TensorWrap*>(unwrapped)};
  bool disposed = false;  // napi_unwrap's failure is a status, no JS exception
  napi_check_object_type_tag(env, value, &kDisposedTag, &disposed);
  return {disposed, nullptr};
}

TensorWrap* TensorWrap::SelfOrDisposed(const Napi::CallbackInfo& info, const char* member) {
  // `this` is unwrapped first, as Napi::ObjectWrap's members did (V8 has already checked that `this` was made by
  // the class: the members are on its template): these run for every tensor the TS side makes, and Find's
  // prototype comparison cost them half again. Only a failure takes the full lookup.
  void* unwrapped = nullptr;
  if (napi_unwrap(info.Env(), info.This(), &unwrapped) == napi_ok) return static_cast<TensorWrap*>(unwrapped);
  if (Find(info.This()).is_handle) return nullptr;
  throw_type_error(info.Env(), std::string("NativeTensor.") + member + ": called on " + describe_value(info.This()) +
                                   ", not a native tensor");
}

TensorWrap& TensorWrap::Self(const Napi::CallbackInfo& info, const char* member) {
  TensorWrap* self = SelfOrDisposed(info, member);
  if (!self) throw Napi::Error::New(info.Env(), std::string("NativeTensor.") + member + ": the tensor has been disposed");
  return *self;
}

Napi::Object TensorWrap::Create(Napi::Env env, std::shared_ptr<Storage> storage, std::vector<int64_t> shape,
                                DType dtype) {
  auto* data = env.GetInstanceData<AddonData>();
  t_creating = true;
  Napi::Object object = data->tensor_constructor.New({});
  t_creating = false;  // also when New threw before the constructor ran
  TensorWrap* wrap = Napi::ObjectWrap<TensorWrap>::Unwrap(object);
  wrap->storage_ = std::move(storage);
  wrap->shape_ = std::move(shape);
  wrap->dtype_ = dtype;
  OutputScope::record(wrap);
  return object;
}

TensorWrap& TensorWrap::From(const Napi::Value& value, const char* parameter) {
  TensorWrap& wrap = FromAnyType(value, parameter);
  if (wrap.dtype_ != DType::kFloat32)
    throw_type_error(value.Env(), std::string(parameter) + ": expected a float32 tensor, got a " + dtype_name(wrap.dtype_) +
                                      " one (bfloat16 tensors go through weightNorm, weightNormBackward, matmul and cast; "
                                      "int32 and bool ones through the tensor math ops and cast)");
  return wrap;
}

TensorWrap& TensorWrap::FromFloating(const Napi::Value& value, const char* parameter) {
  TensorWrap& wrap = FromAnyType(value, parameter);
  if (wrap.dtype_ != DType::kFloat32 && wrap.dtype_ != DType::kBFloat16)
    throw_type_error(value.Env(), std::string(parameter) + ": expected a float32 or bfloat16 tensor, got a " +
                                      dtype_name(wrap.dtype_) + " one (convert it with cast)");
  return wrap;
}

TensorWrap& TensorWrap::FromAnyType(const Napi::Value& value, const char* parameter) {
  Napi::Env env = value.Env();
  const Lookup found = Find(value);
  if (!found.is_handle) throw_type_error(env, std::string(parameter) + ": expected a native tensor, got " + describe_value(value));
  if (!found.wrap || !found.wrap->storage_) throw Napi::Error::New(env, std::string(parameter) + ": the tensor has been disposed");
  return *found.wrap;
}

TensorWrap* TensorWrap::LiveFloat32(const Napi::Value& value) {
  TensorWrap* wrap = Find(value).wrap;
  return wrap && wrap->storage_ && wrap->dtype_ == DType::kFloat32 ? wrap : nullptr;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t element_count(const std::vector<int64_t>& shape) {
  for (int64_t d : shape)
    if (d == 0) return 0;  // before any product: the other dims may overflow one
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

int64_t TensorWrap::numel() const { return element_count(shape_); }

Napi::Value TensorWrap::ToArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& self = FromAnyType(info.This(), "tensor");
  return guarded(env, [&]() -> Napi::Value {
    const size_t count = static_cast<size_t>(self.numel());
    if (self.dtype() == DType::kFloat32) {  // straight into the array, no staging copy
      Napi::Float32Array array = Napi::Float32Array::New(env, count);
      read_bytes(array.Data(), *self.storage_, count * sizeof(float));
      return array;
    }
    std::vector<unsigned char> host(count * dtype_size(self.dtype()));
    read_bytes(host.data(), *self.storage_, host.size());
    return host_array(env, host.data(), self.dtype(), count);
  });
}

namespace {

// Copies a tensor to the host on a worker thread, so waiting for the GPU does not block the event loop. Holds its
// own reference to the storage: disposing the tensor meanwhile cannot free memory the copy still reads.
class ReadbackWorker : public Napi::AsyncWorker {
 public:
  ReadbackWorker(Napi::Env env, std::shared_ptr<Storage> storage, DType dtype, size_t count)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), storage_(std::move(storage)),
        dtype_(dtype), count_(count), host_(count * dtype_size(dtype)) {}

  Napi::Promise promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      read_bytes(host_.data(), *storage_, host_.size());
    } catch (const std::exception& error) {
      SetError(error.what());
    }
  }

  void OnOK() override { deferred_.Resolve(host_array(Env(), host_.data(), dtype_, count_)); }

  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Storage> storage_;
  DType dtype_;
  size_t count_;
  std::vector<unsigned char> host_;  // the raw elements
};

}  // namespace

Napi::Value TensorWrap::Data(const Napi::CallbackInfo& info) {
  TensorWrap& self = FromAnyType(info.This(), "tensor");
  auto* worker = new ReadbackWorker(info.Env(), self.storage_, self.dtype_, static_cast<size_t>(self.numel()));
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

Napi::Value TensorWrap::To(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& self = FromAnyType(info.This(), "tensor");
  const Device target = parse_device(env, info[0], "device");
  return guarded(env, [&]() -> Napi::Value {
    const size_t bytes = static_cast<size_t>(self.numel()) * dtype_size(self.dtype_);
    auto storage = Storage::allocate(target, bytes);
    copy_between(*storage, *self.storage_, bytes);
    return Create(env, std::move(storage), self.shape_, self.dtype_);
  });
}

// Frees the memory and deletes the handle's native side at once, removing its wrap. A wrap is a weak reference with
// a finalizer, which every young-generation collection processes until the object dies: with tens of tensors per
// training step that was most of each scavenge (~1 us per tensor in all, ~3% of the demo MLP's step on 2 cores).
// A handle disposed this way has no native side left: its methods throw that it was disposed, `disposed` is true,
// `device` null, and the ops' checks say it was disposed (see Find). One never disposed keeps its wrap, and the
// finalizer frees it when the collector finds it.
Napi::Value TensorWrap::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // The full lookup, not Self's bare unwrap: the handle is deleted below, so `this` must be one Create() made.
  const Lookup found = Find(info.This());
  if (!found.is_handle) Self(info, "dispose");  // throws the TypeError
  if (!found.wrap) return env.Undefined();  // disposing twice is harmless
  void* removed = nullptr;
  if (napi_type_tag_object(env, info.This(), &kDisposedTag) != napi_ok ||
      napi_remove_wrap(env, info.This(), &removed) != napi_ok || removed != found.wrap) {
    // Not expected: keep the wrap (the finalizer will delete the handle) and only free the memory.
    found.wrap->release_storage();
    return env.Undefined();
  }
  // The wrap was made with a reference kept by Napi::ObjectWrap: removing the wrap leaves that reference without
  // its finalizer, and deleting the handle deletes it (~Reference), which frees its weak global handle.
  delete found.wrap;
  return env.Undefined();
}

Napi::Value TensorWrap::GetShape(const Napi::CallbackInfo& info) {
  const TensorWrap& self = Self(info, "shape");
  Napi::Array array = Napi::Array::New(info.Env(), self.shape_.size());
  for (size_t i = 0; i < self.shape_.size(); ++i)
    array.Set(i, Napi::Number::New(info.Env(), static_cast<double>(self.shape_[i])));
  return array;
}

Napi::Value TensorWrap::GetDevice(const Napi::CallbackInfo& info) {
  const TensorWrap* self = SelfOrDisposed(info, "device");
  if (!self || !self->storage_) return info.Env().Null();
  return Napi::String::New(info.Env(), device_name(self->storage_->device()));
}

Napi::Value TensorWrap::GetDisposed(const Napi::CallbackInfo& info) {
  const TensorWrap* self = SelfOrDisposed(info, "disposed");
  return Napi::Boolean::New(info.Env(), !self || !self->storage_);
}

Napi::Value TensorWrap::GetDtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtype_name(Self(info, "dtype").dtype_));
}

// The [outer, channels, inner] view for weight norm over all axes but `dim` (null: one norm for everything).
ChannelLayout layout_for(Napi::Env env, const std::vector<int64_t>& shape, const Napi::Value& dim_value) {
  ChannelLayout layout;
  if (dim_value.IsNull() || dim_value.IsUndefined()) {
    layout.inner = element_count(shape);
    return layout;
  }
  if (!dim_value.IsNumber()) throw_type_error(env, "dim: expected an integer or null");
  const double d = dim_value.As<Napi::Number>().DoubleValue();
  const int64_t rank = static_cast<int64_t>(shape.size());
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < 0 || d >= rank)
    throw_range_error(env, "dim: expected an axis in [0, " + std::to_string(rank) + ") after normalization");
  const int64_t dim = static_cast<int64_t>(d);
  for (int64_t i = 0; i < dim; ++i) layout.outer *= shape[i];
  layout.channels = shape[dim];
  for (int64_t i = dim + 1; i < rank; ++i) layout.inner *= shape[i];
  return layout;
}

Napi::Object new_tensor(Napi::Env env, Device device, std::vector<int64_t> shape, DType dtype) {
  // Every output passes here: one whose size overflows, or exceeds the library's 2^40-element limit (computed from
  // validated inputs, e.g. a product of two huge dims with a zero inner one), is refused before any allocation.
  constexpr int64_t kMaxElements = int64_t{1} << 40;
  int64_t count = 1;
  bool too_large = false;
  for (int64_t d : shape) {
    if (d == 0) {
      count = 0;
      too_large = false;
      break;
    }
    if (d < 0 || __builtin_mul_overflow(count, d, &count) || count > kMaxElements) too_large = true;
  }
  if (too_large) {
    Napi::Error error = Napi::RangeError::New(env, "the result would have shape " + shape_string(shape) +
                                                       ", more than the 2^40 elements a tensor may hold");
    error.Set("code", Napi::String::New(env, "ERR_WEIGHTNORM_OUT_OF_MEMORY"));
    throw error;
  }
  const size_t bytes = static_cast<size_t>(count) * dtype_size(dtype);
  return TensorWrap::Create(env, Storage::allocate(device, bytes), std::move(shape), dtype);
}

double number_argument(const Napi::CallbackInfo& info, size_t index, const char* parameter) {
  if (!info[index].IsNumber()) throw_type_error(info.Env(), std::string(parameter) + ": expected a number");
  return info[index].As<Napi::Number>().DoubleValue();
}

bool boolean_argument(const Napi::CallbackInfo& info, size_t index, const char* parameter) {
  if (!info[index].IsBoolean())
    throw_type_error(info.Env(), std::string(parameter) + ": expected a boolean, got " + describe_value(info[index]));
  return info[index].As<Napi::Boolean>().Value();
}

Napi::Object named_results(Napi::Env env, std::initializer_list<std::pair<const char*, Napi::Value>> fields) {
  Napi::Object result = Napi::Object::New(env);
  for (const auto& [name, value] : fields) result.Set(name, value);
  return result;
}

Device parse_device(Napi::Env env, const Napi::Value& value, const char* parameter) {
  const std::string name = value.IsString() ? value.As<Napi::String>().Utf8Value() : "";
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda") {
    std::string reason;
    if (!cuda_usable(&reason)) throw_range_error(env, std::string(parameter) + ": 'cuda' is not usable: " + reason);
    return Device::kCuda;
  }
  throw_type_error(env, std::string(parameter) + ": expected 'cpu' or 'cuda', got " + describe_value(value));
}

std::vector<int64_t> parse_shape(Napi::Env env, const Napi::Value& value, const char* parameter) {
  if (!value.IsArray()) throw_type_error(env, std::string(parameter) + ": expected an array of dimension sizes");
  Napi::Array array = value.As<Napi::Array>();
  std::vector<int64_t> shape(array.Length());
  constexpr double kMaxSafe = 9007199254740991.0;
  double total = 1.0;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    const double d = item.IsNumber() ? item.As<Napi::Number>().DoubleValue() : -1.0;
    if (!(d >= 0.0) || d != static_cast<double>(static_cast<int64_t>(d)) || d > kMaxSafe)
      throw_type_error(env, std::string(parameter) + ": dimension " + std::to_string(i) + " is not a non-negative integer");
    shape[i] = static_cast<int64_t>(d);
    total *= d;
  }
  if (total * sizeof(float) > kMaxSafe)
    throw_range_error(env, std::string(parameter) + ": " + shape_string(shape) + " has too many elements");
  return shape;
}


std::string describe_value(const Napi::Value& value) {
  if (value.IsString()) return "'" + value.As<Napi::String>().Utf8Value() + "'";
  if (value.IsNumber() || value.IsBoolean()) return value.ToString().Utf8Value();
  if (value.IsNull()) return "null";
  if (value.IsUndefined()) return "undefined";
  if (value.IsArray()) return "an array";
  if (value.IsFunction()) return "a function";
  if (value.IsObject()) return "an object";
  return "a value of another type";
}

std::string parse_kind(Napi::Env env, const Napi::Value& value, const char* function, const char* parameter,
                       const std::vector<const char*>& accepted) {
  if (value.IsString()) {
    std::string name = value.As<Napi::String>().Utf8Value();
    for (const char* candidate : accepted)
      if (name == candidate) return name;
  }
  std::string expected;
  size_t index = 0;
  for (const char* candidate : accepted) {
    if (index > 0) expected += index + 1 == accepted.size() ? " or " : ", ";
    expected += std::string("'") + candidate + "'";
    ++index;
  }
  throw_type_error(env, std::string(function) + ": " + parameter + ": expected " + expected + ", got " +
                            describe_value(value));
}

OptionsReader::OptionsReader(Napi::Env env, const Napi::Value& value, std::string function, std::string path)
    : env_(env), function_(std::move(function)), path_(std::move(path)) {
  if (!value.IsObject() || value.IsArray() || value.IsFunction())
    throw_type_error(env, function_ + ": " + path_ + ": expected an options object, got " + describe_value(value));
  object_ = value.As<Napi::Object>();
}

std::string OptionsReader::where(const char* name) const { return function_ + ": " + path_ + "." + name; }

void OptionsReader::fail(const char* name, const char* expected) const {
  throw_type_error(env_, where(name) + ": expected " + expected + ", got " + describe_value(value(name)));
}

bool OptionsReader::has(const char* name) const {
  const Napi::Value field = value(name);
  return !field.IsUndefined() && !field.IsNull();
}

std::string OptionsReader::kind(const char* name, std::initializer_list<const char*> accepted) const {
  return parse_kind(env_, value(name), function_.c_str(), (path_ + "." + name).c_str(), accepted);
}

double OptionsReader::number(const char* name) const {
  const Napi::Value field = value(name);
  if (!field.IsNumber()) fail(name, "a number");
  return field.As<Napi::Number>().DoubleValue();
}

int64_t OptionsReader::whole_number(const char* name) const {
  const double d = number(name);
  if (d != static_cast<double>(static_cast<int64_t>(d))) throw_type_error(env_, where(name) + ": expected an integer");
  return static_cast<int64_t>(d);
}

ChannelLayout OptionsReader::channel_layout() const {
  ChannelLayout layout;
  layout.outer = integer("outer", 0);
  layout.channels = integer("channels", 0);
  layout.inner = integer("inner", 0);
  return layout;
}

int64_t OptionsReader::integer(const char* name, int64_t minimum) const {
  const double d = number(name);
  if (!(d >= static_cast<double>(minimum) && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<int64_t>(d)))
    throw_range_error(env_, where(name) + ": expected an integer >= " + std::to_string(minimum) + ", got " +
                                describe_value(value(name)));
  return static_cast<int64_t>(d);
}

bool OptionsReader::boolean(const char* name) const {
  const Napi::Value field = value(name);
  if (!field.IsBoolean()) fail(name, "a boolean");
  return field.As<Napi::Boolean>().Value();
}

TensorWrap& OptionsReader::tensor(const char* name) const {
  const Napi::Value field = value(name);
  if (TensorWrap* wrap = TensorWrap::LiveFloat32(field)) return *wrap;
  return TensorWrap::From(field, (function_ + ": " + path_ + "." + name).c_str());  // throws, naming the field
}

TensorWrap* OptionsReader::optional_tensor(const char* name) const { return has(name) ? &tensor(name) : nullptr; }

OptionsReader OptionsReader::object(const char* name) const {
  return OptionsReader(env_, value(name), function_, path_ + "." + name);
}

TensorWrap* optional_tensor_argument(const Napi::Value& value, const char* parameter) {
  if (value.IsNull() || value.IsUndefined()) return nullptr;
  return &TensorWrap::From(value, parameter);
}

void expect_device(Napi::Env env, const TensorWrap& t, Device device, const std::string& parameter) {
  if (t.device() != device)
    throw_type_error(env, parameter + ": expected a tensor on " + device_name(device) + ", got one on " +
                              device_name(t.device()));
}

Device common_device(Napi::Env env, std::initializer_list<std::pair<TensorWrap*, const char*>> tensors) {
  const TensorWrap* first = nullptr;
  for (const auto& [t, name] : tensors) {
    if (!t) continue;
    if (!first) first = t;
    else expect_device(env, *t, first->device(), name);
  }
  return first ? first->device() : Device::kCpu;
}

void expect_count(Napi::Env env, const TensorWrap& t, int64_t count, const std::string& parameter) {
  if (t.numel() != count)
    throw_range_error(env, parameter + ": expected " + std::to_string(count) + " elements, got " + shape_string(t.shape()));
}

Output output(Napi::Env env, Device device, std::vector<int64_t> shape) {
  Napi::Object object = new_tensor(env, device, std::move(shape));
  return {object, TensorWrap::From(object, "output").data()};
}

float* GradientOutputs::add(bool wanted, const char* name, std::vector<int64_t> shape) {
  if (!wanted) return nullptr;
  Output o = output(env_, device_, std::move(shape));
  result_.Set(name, o.object);
  return o.data;
}

}  // namespace weightnorm::binding
