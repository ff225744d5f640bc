// The CPU's thread count and its automatic choice (see threads.h).
#include "threads.h"

#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <cctype>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#ifdef __linux__
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace weightnorm::cpu {
namespace {

constexpr int kMaxThreads = 1024;

// OMP_NUM_THREADS as OpenMP reads it for the outermost level: the first entry of its comma-separated list. A value
// that is not a positive integer is ignored, as libgomp ignores it (with a warning of its own).
int threads_from_environment() {
  const char* text = std::getenv("OMP_NUM_THREADS");
  if (text == nullptr) return 0;
  while (*text == ' ' || *text == '\t') ++text;
  int threads = 0;
  const char* end = text + std::char_traits<char>::length(text);
  const auto [rest, error] = std::from_chars(text, end, threads);
  if (error != std::errc() || rest == text || threads < 1 || threads > kMaxThreads) return 0;
  if (rest != end && *rest != ',' && *rest != ' ' && *rest != '\t') return 0;
  return threads;
}

std::atomic<int> g_set_threads{0};

int environment_threads() {
  static const int threads = threads_from_environment();
  return threads;
}

// omp_get_num_procs() asks the kernel for the affinity mask on every call (sched_getaffinity, a system call), and
// every kernel asks for its thread count: without setNumThreads() that was ~9% of a tiny op's time. Read it once.
int default_threads() {
  static const int procs = std::max(1, omp_get_num_procs());
  return procs;
}

// The automatic choice's state. num_threads() only reads the atomics; the kernel thread that moves
// g_next_sample_ns on (one compare-exchange wins per period) takes the sampler's lock and measures.
std::atomic<int> g_automatic_threads{0};  // 0: not measured yet, use every core
std::atomic<int64_t> g_next_sample_ns{0};
std::atomic<double> g_other_busy_cores{-1};

int64_t coarse_now_ns() {
  // CLOCK_MONOTONIC_COARSE is read from the vDSO without a system call (a few ns); its ~4 ms resolution is plenty
  // for a 250 ms period.
  timespec now{};
#ifdef CLOCK_MONOTONIC_COARSE
  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
#else
  clock_gettime(CLOCK_MONOTONIC, &now);
#endif
  return int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
}

#ifdef __linux__
struct ContentionSampler {
  std::mutex mutex;
  bool started = false;
  bool usable = true;
  std::vector<int> cpus;
  double ticks_per_second = 100;
  int64_t busy_ticks = 0;
  double own_cpu_seconds = 0;
  int64_t wall_ns = 0;
  double other_busy_cores = -1;
};

ContentionSampler& sampler() {
  static ContentionSampler state;
  return state;
}

bool read_proc_stat(std::string* text) {
  const int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  text->clear();
  char buffer[8192];
  for (;;) {
    const ssize_t got = read(fd, buffer, sizeof buffer);
    if (got < 0) {
      close(fd);
      return false;
    }
    if (got == 0) break;
    text->append(buffer, static_cast<size_t>(got));
  }
  close(fd);
  return true;
}

double own_cpu_seconds() {
  timespec used{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &used);
  return double(used.tv_sec) + double(used.tv_nsec) * 1e-9;
}

void measure_contention(int64_t now_ns) {
  ContentionSampler& state = sampler();
  std::unique_lock<std::mutex> lock(state.mutex, std::try_to_lock);
  if (!lock.owns_lock() || !state.usable) return;
  std::string text;
  int64_t busy = 0;
  if (!state.started) {
    cpu_set_t mask;
    CPU_ZERO(&mask);
    if (sched_getaffinity(0, sizeof mask, &mask) == 0) {
      for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
        if (CPU_ISSET(cpu, &mask)) state.cpus.push_back(cpu);
    }
    const long ticks = sysconf(_SC_CLK_TCK);
    if (ticks > 0) state.ticks_per_second = double(ticks);
    state.usable = !state.cpus.empty() && read_proc_stat(&text) && busy_ticks_of(text, state.cpus, &busy);
    state.started = true;
    state.busy_ticks = busy;
    state.own_cpu_seconds = own_cpu_seconds();
    state.wall_ns = now_ns;
    return;
  }
  if (!read_proc_stat(&text) || !busy_ticks_of(text, state.cpus, &busy)) {
    state.usable = false;  // keep the last choice; every core again would be the worse guess on a busy machine
    return;
  }
  const double own = own_cpu_seconds();
  const double seconds = double(now_ns - state.wall_ns) * 1e-9;
  if (seconds <= 0) return;
  const double busy_seconds = double(busy - state.busy_ticks) / state.ticks_per_second;
  const double cores = double(state.cpus.size());
  const double others = std::clamp((busy_seconds - (own - state.own_cpu_seconds)) / seconds, 0.0, cores);
  state.busy_ticks = busy;
  state.own_cpu_seconds = own;
  state.wall_ns = now_ns;
  // A moving average over about two periods: /proc/stat counts in ticks (10 ms), so one 250 ms window on two cores
  // is only good to a few hundredths of a core either way. After a long pause (no kernel asked) the window itself
  // is the better estimate.
  const double weight = seconds > 2.0 ? 1.0 : 0.5;
  state.other_busy_cores = state.other_busy_cores < 0 ? others : state.other_busy_cores + weight * (others - state.other_busy_cores);
  g_other_busy_cores.store(state.other_busy_cores, std::memory_order_relaxed);
  const int current = g_automatic_threads.load(std::memory_order_relaxed);
  g_automatic_threads.store(automatic_thread_count(default_threads(), state.other_busy_cores, current > 0 ? current : default_threads()),
                            std::memory_order_relaxed);
}
#else
void measure_contention(int64_t) {}
#endif

// Measures the others' load when a period has passed since the last measurement (one caller wins per period).
void sample_contention_when_due() {
  const int64_t now = coarse_now_ns();
  int64_t next = g_next_sample_ns.load(std::memory_order_relaxed);
  if (now >= next && g_next_sample_ns.compare_exchange_strong(next, now + int64_t{kContentionSamplePeriodMs} * 1000000, std::memory_order_relaxed))
    measure_contention(now);
}

int automatic_threads() {
  sample_contention_when_due();
  const int threads = g_automatic_threads.load(std::memory_order_relaxed);
  return threads > 0 ? threads : default_threads();
}

}  // namespace

void set_num_threads(int threads) { g_set_threads.store(std::clamp(threads, 0, kMaxThreads), std::memory_order_relaxed); }

int num_threads() {
  const int set = g_set_threads.load(std::memory_order_relaxed);
  if (set > 0) return set;
  const int environment = environment_threads();
  if (environment > 0) return environment;
  return automatic_threads();
}

ThreadChoice thread_choice() {
  ThreadChoice choice;
  choice.cores = default_threads();
  choice.threads = num_threads();
  if (g_set_threads.load(std::memory_order_relaxed) > 0) {
    choice.source = ThreadSource::kSet;
  } else if (environment_threads() > 0) {
    choice.source = ThreadSource::kEnvironment;
  } else {
    choice.source = ThreadSource::kAutomatic;
  }
  choice.other_busy_cores = g_other_busy_cores.load(std::memory_order_relaxed);
  return choice;
}

bool busy_ticks_of(std::string_view proc_stat, const std::vector<int>& cpus, int64_t* busy) {
  int64_t total = 0;
  size_t found = 0;
  size_t line_start = 0;
  while (line_start < proc_stat.size()) {
    size_t line_end = proc_stat.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = proc_stat.size();
    const std::string_view line = proc_stat.substr(line_start, line_end - line_start);
    line_start = line_end + 1;
    // "cpuN user nice system idle iowait irq softirq steal guest guest_nice"; the aggregate "cpu " line has no N.
    if (line.size() < 4 || line.compare(0, 3, "cpu") != 0 || line[3] < '0' || line[3] > '9') continue;
    const char* cursor = line.data() + 3;
    const char* end = line.data() + line.size();
    int cpu = -1;
    auto parsed = std::from_chars(cursor, end, cpu);
    if (parsed.ec != std::errc()) return false;
    cursor = parsed.ptr;
    if (std::find(cpus.begin(), cpus.end(), cpu) == cpus.end()) continue;
    int64_t fields[8] = {};
    for (int64_t& field : fields) {
      while (cursor < end && *cursor == ' ') ++cursor;
      parsed = std::from_chars(cursor, end, field);
      if (parsed.ec != std::errc() || field < 0) return false;
      cursor = parsed.ptr;
    }
    // fields: user nice system idle iowait irq softirq steal. Idle and iowait are time the CPU was free to run us.
    total += fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7];
    ++found;
  }
  if (found != cpus.size()) return false;
  *busy = total;
  return true;
}

int automatic_thread_count(int cores, double other_busy_cores, int current) {
  cores = std::max(cores, 1);
  if (!(other_busy_cores >= 0)) return cores;
  const auto keep = [&](double margin) {
    const double given_up = std::ceil(std::max(0.0, other_busy_cores - margin));
    return int(std::clamp(double(cores) - given_up, 1.0, double(cores)));
  };
  current = std::clamp(current, 1, cores);
  const int after_giving_up = keep(kGiveUpCoreLoad);
  if (after_giving_up < current) return after_giving_up;
  const int after_reclaiming = keep(kReclaimCoreLoad);
  return after_reclaiming > current ? after_reclaiming : current;
}

// ---------------------------------------------------------------------------------------------------------------
// The thread pool (see threads.h).

namespace {

// Waiting on a 32-bit word: the kernel's futex on Linux (what libgomp and std::atomic::wait use), C++20's atomic
// wait elsewhere.
void wait_on(std::atomic<uint32_t>& word, uint32_t value) {
#ifdef __linux__
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, value, nullptr, nullptr, 0);
#else
  word.wait(value);
#endif
}

void wake_all(std::atomic<uint32_t>& word) {
#ifdef __linux__
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
#else
  word.notify_all();
#endif
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// How long a thread spins (for the next region, at a barrier, for the team to finish) before it sleeps, when
// spinning is allowed. Regions of a training step follow one another within tens of microseconds (the JS work
// between two kernels); a few hundred microseconds covers a step's gaps without keeping a core busy long after the
// work stops.
constexpr auto kSpin = std::chrono::microseconds(200);

enum class WaitPolicy { kAdaptive, kPassive, kActive };

// WEIGHTNORM_OMP_WAIT_POLICY (ts/openmp-env.ts writes the choice there before the addon loads, and rejects values
// other than adaptive, default, passive and active), else OMP_WAIT_POLICY's passive or active, else adaptive.
WaitPolicy wait_policy_from_environment() {
  const char* text = std::getenv("WEIGHTNORM_OMP_WAIT_POLICY");
  if (text == nullptr) text = std::getenv("OMP_WAIT_POLICY");
  if (text == nullptr) return WaitPolicy::kAdaptive;
  std::string value(text);
  for (char& c : value) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (value == "passive") return WaitPolicy::kPassive;
  if (value == "active") return WaitPolicy::kActive;
  return WaitPolicy::kAdaptive;
}

WaitPolicy wait_policy() {
  static const WaitPolicy policy = wait_policy_from_environment();
  return policy;
}

// Waits until word != value: spins first when `spin`, then sleeps, counting itself in `sleepers` so that the
// thread that changes the word knows to wake it (the store and the count are sequentially consistent on both
// sides, so either the waker sees the sleeper or the sleeper's futex sees the new value).
void wait_while_equal(std::atomic<uint32_t>& word, uint32_t value, bool spin, std::atomic<int>& sleepers) {
  if (spin) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 1;; ++i) {
      if (word.load(std::memory_order_acquire) != value) return;
      cpu_relax();
      if (i % 64 == 0 && std::chrono::steady_clock::now() >= until) break;
    }
  }
  sleepers.fetch_add(1, std::memory_order_seq_cst);
  while (word.load(std::memory_order_seq_cst) == value) wait_on(word, value);
  sleepers.fetch_sub(1, std::memory_order_relaxed);
}

// Publishes a new value of `word` and wakes whoever sleeps on it.
void publish(std::atomic<uint32_t>& word, uint32_t value, std::atomic<int>& sleepers) {
  word.store(value, std::memory_order_seq_cst);
  if (sleepers.load(std::memory_order_seq_cst) > 0) wake_all(word);
}

struct Pool {
  std::mutex busy;  // held by the thread whose region the pool runs
  std::atomic<int> worker_count{0};  // threads started (detached: they live as long as the process)
  // The current region, written by its caller before `generation` moves on (release) and read after (acquire).
  void (*invoke)(void*) = nullptr;
  void* context = nullptr;
  int size = 1;
  std::atomic<bool> spin{false};
  // Region start: workers wait for it to change.
  std::atomic<uint32_t> generation{0};
  std::atomic<int> generation_sleepers{0};
  // Region end: every worker (in the team or not) checks out; the last moves `finished` on for the caller.
  std::atomic<int> checked_out{0};
  std::atomic<uint32_t> finished{0};
  std::atomic<int> finished_sleepers{0};
  // The team's barrier (team_static's and team_dynamic's ends).
  std::atomic<int> arrived{0};
  std::atomic<uint32_t> barrier_generation{0};
  std::atomic<int> barrier_sleepers{0};
  // team_dynamic's counters: two, used by alternate loops; the last thread into each barrier zeroes the next one's.
  std::atomic<int64_t> dynamic_counters[2];
};

}  // namespace

struct TeamMember {
  Pool* pool;
  int index;
  uint32_t dynamic_loops = 0;  // dynamic loops started by this thread in this region
};

namespace {

Pool& pool() {
  static Pool* const instance = new Pool();  // never destroyed: its threads outlive static destruction
  return *instance;
}

// noexcept: as with an OpenMP region, an exception escaping a region's body ends the process (std::terminate)
// rather than leave the other threads running a region whose caller has gone.
void run_member(Pool& p, int index) noexcept {
  TeamMember member{&p, index};
  t_team_member = &member;
  ++t_region_depth;
  p.invoke(p.context);
  --t_region_depth;
  t_team_member = nullptr;
}

// `seen`: the generation when the worker was started (its first region is the next one).
void worker_loop(Pool* p, int index, uint32_t seen) {
  // OpenBLAS's OpenMP build splits a call among as many OpenMP threads as the calling thread's default team size,
  // which for a thread OpenMP never saw is every core: one, as for the thread that loaded it (cpu/gemm.cc).
  omp_set_num_threads(1);
  for (;;) {
    wait_while_equal(p->generation, seen, p->spin.load(std::memory_order_relaxed), p->generation_sleepers);
    seen = p->generation.load(std::memory_order_acquire);
    if (index < p->size) run_member(*p, index);
    const uint32_t round = seen;
    if (p->checked_out.fetch_add(1, std::memory_order_acq_rel) + 1 == p->worker_count.load(std::memory_order_relaxed))
      publish(p->finished, round, p->finished_sleepers);
  }
}

}  // namespace

int team_size() { return t_team_member ? t_team_member->pool->size : 1; }
int team_index() { return t_team_member ? t_team_member->index : 0; }

void team_barrier() {
  TeamMember* member = t_team_member;
  if (!member) return;
  Pool& p = *member->pool;
  const uint32_t round = p.barrier_generation.load(std::memory_order_acquire);
  if (p.arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == p.size) {
    p.arrived.store(0, std::memory_order_relaxed);
    // The next dynamic loop's counter: the loop before this barrier (if dynamic) used the other one, and no thread
    // can start the next loop before this barrier opens.
    p.dynamic_counters[member->dynamic_loops % 2].store(0, std::memory_order_relaxed);
    publish(p.barrier_generation, round + 1, p.barrier_sleepers);
    return;
  }
  wait_while_equal(p.barrier_generation, round, p.spin.load(std::memory_order_relaxed), p.barrier_sleepers);
}

void team_dynamic_finish() {
  TeamMember* member = t_team_member;
  if (!member) return;
  ++member->dynamic_loops;
  team_barrier();
}

int64_t team_dynamic_next(int64_t begin) {
  TeamMember* member = t_team_member;
  return begin + member->pool->dynamic_counters[member->dynamic_loops % 2].fetch_add(1, std::memory_order_relaxed);
}

void run_team(int threads, void (*invoke)(void*), void* context) {
  Pool& p = pool();
  std::unique_lock<std::mutex> lock(p.busy, std::try_to_lock);
  if (!lock.owns_lock()) {  // another thread's region has the pool: this one runs alone
    struct Depth {
      Depth() { ++t_region_depth; }
      ~Depth() { --t_region_depth; }
    } depth;
    invoke(context);
    return;
  }
  threads = std::clamp(threads, 1, kMaxThreads);
  for (int started = p.worker_count.load(std::memory_order_relaxed); started < threads - 1; ++started) {
    std::thread(worker_loop, &p, started + 1, p.generation.load(std::memory_order_relaxed)).detach();
    p.worker_count.store(started + 1, std::memory_order_relaxed);
  }
  sample_contention_when_due();
  const double others = g_other_busy_cores.load(std::memory_order_relaxed);
  // Adaptive: spin only once the sampler has measured the cores free (never where /proc/stat cannot be read).
  const bool spin = wait_policy() == WaitPolicy::kActive ||
                    (wait_policy() == WaitPolicy::kAdaptive && threads <= default_threads() && others >= 0 &&
                     others < kGiveUpCoreLoad);
  p.invoke = invoke;
  p.context = context;
  p.size = threads;
  p.spin.store(spin, std::memory_order_relaxed);
  p.checked_out.store(0, std::memory_order_relaxed);
  p.arrived.store(0, std::memory_order_relaxed);
  p.dynamic_counters[0].store(0, std::memory_order_relaxed);
  p.dynamic_counters[1].store(0, std::memory_order_relaxed);
  const uint32_t round = p.generation.load(std::memory_order_relaxed) + 1;
  publish(p.generation, round, p.generation_sleepers);
  run_member(p, 0);
  wait_while_equal(p.finished, round - 1, spin, p.finished_sleepers);
}

const char* pool_wait_policy() {
  switch (wait_policy()) {
    case WaitPolicy::kPassive: return "passive";
    case WaitPolicy::kActive: return "active";
    case WaitPolicy::kAdaptive: break;
  }
  return "adaptive";
}

}  // namespace weightnorm::cpu
