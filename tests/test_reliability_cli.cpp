// Issue 14 (configs and command lines): each class of bad input gets one
// error naming the key, flag or file and what is allowed. Duplicate YAML
// keys, sections that are not mappings, directories and devices given as
// files, a config beside --resume, architecture changes on resume, sizes
// that cannot fit, the allocator's out-of-memory error, NaN weights and
// broken tokenizers in checkpoints without the integrity header, data
// replaced between runs, and the command line's exit status and messages.
#include <catch2/catch.hpp>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/tensor.h"
#include "error_text.h"
#include "temp_dir.h"
#include "tools/evaluate.h"
#include "tools/generate.h"
#include "tools/inspect.h"
#include "tools/tools_cli.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/loaded_model.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace tfm::train;
using Catch::Matchers::Contains;
using tfm::test::TempDir;
using tfm::test::error_of;

namespace {

const std::string kFixture = std::string(TFM_TEST_DATA_DIR) + "/fixtures/genesis1.txt";

// Runs the tfm command line in-process: status, stdout and stderr.
struct CliResult {
  int status = -1;
  std::string out, err;
};
CliResult cli(std::vector<std::string> args, const std::string& stdin_text = "") {
  args.insert(args.begin(), "tfm");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  std::istringstream in(stdin_text);
  std::ostringstream out, err;
  CliResult r;
  r.status = parse_and_run(static_cast<int>(argv.size()), argv.data(), in, out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

// A two-step GPT run on `data` into dir/run; returns dir/run/last.h5.
fs::path train_tiny(const fs::path& dir, const std::string& data) {
  const fs::path cfg = dir / "gpt.yaml";
  std::ofstream(cfg) << "model:\n  n_layers: 1\n  n_heads: 2\n  d_model: 16\n  block_size: 16\n"
                     << "data:\n  path: " << data << "\n"
                     << "schedule:\n  kind: constant\n"
                     << "train:\n  max_steps: 2\n  batch_size: 4\n  eval_every: 0\n  threads: 1\n  out_dir: "
                     << (dir / "run").string() << "\n";
  TrainArgs a;
  a.config_path = cfg.string();
  a.quiet = true;
  REQUIRE(run_train(a) == 0);
  return dir / "run" / "last.h5";
}

std::string resume_error(const fs::path& ckpt, std::vector<std::string> overrides, const std::string& config = "") {
  TrainArgs r;
  r.resume = ckpt.string();
  r.config_path = config;
  r.quiet = true;
  r.overrides = std::move(overrides);
  return error_of([&] { run_train(r); });
}

}  // namespace

TEST_CASE("duplicate YAML keys are refused with both line numbers", "[config][reliability]") {
  const std::string e = error_of([] { Config::parse("model:\n  d_model: 64\n  n_heads: 2\n  d_model: 32\n", "run.yaml"); });
  CHECK_THAT(e, Contains("run.yaml:4") && Contains("duplicate key 'model.d_model'") && Contains("line 2"));
  CHECK_THAT(error_of([] { Config::parse("model:\n  d_model: 64\ntrain:\n  seed: 1\nmodel:\n  n_heads: 2\n", "r.yaml"); }),
             Contains("r.yaml:5") && Contains("duplicate key 'model'") && Contains("line 1"));
  // The same key in two sections is not a duplicate.
  CHECK_NOTHROW(Config::parse("model:\n  dropout: 0.1\ntrain:\n  seed: 3\n", "run.yaml"));
}

TEST_CASE("a section that is not a mapping names the section", "[config][reliability]") {
  const std::string e = error_of([] { Config::parse("model: 5\n", "run.yaml"); });
  CHECK_THAT(e, Contains("run.yaml:1") && Contains("'model' is a section") && Contains("mapping") && Contains("'5'"));
  CHECK_THAT(e, !Contains("did you mean"));
  CHECK_THAT(error_of([] { Config::parse("train: [1, 2]\n", "run.yaml"); }), Contains("'train' is a section"));
  CHECK_NOTHROW(Config::parse("model:\ntrain:\n  seed: 2\n", "run.yaml"));  // an empty section is fine
}

TEST_CASE("directories, FIFOs and devices given as files are named as such", "[config][reliability]") {
  TempDir dir("rel_files");
  CHECK_THAT(error_of([&] { Config::load(dir.path.string()); }),
             Contains("config file") && Contains(dir.path.string()) && Contains("is a directory"));
  CHECK_THAT(error_of([&] { Config::load((dir.path / "none.yaml").string()); }), Contains("no such file"));
  Config c;
  c.set("data.path", dir.path.string());
  CHECK_THAT(error_of([&] { c.validate(); }), Contains("data.path") && Contains("is a directory"));
  CHECK_THAT(error_of([] { resolve_checkpoint("/dev/null"); }),
             Contains("checkpoint") && Contains("/dev/null") && Contains("is a device"));
  const fs::path fifo = dir.path / "pipe";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THAT(error_of([&] { resolve_checkpoint(fifo.string()); }), Contains("is a FIFO"));
  CHECK_THAT(error_of([&] { check_regular_file(fifo.string(), "--data"); }), Contains("--data") && Contains("FIFO"));
}

TEST_CASE("data.valid_fraction = 0 with evaluations names the keys", "[config][reliability]") {
  Config c;
  c.set("data.path", kFixture);
  c.set("data.valid_fraction", "0");
  CHECK_THAT(error_of([&] { c.validate(); }),
             Contains("data.valid_fraction = 0") && Contains("train.eval_every") && Contains("0.5"));
  c.set("train.eval_every", "0");
  CHECK_NOTHROW(c.validate());
}

TEST_CASE("architecture keys are marked in the schema and refused on resume", "[config][reliability]") {
  for (const char* k : {"model.n_heads", "model.d_model", "model.activation", "model.positions", "model.family",
                        "data.tokenizer", "data.vocab_size"})
    CHECK(find_key(k)->architecture);
  for (const char* k : {"train.max_steps", "optim.lr", "train.eval_every", "model.dropout", "train.out_dir"})
    CHECK_FALSE(find_key(k)->architecture);
  const Config stored = Config::parse("model:\n  n_heads: 4\n  activation: gelu\n", "ckpt.h5 (config)");
  CHECK_NOTHROW(check_resume_overrides(stored, {"train.max_steps=10", "optim.lr=0.01", "model.n_heads=4"}, "ckpt.h5"));
  CHECK_THAT(error_of([&] { check_resume_overrides(stored, {"model.n_heads=8"}, "ckpt.h5"); }),
             Contains("model.n_heads") && Contains("ckpt.h5 was trained with model.n_heads = 4"));
  CHECK_THAT(error_of([&] { check_resume_overrides(stored, {"model.activation=relu"}, "ckpt.h5"); }),
             Contains("model.activation = gelu"));
}

TEST_CASE("resuming refuses a config file beside --resume and architecture overrides", "[trainer][reliability]") {
  TempDir dir("rel_resume");
  const fs::path last = train_tiny(dir.path, kFixture);
  CHECK_THAT(resume_error(last, {"train.max_steps=3"}, (dir.path / "gpt.yaml").string()),
             Contains("not both") && Contains("--resume"));
  CHECK_THAT(resume_error(last, {"model.n_heads=4", "train.max_steps=3"}),
             Contains("--set model.n_heads=4") && Contains("model.n_heads = 2"));
  CHECK(resume_error(last, {"train.max_steps=3", "optim.lr=0.0005"}) == "(no error)");
}

TEST_CASE("sizes that cannot fit are refused before anything is allocated", "[config][reliability]") {
  Config c;
  c.set("data.path", kFixture);
  c.set("model.d_model", "16384");
  const std::string e = error_of([&] { check_training_memory(c); });
  CHECK_THAT(e, Contains("GiB estimated") && Contains("model.d_model = 16384") && Contains("train.memory_limit_gb"));
  c.set("train.memory_limit_gb", "1000000");  // the override lets it through
  CHECK_NOTHROW(check_training_memory(c));
  Config b;
  b.set("train.batch_size", "1048576");
  CHECK_THAT(error_of([&] { check_training_memory(b); }), Contains("train.batch_size = 1048576"));
  b.set("train.batch_size", "12");
  CHECK_NOTHROW(check_training_memory(b));  // the defaults fit
  b.set("train.memory_limit_gb", "0.0001");
  CHECK_THAT(error_of([&] { check_training_memory(b); }), Contains("more than train.memory_limit_gb = 0.0001"));
}

TEST_CASE("the parameter estimate matches the models' real parameter counts", "[config][reliability]") {
  const char* variants[] = {"model:\n  d_model: 32\n  n_heads: 2\n  n_layers: 3\n",
                            "model:\n  d_model: 24\n  n_heads: 3\n  activation: swiglu\n  bias: false\n  tie_embeddings: false\n",
                            "model:\n  d_model: 16\n  n_heads: 2\n  norm: rmsnorm\n  positions: rope\n  d_ff: 40\n",
                            "model:\n  family: seq2seq\n  d_model: 32\n  n_heads: 2\n  d_ff: 64\n",
                            "model:\n  family: seq2seq\n  d_model: 16\n  n_heads: 2\n  share_embeddings: true\n"};
  for (const char* v : variants) {
    INFO(v);
    const Config c = Config::parse(v, "v.yaml");
    const int64_t vocab = 50;
    const FamilyModel m = build_model(c, vocab, vocab, 0);
    int64_t real = 0;
    for (const auto& [n, p] : m.module().named_parameters()) real += p.numel();
    const double est = estimate_training_memory(c, vocab).params;
    CHECK(est == Approx(static_cast<double>(real)).epsilon(0.02));
  }
}

TEST_CASE("an allocation that fails names its size", "[memory][reliability]") {
  // 2^46 floats (256 TiB) is more than the address space: the OS must refuse.
  const std::string e = error_of([] { tfm::core::empty({int64_t{1} << 46}); });
  CHECK_THAT(e, Contains("out of memory") && Contains("281474976710656 bytes"));
}

TEST_CASE("NaN weights and broken tokenizers are refused on load and flagged by inspect", "[checkpoint][reliability]") {
  TempDir dir("rel_ckpt");
  const fs::path last = train_tiny(dir.path, kFixture);
  CHECK(checkpoint_problems(load_checkpoint(last.string())).empty());
  const fs::path nan_file = dir.path / "nan.h5", tok_file = dir.path / "tok.h5";
  {
    CheckpointData d = load_checkpoint(last.string());
    d.params[0].second.data<float>()[1] = std::nanf("");
    save_checkpoint(nan_file.string(), d);
    CheckpointData t = load_checkpoint(last.string());
    t.tokenizer_blob.resize(t.tokenizer_blob.size() / 2);  // a truncated vocabulary
    save_checkpoint(tok_file.string(), t);
  }
  const std::string first = load_checkpoint(last.string()).params[0].first;
  SampleArgs s;
  s.checkpoint = nan_file.string();
  s.tokens = 3;
  std::ostringstream sink;
  CHECK_THAT(error_of([&] { run_sample(s, sink); }),
             Contains("tfm sample refuses") && Contains(first) && Contains("1 of") && Contains("NaN or Inf"));
  CHECK_THAT(resume_error(nan_file, {"train.max_steps=3"}), Contains("train --resume refuses") && Contains(first));
  s.checkpoint = tok_file.string();
  CHECK_THAT(error_of([&] { run_sample(s, sink); }), Contains("refuses") && Contains("tokenizer"));
  for (const fs::path& f : {nan_file, tok_file}) {
    InspectArgs i;
    i.checkpoint = f.string();
    std::ostringstream out;
    REQUIRE_NOTHROW(run_inspect(i, out));
    CHECK_THAT(out.str(), Contains("warning") && Contains("refuse"));
  }
}

TEST_CASE("data replaced between runs is refused on resume, data that still fits warns", "[trainer][reliability]") {
  TempDir dir("rel_data");
  const fs::path data = dir.path / "text.txt";
  fs::copy_file(kFixture, data);
  const fs::path last = train_tiny(dir.path, data.string());
  REQUIRE(load_checkpoint(last.string()).meta.count("data_fingerprint") == 1);
  {  // the same alphabet, a little more text: resumes (with a warning)
    std::ofstream(data, std::ios::app) << "And God saw the light.\n";
  }
  CHECK(resume_error(last, {"train.max_steps=3"}) == "(no error)");
  {  // another alphabet: nearly every character unknown to the checkpoint's tokenizer
    std::ofstream out(data, std::ios::trunc);
    for (int i = 0; i < 200; ++i) out << "\xce\xb1\xce\xb2\xce\xb3 \xd0\xb4\xd0\xb5\xd0\xb6 0123456789 XYZ#@!\n";
  }
  const std::string e = resume_error(dir.path / "run", {"train.max_steps=4"});
  CHECK_THAT(e, Contains("data.path") && Contains("changed") && Contains("to unknown") && Contains("allowed up to 1%"));
  const DataChange d = data_change(load_checkpoint((dir.path / "run" / "last.h5").string()),
                                   Config::parse(load_checkpoint(last.string()).config_yaml, "c"), last.string());
  CHECK(d.unknown_fraction > 0.5);
  CHECK(d.changes.size() == 1);
  EvalArgs ev;
  ev.checkpoint = (dir.path / "run").string();
  std::ostringstream sink;
  CHECK_THAT(error_of([&] { run_eval(ev, sink); }), Contains("data.path") && Contains("give --data FILE"));
}

TEST_CASE("a beam above the target vocabulary is refused with the allowed range", "[cli][reliability]") {
  TempDir dir("rel_beam");
  {
    std::ofstream tsv(dir.path / "pairs.tsv");
    const char* en[] = {"one", "two", "three", "four", "five", "six"};
    const char* es[] = {"uno", "dos", "tres", "cuatro", "cinco", "seis"};
    for (int i = 0; i < 120; ++i) tsv << en[i % 6] << " " << en[(i / 6) % 6] << "\t" << es[i % 6] << " " << es[(i / 6) % 6] << "\n";
  }
  std::ofstream(dir.path / "s2s.yaml") << "model: {family: seq2seq, enc_layers: 1, dec_layers: 1, n_heads: 2, d_model: 16, "
                                          "d_ff: 32, block_size: 16}\n"
                                       << "data: {path: " << (dir.path / "pairs.tsv").string()
                                       << ", tokenizer: sentencepiece, vocab_size: 30, sp_byte_fallback: false}\nschedule: {kind: constant}\n"
                                       << "train: {max_steps: 1, batch_tokens: 64, eval_every: 0, threads: 1, out_dir: "
                                       << (dir.path / "run").string() << "}\n";
  TrainArgs a;
  a.config_path = (dir.path / "s2s.yaml").string();
  a.quiet = true;
  REQUIRE(run_train(a) == 0);
  CliResult r = cli({"translate", (dir.path / "run").string(), "--beam", "40"}, "one two\n");
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("--beam 40 exceeds the target vocabulary") && Contains("allowed 1 to 30"));
  r = cli({"translate", (dir.path / "run").string(), "--beam", "30"}, "one two\n");
  CHECK(r.status == 0);
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
}

TEST_CASE("the command line: exit status 1 with 'tfm: error:', --help 0, numeric ranges", "[cli][reliability]") {
  CliResult r = cli({"frobnicate"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("tfm: error: unknown command 'frobnicate'") && Contains("train") && Contains("translate"));
  r = cli({});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("tfm: error: a command is required") && Contains("sample"));
  r = cli({"--bogus"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("'--bogus' is not an option") && Contains("the commands are"));
  r = cli({"--help"});
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Contains("train"));
  r = cli({"sample", "--help"});
  CHECK(r.status == 0);
  r = cli({"sample"});  // the checkpoint is required
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("tfm: error:") && Contains("checkpoint"));
  r = cli({"sample", "x.h5", "--seed", "-1"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("tfm: error:") && Contains("--seed") && Contains("not in range"));
  r = cli({"sample", "x.h5", "--tokens", "100000000000000000000"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("--tokens") && Contains("1000000"));
  r = cli({"translate", "x.h5", "--beam", "100000"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("--beam") && Contains("not in range 1 to 64"));
  r = cli({"eval", "x.h5", "--split", "train"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("--split") && Contains("valid"));
  TempDir dir("rel_cli");
  r = cli({"translate", "x.h5", "--input", dir.path.string()});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("tfm: error: --input") && Contains("is a directory"));
  r = cli({"train", "--resume", "/dev/null"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("/dev/null") && Contains("is a device"));
}

// Not a test: scripts/fault_trials.sh runs this hidden case to write
// TFM_FAULT_DIR/nan.h5 (one NaN weight) and tok.h5 (a truncated tokenizer)
// from the checkpoint TFM_FAULT_CKPT.
TEST_CASE("write the fault-trial checkpoints", "[.make_fault_checkpoints]") {
  const char* ckpt = std::getenv("TFM_FAULT_CKPT");
  const char* dir = std::getenv("TFM_FAULT_DIR");
  REQUIRE(ckpt != nullptr);
  REQUIRE(dir != nullptr);
  CheckpointData d = load_checkpoint(ckpt);
  d.params[0].second.data<float>()[0] = std::nanf("");
  save_checkpoint(std::string(dir) + "/nan.h5", d);
  CheckpointData t = load_checkpoint(ckpt);
  t.tokenizer_blob.resize(t.tokenizer_blob.size() / 2);
  save_checkpoint(std::string(dir) + "/tok.h5", t);
}
