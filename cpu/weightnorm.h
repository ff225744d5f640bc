// CPU weight norm: the fused kernels and the primitives the unfused composition is built from.
// Mirrors cuda/weightnorm.cuh op by op (same names, same argument order: outputs, inputs, layout, options).
#pragma once
#include <cstdint>

#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm::cpu {

// Threads used by every CPU kernel (OpenMP). 0 restores the default (all cores).
void set_num_threads(int threads);
int num_threads();

// Fused forward, one pass over v per channel while it is cache-resident:
//   norm[k] = max(||v_k||, eps),  w = v * (g[k] / norm[k]).
// norm is saved for the backward.
void weightnorm_forward(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                        float eps);

// Fused backward (the gradients of Salimans & Kingma, 2016, §2.1), reading dw and v once per channel while
// cache-resident:
//   dg[k] = <dw_k, v_k> / norm[k]
//   dv    = (g[k]/norm[k]) * dw - (g[k] * dg[k] / norm[k]^2) * v
// Where the forward's floor was active (norm[k] <= eps) the norm is the constant eps, so the second term is 0.
void weightnorm_backward(float* dv, float* dg, const float* dw, const float* v, const float* g, const float* norm,
                         const ChannelLayout& layout, float eps);

// bfloat16 storage for the per-element tensors (v, w, dw, dv); g, norm and dg stay float32, and every sum, norm
// and coefficient is computed in float32 from the widened values. Same semantics as the float32 overloads; each
// output element is the float32 result rounded once to bfloat16. Same kernels and plan as the float32 overloads
// (so also bitwise identical for any thread count); a chunk holds twice the channels, at the same bytes.
void weightnorm_forward(bfloat16* w, float* norm, const bfloat16* v, const float* g, const ChannelLayout& layout,
                        float eps);
void weightnorm_backward(bfloat16* dv, float* dg, const bfloat16* dw, const bfloat16* v, const float* g,
                         const float* norm, const ChannelLayout& layout, float eps);

// The unfused path: the same results from separate primitive passes, as a user chaining ordinary tensor ops
// would get them. Kept for benchmarks and tests only.
void weightnorm_forward_unfused(float* w, float* norm, const float* v, const float* g, const ChannelLayout& layout,
                                float eps);
void weightnorm_backward_unfused(float* dv, float* dg, const float* dw, const float* v, const float* g,
                                 const float* norm, const ChannelLayout& layout, float eps);

// Per-channel coefficients, for layers that reuse a saved norm (the weight-normalized Linear never materializes w):
// scale[k] = g[k] / norm[k].
void weightnorm_scale(float* scale, const float* g, const float* norm, int64_t channels);
// From dot[k] = <dw_k, v_k>: dg = dot / norm, c1 = g / norm, c2 = g * dg / norm^2 (0 where norm <= eps), so that
// dv = c1 * dw - c2 * v.
void weightnorm_backward_coefficients(float* dg, float* c1, float* c2, const float* dot, const float* g,
                                      const float* norm, int64_t channels, float eps);

// Primitives.
// out[k] = sum over channel k of a*b (a == b gives the squared norm).
void channel_dot(float* out, const float* a, const float* b, const ChannelLayout& layout);
// out = x * scale[k] for the channel k of each element.
void channel_scale(float* out, const float* x, const float* scale, const ChannelLayout& layout);
// out = a - b, elementwise.
void subtract(float* out, const float* a, const float* b, int64_t count);

}  // namespace weightnorm::cpu
