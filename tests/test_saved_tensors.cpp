// Each op saves exactly what its backward reads (ops.h lists it): measured
// as the tensor bytes a recorded graph keeps alive once every handle but
// the inputs and the root is gone.
#include <catch2/catch.hpp>

#include <functional>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "gradcheck.h"

using namespace tfm::core;
using tfm::test::random_tensor;

namespace {

constexpr int64_t kN = 64 * 1024;            // elements of one operand
constexpr int64_t kBytes = kN * 4;           // bytes of one operand
constexpr int64_t kSlack = 4096;             // scalars, shapes, allocator rounding

// Bytes held by the graph of root = sum(f()) beyond the inputs, after every
// intermediate handle is dropped (only the root keeps the graph alive).
int64_t graph_bytes(const std::function<Tensor()>& f) {
  const int64_t base = memory_stats().current_bytes;
  Tensor root = sum(f());
  const int64_t held = memory_stats().current_bytes - base;
  root.backward(ones(root.shape()));  // the graph is valid and runs
  return held;
}

Tensor leaf(const Shape& s, uint64_t seed, bool requires_grad = true) { return random_tensor(s, seed, 0.5f, requires_grad); }

}  // namespace

TEST_CASE("add, sub and scalar arithmetic save nothing", "[autograd][memory]") {
  const Tensor a = leaf({kN}, 1), b = leaf({kN}, 2);
  // Each op's output is freed as soon as sum has consumed it.
  CHECK(graph_bytes([&] { return add(a, b); }) <= kSlack);
  CHECK(graph_bytes([&] { return sub(a, b); }) <= kSlack);
  CHECK(graph_bytes([&] { return neg(add(mul(a, 3.0f), 1.0f)); }) <= kSlack);
  CHECK(graph_bytes([&] { return rsub(2.0f, a); }) <= kSlack);
}

TEST_CASE("mul keeps an operand only for the other's gradient", "[autograd][memory]") {
  const Tensor a = leaf({kN}, 1), b = leaf({kN}, 2), c = leaf({kN}, 3, false);
  // Both inputs are alive anyway; what matters is that no new tensor is kept.
  CHECK(graph_bytes([&] { return mul(a, b); }) <= kSlack);
  // An intermediate operand is kept only when the other side needs it.
  // da = g·exp(c) keeps exp(c); 2a is not kept (c needs no gradient).
  const int64_t other = graph_bytes([&] { return mul(mul(a, 2.0f), exp(c)); });
  CHECK(other >= kBytes);
  CHECK(other <= kBytes + kSlack);
  const int64_t both = graph_bytes([&] { return mul(mul(a, 2.0f), mul(b, 2.0f)); });
  CHECK(both >= 2 * kBytes);
  CHECK(both <= 2 * kBytes + kSlack);
  const int64_t one = graph_bytes([&] { return mul(mul(a, 2.0f), mul(c, 2.0f)); });  // only 2c is needed
  CHECK(one >= kBytes);
  CHECK(one <= kBytes + kSlack);
}

TEST_CASE("unary ops keep their input or their output, not both", "[autograd][memory]") {
  const Tensor a = leaf({kN}, 1);
  // exp saves its output (one new tensor); before, it also kept its input.
  CHECK(graph_bytes([&] { return exp(mul(a, 2.0f)); }) <= kBytes + kSlack);
  CHECK(graph_bytes([&] { return tanh(mul(a, 2.0f)); }) <= kBytes + kSlack);
  CHECK(graph_bytes([&] { return sigmoid(mul(a, 2.0f)); }) <= kBytes + kSlack);
  CHECK(graph_bytes([&] { return sqrt(exp(a)); }) <= 2 * kBytes + kSlack);
  // gelu saves its slope dy/dx (one tensor the size of its input); silu and log their input.
  CHECK(graph_bytes([&] { return gelu(mul(a, 2.0f)); }) <= kBytes + kSlack);
  CHECK(graph_bytes([&] { return gelu(mul(a, 2.0f), GeluApprox::tanh); }) <= kBytes + kSlack);
  CHECK(graph_bytes([&] { return silu(mul(a, 2.0f)); }) <= kBytes + kSlack);
  CHECK(graph_bytes([&] { return relu(mul(a, 2.0f)); }) <= kBytes + kSlack);
  // A chain of tanh keeps one tensor per link (its output).
  const int64_t chain = graph_bytes([&] {
    Tensor h = a;
    for (int i = 0; i < 4; ++i) h = tanh(h);
    return h;
  });
  CHECK(chain >= 4 * kBytes);
  CHECK(chain <= 4 * kBytes + kSlack);
}

TEST_CASE("softmax keeps its output; reductions and shape ops keep nothing", "[autograd][memory]") {
  const Tensor a = leaf({64, 1024}, 1);
  CHECK(graph_bytes([&] { return softmax(mul(a, 2.0f)); }) <= kBytes + kSlack);
  CHECK(graph_bytes([&] { return log_softmax(mul(a, 2.0f)); }) <= kBytes + kSlack);
  CHECK(graph_bytes([&] { return sum(mul(a, 2.0f), {1}); }) <= kSlack);
  CHECK(graph_bytes([&] { return mean(mul(a, 2.0f), {0}); }) <= kSlack);
  CHECK(graph_bytes([&] { return mul(a, 2.0f).transpose(0, 1).reshape({-1}); }) <= kSlack);
  CHECK(graph_bytes([&] { return concat({mul(a, 2.0f), mul(a, 3.0f)}, 0); }) <= kSlack);
  const Tensor p = leaf({1, 1024}, 2);
  CHECK(graph_bytes([&] { return add(mul(a, 2.0f), p.expand({64, 1024})); }) <= kSlack);
}

TEST_CASE("matmul and linear keep an operand only for the other's gradient", "[autograd][memory]") {
  const Tensor w = leaf({256, 256}, 1), x = leaf({256, 256}, 2), c = leaf({256, 256}, 3, false);
  // Only the weight-side intermediate (2w) is needed: dx = g·(2w)ᵀ.
  const int64_t m = graph_bytes([&] { return matmul(c, mul(w, 2.0f)); });
  CHECK(m <= kSlack);  // c needs no grad: 2w is not kept, c is an input
  const int64_t m2 = graph_bytes([&] { return matmul(mul(x, 2.0f), mul(c, 2.0f)); });
  CHECK(m2 >= kBytes);
  CHECK(m2 <= kBytes + kSlack);  // 2c kept for dx, 2x not kept (c needs no gradient)
  const Tensor frozen_w = leaf({256, 256}, 4, false);
  CHECK(graph_bytes([&] { return linear(mul(x, 2.0f), frozen_w); }) <= kSlack);  // dx needs W only
  const int64_t l = graph_bytes([&] { return linear(mul(c, 2.0f), w); });   // dW needs the input
  CHECK(l >= kBytes);
  CHECK(l <= kBytes + kSlack);
}

TEST_CASE("dropout keeps nothing: backward regenerates the mask", "[autograd][memory]") {
  const Tensor a = leaf({kN}, 1);
  Generator g(5);
  CHECK(graph_bytes([&] { return dropout(mul(a, 2.0f), 0.3f, true, g); }) <= kSlack);
}

TEST_CASE("gradients are unchanged by saving less", "[autograd][memory]") {
  using tfm::test::check_gradients;
  const Tensor a = leaf({3, 5}, 11), b = leaf({3, 5}, 12), c = leaf({5}, 13);
  check_gradients(
      [](const std::vector<Tensor>& in) {
        Tensor h = add(mul(in[0], in[1]), div(in[2], add(exp(in[1]), 1.0f)));
        return sub(relu(h), mul(rsub(1.0f, sigmoid(in[0])), rdiv(2.0f, add(exp(in[2]), 1.0f))));
      },
      {a, b, c});
  const Tensor frozen = leaf({3, 5}, 14, false);
  check_gradients([&](const std::vector<Tensor>& in) { return mul(div(in[0], add(exp(frozen), 1.0f)), frozen); },
                  {a});
  check_gradients([&](const std::vector<Tensor>& in) { return div(frozen, add(exp(in[0]), 1.0f)); }, {a});
  const Tensor m = leaf({5, 4}, 15), fm = leaf({5, 4}, 16, false);
  check_gradients([&](const std::vector<Tensor>& in) { return matmul(in[0], fm); }, {a});
  check_gradients([&](const std::vector<Tensor>& in) { return matmul(frozen, in[0]); }, {m});
  const Tensor w = leaf({4, 5}, 17), fw = leaf({4, 5}, 18, false), bias = leaf({4}, 19);
  check_gradients([&](const std::vector<Tensor>& in) { return linear(in[0], fw, in[1]); }, {a, bias});
  check_gradients([&](const std::vector<Tensor>& in) { return linear(frozen, in[0]); }, {w});
}
