// Reductions (core/ops_reduce.cpp): sum, mean and max over all dims, one
// dim, several (non-adjacent) dims, with and without keepdim, on contiguous
// and strided inputs; forward against a reference loop in double precision,
// gradients against finite differences; tie handling in max; sum_to; errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "tests/gradcheck.h"

namespace {

namespace tc = tfm::core;
using tc::Shape;
using tc::Tensor;
using tfm::test::check_gradients;
using Dims = std::vector<int64_t>;

// Expects a tfm::Error whose message contains every listed fragment.
#define REQUIRE_TFM_ERROR(expr, ...)                                                           \
  do {                                                                                         \
    REQUIRE_THROWS_AS(expr, tfm::Error);                                                       \
    for (const char* part_ : {__VA_ARGS__}) REQUIRE_THROWS_WITH(expr, Catch::Contains(part_)); \
  } while (0)

// ---------------------------------------------------------------- helpers

enum class Kind { sum, mean, max };
enum class Layout { contiguous, transposed, sliced };

const char* kind_name(Kind k) { return k == Kind::sum ? "sum" : k == Kind::mean ? "mean" : "max"; }

Tensor reduce(Kind k, const Tensor& x, const Dims& dims, bool keepdim) {
  if (k == Kind::sum) return tc::sum(x, dims, keepdim);
  if (k == Kind::mean) return tc::mean(x, dims, keepdim);
  return tc::max(x, dims, keepdim);
}

// n distinct values 0.1 apart in shuffled order, so that max has no ties and
// a finite-difference step of 1e-2 never changes which element is largest.
std::vector<float> distinct_values(int64_t n, uint64_t seed) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), 0.0f);
  std::shuffle(v.begin(), v.end(), std::mt19937_64(seed));
  for (float& x : v) x = 0.1f * x - 0.05f * static_cast<float>(n);
  return v;
}

// A tensor of `shape` laid out as asked: contiguous, a transpose(0, 1) view
// of a [d1, d0, ...] tensor, or a step-2 slice of a tensor twice as long in
// dim `slice_dim`.
Tensor make(const Shape& shape, uint64_t seed, Layout layout = Layout::contiguous, bool grad = false,
            int64_t slice_dim = -1) {
  Shape base_shape = shape;
  const int64_t sd = slice_dim < 0 ? slice_dim + static_cast<int64_t>(shape.size()) : slice_dim;
  if (layout == Layout::transposed) std::swap(base_shape[0], base_shape[1]);
  if (layout == Layout::sliced) base_shape[sd] *= 2;
  const Tensor base = tc::from_vector(distinct_values(tc::numel_of(base_shape), seed), base_shape);
  Tensor t = base;
  if (layout == Layout::transposed) t = base.transpose(0, 1);
  if (layout == Layout::sliced) t = base.slice(sd, 0, base_shape[sd], 2);
  REQUIRE(t.shape() == shape);
  if (layout != Layout::contiguous) REQUIRE_FALSE(t.is_contiguous());
  if (grad) t.set_requires_grad();
  return t;
}

Tensor tensor(const std::vector<float>& v, const Shape& s) { return tc::from_vector(v, s); }

struct Expected {
  Shape shape;
  std::vector<double> values;
};

// The reduction computed by a plain loop over the logical elements.
Expected reference_reduce(Kind kind, const Tensor& x, const Dims& dims, bool keepdim) {
  const Shape& s = x.shape();
  const int64_t nd = x.dim();
  std::vector<bool> reduced(nd, dims.empty());
  for (int64_t d : dims) reduced[d < 0 ? d + nd : d] = true;
  Shape keep = s;
  Expected e;
  for (int64_t d = 0; d < nd; ++d) {
    if (reduced[d]) keep[d] = 1;
    if (!reduced[d] || keepdim) e.shape.push_back(keep[d]);
  }
  const int64_t n_out = tc::numel_of(keep);
  const double init = kind == Kind::max ? -std::numeric_limits<double>::infinity() : 0.0;
  e.values.assign(n_out, init);
  std::vector<int64_t> count(n_out, 0);
  const std::vector<float> xv = x.to_vector();
  for (int64_t i = 0; i < static_cast<int64_t>(xv.size()); ++i) {
    int64_t rest = i, o = 0, scale = 1;
    for (int64_t d = nd - 1; d >= 0; --d) {  // output index: the reduced coordinates dropped
      const int64_t c = rest % s[d];
      rest /= s[d];
      if (!reduced[d]) o += c * scale;
      scale *= keep[d];
    }
    e.values[o] = kind == Kind::max ? std::max(e.values[o], double{xv[i]}) : e.values[o] + xv[i];
    ++count[o];
  }
  if (kind == Kind::mean)
    for (int64_t o = 0; o < n_out; ++o) e.values[o] /= static_cast<double>(count[o]);
  return e;
}

// Checks the shape, then every element within `tol` relative to max(1, |want|).
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

std::string dims_str(const Dims& d) { return tc::shape_str(d); }

// Dim lists for a 3-D and a 4-D input: all, each single dim (also negative),
// adjacent and non-adjacent sets, unsorted lists, every dim spelled out.
const std::vector<Dims> kDims3 = {{}, {0}, {1}, {2}, {-1}, {-2}, {-3}, {0, 1}, {1, 2}, {0, 2}, {2, 0}, {-1, 0}, {0, 1, 2}};
const std::vector<Dims> kDims4 = {{}, {1}, {0, 2}, {1, 3}, {0, 3}, {3, 0}, {0, 2, 3}, {-1, -3}};
const Kind kKinds[] = {Kind::sum, Kind::mean, Kind::max};
const Layout kLayouts[] = {Layout::contiguous, Layout::transposed, Layout::sliced};

}  // namespace

// ---------------------------------------------------------------- forward

TEST_CASE("sum, mean, max: forward over any dims, any layout", "[reduce]") {
  for (Kind kind : kKinds) {
    for (Layout layout : kLayouts) {
      for (bool keepdim : {false, true}) {
        const Tensor x3 = make({2, 3, 4}, 1, layout);
        for (const Dims& dims : kDims3) {
          INFO(kind_name(kind) << " [2, 3, 4] layout " << static_cast<int>(layout) << " dims " << dims_str(dims)
                               << " keepdim " << keepdim);
          const Expected e = reference_reduce(kind, x3, dims, keepdim);
          check_values(reduce(kind, x3, dims, keepdim), e.shape, e.values);
        }
        const Tensor x4 = make({2, 3, 4, 5}, 2, layout);
        for (const Dims& dims : kDims4) {
          INFO(kind_name(kind) << " [2, 3, 4, 5] layout " << static_cast<int>(layout) << " dims " << dims_str(dims)
                               << " keepdim " << keepdim);
          const Expected e = reference_reduce(kind, x4, dims, keepdim);
          check_values(reduce(kind, x4, dims, keepdim), e.shape, e.values);
        }
      }
    }
  }
}

TEST_CASE("reductions: explicit shapes and values", "[reduce]") {
  const Tensor x = tensor({1, 2, 3, 4, 5, 6}, {2, 3});
  check_values(tc::sum(x), {}, {21});
  check_values(tc::sum(x, {0}), {3}, {5, 7, 9});
  check_values(tc::sum(x, {1}, true), {2, 1}, {6, 15});
  check_values(tc::mean(x, {-1}), {2}, {2, 5});
  check_values(tc::mean(x, {}, true), {1, 1}, {3.5});
  check_values(tc::max(x, {0}), {3}, {4, 5, 6});
  check_values(tc::max(x, {1}, true), {2, 1}, {3, 6});
  check_values(tc::max(tensor({-5, -2, -9}, {3})), {}, {-2});  // all negative
  // A dimension of size 1 and a [] input.
  const Tensor col = tensor({1, 2, 3}, {3, 1});
  check_values(tc::sum(col, {1}), {3}, {1, 2, 3});
  check_values(tc::max(col, {0}, true), {1, 1}, {3});
  for (Kind kind : kKinds) {
    INFO(kind_name(kind));
    check_values(reduce(kind, tc::scalar_tensor(2.5f), {}, false), {}, {2.5});
    check_values(reduce(kind, tc::scalar_tensor(2.5f), {}, true), {}, {2.5});
  }
  // Sum over an empty dim is 0; the other dims survive.
  check_values(tc::sum(tc::zeros({0, 3}), {0}), {3}, {0, 0, 0});
}

TEST_CASE("reductions: a [] tensor accepts dim 0 (wrap_dim's rule for rank 0)", "[reduce]") {
  for (Kind kind : kKinds) {
    for (bool keepdim : {false, true}) {
      INFO(kind_name(kind) << " keepdim " << keepdim);
      Tensor x = tc::scalar_tensor(-1.5f).set_requires_grad();
      Tensor y = reduce(kind, x, {0}, keepdim);
      check_values(y, {}, {-1.5});
      y.backward();
      check_values(x.grad(), {}, {1.0});
    }
  }
}

TEST_CASE("reductions: large inputs (parallel kernels, accumulation)", "[reduce]") {
  // Few rows, long rows; many rows, short rows; reductions over a leading
  // dim (the [A, R, B] kernel with B > 1) and a trailing dim (B == 1).
  for (const Shape& s : {Shape{4, 256, 64}, Shape{512, 130}, Shape{3, 40000}}) {
    const Tensor x = tfm::test::random_tensor(s, 11);
    for (Kind kind : kKinds) {
      for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) {
        INFO(kind_name(kind) << " " << tc::shape_str(s) << " dim " << d);
        const Expected e = reference_reduce(kind, x, {d}, false);
        check_values(reduce(kind, x, {d}, false), e.shape, e.values);
      }
      INFO(kind_name(kind) << " " << tc::shape_str(s) << " all dims");
      const Expected e = reference_reduce(kind, x, {}, false);
      check_values(reduce(kind, x, {}, false), e.shape, e.values);
    }
  }
  // Summing many equal values is as accurate whichever dim is reduced.
  const Tensor tenths = tc::full({100000, 2}, 0.1f);
  const double want = 100000 * double{0.1f};
  check_values(tc::sum(tenths, {0}), {2}, {want, want});
  check_values(tc::sum(tenths.transpose(0, 1), {1}), {2}, {want, want});
  check_values(tc::sum(tenths), {}, {2 * want});
  check_values(tc::mean(tenths, {0}), {2}, {double{0.1f}, double{0.1f}});
}

// ---------------------------------------------------------------- backward

TEST_CASE("sum, mean, max: gradients over any dims, any layout", "[reduce]") {
  for (Kind kind : kKinds) {
    for (Layout layout : kLayouts) {
      for (bool keepdim : {false, true}) {
        for (const Dims& dims : kDims3) {
          INFO(kind_name(kind) << " [2, 3, 4] layout " << static_cast<int>(layout) << " dims " << dims_str(dims)
                               << " keepdim " << keepdim);
          check_gradients([&](const std::vector<Tensor>& in) { return reduce(kind, in[0], dims, keepdim); },
                          {make({2, 3, 4}, 21, layout, true)});
        }
        for (const Dims& dims : kDims4) {
          INFO(kind_name(kind) << " [2, 3, 4, 5] layout " << static_cast<int>(layout) << " dims " << dims_str(dims)
                               << " keepdim " << keepdim);
          check_gradients([&](const std::vector<Tensor>& in) { return reduce(kind, in[0], dims, keepdim); },
                          {make({2, 3, 4, 5}, 22, layout, true, 1)});
        }
      }
    }
  }
}

TEST_CASE("reductions: gradients flow through a following op", "[reduce]") {
  // The gradient of a reduction reaches a node upstream, not just a leaf.
  for (Kind kind : kKinds) {
    INFO(kind_name(kind));
    check_gradients(
        [&](const std::vector<Tensor>& in) { return tc::tanh(reduce(kind, tc::mul(in[0], 0.5f), {0, 2}, false)); },
        {make({2, 3, 4}, 23, Layout::transposed, true)});
  }
}

TEST_CASE("max: the gradient is shared equally among tied maxima", "[reduce]") {
  Tensor a = tensor({1, 3, 3}, {3}).set_requires_grad();
  tc::max(a).backward();
  check_values(a.grad(), {3}, {0, 0.5, 0.5});

  // Per-row ties, with a non-uniform upstream gradient.
  Tensor b = tensor({2, 2, 1, 1, 5, 0}, {2, 3}).set_requires_grad();
  Tensor mb = tc::max(b, {1});
  check_values(mb, {2}, {2, 5});
  mb.backward(tensor({2, 4}, {2}));
  check_values(b.grad(), {2, 3}, {1, 1, 0, 0, 4, 0});

  // A three-way tie over all dims, keepdim, on a transposed view.
  Tensor c = tensor({3, 3, 1, 3}, {2, 2}).transpose(0, 1);
  c.set_requires_grad();
  tc::max(c, {}, true).backward(tensor({3}, {1, 1}));
  check_values(c.grad(), {2, 2}, {1, 0, 1, 1});

  // Ties along dim 0 of a 3-D input.
  Tensor d = tensor({1, 7, 4, 4, 7, 2}, {2, 1, 3}).set_requires_grad();
  tc::sum(tc::max(d, {0})).backward();
  check_values(d.grad(), {2, 1, 3}, {0, 0.5, 1, 1, 0.5, 0});
}

// ---------------------------------------------------------------- sum_to

TEST_CASE("sum_to: reduces a broadcast shape back", "[reduce]") {
  // Element i of x lands on the target element that broadcasting would read for it.
  const auto reference = [](const Tensor& x, const Shape& target) {
    const std::vector<float> xv = x.to_vector();
    std::vector<double> want(tc::numel_of(target), 0.0);
    for (int64_t i = 0; i < 24; ++i) {
      const int64_t idx[3] = {i / 12, (i / 4) % 3, i % 4};
      const std::size_t lead = 3 - target.size();
      int64_t o = 0;
      for (std::size_t d = 0; d < target.size(); ++d) o = o * target[d] + (target[d] == 1 ? 0 : idx[lead + d]);
      want[o] += xv[i];
    }
    return want;
  };
  for (const Shape& target : {Shape{3, 1}, Shape{4}, Shape{}, Shape{1, 3, 4}, Shape{2, 1, 4}, Shape{2, 3, 1},
                              Shape{1, 1}, Shape{1, 1, 1}, Shape{2, 3, 4}}) {
    INFO("to " << tc::shape_str(target));
    for (Layout layout : kLayouts) {
      const Tensor x = make({2, 3, 4}, 31, layout);
      check_values(tc::sum_to(x, target), target, reference(x, target));
      check_gradients([&](const std::vector<Tensor>& in) { return tc::sum_to(in[0], target); },
                      {make({2, 3, 4}, 32, layout, true)});
    }
  }
}

// ---------------------------------------------------------------- errors

TEST_CASE("reductions: bad dim lists name the op", "[reduce]") {
  const Tensor x = tc::zeros({2, 3, 4});
  for (Kind kind : kKinds) {
    const char* name = kind_name(kind);
    INFO(name);
    REQUIRE_TFM_ERROR(reduce(kind, x, {1, 1}, false), name, "repeated", "[2, 3, 4]");
    REQUIRE_TFM_ERROR(reduce(kind, x, {0, 2, -3}, true), name, "repeated");  // -3 is dim 0
    REQUIRE_TFM_ERROR(reduce(kind, x, {3}, false), name, "out of range");
    REQUIRE_TFM_ERROR(reduce(kind, x, {0, -4}, false), name, "out of range");
    REQUIRE_TFM_ERROR(reduce(kind, tc::scalar_tensor(1.0f), {1}, false), name, "out of range");
    REQUIRE_TFM_ERROR(reduce(kind, tc::from_vector(std::vector<int32_t>{1, 2}, {2}), {}, false), name, "i32");
    REQUIRE_TFM_ERROR(reduce(kind, Tensor(), {}, false), name);
  }
  // mean and max over an empty dim have no value.
  REQUIRE_TFM_ERROR(tc::mean(tc::zeros({0, 3}), {0}), "mean", "[0, 3]");
  REQUIRE_TFM_ERROR(tc::max(tc::zeros({0, 3}), {0}), "max", "[0, 3]");
}

TEST_CASE("sum_to: shapes that are not a broadcast source throw", "[reduce]") {
  const Tensor x = tc::zeros({2, 3, 4});
  REQUIRE_TFM_ERROR(tc::sum_to(x, {5}), "sum_to", "[2, 3, 4]", "[5]");
  REQUIRE_TFM_ERROR(tc::sum_to(x, {3}), "sum_to", "[2, 3, 4]", "[3]");
  REQUIRE_TFM_ERROR(tc::sum_to(x, {2, 1, 3}), "sum_to", "[2, 3, 4]", "[2, 1, 3]");
  REQUIRE_TFM_ERROR(tc::sum_to(x, {1, 2, 3, 4}), "sum_to", "[2, 3, 4]", "[1, 2, 3, 4]");
}
