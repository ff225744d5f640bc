// The CPU reduction planner (see reduction_plan.h). Nothing here depends on the thread count.
#include "reduction_plan.h"

#include <algorithm>
#include <cstdint>

namespace weightnorm::cpu {

namespace {

ReductionPlan plan_sums_only(const ChannelLayout& layout) {
  ReductionPlan plan;
  const int64_t reduce = layout.reduce_size();
  plan.column_mode = layout.inner > 0 && layout.inner < kSegmentMinInner && layout.outer > 1;
  plan.short_rows = !plan.column_mode && layout.outer == 1 && layout.inner > 0 && layout.inner < kSegmentMinInner;
  if (plan.column_mode) {
    plan.chunk_channels = std::min(layout.channels, std::max<int64_t>(1, kMaxColumns / layout.inner));
    const int64_t span = plan.chunk_channels * layout.inner;
    plan.part_length = std::max<int64_t>(kFoldRows, kSumsOnlyPartElements / span) * layout.inner;
  } else {
    plan.part_length = kSumsOnlyPartElements;
  }
  plan.parts = std::max<int64_t>(1, (reduce + plan.part_length - 1) / plan.part_length);
  // Segments: a channel's sum is its runs in order, whatever chunk it is in, so short channels (one part) are
  // grouped into units of about a part's elements (one unit per short row would cost more than its sum).
  if (!plan.column_mode) plan.chunk_channels = plan.parts == 1 ? std::max<int64_t>(1, kSumsOnlyPartElements / std::max<int64_t>(reduce, 1)) : 1;
  // Never more channels per chunk than there are: the chunk's sums are cleared and added up whole, and a sum of a
  // few elements (a loss, a [1, 10] bias gradient) made a 64K-channel chunk, half a megabyte cleared twice per call.
  plan.chunk_channels = std::clamp<int64_t>(plan.chunk_channels, 1, std::max<int64_t>(layout.channels, 1));
  plan.chunks = (layout.channels + plan.chunk_channels - 1) / plan.chunk_channels;
  return plan;
}

}  // namespace

ReductionPlan plan_reduction(const ChannelLayout& layout, int inputs, int64_t element_bytes, ReductionUse use) {
  if (use == ReductionUse::kSumsOnly) return plan_sums_only(layout);
  ReductionPlan plan;
  const int64_t reduce = layout.reduce_size();
  const int64_t channel_bytes = std::max<int64_t>(1, reduce * element_bytes * inputs);
  // With outer == 1 each channel is one contiguous run however short: segments or short rows, never columns.
  plan.column_mode = layout.inner > 0 && layout.inner < kSegmentMinInner && layout.outer > 1;
  plan.short_rows = !plan.column_mode && layout.outer == 1 && layout.inner > 0 && layout.inner < kSegmentMinInner;
  plan.chunk_channels = plan.column_mode ? std::max<int64_t>(1, kMaxColumns / layout.inner)
                                         : std::max<int64_t>(1, kChunkBytes / channel_bytes);
  // Short rows: whole blocks per chunk (the split of channels into chunks never changes a short row's sum).
  if (plan.short_rows) {
    const int64_t block = short_rows_block(layout.inner);
    plan.chunk_channels = std::max<int64_t>(1, plan.chunk_channels / block) * block;
  }
  plan.chunk_channels = std::min(std::max<int64_t>(layout.channels, 1), plan.chunk_channels);
  plan.chunks = (layout.channels + plan.chunk_channels - 1) / plan.chunk_channels;
  plan.streaming = layout.elements() * element_bytes >= kStreamingBytes;
  plan.part_length = std::max<int64_t>(reduce, 1);
  const bool fits = plan.chunk_channels * channel_bytes <= kChunkBytes;
  const bool large = layout.elements() >= kParallelMinElements;
  // A part spans about kPartElements elements. In column mode it is a block of rows across the chunk's span (the
  // last dim of a tall matrix is one chunk of a few thousand short rows: without parts, one thread would do it all),
  // of up to kColumnPartElements while that still leaves kMinChunks parts to share out.
  int64_t split_length = kPartElements;
  if (plan.column_mode) {
    const int64_t span = plan.chunk_channels * layout.inner, rows = layout.outer;
    const int64_t least = std::max<int64_t>(1, kPartElements / span), most = std::max<int64_t>(1, kColumnPartElements / span);
    split_length = std::clamp<int64_t>(rows / kMinChunks, least, std::max(least, most)) * layout.inner;
  }
  // Long rows (outer == 1) that do not fit in L2 but are many enough to share between the threads stay whole: one
  // thread reduces a row and writes it at once, re-reading it from L2/L3. Split into parts, the write pass would
  // come only after every row was reduced, reading the whole tensor from memory a second time.
  const bool whole_rows = layout.outer == 1 && plan.chunks >= kMinChunks && channel_bytes <= kLongRowBytes;
  if (large && reduce > split_length && ((!fits && !whole_rows) || plan.chunks < kMinChunks)) {
    plan.part_length = split_length;
    plan.parts = (reduce + plan.part_length - 1) / plan.part_length;
  }
  if (plan.parts == 1 && layout.outer == 1) plan.prefetch_distance = plan.chunk_channels * layout.inner;
  // A split plan's write pass reads its region from memory again: prefetch along it.
  if (plan.parts > 1 && plan.column_mode) plan.prefetch_distance = kPrefetchBytes / element_bytes;
  return plan;
}

}  // namespace weightnorm::cpu
