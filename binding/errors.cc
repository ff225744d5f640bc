#include "errors.h"

#include <functional>
#include <new>
#include <stdexcept>
#include <string>

#include "tensor.h"
#include "weightnorm/errors.h"

namespace weightnorm::binding {

void throw_type_error(Napi::Env env, const std::string& message) { throw Napi::TypeError::New(env, message); }

void throw_range_error(Napi::Env env, const std::string& message) { throw Napi::RangeError::New(env, message); }

Napi::Value guarded(Napi::Env env, const std::function<Napi::Value()>& body) {
  OutputScope outputs;  // declared before the try: a failed op's outputs are freed however it fails
  try {
    Napi::Value result = body();
    outputs.commit();
    return result;
  } catch (const Napi::Error&) {
    throw;
  } catch (const OutOfMemoryError& error) {
    Napi::Error js = Napi::RangeError::New(env, error.what());
    js.Set("code", Napi::String::New(env, "ERR_WEIGHTNORM_OUT_OF_MEMORY"));
    js.Set("requestedBytes", Napi::Number::New(env, static_cast<double>(error.requested)));
    js.Set("freeBytes", Napi::Number::New(env, static_cast<double>(error.free_bytes)));
    throw js;
  } catch (const DeviceError& error) {
    Napi::Error js = Napi::Error::New(env, error.what());
    js.Set("code", Napi::String::New(env, "ERR_WEIGHTNORM_CUDA"));
    js.Set("sticky", Napi::Boolean::New(env, error.sticky));
    throw js;
  } catch (const std::length_error& error) {
    Napi::Error js = Napi::RangeError::New(env, std::string("a buffer this op needs is too large: ") + error.what());
    js.Set("code", Napi::String::New(env, "ERR_WEIGHTNORM_OUT_OF_MEMORY"));
    throw js;
  } catch (const std::bad_alloc&) {
    Napi::Error js = Napi::RangeError::New(env, "host out of memory while allocating a tensor");
    js.Set("code", Napi::String::New(env, "ERR_WEIGHTNORM_OUT_OF_MEMORY"));
    throw js;
  } catch (const std::exception& error) {
    throw Napi::Error::New(env, error.what());
  }
}

}  // namespace weightnorm::binding
