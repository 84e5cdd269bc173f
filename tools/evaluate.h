// `tfm translate` and `tfm eval`: using checkpoints without training.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

namespace tfm::train {

struct TranslateArgs {
  std::string checkpoint;  // file or run directory
  std::string input;       // file; empty: standard input
  int64_t beam = 4;
  float length_penalty = 1.0f;
  float max_len_ratio = 1.5f;
  int64_t batch_size = 32;  // sentences per batch
};

// One source sentence per input line -> one translation per output line,
// in input order (batches are formed by length internally).
void run_translate(const TranslateArgs& args, std::istream& in, std::ostream& out);

struct EvalArgs {
  std::string checkpoint;
  std::string split = "valid";  // valid | test
  std::string data;             // overrides the config's data file for the split
  int64_t beam = 4;             // translation: beam for BLEU
  float length_penalty = 1.0f;
  int64_t batch_size = 32;
};

// LM: loss, perplexity, bits per character over the whole split.
// Translation: loss and perplexity per target token, corpus BLEU
// (sacreBLEU's default: 13a tokenization, brevity penalty), chrF2
// (sacreBLEU's default chrF) and exact-match accuracy of the split.
void run_eval(const EvalArgs& args, std::ostream& out);

}  // namespace tfm::train
