// End to end: a tiny GPT memorises a 64-token sequence with AdamW.
#include <catch2/catch.hpp>

#include "core/ops.h"
#include "layers/gpt.h"
#include "optim/optimizer.h"

using namespace tfm;

TEST_CASE("a tiny GPT overfits a 64-token sequence", "[models][overfit]") {
  layers::GPTConfig cfg;
  cfg.vocab_size = 16;
  cfg.block_size = 64;
  cfg.n_layers = 2;
  cfg.n_heads = 2;
  cfg.d_model = 32;
  layers::GPT model(cfg, 7);
  // A fixed pseudo-random sequence of 65 tokens: inputs 0..63, targets 1..64.
  core::Generator g(11);
  std::vector<int32_t> seq(65);
  for (auto& t : seq) t = static_cast<int32_t>(g.next_u64() % 16);
  const core::Tensor ids = core::from_vector(std::vector<int32_t>(seq.begin(), seq.end() - 1), {1, 64});
  const core::Tensor targets = core::from_vector(std::vector<int32_t>(seq.begin() + 1, seq.end()), {1, 64});
  optim::Adam opt(optim::decay_groups(model.named_parameters(), 0.0f), 3e-3f, 0.9f, 0.99f, 1e-8f, true);
  float first = 0, last = 0;
  int steps = 0;
  for (; steps < 400; ++steps) {
    core::Tensor loss = model.loss(ids, targets);
    if (steps == 0) first = loss.item();
    last = loss.item();
    if (last < 0.05f) break;
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  INFO("initial loss " << first << ", final loss " << last << " after " << steps << " steps");
  CHECK(first > 2.0f);  // about ln 16 = 2.77 at initialisation
  CHECK(last < 0.05f);
}
