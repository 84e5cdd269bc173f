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
// mask.q_offset must be 0 (self-attention over the whole sequence). For
// cached generation, a new query at position p sees exactly the cached keys
// from (⌊p/C⌋ − 1)·C (clamped at 0) to p: slice the cache there and run
// dense attention over that window (no special function is needed).
#pragma once

#include <cstdint>

#include "core/attention_mask.h"
#include "core/rng.h"
#include "core/tensor.h"

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

}  // namespace tfm::layers
