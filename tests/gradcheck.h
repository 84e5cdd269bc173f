// Test helpers: a central finite-difference gradient checker shared by every
// op test, and small tensor comparison utilities.
//
// check_gradients(f, inputs) builds the scalar L = Σ f(inputs) ∘ W with a
// fixed random W, back-propagates it, and compares every input that
// requires grad against (L(x+ε) − L(x−ε)) / 2ε, evaluated with L summed in
// double. Inputs may be views (transposed, sliced, broadcast-expanded
// storage is perturbed through their strides).
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <sstream>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace tfm::test {

using core::Shape;
using core::Tensor;

struct GradCheckOptions {
  float eps = 1e-2f;
  float rtol = 2e-2f;
  float atol = 2e-3f;
  int64_t max_elements = 200;  // per input; larger inputs are sampled with a stride
};

// Offset in elements of the logical element `linear` (row-major) of t.
inline int64_t element_offset(const Tensor& t, int64_t linear) {
  int64_t off = t.offset();
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    const int64_t n = t.shape()[d];
    off += (linear % n) * t.strides()[d];
    linear /= n;
  }
  return off;
}

inline double weighted_sum(const Tensor& out, const std::vector<float>& w) {
  const auto v = out.to_vector();
  double s = 0;
  for (std::size_t i = 0; i < v.size(); ++i) s += static_cast<double>(v[i]) * w[i];
  return s;
}

inline void check_gradients(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                            GradCheckOptions opt = {}) {
  for (Tensor& t : inputs)
    if (t.requires_grad()) t.zero_grad();
  Tensor out = f(inputs);
  core::Generator gen(1234);
  const Tensor w = core::randn(out.shape(), gen);
  const std::vector<float> wv = w.to_vector();
  core::sum(core::mul(out, w)).backward();

  core::NoGradGuard no_grad;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    REQUIRE(x.grad().defined());
    REQUIRE(x.grad().shape() == x.shape());
    const int64_t n = x.numel();
    const int64_t step = std::max<int64_t>(1, n / opt.max_elements);
    float* base = static_cast<float*>(x.impl()->storage->data());
    for (int64_t i = 0; i < n; i += step) {
      float* p = base + element_offset(x, i);
      const float orig = *p;
      *p = orig + opt.eps;
      const double lp = weighted_sum(f(inputs), wv);
      *p = orig - opt.eps;
      const double lm = weighted_sum(f(inputs), wv);
      *p = orig;
      const double numeric = (lp - lm) / (2.0 * opt.eps);
      const double analytic = x.grad().at([&] {
        std::vector<int64_t> idx(x.dim());
        int64_t r = i;
        for (int64_t d = x.dim() - 1; d >= 0; --d) {
          idx[d] = r % x.shape()[d];
          r /= x.shape()[d];
        }
        return idx;
      }());
      const double tol = opt.atol + opt.rtol * std::max(std::fabs(numeric), std::fabs(analytic));
      INFO("input " << k << " element " << i << ": analytic " << analytic << " vs numeric " << numeric);
      CHECK(std::fabs(analytic - numeric) <= tol);
    }
  }
}

// Max |a − b| over all elements (shapes must match).
inline float max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const auto va = a.to_vector(), vb = b.to_vector();
  float m = 0;
  for (std::size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(va[i] - vb[i]));
  return m;
}

inline Tensor random_tensor(const Shape& s, uint64_t seed, float scale = 1.0f, bool requires_grad = false) {
  core::Generator g(seed);
  Tensor t = core::randn(s, g, 0.0f, scale);
  if (requires_grad) t.set_requires_grad();
  return t;
}

}  // namespace tfm::test
