// Layers: Module naming and bookkeeping, Linear and Norm against plain
// double-precision loops, FeedForward against the composed core ops, multi-head attention against explicit loops, rotary and
// sinusoidal positions against their closed forms.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "layers/attention.h"
#include "layers/basic.h"
#include "layers/blocks.h"
#include "layers/module.h"
#include "layers/positions.h"
#include "tests/gradcheck.h"

namespace {

namespace core = tfm::core;
namespace layers = tfm::layers;
using Catch::Matchers::Contains;
using core::Shape;
using core::Tensor;
using tfm::test::check_gradients;
using tfm::test::GradCheckOptions;
using tfm::test::max_abs_diff;
using tfm::test::random_tensor;

// Overwrites every parameter with N(0, scale) values (norm weights 1 + noise)
// so that tests see non-trivial weights instead of zeros.
void randomize(layers::Module& m, uint64_t seed, float scale = 0.5f) {
  core::NoGradGuard g;
  core::Generator gen(seed);
  for (auto& [name, p] : m.named_parameters()) {
    const bool norm_weight = name.ends_with("norm.weight") || (name == "weight" && p.dim() == 1);
    p.copy_(core::randn(p.shape(), gen, norm_weight ? 1.0f : 0.0f, scale));
  }
}

std::vector<std::string> names_of(const layers::Module& m) {
  std::vector<std::string> out;
  for (const auto& [n, p] : m.named_parameters()) out.push_back(n);
  return out;
}

// Largest |got - ref| / (1 + |ref|) over two equally long sequences.
double max_rel_error(const std::vector<float>& got, const std::vector<double>& ref) {
  REQUIRE(got.size() == ref.size());
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - ref[i]) / (1.0 + std::fabs(ref[i])));
  return worst;
}

// y = x·Wᵀ + b over the last dim of x, in double with explicit loops.
std::vector<double> linear_loop(const Tensor& x, const Tensor& w, const Tensor& b) {
  const std::vector<float> xv = x.to_vector(), wv = w.to_vector();
  const std::vector<float> bv = b.defined() ? b.to_vector() : std::vector<float>();
  const int64_t in = w.size(1), out = w.size(0), rows = x.numel() / in;
  std::vector<double> y(static_cast<std::size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = bv.empty() ? 0.0 : bv[static_cast<std::size_t>(o)];
      for (int64_t i = 0; i < in; ++i)
        acc += static_cast<double>(xv[static_cast<std::size_t>(r * in + i)]) * wv[static_cast<std::size_t>(o * in + i)];
      y[static_cast<std::size_t>(r * out + o)] = acc;
    }
  return y;
}

// Normalisation over the last dim in double: layer norm ((x - mean) / sqrt(var + eps))
// or RMS norm (x / sqrt(mean(x²) + eps)), then · weight (+ bias).
std::vector<double> norm_loop(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool rms) {
  const std::vector<float> xv = x.to_vector(), wv = w.to_vector();
  const std::vector<float> bv = b.defined() ? b.to_vector() : std::vector<float>();
  const int64_t D = w.numel(), rows = x.numel() / D;
  std::vector<double> y(xv.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = xv.data() + r * D;
    double mean = 0, sq = 0;
    for (int64_t d = 0; d < D; ++d) mean += row[d];
    mean = rms ? 0.0 : mean / static_cast<double>(D);
    for (int64_t d = 0; d < D; ++d) sq += (row[d] - mean) * (row[d] - mean);
    const double inv = 1.0 / std::sqrt(sq / static_cast<double>(D) + eps);
    for (int64_t d = 0; d < D; ++d)
      y[static_cast<std::size_t>(r * D + d)] = (row[d] - mean) * inv * wv[static_cast<std::size_t>(d)] +
                                               (bv.empty() ? 0.0 : bv[static_cast<std::size_t>(d)]);
  }
  return y;
}

// A module with its own parameters and two children, to test the registry.
class Toy : public layers::Module {
 public:
  Toy() {
    scale = register_parameter("scale", core::ones({3}));
    first = register_module("first", std::make_shared<layers::Linear>(3, 4));
    second = register_module("second", std::make_shared<layers::Linear>(4, 2, false));
  }
  void add_param(const std::string& name) { register_parameter(name, core::zeros({1})); }
  void add_module(const std::string& name) { register_module(name, std::make_shared<layers::Linear>(1, 1)); }
  Tensor scale;
  std::shared_ptr<layers::Linear> first, second;
};

// ---------------------------------------------------------------- Module

TEST_CASE("Module: dotted names in registration order, counts and lookup", "[layers]") {
  Toy toy;
  CHECK(names_of(toy) == std::vector<std::string>{"scale", "first.weight", "first.bias", "second.weight"});
  CHECK(toy.num_parameters() == 3 + 4 * 3 + 4 + 2 * 4);
  int64_t sum = 0;
  for (const Tensor& p : toy.parameters()) {
    CHECK(p.requires_grad());
    sum += p.numel();
  }
  CHECK(sum == toy.num_parameters());
  // Lookup returns the very tensor the layer uses (shared storage).
  CHECK(toy.parameter("first.weight").shares_storage(toy.first->weight));
  CHECK(toy.parameter("scale").shares_storage(toy.scale));
  REQUIRE_THROWS_AS(toy.parameter("first.wieght"), tfm::Error);
  REQUIRE_THROWS_WITH(toy.parameter("third.weight"), Contains("third.weight") && Contains("first.weight"));
  REQUIRE_THROWS_AS(toy.parameter(""), tfm::Error);
  // Names are checked at registration.
  REQUIRE_THROWS_WITH(toy.add_param("scale"), Contains("duplicate"));
  REQUIRE_THROWS_AS(toy.add_param("a.b"), tfm::Error);
  REQUIRE_THROWS_WITH(toy.add_module("first"), Contains("duplicate"));
  REQUIRE_THROWS_AS(toy.add_module("x.y"), tfm::Error);
}

TEST_CASE("Module: decoder block names, zero_grad and train/eval propagation", "[layers]") {
  layers::BlockOptions o;
  o.d_model = 8, o.n_heads = 2, o.d_ff = 16;
  auto gen = std::make_shared<core::Generator>(1);
  layers::TransformerBlock block(o, /*cross_attention=*/true, gen);
  const auto names = names_of(block);
  const std::set<std::string> set(names.begin(), names.end());
  CHECK(set.size() == names.size());
  for (const char* n : {"self_attn.q_proj.weight", "self_attn.out_proj.bias", "attn_norm.weight", "attn_norm.bias",
                        "cross_attn.k_proj.weight", "cross_norm.weight", "ffn.up.weight", "ffn.down.bias",
                        "ffn_norm.bias"})
    CHECK(set.count(n) == 1);
  CHECK(set.count("self_attn.qkv_proj.weight") == 0);
  CHECK(names.front() == "self_attn.q_proj.weight");

  // zero_grad drops every accumulated gradient.
  randomize(block, 3);
  const Tensor x = random_tensor({1, 3, 8}, 4), mem = random_tensor({1, 2, 8}, 5);
  core::sum(block.forward(x, {}, mem, {})).backward();
  for (const Tensor& p : block.parameters()) REQUIRE(p.grad().defined());
  block.zero_grad();
  for (const Tensor& p : block.parameters()) CHECK_FALSE(p.grad().defined());

  // train()/eval() reach every descendant.
  std::vector<const layers::Module*> all{&block, block.self_attn.get(), block.cross_attn.get(), block.ffn.get(),
                                         block.ffn->up.get(), block.ffn_norm.get()};
  CHECK(block.training());
  block.eval();
  for (const auto* m : all) CHECK_FALSE(m->training());
  block.train();
  for (const auto* m : all) CHECK(m->training());
  block.train(false);
  for (const auto* m : all) CHECK_FALSE(m->training());
}

TEST_CASE("Dropout is active only in training mode", "[layers]") {
  auto gen = std::make_shared<core::Generator>(7);
  layers::Dropout d(0.5f, gen);
  const Tensor x = core::ones({1000});
  const auto y = d.forward(x).to_vector();
  int zeros = 0;
  for (float v : y) {
    CHECK((v == 0.0f || v == 2.0f));
    zeros += v == 0.0f;
  }
  CHECK(zeros > 400);
  CHECK(zeros < 600);
  d.eval();
  CHECK(d.forward(x).to_vector() == x.to_vector());
}

// ---------------------------------------------------------------- Linear, Norm, FeedForward

TEST_CASE("Linear equals a plain double-precision loop and has correct gradients", "[layers]") {
  for (bool bias : {true, false}) {
    layers::Linear lin(5, 3, bias);
    CHECK(lin.named_parameters().size() == (bias ? 2u : 1u));
    CHECK(lin.weight.shape() == Shape{3, 5});
    randomize(lin, 11);
    const Tensor x = random_tensor({2, 4, 5}, 12, 1.0f, true);
    const Tensor y = lin.forward(x);
    CHECK(y.shape() == Shape{2, 4, 3});
    CHECK(max_rel_error(y.to_vector(), linear_loop(x, lin.weight, bias ? lin.bias : Tensor())) < 1e-6);
    std::vector<Tensor> inputs = lin.parameters();
    inputs.push_back(x);
    check_gradients([&](const std::vector<Tensor>& in) { return lin.forward(in.back()); }, inputs);
  }
}

TEST_CASE("Norm: LayerNorm and RMSNorm equal plain double-precision loops; gradients", "[layers]") {
  const Tensor x = random_tensor({3, 6}, 21, 2.0f, true);
  SECTION("layernorm") {
    layers::Norm n(layers::NormKind::layer, 6, 1e-5f);
    CHECK(names_of(n) == std::vector<std::string>{"weight", "bias"});
    randomize(n, 22);
    CHECK(max_rel_error(n.forward(x).to_vector(), norm_loop(x, n.weight, n.bias, 1e-5, false)) < 1e-5);
    check_gradients([&](const std::vector<Tensor>&) { return n.forward(x); }, {n.weight, n.bias, x});
  }
  SECTION("layernorm without bias") {
    layers::Norm n(layers::NormKind::layer, 6, 1e-5f, false);
    CHECK(names_of(n) == std::vector<std::string>{"weight"});
  }
  SECTION("rmsnorm") {
    layers::Norm n(layers::parse_norm("rmsnorm"), 6, 1e-6f);
    CHECK(names_of(n) == std::vector<std::string>{"weight"});
    randomize(n, 23);
    CHECK(max_rel_error(n.forward(x).to_vector(), norm_loop(x, n.weight, Tensor(), 1e-6, true)) < 1e-5);
    check_gradients([&](const std::vector<Tensor>&) { return n.forward(x); }, {n.weight, x});
  }
  REQUIRE_THROWS_WITH(layers::parse_norm("batchnorm"), Contains("layernorm") && Contains("rmsnorm"));
}

TEST_CASE("FeedForward equals the composed ops for every activation; gradients", "[layers]") {
  const Tensor x = random_tensor({2, 3, 4}, 31, 1.0f, true);
  for (const char* name : {"relu", "gelu", "gelu_tanh", "swiglu"}) {
    INFO("activation " << name);
    const layers::Activation act = layers::parse_activation(name);
    layers::FeedForward ffn(4, 6, act);
    // Seed 45 keeps every ReLU pre-activation away from the kink (see below).
    randomize(ffn, act == layers::Activation::relu ? 45 : 32);
    const bool glu = act == layers::Activation::swiglu;
    CHECK(static_cast<bool>(ffn.gate) == glu);
    CHECK(ffn.num_parameters() == (4 * 6 + 6) * (glu ? 2 : 1) + 6 * 4 + 4);
    const Tensor h = core::linear(x, ffn.up->weight, ffn.up->bias);
    Tensor a;
    switch (act) {
      case layers::Activation::relu: a = core::relu(h); break;
      case layers::Activation::gelu: a = core::gelu(h, core::GeluApprox::erf); break;
      case layers::Activation::gelu_tanh: a = core::gelu(h, core::GeluApprox::tanh); break;
      case layers::Activation::swiglu:
        a = core::mul(core::silu(core::linear(x, ffn.gate->weight, ffn.gate->bias)), h);
        break;
    }
    const Tensor expected = core::linear(a, ffn.down->weight, ffn.down->bias);
    CHECK(ffn.forward(x).to_vector() == expected.to_vector());
    // Finite differences are meaningless across the ReLU kink: no
    // pre-activation may lie within a few eps of zero.
    if (act == layers::Activation::relu)
      for (float v : h.to_vector()) REQUIRE(std::fabs(v) > 0.05f);
    std::vector<Tensor> inputs = ffn.parameters();
    inputs.push_back(x);
    check_gradients([&](const std::vector<Tensor>&) { return ffn.forward(x); }, inputs);
  }
  REQUIRE_THROWS_WITH(layers::parse_activation("tanh"), Contains("swiglu"));
}

// ---------------------------------------------------------------- Attention

// softmax(q·kᵀ/√d + mask)·v in double with explicit loops. pad: [B·Tk]
// flags (empty for none). A query with no visible key gives zeros.
std::vector<double> ref_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, int64_t q_offset,
                                  const std::vector<float>& pad) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), Dh = q.size(3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  std::vector<double> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        std::vector<double> s(Tk);
        std::vector<bool> ok(Tk);
        double m = -INFINITY;
        for (int64_t j = 0; j < Tk; ++j) {
          ok[j] = !(causal && j > q_offset + i) && !(!pad.empty() && pad[b * Tk + j] != 0.0f);
          s[j] = 0;
          for (int64_t d = 0; d < Dh; ++d) s[j] += static_cast<double>(q.at({b, h, i, d})) * k.at({b, h, j, d});
          s[j] *= scale;
          if (ok[j]) m = std::max(m, s[j]);
        }
        double z = 0;
        for (int64_t j = 0; j < Tk; ++j) z += s[j] = ok[j] ? std::exp(s[j] - m) : 0.0;
        for (int64_t d = 0; d < Dh; ++d) {
          double o = 0;
          for (int64_t j = 0; j < Tk; ++j)
            if (z > 0) o += s[j] / z * v.at({b, h, j, d});
          out.push_back(o);
        }
      }
  return out;
}

void check_close(const Tensor& got, const std::vector<double>& want, double tol) {
  const auto g = got.to_vector();
  REQUIRE(g.size() == want.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    INFO("element " << i);
    REQUIRE(std::isfinite(g[i]));
    CHECK(std::fabs(g[i] - want[i]) <= tol);
  }
}

TEST_CASE("naive attention equals explicit loops: causal, key padding, q_offset", "[layers]") {
  const auto backend = layers::make_attention_backend("naive");
  CHECK(std::string(backend->name()) == "naive");
  core::Generator gen(0);
  const int64_t B = 2, H = 2, Dh = 4;
  const float scale = 0.5f;  // 1/sqrt(4)
  auto run = [&](int64_t tq, int64_t tk, const layers::AttentionMask& mask, const std::vector<float>& pad,
                 uint64_t seed) {
    const Tensor q = random_tensor({B, H, tq, Dh}, seed, 1.5f), k = random_tensor({B, H, tk, Dh}, seed + 1, 1.5f),
                 v = random_tensor({B, H, tk, Dh}, seed + 2);
    layers::AttentionArgs args;
    args.mask = mask, args.scale = scale;
    const Tensor o = backend->attend(q, k, v, args);
    CHECK(o.shape() == Shape{B, H, tq, Dh});
    check_close(o, ref_attention(q, k, v, mask.causal, mask.q_offset, pad), 1e-5);
    return o;
  };
  SECTION("no mask") { run(3, 5, {}, {}, 40); }
  SECTION("causal") {
    layers::AttentionMask m;
    m.causal = true;
    run(5, 5, m, {}, 41);
  }
  SECTION("key padding") {
    const std::vector<float> pad{0, 0, 0, 1, 1, 0, 1, 0, 0, 0};
    layers::AttentionMask m;
    m.key_padding = core::from_vector(pad, {B, 5});
    run(3, 5, m, pad, 42);
  }
  SECTION("causal with q_offset > 0 (the last two of six steps)") {
    layers::AttentionMask m;
    m.causal = true;
    m.q_offset = 4;
    run(2, 6, m, {}, 43);
  }
  SECTION("causal with q_offset and padding") {
    const std::vector<float> pad{1, 0, 0, 0, 0, 1, 1, 0};
    layers::AttentionMask m;
    m.causal = true;
    m.q_offset = 1;
    m.key_padding = core::from_vector(pad, {B, 4});
    run(3, 4, m, pad, 44);
  }
  SECTION("a query whose keys are all masked gives zeros, with finite gradients") {
    // Batch 0: every key padded. Batch 1: causal query 0 sees only key 0, padded.
    const std::vector<float> pad{1, 1, 1, 1, 0, 0};
    layers::AttentionMask m;
    m.causal = true;
    m.key_padding = core::from_vector(pad, {B, 3});
    const Tensor o = run(3, 3, m, pad, 45);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < Dh; ++d) {
        CHECK(o.at({1, h, 0, d}) == 0.0f);
        for (int64_t i = 0; i < 3; ++i) CHECK(o.at({0, h, i, d}) == 0.0f);
      }
    const Tensor q = random_tensor({B, H, 3, Dh}, 46, 1.0f, true), k = random_tensor({B, H, 3, Dh}, 47, 1.0f, true),
                 v = random_tensor({B, H, 3, Dh}, 48, 1.0f, true);
    layers::AttentionArgs args;
    args.mask = m, args.scale = scale;
    check_gradients([&](const std::vector<Tensor>& in) { return backend->attend(in[0], in[1], in[2], args); },
                    {q, k, v});
    for (const Tensor& t : {q, k, v})
      for (float g : t.grad().to_vector()) REQUIRE(std::isfinite(g));
  }
}

TEST_CASE("attention_bias shape and values", "[layers]") {
  layers::AttentionMask m;
  CHECK_FALSE(layers::attention_bias(m, 2, 3).defined());
  m.causal = true;
  m.q_offset = 1;
  const Tensor b = layers::attention_bias(m, 2, 3);
  REQUIRE(b.shape() == Shape{2, 3});
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(b.to_vector() == std::vector<float>{0, 0, -inf, 0, 0, 0});
  m.key_padding = core::zeros({1, 4});
  REQUIRE_THROWS_WITH(layers::attention_bias(m, 2, 3), Contains("key_padding"));
}

TEST_CASE("MultiHeadAttention equals projections + explicit loops; gradients", "[layers]") {
  layers::AttentionOptions opt;
  opt.d_model = 8, opt.n_heads = 2;
  layers::MultiHeadAttention mha(opt, std::make_shared<core::Generator>(1));
  CHECK(names_of(mha) == std::vector<std::string>{"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                                                  "v_proj.weight", "v_proj.bias", "out_proj.weight",
                                                  "out_proj.bias"});
  randomize(mha, 50);
  // Cross-attention from 3 queries to 4 memory steps with padding.
  const Tensor x = random_tensor({2, 3, 8}, 51, 1.0f, true), mem = random_tensor({2, 4, 8}, 52, 1.0f, true);
  const std::vector<float> pad{0, 0, 1, 1, 0, 0, 0, 1};
  layers::AttentionMask m;
  m.key_padding = core::from_vector(pad, {2, 4});
  auto heads = [](const Tensor& t) { return t.reshape({t.size(0), t.size(1), 2, 4}).permute({0, 2, 1, 3}); };
  const Tensor q = heads(mha.q_proj->forward(x)), k = heads(mha.k_proj->forward(mem)),
               v = heads(mha.v_proj->forward(mem));
  const auto o = ref_attention(q, k, v, false, 0, pad);  // [B, H, Tq, Dh]
  // Merge heads and apply out_proj by hand.
  const Tensor y = mha.forward(x, mem, m);
  REQUIRE(y.shape() == Shape{2, 3, 8});
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 3; ++t)
      for (int64_t e = 0; e < 8; ++e) {
        double r = mha.out_proj->bias.at({e});
        for (int64_t h = 0; h < 2; ++h)
          for (int64_t d = 0; d < 4; ++d)
            r += o[((b * 2 + h) * 3 + t) * 4 + d] * mha.out_proj->weight.at({e, h * 4 + d});
        CHECK(y.at({b, t, e}) == Approx(r).margin(1e-5));
      }
  std::vector<Tensor> inputs = mha.parameters();
  inputs.push_back(x);
  inputs.push_back(mem);
  check_gradients([&](const std::vector<Tensor>&) { return mha.forward(x, mem, m); }, inputs);
}

TEST_CASE("fused QKV equals separate projections with copied weights", "[layers]") {
  for (bool rope : {false, true}) {
    INFO("rope " << rope);
    layers::AttentionOptions opt;
    opt.d_model = 8, opt.n_heads = 2;
    if (rope) opt.rope = std::make_shared<layers::RotaryEmbedding>(4, 16);
    layers::MultiHeadAttention sep(opt, std::make_shared<core::Generator>(1));
    opt.fused_qkv = true;
    layers::MultiHeadAttention fused(opt, std::make_shared<core::Generator>(1));
    CHECK(names_of(fused) ==
          std::vector<std::string>{"qkv_proj.weight", "qkv_proj.bias", "out_proj.weight", "out_proj.bias"});
    CHECK(fused.num_parameters() == sep.num_parameters());
    randomize(sep, 60);
    {
      core::NoGradGuard g;
      const layers::Linear* parts[] = {sep.q_proj.get(), sep.k_proj.get(), sep.v_proj.get()};
      for (int64_t i = 0; i < 3; ++i) {
        fused.qkv_proj->weight.slice(0, 8 * i, 8 * (i + 1)).copy_(parts[i]->weight);
        fused.qkv_proj->bias.slice(0, 8 * i, 8 * (i + 1)).copy_(parts[i]->bias);
      }
      fused.out_proj->weight.copy_(sep.out_proj->weight);
      fused.out_proj->bias.copy_(sep.out_proj->bias);
    }
    const Tensor x = random_tensor({2, 5, 8}, 61);
    layers::AttentionMask m;
    m.causal = true;
    m.key_padding = core::from_vector({0, 0, 0, 0, 1, 0, 1, 0, 0, 0}, {2, 5});
    CHECK(max_abs_diff(fused.forward(x, Tensor(), m), sep.forward(x, Tensor(), m)) <= 1e-5f);
    // A fused projection cannot read a separate memory.
    REQUIRE_THROWS_AS(fused.forward(x, x, {}), tfm::Error);
  }
}

TEST_CASE("attention configuration errors", "[layers]") {
  REQUIRE_THROWS_WITH(layers::make_attention_backend("fast"), Contains("fast") && Contains("naive"));
  layers::AttentionOptions opt;
  opt.d_model = 8, opt.n_heads = 2, opt.backend = "nope";
  auto gen = std::make_shared<core::Generator>(1);
  REQUIRE_THROWS_WITH(layers::MultiHeadAttention(opt, gen), Contains("naive"));
  opt.backend = "naive", opt.n_heads = 3;
  REQUIRE_THROWS_WITH(layers::MultiHeadAttention(opt, gen), Contains("n_heads"));
  opt.n_heads = 2, opt.rope = std::make_shared<layers::RotaryEmbedding>(8, 4);
  REQUIRE_THROWS_WITH(layers::MultiHeadAttention(opt, gen), Contains("rotary"));
  opt.rope = nullptr;
  layers::MultiHeadAttention mha(opt, gen);
  REQUIRE_THROWS_AS(mha.forward(core::zeros({1, 2, 6}), Tensor(), {}), tfm::Error);
  layers::KVCache cache;  // the cache is for inference only
  REQUIRE_THROWS_WITH(mha.forward(core::zeros({1, 2, 8}), Tensor(), {}, &cache), Contains("NoGradGuard"));
}

// ---------------------------------------------------------------- RoPE

// x: one head vector [Dh] placed at `pos` and rotated.
std::vector<float> rotate(const layers::RotaryEmbedding& r, const std::vector<float>& x, int64_t pos) {
  return r.apply(core::from_vector(x, {1, 1, static_cast<int64_t>(x.size())}), pos).to_vector();
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

TEST_CASE("RoPE: relative scores, norm preservation, identity at 0", "[layers]") {
  const layers::RotaryEmbedding rope(8, 64);
  CHECK(rope.head_dim() == 8);
  const auto q = random_tensor({8}, 70).to_vector(), k = random_tensor({8}, 71).to_vector();
  for (auto [m, n] : {std::pair<int64_t, int64_t>{3, 1}, {0, 5}, {7, 7}, {10, 2}}) {
    const double s = dot(rotate(rope, q, m), rotate(rope, k, n));
    for (int64_t shift : {1, 9, 40}) {
      INFO("m " << m << " n " << n << " shift " << shift);
      CHECK(std::fabs(dot(rotate(rope, q, m + shift), rotate(rope, k, n + shift)) - s) <= 1e-5);
    }
  }
  // The relative position does matter.
  CHECK(std::fabs(dot(rotate(rope, q, 3), rotate(rope, k, 1)) - dot(rotate(rope, q, 1), rotate(rope, k, 3))) > 1e-3);
  // Norm of each head vector is preserved; position 0 is exactly the identity.
  const Tensor x = random_tensor({2, 3, 5, 8}, 72);
  const Tensor y = rope.apply(x, 17);
  for (int64_t a = 0; a < 2; ++a)
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t t = 0; t < 5; ++t) {
        double nx = 0, ny = 0;
        for (int64_t d = 0; d < 8; ++d) nx += std::pow(x.at({a, b, t, d}), 2), ny += std::pow(y.at({a, b, t, d}), 2);
        CHECK(std::fabs(std::sqrt(nx) - std::sqrt(ny)) <= 1e-5);
      }
  CHECK(rope.apply(x.slice(2, 0, 1), 0).to_vector() == x.slice(2, 0, 1).contiguous().to_vector());
  // Rotating a sequence at an offset equals rotating each step at its position.
  for (int64_t t = 0; t < 5; ++t)
    CHECK(max_abs_diff(y.slice(2, t, t + 1), rope.apply(x.slice(2, t, t + 1), 17 + t)) <= 1e-6f);
  REQUIRE_THROWS_WITH(rope.apply(x, 60), Contains("exceed"));
  REQUIRE_THROWS_AS(layers::RotaryEmbedding(5, 8), tfm::Error);
}

TEST_CASE("RoPE half-split convention: pairs (0,2) and (1,3) for head_dim 4", "[layers]") {
  const layers::RotaryEmbedding rope(4, 8, 10000.0f);
  const std::vector<float> x{1, 2, 3, 4};
  const int64_t p = 2;
  // Pair (0,2) turns by p·10000^0 = p, pair (1,3) by p·10000^(-2/4) = p/100.
  const double a0 = p, a1 = p / 100.0;
  const std::vector<double> want{1 * std::cos(a0) - 3 * std::sin(a0), 2 * std::cos(a1) - 4 * std::sin(a1),
                                 1 * std::sin(a0) + 3 * std::cos(a0), 2 * std::sin(a1) + 4 * std::cos(a1)};
  const auto got = rotate(rope, x, p);
  for (int i = 0; i < 4; ++i) CHECK(std::fabs(got[i] - want[i]) <= 1e-6);
  // A unit vector on dim 0 moves only into dim 2.
  const auto e0 = rotate(rope, {1, 0, 0, 0}, 1);
  CHECK(e0[1] == 0.0f);
  CHECK(e0[3] == 0.0f);
  CHECK(e0[2] == Approx(std::sin(1.0)).margin(1e-6));
}

TEST_CASE("RoPE apply is differentiable", "[layers]") {
  const layers::RotaryEmbedding rope(6, 16);
  const Tensor x = random_tensor({2, 4, 6}, 80, 1.0f, true);
  check_gradients([&](const std::vector<Tensor>& in) { return rope.apply(in[0], 3); }, {x});
}

// ---------------------------------------------------------------- sinusoidal positions

TEST_CASE("sinusoidal table equals the closed form", "[layers]") {
  const int64_t L = 50, D = 16;
  const Tensor pe = layers::sinusoidal_table(L, D);
  REQUIRE(pe.shape() == Shape{L, D});
  for (int64_t p = 0; p < L; ++p)
    for (int64_t i = 0; i < D / 2; ++i) {
      const double angle = static_cast<double>(p) / std::pow(10000.0, 2.0 * i / D);
      CHECK(std::fabs(pe.at({p, 2 * i}) - std::sin(angle)) <= 1e-6);
      CHECK(std::fabs(pe.at({p, 2 * i + 1}) - std::cos(angle)) <= 1e-6);
    }
  REQUIRE_THROWS_WITH(layers::sinusoidal_table(4, 7), Contains("even"));
  CHECK(layers::parse_positions("rope") == layers::PositionKind::rope);
  REQUIRE_THROWS_WITH(layers::parse_positions("alibi"), Contains("sinusoidal"));
}

}  // namespace
