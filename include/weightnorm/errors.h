// Errors raised by compute code. The binding turns them into JS exceptions; compute code never exits or aborts.
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>

namespace weightnorm {

// A CUDA call failed. The message carries the file, line and CUDA error string; `sticky` means the device context
// is corrupted (e.g. an illegal address) and every later CUDA call will fail too.
struct DeviceError : std::runtime_error {
  DeviceError(const std::string& message, bool sticky) : std::runtime_error(message), sticky(sticky) {}
  bool sticky;
};

// The device could not provide `requested` bytes even after the caching allocator released what it held.
struct OutOfMemoryError : std::runtime_error {
  OutOfMemoryError(const std::string& message, size_t requested, size_t free_bytes)
      : std::runtime_error(message), requested(requested), free_bytes(free_bytes) {}
  size_t requested;
  size_t free_bytes;
};

}  // namespace weightnorm
