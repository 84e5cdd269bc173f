// The `flash` attention backend inside the models: GPT and Seq2Seq built with
// model.attention = flash compute what the same weights compute with `naive`
// (logits, loss, every gradient, KV-cached generation, dropout), and training
// follows the naive loss curve. The kernel itself is tested against a double
// reference in test_flash_attention.cpp.
#include <catch2/catch.hpp>

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "layers/gpt.h"
#include "layers/seq2seq.h"
#include "optim/optimizer.h"

using namespace tfm;
using core::Tensor;

namespace {

layers::GPTConfig small_gpt(const std::string& attention, float dropout = 0.0f) {
  layers::GPTConfig c;
  c.vocab_size = 17, c.block_size = 40, c.n_layers = 2, c.n_heads = 2, c.d_model = 32, c.d_ff = 64;
  c.positions = layers::PositionKind::rope;
  c.dropout = dropout;
  c.attention = attention;
  return c;
}

layers::Seq2SeqConfig small_s2s(const std::string& attention) {
  layers::Seq2SeqConfig c;
  c.src_vocab = 15, c.tgt_vocab = 13, c.d_model = 32, c.n_heads = 4, c.enc_layers = 2, c.dec_layers = 2;
  c.d_ff = 64, c.max_len = 32, c.pad_id = 0;
  c.attention = attention;
  return c;
}

Tensor random_ids(const core::Shape& shape, int32_t lo, int32_t hi, uint64_t seed) {
  core::Generator g(seed);
  std::vector<int32_t> v(static_cast<std::size_t>(core::numel_of(shape)));
  for (auto& x : v) x = lo + static_cast<int32_t>(g.next_u64() % static_cast<uint64_t>(hi - lo));
  return core::from_vector(v, shape);
}

// max |a - b| / max |b|, with max |b| floored at 1e-3: gradients that are
// zero in exact arithmetic (key biases: a constant shift of every key leaves
// the softmax unchanged) hold only rounding noise on both sides.
float max_rel_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector(), y = b.to_vector();
  REQUIRE(x.size() == y.size());
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::fabs(double(x[i]) - y[i]));
    norm = std::max(norm, std::fabs(double(y[i])));
  }
  return static_cast<float>(diff / std::max(norm, 1e-3));
}

// Copies every parameter of `from` into `to` (same names and shapes).
void copy_parameters(const layers::Module& from, layers::Module& to) {
  core::NoGradGuard g;
  auto src = from.named_parameters();
  auto dst = to.named_parameters();
  REQUIRE(src.size() == dst.size());
  for (std::size_t i = 0; i < src.size(); ++i) {
    REQUIRE(src[i].first == dst[i].first);
    dst[i].second.copy_(src[i].second);
  }
}

// Loss and gradients of both models on the same batch agree.
template <class Model, class LossFn>
void check_same_loss_and_gradients(Model& naive, Model& flash, LossFn loss_of, float tol) {
  Tensor ln = loss_of(naive), lf = loss_of(flash);
  CHECK(std::fabs(ln.item() - lf.item()) <= tol * std::fabs(ln.item()));
  ln.backward();
  lf.backward();
  auto pn = naive.named_parameters(), pf = flash.named_parameters();
  for (std::size_t i = 0; i < pn.size(); ++i) {
    INFO(pn[i].first);
    REQUIRE(pf[i].second.grad().defined());
    CHECK(max_rel_diff(pf[i].second.grad(), pn[i].second.grad()) <= tol);
  }
}

}  // namespace

TEST_CASE("flash is a registered backend with every feature", "[flash_backend]") {
  const auto info = layers::attention_backend_info("flash");
  CHECK(info->supports.causal);
  CHECK(info->supports.key_padding);
  CHECK(info->supports.cross_attention);
  CHECK(info->supports.kv_cache);
  CHECK(info->supports.dropout);
  layers::AttentionBackendOptions o;
  o.q_tile = 0;
  CHECK_THROWS_WITH(layers::make_attention_backend("flash", o), Catch::Contains("model.attention_q_tile"));
  o = {};
  o.chunk_length = 32;  // read by chunked backends only
  CHECK_THROWS_WITH(layers::make_attention_backend("flash", o), Catch::Contains("model.attention_chunk_length"));
}

TEST_CASE("a flash GPT equals the naive GPT: logits, loss, gradients, generation", "[flash_backend]") {
  layers::GPT naive(small_gpt("naive"), 3);
  layers::GPT flash(small_gpt("flash"), 99);
  copy_parameters(naive, flash);
  const Tensor ids = random_ids({3, 37}, 0, 17, 5), targets = random_ids({3, 37}, 0, 17, 6);
  {
    core::NoGradGuard g;
    CHECK(max_rel_diff(flash.forward(ids), naive.forward(ids)) <= 1e-5f);
  }
  check_same_loss_and_gradients(naive, flash, [&](layers::GPT& m) { return m.loss(ids, targets); }, 1e-4f);

  // Generation goes through the KV cache (Tq = 1 with a q_offset): greedy
  // decoding picks the same tokens, and the cached logits equal a full forward.
  layers::SamplingOptions greedy;
  greedy.temperature = 0.0f;
  core::Generator g1(1), g2(1);
  const std::vector<int32_t> prompt{1, 4, 2};
  CHECK(flash.generate(prompt, 30, greedy, g1) == naive.generate(prompt, 30, greedy, g2));
  core::NoGradGuard no_grad;
  std::vector<layers::KVCache> caches = flash.make_caches();
  const Tensor all = flash.forward(ids.slice(0, 0, 1));
  Tensor step;
  for (int64_t t = 0; t < ids.size(1); ++t) step = flash.forward(ids.slice(0, 0, 1).slice(1, t, t + 1), &caches);
  CHECK(max_rel_diff(step, all.slice(1, ids.size(1) - 1, ids.size(1))) <= 1e-5f);
}

TEST_CASE("a flash GPT with dropout equals the naive GPT with dropout for the same seed", "[flash_backend]") {
  // Both models draw their attention-dropout masks from the same counters,
  // so with equal weights and generator states the losses and gradients agree.
  layers::GPT naive(small_gpt("naive", 0.2f), 3);
  layers::GPT flash(small_gpt("flash", 0.2f), 3);
  copy_parameters(naive, flash);
  naive.train(true);
  flash.train(true);
  const Tensor ids = random_ids({2, 33}, 0, 17, 8), targets = random_ids({2, 33}, 0, 17, 9);
  check_same_loss_and_gradients(naive, flash, [&](layers::GPT& m) { return m.loss(ids, targets); }, 1e-4f);
}

TEST_CASE("a flash Seq2Seq equals the naive Seq2Seq with padding on both sides", "[flash_backend]") {
  layers::Seq2Seq naive(small_s2s("naive"), 4);
  layers::Seq2Seq flash(small_s2s("flash"), 4);
  copy_parameters(naive, flash);
  // Sources of different lengths (trailing padding 0), targets padded too.
  Tensor src = random_ids({3, 19}, 1, 15, 10), tin = random_ids({3, 11}, 1, 13, 11),
         tout = random_ids({3, 11}, 1, 13, 12);
  {
    int32_t* s = src.data<int32_t>();
    int32_t* ti = tin.data<int32_t>();
    int32_t* to = tout.data<int32_t>();
    for (int64_t j = 12; j < 19; ++j) s[19 + j] = 0;
    for (int64_t j = 5; j < 19; ++j) s[2 * 19 + j] = 0;
    for (int64_t j = 7; j < 11; ++j) ti[11 + j] = to[11 + j] = 0;
  }
  check_same_loss_and_gradients(naive, flash, [&](layers::Seq2Seq& m) { return m.loss(src, tin, tout); }, 1e-4f);
}

namespace {

// Trains `model` for `steps` AdamW steps on fixed random batches and
// returns the loss of every step.
template <class Model, class LossFn>
std::vector<float> train_curve(Model& model, int steps, LossFn loss_of) {
  optim::Adam opt(optim::decay_groups(model.named_parameters(), 0.01f), 3e-3f, 0.9f, 0.99f, 1e-8f, true);
  model.train(true);
  std::vector<float> curve;
  for (int s = 0; s < steps; ++s) {
    Tensor loss = loss_of(model, s);
    curve.push_back(loss.item());
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  return curve;
}

}  // namespace

TEST_CASE("training with flash follows the naive loss curve", "[flash_backend]") {
  SECTION("GPT, 100 steps") {
    layers::GPT naive(small_gpt("naive", 0.1f), 21);
    layers::GPT flash(small_gpt("flash", 0.1f), 21);
    auto loss_of = [](layers::GPT& m, int s) {
      return m.loss(random_ids({4, 32}, 0, 17, 100 + s), random_ids({4, 32}, 0, 17, 100 + s) );
    };
    // A learnable task: predict the current token (targets = inputs).
    const auto a = train_curve(naive, 100, loss_of), b = train_curve(flash, 100, loss_of);
    CHECK(a.back() < 0.5f * a.front());
    for (std::size_t i = 0; i < a.size(); ++i) {
      INFO("step " << i << ": naive " << a[i] << ", flash " << b[i]);
      CHECK(std::fabs(a[i] - b[i]) <= 1e-3f);
    }
  }
  SECTION("Seq2Seq, 60 steps") {
    layers::Seq2Seq naive(small_s2s("naive"), 22);
    layers::Seq2Seq flash(small_s2s("flash"), 22);
    auto loss_of = [](layers::Seq2Seq& m, int s) {
      const Tensor src = random_ids({4, 12}, 1, 13, 300 + s);
      return m.loss(src, src.slice(1, 0, 10).contiguous(), src.slice(1, 1, 11).contiguous());
    };
    const auto a = train_curve(naive, 60, loss_of), b = train_curve(flash, 60, loss_of);
    CHECK(a.back() < a.front());
    for (std::size_t i = 0; i < a.size(); ++i) {
      INFO("step " << i << ": naive " << a[i] << ", flash " << b[i]);
      CHECK(std::fabs(a[i] - b[i]) <= 1e-3f);
    }
  }
}
