// The CPU's thread count (see threads.h).
#include "threads.h"

#include <omp.h>

namespace weightnorm::cpu {
namespace {

int g_requested_threads = 0;

}  // namespace

void set_num_threads(int threads) { g_requested_threads = threads > 0 ? threads : 0; }

// omp_get_num_procs() asks the kernel for the affinity mask on every call (sched_getaffinity, a system call), and
// every kernel asks for its thread count: without setNumThreads() that was ~9% of a tiny op's time. Read it once.
int default_threads() {
  static const int procs = omp_get_num_procs();
  return procs;
}

int num_threads() { return g_requested_threads > 0 ? g_requested_threads : default_threads(); }

}  // namespace weightnorm::cpu
