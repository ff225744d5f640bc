// The host caching allocator (see host_allocator.h).
#include "host_allocator.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "weightnorm/errors.h"

namespace weightnorm::cpu {
namespace {

constexpr int kClassBits = 3;  // 2^3 size classes per power of two: 8/8, 9/8, ..., 15/8 of it

void* map_block(size_t size) {
  void* block = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return block == MAP_FAILED ? nullptr : block;
}

void unmap_block(void* block, size_t size) { munmap(block, size); }

[[noreturn]] void throw_out_of_memory(size_t bytes, int error) {
  const size_t free_bytes = static_cast<size_t>(sysconf(_SC_AVPHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
  throw OutOfMemoryError("host out of memory: a tensor of " + std::to_string(bytes) +
                             " bytes could not be allocated (" + std::strerror(error) +
                             ") after the CPU cache was returned to the system; " + std::to_string(free_bytes) +
                             " bytes of RAM are free",
                         bytes, free_bytes);
}

size_t limit_from_environment() {
  const char* text = std::getenv("WEIGHTNORM_CPU_CACHE_BYTES");
  if (!text || !*text) return HostAllocator::kDefaultLimitBytes;
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || text[0] == '-') return HostAllocator::kDefaultLimitBytes;
  return static_cast<size_t>(value);
}

}  // namespace

size_t HostAllocator::rounded_size(size_t bytes) {
  if (bytes < kLargeBlockBytes) {
    const size_t granules = bytes == 0 ? 1 : (bytes + kAlignment - 1) / kAlignment;
    return granules * kAlignment;
  }
  int power = 0;
  while ((bytes >> (power + 1)) != 0) ++power;  // bytes in [2^power, 2^(power+1))
  const size_t granule = size_t{1} << (power - kClassBits);
  if (bytes > std::numeric_limits<size_t>::max() - granule) return bytes;  // unreachable for a real request
  return (bytes + granule - 1) / granule * granule;
}

// Every size class is then a whole number of 4 KiB pages.
static_assert(HostAllocator::kLargeBlockBytes >= (size_t{4096} << kClassBits), "size-class granules must be whole pages");

HostAllocator::~HostAllocator() { release_cached(); }

void* HostAllocator::allocate(size_t bytes) {
  const size_t size = rounded_size(bytes);
  if (size < kLargeBlockBytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      std::vector<void*>& blocks = small_blocks_[size / kAlignment];
      if (!blocks.empty()) {
        void* block = blocks.back();  // the most recently freed: likeliest still in the CPU caches
        blocks.pop_back();
        small_cached_ -= size;
        cached_ -= size;
        allocated_ += size;
        return block;
      }
    }
    void* block = std::aligned_alloc(kAlignment, size);
    if (!block) {
      release_cached();
      block = std::aligned_alloc(kAlignment, size);
      if (!block) throw_out_of_memory(bytes, ENOMEM);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    allocated_ += size;
    return block;
  }
  void* block = nullptr;
  Evicted idle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (++large_allocations_ % kIdleSweepInterval == 0) take_idle_locked(idle);
    auto it = free_blocks_.find(size);
    if (it != free_blocks_.end()) {
      block = it->second.back().pointer;  // the most recently freed: likeliest still in the CPU caches
      it->second.pop_back();
      if (it->second.empty()) free_blocks_.erase(it);
      cached_ -= size;
      allocated_ += size;
    }
  }
  unmap_all(idle);  // outside the lock: unmapping a large block takes a while
  if (block) return block;
  block = map_block(size);
  if (!block) {
    release_cached();
    block = map_block(size);
    if (!block) throw_out_of_memory(bytes, errno);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  allocated_ += size;
  return block;
}

void HostAllocator::release(void* pointer, size_t bytes) {
  if (!pointer) return;
  const size_t size = rounded_size(bytes);
  if (size < kLargeBlockBytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      allocated_ -= size;
      if (small_cached_ + size <= small_cache_bound()) {
        small_blocks_[size / kAlignment].push_back(pointer);
        small_cached_ += size;
        cached_ += size;
        return;
      }
    }
    std::free(pointer);
    return;
  }
  Evicted older;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    allocated_ -= size;
    if (size <= largest_cached_block()) {
      // A full cache makes room by unmapping its least recently freed blocks: the block freed now belongs to the
      // running loop and is the likeliest to be asked for next, while the oldest are what a one-off pass left
      // behind. (Unmapping the new block instead kept a cache filled by an earlier, larger workload: every step of
      // the next loop then mapped and faulted in its blocks anew, 4x slower for an MNIST step after the weight-norm
      // benchmark's inputs.)
      take_oldest_locked(limit_ - size - small_cached_, older);
      free_blocks_[size].push_back({pointer, large_allocations_});
      cached_ += size;
      cached = true;
    }
  }
  unmap_all(older);
  if (!cached) unmap_block(pointer, size);  // larger than any cached block may be: back to the system
}

void HostAllocator::take_oldest_locked(size_t target_bytes, Evicted& evicted) {
  while (cached_ > target_bytes && !free_blocks_.empty()) {
    auto oldest = free_blocks_.begin();  // each class's list is oldest first: compare the heads
    for (auto it = free_blocks_.begin(); it != free_blocks_.end(); ++it) {
      if (it->second.front().cached_at < oldest->second.front().cached_at) oldest = it;
    }
    evicted.emplace_back(oldest->second.front().pointer, oldest->first);
    cached_ -= oldest->first;
    oldest->second.erase(oldest->second.begin());
    if (oldest->second.empty()) free_blocks_.erase(oldest);
  }
}

void HostAllocator::take_small_locked(size_t target_bytes, std::vector<void*>& freed) {
  // The largest sizes first: they free the most for the fewest blocks.
  for (size_t granules = kLargeBlockBytes / kAlignment; granules-- > 0 && small_cached_ > target_bytes;) {
    std::vector<void*>& blocks = small_blocks_[granules];
    while (!blocks.empty() && small_cached_ > target_bytes) {
      freed.push_back(blocks.back());
      blocks.pop_back();
      small_cached_ -= granules * kAlignment;
      cached_ -= granules * kAlignment;
    }
  }
}

void HostAllocator::take_largest_locked(size_t target_bytes, Evicted& evicted) {
  while (!free_blocks_.empty()) {
    auto largest = std::prev(free_blocks_.end());
    const size_t size = largest->first;
    if (cached_ <= target_bytes && size <= largest_cached_block()) break;
    evicted.emplace_back(largest->second.front().pointer, size);  // the oldest of its size
    largest->second.erase(largest->second.begin());
    if (largest->second.empty()) free_blocks_.erase(largest);
    cached_ -= size;
  }
}

void HostAllocator::take_idle_locked(Evicted& evicted) {
  for (auto it = free_blocks_.begin(); it != free_blocks_.end();) {
    auto& blocks = it->second;  // oldest first
    size_t idle = 0;
    while (idle < blocks.size() && large_allocations_ - blocks[idle].cached_at > kMaxIdleAllocations) {
      evicted.emplace_back(blocks[idle].pointer, it->first);
      cached_ -= it->first;
      ++idle;
    }
    blocks.erase(blocks.begin(), blocks.begin() + static_cast<std::ptrdiff_t>(idle));
    it = blocks.empty() ? free_blocks_.erase(it) : std::next(it);
  }
}

void HostAllocator::unmap_all(const Evicted& evicted) {
  for (const auto& [block, size] : evicted) unmap_block(block, size);
}

void HostAllocator::release_cached() {
  Evicted evicted;
  std::vector<void*> freed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    take_small_locked(0, freed);
    take_largest_locked(0, evicted);
  }
  for (void* block : freed) std::free(block);
  unmap_all(evicted);
}

void HostAllocator::set_limit(size_t limit_bytes) {
  Evicted evicted;
  std::vector<void*> freed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = limit_bytes;
    take_small_locked(small_cache_bound(), freed);
    take_largest_locked(limit_bytes - small_cached_, evicted);
  }
  for (void* block : freed) std::free(block);
  unmap_all(evicted);
}

size_t HostAllocator::limit() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return limit_;
}

HostMemoryStats HostAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {allocated_, cached_, limit_};
}

HostAllocator& host_allocator() {
  // Never destroyed: tensors still alive at exit (module-level JS objects) are freed after static destructors ran.
  static HostAllocator* instance = new HostAllocator(limit_from_environment());
  return *instance;
}

}  // namespace weightnorm::cpu
