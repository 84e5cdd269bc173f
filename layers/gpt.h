// GPT: a decoder-only Transformer language model.
//   tok_emb [V, D] (+ pos_emb [block_size, D] learned, or the sinusoidal
//   table, or rotary positions inside attention) -> dropout -> n_layers
//   causal blocks -> final_norm (pre-norm) -> lm_head (or tok_embᵀ when tied).
// Shapes: B batch, T <= block_size steps, V vocabulary, D d_model.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "layers/blocks.h"
#include "layers/positions.h"
#include "layers/sampling.h"

namespace tfm::layers {

struct GPTConfig {
  int64_t vocab_size = 0;
  int64_t block_size = 256;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t d_model = 128;
  int64_t d_ff = 0;  // 0: 4 · d_model
  float dropout = 0.0f;
  PositionKind positions = PositionKind::learned;
  float rope_base = 10000.0f;
  NormKind norm = NormKind::layer;
  bool prenorm = true;
  Activation activation = Activation::gelu;
  bool bias = true;
  bool tie_embeddings = true;
  bool fused_qkv = true;
  std::string attention = "naive";  // a backend with causal masks (and dropout when dropout > 0)
  AttentionBackendOptions attention_options;
  std::vector<std::string> attention_pattern;  // per-layer backends, repeated over the layers; empty: attention
  bool checkpoint_activations = false;  // recompute block activations in backward (less memory)
  // Reversible residual layers (TransformerStack, core/reversible.h): the
  // embedding feeds both streams, which are averaged before final_norm.
  // Needs prenorm; excludes checkpoint_activations (nothing left to save).
  bool reversible = false;
  int64_t ff_chunks = 1;  // FeedForward slices along the sequence (>= 1)
};

class GPT : public Module {
 public:
  // Builds the model and initialises it GPT-2 style from `seed`.
  GPT(const GPTConfig& cfg, uint64_t seed);

  // ids: i32 [B, T] -> logits [B, T, V]. With caches (one per layer), the
  // ids continue the cached sequence: position offset = caches[0].len.
  Tensor forward(const Tensor& ids, std::vector<KVCache>* caches = nullptr) const;
  // Mean cross-entropy of next-token predictions; targets i32 [B, T]
  // (entries equal to ignore_index are skipped), against (1 - e)·onehot + e/V
  // with label_smoothing e.
  Tensor loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index = -100,
              float label_smoothing = 0.0f) const;

  // Continues `prompt` by `n` tokens with the KV cache, calling on_token for
  // each new token as it is chosen. When the context would exceed
  // block_size, the context restarts from the last block_size/2 tokens.
  // A backend without a KV cache gets the documented fallback: every step
  // re-runs the whole current context without a cache (same tokens as the
  // cached path up to rounding, quadratic cost).
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, int64_t n, const SamplingOptions& opt,
                                core::Generator& gen, const std::function<void(int32_t)>& on_token = {}) const;

  std::vector<KVCache> make_caches() const { return std::vector<KVCache>(cfg_.n_layers); }
  const GPTConfig& config() const { return cfg_; }
  // Generator for dropout masks (part of the training state).
  const std::shared_ptr<core::Generator>& dropout_generator() const { return gen_; }

  std::shared_ptr<Embedding> tok_emb, pos_emb;
  std::shared_ptr<TransformerStack> blocks;
  std::shared_ptr<Linear> lm_head;  // null when tied

 private:
  // The last block's output states [B, T, D], before the output projection.
  Tensor hidden(const Tensor& ids, std::vector<KVCache>* caches = nullptr) const;
  GPTConfig cfg_;
  std::shared_ptr<core::Generator> gen_;
  std::shared_ptr<Dropout> drop_;
  Tensor sin_table_;
  std::shared_ptr<RotaryEmbedding> rope_;
};

void validate(const GPTConfig& cfg);  // throws naming the bad field

}  // namespace tfm::layers
