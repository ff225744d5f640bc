// The CPU's thread count, shared by every CPU kernel (OpenMP).
#pragma once
#include <omp.h>

#include <cstdint>

namespace weightnorm::cpu {

// Threads used by every CPU kernel. 0 restores the default (all cores).
void set_num_threads(int threads);
int num_threads();

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

}  // namespace weightnorm::cpu
