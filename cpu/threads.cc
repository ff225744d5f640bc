// The CPU's thread count (see threads.h).
#include "threads.h"

#include <omp.h>

namespace weightnorm::cpu {
namespace {

int g_requested_threads = 0;

}  // namespace

void set_num_threads(int threads) { g_requested_threads = threads > 0 ? threads : 0; }

int num_threads() { return g_requested_threads > 0 ? g_requested_threads : omp_get_num_procs(); }

}  // namespace weightnorm::cpu
