// `tfm inspect CKPT --attention`: runs the checkpoint's model once on a text
// (gpt: --text; seq2seq: --source and --target, teacher-forced) with the
// attention probes of layers::MultiHeadAttention switched on, and writes one
// SVG heatmap per layer and head, tokens on the axes:
//   gpt:     OUT/layer<L>_head<H>.svg
//   seq2seq: OUT/encoder_layer<L>_head<H>.svg, OUT/decoder_self_layer<L>_head<H>.svg,
//            OUT/decoder_cross_layer<L>_head<H>.svg
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "train/checkpoint.h"
#include "train/config.h"
#include "tools/inspect.h"

namespace tfm::train {

// Returns the files written (and lists them on `out`). Texts longer than the
// model's context are cut to it. Throws tfm::Error for missing or misplaced
// arguments and for checkpoints that cannot be run.
std::vector<std::string> write_attention_maps(const InspectArgs& args, const std::string& path,
                                              const CheckpointData& ck, std::ostream& out);

// A token as a readable axis label: spaces, tabs and newlines made visible
// (␣ ⇥ ↵), other control characters and invalid UTF-8 replaced, long pieces
// shortened.
std::string visible_token(const std::string& piece);

}  // namespace tfm::train
