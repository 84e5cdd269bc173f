// Parameter initialisation, in one place. Models pick a scheme; layers are
// created with zeros and initialised by the model's init function.
//   GPT-2:        Linear/Embedding weights ~ N(0, 0.02), biases 0, norm
//                 weights 1; residual output projections (attention out_proj
//                 and feed-forward down) ~ N(0, 0.02/sqrt(2·n_layers)).
//   Transformer:  Xavier-uniform matrices, biases 0, embeddings
//   (Vaswani)     ~ N(0, d_model^-1/2), norm weights 1.
#pragma once

#include <cstdint>

#include "core/rng.h"
#include "core/tensor.h"
#include "layers/module.h"

namespace tfm::layers {

void normal_(core::Tensor& t, core::Generator& gen, float stddev);
// U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) for a [out, in] matrix.
void xavier_uniform_(core::Tensor& t, core::Generator& gen);
void constant_(core::Tensor& t, float v);

// The two schemes above, applied to every matrix of `m` (vectors keep the
// values their layers were built with: biases 0, norm weights 1).
void init_gpt2(const Module& m, int64_t n_layers, uint64_t seed);
void init_transformer(const Module& m, int64_t d_model, uint64_t seed);

}  // namespace tfm::layers
