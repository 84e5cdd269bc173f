// A model rebuilt from a checkpoint: the one place that turns a checkpoint
// into its config, tokenizers and model with the stored parameters (used by
// tfm sample, translate, eval and inspect --attention).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/translation.h"
#include "layers/gpt.h"
#include "layers/seq2seq.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/model_io.h"

namespace tfm::train {

// The model of either family a config describes.
struct FamilyModel {
  std::unique_ptr<layers::GPT> gpt;          // model.family = gpt
  std::unique_ptr<layers::Seq2Seq> seq2seq;  // model.family = seq2seq
  layers::Module& module() const;
};

// The randomly initialised model `cfg` describes for these vocabularies
// (gpt uses src_vocab only). Throws tfm::Error for an invalid description.
FamilyModel build_model(const Config& cfg, int64_t src_vocab, int64_t tgt_vocab, int32_t pad_id);

struct LoadedModel {
  std::string path;  // the checkpoint file
  CheckpointData checkpoint;
  Config cfg;
  TokenizerPair tok;  // gpt: src == tgt
  FamilyModel model;  // stored parameters, eval mode
  // The target tokenizer's pad, bos and eos ids.
  data::SpecialIds ids() const;
};

// What makes a checkpoint unusable although its file reads (a hand-edited
// file without the integrity header passes every format check): parameters
// or optimizer state with NaN/Inf values ("<name>: 3 of 64 values are NaN or
// Inf"), a tokenizer that does not load, whose special ids fall outside its
// vocabulary, or whose vocabulary differs from the embedding rows. One line
// each; empty when the checkpoint is fine. tfm inspect prints them as warnings.
std::vector<std::string> checkpoint_problems(const CheckpointData& checkpoint);

// Throws "<path>: tfm <command> refuses this checkpoint (...)" listing the
// problems above (sample, translate, eval and train --resume call it).
void check_usable(const CheckpointData& checkpoint, const std::string& path, const std::string& command);

// How the data files named by `cfg` differ from the ones the checkpoint was
// trained on (its "data_fingerprint"), and how much of the training file the
// checkpoint's tokenizer maps to its unknown id. No changes when the
// checkpoint has no fingerprint (older files) or the files are the same.
struct DataChange {
  std::vector<std::string> changes;  // fingerprint_changes() lines
  double unknown_fraction = 0;       // of data.path's tokens; 0 if the tokenizer has no unknown id
  std::string summary() const;       // the changes and the fraction as one sentence
};
DataChange data_change(const CheckpointData& checkpoint, const Config& cfg, const std::string& path);
// Up to this fraction of data.path's tokens may be unknown to the
// checkpoint's tokenizer when the data changed (a warning); more means other
// data, and train --resume and eval refuse it.
constexpr double kMaxUnknownFraction = 0.01;

// Loads a checkpoint file or run directory (DIR/last.h5). With `family`
// ("gpt" or "seq2seq") a checkpoint of the other family is rejected:
// "<path>: tfm <command> needs a <family> checkpoint, this one is <other>".
// Throws tfm::Error naming the file for anything it cannot use.
LoadedModel load_model(const std::string& checkpoint_or_run_dir, const std::string& family = "",
                       const std::string& command = "");

// The same for a checkpoint already read from `path`.
LoadedModel load_model(CheckpointData checkpoint, const std::string& path, const std::string& family = "",
                       const std::string& command = "");

}  // namespace tfm::train
