// Position information.
//   sinusoidal: the closed form of Vaswani et al. (2017), interleaved:
//               PE[p, 2i] = sin(p / 10000^(2i/D)), PE[p, 2i+1] = cos(same).
//   learned:    an Embedding of max_len positions (models own it).
//   rotary:     RoPE (Su et al. 2021) on q and k inside attention, in the
//               half-split convention (GPT-NeoX, trax): dims i and i + d/2
//               form a pair rotated by angle p · base^(-2i/d).
#pragma once

#include <string>

#include "core/tensor.h"

namespace tfm::layers {

enum class PositionKind { sinusoidal, learned, rope };
PositionKind parse_positions(const std::string& s);  // "sinusoidal" | "learned" | "rope"

// [max_len, dim] table (dim even).
core::Tensor sinusoidal_table(int64_t max_len, int64_t dim);

class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t head_dim, int64_t max_len, float base = 10000.0f);
  // x: [..., T, head_dim] at absolute positions offset .. offset+T-1.
  // Differentiable (composed of primitive ops).
  core::Tensor apply(const core::Tensor& x, int64_t offset) const;
  int64_t head_dim() const { return head_dim_; }
  int64_t max_len() const { return max_len_; }

 private:
  int64_t head_dim_, max_len_;
  core::Tensor cos_, sin_;  // [max_len, head_dim/2]
};

}  // namespace tfm::layers
