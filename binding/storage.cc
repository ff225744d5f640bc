#include "storage.h"

#include "weightnorm/errors.h"

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <new>

#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/runtime.cuh"
#endif

namespace weightnorm::binding {
namespace {

constexpr size_t kCpuAlignment = 64;
DeviceCounters g_counters[2];

DeviceCounters& counters_of(Device device) { return g_counters[device == Device::kCpu ? 0 : 1]; }

}  // namespace

const char* device_name(Device device) { return device == Device::kCpu ? "cpu" : "cuda"; }

DeviceCounters counters(Device device) { return counters_of(device); }

bool cuda_compiled() {
#ifdef WEIGHTNORM_WITH_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_usable(std::string* reason) {
#ifdef WEIGHTNORM_WITH_CUDA
  const auto& status = cuda::device_status();
  if (!status.usable && reason) *reason = status.reason;
  return status.usable;
#else
  if (reason) *reason = "this build of weightnorm has no CUDA kernels (the CUDA toolkit was not found or a CPU-only build was forced)";
  return false;
#endif
}

std::shared_ptr<Storage> Storage::allocate(Device device, size_t bytes) {
  float* data = nullptr;
  if (device == Device::kCpu) {
    // Refuse what the machine cannot hold: with memory overcommit, a huge allocation "succeeds" and the first
    // touch gets the process killed instead of an error.
    static const size_t physical = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
    if (bytes > physical) {
      throw OutOfMemoryError("host out of memory: a tensor of " + std::to_string(bytes) + " bytes was requested; this machine has " +
                                 std::to_string(physical) + " bytes of RAM",
                             bytes, physical);
    }
    const size_t padded = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
    data = static_cast<float*>(std::aligned_alloc(kCpuAlignment, padded == 0 ? kCpuAlignment : padded));
    if (!data) throw std::bad_alloc();
  } else {
#ifdef WEIGHTNORM_WITH_CUDA
    data = static_cast<float*>(cuda::allocate(bytes));
#else
    throw std::logic_error("CUDA storage requested from a CPU-only build");
#endif
  }
  DeviceCounters& c = counters_of(device);
  c.tensors += 1;
  c.bytes += static_cast<int64_t>(bytes);
  return std::shared_ptr<Storage>(new Storage(device, data, bytes));
}

Storage::~Storage() {
  DeviceCounters& c = counters_of(device_);
  c.tensors -= 1;
  c.bytes -= static_cast<int64_t>(bytes_);
  if (device_ == Device::kCpu) {
    std::free(data_);
  } else {
#ifdef WEIGHTNORM_WITH_CUDA
    cuda::release(data_, bytes_);
#endif
  }
}

}  // namespace weightnorm::binding
