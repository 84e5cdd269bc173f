// Corpus BLEU computed the way sacreBLEU (2.x) computes it by default:
// the "13a" tokenizer (mteval-v13a), n-grams up to order 4, "exp" smoothing,
// mixed case, brevity penalty over the whole corpus, no effective order.
// Scores, precisions and the format() line agree with sacreBLEU's
// BLEU().corpus_score(hyps, [refs]) (see tests/test_bleu.cpp for the values
// checked against sacreBLEU's own tests and README).
//
// Differences from sacreBLEU, all on inputs it does not score either:
// mismatched hypothesis/reference counts and an empty corpus throw tfm::Error
// (sacreBLEU silently truncates to the shorter stream or fails in Python), as
// does text that is not valid UTF-8. Only the "13a" and "none" tokenizers
// exist here, and there is no lowercasing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tfm::data {

// sacreBLEU's 13a tokenizer applied to one segment (sacreBLEU also strips
// trailing whitespace before calling it, which corpus_bleu does too):
// drops "<skipped>", joins "-\n" line breaks, turns other newlines into
// spaces, unescapes &quot; &amp; &lt; &gt;, splits off punctuation
// ({|}~[\]^_` !"#$%&()*+:;<=>?@/), splits off periods and commas except
// between digits, splits a dash that follows a digit, and collapses
// whitespace (Unicode whitespace, as Python's str.split()). Input is UTF-8;
// invalid UTF-8 throws tfm::Error naming `origin`.
std::string tokenize_13a(const std::string& line, const std::string& origin = "13a tokenizer input");

struct BleuOptions {
  std::string tokenize = "13a";       // "13a" or "none" (split on whitespace only)
  std::string smooth_method = "exp";  // "exp", "none", "floor" or "add-k"
  // Value for "floor" / "add-k"; unset means sacreBLEU's defaults (0.1 / 1).
  std::optional<double> smooth_value;
  int max_ngram_order = 4;
  // Average only over the n-gram orders the hypothesis has (sacreBLEU's
  // effective_order, meant for sentence-level BLEU).
  bool effective_order = false;
};

struct BleuScore {
  double score = 0.0;               // 0..100
  std::vector<int64_t> counts;      // matched n-grams per order 1..N (before any add-k)
  std::vector<int64_t> totals;      // hypothesis n-grams per order 1..N
  std::vector<double> precisions;   // per order, in percent, after smoothing
  double bp = 0.0;                  // brevity penalty
  double ratio = 0.0;               // hyp_len / ref_len (0 when ref_len is 0)
  int64_t hyp_len = 0, ref_len = 0;  // tokens; ref_len sums the closest reference lengths

  // sacreBLEU's line, e.g.
  // "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)";
  // `width` is the number of decimals of the score.
  std::string format(int width = 2) const;
};

// One reference per hypothesis. Throws tfm::Error when the counts differ,
// the corpus is empty, a reference is the empty string (sacreBLEU refuses
// those too) or the options are unknown.
BleuScore corpus_bleu(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references,
                      const BleuOptions& options = {});

// Several reference streams (sacreBLEU's `refs` argument: one vector per
// reference set, each as long as `hypotheses`). An empty string in a stream
// means "no reference from this stream for this sentence"; every sentence
// needs at least one.
BleuScore corpus_bleu_multi(const std::vector<std::string>& hypotheses,
                            const std::vector<std::vector<std::string>>& reference_streams,
                            const BleuOptions& options = {});

// BLEU from sufficient statistics (sacreBLEU's BLEU.compute_bleu):
// correct/total n-gram counts per order and the corpus lengths.
BleuScore compute_bleu(const std::vector<int64_t>& correct, const std::vector<int64_t>& total, int64_t hyp_len,
                       int64_t ref_len, const BleuOptions& options = {});

}  // namespace tfm::data
