// Internal: the chunked attention kernel shared by LSH attention
// (layers/lsh_attention.h) and local attention (layers/local_attention.h).
// Not part of the public API; use those headers.
//
// One problem per (batch, head) row of length T, padded to Tp (a multiple
// of `chunk`). For each round r, `order` lists the items of the row in
// their sorted order: order[r·Tp + s] is the original position of the s-th
// sorted item (positions >= T are internal padding). The sorted sequence of
// a round is cut into Tp / chunk chunks; a query in chunk c attends to the
// keys of chunk c and of chunk c − 1 (chunk 0 looks back at the round's last
// chunk when `wrap`, at nothing otherwise; with a single chunk only to
// itself, so no key is counted twice in a round). Then, by original
// positions: padding keys (internal or key_ok == 0) are excluded, with
// `causal` keys after the query are excluded, and with `self_mask` a query's
// own key scores kSelfMaskScore instead of its dot product (so it is used
// only when nothing else is visible).
//
// The rounds are combined by their log-sum-exps, o = Σ_r softmax_r(lse_r)·o_r,
// which equals one softmax over all (round, key) pairs a query sees. The
// forward keeps per query only the output and the softmax statistics
// (m, l): the maximum score and Σ exp(s − m) over all its (round, key)
// pairs (l = 0 when the query sees no key; its output is 0). They are kept
// apart rather than as L = m + log l because a float L near the self-mask
// score −1e5 has a resolution of 0.008, enough to skew exp(s − L). The
// backward recomputes the scores chunk by chunk from q, k, v, O, m and l
// (FlashAttention style), so memory is O(T·(D + rounds)) per head, never T².
//
// Dropout (probability dropout > 0) acts on the normalised probabilities
// P(round r, query t, key j), scaling kept ones by 1/(1 − p). The pair's
// uniform is word n % 4 of philox4x32(dropout_seed, dropout_first + n / 4)
// with n = ((r·B·H + b·H + h)·T + t)·T + j, kept when >= p: exactly the
// mask core::dropout draws for round r's dense [B, H, T, T] probabilities
// from counter dropout_first + r·B·H·T·T / 4. The backward regenerates it.
//
// Threads: OpenMP over batch·heads; each (b, h) is processed sequentially,
// so results are deterministic and independent of the thread count.
#pragma once

#include <cstdint>

#include "core/rng.h"
#include "core/tensor.h"

namespace tfm::layers::detail {

inline constexpr float kSelfMaskScore = -1e5f;

struct ChunkedLayout {
  int64_t batch = 0, heads = 0, length = 0, padded_length = 0, dim = 0;
  int64_t chunk = 0, rounds = 1;
  bool wrap = false, self_mask = false, causal = false;
  float dropout = 0.0f;  // in [0, 1)
  uint64_t dropout_seed = 0, dropout_first = 0;
};

// Counters a call with dropout reserves: ⌈rounds·B·H·T·T / 4⌉.
uint64_t chunked_dropout_counters(const ChunkedLayout& lay);

// Checks p (naming `op`) and, when p > 0, reserves the layout's dropout
// counters from gen (which must then be non-null).
void set_dropout(ChunkedLayout& lay, float p, core::Generator* gen, const char* op);

// q, k, v: contiguous f32 [B, H, T, D]; order: contiguous i32
// [B, H, rounds, Tp] or undefined for the identity (rounds must be 1);
// key_ok: contiguous f32 [B, T] (non-zero: usable key) or undefined.
// Returns out [B, H, T, D]; writes stats [B, H, T, 2] = (m, l) per query.
core::Tensor chunked_attention_forward(const ChunkedLayout& lay, const core::Tensor& q, const core::Tensor& k,
                                       const core::Tensor& v, const core::Tensor& order, const core::Tensor& key_ok,
                                       float scale, core::Tensor& stats);

struct ChunkedGrads {
  core::Tensor dq, dk, dv;  // [B, H, T, D] each
};

// The exact gradient of chunked_attention_forward for the same layout,
// order and masks, given its out and stats and dLoss/dout (contiguous).
ChunkedGrads chunked_attention_backward(const ChunkedLayout& lay, const core::Tensor& q, const core::Tensor& k,
                                        const core::Tensor& v, const core::Tensor& order,
                                        const core::Tensor& key_ok, float scale, const core::Tensor& out,
                                        const core::Tensor& stats, const core::Tensor& grad_out);

}  // namespace tfm::layers::detail
