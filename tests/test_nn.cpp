// Neural-network ops: softmax/log_softmax, layer_norm/rms_norm, embedding,
// cross_entropy, dropout, masked_fill. Forward values are compared with
// reference loops written here (in double); backward with finite differences
// and, where the gradient has a simple closed form, exactly.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/onednn.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "tests/gradcheck.h"

namespace {

namespace core = tfm::core;
using core::Shape;
using core::Tensor;
using Catch::Matchers::Contains;
using tfm::test::check_gradients;
using tfm::test::random_tensor;

constexpr float kInf = std::numeric_limits<float>::infinity();

Tensor i32(const std::vector<int32_t>& v, const Shape& s) { return core::from_vector(v, s); }

// Row-major linear index of `idx` in shape `s`.
int64_t linear(const Shape& s, const std::vector<int64_t>& idx) {
  int64_t k = 0;
  for (std::size_t d = 0; d < s.size(); ++d) k = k * s[d] + idx[d];
  return k;
}

// Reference (log-)softmax over `dim`, in double, in row-major order.
std::vector<double> ref_softmax(const Tensor& x, int64_t dim, bool log_space) {
  const Shape& s = x.shape();
  const std::vector<float> v = x.to_vector();
  std::vector<double> out(v.size());
  const int64_t n = s[dim];
  std::vector<int64_t> idx(s.size(), 0);
  for (std::size_t k = 0; k < v.size(); ++k) {
    // idx is the multi-index of element k; each line along `dim` is handled at its first element.
    int64_t r = static_cast<int64_t>(k);
    for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
      idx[d] = r % s[d];
      r /= s[d];
    }
    if (idx[dim] != 0) continue;
    std::vector<int64_t> at = idx;
    double m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      at[dim] = j;
      m = std::max(m, static_cast<double>(v[linear(s, at)]));
    }
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      at[dim] = j;
      sum += std::exp(v[linear(s, at)] - m);
    }
    for (int64_t j = 0; j < n; ++j) {
      at[dim] = j;
      const double xv = v[linear(s, at)];
      out[linear(s, at)] = log_space ? xv - m - std::log(sum) : std::exp(xv - m) / sum;
    }
  }
  return out;
}

void check_close(const Tensor& got, const std::vector<double>& want, double tol = 1e-5) {
  const std::vector<float> g = got.to_vector();
  REQUIRE(g.size() == want.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    INFO("element " << i << ": got " << g[i] << ", want " << want[i]);
    CHECK(std::fabs(g[i] - want[i]) <= tol * (1.0 + std::fabs(want[i])));
  }
}

// Reference norm over the last dim: layer_norm when center, else rms_norm.
std::vector<double> ref_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool center) {
  const std::vector<float> v = x.to_vector();
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  const std::vector<float> wv = w.defined() ? w.to_vector() : std::vector<float>(cols, 1.0f);
  const std::vector<float> bv = b.defined() ? b.to_vector() : std::vector<float>(cols, 0.0f);
  std::vector<double> out(v.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = v.data() + r * cols;
    double mu = 0, var = 0;
    if (center) {
      for (int64_t j = 0; j < cols; ++j) mu += row[j];
      mu /= cols;
    }
    for (int64_t j = 0; j < cols; ++j) var += (row[j] - mu) * (row[j] - mu);
    var /= cols;
    for (int64_t j = 0; j < cols; ++j) out[r * cols + j] = (row[j] - mu) / std::sqrt(var + eps) * wv[j] + bv[j];
  }
  return out;
}

// Reference cross-entropy in double (log-sum-exp), with ignore_index and smoothing e.
double ref_cross_entropy(const Tensor& logits, const std::vector<int32_t>& t, int32_t ignore, double e) {
  const int64_t n = logits.size(0), c = logits.size(1);
  const std::vector<float> v = logits.to_vector();
  double total = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] == ignore) continue;
    const float* row = v.data() + i * c;
    double m = row[0];
    for (int64_t j = 1; j < c; ++j) m = std::max(m, static_cast<double>(row[j]));
    double s = 0;
    for (int64_t j = 0; j < c; ++j) s += std::exp(row[j] - m);
    const double lse = m + std::log(s);
    double mean_neg_logp = 0;
    for (int64_t j = 0; j < c; ++j) mean_neg_logp += (lse - row[j]) / c;
    total += (1 - e) * (lse - row[t[i]]) + e * mean_neg_logp;
    ++count;
  }
  return total / count;
}

// A leaf that requires grad but is a transposed (non-contiguous) view.
Tensor transposed_leaf(int64_t rows, int64_t cols, uint64_t seed) {
  Tensor t = random_tensor({cols, rows}, seed).transpose(0, 1);
  t.set_requires_grad();
  return t;
}

}  // namespace

// ---------------------------------------------------------------- softmax / log_softmax

TEST_CASE("softmax and log_softmax match a reference over the last and a middle dim", "[nn]") {
  const Tensor x = random_tensor({3, 4, 5}, 1, 3.0f);
  for (int64_t dim : {2, 1, 0}) {
    INFO("dim " << dim);
    const Tensor p = core::softmax(x, dim);
    REQUIRE(p.shape() == x.shape());
    check_close(p, ref_softmax(x, dim, false));
    check_close(core::log_softmax(x, dim), ref_softmax(x, dim, true));
    // Every line along dim sums to 1.
    const Tensor sums = core::sum(p, {dim});
    for (float s : sums.to_vector()) CHECK(s == Approx(1.0f).margin(1e-6));
  }
  check_close(core::softmax(x, -1), ref_softmax(x, 2, false));
  const Tensor xt = x.transpose(0, 2);  // non-contiguous input
  check_close(core::softmax(xt, -1), ref_softmax(xt, 2, false));
  check_close(core::log_softmax(xt, 1), ref_softmax(xt, 1, true));
}

TEST_CASE("softmax stays finite for large values and handles -inf masks", "[nn]") {
  const Tensor big = core::from_vector(std::vector<float>{1000, 999, 0, -1000, 1000, 1000, 1000, 1000}, {2, 4});
  const Tensor p = core::softmax(big), lp = core::log_softmax(big);
  for (float v : p.to_vector()) CHECK(std::isfinite(v));
  for (float v : lp.to_vector()) CHECK(std::isfinite(v));
  check_close(p, ref_softmax(big, 1, false));
  check_close(lp, ref_softmax(big, 1, true));
  CHECK(p.at({1, 2}) == Approx(0.25f));

  // All entries masked to -inf except one.
  const Tensor m = core::from_vector(std::vector<float>{-kInf, 2.5f, -kInf, -kInf}, {1, 4});
  CHECK(core::softmax(m).to_vector() == std::vector<float>{0, 1, 0, 0});
  const std::vector<float> lm = core::log_softmax(m).to_vector();
  CHECK(lm[1] == 0.0f);
  CHECK(lm[0] == -kInf);
  CHECK(lm[3] == -kInf);
}

TEST_CASE("softmax and log_softmax backward", "[nn]") {
  const Tensor x = random_tensor({3, 4, 5}, 2, 1.5f, true);
  for (int64_t dim : {-1, 1, 0}) {
    INFO("dim " << dim);
    check_gradients([dim](const auto& in) { return core::softmax(in[0], dim); }, {x});
    check_gradients([dim](const auto& in) { return core::log_softmax(in[0], dim); }, {x});
  }
  const Tensor t = transposed_leaf(4, 6, 3);
  check_gradients([](const auto& in) { return core::softmax(in[0], -1); }, {t});
  check_gradients([](const auto& in) { return core::log_softmax(in[0], 0); }, {t});

  // A masked softmax (as in attention): masked entries get exactly zero gradient.
  const Tensor mask = core::from_vector(std::vector<float>{1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0}, {3, 4});
  const Tensor y = random_tensor({3, 4}, 4, 1.0f, true);
  check_gradients([&](const auto& in) { return core::softmax(core::masked_fill(in[0], mask, -kInf)); }, {y});
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 4; ++j)
      if (mask.at({i, j}) != 0) CHECK(y.grad().at({i, j}) == 0.0f);
}

// ---------------------------------------------------------------- layer_norm / rms_norm

TEST_CASE("layer_norm and rms_norm forward match a reference loop", "[nn]") {
  const Tensor x = random_tensor({2, 3, 8}, 5, 2.0f);
  const Tensor xs = core::add(x, 3.0f);  // a non-zero mean
  const Tensor w = random_tensor({8}, 6), b = random_tensor({8}, 7);
  const float eps = 1e-5f;
  check_close(core::layer_norm(xs, w, b, eps), ref_norm(xs, w, b, eps, true));
  check_close(core::layer_norm(xs, w, Tensor(), eps), ref_norm(xs, w, Tensor(), eps, true));
  check_close(core::layer_norm(xs, Tensor(), b, eps), ref_norm(xs, Tensor(), b, eps, true));
  check_close(core::layer_norm(xs, Tensor(), Tensor(), 0.5f), ref_norm(xs, Tensor(), Tensor(), 0.5, true));
  check_close(core::rms_norm(xs, w, 1e-6f), ref_norm(xs, w, Tensor(), 1e-6, false));
  check_close(core::rms_norm(xs, Tensor(), 0.25f), ref_norm(xs, Tensor(), Tensor(), 0.25, false));
  const Tensor xt = x.transpose(0, 2).contiguous().transpose(0, 2);  // same values, non-contiguous
  check_close(core::layer_norm(xt, w, b, eps), ref_norm(x, w, b, eps, true));

  // Without weight and bias each row has mean 0 and variance ~1.
  const Tensor y = core::layer_norm(xs, Tensor(), Tensor(), eps);
  for (float m : core::mean(y, {-1}).to_vector()) CHECK(m == Approx(0.0f).margin(1e-6));
  for (float v : core::mean(core::mul(y, y), {-1}).to_vector()) CHECK(v == Approx(1.0f).epsilon(1e-4));

  CHECK_THROWS_WITH(core::layer_norm(x, random_tensor({7}, 8), Tensor()), Contains("layer_norm") && Contains("[7]"));
  CHECK_THROWS_AS(core::rms_norm(x, random_tensor({8, 1}, 9)), tfm::Error);
}

TEST_CASE("layer_norm and rms_norm backward", "[nn]") {
  const Tensor x = random_tensor({4, 6}, 10, 1.0f, true);
  const Tensor w = core::add(random_tensor({6}, 11, 0.5f), 1.0f).set_requires_grad();
  const Tensor b = random_tensor({6}, 12, 1.0f, true);
  SECTION("layer_norm with weight and bias") {
    check_gradients([](const auto& in) { return core::layer_norm(in[0], in[1], in[2]); }, {x, w, b});
  }
  SECTION("layer_norm without weight or bias") {
    check_gradients([](const auto& in) { return core::layer_norm(in[0], Tensor(), Tensor()); }, {x});
    check_gradients([](const auto& in) { return core::layer_norm(in[0], in[1], Tensor()); }, {x, w});
    check_gradients([](const auto& in) { return core::layer_norm(in[0], Tensor(), in[1]); }, {x, b});
  }
  SECTION("only the affine parameters require grad") {
    const Tensor xc = random_tensor({4, 6}, 13);
    check_gradients([](const auto& in) { return core::layer_norm(in[0], in[1], in[2]); }, {xc, w, b});
  }
  SECTION("rms_norm") {
    check_gradients([](const auto& in) { return core::rms_norm(in[0], in[1]); }, {x, w});
    check_gradients([](const auto& in) { return core::rms_norm(in[0], Tensor()); }, {x});
  }
  SECTION("non-contiguous input") {
    const Tensor t = transposed_leaf(5, 6, 14);
    check_gradients([](const auto& in) { return core::layer_norm(in[0], in[1], in[2]); }, {t, w, b});
    check_gradients([](const auto& in) { return core::rms_norm(in[0], in[1]); }, {t, w});
  }
  SECTION("large input (multi-threaded weight-gradient reduction)") {
    const Tensor xl = random_tensor({256, 128}, 15, 1.0f, true);
    const Tensor wl = random_tensor({128}, 16, 1.0f, true), bl = random_tensor({128}, 17, 1.0f, true);
    tfm::test::GradCheckOptions opt;
    opt.max_elements = 32;  // each evaluation is a full forward over 32k elements
    check_gradients([](const auto& in) { return core::layer_norm(in[0], in[1], in[2]); }, {xl, wl, bl}, opt);
    check_gradients([](const auto& in) { return core::rms_norm(in[0], in[1]); }, {xl, wl}, opt);
  }
  SECTION("weight and bias gradients over many rows match sums in double") {
    // 5000 rows: the per-thread partials are gathered in blocks of rows and
    // the blocks summed in double; a float running sum over the rows would
    // drift well past the tolerance for the bias (a column sum of g, here
    // offset by 3 so that the sum is large and cancellation-free).
    const int64_t rows = 5000, cols = 40;
    const Tensor xl = random_tensor({rows, cols}, 18, 1.0f, true);
    const Tensor wl = random_tensor({cols}, 19, 1.0f, true), bl = random_tensor({cols}, 20, 1.0f, true);
    const Tensor g = core::add(random_tensor({rows, cols}, 21), 3.0f);
    core::layer_norm(xl, wl, bl).backward(g);
    const std::vector<float> xv = xl.to_vector(), gv = g.to_vector();
    std::vector<double> dw(cols, 0.0), db(cols, 0.0), dw_abs(cols, 0.0), db_abs(cols, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = xv.data() + r * cols;
      double mu = 0, var = 0;
      for (int64_t j = 0; j < cols; ++j) mu += xr[j];
      mu /= cols;
      for (int64_t j = 0; j < cols; ++j) var += (xr[j] - mu) * (xr[j] - mu);
      const double rstd = 1.0 / std::sqrt(var / cols + 1e-5);
      for (int64_t j = 0; j < cols; ++j) {
        const double gw = gv[r * cols + j] * (xr[j] - mu) * rstd;
        dw[j] += gw, dw_abs[j] += std::fabs(gw);
        db[j] += gv[r * cols + j], db_abs[j] += std::fabs(gv[r * cols + j]);
      }
    }
    // Each term is a float product (relative error ~1e-7), so the error
    // allowed scales with the sum of the terms' magnitudes, not the sum.
    const std::vector<float> gw = wl.grad().to_vector(), gb = bl.grad().to_vector();
    for (int64_t j = 0; j < cols; ++j) {
      INFO("column " << j << ": dw " << gw[j] << " (want " << dw[j] << "), db " << gb[j] << " (want " << db[j] << ")");
      CHECK(std::fabs(gw[j] - dw[j]) <= 2e-7 * dw_abs[j]);
      CHECK(std::fabs(gb[j] - db[j]) <= 2e-7 * db_abs[j]);
    }
  }
}

// ---------------------------------------------------------------- embedding

TEST_CASE("embedding gathers rows", "[nn]") {
  const Tensor w = core::arange(15).reshape({5, 3});
  const std::vector<int32_t> idx{4, 0, 2, 2, 1, 4};
  const Tensor out = core::embedding(w, i32(idx, {2, 3}));
  REQUIRE(out.shape() == Shape{2, 3, 3});
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 3; ++k) CHECK(out.at({i, j, k}) == w.at({idx[i * 3 + j], k}));
  // Non-contiguous weight and indices.
  const Tensor wt = core::arange(15).reshape({3, 5}).transpose(0, 1);
  const Tensor it = i32(idx, {3, 2}).transpose(0, 1);  // [[4, 2, 1], [0, 2, 4]]
  const Tensor o2 = core::embedding(wt, it);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 3; ++k) CHECK(o2.at({i, j, k}) == wt.at({idx[j * 2 + i], k}));
}

TEST_CASE("embedding backward scatter-adds repeated indices", "[nn]") {
  Tensor w = core::zeros({5, 3});
  w.set_requires_grad();
  const std::vector<int32_t> idx{1, 3, 1, 1, 0};
  const Tensor seed = core::arange(15).reshape({5, 3});  // integer-valued: sums are exact
  core::embedding(w, i32(idx, {5})).backward(seed);
  const Tensor g = w.grad();
  REQUIRE(g.shape() == Shape{5, 3});
  for (int64_t k = 0; k < 3; ++k) {
    CHECK(g.at({0, k}) == seed.at({4, k}));
    CHECK(g.at({1, k}) == seed.at({0, k}) + seed.at({2, k}) + seed.at({3, k}));
    CHECK(g.at({2, k}) == 0.0f);
    CHECK(g.at({3, k}) == seed.at({1, k}));
    CHECK(g.at({4, k}) == 0.0f);
  }

  // Large enough for the multi-threaded path (threads own column ranges).
  const int64_t n = 600, dim = 96, vocab = 7;
  std::vector<int32_t> big(n);
  for (int64_t i = 0; i < n; ++i) big[i] = static_cast<int32_t>((i * i) % vocab);
  Tensor wb = core::zeros({vocab, dim});
  wb.set_requires_grad();
  std::vector<float> sv(n * dim);
  for (int64_t i = 0; i < n * dim; ++i) sv[i] = static_cast<float>((i * 7) % 11) - 5.0f;
  core::embedding(wb, i32(big, {n})).backward(core::from_vector(sv, {n, dim}));
  std::vector<float> want(vocab * dim, 0.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < dim; ++k) want[big[i] * dim + k] += sv[i * dim + k];
  CHECK(wb.grad().to_vector() == want);

  const Tensor wr = random_tensor({6, 4}, 18, 1.0f, true);
  const Tensor ir = i32({5, 1, 5, 0, 3, 5}, {2, 3});
  check_gradients([&](const auto& in) { return core::embedding(in[0], ir); }, {wr});
}

TEST_CASE("embedding rejects out-of-range indices", "[nn]") {
  const Tensor w = core::zeros({5, 3});
  CHECK_THROWS_WITH(core::embedding(w, i32({0, 7, 1}, {3})), Contains("embedding") && Contains("7") && Contains("5"));
  CHECK_THROWS_WITH(core::embedding(w, i32({5}, {1})), Contains("index 5") && Contains("vocabulary of 5"));
  CHECK_THROWS_AS(core::embedding(w, i32({-1}, {1})), tfm::Error);
  CHECK_THROWS_AS(core::embedding(w, core::zeros({2})), tfm::Error);  // f32 indices
}

// ---------------------------------------------------------------- cross_entropy

TEST_CASE("cross_entropy forward matches a double-precision reference", "[nn]") {
  const Tensor logits = random_tensor({6, 5}, 20, 3.0f);
  const std::vector<int32_t> t{0, 4, 2, -100, 1, 3};
  const Tensor tt = i32(t, {6});
  SECTION("plain, with ignored rows excluded from the mean") {
    const Tensor loss = core::cross_entropy(logits, tt);
    CHECK(loss.dim() == 0);
    CHECK(loss.item() == Approx(ref_cross_entropy(logits, t, -100, 0.0)).epsilon(1e-5));
  }
  SECTION("label smoothing 0.1") {
    CHECK(core::cross_entropy(logits, tt, -100, 0.1f).item() ==
          Approx(ref_cross_entropy(logits, t, -100, 0.1)).epsilon(1e-5));
  }
  SECTION("custom ignore_index") {
    const std::vector<int32_t> t2{0, 4, 2, 2, 1, 3};
    CHECK(core::cross_entropy(logits, i32(t2, {6}), 2).item() == Approx(ref_cross_entropy(logits, t2, 2, 0.0)).epsilon(1e-5));
  }
  SECTION("large logits and non-contiguous input") {
    const Tensor big = core::mul(random_tensor({5, 6}, 21), 500.0f).transpose(0, 1);
    const std::vector<int32_t> t3{0, 1, 2, 3, 4, 0};
    const float l = core::cross_entropy(big, i32(t3, {6}), -100, 0.2f).item();
    CHECK(std::isfinite(l));
    CHECK(l == Approx(ref_cross_entropy(big, t3, -100, 0.2)).epsilon(1e-5));
  }
}

TEST_CASE("cross_entropy backward", "[nn]") {
  const Tensor logits = random_tensor({6, 5}, 22, 2.0f, true);
  const Tensor tt = i32({0, 4, 2, -100, 1, 3}, {6});
  for (float e : {0.0f, 0.1f}) {
    INFO("label_smoothing " << e);
    check_gradients([&](const auto& in) { return core::cross_entropy(in[0], tt, -100, e); }, {logits});
    for (int64_t j = 0; j < 5; ++j) CHECK(logits.grad().at({3, j}) == 0.0f);  // the ignored row
  }
  const Tensor t = transposed_leaf(6, 5, 23);
  check_gradients([&](const auto& in) { return core::cross_entropy(in[0], tt, -100, 0.1f); }, {t});
}

TEST_CASE("cross_entropy rejects bad targets", "[nn]") {
  const Tensor logits = random_tensor({3, 5}, 24);
  CHECK_THROWS_WITH(core::cross_entropy(logits, i32({0, 5, 1}, {3})), Contains("cross_entropy") && Contains("target 5"));
  CHECK_THROWS_AS(core::cross_entropy(logits, i32({0, -1, 1}, {3})), tfm::Error);
  CHECK_THROWS_AS(core::cross_entropy(logits, i32({0, 1}, {2})), tfm::Error);
  CHECK_THROWS_AS(core::cross_entropy(logits, core::zeros({3})), tfm::Error);  // f32 targets
  CHECK_THROWS_AS(core::cross_entropy(logits, i32({0, 1, 2}, {3}), -100, 1.5f), tfm::Error);
}

// ---------------------------------------------------------------- linear_cross_entropy

namespace {
// The composed reference: cross_entropy(linear(x, w, b)), its loss and the
// gradients of x, w and b under an upstream gradient `up`.
struct XentResult {
  float loss;
  std::vector<float> dx, dw, db;
};
XentResult xent_result(bool fused, const Tensor& x0, const Tensor& w0, const Tensor& b0, const Tensor& t,
                       int32_t ignore, float eps, float up) {
  const Tensor x = x0.detach().clone().set_requires_grad(), w = w0.detach().clone().set_requires_grad();
  const Tensor b = b0.defined() ? b0.detach().clone().set_requires_grad() : Tensor();
  const Tensor loss = fused ? core::linear_cross_entropy(x, w, b, t, ignore, eps)
                            : core::cross_entropy(core::linear(x, w, b), t, ignore, eps);
  core::mul(loss, up).backward();
  return {loss.item(), x.grad().to_vector(), w.grad().to_vector(), b.defined() ? b.grad().to_vector() : std::vector<float>{}};
}
void check_vectors_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const char* what) {
  REQUIRE(got.size() == want.size());
  double scale = 0;
  for (float v : want) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO(what << " element " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK(std::fabs(got[i] - want[i]) <= tol * scale);
  }
}
}  // namespace

TEST_CASE("linear_cross_entropy equals cross_entropy of linear, loss and gradients", "[nn]") {
  struct Case {
    const char* name;
    int64_t n, d, c;
    bool bias;
    int ignore_every;  // every k-th row ignored (0: none)
    float eps, up;
  };
  // 20000 classes give chunks of 128 rows: 700 rows are six chunks over two
  // threads (each thread's weight gradient accumulated over three), with
  // ignored rows gathered and scattered; 67 classes give one chunk.
  const Case cases[] = {{"small, no bias, nothing ignored", 12, 8, 5, false, 0, 0.0f, 1.0f},
                        {"bias, ignored rows, smoothing", 13, 8, 7, true, 3, 0.1f, 1.0f},
                        {"upstream gradient 2.5", 9, 6, 4, true, 4, 0.2f, 2.5f},
                        {"many chunks on two threads", 700, 24, 20000, true, 5, 0.1f, 1.0f},
                        {"many chunks, nothing ignored", 700, 16, 20000, false, 0, 0.0f, 0.5f},
                        {"small vocabulary, one chunk", 768, 32, 67, true, 0, 0.0f, 1.0f}};
  for (const Case& k : cases) {
    INFO(k.name);
    const Tensor x = random_tensor({k.n, k.d}, 40, 1.0f);
    const Tensor w = random_tensor({k.c, k.d}, 41, 0.5f);
    const Tensor b = k.bias ? random_tensor({k.c}, 42, 0.5f) : Tensor();
    std::vector<int32_t> tv(static_cast<std::size_t>(k.n));
    for (int64_t i = 0; i < k.n; ++i)
      tv[static_cast<std::size_t>(i)] = k.ignore_every && i % k.ignore_every == 1 ? -100 : static_cast<int32_t>((i * 7 + 3) % k.c);
    const Tensor t = i32(tv, {k.n});
    const XentResult got = xent_result(true, x, w, b, t, -100, k.eps, k.up);
    const XentResult want = xent_result(false, x, w, b, t, -100, k.eps, k.up);
    CHECK(got.loss == Approx(want.loss).epsilon(1e-5));
    check_vectors_close(got.dx, want.dx, 1e-4, "dx");
    check_vectors_close(got.dw, want.dw, 1e-4, "dw");
    check_vectors_close(got.db, want.db, 1e-4, "db");
    if (k.ignore_every) {  // ignored rows get exactly zero
      for (int64_t i = 1; i < k.n; i += k.ignore_every)
        for (int64_t j = 0; j < k.d; ++j) CHECK(got.dx[static_cast<std::size_t>(i * k.d + j)] == 0.0f);
    }
    tfm::core::NoGradGuard no_grad;  // the loss alone (evaluation) is the same
    CHECK(core::linear_cross_entropy(x, w, b, t, -100, k.eps).item() == Approx(want.loss).epsilon(1e-5));
  }
}

TEST_CASE("linear_cross_entropy runs few product shapes for many row counts", "[nn]") {
  // Each distinct product shape is a JIT-compiled oneDNN primitive kept in
  // the cache; rows are run in multiples of 16, so 64 row counts (100..163)
  // give 5 padded sizes: at most 5 sizes x 3 products x 2 thread parts.
  const Tensor w = random_tensor({4000, 8}, 53, 0.5f, true);
  core::onednn::clear_matmul_cache();
  for (int64_t n = 100; n < 164; ++n) {
    const Tensor x = random_tensor({n, 8}, 54, 1.0f, true);
    std::vector<int32_t> tv(static_cast<std::size_t>(n));
    for (int64_t i = 0; i < n; ++i) tv[static_cast<std::size_t>(i)] = static_cast<int32_t>(i * 13 % 4000);
    core::linear_cross_entropy(x, w, Tensor(), i32(tv, {n})).backward();
  }
  CHECK(core::onednn::matmul_cache_stats().misses <= 30);
}

TEST_CASE("linear_cross_entropy backward by finite differences", "[nn]") {
  const Tensor x = random_tensor({7, 5}, 43, 1.0f, true);
  const Tensor w = random_tensor({6, 5}, 44, 0.7f, true);
  const Tensor b = random_tensor({6}, 45, 0.5f, true);
  const Tensor t = i32({0, 5, -100, 2, 3, 1, 4}, {7});
  check_gradients([&](const auto& in) { return core::linear_cross_entropy(in[0], in[1], in[2], t, -100, 0.1f); },
                  {x, w, b});
  // Only the weight requires grad (a frozen input), and a non-contiguous input.
  const Tensor xt = transposed_leaf(7, 5, 46);
  check_gradients([&](const auto& in) { return core::linear_cross_entropy(in[0], in[1], Tensor(), t); }, {xt, w});
}

TEST_CASE("linear_cross_entropy with every target ignored is 0 with zero gradients", "[nn]") {
  const Tensor x = random_tensor({4, 3}, 47, 1.0f, true), w = random_tensor({5, 3}, 48, 1.0f, true);
  const Tensor loss = core::linear_cross_entropy(x, w, Tensor(), i32({-100, -100, -100, -100}, {4}));
  CHECK(loss.item() == 0.0f);
  loss.backward();
  for (float v : x.grad().to_vector()) CHECK(v == 0.0f);
  for (float v : w.grad().to_vector()) CHECK(v == 0.0f);
}

TEST_CASE("linear_cross_entropy rejects bad arguments", "[nn]") {
  const Tensor x = random_tensor({3, 4}, 49), w = random_tensor({5, 4}, 50);
  CHECK_THROWS_WITH(core::linear_cross_entropy(x, w, Tensor(), i32({0, 5, 1}, {3})),
                    Contains("linear_cross_entropy") && Contains("target 5"));
  CHECK_THROWS_WITH(core::linear_cross_entropy(x, random_tensor({5, 3}, 51), Tensor(), i32({0, 1, 2}, {3})),
                    Contains("[3, 4]") && Contains("[5, 3]"));
  CHECK_THROWS_AS(core::linear_cross_entropy(x, w, random_tensor({4}, 52), i32({0, 1, 2}, {3})), tfm::Error);
  CHECK_THROWS_AS(core::linear_cross_entropy(x, w, Tensor(), i32({0, 1}, {2})), tfm::Error);
  CHECK_THROWS_AS(core::linear_cross_entropy(x, w, Tensor(), i32({0, 1, 2}, {3}), -100, -0.5f), tfm::Error);
}

// ---------------------------------------------------------------- dropout

TEST_CASE("dropout is the identity when p = 0 or not training", "[nn]") {
  const Tensor x = random_tensor({4, 7}, 30);
  core::Generator gen(1);
  CHECK(core::dropout(x, 0.0f, true, gen).to_vector() == x.to_vector());
  CHECK(core::dropout(x, 0.5f, false, gen).to_vector() == x.to_vector());
  CHECK(core::dropout(x, 1.0f, true, gen).to_vector() == std::vector<float>(28, 0.0f));
  CHECK_THROWS_AS(core::dropout(x, 1.5f, true, gen), tfm::Error);
  CHECK_THROWS_AS(core::dropout(x, -0.1f, true, gen), tfm::Error);
}

TEST_CASE("dropout keeps a 1-p fraction, scaled by 1/(1-p)", "[nn]") {
  const int64_t n = 1000000;
  const Tensor x = core::ones({n});
  for (float p : {0.1f, 0.5f, 0.8f}) {
    INFO("p " << p);
    core::Generator gen(42);
    const std::vector<float> y = core::dropout(x, p, true, gen).to_vector();
    const float scale = 1.0f / (1.0f - p);
    int64_t kept = 0, bad = 0;
    for (float v : y) {
      if (v != 0.0f) ++kept;
      if (v != 0.0f && v != scale) ++bad;
    }
    CHECK(bad == 0);
    CHECK(std::fabs(static_cast<double>(kept) / n - (1.0 - p)) < 0.01);
  }
}

TEST_CASE("dropout masks are reproducible and independent of thread count", "[nn]") {
  const Tensor x = random_tensor({1000, 1000}, 31);
  const float p = 0.3f;
  core::Generator g1(7), g2(7);
  const Tensor a = core::dropout(x, p, true, g1);
  CHECK(core::dropout(x, p, true, g2).to_vector() == a.to_vector());
  CHECK(g1.offset() == g2.offset());
  CHECK(g1.offset() > 0);
  // The generator advanced: the next mask differs.
  CHECK(core::dropout(x, p, true, g1).to_vector() != a.to_vector());
  // The same (seed, offset) restored reproduces the mask.
  core::Generator g3(0);
  g3.set_state(7, 0);
  CHECK(core::dropout(x, p, true, g3).to_vector() == a.to_vector());

  const int prev = core::num_threads();
  core::set_num_threads(1);
  core::Generator s1(99);
  const std::vector<float> one = core::dropout(x, p, true, s1).to_vector();
  core::set_num_threads(2);
  core::Generator s2(99);
  const std::vector<float> two = core::dropout(x, p, true, s2).to_vector();
  core::set_num_threads(prev);
  CHECK(one == two);

  // A non-contiguous input gets the mask in logical order.
  const Tensor xt = x.slice(0, 0, 40).transpose(0, 1);
  core::Generator h1(5), h2(5);
  CHECK(core::dropout(xt, p, true, h1).to_vector() == core::dropout(xt.contiguous(), p, true, h2).to_vector());
}

TEST_CASE("dropout gradient equals mask * scale", "[nn]") {
  const float p = 0.4f, scale = 1.0f / (1.0f - p);
  Tensor x = random_tensor({8, 50}, 32, 1.0f, true);
  core::Generator gen(123);
  const Tensor y = core::dropout(x, p, true, gen);
  core::sum(y).backward();
  const std::vector<float> yv = y.to_vector(), gv = x.grad().to_vector();
  int64_t kept = 0;
  for (std::size_t i = 0; i < yv.size(); ++i) {
    CHECK(gv[i] == (yv[i] != 0.0f ? scale : 0.0f));
    kept += yv[i] != 0.0f;
  }
  CHECK(kept > 0);
  CHECK(kept < static_cast<int64_t>(yv.size()));

  check_gradients(
      [p](const auto& in) {
        core::Generator g(123);  // fresh each call: every evaluation uses the same mask
        return core::dropout(in[0], p, true, g);
      },
      {x});
}

// ---------------------------------------------------------------- masked_fill

TEST_CASE("masked_fill sets masked values and blocks their gradient", "[nn]") {
  Tensor x = random_tensor({3, 4}, 40, 1.0f, true);
  const Tensor row_mask = core::from_vector(std::vector<float>{0, 1, 0, 2}, {4});  // broadcast over rows
  const Tensor full_mask = core::from_vector(std::vector<float>{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, -1, 0}, {3, 4});
  for (const Tensor& mask : {row_mask, full_mask}) {
    const Tensor y = core::masked_fill(x, mask, -7.5f);
    REQUIRE(y.shape() == x.shape());
    const Tensor mb = mask.expand({3, 4});
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 4; ++j) CHECK(y.at({i, j}) == (mb.at({i, j}) != 0 ? -7.5f : x.at({i, j})));

    x.zero_grad();
    core::sum(core::masked_fill(x, mask, 3.0f)).backward();
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 4; ++j) CHECK(x.grad().at({i, j}) == (mb.at({i, j}) != 0 ? 0.0f : 1.0f));
    check_gradients([&](const auto& in) { return core::masked_fill(in[0], mask, 3.0f); }, {x});
  }
  CHECK_THROWS_AS(core::masked_fill(x, core::zeros({3}), 0.0f), tfm::Error);
}
