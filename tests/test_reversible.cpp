// Reversible residual stacks (core/reversible.h, model.reversible) and the
// chunked feed-forward (model.ff_chunks): inputs rebuilt from outputs, the
// same gradients as the ordinary two-stream stack with dropout on, LSH
// hashing replayed from the tape instead of re-hashed, chunked FF equal to
// unchunked, and the memory both save.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/reversible.h"
#include "gradcheck.h"
#include "layers/blocks.h"
#include "layers/gpt.h"
#include "layers/init.h"
#include "layers/lsh_attention.h"
#include "temp_dir.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

using namespace tfm;
using core::Tensor;
using Catch::Matchers::Contains;
using tfm::test::random_tensor;
namespace fs = std::filesystem;

namespace {

const std::string kFixture = std::string(TFM_TEST_DATA_DIR) + "/fixtures/genesis1.txt";

// ‖a − b‖ / ‖b‖ in double precision (0 when both are zero).
double rel_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  REQUIRE(a.shape() == b.shape());
  const std::vector<float> x = a.contiguous().to_vector(), y = b.contiguous().to_vector();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    num += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += double(y[i]) * y[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

double norm(const Tensor& a) {
  double s = 0;
  for (float v : a.contiguous().to_vector()) s += double(v) * v;
  return std::sqrt(s);
}


layers::BlockOptions block_opts(const std::string& attention, float dropout, bool reversible, int64_t ff_chunks = 1) {
  layers::BlockOptions b;
  b.ff_chunks = ff_chunks;
  b.d_model = 16;
  b.n_heads = 2;
  b.d_ff = 32;
  b.dropout = dropout;
  b.attention = attention;
  if (attention == "lsh" || attention == "local") {
    b.attention_options.chunk_length = 4;
    if (attention == "lsh") b.attention_options.n_hashes = 2;
  }
  b.reversible = reversible;
  return b;
}

struct Stack {
  std::shared_ptr<core::Generator> gen = std::make_shared<core::Generator>(7);
  std::shared_ptr<layers::TransformerStack> stack;
  Stack(const layers::BlockOptions& b, int64_t n_layers) {
    stack = std::make_shared<layers::TransformerStack>(b, n_layers, false, gen);
    layers::init_transformer(*stack, b.d_model, 3);
  }
  // The ordinary two-stream stack, recorded op by op (the reference).
  Tensor plain(const Tensor& x, const core::AttentionMask& mask) const {
    Tensor y1 = x, y2 = x;
    for (std::size_t i = 0; i < stack->layers->size(); ++i) {
      y1 = core::add(y1, (*stack->layers)[i].attention_branch(y2, mask));
      y2 = core::add(y2, (*stack->layers)[i].ffn_branch(y1));
    }
    return stack->final_norm->forward(core::mul(core::add(y1, y2), 0.5f));
  }
  std::vector<core::ReversibleLayer> branches(const core::AttentionMask& mask) const {
    std::vector<core::ReversibleLayer> out;
    for (std::size_t i = 0; i < stack->layers->size(); ++i) {
      const layers::TransformerBlock* b = &(*stack->layers)[i];
      out.push_back({[b, mask](const Tensor& h) { return b->attention_branch(h, mask); },
                     [b](const Tensor& h) { return b->ffn_branch(h); }});
    }
    return out;
  }
};

// Loss, input gradient and every parameter gradient of one forward/backward.
std::vector<Tensor> loss_and_grads(const Stack& s, bool reversible, Tensor x0, const Tensor& w_out) {
  for (Tensor p : s.stack->parameters()) p.zero_grad();
  x0.zero_grad();
  s.gen->set_state(core::RngState{7, 0});
  core::AttentionMask mask;
  mask.causal = true;
  Tensor x = core::mul(x0, 1.0f);  // a non-leaf input, as the embedding output is
  Tensor out = reversible ? s.stack->forward(x, mask) : s.plain(x, mask);
  Tensor loss = core::sum(core::mul(out, w_out));
  const core::RngState after_forward = s.gen->state();
  loss.backward();
  CHECK(s.gen->state() == after_forward);  // the replay put the generator back
  std::vector<Tensor> r{loss.detach(), x0.grad()};
  for (const Tensor& p : s.stack->parameters()) r.push_back(p.grad());
  return r;
}

void check_same_gradients(const std::string& attention, int64_t ff_chunks = 1) {
  Stack s(block_opts(attention, 0.1f, true, ff_chunks), 12);
  const Tensor x0 = random_tensor({2, 16, 16}, 11, 1.0f, true), w_out = random_tensor({2, 16, 16}, 12);
  const auto ref = loss_and_grads(s, false, x0, w_out);
  const auto rev = loss_and_grads(s, true, x0, w_out);
  REQUIRE(ref.size() == rev.size());
  const auto names = s.stack->named_parameters();
  for (std::size_t i = 0; i < ref.size(); ++i) {
    INFO((i == 0 ? "loss" : i == 1 ? "input" : names[i - 2].first));
    REQUIRE(ref[i].defined());
    // The key bias shifts every score of a query equally, so its exact
    // gradient is 0 and both runs hold rounding noise: compare that to the
    // scale of the input gradient.
    if (norm(ref[i]) < 1e-5 * norm(ref[1]))
      CHECK(norm(core::sub(rev[i], ref[i])) <= 1e-5 * norm(ref[1]));
    else
      CHECK(rel_diff(rev[i], ref[i]) <= 1e-5);
  }
}

}  // namespace

TEST_CASE("a 12-layer reversible stack rebuilds its inputs from its outputs", "[reversible]") {
  Stack s(block_opts("naive", 0.1f, true), 12);
  core::AttentionMask mask;
  mask.causal = true;
  const Tensor x1 = random_tensor({2, 16, 16}, 1), x2 = random_tensor({2, 16, 16}, 2);
  const auto layers = s.branches(mask);
  core::ReversibleRngTrace trace;
  core::NoGradGuard no_grad;
  const Tensor y = core::reversible_forward(layers, x1, x2, {s.gen.get()}, &trace);
  REQUIRE(trace.f_before.size() == 12);
  CHECK(trace.after != trace.f_before[0]);  // dropout drew from the generator
  const auto [r1, r2] = core::reversible_inverse(layers, y.slice(0, 0, 1).squeeze(0), y.slice(0, 1, 2).squeeze(0),
                                                 {s.gen.get()}, trace);
  CHECK(rel_diff(r1, x1) <= 1e-5);
  CHECK(rel_diff(r2, x2) <= 1e-5);
  CHECK(rel_diff(y.slice(0, 0, 1).squeeze(0), x1) > 1e-2);  // the layers did change the streams
}

TEST_CASE("a reversible stack gives the gradients of the ordinary two-stream stack, dropout on", "[reversible]") {
  check_same_gradients("naive");
}

TEST_CASE("reversible layers with flash attention give the two-stream gradients", "[reversible][flash]") {
  check_same_gradients("flash");
}

TEST_CASE("reversible LSH layers replay the forward's hashing from the tape", "[reversible][lsh]") {
  check_same_gradients("lsh");
}

TEST_CASE("reversible layers with local attention give the two-stream gradients", "[reversible][local]") {
  check_same_gradients("local");
}

TEST_CASE("reversible layers with a chunked feed-forward give the two-stream gradients", "[reversible][ff_chunks]") {
  // T = 16 in 3 slices (5, 5, 6 steps): the backward recomputes the
  // feed-forward branch slice by slice with the whole branch's dropout mask.
  check_same_gradients("naive", 3);
  check_same_gradients("lsh", 3);
}

TEST_CASE("a training step evaluates each branch once in forward and once more in backward at most",
          "[reversible][ff_chunks][recompute]") {
  // Rows through each layer's self-attention and feed-forward in one
  // forward + backward of B·T = 32 positions. The reversible backward
  // recomputes each branch once and uses that graph both to reconstruct the
  // inputs and to back-propagate (2 evaluations each, chunked or not); the
  // standard stack runs attention once and a chunked feed-forward twice
  // (forward, then once under core::checkpoint in backward).
  const int64_t rows = 2 * 16;
  for (const bool reversible : {true, false}) {
    for (const int64_t chunks : {int64_t{1}, int64_t{4}}) {
      INFO((reversible ? "reversible" : "standard") << ", ff_chunks " << chunks);
      Stack s(block_opts("naive", 0.1f, reversible, chunks), 3);
      const Tensor x0 = random_tensor({2, 16, 16}, 11, 1.0f, true), w_out = random_tensor({2, 16, 16}, 12);
      std::vector<int64_t> att0, ff0;
      for (std::size_t i = 0; i < s.stack->layers->size(); ++i) {
        att0.push_back((*s.stack->layers)[i].attention_rows_evaluated());
        ff0.push_back((*s.stack->layers)[i].ffn->rows_evaluated());
      }
      core::AttentionMask mask;
      mask.causal = true;
      s.gen->set_state(core::RngState{7, 0});
      Tensor x = core::mul(x0, 1.0f);
      Tensor loss = core::sum(core::mul(s.stack->forward(x, mask), w_out));
      for (std::size_t i = 0; i < s.stack->layers->size(); ++i) {
        INFO("forward, layer " << i);
        CHECK((*s.stack->layers)[i].attention_rows_evaluated() - att0[i] == rows);
        CHECK((*s.stack->layers)[i].ffn->rows_evaluated() - ff0[i] == rows);
      }
      loss.backward();
      for (std::size_t i = 0; i < s.stack->layers->size(); ++i) {
        INFO("forward and backward, layer " << i);
        CHECK((*s.stack->layers)[i].attention_rows_evaluated() - att0[i] == (reversible ? 2 : 1) * rows);
        CHECK((*s.stack->layers)[i].ffn->rows_evaluated() - ff0[i] == (reversible || chunks > 1 ? 2 : 1) * rows);
      }
    }
  }
}

TEST_CASE("the reversible tape refuses a recomputation that asks for more than was recorded", "[reversible]") {
  std::vector<std::any> tape;
  {
    core::ReversibleTapeScope rec(&tape, core::ReversibleTapeScope::Mode::record);
    CHECK(core::tape_active());
    CHECK_FALSE(core::tape_replaying());
    core::tape_record(int64_t{5});
  }
  CHECK_FALSE(core::tape_active());
  core::ReversibleTapeScope rep(&tape, core::ReversibleTapeScope::Mode::replay);
  CHECK(std::any_cast<int64_t>(core::tape_replay()) == 5);
  CHECK_THROWS_WITH(core::tape_replay(), Contains("asked for value 2"));
}

TEST_CASE("reversible_stack rejects branches that read outside tensors or change the generator draw",
          "[reversible]") {
  const Tensor w = random_tensor({8, 8}, 3, 0.3f, true);
  const Tensor x = random_tensor({3, 8}, 4, 1.0f, true);
  const Tensor outside = core::mul(x, 2.0f);  // has history
  auto gen = std::make_shared<core::Generator>(5);
  std::vector<core::ReversibleLayer> bad{
      {[&](const Tensor& h) { return core::add(core::linear(h, w), outside); },
       [&](const Tensor& h) { return core::linear(h, w); }}};
  Tensor y = core::reversible_stack(bad, x, x, {gen.get()});
  CHECK_THROWS_WITH(core::sum(y).backward(), Contains("not its argument"));
  int calls = 0;  // draws one more number on every call
  std::vector<core::ReversibleLayer> drift{{[&](const Tensor& h) {
                                              gen->reserve(++calls);
                                              return core::linear(h, w);
                                            },
                                            [&](const Tensor& h) { return core::linear(h, w); }}};
  y = core::reversible_stack(drift, x, x, {gen.get()});
  CHECK_THROWS_WITH(core::sum(y).backward(), Contains("same random numbers"));
  CHECK_THROWS_WITH(core::reversible_stack({}, x, x), Contains("no layers"));
}

TEST_CASE("the reversible stack's activation memory does not grow with depth", "[reversible][memory]") {
  // Peak tensor bytes of forward + backward at 2 and 8 layers: the ordinary
  // stack keeps every layer's activations, the reversible one one layer's.
  auto peak = [](bool reversible, int64_t n_layers) {
    layers::BlockOptions b = block_opts("naive", 0.0f, reversible);
    Stack s(b, n_layers);
    const Tensor x0 = random_tensor({1, 256, 16}, 11, 1.0f, true), w_out = random_tensor({1, 256, 16}, 12);
    core::reset_peak_memory();
    const int64_t base = core::memory_stats().current_bytes;
    loss_and_grads(s, reversible, x0, w_out);
    return core::memory_stats().peak_bytes - base;
  };
  const int64_t rev2 = peak(true, 2), rev8 = peak(true, 8), std2 = peak(false, 2), std8 = peak(false, 8);
  INFO("reversible " << rev2 << " -> " << rev8 << ", standard " << std2 << " -> " << std8);
  CHECK(double(rev8) < 1.25 * double(rev2));
  CHECK(double(std8) > 2.5 * double(std2));
}

TEST_CASE("a reversible stack recomputes a chunked feed-forward one slice at a time", "[reversible][ff_chunks][memory]") {
  // d_ff = 16·d_model and local attention, so one layer's feed-forward
  // hidden ([256, 256] before and after gelu, and their gradients) dominates
  // the reversible step's peak unless the backward, too, holds only one
  // slice of it.
  auto peak = [](int64_t chunks) {
    layers::BlockOptions b = block_opts("local", 0.1f, true, chunks);  // no [T, T] scores
    b.d_ff = 256;
    Stack s(b, 2);
    const Tensor x0 = random_tensor({1, 256, 16}, 11, 1.0f, true), w_out = random_tensor({1, 256, 16}, 12);
    core::reset_peak_memory();
    const int64_t base = core::memory_stats().current_bytes;
    loss_and_grads(s, true, x0, w_out);
    return core::memory_stats().peak_bytes - base;
  };
  const int64_t one = peak(1), eight = peak(8);
  INFO("peak bytes: 1 chunk " << one << ", 8 chunks " << eight);
  CHECK(double(eight) < 0.5 * double(one));
}

TEST_CASE("a chunked feed-forward gives the unchunked loss and gradients", "[reversible][ff_chunks]") {
  for (const auto act : {layers::Activation::gelu, layers::Activation::swiglu}) {
    layers::FeedForward whole(12, 40, act, true, 1), chunked(12, 40, act, true, 3);
    core::Generator g(9);
    const auto wp = whole.parameters(), cp = chunked.parameters();
    REQUIRE(wp.size() == cp.size());
    {
      core::NoGradGuard no_grad;
      for (std::size_t i = 0; i < wp.size(); ++i) {
        Tensor w = wp[i], c = cp[i];
        layers::normal_(w, g, 0.3f);
        c.copy_(w);
      }
    }
    // T = 7 is not a multiple of 3: slices of 2, 2, 3 steps.
    for (const int64_t T : {int64_t{7}, int64_t{1}}) {
      Tensor x0 = random_tensor({2, T, 12}, 21, 1.0f, true);
      const Tensor w_out = random_tensor({2, T, 12}, 22);
      auto run = [&](const layers::FeedForward& ff) {
        x0.zero_grad();
        for (Tensor p : ff.parameters()) p.zero_grad();
        Tensor loss = core::sum(core::mul(ff.forward(core::mul(x0, 1.0f)), w_out));
        loss.backward();
        std::vector<Tensor> r{loss.detach(), x0.grad()};
        for (const Tensor& p : ff.parameters()) r.push_back(p.grad());
        return r;
      };
      const auto a = run(whole), b = run(chunked);
      for (std::size_t i = 0; i < a.size(); ++i) {
        INFO("T " << T << " tensor " << i);
        CHECK(rel_diff(b[i], a[i]) <= 1e-6);
      }
    }
  }
  CHECK_THROWS_WITH(layers::FeedForward(4, 8, layers::Activation::relu, true, 0), Contains("model.ff_chunks"));
}

TEST_CASE("a chunked feed-forward keeps about N times less hidden activation", "[reversible][ff_chunks][memory]") {
  auto peak = [](int64_t chunks) {
    layers::FeedForward ff(16, 256, layers::Activation::gelu, true, chunks);
    const Tensor x0 = random_tensor({1, 512, 16}, 1, 1.0f, true);
    core::reset_peak_memory();
    const int64_t base = core::memory_stats().current_bytes;
    core::sum(ff.forward(x0)).backward();
    return core::memory_stats().peak_bytes - base;
  };
  const int64_t one = peak(1), eight = peak(8);
  INFO("peak bytes: 1 chunk " << one << ", 8 chunks " << eight);
  // Unchunked: the hidden [512, 256] before and after gelu plus its gradient
  // (~1.5 MB); chunked: 1/8 of that plus the [512, 16] input/output streams.
  CHECK(double(eight) < 0.3 * double(one));
}

TEST_CASE("GPT with reversible layers and chunked FF: same loss as its plain evaluation, config checks",
          "[reversible][gpt]") {
  layers::GPTConfig c;
  c.vocab_size = 11;
  c.block_size = 16;
  c.n_layers = 3;
  c.n_heads = 2;
  c.d_model = 16;
  c.reversible = true;
  c.ff_chunks = 4;
  c.dropout = 0.0f;
  layers::GPT m(c, 1);
  std::vector<int32_t> ids(2 * 16), tg(2 * 16);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<int32_t>((i * 7) % 11);
    tg[i] = static_cast<int32_t>((i * 5 + 3) % 11);
  }
  const Tensor x = core::from_vector(ids, {2, 16}), t = core::from_vector(tg, {2, 16});
  Tensor loss = m.loss(x, t);  // recorded: the reversible node
  loss.backward();
  Tensor eval_loss;
  {
    core::NoGradGuard no_grad;  // the direct two-stream computation
    eval_loss = m.loss(x, t);
  }
  CHECK(std::abs(loss.item() - eval_loss.item()) <= 1e-6f * std::abs(eval_loss.item()));
  for (const auto& [name, p] : m.named_parameters()) {
    INFO(name);
    CHECK(p.grad().defined());
  }
  layers::GPTConfig bad = c;
  bad.prenorm = false;
  CHECK_THROWS_WITH(layers::validate(bad), Contains("pre-norm"));
  bad = c;
  bad.checkpoint_activations = true;
  CHECK_THROWS_WITH(layers::validate(bad), Contains("exclude each other"));
  // Generation runs the cached two-stream path.
  core::Generator g(3);
  layers::SamplingOptions so;
  CHECK(m.generate({1, 2, 3}, 5, so, g).size() == 5);
}

TEST_CASE("a reversible LSH model resumed from a checkpoint equals an uninterrupted run", "[reversible][trainer]") {
  const std::string lsh = "lsh";
  tfm::test::TempDir dir("rev_resume");
  const fs::path cfg = dir.path / "run.yaml";
  std::ofstream(cfg) << "model:\n  n_layers: 2\n  n_heads: 2\n  d_model: 32\n  block_size: 32\n  dropout: 0.1\n"
                     << "  reversible: true\n  ff_chunks: 3\n  positions: rope\n"
                     << "  attention_pattern: \"" << lsh << ", local\"\n  attention_chunk_length: 8\n"
                     << "  attention_n_hashes: 2\n"
                     << "data:\n  path: " << kFixture << "\n"
                     << "optim:\n  lr: 0.003\n"
                     << "schedule:\n  kind: cosine\n  warmup_steps: 2\n  total_steps: 16\n"
                     << "train:\n  max_steps: 16\n  batch_size: 4\n  log_every: 1\n  eval_every: 8\n  eval_steps: 1\n"
                     << "  checkpoint_every: 8\n  threads: 2\n";
  auto metrics = [](const fs::path& run) {
    std::vector<nlohmann::json> rows;
    std::ifstream in(run / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
    return rows;
  };
  train::TrainArgs full;
  full.config_path = cfg.string();
  full.overrides = {"train.out_dir=" + (dir.path / "full").string()};
  full.quiet = true;
  REQUIRE(train::run_train(full) == 0);
  train::TrainArgs first = full;
  first.overrides = {"train.out_dir=" + (dir.path / "split").string(), "train.max_steps=8"};
  REQUIRE(train::run_train(first) == 0);
  train::TrainArgs second;
  second.resume = (dir.path / "split").string();
  second.overrides = {"train.max_steps=16"};
  second.quiet = true;
  REQUIRE(train::run_train(second) == 0);
  const auto a = metrics(dir.path / "full"), b = metrics(dir.path / "split");
  REQUIRE(a.size() == 16);
  REQUIRE(b.size() == 16);
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(a[i]["train_loss"].get<double>() == b[i]["train_loss"].get<double>());
  }
  const train::CheckpointData ca = train::load_checkpoint((dir.path / "full" / "last.h5").string());
  const train::CheckpointData cb = train::load_checkpoint((dir.path / "split" / "last.h5").string());
  REQUIRE(ca.params.size() == cb.params.size());
  for (std::size_t i = 0; i < ca.params.size(); ++i) {
    INFO(ca.params[i].first);
    CHECK(ca.params[i].second.to_vector() == cb.params[i].second.to_vector());  // bitwise
  }
}

TEST_CASE("the lsh adapter replays the recorded hashing instead of hashing the recomputed input",
          "[reversible][lsh]") {
  const Tensor qk = random_tensor({1, 2, 24, 8}, 31), v = random_tensor({1, 2, 24, 8}, 32);
  core::AttentionMask mask;
  mask.causal = true;
  layers::LshOptions opt;
  opt.chunk_length = 4;
  opt.n_hashes = 2;
  core::Generator gen(77);
  std::vector<std::any> tape;
  {
    core::ReversibleTapeScope rec(&tape, core::ReversibleTapeScope::Mode::record);
    layers::lsh_backend_attend(qk, qk, v, mask, 0.35f, 0.2f, true, gen, opt);
  }
  REQUIRE(tape.size() == 1);
  const core::RngState after = gen.state();
  const auto& entry = std::any_cast<const layers::LshTapeEntry&>(tape[0]);
  // A very different input (−qk moves every bucket to its opposite): the
  // replay must attend with the recorded buckets and draw the same dropout.
  const Tensor other = core::neg(qk);
  Tensor replayed;
  {
    core::RngReplayGuard from_start(gen, core::RngState{77, 0});
    core::ReversibleTapeScope rep(&tape, core::ReversibleTapeScope::Mode::replay);
    replayed = layers::lsh_backend_attend(other, other, v, mask, 0.35f, 0.2f, true, gen, opt);
    CHECK(gen.state() == after);
  }
  core::Generator g2(77);
  g2.set_state(entry.after_rotations);
  const Tensor expected = layers::lsh_attention_hashed(other, v, mask, 0.35f, entry.hashing, 0.2f, &g2);
  CHECK(replayed.to_vector() == expected.to_vector());
  core::Generator g3(77);
  const Tensor rehashed = layers::lsh_attention(other, v, mask, 0.35f, opt, g3, nullptr, 0.2f);
  CHECK(rel_diff(rehashed, expected) > 1e-3);  // hashing −qk afresh gives other buckets
}
