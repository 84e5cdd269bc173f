#include "parallel.h"

#include <immintrin.h>
#include <omp.h>
#include <sched.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "error.h"

namespace tfm::core {

namespace {

std::atomic<int> g_threads{0};  // 0: not set yet, OpenMP's default then
thread_local bool t_in_region = false;

int64_t parse_nonnegative(const char* v, const char* name, long long min) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v, &end, 10);
  TFM_CHECK(*end == '\0' && errno == 0 && x >= min, name, "='", v, "' is not an integer >= ", min);
  return x;
}

template <class Parse>
int64_t from_env(const char* name, int64_t fallback, Parse parse) {
  try {
    return parse(std::getenv(name));
  } catch (const Error& e) {
    std::fprintf(stderr, "tfm: warning: %s; using %lld\n", e.what(), static_cast<long long>(fallback));
    return fallback;
  }
}

// Waits until `pred()` holds: spins (pause, and a sched_yield now and then so
// that any other runnable thread on this core goes first) for up to
// spin_micros(), then sleeps on `word` until its value differs from what
// `load()` last saw. `pred` must become true only after `word` changes and
// is notified.
template <class T, class Pred>
void spin_then_wait(std::atomic<T>& word, Pred pred) {
  using clock = std::chrono::steady_clock;
  const auto budget = std::chrono::microseconds(spin_micros());
  if (budget.count() > 0) {
    const auto deadline = clock::now() + budget;
    for (;;) {
      for (int i = 0; i < 64; ++i) {
        if (pred()) return;
        _mm_pause();
      }
      if (clock::now() >= deadline) break;
      sched_yield();
    }
  }
  for (;;) {
    const T seen = word.load(std::memory_order_acquire);
    if (pred()) return;
    word.wait(seen, std::memory_order_acquire);
  }
}

// The team: workers 1 .. size-1 (the caller of a region is thread 0). It
// grows to the largest region asked for and lives until the process exits
// (leaked on purpose: workers may still be asleep when static destructors
// run). One region runs at a time; a second caller waits for the first.
class Team {
 public:
  void run(int threads, parallel_detail::RegionFn fn, void* ctx) {
    std::lock_guard<std::mutex> region_lock(region_mu_);
    grow(threads - 1);
    fn_ = fn;
    ctx_ = ctx;
    active_ = threads;
    error_ = nullptr;
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    epoch_.fetch_add(1, std::memory_order_release);
    epoch_.notify_all();  // a futex call only when a worker sleeps

    std::exception_ptr mine;
    t_in_region = true;
    try {
      fn(ctx, 0, threads);
    } catch (...) {
      mine = std::current_exception();
    }
    t_in_region = false;
    spin_then_wait(pending_, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void grow(int workers) {
    while (static_cast<int>(workers_.size()) < workers) {
      const int tid = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, tid, seen = epoch_.load()] { loop(tid, seen); });
    }
  }

  // Every worker takes part in acknowledging every region (those beyond
  // its thread count only acknowledge), so a region's fields are never
  // rewritten while a worker may still read them.
  void loop(int tid, uint32_t seen) {
    t_in_region = true;      // a worker's kernels never open regions
    omp_set_num_threads(1);  // oneDNN, called from here, stays on this thread
    for (;;) {
      spin_then_wait(epoch_, [&] { return epoch_.load(std::memory_order_acquire) != seen; });
      seen = epoch_.load(std::memory_order_acquire);
      if (tid < active_) {
        try {
          fn_(ctx_, tid, active_);
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mu_);
          if (!error_) error_ = std::current_exception();
        }
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
    }
  }

  std::mutex region_mu_;
  std::vector<std::thread> workers_;
  alignas(64) std::atomic<uint32_t> epoch_{0};
  alignas(64) std::atomic<int> pending_{0};
  parallel_detail::RegionFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int active_ = 0;
  std::mutex error_mu_;
  std::exception_ptr error_;
};

Team& team() {
  static Team* t = new Team();
  return *t;
}

}  // namespace

int num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

void set_num_threads(int n) {
  if (n > 0) g_threads.store(n, std::memory_order_relaxed);
}

bool in_parallel() { return t_in_region; }

int64_t parse_spin_micros(const char* v) {
  if (!v || !*v) return kDefaultSpinMicros;
  return parse_nonnegative(v, "TFM_SPIN_US", 0);
}

int64_t spin_micros() {
  static const int64_t us = from_env("TFM_SPIN_US", kDefaultSpinMicros, parse_spin_micros);
  return us;
}

int64_t default_parallel_grain(int64_t spin_us) { return spin_us == 0 ? kParallelGrainPassive : kParallelGrain; }

int64_t parse_parallel_grain(const char* v, int64_t fallback) {
  if (!v || !*v) return fallback;
  return parse_nonnegative(v, "TFM_PARALLEL_GRAIN", 1);
}

int64_t parallel_grain() {
  static const int64_t grain = [] {
    const int64_t fallback = default_parallel_grain(spin_micros());
    return from_env("TFM_PARALLEL_GRAIN", fallback, [&](const char* v) { return parse_parallel_grain(v, fallback); });
  }();
  return grain;
}

bool should_parallelize(int64_t work) { return work >= parallel_grain() && !in_parallel() && num_threads() > 1; }

namespace parallel_detail {
void run_region(int threads, RegionFn fn, void* ctx) { team().run(threads, fn, ctx); }
}  // namespace parallel_detail

}  // namespace tfm::core
