// tfm inspect / diff: statistics equal independently computed values, JSON
// output parses, --filter and --tensor, diffs of equal and different
// checkpoints, and one clear error line naming the file for every kind of
// bad file (plots and attention maps: test_plot.cpp).
#include <hdf5.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/tensor.h"
#include "data/tokenizer.h"
#include "layers/gpt.h"
#include "temp_dir.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "tools/inspect.h"
#include "train/model_io.h"

namespace fs = std::filesystem;
using namespace tfm;
using namespace tfm::train;
using Catch::Matchers::Contains;
using json = nlohmann::json;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

using tfm::test::TempDir;

const char* kTinyConfig =
    "model:\n  n_layers: 1\n  n_heads: 2\n  d_model: 8\n  block_size: 8\n"
    "optim:\n  lr: 0.001\n";

// A small GPT checkpoint with known contents: the parameters of a real model
// (so they match the stored config), a few of them replaced by known values
// including zeros, NaN and Inf when `special` is set.
CheckpointData known_checkpoint(bool special = true, const std::string& config_text = kTinyConfig) {
  const auto tok = data::CharTokenizer::train("abcdefg hij\n", "test");
  const Config cfg = Config::parse(config_text, "test config");
  layers::GPT model(gpt_config(cfg, tok.vocab_size()), 7);
  CheckpointData d;
  d.meta = {{"tfm_version", "9.9.9"}, {"created", "2024-01-02T03:04:05Z"}, {"model_family", "gpt"}, {"optimizer", "adamw"}};
  d.ints = {{"step", 7}, {"tokens_seen", 448}, {"optimizer_steps", 7}};
  d.config_yaml = cfg.to_yaml();
  for (const auto& [name, p] : model.named_parameters()) d.params.emplace_back(name, p.detach().clone());
  if (special) {
    for (auto& [name, t] : d.params) {
      if (name == "decoder.final_norm.bias") {  // [8]
        t = core::from_vector({0.0f, 1.5f, kNaN, -2.0f, kInf, 0.0f, -kInf, 3.25f}, {8});
      } else if (name == "decoder.layers.0.attn_norm.bias") {
        t = core::zeros({8});
      } else if (name == "decoder.layers.0.attn_norm.weight") {
        t = core::from_vector({1, 2, 3, 4, 0, 0, -1, -2}, {8});
      }
    }
  }
  d.optimizer_state.emplace_back("exp_avg/tok_emb.weight", core::zeros(d.params[0].second.shape()));
  d.optimizer_state.emplace_back("step", core::scalar_tensor(7.0f));
  d.rng["data"] = {1, 2};
  d.tokenizer_kind = tok.kind();
  d.tokenizer_blob = tok.serialize();
  d.metrics_jsonl =
      "{\"step\":1,\"train_loss\":3.5,\"lr\":0.001}\n"
      "{\"step\":2,\"train_loss\":3.0,\"val_loss\":3.1,\"lr\":0.001}\n"
      "{\"step\":3,\"train_loss\":2.5,\"lr\":0.0005,\"tokens_per_s\":1000}\n";
  return d;
}

std::string inspect_text(InspectArgs a) {
  std::ostringstream os;
  run_inspect(a, os);
  return os.str();
}

json inspect_json(InspectArgs a) {
  a.json = true;
  return json::parse(inspect_text(a));
}

json diff_json(const std::string& a, const std::string& b) {
  DiffArgs d;
  d.a = a, d.b = b, d.json = true;
  std::ostringstream os;
  run_diff(d, os);
  return json::parse(os.str());
}

InspectArgs inspect_args(const std::string& checkpoint) {
  InspectArgs a;
  a.checkpoint = checkpoint;
  return a;
}

using tfm::test::read_file;

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

struct Expected {
  double mean = 0, std = 0, min = 0, max = 0, norm = 0;
  int64_t zeros = 0, nan = 0, inf = 0, finite = 0;
};
Expected expected_stats(const core::Tensor& t) {
  Expected e;
  std::vector<double> fin;
  for (float x : t.to_vector()) {
    if (std::isnan(x)) ++e.nan;
    else if (std::isinf(x)) ++e.inf;
    else fin.push_back(x);
    if (x == 0.0f) ++e.zeros;
  }
  e.finite = static_cast<int64_t>(fin.size());
  if (fin.empty()) return e;
  long double sum = 0, sq = 0;
  for (double x : fin) sum += x, sq += static_cast<long double>(x) * x;
  e.mean = static_cast<double>(sum / fin.size());
  long double var = 0;
  for (double x : fin) var += (x - e.mean) * (x - e.mean);
  e.std = std::sqrt(static_cast<double>(var / fin.size()));
  e.min = *std::min_element(fin.begin(), fin.end());
  e.max = *std::max_element(fin.begin(), fin.end());
  e.norm = std::sqrt(static_cast<double>(sq));
  return e;
}

void write_raw_hdf5(const std::string& path, const std::function<void(hid_t)>& fill) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  REQUIRE(f >= 0);
  fill(f);
  H5Fclose(f);
}

void string_attr(hid_t obj, const char* name, const std::string& value) {
  const hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, value.size());
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, type, value.data());
  H5Aclose(a), H5Sclose(space), H5Tclose(type);
}

void int_attr(hid_t obj, const char* name, int64_t v) {
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a), H5Sclose(space);
}

// inspect and diff (as either argument) must each fail with one line that
// names the file.
void check_rejected(const std::string& path, const std::string& good, const std::string& expect = "") {
  INFO(path);
  std::vector<std::string> messages;
  auto capture = [&](const std::function<void()>& f) {
    try {
      f();
      FAIL("no error");
    } catch (const Error& e) {
      messages.push_back(e.what());
    }
  };
  capture([&] { inspect_text(inspect_args(path)); });
  capture([&] { InspectArgs a = inspect_args(path); a.json = true; inspect_text(a); });
  capture([&] { diff_json(path, good); });
  capture([&] { diff_json(good, path); });
  for (const std::string& m : messages) {
    INFO(m);
    CHECK_THAT(m, Contains(path));
    CHECK(m.find('\n') == std::string::npos);
    if (!expect.empty()) CHECK_THAT(m, Contains(expect));
  }
}

}  // namespace

TEST_CASE("inspect reports statistics equal to independently computed values", "[inspect]") {
  TempDir dir("stats");
  const CheckpointData d = known_checkpoint();
  const std::string path = dir.file("known.h5");
  save_checkpoint(path, d);
  const json j = inspect_json(inspect_args(path));

  CHECK(j["file"] == path);
  CHECK(j["format"] == "tfm-checkpoint");
  CHECK(j["format_version"] == 1);
  CHECK(j["tfm_version"] == "9.9.9");
  CHECK(j["created"] == "2024-01-02T03:04:05Z");
  CHECK(j["model"]["family"] == "gpt");
  CHECK(j["model"]["n_layers"] == 1);
  CHECK(j["model"]["n_heads"] == 2);
  CHECK(j["model"]["d_model"] == 8);
  CHECK(j["model"]["d_ff"] == 32);
  CHECK(j["model"]["block_size"] == 8);
  CHECK(j["model"]["positions"] == "learned");
  CHECK(j["training"]["step"] == 7);
  CHECK(j["training"]["tokens_seen"] == 448);
  CHECK(j["metrics"]["rows"] == 3);
  CHECK(j["metrics"]["last_train"]["step"] == 3);
  CHECK(j["metrics"]["last_train"]["train_loss"] == 2.5);
  CHECK(j["metrics"]["last_val"]["step"] == 2);
  CHECK(j["metrics"]["last_val"]["val_loss"] == 3.1);
  CHECK(j["optimizer"]["name"] == "adamw");
  CHECK(j["optimizer"]["state_present"] == true);
  CHECK(j["optimizer"]["state_tensors"] == 2);
  CHECK(j["tokenizer"]["kind"] == "char");
  CHECK(j["tokenizer"]["vocab_size"] == 13);  // 12 distinct characters + unknown

  int64_t total = 0;
  std::map<std::string, int64_t> groups;
  for (const auto& [name, t] : d.params) {
    total += t.numel();
    groups[name.rfind("decoder.layers.0.", 0) == 0 ? "decoder.layers.0" : name.substr(0, name.rfind('.'))] += t.numel();
  }
  CHECK(j["parameters"]["total"] == total);
  CHECK(j["parameters"]["tensors"] == d.params.size());
  REQUIRE(j["parameters"]["groups"].size() == groups.size());
  for (const auto& g : j["parameters"]["groups"]) CHECK(groups.at(g["name"].get<std::string>()) == g["numel"]);
  CHECK(j["parameters"]["groups"][0]["name"] == "tok_emb");

  REQUIRE(j["params"].size() == d.params.size());
  for (std::size_t i = 0; i < d.params.size(); ++i) {
    const auto& [name, t] = d.params[i];
    const json& r = j["params"][i];
    INFO(name);
    const Expected e = expected_stats(t);
    CHECK(r["name"] == name);
    CHECK(r["shape"].get<core::Shape>() == t.shape());
    CHECK(r["numel"] == t.numel());
    CHECK(r["mean"].get<double>() == Approx(e.mean).margin(1e-12));
    CHECK(r["std"].get<double>() == Approx(e.std).margin(1e-12));
    CHECK(r["min"].get<double>() == e.min);
    CHECK(r["max"].get<double>() == e.max);
    CHECK(r["norm"].get<double>() == Approx(e.norm).margin(1e-12));
    CHECK(r["zeros"] == e.zeros);
    CHECK(r["zero_fraction"].get<double>() == Approx(static_cast<double>(e.zeros) / t.numel()));
    CHECK(r["nan"] == e.nan);
    CHECK(r["inf"] == e.inf);
  }
  // The hand-made values, spelled out.
  const json& fb = j["params"][d.params.size() - 1];
  REQUIRE(fb["name"] == "decoder.final_norm.bias");
  CHECK(fb["nan"] == 1);
  CHECK(fb["inf"] == 2);
  CHECK(fb["zeros"] == 2);
  CHECK(fb["min"] == -2.0);
  CHECK(fb["max"] == 3.25);
  CHECK(fb["mean"].get<double>() == Approx(2.75 / 5));
  CHECK(fb["norm"].get<double>() == Approx(std::sqrt(1.5 * 1.5 + 4 + 3.25 * 3.25)));
  CHECK(j["nonfinite"]["values"] == 3);

  // The text view shows the same facts and flags the non-finite values.
  const std::string text = inspect_text(inspect_args(path));
  CHECK_THAT(text, Contains("tfm-checkpoint version 1"));
  CHECK_THAT(text, Contains("step 7, 448 tokens seen"));
  CHECK_THAT(text, Contains("gpt: 1 layers, 2 heads, d_model 8, d_ff 32, block_size 8"));
  CHECK_THAT(text, Contains("last train loss 2.5 at step 3"));
  CHECK_THAT(text, Contains("last validation loss 3.1 at step 2"));
  CHECK_THAT(text, Contains("adamw, state present"));
  CHECK_THAT(text, Contains("char, vocabulary 13"));
  CHECK_THAT(text, Contains("2024-01-02T03:04:05Z"));
  CHECK_THAT(text, Contains("1/2 !!"));
  CHECK_THAT(text, Contains("decoder.layers.0.attn_norm.bias"));
  CHECK(text.find("!!") != std::string::npos);

  // --config adds the resolved config.
  InspectArgs c = inspect_args(path);
  c.show_config = true;
  CHECK_THAT(inspect_text(c), Contains("config (resolved)") && Contains("d_model: 8"));
  c.json = true;
  CHECK(inspect_json(c)["config"]["optim.lr"] == 0.001);
}

TEST_CASE("inspect --filter narrows the table and --tensor prints values", "[inspect]") {
  TempDir dir("filter");
  const CheckpointData d = known_checkpoint();
  const std::string path = dir.file("known.h5");
  save_checkpoint(path, d);

  InspectArgs f = inspect_args(path);
  f.filter = "decoder.layers.0.*norm*";
  const json j = inspect_json(f);
  REQUIRE(j["params"].size() == 4);  // attn_norm.{weight,bias}, ffn_norm.{weight,bias}
  for (const auto& r : j["params"]) CHECK_THAT(r["name"].get<std::string>(), Contains("norm"));
  CHECK(j["parameters"]["total"].get<int64_t>() > 8 * 4);  // the summary still counts everything
  const std::string text = inspect_text(f);
  CHECK_THAT(text, Contains("decoder.layers.0.ffn_norm.weight"));
  CHECK(text.find("\ntok_emb.weight") == std::string::npos);
  f.filter = "nothing*";
  CHECK(inspect_json(f)["params"].empty());
  CHECK_THAT(inspect_text(f), Contains("no parameter matches"));

  InspectArgs t = inspect_args(path);
  t.tensor = "decoder.layers.0.attn_norm.weight";
  const std::string values = inspect_text(t);
  CHECK_THAT(values, Contains("[8]"));
  CHECK_THAT(values, Contains(core::to_string(core::from_vector({1, 2, 3, 4, 0, 0, -1, -2}, {8}))));
  t.json = true;
  const json tj = inspect_json(t);
  CHECK(tj["values"].get<std::vector<float>>() == std::vector<float>{1, 2, 3, 4, 0, 0, -1, -2});
  CHECK(tj["stats"]["zeros"] == 2);

  // A large tensor is truncated unless --full; optimizer state is reachable too.
  InspectArgs big = inspect_args(path);
  big.tensor = "decoder.layers.0.ffn.up.weight";  // [32, 8]
  CHECK_THAT(inspect_text(big), Contains("..."));
  big.full = true;
  CHECK(inspect_text(big).find("...") == std::string::npos);
  InspectArgs st = inspect_args(path);
  st.tensor = "exp_avg/tok_emb.weight";
  CHECK_THAT(inspect_text(st), Contains("optimizer state"));

  InspectArgs missing = inspect_args(path);
  missing.tensor = "tok_emb.weigth";
  CHECK_THROWS_WITH(inspect_text(missing), Contains(path) && Contains("no tensor named") && Contains("tok_emb.weight"));
}

TEST_CASE("diff reports zero change for a checkpoint and itself, and the right changes otherwise", "[inspect]") {
  TempDir dir("diff");
  const CheckpointData a = known_checkpoint(false);
  const std::string pa = dir.file("a.h5"), pb = dir.file("b.h5");
  save_checkpoint(pa, a);

  const json same = diff_json(pa, pa);
  CHECK(same["identical"] == true);
  CHECK(same["changed"] == 0);
  CHECK(same["config"].empty());
  REQUIRE(same["params"].size() == a.params.size());
  for (const auto& p : same["params"]) {
    CHECK(p["rel_change"] == 0.0);
    CHECK(p["max_abs_diff"] == 0.0);
  }

  // b: one tensor changed by a known amount, one removed, one added, one
  // reshaped, and two config keys changed.
  CheckpointData b = known_checkpoint(false, std::string(kTinyConfig) + "  weight_decay: 0.1\ntrain:\n  max_steps: 5\n");
  Config cb = Config::parse(b.config_yaml, "b");
  cb.set("optim.lr", "0.01");
  b.config_yaml = cb.to_yaml();
  auto& tok = b.params[0];
  REQUIRE(tok.first == "tok_emb.weight");
  const std::vector<float> before = tok.second.to_vector();
  std::vector<float> after = before;
  for (std::size_t i = 0; i < after.size(); ++i) after[i] += (i % 3 == 0) ? 0.5f : 0.0f;
  after[5] = before[5] - 2.0f;
  tok.second = core::from_vector(after, tok.second.shape());
  double diff2 = 0, norm2 = 0, maxd = 0;
  for (std::size_t i = 0; i < after.size(); ++i) {
    const double dd = static_cast<double>(after[i]) - before[i];
    diff2 += dd * dd, norm2 += static_cast<double>(before[i]) * before[i], maxd = std::max(maxd, std::fabs(dd));
  }
  b.params.erase(b.params.end() - 1);  // decoder.final_norm.bias
  b.params.emplace_back("extra.bias", core::zeros({3}));
  for (auto& [name, t] : b.params)
    if (name == "pos_emb.weight") t = core::zeros({4, 8});
  save_checkpoint(pb, b);

  const json j = diff_json(pa, pb);
  CHECK(j["identical"] == false);
  std::map<std::string, json> cfg;
  for (const auto& c : j["config"]) cfg[c["key"]] = c;
  CHECK(cfg.size() == 3);
  CHECK(cfg.at("optim.lr")["a"] == 0.001);
  CHECK(cfg.at("optim.lr")["b"] == 0.01);
  CHECK(cfg.at("optim.weight_decay")["b"] == 0.1);
  CHECK(cfg.at("train.max_steps")["a"] == 2000);
  CHECK(cfg.at("train.max_steps")["b"] == 5);
  REQUIRE(j["only_in_a"].size() == 1);
  CHECK(j["only_in_a"][0]["name"] == "decoder.final_norm.bias");
  REQUIRE(j["only_in_b"].size() == 1);
  CHECK(j["only_in_b"][0]["name"] == "extra.bias");
  REQUIRE(j["shape_differs"].size() == 1);
  CHECK(j["shape_differs"][0]["name"] == "pos_emb.weight");
  CHECK(j["shape_differs"][0]["a"].get<core::Shape>() == core::Shape{8, 8});
  CHECK(j["shape_differs"][0]["b"].get<core::Shape>() == core::Shape{4, 8});
  CHECK(j["changed"] == 1);
  for (const auto& p : j["params"]) {
    INFO(p["name"]);
    if (p["name"] == "tok_emb.weight") {
      CHECK(p["rel_change"].get<double>() == Approx(std::sqrt(diff2) / std::sqrt(norm2)).epsilon(1e-9));
      CHECK(p["max_abs_diff"].get<double>() == Approx(maxd).epsilon(1e-9));
    } else {
      CHECK(p["rel_change"] == 0.0);
    }
  }

  DiffArgs t;
  t.a = pa, t.b = pb;
  std::ostringstream os;
  run_diff(t, os);
  const std::string text = os.str();
  CHECK_THAT(text, Contains("optim.lr: 0.001 -> 0.01"));
  CHECK_THAT(text, Contains("only in a: decoder.final_norm.bias"));
  CHECK_THAT(text, Contains("only in b: extra.bias"));
  CHECK_THAT(text, Contains("shape differs: pos_emb.weight [8, 8] -> [4, 8]"));
  CHECK_THAT(text, Contains("largest relative change: tok_emb.weight"));
}

TEST_CASE("bad files give one error line naming the file", "[inspect]") {
  TempDir dir("bad");
  const std::string good = dir.file("good.h5");
  save_checkpoint(good, known_checkpoint(false));
  const std::string bytes = read_file(good);
  const std::string path = dir.file("bad.h5");

  SECTION("not HDF5") {
    std::mt19937 rng(7);
    std::string random(3000, '\0');
    for (char& c : random) c = static_cast<char>(rng());
    write_bytes(path, random);
    check_rejected(path, good, "not an HDF5 file");
    write_bytes(path, "");
    check_rejected(path, good);
    check_rejected(dir.file("missing.h5"), good, "no such");
  }
  SECTION("HDF5 but not a tfm checkpoint") {
    write_raw_hdf5(path, [](hid_t f) { string_attr(f, "format", "keras"); });
    check_rejected(path, good, "not a tfm checkpoint");
    write_raw_hdf5(path, [](hid_t f) { int_attr(f, "answer", 42); });
    check_rejected(path, good, "not a tfm checkpoint");
  }
  SECTION("a newer format version") {
    write_raw_hdf5(path, [](hid_t f) {
      string_attr(f, "format", kCheckpointFormat);
      int_attr(f, "format_version", kCheckpointVersion + 1);
    });
    check_rejected(path, good, "newer than this tfm supports");
  }
  SECTION("truncated") {
    for (std::size_t len : {std::size_t{0}, std::size_t{100}, std::size_t{512}, bytes.size() / 3, bytes.size() / 2,
                            bytes.size() - 1}) {
      INFO("truncated to " << len);
      write_bytes(path, bytes.substr(0, len));
      check_rejected(path, good);
    }
  }
  SECTION("flipped bytes") {
    std::mt19937_64 rng(2024);
    for (int i = 0; i < 12; ++i) {
      std::string damaged = bytes;
      const std::size_t pos = static_cast<std::size_t>(rng() % damaged.size());
      damaged[pos] = static_cast<char>(damaged[pos] ^ static_cast<char>(1 + rng() % 255));
      INFO("byte " << pos);
      write_bytes(path, damaged);
      check_rejected(path, good);
    }
  }
  SECTION("parameters that disagree with the stored config") {
    // Parameters of a d_model 32 model under a config that says 64.
    CheckpointData d = known_checkpoint(false, "model:\n  n_layers: 1\n  n_heads: 2\n  d_model: 32\n  block_size: 8\n");
    d.config_yaml = Config::parse("model:\n  n_layers: 1\n  n_heads: 2\n  d_model: 64\n  block_size: 8\n", "c").to_yaml();
    save_checkpoint(path, d);
    std::string msg;
    try {
      inspect_text(inspect_args(path));
    } catch (const Error& e) {
      msg = e.what();
    }
    INFO(msg);
    CHECK_THAT(msg, Contains(path) && Contains("d_model 64") && Contains("shape differs: tok_emb.weight is [13, 32] in the checkpoint, [13, 64] in the model"));
    CHECK(msg.find('\n') == std::string::npos);
    // A config describing a vastly bigger model is refused before it is built.
    d.config_yaml = Config::parse("model:\n  n_layers: 1000\n  d_model: 8192\n  n_heads: 2\n", "c").to_yaml();
    save_checkpoint(path, d);
    CHECK_THROWS_WITH(inspect_text(inspect_args(path)), Contains(path) && Contains("parameters, the file holds"));
    // diff compares whatever the files hold.
    CHECK_NOTHROW(diff_json(path, good));
  }
}
