// Local (chunked) self-attention, as the Reformer's local layers: a fused
// kernel with a hand-written backward.
//
// Shapes: B batch, H heads, T length, D head dim; q, k, v [B, H, T, D]
// (separate projections) -> [B, H, T, D].
//
// Variant: positions are cut into chunks of chunk_length (T is padded
// internally to a multiple of it; the caller never picks lengths to please
// the kernel). A query in chunk c sees the keys of chunk c and chunk c − 1
// (one previous chunk, no look-ahead chunk, no wrap-around: chunk 0 sees
// only itself), i.e. query i sees key j iff ⌊j/C⌋ ∈ {⌊i/C⌋ − 1, ⌊i/C⌋}.
// On top of that the mask applies by positions: causal (j <= i) and key
// padding. There is no self-mask. A query that sees no key gets 0. With
// chunk_length >= T this is full attention.
//
// Memory: the node saves q, k, v, the output and the softmax statistics
// [B, H, T, 2] (row max and sum per query); the backward recomputes the scores chunk by chunk, so peak
// memory is O(T · D) per head, never T². Causality is exact: with `causal`
// no output depends on a later token.
//
// local_attention needs mask.q_offset = 0 (self-attention over the whole
// sequence); cached generation uses local_attention_dense, and
// local_backend_attend picks between the two.
#pragma once

#include <cstdint>

#include "core/attention_mask.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "layers/attention_backend.h"

namespace tfm::layers {

struct LocalOptions {
  int64_t chunk_length = 64;
};

// dropout_p in [0, 1): dropout on the attention probabilities (pass 0 when
// not training); its mask comes from gen's counter stream (required when
// dropout_p > 0; replaying gen's state replays it), see
// layers/chunked_attention.h for the exact counter layout.
core::Tensor local_attention(const core::Tensor& q, const core::Tensor& k, const core::Tensor& v,
                             const core::AttentionMask& mask, float scale, const LocalOptions& opt,
                             float dropout_p = 0.0f, core::Generator* gen = nullptr);

// The same rule computed densely (composed core ops, differentiable) for
// queries q [B, H, Tq, D] at positions q_offset + i over keys k, v
// [B, H, Tk, D] at positions 0 .. Tk − 1: the path for cached generation
// (Tq = 1 per step). O(Tq · Tk) memory; no dropout.
core::Tensor local_attention_dense(const core::Tensor& q, const core::Tensor& k, const core::Tensor& v,
                                   const core::AttentionMask& mask, float scale, const LocalOptions& opt);
// Its probabilities [B, H, Tq, Tk], zero outside the window and the mask
// (local_attention_dense = these · v; for a whole sequence they are the
// dense reconstruction of local_attention).
core::Tensor local_attention_probabilities(const core::Tensor& q, const core::Tensor& k,
                                           const core::AttentionMask& mask, float scale, const LocalOptions& opt);

// Adapter with the attention backend's attend() arguments: local_attention
// (dropout_p applied when training, mask from gen) when the call covers the
// whole sequence (q_offset = 0, Tq = Tk), else local_attention_dense (no
// dropout: a cached call is generation).
// When `probabilities` is non-null it receives local_attention_probabilities
// (the weights applied, before dropout).
core::Tensor local_backend_attend(const core::Tensor& q, const core::Tensor& k, const core::Tensor& v,
                                  const core::AttentionMask& mask, float scale, float dropout_p, bool training,
                                  core::Generator& gen, const LocalOptions& opt,
                                  core::Tensor* probabilities = nullptr);

// The registry entry "local" (layers/attention_backend.h): causal and
// key-padding masks, dropout, a KV cache (cached steps use
// local_attention_dense, the same rule), reads chunk_length; self-attention
// only. Dropout needs AttentionArgs::gen.
AttentionBackendInfo local_attention_backend();

}  // namespace tfm::layers
