// Seq2Seq: the encoder-decoder Transformer of "Attention Is All You Need".
//   source ids -> src_emb·sqrt(D) (+ positions) -> dropout -> encoder stack
//   target ids -> tgt_emb·sqrt(D) (+ positions) -> dropout -> decoder stack
//   (causal self-attention, cross-attention on the encoder output) ->
//   out_proj (or tgt_embᵀ when tied).
// Padding (pad_id) is masked on the source side in every attention that reads
// the encoder output; on the target side the causal mask already keeps real
// tokens from seeing the trailing padding, and the loss ignores it.
#pragma once

#include <memory>
#include <vector>

#include "layers/blocks.h"
#include "layers/positions.h"

namespace tfm::layers {

struct Seq2SeqConfig {
  int64_t src_vocab = 0, tgt_vocab = 0;
  int64_t d_model = 256, n_heads = 4, enc_layers = 3, dec_layers = 3, d_ff = 1024;
  int64_t max_len = 256;  // longest source or target sequence
  float dropout = 0.1f;
  PositionKind positions = PositionKind::sinusoidal;
  float rope_base = 10000.0f;
  NormKind norm = NormKind::layer;
  bool prenorm = true;
  Activation activation = Activation::relu;
  bool bias = true;
  bool share_embeddings = false;  // one table for source and target (needs equal vocabularies)
  bool tie_output = true;         // output projection = target embeddingᵀ
  int32_t pad_id = 0;
  std::string attention = "naive";  // needs causal and key-padding masks and cross-attention
  AttentionBackendOptions attention_options;
  std::vector<std::string> attention_pattern;  // per-layer backends, repeated over the layers; empty: attention
  bool checkpoint_activations = false;  // recompute block activations in backward (less memory)
};

class Seq2Seq : public Module {
 public:
  Seq2Seq(const Seq2SeqConfig& cfg, uint64_t seed);

  struct Memory {
    Tensor states;       // [B, S, D]
    Tensor src_padding;  // f32 [B, S], 1 where the source is padding
  };
  // src: i32 [B, S]
  Memory encode(const Tensor& src) const;
  // tgt_in: i32 [B, T] (starting with BOS) -> logits [B, T, V_tgt]
  Tensor decode(const Tensor& tgt_in, const Memory& mem) const;
  Tensor forward(const Tensor& src, const Tensor& tgt_in) const { return decode(tgt_in, encode(src)); }
  // Mean cross-entropy over target positions that are not padding.
  Tensor loss(const Tensor& src, const Tensor& tgt_in, const Tensor& tgt_out, float label_smoothing = 0.0f) const;

  // Incremental decoding: self-attention caches grow by one step per call,
  // cross-attention keys/values are computed once. Needs a backend with a
  // KV cache (start_decoding throws naming model.attention otherwise).
  struct DecodeState {
    Memory mem;
    std::vector<KVCache> self, cross;
    int64_t steps = 0;
  };
  DecodeState start_decoding(const Memory& mem) const;
  // tokens: i32 [B, 1] (the previous output, BOS first) -> logits [B, V_tgt]
  Tensor decode_step(const Tensor& tokens, DecodeState& state) const;

  const Seq2SeqConfig& config() const { return cfg_; }
  const std::shared_ptr<core::Generator>& dropout_generator() const { return gen_; }

  std::shared_ptr<Embedding> src_emb, tgt_emb, src_pos, tgt_pos;  // src_emb == tgt_emb when shared
  std::shared_ptr<TransformerStack> encoder, decoder;
  std::shared_ptr<Linear> out_proj;  // null when tied

 private:
  Tensor embed(const Embedding& emb, const Embedding* pos, const Tensor& ids, int64_t offset) const;
  // The decoder's output states [B, T, D], before the output projection.
  Tensor decode_hidden(const Tensor& tgt_in, const Memory& mem) const;
  Seq2SeqConfig cfg_;
  std::shared_ptr<core::Generator> gen_;
  std::shared_ptr<Dropout> drop_;
  Tensor sin_table_;
  std::shared_ptr<RotaryEmbedding> rope_;
};

void validate(const Seq2SeqConfig& cfg);

}  // namespace tfm::layers
