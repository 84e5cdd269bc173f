// Threading: tfm's own thread team. Kernels split their outermost
// independent dimension over it; regions never nest (a kernel called from
// inside a region runs serially on the calling thread).
//
// Why not OpenMP's team: with OMP_WAIT_POLICY=PASSIVE (the setting that
// keeps an OpenMP program from spinning on a loaded machine) every parallel
// region pays the wake-up of a sleeping worker, 55-60 µs on a 2-vCPU VM
// (bench/bench_parallel_grain), and a small-model training step opens
// ~150 of them. tfm's workers spin for a bounded time after each region
// (TFM_SPIN_US, yielding the core to any other runnable thread while they
// do), then sleep on a futex: a region that follows within the spin window
// starts in about a microsecond, an idle process uses no CPU. oneDNN's
// matrix products run inside these regions on one thread each (see
// onednn.h), so OpenMP never starts a thread of its own.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace tfm::core {

// Threads kernels use (default: OMP_NUM_THREADS, else all cores).
int num_threads();
void set_num_threads(int n);

// True on a thread that is running a parallel region's body (the caller's
// share included): a region opened there runs serially.
bool in_parallel();

// How long a worker (and the caller, waiting for the workers) spins before
// it sleeps: TFM_SPIN_US microseconds (an integer >= 0, read once; 0 sleeps
// at once, like OMP_WAIT_POLICY=PASSIVE). An invalid value is ignored with
// a warning on stderr.
inline constexpr int64_t kDefaultSpinMicros = 200;
int64_t spin_micros();
// The spin time a TFM_SPIN_US value asks for (null or empty: the default);
// throws tfm::Error naming the variable for anything but an integer >= 0.
int64_t parse_spin_micros(const char* value);

// Work (in elements, or in element-operations) below which a kernel stays on
// one thread: handing work to a spinning worker costs about a microsecond.
inline constexpr int64_t kParallelGrain = 1 << 15;
// Workers that sleep at once (TFM_SPIN_US=0) cost a wake-up per region: on
// a 2-vCPU VM (bench/bench_parallel_grain, OpenMP's passive team, two runs)
// an add of 16k floats took 55-62 µs on two threads against 1.3-1.5 µs on
// one, of 98k floats 77-82 µs against 9-11 µs, while a GELU of 393k floats
// was faster on two (331-339 µs against 429-539).
inline constexpr int64_t kParallelGrainPassive = 1 << 18;

// The default grain for a spin time: kParallelGrainPassive for 0, else
// kParallelGrain.
int64_t default_parallel_grain(int64_t spin_us);

// The grain in use: default_parallel_grain(spin_micros()) unless the
// environment variable TFM_PARALLEL_GRAIN (an integer >= 1, read once) sets
// another, so that the threshold can be timed on a given machine without
// rebuilding. An invalid value is ignored with a warning on stderr (the
// process has started by then).
int64_t parallel_grain();
// The grain a TFM_PARALLEL_GRAIN value asks for (null or empty: `fallback`);
// throws tfm::Error naming the variable for anything but an integer >= 1.
int64_t parse_parallel_grain(const char* value, int64_t fallback = kParallelGrain);

// True when a kernel with `work` units should open a parallel region.
bool should_parallelize(int64_t work);

namespace parallel_detail {
using RegionFn = void (*)(void* ctx, int thread, int threads);
// Runs fn(ctx, t, threads) for t = 0 .. threads-1, t = 0 on the caller, and
// returns when all have; an exception thrown by any share is rethrown here
// (the first one, after every share has finished).
void run_region(int threads, RegionFn fn, void* ctx);
}  // namespace parallel_detail

// body(t, n) for t = 0 .. n-1 on n = `threads` threads of the team (serially
// as body(0, 1) when threads <= 1 or inside a region).
template <class Body>
void parallel_region(int threads, Body&& body) {
  if (threads <= 1 || in_parallel()) {
    body(0, 1);
    return;
  }
  using B = std::remove_reference_t<Body>;
  parallel_detail::run_region(
      threads, [](void* ctx, int t, int n) { (*static_cast<B*>(ctx))(t, n); },
      const_cast<void*>(static_cast<const void*>(&body)));
}

// Thread t's contiguous share [begin, end) of [0, count) split over n threads.
inline std::pair<int64_t, int64_t> static_share(int64_t count, int t, int n) {
  return {count * t / n, count * (t + 1) / n};
}

// The threads a loop of `count` iterations uses: num_threads() when
// `parallel`, never more than count.
inline int threads_for(int64_t count, bool parallel) {
  return parallel ? static_cast<int>(std::clamp<int64_t>(count, 1, num_threads())) : 1;
}

// body(begin, end) once per thread on its contiguous share of [0, count)
// (one call with the whole range unless `parallel`).
template <class Body>
void parallel_ranges(int64_t count, bool parallel, Body&& body) {
  parallel_region(threads_for(count, parallel), [&](int t, int n) {
    const auto [begin, end] = static_share(count, t, n);
    if (begin < end) body(begin, end);
  });
}

// body(i) for i in [0, count), contiguous shares per thread when `parallel`.
template <class Body>
void parallel_for(int64_t count, bool parallel, Body&& body) {
  parallel_ranges(count, parallel, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) body(i);
  });
}

// body(i, t) for i in [0, count), handed out one at a time to whichever of
// the `threads` threads is free (t: the thread, for per-thread scratch).
template <class Body>
void parallel_for_dynamic(int64_t count, int threads, Body&& body) {
  std::atomic<int64_t> next{0};
  parallel_region(std::min<int64_t>(threads, count), [&](int t, int) {
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < count;
         i = next.fetch_add(1, std::memory_order_relaxed))
      body(i, t);
  });
}

}  // namespace tfm::core
