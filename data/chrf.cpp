#include "data/chrf.h"

#include <string_view>
#include <unordered_map>

#include "core/error.h"
#include "data/text.h"

namespace tfm::data {

namespace {

// Python's str.isspace() / str.split() whitespace.
bool py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::u32string prepare(const std::string& s, bool keep_whitespace, const char* what) {
  const std::vector<char32_t> cps = decode_utf8(s, what);
  std::u32string out;
  out.reserve(cps.size());
  for (char32_t c : cps)
    if (keep_whitespace || !py_space(c)) out.push_back(c);
  return out;
}

using Counts = std::unordered_map<std::u32string_view, int64_t>;

Counts ngrams(const std::u32string& s, std::size_t n) {
  Counts c;
  for (std::size_t i = 0; i + n <= s.size(); ++i) ++c[std::u32string_view(s).substr(i, n)];
  return c;
}

void check_options(const ChrfOptions& o) {
  TFM_CHECK(o.char_order >= 1 && o.char_order <= 64, "chrF: char_order = ", o.char_order, " must be in [1, 64]");
  TFM_CHECK(o.beta > 0, "chrF: beta = ", o.beta, " must be positive");
}

std::string trim_ws(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const std::size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace

double chrf_from_stats(const std::vector<int64_t>& hyp_ngrams, const std::vector<int64_t>& ref_ngrams,
                       const std::vector<int64_t>& matches, const ChrfOptions& o) {
  check_options(o);
  const std::size_t order = static_cast<std::size_t>(o.char_order);
  TFM_CHECK(hyp_ngrams.size() == order && ref_ngrams.size() == order && matches.size() == order,
            "chrF: statistics need ", order, " entries per kind (char_order)");
  constexpr double eps = 1e-16;
  const double factor = o.beta * o.beta;
  double score = 0, avg_prec = 0, avg_rec = 0;
  int effective = 0;
  for (std::size_t i = 0; i < order; ++i) {
    const double h = static_cast<double>(hyp_ngrams[i]), r = static_cast<double>(ref_ngrams[i]);
    const double m = static_cast<double>(matches[i]);
    const double prec = h > 0 ? m / h : eps;
    const double rec = r > 0 ? m / r : eps;
    const double denom = factor * prec + rec;
    score += denom > 0 ? (1 + factor) * prec * rec / denom : eps;
    if (h > 0 && r > 0) {
      avg_prec += prec;
      avg_rec += rec;
      ++effective;
    }
  }
  if (o.eps_smoothing) return 100 * score / static_cast<double>(order);
  if (effective == 0) return 0.0;
  avg_prec /= effective;
  avg_rec /= effective;
  if (avg_prec + avg_rec == 0) return 0.0;
  return 100 * (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec);
}

ChrfScore corpus_chrf(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references,
                      const ChrfOptions& o) {
  check_options(o);
  TFM_CHECK(hypotheses.size() == references.size(), "chrF: ", hypotheses.size(), " hypotheses but ",
            references.size(), " references (one reference per hypothesis)");
  TFM_CHECK(!hypotheses.empty(), "chrF: empty corpus");
  const std::size_t order = static_cast<std::size_t>(o.char_order);
  ChrfScore s;
  s.hyp_ngrams.assign(order, 0);
  s.ref_ngrams.assign(order, 0);
  s.matches.assign(order, 0);
  for (std::size_t k = 0; k < hypotheses.size(); ++k) {
    const std::u32string hyp = prepare(hypotheses[k], o.whitespace, "chrF hypothesis");
    const std::u32string ref = prepare(references[k], o.whitespace, "chrF reference");
    for (std::size_t n = 1; n <= order; ++n) {
      const Counts hc = ngrams(hyp, n), rc = ngrams(ref, n);
      int64_t h = 0, r = 0, m = 0;
      for (const auto& [g, c] : hc) {
        h += c;
        const auto it = rc.find(g);
        if (it != rc.end()) m += std::min(c, it->second);
      }
      for (const auto& [g, c] : rc) r += c;
      s.hyp_ngrams[n - 1] += rc.empty() ? 0 : h;  // no reference n-grams: the hypothesis ones do not count
      s.ref_ngrams[n - 1] += r;
      s.matches[n - 1] += m;
    }
  }
  s.score = chrf_from_stats(s.hyp_ngrams, s.ref_ngrams, s.matches, o);
  return s;
}

double exact_match(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references) {
  TFM_CHECK(hypotheses.size() == references.size(), "exact match: ", hypotheses.size(), " hypotheses but ",
            references.size(), " references (one reference per hypothesis)");
  TFM_CHECK(!hypotheses.empty(), "exact match: empty corpus");
  std::size_t same = 0;
  for (std::size_t k = 0; k < hypotheses.size(); ++k) same += trim_ws(hypotheses[k]) == trim_ws(references[k]);
  return 100.0 * static_cast<double>(same) / static_cast<double>(hypotheses.size());
}

}  // namespace tfm::data
