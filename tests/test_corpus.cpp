// Corpus extraction from diatheke output. The fixtures are verbatim excerpts
// of `diatheke -b MODULE -f plain -k "Gen 1:1-Rev 22:21"` (segments of whole
// verses, with their heading lines, concatenated; the WEB glossary line is
// cut short), so these tests need no SWORD packages.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "core/error.h"
#include "tools/corpus.h"
#include "data/text.h"

using namespace tfm::data;

namespace {

std::string fixture(const std::string& name) { return std::string(TFM_TEST_DATA_DIR) + "/fixtures/" + name; }

std::vector<Verse> parse_fixture(const std::string& name) {
  const std::string path = fixture(name);
  return parse_diatheke_plain(read_file(path), path);
}

std::vector<std::string> keys_of(const std::vector<Verse>& vs) {
  std::vector<std::string> out;
  for (const Verse& v : vs) out.push_back(verse_key(v));
  return out;
}

const Verse& find(const std::vector<Verse>& vs, const std::string& key) {
  for (const Verse& v : vs)
    if (verse_key(v) == key) return v;
  FAIL("verse " << key << " not parsed");
  throw 0;  // unreachable
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

void check_no_leftovers(const std::vector<Verse>& vs, const std::vector<std::string>& forbidden) {
  for (const Verse& v : vs) {
    INFO(verse_key(v) << ": " << v.text);
    CHECK_FALSE(v.text.empty());
    CHECK_FALSE(contains(v.text, "<"));
    CHECK_FALSE(contains(v.text, ">"));
    CHECK_FALSE(contains(v.text, "\xC2\xB6"));  // pilcrow
    CHECK_FALSE(contains(v.text, "\\"));
    CHECK_FALSE(contains(v.text, "\n"));
    CHECK_FALSE(contains(v.text, "  "));
    CHECK(v.text.front() != ' ');
    CHECK(v.text.back() != ' ');
    for (const std::string& f : forbidden) CHECK_FALSE(contains(v.text, f));
  }
}

}  // namespace

TEST_CASE("parse_diatheke_plain: KJV excerpt", "[corpus]") {
  const std::vector<Verse> kjv = parse_fixture("diatheke_kjv_excerpt.txt");
  const std::vector<std::string> expected_keys = {
      "Genesis 1:1",  "Genesis 1:2",         "Genesis 1:3",         "Genesis 1:4",
      "Genesis 1:5",  "Genesis 1:6",         "Exodus 6:3",          "Psalms 2:11",
      "Psalms 2:12",  "Psalms 3:1",          "Psalms 3:2",          "Psalms 144:15",
      "Psalms 145:1", "Psalms 145:2",        "Song of Solomon 1:1", "Song of Solomon 1:2",
      "Zephaniah 1:6", "I John 2:23",        "Revelation of John 22:20", "Revelation of John 22:21"};
  CHECK(keys_of(kjv) == expected_keys);

  CHECK(find(kjv, "Genesis 1:1").text == "In the beginning God created the heaven and the earth.");
  // Pilcrow removed.
  CHECK(find(kjv, "Genesis 1:6").text ==
        "And God said, Let there be a firmament in the midst of the waters, and let it divide the waters from "
        "the waters.");
  // USFM \nd marker removed.
  CHECK(find(kjv, "Exodus 6:3").text ==
        "And I appeared unto Abraham, unto Isaac, and unto Jacob, by the name of God Almighty, but by my name "
        "JEHOVAH was I not known to them.");
  CHECK(find(kjv, "Zephaniah 1:6").text ==
        "And them that are turned back from the LORD; and those that have not sought the LORD, nor enquired for "
        "him.");
  // Indented verse after a heading; the heading line is gone.
  CHECK(find(kjv, "Psalms 3:1").text ==
        "LORD, how are they increased that trouble me! many are they that rise up against me.");
  // Book names with spaces / numerals; trailing spaces trimmed.
  CHECK(find(kjv, "Song of Solomon 1:1").book == "Song of Solomon");
  CHECK(find(kjv, "I John 2:23").book == "I John");
  const Verse& last = kjv.back();
  CHECK(last.book == "Revelation of John");
  CHECK(last.chapter == 22);
  CHECK(last.verse == 21);
  CHECK(last.text == "The grace of our Lord Jesus Christ be with you all. Amen.");

  check_no_leftovers(kjv, {"Psalm of David", "Psalm of praise", "Absalom", "engKJV2006eb"});
}

TEST_CASE("parse_diatheke_plain: WEB excerpt (poetry, headings, markup, glossary)", "[corpus]") {
  const std::vector<Verse> web = parse_fixture("diatheke_web_excerpt.txt");
  const std::vector<std::string> expected_keys = {
      "Genesis 1:1",   "Genesis 1:2",          "Genesis 3:14",         "Genesis 3:15",
      "Genesis 3:16",  "Leviticus 10:3",       "Psalms 2:12",          "Psalms 3:1",
      "Psalms 3:2",    "Psalms 55:2",          "Psalms 55:3",          "Psalms 119:32",
      "Psalms 119:33", "Psalms 119:34",        "Song of Solomon 1:4",  "Song of Solomon 1:5",
      "Jonah 1:16",    "Jonah 1:17",           "Jonah 2:1",            "Tobit 6:17",
      "Tobit 7:1",     "Esther (Greek) 10:13", "Revelation of John 22:20", "Revelation of John 22:21"};
  // Tobit 6:18 and Esther (Greek) 11:1 are empty verses printed behind OSIS
  // markup: dropped.
  CHECK(keys_of(web) == expected_keys);

  // Poetry: continuation lines joined with single spaces.
  CHECK(find(web, "Genesis 3:14").text ==
        "Yahweh God said to the serpent, \xE2\x80\x9C" "Because you have done this, you are cursed above all "
        "livestock, and above every animal of the field. You shall go on your belly and you shall eat dust all "
        "the days of your life.");
  // A continuation after a blank line stays in the verse.
  CHECK(find(web, "Leviticus 10:3").text ==
        "Then Moses said to Aaron, \xE2\x80\x9CThis is what Yahweh spoke of, saying, \xE2\x80\x98I will show "
        "myself holy to those who come near me, and before all the people I will be glorified.\xE2\x80\x99\xE2\x80"
        "\x9D Aaron held his peace.");
  // "Selah." is a continuation line (no indented verse follows it).
  CHECK(find(web, "Psalms 3:2").text ==
        "Many there are who say of my soul, \xE2\x80\x9CThere is no help for him in God.\xE2\x80\x9D Selah.");
  // A heading directly after a continuation line (no blank line between).
  CHECK(find(web, "Psalms 55:2").text == "Attend to me, and answer me. I am restless in my complaint, and moan");
  CHECK(find(web, "Psalms 55:3").text ==
        "because of the voice of the enemy, because of the oppression of the wicked. For they bring suffering on "
        "me. In anger they hold a grudge against me.");
  // Acrostic headings (" HE ", "DALETH") dropped.
  CHECK(find(web, "Psalms 119:33").text == "Teach me, Yahweh, the way of your statutes. I will keep them to the end.");
  CHECK(find(web, "Psalms 119:32").text == "I run in the path of your commandments, for you have set my heart free.");
  CHECK(find(web, "Esther (Greek) 10:13").book == "Esther (Greek)");
  CHECK(web.back().text == "The grace of the Lord Jesus Christ be with all the saints. Amen.");

  check_no_leftovers(web, {"praise psalm", "Chief Musician", "Absalom his son", "Goliath", "DALETH", "HE ",
                           "The following words", "World English Bible", "Abaddon", "engWEB2015eb", "title"});
}

TEST_CASE("strip_footnotes: WEB with -o f keeps the word breaks the plain output loses", "[corpus]") {
  // Verbatim `diatheke -b engWEB2015eb -f plain -o f` output.
  const std::string path = fixture("diatheke_web_notes_excerpt.txt");
  const std::vector<Verse> web = parse_diatheke_plain(strip_footnotes(read_file(path)), path);
  CHECK(keys_of(web) == std::vector<std::string>{"Genesis 1:1", "Genesis 1:2", "Genesis 2:4", "Exodus 20:1",
                                                 "Psalms 46:1", "Psalms 46:2", "Sirach 11:14", "Esther (Greek) 1:1"});
  // Plain output: "Godcreated", "YahwehGod", "Godspoke".
  CHECK(find(web, "Genesis 1:1").text == "In the beginning, God created the heavens and the earth.");
  CHECK(contains(find(web, "Genesis 2:4").text, "in the day that Yahweh God made the earth"));
  CHECK(find(web, "Exodus 20:1").text == "God spoke all these words, saying,");
  // Real brackets in the text stay; the notes after them go.
  const std::string& esther = find(web, "Esther (Greek) 1:1").text;
  CHECK(esther.rfind("[In the second year of the reign of Ahasuerus", 0) == 0);
  CHECK(contains(esther, "two chamberlains.] And it came to pass after these things in the days of Ahasuerus"));
  // Sirach 11:15-16 hold only a note: empty, dropped.
  check_no_leftovers(web, {"[1", "[2", "[4", "[]", "Hebrew word", "Aleph", "Alamoth", "omitted", "Greek words"});

  // Small cases: verse ranges, no note across a line break, other brackets.
  CHECK(strip_footnotes("a [3:4-5 x y] b") == "a   b");
  CHECK(strip_footnotes("a [] b") == "a   b");
  CHECK(strip_footnotes("a [3:4 unterminated\nb]") == "a [3:4 unterminated\nb]");
  CHECK(strip_footnotes("[x] [3:] [:4 y] [3:4x]") == "[x] [3:] [:4 y] [3:4x]");
}

TEST_CASE("parse_diatheke_plain: RV1909 excerpt (Strong's numbers)", "[corpus]") {
  const std::vector<Verse> rv = parse_fixture("diatheke_rv1909_excerpt.txt");
  const std::vector<std::string> expected_keys = {
      "Genesis 1:1", "Genesis 1:2", "Genesis 1:30", "Genesis 3:14", "Genesis 3:15",
      "Genesis 3:16", "Genesis 5:4", "Genesis 5:5", "Psalms 2:12", "Psalms 3:1",
      "Psalms 3:2", "Jonah 1:16", "Jonah 2:1", "Revelation of John 22:20", "Revelation of John 22:21"};
  CHECK(keys_of(rv) == expected_keys);  // Jonah 1:17 is printed empty: dropped
  // "vida <H2416>, toda" -> "vida, toda"
  CHECK(find(rv, "Genesis 1:30").text ==
        "Y \xC3\xA1 toda bestia de la tierra, y \xC3\xA1 todas las aves de los cielos, y \xC3\xA1 todo lo que se "
        "mueve sobre la tierra, en que hay vida, toda hierba verde les ser\xC3\xA1 para comer: y fu\xC3\xA9 as\xC3"
        "\xAD.");
  CHECK(find(rv, "Genesis 5:5").text ==
        "Y fueron todos los d\xC3\xAD" "as que vivi\xC3\xB3 Adam novecientos y treinta a\xC3\xB1os, y muri\xC3\xB3.");
  CHECK(rv.back().text == "La gracia de nuestro Se\xC3\xB1or Jesucristo sea con todos vosotros. Am\xC3\xA9n.");
  check_no_leftovers(rv, {"spaRV1909eb", "H3967", "G5547"});
}

TEST_CASE("parse_diatheke_plain: rules on small synthetic inputs", "[corpus]") {
  SECTION("a heading before the very first verse is dropped; CRLF line ends") {
    const std::string raw =
        "A Psalm of David.\r\n   Psalms 23:1: The LORD is my shepherd;\r\nI shall not want.\r\n(mod)\r\n";
    const auto v = parse_diatheke_plain(raw, "t");
    REQUIRE(v.size() == 1);
    CHECK(verse_key(v[0]) == "Psalms 23:1");
    CHECK(v[0].text == "The LORD is my shepherd; I shall not want.");
  }
  SECTION("USFM markers, pilcrows, tags and whitespace") {
    const std::string raw =
        "Exodus 3:15: \xC2\xB6 And God said, the \\nd LORD\\nd* God \\add of\\add* your <w>fathers</w> <G1>,\tyes.\n"
        "Exodus 3:16: \\+wj Go\\+wj*, and gather.\n";
    const auto v = parse_diatheke_plain(raw, "t");
    REQUIRE(v.size() == 2);
    CHECK(v[0].text == "And God said, the LORD God of your fathers, yes.");
    CHECK(v[1].text == "Go, and gather.");
  }
  SECTION("empty verses and a module line without a trailing newline") {
    const auto v = parse_diatheke_plain("Jude 1:1: a\nJude 1:2: \nJude 1:3:\nJude 1:4: b\n(x)", "t");
    REQUIRE(v.size() == 2);
    CHECK(verse_key(v[1]) == "Jude 1:4");
  }
  SECTION("a line that only looks like a reference is verse text") {
    const auto v = parse_diatheke_plain("Acts 1:1: a\nsee John 3:16 and more\nActs 1:2: b\n", "t");
    REQUIRE(v.size() == 2);
    CHECK(v[0].text == "a see John 3:16 and more");
  }
  SECTION("errors name the origin and the line") {
    try {
      parse_diatheke_plain("\nstray text\nGenesis 1:1: x\n", "kjv.raw");
      FAIL("no error");
    } catch (const tfm::Error& e) {
      CHECK(contains(e.what(), "kjv.raw:2:"));
      CHECK(contains(e.what(), "before the first verse"));
    }
    try {
      parse_diatheke_plain("Genesis 1:1: x\nGenesis 1:2: y <G12 z\n", "web.raw");
      FAIL("no error");
    } catch (const tfm::Error& e) {
      CHECK(contains(e.what(), "web.raw:2:"));
      CHECK(contains(e.what(), "unterminated"));
    }
    CHECK_THROWS_AS(parse_diatheke_plain("Genesis 1:1: \xC3\x28\n", "bad"), tfm::Error);
  }
}

TEST_CASE("kjv_text: one verse per line", "[corpus]") {
  const std::vector<Verse> kjv = parse_fixture("diatheke_kjv_excerpt.txt");
  const std::string text = kjv_text(kjv);
  REQUIRE_FALSE(text.empty());
  CHECK(text.back() == '\n');
  CHECK(static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) == kjv.size());
  CHECK(text.substr(0, text.find('\n')) == "In the beginning God created the heaven and the earth.");
  std::string expected;
  for (const Verse& v : kjv) expected += v.text + "\n";
  CHECK(text == expected);
  CHECK(kjv_text({}) == "");
}

TEST_CASE("align_verses: WEB x RV1909 excerpts", "[corpus]") {
  const std::vector<Verse> web = parse_fixture("diatheke_web_excerpt.txt");
  const std::vector<Verse> rv = parse_fixture("diatheke_rv1909_excerpt.txt");
  const auto keyed = align_verses_keyed(web, rv);
  std::vector<std::string> keys;
  for (const auto& p : keyed) keys.push_back(p.key);
  const std::vector<std::string> expected = {"Genesis 1:1", "Genesis 1:2",  "Genesis 3:14", "Genesis 3:15",
                                             "Genesis 3:16", "Psalms 2:12", "Psalms 3:1",   "Psalms 3:2",
                                             "Jonah 1:16",  "Jonah 2:1",   "Revelation of John 22:20",
                                             "Revelation of John 22:21"};
  CHECK(keys == expected);

  const auto pairs = align_verses(web, rv);
  REQUIRE(pairs.size() == expected.size());
  CHECK(pairs[0].first == "In the beginning, Godcreated the heavens and the earth.");
  CHECK(pairs[0].second == "EN el principio cri\xC3\xB3 Dios los cielos y la tierra.");
  CHECK(pairs.back().first == "The grace of the Lord Jesus Christ be with all the saints. Amen.");
  CHECK(pairs.back().second == "La gracia de nuestro Se\xC3\xB1or Jesucristo sea con todos vosotros. Am\xC3\xA9n.");
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    CHECK(pairs[i].first == keyed[i].src);
    CHECK(pairs[i].second == keyed[i].tgt);
  }

  // RV leaves Jonah 1:17 empty and starts chapter 2 with KJV's 1:17: both
  // chapters are dropped. Tobit (not in RV at all) flags nothing.
  const auto kept = drop_renumbered_chapters(keyed, web, rv);
  std::vector<std::string> kept_keys;
  for (const auto& p : kept) kept_keys.push_back(p.key);
  CHECK(kept_keys == std::vector<std::string>{"Genesis 1:1", "Genesis 1:2", "Genesis 3:14", "Genesis 3:15",
                                              "Genesis 3:16", "Psalms 2:12", "Psalms 3:1", "Psalms 3:2",
                                              "Revelation of John 22:20", "Revelation of John 22:21"});
}

TEST_CASE("align_verses: skips empty and unmatched verses, rejects duplicates", "[corpus]") {
  const std::vector<Verse> src = {{"Ruth", 1, 1, "a"}, {"Ruth", 1, 2, ""}, {"Ruth", 1, 3, "c"}, {"Ruth", 1, 4, "d"}};
  const std::vector<Verse> tgt = {{"Ruth", 1, 4, "D"}, {"Ruth", 1, 2, "B"}, {"Ruth", 1, 1, ""}, {"Ruth", 1, 3, "C"}};
  const auto pairs = align_verses(src, tgt);
  REQUIRE(pairs.size() == 2);
  CHECK(pairs[0] == std::make_pair(std::string("c"), std::string("C")));
  CHECK(pairs[1] == std::make_pair(std::string("d"), std::string("D")));
  const std::vector<Verse> dup = {{"Ruth", 1, 1, "x"}, {"Ruth", 1, 1, "y"}};
  CHECK_THROWS_AS(align_verses(src, dup), tfm::Error);
  CHECK_THROWS_AS(align_verses(dup, tgt), tfm::Error);
}

TEST_CASE("split_of: stable FNV-1a hash, about 98/1/1", "[corpus]") {
  // Reference FNV-1a 64 values.
  CHECK(fnv1a64("") == 0xcbf29ce484222325ULL);
  CHECK(fnv1a64("a") == 0xaf63dc4c8601ec8cULL);
  CHECK(fnv1a64("foobar") == 0x85944171f73967e8ULL);

  const std::vector<std::string> books = {"Genesis", "Exodus", "I Samuel", "Psalms", "Song of Solomon",
                                          "Isaiah", "Matthew", "John", "I Corinthians", "Revelation of John"};
  int counts[3] = {0, 0, 0};
  int n = 0;
  bool stable = true;
  for (const std::string& b : books)
    for (int c = 1; c <= 31; ++c)
      for (int v = 1; v <= 100; ++v) {
        const std::string key = b + " " + std::to_string(c) + ":" + std::to_string(v);
        const Split s = split_of(key);
        stable = stable && s == split_of(key);
        ++counts[static_cast<int>(s)];
        ++n;
      }
  REQUIRE(n == 31000);
  CHECK(stable);
  const double valid = counts[static_cast<int>(Split::valid)] / double(n);
  const double test = counts[static_cast<int>(Split::test)] / double(n);
  INFO("valid " << valid << " test " << test);
  CHECK(valid > 0.006);
  CHECK(valid < 0.014);
  CHECK(test > 0.006);
  CHECK(test < 0.014);
  CHECK(counts[static_cast<int>(Split::train)] / double(n) > 0.97);

  // The assignment depends on the key only.
  const std::string k = "Genesis 1:1";
  const uint64_t r = fnv1a64(k) % 100;
  CHECK(split_of(k) == (r == 0 ? Split::test : r == 1 ? Split::valid : Split::train));
}
