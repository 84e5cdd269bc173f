// `tfm sample`: text from a GPT checkpoint (the checkpoint alone: config,
// weights and tokenizer are all inside it).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "layers/sampling.h"

namespace tfm::train {

struct SampleArgs {
  std::string checkpoint;  // file or run directory
  std::string prompt = "\n";
  int64_t tokens = 500;
  layers::SamplingOptions sampling;
  uint64_t seed = 0;
};

// Streams the prompt and then each generated piece of text to `out` as soon
// as it is chosen. Throws tfm::Error for bad checkpoints or arguments.
void run_sample(const SampleArgs& args, std::ostream& out);

}  // namespace tfm::train
