// CPU elementwise kernels (see elementwise.h): copy/scale (the roofline), arithmetic, activations and their
// backwards, dropout and Gaussian noise from the counter-based generator (so masks match the CUDA ones), and the
// per-channel bias add. Blocks of consecutive indices are spread over the pool's threads.
#include "elementwise.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "weightnorm.h"
#include "weightnorm/random.h"

namespace weightnorm::cpu {

namespace {

// Large outputs use streaming stores, like the fused weight-norm kernels: the copy is the memory roofline the
// benchmarks compare against, so it has to be the best copy this machine can do.
constexpr int64_t kStreamingBytes = int64_t{4} << 20;
constexpr int64_t kBlock = int64_t{1} << 14;

void scale_block(float* out, const float* x, float alpha, int64_t count, bool streaming) {
#if defined(__SSE2__)
  if (streaming) {
    int64_t i = 0;
    for (; i < count && (reinterpret_cast<uintptr_t>(out + i) & 15) != 0; ++i) out[i] = alpha * x[i];
    const __m128 a = _mm_set1_ps(alpha);
    for (; i + 4 <= count; i += 4) _mm_stream_ps(out + i, _mm_mul_ps(a, _mm_loadu_ps(x + i)));
    for (; i < count; ++i) out[i] = alpha * x[i];
    _mm_sfence();
    return;
  }
#endif
  for (int64_t i = 0; i < count; ++i) out[i] = alpha * x[i];
}

// Below this many elements a single thread is faster than waking the others.
constexpr int64_t kParallelMinElements = int64_t{1} << 15;

// body(i) for every i in [0, count), in blocks of kBlock consecutive indices per loop iteration (the inner loop
// stays a plain counted loop, so the compiler vectorizes it).
template <class Body>
void for_each_index(int64_t count, Body&& body) {
  if (count <= 0) return;
  const int threads = num_threads();
  const int64_t blocks = (count + kBlock - 1) / kBlock;
  parallel_region(count >= kParallelMinElements && threads > 1, threads, [&] {
    for (const int64_t b : team_static(0, blocks)) {
      // A private copy of the lambda: through the shared one, the compiler must assume the output stores may change
      // its captured pointers and scalars, reloads them every element and does not vectorize.
      const auto run = body;
      const int64_t end = std::min(count, (b + 1) * kBlock);
      for (int64_t i = b * kBlock; i < end; ++i) run(i);
    }
  });
}

}  // namespace

void scale(float* out, const float* x, float alpha, int64_t count) {
  const bool streaming = count * int64_t{sizeof(float)} >= kStreamingBytes;
  const int64_t blocks = (count + kBlock - 1) / kBlock;
  const bool parallel = count >= (int64_t{1} << 15) && num_threads() > 1;
  parallel_region(parallel, num_threads(), [&] {
    for (const int64_t b : team_static(0, blocks)) {
      const int64_t begin = b * kBlock;
      scale_block(out + begin, x + begin, alpha, std::min(kBlock, count - begin), streaming);
    }
  });
}

void add(float* out, const float* a, const float* b, int64_t count) {
  for_each_index(count, [=](int64_t i) { out[i] = a[i] + b[i]; });
}

void multiply(float* out, const float* a, const float* b, int64_t count) {
  for_each_index(count, [=](int64_t i) { out[i] = a[i] * b[i]; });
}

// beta == 0 does not read y (it may be uninitialized memory), as BLAS does.
void axpby(float* y, float alpha, const float* x, float beta, int64_t count) {
  if (beta == 0.0f) return for_each_index(count, [=](int64_t i) { y[i] = alpha * x[i]; });
  for_each_index(count, [=](int64_t i) { y[i] = alpha * x[i] + beta * y[i]; });
}

void fill(float* out, float value, int64_t count) {
  for_each_index(count, [=](int64_t i) { out[i] = value; });
}

// Selects, not branches (the sign of an activation is a coin flip for the branch predictor), and the slope test
// outside the loop, so both loops vectorize.
void relu_forward(float* y, const float* x, float negative_slope, int64_t count) {
  if (negative_slope == 0.0f) {
    // Exactly 0 for x <= 0 (0 * -inf would be NaN); NaN stays NaN.
    for_each_index(count, [=](int64_t i) {
      const float v = x[i];
      y[i] = ((v > 0.0f) | (v != v)) ? v : 0.0f;
    });
  } else {
    for_each_index(count, [=](int64_t i) {
      const float v = x[i];
      y[i] = v > 0.0f ? v : negative_slope * v;  // NaN: slope * NaN = NaN
    });
  }
}

void relu_backward(float* dx, const float* dy, const float* x, float negative_slope, int64_t count) {
  // A select of two products (not a branch): the same value as dy * (x > 0 ? 1 : slope), NaN and inf included.
  for_each_index(count, [=](int64_t i) {
    const float scaled = dy[i] * negative_slope;
    dx[i] = x[i] > 0.0f ? dy[i] : scaled;
  });
}

void tanh_forward(float* y, const float* x, int64_t count) {
  for_each_index(count, [=](int64_t i) { y[i] = std::tanh(x[i]); });
}

void tanh_backward(float* dx, const float* dy, const float* y, int64_t count) {
  for_each_index(count, [=](int64_t i) { dx[i] = dy[i] * (1.0f - y[i] * y[i]); });
}

// The same scale as cuda::dropout_forward: p >= 1 drops everything (mask 0, not 0 * inf).
void dropout_forward(float* y, float* mask, const float* x, float p, uint64_t seed, int64_t count) {
  const uint64_t stream = random::stream_of(seed, random::kPurposeDropout);
  const double threshold = p;
  const float keep_scale = p < 1.0f ? static_cast<float>(1.0 / (1.0 - double(p))) : 0.0f;
  for_each_index(count, [=](int64_t i) {
    const float m = random::uniform(stream, uint64_t(i)) >= threshold ? keep_scale : 0.0f;
    if (mask) mask[i] = m;
    y[i] = x[i] * m;
  });
}

void gaussian_noise(float* y, const float* x, float std, uint64_t seed, int64_t count) {
  const uint64_t stream = random::stream_of(seed, random::kPurposeNoise);
  const double sigma = std;
  for_each_index(count, [=](int64_t i) {
    y[i] = static_cast<float>(double(x[i]) + sigma * random::normal(stream, uint64_t(i)));
  });
}

void channel_bias_add(float* out, const float* x, const float* bias, const ChannelLayout& layout) {
  const int64_t channels = layout.channels, inner = layout.inner, count = layout.elements();
  if (count == 0) return;
  const int threads = num_threads();
  const bool parallel = count >= kParallelMinElements && threads > 1;
  if (inner == 1) {
    // Linear: every row of `channels` elements adds the whole bias vector.
    parallel_region(parallel, threads, [&] {
      for (const int64_t o : team_static(0, layout.outer)) {
        const float* src = x + o * channels;
        float* dst = out + o * channels;
        for (int64_t k = 0; k < channels; ++k) dst[k] = src[k] + bias[k];
      }
    });
    return;
  }
  const int64_t rows = layout.outer * channels;
  parallel_region(parallel, threads, [&] {
    for (const int64_t row : team_static(0, rows)) {
      const float b = bias[row % channels];
      const float* src = x + row * inner;
      float* dst = out + row * inner;
      for (int64_t i = 0; i < inner; ++i) dst[i] = src[i] + b;
    }
  });
}

void convert(bfloat16* out, const float* x, int64_t count) {
  for_each_index(count, [=](int64_t i) { out[i] = float_to_bfloat16(x[i]); });
}

void convert(float* out, const bfloat16* x, int64_t count) {
  for_each_index(count, [=](int64_t i) { out[i] = bfloat16_to_float(x[i]); });
}

}  // namespace weightnorm::cpu
