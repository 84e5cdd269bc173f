// BLEU as sacreBLEU computes it. Written from sacreBLEU's documented
// behaviour (sacrebleu/metrics/bleu.py, sacrebleu/tokenizers/tokenizer_13a.py
// and tokenizer_re.py); the comments say which Python step each part mirrors.
#include "bleu.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include "core/error.h"
#include "data/text.h"

namespace tfm::data {
namespace {

using U32 = std::u32string;

// Python's str.isspace(): the separators str.split() and str.rstrip() use.
bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

bool is_digit(char32_t c) { return c >= U'0' && c <= U'9'; }

U32 to_u32(const std::string& s, const std::string& origin) {
  const std::vector<char32_t> cps = decode_utf8(s, origin);
  return U32(cps.begin(), cps.end());
}

std::string to_utf8(const U32& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

// str.replace(from, to): every non-overlapping occurrence, left to right.
void replace_all(U32& s, const U32& from, const U32& to) {
  U32 out;
  std::size_t i = 0;
  while (true) {
    const std::size_t j = s.find(from, i);
    if (j == U32::npos) break;
    out.append(s, i, j - i);
    out += to;
    i = j + from.size();
  }
  out.append(s, i, U32::npos);
  s = std::move(out);
}

// The first substitution of tokenizer_re.py: this character class gets a
// space on each side. It covers { | } ~, [ \ ] ^ _ `, space ! " # $ % &,
// ( ) * +, : ; < = > ? @ and /; not ' , - . nor digits or letters.
bool is_split_punct(char32_t c) {
  return (c >= U'{' && c <= U'~') || (c >= U'[' && c <= U'`') || (c >= U' ' && c <= U'&') ||
         (c >= U'(' && c <= U'+') || (c >= U':' && c <= U'@') || c == U'/';
}

bool is_period_comma(char32_t c) { return c == U'.' || c == U','; }

// The regex passes below imitate Python's re.sub: scan left to right, try a
// two-character match at each position, and on a match resume after it.

// ([^0-9])([\.,])  ->  "\1 \2 "
U32 split_period_comma_after_nondigit(const U32& s) {
  U32 out;
  out.reserve(s.size() + s.size() / 4);
  for (std::size_t i = 0; i < s.size();) {
    if (i + 1 < s.size() && !is_digit(s[i]) && is_period_comma(s[i + 1])) {
      out += s[i];
      out += U' ';
      out += s[i + 1];
      out += U' ';
      i += 2;
    } else {
      out += s[i++];
    }
  }
  return out;
}

// ([\.,])([^0-9])  ->  " \1 \2"
U32 split_period_comma_before_nondigit(const U32& s) {
  U32 out;
  out.reserve(s.size() + s.size() / 4);
  for (std::size_t i = 0; i < s.size();) {
    if (i + 1 < s.size() && is_period_comma(s[i]) && !is_digit(s[i + 1])) {
      out += U' ';
      out += s[i];
      out += U' ';
      out += s[i + 1];
      i += 2;
    } else {
      out += s[i++];
    }
  }
  return out;
}

// ([0-9])(-)  ->  "\1 \2 "
U32 split_dash_after_digit(const U32& s) {
  U32 out;
  out.reserve(s.size() + s.size() / 8);
  for (std::size_t i = 0; i < s.size();) {
    if (i + 1 < s.size() && is_digit(s[i]) && s[i + 1] == U'-') {
      out += s[i];
      out += U' ';
      out += U'-';
      out += U' ';
      i += 2;
    } else {
      out += s[i++];
    }
  }
  return out;
}

// str.split() with no separator: runs of whitespace separate, edges ignored.
std::vector<U32> py_split(const U32& s) {
  std::vector<U32> words;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && py_isspace(s[i])) ++i;
    if (i == s.size()) break;
    std::size_t j = i;
    while (j < s.size() && !py_isspace(s[j])) ++j;
    words.emplace_back(s, i, j - i);
    i = j;
  }
  return words;
}

U32 py_rstrip(U32 s) {
  while (!s.empty() && py_isspace(s.back())) s.pop_back();
  return s;
}

// Tokenizer13a.__call__ followed by TokenizerRegexp.__call__.
U32 tokenize_13a_u32(U32 line) {
  replace_all(line, U"<skipped>", U"");
  replace_all(line, U"-\n", U"");
  replace_all(line, U"\n", U" ");
  replace_all(line, U"&quot;", U"\"");
  replace_all(line, U"&amp;", U"&");
  replace_all(line, U"&lt;", U"<");
  replace_all(line, U"&gt;", U">");

  U32 s;
  s.reserve(line.size() * 2 + 2);
  s += U' ';
  for (char32_t c : line) {
    if (is_split_punct(c)) {
      s += U' ';
      s += c;
      s += U' ';
    } else {
      s += c;
    }
  }
  s += U' ';
  s = split_period_comma_after_nondigit(s);
  s = split_period_comma_before_nondigit(s);
  s = split_dash_after_digit(s);

  U32 out;
  for (const U32& w : py_split(s)) {
    if (!out.empty()) out += U' ';
    out += w;
  }
  return out;
}

// BLEU._preprocess_segment (without lowercasing): rstrip, then tokenize.
std::vector<U32> preprocess(const std::string& sent, const std::string& tokenize, const std::string& origin) {
  U32 s = py_rstrip(to_u32(sent, origin));
  if (tokenize == "13a") s = tokenize_13a_u32(std::move(s));
  return py_split(s);
}

// N-gram counts of orders 1..max_order (helpers.extract_all_word_ngrams).
// Tokens hold no whitespace, so a space-joined key identifies the n-gram;
// the order is the number of tokens in it.
struct NgramCounts {
  std::unordered_map<U32, int64_t> counts;
  int64_t length = 0;
};

NgramCounts extract_ngrams(const std::vector<U32>& tokens, int max_order) {
  NgramCounts r;
  r.length = static_cast<int64_t>(tokens.size());
  for (int n = 1; n <= max_order; ++n) {
    for (std::size_t i = 0; i + static_cast<std::size_t>(n) <= tokens.size(); ++i) {
      U32 key = tokens[i];
      for (int k = 1; k < n; ++k) {
        key += U' ';
        key += tokens[i + static_cast<std::size_t>(k)];
      }
      ++r.counts[key];
    }
  }
  return r;
}

int ngram_order(const U32& key) { return 1 + static_cast<int>(std::count(key.begin(), key.end(), U' ')); }

// utils.my_log: log with log(0) floored to a very low number.
double floored_log(double x) { return x == 0.0 ? -9999999999.0 : std::log(x); }

void check_options(const BleuOptions& o) {
  TFM_CHECK(o.tokenize == "13a" || o.tokenize == "none", "BLEU: unknown tokenizer '", o.tokenize,
            "' (this tfm knows 13a and none)");
  TFM_CHECK(o.smooth_method == "exp" || o.smooth_method == "none" || o.smooth_method == "floor" ||
                o.smooth_method == "add-k",
            "BLEU: unknown smooth_method '", o.smooth_method, "' (exp, none, floor or add-k)");
  TFM_CHECK(o.max_ngram_order >= 1, "BLEU: max_ngram_order must be at least 1, got ", o.max_ngram_order);
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace

std::string tokenize_13a(const std::string& line, const std::string& origin) {
  return to_utf8(tokenize_13a_u32(to_u32(line, origin)));
}

std::string BleuScore::format(int width) const {
  std::string s = "BLEU = " + fixed(score, width) + " ";
  for (std::size_t i = 0; i < precisions.size(); ++i) {
    if (i > 0) s += "/";
    s += fixed(precisions[i], 1);
  }
  s += " (BP = " + fixed(bp, 3) + " ratio = " + fixed(ratio, 3) + " hyp_len = " + std::to_string(hyp_len) +
       " ref_len = " + std::to_string(ref_len) + ")";
  return s;
}

BleuScore compute_bleu(const std::vector<int64_t>& correct, const std::vector<int64_t>& total, int64_t hyp_len,
                       int64_t ref_len, const BleuOptions& options) {
  check_options(options);
  const auto N = static_cast<std::size_t>(options.max_ngram_order);
  TFM_CHECK(correct.size() == N && total.size() == N, "BLEU: expected ", N, " n-gram counts per kind, got ",
            correct.size(), " correct and ", total.size(), " total");
  BleuScore r;
  r.counts = correct;
  r.totals = total;
  r.hyp_len = hyp_len;
  r.ref_len = ref_len;
  r.ratio = ref_len != 0 ? static_cast<double>(hyp_len) / static_cast<double>(ref_len) : 0.0;
  if (hyp_len < ref_len)
    r.bp = hyp_len > 0 ? std::exp(1.0 - static_cast<double>(ref_len) / static_cast<double>(hyp_len)) : 0.0;
  else
    r.bp = 1.0;
  r.precisions.assign(N, 0.0);

  // No match at any order: a score of 0 with all precisions 0.
  if (std::all_of(correct.begin(), correct.end(), [](int64_t c) { return c == 0; })) return r;

  const std::string& method = options.smooth_method;
  double value = 0.0;
  if (method == "floor") value = options.smooth_value.value_or(0.1);
  if (method == "add-k") value = options.smooth_value.value_or(1.0);

  double smooth_mteval = 1.0;
  std::size_t eff_order = N;
  for (std::size_t n = 1; n <= N; ++n) {
    double c = static_cast<double>(correct[n - 1]);
    double t = static_cast<double>(total[n - 1]);
    if (method == "add-k" && n > 1) c += value, t += value;
    if (t == 0.0) break;
    if (options.effective_order) eff_order = n;
    if (c == 0.0) {
      if (method == "exp") {
        smooth_mteval *= 2.0;
        r.precisions[n - 1] = 100.0 / (smooth_mteval * t);
      } else if (method == "floor") {
        r.precisions[n - 1] = 100.0 * value / t;
      }
    } else {
      r.precisions[n - 1] = 100.0 * c / t;
    }
  }
  double sum = 0.0;
  for (std::size_t i = 0; i < eff_order; ++i) sum += floored_log(r.precisions[i]);
  r.score = r.bp * std::exp(sum / static_cast<double>(eff_order));
  return r;
}

BleuScore corpus_bleu_multi(const std::vector<std::string>& hypotheses,
                            const std::vector<std::vector<std::string>>& reference_streams,
                            const BleuOptions& options) {
  check_options(options);
  TFM_CHECK(!hypotheses.empty(), "BLEU: no hypotheses to score");
  TFM_CHECK(!reference_streams.empty(), "BLEU: no references given");
  for (std::size_t k = 0; k < reference_streams.size(); ++k)
    TFM_CHECK(reference_streams[k].size() == hypotheses.size(), "BLEU: ", hypotheses.size(),
              " hypotheses but reference stream ", k + 1, " has ", reference_streams[k].size(), " sentences");

  const int N = options.max_ngram_order;
  std::vector<int64_t> correct(static_cast<std::size_t>(N), 0), total(static_cast<std::size_t>(N), 0);
  int64_t hyp_len = 0, ref_len = 0;
  for (std::size_t i = 0; i < hypotheses.size(); ++i) {
    // References: skip empty ones, keep the largest count of each n-gram
    // over the rest, and every length (Metric._cache_references,
    // BLEU._extract_reference_info).
    std::unordered_map<U32, int64_t> ref_max;
    std::vector<int64_t> ref_lens;
    for (std::size_t k = 0; k < reference_streams.size(); ++k) {
      const std::string& ref = reference_streams[k][i];
      if (ref.empty()) continue;
      const std::string origin = "BLEU reference " + std::to_string(i + 1) +
                                 (reference_streams.size() > 1 ? " of stream " + std::to_string(k + 1) : "");
      NgramCounts rc = extract_ngrams(preprocess(ref, options.tokenize, origin), N);
      ref_lens.push_back(rc.length);
      for (auto& [g, c] : rc.counts) {
        int64_t& m = ref_max[g];
        m = std::max(m, c);
      }
    }
    TFM_CHECK(!ref_lens.empty(), "BLEU: sentence ", i + 1, " has an empty reference");

    const NgramCounts hc =
        extract_ngrams(preprocess(hypotheses[i], options.tokenize, "BLEU hypothesis " + std::to_string(i + 1)), N);
    // Closest reference length; ties go to the shorter one.
    int64_t best_len = -1, best_diff = -1;
    for (int64_t len : ref_lens) {
      const int64_t diff = std::llabs(hc.length - len);
      if (best_diff < 0 || diff < best_diff) {
        best_diff = diff;
        best_len = len;
      } else if (diff == best_diff && len < best_len) {
        best_len = len;
      }
    }
    hyp_len += hc.length;
    ref_len += best_len;
    for (const auto& [g, c] : hc.counts) {
      const auto n = static_cast<std::size_t>(ngram_order(g) - 1);
      total[n] += c;
      const auto it = ref_max.find(g);
      if (it != ref_max.end()) correct[n] += std::min(c, it->second);
    }
  }
  return compute_bleu(correct, total, hyp_len, ref_len, options);
}

BleuScore corpus_bleu(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references,
                      const BleuOptions& options) {
  TFM_CHECK(hypotheses.size() == references.size(), "BLEU: ", hypotheses.size(), " hypotheses but ",
            references.size(), " references");
  return corpus_bleu_multi(hypotheses, {references}, options);
}

}  // namespace tfm::data
