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

void init_gpt2(const Module& m, int64_t n_layers, uint64_t seed) {
  core::Generator gen(seed);
  const float resid_std = 0.02f / std::sqrt(2.0f * static_cast<float>(n_layers));
  for (auto& [name, p] : m.named_parameters()) {
    if (p.dim() < 2) continue;
    const bool residual = name.ends_with("out_proj.weight") || name.ends_with("ffn.down.weight");
    normal_(p, gen, residual ? resid_std : 0.02f);
  }
}

void init_transformer(const Module& m, int64_t d_model, uint64_t seed) {
  core::Generator gen(seed);
  for (auto& [name, p] : m.named_parameters()) {
    if (p.dim() < 2) continue;
    if (name.ends_with("_emb.weight") || name.ends_with("_pos.weight")) {
      normal_(p, gen, 1.0f / std::sqrt(static_cast<float>(d_model)));
    } else {
      xavier_uniform_(p, gen);
    }
  }
}

}  // namespace tfm::layers
