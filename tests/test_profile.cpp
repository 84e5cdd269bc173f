// The step profiler (core/profile.h): scope attribution rules, a profiled
// training step of a tiny GPT reporting the expected kinds with rows that
// add up to no more than the measured wall time, the train.profile key,
// and the table in train.log.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/profile.h"
#include "core/rng.h"
#include "layers/gpt.h"
#include "optim/optimizer.h"
#include "temp_dir.h"
#include "train/config.h"
#include "train/trainer.h"

namespace {

namespace core = tfm::core;
namespace profile = tfm::core::profile;
using Catch::Matchers::Contains;
using core::Tensor;
using profile::Kind;
using profile::Phase;

const profile::Row& row(const std::vector<profile::Row>& rows, Kind k) { return rows[static_cast<int>(k)]; }
int64_t calls(const std::vector<profile::Row>& rows, Kind k, Phase p) {
  return row(rows, k).calls[static_cast<int>(p)];
}
double seconds(const std::vector<profile::Row>& rows, Kind k, Phase p) {
  return row(rows, k).seconds[static_cast<int>(p)];
}

void busy_wait(double ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double, std::milli>(ms);
  while (std::chrono::steady_clock::now() < until) {
  }
}

// Turns profiling on for a scope and off again (also when a CHECK throws).
struct Profiling {
  Profiling() {
    profile::reset();
    profile::set_enabled(true);
  }
  ~Profiling() { profile::set_enabled(false); }
};

}  // namespace

TEST_CASE("profile scopes: outermost op owns nested ops, frames are exclusive, off records nothing", "[profile]") {
  profile::reset();
  { profile::OpScope s(Kind::matmul); }
  CHECK(profile::rows()[static_cast<int>(Kind::matmul)].total_calls() == 0);  // off by default

  double outer_wall = 0;
  {
    Profiling on;
    const auto t0 = std::chrono::steady_clock::now();
    {
      profile::OpScope outer(Kind::norm);
      busy_wait(2);
      {
        profile::OpScope inner(Kind::reduce);  // part of the norm: not timed on its own
        busy_wait(2);
      }
      {
        profile::Frame rec(Kind::autograd);  // carved out of the norm
        busy_wait(3);
      }
    }
    outer_wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    {
      profile::Frame opt(Kind::optimizer);
      profile::OpScope op(Kind::elementwise);  // inside the optimizer: phase "none"
      busy_wait(1);
    }
    {
      profile::BackwardPhase bw;
      profile::OpScope op(Kind::matmul);
      busy_wait(1);
    }
  }
  const auto r = profile::rows();
  CHECK(calls(r, Kind::norm, Phase::forward) == 1);
  CHECK(calls(r, Kind::reduce, Phase::forward) == 0);
  CHECK(calls(r, Kind::autograd, Phase::forward) == 1);
  // the nested reduce's 2 ms belong to the norm; the 3 ms frame inside it does not
  CHECK(seconds(r, Kind::norm, Phase::forward) >= 0.004);
  CHECK(seconds(r, Kind::autograd, Phase::forward) >= 0.003);
  CHECK(seconds(r, Kind::norm, Phase::forward) + seconds(r, Kind::autograd, Phase::forward) <= outer_wall);
  CHECK(calls(r, Kind::elementwise, Phase::none) == 1);
  CHECK(calls(r, Kind::elementwise, Phase::forward) == 0);
  CHECK(calls(r, Kind::optimizer, Phase::none) == 1);
  CHECK(calls(r, Kind::matmul, Phase::backward) == 1);
  CHECK(profile::kind_of_node("linear") == Kind::matmul);
  CHECK(profile::kind_of_node("flash_attention") == Kind::attention);
  CHECK(profile::kind_of_node("gelu_erf") == Kind::elementwise);
}

TEST_CASE("profiling a tiny GPT step reports each kind and rows within the step time", "[profile]") {
  tfm::layers::GPTConfig c;
  c.vocab_size = 11, c.block_size = 16, c.n_layers = 2, c.n_heads = 2, c.d_model = 16, c.d_ff = 32;
  c.attention = "flash";
  tfm::layers::GPT model(c, 7);
  std::vector<std::pair<std::string, Tensor>> named = model.named_parameters();
  tfm::optim::Adam opt(tfm::optim::decay_groups(named, 0.1f), 1e-3f, 0.9f, 0.99f, 1e-8f, true);
  std::vector<int32_t> ids(2 * 16), targets(2 * 16);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i * 7 % 11), targets[i] = static_cast<int32_t>(i * 3 % 11);
  const Tensor x = core::from_vector(ids, {2, 16}), y = core::from_vector(targets, {2, 16});
  auto step = [&] {
    {
      profile::Frame f(Kind::optimizer);
      opt.zero_grad();
    }
    model.loss(x, y).backward();
    profile::Frame f(Kind::optimizer);
    opt.step();
  };
  step();  // warm-up outside the profile
  double wall = 0, cpu = 0;
  {
    Profiling on;
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t cpu0 = profile::process_cpu_ns();
    for (int i = 0; i < 3; ++i) step();
    wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cpu = 1e-9 * static_cast<double>(profile::process_cpu_ns() - cpu0);
  }
  const auto r = profile::rows();
  for (Kind k : {Kind::matmul, Kind::attention, Kind::norm, Kind::elementwise, Kind::softmax_xent, Kind::embedding}) {
    INFO(profile::kind_name(k));
    CHECK(calls(r, k, Phase::forward) > 0);
    CHECK(calls(r, k, Phase::backward) > 0);
    CHECK(row(r, k).total_seconds() > 0);
  }
  // 2 layers x (qkv, out proj, 2 feed-forward) per step; the tied output
  // head runs inside linear_cross_entropy, charged to softmax/xent
  CHECK(calls(r, Kind::matmul, Phase::forward) == 3 * 8);
  CHECK(calls(r, Kind::softmax_xent, Phase::forward) == 3);
  CHECK(calls(r, Kind::attention, Phase::forward) == 3 * 2);
  CHECK(calls(r, Kind::autograd, Phase::forward) > 0);
  CHECK(calls(r, Kind::autograd, Phase::backward) == 3);  // one engine pass per step
  CHECK(calls(r, Kind::optimizer, Phase::none) == 3 * 2);
  double total = 0, total_cpu = 0;
  for (const profile::Row& row : r) total += row.total_seconds(), total_cpu += row.total_cpu_seconds();
  CHECK(total > 0);
  CHECK(total <= wall);
  CHECK(total_cpu > 0);
  CHECK(total_cpu <= cpu);
  const std::string table = profile::format_table(r, wall, 3, cpu);
  CHECK_THAT(table, Contains("matmul") && Contains("attention") && Contains("optimizer") && Contains("unattributed"));
}

TEST_CASE("train.profile is an integer key >= 0, off by default", "[profile][config]") {
  using tfm::train::Config;
  CHECK(Config::parse("", "run.yaml").get_int("train.profile") == 0);
  CHECK(Config::parse("train:\n  profile: 5\n", "run.yaml").get_int("train.profile") == 5);
  CHECK(Config::parse("", "run.yaml", {"train.profile=7"}).get_int("train.profile") == 7);
  std::string err;
  try {
    Config::parse("train:\n  profile: -1\n", "run.yaml");
  } catch (const tfm::Error& e) {
    err = e.what();
  }
  CHECK_THAT(err, Contains("train.profile") && Contains(">= 0"));
}

TEST_CASE("train.profile logs the table after the profiled steps and training goes on", "[profile][trainer]") {
  tfm::test::TempDir dir("profile");
  const std::filesystem::path cfg = dir.path / "run.yaml";
  std::ofstream(cfg) << "model:\n  n_layers: 1\n  n_heads: 2\n  d_model: 16\n  block_size: 16\n"
                     << "data:\n  path: " << TFM_TEST_DATA_DIR << "/fixtures/genesis1.txt\n"
                     << "train:\n  max_steps: 6\n  batch_size: 2\n  log_every: 1\n  eval_every: 0\n  profile: 3\n"
                     << "  threads: 1\n  out_dir: " << (dir.path / "run").string() << "\n";
  tfm::train::TrainArgs a;
  a.config_path = cfg.string();
  a.quiet = true;
  REQUIRE(tfm::train::run_train(a) == 0);
  std::ifstream in(dir.path / "run" / "train.log");
  std::stringstream log;
  log << in.rdbuf();
  CHECK_THAT(log.str(), Contains("where the time of steps 2..4 went") && Contains("profile of 3 steps") &&
                            Contains("matmul") && Contains("optimizer") && Contains("data") &&
                            Contains("step      6/6"));
}

TEST_CASE("TFM_SPIN_US values: default, integers >= 0, anything else refused", "[parallel]") {
  CHECK(core::parse_spin_micros(nullptr) == core::kDefaultSpinMicros);
  CHECK(core::parse_spin_micros("") == core::kDefaultSpinMicros);
  CHECK(core::parse_spin_micros("0") == 0);
  CHECK(core::parse_spin_micros("1500") == 1500);
  for (const char* bad : {"-1", "50us", "1.5", "99999999999999999999999"}) {
    INFO(bad);
    CHECK_THROWS_WITH(core::parse_spin_micros(bad), Contains("TFM_SPIN_US") && Contains(">= 0"));
  }
  if (!std::getenv("TFM_SPIN_US")) CHECK(core::spin_micros() == core::kDefaultSpinMicros);
}

TEST_CASE("TFM_PARALLEL_GRAIN values: default, integers >= 1, anything else refused", "[parallel]") {
  CHECK(core::parse_parallel_grain(nullptr) == core::kParallelGrain);
  CHECK(core::parse_parallel_grain("") == core::kParallelGrain);
  CHECK(core::parse_parallel_grain("262144") == 262144);
  CHECK(core::parse_parallel_grain("1") == 1);
  for (const char* bad : {"0", "-5", "12k", "1e5", "99999999999999999999999"}) {
    INFO(bad);
    CHECK_THROWS_WITH(core::parse_parallel_grain(bad), Contains("TFM_PARALLEL_GRAIN") && Contains(">= 1"));
  }
  // ctest does not set the variable: the grain in use is the default
  CHECK(core::parse_parallel_grain(nullptr, 77) == 77);
  CHECK(core::default_parallel_grain(core::kDefaultSpinMicros) == core::kParallelGrain);
  CHECK(core::default_parallel_grain(1) == core::kParallelGrain);
  CHECK(core::default_parallel_grain(0) == core::kParallelGrainPassive);
  if (!std::getenv("TFM_PARALLEL_GRAIN"))
    CHECK(core::parallel_grain() == core::default_parallel_grain(core::spin_micros()));
  CHECK(core::should_parallelize(core::parallel_grain() - 1) == false);
}
