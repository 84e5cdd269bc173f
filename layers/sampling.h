// Choosing the next token from logits: greedy, temperature, top-k, top-p.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace tfm::layers {

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy (argmax)
  int64_t top_k = 0;         // 0: no limit
  float top_p = 1.0f;        // nucleus: smallest set with probability >= top_p
};

// Samples an index from one row of logits. Consumes one counter of `gen`
// (none when greedy), so a seed reproduces the sequence.
int32_t sample_token(const float* logits, int64_t n, const SamplingOptions& opt, core::Generator& gen);

// Index of the largest logit (the first on ties).
int32_t argmax(const float* logits, int64_t n);

void validate(const SamplingOptions& opt);  // throws naming the bad option

}  // namespace tfm::layers
