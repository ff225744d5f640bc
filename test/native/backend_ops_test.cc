// The native kernel test runner (see harness.h): every registered group of checks, each op on every backend this
// build and machine have, against float64 references; runnable without Node (and under compute-sanitizer on a GPU
// machine). Prints the failing checks, one summary line per group and, last, "N passed, M failed"; exit status 0
// only when every check passes.
#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "../../cpu/weightnorm.h"
#include "harness.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include "../../cuda/runtime.cuh"
#endif

namespace weightnorm::native_test {

namespace {

int g_checks = 0, g_failures = 0;
bool g_verbose = false;

struct Group {
  std::string name;
  GroupFunction run;
};
struct Mode {
  std::string flag;
  ModeFunction run;
};

// Function-local statics: registration runs during static initialization, in any translation-unit order.
std::vector<Group>& groups() {
  static std::vector<Group> registered;
  return registered;
}
std::vector<Mode>& modes() {
  static std::vector<Mode> registered;
  return registered;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void expect(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) ++g_failures;
  if (!ok || g_verbose) std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
}

bool verbose() { return g_verbose; }

std::string format(const char* pattern, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, pattern);
  std::vsnprintf(buffer, sizeof buffer, pattern, args);
  va_end(args);
  return buffer;
}

bool cuda_usable() {
#ifdef WEIGHTNORM_WITH_CUDA
  return cuda::device_status().usable;
#else
  return false;
#endif
}

int register_group(const char* name, GroupFunction run) {
  groups().push_back({name, run});
  return int(groups().size());
}

int register_mode(const char* flag, ModeFunction run) {
  modes().push_back({flag, run});
  return int(modes().size());
}

}  // namespace weightnorm::native_test

int main(int argc, char** argv) {
  namespace nt = weightnorm::native_test;
  std::vector<std::string> filters;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    for (const nt::Mode& mode : nt::modes())
      if (argument == mode.flag) return mode.run(argc - i, argv + i);
    if (argument == "--verbose") {
      nt::g_verbose = true;
    } else if (argument == "--list") {
      list = true;
    } else if (argument == "--filter" && i + 1 < argc) {
      filters.push_back(argv[++i]);
    } else {
      std::fprintf(stderr, "unknown argument %s: expected --filter <part of a group name>, --list, --verbose",
                   argument.c_str());
      for (const nt::Mode& mode : nt::modes()) std::fprintf(stderr, ", %s", mode.flag.c_str());
      std::fprintf(stderr, "\n");
      return 2;
    }
  }
  std::vector<nt::Group> selected;
  for (const nt::Group& group : nt::groups()) {
    const bool wanted = filters.empty() || std::any_of(filters.begin(), filters.end(), [&](const std::string& f) {
                          return group.name.find(f) != std::string::npos;
                        });
    if (wanted) selected.push_back(group);
  }
  std::sort(selected.begin(), selected.end(), [](const nt::Group& a, const nt::Group& b) { return a.name < b.name; });
  if (list) {
    for (const nt::Group& group : selected) std::printf("%s\n", group.name.c_str());
    return 0;
  }
  if (selected.empty()) {
    // A filter that matches nothing must not pass as "0 failed".
    std::printf("no group matches the filter (--list shows the names)\n0 passed, 1 failed\n");
    return 1;
  }

  std::printf("cpu: %d threads\n", weightnorm::cpu::num_threads());
#ifdef WEIGHTNORM_WITH_CUDA
  const weightnorm::cuda::DeviceStatus& status = weightnorm::cuda::device_status();
  if (status.usable) std::printf("cuda: %s (sm_%d%d)\n", status.name.c_str(), status.compute_major, status.compute_minor);
  else std::printf("cuda: compiled, but no GPU is usable (%s): the cuda groups are skipped\n", status.reason.c_str());
#else
  std::printf("cuda: not in this build (CPU-only): the cuda groups are skipped\n");
#endif
  int skipped = 0;
  for (const nt::Group& group : selected) {
    if (nt::ends_with(group.name, "/cuda") && !nt::cuda_usable()) {
      std::printf("group %-28s skipped: no usable GPU\n", group.name.c_str());
      ++skipped;
      continue;
    }
    const int checks_before = nt::g_checks, failures_before = nt::g_failures;
    const auto start = std::chrono::steady_clock::now();
    try {
      group.run();
    } catch (const std::exception& error) {
      // A throwing kernel is one failed check, not the end of the run: the other groups still report.
      nt::expect(false, group.name + " threw: " + error.what());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const int checks = nt::g_checks - checks_before, failures = nt::g_failures - failures_before;
    std::printf("group %-28s %5d checks, %d failed (%.1f s)\n", group.name.c_str(), checks, failures, seconds);
    // A group that checks nothing would pass silently.
    if (checks == 0) nt::expect(false, group.name + ": ran no check");
  }
#ifdef WEIGHTNORM_WITH_CUDA
  // Hand the caching allocator's blocks back, so compute-sanitizer's leak check sees no memory still held.
  if (nt::cuda_usable()) weightnorm::cuda::release_cached();
#endif
  if (skipped > 0) std::printf("%d group(s) skipped (no usable GPU)\n", skipped);
  std::printf("%d passed, %d failed\n", nt::g_checks - nt::g_failures, nt::g_failures);
  return nt::g_failures == 0 ? 0 : 1;
}
