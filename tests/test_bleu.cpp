// BLEU against values published by sacreBLEU itself (github.com/mjpost/sacrebleu):
//   [README]  README.md, "Using SacreBLEU from Python" and "Variable Number of
//             References" (the dog/man example printed by BLEU().corpus_score).
//   [T-BLEU]  test/test_bleu.py (test_corpus_bleu_cases, test_raw_bleu_cases,
//             test_case_effective_order, test_case_statistics, test_case_offset,
//             test_case_scoring, test_case_degenerate_stats, test_bleu_max_order).
//   [T-SENT]  test/test_sentence_bleu.py (test_cases / test_cases_zero_bleu for
//             sentence_score with effective_order=True).
// sacreBLEU's raw_corpus_bleu(hyps, refs, v) is corpus_bleu with
// smooth_method='floor', smooth_value=v, tokenize='none', effective_order=True
// (sacrebleu/compat.py); its sentence_score is the corpus score of one segment.
// Tolerances are the ones those tests use (1e-8 on score/100, 1e-3 on the
// sentence scores) except where the published value is itself rounded.
#include <catch2/catch.hpp>

#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "data/bleu.h"

using namespace tfm::data;
using Catch::Matchers::Contains;

namespace {

// The README / test_bleu.py example: three hypotheses, two reference streams.
const std::vector<std::string> kHyps = {"The dog bit the man.", "It wasn't surprising.",
                                        "The man had just bitten him."};
const std::vector<std::vector<std::string>> kRefs = {
    {"The dog bit the man.", "It was not unexpected.", "The man bit him first."},
    {"The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."},
};

BleuOptions raw(double floor_value) {  // sacrebleu.raw_corpus_bleu
  BleuOptions o;
  o.tokenize = "none";
  o.smooth_method = "floor";
  o.smooth_value = floor_value;
  o.effective_order = true;
  return o;
}

BleuOptions sentence(const std::string& method, std::optional<double> value, const std::string& tok = "13a") {
  BleuOptions o;
  o.smooth_method = method;
  o.smooth_value = value;
  o.tokenize = tok;
  o.effective_order = true;
  return o;
}

}  // namespace

TEST_CASE("BLEU: sacreBLEU's README corpus example, default settings", "[bleu]") {
  const BleuScore s = corpus_bleu_multi(kHyps, kRefs);
  CHECK(s.score == Approx(48.530827).margin(1e-6));  // [T-BLEU] test_corpus_bleu_cases, {}
  // [README] "Out[3]: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)"
  CHECK(s.format() == "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)");
  CHECK(s.counts == std::vector<int64_t>{14, 7, 5, 3});
  CHECK(s.totals == std::vector<int64_t>{17, 14, 11, 8});
  CHECK(s.hyp_len == 17);
  CHECK(s.ref_len == 18);
  CHECK(s.bp == Approx(std::exp(1.0 - 18.0 / 17.0)));
  CHECK(s.ratio == Approx(17.0 / 18.0));

  // [T-BLEU] the same numbers with tokenize '13a' spelled out and with no
  // smoothing (no order has zero matches, so smoothing changes nothing).
  BleuOptions o;
  o.tokenize = "13a";
  CHECK(corpus_bleu_multi(kHyps, kRefs, o).score == Approx(48.530827).margin(1e-6));
  o.smooth_method = "none";
  CHECK(corpus_bleu_multi(kHyps, kRefs, o).score == Approx(48.530827).margin(1e-6));
  // [T-BLEU] tokenize 'none'.
  o = {};
  o.tokenize = "none";
  CHECK(corpus_bleu_multi(kHyps, kRefs, o).score == Approx(49.1919566).margin(1e-6));
}

TEST_CASE("BLEU: empty hypotheses score 0 and are not dropped", "[bleu]") {
  // [T-BLEU] test_corpus_bleu_cases: (('', '', ''), _refs, {}, 0.0)
  const BleuScore s = corpus_bleu_multi({"", "", ""}, kRefs);
  CHECK(s.score == 0.0);
  CHECK(s.hyp_len == 0);
  CHECK(s.bp == 0.0);
  // The rest of the line follows from the definitions (sacreBLEU publishes
  // only the score here): BP = 0 for an empty system output, ref_len = 6+5+6.
  CHECK(s.format() == "BLEU = 0.00 0.0/0.0/0.0/0.0 (BP = 0.000 ratio = 0.000 hyp_len = 0 ref_len = 17)");
}

TEST_CASE("BLEU: variable number of references (an empty one is skipped)", "[bleu]") {
  // [README] "Variable Number of References": the first reference of the first
  // stream replaced by ''.
  auto refs = kRefs;
  refs[0][0] = "";
  CHECK(corpus_bleu_multi(kHyps, refs).format() ==
        "BLEU = 29.44 82.4/42.9/27.3/12.5 (BP = 0.889 ratio = 0.895 hyp_len = 17 ref_len = 19)");
}

TEST_CASE("BLEU: max n-gram order", "[bleu]") {
  // [T-BLEU] test_bleu_max_order: f"{bleu.score:.2f}" for orders 1..6.
  const std::vector<std::string> expected = {"77.65", "60.50", "53.93", "48.53", "46.14", "43.28"};
  for (int order = 1; order <= 6; ++order) {
    BleuOptions o;
    o.max_ngram_order = order;
    const BleuScore s = corpus_bleu_multi(kHyps, kRefs, o);
    INFO("order " << order);
    CHECK(s.format().substr(7, 5) == expected[static_cast<std::size_t>(order - 1)]);
    CHECK(s.precisions.size() == static_cast<std::size_t>(order));
  }
}

TEST_CASE("BLEU: single reference stream, default settings", "[bleu]") {
  // Derived by hand from the same sentences scored against the first reference
  // stream only (13a tokens; matches 12/17, 6/14, 4/11, 3/8; 17 = 17 tokens so
  // BP = 1): 100 * (12/17 * 6/14 * 4/11 * 3/8)^(1/4).
  const BleuScore s = corpus_bleu(kHyps, kRefs[0]);
  const double expected = 100.0 * std::pow(12.0 / 17 * 6.0 / 14 * 4.0 / 11 * 3.0 / 8, 0.25);
  CHECK(s.score == Approx(expected).epsilon(1e-12));
  CHECK(s.format() == "BLEU = 45.07 70.6/42.9/36.4/37.5 (BP = 1.000 ratio = 1.000 hyp_len = 17 ref_len = 17)");
  // A perfect match is 100 whatever the tokenization.
  const BleuScore p = corpus_bleu(kRefs[1], kRefs[1]);
  CHECK(p.score == Approx(100.0).epsilon(1e-12));
  CHECK(p.format() == "BLEU = 100.00 100.0/100.0/100.0/100.0 (BP = 1.000 ratio = 1.000 hyp_len = 19 ref_len = 19)");
}

TEST_CASE("BLEU: raw_corpus_bleu cases (floor smoothing, no tokenization, effective order)", "[bleu]") {
  // [T-BLEU] test_raw_bleu_cases, expected values are score / 100.
  CHECK(corpus_bleu({"this is a test", "another test"}, {"ref1", "ref2"}, raw(0.01)).score == 0.0);  // #141
  CHECK(corpus_bleu({"this is a test"}, {"this is a test"}, raw(0.01)).score / 100 ==
        Approx(1.0).margin(1e-8));
  CHECK(corpus_bleu({"this is a fest"}, {"this is a test"}, raw(0.01)).score / 100 ==
        Approx(0.223606797749979).margin(1e-8));
  // [T-BLEU] test_case_effective_order.
  CHECK(corpus_bleu({"test"}, {"a test"}, raw(0.01)).score / 100 == Approx(0.3678794411714425).margin(1e-8));
  CHECK(corpus_bleu({"a test"}, {"a test"}, raw(0.01)).score / 100 == Approx(1.0).margin(1e-8));
  CHECK(corpus_bleu({"a little test"}, {"a test"}, raw(0.01)).score / 100 ==
        Approx(0.03218297948685433).margin(1e-8));
  // [T-BLEU] test_case_statistics.
  const BleuScore st = corpus_bleu({"am I am a character sequence"}, {"I am a symbol string sequence a a"}, raw(0.01));
  CHECK(st.counts == std::vector<int64_t>{4, 2, 1, 0});
  CHECK(st.totals == std::vector<int64_t>{6, 5, 4, 3});
  // [T-BLEU] test_case_offset: floor 0 gives 0, sacreBLEU's default floor 0.1 gives 0.1555722182.
  CHECK(corpus_bleu({"am I am a character sequence"}, {"I am a symbol string sequence a a"}, raw(0.0)).score == 0.0);
  BleuOptions dflt = raw(0.0);
  dflt.smooth_value.reset();
  CHECK(corpus_bleu({"am I am a character sequence"}, {"I am a symbol string sequence a a"}, dflt).score / 100 ==
        Approx(0.1555722182).margin(1e-8));
}

TEST_CASE("BLEU: from sufficient statistics", "[bleu]") {
  // [T-BLEU] test_case_scoring (compute_bleu's own default is smooth 'none').
  BleuOptions none;
  none.smooth_method = "none";
  CHECK(compute_bleu({9, 7, 5, 3}, {10, 8, 6, 4}, 11, 11, none).score / 100 == Approx(0.8375922397).margin(1e-8));
  // [T-BLEU] test_case_degenerate_stats: floor smoothing, exact zeros.
  struct Case {
    std::vector<int64_t> correct, total;
    int64_t hyp, ref;
    double floor;
  };
  const std::vector<Case> cases = {
      {{0, 0, 0, 0}, {4, 4, 2, 1}, 0, 1, 0.0},      {{0, 0, 0, 0}, {10, 11, 12, 0}, 14, 10, 0.0},
      {{0, 0, 0, 0}, {0, 0, 0, 0}, 0, 0, 0.0},      {{6, 5, 4, 0}, {6, 5, 4, 3}, 6, 6, 0.0},
      {{0, 0, 0, 0}, {0, 0, 0, 0}, 0, 0, 0.1},      {{0, 0, 0, 0}, {0, 0, 0, 0}, 1, 5, 0.01},
  };
  for (const Case& c : cases) {
    BleuOptions o;
    o.smooth_method = "floor";
    o.smooth_value = c.floor;
    CHECK(compute_bleu(c.correct, c.total, c.hyp, c.ref, o).score == 0.0);
  }
  // exp smoothing: the first order without matches gets 1/(2 * total), the next 1/(4 * total), ...
  const BleuScore e = compute_bleu({5, 2, 0, 0}, {6, 5, 4, 3}, 6, 6);
  CHECK(e.precisions[2] == Approx(100.0 / (2 * 4)));
  CHECK(e.precisions[3] == Approx(100.0 / (4 * 3)));
  CHECK(e.score == Approx(100.0 * std::pow(5.0 / 6 * 2.0 / 5 * 1.0 / 8 * 1.0 / 12, 0.25)));
  CHECK_THROWS_AS(compute_bleu({1, 2}, {3, 4, 5, 6}, 1, 1), tfm::Error);
}

TEST_CASE("BLEU: sentence scores with every smoothing method", "[bleu]") {
  // [T-SENT] REF/SYS from sacreBLEU issue #98. The reference spells
  // "productia" with t-cedilla (U+0163), the hypothesis with t-comma (U+021B).
  const std::string ref = "produc\xC5\xA3ia de zah\xC4\x83r brut se exprim\xC4\x83 \xC3\xAEn zah\xC4\x83r alb;";
  const std::string sys =
      "Produc\xC8\x9Bia de zah\xC4\x83r prim\xC4\x83 va fi exprimat\xC4\x83 \xC3\xAEn ceea ce "
      "prive\xC8\x99te zah\xC4\x83rul alb;";
  struct Case {
    std::string method;
    std::optional<double> value;
    std::string tok;
    double expected;
  };
  const std::vector<Case> cases = {
      {"exp", std::nullopt, "13a", 8.493},     {"none", std::nullopt, "13a", 0.0},
      {"floor", std::nullopt, "13a", 4.51688}, {"floor", 0.1, "13a", 4.51688},
      {"floor", 0.5, "13a", 10.10},            {"add-k", std::nullopt, "13a", 14.882},
      {"add-k", 1.0, "13a", 14.882},           {"add-k", 2.0, "13a", 21.389},
      {"exp", std::nullopt, "none", 7.347},
  };
  for (const Case& c : cases) {
    INFO(c.method << " " << (c.value ? std::to_string(*c.value) : "default") << " " << c.tok);
    CHECK(corpus_bleu({sys}, {ref}, sentence(c.method, c.value, c.tok)).score == Approx(c.expected).margin(1e-3));
  }
  // [T-SENT] test_cases_zero_bleu (issue #141): no matching n-gram at all.
  for (const Case& c : std::vector<Case>{{"exp", std::nullopt, "13a", 0},
                                         {"none", std::nullopt, "13a", 0},
                                         {"floor", std::nullopt, "13a", 0},
                                         {"floor", 0.1, "13a", 0},
                                         {"add-k", std::nullopt, "13a", 0},
                                         {"add-k", 1.0, "13a", 0}}) {
    INFO(c.method);
    CHECK(corpus_bleu({"this is a cat"}, {"okay thanks"}, sentence(c.method, c.value, c.tok)).score == 0.0);
  }
}

TEST_CASE("BLEU: 13a tokenizer on tricky strings", "[bleu]") {
  // Expected outputs are what sacreBLEU's Tokenizer13a gives: its replace
  // steps, then tokenizer_re.py's four regex substitutions under Python's
  // re.sub, then ' '.join(line.split()) (checked by running those regexes
  // through Python's re module).
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"Hello, world!", "Hello , world !"},
      // Periods and commas stay inside numbers; other periods split.
      {"The price is $1,234.56 today.", "The price is $ 1,234.56 today ."},
      {"It costs 3.5 million, i.e. a lot...", "It costs 3.5 million , i . e . a lot . . ."},
      {"U.S.A. 1.000.000,50", "U . S . A . 1.000.000,50"},
      {"1.a a.1 1,a a,1", "1 . a a . 1 1 , a a , 1"},
      {"e.g.,1.2,3 end.", "e . g . ,1.2,3 end ."},
      {"x..y,,z", "x . . y , , z"},
      {"3..4", "3 . . 4"},
      {"3.-4", "3 . -4"},
      // HTML entities are unescaped once, in this order.
      {"He said &quot;no&quot; &amp; left &lt;3 &gt;:(", "He said \" no \" & left < 3 > : ("},
      {"&amp;lt; stays escaped once", "< stays escaped once"},
      // Dashes split only after a digit; apostrophes never.
      {"pre-war 1990-1995 A-1 x-ray", "pre-war 1990 - 1995 A-1 x-ray"},
      {"-5 -x 5- x-", "-5 -x 5 - x-"},
      {"don't stop", "don't stop"},
      // Whitespace, hyphenated line breaks, <skipped>.
      {"  leading and trailing  \t ", "leading and trailing"},
      {"line one-\nline two\nthree", "line oneline two three"},
      {"<skipped> word", "word"},
      {"", ""},
      {"   ", ""},
      // Every character of the punctuation class.
      {"{braces} [brackets] (parens) ~tilde_under`back^caret|pipe\\slash",
       "{ braces } [ brackets ] ( parens ) ~ tilde _ under ` back ^ caret | pipe \\ slash"},
      {"50% off @home #tag *star +plus =eq ?q :colon ;semi /slash",
       "50 % off @ home # tag * star + plus = eq ? q : colon ; semi / slash"},
      // Non-ASCII letters and symbols are left alone; Unicode spaces separate.
      {"caf\xC3\xA9, ni\xC3\xB1o. \xC2\xB6 \xF0\x9F\x98\x80!", "caf\xC3\xA9 , ni\xC3\xB1o . \xC2\xB6 \xF0\x9F\x98\x80 !"},
      {"\xC2\xBFQu\xC3\xA9? \xC2\xA1S\xC3\xAD!", "\xC2\xBFQu\xC3\xA9 ? \xC2\xA1S\xC3\xAD !"},
      {"non\xC2\xA0" "breaking\xE2\x80\x89thin\xE3\x80\x80ideographic", "non breaking thin ideographic"},
      {"\xC2\xABquotes\xC2\xBB \xE2\x80\x9C" "curly\xE2\x80\x9D", "\xC2\xABquotes\xC2\xBB \xE2\x80\x9C" "curly\xE2\x80\x9D"},
  };
  for (const auto& [in, want] : cases) {
    INFO(in);
    CHECK(tokenize_13a(in) == want);
  }
  CHECK_THROWS_WITH(tokenize_13a("bad \xFF", "hyp 3"), Contains("hyp 3"));
}

TEST_CASE("BLEU: trailing whitespace and tokenization do not change the score", "[bleu]") {
  const BleuScore a = corpus_bleu(kHyps, kRefs[0]);
  const BleuScore b = corpus_bleu({"The dog bit the man .  ", "It wasn't surprising .\n", "The man had just bitten him.\t"},
                                  kRefs[0]);
  CHECK(a.format() == b.format());
  CHECK(a.score == b.score);
}

TEST_CASE("BLEU: errors", "[bleu]") {
  CHECK_THROWS_WITH(corpus_bleu({"a", "b"}, {"a"}), Contains("2 hypotheses") && Contains("1 references"));
  CHECK_THROWS_AS(corpus_bleu({}, {}), tfm::Error);
  CHECK_THROWS_WITH(corpus_bleu({"a", "b"}, {"a", ""}), Contains("sentence 2") && Contains("empty reference"));
  BleuOptions o;
  o.tokenize = "intl";
  CHECK_THROWS_WITH(corpus_bleu({"a"}, {"a"}, o), Contains("intl"));
  o = {};
  o.smooth_method = "add-one";
  CHECK_THROWS_WITH(corpus_bleu({"a"}, {"a"}, o), Contains("add-one"));
  o = {};
  o.max_ngram_order = 0;
  CHECK_THROWS_AS(corpus_bleu({"a"}, {"a"}, o), tfm::Error);
  CHECK_THROWS_WITH(corpus_bleu({"ok"}, {"bad \xC3"}), Contains("reference 1"));
}
