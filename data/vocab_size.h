// Vocabulary sized to the data: SentencePiece trained at the largest size
// the training text supports.
//
// A size is "supported" when at least 90% of the pieces the model learned
// from the text (neither reserved nor byte nor user-defined pieces, nor
// single characters) occur at least `min_count` times in the training
// sentences encoded with it, counting each appearance inside a longer piece
// too (BPE's intermediate merges live on inside the pieces built from them). Larger vocabularies on the same text learn
// ever rarer pieces, so this holds up to some size and fails beyond it.
//
// data.vocab_size = auto: the largest supported size up to `max_size`,
// searched by bisection over sizes growing by 1.25x from the smallest
// possible one (the reserved pieces and characters plus a few), rounded up
// to multiples of 8. An explicit size is kept when supported; otherwise (or
// when SentencePiece says the text cannot give that many pieces) the same
// search runs below it and `reduced` is set with the reason in `note`.
// Deterministic: the same sentences and settings give the same model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace tfm::data {

struct VocabRule {
  int64_t requested = 0;  // 0: auto
  int64_t max_size = 8000;
  int64_t min_count = 10;
};

struct PieceUsage {
  int64_t learned = 0;  // learned pieces
  int64_t rare = 0;     // of those, occurring fewer than min_count times in the encoded text
  bool supported() const { return rare * 10 <= learned; }
};

PieceUsage piece_usage(const SentencePieceTokenizer& tok, const std::vector<std::string>& sentences,
                       int64_t min_count, const std::vector<std::string>& user_defined_symbols = {});

struct SizedTokenizer {
  SentencePieceTokenizer tokenizer;
  bool reduced = false;  // an explicit size was lowered
  std::string note;      // one line for the log: what was chosen and why
};

// Throws tfm::Error naming `origin` as SentencePieceTokenizer::train does.
SizedTokenizer train_sized(const std::vector<std::string>& sentences, const VocabRule& rule,
                           const SentencePieceOptions& options, const std::string& origin);

}  // namespace tfm::data
