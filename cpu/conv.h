// Convolution (im2col + GEMM) and pooling, NCHW (CPU): the entry points both backends declare from
// include/weightnorm/ops/conv.inc.
#pragma once
#include <cstdint>

#include "weightnorm/conv.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/conv.inc"

// CPU only. The instruction set of cpu/conv.cc's vector kernels (the direct convolution for one input channel per
// group with stride 1, and 2x2 stride-2 max pooling), picked at run time from what this CPU supports: "avx512",
// "avx2" or "sse2" (the x86-64 baseline); all give the same bits.
const char* conv_vector_isa();
// CPU only, for tests: force one ("avx512", "avx2", "sse2"), or nullptr / "" for the automatic choice. Returns false
// (and changes nothing) when this CPU or build cannot run that one.
bool set_conv_vector_isa(const char* isa);

}  // namespace weightnorm::cpu
