// Test helper: a toy translation corpus, English number words -> Spanish
// number words ("three four" -> "tres cuatro"), one pair per line with 1 to
// max_words words, drawn from `g`.
#pragma once

#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"

namespace tfm::test {

inline void write_number_pairs(const std::string& path, int n, int max_words, core::Generator& g) {
  static const std::vector<std::pair<std::string, std::string>> words = {
      {"one", "uno"}, {"two", "dos"},     {"three", "tres"}, {"four", "cuatro"}, {"five", "cinco"},
      {"six", "seis"}, {"seven", "siete"}, {"eight", "ocho"}, {"nine", "nueve"},  {"ten", "diez"}};
  std::ofstream out(path);
  for (int i = 0; i < n; ++i) {
    std::string en, es;
    const int len = 1 + static_cast<int>(g.next_u64() % static_cast<uint64_t>(max_words));
    for (int k = 0; k < len; ++k) {
      const auto& w = words[g.next_u64() % words.size()];
      en += (k ? " " : "") + w.first;
      es += (k ? " " : "") + w.second;
    }
    out << en << "\t" << es << "\n";
  }
}

}  // namespace tfm::test
