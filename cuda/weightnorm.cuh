// CUDA weight norm: mirrors cpu/weightnorm.h op by op (same names, same argument order). All pointers are device
// memory from cuda::allocate; work is queued on the library stream. Plain C++ API: no CUDA types here.
#pragma once
#include <cstdint>

#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm::cuda {

// Fused forward: norm[k] = max(||v_k||, eps), w = v * (g[k] / norm[k]). Saves norm for the backward. Bitwise
// deterministic run to run; the routes (cluster rows on sm_90, rows, short columns, split) are described in
// weightnorm.cu.
void weightnorm_forward(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                        float eps);
// Fused backward: dg[k] = <dw_k, v_k> / norm[k]; dv = (g/norm) dw - (g dg / norm^2) v (second term 0 where the
// eps floor was active). norm is the forward's; the same routes as the forward.
void weightnorm_backward(float* dv, float* dg, const float* dw, const float* v, const float* g, const float* norm,
                         const ChannelLayout& layout, float eps);

// bfloat16 storage for the per-element tensors (v, w, dw, dv); g, norm and dg stay float32, and every sum, norm
// and coefficient is computed in float32 from the widened values. Same semantics as the float32 overloads; each
// output element is the float32 result rounded once to bfloat16. 16-byte loads of 8 values where rows (or the whole
// tensor, for outer > 1) are whole 8-value items and 16-byte aligned, else one value at a time.
void weightnorm_forward(bfloat16* w, float* norm, const bfloat16* v, const float* g, const ChannelLayout& layout,
                        float eps);
void weightnorm_backward(bfloat16* dv, float* dg, const bfloat16* dw, const bfloat16* v, const float* g,
                         const float* norm, const ChannelLayout& layout, float eps);

// The unfused composition, for benchmarks and tests only.
void weightnorm_forward_unfused(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                                float eps);
void weightnorm_backward_unfused(float* dv, float* dg, const float* dw, const float* v, const float* g,
                                 const float* norm, const ChannelLayout& layout, float eps);

// Per-channel coefficients (see cpu/weightnorm.h).
void weightnorm_scale(float* scale, const float* g, const float* norm, int64_t channels);
void weightnorm_backward_coefficients(float* dg, float* c1, float* c2, const float* dot, const float* g,
                                      const float* norm, int64_t channels, float eps);

// Primitives.
void channel_dot(float* out, const float* a, const float* b, const ChannelLayout& layout);
void channel_scale(float* out, const float* x, const float* scale, const ChannelLayout& layout);
void subtract(float* out, const float* a, const float* b, int64_t count);

// Diagnostics for tests and benchmarks: the route the last fused forward or backward took ("cluster-rows", "rows",
// "columns", "row-split", "view-split"; "none" before the first call).
const char* weightnorm_last_route();

}  // namespace weightnorm::cuda
