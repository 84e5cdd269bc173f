// Between configs/checkpoints and models: building a model from a config,
// and copying parameters in and out of checkpoints.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "layers/gpt.h"
#include "train/config.h"

namespace tfm::train {

// The GPT described by the config's model.* keys, for a vocabulary size.
layers::GPTConfig gpt_config(const Config& cfg, int64_t vocab_size);

// Copies checkpoint parameters into the model. Every mismatch (a parameter
// missing from the file, one the model does not have, a shape that differs)
// is collected and reported in one error naming `origin`.
void load_parameters(const layers::Module& model, const std::vector<std::pair<std::string, core::Tensor>>& params,
                     const std::string& origin);

}  // namespace tfm::train
