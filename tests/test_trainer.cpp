// The training loop end to end on a tiny fixture: loss falls, run directory
// contents, exact resume, checkpoint retention, bad input, non-finite
// losses, SIGINT, mismatched checkpoints, and sampling from a checkpoint.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/allocator.h"
#include "core/error.h"
#include "temp_dir.h"
#include "train/checkpoint.h"
#include "core/rng.h"
#include "tests/number_words.h"
#include "tools/evaluate.h"
#include "tools/generate.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace tfm::train;
using Catch::Matchers::Contains;

namespace {

const std::string kFixture = std::string(TFM_TEST_DATA_DIR) + "/fixtures/genesis1.txt";

using tfm::test::TempDir;

fs::path write_config(const fs::path& dir, const std::string& extra = "") {
  const fs::path cfg = dir / "run.yaml";
  std::ofstream(cfg) << "model:\n  n_layers: 2\n  n_heads: 2\n  d_model: 32\n  block_size: 32\n"
                     << "data:\n  path: " << kFixture << "\n"
                     << "optim:\n  lr: 0.003\n  weight_decay: 0.1\n"
                     << "schedule:\n  kind: cosine\n  warmup_steps: 5\n  total_steps: 40\n"
                     << "train:\n  max_steps: 40\n  batch_size: 8\n  log_every: 1\n  eval_every: 10\n  eval_steps: 2\n"
                     << "  checkpoint_every: 10\n  keep_last: 2\n  threads: 2\n  out_dir: " << (dir / "run").string()
                     << "\n"
                     << extra;
  return cfg;
}

std::vector<nlohmann::json> read_metrics(const fs::path& run) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// A toy corpus (English number words -> Spanish number words, 1 to 4 words
// a line) in dir/train.tsv and dir/valid.tsv, and dir/t.yaml training a tiny
// Seq2Seq on it; `model` and `train` are added to those sections.
fs::path write_seq2seq_config(const fs::path& dir, const std::string& model, const std::string& train) {
  tfm::core::Generator g(5);
  auto write_tsv = [&](const std::string& p, int n) { tfm::test::write_number_pairs(p, n, 4, g); };
  write_tsv(dir / "train.tsv", 400);
  write_tsv(dir / "valid.tsv", 20);
  const fs::path cfg = dir / "t.yaml";
  std::ofstream(cfg) << "model:\n  family: seq2seq\n  enc_layers: 1\n  dec_layers: 1\n  n_heads: 2\n  d_model: 32\n"
                     << "  d_ff: 64\n  block_size: 32\n  positions: sinusoidal\n" << model
                     << "data:\n  path: " << (dir / "train.tsv").string() << "\n  valid_path: "
                     << (dir / "valid.tsv").string() << "\n  tokenizer: sentencepiece\n  vocab_size: 40\n  sp_byte_fallback: false\n"
                     << "optim:\n  name: adam\n  lr: 0.003\n"
                     << "schedule:\n  kind: inverse_sqrt\n  warmup_steps: 10\n"
                     << "train:\n  batch_tokens: 256\n  log_every: 1\n  label_smoothing: 0.1\n  threads: 2\n"
                     << "  out_dir: " << (dir / "run").string() << "\n" << train;
  return cfg;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("training a tiny GPT lowers the loss and writes a complete run directory", "[trainer]") {
  TempDir dir("train");
  TrainArgs a;
  a.config_path = write_config(dir.path).string();
  a.quiet = true;
  REQUIRE(run_train(a) == 0);
  const fs::path run = dir.path / "run";
  const auto rows = read_metrics(run);
  REQUIRE(rows.size() == 40);
  for (const auto& key : {"step", "train_loss", "lr", "tokens_per_s", "elapsed_s"}) CHECK(rows[0].contains(key));
  // Each row's training window (bench/train_throughput sums them): the
  // step's tokens, and a positive time shorter than the interval since the
  // previous row (which also holds the previous row's logging and, after
  // step 10, its evaluation).
  for (const auto& r : rows) {
    CHECK(r["window_tokens"].get<int64_t>() == 8 * 32);
    CHECK(r["window_s"].get<double>() > 0.0);
  }
  CHECK(rows[10]["window_s"].get<double>() <
        rows[10]["elapsed_s"].get<double>() - rows[9]["elapsed_s"].get<double>());
  CHECK(rows.back()["train_loss"].get<double>() < rows.front()["train_loss"].get<double>() - 0.5);
  CHECK(rows[9].contains("val_loss"));
  CHECK_FALSE(rows[8].contains("val_loss"));
  CHECK(fs::exists(run / "config.yaml"));
  CHECK(fs::exists(run / "train.log"));
  CHECK(fs::exists(run / "last.h5"));
  CHECK(fs::exists(run / "best.h5"));
  // keep_last = 2: only the two newest numbered checkpoints remain.
  CHECK(fs::exists(run / "ckpt_0000040.h5"));
  CHECK(fs::exists(run / "ckpt_0000030.h5"));
  CHECK_FALSE(fs::exists(run / "ckpt_0000020.h5"));
  const CheckpointData ck = load_checkpoint((run / "last.h5").string());
  CHECK(ck.ints.at("step") == 40);
  CHECK(ck.tokenizer_kind == "char");
  CHECK_THAT(ck.config_yaml, Contains("max_steps: 40"));
  std::ostringstream sample;
  SampleArgs s;
  s.checkpoint = run.string();
  s.prompt = "And God";
  s.tokens = 40;
  s.seed = 3;
  run_sample(s, sample);
  CHECK(sample.str().rfind("And God", 0) == 0);
  CHECK(sample.str().size() > 40);
  std::ostringstream again;
  run_sample(s, again);
  CHECK(again.str() == sample.str());  // reproducible for a seed
  // A new run never overwrites an existing one.
  REQUIRE_THROWS_WITH(run_train(a), Contains("already holds a run") && Contains("--resume"));
}

TEST_CASE("a stopped and resumed run equals an uninterrupted one", "[trainer]") {
  TempDir dir("resume");
  TrainArgs full;
  full.config_path = write_config(dir.path, "").string();
  full.overrides = {"train.out_dir=" + (dir.path / "full").string(), "model.dropout=0.1"};
  full.quiet = true;
  REQUIRE(run_train(full) == 0);
  TrainArgs first = full;
  first.overrides = {"train.out_dir=" + (dir.path / "split").string(), "model.dropout=0.1", "train.max_steps=20"};
  REQUIRE(run_train(first) == 0);
  TrainArgs second;
  second.resume = (dir.path / "split").string();
  second.overrides = {"train.max_steps=40"};
  second.quiet = true;
  REQUIRE(run_train(second) == 0);
  const auto a = read_metrics(dir.path / "full"), b = read_metrics(dir.path / "split");
  REQUIRE(a.size() == 40);
  REQUIRE(b.size() == 40);
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(a[i]["step"] == b[i]["step"]);
    CHECK(a[i]["train_loss"].get<double>() == b[i]["train_loss"].get<double>());
  }
  const CheckpointData ca = load_checkpoint((dir.path / "full" / "last.h5").string());
  const CheckpointData cb = load_checkpoint((dir.path / "split" / "last.h5").string());
  REQUIRE(ca.params.size() == cb.params.size());
  for (std::size_t i = 0; i < ca.params.size(); ++i) {
    INFO(ca.params[i].first);
    CHECK(ca.params[i].second.to_vector() == cb.params[i].second.to_vector());  // bitwise
  }
}

TEST_CASE("bad input is rejected before anything is written", "[trainer]") {
  TempDir dir("bad");
  TrainArgs a;
  a.quiet = true;
  a.config_path = write_config(dir.path, "").string();
  a.overrides = {"model.n_heads=3"};
  REQUIRE_THROWS_WITH(run_train(a), Contains("model.d_model") && Contains("model.n_heads"));
  a.overrides = {"data.path=" + (dir.path / "missing.txt").string()};
  REQUIRE_THROWS_WITH(run_train(a), Contains("missing.txt"));
  { std::ofstream(dir.path / "bad.txt", std::ios::binary) << "ok line\nbad \xff byte\n"; }
  a.overrides = {"data.path=" + (dir.path / "bad.txt").string()};
  REQUIRE_THROWS_WITH(run_train(a), Contains("bad.txt:2") && Contains("UTF-8"));
  CHECK_FALSE(fs::exists(dir.path / "run"));
  TrainArgs r;
  r.resume = (dir.path / "nowhere").string();
  REQUIRE_THROWS_WITH(run_train(r), Contains("nowhere"));
}

TEST_CASE("a checkpoint that does not match the config lists the mismatches", "[trainer]") {
  TempDir dir("mismatch");
  TrainArgs a;
  a.quiet = true;
  a.config_path = write_config(dir.path).string();
  a.overrides = {"train.max_steps=2", "schedule.total_steps=2", "schedule.warmup_steps=1"};
  REQUIRE(run_train(a) == 0);
  // A resumed run may not --set an architecture key, so the mismatch comes
  // from a checkpoint whose stored config was edited (d_model 32 -> 64).
  const fs::path edited = dir.path / "edited.h5";
  {
    CheckpointData d = load_checkpoint((dir.path / "run" / "last.h5").string());
    const auto at = d.config_yaml.find("d_model: 32");
    REQUIRE(at != std::string::npos);
    d.config_yaml.replace(at, 11, "d_model: 64");
    save_checkpoint(edited.string(), d);
  }
  TrainArgs r;
  r.quiet = true;
  r.resume = edited.string();
  r.overrides = {"train.max_steps=4"};
  REQUIRE_THROWS_WITH(run_train(r), Contains("mismatches") && Contains("tok_emb.weight") && Contains("[") &&
                                        Contains("shape differs"));
}

TEST_CASE("a non-finite loss stops the run unless skipping is configured", "[trainer]") {
  TempDir dir("nan");
  TrainArgs a;
  a.quiet = true;
  a.config_path = write_config(dir.path).string();
  a.overrides = {"optim.name=sgd", "optim.lr=1e30", "schedule.kind=constant", "train.grad_clip=0",
                 "train.max_steps=6"};
  CHECK(run_train(a) == 3);
  a.overrides.push_back("train.skip_nonfinite=true");
  a.overrides.push_back("train.out_dir=" + (dir.path / "run2").string());
  CHECK(run_train(a) == 0);
}

TEST_CASE("SIGINT finishes the step, writes a checkpoint and returns 0", "[trainer]") {
  TempDir dir("sigint");
  TrainArgs a;
  a.quiet = true;
  a.config_path = write_config(dir.path).string();
  a.overrides = {"train.max_steps=100000", "schedule.total_steps=100000", "train.checkpoint_every=0",
                 "train.eval_every=0"};
  int status = -1;
  std::thread t([&] { status = run_train(a); });
  const fs::path metrics = dir.path / "run" / "metrics.jsonl";
  for (int i = 0; i < 600 && read_metrics(dir.path / "run").size() < 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE(read_metrics(dir.path / "run").size() >= 3);
  kill(getpid(), SIGINT);
  t.join();
  CHECK(status == 0);
  const CheckpointData ck = load_checkpoint((dir.path / "run" / "last.h5").string());
  CHECK(ck.ints.at("step") >= 3);
  CHECK(ck.ints.at("step") < 100000);
}

TEST_CASE("a tiny translation model trains from a config and translates from its checkpoint", "[trainer][translation]") {
  TempDir dir("seq2seq");
  const fs::path cfg = write_seq2seq_config(dir.path, "  dropout: 0.0\n",
                                            "  max_steps: 60\n  eval_every: 30\n  eval_bleu: true\n"
                                            "  eval_bleu_sentences: 20\n  best_metric: val_bleu\n");
  TrainArgs a;
  a.config_path = cfg.string();
  a.quiet = true;
  REQUIRE(run_train(a) == 0);
  const auto rows = read_metrics(dir.path / "run");
  REQUIRE(rows.size() == 60);
  CHECK(rows.back()["train_loss"].get<double>() < rows.front()["train_loss"].get<double>() - 1.0);
  CHECK(rows.back().contains("val_bleu"));
  CHECK(fs::exists(dir.path / "run" / "best.h5"));
  const CheckpointData ck = load_checkpoint((dir.path / "run" / "last.h5").string());
  CHECK(ck.tokenizer_kind == "sentencepiece");
  std::istringstream in("three four\none\n\nten two five\n");
  std::ostringstream out;
  TranslateArgs t;
  t.checkpoint = (dir.path / "run").string();
  t.beam = 3;
  run_translate(t, in, out);
  std::vector<std::string> lines;
  std::istringstream res(out.str());
  for (std::string l; std::getline(res, l);) lines.push_back(l);
  REQUIRE(lines.size() == 4);  // one output line per input line, empty stays empty
  CHECK(lines[2].empty());
  CHECK_FALSE(lines[0].empty());
  std::ostringstream ev;
  EvalArgs e;
  e.checkpoint = t.checkpoint;
  e.beam = 1;
  run_eval(e, ev);
  CHECK_THAT(ev.str(), Contains("BLEU = ") && Contains("perplexity"));
}

TEST_CASE("the memory check reaches the run's peak memory before the first step and changes no result", "[trainer][translation]") {
  // Dropout on: the check must not draw numbers that training would see.
  std::vector<nlohmann::json> rows[2];
  for (int check : {1, 0}) {
    tfm::core::empty_cache();  // each run starts with no cached segments
    TempDir dir("memcheck");
    const fs::path cfg = write_seq2seq_config(dir.path, "  dropout: 0.1\n",
                                              std::string("  max_steps: 40\n  eval_every: 0\n  memory_check: ") +
                                                  (check ? "true" : "false") + "\n");
    TrainArgs a;
    a.config_path = cfg.string();
    a.quiet = true;
    REQUIRE(run_train(a) == 0);
    rows[check] = read_metrics(dir.path / "run");
    REQUIRE(rows[check].size() == 40);
    const std::string log = read_text(dir.path / "run" / "train.log");
    CHECK((log.find("memory check: forward and backward of the run's") != std::string::npos) == (check == 1));
  }
  for (std::size_t i = 0; i < 40; ++i) {
    INFO("step " << i + 1);
    CHECK(rows[1][i]["train_loss"].get<double>() == rows[0][i]["train_loss"].get<double>());
    CHECK(rows[1][i]["grad_norm"].get<double>() == rows[0][i]["grad_norm"].get<double>());
    // With the check the first step's peak is the run's (within 1%: the
    // check's batches are the heaviest by padded sizes, and a batch's memory
    // also depends on its real token count).
    CHECK(rows[1][i]["peak_mem_bytes"].get<double>() <= 1.01 * rows[1][0]["peak_mem_bytes"].get<double>());
  }
  // Without it the peak grows by more than that when a larger batch arrives.
  CHECK(rows[0].back()["peak_mem_bytes"].get<double>() > 1.03 * rows[0].front()["peak_mem_bytes"].get<double>());

  // With gradient accumulation the later micro-batches of a step run with the
  // gradients live; the check's batches do too.
  tfm::core::empty_cache();
  TempDir dir("memcheck_accum");
  TrainArgs a;
  a.config_path = write_seq2seq_config(dir.path, "  dropout: 0.1\n", "  max_steps: 20\n  eval_every: 0\n  grad_accum: 2\n").string();
  a.quiet = true;
  REQUIRE(run_train(a) == 0);
  const auto accum = read_metrics(dir.path / "run");
  REQUIRE(accum.size() == 20);
  for (const auto& row : accum) CHECK(row["peak_mem_bytes"].get<double>() <= 1.01 * accum[0]["peak_mem_bytes"].get<double>());
}
