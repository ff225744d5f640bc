// The pointwise op family's plain-data contract, shared by cpu/ and cuda/: the op codes, the broadcast layouts the
// binding builds from shapes, and the scalar maths of every op (host and device compile the same functions, so the
// CPU and CUDA results differ at most where the two math libraries round exp, log, tanh or erf differently).
#pragma once
#include <cmath>
#include <cstdint>

#include "weightnorm/bfloat16.h"
#include "weightnorm/dtype.h"

#include "weightnorm/host_device.h"

namespace weightnorm {

// out = a (op) b. Arithmetic ops write a's element type; comparisons and the logical ops write bool (0 or 1).
enum class BinaryOp { kAdd, kSub, kMul, kDiv, kPow, kMinimum, kMaximum, kEq, kNe, kLt, kLe, kGt, kGe, kLogicalAnd, kLogicalOr };

// y = f(x). kClamp reads UnaryParams.first/second as min/max (an absent bound is -/+infinity; a NaN bound makes the
// result NaN, as in torch); kLeakyRelu .first as the negative slope; kElu .first as alpha; kSoftplus .first/.second
// as beta/threshold.
enum class UnaryOp {
  kNeg, kExp, kLog, kSqrt, kRsqrt, kAbs, kSign, kClamp, kSigmoid, kTanh, kRelu, kLeakyRelu, kElu, kSoftplus, kGelu,
  kGeluTanh, kSilu, kLogicalNot
};

// Doubles, so that int32 clamp bounds are exact beyond 2^24; the float32 ops round them to float32 once.
struct UnaryParams {
  double first = 0.0;
  double second = 0.0;
};

// Up to three operands read with their own strides over one output shape (row-major, contiguous). A broadcast
// dimension has stride 0. The binding drops size-1 dimensions and merges dimensions that are contiguous in every
// operand, so equal shapes arrive as rank 1 with stride 1 (the fast path) whatever their rank.
struct BroadcastLayout {
  static constexpr int kMaxRank = 12;
  static constexpr int kMaxOperands = 3;
  int rank = 0;
  int64_t count = 0;  // elements of the output
  int64_t shape[kMaxRank] = {};
  int64_t strides[kMaxOperands][kMaxRank] = {};
};

// out[k] = sum of x over the dimensions broadcast away from the target shape: the gradient of a broadcast operand.
// k walks the kept dimensions row-major; each output sums `reduced_count` elements in a fixed order: its first term
// is at walk_offset(kept_rank, kept_shape, kept_strides, k), term r walk_offset(reduced_rank, ...) after it.
struct SumToLayout {
  static constexpr int kMaxRank = BroadcastLayout::kMaxRank;
  int kept_rank = 0;
  int reduced_rank = 0;
  int64_t out_count = 0;
  int64_t reduced_count = 0;
  int64_t kept_shape[kMaxRank] = {};
  int64_t kept_strides[kMaxRank] = {};
  int64_t reduced_shape[kMaxRank] = {};
  int64_t reduced_strides[kMaxRank] = {};
};

namespace pointwise {

// The offset of element `index` of a row-major walk over shape[0..rank) in a tensor of `strides`.
WN_HOST_DEVICE int64_t walk_offset(int rank, const int64_t (&shape)[BroadcastLayout::kMaxRank],
                                   const int64_t (&strides)[BroadcastLayout::kMaxRank], int64_t index) {
  int64_t offset = 0;
  for (int d = rank - 1; d >= 0; --d) {
    const int64_t size = shape[d];
    offset += (index % size) * strides[d];
    index /= size;
  }
  return offset;
}

// Offset of output element `index` in operand `operand` (row-major over layout.shape).
WN_HOST_DEVICE int64_t broadcast_offset(const BroadcastLayout& layout, int operand, int64_t index) {
  return walk_offset(layout.rank, layout.shape, layout.strides[operand], index);
}

// ---- arithmetic and comparisons (float32 and int32; int32 wraps around on overflow like torch's int32) ----

template <class T>
WN_HOST_DEVICE T arithmetic(BinaryOp op, T a, T b, T alpha) {
  switch (op) {
    case BinaryOp::kAdd: return a + alpha * b;
    case BinaryOp::kSub: return a - alpha * b;
    case BinaryOp::kMul: return a * b;
    case BinaryOp::kDiv: return a / b;
    case BinaryOp::kPow: return static_cast<T>(powf(static_cast<float>(a), static_cast<float>(b)));
    // NaN propagates (torch.minimum/maximum): a comparison with NaN is false, so test both sides.
    case BinaryOp::kMinimum: return a != a ? a : b != b ? b : (a < b ? a : b);
    case BinaryOp::kMaximum: return a != a ? a : b != b ? b : (a > b ? a : b);
    default: return T(0);
  }
}

WN_HOST_DEVICE int32_t wrapping(BinaryOp op, int32_t a, int32_t b, int32_t alpha) {
  // Unsigned arithmetic: two's-complement wrap-around instead of signed-overflow undefined behaviour.
  const uint32_t ua = static_cast<uint32_t>(a), ub = static_cast<uint32_t>(b), ualpha = static_cast<uint32_t>(alpha);
  switch (op) {
    case BinaryOp::kAdd: return static_cast<int32_t>(ua + ualpha * ub);
    case BinaryOp::kSub: return static_cast<int32_t>(ua - ualpha * ub);
    case BinaryOp::kMul: return static_cast<int32_t>(ua * ub);
    case BinaryOp::kMinimum: return a < b ? a : b;
    case BinaryOp::kMaximum: return a > b ? a : b;
    default: return 0;
  }
}

template <class T>
WN_HOST_DEVICE uint8_t compare(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::kEq: return a == b;
    case BinaryOp::kNe: return a != b;
    case BinaryOp::kLt: return a < b;
    case BinaryOp::kLe: return a <= b;
    case BinaryOp::kGt: return a > b;
    case BinaryOp::kGe: return a >= b;
    case BinaryOp::kLogicalAnd: return (a != T(0)) && (b != T(0));
    case BinaryOp::kLogicalOr: return (a != T(0)) || (b != T(0));
    default: return 0;
  }
}

WN_HOST_DEVICE bool is_comparison(BinaryOp op) { return static_cast<int>(op) >= static_cast<int>(BinaryOp::kEq); }

// Gradient of out = a (op) b with respect to operand 0 (a) or 1 (b), at one output element, before the sum over
// broadcast dimensions. minimum/maximum split the gradient evenly between equal operands, as torch does.
WN_HOST_DEVICE float binary_gradient(BinaryOp op, int operand, float dy, float a, float b, float alpha) {
  switch (op) {
    case BinaryOp::kAdd: return operand == 0 ? dy : alpha * dy;
    case BinaryOp::kSub: return operand == 0 ? dy : -alpha * dy;
    case BinaryOp::kMul: return operand == 0 ? dy * b : dy * a;
    case BinaryOp::kDiv: return operand == 0 ? dy / b : -dy * a / (b * b);
    case BinaryOp::kPow:
      // torch: d/da is 0 where b == 0 (even at a == 0); d/db is 0 where a == 0 and b >= 0 (log(0) · 0^b).
      if (operand == 0) return b == 0.0f ? 0.0f : dy * b * powf(a, b - 1.0f);
      return (a == 0.0f && b >= 0.0f) ? 0.0f : dy * powf(a, b) * logf(a);
    case BinaryOp::kMinimum:
    case BinaryOp::kMaximum: {
      if (a == b) return 0.5f * dy;
      const bool a_selected = op == BinaryOp::kMinimum ? a < b : a > b;
      return (operand == 0) == a_selected ? dy : 0.0f;
    }
    default: return 0.0f;
  }
}

// ---- unary ops ----

constexpr float kSqrtHalf = 0.70710678118654752f;     // 1/√2
constexpr float kSqrtTwoOverPi = 0.79788456080286536f;  // √(2/π)
constexpr float kInvSqrtTwoPi = 0.39894228040143268f;   // 1/√(2π)
constexpr float kGeluTanhCubic = 0.044715f;

WN_HOST_DEVICE float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

WN_HOST_DEVICE float unary(UnaryOp op, float x, UnaryParams params) {
  const float first = static_cast<float>(params.first), second = static_cast<float>(params.second);
  switch (op) {
    case UnaryOp::kNeg: return -x;
    case UnaryOp::kExp: return expf(x);
    case UnaryOp::kLog: return logf(x);
    case UnaryOp::kSqrt: return sqrtf(x);
    case UnaryOp::kRsqrt: return 1.0f / sqrtf(x);
    case UnaryOp::kAbs: return fabsf(x);
    case UnaryOp::kSign: return x != x ? x : static_cast<float>((x > 0.0f) - (x < 0.0f));
    case UnaryOp::kClamp: {
      if (first != first || second != second) return first + second;  // a NaN bound: NaN
      const float y = x < first ? first : x;  // NaN x stays NaN: both comparisons are false
      return y > second ? second : y;
    }
    case UnaryOp::kSigmoid: return sigmoid(x);
    case UnaryOp::kTanh: return tanhf(x);
    case UnaryOp::kRelu: return x > 0.0f ? x : (x != x ? x : 0.0f);
    case UnaryOp::kLeakyRelu: return x > 0.0f ? x : first * x;
    case UnaryOp::kElu: return x > 0.0f ? x : first * expm1f(x);
    case UnaryOp::kSoftplus: return x * first > second ? x : log1pf(expf(first * x)) / first;
    case UnaryOp::kGelu: return 0.5f * x * (1.0f + erff(x * kSqrtHalf));
    case UnaryOp::kGeluTanh: return 0.5f * x * (1.0f + tanhf(kSqrtTwoOverPi * (x + kGeluTanhCubic * x * x * x)));
    case UnaryOp::kSilu: return x * sigmoid(x);
    case UnaryOp::kLogicalNot: return x == 0.0f ? 1.0f : 0.0f;
  }
  return x;
}

// int32 ops: neg, abs and sign (wrap-around on INT32_MIN like torch), clamp and relu; the others never reach int32.
WN_HOST_DEVICE int32_t unary(UnaryOp op, int32_t x, UnaryParams p) {
  const uint32_t ux = static_cast<uint32_t>(x);
  switch (op) {
    case UnaryOp::kNeg: return static_cast<int32_t>(0u - ux);
    case UnaryOp::kAbs: return x < 0 ? static_cast<int32_t>(0u - ux) : x;
    case UnaryOp::kSign: return (x > 0) - (x < 0);
    case UnaryOp::kRelu: return x > 0 ? x : 0;
    case UnaryOp::kClamp: {
      // The bounds arrive as integers in int32's range or as -/+infinity (absent); ts/ sends anything else to float32.
      int32_t y = x;
      if (static_cast<double>(y) < p.first) y = static_cast<int32_t>(p.first);
      if (static_cast<double>(y) > p.second) y = static_cast<int32_t>(p.second);
      return y;
    }
    default: return x;
  }
}

// dx = dy · f'(x), from the input x and the saved output y (whichever is cheaper and more accurate).
WN_HOST_DEVICE float unary_gradient(UnaryOp op, float dy, float x, float y, UnaryParams params) {
  const float first = static_cast<float>(params.first), second = static_cast<float>(params.second);
  switch (op) {
    case UnaryOp::kNeg: return -dy;
    case UnaryOp::kExp: return dy * y;
    case UnaryOp::kLog: return dy / x;
    case UnaryOp::kSqrt: return dy / (2.0f * y);
    case UnaryOp::kRsqrt: return -0.5f * dy * y * y * y;
    case UnaryOp::kAbs: return dy * static_cast<float>((x > 0.0f) - (x < 0.0f));
    case UnaryOp::kSign: return 0.0f;
    case UnaryOp::kClamp:
      // torch: the gradient passes where min <= x <= max (so nowhere for a NaN x or bound).
      return x >= first && x <= second ? dy : 0.0f;
    case UnaryOp::kSigmoid: return dy * y * (1.0f - y);
    case UnaryOp::kTanh: return dy * (1.0f - y * y);
    case UnaryOp::kRelu: return x > 0.0f ? dy : 0.0f;
    case UnaryOp::kLeakyRelu: return x > 0.0f ? dy : first * dy;
    case UnaryOp::kElu: return x > 0.0f ? dy : dy * first * expf(x);
    case UnaryOp::kSoftplus: {
      if (x * first > second) return dy;
      const float z = expf(first * x);
      return dy * z / (z + 1.0f);
    }
    case UnaryOp::kGelu: {
      const float cdf = 0.5f * (1.0f + erff(x * kSqrtHalf));
      const float pdf = kInvSqrtTwoPi * expf(-0.5f * x * x);
      return dy * (cdf + x * pdf);
    }
    case UnaryOp::kGeluTanh: {
      const float inner = kSqrtTwoOverPi * (x + kGeluTanhCubic * x * x * x);
      const float t = tanhf(inner);
      const float inner_derivative = kSqrtTwoOverPi * (1.0f + 3.0f * kGeluTanhCubic * x * x);
      return dy * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * inner_derivative);
    }
    case UnaryOp::kSilu: {
      const float s = sigmoid(x);
      return dy * s * (1.0f + x * (1.0f - s));
    }
    case UnaryOp::kLogicalNot: return 0.0f;
  }
  return 0.0f;
}

// ---- element type conversion (cast) ----

// Any element as a double (exact for all four types).
WN_HOST_DEVICE double load_as_double(const void* data, DType type, int64_t i) {
  switch (type) {
    case DType::kFloat32: return static_cast<const float*>(data)[i];
    case DType::kBFloat16: return bfloat16_to_float(static_cast<const bfloat16*>(data)[i]);
    case DType::kInt32: return static_cast<const int32_t*>(data)[i];
    case DType::kBool: return static_cast<const uint8_t*>(data)[i] != 0 ? 1.0 : 0.0;
  }
  return 0.0;
}

// Stores `value` as `type`: to int32 truncates toward zero, saturating at the int32 range (NaN becomes 0); to
// bool is value != 0 (NaN is true, as in torch); to float32 rounds to nearest; to bfloat16 rounds the float32.
WN_HOST_DEVICE void store_from_double(void* data, DType type, int64_t i, double value) {
  switch (type) {
    case DType::kFloat32: static_cast<float*>(data)[i] = static_cast<float>(value); return;
    case DType::kBFloat16: static_cast<bfloat16*>(data)[i] = float_to_bfloat16(static_cast<float>(value)); return;
    case DType::kInt32: {
      int32_t out = 0;
      if (value >= 2147483647.0) out = 2147483647;
      else if (value <= -2147483648.0) out = -2147483647 - 1;
      else if (value == value) out = static_cast<int32_t>(value);
      static_cast<int32_t*>(data)[i] = out;
      return;
    }
    case DType::kBool: static_cast<uint8_t*>(data)[i] = value != 0.0; return;
  }
}

}  // namespace pointwise
}  // namespace weightnorm
