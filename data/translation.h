// Translation data: sentence pairs from TSV files, and batches by a token
// budget with length bucketing.
//
// Conventions: source ids are the tokenizer's ids (no BOS/EOS); the decoder
// input is [BOS] + target and the decoder output [target] + [EOS]; padding
// uses pad_id on both sides and is ignored by the loss.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace tfm::data {

struct SentencePair {
  std::string src, tgt;
};

// What read_tsv saw: lines read and blank lines skipped.
struct TsvStats {
  int64_t lines = 0, blank = 0;
};

// Reads `source<TAB>target` lines (UTF-8). Errors name the file and line:
// missing file, invalid UTF-8 (with the byte offset in the line), a line
// without a tab, a line with more than one tab, an empty side, an empty
// corpus, a file of more than one pair that is all one line (CR-only line
// ends, or no line ends at all). Blank lines are skipped and counted in
// `stats`; a leading byte-order mark, CR line ends and whitespace around
// each side are removed.
std::vector<SentencePair> read_tsv(const std::string& path, TsvStats* stats = nullptr);

struct TranslationExample {
  std::vector<int32_t> src, tgt;  // tgt without BOS/EOS
};

struct TranslationBatch {
  core::Tensor src;                        // i32 [B, S], padded with pad_id
  core::Tensor tgt_in;                     // i32 [B, T]: BOS + target, padded
  core::Tensor tgt_out;                    // i32 [B, T]: target + EOS, padded
  int64_t src_tokens = 0, tgt_tokens = 0;  // real (non-pad) tokens of src and tgt_out (target + EOS)
  std::vector<int64_t> indices;            // which examples, in batch order
};

struct SpecialIds {
  int32_t pad = 0, bos = 2, eos = 3;
};

// Pads a set of examples into one batch (in the given order).
TranslationBatch make_batch(const std::vector<TranslationExample>& examples, const std::vector<int64_t>& indices,
                            const SpecialIds& ids);

// Token-budget batches with length bucketing. An epoch is built from the
// generator seed and the epoch number alone: examples are shuffled, sorted
// by length within windows of ~100 batches, cut into batches whose padded
// size (max(src, tgt+1) × count) stays within `batch_tokens`, and the batch
// order is shuffled. The position (batches served) is the whole state, so
// a checkpoint resumes the exact sequence.
class TranslationBatcher {
 public:
  TranslationBatcher(std::vector<TranslationExample> examples, int64_t batch_tokens, SpecialIds ids, uint64_t seed);
  TranslationBatch next();
  // The batch at `position` (batches served before it), without moving the position.
  TranslationBatch at(int64_t position);
  // The positions in [from, from + count) of the batches that may need the
  // most memory: those no other batch in the range matches or exceeds in all
  // of padded source tokens B·S, padded target tokens B·T (the layers'
  // activations, encoder and decoder) and attention scores B·(S² + T² +
  // S·T) (the Pareto front; of equal batches, the first). Whatever the
  // model's memory as a function increasing in the three, its largest batch
  // is among these. In increasing order; builds each epoch in the range once.
  std::vector<int64_t> heaviest(int64_t from, int64_t count);
  int64_t position() const { return position_; }
  void set_position(int64_t p) { position_ = p; }
  std::size_t size() const { return examples_.size(); }

  // Deterministic batches over all examples in length order (evaluation).
  std::vector<TranslationBatch> fixed_batches(int64_t batch_tokens) const;
  const std::vector<TranslationExample>& examples() const { return examples_; }

 private:
  void build_epoch(int64_t epoch);
  const std::vector<int64_t>& indices_at(int64_t position);
  std::vector<TranslationExample> examples_;
  int64_t batch_tokens_;
  SpecialIds ids_;
  uint64_t seed_;
  int64_t position_ = 0;
  int64_t epoch_ = -1;
  std::vector<int64_t> epoch_start_;           // cumulative batch counts of built epochs (position -> epoch)
  std::vector<std::vector<int64_t>> batches_;  // current epoch's batches (example indices)
};

}  // namespace tfm::data
