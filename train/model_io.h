// Between configs/checkpoints and models: building a model from a config,
// and copying parameters in and out of checkpoints.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/tokenizer.h"
#include "layers/gpt.h"
#include "layers/seq2seq.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace tfm::train {

// The GPT described by the config's model.* keys, for a vocabulary size.
layers::GPTConfig gpt_config(const Config& cfg, int64_t vocab_size);

// The Seq2Seq described by the config's model.* keys.
layers::Seq2SeqConfig seq2seq_config(const Config& cfg, int64_t src_vocab, int64_t tgt_vocab, int32_t pad_id);

// A translation model's tokenizers: one shared, or one per side. In a
// checkpoint a shared tokenizer is stored as itself; a pair as kind
// "pair:<kind>" whose bytes are [u64 little-endian length of the source
// tokenizer][source bytes][target bytes].
struct TokenizerPair {
  std::shared_ptr<data::Tokenizer> src, tgt;
  bool joint() const { return src == tgt; }
};
void store_tokenizers(CheckpointData& out, const TokenizerPair& t);
TokenizerPair load_tokenizers(const CheckpointData& in, const std::string& origin);

// Every way the checkpoint parameters differ from the model's, one line
// each: "missing from the checkpoint: <name> <shape>", "shape differs: <name>
// is <shape> in the checkpoint, <shape> in the model", "not in the model:
// <name> <shape>". Empty when they match.
std::vector<std::string> parameter_mismatches(const layers::Module& model,
                                              const std::vector<std::pair<std::string, core::Tensor>>& params);

// Copies checkpoint parameters into the model. Every mismatch (a parameter
// missing from the file, one the model does not have, a shape that differs)
// is collected and reported in one error naming `origin`.
void load_parameters(const layers::Module& model, const std::vector<std::pair<std::string, core::Tensor>>& params,
                     const std::string& origin);

}  // namespace tfm::train
