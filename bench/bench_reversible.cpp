// Reversible-layer benchmark: peak tensor memory and step time of a GPT
// training step (forward, loss, backward) with standard and with reversible
// residual layers (model.reversible) at several depths.
//
// Default model: d_model 128, 4 heads, d_ff 512, block 4096, batch 8,
// vocabulary 65, dropout 0.1, local attention (chunk 128), depths 2, 6, 12.
// Each step is forward, loss, backward and an AdamW update; peak memory is
// core::memory_stats().peak_bytes over the last step (live tensor bytes,
// deterministic; Adam's moments exist from the warm-up step on), printed in
// two parts: params+grads+Adam (4 × the parameter bytes, grows with depth in
// both modes) and the rest, activations and temporaries. Time is forward +
// backward, the median of --steps timed steps after one warm-up step:
// indicative only on a shared machine. The two modes are different models
// (one residual stream vs two averaged ones), so their losses differ;
// tests/test_reversible.cpp checks the reversible gradients against the
// two-stream stack.
//
// Measured (default, `bench_reversible --batch 8 --layers 2,6,12 --steps 1`):
// peak MB standard 680.3 / 1837.0 / 3572.0, reversible 409.8 / 422.5 /
// 441.5 (+7.7% from 2 to 12 layers; activations 403.3 MB at every depth,
// params+grads+Adam 6.5 / 19.2 / 38.2). Wall time rev/std on an idle
// machine (2026-12-02, --steps 3; 2 layers --steps 5): 1.42 / 1.39 / 1.47;
// README's benchmark section has the callgrind instruction ratios.
//
// Usage: bench_reversible [--quick] [--steps N] [--layers L,L,...] [--block T] [--d-model D] [--heads H]
//                         [--attention NAME] [--pattern "local, lsh"] [--chunk C] [--hashes R]
//                         [--ff-chunks N] [--dropout P] [--modes std,rev]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <sstream>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/ops.h"
#include "layers/gpt.h"
#include "optim/optimizer.h"

namespace {

using namespace tfm;
using clk = std::chrono::steady_clock;

struct Result {
  double loss = 0, median_s = 0, median_cpu_s = 0;  // forward + backward: wall clock and process CPU time
  int64_t peak_bytes = 0;   // of the last step, Adam's moments already allocated
  int64_t param_bytes = 0;  // parameters; gradients and each of Adam's two moments take as much again
  // Parameters, gradients and Adam state: what grows with depth in both modes.
  double state_mb() const { return 4.0 * static_cast<double>(param_bytes) / 1e6; }
  // The rest of the peak: activations (and the step's temporaries).
  double activation_mb() const { return static_cast<double>(peak_bytes - 4 * param_bytes) / 1e6; }
};

// One warm-up step (it allocates Adam's moments) and `steps` timed ones;
// each is forward, loss, backward and an AdamW update.
Result run(const layers::GPTConfig& base, bool reversible, int64_t batch, int steps) {
  layers::GPTConfig cfg = base;
  cfg.reversible = reversible;
  layers::GPT model(cfg, 1);
  model.train();
  optim::Adam opt(optim::decay_groups(model.named_parameters(), 0.1f), 1e-3f, 0.9f, 0.99f, 1e-8f, true);
  core::Generator data(3);
  const int64_t T = cfg.block_size;
  std::vector<int32_t> ids(static_cast<std::size_t>(batch * (T + 1)));
  for (auto& v : ids) v = static_cast<int32_t>(data.next_u64() % static_cast<uint64_t>(cfg.vocab_size));
  const core::Tensor seq = core::from_vector(ids, {batch, T + 1});
  const core::Tensor x = seq.slice(1, 0, T).contiguous(), y = seq.slice(1, 1, T + 1).contiguous();
  Result r;
  r.param_bytes = model.num_parameters() * static_cast<int64_t>(sizeof(float));
  std::vector<double> times, cpu_times;
  for (int s = 0; s <= steps; ++s) {
    opt.zero_grad();
    core::reset_peak_memory();
    const auto t0 = clk::now();
    const std::clock_t c0 = std::clock();
    core::Tensor loss = model.loss(x, y);
    loss.backward();
    const double dt = std::chrono::duration<double>(clk::now() - t0).count();
    const double dc = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
    opt.step();
    r.peak_bytes = core::memory_stats().peak_bytes;
    if (s == 0) {
      r.loss = loss.item();
    } else {
      times.push_back(dt);
      cpu_times.push_back(dc);
    }
  }
  std::sort(times.begin(), times.end());
  std::sort(cpu_times.begin(), cpu_times.end());
  r.median_s = times.empty() ? 0.0 : times[times.size() / 2];
  r.median_cpu_s = cpu_times.empty() ? 0.0 : cpu_times[cpu_times.size() / 2];
  return r;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::strtol(item.c_str(), nullptr, 10));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  layers::GPTConfig cfg;
  cfg.vocab_size = 65, cfg.d_model = 128, cfg.n_heads = 4, cfg.d_ff = 512, cfg.block_size = 4096;
  cfg.dropout = 0.1f, cfg.positions = layers::PositionKind::rope, cfg.attention = "local";
  cfg.attention_options.chunk_length = 128;
  std::vector<int64_t> depths = {2, 6, 12};
  bool do_std = true, do_rev = true;
  int64_t batch = 8;
  int steps = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_reversible: %s needs a value\n", a.c_str());
        std::exit(1);
      }
      return argv[++i];
    };
    auto next_int = [&]() { return std::strtol(next().c_str(), nullptr, 10); };
    if (a == "--quick") {
      depths = {2, 4}, cfg.block_size = 512, batch = 1, steps = 1;
    } else if (a == "--batch") {
      batch = next_int();
    } else if (a == "--steps") {
      steps = static_cast<int>(next_int());
    } else if (a == "--layers") {
      depths = parse_list(next());
    } else if (a == "--block") {
      cfg.block_size = next_int();
    } else if (a == "--d-model") {
      cfg.d_model = next_int(), cfg.d_ff = 4 * cfg.d_model;
    } else if (a == "--heads") {
      cfg.n_heads = next_int();
    } else if (a == "--attention") {
      cfg.attention = next();
    } else if (a == "--pattern") {
      cfg.attention_pattern = layers::parse_attention_pattern(next());
    } else if (a == "--chunk") {
      cfg.attention_options.chunk_length = next_int();
    } else if (a == "--hashes") {
      cfg.attention_options.n_hashes = next_int();
    } else if (a == "--ff-chunks") {
      cfg.ff_chunks = next_int();
    } else if (a == "--dropout") {
      cfg.dropout = static_cast<float>(std::strtod(next().c_str(), nullptr));
    } else if (a == "--modes") {
      const std::string m = next();
      do_std = m.find("std") != std::string::npos, do_rev = m.find("rev") != std::string::npos;
    } else {
      std::fprintf(stderr,
                   "usage: bench_reversible [--quick] [--batch B] [--steps N] [--layers L,L,...] [--block T] [--d-model D] "
                   "[--heads H] [--attention NAME] [--pattern P] [--chunk C] [--hashes R] [--ff-chunks N] "
                   "[--dropout P] [--modes std,rev]\n");
      return 1;
    }
  }
  if (cfg.attention == "naive") cfg.attention_options = {};
  std::string pattern;
  for (const auto& p : cfg.attention_pattern) pattern += (pattern.empty() ? "" : ",") + p;
  std::printf("GPT d_model %lld, %lld heads, d_ff %lld, block %lld, batch %lld, dropout %.2f, attention %s%s%s, "
              "chunk %lld, hashes %lld, ff_chunks %lld\n",
              static_cast<long long>(cfg.d_model), static_cast<long long>(cfg.n_heads),
              static_cast<long long>(cfg.d_ff), static_cast<long long>(cfg.block_size), static_cast<long long>(batch),
              cfg.dropout,
              cfg.attention.c_str(), pattern.empty() ? "" : ", pattern ", pattern.c_str(),
              static_cast<long long>(cfg.attention_options.chunk_length),
              static_cast<long long>(cfg.attention_options.n_hashes), static_cast<long long>(cfg.ff_chunks));
  std::printf("| layers | mode | peak tensor MB | of it params+grads+Adam MB | of it activations MB | fwd+bwd s "
              "(median of %d) | fwd+bwd CPU s | loss |\n|---|---|---|---|---|---|---|---|\n",
              steps);
  std::fflush(stdout);
  auto row = [](int64_t L, const char* mode, const Result& x) {
    std::printf("| %lld | %s | %.1f | %.1f | %.1f | %.3f | %.3f | %.6f |\n", static_cast<long long>(L), mode,
                x.peak_bytes / 1e6, x.state_mb(), x.activation_mb(), x.median_s, x.median_cpu_s, x.loss);
  };
  Result first_std, first_rev;
  for (std::size_t d = 0; d < depths.size(); ++d) {
    const int64_t L = depths[d];
    cfg.n_layers = L;
    Result s, r;
    if (do_std) {
      s = run(cfg, false, batch, steps);
      row(L, "standard", s);
      if (d == 0) first_std = s;
    }
    if (do_rev) {
      r = run(cfg, true, batch, steps);
      row(L, "reversible", r);
      if (d == 0) first_rev = r;
    }
    if (do_std && do_rev) {
      std::printf("| %lld | ratio rev/std | %.3f | %.3f | %.3f | %.2f | %.2f | |\n", static_cast<long long>(L),
                  static_cast<double>(r.peak_bytes) / static_cast<double>(s.peak_bytes), r.state_mb() / s.state_mb(),
                  r.activation_mb() / s.activation_mb(), s.median_s > 0 ? r.median_s / s.median_s : 0.0,
                  s.median_cpu_s > 0 ? r.median_cpu_s / s.median_cpu_s : 0.0);
    }
    if (d + 1 == depths.size() && d > 0) {
      auto growth = [&](const char* mode, const Result& a, const Result& b) {
        std::printf("%s: peak %+.1f%%, activations %+.1f%% from %lld to %lld layers\n", mode,
                    100.0 * (static_cast<double>(b.peak_bytes) / static_cast<double>(a.peak_bytes) - 1.0),
                    100.0 * (b.activation_mb() / a.activation_mb() - 1.0), static_cast<long long>(depths[0]),
                    static_cast<long long>(L));
      };
      if (do_std) growth("standard", first_std, s);
      if (do_rev) growth("reversible", first_rev, r);
    }
    std::fflush(stdout);
  }
  return 0;
}
