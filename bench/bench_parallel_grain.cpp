// What a parallel region costs against its work: median wall time of an
// add and a GELU at sizes around the parallel grain (core/parallel.h), each
// call preceded by ~20 µs of serial work, as between the ops of a training
// step (workers that sleep at once are asleep when it starts; workers that
// spin for TFM_SPIN_US, default 200, are still spinning). Prints the
// settings in use; compare runs that force one side of the grain:
//   TFM_PARALLEL_GRAIN=1 build/bench/bench_parallel_grain                # always 2 threads, spinning
//   TFM_SPIN_US=0 TFM_PARALLEL_GRAIN=1 build/bench/bench_parallel_grain  # always 2, sleeping at once
//   TFM_PARALLEL_GRAIN=1000000000 build/bench/bench_parallel_grain       # always 1
//   build/bench/bench_parallel_grain [calls]   (default 2001 per size and op)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/ops.h"
#include "core/parallel.h"
#include "core/rng.h"

using namespace tfm;

namespace {

double serial_work() {  // ~20 µs of arithmetic on the calling thread
  double x = 0.0;
  for (int i = 0; i < 20000; ++i) x += static_cast<double>(i) * 0.5;
  return x;
}

template <class F>
double median_us(int calls, F f) {
  std::vector<double> t;
  volatile double sink = 0.0;
  for (int r = 0; r < calls; ++r) {
    sink = sink + serial_work();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int calls = argc > 1 ? std::max(1, std::atoi(argv[1])) : 2001;
  std::printf("threads %d, spin %lld µs, grain %lld elements; median of %d calls (µs)\n", core::num_threads(),
              static_cast<long long>(core::spin_micros()), static_cast<long long>(core::parallel_grain()), calls);
  std::printf("%10s %10s %10s\n", "elements", "add", "gelu");
  core::Generator gen(1);
  for (const int64_t n : {16384LL, 98304LL, 393216LL, 1572864LL}) {
    const core::Tensor a = core::randn({n}, gen), b = core::randn({n}, gen);
    const double t_add = median_us(calls, [&] { core::Tensor y = core::add(a, b); });
    const double t_gelu = median_us(calls, [&] { core::Tensor y = core::gelu(a); });
    std::printf("%10lld %10.1f %10.1f\n", static_cast<long long>(n), t_add, t_gelu);
  }
  return 0;
}
