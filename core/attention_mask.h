// Which (query, key) pairs of an attention call may interact, described
// without materialising a [Tq, Tk] matrix, so fused kernels (flash, LSH,
// local) can apply it on the fly and the naive backend can build its dense
// additive bias from it.
#pragma once

#include <cstdint>

#include "tensor.h"

namespace tfm::core {

// Query i of this call sits at absolute position q_offset + i; keys sit at
// positions 0 .. Tk-1. With `causal`, query i sees keys j <= q_offset + i
// (top-left alignment shifted by q_offset: a KV-cached decoding step passes
// the number of steps already cached).
// key_padding: f32 [B, Tk], non-zero marks a padded key nobody attends to.
// A query with no visible key gets a zero output.
struct AttentionMask {
  bool causal = false;
  int64_t q_offset = 0;
  Tensor key_padding;
};

}  // namespace tfm::core
