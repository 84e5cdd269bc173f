// Language-model data: a token stream split into train and validation
// parts, served as batches of windows with next-token targets.
//
// The split follows nanoGPT: the first (1 − valid_fraction) of the text is
// training data, the rest validation. Batches are drawn from a Generator, so
// (seed, offset) fully determines them and a checkpointed generator state
// resumes the exact sequence of batches.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace tfm::data {

struct LMBatch {
  core::Tensor inputs;   // i32 [B, T]
  core::Tensor targets;  // i32 [B, T]: inputs shifted by one
};

enum class Sampling { random, epoch };

class LMStream {
 public:
  // tokens: the whole split; windows of block_size + 1 tokens are drawn.
  LMStream(std::vector<int32_t> tokens, int64_t block_size, Sampling sampling);
  // A batch of `batch` windows. random: uniform start positions; epoch:
  // a seeded permutation of non-overlapping windows, reshuffled each epoch.
  LMBatch next(int64_t batch, core::Generator& gen);
  // Deterministic batch k of a fixed sequence of windows (validation):
  // the same batches for every evaluation.
  LMBatch fixed(int64_t k, int64_t batch) const;
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t windows() const;
  // Epoch-mode position (part of the training state).
  int64_t epoch_position() const { return epoch_pos_; }
  void set_epoch_position(int64_t pos) { epoch_pos_ = pos; }

 private:
  LMBatch gather(const std::vector<int64_t>& starts) const;
  std::vector<int32_t> tokens_;
  int64_t block_;
  Sampling sampling_;
  int64_t epoch_pos_ = 0;  // windows served so far (epoch mode)
  int64_t perm_epoch_ = -1;  // the epoch whose permutation perm_ holds
  std::vector<int64_t> perm_;
};

}  // namespace tfm::data
