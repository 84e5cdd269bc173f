// tfm plot and tfm inspect --attention: training curves and attention maps
// are valid standalone SVG (checked by a small tag parser), metrics files
// with missing validation rows, a single row, a restarted clock, bad or
// empty content; the attention probe of MultiHeadAttention; maps for a
// trained GPT and a seq2seq checkpoint.
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/autograd.h"
#include "core/tensor.h"
#include "data/tokenizer.h"
#include "layers/attention.h"
#include "layers/seq2seq.h"
#include "temp_dir.h"
#include "tools/attention_maps.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "tools/inspect.h"
#include "train/model_io.h"
#include "tools/plot.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace tfm;
using namespace tfm::train;
using Catch::Matchers::Contains;

namespace {

const std::string kFixture = std::string(TFM_TEST_DATA_DIR) + "/fixtures/genesis1.txt";

using tfm::test::TempDir;

InspectArgs inspect_args(const std::string& checkpoint) {
  InspectArgs a;
  a.checkpoint = checkpoint;
  return a;
}

using tfm::test::read_file;

// Minimal well-formedness: an SVG root with the SVG namespace, every tag
// closed in order, angle brackets balanced.
void check_svg(const std::string& s) {
  INFO(s.substr(0, 200));
  REQUIRE((s.rfind("<svg", 0) == 0 || s.rfind("<?xml", 0) == 0));
  CHECK_THAT(s, Contains("xmlns=\"http://www.w3.org/2000/svg\""));
  CHECK(std::count(s.begin(), s.end(), '<') == std::count(s.begin(), s.end(), '>'));
  std::vector<std::string> stack;
  bool saw_root = false;
  for (std::size_t i = s.find('<'); i != std::string::npos; i = s.find('<', i + 1)) {
    const std::size_t end = s.find('>', i);
    REQUIRE(end != std::string::npos);
    const std::string tag = s.substr(i + 1, end - i - 1);
    if (tag.empty() || tag[0] == '?' || tag[0] == '!') continue;
    if (tag[0] == '/') {
      REQUIRE(!stack.empty());
      CHECK(stack.back() == tag.substr(1));
      stack.pop_back();
    } else if (tag.back() != '/') {
      const std::string name = tag.substr(0, tag.find_first_of(" \n\t"));
      if (stack.empty()) {
        CHECK(name == "svg");
        CHECK_FALSE(saw_root);
        saw_root = true;
      }
      stack.push_back(name);
    }
  }
  CHECK(saw_root);
  CHECK(stack.empty());
}

// Statistics computed here, independently of tensor_stats.
}  // namespace

TEST_CASE("plot writes a valid SVG for several runs and rejects empty metrics", "[inspect]") {
  TempDir dir("plot");
  fs::create_directories(dir.path / "alpha");
  fs::create_directories(dir.path / "beta_run");
  std::ofstream(dir.path / "alpha" / "metrics.jsonl")
      << "{\"step\":1,\"train_loss\":4.0,\"lr\":0.0001,\"tokens_per_s\":100,\"elapsed_s\":0.5}\n"
      << "{\"step\":2,\"train_loss\":3.5,\"val_loss\":3.6,\"lr\":0.0002,\"tokens_per_s\":120,\"elapsed_s\":1.0}\n"
      << "{\"step\":3,\"train_loss\":3.0,\"lr\":0.0003,\"tokens_per_s\":130,\"elapsed_s\":1.5}\n"
      << "{\"step\":4,\"train_loss\":2.8,\"val_loss\":2.9,\"lr\":0.0002,\"tokens_per_s\":125,\"elapsed_s\":0.4}\n";
  // A single row, no validation loss.
  std::ofstream(dir.path / "beta_run" / "metrics.jsonl") << "{\"step\":10,\"train_loss\":2.0,\"lr\":0.001}\n";

  const RunMetrics alpha = read_run_metrics((dir.path / "alpha").string() + "/");
  CHECK(alpha.name == "alpha");
  REQUIRE(alpha.rows.size() == 4);
  CHECK_FALSE(alpha.rows[0].val_loss.has_value());
  CHECK(*alpha.rows[1].val_loss == 3.6);
  CHECK(*alpha.rows[3].elapsed_s == Approx(1.9));  // the clock restarted (resume): made cumulative

  PlotArgs p;
  p.runs = {(dir.path / "alpha").string(), (dir.path / "beta_run" / "metrics.jsonl").string()};
  p.out = dir.file("out/curves.svg");
  std::ostringstream log;
  run_plot(p, log);
  CHECK_THAT(log.str(), Contains("2 runs"));
  const std::string svg = read_file(p.out);
  check_svg(svg);
  CHECK_THAT(svg, Contains(">alpha<"));
  CHECK_THAT(svg, Contains(">beta_run<"));
  CHECK_THAT(svg, Contains("Loss by step"));
  CHECK_THAT(svg, Contains("Learning rate"));
  CHECK_THAT(svg, Contains("tokens / s"));
  CHECK_THAT(svg, Contains("elapsed time"));

  // Names are escaped.
  RunMetrics odd = alpha;
  odd.name = "a<b>&\"c\"";
  const std::string esc = render_curves_svg({odd});
  check_svg(esc);
  CHECK_THAT(esc, Contains("a&lt;b&gt;&amp;&quot;c&quot;"));

  std::ofstream(dir.file("empty.jsonl")).flush();
  p.runs = {dir.file("empty.jsonl")};
  CHECK_THROWS_WITH(run_plot(p, log), Contains(dir.file("empty.jsonl")) && Contains("empty"));
  std::ofstream(dir.file("bad.jsonl")) << "{\"step\":1,\"train_loss\":2}\n{\"step\":2,\n";
  p.runs = {dir.file("bad.jsonl")};
  CHECK_THROWS_WITH(run_plot(p, log), Contains(dir.file("bad.jsonl") + ":2:"));
  p.runs = {dir.path.string()};
  CHECK_THROWS_WITH(run_plot(p, log), Contains(dir.path.string()) && Contains("no metrics.jsonl"));
}

TEST_CASE("the attention probe records probabilities only when set and without gradients", "[inspect]") {
  layers::AttentionOptions opt;
  opt.d_model = 8;
  opt.n_heads = 2;
  layers::MultiHeadAttention mha(opt, std::make_shared<core::Generator>(1));
  core::Generator gen(5);
  const core::Tensor x = core::randn({2, 5, 8}, gen);
  layers::AttentionMask causal;
  causal.causal = true;
  const core::Tensor plain = mha.forward(x, core::Tensor(), causal);
  std::vector<core::Tensor> rec;
  mha.probe = &rec;
  CHECK_THROWS_WITH(mha.forward(x, core::Tensor(), causal), Contains("NoGradGuard"));
  {
    core::NoGradGuard no_grad;
    const core::Tensor probed = mha.forward(x, core::Tensor(), causal);
    CHECK(probed.to_vector() == plain.to_vector());  // recording does not change the output
  }
  mha.probe = nullptr;
  REQUIRE(rec.size() == 1);
  REQUIRE(rec[0].shape() == core::Shape{2, 2, 5, 5});
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < 5; ++i) {
        double sum = 0;
        for (int64_t j = 0; j < 5; ++j) {
          const float p = rec[0].at({b, h, i, j});
          if (j > i) CHECK(p == 0.0f);
          sum += p;
        }
        CHECK(sum == Approx(1.0).epsilon(1e-5));
      }
}

TEST_CASE("attention maps of a trained GPT: one valid SVG per layer and head", "[inspect]") {
  TempDir dir("attn");
  const fs::path cfg = dir.path / "run.yaml";
  std::ofstream(cfg) << "model:\n  n_layers: 2\n  n_heads: 2\n  d_model: 16\n  block_size: 16\n"
                     << "data:\n  path: " << kFixture << "\n"
                     << "train:\n  max_steps: 5\n  batch_size: 4\n  log_every: 1\n  eval_every: 5\n  eval_steps: 1\n"
                     << "  threads: 2\n  out_dir: " << (dir.path / "run").string() << "\n";
  TrainArgs t;
  t.config_path = cfg.string();
  t.quiet = true;
  REQUIRE(run_train(t) == 0);

  InspectArgs a = inspect_args((dir.path / "run").string());
  a.attention = true;
  a.text = "And God said, Let there be light: and there was light.";
  a.out_dir = (dir.path / "maps").string();
  std::ostringstream log;
  run_inspect(a, log);
  CHECK_THAT(log.str(), Contains("wrote 4 attention maps"));
  CHECK_THAT(log.str(), Contains("using the first 16"));
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(a.out_dir)) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  CHECK(files == std::vector<std::string>{"layer0_head0.svg", "layer0_head1.svg", "layer1_head0.svg", "layer1_head1.svg"});
  for (const auto& f : files) {
    INFO(f);
    const std::string svg = read_file(fs::path(a.out_dir) / f);
    check_svg(svg);
    CHECK_THAT(svg, Contains("\xE2\x90\xA3"));  // a space shown as ␣
    CHECK(std::count(svg.begin(), svg.end(), '\n') > 16 * 16);  // one rect per (query, key)
  }

  // Token labels are escaped and made visible.
  Heatmap h;
  h.title = "t<1>";
  h.row_labels = {"<", "&"};
  h.col_labels = {visible_token("\n"), visible_token(std::string("\x01\xff", 2))};
  h.values = {1, 0, 0.25f, 0.75f};
  const std::string hs = render_heatmap_svg(h);
  check_svg(hs);
  CHECK_THAT(hs, Contains(">&lt;<") && Contains(">&amp;<") && Contains("t&lt;1&gt;") && Contains("\xE2\x86\xB5"));
  CHECK(visible_token(std::string("\x01\xff", 2)) == "\xEF\xBF\xBD\xEF\xBF\xBD");

  // The run directory also plots.
  PlotArgs p;
  p.runs = {(dir.path / "run").string()};
  p.out = dir.file("run.svg");
  run_plot(p, log);
  check_svg(read_file(p.out));

  // Arguments that do not fit the model family.
  InspectArgs wrong = a;
  wrong.text.clear();
  wrong.source = "x";
  wrong.target = "y";
  CHECK_THROWS_WITH(run_inspect(wrong, log), Contains("--text"));
  InspectArgs no_flag = inspect_args((dir.path / "run").string());
  no_flag.text = "x";
  CHECK_THROWS_WITH(run_inspect(no_flag, log), Contains("--attention"));
}

TEST_CASE("attention maps of a seq2seq checkpoint cover encoder, decoder and cross-attention", "[inspect]") {
  TempDir dir("s2s");
  const auto tok = data::CharTokenizer::train("abcdefgh ", "test");
  const Config cfg = Config::parse(
      "model:\n  family: seq2seq\n  enc_layers: 1\n  dec_layers: 2\n  n_heads: 2\n  d_model: 8\n  block_size: 12\n",
      "test");
  layers::Seq2Seq model(seq2seq_config(cfg, tok.vocab_size(), tok.vocab_size(), 0), 3);
  CheckpointData d;
  d.config_yaml = cfg.to_yaml();
  d.params = model.named_parameters();
  d.tokenizer_kind = tok.kind();
  d.tokenizer_blob = tok.serialize();
  const std::string path = dir.file("s2s.h5");
  save_checkpoint(path, d);

  InspectArgs a = inspect_args(path);
  a.attention = true;
  a.source = "abc def";
  a.target = "hg fe";
  a.out_dir = (dir.path / "maps").string();
  std::ostringstream log;
  run_inspect(a, log);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(a.out_dir)) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  CHECK(files == std::vector<std::string>{
                     "decoder_cross_layer0_head0.svg", "decoder_cross_layer0_head1.svg", "decoder_cross_layer1_head0.svg",
                     "decoder_cross_layer1_head1.svg", "decoder_self_layer0_head0.svg", "decoder_self_layer0_head1.svg",
                     "decoder_self_layer1_head0.svg", "decoder_self_layer1_head1.svg", "encoder_layer0_head0.svg",
                     "encoder_layer0_head1.svg"});
  for (const auto& f : files) check_svg(read_file(fs::path(a.out_dir) / f));
  std::ostringstream summary;
  run_inspect(inspect_args(path), summary);
  CHECK_THAT(summary.str(), Contains("seq2seq: 1 encoder + 2 decoder layers"));

  a.source.clear();
  CHECK_THROWS_WITH(run_inspect(a, log), Contains(path) && Contains("--source"));
}
