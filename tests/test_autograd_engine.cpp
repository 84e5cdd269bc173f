// The autograd engine beyond backward(): gradient shapes checked on every
// edge, GradModeGuard, grad() with several roots (returned or accumulated),
// and re-entrant passes started from inside a node's backward.
#include <catch2/catch.hpp>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "gradcheck.h"

using namespace tfm::core;
using Catch::Matchers::Contains;

namespace {

// A node that returns a fixed (possibly wrong) gradient for its one input.
class FixedGradNode final : public Node {
 public:
  explicit FixedGradNode(Tensor g) : g_(std::move(g)) {}
  const char* name() const override { return "fixed_grad"; }
  std::vector<Tensor> backward(const Tensor&) override { return {g_}; }
  void release() override { g_ = Tensor(); }

 private:
  Tensor g_;
};

Tensor through_fixed_node(const Tensor& x, const Tensor& wrong_grad) {
  Tensor out = x.detach().clone();
  record(out, std::make_shared<FixedGradNode>(wrong_grad), {x});
  return out;
}

}  // namespace

TEST_CASE("a backward that returns the wrong gradient shape is caught on every edge", "[autograd][engine]") {
  Tensor x = ones({2, 3});
  x.set_requires_grad();
  // The input is a leaf.
  REQUIRE_THROWS_WITH(sum(through_fixed_node(x, ones({3, 2}))).backward(),
                      Contains("fixed_grad") && Contains("[3, 2]") && Contains("[2, 3]"));
  // The input is a non-leaf: before, only leaves were checked.
  Tensor h = mul(x, 2.0f);
  REQUIRE_THROWS_WITH(sum(through_fixed_node(h, ones({6}))).backward(),
                      Contains("fixed_grad") && Contains("[6]") && Contains("[2, 3]"));
  // The right shape passes.
  Tensor h2 = mul(x, 2.0f);
  x.zero_grad();
  sum(through_fixed_node(h2, full({2, 3}, 0.5f))).backward();
  CHECK(x.grad().to_vector() == std::vector<float>(6, 1.0f));
}

TEST_CASE("GradModeGuard switches recording on or off and restores it", "[autograd][engine]") {
  Tensor x = ones({2});
  x.set_requires_grad();
  {
    NoGradGuard off;
    CHECK_FALSE(grad_enabled());
    {
      GradModeGuard on(true);
      CHECK(grad_enabled());
      CHECK(mul(x, 2.0f).requires_grad());
      GradModeGuard off_again(false);
      CHECK_FALSE(mul(x, 2.0f).requires_grad());
    }
    CHECK_FALSE(grad_enabled());
  }
  CHECK(grad_enabled());
}

TEST_CASE("grad() returns gradients of several roots without touching .grad", "[autograd][engine]") {
  Tensor x = from_vector({1, 2, 3}, {3});
  Tensor w = from_vector({0.5f, -1, 2}, {3});
  x.set_requires_grad();
  w.set_requires_grad();
  Tensor h = mul(x, w);       // non-leaf input
  Tensor y1 = sum(mul(h, h));  // d/dh = 2h
  Tensor y2 = sum(mul(h, x));  // d/dh = x, d/dx (direct) = h
  const auto g = grad({y1, y2}, {scalar_tensor(1.0f), scalar_tensor(2.0f)}, {x, h});
  REQUIRE(g.size() == 2);
  // dx = (2h·w + 2x·w) + 2h = total derivative through h and directly.
  const auto hv = h.to_vector(), xv = x.to_vector(), wv = w.to_vector();
  for (int i = 0; i < 3; ++i) {
    CHECK(g[0].to_vector()[i] == Approx(2 * hv[i] * wv[i] + 2 * xv[i] * wv[i] + 2 * hv[i]));
    CHECK(g[1].to_vector()[i] == Approx(2 * hv[i] + 2 * xv[i]));
  }
  CHECK_FALSE(x.grad().defined());
  CHECK_FALSE(w.grad().defined());  // not asked for, not accumulated
}

TEST_CASE("grad() accumulates the other leaves on request", "[autograd][engine]") {
  Tensor x = from_vector({1, 2}, {2});
  Tensor w = from_vector({3, 4}, {2});
  x.set_requires_grad();
  w.set_requires_grad();
  Tensor y = sum(mul(x, w));
  const auto g = grad({y}, {scalar_tensor(1.0f)}, {x}, /*accumulate_leaves=*/true);
  CHECK(g[0].to_vector() == std::vector<float>{3, 4});
  CHECK_FALSE(x.grad().defined());  // a requested input is returned, not accumulated
  CHECK(w.grad().to_vector() == std::vector<float>{1, 2});
}

TEST_CASE("grad() of an input the roots do not reach is undefined; a root may be an input", "[autograd][engine]") {
  Tensor x = ones({2}), z = ones({2});
  x.set_requires_grad();
  z.set_requires_grad();
  Tensor y = sum(mul(x, 3.0f));
  const auto g = grad({y, x}, {scalar_tensor(1.0f), full({2}, 2.0f)}, {x, z});
  CHECK(g[0].to_vector() == std::vector<float>{5, 5});
  CHECK_FALSE(g[1].defined());
  REQUIRE_THROWS_WITH(grad({y}, {}, {x}), Contains("grad") && Contains("1 outputs"));
  REQUIRE_THROWS_WITH(grad({y}, {ones({2})}, {x}), Contains("shape"));
}

TEST_CASE("grad() does not run the part of the graph its inputs do not need", "[autograd][engine]") {
  Tensor x = ones({2}), w = ones({2});
  x.set_requires_grad();
  w.set_requires_grad();
  int calls = 0;
  Tensor h = w.detach().clone();  // a node only on the path to w
  record(h, "counted", {w}, [&calls](const Tensor& g) -> std::vector<Tensor> {
    ++calls;
    return {g};
  });
  Tensor y = sum(mul(x, h));
  const auto g = grad({y}, {scalar_tensor(1.0f)}, {x});
  CHECK(g[0].to_vector() == std::vector<float>{1, 1});
  CHECK(calls == 0);
  CHECK_FALSE(w.grad().defined());
}

namespace {

// A node whose backward rebuilds f(x) = x³ with grad mode on and runs a
// nested pass on it (the pattern of recomputation inside backward).
class RecomputeCubeNode final : public Node {
 public:
  explicit RecomputeCubeNode(Tensor x) : x_(std::move(x)) {}
  const char* name() const override { return "recompute_cube"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    CHECK_FALSE(grad_enabled());  // the outer pass runs nodes with grad off
    Tensor leaf = x_.detach();
    leaf.set_requires_grad();
    GradModeGuard on(true);
    Tensor y = mul(mul(leaf, leaf), leaf);
    const auto dx = grad({y}, {g}, {leaf});
    CHECK(grad_enabled());  // the nested pass restored the mode it found
    return dx;
  }
  void release() override { x_ = Tensor(); }

 private:
  Tensor x_;
};

}  // namespace

TEST_CASE("a pass started inside a node's backward is independent of the outer pass", "[autograd][engine]") {
  Tensor x = from_vector({1, -2, 0.5f}, {3});
  x.set_requires_grad();
  Tensor a = mul(x, 2.0f);
  Tensor cube = empty({3});
  {
    NoGradGuard off;
    cube = mul(mul(a, a), a);
  }
  record(cube, std::make_shared<RecomputeCubeNode>(a.detach()), {a});
  // Two consumers of x: the outer pass must finish the other branch after
  // the nested pass returns.
  Tensor loss = add(sum(cube), sum(mul(x, x)));
  loss.backward();
  const auto xv = x.to_vector();
  for (int i = 0; i < 3; ++i) CHECK(x.grad().to_vector()[i] == Approx(2 * 3 * (2 * xv[i]) * (2 * xv[i]) + 2 * xv[i]));
}

TEST_CASE("run_backward called from inside a backward accumulates leaves and returns", "[autograd][engine]") {
  Tensor p = from_vector({2, 3}, {2});
  p.set_requires_grad();
  Tensor x = ones({2});
  x.set_requires_grad();
  // A custom function whose backward also back-propagates a side loss into p.
  Tensor out = x.detach().clone();
  record(out, "side_loss", {x}, [p](const Tensor& g) -> std::vector<Tensor> {
    GradModeGuard on(true);
    sum(mul(p, p)).backward();  // nested run_backward: p.grad += 2p
    return {g};
  });
  sum(mul(out, p)).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{2, 3});
  CHECK(p.grad().to_vector() == std::vector<float>{1 + 4, 1 + 6});
}
