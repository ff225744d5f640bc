// A tensor's memory on one device, and the live-tensor counters behind memory().
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace weightnorm::binding {

enum class Device { kCpu, kCuda };

const char* device_name(Device device);

struct DeviceCounters {
  int64_t tensors = 0;
  int64_t bytes = 0;
};
DeviceCounters counters(Device device);

// Owns `bytes` of memory on `device`: CPU buffers (64-byte aligned) from the host caching allocator
// (cpu/host_allocator.h), CUDA buffers from the CUDA caching allocator (cuda/runtime.cuh).
class Storage {
 public:
  static std::shared_ptr<Storage> allocate(Device device, size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  float* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  Storage(Device device, float* data, size_t bytes) : device_(device), data_(data), bytes_(bytes) {}
  Device device_;
  float* data_;
  size_t bytes_;
};

// Whether this build has the CUDA kernels, and whether a GPU is usable now (reason when not).
bool cuda_compiled();
bool cuda_usable(std::string* reason);

}  // namespace weightnorm::binding
