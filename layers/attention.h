// Multi-head attention with pluggable score backends.
//
// Shapes: B batch, H heads, Tq query steps, Tk key steps, Dh = D / H.
// The module projects x to q, k, v ([B, H, T, Dh]), applies rotary positions
// to q and k when configured, hands (q, k, v, mask) to its backend, and
// projects the merged heads back to D.
//
// Backends come from the registry (layers/attention_backend.h) by name;
// "naive" materialises the scores and is the reference every other backend
// is tested against. A backend that shares the query/key projection
// (Reformer LSH) gets k = q, and the module then has no key projection.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/attention_mask.h"
#include "core/rng.h"
#include "layers/attention_backend.h"
#include "layers/basic.h"
#include "layers/positions.h"

namespace tfm::layers {

// The "naive" backend's registry entry: every feature, reads no option,
// builds its dense bias from the AttentionMask (attention_bias).
AttentionBackendInfo naive_attention_backend();
// The "flash" backend's entry: core::flash_attention (tiled, online softmax,
// hand-written backward; the scores are never materialised). Every feature;
// reads q_tile and kv_tile. Its dropout mask and generator use equal naive's,
// so switching between the two keeps runs and resumes consistent.
AttentionBackendInfo flash_attention_backend();

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
  AttentionBackendOptions backend_options;
  bool cross_attention = false;  // the module will attend to another sequence (checked against the backend)
  std::shared_ptr<const RotaryEmbedding> rope;  // null: no rotary positions
};

class MultiHeadAttention : public Module {
 public:
  // Throws when the backend is unknown, its options are invalid, or it
  // cannot do what `opt` asks (dropout > 0, cross-attention).
  MultiHeadAttention(const AttentionOptions& opt, std::shared_ptr<core::Generator> gen);

  // Self-attention when `kv_input` is undefined, else cross-attention.
  // x: [B, Tq, D], kv_input: [B, Tk, D] -> [B, Tq, D]. With a cache, keys and
  // values of x are appended to it (self) or computed once (cross) and the
  // attention covers everything cached; mask.q_offset should then be the
  // number of steps cached before this call. Throws naming model.attention
  // when the call needs a feature the backend lacks (causal or padding mask,
  // cross-attention, KV cache, dropout while training).
  Tensor forward(const Tensor& x, const Tensor& kv_input, const AttentionMask& mask, KVCache* cache = nullptr) const;

  int64_t n_heads() const { return n_heads_; }
  const AttentionBackendInfo& backend_info() const { return *info_; }
  // Separate projections, or qkv_proj [3D, D] when fused. With a shared
  // query/key backend there is no k_proj, and the fused one is qv_proj [2D, D].
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, qkv_proj, qv_proj, out_proj;

  // Inspection hook (tfm inspect --attention): when set, every forward call
  // appends to *probe the attention weights [B, H, Tq, Tk] the backend
  // reports for that call (AttentionArgs::probabilities: masked, before
  // dropout); a backend that reports none is an error. Only allowed with
  // grad mode off (NoGradGuard); unset (the default) it costs nothing.
  std::vector<Tensor>* probe = nullptr;

 private:
  Tensor split_heads(const Tensor& x) const;  // [B, T, D] -> [B, H, T, Dh]
  // Throws naming model.attention when the backend lacks a feature this call uses.
  void check_call(const AttentionMask& mask, bool self, bool cached) const;
  int64_t d_model_, n_heads_, head_dim_;
  float dropout_;
  std::shared_ptr<const AttentionBackendInfo> info_;
  std::shared_ptr<AttentionBackend> backend_;
  std::shared_ptr<const RotaryEmbedding> rope_;
  std::shared_ptr<core::Generator> gen_;
};

}  // namespace tfm::layers
