// chrF (Popović 2015) computed the way sacreBLEU (2.x) computes it by
// default, "chrF2": character n-grams of orders 1..6 over code points, all
// whitespace removed first (Python's str.split() whitespace), beta = 2, and
// per-order hypothesis / reference / match counts summed over the corpus
// before the score. Precision and recall are averaged over the "effective"
// orders (those with hypothesis and reference n-grams) and combined into
// F_beta; eps_smoothing instead averages the per-order F scores with
// chrF++.py's 1e-16 for empty orders. An order whose reference has no
// n-grams in a sentence contributes no hypothesis n-grams either
// (sacreBLEU's _get_match_statistics). Checked against sacreBLEU's own test
// values in tests/test_chrf.cpp.
//
// Exact match: the share of hypotheses equal to their reference after
// trimming surrounding whitespace, in percent.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tfm::data {

struct ChrfOptions {
  int char_order = 6;
  double beta = 2.0;
  bool whitespace = false;     // keep whitespace inside the n-grams (sacreBLEU's whitespace=True)
  bool eps_smoothing = false;  // chrF++.py-style averaging of per-order F scores
};

struct ChrfScore {
  double score = 0.0;  // 0..100
  // Per order 1..char_order, summed over the corpus.
  std::vector<int64_t> hyp_ngrams, ref_ngrams, matches;
};

// One reference per hypothesis. Throws tfm::Error when the counts differ,
// the corpus is empty, the options are out of range or a string is not
// valid UTF-8.
ChrfScore corpus_chrf(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references,
                      const ChrfOptions& options = {});

// chrF from summed statistics (sacreBLEU's CHRF._compute_f_score).
double chrf_from_stats(const std::vector<int64_t>& hyp_ngrams, const std::vector<int64_t>& ref_ngrams,
                       const std::vector<int64_t>& matches, const ChrfOptions& options = {});

// Percentage of hypotheses identical to their reference (both trimmed of
// surrounding whitespace). Throws tfm::Error when the counts differ or the
// corpus is empty.
double exact_match(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references);

}  // namespace tfm::data
