// Shape ops: reshape/view, permute/transpose, slice, expand, (un)squeeze,
// contiguous/clone, concat/stack/split. Forward values are checked against
// explicit index loops; backward against finite differences.
#include <catch2/catch.hpp>

#include <functional>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "tests/gradcheck.h"

namespace {

namespace core = tfm::core;
using core::Shape;
using core::Tensor;
using Catch::Matchers::Contains;
using tfm::test::check_gradients;
using tfm::test::random_tensor;
using Index = std::vector<int64_t>;

// 0, 1, 2, ... laid out row-major in `s` (contiguous).
Tensor iota(const Shape& s) { return core::arange(core::numel_of(s)).reshape(s); }

// Calls fn(index) for every multi-index of `s` in row-major order.
void for_each_index(const Shape& s, const std::function<void(const Index&)>& fn) {
  const int64_t n = core::numel_of(s);
  Index idx(s.size(), 0);
  for (int64_t k = 0; k < n; ++k) {
    fn(idx);
    for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
}

// A leaf that requires grad but is a non-contiguous view of its storage.
Tensor transposed_leaf(const Shape& s, uint64_t seed) {
  Tensor t = random_tensor({s[1], s[0]}, seed).transpose(0, 1);
  REQUIRE_FALSE(t.is_contiguous());
  t.set_requires_grad();
  return t;
}

}  // namespace

// ---------------------------------------------------------------- reshape / view

TEST_CASE("reshape of a contiguous tensor is a view and keeps row-major order", "[shape]") {
  const Tensor x = iota({2, 3, 4});
  const Tensor y = x.reshape({4, -1});
  REQUIRE(y.shape() == Shape{4, 6});
  CHECK(y.shares_storage(x));
  for_each_index(y.shape(), [&](const Index& i) { CHECK(y.at(i) == static_cast<float>(i[0] * 6 + i[1])); });

  CHECK(x.reshape({-1}).shape() == Shape{24});
  CHECK(x.reshape({2, 1, 12}).shape() == Shape{2, 1, 12});
  CHECK(x.reshape({-1}).to_vector() == x.to_vector());

  const Tensor one = core::from_vector(std::vector<float>{5.0f}, {1, 1});
  const Tensor s = one.reshape({});
  CHECK(s.dim() == 0);
  CHECK(s.item() == 5.0f);
}

TEST_CASE("reshape of a transposed tensor copies unless the layout allows a view", "[shape]") {
  const Tensor x = iota({2, 3, 4});
  const Tensor xt = x.transpose(0, 1);  // [3, 2, 4]
  const Tensor y = xt.reshape({6, 4});
  REQUIRE(y.shape() == Shape{6, 4});
  CHECK_FALSE(y.shares_storage(x));
  CHECK(y.is_contiguous());
  for_each_index(y.shape(), [&](const Index& i) { CHECK(y.at(i) == x.at({i[0] % 2, i[0] / 2, i[1]})); });

  // Splitting the (still contiguous) last dim of a transposed tensor is a view.
  const Tensor z = xt.reshape({3, 2, 2, 2});
  CHECK(z.shares_storage(x));
  for_each_index(z.shape(), [&](const Index& i) { CHECK(z.at(i) == x.at({i[1], i[0], i[2] * 2 + i[3]})); });
}

TEST_CASE("view never copies and throws when the layout makes it impossible", "[shape]") {
  const Tensor x = iota({3, 4});
  const Tensor v = x.view({2, 6});
  CHECK(v.shares_storage(x));
  CHECK(v.to_vector() == x.to_vector());

  const Tensor xt = x.transpose(0, 1);
  CHECK_THROWS_AS(xt.view({12}), tfm::Error);
  CHECK_THROWS_WITH(xt.view({2, 6}), Contains("view") && Contains("[4, 3]"));
  CHECK(xt.view({4, 3, 1}).shares_storage(x));  // adding a unit dim is always possible
  CHECK(x.slice(1, 0, 4, 2).view({6}).at({5}) == 10.0f);  // stride-2 column, viewable
}

TEST_CASE("reshape rejects bad target shapes", "[shape]") {
  const Tensor x = iota({2, 3});
  CHECK_THROWS_WITH(x.reshape({4, 2}), Contains("reshape") && Contains("[4, 2]"));
  CHECK_THROWS_AS(x.reshape({-1, -1}), tfm::Error);
  CHECK_THROWS_AS(x.reshape({-1, 4}), tfm::Error);
  CHECK_THROWS_AS(x.reshape({-2, -3}), tfm::Error);
}

// ---------------------------------------------------------------- permute / transpose

TEST_CASE("permute and transpose are strided views", "[shape]") {
  const Tensor x = iota({2, 3, 4});
  const Tensor p = x.permute({2, 0, 1});
  REQUIRE(p.shape() == Shape{4, 2, 3});
  CHECK(p.shares_storage(x));
  CHECK_FALSE(p.is_contiguous());
  for_each_index(p.shape(), [&](const Index& i) { CHECK(p.at(i) == x.at({i[1], i[2], i[0]})); });

  const Tensor pn = x.permute({-1, 0, -2});
  CHECK(pn.to_vector() == p.to_vector());

  const Tensor t = x.transpose(0, 2);
  REQUIRE(t.shape() == Shape{4, 3, 2});
  for_each_index(t.shape(), [&](const Index& i) { CHECK(t.at(i) == x.at({i[2], i[1], i[0]})); });
  const Tensor t2 = x.transpose(-1, -2);
  REQUIRE(t2.shape() == Shape{2, 4, 3});
  for_each_index(t2.shape(), [&](const Index& i) { CHECK(t2.at(i) == x.at({i[0], i[2], i[1]})); });

  CHECK_THROWS_AS(x.permute({0, 1}), tfm::Error);
  CHECK_THROWS_AS(x.permute({0, 1, 1}), tfm::Error);
  CHECK_THROWS_AS(x.permute({0, 1, 3}), tfm::Error);
  CHECK_THROWS_AS(x.transpose(0, 3), tfm::Error);
}

// ---------------------------------------------------------------- slice

TEST_CASE("slice handles negative indices, steps, clamping and empty results", "[shape]") {
  const Tensor x = iota({5, 6});  // x[i, j] = 6i + j

  const Tensor a = x.slice(1, -4, -1);  // columns 2, 3, 4
  REQUIRE(a.shape() == Shape{5, 3});
  CHECK(a.shares_storage(x));
  for_each_index(a.shape(), [&](const Index& i) { CHECK(a.at(i) == x.at({i[0], i[1] + 2})); });

  const Tensor b = x.slice(0, 0, 5, 2);  // rows 0, 2, 4
  REQUIRE(b.shape() == Shape{3, 6});
  for_each_index(b.shape(), [&](const Index& i) { CHECK(b.at(i) == x.at({2 * i[0], i[1]})); });

  const Tensor c = x.slice(-1, 1, 6, 3);  // columns 1, 4
  REQUIRE(c.shape() == Shape{5, 2});
  for_each_index(c.shape(), [&](const Index& i) { CHECK(c.at(i) == x.at({i[0], 1 + 3 * i[1]})); });

  const Tensor d = x.slice(1, 5, 0);  // end before start: empty
  CHECK(d.shape() == Shape{5, 0});
  CHECK(d.to_vector().empty());
  CHECK(x.slice(0, 3, 3).shape() == Shape{0, 6});
  CHECK(x.slice(0, 7, 9).shape() == Shape{0, 6});

  const Tensor e = x.slice(0, -100, 100);  // clamped to the whole dim
  CHECK(e.to_vector() == x.to_vector());

  // Slice of a slice composes offsets and strides.
  const Tensor f = x.slice(1, 1, 6, 2).slice(1, 1, 3);  // columns 3, 5
  REQUIRE(f.shape() == Shape{5, 2});
  for_each_index(f.shape(), [&](const Index& i) { CHECK(f.at(i) == x.at({i[0], 3 + 2 * i[1]})); });

  CHECK_THROWS_AS(x.slice(0, 0, 5, 0), tfm::Error);
  CHECK_THROWS_AS(x.slice(0, 0, 5, -1), tfm::Error);
  CHECK_THROWS_AS(x.slice(2, 0, 1), tfm::Error);
}

// ---------------------------------------------------------------- expand

TEST_CASE("expand is a stride-0 view and -1 keeps a dim", "[shape]") {
  const Tensor x = iota({3, 1});
  const Tensor y = x.expand({2, 3, 4});
  REQUIRE(y.shape() == Shape{2, 3, 4});
  CHECK(y.shares_storage(x));
  CHECK(y.stride(0) == 0);
  CHECK(y.stride(2) == 0);
  for_each_index(y.shape(), [&](const Index& i) { CHECK(y.at(i) == x.at({i[1], 0})); });

  const Tensor z = x.expand({-1, 5});
  REQUIRE(z.shape() == Shape{3, 5});
  for_each_index(z.shape(), [&](const Index& i) { CHECK(z.at(i) == static_cast<float>(i[0])); });

  CHECK_THROWS_WITH(x.expand({4, 2}), Contains("expand") && Contains("[3, 1]"));
  CHECK_THROWS_AS(x.expand({3}), tfm::Error);
  CHECK_THROWS_AS(x.expand({-1, 3, 2}), tfm::Error);  // -1 for a new leading dim
}

// ---------------------------------------------------------------- unsqueeze / squeeze

TEST_CASE("unsqueeze and squeeze insert and remove unit dims as views", "[shape]") {
  const Tensor x = iota({2, 3});
  CHECK(x.unsqueeze(0).shape() == Shape{1, 2, 3});
  CHECK(x.unsqueeze(1).shape() == Shape{2, 1, 3});
  CHECK(x.unsqueeze(-1).shape() == Shape{2, 3, 1});
  CHECK(x.unsqueeze(2).shape() == Shape{2, 3, 1});
  const Tensor u = x.unsqueeze(1);
  CHECK(u.shares_storage(x));
  for_each_index(u.shape(), [&](const Index& i) { CHECK(u.at(i) == x.at({i[0], i[2]})); });

  const Tensor s = u.squeeze(1);
  CHECK(s.shape() == Shape{2, 3});
  CHECK(s.shares_storage(x));
  CHECK(s.to_vector() == x.to_vector());
  CHECK(x.unsqueeze(-1).squeeze(-1).shape() == Shape{2, 3});
  CHECK_THROWS_WITH(x.squeeze(0), Contains("squeeze"));
  CHECK_THROWS_AS(x.unsqueeze(4), tfm::Error);

  // On a non-contiguous tensor they stay views.
  const Tensor xt = x.transpose(0, 1);
  const Tensor ut = xt.unsqueeze(1);
  CHECK(ut.shares_storage(x));
  for_each_index(ut.shape(), [&](const Index& i) { CHECK(ut.at(i) == x.at({i[2], i[0]})); });
}

// ---------------------------------------------------------------- contiguous / clone

TEST_CASE("contiguous copies only when needed; clone always copies", "[shape]") {
  const Tensor x = iota({3, 4});
  const Tensor c = x.contiguous();
  CHECK(c.impl() == x.impl());

  const Tensor xt = x.transpose(0, 1);
  const Tensor ct = xt.contiguous();
  CHECK(ct.is_contiguous());
  CHECK_FALSE(ct.shares_storage(x));
  for_each_index(ct.shape(), [&](const Index& i) { CHECK(ct.at(i) == x.at({i[1], i[0]})); });

  const Tensor cs = x.slice(1, 0, 4, 2).contiguous();
  CHECK(cs.is_contiguous());
  CHECK(cs.to_vector() == std::vector<float>{0, 2, 4, 6, 8, 10});

  Tensor k = x.clone();
  CHECK_FALSE(k.shares_storage(x));
  CHECK(k.to_vector() == x.to_vector());
  k.fill_(-1.0f);
  CHECK(x.at({0, 0}) == 0.0f);  // the original is untouched
  const Tensor kt = xt.clone();
  CHECK(kt.is_contiguous());
  CHECK(kt.to_vector() == xt.to_vector());
}

// ---------------------------------------------------------------- concat

TEST_CASE("concat along several dims, including non-contiguous inputs", "[shape]") {
  const Tensor a = iota({2, 3});
  const Tensor b = core::add(iota({2, 3}), 100.0f);
  const Tensor c = core::add(iota({3, 2}), 200.0f).transpose(0, 1);  // [2, 3], non-contiguous

  const Tensor r0 = core::concat({a, b, c}, 0);
  REQUIRE(r0.shape() == Shape{6, 3});
  for_each_index(r0.shape(), [&](const Index& i) {
    const Tensor& src = i[0] < 2 ? a : i[0] < 4 ? b : c;
    CHECK(r0.at(i) == src.at({i[0] % 2, i[1]}));
  });

  const Tensor r1 = core::concat({a, c.slice(1, 0, 1), b}, -1);
  REQUIRE(r1.shape() == Shape{2, 7});
  for_each_index(r1.shape(), [&](const Index& i) {
    const float want = i[1] < 3 ? a.at({i[0], i[1]}) : i[1] == 3 ? c.at({i[0], 0}) : b.at({i[0], i[1] - 4});
    CHECK(r1.at(i) == want);
  });

  const Tensor x = iota({2, 2, 3}), y = core::add(iota({2, 1, 3}), 50.0f);
  const Tensor r2 = core::concat({x, y}, 1);
  REQUIRE(r2.shape() == Shape{2, 3, 3});
  for_each_index(r2.shape(), [&](const Index& i) {
    CHECK(r2.at(i) == (i[1] < 2 ? x.at(i) : y.at({i[0], 0, i[2]})));
  });
  CHECK_FALSE(r2.shares_storage(x));
  CHECK(core::concat({a}, 0).to_vector() == a.to_vector());
}

TEST_CASE("concat rejects mismatched inputs with a message naming the shapes", "[shape]") {
  const Tensor a = iota({2, 3}), b = iota({2, 4}), c = iota({2, 3, 1});
  CHECK_THROWS_WITH(core::concat({a, b}, 0), Contains("concat") && Contains("[2, 3]") && Contains("[2, 4]"));
  CHECK_NOTHROW(core::concat({a, b}, 1));
  CHECK_THROWS_WITH(core::concat({a, c}, 0), Contains("concat") && Contains("[2, 3, 1]") && Contains("[2, 3]"));
  CHECK_THROWS_AS(core::concat({}, 0), tfm::Error);
  CHECK_THROWS_AS(core::concat({a, a}, 2), tfm::Error);
  CHECK_THROWS_WITH(core::concat({core::scalar_tensor(1.0f), core::scalar_tensor(2.0f)}, 0), Contains("concat"));
}

// ---------------------------------------------------------------- stack

TEST_CASE("stack inserts a new dim", "[shape]") {
  const Tensor a = iota({2, 3});
  const Tensor b = core::add(iota({2, 3}), 10.0f);
  const Tensor c = core::add(iota({3, 2}), 20.0f).transpose(0, 1);
  const std::vector<Tensor> xs{a, b, c};
  for (int64_t dim : {0, 1, 2, -1}) {
    INFO("dim " << dim);
    const Tensor s = core::stack(xs, dim);
    const int64_t d = dim < 0 ? dim + 3 : dim;
    Shape want{2, 3};
    want.insert(want.begin() + d, 3);
    REQUIRE(s.shape() == want);
    for_each_index(s.shape(), [&](const Index& i) {
      Index inner = i;
      inner.erase(inner.begin() + d);
      CHECK(s.at(i) == xs[i[d]].at(inner));
    });
  }
  CHECK_THROWS_WITH(core::stack({a, iota({3, 2})}, 0), Contains("stack") && Contains("[3, 2]"));
  CHECK(core::stack({core::scalar_tensor(1.0f), core::scalar_tensor(2.0f)}, 0).to_vector() ==
        std::vector<float>{1, 2});
}

// ---------------------------------------------------------------- split

TEST_CASE("split by size and by a list of sizes returns views", "[shape]") {
  const Tensor x = iota({5, 4});
  const auto parts = core::split(x, 2, 0);
  REQUIRE(parts.size() == 3);
  CHECK(parts[0].shape() == Shape{2, 4});
  CHECK(parts[2].shape() == Shape{1, 4});
  int64_t row = 0;
  for (const Tensor& p : parts) {
    CHECK(p.shares_storage(x));
    for_each_index(p.shape(), [&](const Index& i) { CHECK(p.at(i) == x.at({row + i[0], i[1]})); });
    row += p.size(0);
  }
  CHECK(core::split(x, 7, 0).size() == 1);

  const auto cols = core::split(x, std::vector<int64_t>{1, 0, 3}, -1);
  REQUIRE(cols.size() == 3);
  CHECK(cols[0].shape() == Shape{5, 1});
  CHECK(cols[1].shape() == Shape{5, 0});
  CHECK(cols[2].shape() == Shape{5, 3});
  for_each_index(cols[2].shape(), [&](const Index& i) { CHECK(cols[2].at(i) == x.at({i[0], i[1] + 1})); });

  CHECK_THROWS_WITH(core::split(x, std::vector<int64_t>{1, 2}, 1), Contains("split"));
  CHECK_THROWS_AS(core::split(x, std::vector<int64_t>{5, -1}, 1), tfm::Error);
  CHECK_THROWS_AS(core::split(x, 0, 0), tfm::Error);
}

// ---------------------------------------------------------------- 0-d tensors

TEST_CASE("ops that index a dim reject 0-d tensors; the others accept them", "[shape]") {
  const Tensor s = core::scalar_tensor(3.0f);
  CHECK_THROWS_WITH(s.slice(0, 0, 1), Contains("slice"));
  CHECK_THROWS_WITH(s.squeeze(0), Contains("squeeze"));
  CHECK_THROWS_WITH(core::split(s, 1, 0), Contains("split"));
  CHECK_THROWS_WITH(core::split(s, std::vector<int64_t>{1}, 0), Contains("split"));
  CHECK_THROWS_WITH(core::concat({s, s}, 0), Contains("concat"));

  const Tensor t = s.transpose(0, 0);
  CHECK(t.dim() == 0);
  CHECK(t.item() == 3.0f);
  CHECK(s.unsqueeze(0).shape() == Shape{1});
  CHECK(s.reshape({1, 1}).at({0, 0}) == 3.0f);
  CHECK(s.expand({2, 3}).to_vector() == std::vector<float>(6, 3.0f));
  CHECK(s.permute({}).item() == 3.0f);
}

// ---------------------------------------------------------------- backward: exact gradients

TEST_CASE("slice and expand backward: exact gradients", "[shape]") {
  Tensor x = iota({4, 3}).clone();
  x.set_requires_grad();
  core::sum(x.slice(0, 1, 4, 2)).backward();  // rows 1 and 3
  for_each_index(x.shape(), [&](const Index& i) { CHECK(x.grad().at(i) == (i[0] % 2 == 1 ? 1.0f : 0.0f)); });

  Tensor y = iota({3, 1}).clone();
  y.set_requires_grad();
  core::sum(y.expand({2, 3, 4})).backward();
  REQUIRE(y.grad().shape() == Shape{3, 1});
  CHECK(y.grad().to_vector() == std::vector<float>{8, 8, 8});
}

// ---------------------------------------------------------------- backward: finite differences

TEST_CASE("view ops backward", "[shape]") {
  const Tensor x = random_tensor({2, 3, 4}, 1, 1.0f, true);
  SECTION("reshape") {
    check_gradients([](const auto& in) { return in[0].reshape({4, -1}); }, {x});
    check_gradients([](const auto& in) { return in[0].transpose(0, 2).reshape({-1, 6}); }, {x});
    check_gradients([](const auto& in) { return in[0].view({6, 4}); }, {x});
  }
  SECTION("permute and transpose") {
    check_gradients([](const auto& in) { return in[0].permute({2, 0, 1}); }, {x});
    check_gradients([](const auto& in) { return in[0].transpose(-1, 0); }, {x});
  }
  SECTION("slice") {
    check_gradients([](const auto& in) { return in[0].slice(2, -3, -1); }, {x});
    check_gradients([](const auto& in) { return in[0].slice(1, 0, 3, 2).slice(2, 1, 4, 2); }, {x});
    check_gradients([](const auto& in) { return core::mul(in[0].slice(2, 0, 2), in[0].slice(2, 2, 4)); }, {x});
  }
  SECTION("expand") {
    const Tensor b = random_tensor({3, 1}, 2, 1.0f, true);
    check_gradients([](const auto& in) { return in[0].expand({2, -1, 5}); }, {b});
  }
  SECTION("unsqueeze and squeeze") {
    check_gradients([](const auto& in) { return in[0].unsqueeze(1).unsqueeze(-1); }, {x});
    check_gradients([](const auto& in) { return in[0].slice(0, 1, 2).squeeze(0); }, {x});
  }
  SECTION("contiguous and clone") {
    check_gradients([](const auto& in) { return in[0].transpose(0, 1).contiguous(); }, {x});
    check_gradients([](const auto& in) { return core::mul(in[0].clone(), in[0]); }, {x});
  }
}

TEST_CASE("concat, stack and split backward", "[shape]") {
  const Tensor a = random_tensor({2, 3}, 3, 1.0f, true);
  const Tensor b = random_tensor({2, 2}, 4, 1.0f, true);
  const Tensor c = random_tensor({2, 3}, 5);  // no grad
  SECTION("concat") {
    check_gradients([](const auto& in) { return core::concat({in[0], in[1], in[2]}, 1); }, {a, b, c});
    check_gradients([](const auto& in) { return core::concat({in[0], in[1], in[0]}, 0); }, {a, c});
  }
  SECTION("stack") {
    check_gradients([](const auto& in) { return core::stack({in[0], in[1], in[0]}, 1); }, {a, c});
  }
  SECTION("split") {
    const Tensor x = random_tensor({4, 5}, 6, 1.0f, true);
    check_gradients(
        [](const auto& in) {
          const auto p = core::split(in[0], std::vector<int64_t>{2, 1, 2}, 1);
          return core::concat({core::mul(p[2], 3.0f), p[0], core::mul(p[0], p[2])}, 1);
        },
        {x});
    check_gradients(
        [](const auto& in) {
          const auto p = core::split(in[0], 3, 0);
          return core::add(p[0].slice(0, 0, 1), p[1]);
        },
        {x});
  }
  SECTION("slices of a computed tensor add into its gradient in place") {
    // The slices' input is a node's output, not a leaf: the second and later
    // slices to run add into the region of the gradient the first one made
    // (Node::backward_into). Disjoint, overlapping and stepped slices, and the
    // sliced tensor also used whole.
    const Tensor x = random_tensor({3, 6}, 7, 1.0f, true);
    check_gradients(
        [](const auto& in) {
          const Tensor y = core::mul(in[0], in[0]);
          const auto p = core::split(y, 2, 1);
          return core::concat({core::mul(p[0], p[2]), p[1], y.slice(1, 1, 5).slice(1, 0, 2),
                               y.slice(1, 0, 6, 3), y.slice(0, 1, 3).slice(1, 0, 2)},
                              0);
        },
        {x});
    check_gradients(
        [](const auto& in) {
          const Tensor y = core::mul(in[0], 2.0f);
          return core::add(core::mul(y, y), core::concat({y.slice(1, 3, 6), y.slice(1, 0, 3)}, 1));
        },
        {x});
  }
}

TEST_CASE("chained shape ops and non-contiguous inputs backward", "[shape]") {
  SECTION("permute -> slice -> reshape -> concat") {
    const Tensor x = random_tensor({2, 3, 4}, 7, 1.0f, true);
    const Tensor y = random_tensor({3, 2}, 8, 1.0f, true);
    check_gradients(
        [](const auto& in) {
          const Tensor p = in[0].permute({2, 0, 1}).slice(0, 1, 4, 2);  // [2, 2, 3]
          return core::concat({p.reshape({-1, 2}), in[1]}, 0);  // [6, 2] ++ [3, 2]
        },
        {x, y});
  }
  SECTION("transposed leaf") {
    const Tensor t = transposed_leaf({3, 4}, 9);
    check_gradients([](const auto& in) { return in[0].reshape({2, 6}); }, {t});
    check_gradients([](const auto& in) { return core::concat({in[0], in[0].slice(1, 1, 3)}, 1); }, {t});
    check_gradients([](const auto& in) { return core::stack({in[0], in[0].contiguous()}, 0); }, {t});
    check_gradients([](const auto& in) { return in[0].unsqueeze(0).expand({2, 3, 4}); }, {t});
  }
  SECTION("strided slice leaf") {
    Tensor s = random_tensor({4, 6}, 10).slice(1, 0, 6, 2);
    s.set_requires_grad();
    check_gradients([](const auto& in) { return in[0].transpose(0, 1).reshape({-1}); }, {s});
    check_gradients([](const auto& in) { return core::split(in[0], 2, 1)[1].squeeze(1); }, {s});
  }
}
