// Optimizers against hand-computed updates, parameter groups, schedules at
// chosen steps against their formulas, gradient clipping, and the
// equivalence of gradient accumulation with one large batch.
#include <catch2/catch.hpp>

#include <cmath>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

using namespace tfm;
using core::Tensor;
using Catch::Matchers::Contains;

namespace {

Tensor param(std::vector<float> v) {
  Tensor p = core::from_vector(v, {static_cast<int64_t>(v.size())});
  p.set_requires_grad();
  return p;
}

void set_grad(Tensor& p, std::vector<float> g) { p.set_grad(core::from_vector(g, p.shape())); }

std::vector<optim::ParamGroup> one_group(Tensor p, float wd = 0.0f) {
  optim::ParamGroup g;
  g.names = {"p"};
  g.params = {p};
  g.weight_decay = wd;
  return {g};
}

}  // namespace

TEST_CASE("SGD with momentum and Nesterov matches the definition", "[optim]") {
  for (bool nesterov : {false, true}) {
    Tensor p = param({1.0f, -2.0f});
    optim::SGD opt(one_group(p, 0.1f), 0.5f, 0.9f, nesterov);
    // Reference in double.
    double x[2] = {1.0, -2.0}, buf[2] = {0, 0};
    const double grads[3][2] = {{0.3, -0.1}, {-0.2, 0.4}, {0.05, 0.05}};
    for (int s = 0; s < 3; ++s) {
      set_grad(p, {static_cast<float>(grads[s][0]), static_cast<float>(grads[s][1])});
      opt.step();
      for (int i = 0; i < 2; ++i) {
        double d = grads[s][i] + 0.1 * x[i];
        buf[i] = s == 0 ? d : 0.9 * buf[i] + d;
        d = nesterov ? d + 0.9 * buf[i] : buf[i];
        x[i] -= 0.5 * d;
      }
      const auto got = p.to_vector();
      CHECK(got[0] == Approx(x[0]).epsilon(1e-6));
      CHECK(got[1] == Approx(x[1]).epsilon(1e-6));
    }
  }
}

TEST_CASE("Adam and AdamW match the definition", "[optim]") {
  for (bool decoupled : {false, true}) {
    INFO("decoupled " << decoupled);
    Tensor p = param({0.5f, -1.5f, 2.0f});
    optim::Adam opt(one_group(p, 0.01f), 0.1f, 0.9f, 0.99f, 1e-8f, decoupled);
    CHECK(std::string(opt.name()) == (decoupled ? "adamw" : "adam"));
    double x[3] = {0.5, -1.5, 2.0}, m[3] = {0, 0, 0}, v[3] = {0, 0, 0};
    for (int t = 1; t <= 4; ++t) {
      const double g[3] = {0.1 * t, -0.3, 0.2 / t};
      set_grad(p, {static_cast<float>(g[0]), static_cast<float>(g[1]), static_cast<float>(g[2])});
      opt.step();
      for (int i = 0; i < 3; ++i) {
        double gi = g[i];
        if (decoupled) {
          x[i] *= 1.0 - 0.1 * 0.01;
        } else {
          gi += 0.01 * x[i];
        }
        m[i] = 0.9 * m[i] + 0.1 * gi;
        v[i] = 0.99 * v[i] + 0.01 * gi * gi;
        const double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.99, t));
        x[i] -= 0.1 * mh / (std::sqrt(vh) + 1e-8);
      }
      const auto got = p.to_vector();
      for (int i = 0; i < 3; ++i) CHECK(got[i] == Approx(x[i]).epsilon(1e-5));
    }
    CHECK(opt.steps() == 4);
  }
}

TEST_CASE("parameters without a gradient are left alone", "[optim]") {
  Tensor a = param({1.0f}), b = param({2.0f});
  optim::ParamGroup g;
  g.names = {"a", "b"};
  g.params = {a, b};
  optim::SGD opt({g}, 1.0f);
  set_grad(a, {0.5f});
  opt.step();
  CHECK(a.item() == 0.5f);
  CHECK(b.item() == 2.0f);
  opt.zero_grad();
  CHECK_FALSE(a.grad().defined());
}

TEST_CASE("decay groups exclude vectors and optionally embeddings", "[optim]") {
  std::vector<std::pair<std::string, Tensor>> named = {
      {"tok_emb.weight", core::zeros({5, 2})}, {"fc.weight", core::zeros({2, 2})}, {"fc.bias", core::zeros({2})},
      {"norm.weight", core::zeros({2})}};
  auto groups = optim::decay_groups(named, 0.1f);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].names == std::vector<std::string>{"tok_emb.weight", "fc.weight"});
  CHECK(groups[0].weight_decay == 0.1f);
  CHECK(groups[1].names == std::vector<std::string>{"fc.bias", "norm.weight"});
  CHECK(groups[1].weight_decay == 0.0f);
  groups = optim::decay_groups(named, 0.1f, true, true);
  CHECK(groups[0].names == std::vector<std::string>{"fc.weight"});
}

TEST_CASE("optimizer state round-trips", "[optim]") {
  Tensor p = param({1.0f, 2.0f});
  optim::Adam a(one_group(p), 0.1f, 0.9f, 0.999f, 1e-8f, true);
  set_grad(p, {0.1f, 0.2f});
  a.step();
  const auto st = a.state();
  REQUIRE(st.size() == 2);
  CHECK(st[0].first == "exp_avg/p");
  CHECK(st[1].first == "exp_avg_sq/p");
  Tensor q = param({1.0f, 2.0f});
  optim::Adam b(one_group(q), 0.1f, 0.9f, 0.999f, 1e-8f, true);
  b.load_state(st, a.steps());
  {
    core::NoGradGuard g;
    q.copy_(p);
  }
  set_grad(p, {-0.3f, 0.1f});
  set_grad(q, {-0.3f, 0.1f});
  a.step();
  b.step();
  CHECK(p.to_vector() == q.to_vector());
  std::vector<std::pair<std::string, Tensor>> bad = {{"exp_avg/p", core::zeros({3})}};
  REQUIRE_THROWS_WITH(b.load_state(bad, 1), Contains("exp_avg/p") && Contains("[3]"));
}

TEST_CASE("schedules equal their formulas", "[optim]") {
  using optim::Schedule;
  using optim::ScheduleKind;
  Schedule c{ScheduleKind::cosine, 1e-3f, 1e-4f, 100, 2000};
  CHECK(c.lr_at(1) == Approx(1e-5));
  CHECK(c.lr_at(50) == Approx(5e-4));
  CHECK(c.lr_at(100) == Approx(1e-3));
  CHECK(c.lr_at(1050) == Approx(1e-4 + 0.9e-3 * 0.5));  // half way: cos(π/2) = 0
  CHECK(c.lr_at(575) == Approx(1e-4 + 0.9e-3 * 0.5 * (1 + std::cos(M_PI * 0.25))));
  CHECK(c.lr_at(2000) == Approx(1e-4));
  CHECK(c.lr_at(5000) == Approx(1e-4));
  Schedule n{ScheduleKind::inverse_sqrt, 2e-3f, 0.0f, 400, 0};
  CHECK(n.lr_at(100) == Approx(2e-3 * 0.25));
  CHECK(n.lr_at(400) == Approx(2e-3));
  CHECK(n.lr_at(1600) == Approx(2e-3 * 0.5));
  Schedule l{ScheduleKind::linear, 1.0f, 0.0f, 10, 110};
  CHECK(l.lr_at(5) == Approx(0.5));
  CHECK(l.lr_at(60) == Approx(0.5));
  CHECK(l.lr_at(110) == Approx(0.0));
  Schedule k{ScheduleKind::constant, 3e-4f, 0.0f, 0, 0};
  CHECK(k.lr_at(12345) == Approx(3e-4));
  REQUIRE_THROWS_WITH(optim::parse_schedule("cosin"), Contains("cosine"));
  REQUIRE_THROWS_WITH(optim::validate(Schedule{ScheduleKind::cosine, 1e-3f, 0.0f, 100, 50}), Contains("warmup"));
}

TEST_CASE("clip_grad_norm scales to the global norm", "[optim]") {
  Tensor a = param({3.0f, 0.0f}), b = param({0.0f, 4.0f});
  set_grad(a, {3.0f, 0.0f});
  set_grad(b, {0.0f, 4.0f});
  CHECK(optim::grad_norm({a, b}) == Approx(5.0));
  const float before = optim::clip_grad_norm({a, b}, 1.0f);
  CHECK(before == Approx(5.0));
  CHECK(optim::grad_norm({a, b}) == Approx(1.0).epsilon(1e-5));
  CHECK(a.grad().to_vector()[0] == Approx(0.6).epsilon(1e-5));
  // Below the threshold nothing changes.
  const float again = optim::clip_grad_norm({a, b}, 10.0f);
  CHECK(again == Approx(1.0).epsilon(1e-5));
  CHECK(b.grad().to_vector()[1] == Approx(0.8).epsilon(1e-5));
}

TEST_CASE("accumulated micro-batch gradients equal the large-batch gradient", "[optim]") {
  Tensor w = tfm::test::random_tensor({3, 4}, 1, 1.0f, true);
  Tensor x = tfm::test::random_tensor({8, 4}, 2);
  Tensor y = core::from_vector(std::vector<int32_t>{0, 1, 2, 0, 1, 2, 0, 1}, {8});
  core::cross_entropy(core::linear(x, w), y).backward();
  const Tensor full = w.grad().clone();
  w.zero_grad();
  // Two micro-batches of 4, each loss scaled by 1/2 (the number of micro-batches).
  for (int k = 0; k < 2; ++k) {
    Tensor xs = x.slice(0, 4 * k, 4 * k + 4), ys = y.slice(0, 4 * k, 4 * k + 4);
    core::mul(core::cross_entropy(core::linear(xs, w), ys.contiguous()), 0.5f).backward();
  }
  CHECK(tfm::test::max_abs_diff(w.grad(), full) < 1e-6f);
}

TEST_CASE("bad optimizer arguments throw", "[optim]") {
  Tensor p = param({1.0f});
  REQUIRE_THROWS_WITH(optim::SGD(one_group(p), -1.0f), Contains("learning rate"));
  REQUIRE_THROWS_WITH(optim::Adam(one_group(p), 0.1f, 1.0f), Contains("betas"));
  REQUIRE_THROWS_WITH(optim::SGD(one_group(p), 0.1f, 0.0f, true), Contains("Nesterov"));
  REQUIRE_THROWS_WITH(optim::clip_grad_norm({p}, 0.0f), Contains("max_norm"));
}

TEST_CASE("multi-tensor AdamW over pieces of many parameters matches the per-element definition", "[optim]") {
  // Sizes straddle the piece length so that parameters split into several
  // pieces, one ends mid-piece, and tiny ones share the region.
  const std::vector<int64_t> sizes = {3, optim::kUpdateChunk + 5, 2 * optim::kUpdateChunk, 17};
  auto run = [&](int threads, std::vector<std::vector<double>>& ref) {
    core::set_num_threads(threads);
    core::Generator gen(5);
    std::vector<Tensor> ps;
    optim::ParamGroup decay, plain;
    decay.weight_decay = 0.1f;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      Tensor p = core::randn({sizes[i]}, gen);
      p.set_requires_grad();
      ps.push_back(p);
      (i % 2 ? plain : decay).names.push_back("p" + std::to_string(i));
      (i % 2 ? plain : decay).params.push_back(p);
    }
    ref.clear();
    for (const Tensor& p : ps) {
      const auto v = p.to_vector();
      ref.emplace_back(v.begin(), v.end());
    }
    std::vector<std::vector<double>> m(ref.size()), v(ref.size());
    for (std::size_t i = 0; i < ref.size(); ++i) m[i].assign(ref[i].size(), 0.0), v[i].assign(ref[i].size(), 0.0);
    optim::Adam opt({decay, plain}, 0.01f, 0.9f, 0.99f, 1e-8f, true);
    for (int t = 1; t <= 3; ++t) {
      for (std::size_t i = 0; i < ps.size(); ++i) {
        Tensor g = core::randn(ps[i].shape(), gen);
        ps[i].set_grad(i == 3 ? core::transpose(g.reshape({1, sizes[i]}), 0, 1).reshape({sizes[i]}) : g);
        const auto gv = g.to_vector();
        const double wd = i % 2 ? 0.0 : 0.1;
        const double bc1 = 1.0 - std::pow(0.9, t), bc2 = 1.0 - std::pow(0.99, t);
        for (std::size_t j = 0; j < gv.size(); ++j) {
          ref[i][j] *= 1.0 - 0.01 * wd;
          m[i][j] = 0.9 * m[i][j] + 0.1 * gv[j];
          v[i][j] = 0.99 * v[i][j] + 0.01 * gv[j] * gv[j];
          ref[i][j] -= 0.01 * (m[i][j] / bc1) / (std::sqrt(v[i][j] / bc2) + 1e-8);
        }
      }
      opt.step();
    }
    std::vector<float> out;
    for (std::size_t i = 0; i < ps.size(); ++i) {
      const auto got = ps[i].to_vector();
      double worst = 0;
      for (std::size_t j = 0; j < got.size(); ++j) worst = std::max(worst, std::abs(got[j] - ref[i][j]));
      INFO("parameter " << i << " threads " << threads);
      CHECK(worst < 2e-6);
      out.insert(out.end(), got.begin(), got.end());
    }
    return out;
  };
  const int before = core::num_threads();
  std::vector<std::vector<double>> ref;
  const std::vector<float> one = run(1, ref), two = run(2, ref);
  core::set_num_threads(before);
  CHECK(one == two);  // bitwise the same whatever the thread count
}

TEST_CASE("clip_grad_norm over pieces matches a double reference and scales strided gradients", "[optim]") {
  core::Generator gen(9);
  std::vector<Tensor> ps;
  double ss = 0;
  for (int64_t n : {int64_t{7}, 3 * optim::kUpdateChunk + 1}) {
    Tensor p = core::zeros({n});
    p.set_requires_grad();
    Tensor g = core::randn({n}, gen);
    for (float x : g.to_vector()) ss += static_cast<double>(x) * x;
    ps.push_back(p);
    ps.back().set_grad(g);
  }
  Tensor q = core::zeros({4, 3});
  q.set_requires_grad();
  Tensor gq = core::randn({3, 4}, gen);
  for (float x : gq.to_vector()) ss += static_cast<double>(x) * x;
  q.set_grad(core::transpose(gq, 0, 1));  // a strided gradient
  ps.push_back(q);
  const std::vector<float> g0 = ps[1].grad().to_vector(), q0 = q.grad().to_vector();
  CHECK(optim::grad_norm(ps) == Approx(std::sqrt(ss)).epsilon(1e-6));
  const float norm = optim::clip_grad_norm(ps, 1.0f);
  CHECK(norm == Approx(std::sqrt(ss)).epsilon(1e-6));
  const double scale = 1.0 / (std::sqrt(ss) + 1e-6);
  const std::vector<float> g1 = ps[1].grad().to_vector(), q1 = q.grad().to_vector();
  for (std::size_t j = 0; j < g1.size(); j += 997) CHECK(g1[j] == Approx(g0[j] * scale).epsilon(1e-5));
  for (std::size_t j = 0; j < q1.size(); ++j) CHECK(q1[j] == Approx(q0[j] * scale).epsilon(1e-5));
  CHECK(optim::grad_norm(ps) == Approx(1.0).epsilon(1e-5));
}
