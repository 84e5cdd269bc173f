// Vectorisable float math (core/vmath.h) against libm in double precision on
// dense grids over the whole useful range, plus special values.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/vmath.h"

namespace {

namespace vm = tfm::core::vmath;
constexpr float kInf = std::numeric_limits<float>::infinity();

// Distance in units in the last place of the float nearest to `ref`.
double ulps(float got, double ref) {
  const float rf = static_cast<float>(ref);
  const float ulp = std::nextafter(std::fabs(rf), kInf) - std::fabs(rf);
  return std::fabs(static_cast<double>(got) - ref) / static_cast<double>(ulp);
}

}  // namespace

// Measured once over every float input with a normal result (2.24e9 of
// them, see the README's "Vectorised math"): the worst error is 1.023 ulp, at
// x = 26.716946; this grid's worst is 0.99 ulp. The bound below is that
// measurement with a little room, and the exhaustive worst input is checked
// by name.
TEST_CASE("vexp is within 1.05 ulp of exp over the float range, denormals within one step", "[vmath]") {
  double worst = 0, worst_x = 0;
  for (double xd = -103.0; xd <= 88.72; xd += 1.0 / 1024 + 1e-7) {
    const float x = static_cast<float>(xd);
    const double ref = std::exp(static_cast<double>(x));
    const float got = vm::vexp(x);
    double e = ulps(got, ref);
    if (ref < std::numeric_limits<float>::min()) {
      // Denormal results: absolute error within one denormal step (2^-149).
      e = std::fabs(static_cast<double>(got) - ref) / std::ldexp(1.0, -149);
    }
    if (e > worst) worst = e, worst_x = xd;
  }
  INFO("worst " << worst << " ulp at x = " << worst_x);
  CHECK(worst <= 1.05);
  CHECK(ulps(vm::vexp(26.716946f), std::exp(static_cast<double>(26.716946f))) <= 1.05);
  CHECK(vm::vexp(0.0f) == 1.0f);
  CHECK(vm::vexp(-kInf) == 0.0f);
  CHECK(vm::vexp(-200.0f) == 0.0f);
  CHECK(vm::vexp(kInf) == kInf);
  CHECK(vm::vexp(89.0f) == kInf);
  CHECK(std::isnan(vm::vexp(std::nanf(""))));
  CHECK(std::isfinite(vm::vexp(88.72f)));
}

TEST_CASE("vtanh matches tanh in absolute and relative terms, odd and saturating", "[vmath]") {
  double worst_abs = 0, worst_rel = 0;
  for (double xd = -12.0; xd <= 12.0; xd += 1.0 / 4096 + 1e-7) {
    const float x = static_cast<float>(xd);
    const double ref = std::tanh(static_cast<double>(x));
    const double err = std::fabs(vm::vtanh(x) - ref);
    worst_abs = std::max(worst_abs, err);
    if (ref != 0) worst_rel = std::max(worst_rel, err / std::fabs(ref));
    CHECK(vm::vtanh(-x) == -vm::vtanh(x));
  }
  INFO("worst absolute " << worst_abs << ", relative " << worst_rel);
  CHECK(worst_abs < 2e-7);
  CHECK(worst_rel < 1e-6);
  CHECK(vm::vtanh(1e-20f) == 1e-20f);
  CHECK(vm::vtanh(kInf) == 1.0f);
  CHECK(vm::vtanh(-kInf) == -1.0f);
  CHECK(std::isnan(vm::vtanh(std::nanf(""))));
}

TEST_CASE("vnormal_cdf keeps relative precision, lower tail included", "[vmath]") {
  double worst = 0, worst_x = 0;
  for (double xd = -9.0; xd <= 9.0; xd += 1.0 / 2048 + 1e-7) {
    const float x = static_cast<float>(xd);
    const double ref = 0.5 * std::erfc(-static_cast<double>(x) / std::sqrt(2.0));
    const double rel = std::fabs(vm::vnormal_cdf(x) - ref) / ref;
    if (rel > worst) worst = rel, worst_x = xd;
  }
  INFO("worst relative error " << worst << " at x = " << worst_x);
  CHECK(worst < 6e-7);
  CHECK(vm::vnormal_cdf(0.0f) == Approx(0.5f).margin(1e-7));
  CHECK(vm::vnormal_cdf(kInf) == 1.0f);
  CHECK(vm::vnormal_cdf(-kInf) == 0.0f);
  CHECK(std::isnan(vm::vnormal_cdf(std::nanf(""))));
}

TEST_CASE("vnormal_cdf_gauss gives vnormal_cdf and exactly vexp(-x*x/2)", "[vmath]") {
  auto same_bits = [](float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; };
  int64_t checked = 0, differ = 0;
  for (double xd = -40.0; xd <= 40.0; xd += 1.0 / 1024 + 1e-7) {
    const float x = static_cast<float>(xd);
    const vm::CdfGauss c = vm::vnormal_cdf_gauss(x);
    differ += !same_bits(c.gauss, vm::vexp(-0.5f * x * x)) || !same_bits(c.cdf, vm::vnormal_cdf(x));
    ++checked;
  }
  CHECK(checked > 80000);
  CHECK(differ == 0);
  for (float x : {kInf, -kInf, 1e30f, -1e30f, 0.0f, -0.0f, 1e-30f}) {
    INFO("x = " << x);
    CHECK(same_bits(vm::vnormal_cdf_gauss(x).gauss, vm::vexp(-0.5f * x * x)));
  }
  CHECK(std::isnan(vm::vnormal_cdf_gauss(std::nanf("")).gauss));
}
