#include "positions.h"

#include <cmath>

#include "core/error.h"
#include "core/ops.h"

namespace tfm::layers {

using core::Tensor;

PositionKind parse_positions(const std::string& s) {
  if (s == "sinusoidal") return PositionKind::sinusoidal;
  if (s == "learned") return PositionKind::learned;
  if (s == "rope") return PositionKind::rope;
  detail::throw_error("unknown positions '", s, "' (allowed: sinusoidal, learned, rope)");
}

Tensor sinusoidal_table(int64_t max_len, int64_t dim) {
  TFM_CHECK(dim > 0 && dim % 2 == 0, "sinusoidal positions need an even width, got ", dim);
  Tensor t = core::empty({max_len, dim});
  float* p = t.data<float>();
  for (int64_t pos = 0; pos < max_len; ++pos)
    for (int64_t i = 0; i < dim / 2; ++i) {
      const double angle = static_cast<double>(pos) / std::pow(10000.0, 2.0 * i / static_cast<double>(dim));
      p[pos * dim + 2 * i] = static_cast<float>(std::sin(angle));
      p[pos * dim + 2 * i + 1] = static_cast<float>(std::cos(angle));
    }
  return t;
}

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, int64_t max_len, float base)
    : head_dim_(head_dim), max_len_(max_len) {
  TFM_CHECK(head_dim > 0 && head_dim % 2 == 0, "rotary positions need an even head dim, got ", head_dim);
  const int64_t half = head_dim / 2;
  cos_ = core::empty({max_len, half});
  sin_ = core::empty({max_len, half});
  float* c = cos_.data<float>();
  float* s = sin_.data<float>();
  for (int64_t pos = 0; pos < max_len; ++pos)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(pos) * std::pow(static_cast<double>(base), -2.0 * i / head_dim);
      c[pos * half + i] = static_cast<float>(std::cos(angle));
      s[pos * half + i] = static_cast<float>(std::sin(angle));
    }
}

Tensor RotaryEmbedding::apply(const Tensor& x, int64_t offset) const {
  const int64_t T = x.size(-2);
  TFM_CHECK(x.size(-1) == head_dim_, "rope: input last dim ", x.size(-1), " differs from head dim ", head_dim_);
  TFM_CHECK(offset >= 0 && offset + T <= max_len_, "rope: positions ", offset, "..", offset + T - 1,
            " exceed the table of ", max_len_, " positions (model.block_size)");
  const int64_t half = head_dim_ / 2;
  const Tensor c = cos_.slice(0, offset, offset + T), s = sin_.slice(0, offset, offset + T);
  const Tensor x1 = x.slice(-1, 0, half), x2 = x.slice(-1, half, head_dim_);
  // [x1, x2] -> [x1·cos − x2·sin, x1·sin + x2·cos]
  return core::concat({core::sub(core::mul(x1, c), core::mul(x2, s)), core::add(core::mul(x1, s), core::mul(x2, c))},
                      -1);
}

}  // namespace tfm::layers
