// Corpus extraction for the two end-to-end jobs: the character-level LM
// trains on the King James Bible, the translation model on English (WEB)
// -> Spanish (Reina-Valera 1909) verse pairs. Both come from the SWORD
// modules engKJV2006eb, engWEB2015eb and spaRV1909eb (Debian packages
// sword-text-kjv, sword-text-web, sword-text-sparv), printed by
// `diatheke -b MODULE -f plain -k "Gen 1:1-Rev 22:21"`.
//
// What that plain output looks like (checked on all three modules):
//   * A verse starts on a line "Book C:V: text". Book names are the English
//     names of the KJV versification for every module, Spanish included
//     ("Genesis", "I Samuel", "Song of Solomon", "Revelation of John",
//     WEB extras such as "Esther (Greek)"). The verse line is indented
//     (2 or 3 spaces) exactly when diatheke printed a heading line right
//     before it.
//   * The last line is the module name in parentheses, "(engKJV2006eb)".
//   * Psalm headings ("A Psalm of David.", "DALETH", " HE ") are printed on
//     their own line before a verse and then RE-PRINTED before every later
//     verse until the next heading (KJV repeats "David’s Psalm of praise."
//     before every verse from Psalm 145 to Revelation 22:21).
//   * Poetry (WEB) continues a verse over several lines without a prefix,
//     sometimes after blank lines, sometimes with leading spaces.
//   * Markup leaks: Strong's numbers in RV1909 ("vida <H2416>, toda"), whole
//     OSIS fragments in WEB ("<title ...>A praise psalm by David.</title>
//     <lg .../> <l .../>Tobit 6:18: " on the empty verses of some
//     deuterocanonical books), pilcrows "¶" and USFM markers ("\nd LORD")
//     in KJV.
//   * WEB appends its glossary after Revelation 22:21 as one long
//     unprefixed line "The following words used in the World English
//     Bible (WEB) are not very common, ...".
//
// The parsing rule (see parse_diatheke_plain):
//   * verse line   = after markup removal, optional indentation, then
//                    "Book C:V:" where Book has no ':' and starts with a
//                    letter, digit or '(' and C, V are positive integers;
//   * heading line = a non-blank non-verse line IMMEDIATELY followed by an
//                    indented verse line -> dropped. Diatheke indents a verse
//                    line exactly when it printed a heading before it, and a
//                    heading is always exactly one line. Checked on the full
//                    output of all three modules: every indented verse line
//                    (KJV 17,144, WEB 23,538) is directly preceded by a
//                    non-blank non-verse line and all those lines are headings
//                    (69 distinct in KJV, 93 in WEB; none occurs in the parsed
//                    verse texts), while the text lines before UNindented
//                    verse lines (39 in WEB, e.g. Leviticus 10:3 "Aaron held
//                    his peace.") are verse continuations. Poetry lines such
//                    as "Selah." are followed by a blank or an unindented line
//                    and are kept;
//   * continuation = any other non-blank non-verse line -> appended to the
//                    current verse with a single space (blank lines inside a
//                    verse are ignored). A continuation before the first verse
//                    is an error;
//   * the module-name line (the last non-blank line, "(name)") is dropped,
//     and so is everything from a line starting "The following words used in
//     the World English Bible" (the WEB glossary) to the end.
// Repetition is NOT used to detect headings: the first print of a heading is
// not yet repeated, while the indentation marks every print.
//
// Footnotes: WEB's plain rendering drops each footnote together with the
// space around it, gluing ~400 word pairs ("Godcreated" in Genesis 1:1). So
// WEB is printed with footnotes (`-o f`: "God [1:1 The Hebrew word ...]
// created", "[]" for empty ones) and strip_footnotes() turns each note back
// into a word break. KJV's plain text is intact without its notes, and
// RV1909 has none.
//
// Known residue, left as is (it is in the modules' text, not in the layout):
// RV1909 keeps psalm titles inside verse 1
// ("Salmo de David, ... ¡OH Jehová ...") where WEB prints them as headings;
// WEB's Song of Solomon carries speaker labels ("Friends  We will be glad").
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tfm::data {

struct Verse {
  std::string book;
  int chapter = 0;
  int verse = 0;
  std::string text;
};

// Parses `diatheke -f plain` output (see the rule above). Markup is removed:
// <title>...</title> elements with their content (they are headings), every
// other <...> tag (spaces before a following punctuation mark are dropped, so
// "vida <H2416>, toda" -> "vida, toda"), pilcrows and USFM markers (\nd, \nd*,
// \add, \+wj ...). Whitespace runs collapse to one space and texts are
// trimmed; verses whose text ends up empty are dropped. Verses keep the order
// of the input. Throws tfm::Error naming origin and line on malformed input
// (text before the first verse, an unterminated tag, a bad chapter/verse
// number, invalid UTF-8).
std::vector<Verse> parse_diatheke_plain(const std::string& raw, const std::string& origin);

// Replaces every footnote of `diatheke -o f` output by a space: "[]" and
// "[C:V text]" / "[C:V-W text]" within one line. Other brackets (WEB's Greek
// Esther has bracketed passages) stay.
std::string strip_footnotes(const std::string& raw);

// "Book C:V", the verse's alignment and split key.
std::string verse_key(const Verse& v);

// The LM corpus: one verse text per line, UTF-8, each line ending in '\n'.
std::string kjv_text(const std::vector<Verse>& verses);

struct AlignedPair {
  std::string key;  // verse_key of both sides
  std::string src;
  std::string tgt;
};

// Pairs src and tgt verses with the same (book, chapter, verse), in src
// order. Book NAMES are compared: diatheke prints the same English
// versification names for the English and the Spanish modules (checked on
// engWEB2015eb / spaRV1909eb), so no book-index mapping is needed. Verses
// present on one side only (WEB's deuterocanonical books) and empty texts
// are skipped. Throws tfm::Error on a key that occurs twice on one side.
std::vector<AlignedPair> align_verses_keyed(const std::vector<Verse>& src, const std::vector<Verse>& tgt);
std::vector<std::pair<std::string, std::string>> align_verses(const std::vector<Verse>& src,
                                                              const std::vector<Verse>& tgt);

// Drops the pairs of chapters that the target numbers differently from the
// source. spaRV1909eb follows the Spanish verse division in a dozen places
// and diatheke maps it onto the KJV versification by leaving verses empty
// (Jonah 1:17, Numbers 12:16, Job 38:39-41, Job 40:20-24, Acts 19:41 ...);
// the following chapter is then often shifted by one or more verses
// (RV "Jonah 2:1" is KJV Jonah 1:17), and pairing by key would produce
// misaligned pairs. Rule: for every source verse whose key is missing from
// the target while its book is present there, the pairs of that chapter and
// of the next chapter of the same book are dropped. Verses missing on the
// SOURCE side (WEB omits Acts 8:37 and a few others) do not shift anything
// and flag nothing.
std::vector<AlignedPair> drop_renumbered_chapters(std::vector<AlignedPair> pairs, const std::vector<Verse>& src,
                                                  const std::vector<Verse>& tgt);

// Translation-pair split, deterministic and independent of the pair order:
// h = FNV-1a-64(key) (key = "Book C:V"); test if h % 100 == 0, valid if
// h % 100 == 1, train otherwise (~98/1/1). The LM corpus is not split here
// (it uses the nanoGPT-style 90/10 character split).
enum class Split { train, valid, test };
uint64_t fnv1a64(const std::string& s);
Split split_of(const std::string& key);

// Runs diatheke for engKJV2006eb, engWEB2015eb and spaRV1909eb and writes
// into cache_dir (created if needed):
//   kjv.txt                                    the LM corpus (kjv_text)
//   en_es.train.tsv, en_es.valid.tsv, en_es.test.tsv
//                                              "WEB text<TAB>RV1909 text" per
//                                              line (tabs/newlines inside a
//                                              text become spaces); pairs from
//                                              align_verses_keyed(WEB, RV),
//                                              minus drop_renumbered_chapters,
//                                              split by split_of(key)
// Each file is written to a temporary name and renamed into place, so an
// interrupted run never leaves a partial file. Prints a short summary to
// stdout. Throws tfm::Error when diatheke is missing (naming the Debian
// packages diatheke sword-text-kjv sword-text-web sword-text-sparv), fails,
// or a module yields too few verses (module not installed).
void prepare_corpora(const std::string& cache_dir);

}  // namespace tfm::data
