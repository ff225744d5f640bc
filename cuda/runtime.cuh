// CUDA device, stream and memory for the rest of the library. Plain C++ API (no CUDA types), so the binding is
// compiled without the CUDA headers. Every function throws weightnorm::DeviceError or OutOfMemoryError on failure.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace weightnorm::cuda {

struct DeviceStatus {
  bool usable = false;
  std::string reason;  // why CUDA is unusable ("" when usable)
  std::string name;    // device 0's name
  int device_count = 0;
  int compute_major = 0, compute_minor = 0;
  int multiprocessors = 0;
  size_t total_bytes = 0;
};

// Probes the driver and device 0 once (cached). Never throws: a machine without a GPU or driver is a status.
const DeviceStatus& device_status();

// Memory through the caching allocator: blocks are kept for reuse instead of returned with cudaFree, so ops do
// not pay for cudaMalloc/cudaFree. All work runs on one library stream, so a block freed and reused is ordered.
void* allocate(size_t bytes);
void release(void* pointer, size_t bytes);
void release_cached();  // hands every cached block back to the driver

struct MemoryStats {
  size_t allocated_bytes = 0;  // held by live allocations
  size_t cached_bytes = 0;     // free blocks kept for reuse
  size_t device_free_bytes = 0;
  size_t device_total_bytes = 0;
};
MemoryStats memory_stats();

void copy_to_device(void* device_destination, const void* host_source, size_t bytes);
void copy_to_host(void* host_destination, const void* device_source, size_t bytes);  // waits for the stream
void copy_device_to_device(void* destination, const void* source, size_t bytes);
void fill_zero(void* device_destination, size_t bytes);
void synchronize();

// Runs body() `warmup` times, then `repeats` times with CUDA events around each run on the library stream;
// returns each run's milliseconds.
std::vector<double> time_on_stream(const std::function<void(int run)>& body, int warmup, int repeats);

// Scratch memory for the duration of one op: released (back to the cache) when it goes out of scope.
class Scratch {
 public:
  explicit Scratch(size_t bytes) : bytes_(bytes), pointer_(bytes ? allocate(bytes) : nullptr) {}
  ~Scratch() {
    if (pointer_) release(pointer_, bytes_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* floats() const { return static_cast<float*>(pointer_); }

 private:
  size_t bytes_;
  void* pointer_;
};

}  // namespace weightnorm::cuda
