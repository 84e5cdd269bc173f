// Replayable random streams: a generator's (seed, offset) captured before a
// forward reproduces the same dropout masks and random tensors when the
// forward is recomputed, and the replay guard puts the generator back.
#include <catch2/catch.hpp>

#include "core/ops.h"
#include "core/rng.h"
#include "gradcheck.h"

using namespace tfm::core;
using tfm::test::random_tensor;

TEST_CASE("a captured RngState restores the stream", "[rng][replay]") {
  Generator g(42);
  g.next_u64();
  const RngState s = g.state();
  CHECK(s.seed == 42);
  CHECK(s.offset == 1);
  const float a = g.next_uniform();
  const uint64_t b = g.next_u64();
  g.set_state(s);
  CHECK(g.next_uniform() == a);
  CHECK(g.next_u64() == b);
  CHECK(g.state() == RngState{42, 3});
  CHECK_FALSE(g.state() == s);
}

TEST_CASE("RngReplayGuard replays dropout masks and puts the generator back", "[rng][replay]") {
  Generator g(7);
  const Tensor x = random_tensor({4, 33}, 1);
  const RngState before = g.state();
  const Tensor first = dropout(x, 0.5f, true, g);
  const Tensor other = randn({10}, g);
  const RngState after_forward = g.state();
  Tensor replayed, replayed_randn;
  {
    RngReplayGuard replay(g, before);
    CHECK(g.state() == before);
    replayed = dropout(x, 0.5f, true, g);
    replayed_randn = randn({10}, g);
    CHECK(g.state() == after_forward);  // consumed exactly what the forward did
  }
  CHECK(replayed.to_vector() == first.to_vector());
  CHECK(replayed_randn.to_vector() == other.to_vector());
  // Draws made after the forward continue as if no replay had happened.
  g.next_u64();
  const RngState later = g.state();
  {
    RngReplayGuard replay(g, before);
    dropout(x, 0.5f, true, g);
  }
  CHECK(g.state() == later);
  // Without the replay the next mask differs.
  CHECK(dropout(x, 0.5f, true, g).to_vector() != first.to_vector());
}

TEST_CASE("RngReplayGuard restores the generator when the replayed code throws", "[rng][replay]") {
  Generator g(3);
  const RngState start = g.state();
  g.reserve(100);
  const RngState now = g.state();
  try {
    RngReplayGuard replay(g, start);
    g.reserve(5);
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  CHECK(g.state() == now);
}
