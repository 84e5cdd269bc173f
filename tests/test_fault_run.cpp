// Fault injection around `tfm train` as a user runs it (the real binary in a
// child process): a full disk at start, during a checkpoint and while
// logging; SIGINT during a long evaluation and right after start-up; two
// processes training into one directory; temporaries left by a killed save.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <regex>

#include "fault_util.h"
#include "temp_dir.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;
using namespace tfm::train;
using tfm::test::TempDir;
using Catch::Matchers::Contains;

namespace {

const std::string kFixture = std::string(TFM_TEST_DATA_DIR) + "/fixtures/genesis1.txt";

// The tiny GPT of test_trainer.cpp, training into `out_dir`.
std::string write_config(const fs::path& dir, const fs::path& out_dir, const std::string& data = kFixture,
                         const std::string& extra = "") {
  const fs::path cfg = dir / "run.yaml";
  std::ofstream(cfg) << "model:\n  n_layers: 2\n  n_heads: 2\n  d_model: 32\n  block_size: 32\n"
                     << "data:\n  path: " << data << "\n"
                     << "train:\n  max_steps: 100000\n  batch_size: 8\n  log_every: 1\n  eval_every: 0\n  eval_steps: 2\n"
                     << "  checkpoint_every: 10\n  keep_last: 2\n  threads: 1\n  out_dir: " << out_dir.string() << "\n"
                     << extra;
  return cfg.string();
}

std::string read(const fs::path& p) { return tfm::test::read_file(p); }

// Waits until `file` contains `needle` (or `seconds` pass); returns whether it did.
bool wait_for_text(const fs::path& file, const std::string& needle, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (read(file).find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// Every line of metrics.jsonl is a whole JSON object.
void check_metrics_whole(const fs::path& run) {
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) CHECK_NOTHROW(nlohmann::json::parse(line));
  const std::string all = read(run / "metrics.jsonl");
  CHECK((all.empty() || all.back() == '\n'));
}

}  // namespace

TEST_CASE("tfm train on a full disk exits 1 naming ENOSPC and the file and leaves no temp files", "[fault][trainer]") {
  TempDir dir("fault_run_disk");
  tfm::test::SmallTmpfs small(dir.file("small"), "3m");
  if (!small.ok) {
    WARN("skipped: " << small.reason);
    return;
  }
  const fs::path out = fs::path(small.dir) / "run";
  const std::string log = dir.file("out.txt");

  SECTION("full at start") {
    small.fill("filler", 0);
    const int status = tfm::test::wait_for(tfm::test::spawn_tfm({"train", write_config(dir.path, out)}, log), 60);
    CHECK(tfm::test::exited_with(status, 1));
    CHECK_THAT(read(log), Contains("No space left on device"));
    CHECK(tfm::test::temp_files(out).empty());
  }
  SECTION("full at the first checkpoint") {
    small.fill("filler", 120 * 1024);  // the log and metrics fit, a checkpoint (~350 KB) does not
    const int status = tfm::test::wait_for(tfm::test::spawn_tfm({"train", write_config(dir.path, out)}, log), 60);
    CHECK(tfm::test::exited_with(status, 1));
    CHECK_THAT(read(log), Contains("No space left on device"));
    CHECK_THAT(read(log), Contains("ckpt_0000010.h5"));
    CHECK(tfm::test::temp_files(out).empty());
    check_metrics_whole(out);
  }
  SECTION("full while logging") {
    small.fill("filler", 16 * 1024);
    const std::string cfg = write_config(dir.path, out, kFixture, "");
    const int status = tfm::test::wait_for(
        tfm::test::spawn_tfm({"train", cfg, "--set", "train.checkpoint_every=0"}, log), 120);
    CHECK(tfm::test::exited_with(status, 1));
    CHECK_THAT(read(log), Contains("No space left on device"));
    CHECK_THAT(read(log), Contains("stopping the run"));
    CHECK(tfm::test::temp_files(out).empty());
    check_metrics_whole(out);
  }
}

TEST_CASE("SIGINT during a long evaluation stops within seconds with a checkpoint", "[fault][trainer]") {
  TempDir dir("fault_run_eval");
  // A long validation split: evaluating all of it (train.eval_steps is clamped to the split) takes many seconds.
  const std::string text = read(kFixture);
  const fs::path data = dir.path / "big.txt";
  {
    std::ofstream out(data);
    for (int i = 0; i < 300; ++i) out << text;
  }
  const fs::path out = dir.path / "run";
  const std::string cfg = write_config(dir.path, out, data.string());
  const std::string log = dir.file("out.txt");
  const pid_t pid = tfm::test::spawn_tfm(
      {"train", cfg, "--set", "model.d_model=64", "--set", "data.valid_fraction=0.5", "--set", "train.eval_every=3", "--set",
       "train.eval_steps=1000000000", "--set", "train.batch_size=32", "--set", "train.checkpoint_every=0"},
      log);
  tfm::test::ChildGuard guard{pid};
  REQUIRE(wait_for_text(out / "train.log", "step      2/", 60));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // inside the evaluation at step 3
  const auto t0 = std::chrono::steady_clock::now();
  kill(pid, SIGINT);
  const int status = tfm::test::wait_for(pid, 30);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(tfm::test::exited_with(status, 0));
  CHECK(took < 5.0);
  const std::string train_log = read(out / "train.log");
  CHECK_THAT(train_log, Contains("clamped to"));
  CHECK_THAT(train_log, Contains("evaluation interrupted by signal 2"));
  CHECK_THAT(train_log, Contains("Resume with: tfm train --resume"));
  CHECK(load_checkpoint((out / "last.h5").string()).ints.at("step") == 3);
}

TEST_CASE("a signal right after start-up is kept and gives a checkpoint at step 0 and status 0", "[fault][trainer]") {
  TempDir dir("fault_run_early");
  const fs::path out = dir.path / "run";
  const std::string log = dir.file("out.txt");
  // Without OMP_WAIT_POLICY tfm re-executes itself: the signal must survive that too.
  const pid_t pid = tfm::test::spawn_tfm({"train", write_config(dir.path, out)}, log, /*unset_omp=*/true);
  tfm::test::ChildGuard guard{pid};
  // Send SIGINT the moment the process catches it (SigCgt bit 2), long before the trainer starts.
  bool caught = false;
  for (int i = 0; i < 4000 && !caught; ++i) {
    // After the exec (before it, the forked test process still has Catch's handlers).
    std::error_code ec;
    if (fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec) != fs::path(TFM_BINARY)) {
      std::this_thread::sleep_for(std::chrono::microseconds(250));
      continue;
    }
    std::ifstream st("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(st, line);)
      if (line.rfind("SigCgt:", 0) == 0) caught = (std::stoull(line.substr(7), nullptr, 16) & 2u) != 0;
    if (!caught) std::this_thread::sleep_for(std::chrono::microseconds(250));
  }
  REQUIRE(caught);
  kill(pid, SIGINT);
  const int status = tfm::test::wait_for(pid, 60);
  INFO(read(log));
  CHECK(tfm::test::exited_with(status, 0));
  REQUIRE(fs::exists(out / "last.h5"));
  CHECK(load_checkpoint((out / "last.h5").string()).ints.at("step") == 0);
  // The step-0 checkpoint has no optimizer state yet (the first step makes
  // it): resuming it must work all the same (it used to fail, "optimizer
  // state 'exp_avg/...' is missing").
  const pid_t again = tfm::test::spawn_tfm({"train", "--resume", out.string(), "--set", "train.max_steps=2"}, log);
  tfm::test::ChildGuard guard2{again};
  const int resumed = tfm::test::wait_for(again, 60);
  INFO(read(log));
  CHECK(tfm::test::exited_with(resumed, 0));
  CHECK(load_checkpoint((out / "last.h5").string()).ints.at("step") == 2);
}

TEST_CASE("a second tfm train into a busy run directory is refused naming the first one's PID", "[fault][trainer][lock]") {
  TempDir dir("fault_run_lock");
  const fs::path out = dir.path / "run";
  const std::string cfg = write_config(dir.path, out);
  const pid_t first = tfm::test::spawn_tfm({"train", cfg}, dir.file("first.txt"));
  tfm::test::ChildGuard guard{first};
  REQUIRE(wait_for_text(out / "train.log", "step      2/", 60));
  // A new run and a resume are both refused while the first one trains.
  for (const std::vector<std::string>& args : {std::vector<std::string>{"train", cfg},
                                               std::vector<std::string>{"train", "--resume", out.string()}}) {
    const std::string second_log = dir.file("second.txt");
    REQUIRE(wait_for_text(out / "train.log", "step     11/", 60));  // last.h5 exists for the resume
    const int status = tfm::test::wait_for(tfm::test::spawn_tfm(args, second_log), 60);
    CHECK(tfm::test::exited_with(status, 1));
    CHECK_THAT(read(second_log), Contains("in use by another tfm process (PID " + std::to_string(first) + ")"));
  }
  kill(first, SIGINT);
  CHECK(tfm::test::exited_with(tfm::test::wait_for(first, 30), 0));
  // No duplicate rows: steps strictly increase.
  int64_t prev = 0;
  std::ifstream in(out / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const int64_t step = nlohmann::json::parse(line).at("step").get<int64_t>();
    CHECK(step > prev);
    prev = step;
  }
}

TEST_CASE("resuming removes the temporaries a killed save left behind", "[fault][trainer]") {
  TempDir dir("fault_run_stale");
  const fs::path out = dir.path / "run";
  const std::string cfg = write_config(dir.path, out);
  REQUIRE(tfm::test::exited_with(
      tfm::test::wait_for(tfm::test::spawn_tfm({"train", cfg, "--set", "train.max_steps=10"}, dir.file("a.txt")), 60),
      0));
  std::ofstream(out / ".ckpt_0000020.h5.tmp-999999999") << "half a checkpoint";
  std::ofstream(out / ".last.h5.tmp") << "x";
  const int status = tfm::test::wait_for(
      tfm::test::spawn_tfm({"train", "--resume", out.string(), "--set", "train.max_steps=12"}, dir.file("b.txt")), 60);
  CHECK(tfm::test::exited_with(status, 0));
  CHECK(tfm::test::temp_files(out).empty());
  CHECK_THAT(read(out / "train.log"), Contains("a temporary file left by an interrupted save"));
}
