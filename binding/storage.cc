#include "storage.h"

#include "weightnorm/errors.h"

#include <unistd.h>

#include <atomic>
#include <string>

#include "../cpu/host_allocator.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/runtime.cuh"
#endif

namespace weightnorm::binding {
namespace {

// Atomic: a tensor's storage may be freed off the main thread (the last owner can be an async worker).
struct AtomicCounters {
  std::atomic<int64_t> tensors{0};
  std::atomic<int64_t> bytes{0};
};
AtomicCounters g_counters[2];

AtomicCounters& counters_of(Device device) { return g_counters[device == Device::kCpu ? 0 : 1]; }

}  // namespace

const char* device_name(Device device) { return device == Device::kCpu ? "cpu" : "cuda"; }

DeviceCounters counters(Device device) {
  const AtomicCounters& c = counters_of(device);
  return {c.tensors.load(), c.bytes.load()};
}

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
    data = static_cast<float*>(cpu::host_allocator().allocate(bytes));
  } else {
#ifdef WEIGHTNORM_WITH_CUDA
    data = static_cast<float*>(cuda::allocate(bytes));
#else
    throw std::logic_error("CUDA storage requested from a CPU-only build");
#endif
  }
  AtomicCounters& c = counters_of(device);
  c.tensors += 1;
  c.bytes += static_cast<int64_t>(bytes);
  return std::shared_ptr<Storage>(new Storage(device, data, bytes));
}

Storage::~Storage() {
  AtomicCounters& c = counters_of(device_);
  c.tensors -= 1;
  c.bytes -= static_cast<int64_t>(bytes_);
  if (device_ == Device::kCpu) {
    cpu::host_allocator().release(data_, bytes_);
  } else {
#ifdef WEIGHTNORM_WITH_CUDA
    cuda::release(data_, bytes_);
#endif
  }
}

}  // namespace weightnorm::binding
