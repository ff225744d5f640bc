// The CPU's thread count and its automatic choice (see threads.h).
#include "threads.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <string>

#ifdef __linux__
#include <fcntl.h>
#include <sched.h>
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

int automatic_threads() {
  const int64_t now = coarse_now_ns();
  int64_t next = g_next_sample_ns.load(std::memory_order_relaxed);
  if (now >= next && g_next_sample_ns.compare_exchange_strong(next, now + int64_t{kContentionSamplePeriodMs} * 1000000, std::memory_order_relaxed))
    measure_contention(now);
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
    choice.other_busy_cores = g_other_busy_cores.load(std::memory_order_relaxed);
  }
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

}  // namespace weightnorm::cpu
