// Decoding for Seq2Seq: greedy and beam search, batched, with the KV caches.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "layers/seq2seq.h"

namespace tfm::layers {

struct DecodeOptions {
  int64_t beam = 1;             // 1: greedy
  float length_penalty = 1.0f;  // GNMT alpha: score / ((5 + len) / 6)^alpha, len counting EOS; 0 disables
  float max_len_ratio = 1.5f;   // at most ratio · source length (non-pad) + 10 tokens, and model max_len
  int32_t bos = 2, eos = 3;
  // Polled before every decoding step (greedy or beam); when it returns
  // true, translate() returns at once with what it has (partial outputs,
  // for the caller to discard). The trainer passes its stop-signal check so
  // SIGINT/SIGTERM ends a BLEU pass within one step. Empty: never stops.
  std::function<bool()> stop;
};

// src: i32 [B, S] padded with the model's pad id. Returns, per sentence, the
// output ids without BOS/EOS. Runs under NoGradGuard; the caller puts the
// model in eval mode.
//
// Beam search keeps `beam` live hypotheses per sentence; of the 2·beam best
// extensions, an EOS among the best `beam` finishes a hypothesis and the
// best non-EOS ones live on. A sentence stops when its best finished score
// cannot be beaten by any live hypothesis (scores only fall as hypotheses
// grow; the penalty is bounded at the length limit) or at the length limit;
// if nothing finished, the best live hypothesis is returned. A sentence's
// result does not depend on the other sentences in the batch.
std::vector<std::vector<int32_t>> translate(const Seq2Seq& model, const core::Tensor& src, const DecodeOptions& opt);

}  // namespace tfm::layers
