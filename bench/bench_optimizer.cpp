// The optimizer's share of a training step, in isolation: gradient clipping
// (norm + scale) and the AdamW update over the parameters of the small
// char-GPT (configs/char_gpt_small.yaml, 0.8M parameters in 52 tensors),
// at 1 and 2 threads. Prints medians of wall and process CPU time.
//   build/bench/bench_optimizer [rounds]
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "optim/optimizer.h"

using namespace tfm;

namespace {

double cpu_now() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 200;
  const int64_t d = 128, v = 67, t = 64, layers = 4;
  std::vector<core::Shape> shapes = {{v, d}, {t, d}, {d}, {d}};
  for (int64_t l = 0; l < layers; ++l)
    for (const core::Shape& s : std::vector<core::Shape>{{d}, {d}, {3 * d, d}, {3 * d}, {d, d}, {d}, {d}, {d}, {4 * d, d},
                                                         {4 * d}, {d, 4 * d}, {d}})
      shapes.push_back(s);
  core::Generator gen(1);
  std::vector<std::pair<std::string, core::Tensor>> named;
  int64_t total = 0;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    core::Tensor p = core::randn(shapes[i], gen);
    p.set_requires_grad();
    p.set_grad(core::randn(shapes[i], gen));
    named.emplace_back("p" + std::to_string(i), p);
    total += p.numel();
  }
  std::vector<core::Tensor> params;
  for (auto& [n, p] : named) params.push_back(p);
  std::printf("%zu tensors, %lld parameters, %d rounds\n", params.size(), static_cast<long long>(total), rounds);
  for (int threads : {1, 2}) {
    core::set_num_threads(threads);
    optim::Adam opt(optim::decay_groups(named, 0.1f), 1e-3f, 0.9f, 0.99f, 1e-8f, true);
    std::vector<double> clip_w, clip_c, step_w, step_c;
    for (int r = 0; r < rounds; ++r) {
      auto w0 = std::chrono::steady_clock::now();
      double c0 = cpu_now();
      optim::clip_grad_norm(params, 1e-3f);  // always scales
      auto w1 = std::chrono::steady_clock::now();
      double c1 = cpu_now();
      opt.step();
      auto w2 = std::chrono::steady_clock::now();
      double c2 = cpu_now();
      clip_w.push_back(std::chrono::duration<double, std::micro>(w1 - w0).count());
      step_w.push_back(std::chrono::duration<double, std::micro>(w2 - w1).count());
      clip_c.push_back(1e6 * (c1 - c0));
      step_c.push_back(1e6 * (c2 - c1));
      for (core::Tensor& p : params) p.grad().mul_(1e3f);  // keep the gradients O(1)
    }
    std::printf("threads %d: clip %.0f us wall %.0f us cpu | adamw step %.0f us wall %.0f us cpu\n", threads,
                median(clip_w), median(clip_c), median(step_w), median(step_c));
  }
  return 0;
}
