// What the trainer trains: a Task owns the model, its data and tokenizers,
// and knows how to compute a training loss, evaluate, and put its own state
// (tokenizer, data position, generators) into a checkpoint. The trainer
// (trainer.cpp) owns everything generic: optimizer, schedule, loop,
// logging, checkpoint files.
//   language model (model.family = gpt):        lm_task.cpp
//   translation    (model.family = seq2seq):    translation_task.cpp
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/rng.h"
#include "core/tensor.h"
#include "layers/module.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace tfm::train {

class Task {
 public:
  virtual ~Task() = default;
  virtual const layers::Module& model() const = 0;
  // The mean loss of the next training micro-batch (graph attached);
  // `tokens` receives the number of target tokens it covers. As rank r of a
  // data-parallel group of n (set_shard), the micro-batch is still the
  // global one (the same on every rank) and `tokens` counts all of it, but
  // the loss covers only this rank's contiguous slice (gpt: rows; seq2seq:
  // whole sentences balanced by target tokens, data_parallel.h) and is its
  // share of the global mean: the slice's loss sum over the global count, so
  // the ranks' losses and gradients add up to the one-process ones. An
  // undefined tensor means this rank's slice is empty.
  virtual core::Tensor next_loss(int64_t& tokens) = 0;
  // The memory check before the first step (train.memory_check): calls
  // run(loss) with the loss (graph attached, this rank's share as in
  // next_loss) of each micro-batch among the next `count` that needs the
  // most memory, without moving the data position or drawing dropout numbers
  // that training would see. Returns how many it ran. The default runs
  // none: every micro-batch of the task has the same shape, so the first
  // step is the check.
  virtual int64_t for_each_heaviest(int64_t count, const std::function<void(const core::Tensor&)>& run) {
    (void)count, (void)run;
    return 0;
  }
  // Makes this task rank `rank` of `size` (default 0 of 1).
  void set_shard(int rank, int size) { shard_rank_ = rank, shard_size_ = size; }
  // Validation metrics, e.g. {"val_loss": 1.62} or {"val_loss": ..., "val_bleu": ...}.
  virtual std::map<std::string, double> evaluate() = 0;
  // Task state into / out of a checkpoint: tokenizer(s), data position,
  // data and dropout generators.
  virtual void save_state(CheckpointData& out) const = 0;
  virtual void load_state(const CheckpointData& in, const std::string& origin) = 0;
  // One line for the log: data sizes, vocabulary, parameters.
  virtual std::string describe() const = 0;

 protected:
  int shard_rank_ = 0, shard_size_ = 1;
};

// Builds the task for cfg (model.family). With `resumed`, tokenizers come
// from the checkpoint instead of being trained. Throws tfm::Error on bad data.
std::unique_ptr<Task> make_task(const Config& cfg, const CheckpointData* resumed, const std::string& origin);

std::unique_ptr<Task> make_lm_task(const Config& cfg, const CheckpointData* resumed, const std::string& origin);
std::unique_ptr<Task> make_translation_task(const Config& cfg, const CheckpointData* resumed,
                                            const std::string& origin);

// Generator state helpers for checkpoints.
void save_generator(CheckpointData& out, const std::string& name, const core::Generator& g);
void load_generator(const CheckpointData& in, const std::string& name, core::Generator& g, const std::string& origin);
// The integer attribute `key`, checked to lie in [lo, hi] before anyone uses
// it (a damaged or edited checkpoint must not index out of bounds, reverse
// Adam's bias correction or replay batches for hours). Throws naming
// `origin`, the key, the value and the allowed range.
int64_t checkpoint_int(const CheckpointData& in, const std::string& key, const std::string& origin, int64_t lo,
                       int64_t hi);
// Upper bound for counts of things that each consumed at least one training
// token (windows, batches): the checkpoint's tokens_seen, itself checked.
int64_t checkpoint_tokens_seen(const CheckpointData& in, const std::string& origin);

}  // namespace tfm::train
