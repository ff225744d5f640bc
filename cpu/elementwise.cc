#include "elementwise.h"

#include <omp.h>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>

#include "weightnorm.h"

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

}  // namespace

void scale(float* out, const float* x, float alpha, int64_t count) {
  const bool streaming = count * int64_t{sizeof(float)} >= kStreamingBytes;
  const int64_t blocks = (count + kBlock - 1) / kBlock;
  const bool parallel = count >= (int64_t{1} << 15) && num_threads() > 1;
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (parallel)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kBlock;
    scale_block(out + begin, x + begin, alpha, std::min(kBlock, count - begin), streaming);
  }
}

}  // namespace weightnorm::cpu
