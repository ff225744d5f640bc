// Host (CPU) memory for tensors: a caching allocator with a bound on what it keeps, the CPU's counterpart of the
// CUDA caching allocator in cuda/runtime.cuh. Plain C++, no N-API; thread-safe (a tensor may be freed from a
// finalizer or a worker thread).
//
// Why: a training step frees and reallocates the same multi-megabyte activations every step. Left to glibc, those
// frees raise its dynamic mmap threshold, after which such blocks come from the heap and per-thread arenas, where
// fragmentation keeps gigabytes resident while only megabytes are live. Here:
//  - blocks of kLargeBlockBytes and more are mapped with mmap, rounded up to a size class (eight classes per power
//    of two, so at most 1/8 is rounding), and kept on a free list per class when freed: the next step gets the same
//    pages back, already faulted in, with no system call and no zeroing;
//  - the free lists hold at most limit() bytes; a freed block that would push them past it takes the place of the
//    least recently freed ones, which are unmapped at once, so resident memory is bounded by the live tensors plus
//    the limit and the cache follows the loop that runs now. A block larger than limit() / 8 (32 MiB by
//    default, the ceiling glibc also puts on its mmap threshold) is never cached: a few such blocks would fill the
//    cache, and mapping and faulting them in costs little next to the work done on that much data;
//  - a cached block not reused within kMaxIdleAllocations large allocations is unmapped: the cache holds what the
//    running loop reuses, not what a one-off pass left behind (a data-dependent init at a larger batch, say);
//  - smaller blocks come from aligned_alloc, and freed ones are kept too, on one free list per size (64-byte
//    granules), at most kSmallCacheBytes of them (and at most limit() / kSmallCacheFraction): glibc serves a 64-byte
//    aligned block of 1-64 KiB through its sorted bins, splitting and coalescing chunks on every call, and a tensor
//    of that size (a bias gradient, a batch of logits) cost 10-20 us to create and free against 2.5 us for a tiny
//    one; the free lists give it back in 2.5-3 us. They count in cached_bytes, and release_cached() and a lower
//    limit return them as they do the large ones.
// Every block is at least kAlignment-byte aligned.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace weightnorm::cpu {

struct HostMemoryStats {
  size_t allocated_bytes = 0;  // held by live allocations (rounded sizes)
  size_t cached_bytes = 0;     // freed blocks kept for reuse
  size_t limit_bytes = 0;      // the most the cache keeps
};

class HostAllocator {
 public:
  static constexpr size_t kAlignment = 64;
  static constexpr size_t kLargeBlockBytes = size_t{64} << 10;
  static constexpr size_t kDefaultLimitBytes = size_t{256} << 20;
  // A training step makes tens of large allocations, so this is some tens of steps.
  static constexpr uint64_t kMaxIdleAllocations = 1024;
  static constexpr uint64_t kIdleSweepInterval = 64;  // large allocations between looks for idle blocks
  static constexpr size_t kLargestCachedFraction = 8;  // blocks above limit() / 8 are not cached
  static constexpr size_t kSmallCacheBytes = size_t{4} << 20;  // the most small blocks kept
  static constexpr size_t kSmallCacheFraction = 16;  // and at most limit() / 16 of them

  explicit HostAllocator(size_t limit_bytes = kDefaultLimitBytes) : limit_(limit_bytes) {}
  ~HostAllocator();  // unmaps the cached blocks (live ones belong to their owners)
  HostAllocator(const HostAllocator&) = delete;
  HostAllocator& operator=(const HostAllocator&) = delete;

  // `bytes` of uninitialized memory. Throws weightnorm::OutOfMemoryError when the system refuses even after the
  // cache was returned to it.
  void* allocate(size_t bytes);
  // Takes back a block from allocate(); `bytes` must be the size it was allocated with.
  void release(void* pointer, size_t bytes);
  // Returns every cached block to the system.
  void release_cached();
  // Sets the cache bound (and so the largest block cached, limit / 8); cached blocks beyond either are returned
  // to the system now. 0 disables caching.
  void set_limit(size_t limit_bytes);
  size_t limit() const;
  HostMemoryStats stats() const;

  // The size a request of `bytes` occupies: kAlignment granules below kLargeBlockBytes, else its size class.
  static size_t rounded_size(size_t bytes);

 private:
  struct CachedBlock {
    void* pointer;
    uint64_t cached_at;  // large_allocations_ when it was freed
  };
  using Evicted = std::vector<std::pair<void*, size_t>>;  // blocks to unmap once the lock is released
  size_t largest_cached_block() const { return limit_ / kLargestCachedFraction; }
  // Moves cached blocks to `evicted`: the largest first until at most target_bytes remain and none is larger than
  // largest_cached_block(); or those idle too long.
  void take_largest_locked(size_t target_bytes, Evicted& evicted);
  void take_idle_locked(Evicted& evicted);
  // Unmaps the least recently freed blocks until at most target_bytes are cached.
  void take_oldest_locked(size_t target_bytes, Evicted& evicted);
  static void unmap_all(const Evicted& evicted);
  size_t small_cache_bound() const { return std::min(kSmallCacheBytes, limit_ / kSmallCacheFraction); }
  // Moves cached small blocks to `freed` (their pointers, to free once the lock is released) until at most
  // target_bytes of them remain.
  void take_small_locked(size_t target_bytes, std::vector<void*>& freed);

  mutable std::mutex mutex_;
  std::map<size_t, std::vector<CachedBlock>> free_blocks_;  // by rounded size, each list oldest first
  // Small blocks by size in granules (index = rounded size / kAlignment), each list most recently freed last.
  std::vector<void*> small_blocks_[kLargeBlockBytes / kAlignment];
  size_t small_cached_ = 0;  // bytes on small_blocks_ (also counted in cached_)
  size_t limit_;
  size_t allocated_ = 0;
  size_t cached_ = 0;
  uint64_t large_allocations_ = 0;
};

// The allocator behind every CPU tensor. Its limit starts at the environment variable WEIGHTNORM_CPU_CACHE_BYTES
// when that is a non-negative integer (bytes), else HostAllocator::kDefaultLimitBytes.
HostAllocator& host_allocator();

}  // namespace weightnorm::cpu
