// The CPU thread count's cases (cpu/threads.h) in the native test runner (backend_ops_test.cc), group threads/cpu:
//  - busy_ticks_of() against random /proc/stat texts: the sum of the busy fields of exactly the wanted CPUs, the
//    aggregate line and other lines ignored, a missing or malformed CPU line refused;
//  - automatic_thread_count() against an independent statement of the rule (the most threads t such that the
//    others' load fits in the cores left over plus the margin), its bounds, monotonicity and hysteresis;
//  - a count that is set wins, 0 gives the choice back;
//  - live: with busy processes on every core, the automatic choice drops to one thread within a few periods;
//  - parallel_region: at the outermost level its team_for_* loops share the iterations among the team, each run
//    once; nested inside a team or inside parallel_region's team-less call, each caller runs all of them itself
//    (team_size() 1), with no team of its own (omp_get_level() unchanged).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../../cpu/threads.h"
#include "harness.h"

namespace {

using weightnorm::native_test::format;
namespace cpu = weightnorm::cpu;

void check(bool ok, const std::string& what) { weightnorm::native_test::expect(ok, what); }

void test_busy_ticks_parser() {
  std::mt19937_64 random(7);
  bool sums_ok = true, refusals_ok = true;
  std::string first_failure;
  for (int trial = 0; trial < 300; ++trial) {
    const int count = 1 + int(random() % 70);
    std::vector<std::vector<int64_t>> fields(count, std::vector<int64_t>(10));
    std::string text = "cpu  1 2 3 4 5 6 7 8 0 0\n";  // the aggregate line: never counted
    for (int cpu = 0; cpu < count; ++cpu) {
      text += format("cpu%d", cpu);
      for (int64_t& field : fields[cpu]) {
        field = int64_t(random() % 100000000000ull);
        text += " " + std::to_string(field);
      }
      text += "\n";
    }
    text += "intr 12345 0 0 1\nctxt 99\nbtime 1700000000\nprocesses 10\nprocs_running 3\nsoftirq 1 2 3\n";
    std::vector<int> wanted;
    int64_t expected = 0;
    for (int cpu = 0; cpu < count; ++cpu) {
      if (random() % 3 == 0) continue;
      wanted.push_back(cpu);
      const std::vector<int64_t>& f = fields[cpu];
      expected += f[0] + f[1] + f[2] + f[5] + f[6] + f[7];  // user nice system irq softirq steal
    }
    int64_t busy = -1;
    const bool parsed = cpu::busy_ticks_of(text, wanted, &busy);
    if (!parsed || busy != expected) {
      if (sums_ok) first_failure = format("trial %d: %d CPUs, parsed %d, %lld vs %lld", trial, count, parsed, (long long)busy, (long long)expected);
      sums_ok = false;
    }
    // A wanted CPU that has no line, and a line cut short, are refused.
    std::vector<int> with_missing = wanted;
    with_missing.push_back(count + int(random() % 5));
    refusals_ok &= !cpu::busy_ticks_of(text, with_missing, &busy);
    const std::string cut = format("cpu  1 2 3 4\ncpu0 1 2 3\n");
    refusals_ok &= !cpu::busy_ticks_of(cut, {0}, &busy);
  }
  check(sums_ok, "busy_ticks_of sums user+nice+system+irq+softirq+steal of exactly the wanted CPUs (300 random texts) " + first_failure);
  check(refusals_ok, "busy_ticks_of refuses a wanted CPU with no line and a line with too few fields");
}

// The rule stated independently: the most threads t in [1, cores] for which the others' load fits in the cores
// the threads leave free plus the margin.
int most_threads_that_fit(int cores, double others, double margin) {
  for (int t = cores; t > 1; --t)
    if (others <= double(cores - t) + margin) return t;
  return 1;
}

void test_automatic_rule() {
  std::mt19937_64 random(11);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  bool rule_ok = true, monotone_ok = true, bounds_ok = true;
  std::string first_failure;
  for (int trial = 0; trial < 200000; ++trial) {
    const int cores = 1 + int(random() % 64);
    const double others = unit(random) * (cores + 1);
    const int current = 1 + int(random() % cores);
    const int next = cpu::automatic_thread_count(cores, others, current);
    const int give_up = most_threads_that_fit(cores, others, cpu::kGiveUpCoreLoad);
    const int reclaim = most_threads_that_fit(cores, others, cpu::kReclaimCoreLoad);
    const int expected = give_up < current ? give_up : (reclaim > current ? reclaim : current);
    if (next != expected) {
      if (rule_ok) first_failure = format("cores %d others %.4f current %d: %d vs %d", cores, others, current, next, expected);
      rule_ok = false;
    }
    bounds_ok &= next >= 1 && next <= cores;
    monotone_ok &= cpu::automatic_thread_count(cores, others + unit(random), current) <= next;
  }
  check(rule_ok, "automatic_thread_count gives up a core above kGiveUpCoreLoad of others' load and takes it back below kReclaimCoreLoad (200,000 random cases) " + first_failure);
  check(bounds_ok, "automatic_thread_count stays within [1, cores]");
  check(monotone_ok, "more load never gives more threads");
  check(cpu::automatic_thread_count(2, 0.35, 2) == 1 && cpu::automatic_thread_count(2, 0.2, 2) == 2 && cpu::automatic_thread_count(2, 0.2, 1) == 1 &&
            cpu::automatic_thread_count(2, 0.1, 1) == 2 && cpu::automatic_thread_count(2, 2.0, 2) == 1 && cpu::automatic_thread_count(4, 1.2, 4) == 3 &&
            cpu::automatic_thread_count(4, 1.4, 4) == 2,
        "2 cores: one thread above 0.3 busy cores, two again only below 0.15; 4 cores at 1.2 busy: 3, at 1.4: 2");
  check(cpu::automatic_thread_count(8, -1, 3) == 8 && cpu::automatic_thread_count(8, NAN, 3) == 8, "no measurement yet: every core");
  check(cpu::automatic_thread_count(4, 0.0, 9) == 4 && cpu::automatic_thread_count(4, 0.0, 0) == 4, "a current count outside [1, cores] is clamped");
}

void test_set_and_automatic() {
  cpu::set_num_threads(3);
  const cpu::ThreadChoice set = cpu::thread_choice();
  // The others' load is sampled whoever chose the count (the pool's wait uses it): unmeasured (-1) or a load in cores.
  const bool load_ok = set.other_busy_cores == -1 || (set.other_busy_cores >= 0 && set.other_busy_cores <= set.cores);
  check(cpu::num_threads() == 3 && set.threads == 3 && set.source == cpu::ThreadSource::kSet && load_ok,
        format("set_num_threads(3): 3 threads, source 'set', others' load -1 or in [0, cores] (got %d, source %d, %.2f)",
               set.threads, int(set.source), set.other_busy_cores));
  cpu::set_num_threads(0);
  const cpu::ThreadChoice restored = cpu::thread_choice();
  const bool environment = std::getenv("OMP_NUM_THREADS") != nullptr && std::atoi(std::getenv("OMP_NUM_THREADS")) > 0;
  check(restored.source == (environment ? cpu::ThreadSource::kEnvironment : cpu::ThreadSource::kAutomatic) && restored.threads >= 1 &&
            restored.threads <= (environment ? 1024 : restored.cores),
        format("set_num_threads(0): back to %s (got %d threads of %d cores, source %d)", environment ? "OMP_NUM_THREADS" : "the automatic choice",
               restored.threads, restored.cores, int(restored.source)));
}

void test_drops_under_load() {
  cpu::set_num_threads(0);
  const cpu::ThreadChoice before = cpu::thread_choice();
  if (before.source != cpu::ThreadSource::kAutomatic || before.cores < 2) {
    std::printf("note: threads/cpu live load check not run: %s\n", before.cores < 2 ? "one core" : "OMP_NUM_THREADS is set");
    return;
  }
  // One busy process per core: others' load is then well above the one-core threshold whatever this process does.
  std::vector<pid_t> spinners;
  for (int i = 0; i < before.cores; ++i) {
    const pid_t pid = fork();
    if (pid == 0) {
      volatile uint64_t spin = 0;
      for (;;) spin = spin + 1;
    }
    if (pid > 0) spinners.push_back(pid);
  }
  int threads = before.threads;
  cpu::ThreadChoice during{};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    threads = cpu::num_threads();
    during = cpu::thread_choice();
    if (threads == 1 && during.other_busy_cores >= 0) break;
  }
  for (pid_t pid : spinners) kill(pid, SIGKILL);
  for (pid_t pid : spinners) waitpid(pid, nullptr, 0);
  check(spinners.size() == size_t(before.cores), format("started %d busy processes", before.cores));
  check(threads == 1 && during.other_busy_cores > cpu::kGiveUpCoreLoad,
        format("%d busy processes on %d cores: the automatic choice dropped to 1 thread within 5 s (%d threads, others %.2f busy cores)",
               int(spinners.size()), before.cores, threads, during.other_busy_cores));
}

void test_nested_regions() {
  constexpr int64_t kCount = 1000;
  for (const bool dynamic : {false, true}) {
    const char* kind = dynamic ? "team_for_dynamic" : "team_for_static";
    // Outermost, 2 threads: every iteration once, shared.
    std::vector<int> runs(kCount, 0);
    std::vector<int> by_thread(2, 0);
    weightnorm::cpu::parallel_region(true, 2, [&] {
      auto body = [&](int64_t i) {
#pragma omp atomic
        runs[i] += 1;
#pragma omp atomic
        by_thread[weightnorm::cpu::team_index()] += 1;
      };
      if (dynamic) weightnorm::cpu::team_for_dynamic(0, kCount, body);
      else weightnorm::cpu::team_for_static(0, kCount, body);
    });
    bool once = true;
    for (int r : runs) once &= r == 1;
    check(once && by_thread[0] + by_thread[1] == kCount, std::string(kind) + ", outermost: every iteration runs once");

    // Nested inside a team of 2: each thread runs all the iterations of its own call, team-less.
    std::vector<int> nested_runs(2 * kCount, 0);
    std::vector<int> sizes(2, -1), levels(2, -1), outer_levels(2, -1);
#pragma omp parallel num_threads(2)
    {
      const int me = omp_get_thread_num();
      outer_levels[me] = omp_get_level();
      weightnorm::cpu::parallel_region(true, 2, [&] {
        sizes[me] = weightnorm::cpu::team_size();
        levels[me] = omp_get_level();
        auto body = [&](int64_t i) { nested_runs[me * kCount + i] += 1; };
        if (dynamic) weightnorm::cpu::team_for_dynamic(0, kCount, body);
        else weightnorm::cpu::team_for_static(0, kCount, body);
      });
    }
    const int team = omp_get_max_threads() >= 2 ? 2 : 1;  // the outer team may be smaller (a 1-thread limit)
    bool all = true;
    for (int t = 0; t < team; ++t)
      for (int64_t i = 0; i < kCount; ++i) all &= nested_runs[t * kCount + i] == 1;
    check(all && sizes[0] == 1 && levels[0] == outer_levels[0],
          std::string(kind) + ", nested in a team: each caller runs every iteration, team size 1, no new team");

    // Inside parallel_region's call without a team (one thread): the same.
    std::vector<int> serial_runs(kCount, 0);
    int serial_level = -1;
    weightnorm::cpu::parallel_region(false, 1, [&] {
      weightnorm::cpu::parallel_region(true, 2, [&] {
        serial_level = omp_get_level();
        auto body = [&](int64_t i) { serial_runs[i] += 1; };
        if (dynamic) weightnorm::cpu::team_for_dynamic(0, kCount, body);
        else weightnorm::cpu::team_for_static(0, kCount, body);
      });
    });
    bool serial_once = true;
    for (int r : serial_runs) serial_once &= r == 1;
    check(serial_once && serial_level == 0, std::string(kind) + ", inside a team-less region: every iteration once, no team");
  }
}

// The pool under stress: many regions in a row, each with static and dynamic loops and barriers between them
// (every iteration exactly once, every loop's writes seen by the next), and two threads opening regions at once
// (one gets the pool, the other runs alone; both complete every iteration).
void test_pool_regions() {
  constexpr int64_t kCount = 257;
  std::vector<int64_t> a(kCount), b(kCount);
  bool all = true;
  for (int round = 0; round < 2000 && all; ++round) {
    const int threads = 2 + round % 3;
    int64_t checked = 0;
    weightnorm::cpu::parallel_region(true, threads, [&] {
      for (const int64_t i : weightnorm::cpu::team_static(0, kCount)) a[i] = i + round;
      for (const int64_t i : weightnorm::cpu::team_dynamic(0, kCount)) b[i] = a[kCount - 1 - i] * 2;  // reads other threads' writes
      for (const int64_t i : weightnorm::cpu::team_dynamic(0, kCount)) a[i] = b[i] + 1;
      if (weightnorm::cpu::team_index() == 0) checked = weightnorm::cpu::team_size();
    });
    for (int64_t i = 0; i < kCount; ++i) all &= a[i] == 2 * (kCount - 1 - i + round) + 1;
    all &= checked == threads;
  }
  check(all, "2000 regions of 2-4 threads: static and dynamic loops run every iteration once, in order across barriers");

  std::vector<int64_t> first(kCount * 64, 0), second(kCount * 64, 0);
  auto fill = [](std::vector<int64_t>& out) {
    for (int repeat = 0; repeat < 200; ++repeat)
      weightnorm::cpu::parallel_region(true, 2, [&] {
        for (const int64_t i : weightnorm::cpu::team_dynamic(0, int64_t(out.size()))) out[i] += 1;
      });
  };
  std::thread other([&] { fill(second); });
  fill(first);
  other.join();
  bool both = true;
  for (size_t i = 0; i < first.size(); ++i) both &= first[i] == 200 && second[i] == 200;
  check(both, "two threads opening regions at once: each of their loops runs every iteration once");
}

void check_threads() {
  test_busy_ticks_parser();
  test_automatic_rule();
  test_set_and_automatic();
  test_drops_under_load();
  test_nested_regions();
  test_pool_regions();
}

WEIGHTNORM_NATIVE_TEST_GROUP("threads/cpu", check_threads);

}  // namespace
