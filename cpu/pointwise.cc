// CPU pointwise kernels (see pointwise.h): cast, broadcasting binary ops, comparisons, where, the binary ops'
// elementwise gradients, the sum back to a broadcast operand's shape, and the unary ops with their backwards.
// One strided loop serves every shape: the output is split into blocks of consecutive indices (spread over the
// pool's threads), and each block walks the innermost dimension with a plain counted loop, carrying into the outer
// dimensions. Equal shapes arrive as rank 1 with unit strides and take a contiguous loop the compiler vectorizes.
// The op is a template constant inside every loop (with_binary_op / with_unary_op), so no loop switches per element.
#include "pointwise.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "weightnorm.h"

namespace weightnorm::cpu {
namespace {

constexpr int64_t kBlock = int64_t{1} << 14;
// Below this many elements a single thread is faster than waking the others.
constexpr int64_t kParallelMinElements = int64_t{1} << 15;

template <BinaryOp kOp>
using BinaryTag = std::integral_constant<BinaryOp, kOp>;
template <UnaryOp kOp>
using UnaryTag = std::integral_constant<UnaryOp, kOp>;

template <class Body>
void with_binary_op(BinaryOp op, Body&& body) {
  switch (op) {
    case BinaryOp::kAdd: return body(BinaryTag<BinaryOp::kAdd>{});
    case BinaryOp::kSub: return body(BinaryTag<BinaryOp::kSub>{});
    case BinaryOp::kMul: return body(BinaryTag<BinaryOp::kMul>{});
    case BinaryOp::kDiv: return body(BinaryTag<BinaryOp::kDiv>{});
    case BinaryOp::kPow: return body(BinaryTag<BinaryOp::kPow>{});
    case BinaryOp::kMinimum: return body(BinaryTag<BinaryOp::kMinimum>{});
    case BinaryOp::kMaximum: return body(BinaryTag<BinaryOp::kMaximum>{});
    case BinaryOp::kEq: return body(BinaryTag<BinaryOp::kEq>{});
    case BinaryOp::kNe: return body(BinaryTag<BinaryOp::kNe>{});
    case BinaryOp::kLt: return body(BinaryTag<BinaryOp::kLt>{});
    case BinaryOp::kLe: return body(BinaryTag<BinaryOp::kLe>{});
    case BinaryOp::kGt: return body(BinaryTag<BinaryOp::kGt>{});
    case BinaryOp::kGe: return body(BinaryTag<BinaryOp::kGe>{});
    case BinaryOp::kLogicalAnd: return body(BinaryTag<BinaryOp::kLogicalAnd>{});
    case BinaryOp::kLogicalOr: return body(BinaryTag<BinaryOp::kLogicalOr>{});
  }
}

template <class Body>
void with_unary_op(UnaryOp op, Body&& body) {
  switch (op) {
    case UnaryOp::kNeg: return body(UnaryTag<UnaryOp::kNeg>{});
    case UnaryOp::kExp: return body(UnaryTag<UnaryOp::kExp>{});
    case UnaryOp::kLog: return body(UnaryTag<UnaryOp::kLog>{});
    case UnaryOp::kSqrt: return body(UnaryTag<UnaryOp::kSqrt>{});
    case UnaryOp::kRsqrt: return body(UnaryTag<UnaryOp::kRsqrt>{});
    case UnaryOp::kAbs: return body(UnaryTag<UnaryOp::kAbs>{});
    case UnaryOp::kSign: return body(UnaryTag<UnaryOp::kSign>{});
    case UnaryOp::kClamp: return body(UnaryTag<UnaryOp::kClamp>{});
    case UnaryOp::kSigmoid: return body(UnaryTag<UnaryOp::kSigmoid>{});
    case UnaryOp::kTanh: return body(UnaryTag<UnaryOp::kTanh>{});
    case UnaryOp::kRelu: return body(UnaryTag<UnaryOp::kRelu>{});
    case UnaryOp::kLeakyRelu: return body(UnaryTag<UnaryOp::kLeakyRelu>{});
    case UnaryOp::kElu: return body(UnaryTag<UnaryOp::kElu>{});
    case UnaryOp::kSoftplus: return body(UnaryTag<UnaryOp::kSoftplus>{});
    case UnaryOp::kGelu: return body(UnaryTag<UnaryOp::kGelu>{});
    case UnaryOp::kGeluTanh: return body(UnaryTag<UnaryOp::kGeluTanh>{});
    case UnaryOp::kSilu: return body(UnaryTag<UnaryOp::kSilu>{});
    case UnaryOp::kLogicalNot: return body(UnaryTag<UnaryOp::kLogicalNot>{});
  }
}

// run(begin, end) over [0, count) in blocks of kBlock indices, the blocks spread over the threads.
template <class Run>
void for_each_block(int64_t count, const Run& run) {
  if (count <= 0) return;
  const int threads = num_threads();
  const int64_t blocks = (count + kBlock - 1) / kBlock;
  parallel_region(count >= kParallelMinElements && threads > 1, threads, [&] {
    for (const int64_t b : team_static(0, blocks)) run(b * kBlock, std::min(count, (b + 1) * kBlock));
  });
}

bool contiguous(const BroadcastLayout& layout, int operands) {
  if (layout.rank != 1) return false;
  for (int k = 0; k < operands; ++k)
    if (layout.strides[k][0] != 1) return false;
  return true;
}

// visit(i, offset0, offset1, offset2) for every output index i in [begin, end), with each operand's offset.
template <class Visit>
void visit_range(const BroadcastLayout& layout, int64_t begin, int64_t end, const Visit& visit) {
  const int rank = layout.rank;
  if (rank == 0) {  // a one-element output
    for (int64_t i = begin; i < end; ++i) visit(i, 0, 0, 0);
    return;
  }
  int64_t index[BroadcastLayout::kMaxRank];
  int64_t offset[3] = {0, 0, 0};
  int64_t rest = begin;
  for (int d = rank - 1; d >= 0; --d) {
    index[d] = rest % layout.shape[d];
    rest /= layout.shape[d];
    for (int k = 0; k < 3; ++k) offset[k] += index[d] * layout.strides[k][d];
  }
  const int last = rank - 1;
  const int64_t inner = layout.shape[last];
  const int64_t s0 = layout.strides[0][last], s1 = layout.strides[1][last], s2 = layout.strides[2][last];
  int64_t i = begin;
  while (i < end) {
    const int64_t run = std::min(inner - index[last], end - i);
    for (int64_t j = 0; j < run; ++j) visit(i + j, offset[0] + j * s0, offset[1] + j * s1, offset[2] + j * s2);
    i += run;
    index[last] += run;
    offset[0] += run * s0;
    offset[1] += run * s1;
    offset[2] += run * s2;
    if (index[last] < inner) continue;
    // Carry into the outer dimensions.
    for (int d = last; d >= 0; --d) {
      if (index[d] < layout.shape[d]) break;
      for (int k = 0; k < 3; ++k) offset[k] -= index[d] * layout.strides[k][d];
      index[d] = 0;
      if (d == 0) break;
      ++index[d - 1];
      for (int k = 0; k < 3; ++k) offset[k] += layout.strides[k][d - 1];
    }
  }
}

// out[i] = f(a[...], b[...]) over the layout: the contiguous loop when it applies, else the strided walk.
template <class Out, class A, class B, class F>
void map_binary(Out* out, const A* a, const B* b, const BroadcastLayout& layout, const F& f) {
  if (contiguous(layout, 2)) {
    for_each_block(layout.count, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = f(a[i], b[i]);
    });
    return;
  }
  for_each_block(layout.count, [&](int64_t begin, int64_t end) {
    visit_range(layout, begin, end, [&](int64_t i, int64_t oa, int64_t ob, int64_t) { out[i] = f(a[oa], b[ob]); });
  });
}

}  // namespace

void cast(void* out, DType out_type, const void* x, DType x_type, int64_t count) {
  for_each_block(count, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) pointwise::store_from_double(out, out_type, i, pointwise::load_as_double(x, x_type, i));
  });
}

void binary(float* out, const float* a, const float* b, BinaryOp op, float alpha, const BroadcastLayout& layout) {
  with_binary_op(op, [&](auto tag) {
    map_binary(out, a, b, layout, [alpha](float x, float y) { return pointwise::arithmetic<float>(decltype(tag)::value, x, y, alpha); });
  });
}

void binary(int32_t* out, const int32_t* a, const int32_t* b, BinaryOp op, int32_t alpha, const BroadcastLayout& layout) {
  with_binary_op(op, [&](auto tag) {
    map_binary(out, a, b, layout, [alpha](int32_t x, int32_t y) { return pointwise::wrapping(decltype(tag)::value, x, y, alpha); });
  });
}

template <class T>
void compare_any(uint8_t* out, const T* a, const T* b, BinaryOp op, const BroadcastLayout& layout) {
  with_binary_op(op, [&](auto tag) {
    map_binary(out, a, b, layout, [](T x, T y) { return pointwise::compare<T>(decltype(tag)::value, x, y); });
  });
}

void compare(uint8_t* out, const float* a, const float* b, BinaryOp op, const BroadcastLayout& layout) {
  compare_any(out, a, b, op, layout);
}
void compare(uint8_t* out, const int32_t* a, const int32_t* b, BinaryOp op, const BroadcastLayout& layout) {
  compare_any(out, a, b, op, layout);
}
void compare(uint8_t* out, const uint8_t* a, const uint8_t* b, BinaryOp op, const BroadcastLayout& layout) {
  compare_any(out, a, b, op, layout);
}

void binary_backward(float* out, const float* dy, const float* a, const float* b, BinaryOp op, int operand,
                     float alpha, const BroadcastLayout& layout) {
  with_binary_op(op, [&](auto tag) {
    for_each_block(layout.count, [&](int64_t begin, int64_t end) {
      visit_range(layout, begin, end, [&](int64_t i, int64_t od, int64_t oa, int64_t ob) {
        out[i] = pointwise::binary_gradient(decltype(tag)::value, operand, dy[od], a[oa], b[ob], alpha);
      });
    });
  });
}

template <class T>
void where_any(T* out, const uint8_t* cond, const T* a, const T* b, const BroadcastLayout& layout) {
  for_each_block(layout.count, [&](int64_t begin, int64_t end) {
    visit_range(layout, begin, end, [&](int64_t i, int64_t oc, int64_t oa, int64_t ob) { out[i] = cond[oc] ? a[oa] : b[ob]; });
  });
}

void where(uint32_t* out, const uint8_t* cond, const uint32_t* a, const uint32_t* b, const BroadcastLayout& layout) {
  where_any(out, cond, a, b, layout);
}
void where(uint8_t* out, const uint8_t* cond, const uint8_t* a, const uint8_t* b, const BroadcastLayout& layout) {
  where_any(out, cond, a, b, layout);
}

// One output per iteration, summed in double in a fixed order: the same bits for any thread count.
void sum_to(float* out, const float* x, const SumToLayout& layout) {
  const int threads = num_threads();
  const int64_t work = layout.out_count * std::max<int64_t>(layout.reduced_count, 1);
  parallel_region(work >= kParallelMinElements && threads > 1, threads, [&] {
    for (const int64_t k : team_static(0, layout.out_count)) {
      const int64_t base = pointwise::walk_offset(layout.kept_rank, layout.kept_shape, layout.kept_strides, k);
      double total = 0.0;
      for (int64_t r = 0; r < layout.reduced_count; ++r)
        total += x[base + pointwise::walk_offset(layout.reduced_rank, layout.reduced_shape, layout.reduced_strides, r)];
      out[k] = static_cast<float>(total);
    }
  });
}

void unary(float* y, const float* x, UnaryOp op, UnaryParams params, int64_t count) {
  with_unary_op(op, [&](auto tag) {
    for_each_block(count, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = pointwise::unary(decltype(tag)::value, x[i], params);
    });
  });
}

void unary(int32_t* y, const int32_t* x, UnaryOp op, UnaryParams params, int64_t count) {
  with_unary_op(op, [&](auto tag) {
    for_each_block(count, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = pointwise::unary(decltype(tag)::value, x[i], params);
    });
  });
}

void unary(uint8_t* y, const uint8_t* x, UnaryOp op, UnaryParams, int64_t count) {
  // Only logical not reaches bool tensors.
  (void)op;
  for_each_block(count, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = x[i] == 0;
  });
}

void unary_backward(float* dx, const float* dy, const float* x, const float* y, UnaryOp op, UnaryParams params,
                    int64_t count) {
  with_unary_op(op, [&](auto tag) {
    for_each_block(count, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) dx[i] = pointwise::unary_gradient(decltype(tag)::value, dy[i], x[i], y[i], params);
    });
  });
}

}  // namespace weightnorm::cpu
