// Checkpoints: one self-describing HDF5 file per checkpoint.
//
// Layout (see docs/checkpoint-format.md):
//   /                 attributes: format = "tfm-checkpoint", format_version,
//                     plus every entry of `meta` (strings) and `ints` (int64)
//   /config           the resolved YAML config text (string dataset)
//   /params/<name>    float32 parameter tensors under their dotted names
//   /optimizer/<slot>/<name>   optimizer state tensors (e.g. exp_avg/...)
//   /rng/<name>       uint64 [2]: (seed, offset) of each generator
//   /tokenizer        the serialized tokenizer (uint8 dataset), attribute kind
//   /metrics          metric history, JSON lines (string dataset)
//
// Saving writes a temporary file in the same directory, flushes it to disk
// and renames it over the target, so a crash at any moment leaves either
// the old or the new file intact. HDF5 builds the file in memory and only
// checked POSIX writes touch the disk, so a full disk is an error naming
// the file ("No space left on device"), never a crash, and the temporary
// is removed. Loading checks the format name and
// version and every dataset's shape before allocating, and reports any
// problem as tfm::Error naming the file and what is wrong.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tfm::train {

inline constexpr const char* kCheckpointFormat = "tfm-checkpoint";
inline constexpr int64_t kCheckpointVersion = 1;

struct CheckpointData {
  std::map<std::string, std::string> meta;  // e.g. tfm_version, created, model_family, optimizer
  std::map<std::string, int64_t> ints;      // e.g. step, tokens_seen, optimizer_steps
  std::string config_yaml;
  std::vector<std::pair<std::string, core::Tensor>> params;
  std::vector<std::pair<std::string, core::Tensor>> optimizer_state;  // "exp_avg/<param>", ...
  std::map<std::string, std::pair<uint64_t, uint64_t>> rng;          // name -> (seed, offset)
  std::string tokenizer_kind;
  std::vector<uint8_t> tokenizer_blob;
  std::string metrics_jsonl;
};

void save_checkpoint(const std::string& path, const CheckpointData& data);
CheckpointData load_checkpoint(const std::string& path);

// True when `path` is an HDF5 file carrying the tfm checkpoint format name
// (cheap: opens the file and reads one attribute). Never throws.
bool is_checkpoint(const std::string& path);

}  // namespace tfm::train
