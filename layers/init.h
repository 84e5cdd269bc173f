// Parameter initialisation, in one place. Models pick a scheme; layers are
// created with zeros and initialised by the model's init function.
//   GPT-2:        Linear/Embedding weights ~ N(0, 0.02), biases 0, norm
//                 weights 1; residual output projections (attention out_proj
//                 and feed-forward down) ~ N(0, 0.02/sqrt(2·n_layers)).
//   Transformer:  Xavier-uniform matrices, biases 0, embeddings
//   (Vaswani)     ~ N(0, d_model^-1/2), norm weights 1.
#pragma once

#include "core/rng.h"
#include "core/tensor.h"

namespace tfm::layers {

void normal_(core::Tensor& t, core::Generator& gen, float stddev);
// U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) for a [out, in] matrix.
void xavier_uniform_(core::Tensor& t, core::Generator& gen);
void constant_(core::Tensor& t, float v);

}  // namespace tfm::layers
