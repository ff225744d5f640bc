// The host caching allocator's cases (cpu/host_allocator.h) in the native test runner (backend_ops_test.cc), group
// host_allocator/cpu:
//  - size classes: small requests in 64-byte granules, large ones at most 1/8 over the request, page multiples;
//  - every block 64-byte aligned and fully writable;
//  - reuse: a freed large block comes back for the next request of its size class, contents untouched by the
//    allocator (no zeroing), and a repeated "training step" of allocations maps nothing new after the first;
//  - the bound: freed blocks beyond the limit are unmapped at once (mincore() says the address is gone), the least
//    recently freed first, so a cache filled by an earlier workload makes room for the running loop; lowering
//    the limit trims now, limit 0 caches nothing, a block above limit / 8 is never cached; a block idle for too long
//    is unmapped, one in use is kept;
//  - small blocks (under 64 KiB): a freed one comes back for the next request of its granule count, at most
//    min(4 MiB, limit / 16) of them are kept (the rest go back to malloc), limit 0 keeps none, a lower limit trims
//    them, release_cached() frees them;
//  - release_cached() unmaps every cached block;
//  - accounting: allocated/cached bytes return to zero; a refused mapping becomes OutOfMemoryError;
//  - threads: several threads allocating, filling, checking and freeing at once never share a block.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../../cpu/host_allocator.h"
#include "harness.h"
#include "weightnorm/errors.h"

using weightnorm::cpu::HostAllocator;

namespace {

void check(bool ok, const std::string& what) { weightnorm::native_test::expect(ok, what); }

constexpr size_t kMiB = size_t{1} << 20;

// Whether [pointer, pointer + bytes) is mapped in this process: mincore() fails with ENOMEM for unmapped pages.
bool is_mapped(void* pointer, size_t bytes) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> residency((bytes + page - 1) / page);
  return mincore(pointer, bytes, residency.data()) == 0;
}

bool aligned(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % HostAllocator::kAlignment == 0; }

void test_size_classes() {
  bool small_ok = true;
  for (size_t bytes = 0; bytes < HostAllocator::kLargeBlockBytes; bytes += 37) {
    const size_t size = HostAllocator::rounded_size(bytes);
    small_ok &= size >= std::max<size_t>(bytes, 1) && size < bytes + HostAllocator::kAlignment + 1 && size % HostAllocator::kAlignment == 0;
  }
  check(small_ok, "small requests round up to the next 64-byte granule (0 bytes -> 64)");

  std::mt19937_64 random(1);
  bool large_ok = true;
  size_t worst_bytes = 0;
  for (int i = 0; i < 100000 && large_ok; ++i) {
    const size_t bytes = HostAllocator::kLargeBlockBytes + random() % (size_t{4} << 30);
    const size_t size = HostAllocator::rounded_size(bytes);
    large_ok = size >= bytes && size - bytes <= bytes / 8 && size % 4096 == 0;
    if (!large_ok) worst_bytes = bytes;
  }
  check(large_ok, "large requests round up by at most 1/8 to a whole number of 4 KiB pages" +
                      (large_ok ? std::string() : " (fails for " + std::to_string(worst_bytes) + " bytes)"));
  check(HostAllocator::rounded_size(HostAllocator::kLargeBlockBytes) == HostAllocator::kLargeBlockBytes &&
            HostAllocator::rounded_size(HostAllocator::kLargeBlockBytes + 1) == HostAllocator::kLargeBlockBytes * 9 / 8 &&
            HostAllocator::rounded_size(10 * kMiB) == 10 * kMiB && HostAllocator::rounded_size(10 * kMiB + 1) == 10 * kMiB + kMiB,
        "size classes: 64 KiB -> 64 KiB, 64 KiB + 1 -> 72 KiB, 10 MiB -> 10 MiB, 10 MiB + 1 -> 11 MiB");
}

void test_alignment_and_writable() {
  HostAllocator allocator(64 * kMiB);
  std::mt19937_64 random(2);
  bool ok = true;
  std::vector<std::pair<unsigned char*, size_t>> blocks;
  for (int i = 0; i < 200; ++i) {
    const size_t bytes = i % 2 ? random() % HostAllocator::kLargeBlockBytes : random() % (4 * kMiB);
    auto* block = static_cast<unsigned char*>(allocator.allocate(bytes));
    ok &= block != nullptr && aligned(block);
    std::memset(block, i & 0xff, bytes);
    blocks.emplace_back(block, bytes);
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    const auto [block, bytes] = blocks[i];
    ok &= std::all_of(block, block + bytes, [&](unsigned char value) { return value == (i & 0xff); });
    allocator.release(block, bytes);
  }
  check(ok, "200 blocks of 0 B..4 MiB: 64-byte aligned, writable end to end, contents kept until freed");
  const auto stats = allocator.stats();
  check(stats.allocated_bytes == 0, "allocated bytes back to 0 after freeing everything (" + std::to_string(stats.allocated_bytes) + ")");
}

void test_reuse() {
  HostAllocator allocator(256 * kMiB);
  const size_t bytes = 3 * kMiB + 12345;
  auto* first = static_cast<float*>(allocator.allocate(bytes));
  first[0] = 42.0f;
  allocator.release(first, bytes);
  check(allocator.stats().cached_bytes == HostAllocator::rounded_size(bytes), "a freed large block is cached at its rounded size");
  auto* second = static_cast<float*>(allocator.allocate(bytes - 1000));  // same size class
  check(second == first, "the next request of the same size class gets the cached block back");
  check(second[0] == 42.0f, "a reused block is not zeroed (the allocator never touches its contents)");
  check(allocator.stats().cached_bytes == 0, "taking the block out of the cache uncounts it");
  auto* other = allocator.allocate(5 * kMiB);
  check(other != first, "a live block is never handed out twice");
  allocator.release(second, bytes - 1000);
  allocator.release(other, 5 * kMiB);
}

void test_training_step_reuse() {
  HostAllocator allocator(256 * kMiB);

  // A training step: the same sequence of sizes each step, all freed at its end. After the first step, the cache
  // serves every request: nothing new is mapped, so allocated + cached stays what step 1 left.
  const std::vector<size_t> step_sizes = {10 * kMiB, 10 * kMiB, 2500 * 1024, 313600, 10 * kMiB, 250880, 2500 * 1024, 1000, 64};
  size_t footprint_after_first = 0;
  bool same_blocks = true;
  std::vector<void*> first_step_blocks;
  for (int step = 0; step < 500; ++step) {
    std::vector<void*> live;
    for (size_t size : step_sizes) live.push_back(allocator.allocate(size));
    if (step == 0) {
      first_step_blocks = live;
    } else {
      // The same set of large blocks comes back (in some order).
      for (size_t i = 0; i < live.size(); ++i)
        if (step_sizes[i] >= HostAllocator::kLargeBlockBytes)
          same_blocks &= std::find(first_step_blocks.begin(), first_step_blocks.end(), live[i]) != first_step_blocks.end();
    }
    for (size_t i = 0; i < live.size(); ++i) allocator.release(live[i], step_sizes[i]);
    const auto stats = allocator.stats();
    if (step == 0) footprint_after_first = stats.allocated_bytes + stats.cached_bytes;
    same_blocks &= stats.allocated_bytes + stats.cached_bytes == footprint_after_first;
  }
  check(same_blocks, "500 repeated steps reuse the first step's large blocks; the footprint never grows");
}

void test_bound() {
  const size_t block_bytes = 512 * 1024;
  HostAllocator allocator(8 * kMiB);  // caches blocks up to 1 MiB
  std::vector<void*> blocks;
  for (int i = 0; i < 20; ++i) blocks.push_back(allocator.allocate(block_bytes));
  for (void* block : blocks) allocator.release(block, block_bytes);
  auto mapped_count = [&] {
    int mapped = 0;
    for (void* block : blocks) mapped += is_mapped(block, block_bytes) ? 1 : 0;
    return mapped;
  };
  int mapped = mapped_count();
  check(allocator.stats().cached_bytes == 8 * kMiB && mapped == 16,
        "limit 8 MiB, twenty 512 KiB blocks freed: 8 MiB cached, the other 4 unmapped at once (cached " +
            std::to_string(allocator.stats().cached_bytes) + ", mapped " + std::to_string(mapped) + ")");

  allocator.set_limit(4 * kMiB);
  mapped = mapped_count();
  check(allocator.stats().cached_bytes == 4 * kMiB && mapped == 8, "lowering the limit to 4 MiB unmaps the excess now");

  allocator.release_cached();
  mapped = mapped_count();
  check(allocator.stats().cached_bytes == 0 && mapped == 0, "release_cached() unmaps every cached block");

  allocator.set_limit(0);
  void* block = allocator.allocate(kMiB);
  allocator.release(block, kMiB);
  check(allocator.stats().cached_bytes == 0 && !is_mapped(block, kMiB), "limit 0: a freed large block is unmapped, nothing cached");

  // A block larger than limit / 8 is never cached, even into an empty cache; one of exactly limit / 8 is.
  allocator.set_limit(8 * kMiB);
  void* big = allocator.allocate(kMiB + 1);
  allocator.release(big, kMiB + 1);
  check(allocator.stats().cached_bytes == 0 && !is_mapped(big, kMiB + 1), "limit 8 MiB: a block of 1 MiB + 1 byte is unmapped when freed");
  void* largest = allocator.allocate(kMiB);
  allocator.release(largest, kMiB);
  check(allocator.stats().cached_bytes == kMiB && is_mapped(largest, kMiB), "limit 8 MiB: a block of 1 MiB is cached");
  allocator.set_limit(4 * kMiB);
  check(allocator.stats().cached_bytes == 0 && !is_mapped(largest, kMiB),
        "lowering the limit to 4 MiB unmaps the cached 1 MiB block, now above limit / 8");
}

// A cache filled by an earlier workload (sixteen 512 KiB blocks, the whole 8 MiB) makes room for the loop that runs
// now: its freed 1 MiB block is cached in place of the two least recently freed blocks, and comes back next step.
void test_full_cache_follows_the_running_loop() {
  const size_t old_bytes = 512 * 1024;
  HostAllocator allocator(8 * kMiB);
  std::vector<void*> old_blocks;
  for (int i = 0; i < 16; ++i) old_blocks.push_back(allocator.allocate(old_bytes));
  for (void* block : old_blocks) allocator.release(block, old_bytes);
  check(allocator.stats().cached_bytes == 8 * kMiB, "the earlier workload fills the 8 MiB cache");
  void* step = allocator.allocate(kMiB);
  allocator.release(step, kMiB);
  check(is_mapped(step, kMiB) && allocator.stats().cached_bytes == 8 * kMiB,
        "a full cache keeps the block freed now (cached " + std::to_string(allocator.stats().cached_bytes) + ")");
  check(!is_mapped(old_blocks[0], old_bytes) && !is_mapped(old_blocks[1], old_bytes) && is_mapped(old_blocks[2], old_bytes),
        "the two least recently freed blocks made room for it, the others stay cached");
  void* next_step = allocator.allocate(kMiB);
  check(next_step == step, "the next step gets the same block back");
  allocator.release(next_step, kMiB);
  allocator.release_cached();
}

void test_idle_blocks_dropped() {
  HostAllocator allocator(256 * kMiB);
  void* one_off = allocator.allocate(8 * kMiB);  // e.g. an init pass at a larger batch
  allocator.release(one_off, 8 * kMiB);
  void* reused = allocator.allocate(kMiB);
  allocator.release(reused, kMiB);
  bool same = true;
  const uint64_t cycles = HostAllocator::kMaxIdleAllocations + HostAllocator::kIdleSweepInterval;
  for (uint64_t i = 0; i < cycles; ++i) {
    void* block = allocator.allocate(kMiB);
    same &= block == reused;
    allocator.release(block, kMiB);
  }
  check(same, "a block reused every allocation stays cached through " + std::to_string(cycles) + " allocations");
  check(!is_mapped(one_off, 8 * kMiB) && allocator.stats().cached_bytes == kMiB,
        "a block left idle for more than kMaxIdleAllocations large allocations is unmapped (cached " +
            std::to_string(allocator.stats().cached_bytes) + ")");
}

void test_out_of_memory() {
  HostAllocator allocator(kMiB);
  bool threw = false;
  std::string message;
  try {
    allocator.allocate(size_t{1} << 60);
  } catch (const weightnorm::OutOfMemoryError& error) {
    threw = error.requested == (size_t{1} << 60);
    message = error.what();
  }
  check(threw && message.find("host out of memory") != std::string::npos,
        "an impossible request (2^60 bytes) throws OutOfMemoryError naming the size: " + message);
  check(allocator.stats().allocated_bytes == 0, "a refused request is not counted");
}

// One byte per 1 KiB and the last byte: enough to see another owner's writes, cheap enough for many blocks.
void mark(unsigned char* block, size_t bytes, int owner) {
  for (size_t i = 0; i < bytes; i += 1024) block[i] = static_cast<unsigned char>(owner);
  if (bytes > 0) block[bytes - 1] = static_cast<unsigned char>(owner);
}
bool marked(const unsigned char* block, size_t bytes, int owner) {
  for (size_t i = 0; i < bytes; i += 1024)
    if (block[i] != owner) return false;
  return bytes == 0 || block[bytes - 1] == owner;
}

void test_threads() {
  // Small enough that the threads also exercise the bound: blocks over 512 KiB are never cached, the rest fill it.
  HostAllocator allocator(4 * kMiB);
  std::atomic<bool> ok{true};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 random(100 + t);
      std::vector<std::pair<unsigned char*, size_t>> live;
      for (int i = 0; i < 1500; ++i) {
        if (live.size() < 8 && random() % 2) {
          const size_t bytes = random() % 3 ? HostAllocator::kLargeBlockBytes + random() % (640 * 1024) : random() % 4096;
          auto* block = static_cast<unsigned char*>(allocator.allocate(bytes));
          mark(block, bytes, t + 1);
          live.emplace_back(block, bytes);
        } else if (!live.empty()) {
          const auto [block, bytes] = live.back();
          live.pop_back();
          // Another owner of the same block would have overwritten this thread's mark.
          if (!marked(block, bytes, t + 1)) ok = false;
          allocator.release(block, bytes);
        }
      }
      for (const auto& [block, bytes] : live) allocator.release(block, bytes);
    });
  }
  for (auto& thread : threads) thread.join();
  const auto stats = allocator.stats();
  check(ok, "4 threads x 1500 allocate/mark/check/free: no block is ever owned by two threads");
  check(stats.allocated_bytes == 0 && stats.cached_bytes <= 4 * kMiB,
        "after the threads: allocated 0 (" + std::to_string(stats.allocated_bytes) + "), cached within the 4 MiB limit (" +
            std::to_string(stats.cached_bytes) + ")");
}

void test_small_blocks() {
  HostAllocator allocator(256 * kMiB);
  const size_t bytes = 1000, size = HostAllocator::rounded_size(bytes);
  void* first = allocator.allocate(bytes);
  check(aligned(first), "a small block is 64-byte aligned");
  allocator.release(first, bytes);
  check(allocator.stats().cached_bytes == size && allocator.stats().allocated_bytes == 0,
        "a freed small block is cached at its rounded size");
  void* second = allocator.allocate(size - 5);  // the same granule count
  check(second == first && allocator.stats().cached_bytes == 0 && allocator.stats().allocated_bytes == size,
        "the next request of its granule count gets it back, uncounted from the cache");
  void* other = allocator.allocate(size + 1);  // one granule more: not that list
  check(other != first, "a request one granule larger does not take it");
  allocator.release(second, size - 5);
  allocator.release(other, size + 1);

  // The bound: min(4 MiB, limit / 16). 4 KiB blocks: 1024 of them fill 4 MiB, the rest go back to malloc.
  std::vector<void*> blocks;
  for (int i = 0; i < 1500; ++i) blocks.push_back(allocator.allocate(4096));
  for (void* block : blocks) allocator.release(block, 4096);
  const size_t cached = allocator.stats().cached_bytes;
  check(cached <= HostAllocator::kSmallCacheBytes && cached > HostAllocator::kSmallCacheBytes - 8192,
        "small blocks fill the cache up to 4 MiB and no further (cached " + std::to_string(cached) + ")");
  allocator.set_limit(16 * kMiB);  // bound 1 MiB now
  check(allocator.stats().cached_bytes <= kMiB, "lowering the limit to 16 MiB trims the small blocks to 1 MiB (cached " +
                                                    std::to_string(allocator.stats().cached_bytes) + ")");
  allocator.release_cached();
  check(allocator.stats().cached_bytes == 0 && allocator.stats().allocated_bytes == 0, "release_cached() frees the small blocks too");

  HostAllocator off(0);
  void* block = off.allocate(bytes);
  off.release(block, bytes);
  check(off.stats().cached_bytes == 0, "limit 0: a freed small block is not kept");

  // Large and small together stay within the limit: small blocks up to their 512 KiB bound, then 12 MiB of large
  // ones against the 8 MiB limit.
  HostAllocator both(8 * kMiB);  // small bound 512 KiB
  std::vector<void*> smalls, larges;
  for (int i = 0; i < 200; ++i) smalls.push_back(both.allocate(4096));
  for (void* s : smalls) both.release(s, 4096);
  for (int i = 0; i < 12; ++i) larges.push_back(both.allocate(kMiB));
  for (void* l : larges) both.release(l, kMiB);
  check(both.stats().cached_bytes <= 8 * kMiB, "large and small cached blocks together stay within the limit (cached " +
                                                   std::to_string(both.stats().cached_bytes) + ")");
  both.release_cached();
}

void check_host_allocator() {
  test_size_classes();
  test_alignment_and_writable();
  test_reuse();
  test_training_step_reuse();
  test_bound();
  test_full_cache_follows_the_running_loop();
  test_idle_blocks_dropped();
  test_small_blocks();
  test_out_of_memory();
  test_threads();
}

WEIGHTNORM_NATIVE_TEST_GROUP("host_allocator/cpu", check_host_allocator);

}  // namespace
