// The shape kernels' cases of the native runner (groups shape/cpu and shape/cuda; harness.h): every kernel of
// cpu/shape.h and cuda/shape.cuh against a reference written here, one element at a time from the contracts in
// include/weightnorm/ops/shape.inc.
//  - strided_copy for element sizes 1, 2, 4 and 8 bytes: random permutations, flips (negative strides), size-1 and
//    zero-size dims, copies into a region of a larger buffer (whose other bytes must stay as they were), a copy
//    large enough for the CPU's threads, and batched transposes (the tiled paths of both backends, partial tiles);
//  - first_index_out_of_range: the first bad position, none, an empty index;
//  - index_select and gather for every element size; index_add and scatter_add on small integer values (every sum
//    is exact in float32, so even CUDA's atomics, in any order, must give the reference bit for bit).
// Outputs are prefilled with a byte pattern, so an element a kernel forgets to write (or writes outside its region)
// fails its check.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../../cpu/shape.h"
#include "harness.h"
#include "weightnorm/shape.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../../cuda/runtime.cuh"
#include "../../cuda/shape.cuh"
#endif

namespace {

using weightnorm::GatherLayout;
using weightnorm::IndexLayout;
using weightnorm::kMaxShapeRank;
using weightnorm::StridedCopy;
using Bytes = std::vector<unsigned char>;

using weightnorm::native_test::expect;

constexpr unsigned char kUnwritten = 0xab;

// One backend's entry points (the same signatures in both namespaces).
struct Backend {
  const char* name;
  bool device;
  void (*strided_copy)(void*, const void*, const StridedCopy&);
  int64_t (*first_index_out_of_range)(const int32_t*, int64_t, int64_t);
  void (*index_select)(void*, const void*, const int32_t*, const IndexLayout&, int);
  void (*index_add)(float*, const float*, const int32_t*, const IndexLayout&);
  void (*gather)(void*, const void*, const int32_t*, const GatherLayout&, int);
  void (*scatter_add)(float*, const float*, const int32_t*, const GatherLayout&);
};

#define WN_BIND_SHAPE_OPS(b, ns)                              \
  (b).strided_copy = ns::strided_copy;                        \
  (b).first_index_out_of_range = ns::first_index_out_of_range; \
  (b).index_select = ns::index_select;                        \
  (b).index_add = ns::index_add;                              \
  (b).gather = ns::gather;                                    \
  (b).scatter_add = ns::scatter_add

// Raw bytes on the backend's side.
class Buffer {
 public:
  Buffer(const Backend& backend, const Bytes& values) : device_(backend.device), size_(values.size()) {
    if (!device_) {
      host_ = values;
      host_.resize(std::max<size_t>(size_, 1));
      return;
    }
#ifdef WEIGHTNORM_WITH_CUDA
    bytes_ = std::max<size_t>(size_, 1);
    device_data_ = weightnorm::cuda::allocate(bytes_);
    if (size_) weightnorm::cuda::copy_to_device(device_data_, values.data(), size_);
#endif
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
#ifdef WEIGHTNORM_WITH_CUDA
    if (device_data_) weightnorm::cuda::release(device_data_, bytes_);
#endif
  }
  void* p() { return device_ ? device_data_ : host_.data(); }
  template <class T>
  T* as() { return static_cast<T*>(p()); }
  Bytes get() const {
    if (!device_) return Bytes(host_.begin(), host_.begin() + size_);
    Bytes values(size_);
#ifdef WEIGHTNORM_WITH_CUDA
    if (size_) weightnorm::cuda::copy_to_host(values.data(), device_data_, size_);
#endif
    return values;
  }

 private:
  bool device_;
  size_t size_;
  Bytes host_;
  void* device_data_ = nullptr;
  size_t bytes_ = 0;
};

std::mt19937 g_rng(20160225u);

int between(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g_rng); }

Bytes random_bytes(size_t n) {
  Bytes v(n);
  for (auto& b : v) b = static_cast<unsigned char>(between(0, 255));
  return v;
}

template <class T>
Bytes as_bytes(const std::vector<T>& values) {
  Bytes b(values.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), values.data(), b.size());
  return b;
}

template <class T>
std::vector<T> from_bytes(const Bytes& b) {
  std::vector<T> values(b.size() / sizeof(T));
  if (!b.empty()) std::memcpy(values.data(), b.data(), b.size());
  return values;
}

int64_t product(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, [](int64_t a, int64_t b) { return a * b; });
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

std::string text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// The reference walk: for each multi-index of `copy.sizes`, move element_bytes bytes.
void reference_copy(Bytes& out, const Bytes& x, const StridedCopy& copy) {
  const int64_t total = copy.elements();
  for (int64_t e = 0; e < total; ++e) {
    int64_t in = copy.in_offset, o = copy.out_offset, rest = e;
    for (int d = copy.rank - 1; d >= 0; --d) {
      const int64_t i = rest % copy.sizes[d];
      rest /= copy.sizes[d];
      in += i * copy.in_strides[d];
      o += i * copy.out_strides[d];
    }
    std::memcpy(&out[o * copy.element_bytes], &x[in * copy.element_bytes], copy.element_bytes);
  }
}

void check_copy(const Backend& b, const std::string& what, const StridedCopy& copy, size_t in_elements, size_t out_elements) {
  const Bytes x = random_bytes(in_elements * copy.element_bytes);
  Bytes want(out_elements * copy.element_bytes, kUnwritten);
  reference_copy(want, x, copy);
  Buffer in(b, x), out(b, Bytes(want.size(), kUnwritten));
  b.strided_copy(out.p(), in.p(), copy);
  expect(out.get() == want, std::string(b.name) + " strided_copy " + what + " (" + std::to_string(copy.element_bytes) + " bytes)");
}

// A permutation of a random shape (size-1 and zero-size dims sometimes), read with the source's permuted strides
// (negative, from the far end, along flipped dims) and written contiguously.
void test_strided_copy(const Backend& b) {
  for (int element_bytes : {1, 2, 4, 8}) {
    for (int trial = 0; trial < 12; ++trial) {
      const int rank = between(0, kMaxShapeRank);
      std::vector<int64_t> shape(rank);
      for (auto& s : shape) s = trial == 11 && rank > 0 && between(0, 3) == 0 ? 0 : between(1, 4);
      std::vector<int> dims(rank);
      std::iota(dims.begin(), dims.end(), 0);
      std::shuffle(dims.begin(), dims.end(), g_rng);
      const std::vector<int64_t> strides = contiguous_strides(shape);
      StridedCopy copy;
      copy.rank = rank;
      copy.element_bytes = element_bytes;
      const std::vector<int64_t> out_shape = [&] {
        std::vector<int64_t> o(rank);
        for (int k = 0; k < rank; ++k) o[k] = shape[dims[k]];
        return o;
      }();
      const std::vector<int64_t> out_strides = contiguous_strides(out_shape);
      const bool empty = product(shape) == 0;
      for (int k = 0; k < rank; ++k) {
        const bool flipped = between(0, 2) == 0;
        copy.sizes[k] = out_shape[k];
        copy.in_strides[k] = flipped ? -strides[dims[k]] : strides[dims[k]];
        copy.out_strides[k] = out_strides[k];
        if (flipped && !empty) copy.in_offset += (shape[dims[k]] - 1) * strides[dims[k]];
      }
      check_copy(b, "permute/flip " + text(shape), copy, static_cast<size_t>(std::max<int64_t>(product(shape), 1)),
                 static_cast<size_t>(std::max<int64_t>(product(out_shape), 1)));
    }
  }
  // Into a region of a larger buffer (concat, a slice's backward): [2, 3] at rows 1..2, columns 2..4 of [4, 6].
  StridedCopy region;
  region.rank = 2;
  region.sizes[0] = 2, region.sizes[1] = 3;
  region.in_strides[0] = 3, region.in_strides[1] = 1;
  region.out_strides[0] = 6, region.out_strides[1] = 1;
  region.out_offset = 6 + 2;
  for (int element_bytes : {1, 2, 4, 8}) {
    region.element_bytes = element_bytes;
    check_copy(b, "into a region of [4, 6]", region, 6, 24);
  }
  // Every other element of a long row, large enough for several CPU threads.
  StridedCopy large;
  large.rank = 2;
  large.sizes[0] = 300, large.sizes[1] = 257;
  large.in_strides[0] = 1, large.in_strides[1] = 600;  // a transpose of [257, 600] keeping 300 of its columns
  large.out_strides[0] = 257, large.out_strides[1] = 1;
  large.element_bytes = 4;
  check_copy(b, "a transposed [257, 600] block, 77100 elements", large, 257 * 600, 300 * 257);
  // Batched transposes of x [3, 50, 40] (the CPU copies these in tiles): to [3, 40, 50] and to [40, 3, 50].
  StridedCopy batched;
  batched.rank = 3;
  const int64_t to_batch_first[3][3] = {{3, 40, 50}, {2000, 1, 40}, {2000, 50, 1}};
  const int64_t to_batch_middle[3][3] = {{40, 3, 50}, {1, 2000, 40}, {150, 50, 1}};
  for (const auto* plan : {to_batch_first, to_batch_middle}) {
    for (int d = 0; d < 3; ++d) {
      batched.sizes[d] = plan[0][d];
      batched.in_strides[d] = plan[1][d];
      batched.out_strides[d] = plan[2][d];
    }
    for (int element_bytes : {1, 2, 4, 8}) {
      batched.element_bytes = element_bytes;
      check_copy(b, "x [3, 50, 40] to [" + std::to_string(plan[0][0]) + ", " + std::to_string(plan[0][1]) + ", 50]", batched, 6000, 6000);
    }
  }
}

void test_index_check(const Backend& b) {
  const std::string tag = std::string(b.name) + " first_index_out_of_range ";
  std::vector<int32_t> values(5000);
  for (auto& v : values) v = between(0, 9);
  {
    Buffer index(b, as_bytes(values));
    expect(b.first_index_out_of_range(index.as<int32_t>(), 5000, 10) == -1, tag + "all inside [0, 10)");
    expect(b.first_index_out_of_range(index.as<int32_t>(), 5000, 9) == static_cast<int64_t>(std::find(values.begin(), values.end(), 9) - values.begin()),
           tag + "the first 9 against [0, 9)");
    expect(b.first_index_out_of_range(index.as<int32_t>(), 0, 0) == -1, tag + "an empty index");
  }
  values[4321] = -1;
  values[3000] = 10;
  values[4999] = 1 << 30;
  Buffer index(b, as_bytes(values));
  expect(b.first_index_out_of_range(index.as<int32_t>(), 5000, 10) == 3000, tag + "10, -1 and 2^30 out of range: the first");
}

std::vector<int32_t> random_indices(int64_t count, int64_t limit) {
  std::vector<int32_t> v(static_cast<size_t>(count));
  for (auto& i : v) i = between(0, static_cast<int>(limit) - 1);
  return v;
}

// Small integers as floats: every partial sum is exact, so any order of additions gives the same bits.
std::vector<float> integer_floats(int64_t count) {
  std::vector<float> v(static_cast<size_t>(count));
  for (auto& x : v) x = static_cast<float>(between(-3, 4));
  return v;
}

void test_index_select(const Backend& b) {
  for (const IndexLayout layout : {IndexLayout{1, 5, 7, 1}, IndexLayout{3, 4, 6, 5}, IndexLayout{2, 3, 0, 4}, IndexLayout{4, 50, 300, 37}}) {
    const std::string shape = "[" + std::to_string(layout.outer) + "," + std::to_string(layout.dim_size) + "," +
                              std::to_string(layout.inner) + "] with " + std::to_string(layout.count) + " indices";
    const std::vector<int32_t> indices = random_indices(layout.count, layout.dim_size);
    Buffer index(b, as_bytes(indices));
    for (int element_bytes : {1, 2, 4, 8}) {
      const Bytes x = random_bytes(layout.outer * layout.dim_size * layout.inner * element_bytes);
      const size_t out_bytes = layout.outer * layout.count * layout.inner * element_bytes;
      Bytes want(out_bytes);
      for (int64_t o = 0; o < layout.outer; ++o)
        for (int64_t j = 0; j < layout.count; ++j)
          std::memcpy(&want[((o * layout.count + j) * layout.inner) * element_bytes],
                      &x[((o * layout.dim_size + indices[j]) * layout.inner) * element_bytes], layout.inner * element_bytes);
      Buffer in(b, x), out(b, Bytes(out_bytes, kUnwritten));
      b.index_select(out.p(), in.p(), index.as<int32_t>(), layout, element_bytes);
      expect(out.get() == want, std::string(b.name) + " index_select " + shape + " (" + std::to_string(element_bytes) + " bytes)");
    }
    const std::vector<float> base = integer_floats(layout.outer * layout.dim_size * layout.inner);
    const std::vector<float> src = integer_floats(layout.outer * layout.count * layout.inner);
    std::vector<float> want = base;
    for (int64_t o = 0; o < layout.outer; ++o)
      for (int64_t j = 0; j < layout.count; ++j)
        for (int64_t r = 0; r < layout.inner; ++r)
          want[(o * layout.dim_size + indices[j]) * layout.inner + r] += src[(o * layout.count + j) * layout.inner + r];
    Buffer out(b, as_bytes(base)), from(b, as_bytes(src));
    b.index_add(out.as<float>(), from.as<float>(), index.as<int32_t>(), layout);
    expect(from_bytes<float>(out.get()) == want, std::string(b.name) + " index_add " + shape + " (exact sums)");
  }
}

// torch.gather / scatter_add shapes: index smaller than x off dim, src larger than index.
void test_gather_scatter(const Backend& b) {
  struct Case {
    std::vector<int64_t> x, index, src;
    int dim;
  };
  const std::vector<Case> cases = {
      {{5}, {8}, {9}, 0},
      {{3, 4}, {2, 6}, {3, 6}, 1},
      {{4, 3, 5}, {7, 2, 4}, {7, 3, 5}, 0},
      {{2, 3, 4, 5}, {2, 2, 3, 6}, {2, 2, 4, 6}, 3},
      {{3, 4}, {0, 4}, {1, 4}, 0},
      {{40, 30, 20}, {40, 25, 20}, {40, 25, 20}, 1},
  };
  for (const Case& c : cases) {
    const int rank = static_cast<int>(c.x.size());
    GatherLayout layout;
    layout.rank = rank;
    layout.dim = c.dim;
    const std::vector<int64_t> xs = contiguous_strides(c.x), ss = contiguous_strides(c.src);
    for (int d = 0; d < rank; ++d) {
      layout.index_sizes[d] = c.index[d];
      layout.x_strides[d] = xs[d];
      layout.src_strides[d] = ss[d];
    }
    layout.x_dim_size = c.x[c.dim];
    const int64_t count = product(c.index);
    const std::vector<int32_t> indices = random_indices(count, c.x[c.dim]);
    Buffer index(b, as_bytes(indices));
    const std::string what = "x " + text(c.x) + " index " + text(c.index) + " dim " + std::to_string(c.dim);
    // x's and src's offsets of index position e.
    auto offsets = [&](int64_t e, int64_t* x_offset, int64_t* src_offset) {
      int64_t rest = e;
      *x_offset = 0, *src_offset = 0;
      for (int d = rank - 1; d >= 0; --d) {
        const int64_t i = rest % c.index[d];
        rest /= c.index[d];
        *x_offset += (d == c.dim ? indices[e] : i) * xs[d];
        *src_offset += i * ss[d];
      }
    };
    for (int element_bytes : {1, 2, 4, 8}) {
      const Bytes x = random_bytes(product(c.x) * element_bytes);
      Bytes want(count * element_bytes);
      for (int64_t e = 0; e < count; ++e) {
        int64_t xo, so;
        offsets(e, &xo, &so);
        std::memcpy(&want[e * element_bytes], &x[xo * element_bytes], element_bytes);
      }
      Buffer in(b, x), out(b, Bytes(want.size(), kUnwritten));
      b.gather(out.p(), in.p(), index.as<int32_t>(), layout, element_bytes);
      expect(out.get() == want, std::string(b.name) + " gather " + what + " (" + std::to_string(element_bytes) + " bytes)");
    }
    const std::vector<float> base = integer_floats(product(c.x));
    const std::vector<float> src = integer_floats(product(c.src));
    std::vector<float> want = base;
    for (int64_t e = 0; e < count; ++e) {
      int64_t xo, so;
      offsets(e, &xo, &so);
      want[xo] += src[so];
    }
    Buffer out(b, as_bytes(base)), from(b, as_bytes(src));
    b.scatter_add(out.as<float>(), from.as<float>(), index.as<int32_t>(), layout);
    expect(from_bytes<float>(out.get()) == want, std::string(b.name) + " scatter_add " + what + " src " + text(c.src) + " (exact sums)");
  }
}

void run_all(const Backend& b) {
  test_strided_copy(b);
  test_index_check(b);
  test_index_select(b);
  test_gather_scatter(b);
}

void check_cpu_shape() {
  Backend cpu_backend{"cpu", false, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
  WN_BIND_SHAPE_OPS(cpu_backend, weightnorm::cpu);
  g_rng.seed(20160225u);
  run_all(cpu_backend);
}
WEIGHTNORM_NATIVE_TEST_GROUP("shape/cpu", check_cpu_shape);

#ifdef WEIGHTNORM_WITH_CUDA
void check_cuda_shape() {
  Backend cuda_backend{"cuda", true, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
  WN_BIND_SHAPE_OPS(cuda_backend, weightnorm::cuda);
  g_rng.seed(20160225u);
  run_all(cuda_backend);
  // Hand the caching allocator's blocks back, so compute-sanitizer's leak check sees no memory still held.
  weightnorm::cuda::release_cached();
}
WEIGHTNORM_NATIVE_TEST_GROUP("shape/cuda", check_cuda_shape);
#endif

}  // namespace
