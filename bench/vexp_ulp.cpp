// Worst error of core::vmath::vexp against double-precision exp over every
// float input whose result is a normal float (about 2.2e9 inputs, ~1 minute
// on one core). The README and tests/test_vmath.cpp quote its result.
//   build/bench/vexp_ulp
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/vmath.h"

int main() {
  const float inf = std::numeric_limits<float>::infinity();
  double worst = 0;
  float worst_x = 0;
  long count = 0;
  for (float x = -87.34f; x <= 88.73f; x = std::nextafter(x, inf)) {
    const double ref = std::exp(static_cast<double>(x));
    if (ref < std::numeric_limits<float>::min() || ref > std::numeric_limits<float>::max()) continue;
    const float rf = static_cast<float>(ref);
    const float ulp = std::nextafter(std::fabs(rf), inf) - std::fabs(rf);
    const double e = std::fabs(static_cast<double>(tfm::core::vmath::vexp(x)) - ref) / static_cast<double>(ulp);
    ++count;
    if (e > worst) worst = e, worst_x = x;
  }
  std::printf("vexp over %ld float inputs with normal results: worst %.4f ulp at x = %.8g\n", count, worst, worst_x);
}
