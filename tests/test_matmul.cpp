// matmul and linear against a naive triple loop, their gradients, batch
// broadcasting, transposed/strided operands, and the primitive cache.
#include <catch2/catch.hpp>

#include "core/error.h"
#include "core/onednn.h"
#include "core/ops.h"
#include "gradcheck.h"

using namespace tfm::core;
using tfm::test::check_gradients;
using tfm::test::max_abs_diff;
using tfm::test::random_tensor;
using Catch::Matchers::Contains;

namespace {

// Reference: out[..., i, j] = Σ_k a[..., i, k] b[..., k, j] with batch
// broadcasting, in double, by explicit loops over logical indices.
Tensor naive_matmul(const Tensor& a, const Tensor& b) {
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  const Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  const Shape batch = broadcast_shapes(ba, bb, "naive");
  Shape ea = batch, eb = batch, out_shape = batch;
  ea.insert(ea.end(), {m, k});
  eb.insert(eb.end(), {k, n});
  out_shape.insert(out_shape.end(), {m, n});
  const auto av = a.expand(ea).to_vector(), bv = b.expand(eb).to_vector();
  std::vector<float> out(numel_of(out_shape));
  const int64_t nb = numel_of(batch);
  for (int64_t p = 0; p < nb; ++p)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t q = 0; q < k; ++q) s += static_cast<double>(av[(p * m + i) * k + q]) * bv[(p * k + q) * n + j];
        out[(p * m + i) * n + j] = static_cast<float>(s);
      }
  return from_vector(out, out_shape);
}

}  // namespace

TEST_CASE("matmul equals a naive triple loop", "[matmul]") {
  struct Case {
    Shape a, b;
  };
  const std::vector<Case> cases = {
      {{5, 7}, {7, 3}},            {{1, 1}, {1, 1}},           {{64, 33}, {33, 17}},
      {{4, 5, 7}, {4, 7, 3}},      {{4, 5, 7}, {7, 3}},         {{5, 7}, {4, 7, 3}},
      {{2, 1, 5, 7}, {3, 7, 2}},   {{2, 3, 5, 7}, {1, 3, 7, 2}}};
  uint64_t seed = 10;
  for (const Case& c : cases) {
    Tensor a = random_tensor(c.a, seed++), b = random_tensor(c.b, seed++);
    INFO(shape_str(c.a) << " x " << shape_str(c.b));
    CHECK(max_abs_diff(matmul(a, b), naive_matmul(a, b)) < 1e-4f);
  }
}

TEST_CASE("matmul handles transposed, sliced and permuted operands", "[matmul]") {
  Tensor a = random_tensor({6, 5}, 1), b = random_tensor({4, 5}, 2);
  CHECK(max_abs_diff(matmul(a, b, false, true), naive_matmul(a, b.transpose(0, 1).contiguous())) < 1e-4f);
  CHECK(max_abs_diff(matmul(a, a, true, false), naive_matmul(a.transpose(0, 1).contiguous(), a)) < 1e-4f);
  Tensor c = random_tensor({7, 6}, 7);
  CHECK(max_abs_diff(matmul(a, c, true, true),
                     naive_matmul(a.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())) < 1e-4f);
  // Row-sliced and column-sliced views (non-unit leading stride).
  Tensor big = random_tensor({10, 12}, 3);
  Tensor sub = big.slice(0, 2, 8).slice(1, 1, 6);  // [6, 5] with row stride 12
  CHECK(max_abs_diff(matmul(sub, b, false, true), naive_matmul(sub.contiguous(), b.transpose(0, 1).contiguous())) <
        1e-4f);
  // A view with no unit stride at all (every other column) is copied first.
  Tensor every_other = big.slice(1, 0, 12, 2);  // [10, 6], strides {12, 2}
  Tensor r = random_tensor({6, 3}, 4);
  CHECK(max_abs_diff(matmul(every_other, r), naive_matmul(every_other.contiguous(), r)) < 1e-4f);
  // Batched operands whose batch dims are permuted (attention's [B, T, H, D] -> [B, H, T, D]).
  Tensor q = random_tensor({2, 5, 3, 4}, 5).permute({0, 2, 1, 3});
  Tensor k = random_tensor({2, 5, 3, 4}, 6).permute({0, 2, 1, 3});
  CHECK(max_abs_diff(matmul(q, k, false, true),
                     naive_matmul(q.contiguous(), k.contiguous().transpose(-1, -2).contiguous())) < 1e-4f);
}

TEST_CASE("matmul gradients match finite differences", "[matmul]") {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      INFO("trans_a " << ta << " trans_b " << tb);
      Tensor a = random_tensor(ta ? Shape{4, 3} : Shape{3, 4}, 1, 1.0f, true);
      Tensor b = random_tensor(tb ? Shape{5, 4} : Shape{4, 5}, 2, 1.0f, true);
      check_gradients([=](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); }, {a, b});
    }
  // Batched with a broadcast 2-D weight, and a broadcast batch dim.
  Tensor x = random_tensor({2, 3, 4}, 3, 1.0f, true);
  Tensor w = random_tensor({4, 5}, 4, 1.0f, true);
  check_gradients([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {x, w});
  check_gradients([](const std::vector<Tensor>& in) { return matmul(in[0], in[1], false, true); },
                  {x, random_tensor({6, 4}, 5, 1.0f, true)});
  Tensor p = random_tensor({2, 1, 3, 4}, 6, 1.0f, true);
  Tensor q = random_tensor({3, 4, 2}, 7, 1.0f, true);
  check_gradients([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {p, q});
  // A 2-D left operand shared by a batched right operand.
  check_gradients([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
                  {random_tensor({3, 4}, 8, 1.0f, true), random_tensor({2, 4, 5}, 9, 1.0f, true)});
}

TEST_CASE("linear equals x·Wᵀ + b and its gradients are right", "[matmul]") {
  Tensor x = random_tensor({2, 3, 6}, 1, 1.0f, true);
  Tensor w = random_tensor({4, 6}, 2, 1.0f, true);
  Tensor b = random_tensor({4}, 3, 1.0f, true);
  Tensor ref = add(naive_matmul(x.detach(), w.detach().transpose(0, 1).contiguous()), b.detach());
  CHECK(max_abs_diff(linear(x, w, b), ref) < 1e-4f);
  CHECK(max_abs_diff(linear(x, w), naive_matmul(x.detach(), w.detach().transpose(0, 1).contiguous())) < 1e-4f);
  check_gradients([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  check_gradients([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {x, w});
  // A non-contiguous input (transposed) is handled.
  Tensor xt = random_tensor({6, 5}, 4, 1.0f, true);
  check_gradients([](const std::vector<Tensor>& in) { return linear(in[0].transpose(0, 1), in[1], in[2]); },
                  {xt, w, b});
}

TEST_CASE("the primitive cache is hit on repeated shapes", "[matmul]") {
  onednn::clear_matmul_cache();
  Tensor a = random_tensor({16, 8}, 1), b = random_tensor({8, 4}, 2);
  matmul(a, b);
  auto s1 = onednn::matmul_cache_stats();
  CHECK(s1.misses == 1);
  CHECK(s1.hits == 0);
  for (int i = 0; i < 5; ++i) matmul(random_tensor({16, 8}, 10 + i), b);
  auto s2 = onednn::matmul_cache_stats();
  CHECK(s2.misses == 1);
  CHECK(s2.hits == 5);
  matmul(a, random_tensor({8, 5}, 3));  // new shape -> one more primitive
  auto s3 = onednn::matmul_cache_stats();
  CHECK(s3.misses == 2);
  CHECK(s3.size == 2);
}

TEST_CASE("the primitive cache is bounded and evicts the least recently used", "[matmul]") {
  onednn::clear_matmul_cache();
  const int64_t cap = onednn::matmul_cache_capacity();
  Tensor b = random_tensor({4, 3}, 2);
  Tensor keep = random_tensor({1, 4}, 3);
  matmul(keep, b);  // the shape that stays in use
  for (int64_t m = 2; m <= cap + 10; ++m) {
    matmul(ones({m, 4}), b);
    if (m % 64 == 0) matmul(keep, b);  // recently used: survives
  }
  auto s = onednn::matmul_cache_stats();
  CHECK(s.size == cap);
  CHECK(s.evictions == s.misses - cap);
  const int64_t misses = s.misses;
  matmul(keep, b);
  CHECK(onednn::matmul_cache_stats().misses == misses);  // still cached
  matmul(ones({2, 4}), b);                              // evicted long ago: created again
  CHECK(onednn::matmul_cache_stats().misses == misses + 1);
  onednn::clear_matmul_cache();
}

TEST_CASE("matmul and linear reject bad shapes with a useful message", "[matmul]") {
  REQUIRE_THROWS_WITH(matmul(ones({2, 3}), ones({4, 5})), Contains("matmul") && Contains("[2, 3]") && Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(matmul(ones({3}), ones({3, 2})), Contains("at least 2 dims"));
  REQUIRE_THROWS_WITH(matmul(ones({2, 2, 3}), ones({3, 3, 2})), Contains("broadcast"));
  REQUIRE_THROWS_WITH(linear(ones({2, 3}), ones({4, 5})), Contains("linear") && Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(linear(ones({2, 5}), ones({4, 5}), ones({3})), Contains("bias"));
}
