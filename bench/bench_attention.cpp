// Attention benchmark: naive (core ops: matmul, softmax, matmul, autograd
// backward) against flash (core/flash_attention.h), forward + backward.
//
// B = 1, H = 8, D = 64, causal and not, T = 512 ... 16384 (doubling). For
// each: the best wall time of forward + backward (ms) over a few repeats
// after one warm-up (the best, not the median: on a shared machine the
// other processes only ever add time), and the peak tensor memory above what the inputs hold
// (core::memory_stats; deterministic, scratch of the flash kernel excluded:
// it is per-thread std::vector memory of ~(2·kv_tile·D + 2·q_tile·kv_tile +
// q_tile·D) floats). Naive is skipped where its [H, T, T] tensors would not
// fit in --naive-gb GB (default 12: about 6 score-sized tensors are alive at
// the peak). Non-causal rows also print the floor of any exact kernel that
// recomputes the scores: flash's 14·H·T²·D FLOPs at the fp32 GEMM peak
// measured at start, against naive's time, and the same seven products run
// as whole oneDNN matmuls.
//
// Usage: bench_attention [--max-t T] [--naive-gb G] [--reps N] [--tiles] [--cpu-time]
//   --cpu-time  time with the process CPU clock instead of the wall clock:
//             with OMP_NUM_THREADS=1 on a busy machine this excludes the time
//             the process waited for a core (a proxy for an idle machine).
//   --tiles   instead of the table, time flash fwd+bwd at T = 2048 for a grid
//             of (q_tile, kv_tile) to choose the defaults; the grid is run
//             --reps times round-robin and each entry keeps its best time, so
//             load changes on the machine hit every entry alike.
// The machine is shared: timings are indicative only.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/flash_attention.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace {

using namespace tfm::core;
using clk = std::chrono::steady_clock;

constexpr int64_t kHeads = 8, kDim = 64;
bool g_cpu_time = false;

double now_seconds() {
  if (g_cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  return std::chrono::duration<double>(clk::now().time_since_epoch()).count();
}

Tensor causal_bias(int64_t t) {
  Tensor bias = zeros({t, t});
  float* p = bias.data<float>();
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = i + 1; j < t; ++j) p[i * t + j] = -std::numeric_limits<float>::infinity();
  return bias;
}

struct Inputs {
  Tensor q, k, v, dout, bias;
};

Inputs make_inputs(int64_t t, bool causal) {
  Generator g(1);
  Inputs in{randn({1, kHeads, t, kDim}, g), randn({1, kHeads, t, kDim}, g), randn({1, kHeads, t, kDim}, g),
            randn({1, kHeads, t, kDim}, g), causal ? causal_bias(t) : Tensor()};
  in.q.set_requires_grad(), in.k.set_requires_grad(), in.v.set_requires_grad();
  return in;
}

// One forward + backward; returns the seconds it took.
double run_naive(Inputs& in) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  in.q.zero_grad(), in.k.zero_grad(), in.v.zero_grad();
  const double t0 = now_seconds();
  {
    Tensor s = matmul(mul(in.q, scale), in.k, false, true);
    if (in.bias.defined()) s = add(s, in.bias);
    matmul(softmax(s, -1), in.v).backward(in.dout);
  }
  return now_seconds() - t0;
}

double run_flash(Inputs& in, bool causal, const FlashOptions& opt) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  in.q.zero_grad(), in.k.zero_grad(), in.v.zero_grad();
  AttentionMask m;
  m.causal = causal;
  Generator gen(0);
  const double t0 = now_seconds();
  flash_attention(in.q, in.k, in.v, m, scale, 0.0f, false, gen, opt).backward(in.dout);
  return now_seconds() - t0;
}

// Flash's FLOPs in one non-causal fwd+bwd: seven [T, T]-sized products of
// 2·T²·D each per head (S = q·kᵀ and P·v forward; S again, Pᵀ·dO, dO·vᵀ,
// dS·k and dSᵀ·q backward). Naive does six of them plus its memory-bound
// softmax passes, so these FLOPs at the GEMM peak are the floor of any exact
// kernel that recomputes the scores. run_seven_products times the same
// products as whole oneDNN matmuls (no softmax), to compare the tile kernel
// with the GEMM library on these shapes. Non-causal only (causal flash skips
// the tiles above the diagonal).
double flash_flops(int64_t t) { return 14.0 * kHeads * static_cast<double>(t) * static_cast<double>(t) * kDim; }

double run_seven_products(const Inputs& in) {
  const Tensor q = in.q.detach(), k = in.k.detach(), v = in.v.detach(), dout = in.dout.detach();
  const double t0 = now_seconds();
  {
    const Tensor s = matmul(q, k, false, true);
    const Tensor o = matmul(s, v);
    const Tensor s2 = matmul(q, k, false, true);
    const Tensor dv = matmul(s2, dout, true, false);
    const Tensor dp = matmul(dout, v, false, true);
    const Tensor dq = matmul(dp, k);
    const Tensor dk = matmul(dp, q, true, false);
  }
  return now_seconds() - t0;
}

// The machine's fp32 GEMM rate (FLOP/s): the best of 5 oneDNN products
// [4096, 512] x [512, 2048] (~8.6 GFLOP each) after a warm-up.
double gemm_peak_flops() {
  Generator g(2);
  const Tensor a = randn({4096, 512}, g), b = randn({512, 2048}, g);
  matmul(a, b);
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const double t0 = now_seconds();
    matmul(a, b);
    best = std::min(best, now_seconds() - t0);
  }
  return 2.0 * 4096 * 512 * 2048 / best;
}

struct Measure {
  double ms = 0;
  int64_t peak_bytes = 0;
};

template <class F>
Measure measure(Inputs& in, F f, int reps) {
  in.q.zero_grad(), in.k.zero_grad(), in.v.zero_grad();  // gradients of an earlier run are not "inputs"
  const int64_t before = memory_stats().current_bytes;
  reset_peak_memory();
  f();  // warm-up (and the peak: every repeat allocates the same)
  Measure m;
  m.peak_bytes = memory_stats().peak_bytes - before;
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) times.push_back(f());
  m.ms = 1e3 * *std::min_element(times.begin(), times.end());
  return m;
}

int reps_for(int64_t t, int base) { return std::max(1, base * 2048 / static_cast<int>(std::max<int64_t>(t, 2048))); }

void tile_grid(int reps) {
  const int64_t t = 2048;
  std::printf("flash fwd+bwd at T = %ld, B = 1, H = %ld, D = %ld, %d threads (best of %d, round-robin)\n",
              static_cast<long>(t), static_cast<long>(kHeads), static_cast<long>(kDim), num_threads(), reps);
  const std::vector<int64_t> bqs{16, 32, 64, 128, 256}, bks{64, 128, 256, 512};
  Inputs in[2] = {make_inputs(t, false), make_inputs(t, true)};
  std::vector<double> best(bqs.size() * bks.size() * 2, 1e30);
  for (int r = 0; r < reps; ++r)
    for (std::size_t a = 0; a < bqs.size(); ++a)
      for (std::size_t b = 0; b < bks.size(); ++b)
        for (int c = 0; c < 2; ++c) {
          double& e = best[(a * bks.size() + b) * 2 + c];
          e = std::min(e, 1e3 * run_flash(in[c], c == 1, {bqs[a], bks[b]}));
        }
  std::printf("%8s %8s %12s %12s\n", "q_tile", "kv_tile", "causal ms", "full ms");
  for (std::size_t a = 0; a < bqs.size(); ++a)
    for (std::size_t b = 0; b < bks.size(); ++b)
      std::printf("%8ld %8ld %12.1f %12.1f\n", static_cast<long>(bqs[a]), static_cast<long>(bks[b]),
                  best[(a * bks.size() + b) * 2 + 1], best[(a * bks.size() + b) * 2]);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t max_t = 16384;
  double naive_gb = 12.0;
  int reps = 3;
  bool tiles = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--max-t" && i + 1 < argc) {
      max_t = std::atoll(argv[++i]);
    } else if (a == "--naive-gb" && i + 1 < argc) {
      naive_gb = std::atof(argv[++i]);
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--tiles") {
      tiles = true;
    } else if (a == "--cpu-time") {
      g_cpu_time = true;
    } else {
      std::fprintf(stderr, "usage: bench_attention [--max-t T] [--naive-gb G] [--reps N] [--tiles] [--cpu-time]\n");
      return 1;
    }
  }
  if (tiles) {
    tile_grid(reps);
    return 0;
  }
  std::printf("attention fwd+bwd, B = 1, H = %ld, D = %ld, %d threads; ms = best of up to %d runs after a warm-up"
              " (%s); peak = tensor bytes above the inputs\n",
              static_cast<long>(kHeads), static_cast<long>(kDim), num_threads(), reps,
              g_cpu_time ? "process CPU time" : "wall time");
  const double peak = gemm_peak_flops();
  std::printf("fp32 GEMM peak in this run: %.1f GFLOP/s (oneDNN, 4096x512x2048)\n", 1e-9 * peak);
  std::printf("non-causal rows: 7 GEMMs = flash's seven tile products (2 forward, 5 backward) as whole oneDNN"
              " products; floor = their 14·H·T²·D FLOPs at the GEMM peak; floor/n = the smallest flash/naive ratio"
              " any exact kernel that recomputes the scores can reach here; flash %%pk = flash's FLOP rate as %%"
              " of the peak\n");
  std::printf("%6s %7s %12s %12s %12s %12s %8s %12s %10s %8s %8s\n", "T", "causal", "naive ms", "naive MiB",
              "flash ms", "flash MiB", "f/n", "7 GEMMs ms", "floor ms", "floor/n", "flash %pk");
  for (int64_t t = 512; t <= max_t; t *= 2)
    for (const bool causal : {false, true}) {
      Inputs in = make_inputs(t, causal);
      const double score_bytes = 4.0 * kHeads * static_cast<double>(t) * t;
      const bool naive_fits = 6.0 * score_bytes <= naive_gb * 1e9;
      const int r = reps_for(t, reps);
      Measure n;
      if (naive_fits) n = measure(in, [&] { return run_naive(in); }, r);
      const Measure f = measure(in, [&] { return run_flash(in, causal, {}); }, r);
      // Columns after "flash MiB": "-" where naive did not run or the row is causal.
      auto num = [](double x, const char* fmt) {
        char b[32];
        std::snprintf(b, sizeof b, fmt, x);
        return std::string(b);
      };
      std::string naive_ms = "-", naive_mib = "-", ratio = "-", gemms = "-", floor_ms = "-", floor_ratio = "-",
                  of_peak = "-";
      if (naive_fits) {
        naive_ms = num(n.ms, "%.1f");
        naive_mib = num(n.peak_bytes / 1048576.0, "%.1f");
        ratio = num(f.ms / n.ms, "%.2f");
      }
      if (!causal) {
        const double fl = 1e3 * flash_flops(t) / peak;
        floor_ms = num(fl, "%.1f");
        of_peak = num(100.0 * fl / f.ms, "%.0f");
        if (naive_fits) {
          gemms = num(measure(in, [&] { return run_seven_products(in); }, r).ms, "%.1f");
          floor_ratio = num(fl / n.ms, "%.2f");
        }
      }
      std::printf("%6ld %7s %12s %12s %12.1f %12.1f %8s %12s %10s %8s %8s\n", static_cast<long>(t),
                  causal ? "yes" : "no", naive_ms.c_str(), naive_mib.c_str(), f.ms, f.peak_bytes / 1048576.0,
                  ratio.c_str(), gemms.c_str(), floor_ms.c_str(), floor_ratio.c_str(), of_peak.c_str());
      std::fflush(stdout);
    }
  return 0;
}
