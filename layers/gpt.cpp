#include "gpt.h"

#include <cmath>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "layers/heads.h"
#include "layers/init.h"

namespace tfm::layers {

void validate(const GPTConfig& c) {
  TFM_CHECK(c.vocab_size > 0, "gpt: vocab_size must be positive, got ", c.vocab_size);
  TFM_CHECK(c.block_size > 0, "gpt: block_size must be positive, got ", c.block_size);
  TFM_CHECK(c.n_layers > 0, "gpt: n_layers must be positive, got ", c.n_layers);
  head_dim(c.d_model, c.n_heads, "gpt: d_model", "n_heads");
  TFM_CHECK(c.d_ff >= 0, "gpt: d_ff must be >= 0 (0 means 4·d_model), got ", c.d_ff);
  TFM_CHECK(c.dropout >= 0.0f && c.dropout < 1.0f, "gpt: dropout must be in [0, 1), got ", c.dropout);
  TFM_CHECK(c.positions != PositionKind::rope || (c.d_model / c.n_heads) % 2 == 0,
            "gpt: rotary positions need an even head dim, got ", c.d_model / c.n_heads);
  TFM_CHECK(c.positions != PositionKind::sinusoidal || c.d_model % 2 == 0,
            "gpt: sinusoidal positions need an even d_model, got ", c.d_model);
  TFM_CHECK(c.ff_chunks >= 1, "gpt: ff_chunks must be >= 1, got ", c.ff_chunks);
  TFM_CHECK(!c.reversible || c.prenorm, "gpt: reversible layers need pre-norm blocks (model.norm_placement = pre)");
  TFM_CHECK(!c.reversible || !c.checkpoint_activations,
            "gpt: model.reversible and model.checkpoint_activations exclude each other (reversible layers keep no "
            "block activations to checkpoint)");
  AttentionFeatures needed;
  needed.causal = true;
  for (const std::string& name : attention_backends_used(c.attention, c.attention_pattern))
    check_attention_support(name, needed, "a GPT (causal self-attention)");
  check_attention_options(c.attention, c.attention_pattern, c.attention_options);
}

GPT::GPT(const GPTConfig& cfg, uint64_t seed) : cfg_(cfg), gen_(std::make_shared<core::Generator>(seed ^ 0x5eedULL)) {
  validate(cfg);
  if (cfg_.d_ff == 0) cfg_.d_ff = 4 * cfg_.d_model;
  tok_emb = register_module("tok_emb", std::make_shared<Embedding>(cfg_.vocab_size, cfg_.d_model));
  if (cfg_.positions == PositionKind::learned)
    pos_emb = register_module("pos_emb", std::make_shared<Embedding>(cfg_.block_size, cfg_.d_model));
  if (cfg_.positions == PositionKind::sinusoidal) sin_table_ = sinusoidal_table(cfg_.block_size, cfg_.d_model);
  if (cfg_.positions == PositionKind::rope)
    rope_ = std::make_shared<RotaryEmbedding>(cfg_.d_model / cfg_.n_heads, cfg_.block_size, cfg_.rope_base);
  drop_ = register_module("dropout", std::make_shared<Dropout>(cfg_.dropout, gen_));
  BlockOptions b = block_options(cfg_, rope_);
  b.fused_qkv = cfg_.fused_qkv;
  b.reversible = cfg_.reversible;
  b.ff_chunks = cfg_.ff_chunks;
  blocks = register_module("decoder", std::make_shared<TransformerStack>(b, cfg_.n_layers, false, gen_));
  if (!cfg_.tie_embeddings)
    lm_head = register_module("lm_head", std::make_shared<Linear>(cfg_.d_model, cfg_.vocab_size, false));

  init_gpt2(*this, cfg_.n_layers, seed);
}

Tensor GPT::forward(const Tensor& ids, std::vector<KVCache>* caches) const {
  const Tensor x = hidden(ids, caches);
  return lm_head ? lm_head->forward(x) : core::matmul(x, tok_emb->weight, false, true);
}

Tensor GPT::hidden(const Tensor& ids, std::vector<KVCache>* caches) const {
  TFM_CHECK(ids.dim() == 2 && ids.dtype() == core::DType::i32, "gpt: ids must be i32 [B, T], got ",
            core::shape_str(ids.shape()));
  const int64_t T = ids.size(1);
  TFM_CHECK(!caches || static_cast<int64_t>(caches->size()) == cfg_.n_layers, "gpt: expected ", cfg_.n_layers,
            " KV caches (one per layer), got ", caches ? caches->size() : 0);
  const int64_t offset = caches ? (*caches)[0].len : 0;
  TFM_CHECK(offset + T <= cfg_.block_size, "gpt: ", offset + T, " positions exceed block_size ", cfg_.block_size);
  Tensor x = tok_emb->forward(ids);  // [B, T, D]
  if (pos_emb) {
    x = core::add(x, pos_emb->weight.slice(0, offset, offset + T));
  } else if (sin_table_.defined()) {
    x = core::add(x, sin_table_.slice(0, offset, offset + T));
  }
  x = drop_->forward(x);
  AttentionMask mask;
  mask.causal = true;
  mask.q_offset = offset;
  return blocks->forward(x, mask, Tensor(), {}, caches);
}

Tensor GPT::loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index, float label_smoothing) const {
  TFM_CHECK(targets.shape() == ids.shape(), "gpt: targets ", core::shape_str(targets.shape()), " differ from ids ",
            core::shape_str(ids.shape()));
  // The output projection and the cross-entropy in one op: no [B·T, V] logits.
  const Tensor x = hidden(ids).reshape({-1, cfg_.d_model});
  const Tensor& w = lm_head ? lm_head->weight : tok_emb->weight;
  const Tensor b = lm_head ? lm_head->bias : Tensor();
  return core::linear_cross_entropy(x, w, b, targets.reshape({-1}), ignore_index, label_smoothing);
}

std::vector<int32_t> GPT::generate(const std::vector<int32_t>& prompt, int64_t n, const SamplingOptions& opt,
                                   core::Generator& gen, const std::function<void(int32_t)>& on_token) const {
  TFM_CHECK(!prompt.empty(), "generate: the prompt must contain at least one token");
  validate(opt);
  core::NoGradGuard no_grad;
  std::vector<int32_t> seq = prompt;
  std::vector<KVCache> caches = make_caches();
  bool cached = true;
  for (const std::string& name : attention_backends_used(cfg_.attention, cfg_.attention_pattern))
    cached = cached && attention_backend_info(name)->supports.kv_cache;
  std::size_t start = 0;  // the context is seq[start, end)
  auto context = [&]() { return std::vector<int32_t>(seq.begin() + static_cast<std::ptrdiff_t>(start), seq.end()); };
  // Feed `tokens` (after the cached ones, when cached) and return the logits of the last position.
  auto feed = [&](const std::vector<int32_t>& tokens) {
    Tensor logits =
        forward(core::from_vector(tokens, {1, static_cast<int64_t>(tokens.size())}), cached ? &caches : nullptr);
    return logits.slice(1, logits.size(1) - 1, logits.size(1)).contiguous();
  };
  auto prime = [&](std::size_t keep) {
    start = seq.size() - std::min(keep, seq.size());
    for (auto& c : caches) c.clear();
    return feed(context());
  };
  Tensor last = prime(static_cast<std::size_t>(cfg_.block_size));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t next = sample_token(last.data<float>(), cfg_.vocab_size, opt, gen);
    seq.push_back(next);
    if (on_token) on_token(next);
    if (i + 1 == n) break;
    if (static_cast<int64_t>(seq.size() - start) > cfg_.block_size) {
      last = prime(static_cast<std::size_t>(std::max<int64_t>(1, cfg_.block_size / 2)));
    } else {
      last = feed(cached ? std::vector<int32_t>{next} : context());
    }
  }
  return std::vector<int32_t>(seq.begin() + static_cast<std::ptrdiff_t>(prompt.size()), seq.end());
}

}  // namespace tfm::layers
