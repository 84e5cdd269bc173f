// A model rebuilt from a checkpoint: the one place that turns a checkpoint
// into its config, tokenizers and model with the stored parameters (used by
// tfm sample, translate, eval and inspect --attention).
#pragma once

#include <memory>
#include <string>

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
