// The autograd engine: accumulation, shared subgraphs, leaves, NoGradGuard,
// detach, release of saved tensors, and a 100,000-node chain.
#include <catch2/catch.hpp>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "gradcheck.h"

using namespace tfm::core;
using Catch::Matchers::Contains;

TEST_CASE("gradients accumulate over uses and over backward calls", "[autograd]") {
  Tensor x = from_vector({1, 2, 3}, {3});
  x.set_requires_grad();
  // y = x*x + x  ->  dy/dx = 2x + 1
  Tensor y = sum(add(mul(x, x), x));
  y.backward();
  CHECK(x.grad().to_vector() == std::vector<float>{3, 5, 7});
  // A second graph accumulates into .grad.
  sum(mul(x, 2.0f)).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{5, 7, 9});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("a tensor used twice by one op gets both gradients", "[autograd]") {
  Tensor x = from_vector({1, -2}, {2});
  x.set_requires_grad();
  sum(add(x, x)).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{2, 2});
  x.zero_grad();
  Tensor h = mul(x, 3.0f);  // shared intermediate, two consumers
  sum(add(mul(h, h), h)).backward();  // d/dx = 3(2h + 1) = 18x + 3
  CHECK(x.grad().to_vector() == std::vector<float>{21, -33});
}

TEST_CASE("the gradient a leaf keeps is not aliased by later accumulation", "[autograd]") {
  Tensor a = ones({2});
  Tensor b = ones({2});
  a.set_requires_grad();
  b.set_requires_grad();
  // add's backward returns one gradient tensor for both inputs.
  sum(add(a, b)).backward();
  sum(mul(a, 5.0f)).backward();  // accumulate into a only
  CHECK(a.grad().to_vector() == std::vector<float>{6, 6});
  CHECK(b.grad().to_vector() == std::vector<float>{1, 1});
}

TEST_CASE("branches that carry no gradient do not block the rest", "[autograd]") {
  Tensor x = from_vector({1, 2}, {2});
  x.set_requires_grad();
  Tensor y = mul(x, 2.0f);
  Tensor mask = from_vector({1, 0}, {2});
  // where() gives no gradient to its condition, and eq() records nothing.
  Tensor z = where(eq(mask, ones({2})), y, mul(y, 3.0f));
  sum(z).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{2, 6});
}

TEST_CASE("NoGradGuard and detach stop recording", "[autograd]") {
  Tensor x = ones({2});
  x.set_requires_grad();
  {
    NoGradGuard g;
    Tensor y = mul(x, 2.0f);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.is_leaf());
  }
  CHECK(grad_enabled());
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.shares_storage(x));
  Tensor y = mul(d, 2.0f);
  CHECK_FALSE(y.requires_grad());
  REQUIRE_THROWS_WITH(sum(y).backward(), Contains("does not require grad"));
}

TEST_CASE("backward checks its seed and refuses a second pass", "[autograd]") {
  Tensor x = ones({3});
  x.set_requires_grad();
  Tensor y = mul(x, x);
  REQUIRE_THROWS_WITH(y.backward(), Contains("one-element"));
  REQUIRE_THROWS_WITH(y.backward(ones({2})), Contains("seed shape"));
  y.backward(full({3}, 2.0f));
  CHECK(x.grad().to_vector() == std::vector<float>{4, 4, 4});
  REQUIRE_THROWS_WITH(y.backward(ones({3})), Contains("only once"));
}

TEST_CASE("saved tensors are freed as nodes run", "[autograd][memory]") {
  const int64_t base = memory_stats().current_bytes;
  Tensor x = ones({256, 256});
  x.set_requires_grad();
  Tensor loss;
  {
    Tensor h = x;
    for (int i = 0; i < 8; ++i) h = tanh(h);  // each tanh saves its output
    loss = sum(h);
  }
  const int64_t with_graph = memory_stats().current_bytes - base;
  CHECK(with_graph >= 8 * 256 * 256 * 4);
  loss.backward();
  // What is left: x, its gradient, and the scalar loss.
  const int64_t after = memory_stats().current_bytes - base;
  CHECK(after <= 2 * 256 * 256 * 4 + 64);
}

TEST_CASE("a 100,000-node chain runs backward and is destroyed without recursion", "[autograd]") {
  Tensor x = from_vector({0.5f}, {1});
  x.set_requires_grad();
  Tensor h = x;
  for (int i = 0; i < 100000; ++i) h = add(h, 1e-5f);
  Tensor loss = sum(h);
  loss.backward();
  CHECK(x.grad().item() == 1.0f);
  // Dropping the last handle destroys the whole chain (iteratively).
  h = Tensor();
  loss = Tensor();
  // A chain that is never back-propagated is also destroyed safely.
  Tensor g = x;
  for (int i = 0; i < 100000; ++i) g = mul(g, 1.0f);
  g = Tensor();
  SUCCEED("no stack overflow");
}

TEST_CASE("set_requires_grad is only for f32 leaves", "[autograd]") {
  Tensor x = ones({2});
  x.set_requires_grad();
  Tensor y = mul(x, 2.0f);
  REQUIRE_THROWS_WITH(y.set_requires_grad(), Contains("leaf"));
  Tensor i = from_vector(std::vector<int32_t>{1}, {1});
  REQUIRE_THROWS_WITH(i.set_requires_grad(), Contains("f32"));
}

TEST_CASE("composite expression matches finite differences", "[autograd]") {
  using tfm::test::check_gradients;
  using tfm::test::random_tensor;
  Tensor a = random_tensor({3, 4}, 1, 1.0f, true);
  Tensor b = random_tensor({4}, 2, 1.0f, true);
  check_gradients(
      [](const std::vector<Tensor>& in) {
        Tensor h = tanh(add(in[0], in[1]));
        return mul(sum(mul(h, h), {1}, true), exp(mul(in[0], 0.1f)));
      },
      {a, b});
}
