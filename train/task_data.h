// The data rules that training and `tfm eval` must share, one place each:
// where the validation split starts, and which translation pairs fit the
// model.
#pragma once

#include <cstddef>
#include <cstdint>

#include "data/translation.h"

namespace tfm::train {

// A text corpus (gpt) splits like nanoGPT: the first (1 - valid_fraction)
// of its n characters train, the rest validate. Returns the first
// validation character's index.
std::size_t text_validation_start(std::size_t n_chars, double valid_fraction);

// A TSV corpus without data.valid_path holds out its last pairs: this many
// of n (floor(n * valid_fraction)).
std::size_t held_out_pairs(std::size_t n_pairs, double valid_fraction);

// A pair fits a seq2seq model of model.block_size = max_len when neither
// side is empty, the source has at most max_len tokens and the target leaves
// room for BOS (decoder input) / EOS (decoder output).
bool pair_fits(const data::TranslationExample& e, int64_t max_len);

}  // namespace tfm::train
