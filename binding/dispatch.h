// One call site for both backends. cpu/ and cuda/ declare each op family from the same list
// (include/weightnorm/ops/*.inc) on the same plain-data types (include/weightnorm/*.h), so an op called with one
// set of arguments resolves to the same overload in weightnorm::cpu and weightnorm::cuda:
//   WN_DISPATCH(x.device(), channel_sum, out, x.data(), layout);
// runs cpu::channel_sum or cuda::channel_sum by the device. Without CUDA in the build every tensor is on the CPU
// (storage refuses the other device), so the call goes straight to cpu:: (device is still evaluated, so that a
// variable kept only for dispatch is used in both builds). A macro, because a function's name (an
// overload set in two namespaces) cannot be passed to a template.
#pragma once

#include "storage.h"

#ifdef WEIGHTNORM_WITH_CUDA
#define WN_DISPATCH(device, function, ...)                                                     \
  ((device) == ::weightnorm::binding::Device::kCpu ? ::weightnorm::cpu::function(__VA_ARGS__) \
                                                   : ::weightnorm::cuda::function(__VA_ARGS__))
#else
#define WN_DISPATCH(device, function, ...) ((void)(device), ::weightnorm::cpu::function(__VA_ARGS__))
#endif
