// chrF against values published by sacreBLEU itself (github.com/mjpost/sacrebleu,
// test/test_chrf.py, sacreBLEU 2.x):
//   test_chrf                  corpus_chrf(char_order=6, word_order=0, beta=3, eps_smoothing=True)
//   test_chrf_eff_order        the same with eps_smoothing=False (effective orders)
//   test_chrf_keep_whitespace  beta=3, whitespace kept
//   test_chrf_sentence_level   sentence_chrf with the defaults and eps_smoothing=True
// and the default chrF2 value printed in the Hugging Face chrF metric card
// (huggingface/datasets metrics/chrf/README.md, which calls sacreBLEU with its
// defaults). sacreBLEU's tolerance there is 1e-4.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "core/error.h"
#include "data/chrf.h"

using namespace tfm::data;
using Catch::Matchers::Contains;

namespace {

struct Case {
  std::vector<std::string> hyps, refs;
  double expected;
};

ChrfOptions beta3(bool eps) {
  ChrfOptions o;
  o.beta = 3;
  o.eps_smoothing = eps;
  return o;
}

}  // namespace

TEST_CASE("chrF: sacreBLEU test_chrf cases (beta 3, eps smoothing)", "[chrf]") {
  const std::vector<Case> cases = {
      {{"abcdefg"}, {"hijklmnop"}, 0.0},
      {{"a"}, {"b"}, 0.0},
      {{""}, {"b"}, 0.0},
      {{""}, {"ref"}, 0.0},
      {{""}, {"reference"}, 0.0},
      {{"aa"}, {"ab"}, 8.3333},
      {{"a", "b"}, {"a", "c"}, 8.3333},
      {{"a"}, {"a"}, 16.6667},
      {{"a b c"}, {"a b c"}, 50.0},
      {{"a b c"}, {"abc"}, 50.0},
      {{" risk assessment must be made of those who are qualified and expertise in the sector - these are the "
        "scientists ."},
       {"risk assessment has to be undertaken by those who are qualified and expert in that area - that is the "
        "scientists ."},
       63.361730},
      {{" Die    Beziehung zwischen  Obama und Netanjahu ist nicht gerade  freundlich. "},
       {"Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."},
       64.1302698},
      {{"Niemand hat die Absicht, eine Mauer zu errichten"}, {"Niemand hat die Absicht, eine Mauer zu errichten"},
       100.0},
  };
  for (const auto& c : cases) {
    INFO(c.hyps[0] << " | " << c.refs[0]);
    CHECK(corpus_chrf(c.hyps, c.refs, beta3(true)).score == Approx(c.expected).margin(1e-4));
  }
}

TEST_CASE("chrF: sacreBLEU test_chrf_eff_order cases (beta 3, effective order)", "[chrf]") {
  const std::vector<Case> cases = {
      {{"a"}, {"a"}, 100.0},   {{""}, {"reference"}, 0.0},     {{"a b c"}, {"a b c"}, 100.0},
      {{"a b c"}, {"abc"}, 100.0}, {{""}, {"c"}, 0.0},          {{"a", "b"}, {"a", "c"}, 50.0},
      {{"aa"}, {"ab"}, 25.0},
  };
  for (const auto& c : cases) {
    INFO(c.hyps[0] << " | " << c.refs[0]);
    CHECK(corpus_chrf(c.hyps, c.refs, beta3(false)).score == Approx(c.expected).margin(1e-4));
  }
}

TEST_CASE("chrF: sacreBLEU test_chrf_keep_whitespace cases", "[chrf]") {
  ChrfOptions o = beta3(false);
  o.whitespace = true;
  CHECK(corpus_chrf({"Die Beziehung zwischen Obama und Netanjahu ist nicht gerade freundlich."},
                    {"Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."}, o)
            .score == Approx(67.3481606).margin(1e-4));
  CHECK(corpus_chrf({"risk assessment must be made of those who are qualified and expertise in the sector - these are "
                     "the scientists ."},
                    {"risk assessment has to be undertaken by those who are qualified and expert in that area - that "
                     "is the scientists ."},
                    o)
            .score == Approx(65.2414427).margin(1e-4));
}

TEST_CASE("chrF: sacreBLEU test_chrf_sentence_level (chrF2, eps smoothing)", "[chrf]") {
  ChrfOptions o;
  o.eps_smoothing = true;
  CHECK(corpus_chrf({"Co nás nejvíc trápí, protože lékaři si vybírají, kdo bude žít a kdo zemře."},
                    {"Nejvíce smutní jsme z toho, že musíme rozhodovat o tom, kdo bude žít a kdo zemře."}, o)
            .score == Approx(39.14078509).margin(1e-4));
  CHECK(corpus_chrf({"Nebo prostě nemají vybavení, které by jim pomohlo, uvedli lékaři."},
                    {"A někdy nemáme ani potřebný materiál, abychom jim pomohli, popsali lékaři."}, o)
            .score == Approx(31.22557079).margin(1e-4));
  CHECK(corpus_chrf({"Lapali po dechu, jejich životy skončily dřív, než skutečně začaly."},
                    {"Lapali po dechu a pak jejich život skončil - dřív, než skutečně mohl začít, připomněli."}, o)
            .score == Approx(57.15704367).margin(1e-4));
}

TEST_CASE("chrF: the default chrF2 (Hugging Face metric card, via sacreBLEU)", "[chrf]") {
  const ChrfScore s = corpus_chrf({"The relationship between Obama and Netanyahu is not exactly friendly."},
                                  {"The ties between Obama and Netanyahu are not particularly friendly."});
  CHECK(s.score == Approx(61.576379378113785).margin(1e-9));
  REQUIRE(s.hyp_ngrams.size() == 6);
  // Whitespace removed: 60 characters in the hypothesis, 58 in the reference.
  CHECK(s.hyp_ngrams[0] == 60);
  CHECK(s.ref_ngrams[0] == 58);
  CHECK(s.hyp_ngrams[5] == 55);
}

TEST_CASE("chrF: corpus statistics are summed before the score, not averaged", "[chrf]") {
  const std::vector<std::string> h = {"the cat sat", "a dog"}, r = {"the cat sat down", "the dog"};
  const ChrfScore both = corpus_chrf(h, r);
  const ChrfScore a = corpus_chrf({h[0]}, {r[0]}), b = corpus_chrf({h[1]}, {r[1]});
  for (std::size_t i = 0; i < 6; ++i) {
    CHECK(both.hyp_ngrams[i] == a.hyp_ngrams[i] + b.hyp_ngrams[i]);
    CHECK(both.matches[i] == a.matches[i] + b.matches[i]);
  }
  CHECK(both.score == Approx(chrf_from_stats(both.hyp_ngrams, both.ref_ngrams, both.matches)));
  CHECK(both.score != Approx((a.score + b.score) / 2));
}

TEST_CASE("chrF: bad input is refused", "[chrf]") {
  CHECK_THROWS_WITH(corpus_chrf({"a"}, {"a", "b"}), Contains("1 hypotheses but 2 references"));
  CHECK_THROWS_WITH(corpus_chrf({}, {}), Contains("empty corpus"));
  CHECK_THROWS_WITH(corpus_chrf({"\xff"}, {"a"}), Contains("invalid UTF-8"));
  ChrfOptions o;
  o.char_order = 0;
  CHECK_THROWS_WITH(corpus_chrf({"a"}, {"a"}, o), Contains("char_order"));
}

TEST_CASE("exact match: hand-made cases", "[chrf]") {
  CHECK(exact_match({"a b", "c"}, {"a b", "d"}) == Approx(50.0));
  CHECK(exact_match({"  a b \n"}, {"a b"}) == Approx(100.0));  // surrounding whitespace ignored
  CHECK(exact_match({"a  b"}, {"a b"}) == Approx(0.0));        // inner whitespace is not
  CHECK(exact_match({"A"}, {"a"}) == Approx(0.0));             // case matters
  CHECK(exact_match({"x", "y", "z"}, {"x", "y", "z"}) == Approx(100.0));
  CHECK(exact_match({"", "1"}, {"", "2"}) == Approx(50.0));
  CHECK_THROWS_WITH(exact_match({"a"}, {}), Contains("1 hypotheses but 0 references"));
  CHECK_THROWS_WITH(exact_match({}, {}), Contains("empty corpus"));
}
