#include "seq2seq.h"

#include <cmath>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "layers/heads.h"
#include "layers/init.h"

namespace tfm::layers {

void validate(const Seq2SeqConfig& c) {
  TFM_CHECK(c.src_vocab > 0 && c.tgt_vocab > 0, "seq2seq: vocabulary sizes must be positive, got ", c.src_vocab,
            " and ", c.tgt_vocab);
  head_dim(c.d_model, c.n_heads, "seq2seq: d_model", "n_heads");
  TFM_CHECK(c.enc_layers > 0 && c.dec_layers > 0, "seq2seq: layer counts must be positive");
  TFM_CHECK(c.d_ff > 0 && c.max_len > 0, "seq2seq: d_ff and max_len must be positive");
  TFM_CHECK(c.dropout >= 0.0f && c.dropout < 1.0f, "seq2seq: dropout must be in [0, 1), got ", c.dropout);
  TFM_CHECK(!c.share_embeddings || c.src_vocab == c.tgt_vocab,
            "seq2seq: shared embeddings need equal vocabularies, got ", c.src_vocab, " and ", c.tgt_vocab);
  TFM_CHECK(c.pad_id >= 0 && c.pad_id < c.src_vocab && c.pad_id < c.tgt_vocab, "seq2seq: pad_id ", c.pad_id,
            " is outside the vocabulary");
  TFM_CHECK(c.positions != PositionKind::rope || (c.d_model / c.n_heads) % 2 == 0,
            "seq2seq: rotary positions need an even head dim, got ", c.d_model / c.n_heads);
  TFM_CHECK(c.positions != PositionKind::sinusoidal || c.d_model % 2 == 0,
            "seq2seq: sinusoidal positions need an even d_model, got ", c.d_model);
  AttentionFeatures needed;
  needed.causal = needed.key_padding = needed.cross_attention = true;
  for (const std::string& name : attention_backends_used(c.attention, c.attention_pattern))
    check_attention_support(name, needed, "a seq2seq model (padded source, causal decoder, cross-attention)");
  check_attention_options(c.attention, c.attention_pattern, c.attention_options);
}

Seq2Seq::Seq2Seq(const Seq2SeqConfig& cfg, uint64_t seed)
    : cfg_(cfg), gen_(std::make_shared<core::Generator>(seed ^ 0x5eedULL)) {
  validate(cfg);
  const int64_t D = cfg_.d_model;
  src_emb = register_module(cfg_.share_embeddings ? "shared_emb" : "src_emb",
                            std::make_shared<Embedding>(cfg_.src_vocab, D));
  tgt_emb = cfg_.share_embeddings ? src_emb : register_module("tgt_emb", std::make_shared<Embedding>(cfg_.tgt_vocab, D));
  if (cfg_.positions == PositionKind::learned) {
    src_pos = register_module("src_pos", std::make_shared<Embedding>(cfg_.max_len, D));
    tgt_pos = register_module("tgt_pos", std::make_shared<Embedding>(cfg_.max_len, D));
  }
  if (cfg_.positions == PositionKind::sinusoidal) sin_table_ = sinusoidal_table(cfg_.max_len, D);
  if (cfg_.positions == PositionKind::rope)
    rope_ = std::make_shared<RotaryEmbedding>(D / cfg_.n_heads, cfg_.max_len, cfg_.rope_base);
  drop_ = register_module("dropout", std::make_shared<Dropout>(cfg_.dropout, gen_));
  const BlockOptions b = block_options(cfg_, rope_);
  encoder = register_module("encoder", std::make_shared<TransformerStack>(b, cfg_.enc_layers, false, gen_));
  decoder = register_module("decoder", std::make_shared<TransformerStack>(b, cfg_.dec_layers, true, gen_));
  if (!cfg_.tie_output) out_proj = register_module("out_proj", std::make_shared<Linear>(D, cfg_.tgt_vocab, false));

  init_transformer(*this, D, seed);
}

Tensor Seq2Seq::embed(const Embedding& emb, const Embedding* pos, const Tensor& ids, int64_t offset) const {
  TFM_CHECK(ids.dim() == 2 && ids.dtype() == core::DType::i32, "seq2seq: ids must be i32 [B, T], got ",
            core::shape_str(ids.shape()));
  const int64_t T = ids.size(1);
  TFM_CHECK(offset + T <= cfg_.max_len, "seq2seq: ", offset + T, " positions exceed max_len ", cfg_.max_len);
  Tensor x = core::mul(emb.forward(ids), std::sqrt(static_cast<float>(cfg_.d_model)));
  if (pos) x = core::add(x, pos->weight.slice(0, offset, offset + T));
  if (sin_table_.defined()) x = core::add(x, sin_table_.slice(0, offset, offset + T));
  return drop_->forward(x);
}

Seq2Seq::Memory Seq2Seq::encode(const Tensor& src) const {
  Memory m;
  m.src_padding = core::eq(core::from_vector(src.contiguous().to_vector(), src.shape()),
                           core::full({}, static_cast<float>(cfg_.pad_id)));
  AttentionMask mask;
  mask.key_padding = m.src_padding;
  m.states = encoder->forward(embed(*src_emb, src_pos.get(), src, 0), mask);
  return m;
}

Tensor Seq2Seq::decode(const Tensor& tgt_in, const Memory& mem) const {
  const Tensor x = decode_hidden(tgt_in, mem);
  return out_proj ? out_proj->forward(x) : core::matmul(x, tgt_emb->weight, false, true);
}

Tensor Seq2Seq::decode_hidden(const Tensor& tgt_in, const Memory& mem) const {
  AttentionMask self_mask;
  self_mask.causal = true;
  AttentionMask mem_mask;
  mem_mask.key_padding = mem.src_padding;
  return decoder->forward(embed(*tgt_emb, tgt_pos.get(), tgt_in, 0), self_mask, mem.states, mem_mask);
}

Tensor Seq2Seq::loss(const Tensor& src, const Tensor& tgt_in, const Tensor& tgt_out, float label_smoothing) const {
  TFM_CHECK(tgt_out.shape() == tgt_in.shape(), "seq2seq: target output ", core::shape_str(tgt_out.shape()),
            " differs from target input ", core::shape_str(tgt_in.shape()));
  // The output projection and the cross-entropy in one op: no [B·T, V]
  // logits, and padded positions are not projected at all.
  const Tensor x = decode_hidden(tgt_in, encode(src)).reshape({-1, cfg_.d_model});
  const Tensor& w = out_proj ? out_proj->weight : tgt_emb->weight;
  const Tensor b = out_proj ? out_proj->bias : Tensor();
  return core::linear_cross_entropy(x, w, b, tgt_out.reshape({-1}), cfg_.pad_id, label_smoothing);
}

Seq2Seq::DecodeState Seq2Seq::start_decoding(const Memory& mem) const {
  AttentionFeatures needed;
  needed.kv_cache = true;
  for (const std::string& name : attention_backends_used(cfg_.attention, cfg_.attention_pattern))
    check_attention_support(name, needed, "incremental decoding (translate, beam search, BLEU)");
  DecodeState s;
  s.mem = mem;
  s.self.resize(static_cast<std::size_t>(cfg_.dec_layers));
  s.cross.resize(static_cast<std::size_t>(cfg_.dec_layers));
  return s;
}

Tensor Seq2Seq::decode_step(const Tensor& tokens, DecodeState& state) const {
  TFM_CHECK(tokens.dim() == 2 && tokens.size(1) == 1, "seq2seq: decode_step takes [B, 1] tokens, got ",
            core::shape_str(tokens.shape()));
  AttentionMask self_mask;
  self_mask.causal = true;
  self_mask.q_offset = state.steps;
  AttentionMask mem_mask;
  mem_mask.key_padding = state.mem.src_padding;
  Tensor x = decoder->forward(embed(*tgt_emb, tgt_pos.get(), tokens, state.steps), self_mask, state.mem.states,
                              mem_mask, &state.self, &state.cross);
  state.steps += 1;
  Tensor logits = out_proj ? out_proj->forward(x) : core::matmul(x, tgt_emb->weight, false, true);
  return logits.reshape({tokens.size(0), cfg_.tgt_vocab});
}

}  // namespace tfm::layers
