// The one check that a model width splits into attention heads, shared by
// the model configs (layers/gpt.cpp, layers/seq2seq.cpp) and the run config
// (train/config.cpp). MultiHeadAttention keeps its own check for direct users.
#pragma once

#include <cstdint>

#include "core/error.h"

namespace tfm::layers {

// d_model / n_heads, after checking both are positive and n_heads divides
// d_model. The error names the two values as `d_name` and `h_name` (e.g.
// "model.d_model", "model.n_heads").
inline int64_t head_dim(int64_t d_model, int64_t n_heads, const char* d_name, const char* h_name) {
  TFM_CHECK(n_heads > 0 && d_model > 0 && d_model % n_heads == 0, d_name, " (", d_model,
            ") must be a positive multiple of ", h_name, " (", n_heads, ")");
  return d_model / n_heads;
}

}  // namespace tfm::layers
