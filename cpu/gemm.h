// GEMM with a fused epilogue (CPU). The epilogue and the gemm() overloads are declared once for both backends in
// include/weightnorm/gemm.h and ops/gemm.inc; below, what only the CPU has.
#pragma once
#include <cstdint>
#include <string>

#include "weightnorm/gemm.h"

namespace weightnorm::cpu {

#include "weightnorm/ops/gemm.inc"

// Both implementations give bitwise identical results for any thread count (each output element is summed in an
// order fixed by the shape alone), and run to run.
//
// The two implementations: "openblas" (OpenBLAS's cblas_sgemm, loaded at run time, on fixed output tiles, plus the
// epilogue) and "blocked" (the hand-written packed, cache-blocked kernel). The first call loads OpenBLAS if it can:
// WEIGHTNORM_OPENBLAS=<path> loads that file only, WEIGHTNORM_OPENBLAS=0 never loads it; otherwise
// /usr/lib/<multiarch>/openblas-openmp/libopenblas.so.0, then libopenblas.so.0 from the library search path, then
// /usr/lib/<multiarch>/openblas-pthread/libopenblas.so.0. Builds with WEIGHTNORM_USE_BLAS=OFF never load it.
// Which one gemm() uses (the automatic choice): the blocked kernel when OpenBLAS is not loaded, and also when the
// blocked kernel's AVX-512 micro-kernel runs on this CPU while OpenBLAS's kernels (gemm_blas_core) are not one of
// its AVX-512 families (SkylakeX, Cooperlake, SapphireRapids): on a Zen 5 core the blocked kernel runs the conv and
// Linear products of a CNN or MLP training step 1.3 to 2.1 times as fast as OpenBLAS's AVX2 (Haswell) kernels (the
// few smallest about as fast), while OpenBLAS's AVX-512 kernels match it on the large products and beat it on the
// small ones (bench/NOTES.md); OpenBLAS otherwise. The choice depends on the CPU and OpenBLAS's kernels only (never
// on the shape, the thread count or a timing).
enum class GemmImplementation { kAutomatic, kBlocked, kOpenBlas };
// What gemm() uses now: "openblas" or "blocked".
const char* gemm_backend();
// What backend() reports: e.g. "OpenBLAS (OpenBLAS 0.3.21 ... ; loaded at run time from <path>; 1 thread per
// tile)", "blocked (hand-written, avx512 micro-kernel): chosen over OpenBLAS, whose Haswell kernels ... ; OpenBLAS
// (...)" or "blocked (hand-written): OpenBLAS not found (<why, per candidate>)".
std::string gemm_backend_description();
// The kernel family OpenBLAS chose when it was loaded (openblas_get_corename: "SkylakeX", "Haswell", ...), whether
// or not gemm() uses it; "" when OpenBLAS is not loaded. OpenBLAS takes it from the CPU, or from the
// OPENBLAS_CORETYPE environment variable when that is set.
std::string gemm_blas_core();
// CPU only, for tests and benchmarks: kAutomatic (the default) as above; kBlocked always the blocked kernel;
// kOpenBlas OpenBLAS whenever it is loaded.
void set_gemm_implementation(GemmImplementation implementation);
// The same: false = kBlocked, true = kOpenBlas.
void set_gemm_prefer_blas(bool prefer);
// CPU only. The instruction set the blocked kernel's micro-kernel was compiled for and picked at run time from
// what this CPU supports: "avx512", "avx2" (with FMA) or "sse2" (x86-64 baseline; "generic" elsewhere).
const char* gemm_blocked_isa();
// CPU only, for tests and benchmarks: force one micro-kernel ("avx512", "avx2", "sse2"), or nullptr / "" for the
// automatic choice. Returns false (and changes nothing) when this CPU or build cannot run that one.
bool set_gemm_blocked_isa(const char* isa);

}  // namespace weightnorm::cpu
