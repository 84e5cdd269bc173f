// The config schema: parsing, validation messages (file:line, key, value,
// allowed values, did-you-mean), --set overrides, YAML round trip, help.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "train/config.h"

using namespace tfm::train;
using Catch::Matchers::Contains;

namespace {
std::string parse_error(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    Config::parse(yaml, "run.yaml", overrides);
  } catch (const tfm::Error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("defaults come from the schema and values parse by type", "[config]") {
  Config c = Config::parse("model:\n  d_model: 64\n  dropout: 0.25\n  bias: false\ntrain:\n  out_dir: runs/x\n",
                           "run.yaml");
  CHECK(c.get_int("model.d_model") == 64);
  CHECK(c.get_float("model.dropout") == 0.25);
  CHECK_FALSE(c.get_bool("model.bias"));
  CHECK(c.get_string("train.out_dir") == "runs/x");
  CHECK(c.get_int("model.n_layers") == 4);  // default
  for (const KeySpec& s : schema()) CHECK_FALSE(s.help.empty());
}

TEST_CASE("unknown keys name the file, line and closest key", "[config]") {
  const std::string e = parse_error("model:\n  d_model: 64\n  n_layer: 4\n");
  CHECK_THAT(e, Contains("run.yaml:3") && Contains("model.n_layer") && Contains("did you mean 'model.n_layers'"));
  CHECK_THAT(parse_error("modle:\n  d_model: 64\n"), Contains("run.yaml:1") && Contains("did you mean 'model'"));
  CHECK_THAT(parse_error("train:\n  lr: 0.1\n"), Contains("did you mean 'optim.lr'"));
  CHECK_THAT(parse_error("zzz: 1\n"), Contains("unknown key 'zzz'"));
}

TEST_CASE("wrong types and out-of-range values name key, value and what is allowed", "[config]") {
  CHECK_THAT(parse_error("model:\n  n_layers: four\n"),
             Contains("run.yaml:2") && Contains("model.n_layers") && Contains("'four'") && Contains("int >= 1"));
  CHECK_THAT(parse_error("model:\n  positions: rotary\n"), Contains("one of sinusoidal, learned, rope"));
  CHECK_THAT(parse_error("model:\n  dropout: 1.0\n"), Contains("model.dropout") && Contains("< 1"));
  CHECK_THAT(parse_error("model:\n  bias: yes\n"), Contains("true or false"));
  CHECK_THAT(parse_error("train:\n  max_steps: [1, 2]\n"), Contains("single value"));
  CHECK_THAT(parse_error("train:\n  max_steps: 1.5\n"), Contains("train.max_steps"));
  CHECK_THAT(parse_error("model: {d_model: 64\n"), Contains("YAML syntax error"));
  CHECK_THAT(parse_error("- a\n- b\n"), Contains("mapping"));
}

TEST_CASE("overrides given with --set are validated the same way", "[config]") {
  Config c = Config::parse("train:\n  max_steps: 10\n", "run.yaml", {"train.max_steps=20", "model.positions=rope"});
  CHECK(c.get_int("train.max_steps") == 20);
  CHECK(c.get_string("model.positions") == "rope");
  CHECK_THAT(parse_error("", {"train.max_step=5"}), Contains("--set") && Contains("did you mean 'train.max_steps'"));
  CHECK_THAT(parse_error("", {"train.max_steps"}), Contains("KEY=VALUE"));
  CHECK_THAT(parse_error("", {"model.dropout=-1"}), Contains("model.dropout"));
}

TEST_CASE("the resolved config round-trips through YAML", "[config]") {
  Config c = Config::parse("data:\n  path: \"odd: name #1.txt\"\nmodel:\n  rope_base: 500000\n", "run.yaml");
  Config again = Config::parse(c.to_yaml(), "resolved");
  CHECK(again.to_yaml() == c.to_yaml());
  CHECK(again.get_string("data.path") == "odd: name #1.txt");
  CHECK(again.get_float("model.rope_base") == 500000.0);
}

TEST_CASE("cross-key validation names the keys involved", "[config]") {
  const auto tmp = std::filesystem::temp_directory_path() / "tfm_config_test.txt";
  { std::ofstream(tmp) << "hello\n"; }
  auto check = [&](const std::string& yaml) {
    try {
      Config::parse(yaml + "data:\n  path: " + tmp.string() + "\n", "run.yaml").validate();
    } catch (const tfm::Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK(check("") == "(no error)");
  CHECK_THAT(check("model:\n  d_model: 100\n  n_heads: 3\n"), Contains("model.d_model") && Contains("model.n_heads"));
  CHECK_THAT(check("model:\n  d_model: 12\n  n_heads: 4\n  positions: rope\n"), Contains("even head size"));
  CHECK_THAT(check("schedule:\n  kind: cosine\n  warmup_steps: 5000\n"), Contains("schedule.warmup_steps"));
  CHECK_THAT(check("schedule:\n  kind: inverse_sqrt\n"), Contains("warmup_steps > 0"));
  CHECK_THAT(check("schedule:\n  min_lr: 1\n"), Contains("schedule.min_lr"));
  REQUIRE_THROWS_WITH(Config::parse("", "run.yaml").validate(), Contains("data.path is required"));
  try {
    Config::parse("data:\n  path: /nonexistent/file.txt\n", "run.yaml").validate();
    FAIL("expected an error");
  } catch (const tfm::Error& e) {
    CHECK_THAT(std::string(e.what()), Contains("/nonexistent/file.txt") && Contains("no such file"));
  }
  std::filesystem::remove(tmp);
}

TEST_CASE("a missing config file is reported by path", "[config]") {
  REQUIRE_THROWS_WITH(Config::load("/nonexistent/run.yaml"), Contains("/nonexistent/run.yaml") && Contains("no such file"));
}

TEST_CASE("help lists every key with default and meaning", "[config]") {
  const std::string h = help_text(), md = help_markdown();
  for (const KeySpec& s : schema()) {
    CHECK_THAT(h, Contains(s.key));
    CHECK_THAT(md, Contains("`" + s.key + "`"));
  }
  CHECK_THAT(h, Contains("default 4"));
}
