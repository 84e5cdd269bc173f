// `tfm inspect CKPT` and `tfm diff A B`: what a checkpoint holds and how two
// checkpoints differ, as text for people or JSON for scripts.
//
// inspect: a summary (format and tfm version, model family and sizes from the
// stored config, total and per-module parameter counts, step, tokens seen,
// the last training and validation metrics, optimizer and tokenizer, creation
// time), then one row of statistics per parameter. Before anything is
// printed, the parameter shapes are checked against the model the stored
// config describes. --attention writes attention maps (attention_maps.h).
//
// Every problem (unreadable or damaged file, a config that does not match the
// parameters, an unknown tensor name) is one tfm::Error line naming the file.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "layers/gpt.h"
#include "layers/seq2seq.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/loaded_model.h"

namespace tfm::train {

struct InspectArgs {
  std::string checkpoint;  // file or run directory (last.h5)
  bool json = false;       // everything as one JSON object
  bool show_config = false;
  std::string tensor;      // print this tensor's values instead of the table
  bool full = false;       // with tensor: every value, not a truncated view
  std::string filter;      // fnmatch glob on parameter names for the table
  // --attention: per-layer, per-head attention maps as SVG files.
  bool attention = false;
  std::string text;                   // gpt
  std::string source, target;         // seq2seq
  std::string out_dir = "attention_maps";
};

void run_inspect(const InspectArgs& args, std::ostream& out);

struct DiffArgs {
  std::string a, b;    // files or run directories
  bool json = false;
  std::string filter;  // fnmatch glob on parameter names
};

void run_diff(const DiffArgs& args, std::ostream& out);

// Statistics of one tensor. mean, std (population), min, max and the L2
// norm are over the finite values (nullopt when there are none); NaN and
// ±Inf are counted separately.
struct TensorStats {
  int64_t numel = 0, zeros = 0, nan = 0, inf = 0;
  std::optional<double> mean, std, min, max;
  double norm = 0;
};
TensorStats tensor_stats(const core::Tensor& t);

// The parameter group a dotted name belongs to in the summary: everything up
// to the first numeric component ("decoder.layers.0"), else the module path
// without the parameter name, at most two components ("decoder.final_norm",
// "tok_emb").
std::string parameter_group(const std::string& name);

// The model a checkpoint's stored config describes (randomly initialised).
// Vocabulary sizes come from the tokenizer (gpt) or the embedding tables
// (seq2seq). Throws naming `path` when the config cannot describe a model.
FamilyModel build_checkpoint_model(const CheckpointData& ck, const Config& cfg, const std::string& path);

// Throws one line naming `path` and the first mismatches when the stored
// parameters' names or shapes differ from `model`'s.
void check_parameter_shapes(const CheckpointData& ck, const layers::Module& model, const Config& cfg,
                            const std::string& path);

}  // namespace tfm::train
