// The CPU's thread count, shared by every CPU kernel (OpenMP), and how it is chosen when the user does not choose.
#pragma once
#include <omp.h>

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace weightnorm::cpu {

// Threads used by every CPU kernel: a count set here (or by OMP_NUM_THREADS when the library loads) is used as
// given; 0 restores the automatic choice (below).
void set_num_threads(int threads);
int num_threads();

// Who chose the count in force, for backend().cpu.
enum class ThreadSource { kSet, kEnvironment, kAutomatic };

struct ThreadChoice {
  int threads = 1;
  ThreadSource source = ThreadSource::kAutomatic;
  // The cores this process may run on (its affinity mask): the automatic choice's ceiling.
  int cores = 1;
  // Automatic choice only: how many cores' worth of CPU time other processes used on those cores lately (a moving
  // average), or -1 before the first measurement (and where /proc/stat cannot be read).
  double other_busy_cores = -1;
};
ThreadChoice thread_choice();

// The automatic choice. Every CPU kernel gives the same bits for any thread count, so the count may follow the
// machine: a parallel region waits at its barrier for its slowest thread, and when another process holds one of the
// cores, the thread the scheduler parks behind it stalls the whole region for a time slice (milliseconds, against
// regions of tens of microseconds). On a 2-core VM with two busy processes beside it, a small MLP's training step
// took 2.4x longer on 2 threads than on 1. So about every kContentionSamplePeriodMs, the first kernel that asks for
// its thread count measures how much CPU time other processes took on this process's cores since the last
// measurement (/proc/stat's busy ticks on those cores minus this process's own CPU time), and the count becomes the
// cores that are left, never fewer than one.
constexpr int kContentionSamplePeriodMs = 250;

// The pure parts, for the native tests:
// Sums the busy ticks (user, nice, system, irq, softirq and steal; guest time is already inside user) of the
// "cpuN" lines of /proc/stat text whose N is in `cpus`. False when a wanted CPU's line is missing or malformed.
bool busy_ticks_of(std::string_view proc_stat, const std::vector<int>& cpus, int64_t* busy);
// The next automatic count on `cores` cores, from the current count and the others' load in cores. A core is given
// up once others use more than kGiveUpCoreLoad of one (0.35 busy cores out of 2 leave one thread), another once they
// use more than 1 + kGiveUpCoreLoad, and so on. The count rises only when the same rule with the smaller margin
// kReclaimCoreLoad allows it, so a load hovering near a threshold does not flip the count back and forth.
constexpr double kGiveUpCoreLoad = 0.3;
constexpr double kReclaimCoreLoad = 0.15;
int automatic_thread_count(int cores, double other_busy_cores, int current);

// Runs region() on a team of `threads` OpenMP threads when parallel (and threads > 1), else on the calling thread
// alone, without entering the OpenMP runtime when that is safe. The `omp for` loops inside the region are then
// orphaned worksharing constructs: with no enclosing team, the calling thread runs all their iterations, in the order
// a team of one would. Why not `#pragma omp parallel if (parallel)`: with the condition false, libgomp still creates
// a team of one for the region and wakes its barrier with a futex system call at the end, a few microseconds each on
// a VM, and a training step of small layers runs dozens of regions too small to share.
// Orphaned constructs are only safe at the outermost level: inside a parallel region they would bind to that
// region's team (which is not running them), and inside another orphaned loop they would replace its work-sharing
// state. There a serial region still gets its own team of one, as before.
inline thread_local int t_orphaned_region_depth = 0;

template <class Region>
void parallel_region(bool parallel, int threads, Region&& region) {
  if (parallel && threads > 1) {
#pragma omp parallel num_threads(threads)
    region();
    return;
  }
  if (t_orphaned_region_depth > 0 || omp_in_parallel()) {
#pragma omp parallel num_threads(1)
    region();
    return;
  }
  struct Depth {
    Depth() { ++t_orphaned_region_depth; }
    ~Depth() { --t_orphaned_region_depth; }
  } depth;
  region();
}

// Regions that are often called inside another one (conv's per-image loops call im2col, col2im and gemm once per
// image) share their loops through the helpers below instead of `#pragma omp for`: nested, such a region runs its
// body on the calling thread with no team at all, where parallel_region makes a team of one for it (1.3 us at top
// level, 2.3 us nested, and a futex call each: 500-1000 of them per training step of the small MNIST CNN). The
// helpers then run every iteration themselves; in a team they are the worksharing loops they replace, with the same
// schedule and the same implicit barrier at the end. team_size() and team_index() are omp_get_num_threads() and
// omp_get_thread_num() of the team, or 1 and 0 without one.
inline thread_local int t_teamless_depth = 0;

inline int team_size() { return t_teamless_depth > 0 ? 1 : omp_get_num_threads(); }
inline int team_index() { return t_teamless_depth > 0 ? 0 : omp_get_thread_num(); }

// for (i = begin; i < end; ++i) body(i), shared by the team as `#pragma omp for schedule(static)`.
template <class Body>
void team_for_static(int64_t begin, int64_t end, Body&& body) {
  if (t_teamless_depth > 0) {
    for (int64_t i = begin; i < end; ++i) body(i);
    return;
  }
#pragma omp for schedule(static)
  for (int64_t i = begin; i < end; ++i) body(i);
}

// The same as `#pragma omp for schedule(dynamic, 1)`.
template <class Body>
void team_for_dynamic(int64_t begin, int64_t end, Body&& body) {
  if (t_teamless_depth > 0) {
    for (int64_t i = begin; i < end; ++i) body(i);
    return;
  }
#pragma omp for schedule(dynamic, 1)
  for (int64_t i = begin; i < end; ++i) body(i);
}

// parallel_region for a region whose loops are the team_for_* helpers (and that asks team_size() and team_index(),
// not OpenMP, for its place): at the outermost level the same as parallel_region; nested inside another region
// (a team, or parallel_region's team-less call), its body runs team-less on the calling thread.
template <class Region>
void nestable_region(bool parallel, int threads, Region&& region) {
  if (t_teamless_depth > 0 || t_orphaned_region_depth > 0 || omp_in_parallel()) {
    struct Teamless {
      Teamless() { ++t_teamless_depth; }
      ~Teamless() { --t_teamless_depth; }
    } teamless;
    region();
    return;
  }
  parallel_region(parallel, threads, std::forward<Region>(region));
}

}  // namespace weightnorm::cpu
