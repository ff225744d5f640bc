// The shape ops' N-API layer: views (a new handle on the same storage), the strided copies every copy-like shape op
// is built from, concat, and the index ops. Arguments are converted and re-checked cheaply here (ts/shape.ts has
// validated them with friendlier messages); index values are checked against their range before anything is
// written. Views and copies take any dtype (elements move by their size); the sums take float32.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../cpu/shape.h"
#include "dispatch.h"
#include "errors.h"
#include "tensor.h"
#include "weightnorm/shape.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../cuda/runtime.cuh"
#include "../cuda/shape.cuh"
#endif

namespace weightnorm::binding {
namespace {

int element_bytes(const TensorWrap& t) { return static_cast<int>(dtype_size(t.dtype())); }

int64_t integer_argument(const Napi::CallbackInfo& info, size_t i, const std::string& where) {
  const double d = number_argument(info, i, where.c_str());
  if (d != static_cast<double>(static_cast<int64_t>(d))) throw_type_error(info.Env(), where + ": expected an integer");
  return static_cast<int64_t>(d);
}

// A dim already normalized by ts/ (in [0, rank)).
int dim_argument(const Napi::CallbackInfo& info, size_t i, const std::string& where, size_t rank) {
  const int64_t dim = integer_argument(info, i, where);
  if (dim < 0 || dim >= static_cast<int64_t>(rank))
    throw_range_error(info.Env(), where + ": expected a dim in [0, " + std::to_string(rank) + "), got " + std::to_string(dim));
  return static_cast<int>(dim);
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t stride = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = stride;
    stride *= shape[d];
  }
  return strides;
}

// A strided walk as JS gives it: { shape, strides, offset } over a tensor's flat elements.
struct Walk {
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  int64_t offset = 0;
};

Walk parse_walk(Napi::Env env, const Napi::Value& value, const std::string& function) {
  OptionsReader reader(env, value, function, "walk");
  Walk walk;
  walk.shape = parse_shape(env, reader.value("shape"), reader.where("shape").c_str());
  const Napi::Value strides = reader.value("strides");
  if (!strides.IsArray() || strides.As<Napi::Array>().Length() != walk.shape.size())
    throw_type_error(env, reader.where("strides") + ": expected an array of " + std::to_string(walk.shape.size()) + " integers");
  for (uint32_t d = 0; d < walk.shape.size(); ++d) {
    const Napi::Value item = strides.As<Napi::Array>().Get(d);
    const double s = item.IsNumber() ? item.As<Napi::Number>().DoubleValue() : 0.5;
    if (s != static_cast<double>(static_cast<int64_t>(s)) || std::abs(s) > 9007199254740991.0)
      throw_type_error(env, reader.where("strides") + ": element " + std::to_string(d) + " is not an integer");
    walk.strides.push_back(static_cast<int64_t>(s));
  }
  walk.offset = reader.integer("offset", 0);
  return walk;
}

// Every element the walk reaches must lie in [0, numel) of the tensor it walks.
void check_walk_inside(Napi::Env env, const Walk& walk, int64_t numel, const std::string& where) {
  if (element_count(walk.shape) == 0) return;
  int64_t lowest = walk.offset, highest = walk.offset;
  for (size_t d = 0; d < walk.shape.size(); ++d) {
    const int64_t reach = (walk.shape[d] - 1) * walk.strides[d];
    (reach < 0 ? lowest : highest) += reach;
  }
  if (lowest < 0 || highest >= numel)
    throw_range_error(env, where + ": the walk reaches elements [" + std::to_string(lowest) + ", " +
                               std::to_string(highest) + "] of a tensor of " + std::to_string(numel));
}

// The kernel's plan for walking `shape`, reading at in (strides, offset) and writing at out: size-1 dims dropped and
// neighbours that step evenly in both tensors merged, so that any rank the walk allows fits kMaxShapeRank.
StridedCopy plan_copy(Napi::Env env, const std::vector<int64_t>& shape, const std::vector<int64_t>& in_strides,
                      int64_t in_offset, const std::vector<int64_t>& out_strides, int64_t out_offset, int bytes) {
  std::vector<int64_t> sizes, in, out;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!sizes.empty() && in.back() == in_strides[d] * shape[d] && out.back() == out_strides[d] * shape[d]) {
      sizes.back() *= shape[d];
      in.back() = in_strides[d];
      out.back() = out_strides[d];
      continue;
    }
    sizes.push_back(shape[d]);
    in.push_back(in_strides[d]);
    out.push_back(out_strides[d]);
  }
  if (sizes.size() > static_cast<size_t>(kMaxShapeRank))
    throw_range_error(env, "strided copy: " + shape_string(shape) + " leaves " + std::to_string(sizes.size()) +
                               " dims after merging, more than the " + std::to_string(kMaxShapeRank) + " the kernels take");
  StridedCopy copy;
  copy.rank = static_cast<int>(sizes.size());
  for (int d = 0; d < copy.rank; ++d) {
    copy.sizes[d] = sizes[d];
    copy.in_strides[d] = in[d];
    copy.out_strides[d] = out[d];
  }
  copy.in_offset = in_offset;
  copy.out_offset = out_offset;
  copy.element_bytes = bytes;
  return copy;
}

// view(x, shape) -> a new handle on x's storage with another shape of the same element count (any dtype).
Napi::Value View(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& x = TensorWrap::FromAnyType(info[0], "view: x");
  std::vector<int64_t> shape = parse_shape(env, info[1], "view: shape");
  if (element_count(shape) != x.numel())
    throw_range_error(env, "view: shape: " + shape_string(shape) + " does not have the " + std::to_string(x.numel()) +
                               " elements of " + shape_string(x.shape()));
  return TensorWrap::Create(env, x.storage(), std::move(shape), x.dtype());
}

// stridedCopy(x, walk) -> a new contiguous tensor of walk.shape: element i is x.flat[walk.offset + i·walk.strides].
Napi::Value StridedCopyOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& x = TensorWrap::FromAnyType(info[0], "stridedCopy: x");
  const Walk walk = parse_walk(env, info[1], "stridedCopy");
  check_walk_inside(env, walk, x.numel(), "stridedCopy: walk");
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = new_tensor(env, x.device(), walk.shape, x.dtype());
    if (element_count(walk.shape) == 0) return object;
    TensorWrap& out = TensorWrap::FromAnyType(object, "result");
    const StridedCopy copy = plan_copy(env, walk.shape, walk.strides, walk.offset, contiguous_strides(walk.shape), 0,
                                       element_bytes(x));
    WN_DISPATCH(x.device(), strided_copy, out.raw_data(), x.raw_data(), copy);
    return object;
  });
}

// stridedCopyInto(out, walk, x): out.flat[walk.offset + i·walk.strides] = x[i] for every i of walk.shape (= x's
// shape, or its element count), in place. The walk must not reach an element twice (ts/ builds it from slices).
Napi::Value StridedCopyInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& out = TensorWrap::FromAnyType(info[0], "stridedCopyInto: out");
  const Walk walk = parse_walk(env, info[1], "stridedCopyInto");
  TensorWrap& x = TensorWrap::FromAnyType(info[2], "stridedCopyInto: x");
  expect_device(env, x, out.device(), "stridedCopyInto: x");
  if (x.dtype() != out.dtype())
    throw_type_error(env, std::string("stridedCopyInto: x: expected a ") + dtype_name(out.dtype()) + " tensor like out, got " + dtype_name(x.dtype()));
  if (x.numel() != element_count(walk.shape))
    throw_range_error(env, "stridedCopyInto: x: expected " + std::to_string(element_count(walk.shape)) + " elements, got " + shape_string(x.shape()));
  check_walk_inside(env, walk, out.numel(), "stridedCopyInto: walk");
  if (x.storage() == out.storage()) throw_range_error(env, "stridedCopyInto: x: must not share storage with out");
  return guarded(env, [&]() -> Napi::Value {
    if (x.numel() == 0) return env.Undefined();
    const StridedCopy copy = plan_copy(env, walk.shape, contiguous_strides(walk.shape), 0, walk.strides, walk.offset,
                                       element_bytes(x));
    WN_DISPATCH(x.device(), strided_copy, out.raw_data(), x.raw_data(), copy);
    return env.Undefined();
  });
}

// concat(tensors, dim) -> the tensors joined along dim (same dtype, device, and sizes outside dim).
Napi::Value Concat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray() || info[0].As<Napi::Array>().Length() == 0)
    throw_type_error(env, "concat: tensors: expected a non-empty array of tensors");
  Napi::Array array = info[0].As<Napi::Array>();
  std::vector<TensorWrap*> parts;
  for (uint32_t i = 0; i < array.Length(); ++i)
    parts.push_back(&TensorWrap::FromAnyType(array.Get(i), ("concat: tensors[" + std::to_string(i) + "]").c_str()));
  const TensorWrap& first = *parts[0];
  const int dim = dim_argument(info, 1, "concat: dim", first.shape().size());
  std::vector<int64_t> shape = first.shape();
  shape[dim] = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const TensorWrap& t = *parts[i];
    const std::string where = "concat: tensors[" + std::to_string(i) + "]";
    expect_device(env, t, first.device(), where);
    bool fits = t.dtype() == first.dtype() && t.shape().size() == first.shape().size();
    for (size_t d = 0; fits && d < shape.size(); ++d) fits = static_cast<int>(d) == dim || t.shape()[d] == first.shape()[d];
    if (!fits) throw_range_error(env, where + ": " + shape_string(t.shape()) + " " + dtype_name(t.dtype()) +
                                          " does not match tensors[0] " + shape_string(first.shape()) + " outside dim " +
                                          std::to_string(dim));
    shape[dim] += t.shape()[dim];
  }
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = new_tensor(env, first.device(), shape, first.dtype());
    TensorWrap& out = TensorWrap::FromAnyType(object, "result");
    const std::vector<int64_t> out_strides = contiguous_strides(shape);
    int64_t offset = 0;  // where the current part starts along dim, in out's elements
    for (const TensorWrap* part : parts) {
      if (part->numel() > 0) {
        const StridedCopy copy = plan_copy(env, part->shape(), contiguous_strides(part->shape()), 0, out_strides,
                                           offset, element_bytes(*part));
        WN_DISPATCH(part->device(), strided_copy, out.raw_data(), part->raw_data(), copy);
      }
      offset += part->shape()[dim] * out_strides[dim];
    }
    return object;
  });
}

// ----------------------------------------------------------------------------------------------------------------
// Index ops. Index tensors are int32.

const int32_t* index_data(Napi::Env env, const TensorWrap& index, const std::string& where) {
  if (index.dtype() != DType::kInt32)
    throw_type_error(env, where + ": expected an int32 tensor, got a " + dtype_name(index.dtype()) + " one");
  return index.int32_data();
}

// Refuses any index outside [0, limit) before the op writes anything, naming the first one and where it is.
void check_indices(Napi::Env env, const TensorWrap& index, const int32_t* values, int64_t limit, const std::string& where,
                   const std::string& range_of) {
  const int64_t position = WN_DISPATCH(index.device(), first_index_out_of_range, values, index.numel(), limit);
  if (position < 0) return;
  int32_t value = 0;
  if (index.device() == Device::kCpu) {
    value = values[position];
  } else {
#ifdef WEIGHTNORM_WITH_CUDA
    cuda::copy_to_host(&value, values + position, sizeof(value));
#endif
  }
  std::string at;
  int64_t rest = position;
  for (size_t d = index.shape().size(); d-- > 0;) {
    at = std::to_string(rest % index.shape()[d]) + (at.empty() ? "" : ", ") + at;
    rest /= index.shape()[d];
  }
  throw_range_error(env, where + ": expected values in [0, " + std::to_string(limit) + ") (" + range_of + "), received " +
                             std::to_string(value) + " at index[" + at + "]");
}

IndexLayout index_layout(const std::vector<int64_t>& shape, int dim, int64_t count) {
  IndexLayout layout;
  for (int d = 0; d < dim; ++d) layout.outer *= shape[d];
  layout.dim_size = shape[dim];
  layout.count = count;
  for (size_t d = dim + 1; d < shape.size(); ++d) layout.inner *= shape[d];
  return layout;
}

// indexSelect(x, dim, index) -> x's slices index[j] along dim, in index order (index 1-D int32).
Napi::Value IndexSelect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& x = TensorWrap::FromAnyType(info[0], "indexSelect: x");
  const int dim = dim_argument(info, 1, "indexSelect: dim", x.shape().size());
  TensorWrap& index = TensorWrap::FromAnyType(info[2], "indexSelect: index");
  expect_device(env, index, x.device(), "indexSelect: index");
  const int32_t* values = index_data(env, index, "indexSelect: index");
  if (index.shape().size() != 1) throw_range_error(env, "indexSelect: index: expected a 1-D tensor, got " + shape_string(index.shape()));
  check_indices(env, index, values, x.shape()[dim], "indexSelect: index", "x's size along dim " + std::to_string(dim));
  std::vector<int64_t> shape = x.shape();
  shape[dim] = index.numel();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = new_tensor(env, x.device(), shape, x.dtype());
    TensorWrap& out = TensorWrap::FromAnyType(object, "result");
    WN_DISPATCH(x.device(), index_select, out.raw_data(), x.raw_data(), values, index_layout(x.shape(), dim, index.numel()), element_bytes(x));
    return object;
  });
}

// A new tensor holding a copy of x.
Napi::Object copy_of(Napi::Env env, const TensorWrap& x) {
  Napi::Object object = new_tensor(env, x.device(), x.shape(), x.dtype());
  if (x.numel() > 0) {
    TensorWrap& out = TensorWrap::FromAnyType(object, "result");
    const StridedCopy copy = plan_copy(env, x.shape(), contiguous_strides(x.shape()), 0, contiguous_strides(x.shape()), 0, element_bytes(x));
    WN_DISPATCH(x.device(), strided_copy, out.raw_data(), x.raw_data(), copy);
  }
  return object;
}

// indexAdd(x, dim, index, src) -> x with src's slice j added to slice index[j] along dim (out of place; float32).
Napi::Value IndexAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& x = TensorWrap::From(info[0], "indexAdd: x");
  const int dim = dim_argument(info, 1, "indexAdd: dim", x.shape().size());
  TensorWrap& index = TensorWrap::FromAnyType(info[2], "indexAdd: index");
  TensorWrap& src = TensorWrap::From(info[3], "indexAdd: src");
  expect_device(env, index, x.device(), "indexAdd: index");
  expect_device(env, src, x.device(), "indexAdd: src");
  const int32_t* values = index_data(env, index, "indexAdd: index");
  if (index.shape().size() != 1) throw_range_error(env, "indexAdd: index: expected a 1-D tensor, got " + shape_string(index.shape()));
  std::vector<int64_t> expected = x.shape();
  expected[dim] = index.numel();
  if (src.shape() != expected)
    throw_range_error(env, "indexAdd: src: expected shape " + shape_string(expected) + ", got " + shape_string(src.shape()));
  check_indices(env, index, values, x.shape()[dim], "indexAdd: index", "x's size along dim " + std::to_string(dim));
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = copy_of(env, x);
    TensorWrap& out = TensorWrap::From(object, "result");
    WN_DISPATCH(x.device(), index_add, out.data(), src.data(), values, index_layout(x.shape(), dim, index.numel()));
    return object;
  });
}

// The gather/scatter geometry; src (scatter_add) may be null. Checks ranks and sizes as torch does.
GatherLayout gather_layout(Napi::Env env, const std::string& function, const TensorWrap& x, int dim,
                           const TensorWrap& index, const TensorWrap* src) {
  const size_t rank = x.shape().size();
  if (index.shape().size() != rank)
    throw_range_error(env, function + ": index: expected " + std::to_string(rank) + " dims like x, got " + shape_string(index.shape()));
  if (rank > static_cast<size_t>(kMaxShapeRank))
    throw_range_error(env, function + ": x: expected at most " + std::to_string(kMaxShapeRank) + " dims, got " + shape_string(x.shape()));
  for (size_t d = 0; d < rank; ++d) {
    if (static_cast<int>(d) != dim && index.shape()[d] > x.shape()[d])
      throw_range_error(env, function + ": index: " + shape_string(index.shape()) + " is larger than x " +
                                 shape_string(x.shape()) + " in dim " + std::to_string(d));
    if (src && (src->shape().size() != rank || index.shape()[d] > src->shape()[d]))
      throw_range_error(env, function + ": src: " + shape_string(src->shape()) + " must have " + std::to_string(rank) +
                                 " dims, each at least index's " + shape_string(index.shape()));
  }
  GatherLayout layout;
  layout.rank = static_cast<int>(std::max<size_t>(rank, 1));
  layout.dim = dim;
  const std::vector<int64_t> x_strides = contiguous_strides(x.shape());
  const std::vector<int64_t> src_strides = src ? contiguous_strides(src->shape()) : std::vector<int64_t>(rank, 0);
  for (size_t d = 0; d < rank; ++d) {
    layout.index_sizes[d] = index.shape()[d];
    layout.x_strides[d] = x_strides[d];
    layout.src_strides[d] = src_strides[d];
  }
  if (rank == 0) {  // a scalar: one element at position 0 (the only valid index is 0)
    layout.index_sizes[0] = 1;
    layout.x_strides[0] = 1;
    layout.src_strides[0] = 1;
  }
  layout.x_dim_size = rank == 0 ? 1 : x.shape()[dim];
  return layout;
}

// gather(x, dim, index) -> out of index's shape, out[i] = x[i with i[dim] = index[i]] (torch.gather).
Napi::Value Gather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& x = TensorWrap::FromAnyType(info[0], "gather: x");
  const int dim = dim_argument(info, 1, "gather: dim", std::max<size_t>(x.shape().size(), 1));
  TensorWrap& index = TensorWrap::FromAnyType(info[2], "gather: index");
  expect_device(env, index, x.device(), "gather: index");
  const int32_t* values = index_data(env, index, "gather: index");
  const GatherLayout layout = gather_layout(env, "gather", x, dim, index, nullptr);
  check_indices(env, index, values, layout.x_dim_size, "gather: index", "x's size along dim " + std::to_string(dim));
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = new_tensor(env, x.device(), index.shape(), x.dtype());
    TensorWrap& out = TensorWrap::FromAnyType(object, "result");
    WN_DISPATCH(x.device(), gather, out.raw_data(), x.raw_data(), values, layout, element_bytes(x));
    return object;
  });
}

// scatterAdd(x, dim, index, src) -> x with src[i] added at (i with i[dim] = index[i]) (torch.scatter_add; float32).
Napi::Value ScatterAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorWrap& x = TensorWrap::From(info[0], "scatterAdd: x");
  const int dim = dim_argument(info, 1, "scatterAdd: dim", std::max<size_t>(x.shape().size(), 1));
  TensorWrap& index = TensorWrap::FromAnyType(info[2], "scatterAdd: index");
  TensorWrap& src = TensorWrap::From(info[3], "scatterAdd: src");
  expect_device(env, index, x.device(), "scatterAdd: index");
  expect_device(env, src, x.device(), "scatterAdd: src");
  const int32_t* values = index_data(env, index, "scatterAdd: index");
  const GatherLayout layout = gather_layout(env, "scatterAdd", x, dim, index, &src);
  check_indices(env, index, values, layout.x_dim_size, "scatterAdd: index", "x's size along dim " + std::to_string(dim));
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object object = copy_of(env, x);
    TensorWrap& out = TensorWrap::From(object, "result");
    WN_DISPATCH(x.device(), scatter_add, out.data(), src.data(), values, layout);
    return object;
  });
}

}  // namespace

void register_shape_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("view", Napi::Function::New(env, View));
  exports.Set("stridedCopy", Napi::Function::New(env, StridedCopyOp));
  exports.Set("stridedCopyInto", Napi::Function::New(env, StridedCopyInto));
  exports.Set("concat", Napi::Function::New(env, Concat));
  exports.Set("indexSelect", Napi::Function::New(env, IndexSelect));
  exports.Set("indexAdd", Napi::Function::New(env, IndexAdd));
  exports.Set("gather", Napi::Function::New(env, Gather));
  exports.Set("scatterAdd", Napi::Function::New(env, ScatterAdd));
}

}  // namespace weightnorm::binding
