// Elementwise ops (core/ops_elementwise.cpp): forward values against plain
// reference loops in double precision, gradients against finite differences
// (tests/gradcheck.h), on contiguous, transposed, sliced and broadcast
// inputs, plus the error messages for bad shapes and dtypes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numbers>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "tests/gradcheck.h"

namespace {

namespace tc = tfm::core;
using tc::Shape;
using tc::Tensor;
using tfm::test::check_gradients;

// Expects a tfm::Error whose message contains every listed fragment.
#define REQUIRE_TFM_ERROR(expr, ...)                                                      \
  do {                                                                                    \
    REQUIRE_THROWS_AS(expr, tfm::Error);                                                  \
    for (const char* part_ : {__VA_ARGS__}) REQUIRE_THROWS_WITH(expr, Catch::Contains(part_)); \
  } while (0)

// ---------------------------------------------------------------- helpers

enum class Domain { any, positive, nonzero };
enum class Layout { contiguous, transposed, sliced };

// Deterministic inputs: standard normal; |x| + 0.5 (for log, sqrt, divisors);
// or at least 0.2 away from zero (for the kinks of relu and abs).
std::vector<float> values(int64_t n, uint64_t seed, Domain d) {
  std::vector<float> v = tfm::test::random_tensor({n}, seed).to_vector();
  for (float& x : v) {
    if (d == Domain::positive) x = std::fabs(x) + 0.5f;
    if (d == Domain::nonzero) x = x < 0.0f ? x - 0.2f : x + 0.2f;
  }
  return v;
}

// A tensor of `shape` laid out as asked: contiguous, a transpose(0, 1) view
// of a [d1, d0, ...] tensor, or a step-2 slice along the last dim.
Tensor make(const Shape& shape, uint64_t seed, Domain d = Domain::any, Layout layout = Layout::contiguous,
            bool grad = false) {
  Shape base_shape = shape;
  if (layout == Layout::transposed) std::swap(base_shape[0], base_shape[1]);
  if (layout == Layout::sliced) base_shape.back() *= 2;
  const Tensor base = tc::from_vector(values(tc::numel_of(base_shape), seed, d), base_shape);
  Tensor t = base;
  if (layout == Layout::transposed) t = base.transpose(0, 1);
  if (layout == Layout::sliced) t = base.slice(static_cast<int64_t>(shape.size()) - 1, 0, base_shape.back(), 2);
  REQUIRE(t.shape() == shape);
  if (layout != Layout::contiguous) REQUIRE_FALSE(t.is_contiguous());
  if (grad) t.set_requires_grad();
  return t;
}

Tensor tensor(const std::vector<float>& v, const Shape& s) { return tc::from_vector(v, s); }

std::vector<int64_t> unravel(int64_t linear, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
    idx[d] = linear % s[d];
    linear /= s[d];
  }
  return idx;
}

// Row-major index into a tensor of shape `s` of the element that NumPy
// broadcasting reads for output multi-index `idx` (trailing dims aligned,
// size-1 dims repeated).
int64_t broadcast_index(const Shape& s, const std::vector<int64_t>& idx) {
  const std::size_t lead = idx.size() - s.size();
  int64_t off = 0;
  for (std::size_t d = 0; d < s.size(); ++d) off = off * s[d] + (s[d] == 1 ? 0 : idx[lead + d]);
  return off;
}

// Checks the shape, then every element within `tol` relative to max(1, |want|);
// reports the worst element.
void check_values(const Tensor& got, const Shape& shape, const std::vector<double>& want, double tol = 1e-6) {
  REQUIRE(got.shape() == shape);
  const std::vector<float> g = got.to_vector();
  REQUIRE(g.size() == want.size());
  double worst = 0.0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    double err = std::fabs(g[i] - want[i]) / std::max(1.0, std::fabs(want[i]));
    if (std::isnan(err)) err = INFINITY;
    if (err > worst) worst = err, at = i;
  }
  INFO("worst element " << at << ": got " << (g.empty() ? 0.f : g[at]) << ", want "
                        << (want.empty() ? 0.0 : want[at]));
  CHECK(worst <= tol);
}

std::vector<double> reference_unary(const Tensor& x, const std::function<double(double)>& f) {
  std::vector<double> out;
  for (float v : x.to_vector()) out.push_back(f(v));
  return out;
}

std::vector<double> reference_binary(const Tensor& a, const Tensor& b, const Shape& out_shape,
                                     const std::function<double(double, double)>& f) {
  const std::vector<float> av = a.to_vector(), bv = b.to_vector();
  std::vector<double> out(tc::numel_of(out_shape));
  for (std::size_t i = 0; i < out.size(); ++i) {
    const auto idx = unravel(static_cast<int64_t>(i), out_shape);
    out[i] = f(av[broadcast_index(a.shape(), idx)], bv[broadcast_index(b.shape(), idx)]);
  }
  return out;
}

// ---------------------------------------------------------------- op tables

struct BinaryOp {
  const char* name;
  Tensor (*op)(const Tensor&, const Tensor&);
  double (*ref)(double, double);
  Domain rhs;  // divisors stay away from zero
};

const BinaryOp kBinaryOps[] = {
    {"add", tc::add, [](double x, double y) { return x + y; }, Domain::any},
    {"sub", tc::sub, [](double x, double y) { return x - y; }, Domain::any},
    {"mul", tc::mul, [](double x, double y) { return x * y; }, Domain::any},
    {"div", tc::div, [](double x, double y) { return x / y; }, Domain::positive},
};

struct BroadcastCase {
  Shape a, b, out;
};

const BroadcastCase kBroadcastCases[] = {
    {{2, 3}, {2, 3}, {2, 3}},       {{3, 1, 4}, {2, 4}, {3, 2, 4}}, {{4}, {2, 3, 4}, {2, 3, 4}},
    {{}, {2, 3}, {2, 3}},           {{2, 3}, {}, {2, 3}},           {{2, 1}, {1, 3}, {2, 3}},
    {{2, 3, 1}, {2, 1, 4}, {2, 3, 4}}, {{}, {}, {}},
};

struct UnaryOp {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  Domain domain;
};

const std::vector<UnaryOp>& unary_ops() {
  static const std::vector<UnaryOp> ops = {
      {"neg", [](const Tensor& x) { return tc::neg(x); }, [](double v) { return -v; }, Domain::any},
      {"exp", [](const Tensor& x) { return tc::exp(x); }, [](double v) { return std::exp(v); }, Domain::any},
      {"log", [](const Tensor& x) { return tc::log(x); }, [](double v) { return std::log(v); }, Domain::positive},
      {"sqrt", [](const Tensor& x) { return tc::sqrt(x); }, [](double v) { return std::sqrt(v); }, Domain::positive},
      {"rsqrt", [](const Tensor& x) { return tc::rsqrt(x); }, [](double v) { return 1.0 / std::sqrt(v); },
       Domain::positive},
      {"pow 2", [](const Tensor& x) { return tc::pow(x, 2.0f); }, [](double v) { return v * v; }, Domain::any},
      {"pow 3", [](const Tensor& x) { return tc::pow(x, 3.0f); }, [](double v) { return v * v * v; }, Domain::any},
      {"pow 0.5", [](const Tensor& x) { return tc::pow(x, 0.5f); }, [](double v) { return std::sqrt(v); },
       Domain::positive},
      {"pow -1.5", [](const Tensor& x) { return tc::pow(x, -1.5f); }, [](double v) { return std::pow(v, -1.5); },
       Domain::positive},
      {"pow 0", [](const Tensor& x) { return tc::pow(x, 0.0f); }, [](double) { return 1.0; }, Domain::any},
      {"abs", [](const Tensor& x) { return tc::abs(x); }, [](double v) { return std::fabs(v); }, Domain::nonzero},
      {"tanh", [](const Tensor& x) { return tc::tanh(x); }, [](double v) { return std::tanh(v); }, Domain::any},
      {"sigmoid", [](const Tensor& x) { return tc::sigmoid(x); }, [](double v) { return 1.0 / (1.0 + std::exp(-v)); },
       Domain::any},
      {"relu", [](const Tensor& x) { return tc::relu(x); }, [](double v) { return v > 0 ? v : 0.0; },
       Domain::nonzero},
      {"gelu erf", [](const Tensor& x) { return tc::gelu(x, tc::GeluApprox::erf); },
       [](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }, Domain::any},
      {"gelu tanh", [](const Tensor& x) { return tc::gelu(x, tc::GeluApprox::tanh); },
       [](double v) {
         const double k = std::sqrt(2.0 / std::numbers::pi);
         return 0.5 * v * (1.0 + std::tanh(k * (v + 0.044715 * v * v * v)));
       },
       Domain::any},
      {"silu", [](const Tensor& x) { return tc::silu(x); }, [](double v) { return v / (1.0 + std::exp(-v)); },
       Domain::any},
  };
  return ops;
}

// Scalar-argument forms and the operators that forward to them.
const std::vector<UnaryOp>& scalar_ops() {
  static const std::vector<UnaryOp> ops = {
      {"add(a, 2.5)", [](const Tensor& x) { return tc::add(x, 2.5f); }, [](double v) { return v + 2.5; },
       Domain::any},
      {"sub(a, 2.5)", [](const Tensor& x) { return tc::sub(x, 2.5f); }, [](double v) { return v - 2.5; },
       Domain::any},
      {"rsub(2.5, a)", [](const Tensor& x) { return tc::rsub(2.5f, x); }, [](double v) { return 2.5 - v; },
       Domain::any},
      {"mul(a, -1.5)", [](const Tensor& x) { return tc::mul(x, -1.5f); }, [](double v) { return v * -1.5; },
       Domain::any},
      {"div(a, 3)", [](const Tensor& x) { return tc::div(x, 3.0f); }, [](double v) { return v / 3.0; }, Domain::any},
      {"rdiv(2, a)", [](const Tensor& x) { return tc::rdiv(2.0f, x); }, [](double v) { return 2.0 / v; },
       Domain::positive},
      {"rdiv(-3, a)", [](const Tensor& x) { return tc::rdiv(-3.0f, x); }, [](double v) { return -3.0 / v; },
       Domain::positive},
      {"a + 2", [](const Tensor& x) { return x + 2.0f; }, [](double v) { return v + 2.0; }, Domain::any},
      {"2 + a", [](const Tensor& x) { return 2.0f + x; }, [](double v) { return 2.0 + v; }, Domain::any},
      {"a - 2", [](const Tensor& x) { return x - 2.0f; }, [](double v) { return v - 2.0; }, Domain::any},
      {"2 - a", [](const Tensor& x) { return 2.0f - x; }, [](double v) { return 2.0 - v; }, Domain::any},
      {"a * 3", [](const Tensor& x) { return x * 3.0f; }, [](double v) { return v * 3.0; }, Domain::any},
      {"3 * a", [](const Tensor& x) { return 3.0f * x; }, [](double v) { return 3.0 * v; }, Domain::any},
      {"a / 3", [](const Tensor& x) { return x / 3.0f; }, [](double v) { return v / 3.0; }, Domain::any},
      {"3 / a", [](const Tensor& x) { return 3.0f / x; }, [](double v) { return 3.0 / v; }, Domain::positive},
      {"-a", [](const Tensor& x) { return -x; }, [](double v) { return -v; }, Domain::any},
  };
  return ops;
}

const Layout kLayouts[] = {Layout::contiguous, Layout::transposed, Layout::sliced};

}  // namespace

// ---------------------------------------------------------------- binary ops: forward

TEST_CASE("binary ops: forward with broadcasting", "[elementwise]") {
  for (const BinaryOp& op : kBinaryOps) {
    for (const BroadcastCase& c : kBroadcastCases) {
      INFO(op.name << " " << tc::shape_str(c.a) << " with " << tc::shape_str(c.b));
      const Tensor a = make(c.a, 1), b = make(c.b, 2, op.rhs);
      check_values(op.op(a, b), c.out, reference_binary(a, b, c.out, op.ref));
    }
  }
}

TEST_CASE("binary ops: forward on non-contiguous inputs", "[elementwise]") {
  for (const BinaryOp& op : kBinaryOps) {
    INFO(op.name);
    const Tensor at = make({3, 4}, 3, Domain::any, Layout::transposed);
    const Tensor bs = make({3, 4}, 4, op.rhs, Layout::sliced);
    check_values(op.op(at, bs), {3, 4}, reference_binary(at, bs, {3, 4}, op.ref));
    // Strided on one side, broadcast on the other.
    const Tensor a3 = make({2, 3, 4}, 5, Domain::any, Layout::sliced);
    const Tensor bt = make({3, 4}, 6, op.rhs, Layout::transposed);
    check_values(op.op(a3, bt), {2, 3, 4}, reference_binary(a3, bt, {2, 3, 4}, op.ref));
    const Tensor bcol = make({3, 1}, 7, op.rhs);
    check_values(op.op(at, bcol), {3, 4}, reference_binary(at, bcol, {3, 4}, op.ref));
    check_values(op.op(bcol, at), {3, 4}, reference_binary(bcol, at, {3, 4}, op.ref));
  }
}

TEST_CASE("binary ops: forward on large inputs (parallel kernels)", "[elementwise]") {
  for (const BinaryOp& op : kBinaryOps) {
    INFO(op.name);
    // Many rows, a broadcast row vector.
    const Tensor a = make({300, 256}, 8), b = make({256}, 9, op.rhs);
    check_values(op.op(a, b), {300, 256}, reference_binary(a, b, {300, 256}, op.ref));
    // One long row with a scalar: the row is split across threads.
    const Tensor l = make({1, 70000}, 10), s = make({}, 11, op.rhs);
    check_values(op.op(l, s), {1, 70000}, reference_binary(l, s, {1, 70000}, op.ref));
    // Strided large operands.
    const Tensor t = make({260, 200}, 12, Domain::any, Layout::transposed);
    const Tensor u = make({260, 200}, 13, op.rhs, Layout::sliced);
    check_values(op.op(t, u), {260, 200}, reference_binary(t, u, {260, 200}, op.ref));
  }
}

// ---------------------------------------------------------------- binary ops: backward

TEST_CASE("binary ops: gradients with broadcasting", "[elementwise]") {
  for (const BinaryOp& op : kBinaryOps) {
    for (const BroadcastCase& c : kBroadcastCases) {
      INFO(op.name << " " << tc::shape_str(c.a) << " with " << tc::shape_str(c.b));
      const Tensor a = make(c.a, 21, Domain::any, Layout::contiguous, true);
      const Tensor b = make(c.b, 22, op.rhs, Layout::contiguous, true);
      check_gradients([&](const std::vector<Tensor>& in) { return op.op(in[0], in[1]); }, {a, b});
    }
  }
}

TEST_CASE("binary ops: gradients on non-contiguous inputs", "[elementwise]") {
  for (const BinaryOp& op : kBinaryOps) {
    INFO(op.name);
    const auto f = [&](const std::vector<Tensor>& in) { return op.op(in[0], in[1]); };
    check_gradients(f, {make({3, 4}, 23, Domain::any, Layout::transposed, true),
                        make({3, 4}, 24, op.rhs, Layout::sliced, true)});
    check_gradients(f, {make({3, 4}, 25, Domain::any, Layout::sliced, true),
                        make({3, 1}, 26, op.rhs, Layout::contiguous, true)});
    check_gradients(f, {make({2, 3, 4}, 27, Domain::any, Layout::sliced, true),
                        make({3, 4}, 28, op.rhs, Layout::transposed, true)});
  }
}

TEST_CASE("binary ops: only inputs that require grad get a gradient", "[elementwise]") {
  for (const BinaryOp& op : kBinaryOps) {
    INFO(op.name);
    const auto f = [&](const std::vector<Tensor>& in) { return op.op(in[0], in[1]); };
    Tensor a = make({3, 1, 4}, 31, Domain::any, Layout::contiguous, true);
    Tensor b = make({2, 4}, 32, op.rhs);
    check_gradients(f, {a, b});
    CHECK_FALSE(b.grad().defined());
    Tensor c = make({3, 1, 4}, 33);
    Tensor d = make({2, 4}, 34, op.rhs, Layout::contiguous, true);
    check_gradients(f, {c, d});
    CHECK_FALSE(c.grad().defined());
  }
}

TEST_CASE("binary ops: the same tensor on both sides accumulates both gradients", "[elementwise]") {
  const Tensor x = make({2, 3}, 35, Domain::positive, Layout::transposed, true);
  check_gradients([](const std::vector<Tensor>& in) { return tc::mul(in[0], in[0]); }, {x});
  check_gradients([](const std::vector<Tensor>& in) { return tc::add(in[0], in[0]); }, {x});
  // x / x == 1 everywhere: the two gradient paths cancel exactly.
  Tensor y = make({2, 3}, 36, Domain::positive, Layout::contiguous, true);
  tc::sum(tc::div(y, y)).backward();
  for (float g : y.grad().to_vector()) CHECK(std::fabs(g) < 1e-6f);
}

// ---------------------------------------------------------------- unary ops

TEST_CASE("unary ops: forward on every layout", "[elementwise]") {
  for (const UnaryOp& op : unary_ops()) {
    for (Layout layout : kLayouts) {
      INFO(op.name << " layout " << static_cast<int>(layout));
      const Tensor x = make({3, 4}, 41, op.domain, layout);
      check_values(op.op(x), {3, 4}, reference_unary(x, op.ref));
      const Tensor x3 = make({2, 3, 5}, 42, op.domain, layout);
      check_values(op.op(x3), {2, 3, 5}, reference_unary(x3, op.ref));
    }
    INFO(op.name << " scalar and large inputs");
    const Tensor s = make({}, 43, op.domain);
    check_values(op.op(s), {}, reference_unary(s, op.ref));
    const Tensor big = make({300, 257}, 44, op.domain, Layout::transposed);
    check_values(op.op(big), {300, 257}, reference_unary(big, op.ref));
    const Tensor empty = tc::zeros({0, 3});
    CHECK(op.op(empty).shape() == Shape{0, 3});
  }
}

TEST_CASE("unary ops: gradients", "[elementwise]") {
  for (const UnaryOp& op : unary_ops()) {
    for (Layout layout : kLayouts) {
      INFO(op.name << " layout " << static_cast<int>(layout));
      check_gradients([&](const std::vector<Tensor>& in) { return op.op(in[0]); },
                      {make({3, 4}, 45, op.domain, layout, true)});
    }
    INFO(op.name << " on a [] tensor");
    check_gradients([&](const std::vector<Tensor>& in) { return op.op(in[0]); },
                    {make({}, 46, op.domain, Layout::contiguous, true)});
  }
}

TEST_CASE("unary ops: special values", "[elementwise]") {
  const Tensor x = tensor({-100.0f, -1.0f, 0.0f, 1.0f, 100.0f}, {5});
  // Saturating activations stay finite at large |x|.
  check_values(tc::sigmoid(x), {5}, {0.0, 1.0 / (1.0 + std::exp(1.0)), 0.5, 1.0 / (1.0 + std::exp(-1.0)), 1.0});
  check_values(tc::tanh(x), {5}, {-1.0, std::tanh(-1.0), 0.0, std::tanh(1.0), 1.0});
  check_values(tc::silu(x), {5}, {0.0, -1.0 / (1.0 + std::exp(1.0)), 0.0, 1.0 / (1.0 + std::exp(-1.0)), 100.0});
  check_values(tc::gelu(x), {5}, {0.0, -0.15865525393145707, 0.0, 0.8413447460685429, 100.0});
  check_values(tc::relu(x), {5}, {0.0, 0.0, 0.0, 1.0, 100.0});
  // pow(x, 0) is 1 with a zero gradient, even at x = 0.
  Tensor z = tensor({0.0f, 2.0f}, {2}).set_requires_grad();
  Tensor p = tc::pow(z, 0.0f);
  check_values(p, {2}, {1.0, 1.0});
  tc::sum(p).backward();
  check_values(z.grad(), {2}, {0.0, 0.0});
  // relu and abs have derivative 0 at the kink.
  Tensor k = tc::zeros({3}).set_requires_grad();
  tc::sum(tc::add(tc::relu(k), tc::abs(k))).backward();
  check_values(k.grad(), {3}, {0.0, 0.0, 0.0});
}

// ---------------------------------------------------------------- scalar forms

TEST_CASE("scalar forms: forward and gradients", "[elementwise]") {
  for (const UnaryOp& op : scalar_ops()) {
    for (Layout layout : kLayouts) {
      INFO(op.name << " layout " << static_cast<int>(layout));
      const Tensor x = make({3, 4}, 51, op.domain, layout);
      check_values(op.op(x), {3, 4}, reference_unary(x, op.ref));
      check_gradients([&](const std::vector<Tensor>& in) { return op.op(in[0]); },
                      {make({3, 4}, 52, op.domain, layout, true)});
    }
  }
}

TEST_CASE("operators on two tensors forward to the named ops", "[elementwise]") {
  const Tensor a = make({2, 3}, 53), b = make({3}, 54, Domain::positive);
  check_values(a + b, {2, 3}, reference_binary(a, b, {2, 3}, [](double x, double y) { return x + y; }));
  check_values(a - b, {2, 3}, reference_binary(a, b, {2, 3}, [](double x, double y) { return x - y; }));
  check_values(a * b, {2, 3}, reference_binary(a, b, {2, 3}, [](double x, double y) { return x * y; }));
  check_values(a / b, {2, 3}, reference_binary(a, b, {2, 3}, [](double x, double y) { return x / y; }));
}

// ---------------------------------------------------------------- comparisons

TEST_CASE("comparisons: eq, gt, lt with broadcasting", "[elementwise]") {
  const Tensor a = tensor({1, 2, 3, 4, 2, 0}, {2, 3});
  const Tensor b = tensor({3, 2, 1}, {3});
  const Tensor s = tc::scalar_tensor(2.0f);
  const auto eq = [](double x, double y) { return x == y ? 1.0 : 0.0; };
  const auto gt = [](double x, double y) { return x > y ? 1.0 : 0.0; };
  const auto lt = [](double x, double y) { return x < y ? 1.0 : 0.0; };
  check_values(tc::eq(a, b), {2, 3}, {0, 1, 0, 0, 1, 0});
  check_values(tc::gt(a, b), {2, 3}, {0, 0, 1, 1, 0, 0});
  check_values(tc::lt(a, b), {2, 3}, {1, 0, 0, 0, 0, 1});
  check_values(tc::eq(s, a), {2, 3}, reference_binary(s, a, {2, 3}, eq));
  check_values(tc::gt(a, s), {2, 3}, reference_binary(a, s, {2, 3}, gt));
  check_values(tc::lt(a, s), {2, 3}, reference_binary(a, s, {2, 3}, lt));
  // Non-contiguous, and the result never requires grad.
  const Tensor at = tensor({1, 4, 2, 2, 3, 0}, {3, 2}).transpose(0, 1);  // == a
  const Tensor bg = make({3}, 55, Domain::any, Layout::contiguous, true);
  for (auto [op, ref] : {std::pair{&tc::eq, +eq}, std::pair{&tc::gt, +gt}, std::pair{&tc::lt, +lt}}) {
    check_values(op(at, b), {2, 3}, reference_binary(a, b, {2, 3}, ref));
    const Tensor r = op(at, bg);
    check_values(r, {2, 3}, reference_binary(a, bg, {2, 3}, ref));
    CHECK_FALSE(r.requires_grad());
  }
}

// ---------------------------------------------------------------- where, masked_fill

TEST_CASE("where: forward with three-way broadcasting", "[elementwise]") {
  const auto reference = [](const Tensor& c, const Tensor& a, const Tensor& b, const Shape& out) {
    const auto cv = c.to_vector(), av = a.to_vector(), bv = b.to_vector();
    std::vector<double> r(tc::numel_of(out));
    for (std::size_t i = 0; i < r.size(); ++i) {
      const auto idx = unravel(static_cast<int64_t>(i), out);
      r[i] = cv[broadcast_index(c.shape(), idx)] != 0.0f ? av[broadcast_index(a.shape(), idx)]
                                                          : bv[broadcast_index(b.shape(), idx)];
    }
    return r;
  };
  // Any nonzero condition (including negative values) selects `a`.
  const Tensor c23 = tensor({1, 0, -2, 0, 0.5f, 0}, {2, 3});
  const Tensor a = make({2, 3}, 61), b = make({2, 3}, 62);
  check_values(tc::where(c23, a, b), {2, 3}, reference(c23, a, b, {2, 3}));
  const Tensor c3 = tensor({0, 1, 1}, {3}), a21 = make({2, 1}, 63), s = make({}, 64);
  check_values(tc::where(c3, a21, s), {2, 3}, reference(c3, a21, s, {2, 3}));
  const Tensor c21 = tensor({1, 0}, {2, 1}), a3 = make({3}, 65), b411 = make({4, 1, 1}, 66);
  check_values(tc::where(c21, a3, b411), {4, 2, 3}, reference(c21, a3, b411, {4, 2, 3}));
  // Non-contiguous operands.
  const Tensor ct = tensor({1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1}, {4, 3}).transpose(0, 1);
  const Tensor as = make({3, 4}, 67, Domain::any, Layout::sliced), bt = make({3, 4}, 68, Domain::any, Layout::transposed);
  check_values(tc::where(ct, as, bt), {3, 4}, reference(ct, as, bt, {3, 4}));
}

TEST_CASE("where: gradients go to the selected side only", "[elementwise]") {
  const auto f = [](const std::vector<Tensor>& in) { return tc::where(in[0], in[1], in[2]); };
  const Tensor c = tensor({1, 0, 0, 1, 1, 0}, {2, 3});
  check_gradients(f, {c, make({2, 3}, 71, Domain::any, Layout::contiguous, true),
                      make({2, 3}, 72, Domain::any, Layout::transposed, true)});
  const Tensor c3 = tensor({0, 1, 1}, {3});
  check_gradients(f, {c3, make({2, 1}, 73, Domain::any, Layout::contiguous, true),
                      make({}, 74, Domain::any, Layout::contiguous, true)});
  check_gradients(f, {tensor({1, 0}, {2, 1}), make({3}, 75, Domain::any, Layout::contiguous, true),
                      make({4, 1, 1}, 76, Domain::any, Layout::contiguous, true)});
  // Exact values: with an all-ones seed, a gets the mask and b its complement.
  Tensor a = make({2, 3}, 77, Domain::any, Layout::contiguous, true);
  Tensor b = make({2, 3}, 78, Domain::any, Layout::contiguous, true);
  tc::sum(tc::where(c, a, b)).backward();
  check_values(a.grad(), {2, 3}, {1, 0, 0, 1, 1, 0});
  check_values(b.grad(), {2, 3}, {0, 1, 1, 0, 0, 1});
}

TEST_CASE("masked_fill: forward and gradients", "[elementwise]") {
  const Tensor x = make({2, 3, 4}, 81);
  const Tensor mask = tensor({1, 0, 1}, {3, 1});
  std::vector<double> want;
  const auto xv = x.to_vector();
  for (std::size_t i = 0; i < xv.size(); ++i) want.push_back((i / 4) % 3 == 1 ? xv[i] : -7.5);
  check_values(tc::masked_fill(x, mask, -7.5f), {2, 3, 4}, want);
  // A [] mask fills everything or nothing.
  check_values(tc::masked_fill(x, tc::scalar_tensor(1), 3.0f), {2, 3, 4}, std::vector<double>(24, 3.0));
  check_values(tc::masked_fill(x, tc::scalar_tensor(0), 3.0f), {2, 3, 4}, reference_unary(x, [](double v) { return v; }));
  // Non-contiguous input.
  const Tensor xt = make({3, 4}, 82, Domain::any, Layout::transposed);
  const Tensor m4 = tensor({0, 1, 1, 0}, {4});
  const auto xtv = xt.to_vector();
  std::vector<double> want_t;
  for (std::size_t i = 0; i < xtv.size(); ++i) want_t.push_back(i % 4 == 1 || i % 4 == 2 ? -1e9 : xtv[i]);
  check_values(tc::masked_fill(xt, m4, -1e9f), {3, 4}, want_t);

  const auto f = [&](const std::vector<Tensor>& in) { return tc::masked_fill(in[0], mask, 2.0f); };
  check_gradients(f, {make({2, 3, 4}, 83, Domain::any, Layout::sliced, true)});
  Tensor xg = make({3, 4}, 84, Domain::any, Layout::transposed, true);
  tc::sum(tc::masked_fill(xg, m4, 0.0f)).backward();
  check_values(xg.grad(), {3, 4}, {1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1});
}

// ---------------------------------------------------------------- errors

TEST_CASE("binary ops: incompatible shapes name the op and both shapes", "[elementwise]") {
  const Tensor a = tc::zeros({2, 3}), b = tc::zeros({4}), c = tc::zeros({3, 2, 4});
  REQUIRE_TFM_ERROR(tc::add(a, b), "add", "[2, 3]", "[4]");
  REQUIRE_TFM_ERROR(tc::sub(a, b), "sub", "[2, 3]", "[4]");
  REQUIRE_TFM_ERROR(tc::mul(b, a), "mul", "[4]", "[2, 3]");
  REQUIRE_TFM_ERROR(tc::div(a, c), "div", "[2, 3]", "[3, 2, 4]");
  REQUIRE_TFM_ERROR(a + c, "add", "[2, 3]", "[3, 2, 4]");
  REQUIRE_TFM_ERROR(tc::eq(a, b), "eq", "[2, 3]", "[4]");
  REQUIRE_TFM_ERROR(tc::gt(a, b), "gt", "[2, 3]", "[4]");
  REQUIRE_TFM_ERROR(tc::lt(a, b), "lt", "[2, 3]", "[4]");
  REQUIRE_TFM_ERROR(tc::where(a, b, b), "where", "[2, 3]", "[4]");
  REQUIRE_TFM_ERROR(tc::where(b, b, a), "where", "[2, 3]", "[4]");
  REQUIRE_TFM_ERROR(tc::broadcast_shapes({5, 1}, {2, 4, 3}, "myop"), "myop", "[5, 1]", "[2, 4, 3]");
  // Views are checked by their logical shape.
  REQUIRE_TFM_ERROR(tc::add(tc::zeros({3, 2}).transpose(0, 1), tc::zeros({2})), "add", "[2, 3]", "[2]");
}

TEST_CASE("masked_fill: a mask that does not broadcast to the input throws", "[elementwise]") {
  const Tensor x = tc::zeros({3, 4});
  REQUIRE_TFM_ERROR(tc::masked_fill(x, tc::zeros({5}), 0.0f), "masked_fill", "[3, 4]", "[5]");
  // Broadcastable together, but the mask would enlarge the input.
  REQUIRE_TFM_ERROR(tc::masked_fill(x, tc::zeros({2, 3, 4}), 0.0f), "masked_fill", "[3, 4]", "[2, 3, 4]");
  REQUIRE_TFM_ERROR(tc::masked_fill(x, tc::zeros({3, 1, 1}), 0.0f), "masked_fill", "[3, 4]", "[3, 1, 1]");
}

TEST_CASE("elementwise ops reject i32 and undefined tensors", "[elementwise]") {
  const Tensor i = tc::from_vector(std::vector<int32_t>{1, 2, 3}, {3});
  const Tensor f = tc::zeros({3});
  REQUIRE_TFM_ERROR(tc::add(i, f), "add", "i32");
  REQUIRE_TFM_ERROR(tc::sub(f, i), "sub", "i32");
  REQUIRE_TFM_ERROR(tc::mul(i, i), "mul", "i32");
  REQUIRE_TFM_ERROR(tc::div(f, i), "div", "i32");
  REQUIRE_TFM_ERROR(tc::add(i, 1.0f), "i32");
  REQUIRE_TFM_ERROR(tc::mul(i, 2.0f), "i32");
  REQUIRE_TFM_ERROR(tc::rsub(1.0f, i), "i32");
  REQUIRE_TFM_ERROR(tc::rdiv(1.0f, i), "i32");
  for (const UnaryOp& op : unary_ops()) {
    INFO(op.name);
    REQUIRE_TFM_ERROR(op.op(i), "i32");
    REQUIRE_THROWS_AS(op.op(Tensor()), tfm::Error);
  }
  REQUIRE_TFM_ERROR(tc::exp(i), "exp", "i32");
  REQUIRE_TFM_ERROR(tc::relu(i), "relu", "i32");
  REQUIRE_TFM_ERROR(tc::eq(i, f), "eq", "i32");
  REQUIRE_TFM_ERROR(tc::gt(f, i), "gt", "i32");
  REQUIRE_TFM_ERROR(tc::lt(i, f), "lt", "i32");
  REQUIRE_TFM_ERROR(tc::where(i, f, f), "where", "i32");
  REQUIRE_TFM_ERROR(tc::where(f, f, i), "where", "i32");
  REQUIRE_TFM_ERROR(tc::masked_fill(i, f, 0.0f), "masked_fill", "i32");
  REQUIRE_TFM_ERROR(tc::masked_fill(f, i, 0.0f), "masked_fill", "i32");
  REQUIRE_TFM_ERROR(tc::add(Tensor(), f), "add");
}

// ---------------------------------------------------------------- autograd recording

TEST_CASE("elementwise ops record a node only when an input requires grad", "[elementwise]") {
  const Tensor plain = make({2, 3}, 91);
  const Tensor leaf = make({2, 3}, 92, Domain::any, Layout::contiguous, true);
  CHECK_FALSE(tc::exp(plain).requires_grad());
  CHECK_FALSE(tc::add(plain, plain).requires_grad());
  CHECK_FALSE(tc::mul(plain, 2.0f).requires_grad());
  CHECK(tc::exp(leaf).requires_grad());
  CHECK(tc::add(plain, leaf).requires_grad());
  CHECK(tc::rdiv(1.0f, leaf).requires_grad());
  CHECK(tc::where(plain, plain, leaf).requires_grad());
  CHECK_FALSE(tc::where(leaf, plain, plain).requires_grad());  // the condition is not differentiable
  tc::NoGradGuard guard;
  CHECK_FALSE(tc::exp(leaf).requires_grad());
  CHECK_FALSE(tc::add(leaf, leaf).requires_grad());
  CHECK_FALSE(tc::masked_fill(leaf, plain, 1.0f).requires_grad());
}
