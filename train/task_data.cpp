#include "train/task_data.h"

namespace tfm::train {

std::size_t text_validation_start(std::size_t n_chars, double valid_fraction) {
  return static_cast<std::size_t>(static_cast<double>(n_chars) * (1.0 - valid_fraction));
}

std::size_t held_out_pairs(std::size_t n_pairs, double valid_fraction) {
  return static_cast<std::size_t>(static_cast<double>(n_pairs) * valid_fraction);
}

bool pair_fits(const data::TranslationExample& e, int64_t max_len) {
  return !e.src.empty() && !e.tgt.empty() && static_cast<int64_t>(e.src.size()) <= max_len &&
         static_cast<int64_t>(e.tgt.size()) + 1 <= max_len;
}

}  // namespace tfm::train
