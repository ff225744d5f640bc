// CUDA error checking for .cu files: a failed call becomes a weightnorm::DeviceError naming file and line.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "weightnorm/errors.h"

namespace weightnorm::cuda {

cudaStream_t library_stream();

[[noreturn]] void throw_cuda_error(cudaError_t error, const char* what, const char* file, int line);

inline void check_cuda(cudaError_t error, const char* what, const char* file, int line) {
  if (error != cudaSuccess) throw_cuda_error(error, what, file, line);
}

}  // namespace weightnorm::cuda

#define WN_CUDA_CHECK(call) ::weightnorm::cuda::check_cuda((call), #call, __FILE__, __LINE__)
// After a kernel launch: catches bad launch configurations at once (execution errors surface at the next sync).
#define WN_CUDA_CHECK_LAUNCH() ::weightnorm::cuda::check_cuda(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
