// Transformer blocks and stacks.
//
// One TransformerBlock serves as encoder layer (self-attention + FFN), GPT
// block (causal self-attention + FFN) and decoder layer (causal
// self-attention + cross-attention + FFN), pre-norm or post-norm:
//   pre-norm:  x = x + drop(sublayer(norm(x)))
//   post-norm: x = norm(x + drop(sublayer(x)))
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "core/reversible.h"
#include "layers/attention.h"
#include "layers/basic.h"

namespace tfm::layers {

struct BlockOptions {
  int64_t d_model = 0, n_heads = 1, d_ff = 0;
  float dropout = 0.0f;       // residual and attention-probability dropout
  Activation activation = Activation::gelu;
  NormKind norm = NormKind::layer;
  float norm_eps = 1e-5f;
  bool prenorm = true;
  bool bias = true;
  bool fused_qkv = false;
  std::string attention = "naive";
  AttentionBackendOptions attention_options;
  std::vector<std::string> attention_pattern;  // TransformerStack: layer i uses pattern[i % size] (empty: attention)
  std::shared_ptr<const RotaryEmbedding> rope;  // self-attention only
  // Recompute each block's forward in backward instead of keeping its
  // activations (core/checkpoint.h); only the block inputs are stored.
  bool checkpoint = false;
  int64_t ff_chunks = 1;    // FeedForward chunks along the sequence (layers/basic.h)
  // Reversible residual layers (pre-norm, no cross-attention): the stack runs
  // as core::reversible_stack with F = attention branch, G = feed-forward branch.
  bool reversible = false;
};

// BlockOptions from a model config (GPTConfig, Seq2SeqConfig): both carry
// the same width, norm, activation, dropout, bias and backend fields.
template <class ModelConfig>
BlockOptions block_options(const ModelConfig& c, std::shared_ptr<const RotaryEmbedding> rope) {
  BlockOptions b;
  b.d_model = c.d_model;
  b.n_heads = c.n_heads;
  b.d_ff = c.d_ff;
  b.dropout = c.dropout;
  b.activation = c.activation;
  b.norm = c.norm;
  b.prenorm = c.prenorm;
  b.bias = c.bias;
  b.attention = c.attention;
  b.attention_options = c.attention_options;
  b.attention_pattern = c.attention_pattern;
  b.rope = std::move(rope);
  b.checkpoint = c.checkpoint_activations;
  return b;
}

class TransformerBlock : public Module {
 public:
  TransformerBlock(const BlockOptions& opt, bool cross_attention, std::shared_ptr<core::Generator> gen);
  // x [B, T, D]; memory [B, S, D] for cross-attention. Caches are optional.
  Tensor forward(const Tensor& x, const AttentionMask& self_mask, const Tensor& memory = Tensor(),
                 const AttentionMask& memory_mask = {}, KVCache* self_cache = nullptr,
                 KVCache* cross_cache = nullptr) const;

  std::shared_ptr<MultiHeadAttention> self_attn, cross_attn;
  std::shared_ptr<Norm> attn_norm, cross_norm, ffn_norm;
  std::shared_ptr<FeedForward> ffn;

  // The residual branches of a pre-norm block without cross-attention:
  // drop(self_attn(attn_norm(x))) and drop(ffn(ffn_norm(x))); forward is
  // x + a, then + f. The reversible stack uses them as its F and G.
  Tensor attention_branch(const Tensor& x, const AttentionMask& self_mask, KVCache* self_cache = nullptr) const;
  Tensor ffn_branch(const Tensor& x) const;
  // ffn_branch in ffn->chunks slices of the sequence (dim x.dim() − 2), for
  // the reversible stack's backward (core::ReversibleLayer::g_slices): draws
  // the branch's dropout mask for all of x now, from the generator exactly as
  // ffn_branch would (drop(1) is 0 or 1/(1 − p), and h·mask is drop(h)), and
  // returns the function that computes slice [b, e) of ffn_branch(x) from
  // that slice of x alone (norm and feed-forward are row-wise).
  core::ReversibleSlices ffn_branch_slices(const Tensor& x) const;

  // Positions (rows of x) that went through the self-attention since
  // construction, in forward and in every recomputation (for tests; the
  // feed-forward counts its own, ffn->rows_evaluated()).
  int64_t attention_rows_evaluated() const { return attention_rows_.load(std::memory_order_relaxed); }

 private:
  // Applies one residual sublayer with the configured norm placement.
  template <class F>
  Tensor residual(const Tensor& x, const Norm& norm, F sublayer) const;
  void count_attention_rows(const Tensor& x) const;
  bool prenorm_;
  std::shared_ptr<Dropout> drop_;
  mutable std::atomic<int64_t> attention_rows_{0};
};

// A stack of blocks plus, for pre-norm, the final norm. With
// opt.checkpoint, each block runs under core::checkpoint when recording
// (no KV caches): its inputs x (and memory, whose gradient flows back to the
// encoder) are kept, and the block is recomputed in backward with the
// dropout stream of `gen` replayed, giving the same gradients.
// With opt.reversible (pre-norm, self-attention only): x is duplicated into
// two streams X1 = X2 = x, layer i computes Y1 = X1 + attention_branch(X2),
// Y2 = X2 + ffn_branch(Y1) (core/reversible.h: one node for the whole stack
// when recording, replaying `gen`), and the two streams are averaged,
// (Y1 + Y2) / 2, before the final norm. With KV caches or grad mode off the
// same two-stream computation runs directly.
class TransformerStack : public Module {
 public:
  TransformerStack(const BlockOptions& opt, int64_t n_layers, bool cross_attention,
                   std::shared_ptr<core::Generator> gen);
  Tensor forward(const Tensor& x, const AttentionMask& self_mask, const Tensor& memory = Tensor(),
                 const AttentionMask& memory_mask = {}, std::vector<KVCache>* self_caches = nullptr,
                 std::vector<KVCache>* cross_caches = nullptr) const;
  std::shared_ptr<ModuleList<TransformerBlock>> layers;
  std::shared_ptr<Norm> final_norm;  // null for post-norm

 private:
  bool checkpoint_, reversible_;
  std::shared_ptr<core::Generator> gen_;
};

}  // namespace tfm::layers
