// The CPU's thread count, shared by every CPU kernel, how it is chosen when the user does not choose, and the
// thread pool the kernels' parallel regions run on.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
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
  // How many cores' worth of CPU time other processes used on those cores lately (a moving average), or -1 before
  // the first measurement (and where /proc/stat cannot be read). Sampled for the automatic choice and for the pool's
  // adaptive wait (run_team), whoever chose the count.
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

// ---------------------------------------------------------------------------------------------------------------
// Parallel regions on the library's own thread pool (cpu/threads.cc), not OpenMP's.
//
// Why not `#pragma omp parallel`: libgomp fixes how an idle thread waits when it loads (OMP_WAIT_POLICY,
// GOMP_SPINCOUNT). Sleeping at once (passive) is the only safe choice on a machine whose cores other processes use,
// but then every region wakes its threads through the kernel: on a 2-core VM the worker started ~70 us after the
// region opened, and a small MLP's training step (a dozen regions) took longer on two threads than on one.
// Spinning (libgomp's default) made that step ~25% faster on an idle machine and up to 1.5x slower beside a busy
// process. The pool decides per region instead: its threads spin for a short while between regions only while the
// contention sampler (the automatic choice's, above) has measured the cores free and the team fits on them, and
// otherwise sleep at once, as passive OpenMP does. WEIGHTNORM_OMP_WAIT_POLICY (or OMP_WAIT_POLICY) = passive or
// active fixes that choice (read when the pool starts).
//
// A region's body runs on `threads` threads, the calling one being index 0. Its loops share their iterations
// through team_static and team_dynamic (below), which split them as `#pragma omp for schedule(static)` and
// `schedule(dynamic, 1)` do and end with the same implicit barrier. Every kernel sums in an order that does not
// depend on the split, so the thread count never changes a result.
//
// A region opened inside another one (a team's thread, a team-less call below, or an OpenMP team of the caller's
// own) runs its body on the calling thread alone, without a team: its loops run every iteration themselves
// (team_size() 1). Conv's per-image loops call im2col, col2im and the GEMM this way, hundreds of times per step.
// So does a second thread that opens a region while the pool is busy with another one's (JS worker threads).
// Region bodies must not throw (as with OpenMP, an exception escaping one ends the process).

// The calling thread's place in the team running it; null outside a team (and inside a team-less call).
struct TeamMember;
inline thread_local TeamMember* t_team_member = nullptr;
// How many regions enclose the calling thread (teams and team-less calls alike).
inline thread_local int t_region_depth = 0;

int team_size();
int team_index();
// Waits until every thread of the team has called it (nothing outside a team).
void team_barrier();
// team_dynamic's next iteration from the team's shared counter, and the end of the loop (its barrier).
int64_t team_dynamic_next(int64_t begin);
void team_dynamic_finish();

// Runs invoke(context) on a team of `threads` threads from the pool (the caller being index 0), or on the caller
// alone when the pool is busy with another thread's region.
void run_team(int threads, void (*invoke)(void*), void* context);

// Runs region() on `threads` threads when parallel and threads > 1 at the outermost level, else on the calling
// thread alone (team-less).
template <class Region>
void parallel_region(bool parallel, int threads, Region&& region) {
  if (parallel && threads > 1 && t_region_depth == 0 && !omp_in_parallel()) {
    using Body = std::remove_reference_t<Region>;
    run_team(threads, [](void* body) { (*static_cast<Body*>(body))(); }, static_cast<void*>(&region));
    return;
  }
  struct Teamless {
    TeamMember* saved = t_team_member;
    Teamless() {
      t_team_member = nullptr;
      ++t_region_depth;
    }
    ~Teamless() {
      --t_region_depth;
      t_team_member = saved;
    }
  } teamless;
  region();
}

// for (const int64_t i : team_static(begin, end)): the team's threads each take one contiguous share of
// [begin, end), as `#pragma omp for schedule(static)` does (the first n % threads threads one more), and wait for
// one another when the loop ends (the range's destructor). Outside a team, every iteration.
class TeamStatic {
 public:
  class Iterator {
   public:
    explicit Iterator(int64_t i) : i_(i) {}
    int64_t operator*() const { return i_; }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator!=(const Iterator& other) const { return i_ != other.i_; }

   private:
    int64_t i_;
  };
  TeamStatic(int64_t begin, int64_t end) {
    const int size = team_size();
    if (size <= 1 || end <= begin) {
      begin_ = begin;
      end_ = std::max(begin, end);
      in_team_ = size > 1;
      return;
    }
    const int64_t count = end - begin, index = team_index();
    const int64_t share = count / size, extra = count % size;
    begin_ = begin + index * share + std::min<int64_t>(index, extra);
    end_ = begin_ + share + (index < extra ? 1 : 0);
    in_team_ = true;
  }
  TeamStatic(const TeamStatic&) = delete;
  TeamStatic& operator=(const TeamStatic&) = delete;
  ~TeamStatic() {
    if (in_team_) team_barrier();
  }
  Iterator begin() const { return Iterator(begin_); }
  Iterator end() const { return Iterator(end_); }

 private:
  int64_t begin_ = 0, end_ = 0;
  bool in_team_ = false;
};
inline TeamStatic team_static(int64_t begin, int64_t end) { return TeamStatic(begin, end); }

// for (const int64_t i : team_dynamic(begin, end)): the team's threads take the iterations one at a time from a
// shared counter, as `#pragma omp for schedule(dynamic, 1)` does, and wait for one another when the loop ends.
// Outside a team, every iteration in order.
class TeamDynamic {
 public:
  class Iterator {
   public:
    Iterator(const TeamDynamic* loop, int64_t i) : loop_(loop), i_(i) {}
    int64_t operator*() const { return i_; }
    Iterator& operator++() {
      i_ = loop_->next(i_);
      return *this;
    }
    bool operator!=(const Iterator&) const { return i_ < loop_->end_; }

   private:
    const TeamDynamic* loop_;
    int64_t i_;
  };
  TeamDynamic(int64_t begin, int64_t end) : begin_(begin), end_(end), in_team_(team_size() > 1) {}
  TeamDynamic(const TeamDynamic&) = delete;
  TeamDynamic& operator=(const TeamDynamic&) = delete;
  ~TeamDynamic() {
    if (in_team_) team_dynamic_finish();
  }
  Iterator begin() const { return Iterator(this, in_team_ ? team_dynamic_next(begin_) : begin_); }
  Iterator end() const { return Iterator(this, end_); }

 private:
  int64_t next(int64_t i) const { return in_team_ ? team_dynamic_next(begin_) : i + 1; }
  int64_t begin_, end_;
  bool in_team_;
};
inline TeamDynamic team_dynamic(int64_t begin, int64_t end) { return TeamDynamic(begin, end); }

// The loops above as calls: for (i in [begin, end)) body(i), shared by the team.
template <class Body>
void team_for_static(int64_t begin, int64_t end, Body&& body) {
  for (const int64_t i : team_static(begin, end)) body(i);
}
template <class Body>
void team_for_dynamic(int64_t begin, int64_t end, Body&& body) {
  for (const int64_t i : team_dynamic(begin, end)) body(i);
}

// How the pool's threads wait between regions, as backend().cpu reports it: "adaptive" (spin while the cores are
// free, sleep at once otherwise), "passive" or "active" (WEIGHTNORM_OMP_WAIT_POLICY).
const char* pool_wait_policy();

}  // namespace weightnorm::cpu
