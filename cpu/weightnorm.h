// CPU weight norm: the entry points both backends declare from include/weightnorm/ops/weightnorm.inc.
#pragma once
#include <cstdint>

#include "reduce.h"   // channel_dot, channel_scale, subtract: the unfused path is composed of them
#include "threads.h"  // the thread count; CPU sources and native tests have long reached it through this header
#include "weightnorm/bfloat16.h"
#include "weightnorm/layout.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/weightnorm.inc"

// On the CPU the fused kernels read each channel while it is cache-resident; the bfloat16 overloads use the same
// kernels and plan as the float32 ones (so also bitwise identical for any thread count), a chunk holding twice the
// channels at the same bytes.

// CPU only. float32 rows of 16 elements with dim 0 ([N, 16], outer == 1) take one-pass kernels on AVX-512 or AVX2
// CPUs, bitwise equal to the general short-rows walk. The instruction set in use: "avx512", "avx2" or "none" (the
// general walk for every row: another CPU or build).
const char* weightnorm_rows16_isa();
// CPU only, for tests and benchmarks: force "avx512", "avx2" or "none", or nullptr / "" for the automatic choice.
// Returns false (and changes nothing) when this CPU or build cannot run that one. Not thread-safe: set it while no
// weight-norm call runs.
bool set_weightnorm_rows16_isa(const char* isa);

// CPU only. On AVX-512 CPUs every float32 and bfloat16 walk but the rows-of-16 kernels runs AVX-512 code: rows of
// at least 32 elements with dim 0 whose plan keeps each row whole ("long rows") are reduced and written one row at a
// time with full-line stores; the column and short-rows walks reduce and write 16 elements per instruction. Each is
// bitwise equal to the SSE2 code it stands in for. The instruction set in use: "avx512" or "none" (SSE2: another
// CPU or build, or forced).
const char* weightnorm_vector_isa();
// CPU only, for tests and benchmarks: force "avx512" or "none", or nullptr / "" for the automatic choice. Returns
// false (and changes nothing) when this CPU or build cannot run it. Not thread-safe: set it while no weight-norm call
// runs.
bool set_weightnorm_vector_isa(const char* isa);

}  // namespace weightnorm::cpu
