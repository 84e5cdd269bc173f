// Multi-head attention with pluggable score backends.
//
// Shapes: B batch, H heads, Tq query steps, Tk key steps, Dh = D / H.
// The module projects x to q, k, v ([B, H, T, Dh]), applies rotary positions
// to q and k when configured, hands (q, k, v, mask) to its backend, and
// projects the merged heads back to D.
//
// Backends (chosen by name): "naive" materialises the scores; it is the
// reference every other backend is tested against.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/attention_mask.h"
#include "core/rng.h"
#include "layers/basic.h"
#include "layers/positions.h"

namespace tfm::layers {

using core::AttentionMask;

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual const char* name() const = 0;
  // q [B,H,Tq,Dh], k/v [B,H,Tk,Dh] -> [B,H,Tq,Dh]. Dropout on the attention
  // probabilities with probability dropout_p when training.
  virtual Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask, float scale,
                        float dropout_p, bool training, core::Generator& gen) const = 0;
};

// "naive" (more backends arrive behind the same interface); throws naming
// the allowed values otherwise.
std::shared_ptr<AttentionBackend> make_attention_backend(const std::string& name);

// Additive mask bias broadcastable to [B, 1, Tq, Tk]: 0 where allowed, -inf
// where not; undefined when nothing is masked.
Tensor attention_bias(const AttentionMask& mask, int64_t tq, int64_t tk);

// softmax(q·kᵀ·scale + bias) [B, H, Tq, Tk]: the attention probabilities the
// naive backend materialises (before dropout).
Tensor attention_probabilities(const Tensor& q, const Tensor& k, const AttentionMask& mask, float scale);

// Keys and values of earlier steps, for incremental decoding. k, v are
// [B, H, capacity, Dh] buffers of which the first `len` steps are valid.
struct KVCache {
  Tensor k, v;
  int64_t len = 0;
  bool frozen = false;  // cross-attention: computed once from the encoder output
  void clear() { k = v = Tensor(); len = 0; frozen = false; }
};

struct AttentionOptions {
  int64_t d_model = 0;
  int64_t n_heads = 1;
  bool bias = true;
  bool fused_qkv = false;  // one [3D, D] projection (self-attention only)
  float dropout = 0.0f;    // on attention probabilities
  std::string backend = "naive";
  std::shared_ptr<const RotaryEmbedding> rope;  // null: no rotary positions
};

class MultiHeadAttention : public Module {
 public:
  MultiHeadAttention(const AttentionOptions& opt, std::shared_ptr<core::Generator> gen);

  // Self-attention when `kv_input` is undefined, else cross-attention.
  // x: [B, Tq, D], kv_input: [B, Tk, D] -> [B, Tq, D]. With a cache, keys and
  // values of x are appended to it (self) or computed once (cross) and the
  // attention covers everything cached; mask.q_offset should then be the
  // number of steps cached before this call.
  Tensor forward(const Tensor& x, const Tensor& kv_input, const AttentionMask& mask, KVCache* cache = nullptr) const;

  int64_t n_heads() const { return n_heads_; }
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, qkv_proj, out_proj;

  // Inspection hook (tfm inspect --attention): when set, every forward call
  // appends its attention probabilities [B, H, Tq, Tk] (masked, before
  // dropout) to *probe. Only allowed with grad mode off (NoGradGuard); unset
  // (the default) it costs nothing.
  std::vector<Tensor>* probe = nullptr;

 private:
  Tensor split_heads(const Tensor& x) const;  // [B, T, D] -> [B, H, T, Dh]
  int64_t d_model_, n_heads_, head_dim_;
  float dropout_;
  std::shared_ptr<AttentionBackend> backend_;
  std::shared_ptr<const RotaryEmbedding> rope_;
  std::shared_ptr<core::Generator> gen_;
};

}  // namespace tfm::layers
