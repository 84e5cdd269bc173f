// The attention backend registry: names and errors from the registry,
// backends registered by the test (options reaching them, capability
// refusals by MultiHeadAttention, GPT and Seq2Seq, the shared query/key
// projection, the inspection probe going through the backend), the
// model.attention_* config keys and their validation, and the GPT
// generation fallback for a backend without a KV cache.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/rng.h"
#include "layers/attention.h"
#include "layers/attention_backend.h"
#include "layers/gpt.h"
#include "layers/seq2seq.h"
#include "tests/gradcheck.h"
#include "tests/temp_dir.h"
#include "train/config.h"
#include "train/model_io.h"

namespace {

namespace core = tfm::core;
namespace layers = tfm::layers;
using Catch::Matchers::Contains;
using core::Tensor;
using layers::AttentionBackendInfo;
using layers::AttentionBackendOptions;
using layers::AttentionFeatures;
using tfm::test::max_abs_diff;
using tfm::test::random_tensor;

// What the test backends saw, by backend name.
struct Seen {
  AttentionBackendOptions options;  // the options of the last backend made
  int made = 0;                     // backends made
  int calls = 0;                    // attend() calls
  std::vector<int64_t> query_lengths;
  bool k_was_q = true;              // every call got k sharing q's storage
};
std::map<std::string, Seen>& seen() {
  static std::map<std::string, Seen> s;
  return s;
}

// Naive attention (probabilities from layers::attention_probabilities), with
// what it saw recorded. `report`: 0 reports nothing to the probe, 1 the
// probabilities it applied, 2 a constant 0.125 (to tell it from naive's).
class TestBackend final : public layers::AttentionBackend {
 public:
  TestBackend(std::string name, int report) : name_(std::move(name)), report_(report) {}
  const char* name() const override { return name_.c_str(); }
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const layers::AttentionArgs& a) const override {
    Seen& s = seen()[name_];
    s.calls++;
    s.query_lengths.push_back(q.size(2));
    s.k_was_q = s.k_was_q && k.shares_storage(q) && k.shape() == q.shape();
    Tensor p = layers::attention_probabilities(q, k, a.mask, a.scale);
    if (a.probabilities && report_ == 1) *a.probabilities = p;
    if (a.probabilities && report_ == 2) *a.probabilities = core::full(p.shape(), 0.125f);
    if (a.training && a.dropout_p > 0.0f) p = core::dropout(p, a.dropout_p, true, *a.gen);
    return core::matmul(p, v);
  }

 private:
  std::string name_;
  int report_;
};

AttentionFeatures all_features() {
  AttentionFeatures f;
  f.causal = f.key_padding = f.cross_attention = f.kv_cache = f.dropout = true;
  return f;
}

// Registers a test backend once per process (test cases share the registry).
void ensure_backend(const std::string& name, AttentionFeatures supports, std::vector<std::string> reads = {},
                    bool shared_qk = false, int report = 1) {
  if (layers::find_attention_backend(name)) return;
  AttentionBackendInfo info;
  info.name = name;
  info.help = "test backend";
  info.supports = supports;
  info.shared_qk = shared_qk;
  info.reads = std::move(reads);
  info.make = [name, report](const AttentionBackendOptions& o) {
    TFM_CHECK(o.chunk_length % 2 == 0, "model.attention_chunk_length must be even for ", name, ", got ",
              o.chunk_length);
    seen()[name].options = o;
    seen()[name].made++;
    return std::make_shared<TestBackend>(name, report);
  };
  layers::register_attention_backend(info);
}

// The test backends: "test_reader" reads chunk_length and n_hashes; the
// others lack one feature each; "test_shared" shares q and k.
void ensure_test_backends() {
  ensure_backend("test_reader", all_features(), {"chunk_length", "n_hashes"});
  AttentionFeatures f = all_features();
  f.cross_attention = false;
  ensure_backend("test_nocross", f);
  f = all_features(), f.causal = false;
  ensure_backend("test_nocausal", f);
  f = all_features(), f.key_padding = false;
  ensure_backend("test_nopadding", f);
  f = all_features(), f.dropout = false;
  ensure_backend("test_nodropout", f);
  f = all_features(), f.kv_cache = false;
  ensure_backend("test_nocache", f);
  f = all_features(), f.cross_attention = false;
  ensure_backend("test_shared", f, {}, /*shared_qk=*/true);
  ensure_backend("test_silent", all_features(), {}, false, /*report=*/0);
  ensure_backend("test_constant", all_features(), {}, false, /*report=*/2);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const tfm::Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<std::string> names_of(const layers::Module& m) {
  std::vector<std::string> out;
  for (const auto& [n, p] : m.named_parameters()) out.push_back(n);
  return out;
}

layers::GPTConfig tiny_gpt(const std::string& attention) {
  layers::GPTConfig c;
  c.vocab_size = 11, c.block_size = 8, c.n_layers = 2, c.n_heads = 2, c.d_model = 16;
  c.attention = attention;
  return c;
}

layers::Seq2SeqConfig tiny_seq2seq(const std::string& attention) {
  layers::Seq2SeqConfig c;
  c.src_vocab = c.tgt_vocab = 12, c.d_model = 16, c.n_heads = 2, c.enc_layers = c.dec_layers = 1, c.d_ff = 32;
  c.max_len = 16, c.dropout = 0.0f;
  c.attention = attention;
  return c;
}

}  // namespace

TEST_CASE("the registry lists naive, the reference, with every feature", "[attention_backends]") {
  const auto names = layers::attention_backend_names();
  REQUIRE_FALSE(names.empty());
  CHECK(names.front() == "naive");
  const auto naive = layers::attention_backend_info("naive");
  const AttentionFeatures& s = naive->supports;
  CHECK((s.causal && s.key_padding && s.cross_attention && s.kv_cache && s.dropout));
  CHECK_FALSE(naive->shared_qk);
  CHECK(naive->reads.empty());
  CHECK(std::string(layers::make_attention_backend("naive")->name()) == "naive");
}

TEST_CASE("unknown backend names get the registry's names as the allowed values", "[attention_backends]") {
  ensure_test_backends();
  const std::string e = error_of([] { layers::make_attention_backend("flashy"); });
  CHECK_THAT(e, Contains("model.attention") && Contains("'flashy'") && Contains("naive") &&
                    Contains("test_reader") && Contains("test_shared"));
  // The config key takes its allowed values from the registry too.
  const std::string c = error_of([] { tfm::train::Config::parse("model:\n  attention: flashy\n", "run.yaml"); });
  CHECK_THAT(c, Contains("run.yaml:2") && Contains("model.attention") && Contains("one of naive") &&
                    Contains("test_reader"));
  CHECK(tfm::train::Config::parse("model:\n  attention: test_reader\n", "run.yaml").get_string("model.attention") ==
        "test_reader");
}

TEST_CASE("registration refuses duplicates, unknown options and shared q/k with cross-attention",
          "[attention_backends]") {
  ensure_test_backends();
  AttentionBackendInfo info;
  info.name = "naive";
  info.make = [](const AttentionBackendOptions&) { return layers::make_attention_backend("naive"); };
  CHECK_THAT(error_of([&] { layers::register_attention_backend(info); }), Contains("already registered"));
  info.name = "test_bad";
  info.reads = {"chunk_lenght"};
  CHECK_THAT(error_of([&] { layers::register_attention_backend(info); }), Contains("unknown option 'chunk_lenght'"));
  info.reads = {};
  info.shared_qk = true;
  info.supports.cross_attention = true;
  CHECK_THAT(error_of([&] { layers::register_attention_backend(info); }), Contains("cross-attention"));
  info.shared_qk = false;
  info.make = nullptr;
  CHECK_THAT(error_of([&] { layers::register_attention_backend(info); }), Contains("no factory"));
  CHECK(layers::find_attention_backend("test_bad") == nullptr);
}

TEST_CASE("options reach the backend; options a backend does not read must stay at their defaults",
          "[attention_backends]") {
  ensure_test_backends();
  AttentionBackendOptions o;
  o.chunk_length = 32, o.n_hashes = 4;
  const int before = seen()["test_reader"].made;
  layers::make_attention_backend("test_reader", o);
  CHECK(seen()["test_reader"].made == before + 1);
  CHECK(seen()["test_reader"].options.chunk_length == 32);
  CHECK(seen()["test_reader"].options.n_hashes == 4);
  // Through the model config: one backend per attention module.
  layers::GPTConfig g = tiny_gpt("test_reader");
  g.attention_options.chunk_length = 16;
  layers::GPT gpt(g, 1);
  CHECK(seen()["test_reader"].made >= before + 1 + g.n_layers);
  CHECK(seen()["test_reader"].options.chunk_length == 16);

  // naive reads nothing: a non-default option is an error naming the key and who reads it.
  const std::string e = error_of([&] { layers::make_attention_backend("naive", o); });
  CHECK_THAT(e, Contains("model.attention_chunk_length = 32") && Contains("model.attention = naive") &&
                    Contains("test_reader"));
  o = {};
  o.n_buckets = 8;  // read by lsh only
  CHECK_THAT(error_of([&] { layers::make_attention_backend("test_reader", o); }),
             Contains("model.attention_n_buckets = 8") && Contains("(it is read by lsh)"));
  o = {};
  o.n_hashes = 0;  // out of range
  CHECK_THAT(error_of([&] { layers::make_attention_backend("test_reader", o); }),
             Contains("model.attention_n_hashes = 0") && Contains(">= 1"));
  o = {};
  o.chunk_length = 33;  // the backend's own check
  CHECK_THAT(error_of([&] { layers::make_attention_backend("test_reader", o); }), Contains("must be even"));
  g.attention = "naive";
  CHECK_THAT(error_of([&] { layers::GPT(g, 1); }), Contains("model.attention_chunk_length"));
}

TEST_CASE("models refuse a backend that lacks a feature they need, naming model.attention and the feature",
          "[attention_backends]") {
  ensure_test_backends();
  // Seq2Seq needs cross-attention, key padding and causal masks.
  CHECK_THAT(error_of([] { layers::Seq2Seq(tiny_seq2seq("test_nocross"), 1); }),
             Contains("model.attention = test_nocross") && Contains("cross-attention") && Contains("seq2seq") &&
                 Contains("backends that do: naive"));
  CHECK_THAT(error_of([] { layers::Seq2Seq(tiny_seq2seq("test_nopadding"), 1); }), Contains("key-padding"));
  CHECK_THAT(error_of([] { layers::Seq2Seq(tiny_seq2seq("test_shared"), 1); }), Contains("cross-attention"));
  // A GPT needs causal masks, but not cross-attention or key padding.
  CHECK_THAT(error_of([] { layers::GPT(tiny_gpt("test_nocausal"), 1); }),
             Contains("model.attention = test_nocausal") && Contains("causal") && Contains("GPT"));
  CHECK_NOTHROW(layers::GPT(tiny_gpt("test_nocross"), 1));
  CHECK_NOTHROW(layers::GPT(tiny_gpt("test_nopadding"), 1));
  // Attention dropout only where the backend has it.
  layers::GPTConfig g = tiny_gpt("test_nodropout");
  CHECK_NOTHROW(layers::GPT(g, 1));
  g.dropout = 0.1f;
  CHECK_THAT(error_of([&] { layers::GPT(g, 1); }), Contains("attention dropout") && Contains("model.dropout"));
  // Seq2Seq decoding needs a KV cache.
  layers::Seq2Seq s(tiny_seq2seq("test_nocache"), 1);
  core::NoGradGuard no_grad;
  const auto mem = s.encode(core::from_vector(std::vector<int32_t>{3, 4, 5}, {1, 3}));
  CHECK_THAT(error_of([&] { s.start_decoding(mem); }), Contains("model.attention = test_nocache") &&
                                                             Contains("KV cache") && Contains("decoding"));
}

TEST_CASE("MultiHeadAttention refuses a call that uses a feature its backend lacks", "[attention_backends]") {
  ensure_test_backends();
  auto gen = std::make_shared<core::Generator>(1);
  layers::AttentionOptions opt;
  opt.d_model = 8, opt.n_heads = 2;
  opt.backend = "test_nocross";
  opt.cross_attention = true;
  CHECK_THAT(error_of([&] { layers::MultiHeadAttention(opt, gen); }), Contains("cross-attention"));
  opt.cross_attention = false;
  layers::MultiHeadAttention nocross(opt, gen);
  const Tensor x = random_tensor({1, 3, 8}, 7);
  CHECK_THAT(error_of([&] { nocross.forward(x, x, {}); }),
             Contains("model.attention = test_nocross") && Contains("cross-attention"));
  opt.backend = "test_nopadding";
  layers::MultiHeadAttention nopad(opt, gen);
  layers::AttentionMask m;
  m.key_padding = core::from_vector({0, 0, 1}, {1, 3});
  CHECK_THAT(error_of([&] { nopad.forward(x, Tensor(), m); }), Contains("key-padding"));
  CHECK_NOTHROW(nopad.forward(x, Tensor(), {}));
  opt.backend = "test_nocache";
  layers::MultiHeadAttention nocache(opt, gen);
  core::NoGradGuard no_grad;
  layers::KVCache cache;
  CHECK_THAT(error_of([&] { nocache.forward(x, Tensor(), {}, &cache); }), Contains("KV cache"));
}

TEST_CASE("a shared query/key backend gets k = q and the module has no key projection", "[attention_backends]") {
  ensure_test_backends();
  for (bool rope : {false, true}) {
    INFO("rope " << rope);
    layers::AttentionOptions opt;
    opt.d_model = 8, opt.n_heads = 2;
    if (rope) opt.rope = std::make_shared<layers::RotaryEmbedding>(4, 16);
    opt.backend = "test_shared";
    layers::MultiHeadAttention shared(opt, std::make_shared<core::Generator>(1));
    CHECK(names_of(shared) == std::vector<std::string>{"q_proj.weight", "q_proj.bias", "v_proj.weight",
                                                       "v_proj.bias", "out_proj.weight", "out_proj.bias"});
    opt.fused_qkv = true;
    layers::MultiHeadAttention fused(opt, std::make_shared<core::Generator>(1));
    CHECK(names_of(fused) ==
          std::vector<std::string>{"qv_proj.weight", "qv_proj.bias", "out_proj.weight", "out_proj.bias"});
    REQUIRE(fused.qv_proj->weight.shape() == core::Shape{16, 8});
    // Reference: naive attention whose key projection is a copy of the query projection.
    opt.fused_qkv = false;
    opt.backend = "naive";
    layers::MultiHeadAttention ref(opt, std::make_shared<core::Generator>(1));
    {
      core::NoGradGuard g;
      uint64_t seed = 90;
      for (auto& [name, p] : shared.named_parameters()) p.copy_(random_tensor(p.shape(), seed++));
      for (const char* part : {"weight", "bias"}) {
        auto get = [&](const layers::Module& m, const std::string& n) {
          for (const auto& [k, t] : m.named_parameters())
            if (k == n) return t;
          throw tfm::Error("no parameter " + n);
        };
        const std::string w(part);
        get(ref, "q_proj." + w).copy_(get(shared, "q_proj." + w));
        get(ref, "k_proj." + w).copy_(get(shared, "q_proj." + w));
        get(ref, "v_proj." + w).copy_(get(shared, "v_proj." + w));
        get(ref, "out_proj." + w).copy_(get(shared, "out_proj." + w));
        get(fused, "qv_proj." + w).slice(0, 0, 8).copy_(get(shared, "q_proj." + w));
        get(fused, "qv_proj." + w).slice(0, 8, 16).copy_(get(shared, "v_proj." + w));
        get(fused, "out_proj." + w).copy_(get(shared, "out_proj." + w));
      }
    }
    const Tensor x = random_tensor({2, 5, 8}, 71);
    layers::AttentionMask m;
    m.causal = true;
    m.key_padding = core::from_vector({0, 0, 0, 0, 1, 0, 1, 0, 0, 0}, {2, 5});
    seen()["test_shared"].k_was_q = true;
    const Tensor want = ref.forward(x, Tensor(), m);
    CHECK(max_abs_diff(shared.forward(x, Tensor(), m), want) <= 1e-5f);
    CHECK(max_abs_diff(fused.forward(x, Tensor(), m), want) <= 1e-5f);
    CHECK(seen()["test_shared"].k_was_q);
    // Incremental decoding with the shared projection equals the full pass.
    core::NoGradGuard no_grad;
    layers::KVCache cache;
    layers::AttentionMask step;
    step.causal = true;
    const Tensor x0 = x.slice(0, 0, 1);
    std::vector<float> got;
    for (int64_t t = 0; t < 5; ++t) {
      step.q_offset = t;
      const Tensor y = shared.forward(x0.slice(1, t, t + 1).contiguous(), Tensor(), step, &cache);
      for (float f : y.to_vector()) got.push_back(f);
    }
    layers::AttentionMask causal;
    causal.causal = true;
    const auto full = ref.forward(x0, Tensor(), causal).to_vector();
    REQUIRE(got.size() == full.size());
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(full[i]).margin(1e-5));
  }
}

TEST_CASE("the inspection probe records what the backend reports", "[attention_backends]") {
  ensure_test_backends();
  layers::AttentionOptions opt;
  opt.d_model = 8, opt.n_heads = 2;
  const Tensor x = random_tensor({1, 4, 8}, 81);
  layers::AttentionMask causal;
  causal.causal = true;
  core::NoGradGuard no_grad;
  std::vector<Tensor> rec;
  opt.backend = "test_constant";
  layers::MultiHeadAttention constant(opt, std::make_shared<core::Generator>(1));
  constant.probe = &rec;
  constant.forward(x, Tensor(), causal);
  REQUIRE(rec.size() == 1);
  REQUIRE(rec[0].shape() == core::Shape{1, 2, 4, 4});
  for (float p : rec[0].to_vector()) CHECK(p == 0.125f);  // the backend's report, not naive maps
  opt.backend = "test_silent";
  layers::MultiHeadAttention silent(opt, std::make_shared<core::Generator>(1));
  silent.probe = &rec;
  CHECK_THAT(error_of([&] { silent.forward(x, Tensor(), causal); }),
             Contains("model.attention = test_silent") && Contains("does not report"));
  silent.probe = nullptr;
  CHECK_NOTHROW(silent.forward(x, Tensor(), causal));
  // naive reports the very probabilities it applied: their product with v is the output.
  opt.backend = "naive";
  layers::MultiHeadAttention naive(opt, std::make_shared<core::Generator>(1));
  rec.clear();
  naive.probe = &rec;
  const Tensor y = naive.forward(x, Tensor(), causal);
  REQUIRE(rec.size() == 1);
  auto heads = [](const Tensor& t) { return t.reshape({1, 4, 2, 4}).permute({0, 2, 1, 3}); };
  const Tensor o = core::matmul(rec[0], heads(naive.v_proj->forward(x)));
  const Tensor merged = o.permute({0, 2, 1, 3}).reshape({1, 4, 8});
  CHECK(max_abs_diff(naive.out_proj->forward(merged), y) <= 1e-6f);
}

TEST_CASE("GPT generation without a KV cache re-runs the context and picks the same tokens",
          "[attention_backends]") {
  ensure_test_backends();
  const layers::GPT cached(tiny_gpt("naive"), 5), uncached(tiny_gpt("test_nocache"), 5);
  layers::SamplingOptions greedy;
  greedy.temperature = 0.0f;
  core::Generator g1(1), g2(1);
  seen()["test_nocache"].query_lengths.clear();
  // 3 + 12 tokens overrun block_size 8, so the context restarts once.
  const auto a = cached.generate({1, 2, 3}, 12, greedy, g1);
  const auto b = uncached.generate({1, 2, 3}, 12, greedy, g2);
  CHECK(a == b);
  CHECK(a.size() == 12);
  // Every step fed the whole context (2 layers per step): never a single new token after the prompt.
  const auto& lengths = seen()["test_nocache"].query_lengths;
  REQUIRE(lengths.size() == 2 * 12);
  for (int64_t len : lengths) CHECK(len >= 3);
}

TEST_CASE("config: model.attention_* keys are validated against the chosen backend", "[attention_backends]") {
  using tfm::train::Config;
  ensure_test_backends();
  tfm::test::TempDir dir("attention_backends");
  const std::string data = dir.file("text.txt");
  std::ofstream(data) << "some text\n";
  auto validate_error = [&](const std::string& model_yaml, const std::string& extra = "") {
    return error_of([&] {
      Config::parse("model:\n" + model_yaml + "data:\n  path: " + data + "\n" + extra, "run.yaml").validate();
    });
  };
  // Defaults validate; the keys exist with their defaults and ranges.
  CHECK(validate_error("  attention: naive\n") == "(no error)");
  const Config d = Config::parse("", "run.yaml");
  CHECK(d.get_int("model.attention_chunk_length") == 64);
  CHECK(d.get_int("model.attention_n_hashes") == 1);
  CHECK(d.get_int("model.attention_n_buckets") == 0);
  CHECK_THAT(error_of([] { Config::parse("model:\n  attention_n_hashes: 0\n", "run.yaml"); }),
             Contains("run.yaml:2") && Contains("model.attention_n_hashes") && Contains("int >= 1"));
  CHECK_THAT(error_of([] { Config::parse("model:\n  attention_chunk_lenght: 8\n", "run.yaml"); }),
             Contains("did you mean 'model.attention_chunk_length'"));
  // A key the backend reads is accepted and reaches the model config.
  CHECK(validate_error("  attention: test_reader\n  attention_chunk_length: 32\n") == "(no error)");
  const Config c = Config::parse("model:\n  attention: test_reader\n  attention_chunk_length: 32\n", "run.yaml");
  CHECK(tfm::train::attention_options(c).chunk_length == 32);
  CHECK(tfm::train::gpt_config(c, 10).attention_options.chunk_length == 32);
  CHECK(tfm::train::seq2seq_config(c, 10, 10, 0).attention_options.chunk_length == 32);
  // A key it does not read is an error naming the key and the backends that read it.
  CHECK_THAT(validate_error("  attention_chunk_length: 32\n"),
             Contains("model.attention_chunk_length = 32") && Contains("model.attention = naive") &&
                 Contains("test_reader"));
  CHECK_THAT(validate_error("  attention: test_reader\n  attention_n_buckets: 4\n"),
             Contains("model.attention_n_buckets"));
  // Features the family and other keys need.
  CHECK_THAT(validate_error("  attention: test_nocausal\n"),
             Contains("model.attention = test_nocausal") && Contains("causal") && Contains("model.family = gpt"));
  CHECK_THAT(validate_error("  family: seq2seq\n  attention: test_nocross\n", "  tokenizer: sentencepiece\n"),
             Contains("cross-attention") && Contains("model.family = seq2seq"));
  CHECK_THAT(validate_error("  attention: test_nodropout\n  dropout: 0.1\n"),
             Contains("attention dropout") && Contains("model.dropout"));
  CHECK(validate_error("  family: seq2seq\n  attention: test_nocache\n", "  tokenizer: sentencepiece\n") ==
        "(no error)");
  CHECK_THAT(validate_error("  family: seq2seq\n  attention: test_nocache\n",
                            "  tokenizer: sentencepiece\ntrain:\n  eval_bleu: true\n"),
             Contains("KV cache") && Contains("train.eval_bleu"));
  // help-config lists the keys and the registry's backends.
  const std::string md = tfm::train::help_markdown();
  CHECK_THAT(md, Contains("`model.attention_chunk_length`") && Contains("`model.attention_n_hashes`") &&
                     Contains("`model.attention_n_buckets`") && Contains("one of naive, ") &&
                     Contains("test_reader"));
}

TEST_CASE("model.attention_pattern: per-layer backends repeated over the layers", "[attention_backends]") {
  using tfm::train::Config;
  ensure_test_backends();
  CHECK(layers::parse_attention_pattern("") == std::vector<std::string>{});
  CHECK(layers::parse_attention_pattern(" naive , test_reader") == std::vector<std::string>{"naive", "test_reader"});
  CHECK_THAT(error_of([] { layers::parse_attention_pattern("naive,,test_reader"); }),
             Contains("model.attention_pattern") && Contains("''") && Contains("from: naive, ") && Contains("test_reader"));
  CHECK_THAT(error_of([] { layers::parse_attention_pattern("naive,flashy"); }), Contains("'flashy'"));

  layers::GPTConfig g = tiny_gpt("naive");
  g.n_layers = 3;
  g.attention_pattern = {"naive", "test_reader"};
  g.attention_options.chunk_length = 32;  // read by test_reader only: naive layers get the default
  layers::GPT gpt(g, 1);
  const auto& blocks = *gpt.blocks->layers;
  REQUIRE(blocks.size() == 3);
  CHECK(blocks[0].self_attn->backend_info().name == "naive");
  CHECK(blocks[1].self_attn->backend_info().name == "test_reader");
  CHECK(blocks[2].self_attn->backend_info().name == "naive");
  CHECK(seen()["test_reader"].options.chunk_length == 32);
  CHECK(gpt.forward(core::from_vector(std::vector<int32_t>{1, 2, 3}, {1, 3})).size(2) == 11);
  // An option no backend of the pattern reads, and a feature one of them lacks.
  g.attention_options = {};
  g.attention_options.n_buckets = 4;
  CHECK_THAT(error_of([&] { layers::GPT(g, 1); }),
             Contains("model.attention_n_buckets = 4") && Contains("model.attention_pattern = naive, test_reader"));
  g.attention_options = {};
  g.attention_pattern = {"naive", "test_nocausal"};
  CHECK_THAT(error_of([&] { layers::GPT(g, 1); }), Contains("test_nocausal") && Contains("causal"));
  layers::Seq2SeqConfig s = tiny_seq2seq("naive");
  s.attention_pattern = {"test_nocross"};
  CHECK_THAT(error_of([&] { layers::Seq2Seq(s, 1); }), Contains("test_nocross") && Contains("cross-attention"));

  // The config key: validated names, not together with model.attention, read back through the YAML.
  tfm::test::TempDir dir("attention_pattern");
  const std::string data = dir.file("text.txt");
  std::ofstream(data) << "some text\n";
  auto config = [&](const std::string& model_yaml) {
    return Config::parse("model:\n" + model_yaml + "data:\n  path: " + data + "\n", "run.yaml");
  };
  const Config c = config("  attention_pattern: naive, test_reader\n  attention_chunk_length: 32\n");
  CHECK_NOTHROW(c.validate());
  CHECK(tfm::train::gpt_config(c, 10).attention_pattern == std::vector<std::string>{"naive", "test_reader"});
  CHECK(Config::parse(c.to_yaml(), "round.yaml").get_string("model.attention_pattern") == "naive, test_reader");
  CHECK_THAT(error_of([&] { config("  attention_pattern: naive\n  attention_chunk_length: 32\n").validate(); }),
             Contains("model.attention_chunk_length") && Contains("model.attention_pattern = naive"));
  CHECK_THAT(error_of([&] { config("  attention: test_reader\n  attention_pattern: naive\n").validate(); }),
             Contains("both choose the backend"));
  CHECK_THAT(error_of([&] { config("  attention_pattern: naive, nope\n").validate(); }),
             Contains("model.attention_pattern") && Contains("'nope'"));
  CHECK_THAT(error_of([&] { config("  attention_pattern: test_nodropout\n  dropout: 0.2\n").validate(); }),
             Contains("test_nodropout") && Contains("attention dropout"));
}
