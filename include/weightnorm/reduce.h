// Shared by cpu/ and cuda/: the axis reductions' view of a tensor and their options.
//
// Reducing a set of consecutive axes of a row-major tensor is the 3-D view [outer, reduce, inner]: outer = product
// of the axes before them, reduce = product of the reduced axes, inner = product of the axes after. Output (o, i)
// reduces x[o, r, i] over r; outputs are laid out [outer, inner]. (A per-channel reduction, ChannelLayout in
// layout.h, is the other way round: it keeps the middle axis and reduces the outer and inner ones.)
#pragma once
#include <cstdint>

namespace weightnorm {

struct AxisLayout {
  int64_t outer = 1;
  int64_t reduce = 1;
  int64_t inner = 1;

  int64_t elements() const { return outer * reduce * inner; }
  int64_t outputs() const { return outer * inner; }
};

// The per-channel sums both backends compute in one pass (channel_sum and the batch-norm statistics).
// kPlain: s0 = sum a.  kCenteredSquare: s0 = sum (a - shift[k])^2.  kSumAndCenteredDot: s0 = sum b,
// s1 = sum (a - shift[k]) * b (the batch-norm backward's two sums from one pass over x and dy).
enum class ChannelSumKind { kPlain, kCenteredSquare, kSumAndCenteredDot };

template <ChannelSumKind K>
constexpr int kChannelSums = K == ChannelSumKind::kSumAndCenteredDot ? 2 : 1;

struct ChannelSumInputs {
  const float* a;
  const float* b;
  const float* shift;  // per channel; null for kPlain
};

enum class AxisReduceOp {
  kSum,        // sum over r (0 for an empty axis)
  kMean,       // sum / reduce (NaN for an empty axis, as 0/0)
  kMax,        // largest value; NaN if any is NaN (reduce > 0: the caller checks)
  kMin,        // smallest value; NaN if any is NaN
  kLogSumExp,  // m + log(sum exp(x - m)) with m the max (-inf for an empty axis; m = +-inf gives m)
  kVar,        // sum (x - mean)^2 / max(reduce - correction, 0), two passes in double
  kStd,        // sqrt of kVar
};

}  // namespace weightnorm
