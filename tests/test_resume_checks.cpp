// Integers read back from a checkpoint are range-checked before the trainer,
// the data streams or the optimizer use them. Each case trains two steps,
// rewrites last.h5 with tfm's own writer after editing one integer, and
// resumes: the error must name the attribute, the value and the allowed range.
// The unedited rewrite resumes fine, so it is the value that is rejected.
#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "temp_dir.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace tfm::train;
using Catch::Matchers::Contains;
using tfm::test::TempDir;

namespace {

const std::string kFixture = std::string(TFM_TEST_DATA_DIR) + "/fixtures/genesis1.txt";

// A two-step GPT run in epoch sampling mode (so epoch_position is used).
fs::path train_gpt(const fs::path& dir) {
  const fs::path cfg = dir / "gpt.yaml";
  std::ofstream(cfg) << "model:\n  n_layers: 1\n  n_heads: 2\n  d_model: 16\n  block_size: 16\n"
                     << "data:\n  path: " << kFixture << "\n  sampling: epoch\n"
                     << "schedule:\n  kind: constant\n"
                     << "train:\n  max_steps: 2\n  batch_size: 4\n  eval_every: 0\n  eval_steps: 1\n"
                     << "  threads: 1\n  out_dir: " << (dir / "run").string() << "\n";
  TrainArgs a;
  a.config_path = cfg.string();
  a.quiet = true;
  REQUIRE(run_train(a) == 0);
  return dir / "run" / "last.h5";
}

// A two-step translation run (batch_position).
fs::path train_seq2seq(const fs::path& dir) {
  {
    std::ofstream tsv(dir / "pairs.tsv");
    const char* en[] = {"one", "two", "three", "four", "five", "six"};
    const char* es[] = {"uno", "dos", "tres", "cuatro", "cinco", "seis"};
    for (int i = 0; i < 120; ++i) tsv << en[i % 6] << " " << en[(i / 6) % 6] << "\t" << es[i % 6] << " " << es[(i / 6) % 6] << "\n";
  }
  const fs::path cfg = dir / "s2s.yaml";
  std::ofstream(cfg) << "model:\n  family: seq2seq\n  enc_layers: 1\n  dec_layers: 1\n  n_heads: 2\n  d_model: 16\n"
                     << "  d_ff: 32\n  block_size: 16\n"
                     << "data:\n  path: " << (dir / "pairs.tsv").string()
                     << "\n  tokenizer: sentencepiece\n  vocab_size: 30\n  sp_byte_fallback: false\n"
                     << "schedule:\n  kind: constant\n"
                     << "train:\n  max_steps: 2\n  batch_tokens: 64\n  eval_every: 0\n  threads: 1\n  out_dir: "
                     << (dir / "run").string() << "\n";
  TrainArgs a;
  a.config_path = cfg.string();
  a.quiet = true;
  REQUIRE(run_train(a) == 0);
  return dir / "run" / "last.h5";
}

// Rewrites `from` as `to` with ints[key] = value (the key must exist).
void rewrite_with(const fs::path& from, const fs::path& to, const std::string& key, int64_t value) {
  CheckpointData d = load_checkpoint(from.string());
  REQUIRE(d.ints.count(key) == 1);
  d.ints[key] = value;
  save_checkpoint(to.string(), d);
}

std::string resume_error(const fs::path& ckpt, int64_t max_steps) {
  TrainArgs r;
  r.resume = ckpt.string();
  r.quiet = true;
  r.overrides = {"train.max_steps=" + std::to_string(max_steps)};
  try {
    run_train(r);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("resuming rejects out-of-range integers from a GPT checkpoint", "[trainer][checkpoint]") {
  TempDir dir("resume_range_gpt");
  const fs::path last = train_gpt(dir.path);
  const CheckpointData ck = load_checkpoint(last.string());
  const int64_t step = ck.ints.at("step"), tokens = ck.ints.at("tokens_seen");
  REQUIRE(step == 2);
  REQUIRE(ck.ints.at("epoch_position") == 8);  // 2 steps x 4 windows
  const fs::path edited = dir.path / "run" / "edited.h5";

  SECTION("an unedited rewrite resumes") {
    rewrite_with(last, edited, "step", step);
    CHECK(resume_error(edited, 3).empty());
  }
  SECTION("negative epoch_position (used to index before the permutation)") {
    rewrite_with(last, edited, "epoch_position", -3);
    const std::string msg = resume_error(edited, 3);
    CHECK_THAT(msg, Contains(edited.string()) && Contains("'epoch_position' = -3") &&
                        Contains("allowed 0 to " + std::to_string(tokens)));
  }
  SECTION("epoch_position beyond the windows the run can have served") {
    rewrite_with(last, edited, "epoch_position", tokens + 1);
    CHECK_THAT(resume_error(edited, 3), Contains("'epoch_position'") && Contains("out of range"));
  }
  SECTION("negative optimizer_steps (would reverse Adam's bias correction)") {
    rewrite_with(last, edited, "optimizer_steps", -1);
    CHECK_THAT(resume_error(edited, 3), Contains("'optimizer_steps' = -1") && Contains("allowed 0 to 2"));
  }
  SECTION("more optimizer steps than steps") {
    rewrite_with(last, edited, "optimizer_steps", 3);
    CHECK_THAT(resume_error(edited, 4), Contains("'optimizer_steps' = 3") && Contains("allowed 0 to 2"));
  }
  SECTION("negative step") {
    rewrite_with(last, edited, "step", -1);
    CHECK_THAT(resume_error(edited, 3), Contains("'step' = -1") && Contains("allowed 0 to 1000000000000"));
  }
  SECTION("negative tokens_seen") {
    rewrite_with(last, edited, "tokens_seen", -5);
    CHECK_THAT(resume_error(edited, 3), Contains("'tokens_seen' = -5") && Contains("allowed 0 to"));
  }
}

TEST_CASE("resuming rejects a huge batch_position from a translation checkpoint", "[trainer][checkpoint]") {
  TempDir dir("resume_range_s2s");
  const fs::path last = train_seq2seq(dir.path);
  const CheckpointData ck = load_checkpoint(last.string());
  REQUIRE(ck.ints.at("batch_position") == 2);
  const int64_t tokens = ck.ints.at("tokens_seen");
  const fs::path edited = dir.path / "run" / "edited.h5";

  SECTION("an unedited rewrite resumes") {
    rewrite_with(last, edited, "batch_position", 2);
    CHECK(resume_error(edited, 3).empty());
  }
  SECTION("a huge position (would build epochs practically forever)") {
    rewrite_with(last, edited, "batch_position", std::numeric_limits<int64_t>::max() / 2);
    CHECK_THAT(resume_error(edited, 3), Contains(edited.string()) && Contains("'batch_position'") &&
                                            Contains("allowed 0 to " + std::to_string(tokens)));
  }
  SECTION("a negative position") {
    rewrite_with(last, edited, "batch_position", -1);
    CHECK_THAT(resume_error(edited, 3), Contains("'batch_position' = -1"));
  }
}
