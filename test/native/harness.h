// The native test harness: one check / counter / summary implementation for every native kernel test, so each op
// family's cases (weightnorm_cases.cc, gemm_conv_cases.cc, ops_cases.cc) hold only their cases, references and
// tolerances. One runner (backend_ops_test.cc) runs every registered group, each op on every backend this build and
// machine have (the CPU always; CUDA where a GPU is usable: a CUDA group without one reports itself skipped).
//
//   weightnorm_backend_ops_test                 every group; the last line is "N passed, M failed"
//   weightnorm_backend_ops_test --filter gemm   only the groups whose name contains "gemm" (repeatable)
//   weightnorm_backend_ops_test --list          the group names
//   weightnorm_backend_ops_test --verbose       every check's line, not only the failures
//   weightnorm_backend_ops_test --perf [sizes]  the perf mode (GEMM GFLOP/s per backend) instead of the checks
//
// Adding an op family: a test/native/<family>_cases.cc that includes this header, checks with expect() (no counters
// or main of its own), registers its groups ("<family>/cpu", and "<family>/cuda" under WEIGHTNORM_WITH_CUDA), and is
// listed in weightnorm_backend_ops_test's sources in CMakeLists.txt; npm test then runs each group (native.test.ts).
//
// Errors are measured as ggml's test-backend-ops does, normalized: |got - want| / allowed, where allowed is the
// case's tolerance times the scale its reason names (the sum of |terms| of a float32 sum, a channel's largest term,
// ...); a check passes when the worst ratio is <= 1. NaN counts as infinitely wrong.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace weightnorm::native_test {

// One check: counted; its line is printed when it fails (and with --verbose when it passes).
void expect(bool ok, const std::string& what);
// Whether --verbose was given.
bool verbose();
// printf into a std::string.
std::string format(const char* pattern, ...) __attribute__((format(printf, 1, 2)));

// The normalized error over many elements: the worst |got - want| / allowed, and how many exceed 1.
// 0/0 (an exact match where nothing is allowed) counts as 0; NaN or anything else over 0 as infinity.
struct NormalizedError {
  double worst = 0.0;
  int64_t bad = 0;
  void add(double got, double want, double allowed) {
    const double error = std::fabs(got - want);
    const double ratio = error == 0.0 ? 0.0 : allowed > 0.0 ? error / allowed : INFINITY;
    if (!(ratio <= 1.0)) ++bad;
    if (!(ratio <= worst)) worst = std::isnan(ratio) ? INFINITY : ratio;
  }
  bool ok() const { return bad == 0; }
};

// A tolerance with its reason, printed beside a failure so the reader sees what the bound stands for.
struct Tolerance {
  double relative;     // multiple of the scale each element's error is measured against
  const char* reason;  // why this much: which roundings it covers
};

// Whether the CUDA backend is compiled in and a GPU is usable (the runner prints why not, once).
bool cuda_usable();

// A group of checks, registered by the file that defines it (at static initialization):
//   WEIGHTNORM_NATIVE_TEST_GROUP("gemm/cpu", check_cpu_gemm);
// Groups whose name ends in "/cuda" run only where cuda_usable(); elsewhere they are reported as skipped.
using GroupFunction = void (*)();
int register_group(const char* name, GroupFunction run);
// A mode: a command-line flag that runs `run(argc, argv)` instead of the checks and exits with its status
// (--perf, and --describe-gemm, which the GEMM checks run in child processes of this binary).
using ModeFunction = int (*)(int argc, char** argv);
int register_mode(const char* flag, ModeFunction run);

#define WEIGHTNORM_NATIVE_CONCAT_INNER(a, b) a##b
#define WEIGHTNORM_NATIVE_CONCAT(a, b) WEIGHTNORM_NATIVE_CONCAT_INNER(a, b)
#define WEIGHTNORM_NATIVE_TEST_GROUP(name, function)                                        \
  [[maybe_unused]] static const int WEIGHTNORM_NATIVE_CONCAT(registered_group_, __LINE__) = \
      ::weightnorm::native_test::register_group(name, function)
#define WEIGHTNORM_NATIVE_TEST_MODE(flag, function)                                        \
  [[maybe_unused]] static const int WEIGHTNORM_NATIVE_CONCAT(registered_mode_, __LINE__) = \
      ::weightnorm::native_test::register_mode(flag, function)

}  // namespace weightnorm::native_test
