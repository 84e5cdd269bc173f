// Transformer blocks and stacks.
//
// One TransformerBlock serves as encoder layer (self-attention + FFN), GPT
// block (causal self-attention + FFN) and decoder layer (causal
// self-attention + cross-attention + FFN), pre-norm or post-norm:
//   pre-norm:  x = x + drop(sublayer(norm(x)))
//   post-norm: x = norm(x + drop(sublayer(x)))
#pragma once

#include <memory>
#include <string>
#include <vector>

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

 private:
  // Applies one residual sublayer with the configured norm placement.
  template <class F>
  Tensor residual(const Tensor& x, const Norm& norm, F sublayer) const;
  bool prenorm_;
  std::shared_ptr<Dropout> drop_;
};

// A stack of blocks plus, for pre-norm, the final norm. With
// opt.checkpoint, each block runs under core::checkpoint when recording
// (no KV caches): its inputs x (and memory, whose gradient flows back to the
// encoder) are kept, and the block is recomputed in backward with the
// dropout stream of `gen` replayed, giving the same gradients.
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
  bool checkpoint_;
  std::shared_ptr<core::Generator> gen_;
};

}  // namespace tfm::layers
