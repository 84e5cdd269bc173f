// Activation checkpointing (core/checkpoint.h): the recomputed backward
// gives the same gradients as the stored one, bitwise, with dropout on; the
// GPT and Seq2Seq models with model.checkpoint_activations give the same
// loss and parameter gradients and keep less memory.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/ops.h"
#include "gradcheck.h"
#include "layers/gpt.h"
#include "layers/seq2seq.h"
#include "train/config.h"
#include "train/model_io.h"

using namespace tfm;
using core::Tensor;
using Catch::Matchers::Contains;
using tfm::test::random_tensor;

namespace {

// out = x + W2·dropout(gelu(W1·x + b1)) + 0.5·y: a residual block with a
// second input, parameters and random numbers.
struct SmallBlock {
  Tensor w1 = random_tensor({16, 8}, 1, 0.4f, true), b1 = random_tensor({16}, 2, 0.1f, true);
  Tensor w2 = random_tensor({8, 16}, 3, 0.4f, true);
  std::shared_ptr<core::Generator> gen = std::make_shared<core::Generator>(99);
  Tensor operator()(const std::vector<Tensor>& in) const {
    Tensor h = core::dropout(core::gelu(core::linear(in[0], w1, b1)), 0.25f, true, *gen);
    return core::add(core::add(in[0], core::linear(h, w2)), core::mul(in[1], 0.5f));
  }
  std::vector<Tensor> params() const { return {w1, b1, w2}; }
};

void zero_grads(const std::vector<Tensor>& ts) {
  for (Tensor t : ts) t.zero_grad();
}

std::vector<float> values(const Tensor& t) { return t.defined() ? t.to_vector() : std::vector<float>{}; }

}  // namespace

TEST_CASE("checkpoint gives bitwise the same output and gradients, dropout included", "[checkpoint]") {
  SmallBlock f;
  Tensor x0 = random_tensor({3, 5, 8}, 10, 1.0f, true), y = random_tensor({3, 5, 8}, 11, 1.0f, true);
  const Tensor w_out = random_tensor({3, 5, 8}, 12);
  auto run = [&](bool ckpt) {
    zero_grads({x0, y, f.w1, f.b1, f.w2});
    f.gen->set_state(core::RngState{99, 0});
    Tensor x = core::mul(x0, 1.5f);  // a non-leaf input
    Tensor h = x;
    for (int layer = 0; layer < 3; ++layer)
      h = ckpt ? core::checkpoint([&](const std::vector<Tensor>& in) { return f(in); }, {h, y}, {f.gen.get()})
               : f({h, y});
    Tensor loss = core::sum(core::mul(h, w_out));
    const core::RngState after_forward = f.gen->state();
    loss.backward();
    CHECK(f.gen->state() == after_forward);  // the replay put the generator back
    return std::vector<std::vector<float>>{values(loss), values(x0.grad()), values(y.grad()), values(f.w1.grad()),
                                           values(f.b1.grad()), values(f.w2.grad())};
  };
  const auto plain = run(false), ckpt = run(true);
  REQUIRE(plain.size() == ckpt.size());
  for (std::size_t i = 0; i < plain.size(); ++i) {
    INFO("tensor " << i);
    CHECK_FALSE(plain[i].empty());
    CHECK(plain[i] == ckpt[i]);
  }
}

TEST_CASE("checkpoint matches finite differences and handles constant inputs", "[checkpoint]") {
  const Tensor w = random_tensor({4, 4}, 21, 0.5f, true);
  const Tensor c = random_tensor({2, 4}, 22);  // needs no gradient
  tfm::test::check_gradients(
      [&](const std::vector<Tensor>& in) {
        return core::checkpoint(
            [&](const std::vector<Tensor>& v) { return core::tanh(core::add(core::linear(v[0], w), v[1])); },
            {in[0], c});
      },
      {random_tensor({2, 4}, 23, 1.0f, true)});
  // Nothing requires grad: fn runs directly and nothing is recorded.
  core::NoGradGuard off;
  CHECK_FALSE(core::checkpoint([](const std::vector<Tensor>& v) { return core::exp(v[0]); }, {c}).requires_grad());
}

TEST_CASE("checkpoint may return its input unchanged", "[checkpoint]") {
  Tensor x = random_tensor({6}, 31, 1.0f, true);
  Tensor id = core::checkpoint([](const std::vector<Tensor>& v) { return v[0]; }, {x});
  CHECK(id.impl() != x.impl());
  CHECK(x.is_leaf());
  core::sum(core::mul(id, 3.0f)).backward();
  CHECK(x.grad().to_vector() == std::vector<float>(6, 3.0f));
}

TEST_CASE("nested checkpoints: the inner pass runs inside the outer backward", "[checkpoint]") {
  const Tensor w = random_tensor({5, 5}, 41, 0.5f, true);
  auto layer = [&](const Tensor& h) { return core::tanh(core::linear(h, w)); };
  auto outer = [&](const std::vector<Tensor>& v) {
    Tensor h = core::checkpoint([&](const std::vector<Tensor>& u) { return layer(u[0]); }, {v[0]});
    return layer(h);
  };
  Tensor x = random_tensor({3, 5}, 42, 1.0f, true);
  core::sum(layer(layer(x))).backward();
  const auto gx = x.grad().to_vector(), gw = w.grad().to_vector();
  x.zero_grad();
  Tensor wz = w;
  wz.zero_grad();
  core::sum(core::checkpoint(outer, {x})).backward();
  CHECK(x.grad().to_vector() == gx);
  CHECK(w.grad().to_vector() == gw);
}

TEST_CASE("checkpoint rejects functions that break its contract", "[checkpoint]") {
  Tensor x = random_tensor({4}, 51, 1.0f, true);
  // A tensor with history captured instead of passed as an input.
  Tensor hidden = core::mul(x, 2.0f);
  Tensor out = core::checkpoint([&](const std::vector<Tensor>& v) { return core::mul(v[0], hidden); }, {x});
  REQUIRE_THROWS_WITH(core::sum(out).backward(), Contains("checkpoint") && Contains("not one of its inputs"));
  // A function that draws a different amount of random numbers the second time.
  core::Generator gen(5);
  int calls = 0;
  Tensor y = core::checkpoint(
      [&](const std::vector<Tensor>& v) {
        gen.reserve(++calls);
        return core::exp(v[0]);
      },
      {x}, {&gen});
  REQUIRE_THROWS_WITH(core::sum(y).backward(), Contains("checkpoint") && Contains("generator 0"));
  REQUIRE_THROWS_WITH(core::checkpoint(core::CheckpointFn(), {x}), Contains("no function"));
}

// ---------------------------------------------------------------- models

namespace {

using layers::GPTConfig;
using layers::Seq2SeqConfig;

struct Grads {
  float loss = 0;
  std::vector<std::pair<std::string, std::vector<float>>> params;
  int64_t peak_bytes = 0;
};

// Largest |a − b| / max(|b|, 1e-3·max|b|) over every parameter gradient.
void check_same_gradients(const Grads& a, const Grads& b) {
  CHECK(a.loss == Approx(b.loss).epsilon(1e-6));
  REQUIRE(a.params.size() == b.params.size());
  for (std::size_t i = 0; i < a.params.size(); ++i) {
    const auto& [name, ga] = a.params[i];
    const auto& gb = b.params[i].second;
    REQUIRE(ga.size() == gb.size());
    double scale = 0, diff = 0;
    for (std::size_t k = 0; k < ga.size(); ++k) {
      scale = std::max(scale, std::fabs(static_cast<double>(gb[k])));
      diff = std::max(diff, std::fabs(static_cast<double>(ga[k]) - gb[k]));
    }
    INFO(name << ": max |diff| " << diff << " vs max |grad| " << scale);
    CHECK(scale > 0);
    // 1e-6 relative; the absolute 1e-8 covers gradients that are zero up to
    // rounding (a key bias shifts every score of a row equally, so its exact
    // gradient is 0 and what is computed is noise of ~1e-9).
    CHECK(diff <= 1e-6 * scale + 1e-8);
    if (std::getenv("TFM_TEST_REPORT_BITWISE")) std::printf("%s %s\n", diff == 0 ? "bitwise" : "differs", name.c_str());
  }
}

template <class Model, class LossFn>
Grads gradients(Model& m, LossFn loss_fn) {
  m.train();
  m.zero_grad();
  core::reset_peak_memory();
  const int64_t base = core::memory_stats().current_bytes;
  Tensor loss = loss_fn(m);
  Grads g;
  g.loss = loss.item();
  loss.backward();
  g.peak_bytes = core::memory_stats().peak_bytes - base;
  for (const auto& [name, p] : m.named_parameters()) g.params.emplace_back(name, values(p.grad()));
  return g;
}

Tensor ids(int64_t b, int64_t t, int32_t vocab, uint64_t seed, int32_t lo = 0) {
  core::Generator g(seed);
  std::vector<int32_t> v(static_cast<std::size_t>(b * t));
  for (auto& x : v) x = lo + static_cast<int32_t>(g.next_u64() % static_cast<uint64_t>(vocab - lo));
  return core::from_vector(v, {b, t});
}

}  // namespace

TEST_CASE("GPT: checkpointed blocks give the same loss and gradients with dropout on", "[checkpoint][models]") {
  for (const auto pos : {layers::PositionKind::learned, layers::PositionKind::rope}) {
    GPTConfig c;
    c.vocab_size = 13, c.block_size = 32, c.n_layers = 3, c.n_heads = 2, c.d_model = 16, c.d_ff = 32;
    c.dropout = 0.2f, c.positions = pos;
    const Tensor x = ids(2, 32, 13, 1), y = ids(2, 32, 13, 2);
    auto run = [&](bool ckpt) {
      GPTConfig cc = c;
      cc.checkpoint_activations = ckpt;
      layers::GPT m(cc, 7);
      const Grads g = gradients(m, [&](layers::GPT& model) { return model.loss(x, y); });
      // A second step continues the same random stream in both models.
      const Grads g2 = gradients(m, [&](layers::GPT& model) { return model.loss(x, y); });
      CHECK(g2.loss != g.loss);
      return std::pair{g, g2};
    };
    const auto [plain, plain2] = run(false);
    const auto [ckpt, ckpt2] = run(true);
    INFO("positions " << static_cast<int>(pos));
    check_same_gradients(ckpt, plain);
    check_same_gradients(ckpt2, plain2);
    CHECK(ckpt.peak_bytes < plain.peak_bytes);
  }
}

TEST_CASE("Seq2Seq: checkpointed encoder and decoder blocks give the same gradients", "[checkpoint][models]") {
  Seq2SeqConfig c;
  c.src_vocab = 11, c.tgt_vocab = 13, c.d_model = 16, c.n_heads = 2, c.enc_layers = 2, c.dec_layers = 3;
  c.d_ff = 32, c.max_len = 24, c.dropout = 0.2f, c.pad_id = 0;
  Tensor src = ids(2, 20, 11, 3, 1), tgt_in = ids(2, 18, 13, 4, 1), tgt_out = ids(2, 18, 13, 5, 1);
  {  // padding at the end of one source row and one target row
    core::NoGradGuard off;
    src.slice(0, 1, 2).slice(1, 15, 20).fill_(0.0f);
    tgt_out.slice(0, 0, 1).slice(1, 12, 18).fill_(0.0f);
  }
  auto run = [&](bool ckpt) {
    Seq2SeqConfig cc = c;
    cc.checkpoint_activations = ckpt;
    layers::Seq2Seq m(cc, 9);
    return gradients(m, [&](layers::Seq2Seq& model) { return model.loss(src, tgt_in, tgt_out, 0.1f); });
  };
  const Grads plain = run(false), ckpt = run(true);
  check_same_gradients(ckpt, plain);
  // The encoder output reaches every decoder block: its gradient flows back
  // into the encoder and the source embedding.
  bool saw_encoder = false;
  for (const auto& [name, g] : ckpt.params)
    if (name.starts_with("encoder.layers.0.")) saw_encoder = true;
  CHECK(saw_encoder);
  CHECK(ckpt.peak_bytes < plain.peak_bytes);
}

TEST_CASE("model.checkpoint_activations reaches both model configs; default off", "[checkpoint][config]") {
  const auto off = train::Config::parse("model:\n  d_model: 16\n", "run.yaml");
  CHECK_FALSE(off.get_bool("model.checkpoint_activations"));
  CHECK_FALSE(train::gpt_config(off, 10).checkpoint_activations);
  const auto on = train::Config::parse("model:\n  d_model: 16\n", "run.yaml", {"model.checkpoint_activations=true"});
  CHECK(train::gpt_config(on, 10).checkpoint_activations);
  CHECK(train::seq2seq_config(on, 10, 10, 0).checkpoint_activations);
  CHECK(layers::block_options(train::gpt_config(on, 10), nullptr).checkpoint);
}
