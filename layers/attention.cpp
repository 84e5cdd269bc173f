#include "attention.h"

#include <cmath>
#include <limits>

#include "core/autograd.h"
#include "core/error.h"
#include "core/flash_attention.h"
#include "core/ops.h"

namespace tfm::layers {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// softmax(q·kᵀ·scale + bias)·v with every score materialised.
class NaiveAttention final : public AttentionBackend {
 public:
  const char* name() const override { return "naive"; }
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& a) const override {
    Tensor p = attention_probabilities(q, k, a.mask, a.scale);  // [B, H, Tq, Tk]
    if (a.probabilities) *a.probabilities = p;
    if (a.training && a.dropout_p > 0.0f) {
      TFM_CHECK(a.gen != nullptr, "naive attention: dropout needs a generator (AttentionArgs::gen)");
      p = core::dropout(p, a.dropout_p, true, *a.gen);
    }
    return core::matmul(p, v);
  }
};

// The generator the kernel draws dropout from: the call's own when it
// drops, else `unused` (never advanced: the kernel draws nothing).
core::Generator& dropout_generator(const AttentionArgs& a, core::Generator& unused) {
  const bool drop = a.training && a.dropout_p > 0.0f;
  TFM_CHECK(!drop || a.gen != nullptr, "flash attention: dropout needs a generator (AttentionArgs::gen)");
  return drop ? *a.gen : unused;
}

// softmax(q·kᵀ·scale + mask)·v in tiles (core/flash_attention.h).
class FlashAttention final : public AttentionBackend {
 public:
  explicit FlashAttention(const core::FlashOptions& opt) : opt_(opt) {}
  const char* name() const override { return "flash"; }
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& a) const override {
    // The probe reconstructs the weights the kernel applies (the same
    // masked softmax, before dropout) densely: inspection only.
    if (a.probabilities) *a.probabilities = attention_probabilities(q, k, a.mask, a.scale);
    core::Generator unused;
    return core::flash_attention(q, k, v, a.mask, a.scale, a.dropout_p, a.training, dropout_generator(a, unused),
                                 opt_);
  }
  Tensor attend_packed(const Tensor& qkv, int64_t heads, const AttentionArgs& a) const override {
    if (a.probabilities) return {};  // the probe needs q and k apart
    core::Generator unused;
    return core::flash_attention_packed(qkv, heads, a.mask, a.scale, a.dropout_p, a.training,
                                        dropout_generator(a, unused), opt_);
  }

 private:
  core::FlashOptions opt_;
};

// Appends new keys/values ([B, H, Tn, Dh]) to the cache, growing its buffers
// geometrically, and returns views of all valid steps.
std::pair<Tensor, Tensor> cache_append(KVCache& c, const Tensor& k, const Tensor& v) {
  const int64_t tn = k.size(2), need = c.len + tn;
  if (!c.k.defined() || c.k.size(2) < need) {
    const int64_t cap = std::max<int64_t>({need, 16, c.k.defined() ? 2 * c.k.size(2) : 0});
    Tensor nk = core::zeros({k.size(0), k.size(1), cap, k.size(3)});
    Tensor nv = core::zeros({v.size(0), v.size(1), cap, v.size(3)});
    if (c.len > 0) {
      nk.slice(2, 0, c.len).copy_(c.k.slice(2, 0, c.len));
      nv.slice(2, 0, c.len).copy_(c.v.slice(2, 0, c.len));
    }
    c.k = nk;
    c.v = nv;
  }
  TFM_CHECK(c.k.size(0) == k.size(0), "KV cache: batch size changed from ", c.k.size(0), " to ", k.size(0));
  c.k.slice(2, c.len, need).copy_(k);
  c.v.slice(2, c.len, need).copy_(v);
  c.len = need;
  return {c.k.slice(2, 0, need), c.v.slice(2, 0, need)};
}

}  // namespace

AttentionBackendInfo naive_attention_backend() {
  AttentionBackendInfo info;
  info.name = "naive";
  info.help = "every score materialised ([B, H, Tq, Tk]); the reference";
  info.supports.causal = info.supports.key_padding = info.supports.cross_attention = true;
  info.supports.kv_cache = info.supports.dropout = true;
  info.make = [](const AttentionBackendOptions&) { return std::make_shared<NaiveAttention>(); };
  return info;
}

AttentionBackendInfo flash_attention_backend() {
  AttentionBackendInfo info;
  info.name = "flash";
  info.help = "tiled with an online softmax, scores never materialised (FlashAttention-2), own backward";
  info.supports.causal = info.supports.key_padding = info.supports.cross_attention = true;
  info.supports.kv_cache = info.supports.dropout = true;
  info.reads = {"q_tile", "kv_tile"};
  info.make = [](const AttentionBackendOptions& o) {
    core::FlashOptions f;
    f.q_tile = o.q_tile;
    f.kv_tile = o.kv_tile;
    return std::make_shared<FlashAttention>(f);
  };
  return info;
}

Tensor attention_bias(const AttentionMask& mask, int64_t tq, int64_t tk) {
  Tensor bias;
  if (mask.causal) {
    bias = core::zeros({tq, tk});
    float* p = bias.data<float>();
    for (int64_t i = 0; i < tq; ++i)
      for (int64_t j = mask.q_offset + i + 1; j < tk; ++j) p[i * tk + j] = kNegInf;
  }
  if (mask.key_padding.defined()) {
    const Tensor& kp = mask.key_padding;
    TFM_CHECK(kp.dim() == 2 && kp.size(1) == tk, "attention: key_padding ", core::shape_str(kp.shape()),
              " does not match ", tk, " keys (expected [B, ", tk, "])");
    const auto flags = kp.to_vector();
    Tensor pad = core::zeros({kp.size(0), 1, 1, tk});
    float* p = pad.data<float>();
    for (std::size_t i = 0; i < flags.size(); ++i)
      if (flags[i] != 0.0f) p[i] = kNegInf;
    bias = bias.defined() ? core::add(bias, pad) : pad;
  }
  return bias;
}

Tensor attention_probabilities(const Tensor& q, const Tensor& k, const AttentionMask& mask, float scale) {
  Tensor scores = core::matmul(core::mul(q, scale), k, false, true);  // [B, H, Tq, Tk]
  const Tensor bias = attention_bias(mask, q.size(-2), k.size(-2));
  if (bias.defined()) scores = core::add(scores, bias);
  return core::softmax(scores, -1);
}

MultiHeadAttention::MultiHeadAttention(const AttentionOptions& opt, std::shared_ptr<core::Generator> gen)
    : d_model_(opt.d_model),
      n_heads_(opt.n_heads),
      head_dim_(opt.n_heads > 0 ? opt.d_model / opt.n_heads : 0),
      dropout_(opt.dropout),
      info_(attention_backend_info(opt.backend)),
      backend_(make_attention_backend(opt.backend, opt.backend_options)),
      rope_(opt.rope),
      gen_(std::move(gen)) {
  TFM_CHECK(opt.n_heads > 0 && opt.d_model > 0 && opt.d_model % opt.n_heads == 0, "attention: d_model ",
            opt.d_model, " must be a positive multiple of n_heads ", opt.n_heads);
  TFM_CHECK(!rope_ || rope_->head_dim() == head_dim_, "attention: rotary head dim ", rope_ ? rope_->head_dim() : 0,
            " differs from ", head_dim_);
  AttentionFeatures needed;
  needed.cross_attention = opt.cross_attention;
  check_attention_support(opt.backend, needed, "a cross-attention layer");
  if (opt.dropout > 0.0f) {
    needed = {};
    needed.dropout = true;
    check_attention_support(opt.backend, needed, "model.dropout > 0");
  }
  const bool shared_qk = info_->shared_qk;
  if (opt.fused_qkv && shared_qk) {
    qv_proj = register_module("qv_proj", std::make_shared<Linear>(d_model_, 2 * d_model_, opt.bias));
  } else if (opt.fused_qkv) {
    qkv_proj = register_module("qkv_proj", std::make_shared<Linear>(d_model_, 3 * d_model_, opt.bias));
  } else {
    q_proj = register_module("q_proj", std::make_shared<Linear>(d_model_, d_model_, opt.bias));
    if (!shared_qk) k_proj = register_module("k_proj", std::make_shared<Linear>(d_model_, d_model_, opt.bias));
    v_proj = register_module("v_proj", std::make_shared<Linear>(d_model_, d_model_, opt.bias));
  }
  out_proj = register_module("out_proj", std::make_shared<Linear>(d_model_, d_model_, opt.bias));
}

void MultiHeadAttention::check_call(const AttentionMask& mask, bool self, bool cached) const {
  AttentionFeatures used;
  used.causal = mask.causal;
  used.key_padding = mask.key_padding.defined();
  used.cross_attention = !self;
  used.kv_cache = self && cached;
  used.dropout = training() && dropout_ > 0.0f;
  const AttentionFeatures& has = info_->supports;
  if ((used.causal && !has.causal) || (used.key_padding && !has.key_padding) ||
      (used.cross_attention && !has.cross_attention) || (used.kv_cache && !has.kv_cache) ||
      (used.dropout && !has.dropout))
    check_attention_support(info_->name, used, "this attention call");
}

Tensor MultiHeadAttention::split_heads(const Tensor& x) const {
  return x.reshape({x.size(0), x.size(1), n_heads_, head_dim_}).permute({0, 2, 1, 3});
}

Tensor MultiHeadAttention::forward(const Tensor& x, const Tensor& kv_input, const AttentionMask& mask,
                                   KVCache* cache) const {
  TFM_CHECK(x.dim() == 3 && x.size(2) == d_model_, "attention: input ", core::shape_str(x.shape()),
            " is not [B, T, ", d_model_, "]");
  const bool self = !kv_input.defined();
  if (cache) TFM_CHECK(!core::grad_enabled(), "attention: the KV cache is for inference (use NoGradGuard)");
  check_call(mask, self, cache != nullptr);
  AttentionArgs args;
  args.mask = mask;
  args.scale = 1.0f / std::sqrt(static_cast<float>(head_dim_));
  args.dropout_p = dropout_;
  args.training = training();
  args.gen = gen_.get();
  Tensor probabilities;
  if (probe) {
    TFM_CHECK(!core::grad_enabled(), "attention: the probe records only with grad mode off (use NoGradGuard)");
    args.probabilities = &probabilities;
  }
  Tensor q, k, v, o;
  if (self) {
    if (qkv_proj) {
      const Tensor qkv = qkv_proj->forward(x);
      // Read in place when nothing needs q, k and v apart (rotary positions
      // rotate them, the cache stores them): one gradient, no slices.
      if (!rope_ && !cache) o = backend_->attend_packed(qkv, n_heads_, args);
      if (!o.defined()) {
        auto parts = core::split(qkv, d_model_, -1);
        q = parts[0], k = parts[1], v = parts[2];
      }
    } else if (qv_proj) {
      auto parts = core::split(qv_proj->forward(x), d_model_, -1);
      q = parts[0], v = parts[1];
    } else {
      q = q_proj->forward(x), v = v_proj->forward(x);
      if (k_proj) k = k_proj->forward(x);
    }
    if (!o.defined()) {
      q = split_heads(q), v = split_heads(v);
      if (rope_) q = rope_->apply(q, mask.q_offset);
      if (info_->shared_qk) {
        k = q;
      } else {
        k = split_heads(k);
        if (rope_) k = rope_->apply(k, mask.q_offset);
      }
      if (cache) std::tie(k, v) = cache_append(*cache, k, v);
    }
  } else {
    TFM_CHECK(!qkv_proj && !qv_proj, "attention: a fused QKV projection cannot do cross-attention");
    TFM_CHECK(kv_input.dim() == 3 && kv_input.size(2) == d_model_ && kv_input.size(0) == x.size(0),
              "attention: memory ", core::shape_str(kv_input.shape()), " does not match query ",
              core::shape_str(x.shape()));
    q = split_heads(q_proj->forward(x));
    if (cache && cache->frozen) {
      k = cache->k, v = cache->v;
    } else {
      k = split_heads(k_proj->forward(kv_input)), v = split_heads(v_proj->forward(kv_input));
      if (cache) {
        cache->k = k, cache->v = v, cache->len = k.size(2), cache->frozen = true;
      }
    }
  }
  if (!o.defined()) o = backend_->attend(q, k, v, args);  // [B, H, Tq, Dh]
  if (probe) {
    TFM_CHECK(probabilities.defined(), "model.attention = ", info_->name,
              " does not report its attention probabilities, so they cannot be inspected");
    probe->push_back(probabilities);
  }
  o = o.permute({0, 2, 1, 3}).reshape({x.size(0), x.size(1), d_model_});
  return out_proj->forward(o);
}

}  // namespace tfm::layers
