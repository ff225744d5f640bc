// The one CPU reduction planner: how a per-channel reduction over the layout [outer, channels, inner] (every axis
// but `channels` is reduced) is cut into units of work for the threads. Used by weight norm (cpu/weightnorm.cc),
// the channel sums and batch-norm statistics (cpu/reduce.cc) and the axis reductions (cpu/reduce.cc).
//
// Determinism: the plan depends only on the layout, the number of inputs and the element size, never on the thread
// count; every unit is reduced in a fixed order by one thread, and the units' partial sums are added in unit order
// (reduce_units below). Results are therefore bitwise identical for any number of threads.
//
// A unit is a Region: a chunk of consecutive channels and, of their reduction domain flattened as
// r = o * inner + i, one part [r_begin, r_end). Three ways to walk a region:
//  segments    inner >= kSegmentMinInner: each channel is a set of contiguous runs (visit_runs).
//  columns     inner < kSegmentMinInner with outer > 1 (Linear [batch, features], small spatial sizes): a run is too
//              short to vectorize, so the loop runs along the row across the chunk's channels, one accumulator per
//              column (visit_wide_rows). When the chunk spans whole rows, several consecutive rows (contiguous in
//              memory) are walked as one wide row. Parts are whole rows.
//  short rows  outer == 1 and inner < kSegmentMinInner: a region is one contiguous run of many short channels; a
//              kernel may reduce several channels side by side (a channel's sum never depends on the chunking).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "threads.h"
#include "weightnorm/layout.h"

namespace weightnorm::cpu {

// Below this many elements a single thread is faster than waking the others.
constexpr int64_t kParallelMinElements = int64_t{1} << 15;
// Bytes of input a chunk may span and still be in L2 (2 MB per core here) when a write pass reads it again.
constexpr int64_t kChunkBytes = 128 << 10;
// Most bytes of input one long row (outer == 1) may span and still be reduced and written whole by one thread:
// between its reduction and its write pass the row stays in that core's L2 and the shared L3.
constexpr int64_t kLongRowBytes = int64_t{4} << 20;
// Reduction length of one part when a chunk's reduction is split; a constant so the summation order is fixed.
constexpr int64_t kPartElements = int64_t{1} << 16;
// The same in column mode (the last dim of a tall matrix): parts of 2^16 elements measured 8-20% slower than parts
// of 2^18 (float32 and bfloat16, 4096x1024 and 768x48x128 with dim 2; bench/NOTES.md), and larger ones no faster
// while leaving fewer parts to share between threads.
constexpr int64_t kColumnPartElements = int64_t{1} << 18;
// The same for a plan without a write pass (ReductionUse::kSumsOnly): every reduction is split, into half-size
// parts, since no chunk has to stay in cache for a second pass and more units balance the threads better.
constexpr int64_t kSumsOnlyPartElements = kPartElements / 2;
// Channels whose contiguous runs (inner) are shorter than this are walked column-wise (or as short rows).
constexpr int64_t kSegmentMinInner = 32;
// Most columns (channels * inner) a column-wise chunk spans; also the size of a kernel's column accumulators.
constexpr int64_t kMaxColumns = 2048;
// When a chunk spans whole rows shorter than this, rows are folded together to about this width.
constexpr int64_t kWideColumns = 1024;
// Float accumulators take this many rows (column mode) or terms per lane (segments) before folding into double:
// the rounding error of a float sum grows with its length, a double fold every 64-1024 terms keeps it small.
constexpr int64_t kFoldRows = 64;
constexpr int kLanes = 16;
constexpr int64_t kFoldBlock = kLanes * 64;
// Fewer chunks than this and the reduction is split into parts, so that several threads can share it. A constant,
// not the thread count: whether a reduction is split changes its summation order.
constexpr int64_t kMinChunks = 16;
// Most units reduce_units hands out one at a time (dynamic schedule); more are split statically between threads.
constexpr int64_t kDynamicMaxUnits = 4096;
// How far ahead of a streaming read the software prefetch runs.
constexpr int64_t kPrefetchBytes = 4096;
// The last-level cache (L3) of this project's reference CPU: a write pass whose input and output together fit in it
// can keep both there.
constexpr int64_t kLastLevelCacheBytes = int64_t{32} << 20;
// Outputs at least this large are written with streaming stores (they would not stay in cache anyway).
constexpr int64_t kStreamingBytes = int64_t{4} << 20;

// One unit of work: channels [k_begin, k_end) and the range [r_begin, r_end) of each one's reduction domain.
struct Region {
  int64_t k_begin, k_end, r_begin, r_end;
  int64_t channels() const { return k_end - k_begin; }
};

struct ReductionPlan {
  bool column_mode = false;
  bool short_rows = false;
  bool streaming = false;   // for a write pass: outputs large enough for streaming stores
  int64_t chunk_channels = 1;
  int64_t chunks = 1;
  int64_t parts = 1;        // parts per chunk; 1 = each chunk is reduced (and written) by one thread, in cache
  int64_t part_length = 0;  // in r units (a multiple of inner in column mode)
  // When consecutive chunks are contiguous in memory (outer == 1, one part), the elements from a chunk to the next:
  // a write pass over one chunk prefetches the next. A split column plan: the streaming read's prefetch distance.
  int64_t prefetch_distance = 0;

  int64_t units() const { return chunks * parts; }
  Region region(int64_t chunk, int64_t part, const ChannelLayout& layout) const {
    const int64_t k_begin = chunk * chunk_channels;
    const int64_t k_end = std::min(layout.channels, k_begin + chunk_channels);
    const int64_t r_begin = part * part_length;
    const int64_t r_end = std::min(layout.reduce_size(), r_begin + part_length);
    return {k_begin, k_end, r_begin, r_end};
  }
  Region unit_region(int64_t unit, const ChannelLayout& layout) const {
    return region(unit / parts, unit % parts, layout);
  }
};

// What the plan is for:
//  kWithWritePass  a reduction followed by an elementwise pass over the same elements (weight norm): chunks sized
//                  to stay in L2 between the two passes, split into parts only when too big or too few.
//  kSumsOnly       the sums alone (channel sums, batch-norm statistics, axis reductions): every channel split into
//                  parts of kSumsOnlyPartElements (in column mode at least kFoldRows rows, chunks as wide as
//                  kMaxColumns allows); in segment mode a channel of one part shares its unit with neighbours.
enum class ReductionUse { kWithWritePass, kSumsOnly };

// inputs: arrays read per element (they share the cache budget). element_bytes: 4 for float, 2 for bfloat16 (a
// chunk then holds twice the channels at the same bytes).
ReductionPlan plan_reduction(const ChannelLayout& layout, int inputs, int64_t element_bytes,
                             ReductionUse use = ReductionUse::kWithWritePass);

// Channels per short-rows block: a multiple of 32, so that a block of float or bfloat16 outputs is whole cache lines.
inline int64_t short_rows_block(int64_t inner) { return std::max<int64_t>(32, (kMaxColumns - 4) / inner / 32 * 32); }

// Below kParallelMinElements elements a single thread is faster than waking the others.
inline bool worth_parallel(int64_t elements, int threads) { return elements >= kParallelMinElements && threads > 1; }

// ---------------------------------------------------------------------------------------------------------------
// Walking a region.

// Segments: calls visit(offset, length, j) for every contiguous run of the region, j = channel - k_begin; channel
// by channel, each channel's runs in r order.
template <class Visit>
void visit_runs(const ChannelLayout& layout, const Region& region, Visit&& visit) {
  if (region.r_begin >= region.r_end) return;
  const int64_t row_stride = layout.channels * layout.inner;
  const int64_t o_first = region.r_begin / layout.inner, i_first = region.r_begin % layout.inner;
  const int64_t o_last = (region.r_end - 1) / layout.inner, i_last_end = (region.r_end - 1) % layout.inner + 1;
  for (int64_t j = 0; j < region.channels(); ++j) {
    const int64_t channel_offset = (region.k_begin + j) * layout.inner;
    for (int64_t o = o_first; o <= o_last; ++o) {
      const int64_t i_begin = o == o_first ? i_first : 0;
      const int64_t i_end = o == o_last ? i_last_end : layout.inner;
      visit(o * row_stride + channel_offset + i_begin, i_end - i_begin, j);
    }
  }
}

// Columns: the region's rows are a sequence of "wide rows" of `width` columns: one row of the chunk's span, or,
// when the chunk spans whole rows, several consecutive rows (contiguous in memory).
struct ColumnWalk {
  int64_t span;   // columns of one row that belong to the region
  int64_t width;  // columns per wide row (a multiple of span, at most kMaxColumns)
  bool whole_rows;
};

inline ColumnWalk column_walk(const ChannelLayout& layout, const Region& region) {
  const int64_t span = region.channels() * layout.inner;
  const bool whole_rows = span == layout.channels * layout.inner;
  const int64_t width = whole_rows ? span * std::max<int64_t>(1, kWideColumns / span) : span;
  return {span, width, whole_rows};
}

// Calls visit(offset, length) for each wide row of the region; length == width except for the last, which may be
// shorter (a multiple of span), so column c of every call belongs to channel k_begin + (c % span) / inner.
template <class Visit>
void visit_wide_rows(const ChannelLayout& layout, const Region& region, const ColumnWalk& walk, Visit&& visit) {
  const int64_t row_stride = layout.channels * layout.inner;
  const int64_t o_begin = region.r_begin / layout.inner, o_end = region.r_end / layout.inner;
  if (walk.whole_rows) {
    const int64_t begin = o_begin * row_stride, end = o_end * row_stride;
    for (int64_t e = begin; e < end; e += walk.width) visit(e, std::min(walk.width, end - e));
    return;
  }
  for (int64_t o = o_begin; o < o_end; ++o) visit(o * row_stride + region.k_begin * layout.inner, walk.span);
}

// ---------------------------------------------------------------------------------------------------------------
// Running a plan.

// A buffer kept by the calling thread across calls: a fresh large allocation would be mapped and page-faulted in on
// every call.
template <class U>
U* scratch(std::vector<U>& buffer, int64_t count) {
  if (buffer.size() < static_cast<size_t>(count)) buffer.resize(count);
  return buffer.data();
}

// Chunk by chunk, each channel's parts (partial: units() blocks of chunk_channels * N sums) added in part order;
// finish(k_begin, count, sums) receives a chunk's totals in the [count][N] layout.
template <int N, class Finish>
void add_parts(const ChannelLayout& layout, const ReductionPlan& plan, const double* partial, Finish&& finish) {
  const int64_t unit_doubles = plan.chunk_channels * N;
  // Kept by the thread, like the partial sums: a fresh vector per call went through malloc's large-chunk path,
  // 12% of a [100, 256] bias gradient's time.
  thread_local std::vector<double> sums_buffer;
  double* sums = scratch(sums_buffer, unit_doubles);
  for (int64_t chunk = 0; chunk < plan.chunks; ++chunk) {
    const int64_t count = plan.region(chunk, 0, layout).channels();
    std::fill(sums, sums + unit_doubles, 0.0);
    for (int64_t part = 0; part < plan.parts; ++part) {
      const double* unit_sums = partial + (chunk * plan.parts + part) * unit_doubles;
      for (int64_t j = 0; j < count * N; ++j) sums[j] += unit_sums[j];
    }
    finish(chunk * plan.chunk_channels, count, sums);
  }
}

// The reduction of every unit in parallel, then, chunk by chunk, each channel's parts added in part order.
// reduce_region(sums, region) writes sums[j * N + n] (sum n of channel k_begin + j over the region);
// finish(k_begin, count, sums) receives a chunk's totals in the same [count][N] layout.
template <int N, class ReduceRegion, class Finish>
void reduce_units(const ChannelLayout& layout, const ReductionPlan& plan, ReduceRegion&& reduce_region,
                  Finish&& finish) {
  const int threads = num_threads();
  const int64_t units = plan.units();
  const int64_t unit_doubles = plan.chunk_channels * N;
  thread_local std::vector<double> partial_buffer;
  double* partial = scratch(partial_buffer, units * unit_doubles);
  const bool parallel = worth_parallel(layout.elements(), threads);
  // The schedule never changes a result (each unit is reduced whole by one thread). Few large units: dynamic, so
  // that a slow thread does not hold the others up; many small ones (one short channel each): static, since a
  // dynamic dispatch per unit costs more than the unit.
  if (units <= kDynamicMaxUnits) {
    parallel_region(parallel, threads, [&] {
      for (const int64_t unit : team_dynamic(0, units))
        reduce_region(partial + unit * unit_doubles, plan.unit_region(unit, layout));
    });
  } else {
    parallel_region(parallel, threads, [&] {
      for (const int64_t unit : team_static(0, units))
        reduce_region(partial + unit * unit_doubles, plan.unit_region(unit, layout));
    });
  }
  add_parts<N>(layout, plan, partial, finish);
}

// A split plan with a write pass (weight norm): the reduction of every unit, the parts added as reduce_units adds
// them, then write_unit(unit) for every unit, all in one parallel region. The write pass rereads what the reduction
// read, and a thread rereads best what it read itself: on this project's reference VM the two cores do not share a
// last-level cache (a core rereads the 16 MB it has just read at 56 GB/s, the 16 MB the other core has just read at
// 23-28 GB/s, no faster than from memory). So each thread reduces a contiguous block of units and then writes the
// units it reduced, the latest first (the likeliest still in its L2 and L3). Neither pass waits for a slow thread:
// a thread that runs out of its own units takes any unit no thread has started yet (a unit is claimed with an
// atomic flag), so when another process takes a core, the thread left running does the preempted thread's share,
// where fixed static blocks would wait for it (bench/NOTES.md); a split plan's parts are at least 2^16 elements, so
// a claim per unit costs nothing measurable. Which thread does what never changes a result: a unit is reduced whole
// by one thread, the parts are added in part order, the writes are elementwise.
template <int N, class ReduceRegion, class Finish, class WriteUnit>
void reduce_and_write_units(const ChannelLayout& layout, const ReductionPlan& plan, ReduceRegion&& reduce_region,
                            Finish&& finish, WriteUnit&& write_unit) {
  const int threads = num_threads();
  const int64_t units = plan.units();
  const int64_t unit_doubles = plan.chunk_channels * N;
  thread_local std::vector<double> partial_buffer;
  double* partial = scratch(partial_buffer, units * unit_doubles);
  std::vector<std::atomic<bool>> reduce_taken(units), write_taken(units);
  auto take = [](std::vector<std::atomic<bool>>& taken, int64_t unit) {
    return !taken[unit].load(std::memory_order_relaxed) && !taken[unit].exchange(true, std::memory_order_relaxed);
  };
  // The thread that reduces the last unit adds the parts up (its fetch_add follows every other unit's) and publishes
  // the totals; the others wait for them yielding their core rather than at a team barrier: when the pool's threads
  // sleep between regions (cpu/threads.h) a barrier puts the first thread to sleep, and waking it costs 10-15 us on
  // this VM, more when another process holds a core (there the yielding wait measured 1-4% faster, in-process A/B).
  // The wait is at most the rest of one unit.
  std::atomic<int64_t> reduced{0};
  std::atomic<bool> totals_ready{false};
  parallel_region(worth_parallel(layout.elements(), threads), threads, [&] {
    const int thread = team_index(), team = team_size();
    std::vector<int64_t> mine;  // the units this thread reduced, in order
    auto reduce = [&](int64_t unit) {
      reduce_region(partial + unit * unit_doubles, plan.unit_region(unit, layout));
      mine.push_back(unit);
      if (reduced.fetch_add(1, std::memory_order_acq_rel) == units - 1) {
        add_parts<N>(layout, plan, partial, finish);
        totals_ready.store(true, std::memory_order_release);
      }
    };
    // Reduction: this thread's share of the units, a contiguous block (one stream through memory per thread, as a
    // static schedule), then any unit left in the other threads' blocks, from their ends.
    for (int64_t unit = units * thread / team; unit < units * (thread + 1) / team; ++unit)
      if (take(reduce_taken, unit)) reduce(unit);
    for (int other = 1; other < team; ++other) {
      const int owner = (thread + other) % team;
      for (int64_t unit = units * (owner + 1) / team - 1; unit >= units * owner / team; --unit)
        if (take(reduce_taken, unit)) reduce(unit);
    }
    while (!totals_ready.load(std::memory_order_acquire)) std::this_thread::yield();
    // Writes: the units this thread reduced, the latest first, then any unit no thread has started yet.
    for (auto unit = mine.rbegin(); unit != mine.rend(); ++unit)
      if (take(write_taken, *unit)) write_unit(*unit);
    for (int64_t unit = 0; unit < units; ++unit)
      if (take(write_taken, unit)) write_unit(unit);
  });
}

}  // namespace weightnorm::cpu
