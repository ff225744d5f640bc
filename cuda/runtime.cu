// Device probing, the library stream, error translation and the caching allocator (see runtime.cuh).
#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "check.cuh"
#include "runtime.cuh"

namespace weightnorm::cuda {
namespace {

std::mutex g_mutex;
cudaStream_t g_stream = nullptr;
std::string g_sticky_error;  // first unrecoverable error, repeated by every later failure

bool is_sticky(cudaError_t error) {
  switch (error) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}

// Blocks are rounded so that freed blocks of nearly equal requests can be reused.
size_t rounded_size(size_t bytes) {
  constexpr size_t kSmallGranule = 512, kLargeGranule = size_t{2} << 20, kSmallLimit = size_t{1} << 20;
  const size_t granule = bytes < kSmallLimit ? kSmallGranule : kLargeGranule;
  return (bytes + granule - 1) / granule * granule;
}

struct CachingAllocator {
  std::map<size_t, std::vector<void*>> free_blocks;  // by rounded size
  size_t allocated = 0;
  size_t cached = 0;

  void drop_cache() {
    for (auto& [size, blocks] : free_blocks)
      for (void* block : blocks) cudaFree(block);
    free_blocks.clear();
    cached = 0;
  }
};

CachingAllocator& allocator() {
  static CachingAllocator instance;
  return instance;
}

}  // namespace

[[noreturn]] void throw_cuda_error(cudaError_t error, const char* what, const char* file, int line) {
  std::ostringstream message;
  message << "CUDA error " << cudaGetErrorName(error) << " (" << cudaGetErrorString(error) << ") from " << what
          << " at " << file << ":" << line;
  const bool sticky = is_sticky(error) || !g_sticky_error.empty();
  if (sticky) {
    if (g_sticky_error.empty()) {
      g_sticky_error = message.str();
    } else {
      message << "; the device context was already lost earlier: " << g_sticky_error;
    }
    message << ". The CUDA context is unusable until the process restarts.";
  }
  cudaGetLastError();  // clears a non-sticky error so that later calls are not blamed for it
  throw DeviceError(message.str(), sticky);
}

const DeviceStatus& device_status() {
  static const DeviceStatus status = [] {
    DeviceStatus s;
    int count = 0;
    const cudaError_t error = cudaGetDeviceCount(&count);
    if (error == cudaErrorInsufficientDriver) {
      s.reason = "no NVIDIA driver was found, or it is older than this build's CUDA runtime (cudaErrorInsufficientDriver)";
      cudaGetLastError();
      return s;
    }
    if (error == cudaErrorNoDevice) {
      s.reason = "the NVIDIA driver reports no CUDA device (cudaErrorNoDevice)";
      cudaGetLastError();
      return s;
    }
    if (error != cudaSuccess) {
      s.reason = std::string("CUDA is unusable: ") + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")";
      cudaGetLastError();
      return s;
    }
    if (count == 0) {
      s.reason = "the CUDA driver reports no devices";
      return s;
    }
    cudaDeviceProp props{};
    if (cudaGetDeviceProperties(&props, 0) != cudaSuccess) {
      s.reason = "cudaGetDeviceProperties failed for device 0";
      cudaGetLastError();
      return s;
    }
    s.device_count = count;
    s.name = props.name;
    s.compute_major = props.major;
    s.compute_minor = props.minor;
    s.multiprocessors = props.multiProcessorCount;
    s.total_bytes = props.totalGlobalMem;
    if (cudaSetDevice(0) != cudaSuccess || cudaFree(nullptr) != cudaSuccess) {
      s.reason = std::string("cannot create a context on ") + props.name;
      cudaGetLastError();
      return s;
    }
    s.usable = true;
    return s;
  }();
  return status;
}

cudaStream_t library_stream() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_stream) WN_CUDA_CHECK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  return g_stream;
}

void* allocate(size_t bytes) {
  const size_t size = rounded_size(bytes == 0 ? 1 : bytes);
  std::lock_guard<std::mutex> lock(g_mutex);
  CachingAllocator& cache = allocator();
  auto it = cache.free_blocks.find(size);
  if (it != cache.free_blocks.end() && !it->second.empty()) {
    void* block = it->second.back();
    it->second.pop_back();
    cache.cached -= size;
    cache.allocated += size;
    return block;
  }
  void* block = nullptr;
  cudaError_t error = cudaMalloc(&block, size);
  if (error == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    cudaStreamSynchronize(g_stream);  // blocks freed in stream order must be idle before cudaFree
    cache.drop_cache();
    error = cudaMalloc(&block, size);
  }
  if (error == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    std::ostringstream message;
    message << "CUDA out of memory: requested " << bytes << " bytes, " << free_bytes << " of " << total_bytes
            << " bytes free on the device";
    throw OutOfMemoryError(message.str(), bytes, free_bytes);
  }
  if (error != cudaSuccess) throw_cuda_error(error, "cudaMalloc", __FILE__, __LINE__);
  cache.allocated += size;
  return block;
}

void release(void* pointer, size_t bytes) {
  if (!pointer) return;
  const size_t size = rounded_size(bytes == 0 ? 1 : bytes);
  std::lock_guard<std::mutex> lock(g_mutex);
  CachingAllocator& cache = allocator();
  cache.free_blocks[size].push_back(pointer);
  cache.allocated -= size;
  cache.cached += size;
}

void release_cached() {
  synchronize();
  std::lock_guard<std::mutex> lock(g_mutex);
  allocator().drop_cache();
}

MemoryStats memory_stats() {
  MemoryStats stats;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    stats.allocated_bytes = allocator().allocated;
    stats.cached_bytes = allocator().cached;
  }
  if (device_status().usable) {
    cudaMemGetInfo(&stats.device_free_bytes, &stats.device_total_bytes);
    cudaGetLastError();
  }
  return stats;
}

void copy_to_device(void* device_destination, const void* host_source, size_t bytes) {
  if (bytes == 0) return;
  // Pageable host memory: the copy is complete (staged) when the call returns, so the source may be freed.
  WN_CUDA_CHECK(cudaMemcpyAsync(device_destination, host_source, bytes, cudaMemcpyHostToDevice, library_stream()));
  WN_CUDA_CHECK(cudaStreamSynchronize(library_stream()));
}

void copy_to_host(void* host_destination, const void* device_source, size_t bytes) {
  if (bytes == 0) return;
  WN_CUDA_CHECK(cudaMemcpyAsync(host_destination, device_source, bytes, cudaMemcpyDeviceToHost, library_stream()));
  WN_CUDA_CHECK(cudaStreamSynchronize(library_stream()));
}

void copy_device_to_device(void* destination, const void* source, size_t bytes) {
  if (bytes == 0) return;
  WN_CUDA_CHECK(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDeviceToDevice, library_stream()));
}

void fill_zero(void* device_destination, size_t bytes) {
  if (bytes == 0) return;
  WN_CUDA_CHECK(cudaMemsetAsync(device_destination, 0, bytes, library_stream()));
}

std::vector<double> time_on_stream(const std::function<void(int run)>& body, int warmup, int repeats) {
  cudaStream_t stream = library_stream();
  for (int i = 0; i < warmup; ++i) body(i);
  std::vector<cudaEvent_t> events(2 * static_cast<size_t>(repeats));
  for (auto& event : events) WN_CUDA_CHECK(cudaEventCreate(&event));
  for (int i = 0; i < repeats; ++i) {
    WN_CUDA_CHECK(cudaEventRecord(events[2 * i], stream));
    body(warmup + i);
    WN_CUDA_CHECK(cudaEventRecord(events[2 * i + 1], stream));
  }
  WN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> milliseconds(repeats);
  for (int i = 0; i < repeats; ++i) {
    float ms = 0.0f;
    WN_CUDA_CHECK(cudaEventElapsedTime(&ms, events[2 * i], events[2 * i + 1]));
    milliseconds[i] = ms;
  }
  for (auto& event : events) cudaEventDestroy(event);
  return milliseconds;
}

void synchronize() { WN_CUDA_CHECK(cudaStreamSynchronize(library_stream())); }

}  // namespace weightnorm::cuda
