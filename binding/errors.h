// Turning compute-code exceptions into JS exceptions, and the argument checks the binding re-does cheaply
// (ts/ has already validated with friendlier messages; these guard against direct use of the raw binding).
#pragma once
#include <napi.h>

#include <functional>
#include <string>

namespace weightnorm::binding {

[[noreturn]] void throw_type_error(Napi::Env env, const std::string& message);
[[noreturn]] void throw_range_error(Napi::Env env, const std::string& message);

// Runs body(); the tensors it creates are disposed at once if it throws (see OutputScope). A weightnorm::DeviceError,
// OutOfMemoryError, std::bad_alloc or other std::exception becomes a JS Error (code ERR_WEIGHTNORM_CUDA, with
// `sticky`), RangeError (with requestedBytes/freeBytes), RangeError, or Error.
Napi::Value guarded(Napi::Env env, const std::function<Napi::Value()>& body);

}  // namespace weightnorm::binding
