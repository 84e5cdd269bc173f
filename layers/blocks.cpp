#include "blocks.h"

#include "core/autograd.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/reversible.h"
#include "core/ops.h"

namespace tfm::layers {

TransformerBlock::TransformerBlock(const BlockOptions& opt, bool cross_attention, std::shared_ptr<core::Generator> gen)
    : prenorm_(opt.prenorm) {
  TFM_CHECK(opt.d_ff > 0, "transformer block: d_ff must be positive, got ", opt.d_ff);
  AttentionOptions a;
  a.d_model = opt.d_model;
  a.n_heads = opt.n_heads;
  a.bias = opt.bias;
  a.fused_qkv = opt.fused_qkv;
  a.dropout = opt.dropout;
  a.backend = opt.attention;
  a.backend_options = opt.attention_options;
  a.rope = opt.rope;
  self_attn = register_module("self_attn", std::make_shared<MultiHeadAttention>(a, gen));
  attn_norm = register_module("attn_norm", std::make_shared<Norm>(opt.norm, opt.d_model, opt.norm_eps, opt.bias));
  if (cross_attention) {
    a.fused_qkv = false;
    a.rope = nullptr;
    a.cross_attention = true;
    cross_attn = register_module("cross_attn", std::make_shared<MultiHeadAttention>(a, gen));
    cross_norm = register_module("cross_norm", std::make_shared<Norm>(opt.norm, opt.d_model, opt.norm_eps, opt.bias));
  }
  ffn = register_module("ffn",
                        std::make_shared<FeedForward>(opt.d_model, opt.d_ff, opt.activation, opt.bias, opt.ff_chunks));
  ffn_norm = register_module("ffn_norm", std::make_shared<Norm>(opt.norm, opt.d_model, opt.norm_eps, opt.bias));
  drop_ = register_module("dropout", std::make_shared<Dropout>(opt.dropout, gen));
}

template <class F>
Tensor TransformerBlock::residual(const Tensor& x, const Norm& norm, F sublayer) const {
  if (prenorm_) return core::add(x, drop_->forward(sublayer(norm.forward(x))));
  return norm.forward(core::add(x, drop_->forward(sublayer(x))));
}

void TransformerBlock::count_attention_rows(const Tensor& x) const {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  attention_rows_.fetch_add(rows, std::memory_order_relaxed);
}

Tensor TransformerBlock::forward(const Tensor& x_in, const AttentionMask& self_mask, const Tensor& memory,
                                 const AttentionMask& memory_mask, KVCache* self_cache, KVCache* cross_cache) const {
  count_attention_rows(x_in);
  Tensor x = residual(x_in, *attn_norm,
                      [&](const Tensor& h) { return self_attn->forward(h, Tensor(), self_mask, self_cache); });
  if (cross_attn) {
    TFM_CHECK(memory.defined(), "decoder block: cross-attention needs the encoder output");
    x = residual(x, *cross_norm,
                 [&](const Tensor& h) { return cross_attn->forward(h, memory, memory_mask, cross_cache); });
  }
  return residual(x, *ffn_norm, [&](const Tensor& h) { return ffn->forward(h); });
}

Tensor TransformerBlock::attention_branch(const Tensor& x, const AttentionMask& self_mask, KVCache* self_cache) const {
  TFM_CHECK(prenorm_ && !cross_attn, "transformer block: the attention branch needs a pre-norm block without cross-attention");
  count_attention_rows(x);
  return drop_->forward(self_attn->forward(attn_norm->forward(x), Tensor(), self_mask, self_cache));
}

Tensor TransformerBlock::ffn_branch(const Tensor& x) const {
  TFM_CHECK(prenorm_, "transformer block: the feed-forward branch needs a pre-norm block");
  return drop_->forward(ffn->forward(ffn_norm->forward(x)));
}

core::ReversibleSlices TransformerBlock::ffn_branch_slices(const Tensor& x) const {
  TFM_CHECK(prenorm_, "transformer block: the feed-forward branch needs a pre-norm block");
  TFM_CHECK(x.dim() >= 2, "transformer block: ffn_branch_slices needs x [..., T, D], got ", core::shape_str(x.shape()));
  core::ReversibleSlices s;
  s.dim = x.dim() - 2;
  s.count = ffn->chunks;
  // The mask ffn_branch's drop_->forward(h) would apply to all of x: the same
  // draw from the generator (x.numel() values), 0 or 1/(1 − p) per element,
  // so h·mask is that dropout's output element for element.
  Tensor mask;
  if (drop_->training() && drop_->p > 0.0f) mask = drop_->forward(core::ones(x.shape()));
  s.fn = [this, mask, dim = s.dim](const Tensor& x_slice, int64_t begin, int64_t end) {
    Tensor h = ffn->forward_whole(ffn_norm->forward(x_slice));
    return mask.defined() ? core::mul(h, mask.slice(dim, begin, end)) : h;
  };
  return s;
}

TransformerStack::TransformerStack(const BlockOptions& opt, int64_t n_layers, bool cross_attention,
                                   std::shared_ptr<core::Generator> gen)
    : checkpoint_(opt.checkpoint), reversible_(opt.reversible), gen_(gen) {
  TFM_CHECK(n_layers > 0, "transformer: n_layers must be positive, got ", n_layers);
  TFM_CHECK(!opt.reversible || (opt.prenorm && !cross_attention),
            "transformer: model.reversible needs pre-norm blocks (model.norm_placement = pre) without cross-attention");
  layers = register_module("layers", std::make_shared<ModuleList<TransformerBlock>>());
  for (int64_t i = 0; i < n_layers; ++i) {
    BlockOptions layer = opt;
    if (!opt.attention_pattern.empty()) {
      layer.attention = attention_backend_of_layer(opt.attention, opt.attention_pattern, i);
      layer.attention_options = options_read_by(layer.attention, opt.attention_options);
    }
    layers->push_back(std::make_shared<TransformerBlock>(layer, cross_attention, gen));
  }
  if (opt.prenorm)
    final_norm = register_module("final_norm", std::make_shared<Norm>(opt.norm, opt.d_model, opt.norm_eps, opt.bias));
}

Tensor TransformerStack::forward(const Tensor& x_in, const AttentionMask& self_mask, const Tensor& memory,
                                 const AttentionMask& memory_mask, std::vector<KVCache>* self_caches,
                                 std::vector<KVCache>* cross_caches) const {
  TFM_CHECK(!self_caches || self_caches->size() == layers->size(), "transformer: expected ", layers->size(),
            " self-attention caches, got ", self_caches ? self_caches->size() : 0);
  TFM_CHECK(!cross_caches || cross_caches->size() == layers->size(), "transformer: expected ", layers->size(),
            " cross-attention caches, got ", cross_caches ? cross_caches->size() : 0);
  if (reversible_) {
    TFM_CHECK(!memory.defined() && !cross_caches, "transformer: a reversible stack has no cross-attention");
    Tensor y1 = x_in, y2 = x_in;
    if (self_caches || !core::needs_grad({&x_in})) {
      for (std::size_t i = 0; i < layers->size(); ++i) {
        y1 = core::add(y1, (*layers)[i].attention_branch(y2, self_mask, self_caches ? &(*self_caches)[i] : nullptr));
        y2 = core::add(y2, (*layers)[i].ffn_branch(y1));
      }
    } else {
      std::vector<core::ReversibleLayer> rev;
      for (std::size_t i = 0; i < layers->size(); ++i) {
        const TransformerBlock* block = &(*layers)[i];
        core::ReversibleLayer layer{[block, self_mask](const Tensor& h) { return block->attention_branch(h, self_mask); },
                                    [block](const Tensor& h) { return block->ffn_branch(h); }};
        // A chunked feed-forward is recomputed slice by slice in backward,
        // once (not forward under core::checkpoint and then again).
        if (block->ffn->chunks > 1)
          layer.g_slices = [block](const Tensor& h) { return block->ffn_branch_slices(h); };
        rev.push_back(std::move(layer));
      }
      Tensor y = core::reversible_stack(rev, x_in, x_in, {gen_.get()});
      y1 = y.slice(0, 0, 1).squeeze(0);
      y2 = y.slice(0, 1, 2).squeeze(0);
    }
    return final_norm->forward(core::mul(core::add(y1, y2), 0.5f));
  }
  Tensor x = x_in;
  for (std::size_t i = 0; i < layers->size(); ++i) {
    KVCache* sc = self_caches ? &(*self_caches)[i] : nullptr;
    KVCache* cc = cross_caches ? &(*cross_caches)[i] : nullptr;
    const TransformerBlock* block = &(*layers)[i];
    if (checkpoint_ && !sc && !cc) {
      std::vector<Tensor> inputs{x};
      if (memory.defined()) inputs.push_back(memory);
      x = core::checkpoint(
          [block, self_mask, memory_mask](const std::vector<Tensor>& in) {
            return block->forward(in[0], self_mask, in.size() > 1 ? in[1] : Tensor(), memory_mask);
          },
          inputs, {gen_.get()});
    } else {
      x = block->forward(x, self_mask, memory, memory_mask, sc, cc);
    }
  }
  return final_norm ? final_norm->forward(x) : x;
}

}  // namespace tfm::layers
