#include "init.h"

#include <cmath>

#include "core/autograd.h"
#include "core/error.h"

namespace tfm::layers {

void normal_(core::Tensor& t, core::Generator& gen, float stddev) {
  core::NoGradGuard g;
  t.copy_(core::randn(t.shape(), gen, 0.0f, stddev));
}

void xavier_uniform_(core::Tensor& t, core::Generator& gen) {
  TFM_CHECK(t.dim() == 2, "xavier_uniform_: expected a matrix, got ", core::shape_str(t.shape()));
  const float a = std::sqrt(6.0f / static_cast<float>(t.size(0) + t.size(1)));
  core::NoGradGuard g;
  t.copy_(core::uniform(t.shape(), gen, -a, a));
}

void constant_(core::Tensor& t, float v) {
  core::NoGradGuard g;
  t.fill_(v);
}

}  // namespace tfm::layers
