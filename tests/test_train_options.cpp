// Config options that the docs promise and the trainer must honour:
// train.label_smoothing for GPT (the training loss, not the validation
// loss) and train.eval_every (0: never evaluate).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "layers/gpt.h"
#include "temp_dir.h"
#include "train/config.h"
#include "train/task.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace tfm;
using tfm::test::TempDir;

namespace {

const std::string kFixture = std::string(TFM_TEST_DATA_DIR) + "/fixtures/genesis1.txt";

// Label-smoothed cross-entropy of logits [N, V] in double precision:
// mean over rows of -(1 - e)·log p[t] - (e / V)·Σ_c log p[c].
double smoothed_ce(const std::vector<float>& logits, const std::vector<int32_t>& targets, int64_t V, double e) {
  const std::size_t N = targets.size();
  double total = 0;
  for (std::size_t n = 0; n < N; ++n) {
    const float* z = logits.data() + n * static_cast<std::size_t>(V);
    double m = z[0];
    for (int64_t c = 1; c < V; ++c) m = std::max(m, static_cast<double>(z[c]));
    double s = 0;
    for (int64_t c = 0; c < V; ++c) s += std::exp(z[c] - m);
    const double lse = m + std::log(s);
    double sum_logp = 0;
    for (int64_t c = 0; c < V; ++c) sum_logp += z[c] - lse;
    total += -(1 - e) * (z[targets[n]] - lse) - e / static_cast<double>(V) * sum_logp;
  }
  return total / static_cast<double>(N);
}

train::Config lm_config(double smoothing) {
  train::Config c;
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"data.path", kFixture}, {"model.n_layers", "1"}, {"model.n_heads", "2"}, {"model.d_model", "16"},
           {"model.block_size", "16"}, {"train.batch_size", "4"}, {"train.eval_steps", "2"},
           {"train.label_smoothing", std::to_string(smoothing)}})
    c.set(k, v);
  return c;
}

std::vector<nlohmann::json> run_and_read_metrics(const fs::path& dir, const std::string& eval_every, int max_steps) {
  const fs::path cfg = dir / "run.yaml";
  std::ofstream(cfg) << "model:\n  n_layers: 1\n  n_heads: 2\n  d_model: 16\n  block_size: 16\n"
                     << "data:\n  path: " << kFixture << "\n"
                     << "schedule:\n  kind: constant\n"
                     << "train:\n  max_steps: " << max_steps << "\n  batch_size: 4\n  log_every: 1\n  eval_every: "
                     << eval_every << "\n  eval_steps: 1\n  threads: 1\n  out_dir: " << (dir / "run").string() << "\n";
  train::TrainArgs a;
  a.config_path = cfg.string();
  a.quiet = true;
  REQUIRE(train::run_train(a) == 0);
  std::vector<nlohmann::json> rows;
  std::ifstream in(dir / "run" / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

}  // namespace

TEST_CASE("GPT::loss with label smoothing matches a double-precision reference", "[trainer][models]") {
  layers::GPTConfig c;
  c.vocab_size = 11;
  c.block_size = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.d_model = 16;
  layers::GPT model(c, 3);
  core::Generator gen(9);
  std::vector<int32_t> ids(2 * 8), tg(2 * 8);
  for (auto& v : ids) v = static_cast<int32_t>(gen.next_u64() % 11);
  for (auto& v : tg) v = static_cast<int32_t>(gen.next_u64() % 11);
  const core::Tensor in = core::from_vector(ids, {2, 8}), targets = core::from_vector(tg, {2, 8});
  core::NoGradGuard no_grad;
  const std::vector<float> logits = model.forward(in).to_vector();
  for (double e : {0.0, 0.1, 0.35}) {
    const double got = model.loss(in, targets, -100, static_cast<float>(e)).item();
    CHECK(got == Approx(smoothed_ce(logits, tg, 11, e)).epsilon(1e-5));
  }
}

TEST_CASE("train.label_smoothing reaches the GPT training loss but not the validation loss", "[trainer]") {
  // Same seed, so the same initial weights and the same first batch: the
  // smoothed loss is affine in e, L(e) = L(0) + e·(U - L(0)).
  std::vector<double> train_loss, val_loss;
  for (double e : {0.0, 0.1, 0.2}) {
    auto task = train::make_task(lm_config(e), nullptr, "");
    int64_t tokens = 0;
    train_loss.push_back(task->next_loss(tokens).item());
    CHECK(tokens == 4 * 16);
    val_loss.push_back(task->evaluate().at("val_loss"));
  }
  CHECK(std::abs(train_loss[1] - train_loss[0]) > 1e-3);  // smoothing is not ignored
  CHECK(train_loss[2] - train_loss[1] == Approx(train_loss[1] - train_loss[0]).epsilon(1e-3));
  CHECK(val_loss[1] == Approx(val_loss[0]).epsilon(1e-6));
  CHECK(val_loss[2] == Approx(val_loss[0]).epsilon(1e-6));
}

TEST_CASE("train.eval_every = 0 never evaluates; otherwise every N steps and at the last step", "[trainer]") {
  SECTION("0: no validation loss anywhere, no best.h5") {
    TempDir dir("eval_never");
    const auto rows = run_and_read_metrics(dir.path, "0", 5);
    REQUIRE(rows.size() == 5);
    for (const auto& r : rows) CHECK_FALSE(r.contains("val_loss"));
    CHECK_FALSE(fs::exists(dir.path / "run" / "best.h5"));
    CHECK(fs::exists(dir.path / "run" / "last.h5"));  // the run is still saved at the end
  }
  SECTION("3 of 5 steps: steps 3 and 5") {
    TempDir dir("eval_every3");
    const auto rows = run_and_read_metrics(dir.path, "3", 5);
    REQUIRE(rows.size() == 5);
    for (int i = 0; i < 5; ++i) CHECK(rows[static_cast<std::size_t>(i)].contains("val_loss") == (i == 2 || i == 4));
    CHECK(fs::exists(dir.path / "run" / "best.h5"));
  }
}
