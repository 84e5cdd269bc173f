// Basic layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout, FeedForward.
// Shapes: B batch, T time, D model width, F feed-forward width, V vocabulary.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "core/ops.h"
#include "core/rng.h"
#include "layers/module.h"

namespace tfm::layers {

// y = x·Wᵀ + b. weight [out, in], bias [out] (optional).
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias = true);
  Tensor forward(const Tensor& x) const;  // [..., in] -> [..., out]
  Tensor weight, bias;
};

// weight [V, D]; forward(i32 ids [...]) -> [..., D].
class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t dim);
  Tensor forward(const Tensor& ids) const;
  Tensor weight;
};

enum class NormKind { layer, rms };
NormKind parse_norm(const std::string& s);  // "layernorm" | "rmsnorm"

// LayerNorm (weight, bias) or RMSNorm (weight) over the last dim.
class Norm : public Module {
 public:
  Norm(NormKind kind, int64_t dim, float eps = 1e-5f, bool bias = true);
  Tensor forward(const Tensor& x) const;
  NormKind kind;
  float eps;
  Tensor weight, bias;
};

// Zeroes activations with probability p in training mode. Masks come from the
// model's shared generator, so a checkpointed generator state reproduces them.
class Dropout : public Module {
 public:
  Dropout(float p, std::shared_ptr<core::Generator> gen) : p(p), gen_(std::move(gen)) {}
  Tensor forward(const Tensor& x) const;
  float p;

 private:
  std::shared_ptr<core::Generator> gen_;
};

enum class Activation { relu, gelu, gelu_tanh, swiglu };
Activation parse_activation(const std::string& s);  // "relu" | "gelu" | "gelu_tanh" | "swiglu"

// Position-wise feed-forward: down(act(up(x))), or for SwiGLU
// down(silu(gate(x)) ∘ up(x)). up/gate: D -> F, down: F -> D.
//
// Chunking (model.ff_chunks): with chunks = N > 1, x [..., T, D] is cut
// into N slices along T (the second-to-last dim; the last slices one step
// shorter when N does not divide T, N capped at T) that run one after the
// other, each under core::checkpoint when recording: only the slice inputs
// are kept and the backward recomputes one slice's hidden [.., T/N, F] at a
// time, so the peak feed-forward activation falls about N-fold, forward and
// backward. The result is the unchunked one (position-wise: same rows, same
// kernels), and the gradients equal it up to summation order.
// forward_whole(x) is the unchunked network on all of x (recorded as usual);
// the reversible stack uses it on its own slices (TransformerBlock::
// ffn_branch_slices). rows_evaluated() counts the positions (rows of x, all
// dims but the last) that went through the network since construction, in
// forward and in every recomputation: how tests check that a backward does
// not recompute more often than intended.
class FeedForward : public Module {
 public:
  FeedForward(int64_t d_model, int64_t d_ff, Activation act, bool bias = true, int64_t chunks = 1);
  Tensor forward(const Tensor& x) const;
  Tensor forward_whole(const Tensor& x) const;
  int64_t rows_evaluated() const { return rows_evaluated_.load(std::memory_order_relaxed); }
  Activation act;
  int64_t chunks;  // >= 1
  std::shared_ptr<Linear> up, gate, down;  // gate only for SwiGLU

 private:
  mutable std::atomic<int64_t> rows_evaluated_{0};
};

}  // namespace tfm::layers
