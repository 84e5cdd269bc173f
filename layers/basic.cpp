#include "basic.h"

#include <algorithm>

#include "core/autograd.h"
#include "core/checkpoint.h"
#include "core/error.h"

namespace tfm::layers {

Linear::Linear(int64_t in, int64_t out, bool with_bias) {
  TFM_CHECK(in > 0 && out > 0, "Linear: sizes must be positive, got in=", in, " out=", out);
  weight = register_parameter("weight", core::zeros({out, in}));
  if (with_bias) bias = register_parameter("bias", core::zeros({out}));
}

Tensor Linear::forward(const Tensor& x) const { return core::linear(x, weight, bias); }

Embedding::Embedding(int64_t vocab, int64_t dim) {
  TFM_CHECK(vocab > 0 && dim > 0, "Embedding: sizes must be positive, got vocab=", vocab, " dim=", dim);
  weight = register_parameter("weight", core::zeros({vocab, dim}));
}

Tensor Embedding::forward(const Tensor& ids) const { return core::embedding(weight, ids); }

NormKind parse_norm(const std::string& s) {
  if (s == "layernorm") return NormKind::layer;
  if (s == "rmsnorm") return NormKind::rms;
  detail::throw_error("unknown norm '", s, "' (allowed: layernorm, rmsnorm)");
}

Norm::Norm(NormKind k, int64_t dim, float e, bool with_bias) : kind(k), eps(e) {
  weight = register_parameter("weight", core::ones({dim}));
  if (kind == NormKind::layer && with_bias) bias = register_parameter("bias", core::zeros({dim}));
}

Tensor Norm::forward(const Tensor& x) const {
  return kind == NormKind::layer ? core::layer_norm(x, weight, bias, eps) : core::rms_norm(x, weight, eps);
}

Tensor Dropout::forward(const Tensor& x) const {
  if (!training() || p == 0.0f) return x;
  return core::dropout(x, p, true, *gen_);
}

Activation parse_activation(const std::string& s) {
  if (s == "relu") return Activation::relu;
  if (s == "gelu") return Activation::gelu;
  if (s == "gelu_tanh") return Activation::gelu_tanh;
  if (s == "swiglu") return Activation::swiglu;
  detail::throw_error("unknown activation '", s, "' (allowed: relu, gelu, gelu_tanh, swiglu)");
}

FeedForward::FeedForward(int64_t d_model, int64_t d_ff, Activation a, bool bias, int64_t n_chunks)
    : act(a), chunks(n_chunks) {
  TFM_CHECK(chunks >= 1, "FeedForward: chunks (model.ff_chunks) must be >= 1, got ", chunks);
  up = register_module("up", std::make_shared<Linear>(d_model, d_ff, bias));
  if (act == Activation::swiglu) gate = register_module("gate", std::make_shared<Linear>(d_model, d_ff, bias));
  down = register_module("down", std::make_shared<Linear>(d_ff, d_model, bias));
}

Tensor FeedForward::forward(const Tensor& x) const {
  const int64_t T = x.dim() >= 2 ? x.size(x.dim() - 2) : 1;
  const int64_t n = std::min(chunks, T);
  if (n <= 1) return forward_whole(x);
  const int64_t dim = x.dim() - 2;
  std::vector<Tensor> outs;
  for (int64_t c = 0; c < n; ++c) {
    const int64_t begin = c * T / n, end = (c + 1) * T / n;
    Tensor part = core::slice(x, dim, begin, end);
    if (core::needs_grad({&part}))
      outs.push_back(core::checkpoint([this](const std::vector<Tensor>& in) { return forward_whole(in[0]); }, {part}));
    else
      outs.push_back(forward_whole(part));
  }
  return core::concat(outs, dim);
}

Tensor FeedForward::forward_whole(const Tensor& x) const {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  rows_evaluated_.fetch_add(rows, std::memory_order_relaxed);
  switch (act) {
    case Activation::relu:
      return down->forward(core::relu(up->forward(x)));
    case Activation::gelu:
      return down->forward(core::gelu(up->forward(x), core::GeluApprox::erf));
    case Activation::gelu_tanh:
      return down->forward(core::gelu(up->forward(x), core::GeluApprox::tanh));
    case Activation::swiglu:
      return down->forward(core::mul(core::silu(gate->forward(x)), up->forward(x)));
  }
  return Tensor();
}

}  // namespace tfm::layers
